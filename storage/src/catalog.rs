//! The catalog: collections, manifests, id maps, tombstones and metadata in RocksDB.
//!
//! This is the only module that talks to RocksDB. Every mutation goes through a
//! [`CatalogBatch`] committed with a synced write, so a commit is atomic and durable when
//! [`Catalog::commit`] returns. Key layout (FORMAT.md, "Catalog"): one ASCII tag byte, then a
//! big-endian collection id, then the rest of the key.

use std::path::{Path, PathBuf};

use roaring::RoaringBitmap;

use crate::error::{Error, Result};
use crate::ids::ExternalId;
use crate::records::{
    KEY_DB, KEY_FORMAT, TAG_COLLECTION, TAG_LOCATION, TAG_MANIFEST, TAG_METADATA, TAG_TEXT,
    TAG_TOMBSTONES, corrupt, key,
};
// The records' types and encodings live in `records` (no RocksDB there, so that they can be
// fuzzed without it); the catalog's users keep naming them from here.
use crate::records::{self, Record, RecordKey};
pub use crate::records::{
    CATALOG_FORMAT, CodecRef, CollectionRecord, DbRecord, DocLocation, Manifest, OriginalsRef,
    PUBLISH_AFTER_COMMIT, SegmentRef,
};

/// Every record of one collection, as [`Catalog::collection_records`] read them.
#[derive(Debug, Default)]
pub struct CollectionRecords {
    /// Id-map entries: each external id and where its document is stored.
    pub locations: Vec<(ExternalId, DocLocation)>,
    /// Tombstones, per segment id.
    pub tombstones: Vec<(u64, RoaringBitmap)>,
    /// External ids that have metadata.
    pub metadata: Vec<ExternalId>,
    /// External ids that have kept text (each value decoded, the text dropped).
    pub texts: Vec<ExternalId>,
    /// Records that could not be decoded ([`Error::CorruptRecord`], naming the key).
    pub problems: Vec<Error>,
}

/// The RocksDB-backed catalog of a database.
pub struct Catalog {
    db: rocksdb::DB,
    path: PathBuf,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").field("path", &self.path).finish()
    }
}

impl Catalog {
    /// Opens (creating if `create`) the catalog at `path`; `read_only` opens without taking
    /// RocksDB's lock, for readers in other processes.
    ///
    /// A write-ahead log record that fails its checksum is [`Error::CatalogDamaged`]:
    /// RocksDB's default (point-in-time recovery) would stop replaying there and open the
    /// catalog as of an earlier commit, silently dropping acknowledged ones. Only an
    /// incomplete record at the very end of the log is skipped, since every acknowledged
    /// commit was synced whole and only a write cut short by a crash ends that way.
    pub fn open(path: &Path, create: bool, read_only: bool) -> Result<Self> {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(create && !read_only);
        opts.set_compression_type(rocksdb::DBCompressionType::Zstd);
        opts.set_paranoid_checks(true);
        opts.set_wal_recovery_mode(rocksdb::DBRecoveryMode::TolerateCorruptedTailRecords);
        opts.set_keep_log_file_num(2);
        opts.set_max_log_file_size(1 << 20);
        let err = |e: rocksdb::Error| {
            if e.kind() == rocksdb::ErrorKind::Corruption {
                Error::CatalogDamaged {
                    path: path.to_path_buf(),
                    message: name_damaged_files(path, e.into_string()),
                }
            } else {
                Error::Catalog {
                    path: path.to_path_buf(),
                    message: e.into_string(),
                }
            }
        };
        let db = if read_only {
            open_read_only_retrying(&opts, path, err)?
        } else {
            rocksdb::DB::open(&opts, path).map_err(err)?
        };
        let catalog = Catalog {
            db,
            path: path.to_path_buf(),
        };
        match catalog.get(KEY_FORMAT)? {
            Some(v) => records::check_format(path, &v)?,
            None if create && !read_only => {
                let mut b = CatalogBatch::default();
                b.inner.put(KEY_FORMAT, CATALOG_FORMAT.as_bytes());
                b.put_db_record(&DbRecord::default())?;
                catalog.commit(b)?;
            }
            // A creation killed between RocksDB's creation of the catalog and the commit of
            // the format key leaves an empty catalog: nothing was acknowledged, and creating
            // the database again completes it.
            None if catalog
                .db
                .iterator(rocksdb::IteratorMode::Start)
                .next()
                .is_none() =>
            {
                return Err(Error::Catalog {
                    path: path.to_path_buf(),
                    message: "the catalog is empty: the database's creation did not complete \
                              (creating it again completes it)"
                        .into(),
                });
            }
            None => {
                return Err(Error::CorruptRecord {
                    path: path.to_path_buf(),
                    key: "F".into(),
                    reason: "not a Tessera catalog (format key missing)".into(),
                });
            }
        }
        Ok(catalog)
    }

