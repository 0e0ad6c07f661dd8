//! The engine's error type: says what went wrong and where (collection, document, file).

use tessera_storage::ExternalId;

/// Result alias for engine operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A storage-level failure (I/O, corruption, lock, catalog), naming its file.
    #[error(transparent)]
    Storage(#[from] tessera_storage::Error),
    /// No collection of that name exists.
    #[error("no collection named {0:?}")]
    CollectionNotFound(String),
    /// A collection of that name exists already.
    #[error("collection {0:?} already exists")]
    CollectionExists(String),
    /// Collection settings are invalid.
    #[error("invalid collection settings for {collection:?}: {reason}")]
    InvalidConfig {
        /// The collection.
        collection: String,
        /// Why.
        reason: String,
    },
    /// A document of a batch is invalid; nothing of the batch was committed.
    #[error(
        "collection {collection:?}: document {id} (batch position {position}): {reason}; nothing committed"
    )]
    InvalidDocument {
        /// The collection.
        collection: String,
        /// The document's external id.
        id: ExternalId,
        /// Its position in the batch.
        position: usize,
        /// Why it was rejected.
        reason: String,
    },
    /// The same id appears twice in one batch; nothing was committed.
    #[error(
        "collection {collection:?}: document id {id} appears twice in the batch (positions {first} and {second}); nothing committed"
    )]
    DuplicateId {
        /// The collection.
        collection: String,
        /// The repeated id.
        id: ExternalId,
        /// First position.
        first: usize,
        /// Second position.
        second: usize,
    },
    /// A document with this id exists and the batch asked not to replace it.
    #[error(
        "collection {collection:?}: document {id} already exists (use upsert to replace it); nothing committed"
    )]
    IdExists {
        /// The collection.
        collection: String,
        /// The existing id.
        id: ExternalId,
    },
    /// A query matrix is invalid.
    #[error("collection {collection:?}: invalid query: {reason}")]
    InvalidQuery {
        /// The collection.
        collection: String,
        /// Why.
        reason: String,
    },
    /// Search settings are invalid (e.g. a diversity threshold out of range).
    #[error("collection {collection:?}: invalid search settings: {reason}")]
    InvalidParams {
        /// The collection.
        collection: String,
        /// Why.
        reason: String,
    },
    /// A metadata filter cannot be evaluated on this collection: it names a field that no
    /// document has, or compares a field with a kind of value it never holds.
    #[error("collection {collection:?}: invalid filter: {reason}")]
    InvalidFilter {
        /// The collection.
        collection: String,
        /// Why.
        reason: String,
    },
    /// A batch was encoded by another model than the one the collection records; nothing
    /// was committed.
    #[error(
        "collection {collection:?} holds vectors of model {recorded}, but this batch was encoded with model {given}; mixing models makes scores meaningless, so nothing was committed (use the recorded model, or ingest into a new collection)"
    )]
    ModelMismatch {
        /// The collection.
        collection: String,
        /// The model the collection records (`name (hash prefix)`).
        recorded: String,
        /// The model of the batch.
        given: String,
    },
    /// A catalog write or an fsync failed on this handle earlier, so what is on disk is
    /// unknown until the database is opened again; the handle refuses writes until then.
    #[error(
        "database {path} refuses writes on this handle since an earlier write failed ({reason}); open the database again"
    )]
    WritesRefused {
        /// The database directory.
        path: std::path::PathBuf,
        /// The failure.
        reason: String,
    },
    /// A write was attempted on a database opened read-only.
    #[error("database {0} is open read-only")]
    ReadOnly(std::path::PathBuf),
    /// The database directory does not exist or is not a Tessera database.
    #[error("{path} is not a Tessera database: {reason}")]
    NotADatabase {
        /// The path.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// Re-training needs the original vectors, and a segment has none (a collection created
    /// with `Precision::None`, or a segment written before originals existed).
    #[error(
        "collection {collection:?}: segment {segment} keeps no original vectors, so the codec cannot be re-trained from the data (create the collection with originals f16, bf16 or f32)"
    )]
    NoOriginals {
        /// The collection.
        collection: String,
        /// The segment without originals.
        segment: u64,
    },
    /// The requested compute device cannot be used (explicit `cuda[:N]` only; `auto` falls
    /// back to the CPU instead).
    #[error("device {device}: {reason}")]
    Device {
        /// The device asked for.
        device: String,
        /// Why it cannot be used.
        reason: String,
    },
}
