//! The passage text kept with a document (FORMAT.md, "Catalog", key `P`): one catalog value
//! per document, zstd-compressed on its own.
//!
//! Why per value rather than relying on RocksDB's block compression alone: the write-ahead
//! log and the memtable hold values uncompressed, and a passage is the largest thing a
//! document's catalog records carry; compressing it once at ingest keeps both small. The
//! value starts with an encoding byte and the text's length, so a reader stops at what the
//! record says (bounded by [`MAX_TEXT_BYTES`]), allocates only what the frame really holds,
//! and reports a damaged record instead of decompressing it into garbage.

/// Encoding byte of a zstd-compressed text value.
const ENCODING_ZSTD: u8 = 1;
/// zstd level: passages are short, and level 3 is zstd's default trade-off.
const ZSTD_LEVEL: i32 = 3;
/// The longest text a record may declare (64 MiB): a corrupt length must not make a reader
/// allocate without bound.
pub const MAX_TEXT_BYTES: usize = 64 << 20;

/// Encodes `text` as a catalog value: encoding byte `1`, the UTF-8 length as `u32`
/// little-endian, then one zstd frame of the UTF-8 bytes.
pub fn encode(text: &str) -> std::io::Result<Vec<u8>> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(std::io::Error::other(format!(
            "a text of {} bytes is longer than the limit of {MAX_TEXT_BYTES}",
            text.len()
        )));
    }
    let frame = zstd::bulk::compress(text.as_bytes(), ZSTD_LEVEL)?;
    let mut out = Vec::with_capacity(5 + frame.len());
    out.push(ENCODING_ZSTD);
    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
    out.extend_from_slice(&frame);
    Ok(out)
}

/// Decodes a value written by [`encode`]; the error says what is wrong with it.
pub fn decode(value: &[u8]) -> Result<String, String> {
    let (&encoding, rest) = value.split_first().ok_or("empty text record")?;
    if encoding != ENCODING_ZSTD {
        return Err(format!("unknown text encoding {encoding}"));
    }
    let len: [u8; 4] = rest
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or("text record shorter than its header")?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_TEXT_BYTES {
        return Err(format!("declared length {len} is over the limit"));
    }
    // Memory grows with what the frame really holds: allocating the declared length up front
    // let a few bytes declaring 64 MiB allocate 64 MiB.
    let bytes =
        crate::container::decompress_at_most(&rest[4..], len).map_err(|e| format!("zstd: {e}"))?;
    if bytes.len() > len {
        return Err(format!("declared length {len}, the frame holds more"));
    }
    if bytes.len() < len {
        return Err(format!(
            "declared length {len}, decompressed {} bytes",
            bytes.len()
        ));
    }
    String::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_text_round_trips(text in ".{0,400}") {
            prop_assert_eq!(decode(&encode(&text).expect("encode")), Ok(text));
        }

        #[test]
        fn damaged_values_are_errors_not_panics(
            text in ".{0,200}",
            cut in 0usize..64,
            flip in 0usize..64,
        ) {
            let v = encode(&text).expect("encode");
            let _ = decode(&v[..cut.min(v.len())]);
            let mut w = v.clone();
            let i = flip % w.len();
            w[i] ^= 0x5a;
            if let Ok(s) = decode(&w) {
                // A flip that still decodes must still be the declared length of UTF-8.
                prop_assert!(s.len() <= MAX_TEXT_BYTES);
            }
        }
    }

    #[test]
    fn repetitive_passages_are_stored_smaller_than_they_are() {
        let text =
            "late interaction scores every query token against every document token. ".repeat(20);
        assert!(encode(&text).expect("encode").len() < text.len() / 4);
    }
}
