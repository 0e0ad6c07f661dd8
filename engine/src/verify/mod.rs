//! Verification of a whole database: every data file read in full (every section checksum,
//! every originals document's checksum), every catalog record checked against the files
//! (id map, tombstones, live counts, metadata), and files the catalog does not account for.
//! Nothing is repaired or deleted: the result is a report, one [`Problem`] per fault.
//!
//! It works from the catalog's raw records rather than from an opened [`crate::Database`],
//! so a database whose open fails (a corrupt record, a damaged file) still gets a report of
//! everything that is wrong with it, not only the first fault an open meets.

mod collection;
mod orphans;

use std::path::Path;

use serde::Serialize;
use tessera_storage::catalog::Catalog;
use tessera_storage::layout::{CATALOG_DIR, CollectionDir};

use crate::error::{Error, Result};

/// One fault found by a verification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The collection it concerns, or `None` for the database as a whole.
    pub collection: Option<String>,
    /// What is faulty: a file's path or a catalog record ("id-map entry of document 7",
    /// "tombstones of segment 3", "manifest").
    pub subject: String,
    /// What is wrong with it.
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.collection {
            Some(c) => write!(f, "collection {c:?}: {}: {}", self.subject, self.reason),
            None => write!(f, "database: {}: {}", self.subject, self.reason),
        }
    }
}

/// How much a verification checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VerifyCounts {
    /// Collections in the catalog.
    pub collections: u64,
    /// Data files read (codecs, segments, originals).
    pub files: u64,
    /// Container sections whose checksums were verified.
    pub sections: u64,
    /// Documents of the segments, each checked against the id map.
    pub documents: u64,
    /// Originals documents whose own checksums were verified.
    pub original_documents: u64,
    /// Id-map entries checked.
    pub id_map_entries: u64,
    /// Tombstones (deleted documents) checked.
    pub tombstones: u64,
    /// Metadata records checked.
    pub metadata_records: u64,
    /// Kept-text records read (each decompressed).
    pub text_records: u64,
}

/// The result of [`crate::Database::verify`] or [`verify`]: every problem found, and what
/// was checked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Every fault found, in the order found (database, then collection by collection).
    pub problems: Vec<Problem>,
    /// Findings that are not faults: data files a later commit superseded, which the
    /// engine keeps while a snapshot may still map them and a writer's open removes.
    pub notes: Vec<Problem>,
    /// What was checked.
    pub checked: VerifyCounts,
}

impl VerifyReport {
    /// Whether no problem was found (notes are not problems).
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    pub(crate) fn push(&mut self, collection: Option<&str>, subject: String, reason: String) {
        self.problems.push(Problem {
            collection: collection.map(str::to_owned),
            subject,
            reason,
        });
    }

    pub(crate) fn note(&mut self, collection: Option<&str>, subject: String, reason: String) {
        self.notes.push(Problem {
            collection: collection.map(str::to_owned),
            subject,
            reason,
        });
    }

    /// Records a storage error as a problem: its file or record as the subject.
    pub(crate) fn push_storage(&mut self, collection: Option<&str>, e: &tessera_storage::Error) {
        let (subject, reason) = describe(e);
        self.push(collection, subject, reason);
    }
}

/// A storage error split into what it concerns and what is wrong with it.
fn describe(e: &tessera_storage::Error) -> (String, String) {
    use tessera_storage::Error as S;
    match e {
        S::ChecksumMismatch {
            path,
            what,
            stored,
            computed,
        } => (
            path.display().to_string(),
            format!("{what} fails its checksum (stored {stored:#010x}, computed {computed:#010x})"),
        ),
        S::Corrupt { path, reason } => (path.display().to_string(), reason.clone()),
        S::CorruptRecord { key, reason, .. } => (format!("catalog record {key}"), reason.clone()),
        S::Io { path, source } if source.kind() == std::io::ErrorKind::NotFound => (
            path.display().to_string(),
            "missing: the catalog references it".into(),
        ),
        S::Io { path, source } => (path.display().to_string(), source.to_string()),
        S::UnsupportedVersion { path, .. } => (path.display().to_string(), e.to_string()),
        other => ("storage".into(), other.to_string()),
    }
}

/// Verifies the database at `path` without opening it as a [`crate::Database`]: the catalog
/// is opened read-only (no writer lock is taken, nothing is changed), so this works beside
/// a writer in another process, though commits it makes meanwhile may show as problems
/// (files it publishes or removes while they are being checked), and on a database whose
/// open fails. A catalog that RocksDB cannot open at all is a report with that one problem.
/// Errors are only for what prevents any report: no database at `path`, or I/O failures of
/// the catalog.
pub fn verify(path: impl AsRef<Path>) -> Result<VerifyReport> {
    let path = path.as_ref();
    let catalog_path = path.join(CATALOG_DIR);
    if !catalog_path.is_dir() {
        return Err(Error::NotADatabase {
            path: path.to_path_buf(),
            reason: "no catalog directory".into(),
        });
    }
    match Catalog::open(&catalog_path, false, true) {
        Ok(catalog) => verify_catalog(path, &catalog),
        Err(
            e @ (tessera_storage::Error::CatalogDamaged { .. }
            | tessera_storage::Error::CorruptRecord { .. }),
        ) => {
            let mut report = VerifyReport::default();
            report.push(None, catalog_path.display().to_string(), e.to_string());
            Ok(report)
        }
        Err(e) => Err(e.into()),
    }
}

/// Verifies database directory `db` as `catalog` records it.
pub(crate) fn verify_catalog(db: &Path, catalog: &Catalog) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    if let Err(e) = catalog.db_record() {
        report.push_storage(None, &e);
    }
    let (records, bad) = catalog.collections_checked()?;
    for e in &bad {
        report.push_storage(None, e);
    }
    for record in &records {
        report.checked.collections += 1;
        let dir = CollectionDir::new(db, record.id);
        collection::check(catalog, record, &dir, &mut report)?;
    }
    let live: Vec<u32> = records.iter().map(|r| r.id).collect();
    orphans::check_collection_dirs(db, &live, &mut report);
    Ok(report)
}
