//! The writer: every change to a collection (ingest, delete, merge) goes through one commit
//! protocol.
//!
//! A commit writes its data files first under temporary names (temp file, fsync, fsync
//! directory), makes them part of the collection in one synced RocksDB write batch that also
//! carries the new manifest, and only then renames them to their final names
//! (`tessera_storage::layout` says what an open does with each kind of leftover). Only after
//! the catalog write does the new snapshot become current, so a failed commit changes
//! nothing that searches see.

mod delete;
mod ingest;
pub(crate) mod merge;
mod retrain;
mod tombstones;
mod validate;

use std::path::PathBuf;
use std::sync::Arc;

use roaring::RoaringBitmap;
use tessera_storage::ExternalId;
use tessera_storage::catalog::{CatalogBatch, Manifest, OriginalsRef, SegmentRef};
use tessera_storage::fsutil::{tmp_path, write_unpublished};
use tessera_storage::layout::{CollectionDir, DataFile};
use tessera_storage::originals::{
    OriginalValues, OriginalsInput, OriginalsReader, Precision, write_originals,
};
use tessera_storage::segment::{SegmentInput, SegmentReader, write_segment};

pub use delete::DeleteReport;
pub use ingest::IngestReport;
pub use merge::{CompactReport, MergePolicy};
pub use retrain::{
    RETRAIN_CENTROID_FACTOR, RETRAIN_SAMPLE_GROWTH, RETRAIN_SAMPLE_SHARE, RetrainReport,
};

use crate::codec::Codec;
use crate::collection::{Collection, CollectionState};
use crate::database::DbInner;
use crate::error::{Error, Result};
use crate::filter::index::SegmentFields;
use crate::load::open_originals;
use crate::options::CollectionConfig;
use crate::snapshot::{SegmentView, SnapshotInner};

/// A commit in the making: the snapshot it starts from, the manifest it will write, and the
/// data files written so far (under their temporary names).
pub(crate) struct CommitPlan {
    pub(crate) old: Arc<SnapshotInner>,
    pub(crate) manifest: Manifest,
    files: Vec<PathBuf>,
    /// Whether the catalog write has been attempted: from then on it may be durable, and
    /// the files must stay for the next open to complete or remove.
    committing: bool,
}

impl CommitPlan {
    fn new(state: &CollectionState) -> Self {
        CommitPlan {
            old: state.current.read().clone(),
            manifest: state.manifest.lock().clone(),
            files: Vec::new(),
            committing: false,
        }
    }

    /// A new file id from the manifest's counter.
    pub(crate) fn next_file_id(&mut self) -> u64 {
        let id = self.manifest.next_file_id;
        self.manifest.next_file_id += 1;
        id
    }

    /// Takes over files written (unpublished) before this commit began.
    pub(crate) fn adopt_files(&mut self, files: Vec<PathBuf>) {
        self.files.extend(files);
    }

    /// Commits `batch` together with the plan's manifest. Once this returns `Ok` the commit
    /// is durable and nothing may fail it; the result says whether every file was renamed to
    /// its final name (a failed rename leaves a temporary name, which readers accept and the
    /// next writer open completes).
    pub(crate) fn commit(
        &mut self,
        db: &DbInner,
        state: &CollectionState,
        mut batch: CatalogBatch,
    ) -> Result<bool> {
        batch.put_manifest(state.record.id, &self.manifest)?;
        self.committing = true;
        let superseded = state.manifest.lock().codec.clone();
        db.commit(batch)?;
        // A commit that replaced the codec (expanded by an ingest, or re-trained) supersedes
        // the old one: its file goes once no snapshot holds it.
        if let (Some(old), Some(file)) = (&self.old.codec, superseded)
            && self.manifest.codec.as_ref().is_none_or(|c| c.id != file.id)
        {
            let retired = merge::Retired::codec(old, state.dir.file(&file.file));
            state.retired.lock().push(retired);
        }
        Ok(state.dir.publish_all(&self.files))
    }

    /// Undoes what can be undone after a failed commit: a failed sync refuses further writes
    /// (the disk's state is unknown); files of a commit that never reached its catalog write
    /// are removed now rather than at the next open.
    fn abandon(self, db: &DbInner, error: &Error) {
        if let Error::Storage(s @ tessera_storage::Error::Sync { .. }) = error {
            db.refuse_writes(s.to_string());
        }
        if !self.committing {
            remove_unpublished(&self.files);
        }
    }
}

/// Best effort: files left behind are removed by the next writer open.
pub(crate) fn remove_unpublished(files: &[PathBuf]) {
    for p in files {
        let _ = std::fs::remove_file(tmp_path(p));
    }
}

