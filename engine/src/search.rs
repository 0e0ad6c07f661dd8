//! The search pipeline over one snapshot (PLAID-style):
//! 1. centroid scores `S = Q C^T`; the `nprobe` best centroids of each query token;
//! 2. candidates: the union of the probed centroids' posting lists, minus tombstones, each
//!    with a first estimate from those postings alone (for token `i`, the best `S[i, c]`
//!    over the document's centroids that `i` probes, else `i`'s worst probed score); only
//!    the best [`prefilter_size`] go on, which bounds the next stage on large collections;
//! 3. a second estimate: `sum_i max_t S[i, code_t]` over all the document's tokens, on `S`
//!    quantised to bytes so each token costs one packed byte max ([`CentroidScores8`]);
//! 4. the `n_rerank` best estimates are scored exactly (MaxSim over their compressed
//!    vectors);
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
    CentroidScores8, QueryLut, StoredVectors, maxsim_many, maxsim_stored, padded_tokens, top_k,
};
use tessera_storage::originals::OriginalDoc;
use tessera_storage::segment::{Codes, SegmentReader};

use crate::codec::Codec;
use crate::document::Hit;
use crate::error::Result;
use crate::options::SearchParams;
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

/// Largest residual table ([`QueryLut`]) worth building: beyond this it falls out of the
/// per-core L2 cache and decompression plus GEMM is as fast. With half-byte tables, 1-4 bit
/// residuals stay under it up to dim 2048 for 32 query tokens; 8-bit residuals (whole-byte
/// tables, 4 MiB at dim 128) take the decompression path.
const LUT_MAX_BYTES: usize = 2 << 20;

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
    /// `[n_centroids, stride]`: `S[c, i] = q_i · centroid_c`, padding columns zero.
    scores: Vec<f32>,
    lut: QueryLut,
    bytes: CentroidScores8,
    padded: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// What a query needs against one codec: its centroid score table and, when small enough,
/// its residual table.
struct QueryTables<'a> {
    query: &'a [f32],
    scores: &'a [f32],
    stride: usize,
    lut: Option<&'a QueryLut>,
    bytes: &'a mut CentroidScores8,
}

impl<'a> QueryTables<'a> {
    fn new(codec: &Codec, query: &'a [f32], scratch: &'a mut Scratch) -> Self {
        let dim = codec.dim();
        let nq = query.len() / dim;
        let stride = padded_tokens(nq);
        // Zero query rows pad the table to whole SIMD lanes; they score 0 everywhere.
        let padded = &mut scratch.padded;
        padded.clear();
        padded.extend_from_slice(query);
        padded.resize(stride * dim, 0.0);
        let scores = &mut scratch.scores;
        scores.clear();
        scores.resize(codec.n_centroids() as usize * stride, 0.0);
        tessera_kernels::matmul_nt(codec.centroids(), padded, dim, scores, 1);
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
        }
    }
}

pub(crate) fn search(
    snap: &SnapshotInner,
    query: &[f32],
    k: usize,
    params: &SearchParams,
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
    SCRATCH.with_borrow_mut(|scratch| {
        let t = Instant::now();
        let mut tables = QueryTables::new(codec, query, scratch);
        stats.centroid_us = micros(t);
        search_with_tables(snap, codec, &mut tables, nq, k, params, stats)
    })
}

fn search_with_tables(
    snap: &SnapshotInner,
    codec: &Codec,
    tables: &mut QueryTables<'_>,
    nq: usize,
    k: usize,
    params: &SearchParams,
    stats: &mut SearchStats,
) -> Result<Vec<Hit>> {
    let mut survivors: Vec<Cand> = if params.full_scan(k, snap.live_docs()) {
        all_live(snap)
    } else {
        let t = Instant::now();
        let probes = probe(
            tables.scores,
            tables.stride,
            nq,
            params.nprobe.max(1) as usize,
        );
        stats.probed_centroids = probes.centroids.len();
        stats.centroid_us += micros(t);
        approximate_candidates(
            snap,
            codec,
            tables,
            nq,
            &probes,
            Budgets {
                prefilter: params.prefilter_budget(k, snap.live_docs()),
                rerank: params.rerank_budget(k),
            },
            stats,
        )
    };
    if survivors.len() < k {
        // The probed postings reach fewer documents than asked for: score them all rather
        // than return fewer hits than the collection can give.
        survivors = all_live(snap);
    }
    let t = Instant::now();
    let scores = exact_scores(snap, codec, tables, &survivors);
    stats.reranked = survivors.len();
    stats.rerank_us = micros(t);
    let refine = params.refine_count(k);
    let scored = Scored {
        cands: &survivors,
        compressed: &scores,
    };
    refine_and_rank(snap, tables.query, &scored, k, refine, stats)
}

