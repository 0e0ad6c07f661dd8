//! The checksummed container shared by every Tessera data file (see `FORMAT.md`, "Container").
//!
//! A container is a 64-byte header, a table of section descriptors, and the sections, each
//! starting on a 64-byte boundary so that typed views over a memory map are aligned. Every
//! section carries a CRC32C of its stored bytes; the header and the table carry their own.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::mmap::FileBytes;

/// Magic bytes at offset 0 of every Tessera data file.
pub const MAGIC: [u8; 8] = *b"TESSERA\0";
/// The container version this build writes.
pub const FORMAT_VERSION: u32 = 1;
/// The container versions this build reads.
pub const SUPPORTED_VERSIONS: std::ops::RangeInclusive<u32> = 1..=FORMAT_VERSION;
/// Size of the fixed header in bytes.
pub const HEADER_LEN: usize = 64;
/// Size of one section descriptor in bytes.
pub const SECTION_ENTRY_LEN: usize = 40;
/// Alignment of every section's first byte.
pub const SECTION_ALIGN: usize = 64;

/// What a container holds; stored in the header so a codec file is never read as a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum FileKind {
    /// A segment: compressed documents of one committed batch.
    Segment = 1,
    /// A codec: centroids and residual quantiser of one collection.
    Codec = 2,
    /// The original (full-precision) vectors of one segment's documents.
    Originals = 3,
}

/// How a section's bytes are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Encoding {
    /// Stored as is; can be viewed in place through the memory map.
    Raw = 0,
    /// Compressed with zstd; must be decompressed before use.
    Zstd = 1,
    /// Stored as is, but too large to checksum at open: its table CRC is zero and the file
    /// kind defines finer checksums (one per document) that readers verify before use.
    BlockChecked = 2,
}

/// Zstd level for compressed sections: they are small, so a high level costs little.
const ZSTD_LEVEL: i32 = 9;

/// A section ready to be written.
pub struct SectionData {
    id: u32,
    encoding: Encoding,
    raw_len: u64,
    stored: Vec<u8>,
}

impl SectionData {
    /// A section stored uncompressed.
    pub fn raw(id: u32, bytes: Vec<u8>) -> Self {
        SectionData {
            id,
            encoding: Encoding::Raw,
            raw_len: bytes.len() as u64,
            stored: bytes,
        }
    }

    /// A section stored uncompressed whose checksums live elsewhere in the file (see
    /// [`Encoding::BlockChecked`]).
    pub fn block_checked(id: u32, bytes: Vec<u8>) -> Self {
        SectionData {
            id,
            encoding: Encoding::BlockChecked,
            raw_len: bytes.len() as u64,
            stored: bytes,
        }
    }

    /// A section stored zstd-compressed.
    pub fn zstd(id: u32, bytes: &[u8]) -> std::io::Result<Self> {
        let stored = zstd::bulk::compress(bytes, ZSTD_LEVEL)?;
        Ok(SectionData {
            id,
            encoding: Encoding::Zstd,
            raw_len: bytes.len() as u64,
            stored,
        })
    }

    /// Bytes this section takes on disk (before padding).
    pub fn stored_len(&self) -> u64 {
        self.stored.len() as u64
    }
}

fn align_up(x: usize) -> usize {
    x.div_ceil(SECTION_ALIGN) * SECTION_ALIGN
}

