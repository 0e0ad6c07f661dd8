//! The launch sequence of one device search: the CPU pipeline's stages (engine
//! `search.rs`), each as the kernel of `cuda/search.cu` that mirrors it, up to the ranked
//! survivors of the centroid-code estimate with their exact scores over the compressed
//! vectors. What follows (the early stop over those scores in estimate order, the refine
//! stage over the originals and the final ranking) runs on the host in the engine, with the
//! CPU's own code.
//!
//! Launches per chunk of queries, all on one stream (the host waits once, for the copies
//! out):
//! 1. `centroid_scores_i8` (the host scores centroids in `i8`: same bits) or
//!    `centroid_scores` (`f32`), both layouts; the byte table's map (from the host, as
//!    `Int8Centroids::scores_and_bytes` makes it, or `byte_map_range` as
//!    `CentroidScores8::rebuild` does) and `quantize_scores`; `build_lut` for the queries
//!    whose residual table the CPU would build;
//! 2. `select_topk` per query token: its `nprobe` best centroids; `rank_probes` (best
//!    first, and the floors); `probe_tables`; `mark_candidates` (the probed postings);
//!    `postings_estimate`; `select_topk` per query: the prefilter's best, ties in the
//!    CPU's first-touch order;
//! 3. `code_estimate` over those; `select_topk` per query: the re-rank limit's best, ties
//!    to the lower global id (the CPU's `top_k` over candidates in global order);
//! 4. `lut_maxsim` or `rerank_maxsim_d*` (per query, as the CPU chooses) over the
//!    survivors, or over every document when the search is exhaustive.
//!
//! The CPU's exact stage stops early (engine `search.rs`, `exact_until_settled`): the
//! device scores every survivor up to the re-rank limit instead (they are scored in
//! parallel), and the host replays the stopping rule over those scores in the CPU's order,
//! so the documents that reach the refine stage are the CPU's.
#![allow(unsafe_code)]

use super::*;

/// One query of a device search.
#[derive(Clone, Copy, Debug)]
pub struct DeviceQuery<'a> {
    /// Row-major `[tokens, dim]`.
    pub tokens: &'a [f32],
    /// Score the exact stage through the query's residual table (the CPU builds one when
    /// it fits its cache budget), else by decompression.
    pub lut: bool,
    /// Rank every allowed document by the centroid-code estimate, without postings (the
    /// CPU's `rank_allowed`, chosen for selective filters).
    pub scan_all: bool,
}

/// Parameters of a device search (the engine's `SearchParams` resolved for one batch).
#[derive(Clone, Copy, Debug)]
pub struct DeviceSearch {
    /// Centroids probed per query token (already scaled for a filter).
    pub nprobe: usize,
    /// Candidates the postings estimate keeps for the centroid-code estimate (at least
    /// `rerank`).
    pub prefilter: usize,
    /// Candidates the centroid-code estimate keeps for exact scoring (the re-rank limit).
    pub rerank: usize,
    /// Score every live (allowed) document exactly instead.
    pub exhaustive: bool,
}

/// One query's survivors, in no particular order: (segment, local id), their
/// centroid-code estimates (the exact score when exhaustive) and their exact scores over
/// the compressed vectors.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeviceRanked {
    /// (segment index, local id) of each survivor.
    pub docs: Vec<(u32, u32)>,
    /// Their centroid-code estimates.
    pub estimates: Vec<f32>,
    /// Their exact scores over the compressed vectors.
    pub exact: Vec<f32>,
    /// Documents the postings stage made candidates (every live one when exhaustive).
    pub candidates: u32,
    /// Whether the CPU would hold these candidates in first-touch order when it ranks
    /// them (the prefilter did not cut them): equal estimates are then ordered by
    /// (segment, `touch`, local id), else by (segment, local id).
    pub touch_order: bool,
    /// Each survivor's first-touch key (0 without touch order).
    pub touch: Vec<u32>,
}

/// Traffic of one batch search.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DeviceTraffic {
    /// Bytes copied host to device.
    pub h2d_bytes: u64,
    /// Bytes copied device to host.
    pub d2h_bytes: u64,
    /// Device-memory bytes the kernels read and write, from a model of each kernel's
    /// accesses (counts of candidates and survivors, average document length); an estimate,
    /// not a hardware counter.
    pub device_bytes_model: u64,
    /// Chunks the batch was split into (one synchronisation each).
    pub chunks: u32,
}

