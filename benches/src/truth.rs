//! Ground truth: exact MaxSim of every query against every document with the original
//! full-precision vectors (no codec), computed once and cached on disk under a key derived
//! from the dataset's identity and the query vectors.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dataset::Dataset;

/// The exact top-`k` of each query, best first.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Truth {
    /// Depth.
    pub k: usize,
    /// Per query: (document id, exact MaxSim score), best first; ties by lower id.
    pub ranked: Vec<Vec<(u64, f32)>>,
    /// Seconds it took to compute (when it was computed, not loaded).
    pub seconds: f64,
}

impl Truth {
    /// Document ids of query `q`'s top `k`.
    pub fn ids(&self, q: usize, k: usize) -> Vec<u64> {
        self.ranked[q].iter().take(k).map(|(id, _)| *id).collect()
    }
}

/// Exact top-`k` of `query` over `ds`, on all cores.
pub fn exact_top_k(ds: &Dataset, query: &[f32], k: usize) -> Vec<(u64, f32)> {
    let n = ds.n_docs();
    let dim = ds.dim;
    let chunk = 256;
    let mut scores: Vec<(f32, u64)> = (0..n.div_ceil(chunk))
        .into_par_iter()
        .flat_map_iter(|c| {
            let lo = c * chunk;
            let hi = ((c + 1) * chunk).min(n);
            let base = ds.offsets[lo];
            let offsets: Vec<usize> = ds.offsets[lo..=hi].iter().map(|o| o - base).collect();
            let rows = &ds.flat[base * dim..ds.offsets[hi] * dim];
            let mut s = vec![0f32; hi - lo];
            tessera_kernels::maxsim_many(query, rows, &offsets, dim, &mut s);
            s.into_iter()
                .enumerate()
                .map(move |(i, v)| (v, (lo + i) as u64))
        })
        .collect();
    let top = k.min(scores.len());
    let order = |a: &(f32, u64), b: &(f32, u64)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if top > 0 && top < scores.len() {
        scores.select_nth_unstable_by(top - 1, order);
    }
    scores.truncate(top);
    scores.sort_by(order);
    scores.into_iter().map(|(s, i)| (i, s)).collect()
}

/// Exact top-`k` of every query of `ds`.
pub fn compute(ds: &Dataset, k: usize) -> Truth {
    let t = Instant::now();
    let mut ranked = Vec::with_capacity(ds.queries.len());
    for (i, q) in ds.queries.iter().enumerate() {
        ranked.push(exact_top_k(ds, q, k));
        if (i + 1) % 25 == 0 || i + 1 == ds.queries.len() {
            let s = t.elapsed().as_secs_f64();
            eprintln!(
                "  ground truth {}/{} queries, {s:.0} s, ETA {:.0} s",
                i + 1,
                ds.queries.len(),
                s / (i + 1) as f64 * (ds.queries.len() - i - 1) as f64
            );
        }
    }
    Truth {
        k,
        ranked,
        seconds: t.elapsed().as_secs_f64(),
    }
}

/// Where ground truth is cached: `$TESSERA_BENCH_CACHE/truth`, else
/// `$HOME/.cache/tessera/truth`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("TESSERA_BENCH_CACHE") {
        return Some(PathBuf::from(d).join("truth"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/tessera/truth"))
}

/// The cache key: SHA-256 over the dataset identity, `k` and every query value.
pub fn cache_key(ds: &Dataset, k: usize) -> String {
    let mut h = Sha256::new();
    h.update(ds.key.as_bytes());
    h.update((k as u64).to_le_bytes());
    h.update((ds.n_docs() as u64).to_le_bytes());
    for q in &ds.queries {
        h.update((q.len() as u64).to_le_bytes());
        for x in q {
            h.update(x.to_le_bytes());
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Ground truth from the cache when present (`cached` = true), else computed and stored.
pub fn cached(ds: &Dataset, k: usize, dir: Option<&Path>) -> Result<(Truth, bool)> {
    let Some(dir) = dir else {
        return Ok((compute(ds, k), false));
    };
    let path = dir.join(format!("{}-{}.json", ds.name, cache_key(ds, k)));
    if path.is_file() {
        let t: Truth = serde_json::from_slice(
            &fs::read(&path).with_context(|| format!("{}: cannot read", path.display()))?,
        )
        .with_context(|| format!("{}: corrupt ground-truth cache; delete it", path.display()))?;
        if t.k != k || t.ranked.len() != ds.queries.len() {
            bail!(
                "{}: cached ground truth does not match the queries; delete it",
                path.display()
            );
        }
        return Ok((t, true));
    }
    let t = compute(ds, k);
    fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    // Written beside and renamed: a crash never leaves a truncated cache entry.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, serde_json::to_vec(&t)?)
        .with_context(|| format!("{}: cannot write", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("{}: cannot write", path.display()))?;
    Ok((t, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::recall_at;

    #[test]
    fn exact_top_k_matches_brute_force_maxsim_and_recalls_itself() {
        let spec = tessera::synthetic::SyntheticSpec {
            n_docs: 300,
            dim: 16,
            min_tokens: 4,
            max_tokens: 12,
            n_clusters: 32,
            ..Default::default()
        };
        let ds = crate::dataset::synthetic("t", &spec, 5);
        let truth = compute(&ds, 20);
        for (qi, q) in ds.queries.iter().enumerate() {
            let mut all: Vec<(u64, f32)> = (0..ds.n_docs())
                .map(|d| {
                    (
                        d as u64,
                        tessera_kernels::reference::maxsim(q, ds.doc(d), 16),
                    )
                })
                .collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            for ((i, s), (j, t)) in truth.ranked[qi].iter().zip(&all) {
                assert!((s - t).abs() < 1e-4, "query {qi}: score {s} vs {t}");
                if (s - t).abs() < 1e-6 {
                    assert_eq!(i, j);
                }
            }
            let ids = truth.ids(qi, 20);
            assert_eq!(recall_at(&ids, &ids, 10), 1.0);
        }
    }

    #[test]
    fn cache_returns_what_was_computed() {
        let spec = tessera::synthetic::SyntheticSpec {
            n_docs: 50,
            dim: 8,
            ..Default::default()
        };
        let ds = crate::dataset::synthetic("t", &spec, 3);
        let dir = tempfile::tempdir().expect("temp dir");
        let (a, hit_a) = cached(&ds, 10, Some(dir.path())).expect("computed");
        let (b, hit_b) = cached(&ds, 10, Some(dir.path())).expect("loaded");
        assert!(!hit_a && hit_b);
        assert_eq!(a.ranked, b.ranked);
    }
}
