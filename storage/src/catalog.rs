//! The catalog: collections, manifests, id maps, tombstones and metadata in RocksDB.
//!
//! This is the only module that talks to RocksDB. Every mutation goes through a
//! [`CatalogBatch`] committed with a synced write, so a commit is atomic and durable when
//! [`Catalog::commit`] returns. Key layout (FORMAT.md, "Catalog"): one ASCII tag byte, then a
//! big-endian collection id, then the rest of the key.

use std::path::{Path, PathBuf};

use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::ExternalId;

const KEY_FORMAT: &[u8] = b"F";
const KEY_DB: &[u8] = b"D";
const TAG_COLLECTION: u8 = b'C';
const TAG_MANIFEST: u8 = b'M';
const TAG_LOCATION: u8 = b'I';
const TAG_TOMBSTONES: u8 = b'T';
const TAG_METADATA: u8 = b'X';
const TAG_TEXT: u8 = b'P';

/// Value of the format key: identifies a Tessera catalog and its layout version.
pub const CATALOG_FORMAT: &str = "tessera-catalog 1";

/// The commit protocol under which data files keep their `.tmp` name until the catalog
/// batch that references them is durable (FORMAT.md, "Commit protocol").
pub const PUBLISH_AFTER_COMMIT: u32 = 2;

/// Database-wide record.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DbRecord {
    /// Id the next created collection gets; ids are never reused.
    pub next_collection_id: u32,
    /// Commit protocol of every data file in the database: 0 (absent) for databases whose
    /// files were renamed into place before their commit, so that an unreferenced file can
    /// be a crashed commit's debris; [`PUBLISH_AFTER_COMMIT`] once the writer has cleared
    /// such debris, after which only a lost commit can explain an unreferenced file.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub commit_protocol: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// A collection's identity and settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CollectionRecord {
    /// Internal id (names can be dropped and reused; ids cannot).
    pub id: u32,
    /// The user's name for it.
    pub name: String,
    /// The engine's settings for it, opaque to storage.
    pub config: serde_json::Value,
}

/// A published codec file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CodecRef {
    /// Codec id (a file id of the collection).
    pub id: u64,
    /// File name inside the collection directory.
    pub file: String,
}

/// A published segment file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SegmentRef {
    /// Segment id (a file id of the collection).
    pub id: u64,
    /// File name inside the collection directory.
    pub file: String,
    /// Documents in the segment, deleted ones included.
    pub n_docs: u32,
    /// Token vectors in the segment.
    pub n_tokens: u64,
    /// File size.
    pub bytes: u64,
    /// The segment's original vectors, when the collection keeps them (absent in
    /// manifests written before originals existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub originals: Option<OriginalsRef>,
}

/// A published originals file (FORMAT.md, "Originals").
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OriginalsRef {
    /// File name inside the collection directory.
    pub file: String,
    /// File size.
    pub bytes: u64,
}

/// The set of files that make up a collection at one commit.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// The codec, once trained.
    pub codec: Option<CodecRef>,
    /// Segments in commit order.
    pub segments: Vec<SegmentRef>,
    /// Next file id to hand out.
    pub next_file_id: u64,
    /// Documents not deleted.
    pub live_docs: u64,
    /// Token vectors of documents not deleted.
    pub live_tokens: u64,
    /// Number of commits so far (ingests and deletes).
    pub commits: u64,
    /// Provenance of the vectors (e.g. the encoder model), opaque to storage.
    #[serde(default)]
    pub model: Option<serde_json::Value>,
}

/// Where a live document is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DocLocation {
    /// Segment id.
    pub segment: u64,
    /// Local document number inside the segment.
    pub local: u32,
}

