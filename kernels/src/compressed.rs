//! Exact MaxSim over compressed tokens, without materialising them.
//!
//! A stored token is `x = centroid + r` with `r[d] = weight[d][bucket_d]`, so for a query
//! token `q`: `q · x = q · centroid + q · r`. The first term is a row of the query ×
//! centroid score table that the search computes anyway; the second is a sum over the
//! packed residual's bytes of "this byte's contribution to `q`", which depends only on the
//! byte's position and value. [`QueryLut`] tabulates those contributions once per query,
//! per half byte when a byte holds two or more dimensions (`[2 packed_len, 16, stride]`
//! floats: 128 KiB at dim 128 and 32 query tokens, so it stays in L2 and each position's
//! 16 rows in L1) and per byte at 8 bits (`[packed_len, 256, stride]`). Scoring a token
//! then costs one or two table rows per byte instead of decompressing `dim` values and a
//! `dim`-long dot product per query token.
//!
//! The result equals MaxSim over the decompressed vectors up to float rounding (the terms
//! are summed in a different order); tests check it against [`crate::reference::maxsim`].

use crate::aligned::AlignedVec;
use crate::residual::ResidualCodec;

/// Query tokens scored together: one AVX-512 register (two AVX2 registers) of `f32`.
pub const LANES: usize = 16;

/// Per-query residual contribution table for one codec.
#[derive(Clone, Debug, Default)]
pub struct QueryLut {
    nq: usize,
    stride: usize,
    n_bytes: usize,
    /// Whether `rows` holds half-byte tables (2 or more dimensions per byte) or whole-byte
    /// tables (8 bits).
    nibbles: bool,
    /// Half-byte tables: `[2 n_bytes, 16, stride]`, the contribution of the low (row `2p`)
    /// or high (row `2p + 1`) half of byte `p` having value `u`. Whole-byte tables:
    /// `[n_bytes, 256, stride]`. Zero for padding tokens and for dimensions past `dim`.
    rows: AlignedVec<f32>,
}

/// Query tokens rounded up to whole [`LANES`]: the row length of [`QueryLut`] and of the
/// centroid score table it is used with.
pub fn padded_tokens(nq: usize) -> usize {
    nq.div_ceil(LANES) * LANES
}

impl QueryLut {
    /// Tabulates `query` (`[nq, dim]`, row-major) against `codec`'s residual weights.
    pub fn new(codec: &ResidualCodec, query: &[f32]) -> Self {
        let mut lut = QueryLut::default();
        lut.rebuild(codec, query);
        lut
    }

    /// Like [`QueryLut::new`], reusing this table's memory: a search thread keeps one
    /// table, so the per-query table is neither allocated nor page-faulted again.
    pub fn rebuild(&mut self, codec: &ResidualCodec, query: &[f32]) {
        let dim = codec.dim();
        let nq = query.len() / dim.max(1);
        let stride = padded_tokens(nq);
        let (byte_table, per_byte) = codec.byte_weights();
        let n_bytes = codec.packed_len();
        // Query transposed to `[dim, stride]`, so each residual dimension adds one
        // contiguous, vectorisable row.
        let mut qt = vec![0f32; dim * stride];
        for (i, q) in query.chunks_exact(dim).enumerate() {
            for (d, &v) in q.iter().enumerate() {
                qt[d * stride + i] = v;
            }
        }
        let nibbles = per_byte >= 2;
        let rows = &mut self.rows;
        rows.clear();
        rows.resize(Self::table_len(n_bytes, per_byte, stride), 0.0);
        // Adds `w * q_d` for every dimension `d` of byte `p` in `dims` (weights read at
        // byte value `v`) to `row`.
        let add = |row: &mut [f32], p: usize, v: usize, dims: std::ops::Range<usize>| {
            for l in dims {
                let d = p * per_byte + l;
                if d >= dim {
                    break;
                }
                let w = byte_table[(p * 256 + v) * per_byte + l];
                for (r, &q) in row.iter_mut().zip(&qt[d * stride..(d + 1) * stride]) {
                    *r += w * q;
                }
            }
        };
        if nibbles {
            let half = per_byte / 2;
            for (p, table) in rows.chunks_exact_mut(32 * stride).enumerate() {
                let (low, high) = table.split_at_mut(16 * stride);
                for u in 0..16 {
                    add(&mut low[u * stride..(u + 1) * stride], p, u, 0..half);
                    add(
                        &mut high[u * stride..(u + 1) * stride],
                        p,
                        u << 4,
                        half..per_byte,
                    );
                }
            }
        } else {
            for (pv, row) in rows.chunks_exact_mut(stride).enumerate() {
                add(row, pv / 256, pv % 256, 0..per_byte);
            }
        }
        self.nibbles = nibbles;
        self.nq = nq;
        self.stride = stride;
        self.n_bytes = n_bytes;
    }

