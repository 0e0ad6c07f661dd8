//! The search pipeline over one snapshot (PLAID-style):
//! 1. centroid scores `S = Q C^T` (in `i8` on CPUs with VNNI, [`tessera_kernels::Int8Centroids`], which
//!    also writes the byte table of step 3 in the same pass); the `nprobe` best centroids
//!    of each query token;
//! 2. candidates: the union of the probed centroids' posting lists, minus tombstones, each
//!    with a first estimate from those postings alone (for token `i`, the best `S[i, c]`
//!    over the document's centroids that `i` probes, else `i`'s worst probed score); only
//!    the best [`SearchParams::prefilter_budget`] go on, which bounds the next stage on
//!    large collections. Per-document state lives in per-thread scratch stamped per pass
//!    ([`DocMarks`]), so no step costs in proportion to the collection;
//! 3. a second estimate: `sum_i max_t S[i, code_t]` over all the document's tokens, on `S`
//!    quantised to bytes so each token costs one packed byte max ([`CentroidScores8`]);
//! 4. in decreasing order of that estimate, documents are scored exactly (MaxSim over
//!    their compressed vectors): at least the re-rank budget, then block by block while
//!    the last block still placed a document among those to be refined, up to
//!    [`SearchParams::rerank_limit`] ([`exact_until_settled`]);
//! 5. refine: the `n_refine` best of those are scored again by full-precision MaxSim over
//!    their original vectors (FORMAT.md, "Originals"), and the final ranking and the returned
//!    scores come from these; exact ties are broken by external id.
//!
//! Why refine: the codec bounds what stage 4 can know. On real ColBERT vectors at 2 bits,
//! ranking by compressed scores finds about 0.8-0.9 of the exact top-10 even when every
//! document is scored; the exact top-10 is nearly always among the compressed top few
//! dozen, so re-scoring a few times `k` candidates with the originals recovers it. The cost
//! is one document read per refined candidate (2 bytes per value at f16) and the same
//! multiply-adds as stage 4 spends per candidate.
//!
//! Stage 4 does not materialise vectors when the query's residual table is small enough to
//! stay in cache: `q · (c + r)` is a row of `S` plus one table row per residual byte
//! ([`QueryLut`]). Otherwise it decompresses blocks of documents and multiplies them. Either
//! way a stored token is `s · (c + r)`, `s` its norm scale (FORMAT.md, `TOKEN_SCALES`).

use std::cmp::Ordering;
use std::time::Instant;

use tessera_kernels::{
    AlignedVec, CentroidScores8, Int8Query, QueryLut, RefineQuery, StoredVectors, maxsim_many,
    padded_tokens, top_k,
};
use tessera_storage::originals::OriginalDoc;
use tessera_storage::segment::{Codes, SegmentReader};

use crate::codec::Codec;
use crate::document::Hit;
use crate::error::Result;
use crate::filter::Allowed;
use crate::options::SearchParams;
use crate::parallel::Workers;
use crate::snapshot::SnapshotInner;

/// A candidate: segment index in the snapshot and local document id.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cand {
    pub(crate) seg: u32,
    pub(crate) local: u32,
}

/// Tokens decompressed per exact-scoring block when decompressing: large enough for GEMM
/// efficiency, small enough to stay in cache.
const RERANK_BLOCK_TOKENS: usize = 4096;

/// Candidates ahead whose codes the centroid-code estimate announces to the cache
/// ([`tessera_kernels::prefetch`]): enough for their misses to overlap the estimates in
/// between (about 0.1 µs each), few enough that the lines are still cached when reached.
const ESTIMATE_PREFETCH_AHEAD: usize = 8;

/// Largest residual table ([`QueryLut`]) worth building: beyond this it falls out of the
/// per-core L2 cache and decompression plus GEMM is as fast. With half-byte tables, 1-4 bit
/// residuals stay under it up to dim 2048 for 32 query tokens; 8-bit residuals (whole-byte
/// tables, 4 MiB at dim 128) take the decompression path.
/// GPU hook (issue 16): `gpu.rs` makes the same choice per query.
pub(crate) const LUT_MAX_BYTES: usize = 2 << 20;

/// Where one search spent its time, from the engine's own counters.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct SearchStats {
    /// Centroids probed (distinct, over all query tokens).
    pub probed_centroids: usize,
    /// Documents scored approximately (from centroid codes).
    pub candidates: usize,
    /// Documents decompressed and scored exactly.
    pub reranked: usize,
    /// Microseconds computing query x centroid scores and choosing probes.
    pub centroid_us: u64,
    /// Microseconds gathering candidates and scoring them approximately.
    pub approx_us: u64,
    /// Microseconds decompressing and scoring survivors exactly, and ranking.
    pub rerank_us: u64,
    /// Documents re-scored with their original vectors (the refine stage).
    pub refined: usize,
    /// Bytes of original vectors read by the refine stage.
    pub refine_bytes: u64,
    /// Microseconds in the refine stage (reading originals, scoring, final ranking).
    pub refine_us: u64,
}

fn micros(since: Instant) -> u64 {
    since.elapsed().as_micros() as u64
}

