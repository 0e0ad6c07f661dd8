//! Approximate late-interaction scores from centroid codes alone, on 8-bit scores.
//!
//! The candidate stage ranks thousands of documents by `sum_i max_t S[i, code_t]`, where
//! `S` is the query × centroid score table. Quantising `S` to bytes (one affine map for the
//! whole table) makes each token one 32-byte row of a table a quarter the size, and the
//! per-token step one packed byte max; the estimate only chooses which documents are
//! scored exactly, so a rounding error below half a step per query token is harmless.

/// Query tokens per byte-max step: one SSE register of bytes. Equal to [`crate::LANES`], so
/// the byte table has the float table's row length and is quantised in one flat pass.
const BYTE_LANES: usize = crate::LANES;

/// The query × centroid score table quantised to bytes, `[n_centroids, stride]`.
#[derive(Clone, Debug, Default)]
pub struct CentroidScores8 {
    nq: usize,
    stride: usize,
    rows: crate::AlignedVec<u8>,
    lo: f32,
    step: f32,
}

impl CentroidScores8 {
    /// Quantises `scores` (`[n_centroids, stride]`, `stride` a multiple of
    /// [`crate::LANES`], of which the first `nq` columns are real query tokens and the
    /// rest zero) to bytes: `round((s - lo) / step)`, with `lo..=lo + 255 step` covering
    /// every value.
    pub fn new(scores: &[f32], stride: usize, nq: usize) -> Self {
        let mut t = CentroidScores8::default();
        t.rebuild(scores, stride, nq);
        t
    }

    /// Like [`CentroidScores8::new`], reusing this table's memory.
    pub fn rebuild(&mut self, scores: &[f32], stride: usize, nq: usize) {
        // The zero padding columns may widen the range slightly; that costs a little
        // resolution and keeps both passes flat, vectorisable loops.
        let (lo, hi) = crate::simd::min_max(scores);
        let (rows, lo, inv) = self.prepare(scores.len(), stride, nq, lo, hi);
        crate::simd::quantize_bytes(scores, lo, inv, rows);
    }

    /// Sizes the table for `len` bytes (`[len / stride, stride]`) to be filled by the
    /// caller with `round((s - lo) * inv)` saturating to `0..=255`, over `lo..=hi` (a
    /// range known before the scores, e.g. a bound on them); returns the rows, `lo` and
    /// `inv`.
    pub(crate) fn prepare(
        &mut self,
        len: usize,
        stride: usize,
        nq: usize,
        lo: f32,
        hi: f32,
    ) -> (&mut [u8], f32, f32) {
        debug_assert_eq!(stride % BYTE_LANES, 0);
        let step = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
        self.rows.resize(len, 0);
        self.nq = nq;
        self.stride = stride;
        self.lo = lo;
        self.step = step;
        (&mut self.rows, lo, 1.0 / step)
    }

    /// The byte of score `v`, as the table's rows were made: scores above `v` have bytes at
    /// least this (the map is monotone), so a row whose bytes are all below it holds no
    /// score above `v`.
    pub fn quantize(&self, v: f32) -> u8 {
        let mut b = [0u8];
        quantize_bytes_body(&[v], self.lo, 1.0 / self.step, &mut b);
        b[0]
    }

    /// Row `c` (`stride` bytes); empty past the last row.
    pub fn row(&self, c: usize) -> &[u8] {
        self.rows
            .get(c * self.stride..(c + 1) * self.stride)
            .unwrap_or(&[])
    }

    /// The quantised rows and the map's `(lo, step)` (for tests of the tables' makers).
    #[cfg(test)]
    pub(crate) fn parts(&self) -> (&[u8], f32, f32) {
        (&self.rows, self.lo, self.step)
    }

    /// Estimated MaxSim of a document from its tokens' centroid codes: the sum over query
    /// tokens of the best quantised score, mapped back to the score scale. Within
    /// `nq * step / 2` of the centroid-level MaxSim; 0 for a document without tokens.
    pub fn estimate<C: Copy + Into<u32>>(&self, codes: &[C]) -> f32 {
        if codes.is_empty() {
            return 0.0;
        }
        let sum = crate::simd::max_bytes_sum(self, codes);
        sum as f32 * self.step + self.nq as f32 * self.lo
    }
}

/// `(min, max)` of `values` (`(inf, -inf)` when empty); comparisons rather than `f32::min`
/// so the loop vectorises (no NaN can occur in a score table of finite vectors).
#[inline(always)]
pub(crate) fn min_max_body(values: &[f32]) -> (f32, f32) {
    let mut lo = [f32::INFINITY; BYTE_LANES];
    let mut hi = [f32::NEG_INFINITY; BYTE_LANES];
    let chunks = values.chunks_exact(BYTE_LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..BYTE_LANES {
            lo[l] = if c[l] < lo[l] { c[l] } else { lo[l] };
            hi[l] = if c[l] > hi[l] { c[l] } else { hi[l] };
        }
    }
    let fold = |a: &[f32], init: f32, f: fn(f32, f32) -> f32| a.iter().copied().fold(init, f);
    let lo = fold(tail, fold(&lo, f32::INFINITY, f32::min), f32::min);
    let hi = fold(tail, fold(&hi, f32::NEG_INFINITY, f32::max), f32::max);
    (lo, hi)
}

/// `dst[j] = round((src[j] - lo) * inv)`, saturating to `0..=255`.
#[inline(always)]
pub(crate) fn quantize_bytes_body(src: &[f32], lo: f32, inv: f32, dst: &mut [u8]) {
    for (d, &v) in dst.iter_mut().zip(src) {
        // Adding one half and truncating rounds to nearest for values at least `lo`;
        // clamping to `0..=255` first (a bound-derived `lo` may sit a rounding error above
        // the least value) lets the conversion vectorise (`f32::round` is a library call).
        let x = (v - lo) * inv + 0.5;
        let x = if x < 255.0 { x } else { 255.0 };
        let x = if x > 0.0 { x } else { 0.0 };
        *d = (x as i32) as u8;
    }
}

