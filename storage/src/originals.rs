//! Originals files: the ingested token vectors of one segment's documents, kept at the
//! collection's chosen precision (FORMAT.md, "Originals").
//!
//! The compressed codes are the index; these are the data. Search reads them only for the
//! few candidates it refines, so the file is not checksummed as a whole at open (that would
//! read gigabytes to serve kilobytes): each document carries its own CRC32C, checked the
//! first time the document is read through this reader and remembered in a bitmap of
//! verified documents, the same trust model as the container's open-time checks (verify
//! once, then serve from the immutable map).
//!
//! [`write_originals`] serialises a batch; [`OriginalsReader`] validates the file's
//! structure at open and hands out one document at a time, verified.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::container::{Container, FileKind, SectionData, write_container};
use crate::error::{Error, Result};
use crate::mmap::FileBytes;

/// Section ids of an originals file.
pub mod section {
    /// Fixed-size header (dimension, precision, counts, owning segment).
    pub const META: u32 = 1;
    /// `u64[n_docs + 1]`: first token of every document, then the total.
    pub const DOC_OFFSETS: u32 = 2;
    /// `u32[n_docs]`: CRC32C of each document's bytes in `VECTORS`.
    pub const DOC_CRCS: u32 = 3;
    /// Block-checked: `n_tokens * dim` elements, document-major, row-major per document.
    pub const VECTORS: u32 = 4;
}

const META_LEN: usize = 64;

/// Precision at which a collection keeps its original vectors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// No originals: only the compressed codes are stored (the smallest footprint; search
    /// cannot refine and `vectors` returns the decompressed approximation).
    None,
    /// IEEE 754 binary16 (2 bytes per value; about 3 significant decimal digits).
    #[default]
    F16,
    /// bfloat16 (2 bytes per value; f32's range with 8 bits of mantissa).
    Bf16,
    /// IEEE 754 binary32, exactly as ingested (4 bytes per value).
    F32,
}

impl Precision {
    /// Bytes per stored value (0 for [`Precision::None`]).
    pub fn bytes(self) -> usize {
        match self {
            Precision::None => 0,
            Precision::F16 | Precision::Bf16 => 2,
            Precision::F32 => 4,
        }
    }

    /// The smallest magnitude that rounds to infinity at this precision (round to nearest
    /// even: the largest finite value plus half its spacing), or infinity for f32 and none.
    /// Ingest refuses values at or above it, so that no stored original is infinite.
    pub fn overflow_bound(self) -> f32 {
        match self {
            Precision::None | Precision::F32 => f32::INFINITY,
            // 65504 + 32 / 2.
            Precision::F16 => 65520.0,
            // 0x7f7f (3.3895e38) + 2^120 / 2.
            Precision::Bf16 => f32::from_bits(0x7f7f_8000),
        }
    }

    /// Whether `x` is finite and stays finite at this precision (see
    /// [`Precision::overflow_bound`]); NaN and infinities are never held.
    pub fn holds(self, x: f32) -> bool {
        x.abs() < self.overflow_bound()
    }

    /// The code stored in META (FORMAT.md), `None` for [`Precision::None`].
    fn code(self) -> Option<u32> {
        match self {
            Precision::None => None,
            Precision::F16 => Some(1),
            Precision::Bf16 => Some(2),
            Precision::F32 => Some(3),
        }
    }

    fn from_code(code: u32) -> Option<Self> {
        match code {
            1 => Some(Precision::F16),
            2 => Some(Precision::Bf16),
            3 => Some(Precision::F32),
            _ => None,
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::None => "none",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
            Precision::F32 => "f32",
        })
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" | "off" => Ok(Precision::None),
            "f16" | "fp16" | "half" => Ok(Precision::F16),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "f32" | "fp32" | "float" => Ok(Precision::F32),
            _ => Err(format!(
                "invalid precision {s:?}: expected f16, bf16, f32 or none"
            )),
        }
    }
}

/// Shape and provenance of an originals file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OriginalsMeta {
    /// Dimension of the token vectors.
    pub dim: u32,
    /// Stored precision (never [`Precision::None`]).
    pub precision: Precision,
    /// Number of documents.
    pub n_docs: u32,
    /// Number of token vectors.
    pub n_tokens: u64,
    /// Id of the segment whose documents these are.
    pub segment_id: u64,
}

