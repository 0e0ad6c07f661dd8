//! Tombstones added by one commit.

use std::collections::HashMap;
use std::sync::Arc;

use roaring::RoaringBitmap;
use tessera_storage::ExternalId;
use tessera_storage::catalog::{CatalogBatch, DocLocation, Manifest};

use crate::error::{Error, Result};
use crate::load::check_location;
use crate::snapshot::SegmentView;

/// Tombstones added by one commit, shared by replacing ingests and deletes: copies of the
/// touched segments' bitmaps, written in the commit's batch and swapped into the next
/// snapshot only after the commit succeeded.
#[derive(Default)]
pub(crate) struct NewTombstones {
    bitmaps: HashMap<u64, RoaringBitmap>,
}

impl NewTombstones {
    /// Marks `loc` (the catalog's location of document `id`) deleted and takes it out of the
    /// manifest's live counts. `None` when its segment is not in `segments`; `Some(false)`
    /// when it was already deleted. A location outside its segment, or counts that would
    /// drop below zero, are a corrupt catalog record.
    pub(crate) fn mark(
        &mut self,
        segments: &[SegmentView],
        id: &ExternalId,
        loc: &DocLocation,
        manifest: &mut Manifest,
        corrupt: impl Fn(String, String) -> Error,
    ) -> Result<Option<bool>> {
        let Some(seg) = segments.iter().find(|s| s.id == loc.segment) else {
            return Ok(None);
        };
        check_location(id, loc, seg.reader.meta().n_docs, &corrupt)?;
        let off = seg.reader.doc_offsets();
        let l = loc.local as usize;
        let bm = self
            .bitmaps
            .entry(loc.segment)
            .or_insert_with(|| (*seg.tombstones).clone());
        if !bm.insert(loc.local) {
            return Ok(Some(false));
        }
        let tokens = off[l + 1] - off[l];
        match (
            manifest.live_docs.checked_sub(1),
            manifest.live_tokens.checked_sub(tokens),
        ) {
            (Some(docs), Some(toks)) => {
                manifest.live_docs = docs;
                manifest.live_tokens = toks;
                Ok(Some(true))
            }
            _ => Err(corrupt(
                "manifest".into(),
                format!(
                    "deleting document {id} ({tokens} tokens) from {} live documents and {} live tokens",
                    manifest.live_docs, manifest.live_tokens
                ),
            )),
        }
    }

    /// Adds the changed bitmaps to the commit.
    pub(crate) fn write(&self, batch: &mut CatalogBatch, coll: u32) -> Result<()> {
        for (seg, bm) in &self.bitmaps {
            batch.put_tombstones(coll, *seg, bm)?;
        }
        Ok(())
    }

    /// The segment views after the commit: changed bitmaps swapped in, the rest shared.
    pub(crate) fn apply(mut self, segments: &[SegmentView]) -> Vec<SegmentView> {
        segments
            .iter()
            .map(|s| match self.bitmaps.remove(&s.id) {
                Some(bm) => SegmentView {
                    tombstones: Arc::new(bm),
                    ..s.clone()
                },
                None => s.clone(),
            })
            .collect()
    }
}
