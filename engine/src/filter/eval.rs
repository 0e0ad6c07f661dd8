//! Evaluating a [`Filter`] over a snapshot: first checked against the fields the collection's
//! documents have (unknown fields and impossible types are errors), then, per segment, to
//! the bitmap of matching live local documents.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use roaring::{MultiOps, RoaringBitmap};

use super::index::{KINDS, Key, OrdF64, SegmentFields};
use super::{Cmp, Filter, Scalar};
use crate::error::{Error, Result};
use crate::snapshot::{SegmentView, SnapshotInner};

/// The documents a filtered search may return: per segment of the snapshot (in its order),
/// the matching local ids minus tombstones.
#[derive(Debug)]
pub(crate) struct Allowed {
    pub(crate) per_seg: Vec<RoaringBitmap>,
    /// Matching live documents in all.
    pub(crate) count: u64,
}

impl Allowed {
    pub(crate) fn contains(&self, seg: usize, local: u32) -> bool {
        self.per_seg[seg].contains(local)
    }
}

/// The documents of `snap` that `filter` allows, or `None` without a filter.
pub(crate) fn allowed(
    snap: &SnapshotInner,
    filter: Option<&Filter>,
    collection: &str,
) -> Result<Option<Allowed>> {
    let Some(filter) = filter else {
        return Ok(None);
    };
    let invalid = |reason| Error::InvalidFilter {
        collection: collection.to_owned(),
        reason,
    };
    if deeper_than(filter, MAX_DEPTH) {
        return Err(invalid(format!(
            "the filter is nested deeper than {MAX_DEPTH} levels"
        )));
    }
    check(filter, &kinds(snap)).map_err(invalid)?;
    let per_seg: Vec<RoaringBitmap> = snap
        .segments
        .iter()
        .map(|s| eval(filter, s) - &*s.tombstones)
        .collect();
    let count = per_seg.iter().map(RoaringBitmap::len).sum();
    Ok(Some(Allowed { per_seg, count }))
}

/// The deepest nesting of `AND`, `OR` and `NOT` evaluated (the grammar's own limit): the
/// checks and the evaluation recurse, and a filter built in code could otherwise nest deep
/// enough to overflow the stack.
const MAX_DEPTH: usize = 64;

/// Whether `f` nests deeper than `limit` (recursing at most `limit` levels).
fn deeper_than(f: &Filter, limit: usize) -> bool {
    match f {
        Filter::And(fs) | Filter::Or(fs) => {
            limit == 0 || fs.iter().any(|f| deeper_than(f, limit - 1))
        }
        Filter::Not(f) => limit == 0 || deeper_than(f, limit - 1),
        _ => false,
    }
}

/// Per field, the kinds of value ("string", "number", ...) some document of the snapshot
/// holds (deleted documents included: they change nothing but the error messages).
fn kinds(snap: &SnapshotInner) -> BTreeMap<&str, BTreeSet<&'static str>> {
    let mut out: BTreeMap<&str, BTreeSet<&'static str>> = BTreeMap::new();
    for s in &snap.segments {
        for (name, f) in &s.fields.fields {
            let e = out.entry(name.as_str()).or_default();
            for (i, kind) in KINDS.iter().enumerate() {
                if f.kinds & (1 << i) != 0 {
                    e.insert(kind);
                }
            }
        }
    }
    out
}

/// Refuses a filter that names a field no document has, or compares a field with a kind of
/// value it never holds: such a filter is almost always a typo, and an empty result would
/// hide it.
fn check(f: &Filter, kinds: &BTreeMap<&str, BTreeSet<&'static str>>) -> Result<(), String> {
    let field_kinds = |field: &str| {
        kinds.get(field).ok_or_else(|| {
            let known: Vec<&str> = kinds.keys().copied().take(20).collect();
            if known.is_empty() {
                format!(
                    "unknown field `{field}`: no document of the collection has metadata fields"
                )
            } else {
                format!(
                    "unknown field `{field}`: no document has it (fields: {}{})",
                    known.join(", "),
                    if kinds.len() > known.len() {
                        ", ..."
                    } else {
                        ""
                    }
                )
            }
        })
    };
    let mismatch = |field: &str, v: &Scalar, have: &BTreeSet<&'static str>| {
        format!(
            "type mismatch: field `{field}` holds {} values, compared with the {} {v}",
            have.iter().copied().collect::<Vec<_>>().join(" and "),
            v.kind()
        )
    };
    let finite = |v: &Scalar| match v {
        Scalar::Num(x) if !x.is_finite() => Err(format!("{x} is not a finite number")),
        _ => Ok(()),
    };
    match f {
        Filter::Eq(field, v) => {
            finite(v)?;
            let have = field_kinds(field)?;
            if !have.contains(v.kind()) {
                return Err(mismatch(field, v, have));
            }
        }
        Filter::In(field, vs) => {
            vs.iter().try_for_each(finite)?;
            let have = field_kinds(field)?;
            if let Some(v) = vs.iter().find(|v| !have.contains(v.kind())) {
                return Err(mismatch(field, v, have));
            }
        }
        Filter::Range(field, _, v) => {
            finite(v)?;
            let have = field_kinds(field)?;
            if !matches!(v, Scalar::Num(_) | Scalar::Str(_)) {
                return Err(format!(
                    "a range compares numbers or strings, not {}",
                    v.kind()
                ));
            }
            if !have.contains(v.kind()) {
                return Err(mismatch(field, v, have));
            }
        }
        Filter::Exists(field) => {
            field_kinds(field)?;
        }
        Filter::Ids(_) => {}
        Filter::And(fs) | Filter::Or(fs) => {
            for f in fs {
                check(f, kinds)?;
            }
        }
        Filter::Not(f) => check(f, kinds)?,
    }
    Ok(())
}

