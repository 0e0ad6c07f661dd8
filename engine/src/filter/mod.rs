//! Metadata filters: which documents a search may return, decided before any scoring.
//!
//! A [`Filter`] is an expression over the documents' JSON metadata (equality, `IN`, numeric
//! and string ranges, existence, `AND`/`OR`/`NOT`) and over their ids (an allow-list). The
//! CLI and the shell write it in a small grammar ([`Filter::parse`], documented there).
//!
//! **Evaluation.** A filter is evaluated once per search (once per batch) to one roaring
//! bitmap of local ids per segment, minus the segment's tombstones ([`Allowed`]); the
//! candidate stages of the search then skip every document outside it, so the top-k is
//! filled from matching documents only. When no more documents match than the postings stage
//! of an unfiltered search as deep as the filtered one has to look would keep
//! ([`crate::SearchParams::filter_scan_budget`] at the depth of [`depth::depth`]: `k`
//! divided by the selectivity), every matching document gets the centroid-code estimate
//! instead, so those that share no probed centroid with the query (common under a selective
//! filter) are not lost; the exact and refine stages follow as usual. When only a few
//! hundred match ([`crate::SearchParams::filter_exact_budget`]), they are all scored by
//! exact MaxSim over their originals, without the centroid stages.
//!
//! **Index** ([`index::SegmentFields`]): per segment, per field (a top-level key of the
//! metadata object, or a dotted path into nested objects), one ordered map from value to
//! the bitmap of local documents that hold it, plus the bitmap of documents that have the
//! field at all. Why this structure: a segment's documents never change after its commit
//! (an upsert writes the new version into a new segment and tombstones the old one), so a
//! segment's index is built once, from its batch's metadata, and never updated; deletes
//! and upserts reach filters through the tombstones alone, which are subtracted at every
//! evaluation. One ordered map serves equality and `IN` (a lookup per value), ranges (a
//! walk over the keys in range, numbers and strings each in their own order) and
//! existence, with no second copy of the values.
//!
//! **Durability.** The index is derived data: built at commit from the batch's metadata,
//! and at open from the catalog's metadata records (`X`), which the same synced catalog
//! batch as the segment made durable. Collections written before filters existed need
//! nothing more; there is no second copy on disk to keep consistent with the catalog.
//! Opening costs one scan of the collection's metadata records (measured in BENCHMARKS.md,
//! "Filtered search").

pub(crate) mod depth;
pub(crate) mod eval;
pub(crate) mod index;
mod parse;

pub use parse::FilterParseError;
use serde_json::Value;
use tessera_storage::ExternalId;

pub(crate) use eval::{Allowed, allowed};

/// A scalar a filter compares with: a metadata value is a string, a number (compared as
/// `f64`), a boolean or null; arrays match when any element does.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    /// A JSON string.
    Str(String),
    /// A JSON number, as `f64` (integers beyond 2^53 lose precision).
    Num(f64),
    /// `true` or `false`.
    Bool(bool),
    /// JSON `null`.
    Null,
}

impl Scalar {
    /// The scalar of a JSON value, `None` for arrays and objects.
    pub fn from_json(v: &Value) -> Option<Scalar> {
        match v {
            Value::String(s) => Some(Scalar::Str(s.clone())),
            Value::Number(n) => n.as_f64().map(Scalar::Num),
            Value::Bool(b) => Some(Scalar::Bool(*b)),
            Value::Null => Some(Scalar::Null),
            _ => None,
        }
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Scalar::Str(_) => "string",
            Scalar::Num(_) => "number",
            Scalar::Bool(_) => "boolean",
            Scalar::Null => "null",
        }
    }
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Str(s) => write!(f, "{s:?}"),
            Scalar::Num(x) => write!(f, "{x}"),
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Null => f.write_str("null"),
        }
    }
}

