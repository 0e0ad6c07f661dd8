//! Exact MaxSim against the stored original vectors (binary16, bfloat16 or `f32`): the
//! "refine" stage that re-scores a compressed search's best candidates.
//!
//! `MaxSim(Q, D) = sum_i max_j q_i · d_j` over query tokens `q_i` and document tokens `d_j`.
//! Widening a stored value to `f32` is exact: a binary16 value has an 11-bit significand
//! and an exponent in -24..=15 (subnormals included), so it is a normal `f32` (24 bits,
//! -126..=127); a bfloat16 is by definition the upper half of an `f32`, so
//! `f32::from_bits((b as u32) << 16)` is its value. The only rounding is in the `f32`
//! products and sums, as in [`crate::reference::maxsim`] on the widened document, but in
//! another order: each dot product is summed in 16 (AVX-512, portable) or 8 (AVX2) lanes,
//! with fused multiply-adds on the vector paths, and the lanes are then added together.
//! The vector paths widen in registers, one register's worth at a time; the portable path
//! widens 512 values of one token at a time into a stack buffer. Neither makes an `f32`
//! copy of the document.
//!
//! Loop shape of the vector paths. The document is read once, 4 tokens at a time. For
//! each block the query tokens are taken 4 (AVX-512) or 2 (AVX2) at a time and their 16
//! or 8 dot products with the block are accumulated in registers across `dim`: per chunk
//! of lanes, 4 document loads and conversions and 4 or 2 query loads feed 16 or 8 FMAs.
//! The block's accumulators are then reduced together by a transpose (pairs of registers
//! are shuffled so that each add halves the number of registers and of partial sums per
//! dot product: 15 shuffle pairs for 16 dot products instead of 16 horizontal sums), the
//! maximum over the block's document tokens is taken, and it updates each query token's
//! running maximum. Running maxima live in a stack array of [`QUERY_BLOCK`] (128) floats;
//! a longer query is scored [`QUERY_BLOCK`] tokens at a time, reading the document once
//! per such block. No path allocates.
//!
//! Ragged edges. A document block past the last token repeats the last token, which
//! cannot change a maximum; a query block past the last query token repeats it too, and
//! the repeated maxima land in running-maximum slots that are not summed. When `dim` is
//! not a multiple of the lane count the last chunk of each query row is loaded under a
//! mask (zeros past the row, nothing read there), and the last chunk of each document row
//! is copied into a zeroed stack chunk once per document block.
//!
//! Why `unsafe` is allowed here: the vector paths are `#[target_feature]` functions, unsafe
//! to call unless the CPU has the features (each call site detects them first), and their
//! loads read through raw pointers, each within a row whose bounds are checked once per
//! block.
#![allow(unsafe_code)]

use half::{bf16, f16};

/// Query tokens whose running maxima one pass over the document keeps (on the stack).
const QUERY_BLOCK: usize = 128;

/// Original token vectors of a document, row-major `[nd, dim]`, in their stored type.
/// (`PartialEq` only: floats are not `Eq`.)
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StoredVectors<'a> {
    /// IEEE 754 binary16.
    F16(&'a [f16]),
    /// bfloat16: the upper 16 bits of an `f32`.
    Bf16(&'a [bf16]),
    /// Single precision, as given.
    F32(&'a [f32]),
}

impl StoredVectors<'_> {
    /// Number of stored values (`nd * dim`), not of tokens.
    pub fn len(&self) -> usize {
        match self {
            StoredVectors::F16(v) => v.len(),
            StoredVectors::Bf16(v) => v.len(),
            StoredVectors::F32(v) => v.len(),
        }
    }

    /// Whether no values are stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An instruction set [`maxsim_stored`] can run on; [`maxsim_stored_with`] picks one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefinePath {
    /// Plain Rust, any CPU.
    Portable,
    /// x86-64 with AVX2, FMA and F16C: 8 lanes, 2 query x 4 document tokens per block.
    Avx2,
    /// x86-64 with AVX-512F: 16 lanes, 4 query x 4 document tokens per block.
    Avx512,
}

impl RefinePath {
    /// Whether this CPU can run the path.
    pub fn is_available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                RefinePath::Portable => true,
                RefinePath::Avx2 => has!("avx2") && has!("fma") && has!("f16c"),
                RefinePath::Avx512 => has!("avx512f"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == RefinePath::Portable
        }
    }
}

