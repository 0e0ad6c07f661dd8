//! Query × centroid scores in 8-bit integers: the search's first stage, on a quarter of the
//! bytes and a quarter of the instructions of `f32`.
//!
//! Every query scores every centroid (65,536 at 400K documents of 100 tokens): `f32`
//! centroids are 32 MiB at dim 128, read from memory on every query, and the products are
//! 268M multiply-adds for 32 query tokens. Stored as `i8`, the centroids are 8 MiB, and one
//! VNNI instruction (`vpdpbusd`) does 64 multiply-adds of unsigned by signed bytes into 16
//! `i32` sums.
//!
//! **Quantisation.** Centroid `c` is stored as `c8 = round(c / a)` with `a = max_d |c_d| /
//! 127` (so `c8` is in `-127..=127`); query token `q` likewise as `q8 = round(q / b)`, `b =
//! max_d |q_d| / 127`. An all-zero vector gets scale 0 and zero codes. The score is
//! `a b (q8 · c8)`, with `q8 · c8` an exact integer.
//!
//! **Error bound.** With `q_d = b q8_d + e_d` and `c_d = a c8_d + f_d`, `|e_d| <= b / 2`,
//! `|f_d| <= a / 2`:
//! `q · c - a b (q8 · c8) = sum_d (b q8_d f_d + a c8_d e_d + e_d f_d)`, and since
//! `|b q8_d| <= |q_d| + b / 2` (and likewise for `c`),
//! `|q · c - a b (q8 · c8)| <= (a |q|_1 + b |c|_1) / 2 + 3 dim a b / 4`
//! ([`score_error_bound`]). For unit vectors at dim 128 this is about 1e-3 in the worst case
//! and far less in practice (the errors are independent and of both signs); the scores only
//! choose probes, rank candidates and seed the compressed estimates, and the refine stage
//! re-scores the final candidates in full precision.
//!
//! **Unsigned by signed.** `vpdpbusd` multiplies unsigned bytes by signed ones, so the query
//! is stored shifted, `u = q8 + 128` (in `1..=255`), and `u · c8 = q8 · c8 + 128 sum_d
//! c8_d`: the centroid's code sum, kept beside it, removes the shift. Padding query tokens
//! (zero rows up to whole [`LANES`]) have `q8 = 0` and scale 0 and score exactly 0.
//!
//! **Same answers on every path.** The integer sums are exact, so the AVX-512 VNNI, AVX-VNNI
//! and portable paths agree bit for bit: each converts the same integer to `f32` and
//! multiplies it by the same `a * b` (no fused multiply-add). `|q8 · c8| <= 127^2 dim` fits
//! an `i32` for any `dim` below 133,000.
//!
//! **Layout.** Centroid codes are `[n, dim4]` (`dim4` = `dim` rounded up to 4, zero
//! padded), so 4 consecutive bytes are one broadcast operand. The query is packed per group
//! of 16 tokens as `[dim4 / 4][16 tokens][4 bytes]`: one 64-byte load holds 4 dimensions
//! of 16 tokens, lane `l` the dimensions of token `l`, which is the operand shape of
//! `vpdpbusd` (AVX-VNNI takes it as two 32-byte halves). A block of [`BLOCK`] centroids
//! is scored against up to 4 groups at a time with every sum in a register.
//!
//! Why `unsafe` is allowed here: the vector paths are `#[target_feature]` functions, unsafe
//! to call unless the CPU has the features (each call site detects them first), and their
//! loads and stores go through raw pointers into rows whose lengths are asserted first.
#![allow(unsafe_code)]

use crate::CentroidScores8;
use crate::compressed::{LANES, padded_tokens};

/// Centroids scored together per pass over a group's query bytes.
const BLOCK: usize = 4;

/// Query token groups (of [`LANES`] tokens) whose sums one pass keeps in registers.
const MAX_GROUPS: usize = 4;

