//! Shared helpers for Tessera's integration tests: corpora, ground truth, recall.

use tessera::synthetic::{SyntheticCorpus, SyntheticSpec};
use tessera::{Collection, CollectionConfig, Database, Document, ExternalId, IngestOptions};

/// Documents of a synthetic corpus with ids `0..n` (as integers).
pub fn documents(corpus: &SyntheticCorpus) -> Vec<Document> {
    (0..corpus.n_docs())
        .map(|i| Document::new(i as u64, corpus.doc(i).to_vec()))
        .collect()
}

/// Exact top-`k` by full-precision MaxSim over the raw vectors (plain reference code),
/// ties broken by id.
pub fn exact_top_k(corpus: &SyntheticCorpus, query: &[f32], k: usize) -> Vec<u64> {
    let mut scored: Vec<(f32, u64)> = (0..corpus.n_docs())
        .map(|i| {
            (
                tessera_kernels::reference::maxsim(query, corpus.doc(i), corpus.dim),
                i as u64,
            )
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().take(k).map(|(_, i)| i).collect()
}

/// Fraction of `truth` found in `got`.
pub fn recall(got: &[ExternalId], truth: &[u64]) -> f64 {
    if truth.is_empty() {
        return 1.0;
    }
    let hits = truth
        .iter()
        .filter(|t| got.contains(&ExternalId::Int(**t)))
        .count();
    hits as f64 / truth.len() as f64
}

/// A small corpus of 16-dimensional documents of 3 to `max_tokens` tokens from `n_clusters`
/// clusters: what the durability tests ingest.
pub fn small_corpus(n_docs: usize, max_tokens: usize, n_clusters: usize) -> SyntheticCorpus {
    SyntheticCorpus::generate(&SyntheticSpec {
        n_docs,
        dim: 16,
        min_tokens: 3,
        max_tokens,
        n_clusters,
        ..SyntheticSpec::default()
    })
}

/// Documents `range` of `corpus`, each with its index as id.
pub fn documents_in(corpus: &SyntheticCorpus, range: std::ops::Range<usize>) -> Vec<Document> {
    range
        .map(|i| Document::new(i as u64, corpus.doc(i).to_vec()))
        .collect()
}

/// Copies the directory tree `from` to `to` (files and directories only): a private copy of a
/// database to damage or of a fixture to open for writing.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("ls").flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// Opens (or creates) the database at `dir`, takes its 16-dimensional collection `c` (created
/// when missing) and ingests documents `range` of `corpus` into it, acknowledged.
pub fn small_collection(
    dir: &std::path::Path,
    corpus: &SyntheticCorpus,
    range: std::ops::Range<usize>,
) -> (Database, Collection) {
    let db = Database::open_or_create(dir).expect("open");
    let coll = match db.collection("c") {
        Ok(coll) => coll,
        // The commit-protocol tests count each ingest's files: no automatic re-training
        // inside an ingest (its own failpoint and crash tests are in `merges.rs`).
        Err(_) => db
            .create_collection(
                "c",
                CollectionConfig::new(16).with_merge_policy(tessera::MergePolicy {
                    retrain: false,
                    ..tessera::MergePolicy::default()
                }),
            )
            .expect("collection"),
    };
    coll.ingest(&documents_in(corpus, range), &IngestOptions::default())
        .expect("ingest");
    (db, coll)
}
