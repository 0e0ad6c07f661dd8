//! Issue 14, against brute-force models: rerank-only is exact MaxSim of the given ids, a
//! diverse top-k is the plain rule applied to the exhaustive ranking, and explanations sum
//! to the score and pick each query token's argmax.

use tessera::synthetic::{SyntheticCorpus, SyntheticSpec};
use tessera::{
    Collection, CollectionConfig, Database, Diversity, Error, ExternalId, Hit, IngestOptions,
    Precision, SearchParams,
};
use tessera_kernels::reference::{dot, maxsim};
use tessera_tests::documents;

const DIM: usize = 32;

/// Tight clusters (one per document, little noise): documents of a cluster are
/// near-duplicates of each other, which is what diversity must skip.
fn clustered(n_docs: usize, n_clusters: usize, seed: u64) -> SyntheticCorpus {
    SyntheticCorpus::generate(&SyntheticSpec {
        n_docs,
        dim: DIM,
        min_tokens: 4,
        max_tokens: 24,
        n_clusters,
        clusters_per_doc: 1,
        noise: 0.3,
        zipf_exponent: 0.0,
        seed,
        ..SyntheticSpec::default()
    })
}

fn collection(dir: &std::path::Path, c: &SyntheticCorpus, precision: Precision) -> Collection {
    let db = Database::open_or_create(dir).expect("open");
    let coll = db
        .create_collection("c", CollectionConfig::new(DIM as u32).originals(precision))
        .expect("collection");
    coll.ingest(&documents(c), &IngestOptions::default())
        .expect("ingest");
    coll
}

fn queries(c: &SyntheticCorpus, n: usize) -> Vec<Vec<f32>> {
    c.queries(n, 8, 0.2, 11)
}

fn id(i: u64) -> ExternalId {
    ExternalId::Int(i)
}

/// The vectors a document is scored with: as the collection keeps them.
fn kept(coll: &Collection, i: &ExternalId) -> Vec<f32> {
    coll.vectors(i).expect("vectors").expect("present")
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-4 * a.abs().max(b.abs()).max(1.0)
}

/// Brute force: the given ids' MaxSim (plain reference loop) over their kept vectors, best
/// first, ties by id.
fn brute_force_rerank(coll: &Collection, q: &[f32], ids: &[ExternalId]) -> Vec<(ExternalId, f32)> {
    let mut scored: Vec<(ExternalId, f32)> = ids
        .iter()
        .map(|i| (i.clone(), maxsim(q, &kept(coll, i), DIM)))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    scored
}

fn assert_same_ranking(got: &[Hit], want: &[(ExternalId, f32)]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (h, (i, s)) in got.iter().zip(want) {
        // Scores first: two documents within rounding of each other may swap.
        assert!(close(h.score, *s), "{} scored {} vs {s}", h.id, h.score);
        if !got.iter().any(|o| o.id != h.id && close(o.score, h.score)) {
            assert_eq!(&h.id, i);
        }
    }
}

#[test]
fn rerank_equals_exact_maxsim_of_the_given_ids_and_reports_unknown_ones() {
    let c = clustered(300, 12, 1);
    for precision in [Precision::F16, Precision::None] {
        let dir = tempfile::tempdir().expect("tempdir");
        let coll = collection(dir.path(), &c, precision);
        coll.delete(&[id(5)]).expect("delete");
        for (qi, q) in queries(&c, 4).iter().enumerate() {
            let known: Vec<ExternalId> =
                (0..40).map(|j| id((j * 7 + qi as u64 * 3) % 300)).collect();
            let mut given = known.clone();
            // Unknown, deleted and repeated ids, interleaved.
            given.insert(3, ExternalId::from("no such document"));
            given.insert(10, id(5));
            given.insert(20, id(10_000));
            given.push(known[0].clone());
            let known: Vec<ExternalId> = known.into_iter().filter(|i| *i != id(5)).collect();
            let want = brute_force_rerank(&coll, q, &known);
            let all = coll.rerank(q, &given, usize::MAX).expect("rerank");
            assert_same_ranking(&all.hits, &want);
            assert_eq!(
                all.unknown,
                vec![ExternalId::from("no such document"), id(5), id(10_000)]
            );
            // Top-k is the head of the full ranking.
            let top = coll.rerank(q, &given, 7).expect("rerank top 7");
            assert_eq!(top.hits, all.hits[..7].to_vec());
            assert_eq!(top.unknown, all.unknown);
        }
    }
}

