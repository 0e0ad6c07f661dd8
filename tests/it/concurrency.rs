//! Searches running while the writer commits see consistent snapshots.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tessera::synthetic::{SyntheticCorpus, SyntheticSpec};
use tessera::{CollectionConfig, Database, Document, ExternalId, IngestOptions, SearchParams};

#[test]
fn searches_during_ingest_see_whole_batches_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::open_or_create(dir.path()).expect("create");
    let coll = db
        .create_collection("c", CollectionConfig::new(16))
        .expect("collection");
    let corpus = SyntheticCorpus::generate(&SyntheticSpec {
        n_docs: 400,
        dim: 16,
        min_tokens: 4,
        max_tokens: 10,
        n_clusters: 32,
        ..SyntheticSpec::default()
    });
    const BATCH: usize = 40;
    let docs: Vec<Document> = (0..400)
        .map(|i| Document::new(i as u64, corpus.doc(i).to_vec()))
        .collect();
    coll.ingest(&docs[..BATCH], &IngestOptions::default())
        .expect("first batch");

    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let coll = coll.clone();
            let done = done.clone();
            let query = corpus.doc(r * 7).to_vec();
            std::thread::spawn(move || {
                let mut observed = 0;
                while !done.load(Ordering::SeqCst) || observed == 0 {
                    let snap = coll.snapshot();
                    let n = snap.documents() as usize;
                    assert_eq!(n % BATCH, 0, "a snapshot holds a partial batch: {n}");
                    let hits = snap
                        .search(&query, 1000, &SearchParams::exhaustive())
                        .expect("search");
                    assert_eq!(
                        hits.len(),
                        n,
                        "search saw a different set than its snapshot"
                    );
                    // Ids visible are exactly the first n.
                    assert!(
                        hits.iter()
                            .all(|h| matches!(h.id, ExternalId::Int(i) if (i as usize) < n))
                    );
                    observed += 1;
                }
                observed
            })
        })
        .collect();
    for chunk in docs[BATCH..].chunks(BATCH) {
        coll.ingest(chunk, &IngestOptions::default())
            .expect("ingest");
    }
    done.store(true, Ordering::SeqCst);
    for r in readers {
        assert!(r.join().expect("reader panicked") > 0);
    }
    assert_eq!(coll.info().documents, 400);
}

#[test]
fn batch_search_equals_one_by_one_searches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::open_or_create(dir.path()).expect("create");
    let coll = db
        .create_collection("c", CollectionConfig::new(16))
        .expect("collection");
    let corpus = SyntheticCorpus::generate(&SyntheticSpec {
        n_docs: 300,
        dim: 16,
        min_tokens: 4,
        max_tokens: 20,
        n_clusters: 32,
        ..SyntheticSpec::default()
    });
    let docs: Vec<Document> = (0..300)
        .map(|i| Document::new(i as u64, corpus.doc(i).to_vec()))
        .collect();
    coll.ingest(&docs, &IngestOptions::default())
        .expect("ingest");
    let queries = corpus.queries(24, 8, 0.3, 4);
    let params = SearchParams::default();
    let batch = coll.search_batch(&queries, 7, &params).expect("batch");
    assert_eq!(batch.len(), queries.len());
    for (q, hits) in queries.iter().zip(&batch) {
        assert_eq!(&coll.search(q, 7, &params).expect("search"), hits);
    }
}
