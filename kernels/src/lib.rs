//! Tessera's compute kernels: slices in, numbers out; nothing here knows about files.
//!
//! Every fast path has a plain counterpart in [`reference`] and is tested against it.
//! Functions taking `threads` use that many rayon workers (`0` means all, `1` runs inline).

mod aligned;
mod approx;
mod compressed;
pub mod gpu;
mod int8;
pub mod reference;
mod refine;
mod refine_query;
mod residual;
mod simd;

pub use aligned::AlignedVec;
pub use approx::CentroidScores8;
pub use compressed::{LANES, QueryLut, padded_tokens};
pub use int8::{Int8Centroids, Int8Path, Int8Query, int8_paths_available, score_error_bound};
pub use refine::{
    RefinePath, StoredVectors, dot_fused, maxsim_stored, maxsim_stored_with, refine_paths_available,
};
pub use refine_query::RefineQuery;
pub use residual::{ResidualCodec, packed_len};
pub use simd::{dot, max_into, prefetch};

use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

fn par(threads: usize) -> Par {
    if threads == 1 {
        Par::Seq
    } else {
        Par::rayon(threads)
    }
}

/// `out[i * n + j] = a_i · b_j` for `a` `[m, dim]` and `b` `[n, dim]`, row-major.
pub fn matmul_nt(a: &[f32], b: &[f32], dim: usize, out: &mut [f32], threads: usize) {
    let m = a.len() / dim;
    let n = b.len() / dim;
    debug_assert_eq!(out.len(), m * n);
    if m == 0 || n == 0 {
        return;
    }
    // `out` row-major [m, n] is column-major [n, m]: compute B A^T into it. faer 0.24's
    // small-matrix kernels write past the end of row-major (strided) destinations, so the
    // destination must be column-major.
    let lhs = MatRef::from_row_major_slice(b, n, dim);
    let rhs = MatRef::from_row_major_slice(a, m, dim).transpose();
    let dst = MatMut::from_column_major_slice_mut(out, n, m);
    faer::linalg::matmul::matmul(dst, Accum::Replace, lhs, rhs, 1.0f32, par(threads));
}

/// MaxSim of one query against one document (row-major `[nq, dim]` and `[nd, dim]`).
pub fn maxsim(query: &[f32], doc: &[f32], dim: usize) -> f32 {
    let nq = query.len() / dim;
    let mut best = vec![f32::NEG_INFINITY; nq];
    for d in doc.chunks_exact(dim) {
        for (b, q) in best.iter_mut().zip(query.chunks_exact(dim)) {
            let s = dot(q, d);
            if s > *b {
                *b = s;
            }
        }
    }
    best.iter().sum()
}

/// MaxSim of one query against many documents whose rows are concatenated in `docs`, with
/// document `i` spanning rows `offsets[i]..offsets[i + 1]`. Uses one matrix product per
/// block of rows, which is how the exact re-ranking stage reaches GEMM speed.
pub fn maxsim_many(query: &[f32], docs: &[f32], offsets: &[usize], dim: usize, scores: &mut [f32]) {
    let nq = query.len() / dim;
    let n_rows = docs.len() / dim;
    debug_assert_eq!(offsets.len(), scores.len() + 1);
    if nq == 0 {
        scores.fill(0.0);
        return;
    }
    let mut sim = vec![0f32; nq * n_rows];
    matmul_nt(query, docs, dim, &mut sim, 1);
    let mut best = vec![0f32; nq];
    for (i, s) in scores.iter_mut().enumerate() {
        let (lo, hi) = (offsets[i], offsets[i + 1]);
        best.fill(f32::NEG_INFINITY);
        for (q, b) in best.iter_mut().enumerate() {
            for &v in &sim[q * n_rows + lo..q * n_rows + hi] {
                if v > *b {
                    *b = v;
                }
            }
        }
        *s = best.iter().sum();
    }
}

