//! Consistent read views: a codec, a list of segments and their tombstones, frozen at one
//! commit. Writers build a new snapshot and swap it in; readers holding the old one keep a
//! consistent view (its files stay mapped even if later unlinked).

use std::sync::Arc;

use roaring::RoaringBitmap;
use tessera_storage::originals::OriginalsReader;
use tessera_storage::segment::SegmentReader;

use crate::codec::Codec;
use crate::document::Hit;
use crate::error::{Error, Result};
use crate::options::SearchParams;
use crate::search::SearchStats;

#[derive(Debug, Clone)]
pub(crate) struct SegmentView {
    pub(crate) id: u64,
    pub(crate) reader: Arc<SegmentReader>,
    /// The segment's original vectors, when the collection keeps them.
    pub(crate) originals: Option<Arc<OriginalsReader>>,
    pub(crate) tombstones: Arc<RoaringBitmap>,
    /// The segment's metadata index for filters (module `filter`).
    pub(crate) fields: Arc<crate::filter::index::SegmentFields>,
}

#[derive(Debug, Default)]
pub(crate) struct SnapshotInner {
    pub(crate) codec: Option<Arc<Codec>>,
    pub(crate) segments: Vec<SegmentView>,
}

impl SnapshotInner {
    pub(crate) fn live_docs(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| u64::from(s.reader.meta().n_docs) - s.tombstones.len())
            .sum()
    }
}

/// A consistent, read-only view of a collection at one commit. Cheap to clone; searches on
/// it see neither later ingests nor later deletes.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub(crate) inner: Arc<SnapshotInner>,
    pub(crate) collection: Arc<str>,
    pub(crate) dim: usize,
    /// Ids to documents through the collection's catalog (issue 14: rerank, explain,
    /// diversity).
    pub(crate) locate: crate::locate::Locator,
}

impl Snapshot {
    /// Top-`k` documents for `query` (row-major `[query_tokens, dim]`), best first.
    pub fn search(&self, query: &[f32], k: usize, params: &SearchParams) -> Result<Vec<Hit>> {
        Ok(self.search_with_stats(query, k, params)?.0)
    }

    /// Like [`Snapshot::search`], also returning where the time went.
    pub fn search_with_stats(
        &self,
        query: &[f32],
        k: usize,
        params: &SearchParams,
    ) -> Result<(Vec<Hit>, SearchStats)> {
        self.check_query(query)?;
        // Issue 14: a diverse top-k is its own stage around the search (diversity.rs).
        if let Some(d) = &params.diversity {
            return crate::diversity::search(self, query, k, params, d);
        }
        let allowed = self.allowed(params)?;
        if let Some(mut found) =
            crate::gpu::search_batch(&self.inner, &[query], k, params, allowed.as_ref())?
        {
            return Ok(found.pop().unwrap_or_default());
        }
        let mut stats = SearchStats::default();
        let hits =
            crate::search::search(&self.inner, query, k, params, allowed.as_ref(), &mut stats)?;
        Ok((hits, stats))
    }

    /// Searches many queries: on a GPU in batched launches, on the CPU in parallel over all
    /// cores. Results are in query order and equal to one-by-one searches.
    pub fn search_batch(
        &self,
        queries: &[Vec<f32>],
        k: usize,
        params: &SearchParams,
    ) -> Result<Vec<Vec<Hit>>> {
        use rayon::prelude::*;
        for q in queries {
            self.check_query(q)?;
        }
        // Issue 14: diverse searches run one by one (diversity.rs), in parallel.
        if params.diversity.is_some() {
            return queries
                .par_iter()
                .map(|q| self.search(q, k, params))
                .collect();
        }
        let refs: Vec<&[f32]> = queries.iter().map(Vec::as_slice).collect();
        // One filter evaluation for the whole batch, on either device.
        let allowed = self.allowed(params)?;
        if let Some(found) =
            crate::gpu::search_batch(&self.inner, &refs, k, params, allowed.as_ref())?
        {
            return Ok(found.into_iter().map(|(hits, _)| hits).collect());
        }
        queries
            .par_iter()
            .map(|q| {
                let mut stats = SearchStats::default();
                crate::search::search(&self.inner, q, k, params, allowed.as_ref(), &mut stats)
            })
            .collect()
    }

    /// The documents `params.filter` allows, `None` without a filter.
    fn allowed(&self, params: &SearchParams) -> Result<Option<crate::filter::Allowed>> {
        crate::filter::allowed(&self.inner, params.filter.as_ref(), &self.collection)
    }

    /// Live documents in this view.
    pub fn documents(&self) -> u64 {
        self.inner.live_docs()
    }

    pub(crate) fn check_query(&self, query: &[f32]) -> Result<()> {
        let bad = |reason: String| Error::InvalidQuery {
            collection: self.collection.to_string(),
            reason,
        };
        if query.is_empty() {
            return Err(bad("the query has no vectors".into()));
        }
        if !query.len().is_multiple_of(self.dim) {
            return Err(bad(format!(
                "{} values is not a whole number of {}-dimensional vectors",
                query.len(),
                self.dim
            )));
        }
        if let Some(i) = query.iter().position(|x| !x.is_finite()) {
            return Err(bad(format!(
                "query vector {} dimension {} is {}",
                i / self.dim,
                i % self.dim,
                query[i]
            )));
        }
        Ok(())
    }
}
