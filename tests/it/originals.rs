//! Originals and the refine stage: the vectors given are the vectors returned, the refined
//! top-k is the exact top-k, and collections without originals behave as before.

use tessera::synthetic::{SyntheticCorpus, SyntheticSpec};
use tessera::{
    CollectionConfig, Database, Document, ExternalId, IngestOptions, Precision, SearchParams,
};
use tessera_tests::{documents, recall};

fn corpus(n: usize, dim: usize, seed: u64) -> SyntheticCorpus {
    SyntheticCorpus::generate(&SyntheticSpec {
        n_docs: n,
        dim,
        min_tokens: 8,
        max_tokens: 48,
        n_clusters: 256,
        clusters_per_doc: 4,
        noise: 0.4,
        seed,
        ..SyntheticSpec::default()
    })
}

fn f16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
}

/// Every document of `c` as f16 originals keep it, widened back.
fn stored_f16(c: &SyntheticCorpus) -> Vec<Vec<f32>> {
    (0..c.n_docs()).map(|i| f16(c.doc(i))).collect()
}

/// Exact top-`k` (ids and scores) by plain MaxSim over `docs`, ties by id.
fn brute_force(docs: &[Vec<f32>], query: &[f32], dim: usize, k: usize) -> Vec<(u64, f32)> {
    let mut scored: Vec<(u64, f32)> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| (i as u64, tessera_kernels::reference::maxsim(query, d, dim)))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.truncate(k);
    scored
}

fn collection(
    dir: &std::path::Path,
    cfg: CollectionConfig,
    docs: &[Document],
) -> tessera::Collection {
    let db = Database::open_or_create(dir).expect("create");
    let coll = db.create_collection("c", cfg).expect("collection");
    coll.ingest(docs, &IngestOptions::default())
        .expect("ingest");
    coll
}

#[test]
fn vectors_returns_exactly_the_stored_precision_of_the_ingested_vectors() {
    let c = corpus(60, 24, 3);
    let docs = documents(&c);
    for (precision, convert) in [
        (Precision::F16, f16 as fn(&[f32]) -> Vec<f32>),
        (Precision::Bf16, |v: &[f32]| {
            v.iter()
                .map(|&x| half::bf16::from_f32(x).to_f32())
                .collect()
        }),
        (Precision::F32, |v: &[f32]| v.to_vec()),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let coll = collection(
            dir.path(),
            CollectionConfig::new(24).originals(precision),
            &docs,
        );
        for i in [0usize, 17, 59] {
            let got = coll
                .vectors(&ExternalId::Int(i as u64))
                .expect("vectors")
                .expect("present");
            assert_eq!(got, convert(c.doc(i)), "{precision} document {i}");
        }
        // And after reopening, from the file alone.
        drop(coll);
        let db = Database::open(dir.path()).expect("reopen");
        let coll = db.collection("c").expect("collection");
        let got = coll
            .vectors(&ExternalId::Int(5))
            .expect("vectors")
            .expect("present");
        assert_eq!(got, convert(c.doc(5)), "{precision} after reopen");
    }
}

#[test]
fn a_collection_without_originals_searches_as_refine_off_and_returns_the_approximation() {
    let c = corpus(400, 32, 4);
    let docs = documents(&c);
    let (d1, d2) = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    let none = collection(
        d1.path(),
        CollectionConfig::new(32).originals(Precision::None),
        &docs,
    );
    let kept = collection(d2.path(), CollectionConfig::new(32), &docs);
    assert_eq!(none.info().originals_bytes, 0);
    assert!(kept.info().originals_bytes > 0);
    let no_tov = std::fs::read_dir(d1.path().join("collections/0"))
        .expect("dir")
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().ends_with(".tov"));
    assert!(no_tov, "originals(None) writes no originals files");
    for q in c.queries(10, 16, 0.3, 9) {
        // Same data and seed: the same codec, so the compressed pipeline is identical.
        let a = none
            .search(&q, 10, &SearchParams::default())
            .expect("search");
        let b = kept
            .search(&q, 10, &SearchParams::default().with_n_refine(0))
            .expect("search");
        assert_eq!(a, b);
    }
    let approx = none
        .vectors(&ExternalId::Int(3))
        .expect("vectors")
        .expect("present");
    assert_eq!(approx.len(), c.doc(3).len());
    assert_ne!(
        approx,
        f16(c.doc(3)),
        "without originals: the decompressed codes"
    );
}

