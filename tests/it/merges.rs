//! Merges and compaction (issue 13) against a brute-force model: whatever sequence of
//! ingests, upserts, deletes, merges and reopens, a search returns exact MaxSim over exactly
//! the live documents; searches running during merges see a committed version; a merge that
//! fails at any step of its commit loses nothing and resurrects nothing.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera::{
    Collection, CollectionConfig, Database, Document, ExternalId, IngestOptions, MergePolicy,
    Precision, SearchParams,
};
use tessera_kernels::reference::maxsim;
use tessera_storage::failpoint;

const DIM: usize = 16;

/// The live documents as the model has them: id → vectors.
type Model = BTreeMap<u64, Vec<f32>>;

/// The model of a collection holding exactly `docs` (integer ids).
fn model_of(docs: &[Document]) -> Model {
    docs.iter()
        .map(|d| match d.id {
            ExternalId::Int(i) => (i, d.vectors.clone()),
            _ => unreachable!("the tests' documents have integer ids"),
        })
        .collect()
}

fn random_doc(rng: &mut StdRng) -> Vec<f32> {
    let tokens = rng.random_range(2..9);
    // Clustered directions, so that documents compete for the top of a ranking.
    let center = rng.random_range(0..4) as f32;
    (0..tokens * DIM)
        .map(|i| {
            let c = if i % DIM == (center as usize) {
                1.0
            } else {
                0.0
            };
            c + rng.random_range(-0.5f32..0.5)
        })
        .collect()
}

fn config(auto: bool) -> CollectionConfig {
    // f32 originals: exhaustive search is then exact MaxSim over the ingested values.
    CollectionConfig::new(DIM as u32)
        .originals(Precision::F32)
        .with_merge_policy(MergePolicy {
            auto,
            merge_factor: 3,
            floor_tokens: 64,
            ..MergePolicy::default()
        })
}

/// The model's exact scores for `query`, best first, ties by id.
fn exact(model: &Model, query: &[f32]) -> Vec<(u64, f32)> {
    let mut scored: Vec<(u64, f32)> = model
        .iter()
        .map(|(id, v)| (*id, maxsim(query, v, DIM)))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored
}

/// Checks an exhaustive top-`k` against the model: the right number of hits, each a live
/// document with its exact score, and none ranked out of place (scores are compared within
/// rounding, so near-ties may trade places).
fn check_top_k(coll: &Collection, model: &Model, query: &[f32], k: usize, what: &str) {
    let hits = coll
        .search(query, k, &SearchParams::exhaustive())
        .unwrap_or_else(|e| panic!("{what}: search: {e}"));
    let truth = exact(model, query);
    assert_eq!(hits.len(), k.min(model.len()), "{what}: hit count");
    for (rank, h) in hits.iter().enumerate() {
        let ExternalId::Int(id) = h.id else {
            panic!("{what}: unexpected id {}", h.id)
        };
        let v = model
            .get(&id)
            .unwrap_or_else(|| panic!("{what}: hit {id} is not a live document"));
        let s = maxsim(query, v, DIM);
        assert!(
            (h.score - s).abs() <= 1e-4 * s.abs().max(1.0),
            "{what}: score of {id}"
        );
        assert!(
            (s - truth[rank].1).abs() <= 1e-4 * s.abs().max(1.0),
            "{what}: rank {rank} holds {id} ({s}), the model has {} ({})",
            truth[rank].0,
            truth[rank].1
        );
    }
}

fn check_all(coll: &Collection, model: &Model, rng: &mut StdRng, what: &str) {
    assert_eq!(
        coll.info().documents,
        model.len() as u64,
        "{what}: live documents"
    );
    for q in 0..3 {
        let query = random_doc(rng);
        check_top_k(coll, model, &query, 10, &format!("{what}, query {q}"));
    }
    // Every live document keeps its vectors; a deleted one stays gone.
    for (id, v) in model.iter().take(5) {
        let got = coll.vectors(&ExternalId::Int(*id)).expect("vectors");
        assert_eq!(got.as_deref(), Some(&v[..]), "{what}: vectors of {id}");
    }
}

/// Ingests `batches` batches of `per` random documents (ids `batch * per + i`), each
/// acknowledged, into `coll` and `model`.
fn ingest_batches(coll: &Collection, model: &mut Model, rng: &mut StdRng, batches: u64, per: u64) {
    for batch in 0..batches {
        let docs: Vec<Document> = (0..per)
            .map(|i| {
                let id = batch * per + i;
                let v = random_doc(rng);
                model.insert(id, v.clone());
                Document::new(id, v)
            })
            .collect();
        coll.ingest(&docs, &IngestOptions::default())
            .expect("ingest");
    }
}

