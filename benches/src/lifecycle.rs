//! A collection that lives through churn (issue 13): documents ingested in many small
//! batches while a share of them is deleted and another upserted along the way, measured
//! before and after `compact()` against a fresh build of the same live documents.
//!
//! Deleted documents are drawn uniformly from the live documents ingested so far, so the
//! share deleted is the share asked for (drawn from everything ingested, repeats left 23%
//! deleted where 30% was asked), and old segments collect tombstones as they would in a
//! knowledge base that is edited for years; upserts
//! re-ingest documents of the current and the previous batch with their own vectors (the
//! live set, and so the ground truth, stays the corpus minus the deletes). Recall is against
//! the exact top-100 of the whole corpus with the deleted documents removed.

use std::time::Instant;

use anyhow::{Result, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tessera::{
    Collection, CollectionConfig, CompactReport, Database, Document, ExternalId, IngestOptions,
    SearchParams,
};

use crate::dataset::Dataset;
use crate::metrics::{self, Latency};
use crate::truth::Truth;

/// What one state of a collection measured.
#[derive(Serialize, Debug, Clone)]
pub struct State {
    /// Which state.
    pub name: String,
    /// Live documents.
    pub documents: u64,
    /// Segment files.
    pub segments: usize,
    /// Bytes of segment, codec and originals files.
    pub disk_bytes: u64,
    /// Centroids of the codec.
    pub centroids: u32,
    /// Top-10 latency at the defaults, one thread.
    pub top10: Latency,
    /// Mean recall@10 against exact MaxSim over the live documents.
    pub recall_at_10: f64,
}

/// The whole scenario.
#[derive(Serialize, Debug, Clone)]
pub struct Lifecycle {
    /// Documents of the corpus.
    pub corpus_docs: usize,
    /// Ingest batches.
    pub batches: usize,
    /// Documents deleted along the way.
    pub deleted: usize,
    /// Upserts along the way.
    pub upserted: usize,
    /// Codec re-trainings the churned ingests ran.
    pub retrainings: usize,
    /// Seconds of the churned ingest (batches, upserts and deletes, background merges).
    pub churn_seconds: f64,
    /// Churned collection after the last batch (background merges settled).
    pub churned: State,
    /// The same after `compact()`.
    pub compacted: State,
    /// What `compact()` reported.
    pub compaction: CompactReport,
    /// Tokens per second the compaction copied.
    pub merge_tokens_per_s: f64,
    /// A fresh build of the live documents.
    pub fresh: State,
    /// Seconds of the fresh build.
    pub fresh_seconds: f64,
    /// Further fresh builds of the same documents, each with another codec seed
    /// (`--fresh-seeds`): how far recall moves from one fresh build to another, the
    /// yardstick for "equal recall".
    pub fresh_other_seeds: Vec<State>,
    /// Load average at the end of the run.
    pub load_average: f64,
}

fn docs_of(first: usize, offs: &[usize], rows: &[f32], dim: usize) -> Vec<Document> {
    (0..offs.len() - 1)
        .map(|j| {
            let (a, b) = ((offs[j] - offs[0]) * dim, (offs[j + 1] - offs[0]) * dim);
            Document::new((first + j) as u64, rows[a..b].to_vec())
        })
        .collect()
}

fn measure(
    name: &str,
    coll: &Collection,
    ds: &Dataset,
    truth: &Truth,
    live: &[bool],
) -> Result<State> {
    // Warm, as every other scenario measures (`measure::warm_up`): each state's files were
    // just written, and a first touch of their pages would be timed otherwise.
    for query in &ds.queries {
        coll.search(query, 10, &SearchParams::default())?;
    }
    let mut ms = Vec::new();
    let mut recalls = Vec::new();
    for (q, query) in ds.queries.iter().enumerate() {
        let t = Instant::now();
        let hits = coll.search(query, 10, &SearchParams::default())?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        let want: Vec<u64> = truth.ranked[q]
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| live[*id as usize])
            .take(10)
            .collect();
        if want.len() < 10 {
            bail!(
                "query {q}: fewer than 10 live documents in the exact top-{}",
                truth.k
            );
        }
        let got: Vec<u64> = hits
            .iter()
            .filter_map(|h| match h.id {
                ExternalId::Int(i) => Some(i),
                _ => None,
            })
            .collect();
        recalls.push(metrics::recall_at(&got, &want, 10));
    }
    let info = coll.info();
    let s = State {
        name: name.into(),
        documents: info.documents,
        segments: info.segments,
        disk_bytes: info.disk_bytes,
        centroids: info.centroids,
        top10: Latency::of(&ms),
        recall_at_10: metrics::mean(&recalls),
    };
    eprintln!(
        "{name}: {} documents, {} segments, {} centroids, {:.1} MB, p50 {:.2} ms, recall@10 {:.3}",
        s.documents,
        s.segments,
        s.centroids,
        s.disk_bytes as f64 / 1e6,
        s.top10.p50_ms,
        s.recall_at_10
    );
    Ok(s)
}

