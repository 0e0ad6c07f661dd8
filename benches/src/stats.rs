//! Token statistics of a corpus, computed the same way for synthetic and real embeddings so
//! the generator's realism can be checked side by side (BENCHMARKS.md, "Synthetic corpora").

use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::dataset::Dataset;

/// Summary statistics of a corpus's token vectors.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct TokenStats {
    /// Mean tokens per document.
    pub tokens_per_doc_mean: f64,
    /// Fewest tokens in a document.
    pub tokens_per_doc_min: usize,
    /// Most tokens in a document.
    pub tokens_per_doc_max: usize,
    /// Mean L2 norm of a token vector.
    pub norm_mean: f64,
    /// Standard deviation of the norms.
    pub norm_std: f64,
    /// Mean cosine of two random tokens of the same document.
    pub cos_same_doc: f64,
    /// Mean cosine of two random tokens of different documents.
    pub cos_other_doc: f64,
    /// Share of sampled tokens in the largest 10% of 256 k-means clusters (uniform: 0.10).
    pub top10pct_cluster_share: f64,
    /// Share of sampled tokens in the single largest cluster.
    pub largest_cluster_share: f64,
    /// Clusters (of 256) holding no sampled token after k-means.
    pub empty_clusters: usize,
}

fn cos(a: &[f32], b: &[f32]) -> f64 {
    let (mut d, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        d += (*x as f64) * (*y as f64);
        na += (*x as f64).powi(2);
        nb += (*y as f64).powi(2);
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        d / (na.sqrt() * nb.sqrt())
    }
}

/// Statistics from a seeded sample (the whole corpus for norms and lengths).
pub fn token_stats(ds: &Dataset) -> TokenStats {
    let dim = ds.dim;
    let n = ds.n_docs();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let lens: Vec<usize> = ds.offsets.windows(2).map(|w| w[1] - w[0]).collect();
    let norms: Vec<f64> = ds
        .flat
        .chunks_exact(dim)
        .map(|t| t.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt())
        .collect();
    let nm = norms.iter().sum::<f64>() / norms.len().max(1) as f64;
    let ns =
        (norms.iter().map(|x| (x - nm).powi(2)).sum::<f64>() / norms.len().max(1) as f64).sqrt();
    let row = |r: usize| &ds.flat[r * dim..(r + 1) * dim];
    let pairs = 4000;
    let mut same = 0.0;
    let mut other = 0.0;
    for _ in 0..pairs {
        let d = rng.random_range(0..n);
        let (lo, hi) = (ds.offsets[d], ds.offsets[d + 1]);
        same += cos(row(rng.random_range(lo..hi)), row(rng.random_range(lo..hi)));
        let e = rng.random_range(0..n);
        other += cos(
            row(rng.random_range(lo..hi)),
            row(rng.random_range(ds.offsets[e]..ds.offsets[e + 1])),
        );
    }
    // Cluster sizes: 256-means (4 Lloyd rounds) over a sample of 32K tokens.
    let tokens = ds.n_tokens();
    let sample: Vec<f32> = (0..32_768.min(tokens))
        .flat_map(|_| row(rng.random_range(0..tokens)).to_vec())
        .collect();
    let s = sample.len() / dim;
    let k = 256.min(s.max(1));
    let mut centers: Vec<f32> = (0..k)
        .flat_map(|_| sample[rng.random_range(0..s) * dim..][..dim].to_vec())
        .collect();
    let mut assign = vec![0u32; s];
    for _ in 0..4 {
        assign = tessera_kernels::nearest_centers(&sample, &centers, dim, 0);
        let mut sums = vec![0f32; k * dim];
        let mut counts = vec![0usize; k];
        for (i, &a) in assign.iter().enumerate() {
            counts[a as usize] += 1;
            for (x, y) in sums[a as usize * dim..][..dim]
                .iter_mut()
                .zip(&sample[i * dim..][..dim])
            {
                *x += y;
            }
        }
        for c in 0..k {
            if counts[c] > 0 {
                for (dst, x) in centers[c * dim..][..dim]
                    .iter_mut()
                    .zip(&sums[c * dim..][..dim])
                {
                    *dst = x / counts[c] as f32;
                }
            }
        }
    }
    let mut counts = vec![0usize; k];
    for a in &assign {
        counts[*a as usize] += 1;
    }
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let top = counts.iter().take(k.div_ceil(10)).sum::<usize>();
    TokenStats {
        tokens_per_doc_mean: tokens as f64 / n.max(1) as f64,
        tokens_per_doc_min: lens.iter().copied().min().unwrap_or(0),
        tokens_per_doc_max: lens.iter().copied().max().unwrap_or(0),
        norm_mean: nm,
        norm_std: ns,
        cos_same_doc: same / pairs as f64,
        cos_other_doc: other / pairs as f64,
        top10pct_cluster_share: top as f64 / s.max(1) as f64,
        largest_cluster_share: counts.first().copied().unwrap_or(0) as f64 / s.max(1) as f64,
        empty_clusters: counts.iter().filter(|c| **c == 0).count(),
    }
}
