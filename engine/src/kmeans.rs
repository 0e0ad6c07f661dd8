//! Seeded k-means (Lloyd's algorithm) over row-major points.

use rand::Rng;
use rand::seq::index::sample;

/// Runs `iters` Lloyd iterations from `k` distinct random points; returns the centres and
/// every point's final assignment. Deterministic for a given `rng` state and input.
/// Empty clusters are re-seeded from a point of the largest cluster so all `k` stay in use.
pub(crate) fn kmeans(
    points: &[f32],
    dim: usize,
    k: usize,
    iters: u32,
    rng: &mut impl Rng,
    threads: usize,
) -> (Vec<f32>, Vec<u32>) {
    let n = points.len() / dim;
    let k = k.clamp(1, n.max(1));
    let mut centers = seed_plus_plus(points, dim, k, rng);
    let mut assign = vec![0u32; n];
    for _ in 0..iters {
        assign = tessera_kernels::nearest_centers(points, &centers, dim, threads);
        let mut sums = vec![0f64; k * dim];
        let mut counts = vec![0usize; k];
        for (p, &a) in points.chunks_exact(dim).zip(&assign) {
            counts[a as usize] += 1;
            for (s, &x) in sums[a as usize * dim..(a as usize + 1) * dim]
                .iter_mut()
                .zip(p)
            {
                *s += f64::from(x);
            }
        }
        for c in 0..k {
            if counts[c] > 0 {
                for d in 0..dim {
                    centers[c * dim + d] = (sums[c * dim + d] / counts[c] as f64) as f32;
                }
            }
        }
        for c in 0..k {
            if counts[c] == 0 {
                let (big, _) = counts
                    .iter()
                    .enumerate()
                    .max_by_key(|&(i, &n)| (n, std::cmp::Reverse(i)))
                    .unwrap_or((0, &0));
                let members: Vec<usize> = (0..n).filter(|&i| assign[i] as usize == big).collect();
                if let Some(&p) = members.get(rng.random_range(0..members.len().max(1))) {
                    centers[c * dim..(c + 1) * dim]
                        .copy_from_slice(&points[p * dim..(p + 1) * dim]);
                    // Nudge so the twin centres split the cluster at the next assignment.
                    for d in 0..dim {
                        centers[c * dim + d] += 1e-4 * (rng.random::<f32>() - 0.5);
                    }
                    counts[big] -= 1;
                    counts[c] = 1;
                }
            }
        }
    }
    assign = tessera_kernels::nearest_centers(points, &centers, dim, threads);
    (centers, assign)
}

/// Points examined per centre by the k-means++ seeding.
const SEED_SAMPLE_PER_CENTER: usize = 16;

/// k-means++ seeding (each next centre drawn with probability proportional to its squared
/// distance to the nearest chosen centre), on a random subsample of at most
/// `SEED_SAMPLE_PER_CENTER * k` points so it costs about one Lloyd iteration.
fn seed_plus_plus(points: &[f32], dim: usize, k: usize, rng: &mut impl Rng) -> Vec<f32> {
    let n = points.len() / dim;
    let m = n.min(SEED_SAMPLE_PER_CENTER.saturating_mul(k).max(k));
    let pool = sample(rng, n, m).into_vec();
    let row = |i: usize| &points[pool[i] * dim..(pool[i] + 1) * dim];
    let mut centers = Vec::with_capacity(k * dim);
    let mut chosen = vec![false; m];
    let first = rng.random_range(0..m);
    chosen[first] = true;
    centers.extend_from_slice(row(first));
    // |a - b|^2 = |a|^2 + |b|^2 - 2 a.b, with the vectorised dot product: seeding then costs
    // about what one Lloyd iteration does.
    let norms: Vec<f32> = (0..m)
        .map(|i| tessera_kernels::dot(row(i), row(i)))
        .collect();
    let sq = |i: usize, c: &[f32], c_norm: f32| {
        (norms[i] + c_norm - 2.0 * tessera_kernels::dot(row(i), c)).max(0.0)
    };
    let first_row = row(first).to_vec();
    let mut d2: Vec<f32> = (0..m).map(|i| sq(i, &first_row, norms[first])).collect();
    for _ in 1..k {
        let total: f64 = d2.iter().map(|&d| f64::from(d)).sum();
        let pick = if total > 0.0 {
            let mut target = rng.random::<f64>() * total;
            let mut pick = None;
            for (i, &d) in d2.iter().enumerate() {
                target -= f64::from(d);
                if target <= 0.0 && !chosen[i] {
                    pick = Some(i);
                    break;
                }
            }
            pick.or_else(|| (0..m).rev().find(|&i| !chosen[i] && d2[i] > 0.0))
        } else {
            None
        };
        // All remaining points coincide with centres: take any unchosen one.
        let Some(p) = pick.or_else(|| (0..m).find(|&i| !chosen[i])) else {
            break;
        };
        chosen[p] = true;
        let c = row(p).to_vec();
        for (i, d) in d2.iter_mut().enumerate() {
            let nd = sq(i, &c, norms[p]);
            if nd < *d {
                *d = nd;
            }
        }
        centers.extend_from_slice(&c);
    }
    centers
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn separated_blobs_are_recovered_and_runs_are_reproducible() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut pts = Vec::new();
        for c in 0..4 {
            for _ in 0..50 {
                pts.push(c as f32 * 10.0 + rng.random_range(-0.5..0.5));
                pts.push(rng.random_range(-0.5..0.5));
            }
        }
        let run = || kmeans(&pts, 2, 4, 10, &mut rand::rngs::StdRng::seed_from_u64(1), 1);
        let (c1, a1) = run();
        let (c2, a2) = run();
        assert_eq!(c1, c2);
        assert_eq!(a1, a2);
        for blob in 0..4 {
            let first = a1[blob * 50];
            assert!(a1[blob * 50..(blob + 1) * 50].iter().all(|&a| a == first));
        }
    }

    #[test]
    fn more_centres_than_points_is_clamped() {
        let pts = [0.0f32, 1.0, 2.0];
        let (c, a) = kmeans(&pts, 1, 10, 3, &mut rand::rngs::StdRng::seed_from_u64(1), 1);
        assert_eq!(c.len(), 3);
        assert_eq!(a.len(), 3);
    }
}
