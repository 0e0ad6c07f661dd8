//! Merges: segments rewritten as one, without their deleted documents.
//!
//! Every ingest batch becomes a segment, and a deleted or replaced document keeps its bytes
//! until its segment is rewritten. A merge copies the live documents of a group of segments
//! (codes, residuals, scales and originals, byte for byte: nothing is re-encoded, so scores
//! do not move) into one new segment and swaps it into the manifest in one commit.
//!
//! **Which segments.** [`MergePolicy`] is tiered by size, as tantivy's log merge policy and
//! RocksDB's universal compaction are: a segment's tier is how many times `merge_factor` its
//! live tokens are above `floor_tokens`, and a tier holding `merge_factor` segments has its
//! smallest `merge_factor` merged into one segment of the next tier. Each token is then
//! rewritten about `log_factor(collection / floor)` times over its life, and a collection
//! of `n` tokens has `O(merge_factor · log n)` segments however it was fed. A segment whose
//! deleted share passes `max_deleted_share` is rewritten on its own. No merge produces a
//! segment above `max_segment_tokens`, which bounds a merge's memory (the new segment is
//! built in memory, as an ingest batch is). [`Collection::compact`] merges everything the
//! bound allows and drops every deleted document.
//!
//! **Online.** The merge reads a snapshot without the writer lock, writes its files under
//! temporary names, and takes the lock only for the swap: ingests and deletes go on during
//! the copy, and searches are never blocked. Documents deleted or replaced while it copied
//! are tombstoned in the new segment at the swap (their old locations were tombstoned in the
//! source segments, which the swap reads under the lock), so a merge never resurrects one.
//! The sources' files are removed once no snapshot holds them ([`Retired`]); a crash before
//! that leaves them to the next writer open, which removes files the manifest superseded.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Instant;

use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};
use tessera_storage::ExternalId;
use tessera_storage::catalog::{CatalogBatch, DocLocation};
use tessera_storage::originals::{OriginalValues, Precision};
use tessera_storage::segment::Codes;

use super::{CommitPlan, NewSegment, WrittenSegment, remove_unpublished, write_segment_files};
use crate::codec::Codec;
use crate::collection::{Collection, CollectionState};
use crate::database::DbInner;
use crate::error::Result;
use crate::filter::index::SegmentFields;
use crate::snapshot::{SegmentView, SnapshotInner};

/// When the writer merges segments by itself, and how large merged segments grow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MergePolicy {
    /// Merge on a background thread after a commit when the tiers ask for it (default on).
    pub auto: bool,
    /// Segments merged at once, and segments a tier holds before it is merged (default 10,
    /// tantivy's and Lucene's).
    pub merge_factor: usize,
    /// Live tokens below which every segment is in the lowest tier (default 65,536: about
    /// 650 documents of 100 tokens).
    pub floor_tokens: u64,
    /// Live tokens above which a merge does not grow a segment (default 4,194,304: about
    /// 1 GiB of memory to build at 128 dimensions with f16 originals).
    pub max_segment_tokens: u64,
    /// A segment with more than this share of its documents deleted is rewritten on its own
    /// (default 0.2).
    pub max_deleted_share: f64,
    /// Re-train the codec after an ingest when the collection has outgrown it: when the
    /// default centroid rule for the live tokens asks for at least twice the codec's
    /// centroids, or half of them or fewer (drift expansions appended the rest) (default on; only for collections that keep originals and leave the
    /// centroid count to the rule). A collection fed in small batches then ends with the
    /// codec a single batch would have trained (BENCHMARKS.md, "Small batches").
    pub retrain: bool,
}

impl Default for MergePolicy {
    fn default() -> Self {
        MergePolicy {
            auto: true,
            merge_factor: 10,
            floor_tokens: 1 << 16,
            max_segment_tokens: 1 << 22,
            max_deleted_share: 0.2,
            retrain: true,
        }
    }
}

impl MergePolicy {
    /// What is wrong with the policy, if anything.
    pub fn problem(&self) -> Option<String> {
        if self.merge_factor < 2 {
            Some(format!("merge_factor {} is below 2", self.merge_factor))
        } else if self.floor_tokens == 0 || self.max_segment_tokens == 0 {
            Some("floor_tokens and max_segment_tokens must be positive".into())
        } else if !(0.0..=1.0).contains(&self.max_deleted_share) {
            Some(format!(
                "max_deleted_share {} is not between 0 and 1",
                self.max_deleted_share
            ))
        } else {
            None
        }
    }

