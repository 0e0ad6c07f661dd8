//! The refine stage's kernel when one query scores many documents: [`RefineQuery`]
//! prepares the query once (transposed to `[dim, stride]`, `stride` its token count rounded
//! up to 16) so that each document costs only fused multiply-adds, with no horizontal sums.
//!
//! Loop shape (AVX-512F). A block of [`DOC_ROWS`] (8) document tokens is widened to `f32`
//! once into the query's scratch. For each pair of 16-lane query chunks (32 query tokens),
//! 16 accumulators hold `q_i · d_r` for the 8 tokens `r` and the 32 query tokens `i`, one
//! query token per lane; each dimension `d` adds `d_r[d] (broadcast) × qt[d][i..i + 16]`:
//! two query loads and eight broadcast loads feed sixteen FMAs, so the FMA ports, not the
//! loads, bound it. The maximum over the block's tokens is then a vertical `max` into a
//! running maximum per query chunk, and the only horizontal step is the final sum of each
//! query token's maximum. [`crate::refine`]'s direct kernels instead reduce 16 dot products
//! across lanes per 4 × 4 block (shuffles on the same port as half the FMAs) and widen each
//! document value once per 4 query tokens; preparing the query removes both. Timed in one
//! run by `refine_timing_per_path` (`refine.rs`): BENCHMARKS.md, "Exact answers".
//!
//! The AVX2 path has the same shape with 8 lanes, one query chunk per pass; the portable
//! path runs the scalar chains of [`crate::dot_fused`], eight at a time. All give the same bits
//! ([`crate::refine`], "One arithmetic on every path").
//!
//! Why `unsafe` is allowed here: the vector path is a `#[target_feature]` function, unsafe
//! to call unless the CPU has AVX-512F (the caller detects it first), and its loads use raw
//! pointers into rows whose bounds are established before each loop.
#![allow(unsafe_code)]

use crate::refine::{Element, RefinePath, StoredVectors};

/// Document tokens widened and scored together.
const DOC_ROWS: usize = 8;
/// Query tokens per AVX-512 register.
const LANES: usize = 16;

/// A query prepared for scoring many documents' stored vectors ([`RefineQuery::maxsim`]).
#[derive(Clone, Debug, Default)]
pub struct RefineQuery {
    query: Vec<f32>,
    dim: usize,
    nq: usize,
    stride: usize,
    /// `[dim, stride]`: column `i` is query token `i`, zero past the last token.
    transposed: crate::AlignedVec<f32>,
    /// `[DOC_ROWS, dim]` widened document tokens, reused across documents.
    widened: Vec<f32>,
    /// `[stride]` running maxima of one document, reused across documents.
    maxima: Vec<f32>,
}

impl RefineQuery {
    /// Prepares `query` (`[nq, dim]`, row-major; values past the last whole row ignored).
    pub fn new(query: &[f32], dim: usize) -> Self {
        let nq = query.len().checked_div(dim).unwrap_or(0);
        let stride = nq.div_ceil(LANES) * LANES;
        let mut transposed = crate::AlignedVec::filled(dim * stride, 0f32);
        for (i, q) in query.chunks_exact(dim.max(1)).take(nq).enumerate() {
            for (d, &v) in q.iter().enumerate() {
                transposed[d * stride + i] = v;
            }
        }
        RefineQuery {
            query: query[..nq * dim].to_vec(),
            dim,
            nq,
            stride,
            transposed,
            widened: vec![0f32; DOC_ROWS * dim],
            maxima: vec![0f32; stride],
        }
    }

    /// MaxSim of this query against a document's stored vectors, on the fastest path this
    /// CPU has; the same value as [`crate::maxsim_stored`] up to rounding.
    pub fn maxsim(&mut self, doc: StoredVectors<'_>) -> f32 {
        for path in [RefinePath::Avx512, RefinePath::Avx2] {
            if let Some(score) = self.maxsim_with(path, doc) {
                return score;
            }
        }
        self.maxsim_with(RefinePath::Portable, doc).unwrap_or(0.0)
    }