/// The paths this CPU can run, fastest first; [`maxsim_stored`] uses the first.
pub fn refine_paths_available() -> Vec<RefinePath> {
    [RefinePath::Avx512, RefinePath::Avx2, RefinePath::Portable]
        .into_iter()
        .filter(|p| p.is_available())
        .collect()
}

/// MaxSim of `query` (`[nq, dim]` `f32`, row-major) against a document's stored vectors
/// (`[nd, dim]`): the sum over query tokens of the largest dot product with any document
/// token, computed in `f32` from the exactly widened stored values, on the fastest path
/// this CPU has.
///
/// An empty query, an empty document and `dim == 0` all score 0 (an empty document has no
/// best token; 0 keeps `-inf` out of callers' sums). Values past the last whole row of
/// either input are ignored.
pub fn maxsim_stored(query: &[f32], doc: StoredVectors<'_>, dim: usize) -> f32 {
    for path in [RefinePath::Avx512, RefinePath::Avx2] {
        if let Some(score) = maxsim_stored_with(path, query, doc, dim) {
            return score;
        }
    }
    maxsim_stored_with(RefinePath::Portable, query, doc, dim).unwrap_or(0.0)
}

/// [`maxsim_stored`] on the given path; `None` when this CPU cannot run it.
pub fn maxsim_stored_with(
    path: RefinePath,
    query: &[f32],
    doc: StoredVectors<'_>,
    dim: usize,
) -> Option<f32> {
    if !path.is_available() {
        return None;
    }
    if dim == 0 {
        return Some(0.0);
    }
    debug_assert_eq!(query.len() % dim, 0, "query is not whole rows");
    debug_assert_eq!(doc.len() % dim, 0, "document is not whole rows");
    let query = &query[..query.len() / dim * dim];
    let nd = doc.len() / dim;
    if query.is_empty() || nd == 0 {
        return Some(0.0);
    }
    match doc {
        StoredVectors::F16(d) => dispatch(path, query, &d[..nd * dim], dim),
        StoredVectors::Bf16(d) => dispatch(path, query, &d[..nd * dim], dim),
        StoredVectors::F32(d) => dispatch(path, query, &d[..nd * dim], dim),
    }
}

/// Runs one path on whole, non-empty rows; `None` when the CPU lacks the path.
fn dispatch<T: Element>(path: RefinePath, query: &[f32], doc: &[T], dim: usize) -> Option<f32> {
    match path {
        RefinePath::Portable => Some(maxsim_portable(query, doc, dim)),
        #[cfg(target_arch = "x86_64")]
        RefinePath::Avx512 if path.is_available() => {
            // SAFETY: `is_available` detected AVX-512F on this CPU just above.
            Some(unsafe { x86::maxsim_avx512(query, doc, dim) })
        }
        #[cfg(target_arch = "x86_64")]
        RefinePath::Avx2 if path.is_available() => {
            // SAFETY: `is_available` detected AVX2, FMA and F16C on this CPU just above.
            Some(unsafe { x86::maxsim_avx2(query, doc, dim) })
        }
        _ => None,
    }
}

/// A stored value type and how each path widens it to `f32`.
trait Element: Copy + Default {
    /// The value as `f32` (exact).
    fn widen(self) -> f32;

    /// 16 values starting at `p`, widened.
    ///
    /// # Safety
    /// The CPU has AVX-512F, and `p` is valid for reading 16 values.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512;

    /// 8 values starting at `p`, widened.
    ///
    /// # Safety
    /// The CPU has AVX2 and F16C, and `p` is valid for reading 8 values.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
}

