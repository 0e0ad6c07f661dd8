//! Round trip, reopen, delete, duplicate ids, upsert, drop.

use tessera::synthetic::{SyntheticCorpus, SyntheticSpec};
use tessera::{
    CollectionConfig, Database, Document, Error, ExternalId, IngestOptions, SearchParams,
};
use tessera_tests::documents;

fn small_corpus(n: usize, seed: u64) -> SyntheticCorpus {
    SyntheticCorpus::generate(&SyntheticSpec {
        n_docs: n,
        dim: 32,
        min_tokens: 4,
        max_tokens: 24,
        n_clusters: 64,
        seed,
        ..SyntheticSpec::default()
    })
}

#[test]
fn each_document_is_its_own_best_match_after_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::open_or_create(dir.path()).expect("create");
    let coll = db
        .create_collection("c", CollectionConfig::new(32))
        .expect("collection");
    let corpus = small_corpus(200, 1);
    let report = coll
        .ingest(&documents(&corpus), &IngestOptions::default())
        .expect("ingest");
    assert_eq!(report.documents, 200);
    assert!(report.trained_codec);
    assert_eq!(coll.info().documents, 200);
    for i in (0..200).step_by(17) {
        let hits = coll
            .search(corpus.doc(i), 3, &SearchParams::default())
            .expect("search");
        assert_eq!(hits[0].id, ExternalId::Int(i as u64), "doc {i}");
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    }
}

#[test]
fn everything_survives_close_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let corpus = small_corpus(150, 2);
    let docs = documents(&corpus);
    let query = corpus.doc(7).to_vec();
    let before = {
        let db = Database::open_or_create(dir.path()).expect("create");
        let coll = db
            .create_collection("c", CollectionConfig::new(32).with_nbits(4))
            .expect("collection");
        coll.ingest(&docs[..100], &IngestOptions::default())
            .expect("ingest 1");
        coll.ingest(
            &[
                docs[100..].to_vec(),
                vec![
                    Document::new("meta-doc", corpus.doc(3).to_vec())
                        .with_metadata(serde_json::json!({"title": "x"})),
                ],
            ]
            .concat(),
            &IngestOptions::default(),
        )
        .expect("ingest 2");
        coll.delete(&[ExternalId::Int(5)]).expect("delete");
        coll.search(&query, 10, &SearchParams::default())
            .expect("search")
    };
    let db = Database::open(dir.path()).expect("reopen");
    assert_eq!(db.collection_names(), vec!["c".to_string()]);
    let coll = db.collection("c").expect("collection");
    let info = coll.info();
    assert_eq!(info.documents, 150);
    assert_eq!(info.segments, 2);
    assert_eq!(info.config.nbits, 4);
    assert_eq!(
        coll.search(&query, 10, &SearchParams::default())
            .expect("search"),
        before
    );
    assert_eq!(
        coll.metadata(&ExternalId::from("meta-doc")).expect("meta"),
        Some(serde_json::json!({"title": "x"}))
    );
    assert!(!coll.contains(&ExternalId::Int(5)).expect("contains"));
}

#[test]
fn deleted_documents_never_come_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let corpus = small_corpus(120, 3);
    let docs = documents(&corpus);
    let deleted: Vec<ExternalId> = (0..120).step_by(3).map(ExternalId::Int).collect();
    {
        let db = Database::open_or_create(dir.path()).expect("create");
        let coll = db
            .create_collection("c", CollectionConfig::new(32))
            .expect("collection");
        coll.ingest(&docs, &IngestOptions::default())
            .expect("ingest");
        let report = coll
            .delete(&[deleted.clone(), vec![ExternalId::from("nope")]].concat())
            .expect("delete");
        assert_eq!(report.deleted, deleted.len());
        assert_eq!(report.missing, vec![ExternalId::from("nope")]);
        let check = |coll: &tessera::Collection| {
            for i in (0..120).step_by(3) {
                let hits = coll
                    .search(corpus.doc(i), 120, &SearchParams::exhaustive())
                    .expect("search");
                assert!(hits.iter().all(|h| !deleted.contains(&h.id)));
                assert_eq!(hits.len(), 120 - deleted.len());
            }
        };
        check(&coll);
        // Adding other documents must not resurrect anything.
        let more = small_corpus(10, 33);
        let extra: Vec<Document> = (0..10)
            .map(|i| Document::new(1000 + i as u64, more.doc(i).to_vec()))
            .collect();
        coll.ingest(&extra, &IngestOptions::default())
            .expect("ingest more");
        for i in (0..120).step_by(6) {
            let hits = coll
                .search(corpus.doc(i), 200, &SearchParams::exhaustive())
                .expect("search");
            assert!(hits.iter().all(|h| !deleted.contains(&h.id)));
        }
    }
    let db = Database::open(dir.path()).expect("reopen");
    let coll = db.collection("c").expect("collection");
    assert_eq!(coll.info().documents, (120 - deleted.len() + 10) as u64);
    for i in (0..120).step_by(5) {
        let hits = coll
            .search(corpus.doc(i), 200, &SearchParams::exhaustive())
            .expect("search");
        assert!(hits.iter().all(|h| !deleted.contains(&h.id)));
    }
    // A deleted id can be ingested again as a new document.
    coll.ingest(
        &[Document::new(0u64, corpus.doc(0).to_vec())],
        &IngestOptions::default(),
    )
    .expect("re-add");
    assert!(coll.contains(&ExternalId::Int(0)).expect("contains"));
}

