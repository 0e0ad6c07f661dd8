//! Ingest: a batch of documents becomes one segment (and its originals file) in one commit.

use std::sync::Arc;

use roaring::RoaringBitmap;
use tessera_storage::ExternalId;
use tessera_storage::catalog::{CatalogBatch, CodecRef, DocLocation};
use tessera_storage::codec as codec_file;
use tessera_storage::fsutil::write_unpublished;
use tessera_storage::layout::DataFile;
use tessera_storage::originals::OriginalValues;

use super::tombstones::NewTombstones;
use super::{CommitPlan, NewSegment, write_segment_files};
use crate::codec::{self, Codec, Encoded};
use crate::collection::Collection;
use crate::document::Document;
use crate::error::{Error, Result};
use crate::filter::index::SegmentFields;
use crate::options::{CollectionConfig, IngestOptions, OnConflict};
use crate::snapshot::SnapshotInner;

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
    /// Share of the batch's tokens whose residual norm is above 1.5 times the codec's
    /// training mean (before any expansion): tokens the codec fits badly. Together with
    /// `residual_norm_ratio`, what says a re-training would pay (README, "Re-training").
    pub badly_fitting_share: f32,
    /// Bytes of the segment file written.
    pub segment_bytes: u64,
    /// Whether the collection had outgrown its codec and this ingest re-trained it
    /// ([`crate::MergePolicy::retrain`]).
    pub retrained_codec: bool,
}

/// One ingest's documents, flattened, with where the catalog has their ids now.
struct IngestBatch<'a> {
    docs: &'a [Document],
    ids: Vec<ExternalId>,
    existing: Vec<Option<DocLocation>>,
    /// Row-major token vectors of every document, in order.
    flat: Vec<f32>,
    /// `docs.len() + 1` token offsets into `flat`.
    doc_offsets: Vec<u64>,
}

/// The codec a batch is encoded with, and the batch encoded.
struct Encoding {
    codec: Arc<Codec>,
    encoded: Encoded,
    trained: bool,
    expanded_by: u32,
    /// Mean residual norm of the batch under the codec before any expansion.
    batch_norm: f32,
    /// Share of its tokens above the drift threshold, under the same codec.
    badly_fitting: f32,
}

pub(super) fn mean(v: &[f32]) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    (v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64) as f32
}

impl Collection {
    /// Adds a batch of documents atomically: when this returns `Ok` the whole batch is
    /// durable and visible to new snapshots; on `Err` nothing of it is.
    ///
    /// The first non-empty batch of a collection trains its codec (see the README,
    /// "Codec lifecycle"). Ids that already exist are rejected unless
    /// `opts.on_conflict` is [`OnConflict::Replace`]. When the collection's merge policy
    /// asks for a merge afterwards, it runs on a background thread (see
    /// [`Collection::compact`]).
    pub fn ingest(&self, docs: &[Document], opts: &IngestOptions) -> Result<IngestReport> {
        let report = {
            self.db.check_writable()?;
            let _w = self.db.writer.lock();
            self.check_live()?;
            let n_tokens = self.validate(docs)?;
            if docs.is_empty() {
                return Ok(IngestReport::default());
            }
            self.check_model(opts)?;
            let batch = self.prepare(docs, n_tokens, opts)?;
            self.run_commit(|plan| self.commit_ingest(&batch, plan, opts))?
        };
        let mut report = report;
        if self.retrain_due(report.residual_norm_ratio, opts.expected_total_tokens) {
            // The batch is committed whatever happens here; a failed re-training changes
            // nothing and is reported where background merge failures are.
            match self.retrain_sized(opts.expected_total_tokens) {
                Ok(_) => report.retrained_codec = true,
                Err(e) => {
                    *self.state.merge_error.lock() = Some(format!("automatic re-training: {e}"));
                }
            }
        }
        self.merge_in_background_if_due();
        Ok(report)
    }

    /// Refuses a batch encoded by another model than the one recorded.
    fn check_model(&self, opts: &IngestOptions) -> Result<()> {
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
        Ok(())
    }