/// Per-thread buffers of the per-query tables (about 2.5 MiB at 32 query tokens and 8,192
/// centroids), kept between searches: allocating them afresh costs page faults and zeroing
/// comparable to the work of a small search.
#[derive(Default)]
struct Scratch {
    /// `[n_centroids, stride]`: `S[c, i] = q_i · centroid_c`, padding columns zero. Aligned
    /// so that no row load crosses a cache line (`tessera_kernels::AlignedVec`).
    scores: AlignedVec<f32>,
    lut: QueryLut,
    bytes: CentroidScores8,
    padded: Vec<f32>,
    query8: Int8Query,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
    static MARKS: std::cell::RefCell<DocMarks> = std::cell::RefCell::default();
}

/// Per-document state of the postings estimate, reused across queries and segments: a
/// stamp says whether an entry belongs to the current segment pass, so starting a pass
/// costs nothing however many documents the segment has (no O(documents) fill per query).
#[derive(Default)]
struct DocMarks {
    entries: Vec<Mark>,
    /// Local ids touched in this pass, in first-touch order.
    touched: Vec<u32>,
    stamp: u32,
}

#[derive(Clone, Copy, Default)]
struct Mark {
    stamp: u32,
    /// The last query token that added to `gain`.
    token: u32,
    gain: f32,
}

impl DocMarks {
    /// Starts a pass over a segment of `n_docs` documents.
    fn begin(&mut self, n_docs: usize) {
        if self.entries.len() < n_docs {
            self.entries.resize(n_docs, Mark::default());
        }
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            // Wrapped: stale entries could carry the new stamp. Clear once per 2^32 passes.
            self.entries.fill(Mark::default());
            self.stamp = 1;
        }
        self.touched.clear();
    }

    /// Adds `gain` for query token `token` to every document of `posting` that has not yet
    /// had a gain from that token in this pass. Callers walk each token's postings best
    /// first, so the first gain is the token's best.
    #[inline]
    fn add(&mut self, posting: &[u32], token: u32, gain: f32) {
        let stamp = self.stamp;
        for &d in posting {
            let m = &mut self.entries[d as usize];
            if m.stamp != stamp {
                *m = Mark { stamp, token, gain };
                self.touched.push(d);
            } else if m.token != token {
                m.token = token;
                m.gain += gain;
            }
        }
    }

    /// The documents touched in this pass with their summed gains.
    fn touched(&self) -> impl Iterator<Item = (u32, f32)> + '_ {
        self.touched
            .iter()
            .map(|&d| (d, self.entries[d as usize].gain))
    }
}

/// What a query needs against one codec: its centroid score table and, when small enough,
/// its residual table.
struct QueryTables<'a> {
    query: &'a [f32],
    scores: &'a [f32],
    stride: usize,
    lut: Option<&'a QueryLut>,
    bytes: &'a mut CentroidScores8,
    /// Whether `bytes` already holds this query's table (filled with the scores).
    bytes_ready: bool,
    /// Who scores the per-document stages ([`SearchParams::threads`]).
    workers: Workers,
}

impl<'a> QueryTables<'a> {
    fn new(codec: &Codec, query: &'a [f32], scratch: &'a mut Scratch, workers: Workers) -> Self {
        let dim = codec.dim();
        let nq = query.len() / dim;
        let stride = padded_tokens(nq);
        // Both paths write every entry: the table keeps its memory and is not cleared.
        let scores = &mut scratch.scores;
        scores.resize(codec.n_centroids() as usize * stride, 0.0);
        let bytes_ready = if let Some(c8) = codec.int8_centroids() {
            scratch.query8.rebuild(query, dim);
            c8.scores_and_bytes(&scratch.query8, scores, &mut scratch.bytes);
            true
        } else {
            // Zero query rows pad the table to whole SIMD lanes; they score 0 everywhere.
            let padded = &mut scratch.padded;
            padded.clear();
            padded.extend_from_slice(query);
            padded.resize(stride * dim, 0.0);
            tessera_kernels::matmul_nt(codec.centroids(), padded, dim, scores, 1);
            false
        };
        let use_lut = QueryLut::table_bytes(codec.residual(), nq) <= LUT_MAX_BYTES;
        if use_lut {
            scratch.lut.rebuild(codec.residual(), query);
        }
        QueryTables {
            query,
            scores: &scratch.scores,
            stride,
            lut: use_lut.then_some(&scratch.lut),
            bytes: &mut scratch.bytes,
            bytes_ready,
            workers,
        }
    }
}

pub(crate) fn search(
    snap: &SnapshotInner,
    query: &[f32],
    k: usize,
    params: &SearchParams,
    allowed: Option<&Allowed>,
    stats: &mut SearchStats,
) -> Result<Vec<Hit>> {
    let Some(codec) = snap.codec.as_deref() else {
        return Ok(Vec::new());
    };
    let dim = codec.dim();
    let nq = query.len() / dim;
    if k == 0 || nq == 0 {
        return Ok(Vec::new());
    }
    // Filter hook: few enough matches are scored exactly, without the centroid stages.
    if let Some(a) = allowed
        && a.count <= params.filter_exact_budget() as u64
        && snap.segments.iter().all(|s| s.originals.is_some())
    {
        return exact_allowed(snap, query, a, k, params.threads, stats);
    }
    SCRATCH.with_borrow_mut(|scratch| {
        let t = Instant::now();
        let workers = Workers::new(params.threads);
        let mut tables = QueryTables::new(codec, query, scratch, workers);
        stats.centroid_us = micros(t);
        search_with_tables(snap, codec, &mut tables, nq, k, params, allowed, stats)
    })
}