/// Waits until no background merge is due or running (the segment count stops changing).
fn settle(coll: &Collection) {
    let mut last = usize::MAX;
    let mut stable = 0;
    while stable < 20 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let now = coll.info().segments;
        stable = if now == last { stable + 1 } else { 0 };
        last = now;
    }
}

/// Runs the scenario in `dir` (two collections: `churned`, `fresh`).
pub fn run(
    ds: &Dataset,
    truth: &Truth,
    dir: &std::path::Path,
    batches: usize,
    delete_share: f64,
    upsert_share: f64,
    fresh_seeds: usize,
) -> Result<Lifecycle> {
    let n = ds.n_docs();
    let per_batch = n.div_ceil(batches.max(1));
    let db = Database::open_or_create(dir)?;
    let config = CollectionConfig::new(ds.dim as u32);
    let opts = IngestOptions::default().with_expected_total_tokens(ds.n_tokens() as u64);
    let churned = db.create_collection("churned", config.clone())?;
    // The churned collection is fed as a growing knowledge base is: without knowing its
    // final size (its codec is trained on the first batch and re-trained as it outgrows it).
    let churn_opts = IngestOptions::default();
    let mut rng = StdRng::seed_from_u64(13);
    let mut live = vec![false; n];
    let mut ingested: Vec<usize> = Vec::new();
    let (mut deleted, mut upserted, mut retrainings) = (0usize, 0usize, 0usize);
    let deletes_per_batch = (delete_share * per_batch as f64).round() as usize;
    let upserts_per_batch = (upsert_share * per_batch as f64).round() as usize;
    let mut previous: Vec<Document> = Vec::new();
    let t = Instant::now();
    ds.for_each_block(per_batch, |first, offs, rows| {
        let docs = docs_of(first, offs, rows, ds.dim);
        retrainings += usize::from(churned.ingest(&docs, &churn_opts)?.retrained_codec);
        for d in &docs {
            let ExternalId::Int(i) = d.id else { continue };
            live[i as usize] = true;
            ingested.push(i as usize);
        }
        // Upserts: documents of this batch and the one before, with their own vectors.
        let pool: Vec<&Document> = docs.iter().chain(&previous).collect();
        let mut up: Vec<Document> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        while up.len() < upserts_per_batch.min(pool.len()) {
            let d = pool[rng.random_range(0..pool.len())];
            let ExternalId::Int(i) = d.id else { continue };
            if live[i as usize] && seen.insert(i) {
                up.push(d.clone());
            }
            if seen.len() >= pool.len() {
                break;
            }
        }
        upserted += up.len();
        churned.ingest(&up, &IngestOptions::upsert())?;
        // Deletes: uniform over the live documents ingested so far (`ingested` holds only
        // live ones: a deleted document leaves it).
        let mut gone = Vec::new();
        for _ in 0..deletes_per_batch.min(ingested.len()) {
            let i = ingested.swap_remove(rng.random_range(0..ingested.len()));
            live[i] = false;
            gone.push(ExternalId::Int(i as u64));
        }
        deleted += gone.len();
        churned.delete(&gone)?;
        previous = docs;
        Ok(())
    })?;
    settle(&churned);
    let churn_seconds = t.elapsed().as_secs_f64();
    eprintln!(
        "churned ingest: {churn_seconds:.1} s, {deleted} deleted, {upserted} upserted, {retrainings} re-trainings"
    );
    let before = measure("churned", &churned, ds, truth, &live)?;
    let compaction = churned.compact()?;
    let merge_tokens_per_s = compaction.tokens_written as f64 / compaction.seconds.max(1e-9);
    eprintln!(
        "compact: {} merges, {} tokens in {:.1} s ({:.0} tokens/s)",
        compaction.merges, compaction.tokens_written, compaction.seconds, merge_tokens_per_s
    );
    let after = measure("compacted", &churned, ds, truth, &live)?;

    let fresh = Fresh {
        db: &db,
        ds,
        truth,
        live: &live,
        opts: &opts,
    };
    let (fresh_state, fresh_seconds) = fresh.build("fresh", "fresh build", config.clone())?;
    let mut fresh_other_seeds = Vec::with_capacity(fresh_seeds);
    for i in 1..=fresh_seeds as u64 {
        let seed = config.seed.wrapping_add(i);
        let name = format!("fresh build, codec seed {seed}");
        let c = config.clone().with_seed(seed);
        fresh_other_seeds.push(fresh.build(&format!("fresh-{i}"), &name, c)?.0);
    }
    Ok(Lifecycle {
        corpus_docs: n,
        batches,
        deleted,
        upserted,
        retrainings,
        churn_seconds,
        churned: before,
        compacted: after,
        compaction,
        merge_tokens_per_s,
        fresh: fresh_state,
        fresh_seconds,
        fresh_other_seeds,
        load_average: metrics::load_average(),
    })
}

