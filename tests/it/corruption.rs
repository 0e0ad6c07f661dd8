//! Damaged files are detected at open with an error naming the file; crash debris is
//! cleaned up.

use tessera::synthetic::{SyntheticCorpus, SyntheticSpec};
use tessera::{CollectionConfig, Database, IngestOptions};
use tessera_tests::documents;

fn build(dir: &std::path::Path) {
    let db = Database::open_or_create(dir).expect("create");
    let coll = db
        .create_collection("c", CollectionConfig::new(16))
        .expect("collection");
    let corpus = SyntheticCorpus::generate(&SyntheticSpec {
        n_docs: 40,
        dim: 16,
        min_tokens: 3,
        max_tokens: 12,
        n_clusters: 16,
        ..SyntheticSpec::default()
    });
    coll.ingest(&documents(&corpus), &IngestOptions::default())
        .expect("ingest");
}

fn segment_file(dir: &std::path::Path) -> std::path::PathBuf {
    let cdir = dir.join("collections").join("0");
    std::fs::read_dir(&cdir)
        .expect("ls")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "tsg"))
        .expect("a segment file")
}

#[test]
fn a_flipped_byte_in_a_segment_is_detected_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path());
    let seg = segment_file(dir.path());
    let mut bytes = std::fs::read(&seg).expect("read");
    let len = bytes.len();
    // The last byte always belongs to the last section (padding only precedes sections).
    bytes[len - 1] ^= 0x01;
    std::fs::write(&seg, &bytes).expect("write");
    let err = Database::open(dir.path()).expect_err("corruption must be detected");
    let msg = err.to_string();
    assert!(
        msg.contains("checksum") && msg.contains(&*seg.to_string_lossy()),
        "{msg}"
    );
}

#[test]
fn a_truncated_segment_is_detected_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path());
    let seg = segment_file(dir.path());
    let bytes = std::fs::read(&seg).expect("read");
    std::fs::write(&seg, &bytes[..bytes.len() - 10]).expect("write");
    let err = Database::open(dir.path()).expect_err("truncation must be detected");
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn crash_debris_is_removed_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path());
    let cdir = dir.path().join("collections").join("0");
    // What a crash leaves: a half-written temp file, and a published file whose commit never
    // reached the catalog.
    std::fs::write(cdir.join("seg-000099.tsg.tmp"), b"partial").expect("write");
    std::fs::copy(segment_file(dir.path()), cdir.join("seg-000098.tsg")).expect("copy");
    std::fs::create_dir_all(dir.path().join("collections").join("77")).expect("orphan dir");
    let db = Database::open(dir.path()).expect("open");
    assert_eq!(db.collection("c").expect("c").info().documents, 40);
    assert!(!cdir.join("seg-000099.tsg.tmp").exists());
    assert!(!cdir.join("seg-000098.tsg").exists());
    assert!(!dir.path().join("collections").join("77").exists());
}