fn grid(x: u64, y: u64, block: (u32, u32), smem: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (
            x.clamp(1, u64::from(u32::MAX >> 1)) as u32,
            y.max(1) as u32,
            1,
        ),
        block_dim: (block.0, block.1, 1),
        shared_mem_bytes: smem,
    }
}

/// A kernel argument: every kernel takes 32-bit integers and 64-bit device addresses.
#[derive(Clone, Copy)]
enum Arg {
    U32(u32),
    U64(u64),
}

impl Gpu {
    /// Launches `f` on the stream with `args` in order.
    fn launch(
        &self,
        f: &CudaFunction,
        cfg: LaunchConfig,
        what: &'static str,
        args: &[Arg],
    ) -> Result<()> {
        let mut l = self.stream.launch_builder(f);
        for a in args {
            match a {
                Arg::U32(x) => l.arg(x),
                Arg::U64(x) => l.arg(x),
            };
        }
        // SAFETY: each call site passes the kernel's parameters in its declared order and
        // types (u32 or a u64 device address of a live buffer of the size the kernel's
        // comment states), and a grid the kernel bounds-checks against those sizes; every
        // buffer outlives the chunk's synchronisation (`Scratch`).
        unsafe { l.launch(cfg) }.map(|_| ()).map_err(self.err(what))
    }
}

/// Device buffers of one chunk, kept until it has synchronised.
#[derive(Default)]
struct Scratch {
    f32s: Vec<CudaSlice<f32>>,
    u32s: Vec<CudaSlice<u32>>,
    i32s: Vec<CudaSlice<i32>>,
}

/// A buffer's address as a kernel argument.
fn a<T>(g: &Gpu, s: &CudaSlice<T>) -> Arg {
    Arg::U64(g.ptr(s))
}

/// The byte table's map `(lo, step, 1 / step)` over `lo..=hi`, as
/// `CentroidScores8::prepare` computes it.
pub(crate) fn byte_map(lo: f32, hi: f32) -> [f32; 3] {
    let step = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
    [lo, step, 1.0 / step]
}

impl DeviceIndex {
    /// The device.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// Documents (including deleted ones) in the snapshot.
    pub fn n_docs(&self) -> u32 {
        self.n_docs
    }

    /// First global id of each segment (`n_segments + 1` entries): local id `l` of segment
    /// `s` is global id `bases[s] + l`, the bit a filter bitmap sets for it.
    pub fn segment_bases(&self) -> &[u32] {
        &self.base_host
    }

    /// 32-bit words of a bitmap over the snapshot's global ids.
    pub fn bitmap_words(&self) -> usize {
        self.words as usize
    }