/// Centroids quantised to `i8`, with their scales and code sums.
#[derive(Clone, Debug, Default)]
pub struct Int8Centroids {
    dim: usize,
    dim4: usize,
    /// `[n, dim4]`, zero padded.
    codes: Vec<i8>,
    scales: Vec<f32>,
    /// `128 * sum_d codes[c][d]`: what the query's +128 shift adds to centroid `c`'s sums.
    shifts: Vec<i32>,
    /// Largest Euclidean norm of a centroid.
    max_norm: f32,
}

/// A query quantised for [`Int8Centroids::scores`].
#[derive(Clone, Debug, Default)]
pub struct Int8Query {
    nq: usize,
    stride: usize,
    dim4: usize,
    /// Per group of [`LANES`] tokens: `[dim4 / 4][LANES][4]` bytes `q8 + 128`.
    packed: Vec<u8>,
    /// `[stride]`: each token's scale `b`, 0 for padding tokens.
    scales: Vec<f32>,
    /// Largest Euclidean norm of a query token.
    max_norm: f32,
}

/// Largest Euclidean norm of the rows of `v` (`[n, dim]`), 0 when there are none.
fn max_norm(v: &[f32], dim: usize) -> f32 {
    v.chunks_exact(dim.max(1))
        .map(|r| crate::reference::dot(r, r).sqrt())
        .fold(0f32, f32::max)
}

/// Per-vector scale and codes: `a = max |v| / 127`, `round(v / a)`.
fn quantise(v: &[f32], out: &mut [i8]) -> f32 {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        out.iter_mut().for_each(|o| *o = 0);
        return 0.0;
    }
    let a = max / 127.0;
    let inv = 127.0 / max;
    for (o, &x) in out.iter_mut().zip(v) {
        *o = (x * inv).round().clamp(-127.0, 127.0) as i8;
    }
    a
}

impl Int8Centroids {
    /// Quantises `centroids` (`[n, dim]`, row-major).
    pub fn new(centroids: &[f32], dim: usize) -> Self {
        let dim4 = dim.div_ceil(4) * 4;
        let n = centroids.len().checked_div(dim).unwrap_or(0);
        let mut codes = vec![0i8; n * dim4];
        let mut scales = Vec::with_capacity(n);
        let mut shifts = Vec::with_capacity(n);
        for (c, row) in centroids.chunks_exact(dim.max(1)).take(n).enumerate() {
            let out = &mut codes[c * dim4..c * dim4 + dim];
            scales.push(quantise(row, out));
            shifts.push(128 * out.iter().map(|&x| i32::from(x)).sum::<i32>());
        }
        Int8Centroids {
            dim,
            dim4,
            codes,
            scales,
            shifts,
            max_norm: max_norm(centroids, dim),
        }
    }

    /// Number of centroids.
    pub fn len(&self) -> usize {
        self.scales.len()
    }

    /// Whether there are no centroids.
    pub fn is_empty(&self) -> bool {
        self.scales.is_empty()
    }

    /// Dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Bytes held (codes, scales, shifts).
    pub fn bytes(&self) -> usize {
        self.codes.len() + 8 * self.scales.len()
    }

    // GPU hook (issue 16): the device scores centroids from these same codes and scales
    // (`gpu::Gpu::upload_codec`), so its scores have the same bits as this CPU's.

    /// The codes, `[len, dim4]` (`dim4` = `dim` rounded up to 4, zero padded).
    pub(crate) fn codes(&self) -> &[i8] {
        &self.codes
    }

    /// Each centroid's scale `a`.
    pub(crate) fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// Largest Euclidean norm of a centroid (the byte map's bound, with the query's).
    pub(crate) fn max_norm(&self) -> f32 {
        self.max_norm
    }

    /// The VNNI path this CPU has, fastest first; `None` without one. The portable path
    /// computes the same integers 6-12x slower than an `f32` GEMM (measured by `PROBE=
    /// centroids cargo bench -p tessera-kernels --bench gemm_probe`, 65,536 centroids at
    /// dim 128, 32 query tokens, in three runs: AVX-512 VNNI 1.1-1.4 ms, AVX-VNNI 2.1-2.4
    /// ms, `f32` GEMM 7.3-11.8 ms, portable 45-139 ms), so callers without a VNNI path score
    /// in `f32` instead; the portable path is the reference the vector paths are tested
    /// against.
    pub fn fast_path() -> Option<Int8Path> {
        [Int8Path::Avx512Vnni, Int8Path::AvxVnni]
            .into_iter()
            .find(|p| p.is_available())
    }