    /// Query tokens (without padding).
    pub fn query_tokens(&self) -> usize {
        self.nq
    }

    /// Row length: query tokens rounded up to whole [`LANES`].
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Bytes of the table; callers fall back to decompression when it would not stay in
    /// cache.
    pub fn table_bytes(codec: &ResidualCodec, nq: usize) -> usize {
        let (_, per_byte) = codec.byte_weights();
        Self::table_len(codec.packed_len(), per_byte, padded_tokens(nq))
            * std::mem::size_of::<f32>()
    }

    /// Floats of the table for `n_bytes` packed bytes of `per_byte` dimensions each.
    fn table_len(n_bytes: usize, per_byte: usize, stride: usize) -> usize {
        if per_byte >= 2 {
            n_bytes * 2 * 16 * stride
        } else {
            n_bytes * 256 * stride
        }
    }

    /// MaxSim of the query against one document given as its tokens' centroid `codes` and
    /// `packed` residuals (`codes.len() * packed_len` bytes), each token scaled by its
    /// entry of `scales` when given (one per token). `centroid_scores` is the
    /// `[n_centroids, stride]` table of query × centroid dot products, padding columns
    /// zero. A document with no tokens scores 0.
    pub fn maxsim<C: Copy + Into<u32>>(
        &self,
        centroid_scores: &[f32],
        codes: &[C],
        packed: &[u8],
        scales: Option<&[half::f16]>,
    ) -> f32 {
        if codes.is_empty() {
            return 0.0;
        }
        crate::simd::maxsim_compressed(self, centroid_scores, codes, packed, scales)
    }
}

/// The portable body; `simd` compiles it once per instruction set and dispatches.
///
/// The common row lengths (16 to 64 query tokens) with half-byte tables get a fixed-length
/// body in which every table index is provably in bounds, so a byte costs its two row
/// loads and adds and little else; other shapes take the general body.
#[inline(always)]
pub(crate) fn maxsim_compressed_body<C: Copy + Into<u32>>(
    lut: &QueryLut,
    centroid_scores: &[f32],
    codes: &[C],
    packed: &[u8],
    scales: Option<&[half::f16]>,
) -> f32 {
    if lut.nibbles {
        match lut.stride {
            16 => return nibble_body::<1, C>(lut, centroid_scores, codes, packed, scales),
            32 => return nibble_body::<2, C>(lut, centroid_scores, codes, packed, scales),
            48 => return nibble_body::<3, C>(lut, centroid_scores, codes, packed, scales),
            64 => return nibble_body::<4, C>(lut, centroid_scores, codes, packed, scales),
            _ => {}
        }
    }
    general_body(lut, centroid_scores, codes, packed, scales)
}