/// Fresh builds of the live documents, in 25,000-document batches that announce the whole.
struct Fresh<'a> {
    db: &'a Database,
    ds: &'a Dataset,
    truth: &'a Truth,
    live: &'a [bool],
    opts: &'a IngestOptions,
}

impl Fresh<'_> {
    /// Builds collection `coll` with `config` and measures it as `name`; returns the state and
    /// the build's seconds.
    fn build(&self, coll: &str, name: &str, config: CollectionConfig) -> Result<(State, f64)> {
        let fresh = self.db.create_collection(coll, config)?;
        let t = Instant::now();
        self.ds.for_each_block(25_000, |first, offs, rows| {
            let docs: Vec<Document> = docs_of(first, offs, rows, self.ds.dim)
                .into_iter()
                .filter(|d| matches!(d.id, ExternalId::Int(i) if self.live[i as usize]))
                .collect();
            fresh.ingest(&docs, self.opts)?;
            Ok(())
        })?;
        settle(&fresh);
        let seconds = t.elapsed().as_secs_f64();
        Ok((
            measure(name, &fresh, self.ds, self.truth, self.live)?,
            seconds,
        ))
    }
}

/// One way of feeding a collection, measured.
#[derive(Serialize, Debug, Clone)]
pub struct Fed {
    /// How it was fed.
    pub name: String,
    /// Ingest calls.
    pub batches: usize,
    /// Centroids of the final codec.
    pub centroids: u32,
    /// Codec re-trainings the ingests ran (`MergePolicy::retrain`).
    pub retrainings: usize,
    /// Bytes of segment, codec and originals files.
    pub disk_bytes: u64,
    /// Ingest seconds (re-trainings included).
    pub seconds: f64,
    /// The measured state.
    pub state: State,
}

/// The same corpus ingested in one batch and in batches of about `batch_tokens` tokens
/// (issue 13, "small batches, same quality").
pub fn small_batches(
    ds: &Dataset,
    truth: &Truth,
    dir: &std::path::Path,
    batch_tokens: usize,
) -> Result<Vec<Fed>> {
    let db = Database::open_or_create(dir)?;
    let live = vec![true; ds.n_docs()];
    let mut out = Vec::new();
    for (name, per_batch) in [("one batch", usize::MAX), ("small batches", batch_tokens)] {
        let coll = db.create_collection(name, CollectionConfig::new(ds.dim as u32))?;
        let t = Instant::now();
        let (mut batches, mut retrainings) = (0, 0);
        let mut pending: Vec<Document> = Vec::new();
        let mut tokens = 0;
        let mut flush = |pending: &mut Vec<Document>, tokens: &mut usize| -> Result<()> {
            if pending.is_empty() {
                return Ok(());
            }
            let r = coll.ingest(pending, &IngestOptions::default())?;
            batches += 1;
            retrainings += usize::from(r.retrained_codec);
            pending.clear();
            *tokens = 0;
            Ok(())
        };
        ds.for_each_block(1000, |first, offs, rows| {
            for d in docs_of(first, offs, rows, ds.dim) {
                tokens += d.vectors.len() / ds.dim;
                pending.push(d);
                if tokens >= per_batch {
                    flush(&mut pending, &mut tokens)?;
                }
            }
            Ok(())
        })?;
        flush(&mut pending, &mut tokens)?;
        let seconds = t.elapsed().as_secs_f64();
        let state = measure(name, &coll, ds, truth, &live)?;
        if per_batch != usize::MAX {
            // What an explicit re-training on top gives (the last automatic one ran at up to
            // half the final size).
            let r = coll.retrain()?;
            eprintln!(
                "explicit retrain: {} -> {} centroids, residual norm {:.4} -> {:.4}",
                r.centroids_before,
                r.centroids_after,
                r.residual_norm_before,
                r.residual_norm_after
            );
            measure("small batches, then retrain()", &coll, ds, truth, &live)?;
        }
        let info = coll.info();
        eprintln!(
            "{name}: {batches} batches, {} centroids, {retrainings} re-trainings, {seconds:.1} s",
            info.centroids
        );
        out.push(Fed {
            name: name.into(),
            batches,
            centroids: info.centroids,
            retrainings,
            disk_bytes: info.disk_bytes,
            seconds,
            state,
        });
    }
    Ok(out)
}
