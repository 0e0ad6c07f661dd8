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
    // What a crash before the catalog write leaves: files under their temporary names, one
    // half-written, and the directory of a collection whose creation never committed.
    std::fs::write(cdir.join("seg-000099.tsg.tmp"), b"partial").expect("write");
    std::fs::copy(segment_file(dir.path()), cdir.join("seg-000098.tsg.tmp")).expect("copy");
    std::fs::write(cdir.join("vec-000098.tov.tmp"), b"partial").expect("write");
    std::fs::create_dir_all(dir.path().join("collections").join("77")).expect("orphan dir");
    let db = Database::open(dir.path()).expect("open");
    assert_eq!(db.collection("c").expect("c").info().documents, 40);
    assert!(!cdir.join("seg-000099.tsg.tmp").exists());
    assert!(!cdir.join("seg-000098.tsg.tmp").exists());
    assert!(!cdir.join("vec-000098.tov.tmp").exists());
    assert!(!dir.path().join("collections").join("77").exists());
}

#[test]
fn a_published_file_the_catalog_does_not_reference_refuses_the_open_and_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path());
    let cdir = dir.path().join("collections").join("0");
    // Only a commit that reached the catalog renames its files, so this one was published
    // by a commit the catalog has since lost.
    let stray = cdir.join("seg-000098.tsg");
    std::fs::copy(segment_file(dir.path()), &stray).expect("copy");
    for attempt in 0..2 {
        let err = Database::open(dir.path()).expect_err("lost commits must be reported");
        assert!(
            matches!(
                &err,
                tessera::Error::Storage(tessera_storage::Error::LostCommits { path, .. })
                    if *path == stray
            ),
            "attempt {attempt}: {err}"
        );
        assert!(
            stray.exists(),
            "attempt {attempt}: the evidence was deleted"
        );
    }
    // A reader is not a judge of debris: it opens and sees the catalog's state.
    let db = Database::open_read_only(dir.path()).expect("read-only open");
    assert_eq!(db.collection("c").expect("c").info().documents, 40);
}
