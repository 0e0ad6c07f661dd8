//! A collection handle and its read side: snapshots, search, documents' metadata and
//! vectors, and what `info` reports. Writes are the writer's ([`crate::writer`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};
use tessera_storage::ExternalId;
use tessera_storage::catalog::{CollectionRecord, Manifest};
use tessera_storage::layout::{CATALOG_DIR, CollectionDir};

use crate::database::DbInner;
use crate::document::Hit;
use crate::error::{Error, Result};
use crate::load::{check_location, corrupt_record};
use crate::model::ModelRecord;
use crate::options::{CollectionConfig, SearchParams};
use crate::snapshot::{Snapshot, SnapshotInner};
use crate::writer::merge::Retired;

/// One collection's state, shared by every handle on it.
#[derive(Debug)]
pub(crate) struct CollectionState {
    pub(crate) record: CollectionRecord,
    pub(crate) config: CollectionConfig,
    pub(crate) name: Arc<str>,
    pub(crate) dir: CollectionDir,
    pub(crate) dropped: AtomicBool,
    /// The manifest as last committed.
    pub(crate) manifest: Mutex<Manifest>,
    /// The snapshot of the last commit; new searches start from it.
    pub(crate) current: RwLock<Arc<SnapshotInner>>,
    /// Held by the one merge of the collection that may run at a time.
    pub(crate) merging: Mutex<()>,
    /// Files of merged-away segments that snapshots may still map.
    pub(crate) retired: Mutex<Vec<Retired>>,
    /// Why the last background merge failed, if it did.
    pub(crate) merge_error: Mutex<Option<String>>,
}

impl CollectionState {
    pub(crate) fn new(
        record: CollectionRecord,
        config: CollectionConfig,
        dir: CollectionDir,
        manifest: Manifest,
        snapshot: SnapshotInner,
    ) -> Self {
        CollectionState {
            name: Arc::from(record.name.as_str()),
            record,
            config,
            dir,
            dropped: AtomicBool::new(false),
            manifest: Mutex::new(manifest),
            current: RwLock::new(Arc::new(snapshot)),
            merging: Mutex::new(()),
            retired: Mutex::new(Vec::new()),
            merge_error: Mutex::new(None),
        }
    }
}

/// A handle on one collection. Cheap to clone, `Send + Sync`.
#[derive(Clone, Debug)]
pub struct Collection {
    pub(crate) db: Arc<DbInner>,
    pub(crate) state: Arc<CollectionState>,
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
    /// Why the last background merge failed, if one did (the collection is unchanged by a
    /// failed merge; [`Collection::compact`] retries and reports the error itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merge_error: Option<String>,
}

fn per_token(bytes: u64, tokens: u64) -> f64 {
    if tokens == 0 {
        0.0
    } else {
        bytes as f64 / tokens as f64
    }
}

impl Collection {
    pub(crate) fn new(db: Arc<DbInner>, state: Arc<CollectionState>) -> Self {
        Collection { db, state }
    }

    /// The collection's name.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// The collection's settings.
    pub fn config(&self) -> &CollectionConfig {
        &self.state.config
    }

    /// The catalog and this collection's id in it (for `docs.rs`).
    pub(crate) fn catalog(&self) -> (&tessera_storage::catalog::Catalog, u32) {
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
            // Issue 14: ids to documents for rerank, explain and diversity (locate.rs).
            locate: crate::locate::Locator::new(Arc::downgrade(&self.db), {
                let coll = self.state.record.id;
                move |db: &DbInner, ids| Ok(db.catalog.locations(coll, ids)?)
            }),
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
            .and_then(|c| std::fs::metadata(self.state.dir.file(&c.file)).ok())
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
            merge_error: self.state.merge_error.lock().clone(),
        }
    }

    /// The text encoder model recorded for the collection (set by the first ingest whose
    /// [`IngestOptions::model`] is set), if any.
    pub fn model(&self) -> Result<Option<ModelRecord>> {
        let m = self.state.manifest.lock();
        self.parse_model(&m)
    }

    pub(crate) fn parse_model(&self, m: &Manifest) -> Result<Option<ModelRecord>> {
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
}
