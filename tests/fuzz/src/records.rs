//! Target for the catalog's record decoders (`tessera_storage::records`): every key and value
//! the catalog reads back from RocksDB, decoded without RocksDB.

use std::path::Path;

use tessera_storage::Error;
use tessera_storage::records::{self, Record, RecordKey};

/// The catalog directory errors name.
const CATALOG: &str = "fuzz-catalog";

/// Splits an input into a record: the first byte is the key's length, the key follows, and
/// the rest is the value (`fuzz-seeds` writes real records this way).
pub fn split_record(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&key_len, rest) = data.split_first()?;
    Some(rest.split_at(usize::from(key_len).min(rest.len())))
}

/// The bytes of an input holding record `key` = `value` (inverse of [`split_record`]).
pub fn join_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let len = u8::try_from(key.len()).expect("seed keys are shorter than 256 bytes");
    let mut out = vec![len];
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    out
}

/// One record, decoded as the catalog decodes it; a success must round-trip through the
/// encoders, and a failure must be a corrupt-record error naming the catalog.
pub fn catalog_records(data: &[u8]) {
    let Some((key, value)) = split_record(data) else {
        return;
    };
    let (parsed, record) = match records::decode(Path::new(CATALOG), key, value) {
        Ok(decoded) => decoded,
        Err(Error::CorruptRecord { path, .. }) => {
            assert_eq!(path, Path::new(CATALOG));
            return;
        }
        Err(other) => panic!("not a corrupt-record error: {other}"),
    };
    assert_eq!(parsed.to_bytes(), key, "keys round-trip");
    match (&parsed, record) {
        (RecordKey::Format, Record::Format) => {
            assert_eq!(value, records::CATALOG_FORMAT.as_bytes());
        }
        (RecordKey::Location { .. }, Record::Location(loc)) => {
            assert_eq!(loc.encode()[..], *value);
        }
        (RecordKey::Tombstones { .. }, Record::Tombstones(bitmap)) => {
            let again = records::encode_tombstones(&bitmap).expect("serialising to memory");
            let back = records::decode_tombstones(Path::new(CATALOG), key, &again);
            assert_eq!(back.expect("re-encoded tombstones decode"), bitmap);
        }
        (RecordKey::Text { id, .. }, Record::Text(text)) => {
            assert!(text.len() <= tessera_storage::doctext::MAX_TEXT_BYTES);
            let again = records::encode_text(id, &text).expect("a text within the limit");
            let back = records::decode_text(Path::new(CATALOG), key, &again);
            assert_eq!(back.expect("re-encoded text decodes"), text);
        }
        (RecordKey::Collection { name }, Record::Collection(r)) => assert_eq!(&r.name, name),
        (RecordKey::Db, Record::Db(r)) => {
            let again = records::encode_json(&r).expect("serialising to memory");
            let back = records::decode_json::<records::DbRecord>(Path::new(CATALOG), key, &again);
            assert_eq!(back.expect("re-encoded record decodes"), r);
        }
        (RecordKey::Manifest { .. }, Record::Manifest(m)) => {
            let again = records::encode_json(&m).expect("serialising to memory");
            let back: records::Manifest = records::decode_json(Path::new(CATALOG), key, &again)
                .expect("re-encoded manifest decodes");
            // All but `model`, whose floats serde_json may not read back bit for bit.
            assert_eq!(
                (back.codec, back.segments, back.next_file_id),
                (m.codec, m.segments, m.next_file_id)
            );
            assert_eq!(
                (back.live_docs, back.live_tokens, back.commits),
                (m.live_docs, m.live_tokens, m.commits)
            );
        }
        (RecordKey::Metadata { .. }, Record::Metadata(_)) => {}
        (k, r) => panic!("key {k} decoded as {r:?}"),
    }
}
