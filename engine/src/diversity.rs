//! Diverse top-k (issue 14), after RA-CM3: walking the ranked candidates best first, a
//! candidate is skipped when it is too similar to the query or to a document already kept,
//! and the walk goes on until `k` are kept or the candidates run out.
//!
//! Similarities are normalised MaxSim, so that one threshold means the same thing for
//! queries and documents of any length:
//! - query to document: `MaxSim(q, d) / |q|`, the mean over query tokens of each one's best
//!   dot product with the document: with unit-norm token vectors (ColBERT's, and the
//!   encoder's) a mean of cosines, in `[-1, 1]`, and 1 only when every query token has an
//!   identical document token. It is the search's own score over the query's token count,
//!   so it costs nothing.
//! - document to document: `(MaxSim(a, b) / |a| + MaxSim(b, a) / |b|) / 2`. MaxSim is not
//!   symmetric (a short document inside a long one scores 1 one way and less the other
//!   way); averaging both normalised directions gives a symmetric similarity, in `[-1, 1]`
//!   for unit vectors, that is 1 exactly when each document's every token has an identical
//!   token in the other: near-duplicates score near 1 whichever was ranked first, so the
//!   walk's outcome does not depend on which of two similar documents ranks higher.
//!
//! Vectors are the originals where the segment keeps them, else decompressed from the
//! codes. With vectors that are not unit-norm the similarities are not bounded by 1; the
//! thresholds then still apply as given.
//!
//! Depth: the search behind the walk asks for `max(DIVERSITY_DEPTH_FLOOR,
//! DIVERSITY_DEPTH_PER_K · k)` candidates (the refine budget's own rule) and refines exactly
//! those (unless `n_refine` is set), so every candidate walked has its full-precision score;
//! when the walk keeps fewer than `k` of them while the collection has more, it asks again
//! for [`DIVERSITY_DEPTH_GROWTH`] times as many, up to every live document.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tessera_kernels::{RefineQuery, StoredVectors};
use tessera_storage::ExternalId;

use crate::document::Hit;
use crate::error::{Error, Result};
use crate::locate::Missing;
use crate::options::SearchParams;
use crate::search::SearchStats;
use crate::snapshot::Snapshot;

/// Candidates per requested hit that a diverse search ranks before walking them.
pub const DIVERSITY_DEPTH_PER_K: usize = crate::options::REFINE_PER_K;
/// Fewest candidates a diverse search ranks before walking them.
pub const DIVERSITY_DEPTH_FLOOR: usize = crate::options::REFINE_FLOOR;
/// How much deeper a diverse search ranks when the walk kept fewer than `k`.
pub const DIVERSITY_DEPTH_GROWTH: usize = 4;

/// The thresholds of a diverse top-k ([`SearchParams::diversity`]): a candidate is skipped
/// when its normalised MaxSim to the query exceeds `max_query_similarity`, or its
/// symmetric normalised MaxSim to a document already kept exceeds `max_kept_similarity`
/// (see the module documentation of `diversity.rs`, or the README, for the formulas). Each
/// is in `[-1, 1]`; 1 turns its test off for unit-norm vectors.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Diversity {
    /// Skip candidates more similar than this to the query (near-copies of the query).
    pub max_query_similarity: f32,
    /// Skip candidates more similar than this to a document already kept.
    pub max_kept_similarity: f32,
}

impl Default for Diversity {
    /// 0.9 for both, RA-CM3's setting.
    fn default() -> Self {
        Diversity {
            max_query_similarity: 0.9,
            max_kept_similarity: 0.9,
        }
    }
}

impl Diversity {
    /// Thresholds for the query and for kept documents.
    pub fn new(max_query_similarity: f32, max_kept_similarity: f32) -> Self {
        Diversity {
            max_query_similarity,
            max_kept_similarity,
        }
    }

    /// Why the thresholds are unusable, if they are: each must be a number in `[-1, 1]`.
    pub fn check(&self) -> std::result::Result<(), String> {
        for (name, v) in [
            ("max_query_similarity", self.max_query_similarity),
            ("max_kept_similarity", self.max_kept_similarity),
        ] {
            if !(-1.0..=1.0).contains(&v) {
                return Err(format!(
                    "diversity threshold {name} is {v}; it must be a number from -1 to 1 \
                     (normalised MaxSim; 1 turns the test off)"
                ));
            }
        }
        Ok(())
    }
}

impl SearchParams {
    /// Makes the search a diverse top-k with these thresholds.
    pub fn with_diversity(mut self, diversity: Diversity) -> Self {
        self.diversity = Some(diversity);
        self
    }
}

/// Candidates a diverse top-`k` search ranks first.
pub(crate) fn candidate_depth(k: usize) -> usize {
    DIVERSITY_DEPTH_FLOOR.max(DIVERSITY_DEPTH_PER_K.saturating_mul(k))
}

