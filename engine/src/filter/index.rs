//! The per-segment metadata index (see the module documentation of `filter` for why this
//! structure): field → ordered map value → bitmap of local documents, plus, per field, the
//! documents that have it.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use roaring::RoaringBitmap;
use serde_json::Value;
use tessera_storage::ExternalId;
use tessera_storage::catalog::{Catalog, Manifest};
use tessera_storage::segment::SegmentReader;

use crate::document::Document;
use crate::error::{Error, Result};

/// Nested objects deeper than this are not indexed below it (their fields are not
/// filterable); it bounds the recursion over metadata that came from disk.
const MAX_DEPTH: usize = 16;

/// An indexed value, ordered within its kind: numbers by value (`-0` counts as `0`),
/// strings bytewise. Kinds never compare with each other in a range.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Key {
    Null,
    Bool(bool),
    Num(OrdF64),
    Str(String),
}

/// A finite `f64` ordered by value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct OrdF64(pub(crate) f64);

impl Eq for OrdF64 {}

impl PartialOrd for OrdF64 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrdF64 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The kinds of value, in the order of [`Key::kind_bit`]'s bits.
pub(crate) const KINDS: [&str; 4] = ["null", "boolean", "number", "string"];

impl Key {
    /// This key's kind as one bit (bit `i` is `KINDS[i]`).
    pub(crate) fn kind_bit(&self) -> u8 {
        match self {
            Key::Null => 1,
            Key::Bool(_) => 2,
            Key::Num(_) => 4,
            Key::Str(_) => 8,
        }
    }

    pub(crate) fn of(s: &super::Scalar) -> Key {
        match s {
            super::Scalar::Null => Key::Null,
            super::Scalar::Bool(b) => Key::Bool(*b),
            // One zero, so that `0` and `-0.0` are the same value.
            super::Scalar::Num(x) => Key::Num(OrdF64(if *x == 0.0 { 0.0 } else { *x })),
            super::Scalar::Str(s) => Key::Str(s.clone()),
        }
    }
}

/// One field of one segment.
#[derive(Debug, Default)]
pub(crate) struct FieldIndex {
    /// Documents that have the field.
    pub(crate) exists: RoaringBitmap,
    /// Each value to the documents that hold it.
    pub(crate) values: BTreeMap<Key, RoaringBitmap>,
    /// The kinds of value present ([`Key::kind_bit`]), so that checking a filter's types
    /// does not walk the values.
    pub(crate) kinds: u8,
}

/// The filter index of one segment; immutable once built.
#[derive(Debug, Default)]
pub(crate) struct SegmentFields {
    pub(crate) fields: HashMap<String, FieldIndex>,
    /// External id → local document, built on the first id allow-list over the segment.
    ids: OnceLock<HashMap<ExternalId, u32>>,
}

impl SegmentFields {
    /// The index of documents `(local id, metadata)`.
    pub(crate) fn build<'a>(docs: impl IntoIterator<Item = (u32, &'a Value)>) -> Self {
        let mut out = SegmentFields::default();
        for (local, meta) in docs {
            out.add_doc(local, meta);
        }
        out
    }

    /// The index of a committed batch: document `i` of `docs` is local document `i`.
    pub(crate) fn of_batch(docs: &[Document]) -> Self {
        Self::build(
            docs.iter()
                .enumerate()
                .filter_map(|(i, d)| d.metadata.as_ref().map(|m| (i as u32, m))),
        )
    }

    /// Indexes one document's metadata (only an object has fields).
    fn add_doc(&mut self, local: u32, meta: &Value) {
        if let Value::Object(map) = meta {
            for (k, v) in map {
                self.add(k.clone(), v, local, 0);
            }
        }
    }

    fn add(&mut self, field: String, v: &Value, local: u32, depth: usize) {
        match v {
            Value::Object(map) => {
                if depth < MAX_DEPTH {
                    for (k, inner) in map {
                        self.add(format!("{field}.{k}"), inner, local, depth + 1);
                    }
                }
            }
            Value::Array(items) => {
                let f = self.fields.entry(field.clone()).or_default();
                f.exists.insert(local);
                for item in items {
                    if let Some(s) = super::Scalar::from_json(item) {
                        self.insert(&field, &s, local);
                    } else if depth < MAX_DEPTH && item.is_object() {
                        self.add(field.clone(), item, local, depth + 1);
                    }
                }
            }
            scalar => {
                if let Some(s) = super::Scalar::from_json(scalar) {
                    self.insert(&field, &s, local);
                }
            }
        }
    }

    fn insert(&mut self, field: &str, s: &super::Scalar, local: u32) {
        let f = self.fields.entry(field.to_owned()).or_default();
        f.exists.insert(local);
        let key = Key::of(s);
        f.kinds |= key.kind_bit();
        f.values.entry(key).or_default().insert(local);
    }

    /// The local document of external id `id` in `reader`'s segment, if it is there.
    pub(crate) fn local_of(&self, reader: &SegmentReader, id: &ExternalId) -> Option<u32> {
        self.ids
            .get_or_init(|| {
                (0..reader.meta().n_docs)
                    .filter_map(|l| reader.external_id(l).map(|id| (id.clone(), l)))
                    .collect()
            })
            .get(id)
            .copied()
    }
}

