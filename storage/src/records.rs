//! The catalog's records as bytes (FORMAT.md, "Catalog"): how each key is laid out, how each
//! value is encoded, and the decoders that check both before anything is used.
//!
//! Plain byte-level code with no RocksDB in it: the catalog (`catalog.rs`, behind the
//! `catalog` feature) stores and reads these bytes, and the fuzz targets (`tests/fuzz`)
//! decode arbitrary bytes with these same functions in a build that compiles no C++.
//!
//! Every decoder refuses bad bytes with [`Error::CorruptRecord`] naming the record and the
//! reason, and allocates nothing in proportion to a length it has not checked against the
//! bytes it was given.

use std::path::Path;

use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::ExternalId;

pub(crate) const KEY_FORMAT: &[u8] = b"F";
pub(crate) const KEY_DB: &[u8] = b"D";
pub(crate) const TAG_COLLECTION: u8 = b'C';
pub(crate) const TAG_MANIFEST: u8 = b'M';
pub(crate) const TAG_LOCATION: u8 = b'I';
pub(crate) const TAG_TOMBSTONES: u8 = b'T';
pub(crate) const TAG_METADATA: u8 = b'X';
pub(crate) const TAG_TEXT: u8 = b'P';

/// Value of the format key: identifies a Tessera catalog and its layout version.
pub const CATALOG_FORMAT: &str = "tessera-catalog 1";

/// The commit protocol under which data files keep their `.tmp` name until the catalog
/// batch that references them is durable (FORMAT.md, "Commit protocol").
pub const PUBLISH_AFTER_COMMIT: u32 = 2;

/// Database-wide record.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DbRecord {
    /// Id the next created collection gets; ids are never reused.
    pub next_collection_id: u32,
    /// Commit protocol of every data file in the database: 0 (absent) for databases whose
    /// files were renamed into place before their commit, so that an unreferenced file can
    /// be a crashed commit's debris; [`PUBLISH_AFTER_COMMIT`] once the writer has cleared
    /// such debris, after which only a lost commit can explain an unreferenced file.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub commit_protocol: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// A collection's identity and settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CollectionRecord {
    /// Internal id (names can be dropped and reused; ids cannot).
    pub id: u32,
    /// The user's name for it.
    pub name: String,
    /// The engine's settings for it, opaque to storage.
    pub config: serde_json::Value,
}

/// A published codec file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CodecRef {
    /// Codec id (a file id of the collection).
    pub id: u64,
    /// File name inside the collection directory.
    pub file: String,
}

/// A published segment file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SegmentRef {
    /// Segment id (a file id of the collection).
    pub id: u64,
    /// File name inside the collection directory.
    pub file: String,
    /// Documents in the segment, deleted ones included.
    pub n_docs: u32,
    /// Token vectors in the segment.
    pub n_tokens: u64,
    /// File size.
    pub bytes: u64,
    /// The segment's original vectors, when the collection keeps them (absent in
    /// manifests written before originals existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub originals: Option<OriginalsRef>,
}

/// A published originals file (FORMAT.md, "Originals").
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OriginalsRef {
    /// File name inside the collection directory.
    pub file: String,
    /// File size.
    pub bytes: u64,
}

/// The set of files that make up a collection at one commit.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// The codec, once trained.
    pub codec: Option<CodecRef>,
    /// Segments in commit order.
    pub segments: Vec<SegmentRef>,
    /// Next file id to hand out.
    pub next_file_id: u64,
    /// Documents not deleted.
    pub live_docs: u64,
    /// Token vectors of documents not deleted.
    pub live_tokens: u64,
    /// Number of commits so far (ingests and deletes).
    pub commits: u64,
    /// Provenance of the vectors (e.g. the encoder model), opaque to storage.
    #[serde(default)]
    pub model: Option<serde_json::Value>,
}

/// Where a live document is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DocLocation {
    /// Segment id.
    pub segment: u64,
    /// Local document number inside the segment.
    pub local: u32,
}

/// Bytes of an encoded [`DocLocation`].
const LOCATION_LEN: usize = 12;

impl DocLocation {
    /// The 12-byte value: segment id `u64`, then local document `u32`, little-endian.
    pub fn encode(&self) -> [u8; LOCATION_LEN] {
        let mut b = [0u8; LOCATION_LEN];
        b[..8].copy_from_slice(&self.segment.to_le_bytes());
        b[8..].copy_from_slice(&self.local.to_le_bytes());
        b
    }