/// Nearest center (squared L2) of every point, through blocked matrix products:
/// `argmin |p - c|^2 = argmax (p·c - |c|^2 / 2)`. Ties go to the lower index.
pub fn nearest_centers(points: &[f32], centers: &[f32], dim: usize, threads: usize) -> Vec<u32> {
    let n = points.len() / dim;
    let k = centers.len() / dim;
    if n == 0 || k == 0 {
        return vec![0; n];
    }
    let half_norms: Vec<f32> = centers.chunks_exact(dim).map(|c| 0.5 * dot(c, c)).collect();
    // Blocks keep the score matrix small (BLOCK x k floats) and give rayon work units.
    const BLOCK: usize = 256;
    let mut out = vec![0u32; n];
    let run = |(pts, dst): (&[f32], &mut [u32])| {
        let rows = pts.len() / dim;
        let mut sim = vec![0f32; rows * k];
        matmul_nt(pts, centers, dim, &mut sim, 1);
        for (r, o) in dst.iter_mut().enumerate() {
            let row = &sim[r * k..(r + 1) * k];
            let mut best = (f32::NEG_INFINITY, 0u32);
            for (j, (&s, &h)) in row.iter().zip(&half_norms).enumerate() {
                let v = s - h;
                if v > best.0 {
                    best = (v, j as u32);
                }
            }
            *o = best.1;
        }
    };
    let blocks = points.chunks(BLOCK * dim).zip(out.chunks_mut(BLOCK));
    if threads == 1 {
        blocks.for_each(run);
    } else {
        blocks.collect::<Vec<_>>().into_par_iter().for_each(run);
    }
    out
}

/// Indices of the `k` largest values, best first; equal values in index order.
/// Runs in linear time plus `k log k`.
pub fn top_k(values: &[f32], k: usize) -> Vec<u32> {
    let cmp = |a: &u32, b: &u32| {
        values[*b as usize]
            .total_cmp(&values[*a as usize])
            .then(a.cmp(b))
    };
    let mut idx: Vec<u32> = (0..values.len() as u32).collect();
    if k < idx.len() && k > 0 {
        idx.select_nth_unstable_by(k - 1, cmp);
        idx.truncate(k);
    }
    idx.truncate(k);
    idx.sort_unstable_by(cmp);
    idx
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};

    fn random(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    proptest! {
        #[test]
        fn maxsim_matches_reference(nq in 1usize..20, nd in 1usize..50, dim in 1usize..70, seed in any::<u64>()) {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let q = random(&mut rng, nq * dim);
            let d = random(&mut rng, nd * dim);
            let slow = reference::maxsim(&q, &d, dim);
            prop_assert!((maxsim(&q, &d, dim) - slow).abs() <= 1e-4 * (1.0 + slow.abs()));
        }

        #[test]
        fn maxsim_many_matches_reference(
            nq in 1usize..12,
            lens in prop::collection::vec(1usize..30, 1..12),
            dim in 1usize..50,
            seed in any::<u64>(),
        ) {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let q = random(&mut rng, nq * dim);
            let mut offsets = vec![0usize];
            for l in &lens { offsets.push(offsets.last().copied().unwrap_or(0) + l); }
            let docs = random(&mut rng, offsets[lens.len()] * dim);
            let mut scores = vec![0f32; lens.len()];
            maxsim_many(&q, &docs, &offsets, dim, &mut scores);
            for i in 0..lens.len() {
                let slow = reference::maxsim(&q, &docs[offsets[i] * dim..offsets[i + 1] * dim], dim);
                prop_assert!((scores[i] - slow).abs() <= 1e-4 * (1.0 + slow.abs()));
            }
        }

        #[test]
        fn nearest_centers_matches_reference(n in 0usize..600, k in 1usize..40, dim in 1usize..20, seed in any::<u64>()) {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let p = random(&mut rng, n * dim);
            let c = random(&mut rng, k * dim);
            let fast = nearest_centers(&p, &c, dim, 2);
            let slow = reference::nearest(&p, &c, dim);
            // Distances may tie within rounding; then either choice is equally near.
            for (i, (a, b)) in fast.iter().zip(&slow).enumerate() {
                if a != b {
                    let pt = &p[i * dim..(i + 1) * dim];
                    let da: f32 = pt.iter().zip(&c[*a as usize * dim..]).map(|(x, y)| (x - y) * (x - y)).sum();
                    let db: f32 = pt.iter().zip(&c[*b as usize * dim..]).map(|(x, y)| (x - y) * (x - y)).sum();
                    prop_assert!((da - db).abs() < 1e-4, "point {} got {} (d={}) want {} (d={})", i, a, da, b, db);
                }
            }
        }

        #[test]
        fn top_k_matches_reference(v in prop::collection::vec(prop::sample::select(vec![0.0f32, 1.0, 2.0, 0.5, -1.0]), 0..200), k in 0usize..50) {
            prop_assert_eq!(top_k(&v, k), reference::top_k(&v, k));
        }
    }

    #[test]
    fn one_token_query_and_document() {
        let q = [0.6f32, 0.8];
        let d = [1.0f32, 0.0];
        assert!((maxsim(&q, &d, 2) - 0.6).abs() < 1e-6);
        let mut s = [0f32];
        maxsim_many(&q, &d, &[0, 1], 2, &mut s);
        assert!((s[0] - 0.6).abs() < 1e-6);
    }
}