    /// The tier of a segment of `live_tokens` live tokens.
    fn tier(&self, live_tokens: u64) -> u32 {
        let mut tier = 0;
        let mut bound = self.floor_tokens.saturating_mul(self.merge_factor as u64);
        while live_tokens >= bound && bound < u64::MAX {
            tier += 1;
            bound = bound.saturating_mul(self.merge_factor as u64);
        }
        tier
    }

    /// The merges the tiers ask for now, each a group of segment ids (in manifest order).
    pub(crate) fn due(&self, segments: &[SegmentSize]) -> Vec<Vec<u64>> {
        let mut groups = Vec::new();
        let mut taken = Vec::new();
        for s in segments {
            if s.docs > 0 && s.deleted as f64 > self.max_deleted_share * s.docs as f64 {
                groups.push(vec![s.id]);
                taken.push(s.id);
            }
        }
        let mut by_tier: std::collections::BTreeMap<u32, Vec<&SegmentSize>> = Default::default();
        for s in segments {
            if !taken.contains(&s.id) && s.live_tokens < self.max_segment_tokens {
                by_tier.entry(self.tier(s.live_tokens)).or_default().push(s);
            }
        }
        for mut tier in by_tier.into_values() {
            tier.sort_by_key(|s| (s.live_tokens, s.id));
            while tier.len() >= self.merge_factor {
                let mut group = Vec::new();
                let mut tokens = 0u64;
                for s in tier.iter().take(self.merge_factor) {
                    if !group.is_empty() && tokens + s.live_tokens > self.max_segment_tokens {
                        break;
                    }
                    tokens += s.live_tokens;
                    group.push(s.id);
                }
                if group.len() < 2 {
                    break;
                }
                tier.drain(..group.len());
                groups.push(group);
            }
        }
        for g in &mut groups {
            g.sort_by_key(|id| segments.iter().position(|s| s.id == *id));
        }
        groups
    }

    /// The merges [`Collection::compact`] runs: in manifest order, segments below
    /// `max_segment_tokens` or holding deleted documents, packed into groups of at most
    /// `max_segment_tokens` live tokens; a group is merged when it has two segments or more,
    /// or deleted documents.
    pub(crate) fn compaction(&self, segments: &[SegmentSize]) -> Vec<Vec<u64>> {
        let mut groups = Vec::new();
        let mut group: Vec<&SegmentSize> = Vec::new();
        let mut tokens = 0u64;
        let flush = |group: &mut Vec<&SegmentSize>, groups: &mut Vec<Vec<u64>>| {
            if group.len() >= 2 || group.iter().any(|s| s.deleted > 0) {
                groups.push(group.iter().map(|s| s.id).collect());
            }
            group.clear();
        };
        for s in segments {
            if s.live_tokens >= self.max_segment_tokens && s.deleted == 0 {
                continue;
            }
            if !group.is_empty() && tokens + s.live_tokens > self.max_segment_tokens {
                flush(&mut group, &mut groups);
                tokens = 0;
            }
            tokens += s.live_tokens;
            group.push(s);
        }
        flush(&mut group, &mut groups);
        groups
    }
}

/// What the merge policy knows of a segment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct SegmentSize {
    pub(crate) id: u64,
    pub(crate) docs: u64,
    pub(crate) deleted: u64,
    pub(crate) live_tokens: u64,
}

impl SegmentSize {
    pub(crate) fn of(s: &SegmentView) -> Self {
        let off = s.reader.doc_offsets();
        let dead: u64 = s
            .tombstones
            .iter()
            .map(|l| off[l as usize + 1] - off[l as usize])
            .sum();
        SegmentSize {
            id: s.id,
            docs: u64::from(s.reader.meta().n_docs),
            deleted: s.tombstones.len(),
            live_tokens: s.reader.meta().n_tokens - dead,
        }
    }
}

fn sizes(snap: &SnapshotInner) -> Vec<SegmentSize> {
    snap.segments.iter().map(SegmentSize::of).collect()
}

/// What a compaction did.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct CompactReport {
    /// Merges run.
    pub merges: usize,
    /// Segments before.
    pub segments_before: usize,
    /// Segments after.
    pub segments_after: usize,
    /// Deleted documents whose bytes were dropped.
    pub documents_dropped: u64,
    /// Token vectors copied into new segments.
    pub tokens_written: u64,
    /// Bytes of segment and originals files before.
    pub bytes_before: u64,
    /// Bytes of segment and originals files after (files of merged-away segments that a
    /// snapshot still maps are not counted: they go when it does).
    pub bytes_after: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Files that a merge or a re-training replaced, removed once nothing in this process maps
