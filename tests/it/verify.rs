//! `verify` reads every file and record of a database and reports every fault with a line
//! naming it: each test plants one fault in a closed database and looks for its line. A
//! database that went through deletes, upserts and a compaction verifies clean.

use std::path::{Path, PathBuf};

use roaring::RoaringBitmap;
use tessera::{Database, Document, ExternalId, IngestOptions, VerifyReport};
use tessera_storage::catalog::{Catalog, CatalogBatch, DocLocation, Manifest};
use tessera_tests::{documents_in, small_collection, small_corpus};

/// A closed database with collection "c" (id 0): two segments of 20 documents (ids 0..20 at
/// locals 0..20 of the first, 20..40 of the second), document 33 deleted. Returns the
/// manifest.
fn build(dir: &Path) -> Manifest {
    let corpus = small_corpus(40, 10, 8);
    let (db, coll) = small_collection(dir, &corpus, 0..20);
    coll.ingest(&documents_in(&corpus, 20..40), &IngestOptions::default())
        .expect("ingest");
    coll.delete(&[ExternalId::Int(33)]).expect("delete");
    drop((coll, db));
    manifest(dir)
}

/// The manifest of collection "c" as a handle on the database sees it (read through a
/// read-only catalog beside it).
fn manifest_of(db: &Database) -> Manifest {
    manifest(db.path())
}

fn manifest(dir: &Path) -> Manifest {
    let catalog = Catalog::open(&dir.join("catalog"), false, true).expect("catalog");
    catalog.manifest(0).expect("manifest").expect("present")
}

fn file(dir: &Path, name: &str) -> PathBuf {
    dir.join("collections").join("0").join(name)
}

/// Applies `edit` to the closed database's catalog in one commit.
fn edit_catalog(dir: &Path, edit: impl FnOnce(&mut CatalogBatch)) {
    let catalog = Catalog::open(&dir.join("catalog"), false, false).expect("catalog");
    let mut batch = CatalogBatch::default();
    edit(&mut batch);
    catalog.commit(batch).expect("commit");
}

/// Flips one bit of the byte `from_end` bytes before the end of `path`.
fn flip(path: &Path, from_end: usize) {
    let mut bytes = std::fs::read(path).expect("read");
    let at = bytes.len() - 1 - from_end;
    bytes[at] ^= 0x10;
    std::fs::write(path, &bytes).expect("write");
}

fn lines(report: &VerifyReport) -> Vec<String> {
    report.problems.iter().map(|p| p.to_string()).collect()
}

/// Verifies the database at `dir` and asserts that a problem line contains every one of
/// `needles`; returns the lines.
fn assert_found(dir: &Path, needles: &[&str]) -> Vec<String> {
    let report = tessera::verify(dir).expect("verify");
    let lines = lines(&report);
    assert!(
        lines.iter().any(|l| needles.iter().all(|n| l.contains(n))),
        "no line has all of {needles:?}: {lines:#?}"
    );
    lines
}