    /// [`RefineQuery::maxsim`] on the given path; `None` when this CPU cannot run it.
    pub fn maxsim_with(&mut self, path: RefinePath, doc: StoredVectors<'_>) -> Option<f32> {
        if !path.is_available() {
            return None;
        }
        let nd = doc.len().checked_div(self.dim).unwrap_or(0);
        if self.nq == 0 || nd == 0 {
            return Some(0.0);
        }
        let n = nd * self.dim;
        Some(match doc {
            StoredVectors::F16(d) => self.dispatch(path, &d[..n]),
            StoredVectors::Bf16(d) => self.dispatch(path, &d[..n]),
            StoredVectors::F32(d) => self.dispatch(path, &d[..n]),
        })
    }

    /// Runs an available path on whole, non-empty rows.
    fn dispatch<T: Element>(&mut self, path: RefinePath, doc: &[T]) -> f32 {
        match path {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the caller checked `path.is_available()`: this CPU has AVX-512F.
            RefinePath::Avx512 => unsafe { x86::maxsim_avx512(self, doc) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the caller checked `path.is_available()`: AVX2, FMA and F16C.
            RefinePath::Avx2 => unsafe { x86::maxsim_avx2(self, doc) },
            _ => self.maxsim_portable(doc),
        }
    }

    /// The scalar chain per pair: the definition the vector paths reproduce.
    fn maxsim_portable<T: Element>(&mut self, doc: &[T]) -> f32 {
        let dim = self.dim;
        let q = &self.query;
        self.maxima.fill(f32::NEG_INFINITY);
        let row = &mut self.widened[..dim];
        for d in doc.chunks_exact(dim) {
            for (w, &v) in row.iter_mut().zip(d) {
                *w = v.widen();
            }
            // Eight chains at a time, interleaved so that each waits on its own previous
            // step only (one chain alone is bound by the FMA's latency).
            for (maxima, qs) in self.maxima[..self.nq].chunks_mut(8).zip(q.chunks(8 * dim)) {
                let mut acc = [0f32; 8];
                for (d, &x) in row.iter().enumerate() {
                    for (a, qi) in acc.iter_mut().zip(qs.chunks_exact(dim)) {
                        *a = x.mul_add(qi[d], *a);
                    }
                }
                for (m, &s) in maxima.iter_mut().zip(&acc) {
                    *m = if s > *m { s } else { *m };
                }
            }
        }
        sum_maxima(&self.maxima[..self.nq])
    }
}

/// The query tokens' maxima added in query order (the same on every path).
fn sum_maxima(maxima: &[f32]) -> f32 {
    maxima.iter().fold(0.0, |a, &m| a + m)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{DOC_ROWS, LANES, RefineQuery, sum_maxima};
    use crate::refine::Element;
    use std::arch::x86_64::*;

    /// Widens rows `r0..r0 + DOC_ROWS` of `doc` into `q.widened` (rows past the last
    /// repeat it, which cannot change a maximum), `W` values at a time with `load`.
    #[inline(always)]
    fn widen_block<T: Element, const W: usize>(
        q: &mut RefineQuery,
        doc: &[T],
        r0: usize,
        store: impl Fn(*mut f32, *const T),
    ) {
        let dim = q.dim;
        let last = doc.len() / dim - 1;
        let full = dim / W * W;
        for r in 0..DOC_ROWS {
            let row = (r0 + r).min(last);
            let src = &doc[row * dim..(row + 1) * dim];
            let dst = &mut q.widened[r * dim..(r + 1) * dim];
            for off in (0..full).step_by(W) {
                // `off + W <= full <= dim`, the length of both rows.
                store(dst[off..off + W].as_mut_ptr(), src[off..off + W].as_ptr());
            }
            for (w, &v) in dst[full..].iter_mut().zip(&src[full..]) {
                *w = v.widen();
            }
        }
    }

    /// MaxSim on whole, non-empty rows with 16-lane registers: per dimension, two query
    /// loads and eight broadcasts feed sixteen FMAs (two query chunks × eight tokens).
    #[target_feature(enable = "avx512f")]
    pub(super) fn maxsim_avx512<T: Element>(q: &mut RefineQuery, doc: &[T]) -> f32 {
        let chunks = q.stride / LANES;
        q.maxima.fill(f32::NEG_INFINITY);
        for r0 in (0..doc.len() / q.dim).step_by(DOC_ROWS) {
            widen_block::<T, LANES>(q, doc, r0, |dst, src| {
                // SAFETY: 16 readable values at `src` and 16 writable floats at `dst`
                // (`widen_block`); AVX-512F is enabled in the calling function.
                unsafe { _mm512_storeu_ps(dst, T::load16(src)) }
            });
            let mut c = 0;
            while c + 2 <= chunks {
                block512::<2>(q, c);
                c += 2;
            }
            if c < chunks {
                block512::<1>(q, c);
            }
        }
        sum_maxima(&q.maxima[..q.nq])
    }

    /// Raises the running maxima of query chunks `c..c + J` to the widened block's dot
    /// products.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn block512<const J: usize>(q: &mut RefineQuery, c: usize) {
        let (dim, stride) = (q.dim, q.stride);
        assert!(q.transposed.len() >= dim * stride && (c + J) * LANES <= stride);
        assert!(q.widened.len() >= DOC_ROWS * dim && q.maxima.len() == stride);
        let (qt, w) = (q.transposed.as_ptr(), q.widened.as_ptr());
        let mut acc = [[_mm512_setzero_ps(); J]; DOC_ROWS];
        for d in 0..dim {
            // SAFETY: `d < dim` and `(c + J) * 16 <= stride` (asserted), so each load lies
            // in `transposed` (`[dim, stride]`); the broadcasts read `widened[r * dim + d]`
            // with `r < DOC_ROWS`, inside its `DOC_ROWS * dim` floats.
            unsafe {
                let qv: [__m512; J] =
                    std::array::from_fn(|j| _mm512_loadu_ps(qt.add(d * stride + (c + j) * LANES)));
                for (r, a) in acc.iter_mut().enumerate() {
                    let b = _mm512_set1_ps(*w.add(r * dim + d));
                    for j in 0..J {
                        a[j] = _mm512_fmadd_ps(b, qv[j], a[j]);
                    }
                }
            }
        }
        for j in 0..J {
            let m = acc.iter().fold(_mm512_set1_ps(f32::NEG_INFINITY), |m, a| {
                _mm512_max_ps(m, a[j])
            });
            let slot = q.maxima[(c + j) * LANES..(c + j + 1) * LANES].as_mut_ptr();
            // SAFETY: `slot` is 16 floats of `maxima`.
            unsafe { _mm512_storeu_ps(slot, _mm512_max_ps(_mm512_loadu_ps(slot), m)) };
        }
    }