    /// `out[c * stride + i]` = the quantised score of centroid `c` against query token `i`
    /// (`stride` = [`Int8Query::stride`]; padding columns 0), on the fastest path this CPU
    /// has.
    pub fn scores(&self, query: &Int8Query, out: &mut [f32]) {
        let path = Self::fast_path().unwrap_or(Int8Path::Portable);
        let _ = self.scores_with(path, query, out);
    }

    /// [`Int8Centroids::scores`] on the given path; `None` when this CPU cannot run it.
    ///
    /// # Panics
    /// If the query was quantised for another dimension or `out` is not `len() * stride`.
    pub fn scores_with(&self, path: Int8Path, query: &Int8Query, out: &mut [f32]) -> Option<()> {
        self.run(path, query, &mut Sink { out, bytes: None })
    }

    /// [`Int8Centroids::scores`], also filling `bytes` with the table quantised to bytes
    /// for the estimates ([`CentroidScores8`]) in the same pass. The byte map covers
    /// `-B..=B`, `B = max_i |q_i| max_c |c|` (Cauchy-Schwarz bounds every score), rather
    /// than the table's own range, which is known only after the pass: on unit vectors
    /// that makes the step about 1.5 times coarser, a few thousandths per query token.
    pub fn scores_and_bytes(
        &self,
        query: &Int8Query,
        out: &mut [f32],
        bytes: &mut CentroidScores8,
    ) {
        let path = Self::fast_path().unwrap_or(Int8Path::Portable);
        let _ = self.scores_and_bytes_with(path, query, out, bytes);
    }

    /// [`Int8Centroids::scores_and_bytes`] on the given path; `None` when this CPU cannot
    /// run it.
    pub fn scores_and_bytes_with(
        &self,
        path: Int8Path,
        query: &Int8Query,
        out: &mut [f32],
        bytes: &mut CentroidScores8,
    ) -> Option<()> {
        let bound = query.max_norm * self.max_norm;
        let (rows, lo, inv) = bytes.prepare(out.len(), query.stride, query.nq, -bound, bound);
        self.run(
            path,
            query,
            &mut Sink {
                out,
                bytes: Some((rows, lo, inv)),
            },
        )
    }

    fn run(&self, path: Int8Path, query: &Int8Query, out: &mut Sink<'_>) -> Option<()> {
        if !path.is_available() {
            return None;
        }
        assert_eq!(
            query.dim4, self.dim4,
            "query and centroids differ in dimension"
        );
        assert_eq!(out.out.len(), self.len() * query.stride, "score table size");
        if let Some((b, _, _)) = &out.bytes {
            assert_eq!(b.len(), out.out.len(), "byte table size");
        }
        let groups = query.stride / LANES;
        let mut g0 = 0;
        while g0 < groups {
            let g = (groups - g0).min(MAX_GROUPS);
            match g {
                1 => self.pass::<1>(path, query, g0, out),
                2 => self.pass::<2>(path, query, g0, out),
                3 => self.pass::<3>(path, query, g0, out),
                _ => self.pass::<4>(path, query, g0, out),
            }
            g0 += g;
        }
        Some(())
    }

