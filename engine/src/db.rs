//! The database facade: directories, the writer lock, collections and the commit protocol.
//!
//! Directory layout (FORMAT.md, "Database directory"):
//! ```text
//! DB/LOCK                        writer lock (advisory, held by the one writer)
//! DB/catalog/                    RocksDB: collections, manifests, id map, tombstones, metadata
//! DB/collections/<id>/codec-<n>.tcd, seg-<n>.tsg, vec-<n>.tov   immutable data files
//! ```
//! A commit writes its data files first under temporary names (temp file, fsync, fsync
//! directory), makes them part of the collection in one synced RocksDB write batch, and only
//! then renames them to their final names. A temporary file that the catalog references is
//! a commit that crashed before its renames (the writer completes them at open); one that it
//! does not reference is a commit that never happened (removed at open). A final-named file
//! that the catalog does not reference can only mean the catalog lost commits: the open
//! fails instead of deleting it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};
use roaring::RoaringBitmap;
use tessera_storage::catalog::{
    Catalog, CatalogBatch, CodecRef, CollectionRecord, DocLocation, Manifest, OriginalsRef,
    PUBLISH_AFTER_COMMIT, SegmentRef,
};
use tessera_storage::fsutil::{
    DirLock, fsync_dir, publish, remove_tmp_files, tmp_path, write_unpublished,
};
use tessera_storage::originals::{OriginalsInput, OriginalsReader, Precision, write_originals};
use tessera_storage::segment::{SegmentInput, SegmentReader, write_segment};
use tessera_storage::{ExternalId, codec as codec_file};

use crate::codec::{self, Codec};
use crate::document::{Document, Hit};
use crate::error::{Error, Result};
use crate::model::ModelRecord;
use crate::options::{CollectionConfig, IngestOptions, OnConflict, SearchParams};
use crate::snapshot::{SegmentView, Snapshot, SnapshotInner};

const CATALOG_DIR: &str = "catalog";
const COLLECTIONS_DIR: &str = "collections";
/// How often a read-only open loads a fresh catalog view when a file of the previous one
/// was removed meanwhile.
const READ_ONLY_LOAD_ATTEMPTS: u32 = 20;

/// An open database. Cheap to clone, `Send + Sync`: share it between threads freely.
#[derive(Clone, Debug)]
pub struct Database {
    inner: Arc<DbInner>,
}

#[derive(Debug)]
struct DbInner {
    path: PathBuf,
    catalog: Catalog,
    read_only: bool,
    _lock: Option<DirLock>,
    collections: RwLock<BTreeMap<String, Arc<CollectionState>>>,
    /// Serialises writers: one commit at a time per database.
    writer: Mutex<()>,
    /// Why this handle refuses writes, once a catalog write or an fsync has failed: the
    /// state on disk is then unknown (the write may yet be durable; the kernel may have
    /// dropped the unsynced pages), and only a new open establishes it.
    refused: Mutex<Option<String>>,
}

#[derive(Debug)]
struct CollectionState {
    record: CollectionRecord,
    config: CollectionConfig,
    name: Arc<str>,
    dir: PathBuf,
    dropped: AtomicBool,
    manifest: Mutex<Manifest>,
    current: RwLock<Arc<SnapshotInner>>,
}

/// A handle on one collection. Cheap to clone, `Send + Sync`.
#[derive(Clone, Debug)]
pub struct Collection {
    db: Arc<DbInner>,
    state: Arc<CollectionState>,
}

/// What an ingest committed.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct IngestReport {
    /// Documents committed.
    pub documents: usize,
    /// Token vectors committed.
    pub tokens: usize,
    /// Existing documents replaced (upsert).
    pub replaced: usize,
    /// Whether this batch trained the collection's codec.
    pub trained_codec: bool,
    /// Centroids appended to the codec because the batch drifted from its distribution.
    pub centroids_added: u32,
    /// The batch's mean residual norm over the codec's training mean (before any
    /// expansion): about 1 in distribution; above 1.5 triggers expansion.
    pub residual_norm_ratio: f32,
    /// Bytes of the segment file written.
    pub segment_bytes: u64,
}

/// What a delete removed.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct DeleteReport {
    /// Documents deleted.
    pub deleted: usize,
    /// Ids that were not in the collection.
    pub missing: Vec<ExternalId>,
}

/// A collection's settings and size.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CollectionInfo {
    /// Name.
    pub name: String,
    /// Settings.
    pub config: CollectionConfig,
    /// Live documents.
    pub documents: u64,
    /// Token vectors of live documents.
    pub tokens: u64,
    /// Segment files.
    pub segments: usize,
    /// Centroids of the codec (0 before the first ingest).
    pub centroids: u32,
    /// Token vectors the codec was trained on.
    pub codec_trained_tokens: u64,
    /// Bytes of segment, codec and originals files.
    pub disk_bytes: u64,
    /// Segment bytes per stored token vector (deleted ones included until compaction): the
    /// index, what must stay in memory for fast search.
    pub bytes_per_token: f64,
    /// Bytes of originals files (read per query only for the refined candidates).
    pub originals_bytes: u64,
    /// Originals bytes per stored token vector (0 without originals).
    pub originals_bytes_per_token: f64,
    /// Postings: bytes stored (zstd) and uncompressed.
    pub postings_bytes: (u64, u64),
    /// Commits so far.
    pub commits: u64,
    /// The text encoder model recorded for the collection's vectors, if any.
    pub model: Option<ModelRecord>,
}

impl Database {
    /// Opens the database at `path` for writing, creating it if it does not exist.
    pub fn open_or_create(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_impl(path.as_ref(), true, false)
    }

