//! Targets for the storage crate's file readers. Each input is decoded twice: as given, and
//! "resealed" (its container checksums and length recomputed), so that mutations reach the
//! checks behind the checksums instead of stopping at them.

use std::path::Path;

use tessera_storage::FileBytes;
use tessera_storage::codec::read_codec_bytes;
use tessera_storage::container::{HEADER_LEN, SECTION_ENTRY_LEN};
use tessera_storage::originals::OriginalsReader;
use tessera_storage::segment::{Codes, SegmentReader};

/// The name errors give the fuzzed bytes.
const NAME: &str = "fuzz-input";

/// The most documents or centroids a target walks after a successful open: enough to cover
/// every branch, few enough that one input takes milliseconds.
const WALK_LIMIT: u32 = 4096;

/// Segment files: open (every structural check), then every accessor the search path uses.
pub fn segment(data: &[u8]) {
    for bytes in [data.to_vec(), resealed(data)] {
        let Ok(r) = SegmentReader::from_bytes(Path::new(NAME), FileBytes::copy_of(&bytes)) else {
            continue;
        };
        let meta = *r.meta();
        let offsets = r.doc_offsets();
        assert_eq!(offsets.len(), meta.n_docs as usize + 1, "validated at open");
        let tokens = match r.codes() {
            Codes::U16(c) => c.len(),
            Codes::U32(c) => c.len(),
        };
        assert_eq!(tokens as u64, meta.n_tokens, "validated at open");
        assert_eq!(r.residuals().len(), tokens * meta.residual_bytes());
        if let Some(scales) = r.token_scales() {
            assert_eq!(scales.len(), tokens);
        }
        for c in 0..meta.n_centroids.min(WALK_LIMIT) {
            assert!(r.posting(c).iter().all(|&d| d < meta.n_docs));
        }
        assert!(r.posting(meta.n_centroids).is_empty());
        for local in 0..meta.n_docs.min(WALK_LIMIT) {
            assert!(r.external_id(local).is_some());
        }
        let _ = r.postings_sizes();
    }
}

/// Codec files.
pub fn codec(data: &[u8]) {
    for bytes in [data.to_vec(), resealed(data)] {
        if let Ok(c) = read_codec_bytes(Path::new(NAME), FileBytes::copy_of(&bytes)) {
            assert_eq!(c.centroids.len(), c.n_centroids() as usize * c.dim as usize);
            assert_eq!(c.n_groups() as usize + 1, c.group_offsets.len());
        }
    }
}

/// Originals files: open, then every document read (its checksum checked) and converted.
pub fn originals(data: &[u8]) {
    for bytes in [data.to_vec(), resealed(data)] {
        let Ok(r) = OriginalsReader::from_bytes(Path::new(NAME), FileBytes::copy_of(&bytes)) else {
            continue;
        };
        let n_docs = r.meta().n_docs;
        for local in 0..n_docs.min(WALK_LIMIT) {
            r.prefetch(local);
            if let Ok(doc) = r.doc(local) {
                let values = doc.to_f32();
                assert_eq!(values.len() * r.meta().precision.bytes(), doc.byte_len());
            }
        }
        assert!(
            r.doc(n_docs).is_err(),
            "a document past the end is an error"
        );
    }
}

/// A document's stored text (catalog key `P`).
pub fn doctext(data: &[u8]) {
    if let Ok(text) = tessera_storage::doctext::decode(data) {
        assert!(text.len() <= tessera_storage::doctext::MAX_TEXT_BYTES);
    }
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// `data` with the container's length field, section checksums (except block-checked ones),
/// table checksum and header checksum recomputed, as far as the bytes hold them
/// (storage/FORMAT.md, "Container"). Anything out of bounds is left as it is.
pub fn resealed(data: &[u8]) -> Vec<u8> {
    let mut b = data.to_vec();
    if b.len() < HEADER_LEN {
        return b;
    }
    let file_len = b.len() as u64;
    b[24..32].copy_from_slice(&file_len.to_le_bytes());
    let n = le_u32(&b, 16).unwrap_or(0) as usize;
    let table_end = n
        .checked_mul(SECTION_ENTRY_LEN)
        .and_then(|t| t.checked_add(HEADER_LEN))
        .filter(|&end| end <= b.len());
    if let Some(table_end) = table_end {
        for e in (HEADER_LEN..table_end).step_by(SECTION_ENTRY_LEN) {
            let (Some(encoding), Some(offset), Some(len)) =
                (le_u32(&b, e + 4), le_u64(&b, e + 8), le_u64(&b, e + 16))
            else {
                continue;
            };
            let range = usize::try_from(offset).ok().and_then(|o| {
                let end = o.checked_add(usize::try_from(len).ok()?)?;
                (end <= b.len()).then_some(o..end)
            });
            // Encoding 2 (block-checked) carries a zero table checksum.
            if let (Some(range), true) = (range, encoding != 2) {
                let crc = crc32c::crc32c(&b[range]);
                b[e + 32..e + 36].copy_from_slice(&crc.to_le_bytes());
            }
        }
        let table_crc = crc32c::crc32c(&b[HEADER_LEN..table_end]);
        b[32..36].copy_from_slice(&table_crc.to_le_bytes());
    }
    let header_crc = crc32c::crc32c(&b[0..60]);
    b[60..64].copy_from_slice(&header_crc.to_le_bytes());
    b
}