/// Data files in the collection directory, by name.
fn data_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("collections/0"))
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn random_ingests_upserts_deletes_compactions_and_reopens_match_exact_maxsim_over_the_live_documents()
 {
    for seed in 0..4u64 {
        let dir = tempfile::tempdir().expect("tmp");
        let mut rng = StdRng::seed_from_u64(seed);
        let mut db = Database::open_or_create(dir.path()).expect("open");
        let mut coll = db.create_collection("c", config(false)).expect("create");
        let mut model = Model::new();
        let mut next_id = 0u64;
        for step in 0..40 {
            let what = format!("seed {seed} step {step}");
            match rng.random_range(0..11) {
                0..=3 => {
                    let n = rng.random_range(1..8);
                    let docs: Vec<Document> = (0..n)
                        .map(|_| {
                            next_id += 1;
                            let v = random_doc(&mut rng);
                            model.insert(next_id, v.clone());
                            Document::new(next_id, v)
                        })
                        .collect();
                    coll.ingest(&docs, &IngestOptions::default())
                        .expect("ingest");
                }
                4 | 5 if !model.is_empty() => {
                    let ids: Vec<u64> = model.keys().copied().collect();
                    let docs: Vec<Document> = (0..rng.random_range(1..4))
                        .map(|_| ids[rng.random_range(0..ids.len())])
                        .collect::<std::collections::BTreeSet<u64>>()
                        .into_iter()
                        .map(|id| {
                            let v = random_doc(&mut rng);
                            model.insert(id, v.clone());
                            Document::new(id, v)
                        })
                        .collect();
                    coll.ingest(&docs, &IngestOptions::upsert())
                        .expect("upsert");
                }
                6 | 7 if !model.is_empty() => {
                    let ids: Vec<u64> = model.keys().copied().collect();
                    let gone: Vec<ExternalId> = (0..rng.random_range(1..5))
                        .map(|_| ids[rng.random_range(0..ids.len())])
                        .map(|id| {
                            model.remove(&id);
                            ExternalId::Int(id)
                        })
                        .collect();
                    coll.delete(&gone).expect("delete");
                }
                8 => {
                    let report = coll.compact().expect("compact");
                    let info = coll.info();
                    assert_eq!(info.segments, report.segments_after, "{what}");
                    assert!(report.segments_after <= report.segments_before, "{what}");
                }
                9 => {
                    let report = coll.retrain().expect("retrain");
                    assert_eq!(report.segments, coll.info().segments, "{what}");
                }
                _ => {
                    drop(coll);
                    drop(db);
                    db = Database::open(dir.path()).expect("reopen");
                    coll = db.collection("c").expect("collection");
                }
            }
            check_all(&coll, &model, &mut rng, &what);
        }
        // A final compaction leaves one segment without deletes, and no other data file.
        coll.compact().expect("compact");
        let info = coll.info();
        assert!(
            info.segments <= 1,
            "seed {seed}: {} segments",
            info.segments
        );
        check_all(&coll, &model, &mut rng, &format!("seed {seed} compacted"));
        drop(coll);
        drop(db);
        let files = data_files(dir.path());
        let segs = files.iter().filter(|f| f.ends_with(".tsg")).count();
        assert!(segs <= 1, "seed {seed}: files left {files:?}");
        let db = Database::open(dir.path()).expect("reopen");
        let coll = db.collection("c").expect("collection");
        check_all(&coll, &model, &mut rng, &format!("seed {seed} reopened"));
    }
}

