//! Re-training: a new codec from a sample of the whole collection's original vectors, and
//! every segment re-encoded with it, in one commit.
//!
//! The codec is trained once, on the first batch, and only grows by appending centroids
//! when later batches drift; a collection fed in small batches, or whose data moved, ends
//! with a codec that fits it badly (more centroids, larger residuals, lower recall). The
//! originals are the data, so the codes can be rebuilt from them at any time.
//!
//! **Online, like a merge.** The sample, the training and the re-encoding of the segments of
//! a snapshot run without the writer lock (searches and writes go on); the lock is taken for
//! the swap, which also re-encodes the segments committed meanwhile (with the new codec,
//! under the lock, so none is left on the old one) and tombstones what was deleted during
//! the work. The codec and every segment change in one synced catalog batch: a crash leaves
//! the old codec and segments, or the new ones, never a mix. Deleted documents are dropped
//! on the way, as a compaction would.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use tessera_storage::catalog::CodecRef;
use tessera_storage::codec as codec_file;
use tessera_storage::fsutil::write_unpublished;
use tessera_storage::layout::DataFile;

use super::merge::{Gathered, Replacement, gather};
use super::{CommitPlan, remove_unpublished};
use crate::codec::{self, Codec};
use crate::collection::Collection;
use crate::error::{Error, Result};
use crate::snapshot::{SegmentView, SnapshotInner};

/// What a re-training did.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct RetrainReport {
    /// Centroids of the codec before.
    pub centroids_before: u32,
    /// Centroids of the new codec.
    pub centroids_after: u32,
    /// Token vectors the new codec was trained on (a sample of the live ones).
    pub trained_tokens: u64,
    /// Segments written by the re-encoding (a segment without live documents is dropped).
    pub segments: usize,
    /// Token vectors re-encoded.
    pub tokens: u64,
    /// Mean residual norm of the training sample (live tokens drawn uniformly) under the old
    /// codec and the new one: how much better the new codec fits.
    pub residual_norm_before: f32,
    /// See `residual_norm_before`.
    pub residual_norm_after: f32,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// How far the codec's centroid count may drift from what the default rule asks for the live
/// tokens before an ingest re-trains it, either way ([`crate::MergePolicy::retrain`]). With
/// the rule's growth (linear in the tokens up to about 765K tokens, then with their square
/// root), re-training at each doubling re-encodes every token about twice over the
/// collection's life.
pub const RETRAIN_CENTROID_FACTOR: u32 = 2;

/// A drifting batch re-trains the codec only once the collection holds this many times the
/// tokens the codec was trained on: this bounds the re-encoding a stream of drifting batches
/// causes (each re-training re-encodes everything) to a geometric series.
pub const RETRAIN_DRIFT_GROWTH: f64 = 1.25;

/// A codec trained on fewer than [`RETRAIN_SAMPLE_SHARE`] of its centroid count's full
/// k-means sample (`SAMPLE_PER_CENTROID` tokens per centroid) is re-trained once the
/// collection holds this many times the tokens it was trained on. A first batch much smaller
/// than that sample leaves centroids fitted to a few tokens each, which probe worse: on 77K
/// churned documents (`tessera-bench lifecycle`) a codec trained on 1.06M tokens for 65,536
/// centroids (16 per centroid) gave recall@10 0.962 at the defaults, and `retrain()` on a
/// 3.1M-token sample 1.000 (BENCHMARKS.md, "A collection that lives for years"). Doubling
/// bounds the extra re-trainings to about `log2(sample / first batch)`.
pub const RETRAIN_SAMPLE_GROWTH: f64 = 2.0;

/// The share of its full k-means sample below which a codec counts as under-trained
/// ([`RETRAIN_SAMPLE_GROWTH`]): 24 tokens per centroid. Above it, re-training costs more
/// than it returns: the 100K and 400K benchmark collections' codecs saw 36 tokens per
/// centroid (their first batches) and reach recall@10 1.000 and 0.992 at the defaults,
/// while one re-training of 65,536 centroids with re-encoding of a few million tokens takes
/// minutes on two cores.
pub const RETRAIN_SAMPLE_SHARE: f64 = 0.5;