    fn pass<const G: usize>(&self, path: Int8Path, q: &Int8Query, g0: usize, out: &mut Sink<'_>) {
        match path {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `scores_with` checked that this CPU has the path's features, and the
            // table sizes; `g0 + G` is at most the query's group count.
            Int8Path::Avx512Vnni => unsafe { x86::pass_avx512::<G>(self, q, g0, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Int8Path::AvxVnni => unsafe { x86::pass_avxvnni::<G>(self, q, g0, out) },
            _ => pass_portable::<G>(self, q, g0, out),
        }
    }
}

/// The error bound of one quantised score (module doc): `(a |q|_1 + b |c|_1) / 2 + 3 dim a
/// b / 4`, for a centroid `c` with scale `a` and a query token `q` with scale `b` (each
/// `max |v| / 127`).
pub fn score_error_bound(q: &[f32], c: &[f32]) -> f32 {
    let b = q.iter().fold(0f32, |m, x| m.max(x.abs())) / 127.0;
    let a = c.iter().fold(0f32, |m, x| m.max(x.abs())) / 127.0;
    let l1 = |v: &[f32]| v.iter().map(|x| x.abs()).sum::<f32>();
    (a * l1(q) + b * l1(c)) / 2.0 + 0.75 * q.len() as f32 * a * b
}

impl Int8Query {
    /// Quantises `query` (`[nq, dim]`, row-major).
    pub fn new(query: &[f32], dim: usize) -> Self {
        let mut q = Int8Query::default();
        q.rebuild(query, dim);
        q
    }

    /// Like [`Int8Query::new`], reusing this query's memory.
    pub fn rebuild(&mut self, query: &[f32], dim: usize) {
        let dim4 = dim.div_ceil(4) * 4;
        let nq = query.len().checked_div(dim).unwrap_or(0);
        let stride = padded_tokens(nq);
        let steps = dim4 / 4;
        self.packed.clear();
        // Padding tokens and dimensions: q8 = 0, stored as 128.
        self.packed.resize(stride * dim4, 128);
        self.scales.clear();
        self.scales.resize(stride, 0.0);
        let mut codes = vec![0i8; dim];
        for (i, row) in query.chunks_exact(dim.max(1)).take(nq).enumerate() {
            self.scales[i] = quantise(row, &mut codes);
            let (g, l) = (i / LANES, i % LANES);
            for (d, &v) in codes.iter().enumerate() {
                let at = ((g * steps + d / 4) * LANES + l) * 4 + d % 4;
                self.packed[at] = (i16::from(v) + 128) as u8;
            }
        }
        self.nq = nq;
        self.stride = stride;
        self.dim4 = dim4;
        self.max_norm = max_norm(query, dim);
    }

    /// Query tokens (without padding).
    pub fn query_tokens(&self) -> usize {
        self.nq
    }

    /// Row length of the score table: query tokens rounded up to whole [`LANES`].
    pub fn stride(&self) -> usize {
        self.stride
    }
}

/// GPU hook (issue 16): query tokens quantised as [`Int8Query`] does (`[nq, dim4]` codes,
/// zero padded, and each token's scale), with the largest token norm: what the device
/// needs to compute the same integer scores and the same byte map.
pub(crate) fn quantise_query(query: &[f32], dim: usize) -> (Vec<i8>, Vec<f32>, f32) {
    let dim4 = dim.div_ceil(4) * 4;
    let nq = query.len().checked_div(dim).unwrap_or(0);
    let mut codes = vec![0i8; nq * dim4];
    let scales = query
        .chunks_exact(dim.max(1))
        .take(nq)
        .zip(codes.chunks_exact_mut(dim4.max(1)))
        .map(|(row, out)| quantise(row, &mut out[..dim]))
        .collect();
    (codes, scales, max_norm(query, dim))
}

/// An instruction set [`Int8Centroids::scores`] can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Int8Path {
    /// Plain Rust, any CPU.
    Portable,
    /// x86-64 with AVX-VNNI (256-bit `vpdpbusd`).
    AvxVnni,
    /// x86-64 with AVX-512 VNNI.
    Avx512Vnni,
}

impl Int8Path {
    /// Whether this CPU can run the path.
    pub fn is_available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Int8Path::Portable => true,
                Int8Path::AvxVnni => has!("avx2") && has!("avxvnni"),
                Int8Path::Avx512Vnni => has!("avx512f") && has!("avx512bw") && has!("avx512vnni"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Int8Path::Portable
        }
    }
}