/// them (no snapshot holds the objects read from them).
#[derive(Debug)]
pub(crate) struct Retired {
    files: Vec<PathBuf>,
    holders: Vec<Weak<dyn std::any::Any + Send + Sync>>,
}

impl Retired {
    fn of(s: &SegmentView, files: Vec<PathBuf>) -> Self {
        let mut holders: Vec<Weak<dyn std::any::Any + Send + Sync>> =
            vec![Arc::downgrade(&s.reader) as Weak<dyn std::any::Any + Send + Sync>];
        if let Some(o) = &s.originals {
            holders.push(Arc::downgrade(o) as Weak<dyn std::any::Any + Send + Sync>);
        }
        Retired { files, holders }
    }

    /// A codec file, removed once no snapshot holds the codec.
    pub(crate) fn codec(codec: &Arc<Codec>, file: PathBuf) -> Self {
        Retired {
            files: vec![file],
            holders: vec![Arc::downgrade(codec) as Weak<dyn std::any::Any + Send + Sync>],
        }
    }

    fn in_use(&self) -> bool {
        self.holders.iter().any(|h| h.strong_count() > 0)
    }
}

/// The live documents of a group of segments, copied in order.
#[derive(Default)]
pub(crate) struct Gathered {
    pub(crate) doc_offsets: Vec<u64>,
    pub(crate) codes: Vec<u32>,
    pub(crate) residuals: Vec<u8>,
    pub(crate) scales: Vec<u16>,
    pub(crate) ids: Vec<ExternalId>,
    /// Stored originals bytes, when every source segment has originals.
    pub(crate) originals: Option<Vec<u8>>,
    /// Per copied document: (index of its source in the group, its local id there).
    pub(crate) origin: Vec<(usize, u32)>,
}

impl Gathered {
    /// Writes the documents as segment `id` (unpublished; files recorded in `files`);
    /// `None` when there is none to write.
    pub(crate) fn write(
        &self,
        dir: &tessera_storage::layout::CollectionDir,
        cfg: &crate::options::CollectionConfig,
        codec: &Codec,
        id: u64,
        files: &mut Vec<PathBuf>,
    ) -> Result<Option<WrittenSegment>> {
        if self.ids.is_empty() {
            return Ok(None);
        }
        let seg = NewSegment {
            doc_offsets: &self.doc_offsets,
            codes: &self.codes,
            residuals: &self.residuals,
            scales: &self.scales,
            ids: &self.ids,
            originals: self.originals.as_deref().map(OriginalValues::Stored),
        };
        Ok(Some(write_segment_files(dir, cfg, codec, id, &seg, files)?))
    }
}

/// A scale of 1 in binary16: what readers assume for segments written without scales.
const UNIT_SCALE: u16 = 0x3C00;

/// How often (in documents) a background merge checks that its database is still open.
const CANCEL_CHECK_DOCS: usize = 1024;

pub(crate) fn gather(
    sources: &[&SegmentView],
    keep_originals: bool,
    cancelled: &dyn Fn() -> bool,
) -> Result<Option<Gathered>> {
    let mut g = Gathered {
        doc_offsets: vec![0],
        originals: (keep_originals && sources.iter().all(|s| s.originals.is_some())).then(Vec::new),
        ..Gathered::default()
    };
    for (si, s) in sources.iter().enumerate() {
        let r = &s.reader;
        let off = r.doc_offsets();
        let rb = r.meta().residual_bytes();
        let (codes, scales, residuals) = (r.codes(), r.token_scales(), r.residuals());
        for local in 0..r.meta().n_docs {
            if s.tombstones.contains(local) {
                continue;
            }
            if g.origin.len().is_multiple_of(CANCEL_CHECK_DOCS) && cancelled() {
                return Ok(None);
            }
            let (t0, t1) = (
                off[local as usize] as usize,
                off[local as usize + 1] as usize,
            );
            match codes {
                Codes::U16(c) => g.codes.extend(c[t0..t1].iter().map(|&x| u32::from(x))),
                Codes::U32(c) => g.codes.extend_from_slice(&c[t0..t1]),
            }
            g.residuals.extend_from_slice(&residuals[t0 * rb..t1 * rb]);
            match scales {
                Some(sc) => g.scales.extend_from_slice(&sc[t0..t1]),
                None => g.scales.extend(std::iter::repeat_n(UNIT_SCALE, t1 - t0)),
            }
            let id = r
                .external_id(local)
                .ok_or_else(|| tessera_storage::Error::Corrupt {
                    path: r.path().to_path_buf(),
                    reason: format!("no external id for local document {local}"),
                })?;
            g.ids.push(id.clone());
            if let (Some(out), Some(o)) = (g.originals.as_mut(), &s.originals) {
                out.extend_from_slice(o.doc_bytes(local)?);
            }
            g.origin.push((si, local));
            g.doc_offsets.push(g.codes.len() as u64);
        }
    }
    Ok(Some(g))
}