#[test]
fn rerank_scores_are_the_scores_an_exhaustive_search_gives() {
    let c = clustered(200, 8, 2);
    let dir = tempfile::tempdir().expect("tempdir");
    let coll = collection(dir.path(), &c, Precision::F16);
    for q in queries(&c, 3) {
        let exhaustive = coll
            .search(&q, 200, &SearchParams::exhaustive())
            .expect("search");
        let ids: Vec<ExternalId> = exhaustive.iter().map(|h| h.id.clone()).collect();
        let reranked = coll.rerank(&q, &ids, 200).expect("rerank");
        // The same kernel over the same originals: the same scores, bit for bit.
        assert_eq!(reranked.hits, exhaustive);
    }
}

#[test]
fn rerank_bad_input_is_a_clear_error_or_a_documented_empty_result() {
    let c = clustered(50, 4, 3);
    let dir = tempfile::tempdir().expect("tempdir");
    let coll = collection(dir.path(), &c, Precision::F16);
    let q = &queries(&c, 1)[0];
    let empty = coll.rerank(q, &[], 10).expect("empty id list");
    assert!(empty.hits.is_empty() && empty.unknown.is_empty());
    let none = coll.rerank(q, &[id(1), id(2)], 0).expect("k = 0");
    assert!(none.hits.is_empty() && none.unknown.is_empty());
    let only_unknown = coll.rerank(q, &[id(999)], 10).expect("unknown only");
    assert!(only_unknown.hits.is_empty());
    assert_eq!(only_unknown.unknown, vec![id(999)]);
    let e = coll
        .rerank(&q[..DIM + 3], &[id(1)], 10)
        .expect_err("wrong dimension");
    assert!(matches!(e, Error::InvalidQuery { .. }), "{e}");
    assert!(e.to_string().contains("32-dimensional"), "{e}");
    let mut nan = q.clone();
    nan[3] = f32::NAN;
    let e = coll.rerank(&nan, &[id(1)], 10).expect_err("NaN query");
    assert!(e.to_string().contains("NaN"), "{e}");
    assert!(coll.rerank(&[], &[id(1)], 10).is_err(), "empty query");
}

/// The rule, written plainly over a ranking with the reference MaxSim.
fn plain_diverse(
    coll: &Collection,
    q: &[f32],
    ranking: &[Hit],
    d: Diversity,
    k: usize,
) -> Vec<ExternalId> {
    let nq = (q.len() / DIM) as f32;
    let sym = |a: &[f32], b: &[f32]| {
        let (na, nb) = ((a.len() / DIM) as f32, (b.len() / DIM) as f32);
        (maxsim(a, b, DIM) / na + maxsim(b, a, DIM) / nb) / 2.0
    };
    let mut out: Vec<(ExternalId, Vec<f32>)> = Vec::new();
    for h in ranking {
        if out.len() == k {
            break;
        }
        let v = kept(coll, &h.id);
        if maxsim(q, &v, DIM) / nq > d.max_query_similarity {
            continue;
        }
        if out.iter().any(|(_, w)| sym(&v, w) > d.max_kept_similarity) {
            continue;
        }
        out.push((h.id.clone(), v));
    }
    out.into_iter().map(|(i, _)| i).collect()
}

fn ids(hits: &[Hit]) -> Vec<ExternalId> {
    hits.iter().map(|h| h.id.clone()).collect()
}

#[test]
fn diverse_top_k_at_exhaustive_equals_the_plain_rule_over_the_exhaustive_ranking() {
    // 400 documents in 8 tight clusters: a query's first 40 or so candidates are
    // near-duplicates, so keeping k dissimilar ones walks deeper than the first depth.
    let c = clustered(400, 8, 4);
    let dir = tempfile::tempdir().expect("tempdir");
    let coll = collection(dir.path(), &c, Precision::F16);
    let mut walked_deeper = false;
    let mut skipped_for_query = false;
    for q in queries(&c, 4) {
        let ranking = coll
            .search(&q, 400, &SearchParams::exhaustive())
            .expect("ranking");
        let nq = (q.len() / DIM) as f32;
        // Thresholds from the data: just under the best normalised score (the best
        // candidate is skipped), and a kept threshold that separates clusters.
        let top_sim = ranking[0].score / nq;
        for d in [
            Diversity::new(1.0, 0.5),
            Diversity::new(top_sim - 1e-3, 0.5),
            Diversity::new(1.0, 0.9),
            Diversity::default(),
        ] {
            for k in [1usize, 4, 10] {
                let got = coll
                    .search(&q, k, &SearchParams::exhaustive().with_diversity(d))
                    .expect("diverse search");
                let want = plain_diverse(&coll, &q, &ranking, d, k);
                assert_eq!(ids(&got), want, "k {k}, {d:?}");
                // Scores are the search's own, in order.
                for h in &got {
                    let r = ranking.iter().find(|r| r.id == h.id).expect("ranked");
                    assert_eq!(h.score, r.score);
                }
                let last = ranking.iter().position(|r| Some(&r.id) == want.last());
                walked_deeper |= last.is_some_and(|p| p >= 40);
                skipped_for_query |= d.max_query_similarity < 1.0 && want[0] != ranking[0].id;
            }
        }
    }
    assert!(
        walked_deeper,
        "no case needed candidates beyond the first depth"
    );
    assert!(
        skipped_for_query,
        "no case skipped a candidate for its query similarity"
    );
}