/// Every live document of the snapshot, in segment order.
fn all_live(snap: &SnapshotInner) -> Vec<Cand> {
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

fn approximate_candidates(
    snap: &SnapshotInner,
    codec: &Codec,
    tables: &mut QueryTables<'_>,
    nq: usize,
    probes: &Probes,
    budgets: Budgets,
    stats: &mut SearchStats,
) -> Vec<Cand> {
    let Budgets { prefilter, rerank } = budgets;
    let t = Instant::now();
    // Tier 1, from the postings alone: per query token, the best score among the
    // document's probed centroids, or the token's floor.
    let mut cands: Vec<Cand> = Vec::new();
    let mut approx: Vec<f32> = Vec::new();
    let mut slot: Vec<u32> = Vec::new();
    let mut touched: Vec<u32> = Vec::new();
    let mut best: Vec<f32> = Vec::new();
    for (si, seg) in snap.segments.iter().enumerate() {
        let n_docs = seg.reader.meta().n_docs as usize;
        slot.clear();
        slot.resize(n_docs, u32::MAX);
        touched.clear();
        best.clear();
        for (c, tokens) in &probes.centroids {
            // Postings are validated at open: every id is below `n_docs`.
            for &d in seg.reader.posting(*c) {
                let s = &mut slot[d as usize];
                if *s == u32::MAX {
                    *s = touched.len() as u32;
                    touched.push(d);
                    best.extend_from_slice(&probes.floor);
                }
                let row = &mut best[*s as usize * nq..(*s as usize + 1) * nq];
                for &(i, v) in tokens {
                    let b = &mut row[i as usize];
                    if v > *b {
                        *b = v;
                    }
                }
            }
        }
        for (&local, row) in touched.iter().zip(best.chunks_exact(nq)) {
            if !seg.tombstones.contains(local) {
                cands.push(Cand {
                    seg: si as u32,
                    local,
                });
                approx.push(row.iter().sum());
            }
        }
    }
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
    // Tier 2: every token's centroid counts, on byte-quantised scores.
    tables.bytes.rebuild(tables.scores, tables.stride, nq);
    let bytes = &*tables.bytes;
    approx.clear();
    let segs = SegSlices::all(snap, codec);
    approx.extend(
        cands
            .iter()
            .map(|c| match segs[c.seg as usize].doc(c.local).codes {
                Codes::U16(cs) => bytes.estimate(cs),
                Codes::U32(cs) => bytes.estimate(cs),
            }),
    );
    let kept = top_k(&approx, rerank)
        .into_iter()
        .map(|i| cands[i as usize])
        .collect();
    stats.approx_us = micros(t);
    kept
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
    /// Distinct probed centroids, ascending, each with the query tokens that probe it and
    /// their scores.
    centroids: Vec<(u32, Vec<(u32, f32)>)>,
    /// Per query token: the score of its worst probed centroid, the estimate for a
    /// document with none of its probed centroids (its true best is at most that).
    floor: Vec<f32>,
}

/// The `nprobe` best centroids of each query token (one pass over the `[n_centroids,
/// stride]` score table, with a bounded min-heap per token).
fn probe(table: &[f32], stride: usize, nq: usize, nprobe: usize) -> Probes {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    struct Score(f32);
    impl PartialEq for Score {
        fn eq(&self, other: &Self) -> bool {
            self.cmp(other) == Ordering::Equal
        }
    }
    impl Eq for Score {}
    impl PartialOrd for Score {
        fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
            Some(self.cmp(other))
        }
    }
    impl Ord for Score {
        fn cmp(&self, other: &Self) -> Ordering {
            self.0.total_cmp(&other.0)
        }
    }
    let kc = table.len() / stride.max(1);
    let nprobe = nprobe.min(kc);
    let mut heaps: Vec<BinaryHeap<(Reverse<Score>, Reverse<u32>)>> = (0..nq)
        .map(|_| BinaryHeap::with_capacity(nprobe + 1))
        .collect();
    let mut floor = vec![f32::NEG_INFINITY; nq];
    for (c, row) in table.chunks_exact(stride).enumerate() {
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
                h.push((Reverse(Score(v)), Reverse(c as u32)));
                if h.len() > nprobe {
                    h.pop();
                }
                if h.len() == nprobe {
                    floor[i] = h
                        .peek()
                        .map_or(f32::NEG_INFINITY, |(Reverse(Score(s)), _)| *s);
                }
            }
        }
    }
    let mut pairs: Vec<(u32, u32, f32)> = heaps
        .into_iter()
        .enumerate()
        .flat_map(|(i, h)| {
            h.into_iter()
                .map(move |(Reverse(Score(s)), Reverse(c))| (c, i as u32, s))
        })
        .collect();
    pairs.sort_unstable_by_key(|&(c, i, _)| (c, i));
    let mut centroids: Vec<(u32, Vec<(u32, f32)>)> = Vec::new();
    for (c, i, s) in pairs {
        match centroids.last_mut() {
            Some((last, tokens)) if *last == c => tokens.push((i, s)),
            _ => centroids.push((c, vec![(i, s)])),
        }
    }
    Probes { centroids, floor }
}