#[test]
fn exhaustive_search_with_originals_equals_brute_force_over_them() {
    let dim = 32;
    let c = corpus(300, dim, 5);
    let dir = tempfile::tempdir().expect("tempdir");
    let coll = collection(
        dir.path(),
        CollectionConfig::new(dim as u32),
        &documents(&c),
    );
    let stored = stored_f16(&c);
    for q in c.queries(8, 12, 0.3, 1) {
        let want = brute_force(&stored, &q, dim, 20);
        let got = coll
            .search(&q, 20, &SearchParams::exhaustive())
            .expect("search");
        assert_eq!(got.len(), 20);
        for (g, (id, score)) in got.iter().zip(&want) {
            assert_eq!(g.id, ExternalId::Int(*id));
            assert!(
                (g.score - score).abs() <= 1e-4 * score.abs().max(1.0),
                "{g:?} vs {score}"
            );
        }
    }
}

#[test]
fn default_search_returns_the_exact_top_10_where_compressed_scores_alone_do_not() {
    let dim = 64;
    let c = corpus(3000, dim, 6);
    let dir = tempfile::tempdir().expect("tempdir");
    let coll = collection(
        dir.path(),
        CollectionConfig::new(dim as u32),
        &documents(&c),
    );
    let stored = stored_f16(&c);
    let queries = c.queries(40, 32, 0.3, 2);
    let (mut refined, mut compressed) = (0.0, 0.0);
    for q in &queries {
        let truth: Vec<u64> = brute_force(&stored, q, dim, 10)
            .iter()
            .map(|t| t.0)
            .collect();
        let ids = |p: &SearchParams| -> Vec<ExternalId> {
            coll.search(q, 10, p)
                .expect("search")
                .into_iter()
                .map(|h| h.id)
                .collect()
        };
        refined += recall(&ids(&SearchParams::default()), &truth);
        compressed += recall(&ids(&SearchParams::default().with_n_refine(0)), &truth);
    }
    let (refined, compressed) = (refined / 40.0, compressed / 40.0);
    println!("recall@10 against exact MaxSim: refine {refined:.3}, refine off {compressed:.3}");
    assert!(refined >= 0.99, "refined recall@10 {refined:.3}");
    assert!(refined > compressed, "refine must add what the codec loses");
}

#[test]
fn refine_statistics_count_the_candidates_and_bytes_read() {
    let dim = 16;
    let c = corpus(500, dim, 7);
    let dir = tempfile::tempdir().expect("tempdir");
    let coll = collection(
        dir.path(),
        CollectionConfig::new(dim as u32),
        &documents(&c),
    );
    let q = &c.queries(1, 8, 0.3, 3)[0];
    let (_, stats) = coll
        .snapshot()
        .search_with_stats(q, 5, &SearchParams::default().with_n_refine(30))
        .expect("search");
    assert_eq!(stats.refined, 30);
    assert!(stats.refine_bytes >= 30 * 8 * dim as u64 * 2, "{stats:?}");
    let (_, off) = coll
        .snapshot()
        .search_with_stats(q, 5, &SearchParams::default().with_n_refine(0))
        .expect("search");
    assert_eq!((off.refined, off.refine_bytes), (0, 0));
}