    /// Searches a batch of queries; `allow`, a bitmap over global ids
    /// ([`DeviceIndex::segment_bases`]), restricts the results to its documents (it must
    /// hold no deleted one). Every query must share `scan_all`.
    pub fn search(
        &self,
        queries: &[DeviceQuery<'_>],
        p: &DeviceSearch,
        allow: Option<&[u32]>,
    ) -> Result<(Vec<DeviceRanked>, DeviceTraffic)> {
        let dim = self.codec.dim;
        let mut traffic = DeviceTraffic::default();
        if queries.is_empty() {
            return Ok((Vec::new(), traffic));
        }
        for q in queries {
            let nq = q.tokens.len() / dim;
            if nq == 0 || nq > MAX_QUERY_TOKENS {
                return Err(GpuError::Unsupported(format!(
                    "a query of {nq} tokens (the GPU kernels handle 1 to {MAX_QUERY_TOKENS})"
                )));
            }
        }
        if queries.iter().any(|q| q.scan_all != queries[0].scan_all) {
            return Err(GpuError::Unsupported(
                "a batch mixing postings and full-filter candidates".into(),
            ));
        }
        if queries[0].scan_all && allow.is_none() {
            return Err(GpuError::Unsupported(
                "ranking every document needs a filter bitmap".into(),
            ));
        }
        if let Some(w) = allow
            && w.len() != self.words as usize
        {
            return Err(GpuError::Unsupported(format!(
                "a filter bitmap of {} words for {} documents",
                w.len(),
                self.n_docs
            )));
        }
        let _one = self.gpu.exclusive.lock().unwrap_or_else(|e| e.into_inner());
        let d_allow = allow.map(|w| self.gpu.upload(w)).transpose()?;
        traffic.h2d_bytes += allow.map_or(0, |w| 4 * w.len() as u64);
        let allowed = allow.map_or(u64::from(self.n_docs), |w| {
            w.iter().map(|x| u64::from(x.count_ones())).sum()
        });
        let mut out = Vec::with_capacity(queries.len());
        let mut start = 0;
        while start < queries.len() {
            let end = start + self.chunk_len(&queries[start..], p, allowed);
            let (hits, t) =
                self.search_chunk(&queries[start..end], p, d_allow.as_ref(), allowed)?;
            out.extend(hits);
            traffic.h2d_bytes += t.h2d_bytes;
            traffic.d2h_bytes += t.d2h_bytes;
            traffic.device_bytes_model += t.device_bytes_model;
            traffic.chunks += 1;
            start = end;
        }
        Ok((out, traffic))
    }

    /// Candidates kept by the postings stage (every allowed one for `scan_all`) and by the
    /// code estimate (every document when exhaustive).
    fn limits(&self, p: &DeviceSearch, scan_all: bool, allowed: u64) -> (usize, usize) {
        let n = self.n_docs as usize;
        if p.exhaustive {
            return (0, n);
        }
        let rerank = p.rerank.clamp(1, n.max(1));
        let kept = if scan_all {
            usize::try_from(allowed).unwrap_or(n)
        } else {
            p.prefilter.max(rerank)
        };
        (kept.clamp(1, n.max(1)), rerank)
    }

    /// Queries of the next chunk: as many as fit in the device's scratch allowance, at least
    /// one.
    fn chunk_len(&self, queries: &[DeviceQuery<'_>], p: &DeviceSearch, allowed: u64) -> usize {
        let c = &*self.codec;
        let dim = c.dim as u64;
        let kc = u64::from(c.n_centroids);
        let n = u64::from(self.n_docs);
        let (kept, r) = self.limits(p, queries[0].scan_all, allowed);
        let (kept, r) = (kept as u64, r as u64);
        let rows = u64::from(c.n_bytes) * if c.per_byte >= 2 { 32 } else { 256 };
        let mut used = 0u64;
        let mut tokens = 0u64;
        for (i, q) in queries.iter().enumerate() {
            let nq = q.tokens.len() as u64 / dim;
            // Grid limits: queries and query tokens are grid.y of some launches.
            tokens += nq;
            if i > 0 && (i >= MAX_GRID_Y || tokens > MAX_GRID_Y as u64) {
                return i;
            }
            let probes = (p.nprobe as u64).min(kc);
            let per = 4 * (nq * dim + nq * dim.div_ceil(4) + 8)
                + 9 * kc * nq
                + 4 * kc * (nq.div_ceil(32) + 1)
                + 16 * nq * probes
                + 4 * u64::from(self.words)
                + 8 * n
                + 12 * kept
                + if p.exhaustive { 4 * r } else { 16 * r }
                + if q.lut { 4 * rows * nq } else { 0 };
            if i > 0 && used + per > self.gpu.scratch {
                return i;
            }
            used += per;
        }
        queries.len()
    }

    fn search_chunk(
        &self,
        queries: &[DeviceQuery<'_>],
        p: &DeviceSearch,
        allow: Option<&CudaSlice<u32>>,
        allowed: u64,
    ) -> Result<(Vec<DeviceRanked>, DeviceTraffic)> {
        let g = &*self.gpu;
        let c = &*self.codec;
        let dim = c.dim;
        let b = queries.len() as u32;
        let kc = c.n_centroids;
        let n = self.n_docs;
        let scan_all = queries[0].scan_all;
        let mut q_off = vec![0u32];
        let mut tok_query = Vec::new();
        let mut flat = Vec::new();
        let mut lut_off = Vec::with_capacity(queries.len());
        let mut lut_len = 0u64;
        let rows = c.n_bytes * if c.per_byte >= 2 { 32 } else { 256 };
        for (i, q) in queries.iter().enumerate() {
            let nq = q.tokens.len() / dim;
            flat.extend_from_slice(&q.tokens[..nq * dim]);
            tok_query.extend(std::iter::repeat_n(i as u32, nq));
            q_off.push(q_off[i] + nq as u32);
            if q.lut {
                lut_off.push(u32::try_from(lut_len).map_err(|_| {
                    GpuError::Unsupported("residual tables over 2^32 floats in one chunk".into())
                })?);
                lut_len += u64::from(rows) * nq as u64;
            } else {
                lut_off.push(u32::MAX);
            }
        }
        let t = tok_query.len() as u32;
        let nq_max = queries
            .iter()
            .map(|q| q.tokens.len() / dim)
            .max()
            .unwrap_or(1) as u32;
        let (kept_len, r) = self.limits(p, scan_all, allowed);
        let (kept_len, r) = (kept_len as u32, r as u32);
        let mut s = Scratch::default();
        let mut traffic = DeviceTraffic::default();
        let null = Arg::U64(0);
        let allow_arg = allow.map_or(null, |x| a(g, x));
        let seg = SegArgs::new(g, self);

        let d_q = g.upload(&flat)?;
        let d_qoff = g.upload(&q_off)?;
        let d_tokq = g.upload(&tok_query)?;
        let d_lut_off = g.upload(&lut_off)?;
        let scan_flags = vec![u8::from(scan_all); queries.len()];
        let d_scan = g.upload(&scan_flags)?;
        traffic.h2d_bytes = 4 * (flat.len() + q_off.len() + tok_query.len() + lut_off.len()) as u64
            + scan_flags.len() as u64;

        // 1. Centroid scores, the byte table, the residual tables.
        let s_cm = g.zeros::<f32>(kc as usize * t as usize)?;
        let s_tm = g.zeros::<f32>(kc as usize * t as usize)?;
        let map = self.centroid_stage(
            queries,
            &d_q,
            &d_qoff,
            t,
            &s_cm,
            &s_tm,
            &mut s,
            &mut traffic,
        )?;
        let bytes = g.zeros::<u8>(kc as usize * t as usize)?;
        g.launch(
            &g.kernels.quantize_scores,
            grid(
                (u64::from(kc) * u64::from(t)).div_ceil(u64::from(FLAT_THREADS)),
                1,
                (FLAT_THREADS, 1),
                0,
            ),
            "launching quantize_scores",
            &[
                a(g, &s_cm),
                Arg::U32(kc),
                Arg::U32(t),
                a(g, &d_tokq),
                a(g, &map),
                a(g, &bytes),
            ],
        )?;
        let lut = g.zeros::<f32>(lut_len as usize)?;
        if lut_len > 0 {
            let (per_byte, n_bytes) = (c.per_byte, c.n_bytes);
            g.launch(
                &g.kernels.build_lut,
                grid(
                    (u64::from(rows) * u64::from(nq_max)).div_ceil(u64::from(FLAT_THREADS)),
                    u64::from(b),
                    (FLAT_THREADS, 1),
                    0,
                ),
                "launching build_lut",
                &[
                    a(g, &d_q),
                    a(g, &d_qoff),
                    Arg::U32(dim as u32),
                    a(g, &c.byte_table),
                    Arg::U32(per_byte),
                    Arg::U32(n_bytes),
                    a(g, &d_lut_off),
                    Arg::U32(nq_max),
                    a(g, &lut),
                ],
            )?;
        }

        // 2-3. Candidates, the postings estimate, the prefilter, the code estimate.
        let n_cands = g.zeros::<u32>(b as usize)?;
        // An exhaustive search scores every document: no survivor lists.
        let listed = if p.exhaustive {
            0
        } else {
            b as usize * r as usize
        };
        let surv = g.zeros::<u32>(listed)?;
        let surv_est = g.zeros::<f32>(listed)?;
        let surv_count = g.zeros::<u32>(b as usize)?;
        let surv_touch = g.zeros::<u32>(listed)?;
        if !p.exhaustive {
            let kept = self.postings_stage(
                queries, p, &seg, &s_cm, &s_tm, t, nq_max, &d_qoff, &d_tokq, &d_scan, allow_arg,
                kept_len, &n_cands, &mut s,
            )?;
            let (kept_ids, kept_count, touch) = (&kept.0, &kept.1, &kept.2);
            let est = g.zeros::<f32>(b as usize * kept_len as usize)?;
            g.launch(
                &g.kernels.code_estimate,
                grid(
                    u64::from(kept_len).div_ceil(u64::from(DOC_WARPS)),
                    u64::from(b),
                    (32 * DOC_WARPS, 1),
                    0,
                ),
                "launching code_estimate",
                &[
                    a(g, kept_ids),
                    Arg::U32(kept_len),
                    a(g, kept_count),
                    a(g, &bytes),
                    Arg::U32(t),
                    a(g, &d_qoff),
                    a(g, &map),
                    seg.base,
                    seg.n_seg,
                    seg.offsets,
                    seg.codes,
                    seg.width,
                    a(g, &est),
                ],
            )?;
            g.launch(
                &g.kernels.select_topk,
                grid(u64::from(b), 1, (SELECT_THREADS, 1), 0),
                "launching select_topk (survivors)",
                &[
                    a(g, &est),
                    Arg::U64(u64::from(kept_len)),
                    Arg::U64(1),
                    a(g, kept_ids),
                    Arg::U64(u64::from(kept_len)),
                    a(g, kept_count),
                    Arg::U32(kept_len),
                    Arg::U32(r),
                    a(g, touch),
                    Arg::U64(u64::from(n)),
                    a(g, &n_cands),
                    Arg::U32(kept_len),
                    seg.base,
                    seg.n_seg,
                    a(g, &surv),
                    a(g, &surv_est),
                    a(g, &surv_touch),
                    Arg::U32(r),
                    a(g, &surv_count),
                    null,
                ],
            )?;
            s.f32s.push(est);
            s.u32s.extend([kept.0, kept.1, kept.2]);
        }

        // 4. Exact scores over the compressed vectors.
        let exact = g.zeros::<f32>(b as usize * r as usize)?;
        let surv_arg = if p.exhaustive { null } else { a(g, &surv) };
        if queries.iter().any(|q| q.lut) {
            g.launch(
                &g.kernels.lut_maxsim,
                grid(
                    u64::from(r).div_ceil(u64::from(DOC_WARPS)),
                    u64::from(b),
                    (32 * DOC_WARPS, 1),
                    0,
                ),
                "launching lut_maxsim",
                &[
                    surv_arg,
                    Arg::U32(r),
                    Arg::U32(n),
                    allow_arg,
                    a(g, &self.tomb),
                    a(g, &s_cm),
                    Arg::U32(t),
                    a(g, &d_qoff),
                    a(g, &d_lut_off),
                    a(g, &lut),
                    Arg::U32(c.per_byte),
                    Arg::U32(c.n_bytes),
                    seg.base,
                    seg.n_seg,
                    seg.offsets,
                    seg.codes,
                    seg.width,
                    seg.resid,
                    seg.scales,
                    a(g, &exact),
                ],
            )?;
        }
        if queries.iter().any(|q| !q.lut) {
            let rerank_fn = &g.kernels.rerank[match dim {
                0..=128 => 0,
                129..=256 => 1,
                257..=512 => 2,
                _ => 3,
            }];
            let tile_tokens = (TILE_FLOATS / dim).clamp(1, 32) as u32;
            let smem = 4 * (tile_tokens * dim as u32 + nq_max);
            g.launch(
                rerank_fn,
                grid(u64::from(r), u64::from(b), (RERANK_THREADS, 1), smem),
                "launching rerank_maxsim",
                &[
                    a(g, &d_q),
                    a(g, &d_qoff),
                    Arg::U32(dim as u32),
                    surv_arg,
                    Arg::U32(r),
                    allow_arg,
                    a(g, &self.tomb),
                    Arg::U32(n),
                    a(g, &d_lut_off),
                    seg.base,
                    seg.n_seg,
                    seg.offsets,
                    seg.codes,
                    seg.width,
                    seg.resid,
                    seg.scales,
                    a(g, &c.centroids),
                    a(g, &c.byte_table),
                    Arg::U32(c.per_byte),
                    Arg::U32(c.n_bytes),
                    Arg::U32(tile_tokens),
                    a(g, &exact),
                ],
            )?;
        }
        let dtoh_u32 =
            |what: &'static str, x: &CudaSlice<u32>| g.stream.clone_dtoh(x).map_err(g.err(what));
        let dtoh_f32 =
            |what: &'static str, x: &CudaSlice<f32>| g.stream.clone_dtoh(x).map_err(g.err(what));
        let exact_h = dtoh_f32("copying exact scores to the host", &exact)?;
        let (ids_h, est_h, touch_h, count_h, cands_h) = if p.exhaustive {
            Default::default()
        } else {
            (
                dtoh_u32("copying survivors to the host", &surv)?,
                dtoh_f32("copying estimates to the host", &surv_est)?,
                dtoh_u32("copying first-touch keys to the host", &surv_touch)?,
                dtoh_u32("copying survivor counts to the host", &surv_count)?,
                dtoh_u32("copying candidate counts to the host", &n_cands)?,
            )
        };
        traffic.d2h_bytes = 4
            * (exact_h.len()
                + ids_h.len()
                + est_h.len()
                + touch_h.len()
                + count_h.len()
                + cands_h.len()) as u64;
        drop(s);
        drop((s_cm, s_tm, bytes, lut, surv, surv_est, surv_touch, exact));

        let mut out = Vec::with_capacity(queries.len());
        for qi in 0..b as usize {
            let row = qi * r as usize;
            let mut d = DeviceRanked::default();
            if p.exhaustive {
                for (gid, &x) in exact_h[row..row + r as usize].iter().enumerate() {
                    if x > f32::NEG_INFINITY {
                        d.docs.push(locate(&self.base_host, gid as u32));
                        d.estimates.push(x);
                        d.exact.push(x);
                    }
                }
                d.candidates = d.docs.len() as u32;
            } else {
                for j in 0..count_h[qi].min(r) as usize {
                    let gid = ids_h[row + j];
                    if gid >= n {
                        continue;
                    }
                    d.docs.push(locate(&self.base_host, gid));
                    d.estimates.push(est_h[row + j]);
                    d.exact.push(exact_h[row + j]);
                    d.touch.push(touch_h[row + j]);
                }
                d.candidates = cands_h[qi];
                d.touch_order = cands_h[qi] <= kept_len;
            }
            let nq = u64::from(q_off[qi + 1] - q_off[qi]);
            traffic.device_bytes_model += self.bytes_model(nq, &d, p, kept_len, queries[qi].lut);
            out.push(d);
        }
        Ok((out, traffic))
    }

    /// Stage 1: the centroid scores (both layouts) and the byte table's map per query.
    #[allow(clippy::too_many_arguments)]
    fn centroid_stage(
        &self,
        queries: &[DeviceQuery<'_>],
        d_q: &CudaSlice<f32>,
        d_qoff: &CudaSlice<u32>,
        t: u32,
        s_cm: &CudaSlice<f32>,
        s_tm: &CudaSlice<f32>,
        s: &mut Scratch,
        traffic: &mut DeviceTraffic,
    ) -> Result<CudaSlice<f32>> {
        let g = &*self.gpu;
        let c = &*self.codec;
        let (kc, dim) = (c.n_centroids, c.dim);
        let b = queries.len() as u64;
        if let Some(i8c) = &c.int8 {
            let dim4 = dim.div_ceil(4) * 4;
            let mut q8: Vec<i8> = Vec::with_capacity(t as usize * dim4);
            let mut scales = Vec::with_capacity(t as usize);
            let mut map = Vec::with_capacity(3 * queries.len());
            for q in queries {
                let (codes, sc, max_norm) = crate::int8::quantise_query(q.tokens, dim);
                q8.extend_from_slice(&codes);
                scales.extend_from_slice(&sc);
                // Int8Centroids::scores_and_bytes: the Cauchy-Schwarz bound.
                let bound = max_norm * i8c.max_norm;
                map.extend(byte_map(-bound, bound));
            }
            let words: Vec<i32> = q8
                .chunks_exact(4)
                .map(|w| i32::from_le_bytes([w[0] as u8, w[1] as u8, w[2] as u8, w[3] as u8]))
                .collect();
            let d_q8 = g.upload(&words)?;
            let d_qs = g.upload(&scales)?;
            let d_map = g.upload(&map)?;
            traffic.h2d_bytes += 4 * (words.len() + scales.len() + map.len()) as u64;
            g.launch(
                &g.kernels.centroid_scores_i8,
                grid(
                    u64::from(kc).div_ceil(8),
                    u64::from(t).div_ceil(32),
                    (32, 8),
                    0,
                ),
                "launching centroid_scores_i8",
                &[
                    a(g, &i8c.codes),
                    a(g, &i8c.scales),
                    a(g, &d_q8),
                    a(g, &d_qs),
                    Arg::U32(kc),
                    Arg::U32(t),
                    Arg::U32((dim4 / 4) as u32),
                    a(g, s_cm),
                    a(g, s_tm),
                ],
            )?;
            s.i32s.push(d_q8);
            s.f32s.push(d_qs);
            return Ok(d_map);
        }
        g.launch(
            &g.kernels.centroid_scores,
            grid(
                u64::from(kc).div_ceil(32),
                u64::from(t).div_ceil(32),
                (32, 8),
                0,
            ),
            "launching centroid_scores",
            &[
                a(g, &c.centroids),
                a(g, d_q),
                Arg::U32(kc),
                Arg::U32(t),
                Arg::U32(dim as u32),
                a(g, s_cm),
                a(g, s_tm),
            ],
        )?;
        let d_map = g.zeros::<f32>(3 * b as usize)?;
        g.launch(
            &g.kernels.byte_map_range,
            grid(b, 1, (FLAT_THREADS, 1), 0),
            "launching byte_map_range",
            &[
                a(g, s_cm),
                Arg::U32(kc),
                Arg::U32(t),
                a(g, d_qoff),
                a(g, &d_map),
            ],
        )?;
        Ok(d_map)
    }

    /// Stage 2: probes, candidates, the postings estimate and the prefilter's cut. Returns
    /// the kept ids (`[b, kept_len]`), their counts, and the first-touch keys (`[b, n]`).
    #[allow(clippy::too_many_arguments)]
    fn postings_stage(
        &self,
        queries: &[DeviceQuery<'_>],
        p: &DeviceSearch,
        seg: &SegArgs,
        s_cm: &CudaSlice<f32>,
        s_tm: &CudaSlice<f32>,
        t: u32,
        nq_max: u32,
        d_qoff: &CudaSlice<u32>,
        d_tokq: &CudaSlice<u32>,
        d_scan: &CudaSlice<u8>,
        allow_arg: Arg,
        kept_len: u32,
        n_cands: &CudaSlice<u32>,
        s: &mut Scratch,
    ) -> Result<(CudaSlice<u32>, CudaSlice<u32>, CudaSlice<u32>)> {
        let g = &*self.gpu;
        let kc = self.codec.n_centroids;
        let (n, words) = (self.n_docs, self.words);
        let b = queries.len() as u32;
        let null = Arg::U64(0);
        let pn = p.nprobe.clamp(1, kc.max(1) as usize) as u32;
        let mw = nq_max.div_ceil(32);
        let probes = g.zeros::<u32>(t as usize * pn as usize)?;
        let probe_scores = g.zeros::<f32>(t as usize * pn as usize)?;
        let probe_count = g.zeros::<u32>(t as usize)?;
        let rank = g.zeros::<u32>(t as usize * pn as usize)?;
        let floor = g.zeros::<f32>(t as usize)?;
        let mask = g.zeros::<u32>(b as usize * kc as usize * mw as usize)?;
        let key_inv = g.zeros::<u32>(b as usize * kc as usize)?;
        let bitmap = g.zeros::<u32>(b as usize * words as usize)?;
        let approx = g.zeros::<f32>(b as usize * n as usize)?;
        let touch = g.zeros::<u32>(b as usize * n as usize)?;
        let kept = g.zeros::<u32>(b as usize * kept_len as usize)?;
        let kept_scores = g.zeros::<f32>(b as usize * kept_len as usize)?;
        let kept_count = g.zeros::<u32>(b as usize)?;
        if !queries[0].scan_all {
            g.launch(
                &g.kernels.select_topk,
                grid(u64::from(t), 1, (SELECT_THREADS, 1), 0),
                "launching select_topk (probes)",
                &[
                    a(g, s_tm),
                    Arg::U64(u64::from(kc)),
                    Arg::U64(1),
                    null,
                    Arg::U64(0),
                    null,
                    Arg::U32(kc),
                    Arg::U32(pn),
                    null,
                    Arg::U64(0),
                    null,
                    Arg::U32(0),
                    seg.base,
                    seg.n_seg,
                    a(g, &probes),
                    a(g, &probe_scores),
                    null,
                    Arg::U32(pn),
                    a(g, &probe_count),
                    null,
                ],
            )?;
            g.launch(
                &g.kernels.rank_probes,
                grid(u64::from(t), 1, (FLAT_THREADS, 1), 0),
                "launching rank_probes",
                &[
                    a(g, &probes),
                    a(g, &probe_scores),
                    a(g, &probe_count),
                    Arg::U32(pn),
                    a(g, &rank),
                    a(g, &floor),
                ],
            )?;
            g.launch(
                &g.kernels.probe_tables,
                grid(
                    u64::from(pn).div_ceil(u64::from(FLAT_THREADS)),
                    u64::from(t),
                    (FLAT_THREADS, 1),
                    0,
                ),
                "launching probe_tables",
                &[
                    a(g, &probes),
                    a(g, &rank),
                    a(g, &probe_count),
                    Arg::U32(pn),
                    a(g, d_tokq),
                    a(g, d_qoff),
                    Arg::U32(kc),
                    Arg::U32(mw),
                    a(g, &mask),
                    a(g, &key_inv),
                ],
            )?;
            g.launch(
                &g.kernels.mark_candidates,
                grid(
                    u64::from(t) * u64::from(pn),
                    u64::from(seg.count),
                    (MARK_THREADS, 1),
                    0,
                ),
                "launching mark_candidates",
                &[
                    a(g, &probes),
                    a(g, &probe_count),
                    Arg::U32(pn),
                    a(g, d_tokq),
                    a(g, d_scan),
                    a(g, &self.seg_post_off),
                    a(g, &self.seg_post_docs),
                    a(g, &self.seg_ncent),
                    seg.base,
                    a(g, &bitmap),
                    Arg::U32(words),
                ],
            )?;
        }
        g.launch(
            &g.kernels.postings_estimate,
            grid(
                u64::from(words).div_ceil(u64::from(DOC_WARPS)),
                u64::from(b),
                (32 * DOC_WARPS, 1),
                0,
            ),
            "launching postings_estimate",
            &[
                a(g, &bitmap),
                Arg::U32(words),
                a(g, &self.tomb),
                allow_arg,
                a(g, d_scan),
                a(g, s_cm),
                Arg::U32(t),
                a(g, d_qoff),
                a(g, &floor),
                a(g, &mask),
                a(g, &key_inv),
                Arg::U32(kc),
                Arg::U32(mw),
                seg.base,
                seg.n_seg,
                seg.offsets,
                seg.codes,
                seg.width,
                Arg::U32(n),
                a(g, &approx),
                a(g, &touch),
                a(g, n_cands),
            ],
        )?;
        g.launch(
            &g.kernels.select_topk,
            grid(u64::from(b), 1, (SELECT_THREADS, 1), 0),
            "launching select_topk (prefilter)",
            &[
                a(g, &approx),
                Arg::U64(u64::from(n)),
                Arg::U64(1),
                null,
                Arg::U64(0),
                null,
                Arg::U32(n),
                Arg::U32(kept_len),
                a(g, &touch),
                Arg::U64(u64::from(n)),
                null,
                Arg::U32(0),
                seg.base,
                seg.n_seg,
                a(g, &kept),
                a(g, &kept_scores),
                null,
                Arg::U32(kept_len),
                a(g, &kept_count),
                null,
            ],
        )?;
        s.f32s.extend([probe_scores, floor, approx, kept_scores]);
        s.u32s
            .extend([probes, probe_count, rank, mask, key_inv, bitmap]);
        Ok((kept, kept_count, touch))
    }

    /// Device-memory traffic of one query under a simple access model (see
    /// [`DeviceTraffic::device_bytes_model`]): the centroids and the query's score tables;
    /// the postings estimate's codes; the dense per-document arrays (written once, read by
    /// the selection's passes, about 6 times); the codes of the kept candidates; the codes,
    /// residuals and scales of the survivors; the residual table per survivor token.
    fn bytes_model(
        &self,
        nq: u64,
        d: &DeviceRanked,
        p: &DeviceSearch,
        kept: u32,
        lut: bool,
    ) -> u64 {
        let c = &*self.codec;
        let dim = c.dim as u64;
        let kc = u64::from(c.n_centroids);
        let n = u64::from(self.n_docs);
        let cw = self.segments.first().map_or(2, |s| u64::from(s.code_width));
        let rb = u64::from(c.n_bytes);
        let tokens = |docs: u64| (docs as f64 * self.avg_tokens) as u64;
        let centroids = if c.int8.is_some() {
            kc * dim.div_ceil(4) * 4
        } else {
            kc * dim * 4
        };
        let tables = centroids + 9 * kc * nq;
        let per_token = cw + rb + 2 + if lut { 4 * (nq * rb * 2).min(64) } else { 0 };
        let exact = tokens(d.docs.len() as u64) * per_token;
        if p.exhaustive {
            return tables + tokens(n) * per_token;
        }
        let cands = u64::from(d.candidates);
        tables + tokens(cands) * cw + 6 * 8 * n + tokens(u64::from(kept)) * cw + exact
    }
}

/// The snapshot's segment table as kernel arguments.
struct SegArgs {
    count: u32,
    base: Arg,
    n_seg: Arg,
    offsets: Arg,
    codes: Arg,
    width: Arg,
    resid: Arg,
    scales: Arg,
}

impl SegArgs {
    fn new(g: &Gpu, idx: &DeviceIndex) -> Self {
        let count = idx.segments.len() as u32;
        SegArgs {
            count,
            base: a(g, &idx.seg_base),
            n_seg: Arg::U32(count),
            offsets: a(g, &idx.seg_offsets),
            codes: a(g, &idx.seg_codes),
            width: a(g, &idx.seg_code_width),
            resid: a(g, &idx.seg_resid),
            scales: a(g, &idx.seg_scales),
        }
    }
}