/// Exact MaxSim of the query against each candidate's stored vectors.
fn exact_scores(
    snap: &SnapshotInner,
    codec: &Codec,
    tables: &QueryTables<'_>,
    cands: &[Cand],
) -> Vec<f32> {
    let Some(lut) = tables.lut else {
        return decompressed_scores(snap, codec, tables.query, cands);
    };
    let segs = SegSlices::all(snap, codec);
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
    snap: &SnapshotInner,
    codec: &Codec,
    query: &[f32],
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
    let segs = SegSlices::all(snap, codec);
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
    stats: &mut SearchStats,
) -> Result<Vec<Hit>> {
    let t = Instant::now();
    let Scored { cands, compressed } = *scored;
    let dim = snap.codec.as_ref().map_or(1, |c| c.dim());
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
    // (tier, score, candidate): tier 0 for the refined head, 1 for the tail.
    let mut ranked: Vec<(u8, f32, usize)> = Vec::with_capacity(cands.len());
    for (pos, &i) in order.iter().enumerate() {
        let c = cands[i];
        if pos >= refine {
            ranked.push((1, compressed[i], i));
            continue;
        }
        let score = match &snap.segments[c.seg as usize].originals {
            Some(o) => {
                let doc = o.doc(c.local)?;
                stats.refined += 1;
                stats.refine_bytes += doc.byte_len() as u64;
                maxsim_stored(query, stored(doc), dim)
            }
            None => compressed[i],
        };
        ranked.push((0, score, i));
    }
    ranked.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| b.1.total_cmp(&a.1))
            .then_with(|| id(a.2).cmp(&id(b.2)))
    });
    let hits = ranked
        .into_iter()
        .filter_map(|(_, score, i)| {
            id(i).map(|id| Hit {
                id: id.clone(),
                score,
            })
        })
        .take(k)
        .collect();
    stats.refine_us = micros(t);
    Ok(hits)
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
            let probes = probe(&table, nq, nq, nprobe);
            let got: Vec<u32> = probes.centroids.iter().map(|(c, _)| *c).collect();
            for i in 0..nq {
                // Each token lists exactly its own probes with their scores, and its floor
                // is the lowest of them.
                let mine: Vec<f32> = probes
                    .centroids
                    .iter()
                    .flat_map(|(c, toks)| {
                        toks.iter().filter(|(t, _)| *t as usize == i).map(move |(_, s)| (*c, *s))
                    })
                    .map(|(c, s)| {
                        assert_eq!(s, table[c as usize * nq + i]);
                        s
                    })
                    .collect();
                prop_assert_eq!(mine.len(), nprobe.min(kc));
                let lowest = mine.iter().copied().fold(f32::INFINITY, f32::min);
                prop_assert_eq!(probes.floor[i], lowest);
            }
            // Reference: per token, the values of its column; a centroid qualifies if its
            // score is at least the token's nprobe-th best (ties may pick either).
            let mut must = std::collections::BTreeSet::new();
            for i in 0..nq {
                let col: Vec<f32> = (0..kc).map(|c| table[c * nq + i]).collect();
                let best = tessera_kernels::reference::top_k(&col, nprobe);
                let threshold = best.last().map_or(f32::INFINITY, |&c| col[c as usize]);
                for (c, &v) in col.iter().enumerate() {
                    if v > threshold {
                        must.insert(c as u32);
                    }
                }
                let picked_for_token = got.iter().filter(|&&c| col[c as usize] >= threshold).count();
                prop_assert!(picked_for_token >= nprobe.min(kc));
            }
            for c in must {
                prop_assert!(got.contains(&c), "centroid {} strictly above a threshold is missing", c);
            }
        }
    }
}