#[test]
fn a_merge_keeps_files_a_snapshot_maps_and_removes_them_once_it_is_gone() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = Database::open_or_create(dir.path()).expect("open");
    let coll = db.create_collection("c", config(false)).expect("create");
    let mut rng = StdRng::seed_from_u64(7);
    let mut model = Model::new();
    ingest_batches(&coll, &mut model, &mut rng, 4, 5);
    coll.delete(&[ExternalId::Int(3)]).expect("delete");
    let old_snapshot = coll.snapshot();
    let before = data_files(dir.path());
    let report = coll.compact().expect("compact");
    assert_eq!((report.segments_before, report.segments_after), (4, 1));
    assert_eq!(report.documents_dropped, 1);
    // The old snapshot still searches its own (pre-merge) files.
    let hits = old_snapshot
        .search(&random_doc(&mut rng), 30, &SearchParams::exhaustive())
        .expect("search the old snapshot");
    assert_eq!(hits.len(), 19);
    for f in &before {
        assert!(
            dir.path().join("collections/0").join(f).exists(),
            "{f} removed early"
        );
    }
    drop(old_snapshot);
    coll.compact()
        .expect("a compaction with nothing to merge sweeps the retired files");
    let after = data_files(dir.path());
    assert_eq!(
        after.iter().filter(|f| f.ends_with(".tsg")).count(),
        1,
        "{after:?}"
    );
    assert_eq!(
        after.iter().filter(|f| f.ends_with(".tov")).count(),
        1,
        "{after:?}"
    );
    model.remove(&3);
    check_all(&coll, &model, &mut rng, "after the sweep");
}

#[test]
fn background_merges_keep_the_segment_count_logarithmic_while_ingests_go_on() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = Database::open_or_create(dir.path()).expect("open");
    let coll = db.create_collection("c", config(true)).expect("create");
    let mut rng = StdRng::seed_from_u64(11);
    let mut model = Model::new();
    for id in 0..120u64 {
        let v = random_doc(&mut rng);
        model.insert(id, v.clone());
        coll.ingest(&[Document::new(id, v)], &IngestOptions::default())
            .expect("ingest");
    }
    // Background merges finish on their own; wait for the tiers to settle.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let bound = 3 * 4;
    while coll.info().segments > bound && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let segments = coll.info().segments;
    assert!(
        segments <= bound,
        "{segments} segments after 120 single-document ingests"
    );
    assert_eq!(coll.info().merge_error, None);
    check_all(&coll, &model, &mut rng, "after background merges");
}

#[test]
fn searches_during_merges_retrainings_and_writes_match_some_committed_version() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = Database::open_or_create(dir.path()).expect("open");
    let coll = db.create_collection("c", config(true)).expect("create");
    let mut rng = StdRng::seed_from_u64(5);
    let versions: Arc<Mutex<Vec<Model>>> = Arc::new(Mutex::new(vec![Model::new()]));
    let query = random_doc(&mut rng);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (coll, done, query) = (coll.clone(), done.clone(), query.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            // Bounded, so that a failing writer fails the test instead of hanging it.
            let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
            while !done.load(std::sync::atomic::Ordering::SeqCst)
                && std::time::Instant::now() < until
            {
                let hits = coll
                    .search(&query, 5, &SearchParams::exhaustive())
                    .expect("search");
                seen.push(hits.into_iter().map(|h| h.id).collect::<Vec<_>>());
            }
            seen
        })
    };
    let mut model = Model::new();
    for step in 0..60u64 {
        if step % 3 == 2 {
            let id = step - 1;
            model.remove(&id);
            coll.delete(&[ExternalId::Int(id)]).expect("delete");
        } else {
            let v = random_doc(&mut rng);
            model.insert(step, v.clone());
            coll.ingest(&[Document::new(step, v)], &IngestOptions::default())
                .expect("ingest");
        }
        versions.lock().expect("lock").push(model.clone());
        if step % 20 == 19 {
            coll.compact().expect("compact");
        }
        if step % 20 == 9 {
            coll.retrain().expect("retrain");
        }
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = reader.join().expect("reader");
    assert!(!seen.is_empty());
    let versions = versions.lock().expect("lock");
    let tops: Vec<Vec<ExternalId>> = versions
        .iter()
        .map(|m| {
            exact(m, &query)
                .into_iter()
                .take(5)
                .map(|(id, _)| ExternalId::Int(id))
                .collect()
        })
        .collect();
    for (i, got) in seen.iter().enumerate() {
        assert!(
            tops.contains(got),
            "search {i} returned {got:?}, which no committed version ranks so"
        );
    }
}

/// Opens `dir` again and checks it holds exactly the model's documents.
fn reopen_matches(dir: &Path, model: &Model, what: &str) {
    let db = Database::open(dir).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
    let coll = db.collection("c").expect("collection");
    let mut rng = StdRng::seed_from_u64(99);
    check_all(&coll, model, &mut rng, what);
    assert!(
        !data_files(dir).iter().any(|f| f.ends_with(".tmp")),
        "{what}: temporary files after reopen"
    );
}