/// Serialises `sections` as a container of `kind` into `out`; returns the bytes written.
pub fn write_container(
    out: &mut impl Write,
    kind: FileKind,
    sections: &[SectionData],
) -> std::io::Result<u64> {
    let table_len = sections.len() * SECTION_ENTRY_LEN;
    let mut offset = align_up(HEADER_LEN + table_len);
    let mut table = Vec::with_capacity(table_len);
    let mut offsets = Vec::with_capacity(sections.len());
    for s in sections {
        offsets.push(offset);
        table.extend_from_slice(&s.id.to_le_bytes());
        table.extend_from_slice(&(s.encoding as u32).to_le_bytes());
        table.extend_from_slice(&(offset as u64).to_le_bytes());
        table.extend_from_slice(&(s.stored.len() as u64).to_le_bytes());
        table.extend_from_slice(&s.raw_len.to_le_bytes());
        let crc = match s.encoding {
            Encoding::BlockChecked => 0,
            _ => crc32c::crc32c(&s.stored),
        };
        table.extend_from_slice(&crc.to_le_bytes());
        table.extend_from_slice(&0u32.to_le_bytes());
        offset = align_up(offset + s.stored.len());
    }
    let file_len = match sections.last() {
        Some(last) => offsets[offsets.len() - 1] + last.stored.len(),
        None => HEADER_LEN + table_len,
    };
    let mut header = [0u8; HEADER_LEN];
    header[0..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&(kind as u32).to_le_bytes());
    header[12..16].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[16..20].copy_from_slice(&(sections.len() as u32).to_le_bytes());
    header[24..32].copy_from_slice(&(file_len as u64).to_le_bytes());
    header[32..36].copy_from_slice(&crc32c::crc32c(&table).to_le_bytes());
    let crc = crc32c::crc32c(&header[0..60]);
    header[60..64].copy_from_slice(&crc.to_le_bytes());

    out.write_all(&header)?;
    out.write_all(&table)?;
    let mut pos = HEADER_LEN + table_len;
    let zeros = [0u8; SECTION_ALIGN];
    for (s, &start) in sections.iter().zip(&offsets) {
        out.write_all(&zeros[..start - pos])?;
        out.write_all(&s.stored)?;
        pos = start + s.stored.len();
    }
    Ok(pos as u64)
}

#[derive(Clone, Copy, Debug)]
struct SectionEntry {
    id: u32,
    encoding: Encoding,
    offset: usize,
    stored_len: usize,
    raw_len: usize,
}