    /// The catalog's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets the database-wide record on its own, durably.
    pub fn put_db_record(&self, r: &DbRecord) -> Result<()> {
        let mut b = CatalogBatch::default();
        b.put_db_record(r)?;
        self.commit(b)
    }

    fn err(&self, e: rocksdb::Error) -> Error {
        Error::Catalog {
            path: self.path.clone(),
            message: e.into_string(),
        }
    }

    fn get(&self, k: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get(k).map_err(|e| self.err(e))
    }

    /// The database-wide record.
    pub fn db_record(&self) -> Result<DbRecord> {
        match self.get(KEY_DB)? {
            Some(v) => records::decode_json(&self.path, KEY_DB, &v),
            None => Ok(DbRecord::default()),
        }
    }

    /// Every collection, ordered by name.
    pub fn collections(&self) -> Result<Vec<CollectionRecord>> {
        let mut out = Vec::new();
        for item in self.db.prefix_iterator([TAG_COLLECTION]) {
            let (k, v) = item.map_err(|e| self.err(e))?;
            if k.first() != Some(&TAG_COLLECTION) {
                break;
            }
            out.push(records::decode_collection(&self.path, &k, &v)?);
        }
        Ok(out)
    }

    /// A collection's manifest, if it has one.
    pub fn manifest(&self, coll: u32) -> Result<Option<Manifest>> {
        let k = records::manifest_key(coll);
        match self.get(&k)? {
            Some(v) => records::decode_json(&self.path, &k, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Locations of `ids` in collection `coll` (`None` where absent), in one multi-get.
    pub fn locations(&self, coll: u32, ids: &[ExternalId]) -> Result<Vec<Option<DocLocation>>> {
        let keys: Vec<Vec<u8>> = ids
            .iter()
            .map(|id| records::location_key(coll, id))
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        for (k, v) in keys.iter().zip(self.db.multi_get(&keys)) {
            match v.map_err(|e| self.err(e))? {
                Some(v) => out.push(Some(records::decode_location(&self.path, k, &v)?)),
                None => out.push(None),
            }
        }
        Ok(out)
    }

    /// Tombstones of every segment of `coll` that has any.
    pub fn tombstones(&self, coll: u32) -> Result<Vec<(u64, RoaringBitmap)>> {
        let prefix = key(TAG_TOMBSTONES, coll, &[]);
        let mut out = Vec::new();
        for item in self.db.prefix_iterator(&prefix) {
            let (k, v) = item.map_err(|e| self.err(e))?;
            if !k.starts_with(&prefix) {
                break;
            }
            match records::decode(&self.path, &k, &v)? {
                (RecordKey::Tombstones { segment, .. }, Record::Tombstones(bitmap)) => {
                    out.push((segment, bitmap));
                }
                _ => return Err(corrupt(&self.path, &k, "not a tombstone record")),
            }
        }
        Ok(out)
    }

    /// Every collection record, each undecodable one a problem rather than an error (see
    /// [`Catalog::collection_records`]).
    pub fn collections_checked(&self) -> Result<(Vec<CollectionRecord>, Vec<Error>)> {
        let (mut out, mut problems) = (Vec::new(), Vec::new());
        for item in self.db.prefix_iterator([TAG_COLLECTION]) {
            let (k, v) = item.map_err(|e| self.err(e))?;
            if k.first() != Some(&TAG_COLLECTION) {
                break;
            }
            match records::decode_collection(&self.path, &k, &v) {
                Ok(r) => out.push(r),
                Err(e) => problems.push(e),
            }
        }
        Ok((out, problems))
    }

    /// Every id-map entry, tombstone bitmap, metadata record and kept text of collection
    /// `coll`, each decoded as [`records::decode`] does, for a verifier. A record that does
    /// not decode is a problem in the result, not an error: the verifier reports it and
    /// checks the rest. Errors are RocksDB's own.
    pub fn collection_records(&self, coll: u32) -> Result<CollectionRecords> {
        let mut out = CollectionRecords::default();
        for tag in [TAG_LOCATION, TAG_TOMBSTONES, TAG_METADATA, TAG_TEXT] {
            self.scan_each(tag, coll, |k, v| match records::decode(&self.path, k, v) {
                Ok((RecordKey::Location { id, .. }, Record::Location(loc))) => {
                    out.locations.push((id, loc));
                }
                Ok((RecordKey::Tombstones { segment, .. }, Record::Tombstones(b))) => {
                    out.tombstones.push((segment, b));
                }
                Ok((RecordKey::Metadata { id, .. }, _)) => out.metadata.push(id),
                Ok((RecordKey::Text { id, .. }, _)) => out.texts.push(id),
                // The prefix fixes the tag, so no other kind of key is scanned here.
                Ok(_) => out.problems.push(corrupt(&self.path, k, "unexpected key")),
                Err(e) => out.problems.push(e),
            })?;
        }
        Ok(out)
    }

    /// Calls `each(key, value)` for every key of `tag` and collection `coll`.
    fn scan_each(&self, tag: u8, coll: u32, mut each: impl FnMut(&[u8], &[u8])) -> Result<()> {
        let prefix = key(tag, coll, &[]);
        for item in self.db.prefix_iterator(&prefix) {
            let (k, v) = item.map_err(|e| self.err(e))?;
            if !k.starts_with(&prefix) {
                break;
            }
            each(&k, &v);
        }
        Ok(())
    }

    /// The JSON metadata stored for a document, if any.
    pub fn metadata(&self, coll: u32, id: &ExternalId) -> Result<Option<Vec<u8>>> {
        self.get(&records::metadata_key(coll, id))
    }

    /// The values of `keys` in one multi-get (`None` where absent).
    fn multi_values(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        self.db
            .multi_get(keys)
            .into_iter()
            .map(|v| v.map_err(|e| self.err(e)))
            .collect()
    }

    /// The JSON metadata of each of `ids` (`None` where a document has none), in one
    /// multi-get.
    pub fn metadata_many(&self, coll: u32, ids: &[ExternalId]) -> Result<Vec<Option<Vec<u8>>>> {
        let keys: Vec<Vec<u8>> = ids
            .iter()
            .map(|id| records::metadata_key(coll, id))
            .collect();
        self.multi_values(&keys)
    }

    /// The kept passage text of each of `ids` (`None` where none is kept), in one multi-get.
    pub fn texts(&self, coll: u32, ids: &[ExternalId]) -> Result<Vec<Option<String>>> {
        let keys: Vec<Vec<u8>> = ids.iter().map(|id| records::text_key(coll, id)).collect();
        let values = self.multi_values(&keys)?;
        keys.iter()
            .zip(values)
            .map(|(k, v)| match v {
                None => Ok(None),
                Some(v) => records::decode_text(&self.path, k, &v).map(Some),
            })
            .collect()
    }

    /// Every document of `coll` that has metadata, with its JSON, in id order (ids sort
    /// integers first, numerically, then strings bytewise). A key whose id does not decode
    /// is a corrupt record.
    pub fn all_metadata(&self, coll: u32) -> Result<Vec<(ExternalId, Vec<u8>)>> {
        let mut out = Vec::new();
        let mut failed = None;
        self.scan_each(TAG_METADATA, coll, |k, v| {
            if failed.is_some() {
                return;
            }
            match RecordKey::parse(k) {
                Ok(RecordKey::Metadata { id, .. }) => out.push((id, v.to_vec())),
                Ok(_) => failed = Some(corrupt(&self.path, k, "not a metadata key")),
                Err(reason) => failed = Some(corrupt(&self.path, k, reason)),
            }
        })?;
        failed.map_or(Ok(out), Err)
    }

    /// Every live document of `coll` with its location, in id order.
    pub fn all_locations(&self, coll: u32) -> Result<Vec<(ExternalId, DocLocation)>> {
        let mut out = Vec::new();
        let mut failed = None;
        self.scan_each(TAG_LOCATION, coll, |k, v| {
            if failed.is_some() {
                return;
            }
            match records::decode(&self.path, k, v) {
                Ok((RecordKey::Location { id, .. }, Record::Location(loc))) => out.push((id, loc)),
                Ok(_) => failed = Some(corrupt(&self.path, k, "not a location record")),
                Err(e) => failed = Some(e),
            }
        })?;
        failed.map_or(Ok(out), Err)
    }

    /// Commits `batch` atomically with a synced write: durable when this returns.
    pub fn commit(&self, batch: CatalogBatch) -> Result<()> {
        crate::failpoint::check(crate::failpoint::CATALOG_COMMIT, &self.path).map_err(|e| {
            Error::Catalog {
                path: self.path.clone(),
                message: e.to_string(),
            }
        })?;
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch.inner, &wo).map_err(|e| self.err(e))
    }
}

/// RocksDB names the table file in a table's checksum error but not the log or manifest in
/// a replay's: add the logs and manifests present, which are where such damage can be.
fn name_damaged_files(catalog: &Path, message: String) -> String {
    if [".log", ".sst", "MANIFEST-"]
        .iter()
        .any(|k| message.contains(k))
    {
        return message;
    }
    let mut names: Vec<String> = std::fs::read_dir(catalog)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".log") || n.starts_with("MANIFEST-"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    format!(
        "{message} (in a write-ahead log or manifest: {})",
        names.join(", ")
    )
}

/// How often a read-only open is tried before its error is reported.
const READ_ONLY_OPEN_ATTEMPTS: u32 = 50;

/// Names of the catalog's files that a writer's open or flush replaces: `CURRENT`, the
/// manifests and the write-ahead logs (appends to a log change no name).
fn rotating_files(catalog: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(catalog)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n == "CURRENT" || n.starts_with("MANIFEST-") || n.ends_with(".log"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Opens a read-only RocksDB instance beside a writer that may be rotating its files.
///
/// A read-only open reads the manifest, lists the write-ahead logs, and replays them. A
/// writer in another process that opens meanwhile (each writer open moves the logs into a
/// table, writes a new manifest and deletes the old log) can make the open fail with "No
/// such file or directory" (RocksDB reports some of these as corruption), or, worse, let it
/// succeed with the old manifest and without the deleted log: a view older than the last
/// commit, which an earlier reader may already have seen. So the open is validated like a
/// sequence lock: the rotating files are listed before and after, and an open during which
/// they changed, or that failed on a missing file, is tried again (a bounded number of
/// times, with a growing pause). Appends to the current log change no name, and a view
/// of a prefix of its records is a consistent earlier commit of that instant.
///
/// Chosen over a secondary instance (which needs a directory of its own for its logs and a
/// catch-up call) and a checkpoint (which copies or links files into a new directory):
/// this stays read-only and costs a directory listing per open.
fn open_read_only_retrying(
    opts: &rocksdb::Options,
    path: &Path,
    err: impl Fn(rocksdb::Error) -> Error,
) -> Result<rocksdb::DB> {
    let mut attempt = 1;
    loop {
        let before = rotating_files(path);
        let retry = match rocksdb::DB::open_for_read_only(opts, path, false) {
            Ok(db) if rotating_files(path) == before => return Ok(db),
            Ok(_) => attempt < READ_ONLY_OPEN_ATTEMPTS,
            Err(e) => {
                if attempt < READ_ONLY_OPEN_ATTEMPTS
                    && e.as_ref().contains("No such file or directory")
                {
                    true
                } else {
                    return Err(err(e));
                }
            }
        };
        if !retry {
            return Err(Error::Catalog {
                path: path.to_path_buf(),
                message: format!(
                    "the catalog's files changed during each of {READ_ONLY_OPEN_ATTEMPTS} read-only opens (a writer reopening continuously)"
                ),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(
            u64::from(attempt.min(20)) * 2,
        ));
        attempt += 1;
    }
}

/// A set of catalog changes committed together by [`Catalog::commit`].
#[derive(Default)]
pub struct CatalogBatch {
    inner: rocksdb::WriteBatch,
}

impl CatalogBatch {
    /// Sets the database-wide record.
    pub fn put_db_record(&mut self, r: &DbRecord) -> Result<()> {
        self.inner.put(KEY_DB, records::encode_json(r)?);
        Ok(())
    }

    /// Creates or replaces a collection record.
    pub fn put_collection(&mut self, r: &CollectionRecord) -> Result<()> {
        self.inner
            .put(records::collection_key(&r.name), records::encode_json(r)?);
        Ok(())
    }

    /// Removes a collection record and every key of its id.
    pub fn delete_collection(&mut self, r: &CollectionRecord) {
        self.inner.delete(records::collection_key(&r.name));
        for tag in [
            TAG_MANIFEST,
            TAG_LOCATION,
            TAG_TOMBSTONES,
            TAG_METADATA,
            TAG_TEXT,
        ] {
            let from = key(tag, r.id, &[]);
            let to = match r.id.checked_add(1) {
                Some(next) => key(tag, next, &[]),
                None => vec![tag + 1],
            };
            self.inner.delete_range(from, to);
        }
    }

    /// Sets a collection's manifest.
    pub fn put_manifest(&mut self, coll: u32, m: &Manifest) -> Result<()> {
        self.inner
            .put(records::manifest_key(coll), records::encode_json(m)?);
        Ok(())
    }

    /// Maps an external id to its location.
    pub fn put_location(&mut self, coll: u32, id: &ExternalId, loc: DocLocation) {
        self.inner
            .put(records::location_key(coll, id), loc.encode());
    }

    /// Removes an external id's mapping.
    pub fn delete_location(&mut self, coll: u32, id: &ExternalId) {
        self.inner.delete(records::location_key(coll, id));
    }

    /// Sets the tombstones of one segment.
    pub fn put_tombstones(
        &mut self,
        coll: u32,
        segment: u64,
        bitmap: &RoaringBitmap,
    ) -> Result<()> {
        self.inner.put(
            records::tombstones_key(coll, segment),
            records::encode_tombstones(bitmap)?,
        );
        Ok(())
    }

    /// Removes the tombstones of one segment (a merge dropped it).
    pub fn delete_tombstones(&mut self, coll: u32, segment: u64) {
        self.inner.delete(records::tombstones_key(coll, segment));
    }

    /// Sets a document's JSON metadata.
    pub fn put_metadata(&mut self, coll: u32, id: &ExternalId, json: &[u8]) {
        self.inner.put(records::metadata_key(coll, id), json);
    }

    /// Removes a document's metadata.
    pub fn delete_metadata(&mut self, coll: u32, id: &ExternalId) {
        self.inner.delete(records::metadata_key(coll, id));
    }

    /// Sets a document's kept passage text (compressed: [`crate::doctext::encode`]).
    pub fn put_text(&mut self, coll: u32, id: &ExternalId, text: &str) -> Result<()> {
        self.inner
            .put(records::text_key(coll, id), records::encode_text(id, text)?);
        Ok(())
    }

    /// Removes a document's kept text.
    pub fn delete_text(&mut self, coll: u32, id: &ExternalId) {
        self.inner.delete(records::text_key(coll, id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_creation_killed_before_the_format_key_is_reported_as_incomplete_and_completes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("catalog");
        // What a kill between RocksDB's creation and the format key's commit leaves.
        {
            let mut opts = rocksdb::Options::default();
            opts.create_if_missing(true);
            rocksdb::DB::open(&opts, &path).expect("bare RocksDB");
        }
        for read_only in [false, true] {
            let err = Catalog::open(&path, false, read_only).expect_err("incomplete");
            assert!(
                err.to_string().contains("creation did not complete"),
                "{err}"
            );
        }
        let catalog = Catalog::open(&path, true, false).expect("creating again completes it");
        assert_eq!(catalog.db_record().expect("record"), DbRecord::default());
    }

    #[test]
    fn collection_records_lists_every_record_and_reports_undecodable_ones_as_problems() {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = Catalog::open(&dir.path().join("catalog"), true, false).expect("catalog");
        let mut b = CatalogBatch::default();
        let id = ExternalId::Int(7);
        let loc = DocLocation {
            segment: 3,
            local: 1,
        };
        b.put_location(0, &id, loc);
        b.put_tombstones(0, 3, &RoaringBitmap::from_iter([2u32]))
            .expect("tombstones");
        b.put_metadata(0, &id, b"{}");
        // Another collection's records are not listed.
        b.put_location(1, &ExternalId::Int(8), loc);
        // What no writer produces: a short location, a bitmap that does not decode, and a
        // metadata key that is no external id.
        b.inner.put(
            key(TAG_LOCATION, 0, &ExternalId::Int(9).key_bytes()),
            b"short",
        );
        b.inner
            .put(key(TAG_TOMBSTONES, 0, &4u64.to_be_bytes()), b"junk");
        b.inner.put(key(TAG_METADATA, 0, &[9, 9]), b"{}");
        catalog.commit(b).expect("commit");

        let r = catalog.collection_records(0).expect("records");
        assert_eq!(r.locations, vec![(id.clone(), loc)]);
        assert_eq!(r.tombstones, vec![(3, RoaringBitmap::from_iter([2u32]))]);
        assert_eq!(r.metadata, vec![id]);
        let problems: Vec<String> = r.problems.iter().map(|e| e.to_string()).collect();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("not 12 bytes"), "{problems:?}");
    }
}