    /// Inverse of [`DocLocation::encode`]; `None` unless `b` is exactly 12 bytes.
    pub fn decode(b: &[u8]) -> Option<Self> {
        let b: &[u8; LOCATION_LEN] = b.try_into().ok()?;
        let (segment, local) = b.split_at(8);
        Some(DocLocation {
            segment: u64::from_le_bytes(segment.try_into().ok()?),
            local: u32::from_le_bytes(local.try_into().ok()?),
        })
    }
}

/// What a catalog key names, parsed from its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordKey {
    /// `F`: the catalog's format.
    Format,
    /// `D`: the database-wide record.
    Db,
    /// `C` + name: a collection record.
    Collection {
        /// The collection's name.
        name: String,
    },
    /// `M` + collection id: a collection's manifest.
    Manifest {
        /// Collection id.
        coll: u32,
    },
    /// `I` + collection id + external id: where a live document is stored.
    Location {
        /// Collection id.
        coll: u32,
        /// The document.
        id: ExternalId,
    },
    /// `T` + collection id + segment id: the segment's deleted documents.
    Tombstones {
        /// Collection id.
        coll: u32,
        /// Segment id.
        segment: u64,
    },
    /// `X` + collection id + external id: a document's JSON metadata.
    Metadata {
        /// Collection id.
        coll: u32,
        /// The document.
        id: ExternalId,
    },
    /// `P` + collection id + external id: a document's kept passage text.
    Text {
        /// Collection id.
        coll: u32,
        /// The document.
        id: ExternalId,
    },
}

/// `tag`, the collection id big-endian, then `rest`: the layout of every per-collection key.
pub(crate) fn key(tag: u8, coll: u32, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(5 + rest.len());
    k.push(tag);
    k.extend_from_slice(&coll.to_be_bytes());
    k.extend_from_slice(rest);
    k
}

impl RecordKey {
    /// Parses a catalog key; the error says why it is none.
    pub fn parse(key: &[u8]) -> std::result::Result<RecordKey, String> {
        let (&tag, rest) = key.split_first().ok_or("empty key")?;
        let whole = |k: RecordKey| {
            if rest.is_empty() {
                Ok(k)
            } else {
                Err(format!(
                    "key {:?} followed by {} bytes",
                    tag as char,
                    rest.len()
                ))
            }
        };
        let document = |what: &str| -> std::result::Result<(u32, ExternalId), String> {
            let (coll, rest) = split_coll(rest)?;
            let id = ExternalId::from_key_bytes(rest)
                .ok_or_else(|| format!("{what} key is not an external id"))?;
            Ok((coll, id))
        };
        match tag {
            b'F' => whole(RecordKey::Format),
            b'D' => whole(RecordKey::Db),
            TAG_COLLECTION => match std::str::from_utf8(rest) {
                Ok(name) => Ok(RecordKey::Collection {
                    name: name.to_owned(),
                }),
                Err(_) => Err("collection name in the key is not UTF-8".into()),
            },
            TAG_MANIFEST => match split_coll(rest)? {
                (coll, []) => Ok(RecordKey::Manifest { coll }),
                _ => Err("manifest key longer than a collection id".into()),
            },
            TAG_LOCATION => {
                let (coll, id) = document("id-map")?;
                Ok(RecordKey::Location { coll, id })
            }
            TAG_TOMBSTONES => {
                let (coll, rest) = split_coll(rest)?;
                let seg: [u8; 8] = rest
                    .try_into()
                    .map_err(|_| "tombstone key has no segment id".to_owned())?;
                Ok(RecordKey::Tombstones {
                    coll,
                    segment: u64::from_be_bytes(seg),
                })
            }
            TAG_METADATA => {
                let (coll, id) = document("metadata")?;
                Ok(RecordKey::Metadata { coll, id })
            }
            TAG_TEXT => {
                let (coll, id) = document("text")?;
                Ok(RecordKey::Text { coll, id })
            }
            other => Err(format!("unknown key tag {:?}", other as char)),
        }
    }