/// Tokens encoded per call when re-encoding a segment (bounds the `f32` copy in memory).
const ENCODE_CHUNK_TOKENS: usize = 1 << 16;

impl Collection {
    /// Whether ingests re-train the codec ([`crate::MergePolicy::retrain`]): the policy asks
    /// for it, the collection keeps originals and leaves the centroid count to the rule.
    pub(crate) fn retrains_automatically(&self) -> bool {
        let cfg = &self.state.config;
        cfg.merge_policy.retrain
            && cfg.n_centroids.is_none()
            && cfg.originals != tessera_storage::originals::Precision::None
    }

    /// Whether an ingest whose batch had `residual_ratio` (its mean residual norm over the
    /// codec's) should re-train the codec: the collection has outgrown it
    /// ([`RETRAIN_CENTROID_FACTOR`]); or the batch drifted out of its distribution and the
    /// collection holds at least [`RETRAIN_DRIFT_GROWTH`] times the tokens the codec was
    /// trained on; or the codec saw less than [`RETRAIN_SAMPLE_SHARE`] of its full training
    /// sample and the collection now holds [`RETRAIN_SAMPLE_GROWTH`] times what it saw.
    ///
    /// `expected_total_tokens` is the ingest's size hint ([`crate::IngestOptions`]): the
    /// centroid count is judged against the corpus the caller announced, as the first
    /// batch's training was, not only against what has arrived so far.
    pub(crate) fn retrain_due(
        &self,
        residual_ratio: f32,
        expected_total_tokens: Option<u64>,
    ) -> bool {
        if !self.retrains_automatically() {
            return false;
        }
        let snap = self.state.current.read().clone();
        let Some(codec) = &snap.codec else {
            return false;
        };
        let live = self.state.manifest.lock().live_tokens;
        let wanted = codec::default_centroids(live.max(expected_total_tokens.unwrap_or(0)));
        let have = codec.n_centroids();
        let coarse = wanted >= have.saturating_mul(RETRAIN_CENTROID_FACTOR);
        let trained = codec.data().trained_tokens as f64;
        let drifted =
            residual_ratio > codec::DRIFT_FACTOR && live as f64 >= RETRAIN_DRIFT_GROWTH * trained;
        let full_sample = f64::from(have) * codec::SAMPLE_PER_CENTROID as f64;
        let undertrained = trained < RETRAIN_SAMPLE_SHARE * full_sample
            && live as f64 >= RETRAIN_SAMPLE_GROWTH * trained;
        (coarse || drifted || undertrained) && snap.segments.iter().all(|s| s.originals.is_some())
    }

    /// Trains a new codec from a sample of the collection's original vectors and re-encodes
    /// every segment with it (README, "Codec lifecycle"). Needs originals in every segment
    /// ([`Error::NoOriginals`] otherwise). Searches and writes go on meanwhile; merges wait.
    pub fn retrain(&self) -> Result<RetrainReport> {
        self.retrain_sized(None)
    }

