//! Rerank only (issue 14): exact MaxSim of documents that another retriever found.
//!
//! The retrieve → rerank pipeline hands a late-interaction model the candidates of a cheaper
//! retriever (BM25, a single-vector index). Here they skip every candidate stage of the
//! search and go straight to its final one ([`refine_and_rank`]): full-precision MaxSim
//! over each document's originals where its segment keeps them, else MaxSim over the
//! vectors decompressed from its codes; sorted best first, exact ties by id, top `k`.

use tessera_kernels::{RefineQuery, StoredVectors};
use tessera_storage::ExternalId;

use crate::collection::Collection;
use crate::document::Hit;
use crate::error::Result;
use crate::locate::Missing;
use crate::parallel::Workers;
use crate::search::{Cand, Scored, SearchStats, decompress_doc, refine_and_rank};
use crate::snapshot::Snapshot;

/// What [`Collection::rerank`] found: the scored documents and the ids it could not score.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct RerankReport {
    /// The given documents that exist, best first (at most `k`), with their exact MaxSim.
    pub hits: Vec<Hit>,
    /// Given ids with no live document (never ingested, or deleted), in the order given.
    pub unknown: Vec<ExternalId>,
}

impl Collection {
    /// Scores the documents `ids` against `query` (row-major `[query_tokens, dim]`) by exact
    /// MaxSim and returns the best `k`, best first (see [`Snapshot::rerank`]).
    pub fn rerank(&self, query: &[f32], ids: &[ExternalId], k: usize) -> Result<RerankReport> {
        self.check_live()?;
        self.snapshot().rerank(query, ids, k)
    }
}

impl Snapshot {
    /// Scores the documents `ids` against `query` by exact MaxSim: over their original
    /// vectors at the collection's precision where their segment keeps them (the score a
    /// search returns for a refined hit), else over the vectors decompressed from their
    /// codes. Returns the best `k` (all of them when `k >= ids.len()`), best first, exact
    /// ties by id.
    ///
    /// Not errors: ids without a live document are listed in [`RerankReport::unknown`] (an
    /// id is looked up in the catalog when this runs, so one deleted after the snapshot was
    /// taken counts as unknown); an id given twice is scored once; an empty `ids` or `k = 0`
    /// gives an empty report. Errors: a query that is empty, not whole `dim`-sized rows, or
    /// not finite ([`crate::Error::InvalidQuery`]), and unreadable originals.
    pub fn rerank(&self, query: &[f32], ids: &[ExternalId], k: usize) -> Result<RerankReport> {
        self.check_query(query)?;
        let mut seen = std::collections::HashSet::with_capacity(ids.len());
        let ids: Vec<ExternalId> = ids.iter().filter(|id| seen.insert(*id)).cloned().collect();
        if ids.is_empty() {
            return Ok(RerankReport::default());
        }
        let mut cands = Vec::with_capacity(ids.len());
        let mut unknown = Vec::new();
        for (id, c) in ids.iter().zip(self.locate(&ids, Missing::Absent)?) {
            match c {
                Some(c) => cands.push(c),
                None => unknown.push(id.clone()),
            }
        }
        let scores = self.decompressed_scores(query, &cands);
        let scored = Scored {
            cands: &cands,
            compressed: &scores,
        };
        // Refining every candidate: each with originals gets its full-precision score,
        // each without keeps the decompressed score computed above.
        let mut stats = SearchStats::default();
        let hits = refine_and_rank(
            &self.inner,
            query,
            &scored,
            k,
            cands.len(),
            &Workers::new(1),
            &mut stats,
        )?;
        Ok(RerankReport { hits, unknown })
    }

    /// MaxSim over the decompressed codes for candidates whose segment has no originals;
    /// 0 for the others (the refine stage scores them from their originals).
    fn decompressed_scores(&self, query: &[f32], cands: &[Cand]) -> Vec<f32> {
        let Some(codec) = self.inner.codec.as_deref() else {
            return vec![0.0; cands.len()];
        };
        let mut prepared = RefineQuery::new(query, self.dim);
        cands
            .iter()
            .map(|c| {
                let seg = &self.inner.segments[c.seg as usize];
                if seg.originals.is_some() {
                    return 0.0;
                }
                let doc = decompress_doc(codec, &seg.reader, c.local);
                prepared.maxsim(StoredVectors::F32(&doc))
            })
            .collect()
    }
}