impl DocLocation {
    fn encode(&self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[..8].copy_from_slice(&self.segment.to_le_bytes());
        b[8..].copy_from_slice(&self.local.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != 12 {
            return None;
        }
        Some(DocLocation {
            segment: u64::from_le_bytes(b[..8].try_into().ok()?),
            local: u32::from_le_bytes(b[8..].try_into().ok()?),
        })
    }
}

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

fn key(tag: u8, coll: u32, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(5 + rest.len());
    k.push(tag);
    k.extend_from_slice(&coll.to_be_bytes());
    k.extend_from_slice(rest);
    k
}

fn printable(k: &[u8]) -> String {
    String::from_utf8_lossy(k).into_owned()
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
            Some(v) if v == CATALOG_FORMAT.as_bytes() => {}
            Some(v) => {
                return Err(Error::CorruptRecord {
                    path: path.to_path_buf(),
                    key: "F".into(),
                    reason: format!("unknown catalog format {:?}", printable(&v)),
                });
            }
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

    fn json<T: for<'de> Deserialize<'de>>(&self, k: &[u8], v: &[u8]) -> Result<T> {
        serde_json::from_slice(v).map_err(|e| Error::CorruptRecord {
            path: self.path.clone(),
            key: printable(k),
            reason: e.to_string(),
        })
    }

    /// The database-wide record.
    pub fn db_record(&self) -> Result<DbRecord> {
        match self.get(KEY_DB)? {
            Some(v) => self.json(KEY_DB, &v),
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
            out.push(self.json(&k, &v)?);
        }
        Ok(out)
    }

    /// A collection's manifest, if it has one.
    pub fn manifest(&self, coll: u32) -> Result<Option<Manifest>> {
        let k = key(TAG_MANIFEST, coll, &[]);
        match self.get(&k)? {
            Some(v) => self.json(&k, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Locations of `ids` in collection `coll` (`None` where absent), in one multi-get.
    pub fn locations(&self, coll: u32, ids: &[ExternalId]) -> Result<Vec<Option<DocLocation>>> {
        let keys: Vec<Vec<u8>> = ids
            .iter()
            .map(|id| key(TAG_LOCATION, coll, &id.key_bytes()))
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        for (k, v) in keys.iter().zip(self.db.multi_get(&keys)) {
            match v.map_err(|e| self.err(e))? {
                Some(v) => out.push(Some(DocLocation::decode(&v).ok_or_else(|| {
                    Error::CorruptRecord {
                        path: self.path.clone(),
                        key: printable(k),
                        reason: "document location is not 12 bytes".into(),
                    }
                })?)),
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
            let corrupt = |reason: String| Error::CorruptRecord {
                path: self.path.clone(),
                key: printable(&k),
                reason,
            };
            let seg: [u8; 8] = k[prefix.len()..]
                .try_into()
                .map_err(|_| corrupt("tombstone key has no segment id".into()))?;
            let bitmap =
                RoaringBitmap::deserialize_from(&v[..]).map_err(|e| corrupt(e.to_string()))?;
            out.push((u64::from_be_bytes(seg), bitmap));
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
            match self.json(&k, &v) {
                Ok(r) => out.push(r),
                Err(e) => problems.push(e),
            }
        }
        Ok((out, problems))
    }

    /// Every id-map entry, tombstone bitmap, metadata key and kept text of collection `coll`,
    /// read-only,
    /// for a verifier. A record that does not decode is a problem in the result, not an
    /// error: the verifier reports it and checks the rest. Errors are RocksDB's own.
    pub fn collection_records(&self, coll: u32) -> Result<CollectionRecords> {
        let mut out = CollectionRecords::default();
        let corrupt = |k: &[u8], reason: &str| Error::CorruptRecord {
            path: self.path.clone(),
            key: printable(k),
            reason: reason.to_owned(),
        };
        self.scan_each(TAG_LOCATION, coll, |rest, k, v| {
            match (ExternalId::from_key_bytes(rest), DocLocation::decode(v)) {
                (Some(id), Some(loc)) => out.locations.push((id, loc)),
                (None, _) => out
                    .problems
                    .push(corrupt(k, "id-map key is not an external id")),
                (_, None) => out
                    .problems
                    .push(corrupt(k, "document location is not 12 bytes")),
            }
        })?;
        self.scan_each(TAG_TOMBSTONES, coll, |rest, k, v| {
            let Ok(seg) = <[u8; 8]>::try_from(rest) else {
                out.problems
                    .push(corrupt(k, "tombstone key has no segment id"));
                return;
            };
            match RoaringBitmap::deserialize_from(v) {
                Ok(b) => out.tombstones.push((u64::from_be_bytes(seg), b)),
                Err(e) => out.problems.push(corrupt(k, &e.to_string())),
            }
        })?;
        self.scan_each(
            TAG_METADATA,
            coll,
            |rest, k, _| match ExternalId::from_key_bytes(rest) {
                Some(id) => out.metadata.push(id),
                None => out
                    .problems
                    .push(corrupt(k, "metadata key is not an external id")),
            },
        )?;
        self.scan_each(TAG_TEXT, coll, |rest, k, v| {
            match (ExternalId::from_key_bytes(rest), crate::doctext::decode(v)) {
                (Some(id), Ok(_)) => out.texts.push(id),
                (None, _) => out
                    .problems
                    .push(corrupt(k, "text key is not an external id")),
                (_, Err(reason)) => out.problems.push(corrupt(k, &reason)),
            }
        })?;
        Ok(out)
    }

    /// Calls `each(rest of key, key, value)` for every key of `tag` and collection `coll`.
    fn scan_each(
        &self,
        tag: u8,
        coll: u32,
        mut each: impl FnMut(&[u8], &[u8], &[u8]),
    ) -> Result<()> {
        let prefix = key(tag, coll, &[]);
        for item in self.db.prefix_iterator(&prefix) {
            let (k, v) = item.map_err(|e| self.err(e))?;
            if !k.starts_with(&prefix) {
                break;
            }
            each(&k[prefix.len()..], &k, &v);
        }
        Ok(())
    }

    /// The JSON metadata stored for a document, if any.
    pub fn metadata(&self, coll: u32, id: &ExternalId) -> Result<Option<Vec<u8>>> {
        self.get(&key(TAG_METADATA, coll, &id.key_bytes()))
    }

    /// Values of `tag` for `ids` of collection `coll` in one multi-get (`None` where absent).
    fn multi_values(&self, tag: u8, coll: u32, ids: &[ExternalId]) -> Result<Vec<Option<Vec<u8>>>> {
        let keys: Vec<Vec<u8>> = ids
            .iter()
            .map(|id| key(tag, coll, &id.key_bytes()))
            .collect();
        self.db
            .multi_get(&keys)
            .into_iter()
            .map(|v| v.map_err(|e| self.err(e)))
            .collect()
    }

    /// The JSON metadata of each of `ids` (`None` where a document has none), in one
    /// multi-get.
    pub fn metadata_many(&self, coll: u32, ids: &[ExternalId]) -> Result<Vec<Option<Vec<u8>>>> {
        self.multi_values(TAG_METADATA, coll, ids)
    }

    /// The kept passage text of each of `ids` (`None` where none is kept), in one multi-get.
    pub fn texts(&self, coll: u32, ids: &[ExternalId]) -> Result<Vec<Option<String>>> {
        let values = self.multi_values(TAG_TEXT, coll, ids)?;
        ids.iter()
            .zip(values)
            .map(|(id, v)| match v {
                None => Ok(None),
                Some(v) => {
                    crate::doctext::decode(&v)
                        .map(Some)
                        .map_err(|reason| Error::CorruptRecord {
                            path: self.path.clone(),
                            key: format!("text of document {id} in collection {coll}"),
                            reason,
                        })
                }
            })
            .collect()
    }

    /// Every key of `tag` in collection `coll` with its value, in key order (ids sort
    /// integers first, numerically, then strings bytewise). A key whose id does not decode
    /// is a corrupt record.
    fn scan(&self, tag: u8, coll: u32) -> Result<Vec<(ExternalId, Box<[u8]>)>> {
        let prefix = key(tag, coll, &[]);
        let mut out = Vec::new();
        for item in self.db.prefix_iterator(&prefix) {
            let (k, v) = item.map_err(|e| self.err(e))?;
            if !k.starts_with(&prefix) {
                break;
            }
            let id = ExternalId::from_key_bytes(&k[prefix.len()..]).ok_or_else(|| {
                Error::CorruptRecord {
                    path: self.path.clone(),
                    key: printable(&k),
                    reason: "the key's document id does not decode".into(),
                }
            })?;
            out.push((id, v));
        }
        Ok(out)
    }

    /// Every document of `coll` that has metadata, with its JSON, in id order.
    pub fn all_metadata(&self, coll: u32) -> Result<Vec<(ExternalId, Vec<u8>)>> {
        Ok(self
            .scan(TAG_METADATA, coll)?
            .into_iter()
            .map(|(id, v)| (id, v.into_vec()))
            .collect())
    }

    /// Every live document of `coll` with its location, in id order.
    pub fn all_locations(&self, coll: u32) -> Result<Vec<(ExternalId, DocLocation)>> {
        self.scan(TAG_LOCATION, coll)?
            .into_iter()
            .map(|(id, v)| {
                let loc = DocLocation::decode(&v).ok_or_else(|| Error::CorruptRecord {
                    path: self.path.clone(),
                    key: format!("location of document {id} in collection {coll}"),
                    reason: "document location is not 12 bytes".into(),
                })?;
                Ok((id, loc))
            })
            .collect()
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
        self.inner.put(KEY_DB, to_json(r)?);
        Ok(())
    }

    /// Creates or replaces a collection record.
    pub fn put_collection(&mut self, r: &CollectionRecord) -> Result<()> {
        let mut k = vec![TAG_COLLECTION];
        k.extend_from_slice(r.name.as_bytes());
        self.inner.put(k, to_json(r)?);
        Ok(())
    }

    /// Removes a collection record and every key of its id.
    pub fn delete_collection(&mut self, r: &CollectionRecord) {
        let mut k = vec![TAG_COLLECTION];
        k.extend_from_slice(r.name.as_bytes());
        self.inner.delete(k);
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
        self.inner.put(key(TAG_MANIFEST, coll, &[]), to_json(m)?);
        Ok(())
    }

    /// Maps an external id to its location.
    pub fn put_location(&mut self, coll: u32, id: &ExternalId, loc: DocLocation) {
        self.inner
            .put(key(TAG_LOCATION, coll, &id.key_bytes()), loc.encode());
    }

    /// Removes an external id's mapping.
    pub fn delete_location(&mut self, coll: u32, id: &ExternalId) {
        self.inner.delete(key(TAG_LOCATION, coll, &id.key_bytes()));
    }

    /// Sets the tombstones of one segment.
    pub fn put_tombstones(
        &mut self,
        coll: u32,
        segment: u64,
        bitmap: &RoaringBitmap,
    ) -> Result<()> {
        let mut v = Vec::with_capacity(bitmap.serialized_size());
        bitmap.serialize_into(&mut v).map_err(|e| Error::Io {
            path: PathBuf::from("<tombstones>"),
            source: e,
        })?;
        self.inner
            .put(key(TAG_TOMBSTONES, coll, &segment.to_be_bytes()), v);
        Ok(())
    }

    /// Removes the tombstones of one segment (a merge dropped it).
    pub fn delete_tombstones(&mut self, coll: u32, segment: u64) {
        self.inner
            .delete(key(TAG_TOMBSTONES, coll, &segment.to_be_bytes()));
    }

    /// Sets a document's JSON metadata.
    pub fn put_metadata(&mut self, coll: u32, id: &ExternalId, json: &[u8]) {
        self.inner
            .put(key(TAG_METADATA, coll, &id.key_bytes()), json);
    }

    /// Removes a document's metadata.
    pub fn delete_metadata(&mut self, coll: u32, id: &ExternalId) {
        self.inner.delete(key(TAG_METADATA, coll, &id.key_bytes()));
    }

    /// Sets a document's kept passage text (compressed: [`crate::doctext::encode`]).
    pub fn put_text(&mut self, coll: u32, id: &ExternalId, text: &str) -> Result<()> {
        let v = crate::doctext::encode(text).map_err(|e| Error::Io {
            path: PathBuf::from(format!("<text of document {id}>")),
            source: e,
        })?;
        self.inner.put(key(TAG_TEXT, coll, &id.key_bytes()), v);
        Ok(())
    }

    /// Removes a document's kept text.
    pub fn delete_text(&mut self, coll: u32, id: &ExternalId) {
        self.inner.delete(key(TAG_TEXT, coll, &id.key_bytes()));
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Io {
        path: PathBuf::from("<catalog record>"),
        source: std::io::Error::other(e),
    })
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
