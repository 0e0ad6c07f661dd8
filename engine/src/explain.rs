//! Why a document matched (issue 14): MaxSim token by token.
//!
//! MaxSim is a sum over query tokens of each one's best dot product with a document token,
//! so a score decomposes exactly: which document token each query token matched, and how
//! strongly. Every dot product here is computed as the refine stage's kernel computes it
//! ([`dot_fused`]: one fused multiply-add per dimension, in order), and the total adds the
//! query tokens' maxima in query order as the kernel does, so on full-precision vectors the
//! total is the score that search and rerank return for the document, bit for bit.

use serde::Serialize;
use tessera_kernels::dot_fused;
use tessera_storage::ExternalId;

use crate::collection::Collection;
use crate::error::Result;
use crate::locate::Missing;
use crate::snapshot::Snapshot;

/// One query token's best match in the document.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct TokenMatch {
    /// Position of the query token.
    pub query_token: usize,
    /// Position of the document token with the largest dot product (the first, on ties).
    pub doc_token: usize,
    /// That dot product: the query token's term of the MaxSim sum.
    pub similarity: f32,
}

/// A document's MaxSim against a query, token by token ([`Collection::explain`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Explanation {
    /// The document.
    pub id: ExternalId,
    /// MaxSim: the sum of the matches' similarities, in query token order (blocks of 128,
    /// as the kernel sums).
    pub score: f32,
    /// Whether the document's vectors are its originals (the score is then the one search
    /// and rerank return) rather than decompressed from its codes (a segment without
    /// originals; search scores those over the codes directly, within rounding of this).
    pub full_precision: bool,
    /// The document's token count.
    pub doc_tokens: usize,
    /// One per query token, in order.
    pub matches: Vec<TokenMatch>,
    /// Every dot product, row-major `[query tokens, document tokens]`: the heatmap.
    pub similarities: Vec<f32>,
}

impl Collection {
    /// Explains document `id`'s score for `query` (see [`Snapshot::explain`]).
    pub fn explain(&self, query: &[f32], id: &ExternalId) -> Result<Option<Explanation>> {
        self.check_live()?;
        self.snapshot().explain(query, id)
    }
}

impl Snapshot {
    /// Document `id`'s MaxSim against `query` (row-major `[query_tokens, dim]`), token by
    /// token; `None` when no live document has this id. Errors: an invalid query
    /// ([`crate::Error::InvalidQuery`]) and unreadable originals.
    pub fn explain(&self, query: &[f32], id: &ExternalId) -> Result<Option<Explanation>> {
        self.check_query(query)?;
        let Some(c) = self.locate(std::slice::from_ref(id), Missing::Absent)?[0] else {
            return Ok(None);
        };
        let (doc, full_precision) = self.doc_vectors(c)?;
        Ok(Some(explain_vectors(
            id.clone(),
            query,
            &doc,
            self.dim,
            full_precision,
        )))
    }
}

/// The explanation of `doc` against `query`, both row-major with `dim` columns.
fn explain_vectors(
    id: ExternalId,
    query: &[f32],
    doc: &[f32],
    dim: usize,
    full_precision: bool,
) -> Explanation {
    let nd = doc.len() / dim;
    let mut similarities = Vec::with_capacity(query.len() / dim * nd);
    let mut matches = Vec::with_capacity(query.len() / dim);
    for (i, q) in query.chunks_exact(dim).enumerate() {
        let row_start = similarities.len();
        similarities.extend(doc.chunks_exact(dim).map(|d| dot_fused(q, d)));
        let row = &similarities[row_start..];
        let (best, sim) =
            row.iter().enumerate().fold(
                (0, f32::NEG_INFINITY),
                |b, (j, &s)| if s > b.1 { (j, s) } else { b },
            );
        matches.push(TokenMatch {
            query_token: i,
            doc_token: best,
            // An empty document has no best token and scores 0, as in the kernel.
            similarity: if nd == 0 { 0.0 } else { sim },
        });
    }
    let score = matches.iter().fold(0f32, |t, m| t + m.similarity);
    Explanation {
        id,
        score,
        full_precision,
        doc_tokens: nd,
        matches,
        similarities,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_query_token_matches_its_argmax_and_the_total_is_their_sum() {
        let dim = 3;
        let doc = [1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, -1.0];
        let query = [0.0, 1.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, -3.0];
        let e = explain_vectors(ExternalId::Int(7), &query, &doc, dim, true);
        let best: Vec<(usize, f32)> = e
            .matches
            .iter()
            .map(|m| (m.doc_token, m.similarity))
            .collect();
        assert_eq!(best, vec![(1, 2.0), (0, 0.5), (2, 3.0)]);
        assert_eq!(e.score, 5.5);
        assert_eq!(e.similarities.len(), 9);
        assert_eq!(
            e.score,
            tessera_kernels::reference::maxsim(&query, &doc, dim)
        );
    }
}