#[allow(clippy::too_many_arguments)]
fn search_with_tables(
    snap: &SnapshotInner,
    codec: &Codec,
    tables: &mut QueryTables<'_>,
    nq: usize,
    k: usize,
    params: &SearchParams,
    allowed: Option<&Allowed>,
    stats: &mut SearchStats,
) -> Result<Vec<Hit>> {
    let refine = params.refine_count(k);
    let live = allowed.map_or_else(|| snap.live_docs(), |a| a.count);
    // Filter hook: a filter with few enough matches for the depth it has to reach, or a
    // costlier walk, skips the postings (module `filter::depth`).
    let walk = crate::filter::depth::Walk {
        nprobe: params.nprobe,
        query_tokens: nq,
        centroids: codec.n_centroids() as usize,
    };
    let few = allowed
        .filter(|a| crate::filter::depth::estimate_all(params, k, a, snap.live_docs(), walk));
    let ranked = if params.full_scan(k, live) {
        None
    } else if let Some(a) = few {
        Some(rank_allowed(
            snap,
            codec,
            tables,
            nq,
            a,
            params.rerank_limit(k),
            stats,
        ))
    } else {
        let t = Instant::now();
        let probes = probe(
            tables.scores,
            tables.stride,
            nq,
            // Filter hook: probes scaled to the filter's selectivity (module `filter::depth`).
            crate::filter::depth::probes(params.nprobe, allowed, snap.live_docs()),
            tables.bytes_ready.then_some(&*tables.bytes),
        );
        stats.probed_centroids = probes.distinct;
        stats.centroid_us += micros(t);
        let ranked = approximate_candidates(
            snap,
            codec,
            tables,
            nq,
            &probes,
            allowed,
            Budgets {
                prefilter: params.prefilter_budget(k, snap.live_docs()),
                rerank: params.rerank_limit(k),
            },
            stats,
        );
        // Fewer than `k`: the probed postings reach fewer documents than asked for. Score
        // them all rather than return fewer hits than the collection can give.
        (ranked.len() >= k).then_some(ranked)
    };
    let t = Instant::now();
    let (survivors, scores) = match ranked {
        Some(r) => {
            let depth = EarlyStop {
                min: params.rerank_budget(k),
                cut: params.settle_cut(k),
            };
            exact_until_settled(snap, codec, tables, &r, depth)
        }
        None => {
            let all = all_live(snap, allowed);
            let segs = SegSlices::all(snap, codec);
            let scores = tables
                .workers
                .map_chunks(&all, |c| exact_scores(codec, tables, &segs, c));
            (all, scores)
        }
    };
    stats.reranked = survivors.len();
    stats.rerank_us = micros(t);
    let scored = Scored {
        cands: &survivors,
        compressed: &scores,
    };
    refine_and_rank(
        snap,
        tables.query,
        &scored,
        k,
        refine,
        &tables.workers,
        stats,
    )
}

/// Full-precision MaxSim over the originals of every document `allowed` holds: the refine
/// stage over all of them, with no centroid table (its fixed cost is what a few hundred
/// exact scores undercut).
fn exact_allowed(
    snap: &SnapshotInner,
    query: &[f32],
    allowed: &Allowed,
    k: usize,
    threads: usize,
    stats: &mut SearchStats,
) -> Result<Vec<Hit>> {
    let cands = all_live(snap, Some(allowed));
    stats.candidates = cands.len();
    let zeros = vec![0f32; cands.len()];
    let scored = Scored {
        cands: &cands,
        compressed: &zeros,
    };
    let workers = Workers::new(threads);
    refine_and_rank(snap, query, &scored, k, cands.len(), &workers, stats)
}

/// Every live document of the snapshot (every allowed one under a filter), in segment
/// order.
fn all_live(snap: &SnapshotInner, allowed: Option<&Allowed>) -> Vec<Cand> {
    if let Some(a) = allowed {
        return a
            .per_seg
            .iter()
            .enumerate()
            .flat_map(|(si, b)| {
                b.iter().map(move |local| Cand {
                    seg: si as u32,
                    local,
                })
            })
            .collect();
    }
    snap.segments
        .iter()
        .enumerate()
        .flat_map(|(si, s)| {
            (0..s.reader.meta().n_docs)
                .filter(|l| !s.tombstones.contains(*l))
                .map(move |local| Cand {
                    seg: si as u32,
                    local,
                })
        })
        .collect()
}