    /// Looks the batch's ids up (refusing existing ones unless replacing) and flattens it.
    fn prepare<'a>(
        &self,
        docs: &'a [Document],
        n_tokens: usize,
        opts: &IngestOptions,
    ) -> Result<IngestBatch<'a>> {
        let ids: Vec<ExternalId> = docs.iter().map(|d| d.id.clone()).collect();
        let existing = self.db.catalog.locations(self.state.record.id, &ids)?;
        if opts.on_conflict == OnConflict::Reject
            && let Some(i) = existing.iter().position(Option::is_some)
        {
            return Err(Error::IdExists {
                collection: self.state.name.to_string(),
                id: ids[i].clone(),
            });
        }
        let dim = self.state.config.dim as usize;
        let mut flat = Vec::with_capacity(n_tokens * dim);
        let mut doc_offsets = Vec::with_capacity(docs.len() + 1);
        doc_offsets.push(0u64);
        for d in docs {
            flat.extend_from_slice(&d.vectors);
            doc_offsets.push((flat.len() / dim) as u64);
        }
        Ok(IngestBatch {
            docs,
            ids,
            existing,
            flat,
            doc_offsets,
        })
    }

    /// Writes the batch's files and commits them with its catalog changes.
    fn commit_ingest(
        &self,
        batch: &IngestBatch<'_>,
        plan: &mut CommitPlan,
        opts: &IngestOptions,
    ) -> Result<(IngestReport, SnapshotInner)> {
        let cfg = &self.state.config;
        let coll = self.state.record.id;
        let enc = self.encode(batch, plan, opts)?;
        let seg_id = plan.next_file_id();
        let written = write_segment_files(
            &self.state.dir,
            cfg,
            &enc.codec,
            seg_id,
            &NewSegment {
                doc_offsets: &batch.doc_offsets,
                codes: &enc.encoded.codes,
                residuals: &enc.encoded.packed,
                scales: &enc.encoded.scales,
                ids: &batch.ids,
                originals: Some(OriginalValues::F32(&batch.flat)),
            },
            &mut plan.files,
        )?;

        let mut cat = CatalogBatch::default();
        let mut tombstones = NewTombstones::default();
        let mut replaced = 0;
        for (id, loc) in batch.ids.iter().zip(&batch.existing) {
            let Some(loc) = loc else { continue };
            let corrupt = |key, reason| self.corrupt_record(key, reason);
            if tombstones.mark(&plan.old.segments, id, loc, &mut plan.manifest, corrupt)?
                == Some(true)
            {
                replaced += 1;
            }
        }
        tombstones.write(&mut cat, coll)?;
        for (local, d) in batch.docs.iter().enumerate() {
            let loc = DocLocation {
                segment: seg_id,
                local: local as u32,
            };
            cat.put_location(coll, &d.id, loc);
            match &d.metadata {
                Some(m) => cat.put_metadata(coll, &d.id, m.to_string().as_bytes()),
                None => cat.delete_metadata(coll, &d.id),
            }
            // Kept text (issue 14): replaced or removed with the rest of the document.
            match &d.text {
                Some(t) => cat.put_text(coll, &d.id, t)?,
                None => cat.delete_text(coll, &d.id),
            }
        }
        let tokens = written.entry.n_tokens;
        let segment_bytes = written.entry.bytes;
        let m = &mut plan.manifest;
        m.segments.push(written.entry.clone());
        m.live_docs += batch.docs.len() as u64;
        m.live_tokens += tokens;
        m.commits += 1;
        if let Some(model) = &opts.model {
            // Same model (checked in `ingest`): refresh the path hint to the latest location.
            m.model = Some(
                serde_json::to_value(model).map_err(|e| Error::InvalidConfig {
                    collection: self.state.name.to_string(),
                    reason: format!("cannot record the model: {e}"),
                })?,
            );
        }
        // Committed once this returns: nothing below may fail the ingest.
        let published = plan.commit(&self.db, &self.state, cat)?;
        let mut segments = tombstones.apply(&plan.old.segments);
        let fields = SegmentFields::of_batch(batch.docs);
        segments.push(written.into_view(&self.state.dir, published, RoaringBitmap::new(), fields));
        let report = IngestReport {
            documents: batch.docs.len(),
            tokens: tokens as usize,
            replaced,
            trained_codec: enc.trained,
            centroids_added: enc.expanded_by,
            residual_norm_ratio: enc.batch_norm
                / enc.codec.mean_residual_norm().max(f32::MIN_POSITIVE),
            badly_fitting_share: enc.badly_fitting,
            segment_bytes,
            retrained_codec: false,
        };
        let snapshot = SnapshotInner {
            codec: Some(enc.codec),
            segments,
        };
        Ok((report, snapshot))
    }

    /// Encodes the batch: with the collection's codec, trained from this batch when there
    /// is none yet, and expanded first when the batch drifted out of its distribution.
    fn encode(
        &self,
        batch: &IngestBatch<'_>,
        plan: &mut CommitPlan,
        opts: &IngestOptions,
    ) -> Result<Encoding> {
        let cfg = &self.state.config;
        let dim = cfg.dim as usize;
        let flat = &batch.flat;
        let (codec, trained) = match &plan.old.codec {
            Some(c) => (c.clone(), false),
            None => {
                let data = codec::train(flat, cfg, opts.expected_total_tokens, opts.threads);
                let id = plan.next_file_id();
                (self.write_codec(Codec::from_data(id, data), plan)?, true)
            }
        };
        let encoded = codec.encode(flat, opts.threads);
        let batch_norm = mean(&encoded.norms);
        let threshold = codec::DRIFT_FACTOR * codec.mean_residual_norm();
        let badly = encoded.norms.iter().filter(|&&n| n > threshold).count();
        let badly_fitting = badly as f32 / encoded.norms.len().max(1) as f32;
        let unchanged = Encoding {
            codec: codec.clone(),
            encoded,
            trained,
            expanded_by: 0,
            batch_norm,
            badly_fitting,
        };
        if trained || batch_norm <= threshold {
            return Ok(unchanged);
        }
        if self.retrains_automatically() {
            // The ingest re-trains the whole codec after the commit instead
            // (`retrain_due`): appended centroids fitted to one batch's outliers serve
            // the collection worse than a codec trained on all of it.
            return Ok(unchanged);
        }
        // Out of the codec's distribution: train centroids for the tokens it fits badly and
        // append them (existing codes stay valid), then encode the batch again.
        let mut outliers = Vec::new();
        for (t, &n) in flat.chunks_exact(dim).zip(&unchanged.encoded.norms) {
            if n > threshold {
                outliers.extend_from_slice(t);
            }
        }
        let n_out = outliers.len() / dim;
        if n_out < codec::MIN_EXPANSION_TOKENS {
            return Ok(unchanged);
        }
        let k = codec::plaid_centroids(n_out as u64).min((n_out / 4).max(1) as u32);
        let extra_cfg = CollectionConfig {
            n_centroids: Some(k),
            ..cfg.clone()
        };
        let extra = codec::train(&outliers, &extra_cfg, None, opts.threads);
        let id = plan.next_file_id();
        let grown = self.write_codec(codec.expanded(id, &extra), plan)?;
        Ok(Encoding {
            expanded_by: grown.n_centroids() - codec.n_centroids(),
            encoded: grown.encode(flat, opts.threads),
            codec: grown,
            trained,
            batch_norm,
            badly_fitting,
        })
    }

    /// Writes `codec`'s file (unpublished) and makes it the plan's codec.
    fn write_codec(&self, codec: Codec, plan: &mut CommitPlan) -> Result<Arc<Codec>> {
        let file = DataFile::Codec.name(codec.id);
        let path = self.state.dir.file(&file);
        plan.files.push(path.clone());
        write_unpublished(&path, |w| codec_file::write_codec(w, codec.data()))?;
        plan.manifest.codec = Some(CodecRef { id: codec.id, file });
        Ok(Arc::new(codec))
    }
}