    /// [`Collection::retrain`] with the centroid count the default rule gives for the live
    /// tokens or `expected_total_tokens`, whichever is larger. An ingest that announced its
    /// corpus's size re-trains for that size. Sized for the tokens so far instead, a bulk
    /// load of 1M documents (first codec 131,072 centroids) re-trained down to 65,536
    /// centroids at 75K documents and back up to 131,072 at 725K, each time minutes of
    /// k-means (BENCHMARKS.md, "Search at scale").
    pub(crate) fn retrain_sized(
        &self,
        expected_total_tokens: Option<u64>,
    ) -> Result<RetrainReport> {
        self.db.check_writable()?;
        self.check_live()?;
        let start = Instant::now();
        let _no_merges_meanwhile = self.state.merging.lock();
        let snap = self.state.current.read().clone();
        let Some(old_codec) = snap.codec.clone() else {
            return Ok(RetrainReport::default());
        };
        if let Some(s) = snap.segments.iter().find(|s| s.originals.is_none()) {
            return Err(Error::NoOriginals {
                collection: self.state.name.to_string(),
                segment: s.id,
            });
        }
        let cfg = &self.state.config;
        let live_tokens = self.state.manifest.lock().live_tokens;
        let sized_for = live_tokens.max(expected_total_tokens.unwrap_or(0));
        let k = cfg
            .n_centroids
            .unwrap_or_else(|| codec::default_centroids(sized_for)) as usize;
        let sample = sample_tokens(&snap, k * codec::SAMPLE_PER_CENTROID, cfg.seed)?;
        let data = codec::train(&sample, cfg, Some(sized_for), 0);
        let trained_tokens = (sample.len() / cfg.dim as usize) as u64;

        // File ids for the codec and one segment per segment of the snapshot.
        let first_id = {
            let _w = self.db.writer.lock();
            self.check_live()?;
            let mut m = self.state.manifest.lock();
            m.next_file_id += 1 + snap.segments.len() as u64;
            m.next_file_id - 1 - snap.segments.len() as u64
        };
        let new_codec = Arc::new(Codec::from_data(first_id, data));
        // Measured on the sample, not on every re-encoded token: the old codec's encoding
        // of the whole collection would only feed these two figures.
        let mean_norm = |c: &Codec| super::ingest::mean(&c.encode(&sample, 0).norms);
        let (norm_before, norm_after) = (mean_norm(&old_codec), mean_norm(&new_codec));
        drop(sample);
        let mut files = Vec::new();
        let work = (|| {
            let file = DataFile::Codec.name(first_id);
            let path = self.state.dir.file(&file);
            files.push(path.clone());
            write_unpublished(&path, |w| codec_file::write_codec(w, new_codec.data()))?;
            let mut out = Vec::new();
            for (i, s) in snap.segments.iter().enumerate() {
                let id = first_id + 1 + i as u64;
                out.push(self.reencode(s, &new_codec, id, &mut files)?);
            }
            Ok::<_, Error>((file, out))
        })();
        let (codec_file_name, done) = match work {
            Ok(w) => w,
            Err(e) => {
                remove_unpublished(&files);
                return Err(e);
            }
        };
        let snap_ids: Vec<u64> = snap.segments.iter().map(|s| s.id).collect();
        drop(snap);

        let swapped = self.db.check_writable().and_then(|()| {
            let _w = self.db.writer.lock();
            self.check_live()?;
            self.run_commit(|plan| {
                plan.adopt_files(std::mem::take(&mut files));
                self.swap_codec(plan, done, &snap_ids, &new_codec, codec_file_name)
            })
        });
        if swapped.is_err() {
            remove_unpublished(&files);
        }
        let mut report = swapped?;
        report.centroids_before = old_codec.n_centroids();
        report.centroids_after = new_codec.n_centroids();
        report.trained_tokens = trained_tokens;
        report.residual_norm_before = norm_before;
        report.residual_norm_after = norm_after;
        report.seconds = start.elapsed().as_secs_f64();
        Ok(report)
    }