    /// Opens an existing database for writing. Fails with a "locked" error if another
    /// process has it open for writing.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_impl(path.as_ref(), false, false)
    }

    /// Opens an existing database for reading only; works while another process writes.
    /// The view is the state at open time.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_impl(path.as_ref(), false, true)
    }

    fn open_impl(path: &Path, create: bool, read_only: bool) -> Result<Self> {
        let catalog_path = path.join(CATALOG_DIR);
        if !catalog_path.exists() {
            if !create {
                return Err(Error::NotADatabase {
                    path: path.to_path_buf(),
                    reason: "no catalog directory (create the database first)".into(),
                });
            }
            std::fs::create_dir_all(path.join(COLLECTIONS_DIR)).map_err(|e| {
                tessera_storage::Error::Io {
                    path: path.to_path_buf(),
                    source: e,
                }
            })?;
            fsync_dir(path)?;
        }
        let lock = if read_only {
            None
        } else {
            Some(DirLock::acquire(path)?)
        };
        let (catalog, collections, mut db_record, cleanup) = if read_only {
            // The files of a reader's catalog view can disappear before it maps them: a
            // writer in another process removes a dropped collection's directory, or at its
            // open a codec superseded since. A newer view no longer names them.
            let mut attempt = 1;
            loop {
                match Self::load(path, &catalog_path, create, read_only) {
                    Err(Error::Storage(tessera_storage::Error::Io { source, .. }))
                        if source.kind() == std::io::ErrorKind::NotFound
                            && attempt < READ_ONLY_LOAD_ATTEMPTS =>
                    {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        attempt += 1;
                    }
                    loaded => break loaded?,
                }
            }
        } else {
            Self::load(path, &catalog_path, create, read_only)?
        };
        if cleanup != Cleanup::None {
            remove_orphan_collection_dirs(path, &collections, &db_record, cleanup)?;
        }
        if cleanup == Cleanup::Legacy {
            // The debris of the old protocol is gone: from now on an unreferenced file is
            // evidence of lost commits.
            db_record.commit_protocol = PUBLISH_AFTER_COMMIT;
            catalog.put_db_record(&db_record)?;
        }
        Ok(Database {
            inner: Arc::new(DbInner {
                path: path.to_path_buf(),
                catalog,
                read_only,
                _lock: lock,
                collections: RwLock::new(collections),
                writer: Mutex::new(()),
                refused: Mutex::new(None),
            }),
        })
    }

    /// Opens the catalog and every collection's files.
    #[allow(clippy::type_complexity)]
    fn load(
        path: &Path,
        catalog_path: &Path,
        create: bool,
        read_only: bool,
    ) -> Result<(
        Catalog,
        BTreeMap<String, Arc<CollectionState>>,
        tessera_storage::catalog::DbRecord,
        Cleanup,
    )> {
        let catalog = Catalog::open(catalog_path, create, read_only)?;
        let db_record = catalog.db_record()?;
        let cleanup = if read_only {
            Cleanup::None
        } else if db_record.commit_protocol >= PUBLISH_AFTER_COMMIT {
            Cleanup::RefuseLostCommits
        } else {
            Cleanup::Legacy
        };
        let mut collections = BTreeMap::new();
        for record in catalog.collections()? {
            let state = load_collection(path, &catalog, record, cleanup)?;
            collections.insert(state.record.name.clone(), Arc::new(state));
        }
        Ok((catalog, collections, db_record, cleanup))
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether this handle was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    /// Creates a collection.
    pub fn create_collection(&self, name: &str, config: CollectionConfig) -> Result<Collection> {
        self.inner.check_writable()?;
        let _w = self.inner.writer.lock();
        if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
            return Err(Error::InvalidConfig {
                collection: name.to_owned(),
                reason: "names must be 1 to 255 bytes without control characters".into(),
            });
        }
        config.validate().map_err(|reason| Error::InvalidConfig {
            collection: name.to_owned(),
            reason,
        })?;
        if self.inner.collections.read().contains_key(name) {
            return Err(Error::CollectionExists(name.to_owned()));
        }
        let mut dbr = self.inner.catalog.db_record()?;
        let id = dbr.next_collection_id;
        dbr.next_collection_id += 1;
        let record = CollectionRecord {
            id,
            name: name.to_owned(),
            config: serde_json::to_value(&config).map_err(|e| Error::InvalidConfig {
                collection: name.to_owned(),
                reason: e.to_string(),
            })?,
        };
        let dir = collection_dir(&self.inner.path, id);
        std::fs::create_dir_all(&dir).map_err(|e| tessera_storage::Error::Io {
            path: dir.clone(),
            source: e,
        })?;
        self.inner
            .note(fsync_dir(&self.inner.path.join(COLLECTIONS_DIR)))?;
        let manifest = Manifest {
            next_file_id: 1,
            ..Manifest::default()
        };
        let mut batch = CatalogBatch::default();
        batch.put_collection(&record)?;
        batch.put_db_record(&dbr)?;
        batch.put_manifest(id, &manifest)?;
        self.inner.commit(batch)?;
        let state = Arc::new(CollectionState {
            name: Arc::from(name),
            record,
            config,
            dir,
            dropped: AtomicBool::new(false),
            manifest: Mutex::new(manifest),
            current: RwLock::new(Arc::new(SnapshotInner::default())),
        });
        self.inner
            .collections
            .write()
            .insert(name.to_owned(), state.clone());
        Ok(Collection {
            db: self.inner.clone(),
            state,
        })
    }

    /// A handle on an existing collection.
    pub fn collection(&self, name: &str) -> Result<Collection> {
        let state = self
            .inner
            .collections
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::CollectionNotFound(name.to_owned()))?;
        Ok(Collection {
            db: self.inner.clone(),
            state,
        })
    }

    /// Names of all collections, sorted.
    pub fn collection_names(&self) -> Vec<String> {
        self.inner.collections.read().keys().cloned().collect()
    }

    /// Drops a collection and deletes its files. Handles on it fail afterwards; searches
    /// already running on one of its snapshots finish normally.
    pub fn drop_collection(&self, name: &str) -> Result<()> {
        self.inner.check_writable()?;
        let _w = self.inner.writer.lock();
        let state = self
            .inner
            .collections
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::CollectionNotFound(name.to_owned()))?;
        let mut batch = CatalogBatch::default();
        batch.delete_collection(&state.record);
        self.inner.commit(batch)?;
        state.dropped.store(true, Ordering::SeqCst);
        self.inner.collections.write().remove(name);
        // Committed already; a failure here only leaves files that the next open removes.
        let _ = std::fs::remove_dir_all(&state.dir);
        let _ = fsync_dir(&self.inner.path.join(COLLECTIONS_DIR));
        Ok(())
    }
}