impl Element for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(p: *const f32) -> std::arch::x86_64::__m512 {
        // SAFETY: the caller guarantees `p` is valid for 16 reads.
        unsafe { std::arch::x86_64::_mm512_loadu_ps(p) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn load8(p: *const f32) -> std::arch::x86_64::__m256 {
        // SAFETY: the caller guarantees `p` is valid for 8 reads.
        unsafe { std::arch::x86_64::_mm256_loadu_ps(p) }
    }
}

impl Element for f16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(p: *const f16) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees 16 readable values (32 bytes) at `p`; `f16` is a
        // `repr(transparent)` `u16`, so they are the 16 binary16 lanes `vcvtph2ps` widens.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn load8(p: *const f16) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees 8 readable values (16 bytes) at `p`; `f16` is a
        // `repr(transparent)` `u16`.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }
}

impl Element for bf16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        // The same bits the vector paths produce (`bf16::to_f32` also quiets NaNs).
        f32::from_bits(u32::from(self.to_bits()) << 16)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(p: *const bf16) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees 16 readable values (32 bytes) at `p`; `bf16` is a
        // `repr(transparent)` `u16`. Zero-extended to 32 bits and shifted up, each is the
        // `f32` whose upper half it is.
        let bits = unsafe { _mm256_loadu_si256(p.cast()) };
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(bits)))
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn load8(p: *const bf16) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees 8 readable values (16 bytes) at `p`; `bf16` is a
        // `repr(transparent)` `u16`.
        let bits = unsafe { _mm_loadu_si128(p.cast()) };
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(bits)))
    }
}