/// The portable body; `simd` compiles it once per instruction set and dispatches.
///
/// Rows of 16 to 64 query tokens take one whole row per token in one pass: a register's
/// worth of byte maxima per load, and one bounds check per token. (Measured against the
/// general body's pass per group of 16 tokens, which loads each token's code and a 16-byte
/// slice once per group: `estimate_timing` below.)
#[inline(always)]
pub(crate) fn max_bytes_sum_body<C: Copy + Into<u32>>(t: &CentroidScores8, codes: &[C]) -> u32 {
    match t.stride {
        16 => whole_rows::<16, C>(t, codes),
        32 => whole_rows::<32, C>(t, codes),
        48 => whole_rows::<48, C>(t, codes),
        64 => whole_rows::<64, C>(t, codes),
        _ => general_body(t, codes),
    }
}

/// Rows of exactly `W` bytes. A code past the last row adds nothing (codes are validated
/// when a segment is opened, so none is).
#[inline(always)]
fn whole_rows<const W: usize, C: Copy + Into<u32>>(t: &CentroidScores8, codes: &[C]) -> u32 {
    let (rows, _) = t.rows.as_chunks::<W>();
    let mut best = [0u8; W];
    for &code in codes {
        if let Some(row) = rows.get(code.into() as usize) {
            for l in 0..W {
                best[l] = best[l].max(row[l]);
            }
        }
    }
    best[..t.nq.min(W)].iter().map(|&b| u32::from(b)).sum()
}

/// Any row length: a pass over the codes per group of [`BYTE_LANES`] query tokens.
#[inline(always)]
fn general_body<C: Copy + Into<u32>>(t: &CentroidScores8, codes: &[C]) -> u32 {
    let mut total = 0u32;
    for lane0 in (0..t.stride).step_by(BYTE_LANES) {
        let mut best = [0u8; BYTE_LANES];
        for &code in codes {
            let start = code.into() as usize * t.stride + lane0;
            if let Some(row) = t.rows.get(start..start + BYTE_LANES) {
                for l in 0..BYTE_LANES {
                    best[l] = best[l].max(row[l]);
                }
            }
        }
        let real = t.nq.saturating_sub(lane0).min(BYTE_LANES);
        total += best[..real].iter().map(|&b| u32::from(b)).sum::<u32>();
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn estimate_is_within_half_a_step_per_query_token_of_centroid_maxsim(
            nq in 1usize..70,
            kc in 1usize..50,
            codes in prop::collection::vec(0u32..50, 0..40),
            values in prop::collection::vec(-2.0f32..2.0, 70 * 50),
        ) {
            let stride = nq.div_ceil(crate::LANES) * crate::LANES;
            let scores: Vec<f32> = (0..kc * stride)
                .map(|j| if j % stride < nq { values[j % values.len()] } else { 0.0 })
                .collect();
            let codes: Vec<u32> = codes.into_iter().map(|c| c % kc as u32).collect();
            let t = CentroidScores8::new(&scores, stride, nq);
            let exact: f32 = if codes.is_empty() {
                0.0
            } else {
                (0..nq)
                    .map(|i| codes.iter().map(|&c| scores[c as usize * stride + i]).fold(f32::NEG_INFINITY, f32::max))
                    .sum()
            };
            let got = t.estimate(&codes);
            let bound = nq as f32 * t.step * 0.5 + 1e-3 * (1.0 + exact.abs());
            prop_assert!((got - exact).abs() <= bound, "got {got}, exact {exact}, bound {bound}");
            let codes16: Vec<u16> = codes.iter().map(|&c| c as u16).collect();
            prop_assert_eq!(got, t.estimate(&codes16));
            // The dispatched (AVX2) path, the portable body and the general body agree
            // exactly, whichever row length chose the body.
            let sum = crate::simd::max_bytes_sum(&t, &codes);
            prop_assert_eq!(sum, max_bytes_sum_body(&t, &codes));
            prop_assert_eq!(sum, general_body(&t, &codes));
        }
    }

    /// `cargo test --release -p tessera-kernels --lib estimate_timing -- --ignored --nocapture`
    #[test]
    #[ignore = "timing, not a check"]
    fn estimate_timing() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let (nq, kc, nd, ndocs) = (32usize, 65536usize, 94usize, 6250usize);
        let stride = nq.div_ceil(crate::LANES) * crate::LANES;
        let scores: Vec<f32> = (0..kc * stride)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let t = CentroidScores8::new(&scores, stride, nq);
        let docs: Vec<Vec<u16>> = (0..ndocs)
            .map(|_| {
                (0..nd)
                    .map(|_| rng.random_range(0..kc as u32) as u16)
                    .collect()
            })
            .collect();
        let (mut whole, mut general) = (f64::MAX, f64::MAX);
        for _ in 0..20 {
            let s = std::time::Instant::now();
            let a: u32 = docs.iter().map(|d| crate::simd::max_bytes_sum(&t, d)).sum();
            whole = whole.min(s.elapsed().as_secs_f64());
            let s = std::time::Instant::now();
            let b: u32 = docs.iter().map(|d| general_body(&t, d)).sum();
            general = general.min(s.elapsed().as_secs_f64());
            assert_eq!(a, b);
        }
        println!(
            "{ndocs} documents of {nd} tokens, {nq} query tokens, {kc} centroids: whole rows {:.3} ms, a pass per 16 tokens {:.3} ms (fastest of 20)",
            whole * 1e3,
            general * 1e3
        );
    }
}
