//! Exact MaxSim against the stored original vectors (binary16, bfloat16 or `f32`): the
//! "refine" stage that re-scores a compressed search's best candidates.
//!
//! `MaxSim(Q, D) = sum_i max_j q_i · d_j` over query tokens `q_i` and document tokens `d_j`.
//! Widening a stored value to `f32` is exact: a binary16 value has an 11-bit significand
//! and an exponent in -24..=15 (subnormals included), so it is a normal `f32` (24 bits,
//! -126..=127); a bfloat16 is by definition the upper half of an `f32`, so
//! `f32::from_bits((b as u32) << 16)` is its value.
//!
//! One arithmetic on every path. Each dot product is a chain of fused multiply-adds over
//! the dimensions in order, starting from zero ([`dot_fused`]); each query token keeps the
//! largest of its dot products; the maxima are added in query order. The vector paths
//! ([`crate::RefineQuery`]) compute many chains at once, one per register lane, and so
//! return the same bits as the portable path, the scalar [`dot_fused`] and each other: a
//! score does not depend on the CPU, and an explanation built from [`dot_fused`] adds up
//! to the search's score exactly. The only rounding is in those products and sums; the
//! tests bound it against [`crate::reference::maxsim`].
#![allow(unsafe_code)]

use half::{bf16, f16};

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
/// token, computed in `f32` from the exactly widened stored values, the same bits on every
/// path (module docs). Scoring many documents against one query, prepare it once with
/// [`crate::RefineQuery`] instead.
///
/// An empty query, an empty document and `dim == 0` all score 0 (an empty document has no
/// best token; 0 keeps `-inf` out of callers' sums). Values past the last whole row of
/// either input are ignored.
pub fn maxsim_stored(query: &[f32], doc: StoredVectors<'_>, dim: usize) -> f32 {
    crate::RefineQuery::new(query, dim).maxsim(doc)
}

/// [`maxsim_stored`] on the given path; `None` when this CPU cannot run it.
pub fn maxsim_stored_with(
    path: RefinePath,
    query: &[f32],
    doc: StoredVectors<'_>,
    dim: usize,
) -> Option<f32> {
    crate::RefineQuery::new(query, dim).maxsim_with(path, doc)
}

/// The dot product of two rows as every refine path computes it: `a_0 b_0 + a_1 b_1 + …`,
/// one fused multiply-add per term in order, starting from zero.
pub fn dot_fused(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has FMA, detected just above.
        return unsafe { dot_fused_fma(a, b) };
    }
    dot_fused_body(a, b)
}

/// [`dot_fused`] where `mul_add` is one instruction rather than a call to the C library's
/// software `fmaf` (the same value either way: a fused multiply-add is exactly rounded).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
fn dot_fused_fma(a: &[f32], b: &[f32]) -> f32 {
    dot_fused_body(a, b)
}

#[inline(always)]
fn dot_fused_body(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0.0, |acc, (x, y)| x.mul_add(*y, acc))
}

/// A stored value type and how each path widens it to `f32`.
pub(crate) trait Element: Copy + Default {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::reference;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};

    /// Values uniform in `-1..1` (also the prepared kernel's tests' inputs).
    pub(crate) fn random(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<f32> {
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
    fn long_queries_match_the_reference() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for (nq, dim, nd) in [(129, 17, 9), (301, 8, 5)] {
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

    proptest! {
        /// The module's promise: every path, and the scalar chain of [`dot_fused`] with
        /// maxima added in query order, give the same bits.
        #[test]
        fn every_path_gives_the_bits_of_the_scalar_fused_chain(
            dim in prop_oneof![prop::sample::select(vec![1usize, 7, 16, 17, 128]), 1usize..40],
            nq in prop_oneof![Just(1usize), Just(32), Just(33), 1usize..50],
            nd in prop_oneof![Just(1usize), Just(9), 1usize..30],
            seed in any::<u64>(),
        ) {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let q = random(&mut rng, nq * dim);
            let values = random(&mut rng, nd * dim);
            for (widened, stored) in stored_forms(&values) {
                let want: f32 = q
                    .chunks_exact(dim)
                    .map(|qi| {
                        widened
                            .chunks_exact(dim)
                            .map(|d| dot_fused(qi, d))
                            .fold(f32::NEG_INFINITY, f32::max)
                    })
                    .fold(0.0, |a, m| a + m);
                for (path, got) in all_paths(&q, stored.view(), dim) {
                    prop_assert_eq!(got.to_bits(), want.to_bits(), "{:?}", path);
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