/// How many candidates each estimate keeps (`SearchParams`' budget rules).
#[derive(Clone, Copy, Debug)]
struct Budgets {
    /// Kept by the postings-only estimate for the centroid-code estimate.
    prefilter: usize,
    /// Kept by the centroid-code estimate for exact scoring.
    rerank: usize,
}

#[allow(clippy::too_many_arguments)]
fn approximate_candidates(
    snap: &SnapshotInner,
    codec: &Codec,
    tables: &mut QueryTables<'_>,
    nq: usize,
    probes: &Probes,
    allowed: Option<&Allowed>,
    budgets: Budgets,
    stats: &mut SearchStats,
) -> Vec<Cand> {
    let Budgets { prefilter, rerank } = budgets;
    let t = Instant::now();
    // Tier 1, from the postings alone: per query token, the best score among the
    // document's probed centroids, or the token's floor. A token's probes are walked best
    // first, so the first of its postings that holds a document gives that document's
    // best for the token; each document keeps one running sum of gains over the floors.
    let base: f32 = probes.floor.iter().sum();
    let mut cands: Vec<Cand> = Vec::new();
    let mut approx: Vec<f32> = Vec::new();
    MARKS.with_borrow_mut(|marks| {
        for (si, seg) in snap.segments.iter().enumerate() {
            marks.begin(seg.reader.meta().n_docs as usize);
            for (i, token) in probes.per_token.iter().enumerate() {
                let floor = probes.floor[i];
                for &(c, score) in token {
                    // The floor's own centroid gains nothing but still makes its documents
                    // candidates. Postings are validated at open: every id is below
                    // `n_docs`.
                    marks.add(seg.reader.posting(c), i as u32, score - floor);
                }
            }
            for (local, gain) in marks.touched() {
                // Filter hook: documents outside the filter never become candidates.
                let keep = match allowed {
                    Some(a) => a.contains(si, local),
                    None => !seg.tombstones.contains(local),
                };
                if keep {
                    cands.push(Cand {
                        seg: si as u32,
                        local,
                    });
                    approx.push(base + gain);
                }
            }
        }
    });
    stats.candidates = cands.len();
    let limit = prefilter.max(rerank);
    if cands.len() > limit {
        cands = top_k(&approx, limit)
            .into_iter()
            .map(|i| cands[i as usize])
            .collect();
        // Ascending order reads each segment's codes front to back.
        cands.sort_unstable_by_key(|c| (c.seg, c.local));
    }
    let ranked = rank_by_codes(snap, codec, tables, nq, &cands, rerank);
    stats.approx_us = micros(t);
    ranked
}

/// Tier 2: the best `rerank` of `cands` by the centroid-code estimate (every token's
/// centroid counts, on byte-quantised scores), best first: the exact stage takes them in
/// this order.
fn rank_by_codes(
    snap: &SnapshotInner,
    codec: &Codec,
    tables: &mut QueryTables<'_>,
    nq: usize,
    cands: &[Cand],
    rerank: usize,
) -> Vec<Cand> {
    if !tables.bytes_ready {
        tables.bytes.rebuild(tables.scores, tables.stride, nq);
        tables.bytes_ready = true;
    }
    let bytes = &*tables.bytes;
    let segs = SegSlices::all(snap, codec);
    let codes = |c: &Cand| segs[c.seg as usize].doc(c.local).codes;
    let approx: Vec<f32> = tables.workers.map_chunks(cands, |chunk| {
        chunk
            .iter()
            .enumerate()
            .map(|(j, c)| {
                if let Some(ahead) = chunk.get(j + ESTIMATE_PREFETCH_AHEAD) {
                    match codes(ahead) {
                        Codes::U16(cs) => tessera_kernels::prefetch(cs),
                        Codes::U32(cs) => tessera_kernels::prefetch(cs),
                    }
                }
                match codes(c) {
                    Codes::U16(cs) => bytes.estimate(cs),
                    Codes::U32(cs) => bytes.estimate(cs),
                }
            })
            .collect()
    });
    top_k(&approx, rerank)
        .into_iter()
        .map(|i| cands[i as usize])
        .collect()
}

/// Filter hook: every document the filter allows, ranked by the centroid-code estimate
/// without the postings stage. A selective filter leaves documents that share no probed
/// centroid with the query among its best (the query's clusters hold few of them), which
/// the postings would never reach; when no more documents match than the postings stage
/// would keep anyway (`SearchParams::filter_scan_budget`), estimating them all costs no
/// more than the unfiltered search's second stage.
fn rank_allowed(
    snap: &SnapshotInner,
    codec: &Codec,
    tables: &mut QueryTables<'_>,
    nq: usize,
    allowed: &Allowed,
    rerank: usize,
    stats: &mut SearchStats,
) -> Vec<Cand> {
    let t = Instant::now();
    let cands = all_live(snap, Some(allowed));
    stats.candidates = cands.len();
    let ranked = rank_by_codes(snap, codec, tables, nq, &cands, rerank);
    stats.approx_us = micros(t);
    ranked
}

/// When the exact stage may stop: after `min` documents, once no remaining candidate can
/// enter the best `cut` exact scores.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EarlyStop {
    pub(crate) min: usize,
    pub(crate) cut: usize,
}

