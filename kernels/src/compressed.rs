//! Exact MaxSim over compressed tokens, without materialising them.
//!
//! A stored token is `x = centroid + r` with `r[d] = weight[d][bucket_d]`, so for a query
//! token `q`: `q · x = q · centroid + q · r`. The first term is a row of the query ×
//! centroid score table that the search computes anyway; the second is a sum over the
//! packed residual's bytes of "this byte's contribution to `q`", which depends only on the
//! byte's position and value. [`QueryLut`] tabulates those contributions once per query
//! (`[packed_len, 256, stride]` floats), so scoring a token costs one table row per byte
//! instead of decompressing `dim` values and a `dim`-long dot product per query token.
//!
//! The result equals MaxSim over the decompressed vectors up to float rounding (the terms
//! are summed in a different order); tests check it against [`crate::reference::maxsim`].

use crate::residual::ResidualCodec;

/// Query tokens scored together: one AVX-512 register (two AVX2 registers) of `f32`.
pub const LANES: usize = 16;

/// Per-query residual contribution table for one codec.
#[derive(Clone, Debug, Default)]
pub struct QueryLut {
    nq: usize,
    stride: usize,
    n_bytes: usize,
    /// `[n_bytes, 256, stride]`: contribution of byte value `v` at position `p` to each
    /// query token (zero for the padding tokens).
    rows: Vec<f32>,
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
    /// table, so the per-query megabyte is neither allocated nor page-faulted again.
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
        let rows = &mut self.rows;
        rows.clear();
        rows.resize(n_bytes * 256 * stride, 0.0);
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
        if per_byte >= 2 {
            // A byte's contribution is its low nibble's plus its high nibble's: two tables
            // of 16 rows, then one add per byte value, instead of `per_byte` products.
            let half = per_byte / 2;
            let mut nibbles = vec![0f32; 32 * stride];
            for (p, table) in rows.chunks_exact_mut(256 * stride).enumerate() {
                nibbles.fill(0.0);
                let (low, high) = nibbles.split_at_mut(16 * stride);
                for u in 0..16 {
                    add(&mut low[u * stride..(u + 1) * stride], p, u, 0..half);
                    add(
                        &mut high[u * stride..(u + 1) * stride],
                        p,
                        u << 4,
                        half..per_byte,
                    );
                }
                for (v, row) in table.chunks_exact_mut(stride).enumerate() {
                    let (lo, hi) = (v & 15, v >> 4);
                    let a = &low[lo * stride..(lo + 1) * stride];
                    let b = &high[hi * stride..(hi + 1) * stride];
                    for ((r, &x), &y) in row.iter_mut().zip(a).zip(b) {
                        *r = x + y;
                    }
                }
            }
        } else {
            for (pv, row) in rows.chunks_exact_mut(stride).enumerate() {
                add(row, pv / 256, pv % 256, 0..per_byte);
            }
        }
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
        codec.packed_len() * 256 * padded_tokens(nq) * std::mem::size_of::<f32>()
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

/// Tokens scored together: their accumulators (`TOKEN_BLOCK x LANES` floats, 4 KiB) stay in
/// L1 while one byte position's slice of the table is streamed over them.
const TOKEN_BLOCK: usize = 256;

/// The portable body; `simd` compiles it once per instruction set and dispatches.
///
/// Loops run byte position outermost within a block of tokens: each position reads a
/// 16 KiB slice of the table, which stays in L1 across the block, and the per-token
/// accumulators are independent, so the adds do not form one long dependency chain.
#[inline(always)]
pub(crate) fn maxsim_compressed_body<C: Copy + Into<u32>>(
    lut: &QueryLut,
    centroid_scores: &[f32],
    codes: &[C],
    packed: &[u8],
    scales: Option<&[half::f16]>,
) -> f32 {
    let stride = lut.stride;
    let nb = lut.n_bytes;
    let mut total = 0f32;
    let mut acc = [[0f32; LANES]; TOKEN_BLOCK];
    let mut block_scales = [1f32; TOKEN_BLOCK];
    for chunk in 0..stride / LANES {
        let lane0 = chunk * LANES;
        let mut best = [f32::NEG_INFINITY; LANES];
        for (b, (block, bytes)) in codes
            .chunks(TOKEN_BLOCK)
            .zip(packed.chunks(TOKEN_BLOCK * nb))
            .enumerate()
        {
            let acc = &mut acc[..block.len()];
            if let Some(s) = scales {
                let s = &s[b * TOKEN_BLOCK..b * TOKEN_BLOCK + block.len()];
                for (d, v) in block_scales.iter_mut().zip(s) {
                    *d = v.to_f32();
                }
            }
            for (a, &code) in acc.iter_mut().zip(block) {
                let c: u32 = code.into();
                let start = c as usize * stride + lane0;
                if let Ok(base) = <&[f32; LANES]>::try_from(&centroid_scores[start..start + LANES])
                {
                    *a = *base;
                }
            }
            for p in 0..nb {
                let table = &lut.rows[p * 256 * stride..(p + 1) * 256 * stride];
                for (a, token) in acc.iter_mut().zip(bytes.chunks_exact(nb)) {
                    let off = token[p] as usize * stride + lane0;
                    if let Ok(row) = <&[f32; LANES]>::try_from(&table[off..off + LANES]) {
                        for l in 0..LANES {
                            a[l] += row[l];
                        }
                    }
                }
            }
            for (a, &sc) in acc.iter().zip(&block_scales) {
                for l in 0..LANES {
                    let v = a[l] * sc;
                    best[l] = if v > best[l] { v } else { best[l] };
                }
            }
        }
        // Padding lanes score 0 for every token (zero query rows), so they add nothing.
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
}