impl OriginalsMeta {
    fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; META_LEN];
        b[0..4].copy_from_slice(&self.dim.to_le_bytes());
        b[4..8].copy_from_slice(&self.precision.code().unwrap_or(0).to_le_bytes());
        b[8..12].copy_from_slice(&self.n_docs.to_le_bytes());
        b[16..24].copy_from_slice(&self.n_tokens.to_le_bytes());
        b[24..32].copy_from_slice(&self.segment_id.to_le_bytes());
        b
    }

    fn decode(path: &Path, b: &[u8]) -> Result<Self> {
        let corrupt = |reason: String| Error::corrupt(path, format!("originals meta: {reason}"));
        if b.len() != META_LEN {
            return Err(corrupt(format!("{} bytes, expected {META_LEN}", b.len())));
        }
        let u32_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let u64_at = |at: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(a)
        };
        if u32_at(12) != 0 || b[32..].iter().any(|&x| x != 0) {
            return Err(corrupt("reserved bytes are not zero".into()));
        }
        let precision = Precision::from_code(u32_at(4))
            .ok_or_else(|| corrupt(format!("unknown precision code {}", u32_at(4))))?;
        let meta = OriginalsMeta {
            dim: u32_at(0),
            precision,
            n_docs: u32_at(8),
            n_tokens: u64_at(16),
            segment_id: u64_at(24),
        };
        if meta.dim == 0 || meta.dim > 4096 {
            return Err(corrupt(format!("dimension {} out of range", meta.dim)));
        }
        Ok(meta)
    }
}

/// A batch's original vectors to serialise.
pub struct OriginalsInput<'a> {
    /// Token vector dimension.
    pub dim: u32,
    /// Precision to store (not [`Precision::None`]).
    pub precision: Precision,
    /// Id of the segment holding the same documents.
    pub segment_id: u64,
    /// `n_docs + 1` token offsets, starting at 0 (the segment's).
    pub doc_offsets: &'a [u64],
    /// The vectors, row-major `[n_tokens, dim]`.
    pub vectors: OriginalValues<'a>,
}