/// A validated container over a memory map.
#[derive(Clone, Debug)]
pub struct Container {
    path: PathBuf,
    bytes: FileBytes,
    sections: Vec<SectionEntry>,
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl Container {
    /// Maps `path` and validates length, magic, version, kind, header, table and every
    /// section's checksum before returning.
    pub fn open(path: &Path, kind: FileKind) -> Result<Self> {
        let bytes = FileBytes::map(path)?;
        Self::validate(path, bytes, kind)
    }

    /// Validates `bytes` as [`Container::open`] validates a file's; `path` only names them
    /// in errors.
    pub fn from_bytes(path: &Path, bytes: FileBytes, kind: FileKind) -> Result<Self> {
        Self::validate(path, bytes, kind)
    }

    fn validate(path: &Path, bytes: FileBytes, kind: FileKind) -> Result<Self> {
        let corrupt = |reason: String| Error::corrupt(path, reason);
        let b: &[u8] = &bytes;
        if b.len() < HEADER_LEN {
            return Err(corrupt(format!(
                "file is {} bytes, shorter than the {HEADER_LEN}-byte header",
                b.len()
            )));
        }
        if b[0..8] != MAGIC {
            return Err(corrupt("bad magic: not a Tessera data file".into()));
        }
        let checksum = |what: &str, stored: u32, bytes: &[u8]| {
            let computed = crc32c::crc32c(bytes);
            if computed == stored {
                Ok(())
            } else {
                Err(Error::ChecksumMismatch {
                    path: path.to_path_buf(),
                    what: what.to_owned(),
                    stored,
                    computed,
                })
            }
        };
        checksum("header", le_u32(b, 60), &b[0..60])?;
        let version = le_u32(b, 12);
        if !SUPPORTED_VERSIONS.contains(&version) {
            return Err(Error::UnsupportedVersion {
                path: path.to_path_buf(),
                found: version,
                supported: SUPPORTED_VERSIONS,
            });
        }
        let found_kind = le_u32(b, 8);
        if found_kind != kind as u32 {
            return Err(corrupt(format!(
                "file kind {found_kind}, expected {} ({kind:?})",
                kind as u32
            )));
        }
        // Checksummed, so a non-zero value is a writer's mistake or a later format this
        // version must not half-understand.
        if le_u32(b, 20) != 0 || b[36..60].iter().any(|&x| x != 0) {
            return Err(corrupt(
                "header flags or reserved bytes are not zero".into(),
            ));
        }
        let file_len = le_u64(b, 24);
        if file_len != b.len() as u64 {
            return Err(corrupt(format!(
                "header says {file_len} bytes but the file has {} (truncated or extended)",
                b.len()
            )));
        }
        let n_sections = le_u32(b, 16) as usize;
        let table_end = HEADER_LEN
            .checked_add(n_sections.saturating_mul(SECTION_ENTRY_LEN))
            .filter(|&end| end <= b.len())
            .ok_or_else(|| {
                corrupt(format!(
                    "section table of {n_sections} entries overruns the file"
                ))
            })?;
        let table = &b[HEADER_LEN..table_end];
        checksum("section table", le_u32(b, 32), table)?;
        let mut sections = Vec::with_capacity(n_sections);
        // FORMAT.md: sections follow the table in table order, each at the next multiple of
        // 64 after the previous one, zero in between, and the file ends with the last one.
        // Checking the exact layout also rules out overlapping sections.
        let mut expected_offset = align_up(table_end);
        let mut layout_end = table_end;
        for i in 0..n_sections {
            let e = &table[i * SECTION_ENTRY_LEN..(i + 1) * SECTION_ENTRY_LEN];
            let id = le_u32(e, 0);
            let encoding = match le_u32(e, 4) {
                0 => Encoding::Raw,
                1 => Encoding::Zstd,
                // FORMAT.md: only originals files have block-checked sections.
                2 if kind == FileKind::Originals => Encoding::BlockChecked,
                other => return Err(corrupt(format!("section {id}: unknown encoding {other}"))),
            };
            let offset = le_u64(e, 8);
            let stored_len = le_u64(e, 16);
            let raw_len = le_u64(e, 24);
            let crc = le_u32(e, 32);
            if le_u32(e, 36) != 0 {
                return Err(corrupt(format!(
                    "section {id}: reserved bytes of its table entry are not zero"
                )));
            }
            let end = offset.checked_add(stored_len);
            if offset != expected_offset as u64 || end.is_none_or(|end| end > b.len() as u64) {
                return Err(corrupt(format!(
                    "section {id}: range {offset}+{stored_len} is not where the layout puts it \
                     (offset {expected_offset}, inside the file)"
                )));
            }
            let (offset, stored_len) = (offset as usize, stored_len as usize);
            if b[layout_end..offset].iter().any(|&x| x != 0) {
                return Err(corrupt(format!("padding before section {id} is not zero")));
            }
            layout_end = offset + stored_len;
            expected_offset = align_up(layout_end);
            if encoding == Encoding::BlockChecked {
                // Checked per block by the file kind's reader, before each block is used.
                if crc != 0 {
                    return Err(corrupt(format!(
                        "section {id}: a block-checked section must have a zero table checksum"
                    )));
                }
            } else {
                checksum(
                    &format!("section {id}"),
                    crc,
                    &b[offset..offset + stored_len],
                )?;
            }
            if encoding != Encoding::Zstd && raw_len != stored_len as u64 {
                return Err(corrupt(format!("section {id}: raw length mismatch")));
            }
            sections.push(SectionEntry {
                id,
                encoding,
                offset,
                stored_len,
                raw_len: usize::try_from(raw_len)
                    .map_err(|_| corrupt(format!("section {id}: raw length too large")))?,
            });
        }
        if layout_end != b.len() {
            return Err(corrupt(format!(
                "{} bytes after the last section",
                b.len() - layout_end
            )));
        }
        Ok(Container {
            path: path.to_path_buf(),
            bytes,
            sections,
        })
    }

    /// The file this container was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records that the file was renamed (published) after it was opened, so errors name
    /// where it now is. The mapping is unaffected: a rename keeps the inode.
    pub fn set_path(&mut self, path: &Path) {
        self.path = path.to_path_buf();
    }

    /// Total size of the file in bytes.
    pub fn file_len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Number of sections (each checksummed at open, or block-checked by its file kind).
    pub fn section_count(&self) -> usize {
        self.sections.len()
    }

    fn entry(&self, id: u32, what: &str) -> Result<&SectionEntry> {
        self.sections
            .iter()
            .find(|s| s.id == id)
            .ok_or_else(|| Error::corrupt(&self.path, format!("missing section {id} ({what})")))
    }

    /// The bytes of raw section `id`, viewed in place.
    pub fn raw_section(&self, id: u32, what: &str) -> Result<&[u8]> {
        let e = self.entry(id, what)?;
        if e.encoding != Encoding::Raw {
            return Err(Error::corrupt(
                &self.path,
                format!("section {id} ({what}) must be stored raw"),
            ));
        }
        Ok(&self.bytes[e.offset..e.offset + e.stored_len])
    }

    /// The bytes of block-checked section `id`, viewed in place and **not yet verified**:
    /// the caller checks each block against the checksums its file kind defines before
    /// using it (FORMAT.md, "Originals").
    pub fn block_checked_section(&self, id: u32, what: &str) -> Result<&[u8]> {
        let e = self.entry(id, what)?;
        if e.encoding != Encoding::BlockChecked {
            return Err(Error::corrupt(
                &self.path,
                format!("section {id} ({what}) must be stored block-checked"),
            ));
        }
        Ok(&self.bytes[e.offset..e.offset + e.stored_len])
    }

    /// Announces that bytes `range` of raw or block-checked section `id` will be read soon
    /// ([`FileBytes::will_need`]); ranges outside the section are ignored.
    pub fn will_need(&self, id: u32, range: std::ops::Range<usize>) {
        if let Some(e) = self.sections.iter().find(|s| s.id == id)
            && e.encoding != Encoding::Zstd
            && range.start <= range.end
            && range.end <= e.stored_len
        {
            self.bytes
                .will_need(e.offset + range.start, range.end - range.start);
        }
    }

    /// The bytes of section `id`, decompressed if needed.
    pub fn section_bytes(&self, id: u32, what: &str) -> Result<Vec<u8>> {
        let e = self.entry(id, what)?;
        let stored = &self.bytes[e.offset..e.offset + e.stored_len];
        match e.encoding {
            Encoding::Raw => Ok(stored.to_vec()),
            // Its checksums are not the container's: only the file kind's reader may hand
            // out its bytes, block by block, after checking them.
            Encoding::BlockChecked => Err(Error::corrupt(
                &self.path,
                format!("section {id} ({what}) is block-checked, not a whole section"),
            )),
            Encoding::Zstd => {
                let out = decompress_at_most(stored, e.raw_len).map_err(|err| {
                    Error::corrupt(&self.path, format!("section {id} ({what}): zstd: {err}"))
                })?;
                if out.len() != e.raw_len {
                    return Err(Error::corrupt(
                        &self.path,
                        format!("section {id} ({what}): decompressed length mismatch"),
                    ));
                }
                Ok(out)
            }
        }
    }

    /// Stored and uncompressed sizes of section `id`.
    pub fn section_sizes(&self, id: u32) -> Option<(u64, u64)> {
        self.sections
            .iter()
            .find(|s| s.id == id)
            .map(|s| (s.stored_len as u64, s.raw_len as u64))
    }

    /// Views raw section `id` as a slice of `T`, checking size and alignment.
    pub fn typed_section<T: bytemuck::Pod>(&self, id: u32, what: &str) -> Result<&[T]> {
        let raw = self.raw_section(id, what)?;
        bytemuck::try_cast_slice(raw).map_err(|e| {
            Error::corrupt(
                &self.path,
                format!("section {id} ({what}): bad layout: {e}"),
            )
        })
    }
}

/// Decompresses the zstd frame `stored` into at most `raw_len + 1` bytes (one more shows a
/// length mismatch). Memory grows with the bytes the frame really holds: `raw_len` comes
/// from the file, and allocating it up front let a damaged length (checksums resealed, found
/// by fuzzing) ask for exabytes and abort the process.
pub(crate) fn decompress_at_most(stored: &[u8], raw_len: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    // A first guess that real sections (a few times smaller stored) seldom outgrow.
    let guess = raw_len.min(stored.len().saturating_mul(16));
    let mut out = Vec::with_capacity(guess);
    zstd::stream::read::Decoder::with_buffer(stored)?
        .take((raw_len as u64).saturating_add(1))
        .read_to_end(&mut out)?;
    Ok(out)
}

/// Recomputes every checksum of a container in `b` (sections, table, header) after a test
/// edited it, so that only the rule under test can object to the edit.
#[cfg(test)]
pub(crate) fn reseal(b: &mut [u8]) {
    let n = le_u32(b, 16) as usize;
    for i in 0..n {
        let e = HEADER_LEN + i * SECTION_ENTRY_LEN;
        if le_u32(b, e + 4) == Encoding::BlockChecked as u32 {
            continue;
        }
        let (offset, len) = (le_u64(b, e + 8) as usize, le_u64(b, e + 16) as usize);
        let crc = crc32c::crc32c(&b[offset..offset + len]);
        b[e + 32..e + 36].copy_from_slice(&crc.to_le_bytes());
    }
    let table_crc = crc32c::crc32c(&b[HEADER_LEN..HEADER_LEN + n * SECTION_ENTRY_LEN]);
    b[32..36].copy_from_slice(&table_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&b[0..60]);
    b[60..64].copy_from_slice(&header_crc.to_le_bytes());
}

/// Where section `id` starts in container bytes `b` (tests edit sections in place).
#[cfg(test)]
pub(crate) fn section_offset(b: &[u8], id: u32) -> usize {
    let n = le_u32(b, 16) as usize;
    (0..n)
        .map(|i| HEADER_LEN + i * SECTION_ENTRY_LEN)
        .find(|&e| le_u32(b, e) == id)
        .map(|e| le_u64(b, e + 8) as usize)
        .expect("section present")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let sections = vec![
            SectionData::raw(1, vec![1, 2, 3, 4, 5, 6, 7, 8]),
            SectionData::zstd(2, &[7u8; 1000]).expect("compress"),
        ];
        let mut out = Vec::new();
        write_container(&mut out, FileKind::Segment, &sections).expect("write");
        out
    }