#[test]
fn diverse_top_k_at_the_defaults_is_a_valid_diverse_set_of_k() {
    let c = clustered(2000, 64, 5);
    let dir = tempfile::tempdir().expect("tempdir");
    let coll = collection(dir.path(), &c, Precision::F16);
    let d = Diversity::new(0.95, 0.6);
    for q in queries(&c, 5) {
        let k = 10;
        let got = coll
            .search(&q, k, &SearchParams::default().with_diversity(d))
            .expect("diverse search");
        assert_eq!(got.len(), k, "filled to k");
        let nq = (q.len() / DIM) as f32;
        let vs: Vec<Vec<f32>> = got.iter().map(|h| kept(&coll, &h.id)).collect();
        for (i, h) in got.iter().enumerate() {
            assert!(maxsim(&q, &vs[i], DIM) / nq <= d.max_query_similarity + 1e-5);
            if i > 0 {
                assert!(got[i - 1].score >= h.score, "best first");
            }
            for w in &vs[..i] {
                let s = (maxsim(&vs[i], w, DIM) / (vs[i].len() / DIM) as f32
                    + maxsim(w, &vs[i], DIM) / (w.len() / DIM) as f32)
                    / 2.0;
                assert!(s <= d.max_kept_similarity + 1e-5, "{} too close: {s}", h.id);
            }
        }
        // Against the exhaustive diverse set: the same documents where the candidate
        // stages kept them (measured, not assumed: at least 9 of 10 here).
        let exact = coll
            .search(&q, k, &SearchParams::exhaustive().with_diversity(d))
            .expect("exhaustive diverse");
        let shared = got
            .iter()
            .filter(|h| exact.iter().any(|e| e.id == h.id))
            .count();
        assert!(
            shared >= 9,
            "defaults kept {shared} of the exhaustive diverse 10"
        );
    }
    // Many queries at once give what one at a time gives.
    let qs = queries(&c, 3);
    let params = SearchParams::default().with_diversity(d);
    let batch = coll.search_batch(&qs, 10, &params).expect("batch");
    for (q, b) in qs.iter().zip(&batch) {
        assert_eq!(b, &coll.search(q, 10, &params).expect("one"));
    }
}

#[test]
fn diversity_thresholds_out_of_range_are_clear_errors() {
    let c = clustered(50, 4, 6);
    let dir = tempfile::tempdir().expect("tempdir");
    let coll = collection(dir.path(), &c, Precision::F16);
    let q = &queries(&c, 1)[0];
    for d in [
        Diversity::new(f32::NAN, 0.5),
        Diversity::new(0.5, 1.5),
        Diversity::new(-1.5, 0.5),
        Diversity::new(0.5, f32::NEG_INFINITY),
    ] {
        let params = SearchParams::default().with_diversity(d);
        let e = coll.search(q, 5, &params).expect_err("bad threshold");
        assert!(matches!(e, Error::InvalidParams { .. }), "{e}");
        assert!(e.to_string().contains("from -1 to 1"), "{e}");
        let e = coll
            .search_batch(std::slice::from_ref(q), 5, &params)
            .expect_err("bad threshold in a batch");
        assert!(matches!(e, Error::InvalidParams { .. }), "{e}");
    }
    // k = 0 and a wrong dimension, as for a plain search.
    let params = SearchParams::default().with_diversity(Diversity::default());
    assert!(coll.search(q, 0, &params).expect("k = 0").is_empty());
    let e = coll
        .search(&q[..5], 3, &params)
        .expect_err("wrong dimension");
    assert!(matches!(e, Error::InvalidQuery { .. }), "{e}");
}

