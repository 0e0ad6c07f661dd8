//! Databases already on disk: a frozen database of on-disk format 1, written before
//! originals existed (`tests/fixtures/format-v1`, see its README), must open, search and
//! answer exactly as the build that wrote it did.

use std::path::{Path, PathBuf};

use tessera::{Database, ExternalId, IngestOptions, Precision, SearchParams};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/format-v1")
}

/// A private copy of the frozen database: opening for writing may clean up, and the
/// fixture itself must never change.
fn copy_of_fixture(to: &Path) {
    tessera_tests::copy_dir(&fixture().join("db"), to);
}

fn queries() -> Vec<Vec<f32>> {
    let bytes = std::fs::read(fixture().join("queries.f32")).expect("queries");
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    values.chunks(32 * 16).map(<[f32]>::to_vec).collect()
}

/// `(query, id, score)` rows of a saved `tessera search --json` output.
fn expected(name: &str) -> Vec<(usize, String, f32)> {
    std::fs::read_to_string(fixture().join(name))
        .expect("expected results")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            (
                v["query"].as_u64().expect("query") as usize,
                v["id"].as_str().expect("id").to_owned(),
                v["score"].as_f64().expect("score") as f32,
            )
        })
        .collect()
}

fn check(db: &Database, params: &SearchParams, name: &str) {
    let coll = db.collection("docs").expect("collection");
    let want = expected(name);
    for (qi, q) in queries().iter().enumerate() {
        let got = coll.search(q, 5, params).expect("search");
        let rows: Vec<&(usize, String, f32)> = want.iter().filter(|r| r.0 == qi).collect();
        assert_eq!(got.len(), rows.len(), "{name} query {qi}");
        // Query x centroid scores are computed in 8-bit integers since the fixture was
        // written (kernels/src/int8.rs bounds their error): compressed scores move by less
        // than 0.1%, so documents whose scores were that close may trade places; every hit
        // must be a fixture hit with its score, and each rank's score must be the rank's.
        let tol = |s: f32| 1e-3 * s.abs().max(1.0);
        for (h, (_, _, score)) in got.iter().zip(&rows) {
            assert!(
                (h.score - score).abs() <= tol(*score),
                "{name} query {qi}: {} vs {score}",
                h.score
            );
            let fixture = rows
                .iter()
                .find(|r| ExternalId::Str(r.1.clone()) == h.id)
                .unwrap_or_else(|| panic!("{name} query {qi}: {} is not a fixture hit", h.id));
            assert!(
                (h.score - fixture.2).abs() <= tol(fixture.2),
                "{name} query {qi}: {} scores {} against {}",
                h.id,
                h.score,
                fixture.2
            );
        }
    }
}

#[test]
fn a_format_1_database_without_originals_opens_and_answers_as_when_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_of_fixture(dir.path());
    {
        let db = Database::open_read_only(dir.path()).expect("read-only open");
        let coll = db.collection("docs").expect("collection");
        let info = coll.info();
        assert_eq!((info.documents, info.segments), (38, 3));
        assert_eq!(
            info.config.originals,
            Precision::None,
            "written before originals"
        );
        assert_eq!(info.originals_bytes, 0);
        check(&db, &SearchParams::default(), "expected-default.jsonl");
        check(
            &db,
            &SearchParams::exhaustive(),
            "expected-exhaustive.jsonl",
        );
        // No originals: vectors are the decompressed approximation, one row per token.
        let v = coll
            .vectors(&ExternalId::Str("doc-000006".into()))
            .expect("vectors")
            .expect("present");
        assert!(!v.is_empty() && v.len().is_multiple_of(16));
        assert!(
            coll.vectors(&ExternalId::Str("doc-000005".into()))
                .expect("vectors")
                .is_none()
        );
    }
    // A writer opens it too, keeps every file, and can add to it: the collection stays
    // without originals (its recorded settings), and the old answers stand.
    let db = Database::open(dir.path()).expect("writer open");
    check(&db, &SearchParams::default(), "expected-default.jsonl");
    let coll = db.collection("docs").expect("collection");
    let q = &queries()[0];
    coll.ingest(
        &[tessera::Document::new("new-1", q[..4 * 16].to_vec())],
        &IngestOptions::default(),
    )
    .expect("ingest into an old collection");
    assert_eq!(coll.info().documents, 39);
    assert_eq!(coll.info().originals_bytes, 0);
}

#[test]
fn a_format_1_database_takes_filters_and_metadata_without_any_migration() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_of_fixture(dir.path());
    let q = &queries()[0];
    let ids = |hits: Vec<tessera::Hit>| -> Vec<String> {
        let mut v: Vec<String> = hits.into_iter().map(|h| h.id.to_string()).collect();
        v.sort();
        v
    };
    let allow = tessera::Filter::parse(r#"@id IN ("doc-000006", "doc-000005", "doc-000010")"#)
        .expect("parses");
    {
        let db = Database::open_read_only(dir.path()).expect("read-only open");
        let coll = db.collection("docs").expect("collection");
        // Ids work from the segments' own id lists; the deleted doc-000005 stays out.
        for p in [SearchParams::default(), SearchParams::exhaustive()] {
            let hits = coll
                .search(q, 10, &p.with_filter(allow.clone()))
                .expect("search");
            assert_eq!(ids(hits), ["doc-000006", "doc-000010"]);
        }
        // No document has metadata: a field filter is an error that says so.
        let err = coll
            .search(
                q,
                5,
                &SearchParams::default().with_filter(tessera::Filter::exists("lang")),
            )
            .expect_err("no fields");
        assert!(
            err.to_string()
                .contains("no document of the collection has metadata"),
            "{err}"
        );
    }
    // A writer adds a document with metadata and text to the old collection: filters and
    // hits see it, and so does the next open (the index is rebuilt from the catalog).
    {
        let db = Database::open(dir.path()).expect("writer open");
        let coll = db.collection("docs").expect("collection");
        coll.ingest(
            &[tessera::Document::new("new-1", q[..4 * 16].to_vec())
                .with_metadata(serde_json::json!({"lang": "en"}))
                .with_text("a new passage")],
            &IngestOptions::default(),
        )
        .expect("ingest");
    }
    let db = Database::open_read_only(dir.path()).expect("reopen");
    let coll = db.collection("docs").expect("collection");
    let p = SearchParams::default()
        .with_filter(tessera::Filter::eq("lang", "en"))
        .with_fields(tessera::HitFields {
            metadata: true,
            text: true,
        });
    let hits = coll.search(q, 5, &p).expect("search");
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].id, ExternalId::from("new-1"));
    assert_eq!(hits[0].text.as_deref(), Some("a new passage"));
}