    /// The key's bytes (inverse of [`RecordKey::parse`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            RecordKey::Format => KEY_FORMAT.to_vec(),
            RecordKey::Db => KEY_DB.to_vec(),
            RecordKey::Collection { name } => collection_key(name),
            RecordKey::Manifest { coll } => manifest_key(*coll),
            RecordKey::Location { coll, id } => location_key(*coll, id),
            RecordKey::Tombstones { coll, segment } => tombstones_key(*coll, *segment),
            RecordKey::Metadata { coll, id } => metadata_key(*coll, id),
            RecordKey::Text { coll, id } => text_key(*coll, id),
        }
    }
}

impl std::fmt::Display for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordKey::Format => f.write_str("F (catalog format)"),
            RecordKey::Db => f.write_str("D (database record)"),
            RecordKey::Collection { name } => write!(f, "collection record {name:?}"),
            RecordKey::Manifest { coll } => write!(f, "manifest of collection {coll}"),
            RecordKey::Location { coll, id } => {
                write!(f, "location of document {id} in collection {coll}")
            }
            RecordKey::Tombstones { coll, segment } => {
                write!(f, "tombstones of segment {segment} in collection {coll}")
            }
            RecordKey::Metadata { coll, id } => {
                write!(f, "metadata of document {id} in collection {coll}")
            }
            RecordKey::Text { coll, id } => write!(f, "text of document {id} in collection {coll}"),
        }
    }
}

fn split_coll(rest: &[u8]) -> std::result::Result<(u32, &[u8]), String> {
    match rest.split_first_chunk::<4>() {
        Some((coll, rest)) => Ok((u32::from_be_bytes(*coll), rest)),
        None => Err("key shorter than its collection id".into()),
    }
}

/// How errors name a key: what it names when it parses, else its bytes, escaped.
pub fn key_name(key: &[u8]) -> String {
    match RecordKey::parse(key) {
        Ok(k) => k.to_string(),
        Err(_) => key.escape_ascii().to_string(),
    }
}

/// A decoded record: what [`decode`] returns for each kind of key.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// The format key (its value is [`CATALOG_FORMAT`]).
    Format,
    /// The database-wide record.
    Db(DbRecord),
    /// A collection record (its name is its key's).
    Collection(CollectionRecord),
    /// A manifest.
    Manifest(Manifest),
    /// A live document's location.
    Location(DocLocation),
    /// A segment's deleted documents.
    Tombstones(RoaringBitmap),
    /// A document's metadata.
    Metadata(serde_json::Value),
    /// A document's kept passage text.
    Text(String),
}

/// The error naming record `key` of the catalog at `catalog`.
pub(crate) fn corrupt(catalog: &Path, key: &[u8], reason: impl Into<String>) -> Error {
    Error::CorruptRecord {
        path: catalog.to_path_buf(),
        key: key_name(key),
        reason: reason.into(),
    }
}

/// Decodes any record of the catalog at `catalog` (named in errors): the key, then the value
/// its key calls for.
pub fn decode(catalog: &Path, key: &[u8], value: &[u8]) -> Result<(RecordKey, Record)> {
    let parsed = RecordKey::parse(key).map_err(|reason| corrupt(catalog, key, reason))?;
    let record = match &parsed {
        RecordKey::Format => {
            check_format(catalog, value)?;
            Record::Format
        }
        RecordKey::Db => Record::Db(decode_json(catalog, key, value)?),
        RecordKey::Collection { .. } => Record::Collection(decode_collection(catalog, key, value)?),
        RecordKey::Manifest { .. } => Record::Manifest(decode_json(catalog, key, value)?),
        RecordKey::Location { .. } => Record::Location(decode_location(catalog, key, value)?),
        RecordKey::Tombstones { .. } => Record::Tombstones(decode_tombstones(catalog, key, value)?),
        RecordKey::Metadata { .. } => Record::Metadata(decode_json(catalog, key, value)?),
        RecordKey::Text { .. } => Record::Text(decode_text(catalog, key, value)?),
    };
    Ok((parsed, record))
}

/// The format key's value must be [`CATALOG_FORMAT`].
pub fn check_format(catalog: &Path, value: &[u8]) -> Result<()> {
    if value == CATALOG_FORMAT.as_bytes() {
        Ok(())
    } else {
        Err(Error::CorruptRecord {
            path: catalog.to_path_buf(),
            key: "F".into(),
            reason: format!(
                "unknown catalog format {:?}",
                String::from_utf8_lossy(value)
            ),
        })
    }
}

