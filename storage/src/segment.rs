//! Segment files: the compressed documents of one committed batch (FORMAT.md, "Segment").
//!
//! [`write_segment`] serialises a batch; [`SegmentReader`] validates a file and serves typed
//! views over its memory map. Codes and residuals stay raw so the search path reads them in
//! place; postings and external ids are zstd-compressed and decoded once at open.

use std::io::Write;
use std::path::Path;

use crate::container::{Container, FileKind, SectionData, write_container};
use crate::error::{Error, Result};
use crate::ids::ExternalId;
use crate::mmap::FileBytes;

/// Section ids of a segment file.
pub mod section {
    /// Fixed-size segment header (dimensions and counts).
    pub const META: u32 = 1;
    /// `u64[n_docs + 1]`: first token of every document, then the total.
    pub const DOC_OFFSETS: u32 = 2;
    /// `u16[n_tokens]` or `u32[n_tokens]`: centroid id of every token, document-major.
    pub const CODES: u32 = 3;
    /// `u8[n_tokens * bytes_per_token]`: packed residual buckets, document-major.
    pub const RESIDUALS: u32 = 4;
    /// zstd: IVF postings, centroid to the sorted local ids of documents that use it.
    pub const POSTINGS: u32 = 5;
    /// zstd: external id of every local document.
    pub const EXTERNAL_IDS: u32 = 6;
    /// Optional, `u16[n_tokens]` IEEE binary16 bits: per-token scale restoring the input
    /// vector's norm to its reconstruction (`|x| / |centroid + residual|`).
    pub const TOKEN_SCALES: u32 = 7;
}

const META_LEN: usize = 64;

/// Largest number of centroids whose codes are stored as `u16`.
pub const U16_CODE_LIMIT: u32 = 1 << 16;

/// Bytes taken by one token's packed residual.
pub fn residual_bytes_per_token(dim: u32, nbits: u32) -> usize {
    (dim as usize * nbits as usize).div_ceil(8)
}

/// Shape and provenance of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentMeta {
    /// Dimension of the token vectors.
    pub dim: u32,
    /// Residual bits per dimension.
    pub nbits: u32,
    /// Number of documents (including ones later deleted).
    pub n_docs: u32,
    /// Number of token vectors.
    pub n_tokens: u64,
    /// Number of centroids of the codec the segment was encoded with.
    pub n_centroids: u32,
    /// Id of that codec.
    pub codec_id: u64,
}

impl SegmentMeta {
    /// Bytes per stored centroid code: 2 when the codec has at most 65,536 centroids, else 4.
    pub fn code_width(&self) -> u32 {
        if self.n_centroids <= U16_CODE_LIMIT {
            2
        } else {
            4
        }
    }

    /// Bytes per packed residual.
    pub fn residual_bytes(&self) -> usize {
        residual_bytes_per_token(self.dim, self.nbits)
    }

    fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; META_LEN];
        b[0..4].copy_from_slice(&self.dim.to_le_bytes());
        b[4..8].copy_from_slice(&self.nbits.to_le_bytes());
        b[8..12].copy_from_slice(&self.code_width().to_le_bytes());
        b[12..16].copy_from_slice(&self.n_docs.to_le_bytes());
        b[16..24].copy_from_slice(&self.n_tokens.to_le_bytes());
        b[24..28].copy_from_slice(&self.n_centroids.to_le_bytes());
        b[32..40].copy_from_slice(&self.codec_id.to_le_bytes());
        b
    }

    fn decode(path: &Path, b: &[u8]) -> Result<Self> {
        if b.len() != META_LEN {
            return Err(Error::corrupt(
                path,
                format!("segment meta is {} bytes", b.len()),
            ));
        }
        let u32_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let u64_at = |at: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(a)
        };
        let meta = SegmentMeta {
            dim: u32_at(0),
            nbits: u32_at(4),
            n_docs: u32_at(12),
            n_tokens: u64_at(16),
            n_centroids: u32_at(24),
            codec_id: u64_at(32),
        };
        if u32_at(28) != 0 || b[40..].iter().any(|&x| x != 0) {
            return Err(Error::corrupt(
                path,
                "segment meta: reserved bytes are not zero",
            ));
        }
        if meta.dim == 0 || !matches!(meta.nbits, 1 | 2 | 4 | 8) || meta.n_centroids == 0 {
            return Err(Error::corrupt(
                path,
                format!("invalid segment meta {meta:?}"),
            ));
        }
        if u32_at(8) != meta.code_width() {
            return Err(Error::corrupt(
                path,
                "code width does not match the centroid count",
            ));
        }
        Ok(meta)
    }
}

