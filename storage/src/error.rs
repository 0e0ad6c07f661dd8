//! The storage error type: every variant says which file or key it concerns.

use std::path::PathBuf;

/// Result alias for storage operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in the storage layer, and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O call failed on `path`.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory the call was made on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Syncing a file or directory to disk failed. What the kernel does with the unwritten
    /// pages after a failed `fsync` is not specified, so the engine refuses further writes
    /// on the handle that saw it.
    #[error("could not sync {path} to disk: {source}")]
    Sync {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file failed validation (length, magic, version, checksum or layout).
    #[error("corrupt file {path}: {reason}")]
    Corrupt {
        /// The file that failed validation.
        path: PathBuf,
        /// What check failed.
        reason: String,
    },
    /// Stored bytes do not match the checksum that covers them: the file was damaged after
    /// it was written. Nothing computed from those bytes is ever returned.
    #[error(
        "corrupt file {path}: {what} fails its checksum (stored {stored:#010x}, computed {computed:#010x})"
    )]
    ChecksumMismatch {
        /// The damaged file.
        path: PathBuf,
        /// Which region (header, section table, a section, a document).
        what: String,
        /// The checksum stored in the file.
        stored: u32,
        /// The checksum of the bytes as read.
        computed: u32,
    },
    /// A file was written by a newer (or unknown) version of the format.
    #[error(
        "{path}: unsupported format version {found} (this build reads versions {} to {})",
        supported.start(),
        supported.end()
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The versions this build understands.
        supported: std::ops::RangeInclusive<u32>,
    },
    /// Another process holds the database's writer lock.
    #[error("database {path} is locked by another writer (lock file {lock})")]
    Locked {
        /// The database directory.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// RocksDB reported an error.
    #[error("catalog (RocksDB) error at {path}: {message}")]
    Catalog {
        /// The catalog directory.
        path: PathBuf,
        /// RocksDB's message.
        message: String,
    },
    /// RocksDB found damage in the catalog's files at open (a write-ahead log record or a
    /// table that fails its checksum). The catalog is not opened: replaying only the part
    /// before the damage would silently roll back acknowledged commits.
    #[error("catalog at {path} is damaged and was not opened: {message}")]
    CatalogDamaged {
        /// The catalog directory.
        path: PathBuf,
        /// RocksDB's message, which names the damaged file.
        message: String,
    },
    /// A data file exists that only an acknowledged commit can have published, but the
    /// catalog does not reference it: the catalog has lost commits. Nothing is deleted.
    #[error(
        "{path} was published by a commit that the catalog no longer records ({reason}); the catalog lost acknowledged commits, so the database was not opened and no file was deleted"
    )]
    LostCommits {
        /// The data file or collection directory that the catalog does not know.
        path: PathBuf,
        /// What the catalog says instead.
        reason: String,
    },
    /// A catalog record could not be decoded.
    #[error("catalog record {key} at {path} is corrupt: {reason}")]
    CorruptRecord {
        /// The catalog directory.
        path: PathBuf,
        /// A printable form of the key.
        key: String,
        /// What was wrong with it.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
