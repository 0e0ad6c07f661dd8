//! Reading stored documents back: what hits carry on request (metadata, text), `get` by id,
//! and the listing of every document (for `tessera get`, `list` and `export`).

use tessera_storage::ExternalId;

use crate::collection::Collection;
use crate::document::{Hit, StoredDocument};
use crate::error::Result;
use crate::options::HitFields;

/// Ids read from the catalog per multi-get when listing a whole collection.
const LIST_CHUNK: usize = 4096;

impl Collection {
    /// Fills the fields `fields` asks for into `hits` (one catalog multi-get per field);
    /// nothing is read when it asks for none.
    pub(crate) fn fill_hits(&self, hits: &mut [Hit], fields: HitFields) -> Result<()> {
        if hits.is_empty() || (!fields.metadata && !fields.text) {
            return Ok(());
        }
        let ids: Vec<ExternalId> = hits.iter().map(|h| h.id.clone()).collect();
        if fields.metadata {
            for (h, m) in hits.iter_mut().zip(self.metadata_many(&ids)?) {
                h.metadata = m;
            }
        }
        if fields.text {
            let (catalog, coll) = self.catalog();
            for (h, t) in hits.iter_mut().zip(catalog.texts(coll, &ids)?) {
                h.text = t;
            }
        }
        Ok(())
    }

    /// The metadata of each of `ids` (`None` where a document has none or does not exist).
    pub fn metadata_many(&self, ids: &[ExternalId]) -> Result<Vec<Option<serde_json::Value>>> {
        self.check_live()?;
        let (catalog, coll) = self.catalog();
        ids.iter()
            .zip(catalog.metadata_many(coll, ids)?)
            .map(|(id, raw)| match raw {
                None => Ok(None),
                Some(b) => serde_json::from_slice(&b)
                    .map(Some)
                    .map_err(|e| self.corrupt_record(format!("metadata of {id}"), e.to_string())),
            })
            .collect()
    }

    /// The passage text kept with document `id` (text ingests keep it unless told not to),
    /// if any.
    pub fn text(&self, id: &ExternalId) -> Result<Option<String>> {
        self.check_live()?;
        let (catalog, coll) = self.catalog();
        Ok(catalog
            .texts(coll, std::slice::from_ref(id))?
            .pop()
            .flatten())
    }

    /// Live documents `ids` with their token counts, metadata and text, and their vectors
    /// when `with_vectors` (as [`Collection::vectors`] returns them); `None` for an id that
    /// is not in the collection.
    pub fn get(
        &self,
        ids: &[ExternalId],
        with_vectors: bool,
    ) -> Result<Vec<Option<StoredDocument>>> {
        self.check_live()?;
        let (catalog, coll) = self.catalog();
        let locations = catalog.locations(coll, ids)?;
        let metadata = self.metadata_many(ids)?;
        let texts = catalog.texts(coll, ids)?;
        let snap = self.snapshot();
        let mut out = Vec::with_capacity(ids.len());
        for (((id, loc), metadata), text) in ids.iter().zip(locations).zip(metadata).zip(texts) {
            let Some(loc) = loc else {
                out.push(None);
                continue;
            };
            // A location of a commit newer than the snapshot: not visible yet.
            let Some(seg) = snap.inner.segments.iter().find(|s| s.id == loc.segment) else {
                out.push(None);
                continue;
            };
            let off = seg.reader.doc_offsets();
            let l = loc.local as usize;
            if l + 1 >= off.len() {
                return Err(self.corrupt_record(
                    format!("location of document {id}"),
                    format!("local document {l} of segment {}", loc.segment),
                ));
            }
            let vectors = if with_vectors {
                self.vectors(id)?
            } else {
                None
            };
            out.push(Some(StoredDocument {
                id: id.clone(),
                tokens: (off[l + 1] - off[l]) as usize,
                metadata,
                text,
                vectors,
            }));
        }
        Ok(out)
    }

    /// The ids of the live documents that `filter` matches (in segment order), as a
    /// filtered search would allow them.
    pub fn matching(&self, filter: &crate::Filter) -> Result<Vec<ExternalId>> {
        self.check_live()?;
        let snap = self.snapshot();
        let Some(allowed) = crate::filter::allowed(&snap.inner, Some(filter), self.name())? else {
            return Ok(Vec::new());
        };
        Ok(allowed
            .per_seg
            .iter()
            .zip(&snap.inner.segments)
            .flat_map(|(b, s)| b.iter().filter_map(|l| s.reader.external_id(l).cloned()))
            .collect())
    }

    /// Every live document, in id order (integer ids first, numerically, then string ids),
    /// with its token count and the fields `fields` asks for (never vectors).
    pub fn list(&self, fields: HitFields) -> Result<Vec<StoredDocument>> {
        self.check_live()?;
        let (catalog, coll) = self.catalog();
        let all = catalog.all_locations(coll)?;
        let snap = self.snapshot();
        let mut out = Vec::with_capacity(all.len());
        for chunk in all.chunks(LIST_CHUNK) {
            let ids: Vec<ExternalId> = chunk.iter().map(|(id, _)| id.clone()).collect();
            let metadata = if fields.metadata {
                self.metadata_many(&ids)?
            } else {
                vec![None; ids.len()]
            };
            let texts = if fields.text {
                catalog.texts(coll, &ids)?
            } else {
                vec![None; ids.len()]
            };
            for (((id, loc), metadata), text) in chunk.iter().zip(metadata).zip(texts) {
                let Some(seg) = snap.inner.segments.iter().find(|s| s.id == loc.segment) else {
                    continue;
                };
                let off = seg.reader.doc_offsets();
                let l = loc.local as usize;
                let Some(tokens) = off.get(l + 1).map(|hi| hi - off[l]) else {
                    return Err(self.corrupt_record(
                        format!("location of document {id}"),
                        format!("local document {l} of segment {}", loc.segment),
                    ));
                };
                out.push(StoredDocument {
                    id: id.clone(),
                    tokens: tokens as usize,
                    metadata,
                    text,
                    vectors: None,
                });
            }
        }
        Ok(out)
    }
}
