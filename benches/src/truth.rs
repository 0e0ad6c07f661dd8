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

/// Documents scored per pass over the corpus: every query is scored against one block
/// before the next is read (or regenerated, for a streamed corpus).
const BLOCK_DOCS: usize = 16_384;

type Scored = (f32, u64);

fn best_first(a: &Scored, b: &Scored) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Keeps the best `k` of `v`, best first (ties by lower id).
fn keep_top(v: &mut Vec<Scored>, k: usize) {
    if k > 0 && k < v.len() {
        v.select_nth_unstable_by(k - 1, best_first);
    }
    v.truncate(k);
    v.sort_by(best_first);
}

/// Exact top-`k` of each of `queries` over `ds`, on all cores, in one pass over the corpus.
fn top_k_all(ds: &Dataset, queries: &[Vec<f32>], k: usize) -> Result<Vec<Vec<(u64, f32)>>> {
    let (n, dim, chunk) = (ds.n_docs(), ds.dim, 256);
    let t = Instant::now();
    let mut best: Vec<Vec<Scored>> = vec![Vec::new(); queries.len()];
    ds.for_each_block(BLOCK_DOCS, |first, offs, rows| {
        let nb = offs.len() - 1;
        for (query, best) in queries.iter().zip(best.iter_mut()) {
            let scored: Vec<Scored> = (0..nb.div_ceil(chunk))
                .into_par_iter()
                .flat_map_iter(|c| {
                    let (lo, hi) = (c * chunk, ((c + 1) * chunk).min(nb));
                    let base = offs[lo];
                    let local: Vec<usize> = offs[lo..=hi].iter().map(|o| o - base).collect();
                    let r = &rows[(base - offs[0]) * dim..(offs[hi] - offs[0]) * dim];
                    let mut s = vec![0f32; hi - lo];
                    tessera_kernels::maxsim_many(query, r, &local, dim, &mut s);
                    s.into_iter()
                        .enumerate()
                        .map(move |(i, v)| (v, (first + lo + i) as u64))
                })
                .collect();
            best.extend(scored);
            keep_top(best, k);
        }
        let done = first + nb;
        if n > BLOCK_DOCS && queries.len() > 1 {
            let s = t.elapsed().as_secs_f64();
            eprintln!(
                "  ground truth: {done}/{n} documents, {s:.0} s, ETA {:.0} s",
                s / done as f64 * (n - done) as f64
            );
        }
        Ok(())
    })?;
    Ok(best
        .into_iter()
        .map(|v| v.into_iter().map(|(s, i)| (i, s)).collect())
        .collect())
}

/// Exact top-`k` of `query` over `ds`, on all cores.
pub fn exact_top_k(ds: &Dataset, query: &[f32], k: usize) -> Result<Vec<(u64, f32)>> {
    Ok(top_k_all(ds, &[query.to_vec()], k)?.remove(0))
}

/// Exact top-`k` of every query of `ds`.
pub fn compute(ds: &Dataset, k: usize) -> Result<Truth> {
    let t = Instant::now();
    let ranked = top_k_all(ds, &ds.queries, k)?;
    Ok(Truth {
        k,
        ranked,
        seconds: t.elapsed().as_secs_f64(),
    })
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
        return Ok((compute(ds, k)?, false));
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
    let t = compute(ds, k)?;
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
        let truth = compute(&ds, 20).expect("truth");
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
    fn streamed_and_in_memory_corpora_give_the_same_truth() {
        let spec = tessera::synthetic::SyntheticSpec {
            n_docs: BLOCK_DOCS + 700,
            dim: 8,
            min_tokens: 1,
            max_tokens: 4,
            n_clusters: 64,
            ..Default::default()
        };
        let mem = crate::dataset::synthetic("t", &spec, 3);
        let st = crate::dataset::synthetic_streamed("t", &spec, 3).expect("streamed");
        let a = compute(&mem, 15).expect("in memory");
        let b = compute(&st, 15).expect("streamed");
        assert_eq!(a.ranked, b.ranked);
        let one = exact_top_k(&mem, &mem.queries[1], 15).expect("one query");
        assert_eq!(one, a.ranked[1]);
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