/// Half-byte tables with rows of exactly `K` x [`LANES`] floats.
///
/// Token-major: the token's accumulators stay in registers while its bytes' two rows are
/// added; the whole table (128 KiB at dim 128 and 32 query tokens) stays in L2. (Measured
/// against byte-position-major blocks and against split even/odd sums, which LLVM compiled
/// to slower code: `PROBE=rerank cargo bench -p tessera-kernels --bench gemm_probe`.)
#[inline(always)]
fn nibble_body<const K: usize, C: Copy + Into<u32>>(
    lut: &QueryLut,
    centroid_scores: &[f32],
    codes: &[C],
    packed: &[u8],
    scales: Option<&[half::f16]>,
) -> f32 {
    type Lanes = [f32; LANES];
    let (lanes, _) = lut.rows.as_chunks::<LANES>();
    let (rows, _) = lanes.as_chunks::<K>();
    // One `[32, K]` block of lane groups per byte position: 16 low-half rows, then 16
    // high-half rows.
    let (positions, _) = rows.as_chunks::<32>();
    let (base_lanes, _) = centroid_scores.as_chunks::<LANES>();
    let (base, _) = base_lanes.as_chunks::<K>();
    let mut best: [Lanes; K] = [[f32::NEG_INFINITY; LANES]; K];
    for (t, (&code, token)) in codes
        .iter()
        .zip(packed.chunks_exact(lut.n_bytes))
        .enumerate()
    {
        let c: u32 = code.into();
        let mut acc: [Lanes; K] = base.get(c as usize).copied().unwrap_or([[0f32; LANES]; K]);
        // `u8 & 15` and `16 + (u8 >> 4)` index 32-row arrays: no bounds checks.
        for (tab, &byte) in positions.iter().zip(token) {
            let lo = &tab[(byte & 15) as usize];
            let hi = &tab[16 + (byte >> 4) as usize];
            for k in 0..K {
                for l in 0..LANES {
                    acc[k][l] += lo[k][l] + hi[k][l];
                }
            }
        }
        let sc = scales.map_or(1.0, |s| s[t].to_f32());
        for k in 0..K {
            for l in 0..LANES {
                let v = acc[k][l] * sc;
                best[k][l] = if v > best[k][l] { v } else { best[k][l] };
            }
        }
    }
    // Padding lanes score 0 for every token (zero query rows), so they add nothing.
    best.iter().flatten().take(lut.nq).sum()
}