/// Documents scored exactly between two checks of the early stop.
const EXACT_BLOCK: usize = 64;

/// Exact scores over the compressed vectors of `ranked` (best estimate first), in that
/// order, until the rest cannot matter.
///
/// Early stop. The centroid-code estimate ignores residuals, so how deep in its order the
/// documents with the best exact scores lie depends on the codec: on a fine one (small
/// residuals) they are all near the top, on a coarse one they are spread deeper. Once `min`
/// documents are scored, the stage goes on one block of [`EXACT_BLOCK`] at a time for as
/// long as the last block placed a document among the best `cut` exact scores (those that
/// will be refined; the default refine budget's count when refine is off, so that turning
/// it off changes nothing before the stage), and stops after the first block that
/// placed none: the remaining documents have lower estimates still. It is a measured rule,
/// not a bound (BENCHMARKS.md, "Search at scale").
fn exact_until_settled(
    snap: &SnapshotInner,
    codec: &Codec,
    tables: &QueryTables<'_>,
    ranked: &[Cand],
    stop: EarlyStop,
) -> (Vec<Cand>, Vec<f32>) {
    let segs = SegSlices::all(snap, codec);
    let (done, scores) = settle(ranked.len(), stop, |range| {
        tables
            .workers
            .map_chunks(&ranked[range], |c| exact_scores(codec, tables, &segs, c))
    });
    (ranked[..done].to_vec(), scores)
}

/// The early stop's rule over `n` documents in estimate order, `score` giving the exact
/// scores of a range of them: how many are scored, and their scores. GPU hook (issue 16):
/// `gpu.rs` replays it over the scores the device computed, so both stop at the same
/// document.
pub(crate) fn settle(
    n: usize,
    stop: EarlyStop,
    mut score: impl FnMut(std::ops::Range<usize>) -> Vec<f32>,
) -> (usize, Vec<f32>) {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut scores: Vec<f32> = Vec::with_capacity(n.min(stop.min * 2));
    let mut best: BinaryHeap<Reverse<OrdF32>> = BinaryHeap::with_capacity(stop.cut + 1);
    let mut done = 0;
    let mut placed = true;
    while done < n && (done < stop.min || placed) {
        let end = if done < stop.min {
            stop.min.min(n)
        } else {
            (done + EXACT_BLOCK).min(n)
        };
        let block = score(done..end);
        placed = false;
        for &s in &block {
            if best.len() < stop.cut {
                best.push(Reverse(OrdF32(s)));
                placed = true;
            } else if best.peek().is_some_and(|w| s > w.0.0) {
                best.pop();
                best.push(Reverse(OrdF32(s)));
                placed = true;
            }
        }
        scores.extend(block);
        done = end;
    }
    (done, scores)
}

/// An `f32` ordered (and equal) by `total_cmp`, for heaps of scores.
#[derive(Clone, Copy, Debug)]
struct OrdF32(f32);

impl PartialEq for OrdF32 {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for OrdF32 {}

impl PartialOrd for OrdF32 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrdF32 {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Decompressed token vectors of one document, row-major.
pub(crate) fn decompress_doc(codec: &Codec, seg: &SegmentReader, local: u32) -> Vec<f32> {
    let mut out = Vec::new();
    decompress_into(codec, &SegSlices::new(seg, codec).doc(local), &mut out);
    out
}

/// Appends the decompressed token vectors of one document to `out` (row-major).
fn decompress_into(codec: &Codec, doc: &DocSlices<'_>, out: &mut Vec<f32>) -> usize {
    let dim = codec.dim();
    let n = doc.packed.len() / codec.residual_bytes().max(1);
    let base = out.len();
    out.resize(base + n * dim, 0.0);
    for ((j, row), packed) in out[base..]
        .chunks_exact_mut(dim)
        .enumerate()
        .zip(doc.packed.chunks_exact(codec.residual_bytes()))
    {
        let code = match doc.codes {
            Codes::U16(cs) => u32::from(cs[j]),
            Codes::U32(cs) => cs[j],
        };
        codec.decode(code, packed, row);
        if let Some(s) = doc.scales {
            let s = s[j].to_f32();
            row.iter_mut().for_each(|v| *v *= s);
        }
    }
    n
}

/// A segment's sections, looked up once per search stage rather than once per document.
struct SegSlices<'a> {
    offsets: &'a [u64],
    codes: Codes<'a>,
    residuals: &'a [u8],
    /// Per-token norm scales (FORMAT.md, `TOKEN_SCALES`); `None` for segments written
    /// before they existed, whose tokens then count unscaled.
    scales: Option<&'a [half::f16]>,
    rb: usize,
}

/// One document's stored tokens.
struct DocSlices<'a> {
    codes: Codes<'a>,
    packed: &'a [u8],
    scales: Option<&'a [half::f16]>,
}

impl<'a> SegSlices<'a> {
    fn new(seg: &'a SegmentReader, codec: &Codec) -> Self {
        SegSlices {
            offsets: seg.doc_offsets(),
            codes: seg.codes(),
            residuals: seg.residuals(),
            scales: seg.token_scales().map(bytemuck::cast_slice),
            rb: codec.residual_bytes(),
        }
    }