/// A diverse top-`k` search of `snap` (the query is checked by the caller).
pub(crate) fn search(
    snap: &Snapshot,
    query: &[f32],
    k: usize,
    params: &SearchParams,
    d: &Diversity,
) -> Result<(Vec<Hit>, SearchStats)> {
    d.check().map_err(|reason| Error::InvalidParams {
        collection: snap.collection.to_string(),
        reason,
    })?;
    if k == 0 {
        return Ok((Vec::new(), SearchStats::default()));
    }
    let mut plain = SearchParams {
        diversity: None,
        ..params.clone()
    };
    let live = usize::try_from(snap.documents()).unwrap_or(usize::MAX);
    let nq = query.len() / snap.dim;
    let mut depth = candidate_depth(k).min(live.max(k));
    let mut vectors: HashMap<ExternalId, Vec<f32>> = HashMap::new();
    loop {
        // Refine exactly the candidates walked (the default would refine 4 times as many:
        // measured 1.8 times the plain search's p50 at k = 10, BENCHMARKS.md); an explicit
        // `n_refine`, and an exhaustive search (exact everywhere), are left as asked.
        if params.n_refine.is_none() && !params.exhaustive {
            plain.n_refine = Some(depth);
        }
        let (hits, stats) = snap.search_with_stats(query, depth, &plain)?;
        let kept = walk(&hits, nq, snap.dim, d, k, |id| {
            if let Some(v) = vectors.get(id) {
                return Ok(v.clone());
            }
            let v = match snap.locate(std::slice::from_ref(id), Missing::Scan)?[0] {
                Some(c) => snap.doc_vectors(c)?.0,
                // A hit of this snapshot is always in it; an empty matrix would only
                // compare as dissimilar.
                None => Vec::new(),
            };
            vectors.insert(id.clone(), v.clone());
            Ok(v)
        })?;
        if kept.len() >= k || hits.len() < depth || depth >= live {
            return Ok((kept, stats));
        }
        depth = depth.saturating_mul(DIVERSITY_DEPTH_GROWTH).min(live);
    }
}

/// The rule: walks `ranked` best first and keeps a hit unless its normalised score
/// (`score / nq`) exceeds the query threshold or its [`Prepared::similarity`] to a kept hit
/// exceeds the kept threshold; stops at `k` kept. `vectors` gives a hit's token vectors.
fn walk(
    ranked: &[Hit],
    nq: usize,
    dim: usize,
    d: &Diversity,
    k: usize,
    mut vectors: impl FnMut(&ExternalId) -> Result<Vec<f32>>,
) -> Result<Vec<Hit>> {
    let mut kept: Vec<(Hit, Prepared)> = Vec::with_capacity(k);
    for h in ranked {
        if kept.len() >= k {
            break;
        }
        if h.score / nq.max(1) as f32 > d.max_query_similarity {
            continue;
        }
        let mut v = Prepared::new(vectors(&h.id)?, dim);
        if kept
            .iter_mut()
            .any(|(_, w)| v.similarity(w) > d.max_kept_similarity)
        {
            continue;
        }
        kept.push((h.clone(), v));
    }
    Ok(kept.into_iter().map(|(h, _)| h).collect())
}

/// A document's vectors with the refine kernel's query prepared from them, so that a walk
/// compares each candidate with every kept document without preparing either again.
struct Prepared {
    vectors: Vec<f32>,
    tokens: usize,
    query: RefineQuery,
}

impl Prepared {
    fn new(vectors: Vec<f32>, dim: usize) -> Self {
        Prepared {
            tokens: vectors.len() / dim.max(1),
            query: RefineQuery::new(&vectors, dim),
            vectors,
        }
    }

    /// Symmetric normalised MaxSim of the two documents:
    /// `(MaxSim(a, b) / |a| + MaxSim(b, a) / |b|) / 2`; 0 when either is empty.
    fn similarity(&mut self, other: &mut Prepared) -> f32 {
        if self.tokens == 0 || other.tokens == 0 {
            return 0.0;
        }
        let ab = self.query.maxsim(StoredVectors::F32(&other.vectors)) / self.tokens as f32;
        let ba = other.query.maxsim(StoredVectors::F32(&self.vectors)) / other.tokens as f32;
        (ab + ba) / 2.0
    }
}

/// [`Prepared::similarity`] of two documents given as row-major `[tokens, dim]` vectors.
#[cfg(test)]
fn doc_similarity(a: &[f32], b: &[f32], dim: usize) -> f32 {
    Prepared::new(a.to_vec(), dim).similarity(&mut Prepared::new(b.to_vec(), dim))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn doc_similarity_is_symmetric_one_for_the_same_token_set_and_below_for_a_subset() {
        let a: Vec<f32> = [unit(&[1.0, 0.0]), unit(&[0.0, 1.0])].concat();
        let b: Vec<f32> = [unit(&[0.0, 1.0]), unit(&[1.0, 0.0])].concat();
        let sub = unit(&[1.0, 0.0]);
        assert!((doc_similarity(&a, &b, 2) - 1.0).abs() < 1e-6);
        // `sub` is inside `a`: 1 one way, 0.5 the other, 0.75 both ways.
        assert!((doc_similarity(&a, &sub, 2) - 0.75).abs() < 1e-6);
        assert_eq!(doc_similarity(&a, &sub, 2), doc_similarity(&sub, &a, 2));
        assert_eq!(doc_similarity(&a, &[], 2), 0.0);
    }

    #[test]
    fn thresholds_must_be_numbers_from_minus_one_to_one() {
        assert!(Diversity::default().check().is_ok());
        assert!(Diversity::new(1.0, -1.0).check().is_ok());
        for (q, d) in [
            (f32::NAN, 0.5),
            (0.5, 1.5),
            (-1.01, 0.5),
            (0.5, f32::INFINITY),
        ] {
            let e = Diversity::new(q, d).check().expect_err("out of range");
            assert!(e.contains("must be a number from -1 to 1"), "{e}");
        }
    }
}