/// A JSON record (database record, collection record, manifest, metadata). serde_json
/// refuses nesting deeper than 128, so no value can exhaust the stack.
pub fn decode_json<T: for<'de> Deserialize<'de>>(
    catalog: &Path,
    key: &[u8],
    value: &[u8],
) -> Result<T> {
    serde_json::from_slice(value).map_err(|e| corrupt(catalog, key, e.to_string()))
}

/// A collection record, whose name must be the one its key holds: the catalog finds
/// collections by the key, the engine names them by the record.
pub fn decode_collection(catalog: &Path, key: &[u8], value: &[u8]) -> Result<CollectionRecord> {
    let r: CollectionRecord = decode_json(catalog, key, value)?;
    if key.get(1..) != Some(r.name.as_bytes()) {
        return Err(corrupt(
            catalog,
            key,
            format!("the record names collection {:?}", r.name),
        ));
    }
    Ok(r)
}

/// A document location value.
pub fn decode_location(catalog: &Path, key: &[u8], value: &[u8]) -> Result<DocLocation> {
    DocLocation::decode(value)
        .ok_or_else(|| corrupt(catalog, key, "document location is not 12 bytes"))
}

/// A tombstone bitmap (roaring's portable serialisation), which must fill its value exactly.
///
/// The header is checked against the value's length before roaring reads it: roaring
/// allocates the container descriptions (4 bytes for each of up to 65,536 declared
/// containers) before reading them, so a few bytes declaring many containers would
/// allocate far more than the value holds.
pub fn decode_tombstones(catalog: &Path, key: &[u8], value: &[u8]) -> Result<RoaringBitmap> {
    let fail = |reason: String| corrupt(catalog, key, reason);
    let need = roaring_header_len(value).map_err(|r| fail(r.into()))?;
    if need > value.len() {
        return Err(fail(format!(
            "roaring header needs {need} bytes, the value has {}",
            value.len()
        )));
    }
    let mut reader = value;
    let bitmap = RoaringBitmap::deserialize_from(&mut reader).map_err(|e| fail(e.to_string()))?;
    if !reader.is_empty() {
        return Err(fail(format!(
            "{} bytes after the roaring bitmap",
            reader.len()
        )));
    }
    Ok(bitmap)
}

/// Roaring's portable format (the one `RoaringBitmap::serialize_into` writes).
const ROARING_COOKIE_NO_RUNS: u32 = 12346;
const ROARING_COOKIE_RUNS: u16 = 12347;
/// More containers than 32-bit values can need.
const ROARING_MAX_CONTAINERS: usize = 1 << 16;

/// Bytes of the header (cookie, container count, run flags, descriptions, offsets) that
/// `value` declares; an error for an unknown cookie or too many containers.
fn roaring_header_len(value: &[u8]) -> std::result::Result<usize, &'static str> {
    let word = |at: usize| {
        value
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or("roaring bitmap shorter than its header")
    };
    let cookie = word(0)?;
    let (containers, fixed, runs, offsets) = if cookie == ROARING_COOKIE_NO_RUNS {
        (word(4)? as usize, 8, false, true)
    } else if cookie as u16 == ROARING_COOKIE_RUNS {
        let n = (cookie >> 16) as usize + 1;
        (n, 4, true, n >= 4)
    } else {
        return Err("unknown roaring cookie");
    };
    if containers > ROARING_MAX_CONTAINERS {
        return Err("roaring bitmap declares more than 65,536 containers");
    }
    let run_flags = if runs { containers.div_ceil(8) } else { 0 };
    let per_container = if offsets { 8 } else { 4 };
    Ok(fixed + run_flags + containers * per_container)
}

/// A kept passage text (FORMAT.md, "Catalog", key `P`).
pub fn decode_text(catalog: &Path, key: &[u8], value: &[u8]) -> Result<String> {
    crate::doctext::decode(value).map_err(|reason| corrupt(catalog, key, reason))
}

/// Key of collection `name`'s record.
pub fn collection_key(name: &str) -> Vec<u8> {
    let mut k = vec![TAG_COLLECTION];
    k.extend_from_slice(name.as_bytes());
    k
}