/// The local documents of segment `s` that `f` matches (tombstones not yet removed).
fn eval(f: &Filter, s: &SegmentView) -> RoaringBitmap {
    let fields: &SegmentFields = &s.fields;
    let field = |name: &str| fields.fields.get(name);
    match f {
        Filter::Eq(name, v) => field(name)
            .and_then(|fi| fi.values.get(&Key::of(v)))
            .cloned()
            .unwrap_or_default(),
        Filter::In(name, vs) => match field(name) {
            Some(fi) => vs.iter().filter_map(|v| fi.values.get(&Key::of(v))).union(),
            None => RoaringBitmap::new(),
        },
        Filter::Range(name, cmp, v) => match field(name) {
            Some(fi) => range(&fi.values, *cmp, v),
            None => RoaringBitmap::new(),
        },
        Filter::Exists(name) => field(name).map(|fi| fi.exists.clone()).unwrap_or_default(),
        Filter::Ids(ids) => {
            let mut out = RoaringBitmap::new();
            for id in ids {
                if let Some(l) = fields.local_of(&s.reader, id) {
                    out.insert(l);
                }
            }
            out
        }
        Filter::And(fs) => {
            let mut it = fs.iter();
            let Some(first) = it.next() else {
                return all(s);
            };
            let mut acc = eval(first, s);
            for f in it {
                if acc.is_empty() {
                    break;
                }
                acc &= eval(f, s);
            }
            acc
        }
        Filter::Or(fs) => fs.iter().map(|f| eval(f, s)).union(),
        Filter::Not(inner) => all(s) - eval(inner, s),
    }
}

fn all(s: &SegmentView) -> RoaringBitmap {
    let mut b = RoaringBitmap::new();
    b.insert_range(0..s.reader.meta().n_docs);
    b
}

/// The documents holding a value of `v`'s kind in relation `cmp` to it.
fn range(values: &BTreeMap<Key, RoaringBitmap>, cmp: Cmp, v: &Scalar) -> RoaringBitmap {
    let bound = Key::of(v);
    // The whole span of the bound's kind: numbers from -inf to +inf, strings from "" up.
    let (kind_lo, kind_hi) = match v {
        Scalar::Num(_) => (
            Bound::Included(Key::Num(OrdF64(f64::NEG_INFINITY))),
            Bound::Included(Key::Num(OrdF64(f64::INFINITY))),
        ),
        _ => (Bound::Included(Key::Str(String::new())), Bound::Unbounded),
    };
    let (lo, hi) = match cmp {
        Cmp::Lt => (kind_lo, Bound::Excluded(bound)),
        Cmp::Le => (kind_lo, Bound::Included(bound)),
        Cmp::Gt => (Bound::Excluded(bound), kind_hi),
        Cmp::Ge => (Bound::Included(bound), kind_hi),
    };
    // Many distinct values (timestamps, ids) make many one-document bitmaps: collecting
    // their members and building one bitmap from the sorted list beats a chain of unions.
    let parts: Vec<&RoaringBitmap> = values.range((lo, hi)).map(|(_, b)| b).collect();
    if parts.len() <= 64 {
        return parts.into_iter().union();
    }
    let mut ids: Vec<u32> = parts.iter().flat_map(|b| b.iter()).collect();
    ids.sort_unstable();
    ids.dedup();
    RoaringBitmap::from_sorted_iter(ids).unwrap_or_default()
}
