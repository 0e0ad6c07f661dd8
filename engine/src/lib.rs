//! # Tessera
//!
//! An embedded database for multi-vector documents (ColBERT passages, ColPali pages,
//! PreFLMR entries) searched by late interaction (MaxSim).
//!
//! ```no_run
//! use tessera::{CollectionConfig, Database, Document, IngestOptions, SearchParams};
//! # fn main() -> tessera::Result<()> {
//! let db = Database::open_or_create("my.db")?;
//! let docs = db.create_collection("passages", CollectionConfig::new(128))?;
//! // Each document is a [tokens, 128] matrix, row-major.
//! docs.ingest(&[Document::new("doc-1", vec![0.1; 3 * 128])], &IngestOptions::default())?;
//! let hits = docs.search(&vec![0.1; 32 * 128], 10, &SearchParams::default())?;
//! for h in hits {
//!     println!("{} {}", h.id, h.score);
//! }
//! # Ok(()) }
//! ```
//!
//! A database is a directory; one process writes it at a time (others get a "locked"
//! error), any number of threads read. Commits are atomic and durable when they return.
#![forbid(unsafe_code)]

mod codec;
mod collection;
mod database;
mod diversity;
mod docs;
mod document;
mod error;
mod explain;
pub mod filter;
mod gpu;
mod kmeans;
mod load;
mod locate;
mod model;
mod options;
mod parallel;
mod rerank;
mod search;
mod snapshot;
pub mod synthetic;
mod verify;
mod writer;

pub use codec::{default_centroids, plaid_centroids};
pub use collection::{Collection, CollectionInfo};
pub use database::Database;
pub use diversity::{DIVERSITY_DEPTH_FLOOR, DIVERSITY_DEPTH_PER_K, Diversity};
pub use document::{Document, Hit, StoredDocument};
pub use error::{Error, Result};
pub use explain::{Explanation, TokenMatch};
pub use filter::{Cmp, Filter, FilterParseError, Scalar};
pub use gpu::{GpuCounters, ResolvedDevice, gpu_counters, resolve_device};
pub use model::ModelRecord;
pub use options::{
    CollectionConfig, Device, FILTER_EXACT_DOCS, HitFields, IngestOptions, MergePolicy, OnConflict,
    ParseDeviceError, Precision, REFINE_FLOOR, REFINE_PER_K, SearchParams,
};
pub use rerank::RerankReport;
pub use search::SearchStats;
pub use snapshot::Snapshot;
pub use tessera_storage::ExternalId;
pub use verify::{Problem, VerifyCounts, VerifyReport, verify};
pub use writer::{
    CompactReport, DeleteReport, IngestReport, RETRAIN_CENTROID_FACTOR, RETRAIN_SAMPLE_GROWTH,
    RETRAIN_SAMPLE_SHARE, RetrainReport,
};