    fn all(snap: &'a SnapshotInner, codec: &Codec) -> Vec<Self> {
        snap.segments
            .iter()
            .map(|s| SegSlices::new(&s.reader, codec))
            .collect()
    }

    fn doc(&self, local: u32) -> DocSlices<'a> {
        let (lo, hi) = (
            self.offsets[local as usize] as usize,
            self.offsets[local as usize + 1] as usize,
        );
        DocSlices {
            codes: match self.codes {
                Codes::U16(c) => Codes::U16(&c[lo..hi]),
                Codes::U32(c) => Codes::U32(&c[lo..hi]),
            },
            packed: &self.residuals[lo * self.rb..hi * self.rb],
            scales: self.scales.map(|s| &s[lo..hi]),
        }
    }
}

/// The probed centroids of a query.
struct Probes {
    /// Per query token: its probed centroids with their scores, best first.
    per_token: Vec<Vec<(u32, f32)>>,
    /// Per query token: the score of its worst probed centroid, the estimate for a
    /// document with none of its probed centroids (its true best is at most that).
    floor: Vec<f32>,
    /// Distinct centroids probed by any token.
    distinct: usize,
}

/// The `nprobe` best centroids of each query token (one pass over the `[n_centroids,
/// stride]` score table, with a bounded min-heap per token). With `bytes`, the same table
/// quantised to bytes, rows are skipped on their bytes (a quarter of the memory) when no
/// byte reaches its token's floor's byte, and the scores are read only for the others.
fn probe(
    table: &[f32],
    stride: usize,
    nq: usize,
    nprobe: usize,
    bytes: Option<&CentroidScores8>,
) -> Probes {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let kc = table.len() / stride.max(1);
    let nprobe = nprobe.min(kc);
    let mut heaps: Vec<BinaryHeap<(Reverse<OrdF32>, Reverse<u32>)>> = (0..nq)
        .map(|_| BinaryHeap::with_capacity(nprobe + 1))
        .collect();
    let mut floor = vec![f32::NEG_INFINITY; nq];
    let mut floor_bytes = vec![0u8; nq];
    for (c, row) in table.chunks_exact(stride).enumerate() {
        // A score above the floor has a byte at least the floor's (the map is monotone).
        if let Some(b) = bytes
            && c >= nprobe
            && !b.row(c)[..nq]
                .iter()
                .zip(&floor_bytes)
                .fold(false, |any, (v, f)| any | (v >= f))
        {
            continue;
        }
        let row = &row[..nq];
        // Every heap takes every row until it holds `nprobe`, so after the first `nprobe`
        // rows all are full and a row matters only if it beats some token's floor: one
        // branch-free comparison over the row (vectorised) skips the others, which at tens
        // of thousands of centroids are nearly all of them.
        if c >= nprobe
            && !row
                .iter()
                .zip(&floor)
                .fold(false, |any, (v, f)| any | (v > f))
        {
            continue;
        }
        for (i, &v) in row.iter().enumerate() {
            if v > floor[i] || heaps[i].len() < nprobe {
                let h = &mut heaps[i];
                h.push((Reverse(OrdF32(v)), Reverse(c as u32)));
                if h.len() > nprobe {
                    h.pop();
                }
                if h.len() == nprobe {
                    floor[i] = h
                        .peek()
                        .map_or(f32::NEG_INFINITY, |(Reverse(OrdF32(s)), _)| *s);
                    if let Some(b) = bytes {
                        floor_bytes[i] = b.quantize(floor[i]);
                    }
                }
            }
        }
    }
    let per_token: Vec<Vec<(u32, f32)>> = heaps
        .into_iter()
        .map(|h| {
            // Ascending by (Reverse(score), Reverse(id)): best score first, ties by id.
            h.into_sorted_vec()
                .into_iter()
                .map(|(Reverse(OrdF32(s)), Reverse(c))| (c, s))
                .collect()
        })
        .collect();
    let mut all: Vec<u32> = per_token.iter().flatten().map(|&(c, _)| c).collect();
    all.sort_unstable();
    all.dedup();
    Probes {
        per_token,
        floor,
        distinct: all.len(),
    }
}

