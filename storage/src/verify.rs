//! Full verification of one data file: everything an open checks, and also what an open
//! leaves for later (the per-document checksums of an originals file, which a reader checks
//! only when it first reads a document). Problems come back as values, so that a verifier
//! can report every damaged file and document rather than stop at the first.

use std::path::Path;

use crate::codec::{CodecData, read_codec};
use crate::container::{Container, FileKind};
use crate::error::Error;
use crate::originals::OriginalsReader;
use crate::segment::SegmentReader;

/// What verifying one file found.
#[derive(Debug)]
pub struct FileCheck<T> {
    /// The file, opened, when its structure is sound (per-document problems of an originals
    /// file still leave it readable: only those documents fail).
    pub reader: Option<T>,
    /// Sections whose checksums were verified.
    pub sections: usize,
    /// Documents whose own checksums were verified (originals files only).
    pub documents: usize,
    /// Every problem found, each naming the file (and the document, where it is one).
    pub problems: Vec<Error>,
}

impl<T> FileCheck<T> {
    fn failed(e: Error) -> Self {
        FileCheck {
            reader: None,
            sections: 0,
            documents: 0,
            problems: vec![e],
        }
    }
}

/// Verifies a segment file: every section's checksum and every structural invariant
/// ([`SegmentReader::open`] checks all of them; a segment has no deferred checks).
pub fn verify_segment(path: &Path) -> FileCheck<SegmentReader> {
    match SegmentReader::open(path) {
        Ok(reader) => FileCheck {
            sections: reader.section_count(),
            documents: 0,
            problems: Vec::new(),
            reader: Some(reader),
        },
        Err(e) => FileCheck::failed(e),
    }
}

/// Verifies a codec file: every section's checksum and the codec's invariants.
pub fn verify_codec(path: &Path) -> FileCheck<CodecData> {
    // read_codec keeps no container: the section count comes from a second, cheap
    // validation (codec files are small).
    let sections = match Container::open(path, FileKind::Codec) {
        Ok(c) => c.section_count(),
        Err(e) => return FileCheck::failed(e),
    };
    match read_codec(path) {
        Ok(codec) => FileCheck {
            reader: Some(codec),
            sections,
            documents: 0,
            problems: Vec::new(),
        },
        Err(e) => FileCheck::failed(e),
    }
}

/// Verifies an originals file: its structure (as [`OriginalsReader::open`] does), then
/// every document's bytes against its CRC, each mismatch a problem of its own.
pub fn verify_originals(path: &Path) -> FileCheck<OriginalsReader> {
    let reader = match OriginalsReader::open(path) {
        Ok(r) => r,
        Err(e) => return FileCheck::failed(e),
    };
    let mut problems = Vec::new();
    let n_docs = reader.meta().n_docs;
    for local in 0..n_docs {
        if let Err(e) = reader.doc_bytes(local) {
            problems.push(e);
        }
    }
    FileCheck {
        sections: reader.section_count(),
        documents: n_docs as usize,
        problems,
        reader: Some(reader),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::originals::{OriginalValues, OriginalsInput, Precision, section, write_originals};

    #[test]
    fn every_damaged_originals_document_is_a_problem_of_its_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vec-000001.tov");
        let values: Vec<f32> = (0..4 * 6).map(|i| i as f32).collect();
        let mut bytes = Vec::new();
        write_originals(
            &mut bytes,
            &OriginalsInput {
                dim: 4,
                precision: Precision::F32,
                segment_id: 1,
                doc_offsets: &[0, 2, 3, 6],
                vectors: OriginalValues::F32(&values),
            },
        )
        .expect("write");
        std::fs::write(&path, &bytes).expect("write");
        let clean = verify_originals(&path);
        assert!(clean.problems.is_empty(), "{:?}", clean.problems);
        assert_eq!((clean.sections, clean.documents), (4, 3));

        // Damage documents 0 and 2 (rows 0 and 5); open alone would not notice.
        let at = crate::container::section_offset(&bytes, section::VECTORS);
        bytes[at] ^= 1;
        bytes[at + 5 * 16] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        assert!(OriginalsReader::open(&path).is_ok());
        let check = verify_originals(&path);
        let found: Vec<String> = check.problems.iter().map(|e| e.to_string()).collect();
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("document 0"), "{found:?}");
        assert!(found[1].contains("document 2"), "{found:?}");
    }

    #[test]
    fn a_missing_file_is_a_problem_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let check = verify_segment(&dir.path().join("seg-000001.tsg"));
        assert!(check.reader.is_none());
        assert_eq!(check.problems.len(), 1);
    }
}