impl DbInner {
    fn check_writable(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly(self.path.clone()));
        }
        if let Some(reason) = self.refused.lock().clone() {
            return Err(Error::WritesRefused {
                path: self.path.clone(),
                reason,
            });
        }
        Ok(())
    }

    fn refuse_writes(&self, reason: String) {
        self.refused.lock().get_or_insert(reason);
    }

    /// Passes `r` on, refusing further writes if it is a failed sync.
    fn note<T>(&self, r: tessera_storage::Result<T>) -> Result<T> {
        if let Err(e @ tessera_storage::Error::Sync { .. }) = &r {
            self.refuse_writes(e.to_string());
        }
        Ok(r?)
    }

    /// Commits a catalog batch; a failure refuses further writes.
    fn commit(&self, batch: CatalogBatch) -> Result<()> {
        self.catalog.commit(batch).map_err(|e| {
            self.refuse_writes(format!("a catalog write failed: {e}"));
            e.into()
        })
    }
}

fn mean(v: &[f32]) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    (v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64) as f32
}

fn per_token(bytes: u64, tokens: u64) -> f64 {
    if tokens == 0 {
        0.0
    } else {
        bytes as f64 / tokens as f64
    }
}

fn collection_dir(db: &Path, id: u32) -> PathBuf {
    db.join(COLLECTIONS_DIR).join(id.to_string())
}

/// What a writer's open does with files that the catalog does not account for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cleanup {
    /// A read-only open changes nothing.
    None,
    /// Databases from before [`PUBLISH_AFTER_COMMIT`]: files were renamed into place before
    /// their commit, so an unreferenced one is a crashed commit's debris and is removed.
    Legacy,
    /// Temporary files are completed (referenced) or removed (not); an unreferenced
    /// published file is [`tessera_storage::Error::LostCommits`].
    RefuseLostCommits,
}

/// Opens data file `name` of collection directory `dir` with `open`. A file whose commit
/// crashed before its rename is still under its temporary name: a writer completes the
/// rename first; a reader opens it where it is, and since a writer in another process may
/// rename it at any moment, a file missing under both names is looked for once more.
fn open_published<T>(
    dir: &Path,
    name: &str,
    cleanup: Cleanup,
    open: impl Fn(&Path) -> Result<T>,
) -> Result<T> {
    let path = dir.join(name);
    let tmp = tmp_path(&path);
    if cleanup != Cleanup::None {
        if !path.exists() && tmp.exists() {
            publish(&path)?;
            fsync_dir(dir)?;
        }
        return open(&path);
    }
    let missing = |r: &Result<T>| {
        matches!(r, Err(Error::Storage(tessera_storage::Error::Io { source, .. }))
            if source.kind() == std::io::ErrorKind::NotFound)
    };
    let first = open(&path);
    if !missing(&first) {
        return first;
    }
    let second = open(&tmp);
    if !missing(&second) {
        return second;
    }
    open(&path)
}

fn load_collection(
    db: &Path,
    catalog: &Catalog,
    record: CollectionRecord,
    cleanup: Cleanup,
) -> Result<CollectionState> {
    let config: CollectionConfig = serde_json::from_value(record.config.clone()).map_err(|e| {
        tessera_storage::Error::CorruptRecord {
            path: db.join(CATALOG_DIR),
            key: format!("collection {:?}", record.name),
            reason: e.to_string(),
        }
    })?;
    let dir = collection_dir(db, record.id);
    let manifest = catalog.manifest(record.id)?.unwrap_or_default();
    let codec = match &manifest.codec {
        Some(c) => Some(Arc::new(Codec::from_data(
            c.id,
            open_published(&dir, &c.file, cleanup, |p| Ok(codec_file::read_codec(p)?))?,
        ))),
        None => None,
    };
    let mut tombstones: HashMap<u64, RoaringBitmap> =
        catalog.tombstones(record.id)?.into_iter().collect();
    let mut segments = Vec::with_capacity(manifest.segments.len());
    // Filter indexes, rebuilt from the catalog's metadata (module `filter`).
    let mut fields = crate::filter::index::load(catalog, record.id, &manifest, &record.name)?;
    for s in &manifest.segments {
        let reader = open_published(&dir, &s.file, cleanup, |p| Ok(SegmentReader::open(p)?))?;
        if reader.meta().dim != config.dim || reader.meta().n_docs != s.n_docs {
            return Err(tessera_storage::Error::Corrupt {
                path: reader.path().to_path_buf(),
                reason: "segment does not match its manifest entry".into(),
            }
            .into());
        }
        let originals = match &s.originals {
            Some(o) => Some(Arc::new(open_published(&dir, &o.file, cleanup, |p| {
                open_originals(p, &reader, s.id)
            })?)),
            None => None,
        };
        let deleted = tombstones.remove(&s.id).unwrap_or_default();
        if let Some(max) = deleted.max()
            && max >= s.n_docs
        {
            return Err(corrupt_record(
                db,
                &record.name,
                format!("tombstones of segment {}", s.id),
                format!(
                    "local document {max} is deleted, but the segment has {} documents",
                    s.n_docs
                ),
            ));
        }
        segments.push(SegmentView {
            id: s.id,
            reader: Arc::new(reader),
            originals,
            tombstones: Arc::new(deleted),
            fields: Arc::new(fields.remove(&s.id).unwrap_or_default()),
        });
    }
    if let Some(seg) = tombstones.keys().min() {
        return Err(corrupt_record(
            db,
            &record.name,
            format!("tombstones of segment {seg}"),
            "the manifest has no such segment".into(),
        ));
    }
    check_live_counts(db, &record.name, &manifest, &segments)?;
    match cleanup {
        Cleanup::None => {}
        Cleanup::Legacy => {
            remove_tmp_files(&dir)?;
            remove_unreferenced_files(&dir, &manifest)?;
        }
        Cleanup::RefuseLostCommits => {
            remove_tmp_files(&dir)?;
            let mut superseded = Vec::new();
            for path in unreferenced_files(&dir, &manifest)? {
                // File ids come from the manifest's counter, which every commit saves with
                // the files it publishes: an id below it was published by a commit the
                // catalog has, so the file was superseded since (a codec replaced by an
                // expanded one). An id at or above it belongs to a commit the catalog lacks.
                match file_id(&path) {
                    Some(id) if id < manifest.next_file_id => superseded.push(path),
                    Some(id) => {
                        return Err(tessera_storage::Error::LostCommits {
                            path,
                            reason: format!(
                                "its file id {id} is not below the next file id {} of collection {:?}, which is at commit {}",
                                manifest.next_file_id, record.name, manifest.commits
                            ),
                        }
                        .into());
                    }
                    // Not a name Tessera writes: neither evidence nor ours to delete.
                    None => {}
                }
            }
            remove_files(&dir, &superseded)?;
        }
    }
    Ok(CollectionState {
        name: Arc::from(record.name.as_str()),
        record,
        config,
        dir,
        dropped: AtomicBool::new(false),
        manifest: Mutex::new(manifest),
        current: RwLock::new(Arc::new(SnapshotInner { codec, segments })),
    })
}