#[test]
fn existing_ids_are_rejected_unless_upserting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::open_or_create(dir.path()).expect("create");
    let coll = db
        .create_collection("c", CollectionConfig::new(32))
        .expect("collection");
    let corpus = small_corpus(50, 4);
    coll.ingest(&documents(&corpus)[..40], &IngestOptions::default())
        .expect("ingest");
    let batch = documents(&corpus)[35..].to_vec();
    let err = coll
        .ingest(&batch, &IngestOptions::default())
        .expect_err("conflict");
    assert!(
        matches!(err, Error::IdExists { ref id, .. } if *id == ExternalId::Int(35)),
        "{err}"
    );
    assert_eq!(coll.info().documents, 40);
    assert!(!coll.contains(&ExternalId::Int(45)).expect("contains"));

    // Upsert: document 0 now carries document 49's vectors.
    let replaced = coll
        .ingest(
            &[Document::new(0u64, corpus.doc(49).to_vec())],
            &IngestOptions::upsert(),
        )
        .expect("upsert");
    assert_eq!(replaced.replaced, 1);
    assert_eq!(coll.info().documents, 40);
    let hits = coll
        .search(corpus.doc(49), 1, &SearchParams::exhaustive())
        .expect("search");
    assert_eq!(hits[0].id, ExternalId::Int(0));
    let all = coll
        .search(corpus.doc(0), 100, &SearchParams::exhaustive())
        .expect("search");
    assert_eq!(all.iter().filter(|h| h.id == ExternalId::Int(0)).count(), 1);
}

#[test]
fn collections_are_listed_dropped_and_independent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::open_or_create(dir.path()).expect("create");
    let a = db
        .create_collection("a", CollectionConfig::new(32))
        .expect("a");
    db.create_collection("b", CollectionConfig::new(8).with_nbits(1))
        .expect("b");
    assert!(matches!(
        db.create_collection("a", CollectionConfig::new(32)),
        Err(Error::CollectionExists(_))
    ));
    assert!(matches!(
        db.create_collection("bad", CollectionConfig::new(0)),
        Err(Error::InvalidConfig { .. })
    ));
    assert!(matches!(
        db.create_collection("bad", CollectionConfig::new(8).with_nbits(3)),
        Err(Error::InvalidConfig { .. })
    ));
    let corpus = small_corpus(30, 5);
    a.ingest(&documents(&corpus), &IngestOptions::default())
        .expect("ingest");
    assert_eq!(
        db.collection_names(),
        vec!["a".to_string(), "b".to_string()]
    );
    db.drop_collection("a").expect("drop");
    assert!(matches!(
        a.search(corpus.doc(0), 1, &SearchParams::default()),
        Err(Error::CollectionNotFound(_))
    ));
    assert!(matches!(
        db.collection("a"),
        Err(Error::CollectionNotFound(_))
    ));
    // The name can be reused, starting empty.
    let a2 = db
        .create_collection("a", CollectionConfig::new(32))
        .expect("a again");
    assert_eq!(a2.info().documents, 0);
    drop((a, a2, db));
    let db = Database::open(dir.path()).expect("reopen");
    assert_eq!(
        db.collection_names(),
        vec!["a".to_string(), "b".to_string()]
    );
    assert_eq!(db.collection("a").expect("a").info().documents, 0);
}