#[test]
fn a_database_after_deletes_upserts_and_a_compaction_verifies_clean() {
    let dir = tempfile::tempdir().expect("tempdir");
    let corpus = small_corpus(60, 10, 8);
    let (db, coll) = small_collection(dir.path(), &corpus, 0..30);
    let with_metadata: Vec<Document> = documents_in(&corpus, 30..45)
        .into_iter()
        .map(|d| d.with_metadata(serde_json::json!({"batch": 2})))
        .collect();
    coll.ingest(&with_metadata, &IngestOptions::default())
        .expect("ingest");
    coll.delete(&[ExternalId::Int(3), ExternalId::Int(31)])
        .expect("delete");
    // Upserts replace documents of both earlier segments.
    coll.ingest(
        &documents_in(&corpus, 45..60)
            .into_iter()
            .enumerate()
            .map(|(i, d)| Document::new((i * 3) as u64, d.vectors))
            .collect::<Vec<_>>(),
        &IngestOptions::upsert(),
    )
    .expect("upsert");
    coll.compact().expect("compact");
    coll.ingest(&documents_in(&corpus, 45..60), &IngestOptions::default())
        .expect("ingest after the compaction");
    coll.delete(&[ExternalId::Int(50)]).expect("delete");

    let report = db.verify().expect("verify");
    assert_eq!(lines(&report), Vec::<String>::new());
    assert!(report.is_clean());
    // Codecs replaced by expanded ones wait for the next writer open: notes, not faults.
    assert!(
        report.notes.iter().all(|n| n.reason.contains("superseded")),
        "{:?}",
        report.notes
    );
    let n = report.checked;
    let m = manifest_of(&db);
    assert_eq!(n.collections, 1);
    // The codec, and every segment with its originals.
    assert_eq!(n.files, 1 + 2 * m.segments.len() as u64, "{n:?}");
    assert!(n.sections >= n.files * 3, "{n:?}");
    assert_eq!(n.id_map_entries, coll.info().documents, "{n:?}");
    assert_eq!(n.original_documents, n.documents, "{n:?}");
    assert_eq!(n.tombstones, 1, "{n:?}");
    let with_metadata = (0..60u64)
        .filter(|&i| {
            coll.metadata(&ExternalId::Int(i))
                .expect("metadata")
                .is_some()
        })
        .count();
    assert!(with_metadata > 0);
    assert_eq!(n.metadata_records, with_metadata as u64, "{n:?}");
    drop((coll, db));

    // The same from the path, and through a read-only handle.
    let report = tessera::verify(dir.path()).expect("verify");
    assert_eq!(lines(&report), Vec::<String>::new());
    assert_eq!(report.checked, n);
    let ro = Database::open_read_only(dir.path()).expect("read-only");
    assert_eq!(ro.verify().expect("verify").checked, n);
}

#[test]
fn a_flipped_byte_in_a_segment_section_is_reported_with_its_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = build(dir.path());
    flip(&file(dir.path(), &m.segments[1].file), 0);
    assert_found(dir.path(), &[&m.segments[1].file, "fails its checksum"]);
}

#[test]
fn a_flipped_byte_in_an_originals_document_is_reported_though_the_open_succeeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = build(dir.path());
    let originals = &m.segments[0].originals.as_ref().expect("originals").file;
    // The vectors are the last section: the last byte is the last document's.
    flip(&file(dir.path(), originals), 0);
    // An open checks originals documents only when they are read.
    Database::open_read_only(dir.path()).expect("the open does not read the documents");
    let lines = assert_found(
        dir.path(),
        &[originals, "originals: document 19 fails its checksum"],
    );
    assert_eq!(lines.len(), 1, "{lines:#?}");
}

#[test]
fn a_flipped_byte_in_the_codec_is_reported_with_its_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = build(dir.path());
    let codec = &m.codec.as_ref().expect("codec").file;
    flip(&file(dir.path(), codec), 0);
    assert_found(dir.path(), &[codec, "fails its checksum"]);
}

#[test]
fn tombstones_of_a_missing_segment_or_beyond_their_segment_are_reported_though_the_open_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = build(dir.path());
    let seg = m.segments[0].id;
    edit_catalog(dir.path(), |b| {
        b.put_tombstones(0, seg + 100, &RoaringBitmap::from_iter([0u32]))
            .expect("tombstones");
        b.put_tombstones(0, seg, &RoaringBitmap::from_iter([1000u32]))
            .expect("tombstones");
    });
    Database::open(dir.path()).expect_err("the open refuses stray tombstones");
    assert_found(
        dir.path(),
        &[
            &format!("tombstones of segment {}", seg + 100),
            "no such segment",
        ],
    );
    assert_found(
        dir.path(),
        &[
            &format!("tombstones of segment {seg}"),
            "local document 1000 is deleted",
        ],
    );
}

#[test]
fn an_id_map_entry_out_of_range_is_reported_and_so_is_its_document() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = build(dir.path());
    let seg = m.segments[0].id;
    edit_catalog(dir.path(), |b| {
        b.put_location(
            0,
            &ExternalId::Int(5),
            DocLocation {
                segment: seg,
                local: 1_000_000,
            },
        );
    });
    assert_found(
        dir.path(),
        &["id-map entry of document 5", "local document 1000000"],
    );
    assert_found(
        dir.path(),
        &[
            &format!("document 5 (local document 5 of segment {seg})"),
            "points at local document 1000000",
        ],
    );
}