/// Exact MaxSim of the query against each candidate's stored vectors.
fn exact_scores(
    codec: &Codec,
    tables: &QueryTables<'_>,
    segs: &[SegSlices<'_>],
    cands: &[Cand],
) -> Vec<f32> {
    let Some(lut) = tables.lut else {
        return decompressed_scores(codec, tables.query, segs, cands);
    };
    cands
        .iter()
        .map(|c| {
            let d = segs[c.seg as usize].doc(c.local);
            match d.codes {
                Codes::U16(cs) => lut.maxsim(tables.scores, cs, d.packed, d.scales),
                Codes::U32(cs) => lut.maxsim(tables.scores, cs, d.packed, d.scales),
            }
        })
        .collect()
}

/// Exact MaxSim by decompressing blocks of candidates and multiplying them by the query.
fn decompressed_scores(
    codec: &Codec,
    query: &[f32],
    segs: &[SegSlices<'_>],
    cands: &[Cand],
) -> Vec<f32> {
    let dim = codec.dim();
    let mut scores = vec![0f32; cands.len()];
    let mut buf: Vec<f32> = Vec::new();
    let mut offsets = vec![0usize];
    let mut start = 0;
    let flush = |buf: &mut Vec<f32>, offsets: &mut Vec<usize>, out: &mut [f32]| {
        maxsim_many(query, buf, offsets, dim, out);
        buf.clear();
        offsets.truncate(1);
    };
    for (i, c) in cands.iter().enumerate() {
        let rows = decompress_into(codec, &segs[c.seg as usize].doc(c.local), &mut buf);
        offsets.push(offsets[offsets.len() - 1] + rows);
        if buf.len() >= RERANK_BLOCK_TOKENS * dim {
            flush(&mut buf, &mut offsets, &mut scores[start..=i]);
            start = i + 1;
        }
    }
    if start < cands.len() {
        flush(&mut buf, &mut offsets, &mut scores[start..]);
    }
    scores
}

/// Candidates with their scores from the compressed vectors.
pub(crate) struct Scored<'a> {
    pub(crate) cands: &'a [Cand],
    pub(crate) compressed: &'a [f32],
}

/// The refine stage and the final ranking: the `refine` best candidates by compressed score
/// are re-scored by full-precision MaxSim over their originals (those in segments without
/// originals keep their compressed score) and ranked first; the rest follow by compressed
/// score, so they appear only when fewer than `k` were refined. Exact ties go to the
/// smaller external id.
pub(crate) fn refine_and_rank(
    snap: &SnapshotInner,
    query: &[f32],
    scored: &Scored<'_>,
    k: usize,
    refine: usize,
    workers: &Workers,
    stats: &mut SearchStats,
) -> Result<Vec<Hit>> {
    let t = Instant::now();
    let Scored { cands, compressed } = *scored;
    let id = |i: usize| {
        let c = cands[i];
        snap.segments[c.seg as usize].reader.external_id(c.local)
    };
    let mut order: Vec<usize> = (0..cands.len()).collect();
    let refine = refine.min(cands.len());
    if refine > 0 && refine < cands.len() {
        // Ties at the cut go to the smaller external id, so the refined set does not depend
        // on the order the candidates arrived in (the CPU's and the GPU's differ).
        order.select_nth_unstable_by(refine - 1, |&a, &b| {
            compressed[b]
                .total_cmp(&compressed[a])
                .then_with(|| id(a).cmp(&id(b)))
        });
    }
    // Announce every read first: originals that are not in the page cache then arrive in
    // parallel rather than one disk read after another (measured at 400K documents with
    // cold originals: BENCHMARKS.md, "Exact answers").
    for &i in &order[..refine] {
        let c = cands[i];
        if let Some(o) = &snap.segments[c.seg as usize].originals {
            o.prefetch(c.local);
        }
    }
    let refined = refine_scores(snap, query, cands, compressed, &order[..refine], workers);
    // (tier, score, candidate): tier 0 for the refined head, 1 for the tail.
    let mut ranked: Vec<(u8, f32, usize)> = Vec::with_capacity(cands.len());
    for (&i, r) in order[..refine].iter().zip(refined) {
        let (score, bytes) = r?;
        if let Some(bytes) = bytes {
            stats.refined += 1;
            stats.refine_bytes += bytes;
        }
        ranked.push((0, score, i));
    }
    ranked.extend(order[refine..].iter().map(|&i| (1, compressed[i], i)));
    ranked.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| b.1.total_cmp(&a.1))
            .then_with(|| id(a.2).cmp(&id(b.2)))
    });
    let hits = ranked
        .into_iter()
        .filter_map(|(_, score, i)| id(i).map(|id| Hit::new(id.clone(), score)))
        .take(k)
        .collect();
    stats.refine_us = micros(t);
    Ok(hits)
}

/// Full-precision MaxSim of the candidates `head` indexes, with the bytes of originals
/// read for each; a candidate whose segment keeps no originals keeps its compressed score
/// (and reads nothing). The query is prepared once per worker.
fn refine_scores(
    snap: &SnapshotInner,
    query: &[f32],
    cands: &[Cand],
    compressed: &[f32],
    head: &[usize],
    workers: &Workers,
) -> Vec<Result<(f32, Option<u64>)>> {
    if head.is_empty() {
        return Vec::new();
    }
    let dim = snap.codec.as_ref().map_or(1, |c| c.dim());
    workers.map_chunks(head, |chunk| {
        let mut prepared = RefineQuery::new(query, dim);
        chunk
            .iter()
            .map(|&i| {
                let c = cands[i];
                match &snap.segments[c.seg as usize].originals {
                    Some(o) => {
                        let doc = o.doc(c.local)?;
                        let bytes = doc.byte_len() as u64;
                        Ok((prepared.maxsim(stored(doc)), Some(bytes)))
                    }
                    None => Ok((compressed[i], None)),
                }
            })
            .collect()
    })
}