#[test]
fn explanations_sum_to_the_score_and_pick_each_query_tokens_argmax() {
    let c = clustered(150, 6, 7);
    for precision in [Precision::F16, Precision::None] {
        let dir = tempfile::tempdir().expect("tempdir");
        let coll = collection(dir.path(), &c, precision);
        for q in queries(&c, 3) {
            let nq = q.len() / DIM;
            let hits = coll
                .search(&q, 5, &SearchParams::exhaustive())
                .expect("search");
            let rerank = coll.rerank(&q, &ids(&hits), 5).expect("rerank");
            for h in &hits {
                let r = rerank.hits.iter().find(|r| r.id == h.id).expect("reranked");
                let e = coll.explain(&q, &h.id).expect("explain").expect("present");
                let v = kept(&coll, &h.id);
                let nd = v.len() / DIM;
                assert_eq!((e.doc_tokens, e.matches.len()), (nd, nq));
                assert_eq!(e.similarities.len(), nq * nd);
                assert_eq!(e.full_precision, precision != Precision::None);
                // The total is the sum of the parts, and the score rerank gives (bit for
                // bit: the same kernel on the same vectors).
                let sum: f32 = e.matches.iter().map(|m| m.similarity).sum();
                assert_eq!(e.score, sum);
                assert_eq!(e.score, r.score);
                if precision != Precision::None {
                    // At full precision also the exhaustive search's score.
                    assert_eq!(e.score, h.score);
                }
                assert!(close(e.score, maxsim(&q, &v, DIM)));
                for (i, m) in e.matches.iter().enumerate() {
                    let qi = &q[i * DIM..(i + 1) * DIM];
                    let dots: Vec<f32> = v.chunks_exact(DIM).map(|d| dot(qi, d)).collect();
                    let best = dots.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    assert_eq!(m.query_token, i);
                    assert!(close(m.similarity, best), "token {i}");
                    // The chosen token is an argmax (up to rounding of near ties) and its
                    // heatmap cell is the similarity reported.
                    assert!(close(dots[m.doc_token], best), "token {i}");
                    assert_eq!(e.similarities[i * nd + m.doc_token], m.similarity);
                    let row = &e.similarities[i * nd..(i + 1) * nd];
                    assert!(row.iter().all(|&s| s <= m.similarity));
                }
            }
        }
    }
}

#[test]
fn explanations_of_queries_longer_than_the_kernels_query_block_still_equal_the_score() {
    // The refine kernel sums its per-token maxima in blocks of 128 query tokens; the
    // explanation's total must be summed the same way to stay bit for bit equal.
    let c = clustered(40, 4, 10);
    let dir = tempfile::tempdir().expect("tempdir");
    let coll = collection(dir.path(), &c, Precision::F16);
    for q in c.queries(2, 300, 0.2, 12) {
        let ids: Vec<ExternalId> = (0..10).map(id).collect();
        let r = coll.rerank(&q, &ids, 10).expect("rerank");
        for h in &r.hits {
            let e = coll.explain(&q, &h.id).expect("explain").expect("present");
            assert_eq!(e.matches.len(), 300);
            assert_eq!(e.score, h.score, "{}", h.id);
        }
    }
}

#[test]
fn explain_bad_input_is_a_clear_error_or_none() {
    let c = clustered(30, 3, 8);
    let dir = tempfile::tempdir().expect("tempdir");
    let coll = collection(dir.path(), &c, Precision::F16);
    let q = &queries(&c, 1)[0];
    assert!(coll.explain(q, &id(1000)).expect("unknown id").is_none());
    coll.delete(&[id(3)]).expect("delete");
    assert!(coll.explain(q, &id(3)).expect("deleted id").is_none());
    let e = coll
        .explain(&q[..DIM - 1], &id(1))
        .expect_err("wrong dimension");
    assert!(matches!(e, Error::InvalidQuery { .. }), "{e}");
}

#[test]
fn a_snapshot_reranks_and_explains_what_it_saw_after_the_database_is_gone() {
    let c = clustered(60, 4, 9);
    let dir = tempfile::tempdir().expect("tempdir");
    let q = queries(&c, 1).remove(0);
    let snap = {
        let coll = collection(dir.path(), &c, Precision::F16);
        coll.snapshot()
    };
    // The database and its handles are dropped: ids resolve from the snapshot's segments.
    let r = snap
        .rerank(&q, &[id(1), id(2), id(77)], 10)
        .expect("rerank");
    assert_eq!(r.hits.len(), 2);
    assert_eq!(r.unknown, vec![id(77)]);
    let e = snap.explain(&q, &id(2)).expect("explain").expect("present");
    assert_eq!(
        e.score,
        r.hits.iter().find(|h| h.id == id(2)).expect("hit").score
    );
}