#[test]
fn second_writer_is_refused_with_a_locked_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::open_or_create(dir.path()).expect("create");
    let err = Database::open(dir.path()).expect_err("second writer");
    assert!(err.to_string().contains("locked"), "{err}");
    // Readers are welcome while the writer holds the lock.
    Database::open_read_only(dir.path()).expect("reader");
    // And from another process: run this test binary's helper test as a child.
    let out = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "lifecycle::lock_probe_child",
            "--include-ignored",
            "--nocapture",
        ])
        .env("TESSERA_LOCK_PROBE", dir.path())
        .output()
        .expect("spawn child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("LOCK-PROBE: locked"),
        "child said: {stdout}"
    );
    drop(db);
    // A process that another test of this binary is spawning at this moment holds a copy of
    // the lock's descriptor from its fork until its exec closes it, and with it the lock:
    // allow that moment to pass.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match Database::open(dir.path()) {
            Ok(_) => break,
            Err(e) if e.to_string().contains("locked") && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("writer after release: {e}"),
        }
    }
}

/// Child half of `second_writer_is_refused_with_a_locked_error`; does nothing when run alone.
#[test]
#[ignore = "helper run as a child process by second_writer_is_refused_with_a_locked_error"]
fn lock_probe_child() {
    if let Some(path) = std::env::var_os("TESSERA_LOCK_PROBE") {
        match Database::open(&path) {
            Err(e) if e.to_string().contains("locked") => println!("LOCK-PROBE: locked"),
            Err(e) => println!("LOCK-PROBE: other error {e}"),
            Ok(_) => println!("LOCK-PROBE: opened"),
        }
    }
}

#[test]
fn read_only_handles_refuse_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    Database::open_or_create(dir.path())
        .expect("create")
        .create_collection("c", CollectionConfig::new(4))
        .expect("collection");
    let ro = Database::open_read_only(dir.path()).expect("ro");
    let coll = ro.collection("c").expect("c");
    assert!(matches!(
        coll.ingest(
            &[Document::new(1u64, vec![1.0; 4])],
            &IngestOptions::default()
        ),
        Err(Error::ReadOnly(_))
    ));
    assert!(matches!(
        Database::open(dir.path().join("missing")),
        Err(Error::NotADatabase { .. })
    ));
}

fn model(name: &str, hash: &str, path: &str) -> tessera::ModelRecord {
    tessera::ModelRecord {
        name: name.into(),
        hash: hash.into(),
        path: Some(path.into()),
    }
}

#[test]
fn first_model_batch_records_the_model_and_another_model_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let corpus = small_corpus(60, 5);
    let docs = documents(&corpus);
    let a = model("minilm", "aaaa", "/models/a");
    {
        let db = Database::open_or_create(dir.path()).expect("create");
        let coll = db
            .create_collection("c", CollectionConfig::new(32))
            .expect("collection");
        assert_eq!(coll.model().expect("model"), None);
        coll.ingest(&docs[..20], &IngestOptions::default().with_model(a.clone()))
            .expect("first batch");
        assert_eq!(coll.model().expect("model"), Some(a.clone()));
        let err = coll
            .ingest(
                &docs[20..40],
                &IngestOptions::default().with_model(model("other", "bbbb", "/models/b")),
            )
            .expect_err("another model must be rejected");
        assert!(matches!(err, Error::ModelMismatch { .. }), "{err}");
        assert!(err.to_string().contains("minilm"), "{err}");
        assert_eq!(
            coll.info().documents,
            20,
            "the rejected batch committed nothing"
        );
        // The same model from another directory is accepted and moves the path hint.
        let moved = model("minilm", "aaaa", "/elsewhere/a");
        coll.ingest(&docs[20..40], &IngestOptions::default().with_model(moved))
            .expect("same model");
        // Batches without a model (vectors from elsewhere) leave the record alone.
        coll.ingest(&docs[40..], &IngestOptions::default())
            .expect("vectors");
    }
    let db = Database::open_read_only(dir.path()).expect("reopen");
    let coll = db.collection("c").expect("collection");
    let info = coll.info();
    assert_eq!(info.documents, 60);
    let rec = info.model.expect("the model survives reopening");
    assert_eq!(rec.hash, "aaaa");
    assert_eq!(rec.path.as_deref(), Some("/elsewhere/a"));
}