/// Key of collection `coll`'s manifest.
pub fn manifest_key(coll: u32) -> Vec<u8> {
    key(TAG_MANIFEST, coll, &[])
}

/// Key of document `id`'s location in collection `coll`.
pub fn location_key(coll: u32, id: &ExternalId) -> Vec<u8> {
    key(TAG_LOCATION, coll, &id.key_bytes())
}

/// Key of segment `segment`'s tombstones in collection `coll`.
pub fn tombstones_key(coll: u32, segment: u64) -> Vec<u8> {
    key(TAG_TOMBSTONES, coll, &segment.to_be_bytes())
}

/// Key of document `id`'s metadata in collection `coll`.
pub fn metadata_key(coll: u32, id: &ExternalId) -> Vec<u8> {
    key(TAG_METADATA, coll, &id.key_bytes())
}

/// Key of document `id`'s kept text in collection `coll`.
pub fn text_key(coll: u32, id: &ExternalId) -> Vec<u8> {
    key(TAG_TEXT, coll, &id.key_bytes())
}

/// The value of a segment's tombstones: roaring's portable serialisation.
pub fn encode_tombstones(bitmap: &RoaringBitmap) -> Result<Vec<u8>> {
    let mut v = Vec::with_capacity(bitmap.serialized_size());
    bitmap.serialize_into(&mut v).map_err(|e| Error::Io {
        path: "<tombstones>".into(),
        source: e,
    })?;
    Ok(v)
}

/// The value of a document's kept text (compressed: [`crate::doctext::encode`]).
pub fn encode_text(id: &ExternalId, text: &str) -> Result<Vec<u8>> {
    crate::doctext::encode(text).map_err(|e| Error::Io {
        path: format!("<text of document {id}>").into(),
        source: e,
    })
}

