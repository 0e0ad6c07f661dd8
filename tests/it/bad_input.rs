//! Every invalid batch is rejected with an error naming the document, and commits nothing.

use tessera::{CollectionConfig, Database, Document, Error, ExternalId, IngestOptions};

fn setup() -> (tempfile::TempDir, Database, tessera::Collection) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::open_or_create(dir.path()).expect("create");
    let coll = db
        .create_collection("c", CollectionConfig::new(4).with_max_tokens_per_doc(8))
        .expect("collection");
    coll.ingest(
        &[Document::new("ok-0", vec![0.5; 12])],
        &IngestOptions::default(),
    )
    .expect("seed document");
    (dir, db, coll)
}

fn files_in(dir: &std::path::Path) -> usize {
    walk(dir)
}

fn walk(p: &std::path::Path) -> usize {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        walk(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Asserts `batch` fails with an error mentioning `needle` and leaves the collection as it was.
fn rejected(batch: Vec<Document>, needle: &str) -> Error {
    let (dir, db, coll) = setup();
    let before = coll.info();
    let data_files = files_in(&dir.path().join("collections"));
    let err = coll
        .ingest(&batch, &IngestOptions::default())
        .expect_err("must be rejected");
    let msg = err.to_string();
    assert!(
        msg.contains(needle),
        "error {msg:?} should mention {needle:?}"
    );
    assert!(msg.contains("nothing committed"), "{msg}");
    assert_eq!(coll.info(), before);
    assert_eq!(
        files_in(&dir.path().join("collections")),
        data_files,
        "no files left behind"
    );
    for d in &batch {
        if d.id != ExternalId::from("ok-0") {
            assert!(
                !coll.contains(&d.id).expect("contains"),
                "{} must not be committed",
                d.id
            );
        }
    }
    drop(db);
    err
}

fn good(id: &str) -> Document {
    Document::new(id, vec![0.25; 8])
}

#[test]
fn wrong_dimension_is_rejected_naming_the_document() {
    let err = rejected(
        vec![good("a"), Document::new("bad-dim", vec![0.1; 6])],
        "bad-dim",
    );
    assert!(err.to_string().contains("4-dimensional"));
    assert!(matches!(err, Error::InvalidDocument { position: 1, .. }));
}

#[test]
fn nan_is_rejected_naming_token_and_dimension() {
    let mut v = vec![0.1; 8];
    v[6] = f32::NAN;
    let err = rejected(vec![good("a"), Document::new("has-nan", v)], "has-nan");
    assert!(
        err.to_string().contains("token 1 dimension 2 is NaN"),
        "{err}"
    );
}

#[test]
fn infinity_is_rejected() {
    let mut v = vec![0.1; 8];
    v[0] = f32::INFINITY;
    rejected(vec![Document::new("has-inf", v), good("a")], "has-inf");
}

#[test]
fn zero_rows_are_rejected() {
    rejected(
        vec![good("a"), Document::new("empty", vec![])],
        "no token vectors",
    );
}

#[test]
fn too_many_rows_are_rejected() {
    let err = rejected(vec![Document::new("long", vec![0.1; 4 * 9])], "limit of 8");
    assert!(err.to_string().contains("long"));
}

#[test]
fn duplicate_ids_within_a_batch_are_rejected() {
    let err = rejected(vec![good("x"), good("y"), good("x")], "appears twice");
    assert!(matches!(
        err,
        Error::DuplicateId {
            first: 0,
            second: 2,
            ..
        }
    ));
}

#[test]
fn malformed_queries_are_rejected() {
    let (_dir, _db, coll) = setup();
    let p = tessera::SearchParams::default();
    for (q, needle) in [
        (vec![], "no vectors"),
        (vec![0.1; 5], "4-dimensional"),
        (vec![f32::NAN, 0.0, 0.0, 0.0], "NaN"),
    ] {
        let err = coll.search(&q, 3, &p).expect_err("bad query");
        assert!(err.to_string().contains(needle), "{err}");
    }
}