impl Collection {
    /// Runs one commit under the writer lock (which the caller holds): `build` writes its
    /// files and commits through [`CommitPlan::commit`]; on success its snapshot and the
    /// plan's manifest become current, on failure nothing does.
    pub(crate) fn run_commit<T>(
        &self,
        build: impl FnOnce(&mut CommitPlan) -> Result<(T, SnapshotInner)>,
    ) -> Result<T> {
        let mut plan = CommitPlan::new(&self.state);
        match build(&mut plan) {
            Ok((value, snapshot)) => {
                *self.state.current.write() = Arc::new(snapshot);
                *self.state.manifest.lock() = plan.manifest;
                self.sweep_retired();
                Ok(value)
            }
            Err(e) => {
                plan.abandon(&self.db, &e);
                Err(e)
            }
        }
    }
}

/// A segment's contents, ready to write: what an ingest encoded, or what a merge copied.
pub(crate) struct NewSegment<'a> {
    /// `n_docs + 1` token offsets.
    pub(crate) doc_offsets: &'a [u64],
    pub(crate) codes: &'a [u32],
    pub(crate) residuals: &'a [u8],
    /// Per-token norm scales (binary16 bits).
    pub(crate) scales: &'a [u16],
    pub(crate) ids: &'a [ExternalId],
    /// The documents' vectors when the collection keeps originals.
    pub(crate) originals: Option<OriginalValues<'a>>,
}

/// A segment written under temporary names and read back through the validating readers.
pub(crate) struct WrittenSegment {
    pub(crate) entry: SegmentRef,
    reader: SegmentReader,
    originals: Option<OriginalsReader>,
}

impl WrittenSegment {
    /// The segment's view once its commit is durable; `published`: its files have their
    /// final names.
    pub(crate) fn into_view(
        mut self,
        dir: &CollectionDir,
        published: bool,
        tombstones: RoaringBitmap,
        fields: SegmentFields,
    ) -> SegmentView {
        if published {
            self.reader.set_path(&dir.file(&self.entry.file));
            if let (Some(o), Some(r)) = (self.originals.as_mut(), &self.entry.originals) {
                o.set_path(&dir.file(&r.file));
            }
        }
        SegmentView {
            id: self.entry.id,
            reader: Arc::new(self.reader),
            originals: self.originals.map(Arc::new),
            tombstones: Arc::new(tombstones),
            fields: Arc::new(fields),
        }
    }
}

/// Writes segment `seg_id` (and its originals file when the collection keeps originals)
/// under temporary names, recording them in `files`, and reads them back through the
/// validating readers before any commit can make them visible.
pub(crate) fn write_segment_files(
    dir: &CollectionDir,
    cfg: &CollectionConfig,
    codec: &Codec,
    seg_id: u64,
    seg: &NewSegment<'_>,
    files: &mut Vec<PathBuf>,
) -> Result<WrittenSegment> {
    let file = DataFile::Segment.name(seg_id);
    let path = dir.file(&file);
    files.push(path.clone());
    let sizes = write_unpublished(&path, |w| {
        write_segment(
            w,
            &SegmentInput {
                dim: cfg.dim,
                nbits: cfg.nbits,
                n_centroids: codec.n_centroids(),
                codec_id: codec.id,
                doc_offsets: seg.doc_offsets,
                codes: seg.codes,
                residuals: seg.residuals,
                ids: seg.ids,
                token_scales: seg.scales,
            },
        )
    })?;
    let reader = SegmentReader::open(&tmp_path(&path))?;
    let (originals, originals_ref) = match seg.originals {
        Some(vectors) if cfg.originals != Precision::None => {
            let file = DataFile::Originals.name(seg_id);
            let path = dir.file(&file);
            files.push(path.clone());
            write_unpublished(&path, |w| {
                write_originals(
                    w,
                    &OriginalsInput {
                        dim: cfg.dim,
                        precision: cfg.originals,
                        segment_id: seg_id,
                        doc_offsets: seg.doc_offsets,
                        vectors,
                    },
                )
            })?;
            let o = open_originals(&tmp_path(&path), &reader, seg_id)?;
            let entry = OriginalsRef {
                file,
                bytes: o.file_len(),
            };
            (Some(o), Some(entry))
        }
        _ => (None, None),
    };
    let n_docs = seg.ids.len() as u32;
    Ok(WrittenSegment {
        entry: SegmentRef {
            id: seg_id,
            file,
            n_docs,
            n_tokens: seg.codes.len() as u64,
            bytes: sizes.file_bytes,
            originals: originals_ref,
        },
        reader,
        originals,
    })
}