/// The value of a JSON record (database record, collection record, manifest).
pub fn encode_json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Io {
        path: "<catalog record>".into(),
        source: std::io::Error::other(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CATALOG: &str = "cat";

    fn reason(e: Error) -> (String, String) {
        match e {
            Error::CorruptRecord { key, reason, .. } => (key, reason),
            other => panic!("not a corrupt record: {other}"),
        }
    }

    fn decoded(k: &[u8], v: &[u8]) -> Record {
        let (parsed, record) = decode(Path::new(CATALOG), k, v).expect("a valid record");
        assert_eq!(parsed.to_bytes(), k);
        record
    }

    fn refused(k: &[u8], v: &[u8]) -> (String, String) {
        reason(decode(Path::new(CATALOG), k, v).expect_err("refused"))
    }

    #[test]
    fn every_kind_of_record_round_trips_through_its_encoder_and_decode() {
        let id = ExternalId::from("doc");
        let db = DbRecord {
            next_collection_id: 4,
            commit_protocol: PUBLISH_AFTER_COMMIT,
        };
        let coll = CollectionRecord {
            id: 3,
            name: "c".into(),
            config: serde_json::json!({"dim": 8}),
        };
        let manifest = Manifest {
            next_file_id: 9,
            ..Manifest::default()
        };
        let loc = DocLocation {
            segment: 5,
            local: 6,
        };
        let bitmap: RoaringBitmap = (0..5000u32).step_by(7).collect();
        let db_json = encode_json(&db).expect("json");
        assert_eq!(
            decoded(KEY_DB, &db_json),
            Record::Db(db),
            "{}",
            String::from_utf8_lossy(&db_json)
        );
        assert_eq!(
            decoded(KEY_FORMAT, CATALOG_FORMAT.as_bytes()),
            Record::Format
        );
        let coll_json = encode_json(&coll).expect("json");
        assert_eq!(
            decoded(&collection_key("c"), &coll_json),
            Record::Collection(coll)
        );
        let m = encode_json(&manifest).expect("json");
        assert_eq!(decoded(&manifest_key(3), &m), Record::Manifest(manifest));
        assert_eq!(
            decoded(&location_key(3, &id), &loc.encode()),
            Record::Location(loc)
        );
        let t = encode_tombstones(&bitmap).expect("bitmap");
        assert_eq!(
            decoded(&tombstones_key(3, 5), &t),
            Record::Tombstones(bitmap)
        );
        assert_eq!(
            decoded(&metadata_key(3, &ExternalId::Int(1)), br#"{"a": [1]}"#),
            Record::Metadata(serde_json::json!({"a": [1]}))
        );
        let text = encode_text(&id, "some text").expect("text");
        assert_eq!(
            decoded(&text_key(3, &id), &text),
            Record::Text("some text".into())
        );
    }

    #[test]
    fn a_tombstone_header_declaring_more_containers_than_the_value_holds_is_refused_first() {
        let k = tombstones_key(0, 1);
        // 65,536 containers without runs: 524,296 header bytes declared in 8.
        let mut no_runs = ROARING_COOKIE_NO_RUNS.to_le_bytes().to_vec();
        no_runs.extend_from_slice(&65_536u32.to_le_bytes());
        let (key, why) = refused(&k, &no_runs);
        assert_eq!(key, "tombstones of segment 1 in collection 0");
        assert!(why.contains("needs 524296 bytes, the value has 8"), "{why}");
        // The same with run containers, the count in the cookie.
        let runs = (u32::from(u16::MAX) << 16 | u32::from(ROARING_COOKIE_RUNS)).to_le_bytes();
        let (_, why) = refused(&k, &runs);
        assert!(why.contains("the value has 4"), "{why}");
        let mut too_many = ROARING_COOKIE_NO_RUNS.to_le_bytes().to_vec();
        too_many.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(refused(&k, &too_many).1.contains("more than 65,536"));
        assert!(refused(&k, b"junk").1.contains("unknown roaring cookie"));
        assert!(refused(&k, b"ju").1.contains("shorter than its header"));
    }

    #[test]
    fn bytes_after_a_tombstone_bitmap_are_a_corrupt_record() {
        let mut v = encode_tombstones(&[1u32, 2].into_iter().collect()).expect("bitmap");
        v.push(0);
        let (_, why) = refused(&tombstones_key(0, 1), &v);
        assert_eq!(why, "1 bytes after the roaring bitmap");
    }

    #[test]
    fn a_collection_record_naming_another_collection_than_its_key_is_corrupt() {
        let r = CollectionRecord {
            id: 1,
            name: "b".into(),
            config: serde_json::Value::Null,
        };
        let (key, why) = refused(&collection_key("a"), &encode_json(&r).expect("json"));
        assert_eq!(key, "collection record \"a\"");
        assert_eq!(why, "the record names collection \"b\"");
    }

    #[test]
    fn malformed_keys_are_corrupt_records_naming_the_key_and_why() {
        let cases: [(&[u8], &str); 8] = [
            (b"", "empty key"),
            (b"Z\x00", "unknown key tag 'Z'"),
            (b"Fx", "key 'F' followed by 1 bytes"),
            (b"M\x00\x00", "key shorter than its collection id"),
            (
                b"M\x00\x00\x00\x01x",
                "manifest key longer than a collection id",
            ),
            (b"T\x00\x00\x00\x01\x02", "tombstone key has no segment id"),
            (b"I\x00\x00\x00\x01\x09", "id-map key is not an external id"),
            (b"C\xff", "collection name in the key is not UTF-8"),
        ];
        for (k, expected) in cases {
            let (key, why) = refused(k, b"{}");
            assert_eq!(why, expected, "{key}");
            assert_eq!(key, k.escape_ascii().to_string());
        }
        assert_eq!(
            refused(&location_key(2, &ExternalId::Int(3)), b"short"),
            (
                "location of document 3 in collection 2".into(),
                "document location is not 12 bytes".into()
            )
        );
        assert!(
            refused(KEY_FORMAT, b"tessera-catalog 9")
                .1
                .contains("unknown catalog format")
        );
        assert!(
            refused(&metadata_key(0, &ExternalId::Int(1)), b"{")
                .1
                .contains("EOF")
        );
    }

    proptest! {
        #[test]
        fn any_bytes_decode_to_a_record_or_a_corrupt_record_error(
            tag in prop::sample::select(b"FDCMITXPZ".to_vec()),
            rest in prop::collection::vec(any::<u8>(), 0..24),
            value in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut k = vec![tag];
            k.extend_from_slice(&rest);
            match decode(Path::new(CATALOG), &k, &value) {
                Ok((parsed, _)) => prop_assert_eq!(parsed.to_bytes(), k),
                Err(e) => {
                    reason(e);
                }
            }
        }
    }
}