    fn write_tmp(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.bin");
        std::fs::write(&path, bytes).expect("write");
        (dir, path)
    }

    #[test]
    fn round_trip_returns_sections_as_written() {
        let (_d, path) = write_tmp(&sample());
        let c = Container::open(&path, FileKind::Segment).expect("open");
        assert_eq!(c.raw_section(1, "a").expect("a"), &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(c.section_bytes(2, "b").expect("b"), vec![7u8; 1000]);
        let (stored, raw) = c.section_sizes(2).expect("sizes");
        assert!(stored < raw);
    }

    #[test]
    fn every_flipped_byte_is_detected_and_checksummed_ones_as_checksum_mismatches() {
        let good = sample();
        let (_d, path) = write_tmp(&good);
        let c = Container::open(&path, FileKind::Segment).expect("open");
        let table_end = HEADER_LEN + c.sections.len() * SECTION_ENTRY_LEN;
        let in_section = |i: usize| {
            c.sections
                .iter()
                .any(|s| (s.offset..s.offset + s.stored_len).contains(&i))
        };
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            let (_d, path) = write_tmp(&bad);
            let err = Container::open(&path, FileKind::Segment)
                .expect_err(&format!("flip at byte {i} went unnoticed"));
            // The magic is checked first (a non-Tessera file is not "damaged"), and padding
            // for zeros, not by a checksum.
            if (MAGIC.len()..table_end).contains(&i) || in_section(i) {
                assert!(
                    matches!(err, Error::ChecksumMismatch { .. }),
                    "flip at byte {i}: {err}"
                );
            }
        }
    }

