//! Intra-query parallelism (`SearchParams::threads`): splitting a search's per-document
//! stages among workers must not change a single hit or a single bit of a score.

use tessera::{ExternalId, Filter, Hit, SearchParams};
use tessera_tests::{small_collection, small_corpus};

fn bits(hits: &[Hit]) -> Vec<(ExternalId, u32)> {
    hits.iter()
        .map(|h| (h.id.clone(), h.score.to_bits()))
        .collect()
}

#[test]
fn every_thread_count_returns_the_one_thread_hits_bit_for_bit() {
    let corpus = small_corpus(1500, 40, 24);
    let dir = tempfile::tempdir().expect("tempdir");
    // Two ingests: two segments, so candidates come from both.
    let (_db, coll) = small_collection(dir.path(), &corpus, 0..900);
    coll.ingest(
        &tessera_tests::documents_in(&corpus, 900..1500),
        &tessera::IngestOptions::default(),
    )
    .expect("ingest");
    coll.delete(&[ExternalId::Int(3), ExternalId::Int(1000)])
        .expect("delete");
    // Every path of the search: the default pipeline, a fixed deep exact stage, refine off,
    // exhaustive, and filters answered exactly over few matches and through the postings.
    let few: Vec<ExternalId> = (0..200u64).step_by(7).map(ExternalId::Int).collect();
    let many: Vec<ExternalId> = (0..1500u64).step_by(2).map(ExternalId::Int).collect();
    let settings = [
        SearchParams::default(),
        SearchParams::default().with_n_rerank(700),
        SearchParams::default().with_n_refine(0),
        SearchParams::exhaustive(),
        SearchParams::default().with_filter(Filter::ids(few)),
        SearchParams::default()
            .with_filter(Filter::ids(many))
            .with_filter_exact(0),
    ];
    let mut compared = 0;
    for (si, params) in settings.iter().enumerate() {
        for (qi, q) in corpus.queries(6, 32, 0.3, 11).iter().enumerate() {
            for k in [1, 10, 100] {
                let one = coll.search(q, k, params).expect("search");
                assert!(!one.is_empty());
                for threads in [0, 2, 3, 8] {
                    let p = params.clone().with_threads(threads);
                    let got = coll.search(q, k, &p).expect("search");
                    assert_eq!(
                        bits(&got),
                        bits(&one),
                        "setting {si}, query {qi}, k {k}, threads {threads}"
                    );
                    compared += 1;
                }
            }
        }
    }
    assert_eq!(compared, 6 * 6 * 3 * 4);
}