/// The values an originals file is written from.
#[derive(Clone, Copy, Debug)]
pub enum OriginalValues<'a> {
    /// As ingested; converted to the file's precision (round to nearest even).
    F32(&'a [f32]),
    /// Already at the file's precision, little-endian, as [`OriginalsReader::doc_bytes`]
    /// returns them (a merge copies documents without converting them twice).
    Stored(&'a [u8]),
}

/// Converts `values` to `precision`'s little-endian bytes (round to nearest even).
fn encode_values(values: &[f32], precision: Precision) -> Vec<u8> {
    match precision {
        Precision::None => Vec::new(),
        Precision::F16 => values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        Precision::Bf16 => values
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
        Precision::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// Serialises an originals file into `out`; returns the bytes written. The caller has
/// validated the shapes (offsets cover `vectors`) and that the values are finite.
pub fn write_originals(out: &mut impl Write, input: &OriginalsInput<'_>) -> std::io::Result<u64> {
    let dim = input.dim as usize;
    let n_docs = input.doc_offsets.len().saturating_sub(1);
    let row = dim * input.precision.bytes();
    let bytes = match input.vectors {
        OriginalValues::F32(v) => encode_values(v, input.precision),
        OriginalValues::Stored(b) => b.to_vec(),
    };
    let n_tokens = bytes.len() / row.max(1);
    debug_assert_ne!(input.precision, Precision::None);
    debug_assert_eq!(input.doc_offsets.last().copied(), Some(n_tokens as u64));
    let meta = OriginalsMeta {
        dim: input.dim,
        precision: input.precision,
        n_docs: n_docs as u32,
        n_tokens: n_tokens as u64,
        segment_id: input.segment_id,
    };
    let crcs: Vec<u8> = input
        .doc_offsets
        .windows(2)
        .flat_map(|w| {
            crc32c::crc32c(&bytes[w[0] as usize * row..w[1] as usize * row]).to_le_bytes()
        })
        .collect();
    let sections = [
        SectionData::raw(section::META, meta.encode()),
        SectionData::raw(
            section::DOC_OFFSETS,
            input
                .doc_offsets
                .iter()
                .flat_map(|o| o.to_le_bytes())
                .collect(),
        ),
        SectionData::raw(section::DOC_CRCS, crcs),
        SectionData::block_checked(section::VECTORS, bytes),
    ];
    write_container(out, FileKind::Originals, &sections)
}

/// One document's original vectors, verified, viewed in place.
#[derive(Clone, Copy, Debug)]
pub enum OriginalDoc<'a> {
    /// binary16 values.
    F16(&'a [half::f16]),
    /// bfloat16 values.
    Bf16(&'a [half::bf16]),
    /// binary32 values.
    F32(&'a [f32]),
}

impl OriginalDoc<'_> {
    /// The values as `f32` (exact: every stored precision widens losslessly).
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            OriginalDoc::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            OriginalDoc::Bf16(v) => v.iter().map(|x| x.to_f32()).collect(),
            OriginalDoc::F32(v) => v.to_vec(),
        }
    }

    /// Bytes the document occupies in the file.
    pub fn byte_len(&self) -> usize {
        match self {
            OriginalDoc::F16(v) => v.len() * 2,
            OriginalDoc::Bf16(v) => v.len() * 2,
            OriginalDoc::F32(v) => v.len() * 4,
        }
    }
}

/// A structurally validated, memory-mapped originals file.
#[derive(Debug)]
pub struct OriginalsReader {
    container: Container,
    meta: OriginalsMeta,
    /// One bit per document: its CRC has been checked against the mapped bytes.
    verified: Vec<AtomicU64>,
}

impl OriginalsReader {
    /// Opens an originals file and validates everything except the vector bytes themselves
    /// (header, table, META, offsets and CRC table checksums, section lengths); each
    /// document's bytes are checked against its CRC when first read.
    pub fn open(path: &Path) -> Result<Self> {
        Self::from_container(path, Container::open(path, FileKind::Originals)?)
    }

    /// Validates `bytes` as [`OriginalsReader::open`] validates a file; `path` only names
    /// them in errors.
    pub fn from_bytes(path: &Path, bytes: FileBytes) -> Result<Self> {
        Self::from_container(
            path,
            Container::from_bytes(path, bytes, FileKind::Originals)?,
        )
    }

    fn from_container(path: &Path, container: Container) -> Result<Self> {
        let corrupt = |reason: String| Error::corrupt(path, reason);
        let meta = OriginalsMeta::decode(path, container.raw_section(section::META, "meta")?)?;
        let n_docs = meta.n_docs as usize;
        let offsets: &[u64] = container.typed_section(section::DOC_OFFSETS, "doc offsets")?;
        if let Some(reason) = crate::segment::doc_offsets_problem(offsets, n_docs, meta.n_tokens) {
            return Err(corrupt(format!("originals: {reason}")));
        }
        let crcs: &[u32] = container.typed_section(section::DOC_CRCS, "document checksums")?;
        if crcs.len() != n_docs {
            return Err(corrupt(format!(
                "originals: {} document checksums for {n_docs} documents",
                crcs.len()
            )));
        }
        let vectors = container.block_checked_section(section::VECTORS, "vectors")?;
        let expected =
            (meta.n_tokens as u128) * u128::from(meta.dim) * meta.precision.bytes() as u128;
        if vectors.len() as u128 != expected {
            return Err(corrupt(format!(
                "originals: vector section is {} bytes, expected {expected} ({} tokens of {} {} values)",
                vectors.len(),
                meta.n_tokens,
                meta.dim,
                meta.precision
            )));
        }
        Ok(OriginalsReader {
            verified: (0..n_docs.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            container,
            meta,
        })
    }

    /// The file's shape.
    pub fn meta(&self) -> &OriginalsMeta {
        &self.meta
    }

    /// The file backing these originals.
    pub fn path(&self) -> &Path {
        self.container.path()
    }

    /// Records that the file was renamed after it was opened (see [`Container::set_path`]).
    pub fn set_path(&mut self, path: &Path) {
        self.container.set_path(path);
    }

    /// Size of the file in bytes.
    pub fn file_len(&self) -> u64 {
        self.container.file_len()
    }

    /// Number of sections in the file (the block-checked one included).
    pub fn section_count(&self) -> usize {
        self.container.section_count()
    }

    /// `n_docs + 1` token offsets (validated at open).
    pub fn doc_offsets(&self) -> &[u64] {
        self.container
            .typed_section(section::DOC_OFFSETS, "doc offsets")
            .unwrap_or(&[])
    }

    /// Starts reading document `local`'s vectors into memory without waiting (see
    /// [`crate::FileBytes::will_need`]); a search calls this for every candidate it will
    /// refine before scoring the first, so that originals not in the page cache arrive in
    /// parallel. Out-of-range ids are ignored, and so are documents this reader has already
    /// read: they were in the page cache then and most likely still are, and the advice is a
    /// system call per document whatever the cache holds (at 100K documents, skipping it for
    /// them took the refine stage from 0.64-0.69 to 0.58 ms per query: BENCHMARKS.md,
    /// "Refine on against off, timed in alternating rounds").
    pub fn prefetch(&self, local: u32) {
        let l = local as usize;
        if self.is_verified(l) {
            return;
        }
        let offsets = self.doc_offsets();
        if l + 1 < offsets.len() {
            let row = self.meta.dim as usize * self.meta.precision.bytes();
            self.container.will_need(
                section::VECTORS,
                offsets[l] as usize * row..offsets[l + 1] as usize * row,
            );
        }
    }

    /// Whether document `l` was read (and its checksum checked) through this reader.
    fn is_verified(&self, l: usize) -> bool {
        self.verified
            .get(l / 64)
            .is_some_and(|w| w.load(Ordering::Acquire) & (1u64 << (l % 64)) != 0)
    }

    /// Document `local`'s stored bytes (little-endian values at the file's precision),
    /// checked against its CRC on first read.
    pub fn doc_bytes(&self, local: u32) -> Result<&[u8]> {
        let path = self.path();
        let l = local as usize;
        let offsets = self.doc_offsets();
        if l + 1 >= offsets.len() {
            return Err(Error::corrupt(
                path,
                format!(
                    "originals: document {local} requested of {}",
                    self.meta.n_docs
                ),
            ));
        }
        let row = self.meta.dim as usize * self.meta.precision.bytes();
        let (lo, hi) = (offsets[l] as usize * row, offsets[l + 1] as usize * row);
        // Validated at open: the section has exactly n_tokens rows.
        let all = self
            .container
            .block_checked_section(section::VECTORS, "vectors")?;
        let bytes = &all[lo..hi];
        if !self.is_verified(l) {
            let crcs: &[u32] = self
                .container
                .typed_section(section::DOC_CRCS, "document checksums")?;
            let computed = crc32c::crc32c(bytes);
            if computed != crcs[l] {
                return Err(Error::ChecksumMismatch {
                    path: path.to_path_buf(),
                    what: format!("originals: document {local}"),
                    stored: crcs[l],
                    computed,
                });
            }
            self.verified[l / 64].fetch_or(1u64 << (l % 64), Ordering::AcqRel);
        }
        Ok(bytes)
    }

    /// The original vectors of local document `local`, row-major `[tokens, dim]`, after
    /// checking them against the document's CRC (once per reader). A mismatch is a
    /// [`Error::ChecksumMismatch`] naming the file and the document.
    pub fn doc(&self, local: u32) -> Result<OriginalDoc<'_>> {
        let path = self.path();
        let bytes = self.doc_bytes(local)?;
        let bad_layout = |e: bytemuck::PodCastError| {
            Error::corrupt(
                path,
                format!("originals: document {local}: bad layout: {e}"),
            )
        };
        Ok(match self.meta.precision {
            Precision::F16 => {
                OriginalDoc::F16(bytemuck::try_cast_slice(bytes).map_err(bad_layout)?)
            }
            Precision::Bf16 => {
                OriginalDoc::Bf16(bytemuck::try_cast_slice(bytes).map_err(bad_layout)?)
            }
            Precision::F32 => {
                OriginalDoc::F32(bytemuck::try_cast_slice(bytes).map_err(bad_layout)?)
            }
            Precision::None => {
                return Err(Error::corrupt(
                    path,
                    "originals: precision none has no vectors",
                ));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(
        dir: &Path,
        precision: Precision,
        vectors: &[f32],
        offsets: &[u64],
    ) -> std::path::PathBuf {
        let path = dir.join(format!("vec-{precision}.tov"));
        let mut bytes = Vec::new();
        write_originals(
            &mut bytes,
            &OriginalsInput {
                dim: 3,
                precision,
                segment_id: 9,
                doc_offsets: offsets,
                vectors: OriginalValues::F32(vectors),
            },
        )
        .expect("serialise");
        std::fs::write(&path, bytes).expect("write");
        path
    }

    #[test]
    fn each_precision_round_trips_to_its_own_rounding_of_the_input() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v: Vec<f32> = (0..9).map(|i| 0.1 + i as f32 / 7.0).collect();
        for p in [Precision::F16, Precision::Bf16, Precision::F32] {
            let r = OriginalsReader::open(&write(dir.path(), p, &v, &[0, 1, 3])).expect("open");
            assert_eq!(r.meta().segment_id, 9);
            assert_eq!(r.meta().precision, p);
            let got: Vec<f32> = (0..2)
                .flat_map(|d| r.doc(d).expect("doc").to_f32())
                .collect();
            let want: Vec<f32> = match p {
                Precision::F16 => v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect(),
                Precision::Bf16 => v
                    .iter()
                    .map(|&x| half::bf16::from_f32(x).to_f32())
                    .collect(),
                _ => v.clone(),
            };
            assert_eq!(got, want, "{p}");
            assert!(r.doc(2).is_err());
        }
    }

    #[test]
    fn a_flipped_vector_byte_is_caught_when_its_document_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v: Vec<f32> = (0..9).map(|i| i as f32).collect();
        let path = write(dir.path(), Precision::F16, &v, &[0, 1, 3]);
        let mut bytes = std::fs::read(&path).expect("read");
        // The last byte of the file is document 1's last value.
        let n = bytes.len();
        bytes[n - 1] ^= 0x01;
        std::fs::write(&path, &bytes).expect("write");
        let r = OriginalsReader::open(&path).expect("structure is intact");
        assert!(r.doc(0).is_ok(), "document 0 is undamaged");
        let err = r.doc(1).expect_err("document 1 is damaged");
        assert!(
            err.to_string().contains("document 1 fails its checksum"),
            "{err}"
        );
    }

    #[test]
    fn only_values_that_stay_finite_are_held() {
        assert!(Precision::F16.holds(65504.0) && Precision::F16.holds(-65519.0));
        assert!(!Precision::F16.holds(65520.0) && !Precision::F16.holds(-1e6));
        assert!(Precision::Bf16.holds(1e38) && !Precision::Bf16.holds(f32::MAX));
        assert!(Precision::F32.holds(f32::MAX) && Precision::None.holds(f32::MAX));
        // The bound is where conversion starts giving infinity, to the last bit.
        for p in [Precision::F16, Precision::Bf16] {
            let b = p.overflow_bound();
            let below = f32::from_bits(b.to_bits() - 1);
            let widened = |x: f32| match p {
                Precision::F16 => half::f16::from_f32(x).to_f32(),
                _ => half::bf16::from_f32(x).to_f32(),
            };
            assert!(
                widened(below).is_finite() && widened(b).is_infinite(),
                "{p}"
            );
            assert!(p.holds(below) && !p.holds(b) && !p.holds(-b), "{p}");
        }
    }

    #[test]
    fn precisions_parse_and_print() {
        for p in [
            Precision::None,
            Precision::F16,
            Precision::Bf16,
            Precision::F32,
        ] {
            assert_eq!(p.to_string().parse::<Precision>(), Ok(p));
        }
        assert!("f8".parse::<Precision>().is_err());
    }
}