/// A batch of encoded documents to serialise.
pub struct SegmentInput<'a> {
    /// Token vector dimension.
    pub dim: u32,
    /// Residual bits per dimension.
    pub nbits: u32,
    /// Centroid count of the codec used.
    pub n_centroids: u32,
    /// Id of the codec used.
    pub codec_id: u64,
    /// `n_docs + 1` token offsets, starting at 0.
    pub doc_offsets: &'a [u64],
    /// Centroid id per token.
    pub codes: &'a [u32],
    /// Packed residuals, `residual_bytes_per_token` per token.
    pub residuals: &'a [u8],
    /// External id per document.
    pub ids: &'a [ExternalId],
    /// Per-token norm scale as IEEE binary16 bits (finite, non-negative), or empty to store
    /// none (readers then use 1).
    pub token_scales: &'a [u16],
}

/// Sizes of what [`write_segment`] wrote, for reporting compression savings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentSizes {
    /// Total bytes of the file.
    pub file_bytes: u64,
    /// Postings before and after zstd.
    pub postings_raw: u64,
    /// Postings as stored.
    pub postings_stored: u64,
    /// External ids before zstd.
    pub ids_raw: u64,
    /// External ids as stored.
    pub ids_stored: u64,
}

/// Builds the IVF postings: for each centroid, the sorted local ids of the documents using it.
fn build_postings(n_centroids: u32, doc_offsets: &[u64], codes: &[u32]) -> (Vec<u32>, Vec<u32>) {
    let k = n_centroids as usize;
    let mut last_doc = vec![u32::MAX; k];
    let mut counts = vec![0u32; k + 1];
    for (doc, w) in doc_offsets.windows(2).enumerate() {
        for &c in &codes[w[0] as usize..w[1] as usize] {
            if last_doc[c as usize] != doc as u32 {
                last_doc[c as usize] = doc as u32;
                counts[c as usize + 1] += 1;
            }
        }
    }
    for i in 0..k {
        counts[i + 1] += counts[i];
    }
    let mut fill = counts.clone();
    let mut docs = vec![0u32; counts[k] as usize];
    last_doc.fill(u32::MAX);
    for (doc, w) in doc_offsets.windows(2).enumerate() {
        for &c in &codes[w[0] as usize..w[1] as usize] {
            if last_doc[c as usize] != doc as u32 {
                last_doc[c as usize] = doc as u32;
                docs[fill[c as usize] as usize] = doc as u32;
                fill[c as usize] += 1;
            }
        }
    }
    (counts, docs)
}

/// Serialises a segment into `out`. The caller has validated the input's shape.
pub fn write_segment(
    out: &mut impl Write,
    input: &SegmentInput<'_>,
) -> std::io::Result<SegmentSizes> {
    let n_docs = input.ids.len();
    let n_tokens = input.codes.len();
    let meta = SegmentMeta {
        dim: input.dim,
        nbits: input.nbits,
        n_docs: n_docs as u32,
        n_tokens: n_tokens as u64,
        n_centroids: input.n_centroids,
        codec_id: input.codec_id,
    };
    debug_assert_eq!(input.doc_offsets.len(), n_docs + 1);
    debug_assert_eq!(input.residuals.len(), n_tokens * meta.residual_bytes());

    let codes: Vec<u8> = if meta.code_width() == 2 {
        input
            .codes
            .iter()
            .flat_map(|&c| (c as u16).to_le_bytes())
            .collect()
    } else {
        input.codes.iter().flat_map(|&c| c.to_le_bytes()).collect()
    };
    let (offsets, docs) = build_postings(input.n_centroids, input.doc_offsets, input.codes);
    // Delta-code each list: sorted doc ids become small gaps that zstd packs tightly.
    let mut postings = Vec::with_capacity(4 * (offsets.len() + docs.len()));
    for o in &offsets {
        postings.extend_from_slice(&o.to_le_bytes());
    }
    for w in offsets.windows(2) {
        let mut prev = 0u32;
        for &d in &docs[w[0] as usize..w[1] as usize] {
            postings.extend_from_slice(&(d - prev).to_le_bytes());
            prev = d;
        }
    }
    let mut ids = Vec::new();
    for id in input.ids {
        id.encode_into(&mut ids);
    }
    let mut sections = vec![
        SectionData::raw(section::META, meta.encode()),
        SectionData::raw(
            section::DOC_OFFSETS,
            input
                .doc_offsets
                .iter()
                .flat_map(|o| o.to_le_bytes())
                .collect(),
        ),
        SectionData::raw(section::CODES, codes),
        SectionData::raw(section::RESIDUALS, input.residuals.to_vec()),
        SectionData::zstd(section::POSTINGS, &postings)?,
        SectionData::zstd(section::EXTERNAL_IDS, &ids)?,
    ];
    if !input.token_scales.is_empty() {
        sections.push(SectionData::raw(
            section::TOKEN_SCALES,
            input
                .token_scales
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ));
    }
    let sizes = SegmentSizes {
        file_bytes: 0,
        postings_raw: postings.len() as u64,
        postings_stored: sections[4].stored_len(),
        ids_raw: ids.len() as u64,
        ids_stored: sections[5].stored_len(),
    };
    let file_bytes = write_container(out, FileKind::Segment, &sections)?;
    Ok(SegmentSizes {
        file_bytes,
        ..sizes
    })
}