/// How a range compares a field's values with a bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// Which documents a search may return. Build with the constructors or [`Filter::parse`].
///
/// ```no_run
/// use tessera::{Cmp, Database, Filter, HitFields, SearchParams};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let db = Database::open_read_only("my.db")?;
/// let docs = db.collection("docs")?;
/// let recent_english = Filter::eq("lang", "en").and(Filter::range("year", Cmp::Ge, 2020i64));
/// assert_eq!(recent_english, Filter::parse(r#"lang = "en" AND year >= 2020"#)?);
/// let params = SearchParams::default()
///     .with_filter(recent_english)
///     .with_fields(HitFields { metadata: true, text: true });
/// for hit in docs.search(&vec![0.1; 32 * 128], 10, &params)? {
///     println!("{} {} {:?}", hit.id, hit.score, hit.text);
/// }
/// # Ok(()) }
/// ```
///
/// Semantics: a field matches when any of its values does (a scalar is one value; an array
/// holds one per element). `NOT f` is every live document that `f` does not match,
/// including those without the field; `a != v` is `NOT a = v`. Comparing a field with a
/// value of a type that no document holds in that field, naming a field that no document
/// has, or a range over booleans or null, is an error ([`crate::Error::InvalidFilter`]),
/// not an empty result; an empty id allow-list (or `IN ()`) matches nothing, and a search
/// with it returns no hits.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    /// The field holds this value.
    Eq(String, Scalar),
    /// The field holds one of these values.
    In(String, Vec<Scalar>),
    /// The field holds a number (or a string) in this relation to the bound; numbers
    /// compare with numbers, strings with strings (bytewise UTF-8 order).
    Range(String, Cmp, Scalar),
    /// The document's metadata has the field (with any value, `null` included).
    Exists(String),
    /// The document's id is one of these.
    Ids(Vec<ExternalId>),
    /// Every one of these matches.
    And(Vec<Filter>),
    /// At least one of these matches.
    Or(Vec<Filter>),
    /// This does not match.
    Not(Box<Filter>),
}

impl Filter {
    /// `field = value`.
    pub fn eq(field: impl Into<String>, value: impl Into<Scalar>) -> Self {
        Filter::Eq(field.into(), value.into())
    }

    /// `field IN (values…)`.
    pub fn one_of(field: impl Into<String>, values: Vec<Scalar>) -> Self {
        Filter::In(field.into(), values)
    }

    /// `field CMP bound`.
    pub fn range(field: impl Into<String>, cmp: Cmp, bound: impl Into<Scalar>) -> Self {
        Filter::Range(field.into(), cmp, bound.into())
    }

    /// `EXISTS field`.
    pub fn exists(field: impl Into<String>) -> Self {
        Filter::Exists(field.into())
    }

    /// Documents with these ids only.
    pub fn ids(ids: Vec<ExternalId>) -> Self {
        Filter::Ids(ids)
    }

    /// `self AND other`.
    pub fn and(self, other: Filter) -> Self {
        match self {
            Filter::And(mut v) => {
                v.push(other);
                Filter::And(v)
            }
            f => Filter::And(vec![f, other]),
        }
    }

    /// `self OR other`.
    pub fn or(self, other: Filter) -> Self {
        match self {
            Filter::Or(mut v) => {
                v.push(other);
                Filter::Or(v)
            }
            f => Filter::Or(vec![f, other]),
        }
    }

    /// `NOT self`.
    #[allow(clippy::should_implement_trait)]
    pub fn not(self) -> Self {
        Filter::Not(Box::new(self))
    }

    /// Parses the filter grammar of the CLI's `--where` and the shell's `.where`:
    ///
    /// ```text
    /// expr    := or
    /// or      := and ( OR and )*
    /// and     := unary ( AND unary )*
    /// unary   := NOT unary | primary
    /// primary := ( expr )
    ///          | EXISTS field
    ///          | field ( = | != | < | <= | > | >= ) value
    ///          | field [NOT] IN ( [value ( , value )*] )
    ///          | @id [NOT] IN ( [value ( , value )*] )      (an id allow-list)
    /// field   := [A-Za-z_][A-Za-z0-9_.-]*  |  `any text`   (dots reach into nested objects)
    /// value   := "string" | 'string' | number | true | false | null
    /// ```
    ///
    /// Keywords are case-insensitive. In `@id IN (…)` a string is a string id and a
    /// non-negative integer an integer id. A syntax error says what was expected and at which
    /// character (0-based) of the text.
    pub fn parse(text: &str) -> Result<Filter, FilterParseError> {
        parse::parse(text)
    }
}

impl From<&str> for Scalar {
    fn from(s: &str) -> Self {
        Scalar::Str(s.to_owned())
    }
}

impl From<String> for Scalar {
    fn from(s: String) -> Self {
        Scalar::Str(s)
    }
}

impl From<f64> for Scalar {
    fn from(x: f64) -> Self {
        Scalar::Num(x)
    }
}

impl From<i64> for Scalar {
    fn from(x: i64) -> Self {
        Scalar::Num(x as f64)
    }
}

impl From<bool> for Scalar {
    fn from(b: bool) -> Self {
        Scalar::Bool(b)
    }
}
