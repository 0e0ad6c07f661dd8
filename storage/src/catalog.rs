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

/// Value of the format key: identifies a Tessera catalog and its layout version.
pub const CATALOG_FORMAT: &str = "tessera-catalog 1";

/// Database-wide record.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DbRecord {
    /// Id the next created collection gets; ids are never reused.
    pub next_collection_id: u32,
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
    pub fn open(path: &Path, create: bool, read_only: bool) -> Result<Self> {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(create && !read_only);
        opts.set_compression_type(rocksdb::DBCompressionType::Zstd);
        opts.set_paranoid_checks(true);
        opts.set_keep_log_file_num(2);
        opts.set_max_log_file_size(1 << 20);
        let err = |e: rocksdb::Error| Error::Catalog {
            path: path.to_path_buf(),
            message: e.into_string(),
        };
        let db = if read_only {
            rocksdb::DB::open_for_read_only(&opts, path, false).map_err(err)?
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

    /// The JSON metadata stored for a document, if any.
    pub fn metadata(&self, coll: u32, id: &ExternalId) -> Result<Option<Vec<u8>>> {
        self.get(&key(TAG_METADATA, coll, &id.key_bytes()))
    }

    /// Commits `batch` atomically with a synced write: durable when this returns.
    pub fn commit(&self, batch: CatalogBatch) -> Result<()> {
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch.inner, &wo).map_err(|e| self.err(e))
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
        for tag in [TAG_MANIFEST, TAG_LOCATION, TAG_TOMBSTONES, TAG_METADATA] {
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

    /// Sets a document's JSON metadata.
    pub fn put_metadata(&mut self, coll: u32, id: &ExternalId, json: &[u8]) {
        self.inner
            .put(key(TAG_METADATA, coll, &id.key_bytes()), json);
    }

    /// Removes a document's metadata.
    pub fn delete_metadata(&mut self, coll: u32, id: &ExternalId) {
        self.inner.delete(key(TAG_METADATA, coll, &id.key_bytes()));
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Io {
        path: PathBuf::from("<catalog record>"),
        source: std::io::Error::other(e),
    })
}