    /// Rewrites the header's checksum after `edit`, so only the rule under test can object.
    fn with_header_edit(edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut b = sample();
        edit(&mut b);
        let crc = crc32c::crc32c(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn reserved_header_fields_must_be_zero() {
        for at in [20usize, 36, 47, 59] {
            let bad = with_header_edit(|b| b[at] = 1);
            let (_d, path) = write_tmp(&bad);
            let err = Container::open(&path, FileKind::Segment).expect_err("reserved byte");
            assert!(err.to_string().contains("reserved"), "byte {at}: {err}");
        }
    }

    #[test]
    fn a_later_version_is_unsupported_with_the_range_this_build_reads() {
        let bad = with_header_edit(|b| b[12..16].copy_from_slice(&2u32.to_le_bytes()));
        let (_d, path) = write_tmp(&bad);
        match Container::open(&path, FileKind::Segment) {
            Err(Error::UnsupportedVersion {
                found, supported, ..
            }) => {
                assert_eq!(found, 2);
                assert_eq!(supported, 1..=1);
            }
            other => panic!("expected UnsupportedVersion, got {other:?}"),
        }
    }

    /// Rewrites section table entries (and both checksums over them) with `edit`.
    fn with_table_edit(edit: impl FnOnce(&mut [u8])) -> Vec<u8> {
        with_header_edit(|b| {
            let n = le_u32(b, 16) as usize;
            let end = HEADER_LEN + n * SECTION_ENTRY_LEN;
            edit(&mut b[HEADER_LEN..end]);
            let crc = crc32c::crc32c(&b[HEADER_LEN..end]);
            b[32..36].copy_from_slice(&crc.to_le_bytes());
        })
    }

    #[test]
    fn sections_out_of_order_or_overlapping_are_rejected() {
        // Swap the two entries: each section's bytes and checksum stay valid, only the
        // order breaks FORMAT.md's layout.
        let swapped = with_table_edit(|t| {
            let (a, b) = t.split_at_mut(SECTION_ENTRY_LEN);
            a.swap_with_slice(&mut b[..SECTION_ENTRY_LEN]);
        });
        // Point the second entry at the first section's bytes (an overlap).
        let overlapping = with_table_edit(|t| {
            let first: [u8; 40] = t[..SECTION_ENTRY_LEN].try_into().expect("entry");
            t[SECTION_ENTRY_LEN + 8..SECTION_ENTRY_LEN + 36].copy_from_slice(&first[8..36]);
        });
        let reserved = with_table_edit(|t| t[36] = 1);
        for (name, bad) in [
            ("swapped", swapped),
            ("overlapping", overlapping),
            ("entry reserved", reserved),
        ] {
            let (_d, path) = write_tmp(&bad);
            let err = Container::open(&path, FileKind::Segment).expect_err(name);
            assert!(matches!(err, Error::Corrupt { .. }), "{name}: {err}");
        }
    }

    /// Found by fuzzing: the reader allocated the declared length before decompressing.
    #[test]
    fn a_compressed_section_declaring_an_enormous_length_is_corrupt_not_an_abort() {
        for raw_len in [1001u64, 1 << 40, u64::MAX >> 2] {
            let mut bad = sample();
            let entry = HEADER_LEN + SECTION_ENTRY_LEN;
            bad[entry + 24..entry + 32].copy_from_slice(&raw_len.to_le_bytes());
            reseal(&mut bad);
            let (_d, path) = write_tmp(&bad);
            let c = Container::open(&path, FileKind::Segment).expect("only the length is off");
            let err = c.section_bytes(2, "b").expect_err("length mismatch");
            assert!(
                err.to_string().contains("length mismatch"),
                "{raw_len}: {err}"
            );
        }
        let mut short = sample();
        let entry = HEADER_LEN + SECTION_ENTRY_LEN;
        short[entry + 24..entry + 32].copy_from_slice(&999u64.to_le_bytes());
        reseal(&mut short);
        let (_d, path) = write_tmp(&short);
        let c = Container::open(&path, FileKind::Segment).expect("only the length is off");
        assert!(
            c.section_bytes(2, "b").is_err(),
            "a frame longer than declared"
        );
    }

    #[test]
    fn truncation_and_wrong_kind_are_rejected() {
        let good = sample();
        let (_d, path) = write_tmp(&good[..good.len() - 1]);
        assert!(matches!(
            Container::open(&path, FileKind::Segment),
            Err(Error::Corrupt { .. })
        ));
        let (_d2, path2) = write_tmp(&good);
        assert!(matches!(
            Container::open(&path2, FileKind::Codec),
            Err(Error::Corrupt { .. })
        ));
        let (_d3, path3) = write_tmp(&[]);
        assert!(matches!(
            Container::open(&path3, FileKind::Segment),
            Err(Error::Corrupt { .. })
        ));
    }
}
