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
    /// A file failed validation (length, magic, version, checksum or layout).
    #[error("corrupt file {path}: {reason}")]
    Corrupt {
        /// The file that failed validation.
        path: PathBuf,
        /// What check failed.
        reason: String,
    },
    /// A file was written by a newer (or unknown) version of the format.
    #[error("{path}: unsupported format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The version this build understands.
        supported: u32,
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