#[test]
fn a_merge_failing_at_any_step_of_its_commit_loses_nothing_and_resurrects_nothing() {
    // (point, file pattern, whether compact() must fail)
    let cases = [
        (failpoint::CREATE, "codec-*.tcd.tmp", true),
        (failpoint::CREATE, "seg-*.tsg.tmp", true),
        (failpoint::WRITE, "seg-*.tsg.tmp", true),
        (failpoint::FSYNC, "seg-*.tsg.tmp", true),
        (failpoint::CREATE, "vec-*.tov.tmp", true),
        (failpoint::WRITE, "vec-*.tov.tmp", true),
        (failpoint::FSYNC_DIR, "*", true),
        (failpoint::CATALOG_COMMIT, "*", true),
        // After the catalog write the merge is durable; a failed rename is completed at open.
        (failpoint::RENAME, "seg-*.tsg", false),
    ];
    for (point, pattern, fails) in cases {
        let what = format!("{point} {pattern}");
        let dir = tempfile::tempdir().expect("tmp");
        let mut rng = StdRng::seed_from_u64(3);
        let mut model = Model::new();
        {
            let db = Database::open_or_create(dir.path()).expect("open");
            let coll = db.create_collection("c", config(false)).expect("create");
            ingest_batches(&coll, &mut model, &mut rng, 3, 6);
            let gone = [ExternalId::Int(2), ExternalId::Int(9)];
            coll.delete(&gone).expect("delete");
            model.remove(&2);
            model.remove(&9);
            // Points are process-wide: this test's directory first keeps others' untouched.
            let pattern = format!("{}*{pattern}", dir.path().display());
            failpoint::arm(point, &pattern, ErrorKind::Other);
            // A re-training writes a codec; a compaction does not, so a codec point tries the
            // re-training alone.
            let retrain = coll.retrain();
            let result = if pattern.contains("codec") {
                retrain.map(|_| ())
            } else {
                assert_eq!(retrain.is_err(), fails, "{what}: retrain {retrain:?}");
                coll.compact().map(|_| ())
            };
            failpoint::disarm(&pattern);
            assert_eq!(result.is_err(), fails, "{what}: {result:?}");
            // The handle goes on serving the same documents either way.
            let mut rng = StdRng::seed_from_u64(4);
            check_all(&coll, &model, &mut rng, &format!("{what}, same handle"));
        }
        reopen_matches(dir.path(), &model, &what);
        // And a compaction after the reopen completes the job.
        let db = Database::open(dir.path()).expect("reopen");
        let coll = db.collection("c").expect("collection");
        coll.compact().expect("compact after reopen");
        assert_eq!(coll.info().segments, 1, "{what}");
        drop(coll);
        drop(db);
        reopen_matches(dir.path(), &model, &format!("{what}, compacted"));
    }
}

#[test]
fn retraining_a_collection_fed_in_small_drifting_batches_refits_the_codec_and_keeps_every_document()
{
    let dir = tempfile::tempdir().expect("tmp");
    let db = Database::open_or_create(dir.path()).expect("open");
    let coll = db.create_collection("c", config(false)).expect("create");
    let mut rng = StdRng::seed_from_u64(21);
    let mut model = Model::new();
    // A first batch of 4 documents trains a coarse codec; the later ones come from other
    // directions (a shifted centre), so the codec fits them badly.
    for batch in 0..12u64 {
        let docs: Vec<Document> = (0..4)
            .map(|i| {
                let id = batch * 4 + i;
                let mut v = random_doc(&mut rng);
                for (j, x) in v.iter_mut().enumerate() {
                    if j % DIM == 8 + (batch as usize % 8) {
                        *x += 2.0;
                    }
                }
                model.insert(id, v.clone());
                Document::new(id, v)
            })
            .collect();
        coll.ingest(&docs, &IngestOptions::default())
            .expect("ingest");
    }
    // Codecs superseded by expansions (or automatic re-trainings) are gone already.
    let codec_files = |dir: &Path| {
        data_files(dir)
            .into_iter()
            .filter(|f| f.ends_with(".tcd"))
            .count()
    };
    assert_eq!(codec_files(dir.path()), 1);
    coll.delete(&[ExternalId::Int(5)]).expect("delete");
    model.remove(&5);
    let before = coll.info();
    let held = coll.snapshot();
    let report = coll.retrain().expect("retrain");
    assert_eq!(report.segments, before.segments);
    assert_eq!(report.centroids_before, before.centroids);
    assert!(
        report.residual_norm_after < report.residual_norm_before,
        "the new codec fits worse: {report:?}"
    );
    let after = coll.info();
    assert_eq!(after.codec_trained_tokens, report.trained_tokens);
    assert_eq!(after.centroids, report.centroids_after);
    check_all(&coll, &model, &mut rng, "after retrain");
    // The snapshot taken before still searches the old codec's segments.
    assert_eq!(
        held.search(&random_doc(&mut rng), 100, &SearchParams::exhaustive())
            .expect("old snapshot")
            .len(),
        model.len()
    );
    drop(held);
    coll.compact().expect("sweep");
    assert_eq!(
        codec_files(dir.path()),
        1,
        "superseded codec files are removed"
    );
    drop(coll);
    drop(db);
    let db = Database::open(dir.path()).expect("reopen");
    let coll = db.collection("c").expect("collection");
    check_all(&coll, &model, &mut rng, "retrained, reopened");
    let config = CollectionConfig::new(DIM as u32).originals(Precision::None);
    let bare = db.create_collection("bare", config).expect("create");
    bare.ingest(
        &[Document::new(1u64, random_doc(&mut rng))],
        &IngestOptions::default(),
    )
    .expect("ingest");
    let err = bare.retrain().expect_err("no originals");
    assert!(
        err.to_string().contains("keeps no original vectors"),
        "{err}"
    );
}