#[test]
fn an_id_map_entry_pointing_at_another_document_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = build(dir.path());
    let seg = m.segments[0].id;
    edit_catalog(dir.path(), |b| {
        b.put_location(
            0,
            &ExternalId::Int(5),
            DocLocation {
                segment: seg,
                local: 6,
            },
        );
    });
    assert_found(
        dir.path(),
        &["id-map entry of document 5", "which is document 6"],
    );
}

#[test]
fn a_live_document_without_an_id_map_entry_is_reported_and_so_is_its_metadata() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = build(dir.path());
    let seg = m.segments[0].id;
    edit_catalog(dir.path(), |b| {
        b.delete_location(0, &ExternalId::Int(7));
        b.put_metadata(0, &ExternalId::Int(7), b"{}");
    });
    assert_found(
        dir.path(),
        &[
            &format!("document 7 (local document 7 of segment {seg})"),
            "it has no id-map entry",
        ],
    );
    assert_found(
        dir.path(),
        &["metadata of document 7", "the id map has no such document"],
    );
}

#[test]
fn wrong_live_counts_in_the_manifest_are_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut m = build(dir.path());
    m.live_docs += 1;
    edit_catalog(dir.path(), |b| b.put_manifest(0, &m).expect("manifest"));
    assert_found(
        dir.path(),
        &[
            "manifest",
            &format!("it counts {} live documents", m.live_docs),
        ],
    );
}

#[test]
fn a_manifest_entry_that_disagrees_with_its_segment_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut m = build(dir.path());
    m.segments[1].n_tokens += 1;
    edit_catalog(dir.path(), |b| b.put_manifest(0, &m).expect("manifest"));
    assert_found(
        dir.path(),
        &[&m.segments[1].file, "does not match its manifest entry"],
    );
}

#[test]
fn orphan_data_files_temporary_files_and_collection_directories_are_reported_not_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = build(dir.path());
    let stray = file(dir.path(), "seg-000098.tsg");
    std::fs::copy(file(dir.path(), &m.segments[0].file), &stray).expect("copy");
    let tmp = file(dir.path(), "seg-000099.tsg.tmp");
    std::fs::write(&tmp, b"partial").expect("write");
    let orphan_dir = dir.path().join("collections").join("77");
    std::fs::create_dir_all(&orphan_dir).expect("mkdir");
    assert_found(
        dir.path(),
        &["seg-000098.tsg", "the manifest does not reference"],
    );
    assert_found(dir.path(), &["seg-000099.tsg.tmp", "temporary file"]);
    let lines = assert_found(dir.path(), &["collections/77", "collection directory"]);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(stray.exists() && tmp.exists() && orphan_dir.exists());
}

#[test]
fn a_missing_segment_file_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = build(dir.path());
    std::fs::remove_file(file(dir.path(), &m.segments[1].file)).expect("rm");
    assert_found(dir.path(), &[&m.segments[1].file, "missing"]);
}

#[test]
fn a_catalog_that_cannot_be_opened_is_a_report_naming_its_damaged_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path());
    // build() commits in one open, so one write-ahead log holds every commit.
    let log = std::fs::read_dir(dir.path().join("catalog"))
        .expect("ls catalog")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a write-ahead log");
    let len = std::fs::metadata(&log).expect("stat").len() as usize;
    flip(&log, len / 2);
    Database::open_read_only(dir.path()).expect_err("a damaged log refuses the open");
    let name = log
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let lines = assert_found(dir.path(), &["catalog", "damaged", &name]);
    assert_eq!(lines.len(), 1, "{lines:#?}");
}

#[test]
fn kept_text_of_a_document_the_id_map_lacks_is_reported_and_every_text_record_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path());
    edit_catalog(dir.path(), |b| {
        b.put_text(0, &ExternalId::Int(99), "a passage nobody can find")
            .expect("text");
    });
    assert_found(
        dir.path(),
        &[
            "kept text of document 99",
            "the id map has no such document",
        ],
    );
    // Texts of documents the id map has are read (decompressed) and pass.
    let catalog = Catalog::open(&dir.path().join("catalog"), false, false).expect("catalog");
    let mut batch = CatalogBatch::default();
    batch
        .put_text(0, &ExternalId::Int(5), "fine")
        .expect("text");
    catalog.commit(batch).expect("commit");
    drop(catalog);
    let report = tessera::verify(dir.path()).expect("verify");
    assert_eq!(report.checked.text_records, 2, "{:#?}", lines(&report));
}