/// Documents whose locations are looked up per catalog multi-get.
const LOAD_CHUNK: usize = 4096;

/// The filter index of every segment of a collection, from its catalog: each live document
/// with metadata (`X`) goes to the segment and local id of its location (`I`). A location
/// outside its segment, or metadata that is not JSON, is a corrupt record.
pub(crate) fn load(
    catalog: &Catalog,
    coll: u32,
    manifest: &Manifest,
    name: &str,
) -> Result<HashMap<u64, SegmentFields>> {
    let n_docs: HashMap<u64, u32> = manifest.segments.iter().map(|s| (s.id, s.n_docs)).collect();
    let corrupt = |key: String, reason: String| {
        Error::from(tessera_storage::Error::CorruptRecord {
            path: catalog.path().to_path_buf(),
            key: format!("collection {name:?}: {key}"),
            reason,
        })
    };
    let mut out: HashMap<u64, SegmentFields> = HashMap::new();
    let all = catalog.all_metadata(coll)?;
    for chunk in all.chunks(LOAD_CHUNK) {
        let ids: Vec<ExternalId> = chunk.iter().map(|(id, _)| id.clone()).collect();
        let locs = catalog.locations(coll, &ids)?;
        for ((id, json), loc) in chunk.iter().zip(locs) {
            // Metadata without a location: the document was deleted (both go in one batch,
            // so this only happens to records written by hand); nothing to index.
            let Some(loc) = loc else { continue };
            match n_docs.get(&loc.segment) {
                Some(&n) if loc.local < n => {}
                _ => {
                    return Err(corrupt(
                        format!("location of document {id}"),
                        format!(
                            "local document {} of segment {}, which the manifest does not have",
                            loc.local, loc.segment
                        ),
                    ));
                }
            }
            let meta: Value = serde_json::from_slice(json)
                .map_err(|e| corrupt(format!("metadata of {id}"), e.to_string()))?;
            out.entry(loc.segment)
                .or_default()
                .add_doc(loc.local, &meta);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars_arrays_and_nested_objects_are_indexed_by_path() {
        let a = json!({"lang": "en", "year": 2020, "tags": ["x", "y"], "src": {"kind": "web"}});
        let b = json!({"lang": "de", "year": 2021.0, "tags": [], "n": null});
        let idx = SegmentFields::build([(0, &a), (1, &b), (2, &json!("not an object"))]);
        let bits = |f: &str, k: Key| {
            idx.fields[f]
                .values
                .get(&k)
                .map(|b| b.iter().collect::<Vec<_>>())
        };
        assert_eq!(bits("lang", Key::Str("en".into())), Some(vec![0]));
        assert_eq!(bits("year", Key::Num(OrdF64(2021.0))), Some(vec![1]));
        assert_eq!(bits("tags", Key::Str("y".into())), Some(vec![0]));
        assert_eq!(bits("src.kind", Key::Str("web".into())), Some(vec![0]));
        assert_eq!(bits("n", Key::Null), Some(vec![1]));
        assert_eq!(
            idx.fields["tags"].exists.iter().collect::<Vec<_>>(),
            vec![0, 1]
        );
    }
}