impl Collection {
    /// Merges segments until every segment below the merge policy's `max_segment_tokens`
    /// has been merged as far as that bound allows, dropping the bytes of every deleted and
    /// replaced document. Searches and other writes go on meanwhile; only the swap of each
    /// merge takes the writer lock.
    pub fn compact(&self) -> Result<CompactReport> {
        self.db.check_writable()?;
        self.check_live()?;
        let start = Instant::now();
        let _one_merge_at_a_time = self.state.merging.lock();
        let before = self.state.current.read().clone();
        let groups = self.state.config.merge_policy.compaction(&sizes(&before));
        let mut report = CompactReport {
            segments_before: before.segments.len(),
            bytes_before: data_bytes(&before),
            ..CompactReport::default()
        };
        drop(before);
        let weak = Arc::downgrade(&self.db);
        for group in &groups {
            if let Some(done) = merge_group(&weak, &self.state, group)? {
                report.merges += 1;
                report.documents_dropped += done.dropped;
                report.tokens_written += done.tokens;
            }
        }
        self.sweep_retired();
        let after = self.state.current.read().clone();
        report.segments_after = after.segments.len();
        report.bytes_after = data_bytes(&after);
        report.seconds = start.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Starts a background merge when the policy asks for one and none is running.
    pub(crate) fn merge_in_background_if_due(&self) {
        let policy = &self.state.config.merge_policy;
        if !policy.auto || policy.due(&sizes(&self.state.current.read())).is_empty() {
            return;
        }
        let (weak, state) = (Arc::downgrade(&self.db), self.state.clone());
        // A failure to start a thread leaves the merge to a later commit.
        let _ = std::thread::Builder::new()
            .name("tessera-merge".into())
            .spawn(move || background_merges(&weak, &state));
    }

    /// Removes the files of merged-away segments that no snapshot maps any more.
    pub(crate) fn sweep_retired(&self) {
        sweep_retired(&self.state);
    }
}

fn data_bytes(snap: &SnapshotInner) -> u64 {
    snap.segments
        .iter()
        .map(|s| s.reader.file_len() + s.originals.as_ref().map_or(0, |o| o.file_len()))
        .sum()
}

fn sweep_retired(state: &CollectionState) {
    let mut retired = state.retired.lock();
    let (gone, kept): (Vec<Retired>, Vec<Retired>) = std::mem::take(&mut *retired)
        .into_iter()
        .partition(|r| !r.in_use());
    *retired = kept;
    let files: Vec<PathBuf> = gone.into_iter().flat_map(|r| r.files).collect();
    // A failure leaves the files to the next writer open, which removes superseded files.
    let _ = state.dir.remove_files(&files);
}

/// Runs the merges the policy asks for, one at a time, until it asks for none or the
/// database is closed; skips when another merge of the collection is running (it re-checks
/// when it ends).
fn background_merges(db: &Weak<DbInner>, state: &Arc<CollectionState>) {
    let Some(_one_merge_at_a_time) = state.merging.try_lock() else {
        return;
    };
    loop {
        let policy = &state.config.merge_policy;
        let groups = policy.due(&sizes(&state.current.read()));
        let Some(group) = groups.first() else { break };
        match merge_group(db, state, group) {
            Ok(Some(_)) => sweep_retired(state),
            Ok(None) => break,
            Err(e) => {
                *state.merge_error.lock() = Some(e.to_string());
                break;
            }
        }
    }
}

/// What one merge did.
struct Merged {
    dropped: u64,
    tokens: u64,
}

/// Merges one group of segments. `None` when it did not happen: the database was closed,
/// the collection dropped, or the group is no longer in the collection.
fn merge_group(
    db: &Weak<DbInner>,
    state: &Arc<CollectionState>,
    group: &[u64],
) -> Result<Option<Merged>> {
    // Reserve the new segment's file id; the manifest saves the counter at the next commit.
    let (seg_id, snap) = {
        let Some(db) = db.upgrade() else {
            return Ok(None);
        };
        db.check_writable()?;
        let _w = db.writer.lock();
        Collection::new(db.clone(), state.clone()).check_live()?;
        let mut m = state.manifest.lock();
        m.next_file_id += 1;
        (m.next_file_id - 1, state.current.read().clone())
    };
    let Some(sources) = group
        .iter()
        .map(|id| snap.segments.iter().find(|s| s.id == *id))
        .collect::<Option<Vec<&SegmentView>>>()
    else {
        return Ok(None);
    };
    let Some(codec) = snap.codec.clone() else {
        return Ok(None);
    };
    let cfg = &state.config;
    let cancelled = || db.strong_count() == 0;
    let Some(g) = gather(&sources, cfg.originals != Precision::None, &cancelled)? else {
        return Ok(None);
    };
    let dropped: u64 = sources.iter().map(|s| s.tombstones.len()).sum();
    let mut files = Vec::new();
    let written = match g.write(&state.dir, cfg, &codec, seg_id, &mut files) {
        Ok(w) => w,
        Err(e) => {
            remove_unpublished(&files);
            return Err(e);
        }
    };
    let tokens = g.codes.len() as u64;
    drop(sources);
    drop(snap);
    let Some(db) = db.upgrade() else {
        remove_unpublished(&files);
        return Ok(None);
    };
    let coll = Collection::new(db, state.clone());
    // Read before the writer lock: a document whose metadata changes meanwhile is deleted
    // or replaced, so tombstoned in the new segment, where the index no longer matters.
    let swapped = coll.segment_fields(&g.ids).and_then(|fields| {
        coll.db.check_writable()?;
        let _w = coll.db.writer.lock();
        coll.check_live()?;
        coll.run_commit(|plan| {
            plan.adopt_files(std::mem::take(&mut files));
            let r = Replacement {
                group: group.to_vec(),
                gathered: g,
                written,
                fields,
            };
            Ok(((), coll.swap(plan, vec![r], None)?))
        })
    });
    if swapped.is_err() {
        remove_unpublished(&files);
    }
    swapped?;
    Ok(Some(Merged { dropped, tokens }))
}

/// One group of segments and what replaces it: their live documents as copied (or
/// re-encoded), and the segment written from them (`None` when none was live).
pub(crate) struct Replacement {
    pub(crate) group: Vec<u64>,
    pub(crate) gathered: Gathered,
    pub(crate) written: Option<WrittenSegment>,
    /// The filter index of the written segment.
    pub(crate) fields: SegmentFields,
}

impl Collection {
    /// The filter index of a rewritten segment whose local documents are `ids`, from the
    /// catalog's metadata (a merge copies documents, not their metadata, which the catalog
    /// keeps by external id).
    pub(crate) fn segment_fields(&self, ids: &[ExternalId]) -> Result<SegmentFields> {
        let metadata = self.metadata_many(ids)?;
        Ok(SegmentFields::build(
            metadata
                .iter()
                .enumerate()
                .filter_map(|(i, m)| m.as_ref().map(|m| (i as u32, m))),
        ))
    }