#[test]
fn filters_see_the_same_documents_after_merges_and_a_retraining() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = Database::open_or_create(dir.path()).expect("open");
    let coll = db.create_collection("c", config(false)).expect("create");
    let mut rng = StdRng::seed_from_u64(17);
    let mut model = Model::new();
    for batch in 0..5u64 {
        let docs: Vec<Document> = (0..8)
            .map(|i| {
                let id = batch * 8 + i;
                let v = random_doc(&mut rng);
                model.insert(id, v.clone());
                Document::new(id, v).with_metadata(serde_json::json!({"g": id % 3}))
            })
            .collect();
        coll.ingest(&docs, &IngestOptions::default())
            .expect("ingest");
    }
    let gone: Vec<ExternalId> = [1u64, 4, 9, 30]
        .iter()
        .map(|i| ExternalId::Int(*i))
        .collect();
    coll.delete(&gone).expect("delete");
    for id in [1u64, 4, 9, 30] {
        model.remove(&id);
    }
    let matching: Model = model
        .iter()
        .filter(|(id, _)| *id % 3 == 1)
        .map(|(id, v)| (*id, v.clone()))
        .collect();
    let query = random_doc(&mut rng);
    let filtered = |coll: &Collection| {
        let params = SearchParams::exhaustive()
            .with_filter(tessera::Filter::parse("g = 1").expect("filter"));
        let mut ids: Vec<ExternalId> = coll
            .search(&query, 100, &params)
            .expect("search")
            .into_iter()
            .map(|h| h.id)
            .collect();
        ids.sort_by_key(|id| id.to_string());
        ids
    };
    let mut want: Vec<ExternalId> = matching.keys().map(|id| ExternalId::Int(*id)).collect();
    want.sort_by_key(|id| id.to_string());
    assert_eq!(filtered(&coll), want, "before");
    coll.compact().expect("compact");
    assert_eq!(filtered(&coll), want, "compacted");
    coll.retrain().expect("retrain");
    assert_eq!(filtered(&coll), want, "retrained");
    drop(coll);
    drop(db);
    let db = Database::open(dir.path()).expect("reopen");
    assert_eq!(filtered(&db.collection("c").expect("c")), want, "reopened");
}

#[test]
fn a_codec_trained_on_less_than_its_sample_is_retrained_each_time_the_collection_doubles() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = Database::open_or_create(dir.path()).expect("open");
    let mut rng = StdRng::seed_from_u64(29);
    let docs: Vec<Document> = (0..800u64)
        .map(|id| Document::new(id, random_doc(&mut rng)))
        .collect();
    let total: u64 = docs.iter().map(|d| (d.vectors.len() / DIM) as u64).sum();
    // The whole corpus's size is known, so the first codec already has the centroids the
    // corpus asks for (no coarse re-training) and no batch drifts: only the first batch's
    // small training sample can call for a re-training.
    let opts = IngestOptions::default().with_expected_total_tokens(total);
    let coll = db.create_collection("c", config(false)).expect("create");
    let mut doublings = Vec::new();
    for chunk in docs.chunks(100) {
        let r = coll.ingest(chunk, &opts).expect("ingest");
        let info = coll.info();
        if r.retrained_codec {
            doublings.push(info.tokens);
        }
        // Never more than twice the tokens the codec saw (its full sample is larger than
        // this corpus).
        assert!(
            info.codec_trained_tokens * tessera::RETRAIN_SAMPLE_GROWTH as u64 > info.tokens,
            "{} tokens, codec trained on {}",
            info.tokens,
            info.codec_trained_tokens
        );
    }
    // Eight batches of about the same size: re-trained at two, four and eight batches.
    assert_eq!(doublings.len(), 3, "re-trained at {doublings:?} tokens");
    assert_eq!(coll.info().merge_error, None);
    let model = model_of(&docs);
    check_all(&coll, &model, &mut rng, "re-trained as it doubled");
}