/// What is wrong with a document-major file's `DOC_OFFSETS` (segments and originals share
/// the rule, FORMAT.md): `n_docs + 1` entries from 0 to `n_tokens`, strictly increasing
/// (every document has a token). `None` when they are valid.
pub(crate) fn doc_offsets_problem(
    offsets: &[u64],
    n_docs: usize,
    n_tokens: u64,
) -> Option<&'static str> {
    if offsets.len() != n_docs + 1 || offsets[0] != 0 || offsets[n_docs] != n_tokens {
        Some("document offsets do not match the document and token counts")
    } else if offsets.windows(2).any(|w| w[0] >= w[1]) {
        Some("document offsets are not strictly increasing")
    } else {
        None
    }
}

/// Centroid codes of a segment, viewed in place.
#[derive(Clone, Copy, Debug)]
pub enum Codes<'a> {
    /// Codes of a codec with at most 65,536 centroids.
    U16(&'a [u16]),
    /// Codes of a larger codec.
    U32(&'a [u32]),
}

/// A validated, memory-mapped segment.
#[derive(Debug)]
pub struct SegmentReader {
    container: Container,
    meta: SegmentMeta,
    postings_offsets: Vec<u32>,
    postings: Vec<u32>,
    ids: Vec<ExternalId>,
}

impl SegmentReader {
    /// Opens and fully validates a segment file: container checksums, then every structural
    /// invariant the search path relies on (offsets, code range, postings, id count).
    pub fn open(path: &Path) -> Result<Self> {
        Self::from_container(path, Container::open(path, FileKind::Segment)?)
    }

    /// Validates `bytes` as [`SegmentReader::open`] validates a file; `path` only names them
    /// in errors.
    pub fn from_bytes(path: &Path, bytes: FileBytes) -> Result<Self> {
        Self::from_container(path, Container::from_bytes(path, bytes, FileKind::Segment)?)
    }

    fn from_container(path: &Path, container: Container) -> Result<Self> {
        let corrupt = |reason: String| Error::corrupt(path, reason);
        let meta = SegmentMeta::decode(path, container.raw_section(section::META, "meta")?)?;
        let n_docs = meta.n_docs as usize;
        let n_tokens =
            usize::try_from(meta.n_tokens).map_err(|_| corrupt("token count too large".into()))?;

        let offsets: &[u64] = container.typed_section(section::DOC_OFFSETS, "doc offsets")?;
        if let Some(reason) = doc_offsets_problem(offsets, n_docs, meta.n_tokens) {
            return Err(corrupt(reason.into()));
        }
        let code_count = if meta.code_width() == 2 {
            let codes: &[u16] = container.typed_section(section::CODES, "codes")?;
            if codes.iter().any(|&c| u32::from(c) >= meta.n_centroids) {
                return Err(corrupt("a centroid code is out of range".into()));
            }
            codes.len()
        } else {
            let codes: &[u32] = container.typed_section(section::CODES, "codes")?;
            if codes.iter().any(|&c| c >= meta.n_centroids) {
                return Err(corrupt("a centroid code is out of range".into()));
            }
            codes.len()
        };
        if code_count != n_tokens {
            return Err(corrupt(format!("{code_count} codes for {n_tokens} tokens")));
        }
        let residuals = container.raw_section(section::RESIDUALS, "residuals")?;
        if residuals.len() != n_tokens * meta.residual_bytes() {
            return Err(corrupt("residual section has the wrong length".into()));
        }

        let raw = container.section_bytes(section::POSTINGS, "postings")?;
        let words: Vec<u32> = raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let k = meta.n_centroids as usize;
        if raw.len() % 4 != 0 || words.len() < k + 1 {
            return Err(corrupt("postings section is too short".into()));
        }
        let (postings_offsets, deltas) = words.split_at(k + 1);
        if postings_offsets[0] != 0
            || postings_offsets.windows(2).any(|w| w[0] > w[1])
            || postings_offsets[k] as usize != deltas.len()
        {
            return Err(corrupt("postings offsets are inconsistent".into()));
        }
        let mut postings = Vec::with_capacity(deltas.len());
        for w in postings_offsets.windows(2) {
            let mut doc = 0u64;
            for (i, &d) in deltas[w[0] as usize..w[1] as usize].iter().enumerate() {
                doc += u64::from(d);
                if (i > 0 && d == 0) || doc >= n_docs as u64 {
                    return Err(corrupt("a posting list is unsorted or out of range".into()));
                }
                postings.push(doc as u32);
            }
        }

        let raw_ids = container.section_bytes(section::EXTERNAL_IDS, "external ids")?;
        let mut ids = Vec::with_capacity(n_docs);
        let mut pos = 0;
        while pos < raw_ids.len() {
            let id = ExternalId::decode_from(&raw_ids, &mut pos)
                .ok_or_else(|| corrupt(format!("external id {} is malformed", ids.len())))?;
            ids.push(id);
        }
        if ids.len() != n_docs {
            return Err(corrupt(format!(
                "{} external ids for {n_docs} documents",
                ids.len()
            )));
        }
        if container.section_sizes(section::TOKEN_SCALES).is_some() {
            let scales: &[u16] = container.typed_section(section::TOKEN_SCALES, "token scales")?;
            if scales.len() != n_tokens {
                return Err(corrupt(format!(
                    "{} token scales for {n_tokens} tokens",
                    scales.len()
                )));
            }
            // Sign bit clear and exponent not all ones: finite and non-negative (a zero
            // input vector has scale 0).
            if scales
                .iter()
                .any(|&b| b & 0x8000 != 0 || b & 0x7c00 == 0x7c00)
            {
                return Err(corrupt("a token scale is negative or not finite".into()));
            }
        }
        Ok(SegmentReader {
            postings_offsets: postings_offsets.to_vec(),
            container,
            meta,
            postings,
            ids,
        })
    }

    /// Records that the file was renamed after it was opened (see [`Container::set_path`]).
    pub fn set_path(&mut self, path: &Path) {
        self.container.set_path(path);
    }

    /// The segment's shape.
    pub fn meta(&self) -> &SegmentMeta {
        &self.meta
    }

    /// The file backing this segment.
    pub fn path(&self) -> &Path {
        self.container.path()
    }

    /// Size of the file in bytes.
    pub fn file_len(&self) -> u64 {
        self.container.file_len()
    }

    /// Number of sections in the file (all checksummed at open).
    pub fn section_count(&self) -> usize {
        self.container.section_count()
    }

    /// `n_docs + 1` token offsets.
    pub fn doc_offsets(&self) -> &[u64] {
        // Validated at open.
        self.container
            .typed_section(section::DOC_OFFSETS, "doc offsets")
            .unwrap_or(&[])
    }

    /// Centroid code of every token.
    pub fn codes(&self) -> Codes<'_> {
        if self.meta.code_width() == 2 {
            Codes::U16(
                self.container
                    .typed_section(section::CODES, "codes")
                    .unwrap_or(&[]),
            )
        } else {
            Codes::U32(
                self.container
                    .typed_section(section::CODES, "codes")
                    .unwrap_or(&[]),
            )
        }
    }

    /// Per-token norm scales (IEEE binary16 bits, validated finite and non-negative at open),
    /// or `None` for a segment written without them.
    pub fn token_scales(&self) -> Option<&[u16]> {
        self.container
            .typed_section(section::TOKEN_SCALES, "token scales")
            .ok()
    }

    /// Packed residuals of every token.
    pub fn residuals(&self) -> &[u8] {
        self.container
            .raw_section(section::RESIDUALS, "residuals")
            .unwrap_or(&[])
    }

    /// Sorted local ids of the documents with at least one token assigned to `centroid`.
    pub fn posting(&self, centroid: u32) -> &[u32] {
        let c = centroid as usize;
        match (
            self.postings_offsets.get(c),
            self.postings_offsets.get(c + 1),
        ) {
            (Some(&a), Some(&b)) => &self.postings[a as usize..b as usize],
            _ => &[],
        }
    }

    /// External id of local document `local`.
    pub fn external_id(&self, local: u32) -> Option<&ExternalId> {
        self.ids.get(local as usize)
    }

    /// External ids of all local documents.
    pub fn external_ids(&self) -> &[ExternalId] {
        &self.ids
    }

    /// (stored, uncompressed) bytes of the postings section.
    pub fn postings_sizes(&self) -> (u64, u64) {
        self.container
            .section_sizes(section::POSTINGS)
            .unwrap_or((0, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, scales: &[u16]) -> std::path::PathBuf {
        // Two documents of 2 and 1 tokens, dim 4 at 2 bits (1 byte per token), 3 centroids.
        let ids = [ExternalId::Int(7), ExternalId::Str("b".into())];
        let input = SegmentInput {
            dim: 4,
            nbits: 2,
            n_centroids: 3,
            codec_id: 1,
            doc_offsets: &[0, 2, 3],
            codes: &[0, 2, 1],
            residuals: &[0x1b, 0xe4, 0x00],
            ids: &ids,
            token_scales: scales,
        };
        let path = dir.join(name);
        let mut bytes = Vec::new();
        write_segment(&mut bytes, &input).expect("serialise");
        std::fs::write(&path, bytes).expect("write");
        path
    }

    #[test]
    fn reserved_meta_fields_must_be_zero() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = std::fs::read(write(dir.path(), "good.tsg", &[])).expect("read");
        let meta = crate::container::section_offset(&good, section::META);
        for at in [28usize, 40, 63] {
            let mut bad = good.clone();
            bad[meta + at] = 1;
            crate::container::reseal(&mut bad);
            let path = dir.path().join(format!("bad-{at}.tsg"));
            std::fs::write(&path, &bad).expect("write");
            let err = SegmentReader::open(&path).expect_err("reserved byte set");
            assert!(err.to_string().contains("reserved"), "byte {at}: {err}");
        }
    }

    #[test]
    fn token_scales_round_trip_and_are_optional() {
        let dir = tempfile::tempdir().expect("tempdir");
        // 1.0, 0.5 and 0 (a zero input vector) in binary16.
        let scales = [0x3c00, 0x3800, 0x0000];
        let with = SegmentReader::open(&write(dir.path(), "with.tsg", &scales)).expect("open");
        assert_eq!(with.token_scales(), Some(&scales[..]));
        let without = SegmentReader::open(&write(dir.path(), "without.tsg", &[])).expect("open");
        assert_eq!(without.token_scales(), None);
        assert_eq!(without.meta().n_tokens, 3);
    }

    #[test]
    fn negative_or_non_finite_token_scales_are_rejected_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, bad) in [("neg", 0xbc00u16), ("inf", 0x7c00), ("nan", 0x7e00)] {
            let path = write(dir.path(), name, &[0x3c00, bad, 0x3c00]);
            let err = SegmentReader::open(&path).expect_err("must be rejected");
            assert!(err.to_string().contains("token scale"), "{name}: {err}");
        }
    }

    #[test]
    fn token_scale_count_must_match_tokens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ids = [ExternalId::Int(1)];
        let input = SegmentInput {
            dim: 4,
            nbits: 2,
            n_centroids: 3,
            codec_id: 1,
            doc_offsets: &[0, 2],
            codes: &[0, 1],
            residuals: &[0, 0],
            ids: &ids,
            token_scales: &[0x3c00],
        };
        let path = dir.path().join("short.tsg");
        let mut bytes = Vec::new();
        write_segment(&mut bytes, &input).expect("serialise");
        std::fs::write(&path, bytes).expect("write");
        let err = SegmentReader::open(&path).expect_err("must be rejected");
        assert!(
            err.to_string().contains("1 token scales for 2 tokens"),
            "{err}"
        );
    }
}