    /// The commit of a merge or a re-training: each replacement's segment takes the place of
    /// its group in the manifest and the id map, documents deleted since the copy are
    /// tombstoned in it, and `codec` (already written into the plan's manifest) becomes the
    /// snapshot's codec.
    pub(crate) fn swap(
        &self,
        plan: &mut CommitPlan,
        replacements: Vec<Replacement>,
        codec: Option<Arc<Codec>>,
    ) -> Result<SnapshotInner> {
        let coll = self.state.record.id;
        let old = plan.old.clone();
        let mut cat = CatalogBatch::default();
        let mut segments: Vec<SegmentView> = old.segments.clone();
        let mut retired = Vec::new();
        let mut views = Vec::new();
        for r in replacements {
            let sources: Vec<&SegmentView> = r
                .group
                .iter()
                .map(|id| {
                    old.segments.iter().find(|s| s.id == *id).ok_or_else(|| {
                        self.corrupt_record(
                            "manifest".into(),
                            format!("segment {id} left the collection while it was rewritten"),
                        )
                    })
                })
                .collect::<Result<_>>()?;
            let mut deleted_since = RoaringBitmap::new();
            if let Some(w) = &r.written {
                for (new_local, &(si, local)) in r.gathered.origin.iter().enumerate() {
                    if sources[si].tombstones.contains(local) {
                        deleted_since.insert(new_local as u32);
                        continue;
                    }
                    let loc = DocLocation {
                        segment: w.entry.id,
                        local: new_local as u32,
                    };
                    cat.put_location(coll, &r.gathered.ids[new_local], loc);
                }
            }
            for s in &sources {
                cat.delete_tombstones(coll, s.id);
                let files = plan
                    .manifest
                    .segments
                    .iter()
                    .find(|e| e.id == s.id)
                    .map_or_else(Vec::new, |e| {
                        let names =
                            std::iter::once(&e.file).chain(e.originals.as_ref().map(|o| &o.file));
                        names.map(|f| self.state.dir.file(f)).collect()
                    });
                retired.push(Retired::of(s, files));
            }
            let m = &mut plan.manifest;
            let at = m
                .segments
                .iter()
                .position(|e| e.id == r.group[0])
                .unwrap_or(m.segments.len());
            m.segments.retain(|e| !r.group.contains(&e.id));
            segments.retain(|s| !r.group.contains(&s.id));
            if let Some(w) = r.written {
                if !deleted_since.is_empty() {
                    cat.put_tombstones(coll, w.entry.id, &deleted_since)?;
                }
                m.segments.insert(at.min(m.segments.len()), w.entry.clone());
                views.push((at, w, deleted_since, r.fields));
            }
        }
        plan.manifest.commits += 1;
        let published = plan.commit(&self.db, &self.state, cat)?;
        for (at, w, deleted_since, fields) in views {
            let view = w.into_view(&self.state.dir, published, deleted_since, fields);
            segments.insert(at.min(segments.len()), view);
        }
        // Keep the manifest's order (views were placed by positions of the manifest).
        let order: Vec<u64> = plan.manifest.segments.iter().map(|e| e.id).collect();
        segments.sort_by_key(|s| order.iter().position(|id| *id == s.id));
        self.state.retired.lock().extend(retired);
        Ok(SnapshotInner {
            codec: codec.or_else(|| old.codec.clone()),
            segments,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(id: u64, live_tokens: u64, docs: u64, deleted: u64) -> SegmentSize {
        SegmentSize {
            id,
            docs,
            deleted,
            live_tokens,
        }
    }

    #[test]
    fn a_tier_is_merged_when_it_holds_merge_factor_segments_and_not_before() {
        let p = MergePolicy {
            merge_factor: 4,
            floor_tokens: 100,
            ..MergePolicy::default()
        };
        let three: Vec<_> = (1..=3).map(|i| seg(i, 50, 5, 0)).collect();
        assert!(p.due(&three).is_empty());
        let mut five: Vec<_> = (1..=5).map(|i| seg(i, 50 + i, 5, 0)).collect();
        // A segment of a higher tier (400 ≥ floor · factor) is not merged with them.
        five.push(seg(9, 400, 40, 0));
        assert_eq!(p.due(&five), vec![vec![1, 2, 3, 4]]);
    }

    #[test]
    fn a_segment_with_too_many_deletes_is_rewritten_alone_and_big_segments_are_left() {
        let p = MergePolicy {
            merge_factor: 2,
            floor_tokens: 100,
            max_segment_tokens: 1000,
            ..MergePolicy::default()
        };
        let segs = [seg(1, 2000, 10, 0), seg(2, 2000, 10, 0), seg(3, 60, 10, 3)];
        assert_eq!(p.due(&segs), vec![vec![3]]);
    }

    #[test]
    fn compaction_packs_segments_up_to_the_bound_and_rewrites_lone_segments_with_deletes() {
        let p = MergePolicy {
            max_segment_tokens: 100,
            ..MergePolicy::default()
        };
        let segs = [
            seg(1, 40, 4, 0),
            seg(2, 40, 4, 0),
            seg(3, 40, 4, 0),
            seg(4, 200, 20, 0),
            seg(5, 90, 9, 1),
        ];
        // [3] alone has no deletes: rewriting it would change nothing.
        assert_eq!(p.compaction(&segs), vec![vec![1, 2], vec![5]]);
    }
}