    /// MaxSim on whole, non-empty rows with 8-lane registers: per dimension, one query load
    /// and eight broadcasts feed eight FMAs (one query chunk × eight tokens; two chunks
    /// would need more than the 16 registers).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn maxsim_avx2<T: Element>(q: &mut RefineQuery, doc: &[T]) -> f32 {
        const L: usize = 8;
        let (dim, stride) = (q.dim, q.stride);
        q.maxima.fill(f32::NEG_INFINITY);
        for r0 in (0..doc.len() / dim).step_by(DOC_ROWS) {
            widen_block::<T, L>(q, doc, r0, |dst, src| {
                // SAFETY: 8 readable values at `src` and 8 writable floats at `dst`
                // (`widen_block`); AVX2 and F16C are enabled in the calling function.
                unsafe { _mm256_storeu_ps(dst, T::load8(src)) }
            });
            assert!(q.transposed.len() >= dim * stride && stride % L == 0);
            assert!(q.widened.len() >= DOC_ROWS * dim && q.maxima.len() == stride);
            let (qt, w) = (q.transposed.as_ptr(), q.widened.as_ptr());
            for c in (0..stride).step_by(L) {
                let mut acc = [_mm256_setzero_ps(); DOC_ROWS];
                for d in 0..dim {
                    // SAFETY: `d < dim` and `c + 8 <= stride` (asserted): the load lies in
                    // `transposed`; the broadcasts read `widened[r * dim + d]`, `r <
                    // DOC_ROWS`, inside its `DOC_ROWS * dim` floats.
                    unsafe {
                        let qv = _mm256_loadu_ps(qt.add(d * stride + c));
                        for (r, a) in acc.iter_mut().enumerate() {
                            *a = _mm256_fmadd_ps(_mm256_set1_ps(*w.add(r * dim + d)), qv, *a);
                        }
                    }
                }
                let m = acc.iter().fold(_mm256_set1_ps(f32::NEG_INFINITY), |m, a| {
                    _mm256_max_ps(m, *a)
                });
                let slot = q.maxima[c..c + L].as_mut_ptr();
                // SAFETY: `slot` is 8 floats of `maxima` (`c + 8 <= stride`).
                unsafe { _mm256_storeu_ps(slot, _mm256_max_ps(_mm256_loadu_ps(slot), m)) };
            }
        }
        sum_maxima(&q.maxima[..q.nq])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference;
    use crate::refine::refine_paths_available;
    use crate::refine::tests::random;
    use half::{bf16, f16};
    use proptest::prelude::*;
    use rand::SeedableRng;

