//! The peer: next-plaid (crates.io), a CPU Rust implementation of PLAID, indexing the same
//! vectors with its recommended settings (`IndexConfig::default()` but for `nbits`, which
//! follows the run so both engines store the same residual bits; search defaults:
//! `n_ivf_probe` 8, `n_full_scores` 4096, centroid score threshold 0.4).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use ndarray::Array2;
use next_plaid::{IndexConfig, MmapIndex, SearchParameters};

use crate::dataset::Dataset;
use crate::engines::{BuildInfo, Engine, Knobs};

/// next-plaid's memory-mapped index.
pub struct NextPlaid {
    index: MmapIndex,
}

fn as_array(q: &[f32], dim: usize) -> Result<Array2<f32>> {
    Array2::from_shape_vec((q.len() / dim, dim), q.to_vec())
        .map_err(|e| anyhow!("query is not a [tokens, {dim}] matrix: {e}"))
}

fn path_str(dir: &Path) -> Result<&str> {
    dir.to_str()
        .with_context(|| format!("{}: next-plaid needs a UTF-8 path", dir.display()))
}

impl NextPlaid {
    /// Builds an index of `ds` at `dir` in one `create_with_kmeans` call (its documented
    /// one-shot path). The vectors are moved out of `ds` document by document from the end,
    /// so the copy next-plaid needs never doubles the corpus in memory.
    pub fn build(ds: &mut Dataset, dir: &Path, nbits: u32) -> Result<BuildInfo> {
        let dim = ds.dim;
        let n = ds.n_docs();
        let tokens = ds.n_tokens();
        let mut flat = std::mem::take(&mut ds.flat);
        let mut docs: Vec<Array2<f32>> = Vec::with_capacity(n);
        for i in (0..n).rev() {
            let lo = ds.offsets[i] * dim;
            let rows = ds.offsets[i + 1] - ds.offsets[i];
            docs.push(
                Array2::from_shape_vec((rows, dim), flat[lo..].to_vec())
                    .map_err(|e| anyhow!("document {i}: {e}"))?,
            );
            flat.truncate(lo);
            if i % 4096 == 0 {
                flat.shrink_to_fit();
            }
        }
        drop(flat);
        docs.reverse();
        let config = IndexConfig {
            nbits: nbits as usize,
            ..IndexConfig::default()
        };
        let t = Instant::now();
        let index = MmapIndex::create_with_kmeans(&docs, path_str(dir)?, &config)
            .map_err(|e| anyhow!("next-plaid: creating the index: {e}"))?;
        let seconds = t.elapsed().as_secs_f64();
        let partitions = index.num_partitions();
        drop(index);
        drop(docs);
        Ok(BuildInfo::measured(
            dir,
            seconds,
            tokens,
            None,
            format!("nbits {nbits}, {partitions} partitions, other IndexConfig defaults"),
        ))
    }

    /// Loads an index built by [`NextPlaid::build`].
    pub fn open(dir: &Path) -> Result<Self> {
        let index = MmapIndex::load(path_str(dir)?)
            .map_err(|e| anyhow!("next-plaid: loading {}: {e}", dir.display()))?;
        Ok(NextPlaid { index })
    }

    fn params(k: usize, knobs: Knobs) -> SearchParameters {
        let d = SearchParameters::default();
        SearchParameters {
            top_k: k,
            n_ivf_probe: knobs.probe as usize,
            n_full_scores: if knobs.rerank > 0 {
                knobs.rerank
            } else {
                d.n_full_scores
            },
            ..d
        }
    }
}

fn ids(r: &next_plaid::QueryResult) -> Vec<u64> {
    r.passage_ids.iter().map(|&i| i as u64).collect()
}

impl Engine for NextPlaid {
    fn name(&self) -> &str {
        "next-plaid"
    }

    fn knob_names(&self) -> (&'static str, &'static str) {
        ("n_ivf_probe", "n_full_scores")
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        knobs: Knobs,
    ) -> Result<(Vec<u64>, Option<tessera::SearchStats>)> {
        let dim = self.index.embedding_dim();
        let r = self
            .index
            .search(&as_array(query, dim)?, &Self::params(k, knobs), None)
            .map_err(|e| anyhow!("next-plaid search: {e}"))?;
        Ok((ids(&r), None))
    }

    fn search_batch(&self, queries: &[Vec<f32>], k: usize, knobs: Knobs) -> Result<Vec<Vec<u64>>> {
        let dim = self.index.embedding_dim();
        let qs = queries
            .iter()
            .map(|q| as_array(q, dim))
            .collect::<Result<Vec<_>>>()?;
        let rs = self
            .index
            .search_batch(&qs, &Self::params(k, knobs), true, None)
            .map_err(|e| anyhow!("next-plaid search: {e}"))?;
        Ok(rs.iter().map(ids).collect())
    }

    fn rerank_budget(&self, k: usize, knobs: Knobs) -> usize {
        Self::params(k, knobs).n_full_scores.max(k)
    }
}