/// Plain Rust: each document token is widened [`SEGMENT`] values at a time into a stack
/// buffer, and each query token's dot product with the segment is summed in 16 independent
/// lanes (vectorisable without reassociating a sum) that stay in registers across it.
fn maxsim_portable<T: Element>(query: &[f32], doc: &[T], dim: usize) -> f32 {
    const W: usize = 16;
    /// Values widened at a time: 2 KiB of stack, any `dim`.
    const SEGMENT: usize = 512;
    let mut total = 0f32;
    let mut lanes = [[0f32; W]; QUERY_BLOCK];
    let mut widened = [0f32; SEGMENT];
    for block in query.chunks(QUERY_BLOCK * dim) {
        let qn = block.len() / dim;
        let lanes = &mut lanes[..qn];
        let mut best = [f32::NEG_INFINITY; QUERY_BLOCK];
        for row in doc.chunks_exact(dim) {
            lanes.fill([0.0; W]);
            for (s, seg) in row.chunks(SEGMENT).enumerate() {
                let x = &mut widened[..seg.len()];
                for (xi, &v) in x.iter_mut().zip(seg) {
                    *xi = v.widen();
                }
                let (x_chunks, x_tail) = x.as_chunks::<W>();
                for (acc, q) in lanes.iter_mut().zip(block.chunks_exact(dim)) {
                    let (q_chunks, q_tail) =
                        q[s * SEGMENT..s * SEGMENT + seg.len()].as_chunks::<W>();
                    let mut l = *acc;
                    for (a, b) in x_chunks.iter().zip(q_chunks) {
                        for i in 0..W {
                            l[i] += a[i] * b[i];
                        }
                    }
                    for ((li, a), b) in l.iter_mut().zip(x_tail).zip(q_tail) {
                        *li += a * b;
                    }
                    *acc = l;
                }
            }
            for (b, acc) in best.iter_mut().zip(lanes.iter()) {
                let s: f32 = acc.iter().sum();
                *b = if s > *b { s } else { *b };
            }
        }
        total += best[..qn].iter().sum::<f32>();
    }
    total
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Element, QUERY_BLOCK};
    use std::arch::x86_64::*;

    /// Document tokens scored together.
    const DOC_BLOCK: usize = 4;

    /// Rows `first..first + N` of a `[rows, dim]` matrix, the ones past the last row
    /// repeating it (`rows > 0`).
    #[inline(always)]
    fn rows<T, const N: usize>(m: &[T], dim: usize, first: usize) -> [&[T]; N] {
        let last = m.len() / dim - 1;
        std::array::from_fn(|i| {
            let r = (first + i).min(last);
            &m[r * dim..(r + 1) * dim]
        })
    }

    /// MaxSim on whole, non-empty rows with 16-lane AVX-512F registers.
    #[target_feature(enable = "avx512f")]
    pub(super) fn maxsim_avx512<T: Element>(query: &[f32], doc: &[T], dim: usize) -> f32 {
        const L: usize = 16;
        const Q: usize = 4;
        let full = dim / L * L;
        let tail = dim - full;
        let tail_mask: __mmask16 = ((1u32 << tail) - 1) as u16;
        let mut total = 0f32;
        for block in query.chunks(QUERY_BLOCK * dim) {
            let qn = block.len() / dim;
            let mut best = [f32::NEG_INFINITY; QUERY_BLOCK];
            for d0 in (0..doc.len() / dim).step_by(DOC_BLOCK) {
                let drows: [&[T]; DOC_BLOCK] = rows(doc, dim, d0);
                // The rows' last partial chunks, widened once for all query tokens.
                let mut dtail = [_mm512_setzero_ps(); DOC_BLOCK];
                if tail > 0 {
                    for (t, row) in dtail.iter_mut().zip(&drows) {
                        let mut chunk = [T::default(); L];
                        chunk[..tail].copy_from_slice(&row[full..]);
                        // SAFETY: AVX-512F is enabled for this function; `chunk` holds 16.
                        *t = unsafe { T::load16(chunk.as_ptr()) };
                    }
                }
                for q0 in (0..qn).step_by(Q) {
                    let qrows: [&[f32]; Q] = rows(block, dim, q0);
                    // acc[i][j] = q_i · d_j, by lanes.
                    let mut acc = [[_mm512_setzero_ps(); DOC_BLOCK]; Q];
                    let mut off = 0;
                    while off < full {
                        let mut d = [_mm512_setzero_ps(); DOC_BLOCK];
                        for (dj, row) in d.iter_mut().zip(&drows) {
                            // SAFETY: `off + 16 <= full <= dim = row.len()`; AVX-512F is
                            // enabled for this function.
                            *dj = unsafe { T::load16(row.as_ptr().add(off)) };
                        }
                        for (ai, row) in acc.iter_mut().zip(&qrows) {
                            // SAFETY: `off + 16 <= full <= dim = row.len()`.
                            let q = unsafe { _mm512_loadu_ps(row.as_ptr().add(off)) };
                            for (a, dj) in ai.iter_mut().zip(&d) {
                                *a = _mm512_fmadd_ps(q, *dj, *a);
                            }
                        }
                        off += L;
                    }
                    if tail > 0 {
                        for (ai, row) in acc.iter_mut().zip(&qrows) {
                            // SAFETY: the mask selects lanes `full..dim` of the row, and
                            // masked-off lanes are neither read nor able to fault.
                            let q =
                                unsafe { _mm512_maskz_loadu_ps(tail_mask, row.as_ptr().add(full)) };
                            for (a, dj) in ai.iter_mut().zip(&dtail) {
                                *a = _mm512_fmadd_ps(q, *dj, *a);
                            }
                        }
                    }
                    let m = block_max16(&acc);
                    let slot = &mut best[q0..q0 + Q];
                    // SAFETY: `slot` is 4 floats, in bounds because `q0` is a multiple of 4
                    // below `qn <= QUERY_BLOCK`, itself a multiple of 4.
                    unsafe {
                        _mm_storeu_ps(
                            slot.as_mut_ptr(),
                            _mm_max_ps(_mm_loadu_ps(slot.as_ptr()), m),
                        )
                    };
                }
            }
            total += best[..qn].iter().sum::<f32>();
        }
        total
    }

    /// Float `i` of the result is `max_j` of the sum of the lanes of `acc[i][j]`: one per
    /// query token of the block.
    ///
    /// Level 1 adds 128-bit lanes `{0, 1}` to `{2, 3}` of each pair of registers, leaving
    /// each register's 8 partial sums in one 256-bit half; level 2 adds the two 128-bit
    /// lanes of each half, leaving each register's 4 partial sums in one 128-bit lane;
    /// levels 3 and 4 add even to odd floats within 128-bit lanes. Then float `i` of 128-bit
    /// lane `j` holds register `4 i + j`, i.e. `acc[i][j]`, and two max steps across the
    /// 128-bit lanes take the maximum over `j`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn block_max16(acc: &[[__m512; DOC_BLOCK]; 4]) -> __m128 {
        let v: [__m512; 16] = std::array::from_fn(|k| acc[k / 4][k % 4]);
        let w: [__m512; 8] = std::array::from_fn(|p| {
            let (a, b) = (v[2 * p], v[2 * p + 1]);
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0x44>(a, b),
                _mm512_shuffle_f32x4::<0xEE>(a, b),
            )
        });
        let u: [__m512; 4] = std::array::from_fn(|p| {
            let (a, b) = (w[2 * p], w[2 * p + 1]);
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0x88>(a, b),
                _mm512_shuffle_f32x4::<0xDD>(a, b),
            )
        });
        let s: [__m512; 2] = std::array::from_fn(|p| {
            let (a, b) = (u[2 * p], u[2 * p + 1]);
            _mm512_add_ps(
                _mm512_shuffle_ps::<0x88>(a, b),
                _mm512_shuffle_ps::<0xDD>(a, b),
            )
        });
        let r = _mm512_add_ps(
            _mm512_shuffle_ps::<0x88>(s[0], s[1]),
            _mm512_shuffle_ps::<0xDD>(s[0], s[1]),
        );
        // Maximum over the four 128-bit lanes (document tokens).
        let r = _mm512_max_ps(r, _mm512_shuffle_f32x4::<0x4E>(r, r));
        let r = _mm512_max_ps(r, _mm512_shuffle_f32x4::<0xB1>(r, r));
        _mm512_castps512_ps128(r)
    }

    /// MaxSim on whole, non-empty rows with 8-lane AVX2 registers, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn maxsim_avx2<T: Element>(query: &[f32], doc: &[T], dim: usize) -> f32 {
        const L: usize = 8;
        // 8 accumulators, 4 document registers and a query register fit the 16.
        const Q: usize = 2;
        let full = dim / L * L;
        let tail = dim - full;
        let tail_mask = _mm256_cmpgt_epi32(
            _mm256_set1_epi32(tail as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        );
        let mut total = 0f32;
        for block in query.chunks(QUERY_BLOCK * dim) {
            let qn = block.len() / dim;
            let mut best = [f32::NEG_INFINITY; QUERY_BLOCK];
            for d0 in (0..doc.len() / dim).step_by(DOC_BLOCK) {
                let drows: [&[T]; DOC_BLOCK] = rows(doc, dim, d0);
                let mut dtail = [_mm256_setzero_ps(); DOC_BLOCK];
                if tail > 0 {
                    for (t, row) in dtail.iter_mut().zip(&drows) {
                        let mut chunk = [T::default(); L];
                        chunk[..tail].copy_from_slice(&row[full..]);
                        // SAFETY: AVX2 and F16C are enabled for this function; `chunk`
                        // holds 8.
                        *t = unsafe { T::load8(chunk.as_ptr()) };
                    }
                }
                for q0 in (0..qn).step_by(Q) {
                    let qrows: [&[f32]; Q] = rows(block, dim, q0);
                    let mut acc = [[_mm256_setzero_ps(); DOC_BLOCK]; Q];
                    let mut off = 0;
                    while off < full {
                        let mut d = [_mm256_setzero_ps(); DOC_BLOCK];
                        for (dj, row) in d.iter_mut().zip(&drows) {
                            // SAFETY: `off + 8 <= full <= dim = row.len()`; AVX2 and F16C
                            // are enabled for this function.
                            *dj = unsafe { T::load8(row.as_ptr().add(off)) };
                        }
                        for (ai, row) in acc.iter_mut().zip(&qrows) {
                            // SAFETY: `off + 8 <= full <= dim = row.len()`.
                            let q = unsafe { _mm256_loadu_ps(row.as_ptr().add(off)) };
                            for (a, dj) in ai.iter_mut().zip(&d) {
                                *a = _mm256_fmadd_ps(q, *dj, *a);
                            }
                        }
                        off += L;
                    }
                    if tail > 0 {
                        for (ai, row) in acc.iter_mut().zip(&qrows) {
                            // SAFETY: the mask selects lanes `full..dim` of the row, and
                            // masked-off lanes are neither read nor able to fault.
                            let q =
                                unsafe { _mm256_maskload_ps(row.as_ptr().add(full), tail_mask) };
                            for (a, dj) in ai.iter_mut().zip(&dtail) {
                                *a = _mm256_fmadd_ps(q, *dj, *a);
                            }
                        }
                    }
                    let m = block_max8(&acc);
                    for (b, v) in best[q0..q0 + Q].iter_mut().zip(m) {
                        *b = if v > *b { v } else { *b };
                    }
                }
            }
            total += best[..qn].iter().sum::<f32>();
        }
        total
    }

    /// Element `i` of the result is `max_j` of the sum of the lanes of `acc[i][j]`: one per
    /// query token of the block.
    ///
    /// Level 1 adds the 128-bit halves of each pair of registers, leaving each register's
    /// 4 partial sums in one half; levels 2 and 3 add even to odd floats within halves.
    /// Then float `m` of half `h` holds register `2 m + h`, i.e. `acc[m / 2][2 (m % 2) + h]`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn block_max8(acc: &[[__m256; DOC_BLOCK]; 2]) -> [f32; 2] {
        let v: [__m256; 8] = std::array::from_fn(|k| acc[k / 4][k % 4]);
        let w: [__m256; 4] = std::array::from_fn(|p| {
            let (a, b) = (v[2 * p], v[2 * p + 1]);
            _mm256_add_ps(
                _mm256_permute2f128_ps::<0x20>(a, b),
                _mm256_permute2f128_ps::<0x31>(a, b),
            )
        });
        let s: [__m256; 2] = std::array::from_fn(|p| {
            let (a, b) = (w[2 * p], w[2 * p + 1]);
            _mm256_add_ps(
                _mm256_shuffle_ps::<0x88>(a, b),
                _mm256_shuffle_ps::<0xDD>(a, b),
            )
        });
        let r = _mm256_add_ps(
            _mm256_shuffle_ps::<0x88>(s[0], s[1]),
            _mm256_shuffle_ps::<0xDD>(s[0], s[1]),
        );
        // [q0: d0|d1, q0: d2|d3, q1: d0|d1, q1: d2|d3], then adjacent pairs.
        let m = _mm_max_ps(_mm256_castps256_ps128(r), _mm256_extractf128_ps::<1>(r));
        let m = _mm_max_ps(m, _mm_shuffle_ps::<0xB1>(m, m));
        [_mm_cvtss_f32(m), _mm_cvtss_f32(_mm_movehl_ps(m, m))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};

    fn random(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    /// The document in each stored type, and each one's exact `f32` values.
    fn stored_forms(values: &[f32]) -> [(Vec<f32>, Stored); 3] {
        let h: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
        let b: Vec<bf16> = values.iter().map(|&v| bf16::from_f32(v)).collect();
        [
            (h.iter().map(|v| v.to_f32()).collect(), Stored::F16(h)),
            (b.iter().map(|v| v.to_f32()).collect(), Stored::Bf16(b)),
            (values.to_vec(), Stored::F32(values.to_vec())),
        ]
    }

    /// Owned counterpart of [`StoredVectors`].
    enum Stored {
        F16(Vec<f16>),
        Bf16(Vec<bf16>),
        F32(Vec<f32>),
    }

    impl Stored {
        fn view(&self) -> StoredVectors<'_> {
            match self {
                Stored::F16(v) => StoredVectors::F16(v),
                Stored::Bf16(v) => StoredVectors::Bf16(v),
                Stored::F32(v) => StoredVectors::F32(v),
            }
        }
    }

    /// Scale of the rounding error: MaxSim of the absolute values bounds every dot
    /// product's sum of absolute terms.
    fn magnitude(query: &[f32], doc: &[f32], dim: usize) -> f32 {
        let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
        reference::maxsim(&abs(query), &abs(doc), dim)
    }

    fn all_paths(query: &[f32], doc: StoredVectors<'_>, dim: usize) -> Vec<(RefinePath, f32)> {
        refine_paths_available()
            .into_iter()
            .map(|p| {
                (
                    p,
                    maxsim_stored_with(p, query, doc, dim).unwrap_or(f32::NAN),
                )
            })
            .collect()
    }

    proptest! {
        #[test]
        fn every_path_matches_reference_maxsim_of_the_widened_document(
            dim in prop_oneof![
                prop::sample::select(vec![1usize, 3, 15, 16, 17, 96, 128, 768]),
                1usize..40,
            ],
            nq in prop_oneof![Just(1usize), Just(33), 1usize..40],
            nd in prop_oneof![Just(1usize), Just(70), 1usize..80],
            seed in any::<u64>(),
        ) {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let q = random(&mut rng, nq * dim);
            let values = random(&mut rng, nd * dim);
            for (widened, stored) in stored_forms(&values) {
                let want = reference::maxsim(&q, &widened, dim);
                let tol = 1e-5 * magnitude(&q, &widened, dim);
                prop_assert!((maxsim_stored(&q, stored.view(), dim) - want).abs() <= tol);
                for (path, got) in all_paths(&q, stored.view(), dim) {
                    prop_assert!(
                        (got - want).abs() <= tol,
                        "{path:?} {:?}: got {got}, want {want}", stored.view().len()
                    );
                }
            }
        }

        #[test]
        fn finite_inputs_never_give_nan(
            dim in prop_oneof![prop::sample::select(vec![1usize, 7, 16, 17, 128]), 1usize..40],
            nq in 1usize..40,
            nd in 1usize..40,
            seed in any::<u64>(),
        ) {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            // Any finite binary16, subnormals and both zeros included, against queries up to
            // the binary16 range: no product or sum can overflow.
            let h: Vec<f16> = (0..nd * dim)
                .map(|_| loop {
                    let v = f16::from_bits(rng.random());
                    if v.is_finite() {
                        break v;
                    }
                })
                .collect();
            let q: Vec<f32> = (0..nq * dim).map(|_| rng.random_range(-65504.0..65504.0)).collect();
            // bfloat16 and f32 over magnitudes 1e-40 to 1e15: products stay below 1e20.
            let wide: Vec<f32> = (0..nd * dim)
                .map(|_| rng.random_range(-1.0f32..1.0) * 10f32.powi(rng.random_range(-40..15)))
                .collect();
            let b: Vec<bf16> = wide.iter().map(|&v| bf16::from_f32(v)).collect();
            let docs = [StoredVectors::F16(&h), StoredVectors::Bf16(&b), StoredVectors::F32(&wide)];
            for doc in docs {
                for (path, got) in all_paths(&q, doc, dim) {
                    prop_assert!(got.is_finite(), "{path:?}: {got}");
                }
            }
        }
    }

    #[test]
    fn empty_query_scores_zero() {
        let d = [f16::ONE; 6];
        for (path, got) in all_paths(&[], StoredVectors::F16(&d), 3) {
            assert_eq!(got, 0.0, "{path:?}");
        }
    }

    #[test]
    fn empty_document_scores_zero_not_negative_infinity() {
        let q = [1.0f32; 6];
        for doc in [
            StoredVectors::F16(&[]),
            StoredVectors::Bf16(&[]),
            StoredVectors::F32(&[]),
        ] {
            assert!(doc.is_empty());
            for (path, got) in all_paths(&q, doc, 3) {
                assert_eq!(got, 0.0, "{path:?}");
            }
        }
        assert_eq!(maxsim_stored(&q, StoredVectors::F32(&q), 0), 0.0);
    }

    /// A one-hot query picks one stored value, times 1, plus zeros: the result is that
    /// value widened, exactly. Covers every finite binary16 and bfloat16 value, at dim 17
    /// so that each lane of the full chunk and the tail is used.
    #[test]
    fn every_finite_f16_and_bf16_value_is_widened_exactly() {
        const DIM: usize = 17;
        let h: Vec<f16> = (0..=u16::MAX)
            .map(f16::from_bits)
            .filter(|v| v.is_finite())
            .collect();
        let b: Vec<bf16> = (0..=u16::MAX)
            .map(bf16::from_bits)
            .filter(|v| v.is_finite())
            .collect();
        let widened_h: Vec<f32> = h.iter().map(|v| v.to_f32()).collect();
        let widened_b: Vec<f32> = b.iter().map(|v| v.to_f32()).collect();
        for path in refine_paths_available() {
            for (doc, widened) in [
                (StoredVectors::F16(&h), &widened_h),
                (StoredVectors::Bf16(&b), &widened_b),
            ] {
                let rows = widened.len() / DIM;
                for r in 0..rows {
                    let row = match doc {
                        StoredVectors::F16(v) => StoredVectors::F16(&v[r * DIM..(r + 1) * DIM]),
                        StoredVectors::Bf16(v) => StoredVectors::Bf16(&v[r * DIM..(r + 1) * DIM]),
                        StoredVectors::F32(v) => StoredVectors::F32(&v[r * DIM..(r + 1) * DIM]),
                    };
                    for k in 0..DIM {
                        let mut q = [0f32; DIM];
                        q[k] = 1.0;
                        let got = maxsim_stored_with(path, &q, row, DIM);
                        assert_eq!(
                            got,
                            Some(widened[r * DIM + k]),
                            "{path:?} {doc:?} row {r} lane {k}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn queries_longer_than_one_query_block_are_scored_in_blocks() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for (nq, dim, nd) in [(QUERY_BLOCK + 1, 17, 9), (2 * QUERY_BLOCK + 45, 8, 5)] {
            let q = random(&mut rng, nq * dim);
            let values = random(&mut rng, nd * dim);
            for (widened, stored) in stored_forms(&values) {
                let want = reference::maxsim(&q, &widened, dim);
                let tol = 1e-5 * magnitude(&q, &widened, dim);
                for (path, got) in all_paths(&q, stored.view(), dim) {
                    assert!(
                        (got - want).abs() <= tol,
                        "{path:?}: got {got}, want {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn portable_path_is_always_available() {
        assert!(RefinePath::Portable.is_available());
        assert_eq!(refine_paths_available().last(), Some(&RefinePath::Portable));
        let q = [0.5f32, 2.0];
        let d = [f16::from_f32(4.0), f16::from_f32(1.0)];
        assert_eq!(
            maxsim_stored_with(RefinePath::Portable, &q, StoredVectors::F16(&d), 2),
            Some(4.0)
        );
    }

    /// `cargo test --release -p tessera-kernels refine_timing -- --ignored --nocapture`
    #[test]
    #[ignore = "timing, not a check"]
    fn refine_timing_per_path() {
        let (nq, nd, dim) = (32, 100, 128);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let q = random(&mut rng, nq * dim);
        let values = random(&mut rng, nd * dim);
        for (_, stored) in stored_forms(&values) {
            for path in refine_paths_available() {
                let doc = stored.view();
                let reps = if path == RefinePath::Portable {
                    2_000
                } else {
                    20_000
                };
                let mut sink = 0f32;
                let start = std::time::Instant::now();
                for _ in 0..reps {
                    sink +=
                        maxsim_stored_with(path, std::hint::black_box(&q), doc, dim).unwrap_or(0.0);
                }
                let per = start.elapsed() / reps;
                let kind = match doc {
                    StoredVectors::F16(_) => "f16",
                    StoredVectors::Bf16(_) => "bf16",
                    StoredVectors::F32(_) => "f32",
                };
                eprintln!(
                    "{kind:4} {path:?}: {per:?} per call (nq {nq}, nd {nd}, dim {dim}; {sink})"
                );
            }
        }
    }
}