#[test]
fn asking_for_more_hits_than_the_candidates_returns_every_live_document() {
    let c = corpus(60, 16, 8);
    let dir = tempfile::tempdir().expect("tempdir");
    let coll = collection(dir.path(), CollectionConfig::new(16), &documents(&c));
    coll.delete(&[ExternalId::Int(4)]).expect("delete");
    let q = &c.queries(1, 4, 0.3, 4)[0];
    let hits = coll
        .search(q, 5000, &SearchParams::default().with_nprobe(1))
        .expect("search");
    assert_eq!(hits.len(), 59);
    assert!(hits.iter().all(|h| h.id != ExternalId::Int(4)));
}

#[test]
fn a_damaged_originals_file_fails_the_search_naming_file_and_document() {
    let dim = 16;
    let c = corpus(50, dim, 9);
    let dir = tempfile::tempdir().expect("tempdir");
    let coll_dir = dir.path().join("collections/0");
    {
        collection(
            dir.path(),
            CollectionConfig::new(dim as u32),
            &documents(&c),
        );
    }
    let tov = std::fs::read_dir(&coll_dir)
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "tov"))
        .expect("an originals file");
    let mut bytes = std::fs::read(&tov).expect("read");
    let n = bytes.len();
    // Every document's vectors are damaged: one byte in each 32 of the vector section, which
    // ends the file (every document has at least 8 tokens of 32 bytes).
    for i in (n - c.n_tokens() * dim * 2..n).step_by(32) {
        bytes[i] ^= 0x10;
    }
    std::fs::write(&tov, &bytes).expect("write");
    let db = Database::open(dir.path()).expect("structure is intact: opens");
    let coll = db.collection("c").expect("collection");
    let q = &c.queries(1, 4, 0.3, 5)[0];
    let err = coll
        .search(q, 5, &SearchParams::default())
        .expect_err("damaged originals are never served");
    let msg = err.to_string();
    assert!(
        msg.contains(".tov") && msg.contains("fails its checksum"),
        "{msg}"
    );
    // Refine off reads no originals: the codes still answer.
    assert_eq!(
        coll.search(q, 5, &SearchParams::default().with_n_refine(0))
            .expect("codes are intact")
            .len(),
        5
    );
}

#[test]
fn a_temporary_originals_file_no_manifest_references_is_removed_at_writer_open() {
    let c = corpus(20, 8, 10);
    let dir = tempfile::tempdir().expect("tempdir");
    {
        collection(dir.path(), CollectionConfig::new(8), &documents(&c));
    }
    let stray = dir.path().join("collections/0/vec-000099.tov.tmp");
    std::fs::write(&stray, b"debris of a crashed commit").expect("write");
    let db = Database::open(dir.path()).expect("open");
    assert!(!stray.exists(), "unreferenced originals are debris");
    let coll = db.collection("c").expect("collection");
    assert!(coll.info().originals_bytes > 0, "referenced originals stay");
}

#[test]
fn a_value_f16_originals_cannot_hold_is_refused_naming_the_document_and_nothing_is_committed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::open_or_create(dir.path()).expect("create");
    let coll = db
        .create_collection("c", CollectionConfig::new(4))
        .expect("collection");
    let good = Document::new(1u64, vec![0.5; 8]);
    let mut big = vec![0.25f32; 8];
    big[6] = 70_000.0;
    let err = coll
        .ingest(
            &[good.clone(), Document::new(2u64, big.clone())],
            &IngestOptions::default(),
        )
        .expect_err("70,000 overflows f16");
    let msg = err.to_string();
    assert!(
        msg.contains("token 1 dimension 2") && msg.contains("originals bf16 or f32"),
        "{msg}"
    );
    assert_eq!(coll.info().documents, 0, "the batch is refused whole");
    // The same value fits f32 originals exactly.
    let wide = db
        .create_collection("w", CollectionConfig::new(4).originals(Precision::F32))
        .expect("collection");
    wide.ingest(
        &[good, Document::new(2u64, big.clone())],
        &IngestOptions::default(),
    )
    .expect("f32 originals hold it");
    assert_eq!(
        wide.vectors(&ExternalId::Int(2)).expect("vectors"),
        Some(big)
    );
}