#[test]
fn an_automatic_retraining_sizes_the_codec_for_the_corpus_the_ingest_announced() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = Database::open_or_create(dir.path()).expect("open");
    let mut rng = StdRng::seed_from_u64(31);
    let docs: Vec<Document> = (0..200u64)
        .map(|id| Document::new(id, random_doc(&mut rng)))
        .collect();
    // A bulk load announcing a corpus larger than what arrives here: the first codec is
    // sized for it (capped at one centroid per token of the batch), and so must each
    // re-training be. Sized for the tokens so far, the first re-training here would drop to
    // 256 centroids, and a large load would re-train back up later.
    let announced: u64 = 20_000;
    let wanted = u64::from(tessera::default_centroids(announced));
    assert!(wanted > u64::from(tessera::default_centroids(announced / 16)));
    let opts = IngestOptions::default().with_expected_total_tokens(announced);
    let coll = db.create_collection("c", config(false)).expect("create");
    let (mut retrainings, mut centroids) = (0, 0);
    for chunk in docs.chunks(50) {
        let r = coll.ingest(chunk, &opts).expect("ingest");
        let info = coll.info();
        assert!(info.centroids >= centroids, "{info:?}");
        centroids = info.centroids;
        if r.retrained_codec {
            retrainings += 1;
            assert_eq!(
                u64::from(info.centroids),
                wanted.min(info.codec_trained_tokens),
                "re-trained at {} tokens",
                info.tokens
            );
        }
    }
    assert!(retrainings >= 1, "never re-trained");
    assert_eq!(coll.info().merge_error, None);
    let model = model_of(&docs);
    check_all(
        &coll,
        &model,
        &mut rng,
        "re-trained for the announced corpus",
    );
}

#[test]
fn a_collection_fed_in_small_batches_retrains_itself_to_the_codec_one_batch_would_train() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = Database::open_or_create(dir.path()).expect("open");
    let mut rng = StdRng::seed_from_u64(23);
    let docs: Vec<Document> = (0..400u64)
        .map(|id| Document::new(id, random_doc(&mut rng)))
        .collect();
    let whole = db
        .create_collection("whole", config(false))
        .expect("create");
    whole
        .ingest(&docs, &IngestOptions::default())
        .expect("ingest");
    let fed = db.create_collection("fed", config(false)).expect("create");
    let mut retrainings = 0;
    for chunk in docs.chunks(10) {
        let r = fed
            .ingest(chunk, &IngestOptions::default())
            .expect("ingest");
        retrainings += usize::from(r.retrained_codec);
    }
    let (w, f) = (whole.info(), fed.info());
    assert!(retrainings >= 2, "{retrainings} re-trainings");
    // The last re-training ran at half the final size at the latest.
    assert!(
        f.centroids * tessera::RETRAIN_CENTROID_FACTOR >= w.centroids,
        "fed {} centroids, whole {}",
        f.centroids,
        w.centroids
    );
    assert_eq!(fed.info().merge_error, None);
    // Without automatic re-training the codec of the first 10 documents stays.
    let manual = config(false).with_merge_policy(MergePolicy {
        auto: false,
        retrain: false,
        ..MergePolicy::default()
    });
    let kept = db.create_collection("kept", manual).expect("create");
    for chunk in docs.chunks(10) {
        kept.ingest(chunk, &IngestOptions::default())
            .expect("ingest");
    }
    assert!(
        kept.info().centroids < f.centroids,
        "{} vs {}",
        kept.info().centroids,
        f.centroids
    );
    let model = model_of(&docs);
    check_all(&fed, &model, &mut rng, "fed in small batches");
}