fn stored(doc: OriginalDoc<'_>) -> StoredVectors<'_> {
    match doc {
        OriginalDoc::F16(v) => StoredVectors::F16(v),
        OriginalDoc::Bf16(v) => StoredVectors::Bf16(v),
        OriginalDoc::F32(v) => StoredVectors::F32(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn probe_selects_each_tokens_best_centroids(
            nq in 1usize..6,
            kc in 1usize..60,
            nprobe in 1usize..10,
            values in prop::collection::vec(prop::sample::select(vec![0.0f32, 0.5, 1.0, -1.0, 2.0, 0.25]), 360),
        ) {
            let table: Vec<f32> = values.iter().cycle().take(kc * nq).copied().collect();
            let probes = probe(&table, nq, nq, nprobe, None);
            // Skipping rows on their bytes changes nothing (the byte table needs rows of
            // whole lanes: the same scores padded with zero columns).
            let stride = padded_tokens(nq);
            let mut padded = vec![0f32; kc * stride];
            for (p, r) in padded.chunks_exact_mut(stride).zip(table.chunks_exact(nq)) {
                p[..nq].copy_from_slice(r);
            }
            let bytes = CentroidScores8::new(&padded, stride, nq);
            let fast = probe(&padded, stride, nq, nprobe, Some(&bytes));
            prop_assert_eq!(&fast.per_token, &probes.per_token);
            prop_assert_eq!(&fast.floor, &probes.floor);
            let mut distinct = std::collections::BTreeSet::new();
            for i in 0..nq {
                // Each token lists exactly its own probes with their scores, best first,
                // and its floor is the lowest of them.
                let mine = &probes.per_token[i];
                prop_assert_eq!(mine.len(), nprobe.min(kc));
                for &(c, s) in mine {
                    prop_assert_eq!(s, table[c as usize * nq + i]);
                    distinct.insert(c);
                }
                prop_assert!(mine.windows(2).all(|w| w[0].1 >= w[1].1), "not best first");
                prop_assert_eq!(Some(probes.floor[i]), mine.last().map(|m| m.1));
                // Reference: a centroid whose score is strictly above the token's nprobe-th
                // best must be probed (ties may pick either).
                let col: Vec<f32> = (0..kc).map(|c| table[c * nq + i]).collect();
                let best = tessera_kernels::reference::top_k(&col, nprobe);
                let threshold = best.last().map_or(f32::INFINITY, |&c| col[c as usize]);
                for (c, &v) in col.iter().enumerate() {
                    if v > threshold {
                        prop_assert!(mine.iter().any(|&(p, _)| p == c as u32),
                            "token {}: centroid {} strictly above the threshold is missing", i, c);
                    }
                }
            }
            prop_assert_eq!(probes.distinct, distinct.len());
        }

        #[test]
        fn postings_estimate_is_each_tokens_best_probed_score_over_the_floor_for_every_probed_document(
            n_docs in 1usize..40,
            postings in prop::collection::vec(prop::collection::btree_set(0u32..40, 0..20), 1..12),
            scores in prop::collection::vec(prop::collection::vec(-1.0f32..1.0, 12), 1..5),
            nprobe in 1usize..6,
            passes in 1usize..3,
        ) {
            // Centroid `c` has posting `postings[c]` (ids clipped to the segment) and token
            // `i` scores it `scores[i][c]`.
            let kc = postings.len();
            let postings: Vec<Vec<u32>> = postings
                .iter()
                .map(|p| p.iter().copied().filter(|&d| (d as usize) < n_docs).collect())
                .collect();
            let nq = scores.len();
            let mut table = vec![0f32; kc * nq];
            for c in 0..kc {
                for i in 0..nq {
                    table[c * nq + i] = scores[i][c];
                }
            }
            let probes = probe(&table, nq, nq, nprobe, None);
            let mut marks = DocMarks::default();
            // Repeated passes reuse the marks: stale entries must not leak in.
            for _ in 0..passes {
                marks.begin(n_docs);
                for (i, token) in probes.per_token.iter().enumerate() {
                    for &(c, s) in token {
                        marks.add(&postings[c as usize], i as u32, s - probes.floor[i]);
                    }
                }
            }
            let got: std::collections::BTreeMap<u32, f32> = marks.touched().collect();
            for d in 0..n_docs as u32 {
                // Brute force: per token, the best probed score among the document's
                // centroids, at least the floor; a document gains only above the floors.
                // Every document of a probed posting is a candidate.
                let mut gain = 0f32;
                let mut probed = false;
                for i in 0..nq {
                    let mine: Vec<f32> = probes.per_token[i]
                        .iter()
                        .filter(|&&(c, _)| postings[c as usize].contains(&d))
                        .map(|&(_, s)| s)
                        .collect();
                    probed |= !mine.is_empty();
                    gain += mine.into_iter().fold(probes.floor[i], f32::max) - probes.floor[i];
                }
                match got.get(&d) {
                    Some(g) => prop_assert!((g - gain).abs() <= 1e-5, "doc {}: got {}, expected {}", d, g, gain),
                    None => prop_assert!(!probed, "doc {} of a probed posting is missing", d),
                }
            }
        }
    }
}
