//! External ids to documents of a snapshot, for the operations that name documents
//! (rerank, explanations, the diversity stage of a search).
//!
//! The catalog maps an id to its segment and local number in one multi-get; a snapshot
//! holds a weak handle to it (a [`Locator`]), so a snapshot never keeps a database open.
//! The catalog is current, the snapshot frozen: a location is used only if it names a live
//! document of this snapshot with this id. When it does not (a commit moved or deleted the
//! document since the snapshot was taken, or the database was closed), and the caller asks
//! for it, the snapshot's own segments are scanned instead, newest first: slow, but correct
//! and rare.

use std::sync::{Arc, Weak};

use tessera_storage::ExternalId;
use tessera_storage::catalog::DocLocation;

use crate::error::Result;
use crate::search::Cand;
use crate::snapshot::{Snapshot, SnapshotInner};

type LocateFn = dyn Fn(&[ExternalId]) -> Result<Option<Vec<Option<DocLocation>>>> + Send + Sync;

/// Looks ids up in the catalog of the collection a snapshot came from.
#[derive(Clone)]
pub(crate) struct Locator(Arc<LocateFn>);

impl std::fmt::Debug for Locator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Locator")
    }
}

impl Locator {
    /// A locator over `owner` (held weakly): `lookup(owner, ids)` gives the catalog's
    /// locations; once `owner` is gone, lookups return `None`.
    pub(crate) fn new<T: Send + Sync + 'static>(
        owner: Weak<T>,
        lookup: impl Fn(&T, &[ExternalId]) -> Result<Vec<Option<DocLocation>>> + Send + Sync + 'static,
    ) -> Self {
        Locator(Arc::new(move |ids| match owner.upgrade() {
            Some(o) => lookup(&o, ids).map(Some),
            None => Ok(None),
        }))
    }
}

/// What to do with an id whose catalog location does not name a live document of the
/// snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Missing {
    /// Report it as absent: the id is unknown or deleted now.
    Absent,
    /// Scan the snapshot's segments for it (ids that came from this snapshot's own hits).
    Scan,
}

impl Snapshot {
    /// The live documents of this snapshot with these ids (`None` where there is none).
    pub(crate) fn locate(&self, ids: &[ExternalId], missing: Missing) -> Result<Vec<Option<Cand>>> {
        let found = (self.locate.0)(ids)?;
        Ok(ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let loc = found.as_ref().and_then(|f| f[i]);
                match loc.and_then(|l| in_snapshot(&self.inner, id, l)) {
                    Some(c) => Some(c),
                    None if missing == Missing::Scan || found.is_none() => scan(&self.inner, id),
                    None => None,
                }
            })
            .collect())
    }
}

/// The candidate a catalog location names, if it is a live document of `snap` with `id`.
fn in_snapshot(snap: &SnapshotInner, id: &ExternalId, loc: DocLocation) -> Option<Cand> {
    let (si, seg) = snap
        .segments
        .iter()
        .enumerate()
        .find(|(_, s)| s.id == loc.segment)?;
    // `external_id` is `None` past the segment's end, so a damaged location cannot index
    // anything here.
    let live = !seg.tombstones.contains(loc.local);
    (live && seg.reader.external_id(loc.local) == Some(id)).then_some(Cand {
        seg: si as u32,
        local: loc.local,
    })
}

/// `id`'s live document in `snap`, by scanning its segments' id lists, newest first (an
/// upsert tombstones the older copy, so at most one is live).
fn scan(snap: &SnapshotInner, id: &ExternalId) -> Option<Cand> {
    snap.segments.iter().enumerate().rev().find_map(|(si, s)| {
        s.reader
            .external_ids()
            .iter()
            .enumerate()
            .filter(|&(local, x)| x == id && !s.tombstones.contains(local as u32))
            .map(|(local, _)| Cand {
                seg: si as u32,
                local: local as u32,
            })
            .next()
    })
}

impl Snapshot {
    /// A located document's vectors, row-major `[tokens, dim]`, and whether they are its
    /// originals (exactly widened to `f32`) rather than decompressed from its codes.
    pub(crate) fn doc_vectors(&self, c: Cand) -> Result<(Vec<f32>, bool)> {
        let seg = &self.inner.segments[c.seg as usize];
        if let Some(o) = &seg.originals {
            return Ok((o.doc(c.local)?.to_f32(), true));
        }
        let v = match self.inner.codec.as_deref() {
            Some(codec) => crate::search::decompress_doc(codec, &seg.reader, c.local),
            // No codec means no segments, so no located document: nothing to decompress.
            None => Vec::new(),
        };
        Ok((v, false))
    }
}