/// Any row length and both table kinds, [`LANES`] query tokens at a time.
#[inline(always)]
fn general_body<C: Copy + Into<u32>>(
    lut: &QueryLut,
    centroid_scores: &[f32],
    codes: &[C],
    packed: &[u8],
    scales: Option<&[half::f16]>,
) -> f32 {
    let stride = lut.stride;
    let nb = lut.n_bytes;
    let mut total = 0f32;
    for chunk in 0..stride / LANES {
        let lane0 = chunk * LANES;
        let mut best = [f32::NEG_INFINITY; LANES];
        for (t, (&code, token)) in codes.iter().zip(packed.chunks_exact(nb)).enumerate() {
            let c: u32 = code.into();
            let start = c as usize * stride + lane0;
            let mut acc = [0f32; LANES];
            if let Ok(base) = <&[f32; LANES]>::try_from(&centroid_scores[start..start + LANES]) {
                acc = *base;
            }
            if lut.nibbles {
                for (tables, &byte) in lut.rows.chunks_exact(32 * stride).zip(token) {
                    let lo = (byte & 15) as usize * stride + lane0;
                    let hi = (16 + (byte >> 4) as usize) * stride + lane0;
                    if let (Ok(a), Ok(b)) = (
                        <&[f32; LANES]>::try_from(&tables[lo..lo + LANES]),
                        <&[f32; LANES]>::try_from(&tables[hi..hi + LANES]),
                    ) {
                        for l in 0..LANES {
                            acc[l] += a[l] + b[l];
                        }
                    }
                }
            } else {
                for (table, &byte) in lut.rows.chunks_exact(256 * stride).zip(token) {
                    let off = byte as usize * stride + lane0;
                    if let Ok(row) = <&[f32; LANES]>::try_from(&table[off..off + LANES]) {
                        for l in 0..LANES {
                            acc[l] += row[l];
                        }
                    }
                }
            }
            let sc = scales.map_or(1.0, |s| s[t].to_f32());
            for l in 0..LANES {
                let v = acc[l] * sc;
                best[l] = if v > best[l] { v } else { best[l] };
            }
        }
        let real = lut.nq.saturating_sub(lane0).min(LANES);
        total += best[..real].iter().sum::<f32>();
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{matmul_nt, reference};
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};

    proptest! {
        #[test]
        fn compressed_maxsim_equals_maxsim_of_decompressed_tokens(
            dim in 1usize..70,
            nbits in prop::sample::select(vec![1u32, 2, 4, 8]),
            nq in 1usize..40,
            nd in 1usize..30,
            kc in 1usize..20,
            seed in any::<u64>(),
        ) {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let (cutoffs, weights) =
                crate::residual::tests::random_quantiser(&mut rng, dim, nbits, 0.3);
            let codec = ResidualCodec::new(dim, nbits, &cutoffs, &weights);
            let centroids: Vec<f32> = (0..kc * dim).map(|_| rng.random_range(-1.0..1.0)).collect();
            let query: Vec<f32> = (0..nq * dim).map(|_| rng.random_range(-1.0..1.0)).collect();
            let codes: Vec<u32> = (0..nd).map(|_| rng.random_range(0..kc as u32)).collect();
            let mut packed = vec![0u8; nd * codec.packed_len()];
            for b in packed.iter_mut() {
                *b = rng.random();
            }
            let scales: Vec<half::f16> = (0..nd).map(|_| half::f16::from_f32(rng.random_range(0.5..1.5))).collect();
            // Plain path: decompress and scale every token, then brute-force MaxSim.
            let mut doc = vec![0f32; nd * dim];
            for (t, &c) in codes.iter().enumerate() {
                let pl = codec.packed_len();
                let row = &mut doc[t * dim..(t + 1) * dim];
                codec.decode(
                    &centroids[c as usize * dim..(c as usize + 1) * dim],
                    &packed[t * pl..(t + 1) * pl],
                    row,
                );
                row.iter_mut().for_each(|v| *v *= scales[t].to_f32());
            }
            let expected = reference::maxsim(&query, &doc, dim);

            let lut = QueryLut::new(&codec, &query);
            let mut padded = query.clone();
            padded.resize(lut.stride() * dim, 0.0);
            let mut table = vec![0f32; kc * lut.stride()];
            matmul_nt(&centroids, &padded, dim, &mut table, 1);
            let got = lut.maxsim(&table, &codes, &packed, Some(&scales));
            prop_assert!((got - expected).abs() <= 1e-4 * (1.0 + expected.abs()), "got {got}, expected {expected}");
            let codes16: Vec<u16> = codes.iter().map(|&c| c as u16).collect();
            prop_assert_eq!(got, lut.maxsim(&table, &codes16, &packed, Some(&scales)));
            // Without scales, the unscaled reconstruction.
            let unit = vec![half::f16::ONE; nd];
            prop_assert_eq!(lut.maxsim(&table, &codes, &packed, None), lut.maxsim(&table, &codes, &packed, Some(&unit)));
        }
    }

    /// What a misaligned residual table costs the exact stage (see `aligned.rs`):
    /// `cargo test --release -p tessera-kernels --lib lut_alignment_timing -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing, not a check"]
    fn lut_alignment_timing() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (dim, nq, nd, kc, ndocs) = (128usize, 32usize, 96usize, 65536usize, 400usize);
        let (cutoffs, weights) = crate::residual::tests::random_quantiser(&mut rng, dim, 2, 0.3);
        let codec = ResidualCodec::new(dim, 2, &cutoffs, &weights);
        let query: Vec<f32> = (0..nq * dim).map(|_| rng.random_range(-1.0..1.0)).collect();
        let lut = QueryLut::new(&codec, &query);
        let table: Vec<f32> = (0..kc * lut.stride())
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let docs: Vec<(Vec<u16>, Vec<u8>)> = (0..ndocs)
            .map(|_| {
                let codes = (0..nd)
                    .map(|_| rng.random_range(0..kc as u32) as u16)
                    .collect();
                let packed = (0..nd * codec.packed_len()).map(|_| rng.random()).collect();
                (codes, packed)
            })
            .collect();
        // Starts 0, 16, 32 and 48 bytes past a cache line.
        let luts: Vec<QueryLut> = (0..4)
            .map(|skip| QueryLut {
                rows: AlignedVec::misaligned(&lut.rows, 4 * skip),
                ..lut.clone()
            })
            .collect();
        // The centroid score table too: aligned, and 16 bytes past a line.
        let tables = [
            AlignedVec::misaligned(&table, 0),
            AlignedVec::misaligned(&table, 4),
        ];
        let mut best = [[f64::MAX; 4]; 2];
        for _round in 0..30 {
            for (bt, table) in best.iter_mut().zip(&tables) {
                for (b, l) in bt.iter_mut().zip(&luts) {
                    let t = std::time::Instant::now();
                    let mut acc = 0f32;
                    for (c, p) in &docs {
                        acc += l.maxsim(table, c, p, None);
                    }
                    std::hint::black_box(acc);
                    *b = b.min(t.elapsed().as_secs_f64() * 1e6 / ndocs as f64);
                }
            }
        }
        for (bt, at) in best.iter().zip([0, 16]) {
            for (skip, b) in bt.iter().enumerate() {
                println!(
                    "score table {at:2} and residual table {:2} bytes past a line: fastest {b:.2} us per document",
                    16 * skip
                );
            }
        }
    }
}