    proptest! {
        #[test]
        fn prepared_query_matches_reference_maxsim_on_every_path(
            dim in prop_oneof![prop::sample::select(vec![1usize, 3, 16, 17, 96, 128, 768]), 1usize..40],
            nq in prop_oneof![Just(1usize), Just(16), Just(32), Just(33), Just(129), 1usize..50],
            nd in prop_oneof![Just(1usize), Just(8), Just(9), 1usize..40],
            seed in any::<u64>(),
        ) {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let query = random(&mut rng, nq * dim);
            let values = random(&mut rng, nd * dim);
            let h: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
            let b: Vec<bf16> = values.iter().map(|&v| bf16::from_f32(v)).collect();
            let wh: Vec<f32> = h.iter().map(|v| v.to_f32()).collect();
            let wb: Vec<f32> = b.iter().map(|v| v.to_f32()).collect();
            let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
            let mut prepared = RefineQuery::new(&query, dim);
            for (doc, widened) in [
                (StoredVectors::F16(&h), &wh),
                (StoredVectors::Bf16(&b), &wb),
                (StoredVectors::F32(&values), &values),
            ] {
                let want = reference::maxsim(&query, widened, dim);
                let tol = 1e-5 * reference::maxsim(&abs(&query), &abs(widened), dim);
                for path in refine_paths_available() {
                    let got = prepared.maxsim_with(path, doc).unwrap_or(f32::NAN);
                    prop_assert!((got - want).abs() <= tol, "{path:?}: got {got}, want {want}");
                }
                prop_assert!((prepared.maxsim(doc) - want).abs() <= tol);
            }
        }
    }

    #[test]
    fn empty_query_or_document_scores_zero() {
        let d = [f16::ONE; 6];
        for path in refine_paths_available() {
            let mut empty = RefineQuery::new(&[], 3);
            assert_eq!(empty.maxsim_with(path, StoredVectors::F16(&d)), Some(0.0));
            let mut q = RefineQuery::new(&[1.0; 6], 3);
            assert_eq!(q.maxsim_with(path, StoredVectors::F16(&[])), Some(0.0));
        }
    }

    /// `cargo test --release -p tessera-kernels prepared_refine_timing -- --ignored --nocapture`:
    /// each path on one prepared query, in short alternating rounds, the fastest round of
    /// each kept (on a shared machine the minimum is the figure least disturbed).
    #[test]
    #[ignore = "timing, not a check"]
    fn prepared_refine_timing() {
        let (nq, nd, dim) = (32, 96, 128);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let query = random(&mut rng, nq * dim);
        let docs: Vec<Vec<f16>> = (0..64)
            .map(|_| {
                random(&mut rng, nd * dim)
                    .iter()
                    .map(|&v| f16::from_f32(v))
                    .collect()
            })
            .collect();
        let mut prepared = RefineQuery::new(&query, dim);
        let paths = refine_paths_available();
        let mut fastest = vec![std::time::Duration::MAX; paths.len()];
        let mut sink = 0f32;
        let reps = 500u32;
        for _ in 0..40 {
            for (p, best) in paths.iter().zip(fastest.iter_mut()) {
                let t = std::time::Instant::now();
                for i in 0..reps as usize {
                    let doc = StoredVectors::F16(&docs[i % docs.len()]);
                    sink += prepared.maxsim_with(*p, doc).unwrap_or(0.0);
                }
                *best = (*best).min(t.elapsed() / reps);
            }
        }
        for (p, t) in paths.iter().zip(&fastest) {
            eprintln!("{p:?}: {t:?} per document (nq {nq}, nd {nd}, dim {dim}, f16; {sink})");
        }
    }
}