fn corrupt_record(db: &Path, collection: &str, key: String, reason: String) -> Error {
    tessera_storage::Error::CorruptRecord {
        path: db.join(CATALOG_DIR),
        key: format!("collection {collection:?}: {key}"),
        reason,
    }
    .into()
}

/// A catalog location of document `id` must name a document of its segment (`n_docs`
/// documents): the id map comes from disk and is checked before it indexes anything.
fn check_location(
    id: &ExternalId,
    loc: &DocLocation,
    n_docs: u32,
    corrupt: impl Fn(String, String) -> Error,
) -> Result<()> {
    if loc.local < n_docs {
        return Ok(());
    }
    Err(corrupt(
        format!("location of document {id}"),
        format!(
            "local document {} of segment {}, which has {n_docs} documents",
            loc.local, loc.segment
        ),
    ))
}

/// The manifest's live counts must be what its segments and tombstones imply: deletes
/// decrement them, and a count that disagrees would underflow or report documents that
/// searches cannot return.
fn check_live_counts(
    db: &Path,
    collection: &str,
    manifest: &Manifest,
    segments: &[SegmentView],
) -> Result<()> {
    let (mut docs, mut tokens) = (0u64, 0u64);
    for s in segments {
        let off = s.reader.doc_offsets();
        docs += u64::from(s.reader.meta().n_docs) - s.tombstones.len();
        tokens += s.reader.meta().n_tokens;
        for local in s.tombstones.iter() {
            let l = local as usize;
            tokens -= off[l + 1] - off[l];
        }
    }
    if (docs, tokens) != (manifest.live_docs, manifest.live_tokens) {
        return Err(corrupt_record(
            db,
            collection,
            "manifest".into(),
            format!(
                "it counts {} live documents and {} live tokens, its segments and tombstones {docs} and {tokens}",
                manifest.live_docs, manifest.live_tokens
            ),
        ));
    }
    Ok(())
}

/// Opens a segment's originals file and checks that it holds the same documents: the
/// segment it names, its dimension, and token offsets equal to the segment's.
fn open_originals(path: &Path, seg: &SegmentReader, seg_id: u64) -> Result<OriginalsReader> {
    let originals = OriginalsReader::open(path)?;
    let (m, sm) = (originals.meta(), seg.meta());
    if m.segment_id != seg_id
        || m.dim != sm.dim
        || m.n_docs != sm.n_docs
        || originals.doc_offsets() != seg.doc_offsets()
    {
        return Err(tessera_storage::Error::Corrupt {
            path: path.to_path_buf(),
            reason: format!(
                "originals do not match segment {seg_id} ({}): segment {}, dim {}, {} documents",
                seg.path().display(),
                m.segment_id,
                m.dim,
                m.n_docs
            ),
        }
        .into());
    }
    Ok(originals)
}