    /// The swap, under the writer lock: segments committed since the snapshot are
    /// re-encoded too, then the codec and every segment change in one commit.
    fn swap_codec(
        &self,
        plan: &mut CommitPlan,
        mut done: Vec<Reencoded>,
        snap_ids: &[u64],
        new_codec: &Arc<Codec>,
        codec_file_name: String,
    ) -> Result<(RetrainReport, SnapshotInner)> {
        let old = plan.old.clone();
        let mut files = Vec::new();
        for s in old.segments.iter().filter(|s| !snap_ids.contains(&s.id)) {
            if s.originals.is_none() {
                return Err(Error::NoOriginals {
                    collection: self.state.name.to_string(),
                    segment: s.id,
                });
            }
            let id = plan.next_file_id();
            done.push(self.reencode(s, new_codec, id, &mut files)?);
        }
        plan.adopt_files(files);
        plan.manifest.codec = Some(CodecRef {
            id: new_codec.id,
            file: codec_file_name,
        });
        let mut report = RetrainReport {
            segments: done
                .iter()
                .filter(|r| r.replacement.written.is_some())
                .count(),
            ..RetrainReport::default()
        };
        let mut replacements = Vec::with_capacity(done.len());
        for r in done {
            report.tokens += r.tokens;
            replacements.push(r.replacement);
        }
        let snapshot = self.swap(plan, replacements, Some(new_codec.clone()))?;
        Ok((report, snapshot))
    }

    /// Segment `s`'s live documents re-encoded with `codec` from their originals and written
    /// as segment `id` (unpublished; its files recorded in `files`).
    fn reencode(
        &self,
        s: &SegmentView,
        codec: &Codec,
        id: u64,
        files: &mut Vec<PathBuf>,
    ) -> Result<Reencoded> {
        let Some(mut g) = gather(&[s], true, &|| false)? else {
            unreachable!("an uncancellable gather always completes")
        };
        self.encode_again(s, &mut g, codec)?;
        let written = g.write(&self.state.dir, &self.state.config, codec, id, files)?;
        let fields = self.segment_fields(&g.ids)?;
        Ok(Reencoded {
            tokens: g.codes.len() as u64,
            replacement: Replacement {
                group: vec![s.id],
                gathered: g,
                written,
                fields,
            },
        })
    }

    /// Replaces `g`'s codes, residuals and scales by `codec`'s encoding of the originals,
    /// a chunk of documents at a time.
    fn encode_again(&self, s: &SegmentView, g: &mut Gathered, codec: &Codec) -> Result<()> {
        let Some(o) = &s.originals else {
            return Err(Error::NoOriginals {
                collection: self.state.name.to_string(),
                segment: s.id,
            });
        };
        let dim = self.state.config.dim as usize;
        let (mut codes, mut residuals, mut scales) = (Vec::new(), Vec::new(), Vec::new());
        let mut flat = Vec::new();
        let last = g.origin.len().saturating_sub(1);
        for (i, &(_, local)) in g.origin.iter().enumerate() {
            flat.extend(o.doc(local)?.to_f32());
            if flat.len() / dim >= ENCODE_CHUNK_TOKENS || i == last {
                let e = codec.encode(&flat, 0);
                codes.extend_from_slice(&e.codes);
                residuals.extend_from_slice(&e.packed);
                scales.extend_from_slice(&e.scales);
                flat.clear();
            }
        }
        g.codes = codes;
        g.residuals = residuals;
        g.scales = scales;
        Ok(())
    }
}

/// One segment's re-encoding, with what it measured.
pub(crate) struct Reencoded {
    tokens: u64,
    replacement: Replacement,
}

/// About `budget` token vectors (whole documents, drawn uniformly among the live ones) of
/// the snapshot's originals, row-major.
fn sample_tokens(snap: &SnapshotInner, budget: usize, seed: u64) -> Result<Vec<f32>> {
    let mut docs: Vec<(usize, u32)> = Vec::new();
    for (si, s) in snap.segments.iter().enumerate() {
        for local in 0..s.reader.meta().n_docs {
            if !s.tombstones.contains(local) {
                docs.push((si, local));
            }
        }
    }
    docs.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    let mut out = Vec::new();
    let dim = snap
        .segments
        .first()
        .map_or(1, |s| s.reader.meta().dim as usize);
    for (si, local) in docs {
        if out.len() / dim >= budget {
            break;
        }
        if let Some(o) = &snap.segments[si].originals {
            out.extend(o.doc(local)?.to_f32());
        }
    }
    Ok(out)
}