/// The paths this CPU can run, fastest first.
pub fn int8_paths_available() -> Vec<Int8Path> {
    [Int8Path::Avx512Vnni, Int8Path::AvxVnni, Int8Path::Portable]
        .into_iter()
        .filter(|p| p.is_available())
        .collect()
}

/// Plain Rust: the same integer sums. The group's query bytes are widened once to `i32`,
/// `[dim4][LANES]`, so each centroid value multiplies one contiguous row of lanes (a loop
/// the compiler vectorises).
#[inline(always)]
fn pass_portable<const G: usize>(c: &Int8Centroids, q: &Int8Query, g0: usize, out: &mut Sink<'_>) {
    let (dim4, steps) = (c.dim4, c.dim4 / 4);
    let group_bytes = steps * LANES * 4;
    let mut wide = vec![0i32; G * dim4 * LANES];
    for g in 0..G {
        let qg = &q.packed[(g0 + g) * group_bytes..(g0 + g + 1) * group_bytes];
        for (s, chunk) in qg.chunks_exact(LANES * 4).enumerate() {
            for (l, token) in chunk.chunks_exact(4).enumerate() {
                for (t, &v) in token.iter().enumerate() {
                    wide[(g * dim4 + 4 * s + t) * LANES + l] = i32::from(v);
                }
            }
        }
    }
    for (ci, row) in c.codes.chunks_exact(dim4.max(1)).enumerate() {
        for g in 0..G {
            let mut acc = [0i32; LANES];
            let rows = wide[g * dim4 * LANES..(g + 1) * dim4 * LANES].chunks_exact(LANES);
            for (&w, qr) in row.iter().zip(rows) {
                let w = i32::from(w);
                for (a, &v) in acc.iter_mut().zip(qr) {
                    *a += v * w;
                }
            }
            finish(c, q, ci, g0 + g, &acc, out);
        }
    }
}

/// Where scores go: the `f32` table, and optionally the byte table of the estimates.
pub(crate) struct Sink<'a> {
    out: &'a mut [f32],
    /// Byte rows (same layout), and the map `round((s - lo) * inv)` saturating to
    /// `0..=255`.
    bytes: Option<(&'a mut [u8], f32, f32)>,
}