/// Data files of a collection (by their final names) that its manifest does not reference.
fn unreferenced_files(dir: &Path, manifest: &Manifest) -> Result<Vec<PathBuf>> {
    let mut keep: HashSet<&str> = manifest.segments.iter().map(|s| s.file.as_str()).collect();
    keep.extend(
        manifest
            .segments
            .iter()
            .filter_map(|s| s.originals.as_ref().map(|o| o.file.as_str())),
    );
    if let Some(c) = &manifest.codec {
        keep.insert(c.file.as_str());
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(tessera_storage::Error::Io {
                path: dir.to_path_buf(),
                source: e,
            }
            .into());
        }
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_data_file(&name) && !keep.contains(name.as_str()) {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

fn is_data_file(name: &str) -> bool {
    name.ends_with(".tsg") || name.ends_with(".tcd") || name.ends_with(".tov")
}

/// The file id in a data file's name (`seg-000012.tsg` → 12), if it has the form Tessera
/// writes.
fn file_id(path: &Path) -> Option<u64> {
    let stem = path.file_stem()?.to_str()?;
    let (kind, id) = stem.split_once('-')?;
    if !matches!(kind, "seg" | "codec" | "vec") || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse().ok()
}

fn remove_files(dir: &Path, files: &[PathBuf]) -> Result<()> {
    for path in files {
        std::fs::remove_file(path).map_err(|e| tessera_storage::Error::Io {
            path: path.clone(),
            source: e,
        })?;
    }
    if !files.is_empty() {
        fsync_dir(dir)?;
    }
    Ok(())
}

/// Deletes data files of a collection that its manifest does not reference, for databases
/// of the old protocol: files renamed into place by a commit that crashed before its
/// catalog write.
fn remove_unreferenced_files(dir: &Path, manifest: &Manifest) -> Result<()> {
    remove_files(dir, &unreferenced_files(dir, manifest)?)
}

/// Removes collection directories that have no catalog record: dropped collections (the
/// drop committed, then crashed before removing the files) and creations that crashed
/// before their commit. Under [`Cleanup::RefuseLostCommits`], a directory holding data
/// files whose id the catalog has not handed out yet can only come from a creation and
/// ingests that the catalog lost: the open fails instead.
fn remove_orphan_collection_dirs(
    db: &Path,
    live: &BTreeMap<String, Arc<CollectionState>>,
    db_record: &tessera_storage::catalog::DbRecord,
    cleanup: Cleanup,
) -> Result<()> {
    let ids: HashSet<String> = live.values().map(|s| s.record.id.to_string()).collect();
    let root = db.join(COLLECTIONS_DIR);
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(id) = name.parse::<u32>() else {
            continue;
        };
        if ids.contains(&name) {
            continue;
        }
        if cleanup == Cleanup::RefuseLostCommits && id >= db_record.next_collection_id {
            let has_data = std::fs::read_dir(entry.path())
                .map_err(|e| tessera_storage::Error::Io {
                    path: entry.path(),
                    source: e,
                })?
                .flatten()
                .any(|f| is_data_file(&f.file_name().to_string_lossy()));
            if has_data {
                return Err(tessera_storage::Error::LostCommits {
                    path: entry.path(),
                    reason: format!(
                        "the catalog has no collection {id} and would give that id to the next \
                         collection created ({})",
                        db_record.next_collection_id
                    ),
                }
                .into());
            }
        }
        std::fs::remove_dir_all(entry.path()).map_err(|e| tessera_storage::Error::Io {
            path: entry.path(),
            source: e,
        })?;
    }
    Ok(())
}

impl Collection {
    /// The collection's name.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// The collection's settings.
    pub fn config(&self) -> &CollectionConfig {
        &self.state.config
    }

    /// The catalog and this collection's id in it (for `docs.rs`).
    pub(crate) fn catalog(&self) -> (&Catalog, u32) {
        (&self.db.catalog, self.state.record.id)
    }

    pub(crate) fn check_live(&self) -> Result<()> {
        if self.state.dropped.load(Ordering::SeqCst) {
            return Err(Error::CollectionNotFound(self.state.name.to_string()));
        }
        Ok(())
    }

    /// A consistent view of the collection as of the last commit.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            inner: self.state.current.read().clone(),
            collection: self.state.name.clone(),
            dim: self.state.config.dim as usize,
        }
    }

    /// Top-`k` documents for `query` (row-major `[query_tokens, dim]`), best first.
    pub fn search(&self, query: &[f32], k: usize, params: &SearchParams) -> Result<Vec<Hit>> {
        self.check_live()?;
        let mut hits = self.snapshot().search(query, k, params)?;
        self.fill_hits(&mut hits, params.fields)?;
        Ok(hits)
    }

    /// Searches many queries on one snapshot (see [`Snapshot::search_batch`]).
    pub fn search_batch(
        &self,
        queries: &[Vec<f32>],
        k: usize,
        params: &SearchParams,
    ) -> Result<Vec<Vec<Hit>>> {
        self.check_live()?;
        let mut found = self.snapshot().search_batch(queries, k, params)?;
        for hits in &mut found {
            self.fill_hits(hits, params.fields)?;
        }
        Ok(found)
    }

    /// The JSON metadata stored with document `id`, if any.
    pub fn metadata(&self, id: &ExternalId) -> Result<Option<serde_json::Value>> {
        self.check_live()?;
        match self.db.catalog.metadata(self.state.record.id, id)? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|e| {
                tessera_storage::Error::CorruptRecord {
                    path: self.db.path.join(CATALOG_DIR),
                    key: format!("metadata of {id}"),
                    reason: e.to_string(),
                }
            })?)),
            None => Ok(None),
        }
    }

    /// The token vectors of live document `id`, row-major `[tokens, dim]`: the originals as
    /// stored (exactly the collection's [`Precision`], widened to `f32` without loss), or,
    /// for a segment without originals (`Precision::None`, or written before originals
    /// existed), the decompressed approximation from the codes.
    pub fn vectors(&self, id: &ExternalId) -> Result<Option<Vec<f32>>> {
        self.check_live()?;
        let Some(loc) = self
            .db
            .catalog
            .locations(self.state.record.id, std::slice::from_ref(id))?[0]
        else {
            return Ok(None);
        };
        let snap = self.state.current.read().clone();
        let (Some(codec), Some(seg)) = (
            &snap.codec,
            snap.segments.iter().find(|s| s.id == loc.segment),
        ) else {
            return Ok(None);
        };
        check_location(id, &loc, seg.reader.meta().n_docs, |k, r| {
            self.corrupt_record(k, r)
        })?;
        if let Some(o) = &seg.originals {
            return Ok(Some(o.doc(loc.local)?.to_f32()));
        }
        Ok(Some(crate::search::decompress_doc(
            codec,
            &seg.reader,
            loc.local,
        )))
    }

    pub(crate) fn corrupt_record(&self, key: String, reason: String) -> Error {
        corrupt_record(&self.db.path, &self.state.name, key, reason)
    }

    /// Whether a live document has this id.
    pub fn contains(&self, id: &ExternalId) -> Result<bool> {
        self.check_live()?;
        Ok(self
            .db
            .catalog
            .locations(self.state.record.id, std::slice::from_ref(id))?[0]
            .is_some())
    }

    /// Settings and size of the collection.
    pub fn info(&self) -> CollectionInfo {
        let snap = self.state.current.read().clone();
        let m = self.state.manifest.lock().clone();
        let seg_bytes: u64 = snap.segments.iter().map(|s| s.reader.file_len()).sum();
        let originals_bytes: u64 = snap
            .segments
            .iter()
            .filter_map(|s| s.originals.as_ref().map(|o| o.file_len()))
            .sum();
        let seg_tokens: u64 = snap.segments.iter().map(|s| s.reader.meta().n_tokens).sum();
        let codec_bytes = m
            .codec
            .as_ref()
            .and_then(|c| std::fs::metadata(self.state.dir.join(&c.file)).ok())
            .map_or(0, |md| md.len());
        let postings_bytes = snap.segments.iter().fold((0, 0), |acc, s| {
            let (a, b) = s.reader.postings_sizes();
            (acc.0 + a, acc.1 + b)
        });
        CollectionInfo {
            name: self.state.name.to_string(),
            config: self.state.config.clone(),
            documents: m.live_docs,
            tokens: m.live_tokens,
            segments: snap.segments.len(),
            centroids: snap.codec.as_ref().map_or(0, |c| c.n_centroids()),
            codec_trained_tokens: snap.codec.as_ref().map_or(0, |c| c.data().trained_tokens),
            disk_bytes: seg_bytes + codec_bytes + originals_bytes,
            bytes_per_token: per_token(seg_bytes, seg_tokens),
            originals_bytes,
            originals_bytes_per_token: per_token(originals_bytes, seg_tokens),
            postings_bytes,
            commits: m.commits,
            model: self.model().ok().flatten(),
        }
    }

    /// The text encoder model recorded for the collection (set by the first ingest whose
    /// [`IngestOptions::model`] is set), if any.
    pub fn model(&self) -> Result<Option<ModelRecord>> {
        let m = self.state.manifest.lock();
        self.parse_model(&m)
    }

    fn parse_model(&self, m: &Manifest) -> Result<Option<ModelRecord>> {
        match &m.model {
            None => Ok(None),
            Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| {
                tessera_storage::Error::CorruptRecord {
                    path: self.db.path.join(CATALOG_DIR),
                    key: format!("manifest of collection {:?}: model", self.name()),
                    reason: e.to_string(),
                }
                .into()
            }),
        }
    }

    fn invalid(&self, doc: &Document, position: usize, reason: String) -> Error {
        Error::InvalidDocument {
            collection: self.state.name.to_string(),
            id: doc.id.clone(),
            position,
            reason,
        }
    }

    fn validate(&self, docs: &[Document]) -> Result<usize> {
        let dim = self.state.config.dim as usize;
        let max_rows = self.state.config.max_tokens_per_doc as usize;
        let mut seen: HashMap<&ExternalId, usize> = HashMap::with_capacity(docs.len());
        let mut tokens = 0;
        for (i, doc) in docs.iter().enumerate() {
            if let Some(first) = seen.insert(&doc.id, i) {
                return Err(Error::DuplicateId {
                    collection: self.state.name.to_string(),
                    id: doc.id.clone(),
                    first,
                    second: i,
                });
            }
            if doc.vectors.is_empty() {
                return Err(self.invalid(doc, i, "has no token vectors".into()));
            }
            if doc.vectors.len() % dim != 0 {
                return Err(self.invalid(
                    doc,
                    i,
                    format!("has {} values, not a whole number of {dim}-dimensional vectors (wrong dimension?)", doc.vectors.len()),
                ));
            }
            let rows = doc.vectors.len() / dim;
            if rows > max_rows {
                return Err(self.invalid(
                    doc,
                    i,
                    format!(
                        "has {rows} token vectors, more than the collection's limit of {max_rows}"
                    ),
                ));
            }
            // One pass refuses NaN, infinities and what f16 or bf16 originals would store
            // as infinity.
            let originals = self.state.config.originals;
            if let Some(j) = doc.vectors.iter().position(|&x| !originals.holds(x)) {
                let x = doc.vectors[j];
                let beyond = if x.is_finite() {
                    format!(
                        ", beyond what the collection's {originals} originals can hold (f16 \
                         holds magnitudes up to 65504); create the collection with originals \
                         bf16 or f32"
                    )
                } else {
                    String::new()
                };
                return Err(self.invalid(
                    doc,
                    i,
                    format!("token {} dimension {} is {x}{beyond}", j / dim, j % dim),
                ));
            }
            tokens += rows;
        }
        Ok(tokens)
    }

    /// Adds a batch of documents atomically: when this returns `Ok` the whole batch is
    /// durable and visible to new snapshots; on `Err` nothing of it is.
    ///
    /// The first non-empty batch of a collection trains its codec (see the README,
    /// "Codec lifecycle"). Ids that already exist are rejected unless
    /// `opts.on_conflict` is [`OnConflict::Replace`].
    pub fn ingest(&self, docs: &[Document], opts: &IngestOptions) -> Result<IngestReport> {
        self.db.check_writable()?;
        let _w = self.db.writer.lock();
        self.check_live()?;
        let n_tokens = self.validate(docs)?;
        if docs.is_empty() {
            return Ok(IngestReport::default());
        }
        if let Some(given) = &opts.model
            && let Some(recorded) = self.model()?
            && !recorded.same_model(given)
        {
            return Err(Error::ModelMismatch {
                collection: self.state.name.to_string(),
                recorded: recorded.short(),
                given: given.short(),
            });
        }
        let coll = self.state.record.id;
        let ids: Vec<ExternalId> = docs.iter().map(|d| d.id.clone()).collect();
        let existing = self.db.catalog.locations(coll, &ids)?;
        if opts.on_conflict == OnConflict::Reject
            && let Some(i) = existing.iter().position(Option::is_some)
        {
            return Err(Error::IdExists {
                collection: self.state.name.to_string(),
                id: ids[i].clone(),
            });
        }

        let cfg = &self.state.config;
        let dim = cfg.dim as usize;
        let old = self.state.current.read().clone();
        let mut manifest = self.state.manifest.lock().clone();
        let mut flat = Vec::with_capacity(n_tokens * dim);
        let mut doc_offsets = Vec::with_capacity(docs.len() + 1);
        doc_offsets.push(0u64);
        for d in docs {
            flat.extend_from_slice(&d.vectors);
            doc_offsets.push((flat.len() / dim) as u64);
        }

        let mut pending = Pending::default();
        let result = self.commit_batch(
            docs,
            &ids,
            &existing,
            &flat,
            &doc_offsets,
            &old,
            &mut manifest,
            opts,
            &mut pending,
        );
        match result {
            Ok((report, snapshot)) => {
                *self.state.current.write() = Arc::new(snapshot);
                *self.state.manifest.lock() = manifest;
                Ok(report)
            }
            Err(e) => {
                if let Error::Storage(s @ tessera_storage::Error::Sync { .. }) = &e {
                    self.db.refuse_writes(s.to_string());
                }
                // A failed catalog write may still reach the disk: its files stay under
                // their temporary names for the next open to complete or remove (this
                // handle refuses writes meanwhile). Otherwise no manifest can reference
                // them: remove them now rather than at the next open.
                if !pending.committing {
                    for p in pending.files {
                        let _ = std::fs::remove_file(tmp_path(&p));
                    }
                }
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn commit_batch(
        &self,
        docs: &[Document],
        ids: &[ExternalId],
        existing: &[Option<DocLocation>],
        flat: &[f32],
        doc_offsets: &[u64],
        old: &SnapshotInner,
        manifest: &mut Manifest,
        opts: &IngestOptions,
        pending: &mut Pending,
    ) -> Result<(IngestReport, SnapshotInner)> {
        let cfg = &self.state.config;
        let dim = cfg.dim as usize;
        let coll = self.state.record.id;
        let mut trained = false;
        let mut codec = match &old.codec {
            Some(c) => c.clone(),
            None => {
                let data = codec::train(flat, cfg, opts.expected_total_tokens, opts.threads);
                let id = manifest.next_file_id;
                manifest.next_file_id += 1;
                let file = format!("codec-{id:06}.tcd");
                let path = self.state.dir.join(&file);
                pending.files.push(path.clone());
                write_unpublished(&path, |w| codec_file::write_codec(w, &data))?;
                manifest.codec = Some(CodecRef { id, file });
                trained = true;
                Arc::new(Codec::from_data(id, data))
            }
        };
        let mut encoded = codec.encode(flat, opts.threads);
        let mut expanded_by = 0;
        let batch_norm = mean(&encoded.norms);
        if !trained && batch_norm > codec::DRIFT_FACTOR * codec.mean_residual_norm() {
            // Out of the codec's distribution: train centroids for the tokens it fits badly and
            // append them (existing codes stay valid), then encode the batch again.
            let threshold = codec::DRIFT_FACTOR * codec.mean_residual_norm();
            let mut outliers = Vec::new();
            for (t, &n) in flat.chunks_exact(dim).zip(&encoded.norms) {
                if n > threshold {
                    outliers.extend_from_slice(t);
                }
            }
            let n_out = outliers.len() / dim;
            if n_out >= codec::MIN_EXPANSION_TOKENS {
                let k = codec::plaid_centroids(n_out as u64).min((n_out / 4).max(1) as u32);
                let extra_cfg = CollectionConfig {
                    n_centroids: Some(k),
                    ..cfg.clone()
                };
                let extra = codec::train(&outliers, &extra_cfg, None, opts.threads);
                let id = manifest.next_file_id;
                manifest.next_file_id += 1;
                let grown = Arc::new(codec.expanded(id, &extra));
                let file = format!("codec-{id:06}.tcd");
                let path = self.state.dir.join(&file);
                pending.files.push(path.clone());
                write_unpublished(&path, |w| codec_file::write_codec(w, grown.data()))?;
                manifest.codec = Some(CodecRef { id, file });
                expanded_by = grown.n_centroids() - codec.n_centroids();
                codec = grown;
                encoded = codec.encode(flat, opts.threads);
            }
        }
        let (codes, residuals, scales) = (encoded.codes, encoded.packed, encoded.scales);
        let seg_id = manifest.next_file_id;
        manifest.next_file_id += 1;
        let file = format!("seg-{seg_id:06}.tsg");
        let path = self.state.dir.join(&file);
        pending.files.push(path.clone());
        let sizes = write_unpublished(&path, |w| {
            write_segment(
                w,
                &SegmentInput {
                    dim: cfg.dim,
                    nbits: cfg.nbits,
                    n_centroids: codec.n_centroids(),
                    codec_id: codec.id,
                    doc_offsets,
                    codes: &codes,
                    residuals: &residuals,
                    ids,
                    token_scales: &scales,
                },
            )
        })?;
        // Read back through the validating reader before the commit makes it visible.
        let mut reader = SegmentReader::open(&tmp_path(&path))?;
        let (mut originals, originals_ref) =
            match self.write_originals(seg_id, doc_offsets, flat, &reader, pending)? {
                Some((reader, entry)) => (Some(reader), Some(entry)),
                None => (None, None),
            };

        let mut batch = CatalogBatch::default();
        let mut tombstones = NewTombstones::default();
        let mut replaced = 0;
        for (id, loc) in ids.iter().zip(existing) {
            let Some(loc) = loc else { continue };
            let corrupt = |key, reason| self.corrupt_record(key, reason);
            if tombstones.mark(&old.segments, id, loc, manifest, corrupt)? == Some(true) {
                replaced += 1;
            }
        }
        tombstones.write(&mut batch, coll)?;
        for (local, d) in docs.iter().enumerate() {
            batch.put_location(
                coll,
                &d.id,
                DocLocation {
                    segment: seg_id,
                    local: local as u32,
                },
            );
            match &d.metadata {
                Some(m) => batch.put_metadata(coll, &d.id, m.to_string().as_bytes()),
                None => batch.delete_metadata(coll, &d.id),
            }
            // Kept text (issue 14): replaced or removed with the rest of the document.
            match &d.text {
                Some(t) => batch.put_text(coll, &d.id, t)?,
                None => batch.delete_text(coll, &d.id),
            }
        }
        manifest.segments.push(SegmentRef {
            id: seg_id,
            file,
            n_docs: docs.len() as u32,
            n_tokens: (flat.len() / dim) as u64,
            bytes: sizes.file_bytes,
            originals: originals_ref,
        });
        manifest.live_docs += docs.len() as u64;
        manifest.live_tokens += (flat.len() / dim) as u64;
        manifest.commits += 1;
        if let Some(model) = &opts.model {
            // Same model (checked in `ingest`): refresh the path hint to the latest location.
            manifest.model =
                Some(
                    serde_json::to_value(model).map_err(|e| Error::InvalidConfig {
                        collection: self.state.name.to_string(),
                        reason: format!("cannot record the model: {e}"),
                    })?,
                );
        }
        batch.put_manifest(coll, manifest)?;
        pending.committing = true;
        self.db.commit(batch)?;
        // Committed: nothing below may fail the ingest. A rename that fails leaves the file
        // under its temporary name, which readers accept and the next writer open renames.
        if publish_all(&self.state.dir, &pending.files) {
            reader.set_path(&path);
            let published = manifest.segments.last().and_then(|s| s.originals.as_ref());
            if let (Some(o), Some(r)) = (originals.as_mut(), published) {
                o.set_path(&self.state.dir.join(&r.file));
            }
        }
        let reader = Arc::new(reader);
        let originals = originals.map(Arc::new);

        let mut segments = tombstones.apply(&old.segments);
        segments.push(SegmentView {
            id: seg_id,
            reader,
            originals,
            tombstones: Arc::new(RoaringBitmap::new()),
            fields: Arc::new(crate::filter::index::SegmentFields::of_batch(docs)),
        });
        Ok((
            IngestReport {
                documents: docs.len(),
                tokens: flat.len() / dim,
                replaced,
                trained_codec: trained,
                centroids_added: expanded_by,
                residual_norm_ratio: batch_norm / codec.mean_residual_norm().max(f32::MIN_POSITIVE),
                segment_bytes: sizes.file_bytes,
            },
            SnapshotInner {
                codec: Some(codec),
                segments,
            },
        ))
    }

    /// Writes the batch's originals file beside segment `seg_id` when the collection keeps
    /// originals, reads it back through the validating reader, and returns it with its
    /// manifest entry.
    fn write_originals(
        &self,
        seg_id: u64,
        doc_offsets: &[u64],
        flat: &[f32],
        segment: &SegmentReader,
        pending: &mut Pending,
    ) -> Result<Option<(OriginalsReader, OriginalsRef)>> {
        let cfg = &self.state.config;
        if cfg.originals == Precision::None {
            return Ok(None);
        }
        let file = format!("vec-{seg_id:06}.tov");
        let path = self.state.dir.join(&file);
        pending.files.push(path.clone());
        write_unpublished(&path, |w| {
            write_originals(
                w,
                &OriginalsInput {
                    dim: cfg.dim,
                    precision: cfg.originals,
                    segment_id: seg_id,
                    doc_offsets,
                    vectors: flat,
                },
            )
        })?;
        let reader = open_originals(&tmp_path(&path), segment, seg_id)?;
        let entry = OriginalsRef {
            file,
            bytes: reader.file_len(),
        };
        Ok(Some((reader, entry)))
    }

    /// Deletes documents by id, atomically and durably. Unknown ids are reported, not errors.
    pub fn delete(&self, ids: &[ExternalId]) -> Result<DeleteReport> {
        self.db.check_writable()?;
        let _w = self.db.writer.lock();
        self.check_live()?;
        let coll = self.state.record.id;
        let unique: Vec<ExternalId> = {
            let mut seen = HashSet::new();
            ids.iter().filter(|id| seen.insert(*id)).cloned().collect()
        };
        let locs = self.db.catalog.locations(coll, &unique)?;
        let old = self.state.current.read().clone();
        let mut manifest = self.state.manifest.lock().clone();
        let mut tombstones = NewTombstones::default();
        let mut batch = CatalogBatch::default();
        let mut report = DeleteReport::default();
        for (id, loc) in unique.iter().zip(&locs) {
            let marked = match loc {
                Some(loc) => {
                    let corrupt = |key, reason| self.corrupt_record(key, reason);
                    tombstones.mark(&old.segments, id, loc, &mut manifest, corrupt)?
                }
                None => None,
            };
            match marked {
                None => {
                    report.missing.push(id.clone());
                    continue;
                }
                Some(true) => report.deleted += 1,
                Some(false) => {}
            }
            batch.delete_location(coll, id);
            batch.delete_metadata(coll, id);
            batch.delete_text(coll, id);
        }
        if report.deleted == 0 {
            return Ok(report);
        }
        tombstones.write(&mut batch, coll)?;
        manifest.commits += 1;
        batch.put_manifest(coll, &manifest)?;
        self.db.commit(batch)?;
        let segments = tombstones.apply(&old.segments);
        *self.state.current.write() = Arc::new(SnapshotInner {
            codec: old.codec.clone(),
            segments,
        });
        *self.state.manifest.lock() = manifest;
        Ok(report)
    }
}

/// The data files a commit has written so far (under their temporary names), and whether it
/// has reached its catalog write.
#[derive(Default)]
struct Pending {
    files: Vec<PathBuf>,
    committing: bool,
}

/// Renames a committed batch's files from their temporary names and syncs the directory;
/// whether every rename succeeded. A failure is not an error of the commit, which is
/// durable already (see [`open_published`]).
fn publish_all(dir: &Path, files: &[PathBuf]) -> bool {
    let renamed = files.iter().all(|p| publish(p).is_ok());
    fsync_dir(dir).is_ok() && renamed
}

/// Tombstones added by one commit, shared by replacing ingests and deletes: copies of the
/// touched segments' bitmaps, written in the commit's batch and swapped into the next
/// snapshot only after the commit succeeded.
#[derive(Default)]
struct NewTombstones {
    bitmaps: HashMap<u64, RoaringBitmap>,
}

impl NewTombstones {
    /// Marks `loc` (the catalog's location of document `id`) deleted and takes it out of the
    /// manifest's live counts. `None` when its segment is not in `segments`; `Some(false)`
    /// when it was already deleted. A location outside its segment, or counts that would
    /// drop below zero, are a corrupt catalog record.
    fn mark(
        &mut self,
        segments: &[SegmentView],
        id: &ExternalId,
        loc: &DocLocation,
        manifest: &mut Manifest,
        corrupt: impl Fn(String, String) -> Error,
    ) -> Result<Option<bool>> {
        let Some(seg) = segments.iter().find(|s| s.id == loc.segment) else {
            return Ok(None);
        };
        check_location(id, loc, seg.reader.meta().n_docs, &corrupt)?;
        let off = seg.reader.doc_offsets();
        let l = loc.local as usize;
        let bm = self
            .bitmaps
            .entry(loc.segment)
            .or_insert_with(|| (*seg.tombstones).clone());
        if !bm.insert(loc.local) {
            return Ok(Some(false));
        }
        let tokens = off[l + 1] - off[l];
        match (
            manifest.live_docs.checked_sub(1),
            manifest.live_tokens.checked_sub(tokens),
        ) {
            (Some(docs), Some(toks)) => {
                manifest.live_docs = docs;
                manifest.live_tokens = toks;
                Ok(Some(true))
            }
            _ => Err(corrupt(
                "manifest".into(),
                format!(
                    "deleting document {id} ({tokens} tokens) from {} live documents and {} live tokens",
                    manifest.live_docs, manifest.live_tokens
                ),
            )),
        }
    }

    /// Adds the changed bitmaps to the commit.
    fn write(&self, batch: &mut CatalogBatch, coll: u32) -> Result<()> {
        for (seg, bm) in &self.bitmaps {
            batch.put_tombstones(coll, *seg, bm)?;
        }
        Ok(())
    }

    /// The segment views after the commit: changed bitmaps swapped in, the rest shared.
    fn apply(mut self, segments: &[SegmentView]) -> Vec<SegmentView> {
        segments
            .iter()
            .map(|s| match self.bitmaps.remove(&s.id) {
                Some(bm) => SegmentView {
                    tombstones: Arc::new(bm),
                    ..s.clone()
                },
                None => s.clone(),
            })
            .collect()
    }
}