/// Removes the shift and scales one centroid's sums for one group into the table(s).
#[inline(always)]
fn finish(
    c: &Int8Centroids,
    q: &Int8Query,
    ci: usize,
    g: usize,
    acc: &[i32; LANES],
    sink: &mut Sink<'_>,
) {
    let a = c.scales[ci];
    let at = ci * q.stride + g * LANES;
    let mut row = [0f32; LANES];
    for ((o, &s), &b) in row
        .iter_mut()
        .zip(acc)
        .zip(&q.scales[g * LANES..(g + 1) * LANES])
    {
        *o = (s - c.shifts[ci]) as f32 * (a * b);
    }
    sink.out[at..at + LANES].copy_from_slice(&row);
    if let Some((bytes, lo, inv)) = &mut sink.bytes {
        crate::approx::quantize_bytes_body(&row, *lo, *inv, &mut bytes[at..at + LANES]);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{BLOCK, Int8Centroids, Int8Query, LANES, Sink};
    use std::arch::x86_64::*;

    /// Centroids, dimension steps of 4, query bytes per group, and the first group's bytes;
    /// asserts the lengths the raw loads rely on.
    fn shape(
        c: &Int8Centroids,
        q: &Int8Query,
        g0: usize,
        groups: usize,
    ) -> (usize, usize, usize, *const u8) {
        let n = c.len();
        let steps = c.dim4 / 4;
        let group_bytes = steps * LANES * 4;
        assert!(q.packed.len() >= (g0 + groups) * group_bytes);
        assert_eq!(c.codes.len(), n * c.dim4);
        (n, steps, group_bytes, q.packed[g0 * group_bytes..].as_ptr())
    }

    /// Sums of `BLOCK` centroids (starting at `c0`; a block past the end repeats the last
    /// centroid, whose sums are then not stored) against groups `g0..g0 + G`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) fn pass_avx512<const G: usize>(
        c: &Int8Centroids,
        q: &Int8Query,
        g0: usize,
        out: &mut Sink<'_>,
    ) {
        let (n, steps, group_bytes, qbase) = shape(c, q, g0, G);
        let mut c0 = 0;
        while c0 < n {
            let rows: [*const i8; BLOCK] =
                std::array::from_fn(|j| c.codes[(c0 + j).min(n - 1) * c.dim4..].as_ptr());
            let mut acc = [[_mm512_setzero_si512(); G]; BLOCK];
            for s in 0..steps {
                // SAFETY: group `g` of the query holds `steps` 64-byte chunks (asserted above).
                let qv: [__m512i; G] = std::array::from_fn(|g| unsafe {
                    _mm512_loadu_si512(qbase.add(g * group_bytes + s * 64).cast())
                });
                for j in 0..BLOCK {
                    // SAFETY: each row holds `dim4 = 4 steps` bytes (asserted above).
                    let w = unsafe { rows[j].add(4 * s).cast::<i32>().read_unaligned() };
                    let bc = _mm512_set1_epi32(w);
                    for g in 0..G {
                        acc[j][g] = _mm512_dpbusd_epi32(acc[j][g], qv[g], bc);
                    }
                }
            }
            for (j, sums) in acc.iter().enumerate().take(n - c0) {
                for (g, v) in sums.iter().enumerate() {
                    finish_avx512(c, q, c0 + j, g0 + g, *v, out);
                }
            }
            c0 += BLOCK;
        }
    }

    /// [`super::finish`] in registers: the same operations in the same order (integer
    /// subtract, convert, multiply by `a * b`; subtract `lo`, multiply by `inv`, add one
    /// half, clamp, truncate), so the same bits.
    #[target_feature(enable = "avx512f,avx512bw")]
    fn finish_avx512(
        c: &Int8Centroids,
        q: &Int8Query,
        ci: usize,
        g: usize,
        sums: __m512i,
        sink: &mut Sink<'_>,
    ) {
        let at = ci * q.stride + g * LANES;
        let b: &[f32; LANES] = q.scales[g * LANES..(g + 1) * LANES]
            .try_into()
            .expect("a group of scales");
        let out: &mut [f32; LANES] = (&mut sink.out[at..at + LANES])
            .try_into()
            .expect("a group of scores");
        // SAFETY: `b` and `out` are 16 floats each (checked just above).
        let scores = unsafe {
            let ab = _mm512_mul_ps(_mm512_set1_ps(c.scales[ci]), _mm512_loadu_ps(b.as_ptr()));
            let d = _mm512_cvtepi32_ps(_mm512_sub_epi32(sums, _mm512_set1_epi32(c.shifts[ci])));
            let s = _mm512_mul_ps(d, ab);
            _mm512_storeu_ps(out.as_mut_ptr(), s);
            s
        };
        if let Some((bytes, lo, inv)) = &mut sink.bytes {
            let dst: &mut [u8; LANES] = (&mut bytes[at..at + LANES])
                .try_into()
                .expect("a group of bytes");
            let x = _mm512_add_ps(
                _mm512_mul_ps(
                    _mm512_sub_ps(scores, _mm512_set1_ps(*lo)),
                    _mm512_set1_ps(*inv),
                ),
                _mm512_set1_ps(0.5),
            );
            let x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(255.0)), _mm512_setzero_ps());
            let packed = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(x));
            // SAFETY: `dst` is 16 bytes (checked just above).
            unsafe { _mm_storeu_si128(dst.as_mut_ptr().cast(), packed) };
        }
    }

    /// [`finish_avx512`] on two 256-bit halves of 8 tokens: the same operations in the
    /// same order, so the same bits.
    #[target_feature(enable = "avx2")]
    fn finish_avx2(
        c: &Int8Centroids,
        q: &Int8Query,
        ci: usize,
        g: usize,
        sums: [__m256i; 2],
        sink: &mut Sink<'_>,
    ) {
        let at = ci * q.stride + g * LANES;
        let b: &[f32; LANES] = q.scales[g * LANES..(g + 1) * LANES]
            .try_into()
            .expect("a group of scales");
        let out: &mut [f32; LANES] = (&mut sink.out[at..at + LANES])
            .try_into()
            .expect("a group of scores");
        let mut scores = [_mm256_setzero_ps(); 2];
        for (h, (v, score)) in sums.iter().zip(&mut scores).enumerate() {
            // SAFETY: `b` and `out` are 16 floats each (checked just above); each half reads
            // or writes 8 of them at `8 h`.
            unsafe {
                let ab = _mm256_mul_ps(
                    _mm256_set1_ps(c.scales[ci]),
                    _mm256_loadu_ps(b.as_ptr().add(8 * h)),
                );
                let d = _mm256_cvtepi32_ps(_mm256_sub_epi32(*v, _mm256_set1_epi32(c.shifts[ci])));
                *score = _mm256_mul_ps(d, ab);
                _mm256_storeu_ps(out.as_mut_ptr().add(8 * h), *score);
            }
        }
        if let Some((bytes, lo, inv)) = &mut sink.bytes {
            let dst: &mut [u8; LANES] = (&mut bytes[at..at + LANES])
                .try_into()
                .expect("a group of bytes");
            let [x0, x1] = scores.map(|s| {
                let x = _mm256_add_ps(
                    _mm256_mul_ps(_mm256_sub_ps(s, _mm256_set1_ps(*lo)), _mm256_set1_ps(*inv)),
                    _mm256_set1_ps(0.5),
                );
                let x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(255.0)), _mm256_setzero_ps());
                _mm256_cvttps_epi32(x)
            });
            // Values are in 0..=255, so the saturating packs are exact; packing works within
            // 128-bit lanes, and the permute puts the 16 values back in order.
            let words = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi32(x0, x1));
            let packed = _mm_packus_epi16(
                _mm256_castsi256_si128(words),
                _mm256_extracti128_si256::<1>(words),
            );
            // SAFETY: `dst` is 16 bytes (checked just above).
            unsafe { _mm_storeu_si128(dst.as_mut_ptr().cast(), packed) };
        }
    }

    /// [`pass_avx512`] on 256-bit registers: each group is two halves of 8 tokens.
    #[target_feature(enable = "avx2,avxvnni")]
    pub(super) fn pass_avxvnni<const G: usize>(
        c: &Int8Centroids,
        q: &Int8Query,
        g0: usize,
        out: &mut Sink<'_>,
    ) {
        let (n, steps, group_bytes, qbase) = shape(c, q, g0, G);
        let mut c0 = 0;
        while c0 < n {
            let rows: [*const i8; BLOCK] =
                std::array::from_fn(|j| c.codes[(c0 + j).min(n - 1) * c.dim4..].as_ptr());
            let mut acc = [[[_mm256_setzero_si256(); 2]; G]; BLOCK];
            for s in 0..steps {
                // SAFETY: group `g` of the query holds `steps` 64-byte chunks (asserted above).
                let qv: [[__m256i; 2]; G] = std::array::from_fn(|g| {
                    std::array::from_fn(|h| unsafe {
                        _mm256_loadu_si256(qbase.add(g * group_bytes + s * 64 + h * 32).cast())
                    })
                });
                for j in 0..BLOCK {
                    // SAFETY: each row holds `dim4 = 4 steps` bytes (asserted above).
                    let w = unsafe { rows[j].add(4 * s).cast::<i32>().read_unaligned() };
                    let bc = _mm256_set1_epi32(w);
                    for g in 0..G {
                        for h in 0..2 {
                            acc[j][g][h] = _mm256_dpbusd_avx_epi32(acc[j][g][h], qv[g][h], bc);
                        }
                    }
                }
            }
            for (j, sums) in acc.iter().enumerate().take(n - c0) {
                for (g, halves) in sums.iter().enumerate() {
                    finish_avx2(c, q, c0 + j, g0 + g, *halves, out);
                }
            }
            c0 += BLOCK;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};

    fn random(rng: &mut rand::rngs::StdRng, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-scale..scale)).collect()
    }

    proptest! {
        #[test]
        fn every_path_gives_the_same_scores_within_the_bound_of_f32_scores(
            dim in 1usize..150,
            nq in 0usize..80,
            n in 0usize..23,
            scale in prop::sample::select(vec![1e-3f32, 0.1, 1.0, 30.0]),
            zero_row in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut centroids = random(&mut rng, n * dim, scale);
            let mut query = random(&mut rng, nq * dim, 1.0);
            if zero_row && n > 0 && nq > 0 {
                centroids[..dim].iter_mut().for_each(|v| *v = 0.0);
                query[..dim].iter_mut().for_each(|v| *v = 0.0);
            }
            let c8 = Int8Centroids::new(&centroids, dim);
            let q8 = Int8Query::new(&query, dim);
            prop_assert_eq!(c8.len(), n);
            let stride = q8.stride();
            let mut first: Option<(Vec<f32>, Vec<u8>)> = None;
            for path in int8_paths_available() {
                let mut out = vec![f32::NAN; n * stride];
                c8.scores_with(path, &q8, &mut out).expect("an available path");
                for c in 0..n {
                    for i in 0..stride {
                        let got = out[c * stride + i];
                        if i >= nq {
                            prop_assert_eq!(got, 0.0, "padding column");
                            continue;
                        }
                        let (cv, qv) = (&centroids[c * dim..(c + 1) * dim], &query[i * dim..(i + 1) * dim]);
                        let exact = reference::dot(qv, cv);
                        let bound = score_error_bound(qv, cv) * 1.001 + 1e-6 * (1.0 + exact.abs());
                        prop_assert!((got - exact).abs() <= bound,
                            "{path:?}: centroid {c} token {i}: got {got}, exact {exact}, bound {bound}");
                    }
                }
                // The fused byte table: the same scores, each quantised over the bound.
                let mut bytes = CentroidScores8::default();
                let mut out2 = vec![f32::NAN; n * stride];
                c8.scores_and_bytes_with(path, &q8, &mut out2, &mut bytes).expect("an available path");
                prop_assert!(out.iter().zip(&out2).all(|(a, b)| a.to_bits() == b.to_bits()));
                let (rows, lo, step) = bytes.parts();
                prop_assert_eq!(rows.len(), out.len());
                for (&v, &b) in out.iter().zip(rows) {
                    let back = lo + f32::from(b) * step;
                    prop_assert!((back - v).abs() <= step * 0.5 + 1e-4 * (1.0 + v.abs()) || b == 0 || b == 255,
                        "{path:?}: {v} quantised to {b} ({back}), step {step}");
                }
                let rows = rows.to_vec();
                match &first {
                    None => first = Some((out, rows)),
                    Some((f, r)) => {
                        prop_assert!(f.iter().zip(&out).all(|(a, b)| a.to_bits() == b.to_bits()),
                            "{path:?} differs from the first path");
                        prop_assert!(r == &rows, "{path:?}: bytes differ from the first path");
                    }
                }
            }
        }
    }

    #[test]
    fn a_long_query_is_scored_in_passes_of_four_groups() {
        // 100 tokens = 7 groups: passes of 4 and 3.
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let dim = 96;
        let centroids = random(&mut rng, 9 * dim, 1.0);
        let query = random(&mut rng, 100 * dim, 1.0);
        let c8 = Int8Centroids::new(&centroids, dim);
        let q8 = Int8Query::new(&query, dim);
        for path in int8_paths_available() {
            let mut out = vec![0f32; 9 * q8.stride()];
            c8.scores_with(path, &q8, &mut out)
                .expect("an available path");
            for c in 0..9 {
                for i in 0..100 {
                    let (cv, qv) = (
                        &centroids[c * dim..(c + 1) * dim],
                        &query[i * dim..(i + 1) * dim],
                    );
                    let exact = reference::dot(qv, cv);
                    assert!(
                        (out[c * q8.stride() + i] - exact).abs()
                            <= score_error_bound(qv, cv) * 1.001 + 1e-6
                    );
                }
            }
        }
    }
}
