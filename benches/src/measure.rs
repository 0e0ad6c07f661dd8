//! The measurements, identical for every engine: recall and latency on one thread, latency
//! and throughput on all threads, batched QPS, memory while searching, and (Tessera) where
//! the time goes.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Result, anyhow};
use serde::Serialize;

use crate::dataset::Dataset;
use crate::engines::{Engine, Knobs};
use crate::metrics::{self, Latency, Memory};
use crate::truth::Truth;

/// One point of a parameter sweep: top-10 on one thread.
#[derive(Serialize, Debug, Clone)]
pub struct SweepPoint {
    /// The knobs.
    pub knobs: Knobs,
    /// Candidates re-ranked (the default made explicit).
    pub rerank_effective: usize,
    /// Latency of top-10 searches on one thread.
    pub latency: Latency,
    /// Mean recall@10 against the exhaustive top-10.
    pub recall_at_10: f64,
}

/// Mean per-search stage timings from the engine's own counters (Tessera).
#[derive(Serialize, Debug, Clone, Default)]
pub struct Stages {
    /// Distinct centroids probed.
    pub probed_centroids: f64,
    /// Documents scored approximately.
    pub candidates: f64,
    /// Documents re-ranked exactly.
    pub reranked: f64,
    /// Query x centroid scores and probe choice, ms.
    pub centroid_ms: f64,
    /// Candidate gathering and approximate scoring, ms.
    pub approx_ms: f64,
    /// Decompression and exact re-ranking, ms.
    pub rerank_ms: f64,
    /// Documents refined with their original vectors.
    #[serde(default)]
    pub refined: f64,
    /// Bytes of original vectors read by the refine stage.
    #[serde(default)]
    pub refine_bytes: f64,
    /// Refine stage (originals read, full-precision MaxSim, final ranking), ms.
    #[serde(default)]
    pub refine_ms: f64,
    /// Mean wall time of the whole search, ms (includes what no stage counts).
    pub total_ms: f64,
}

impl Stages {
    /// Time no stage counts: the total less every counted stage.
    pub fn other_ms(&self) -> f64 {
        self.total_ms - self.centroid_ms - self.approx_ms - self.rerank_ms - self.refine_ms
    }

    /// The mean of several runs' mean stages (`None` when there are none).
    fn mean_of(runs: &[Stages]) -> Option<Stages> {
        let n = runs.len() as f64;
        let sum = |f: fn(&Stages) -> f64| runs.iter().map(f).sum::<f64>() / n;
        (!runs.is_empty()).then(|| Stages {
            probed_centroids: sum(|s| s.probed_centroids),
            candidates: sum(|s| s.candidates),
            reranked: sum(|s| s.reranked),
            centroid_ms: sum(|s| s.centroid_ms),
            approx_ms: sum(|s| s.approx_ms),
            rerank_ms: sum(|s| s.rerank_ms),
            refined: sum(|s| s.refined),
            refine_bytes: sum(|s| s.refine_bytes),
            refine_ms: sum(|s| s.refine_ms),
            total_ms: sum(|s| s.total_ms),
        })
    }
}

/// The full measurement at one setting (the engine's default).
#[derive(Serialize, Debug, Clone)]
pub struct Full {
    /// The knobs.
    pub knobs: Knobs,
    /// Candidates re-ranked for top-10.
    pub rerank_effective: usize,
    /// Top-10 latency, one thread.
    pub top10_one_thread: Latency,
    /// Top-100 latency, one thread.
    pub top100_one_thread: Latency,
    /// Threads used for the all-threads figures.
    pub threads: usize,
    /// Top-10 latency with one search in flight per thread.
    pub top10_all_threads: Latency,
    /// Queries per second in the all-threads run.
    pub all_threads_qps: f64,
    /// Queries per second through the engine's batch API (top-10).
    pub batch_qps: f64,
    /// Mean recall@10 against the exhaustive top-10.
    pub recall_at_10: f64,
    /// Mean recall@100 against the exhaustive top-100.
    pub recall_at_100: f64,
    /// Mean nDCG@10 against the judgments, when given.
    pub ndcg_at_10: Option<f64>,
    /// Mean recall@100 of the judged relevant documents, when given.
    pub judged_recall_at_100: Option<f64>,
    /// Memory: at the start of the search phase, and peak / after it.
    pub memory_before: Memory,
    /// See `memory_before`.
    pub memory_after: Memory,
    /// Stage timings of the top-10 one-thread searches, when the engine reports them.
    pub stages: Option<Stages>,
}

fn one_thread_pool() -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .map_err(|e| anyhow!("cannot build a one-thread pool: {e}"))
}

/// Ids per query, milliseconds per query, and mean stage timings.
type Sequential = (Vec<Vec<u64>>, Vec<f64>, Option<Stages>);

/// Searches every query one after another on one thread (inside a one-thread rayon pool, so
/// an engine that parallelises one search internally is held to one core too). Returns the
/// ids, per-query milliseconds and summed stages.
fn sequential(
    engine: &dyn Engine,
    queries: &[Vec<f32>],
    k: usize,
    knobs: Knobs,
) -> Result<Sequential> {
    one_thread_pool()?.install(|| {
        let mut got = Vec::with_capacity(queries.len());
        let mut ms = Vec::with_capacity(queries.len());
        let mut st: Option<Stages> = None;
        for q in queries {
            let t = Instant::now();
            let (ids, stats) = engine.search(q, k, knobs)?;
            let el = t.elapsed().as_secs_f64() * 1e3;
            ms.push(el);
            got.push(ids);
            if let Some(s) = stats {
                let a = st.get_or_insert_with(Stages::default);
                a.probed_centroids += s.probed_centroids as f64;
                a.candidates += s.candidates as f64;
                a.reranked += s.reranked as f64;
                a.centroid_ms += s.centroid_us as f64 / 1e3;
                a.approx_ms += s.approx_us as f64 / 1e3;
                a.rerank_ms += s.rerank_us as f64 / 1e3;
                a.refined += s.refined as f64;
                a.refine_bytes += s.refine_bytes as f64;
                a.refine_ms += s.refine_us as f64 / 1e3;
                a.total_ms += el;
            }
        }
        let n = queries.len().max(1) as f64;
        if let Some(a) = st.as_mut() {
            for v in [
                &mut a.probed_centroids,
                &mut a.candidates,
                &mut a.reranked,
                &mut a.centroid_ms,
                &mut a.approx_ms,
                &mut a.rerank_ms,
                &mut a.refined,
                &mut a.refine_bytes,
                &mut a.refine_ms,
                &mut a.total_ms,
            ] {
                *v /= n;
            }
        }
        Ok((got, ms, st))
    })
}

fn mean_recall(got: &[Vec<u64>], truth: &Truth, k: usize) -> f64 {
    let r: Vec<f64> = got
        .iter()
        .enumerate()
        .map(|(i, g)| metrics::recall_at(g, &truth.ids(i, k), k))
        .collect();
    metrics::mean(&r)
}

/// A warm-up pass: every query once at each `k` the timed passes will ask for, so that
/// every timed search finds the pages it reads already mapped, whichever setting ran
/// before it. Timing a first touch instead would charge a stage for page faults and
/// checksums that a long-running process pays once per page (BENCHMARKS.md, "Warm
/// measurements"), and charge them to whichever setting happened to run first.
fn warm_up(engine: &dyn Engine, queries: &[Vec<f32>], knobs: Knobs, ks: &[usize]) -> Result<()> {
    for &k in ks {
        for q in queries {
            engine.search(q, k, knobs)?;
        }
    }
    Ok(())
}

/// Top-10 recall and one-thread latency at `knobs`.
pub fn sweep_point(
    engine: &dyn Engine,
    ds: &Dataset,
    truth: &Truth,
    knobs: Knobs,
) -> Result<SweepPoint> {
    warm_up(engine, &ds.queries, knobs, &[10])?;
    let (got, ms, _) = sequential(engine, &ds.queries, 10, knobs)?;
    Ok(SweepPoint {
        knobs,
        rerank_effective: engine.rerank_budget(10, knobs),
        latency: Latency::of(&ms),
        recall_at_10: mean_recall(&got, truth, 10),
    })
}

/// Concurrent searches, one in flight per thread, until every thread has done at least
/// `min_total / threads` searches. Returns per-search ms and queries per second.
fn all_threads(
    engine: &dyn Engine,
    queries: &[Vec<f32>],
    knobs: Knobs,
    threads: usize,
    min_total: usize,
) -> Result<(Vec<f64>, f64)> {
    let total = min_total.max(queries.len());
    let next = AtomicUsize::new(0);
    let ms = Mutex::new(Vec::with_capacity(total));
    let err: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let t = Instant::now();
                    if let Err(e) = engine.search(&queries[i % queries.len()], 10, knobs) {
                        *err.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        break;
                    }
                    mine.push(t.elapsed().as_secs_f64() * 1e3);
                }
                ms.lock().unwrap_or_else(|p| p.into_inner()).extend(mine);
            });
        }
    });
    let secs = t.elapsed().as_secs_f64();
    if let Some(e) = err.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let ms = ms.into_inner().unwrap_or_else(|p| p.into_inner());
    let qps = ms.len() as f64 / secs;
    Ok((ms, qps))
}

/// Everything at one setting. The memory figures cover this phase only (the peak counter is
/// reset first where the kernel allows).
pub fn full(engine: &dyn Engine, ds: &Dataset, truth: &Truth, knobs: Knobs) -> Result<Full> {
    metrics::reset_peak();
    let memory_before = metrics::memory();
    warm_up(engine, &ds.queries, knobs, &[10, 100])?;
    let (got10, ms10, stages) = sequential(engine, &ds.queries, 10, knobs)?;
    let (got100, ms100, _) = sequential(engine, &ds.queries, 100, knobs)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (ms_all, qps) = all_threads(engine, &ds.queries, knobs, threads, 4 * ds.queries.len())?;
    let t = Instant::now();
    let batch = engine.search_batch(&ds.queries, 10, knobs)?;
    let batch_qps = batch.len() as f64 / t.elapsed().as_secs_f64();
    let memory_after = metrics::memory();
    let (ndcg, jr) = match &ds.qrels {
        Some(q) => (
            Some(metrics::mean(
                &got10
                    .iter()
                    .zip(q)
                    .map(|(g, r)| metrics::ndcg_at(g, r, 10))
                    .collect::<Vec<_>>(),
            )),
            Some(metrics::mean(
                &got100
                    .iter()
                    .zip(q)
                    .map(|(g, r)| metrics::judged_recall_at(g, r, 100))
                    .collect::<Vec<_>>(),
            )),
        ),
        None => (None, None),
    };
    Ok(Full {
        knobs,
        rerank_effective: engine.rerank_budget(10, knobs),
        top10_one_thread: Latency::of(&ms10),
        top100_one_thread: Latency::of(&ms100),
        threads,
        top10_all_threads: Latency::of(&ms_all),
        all_threads_qps: qps,
        batch_qps,
        recall_at_10: mean_recall(&got10, truth, 10),
        recall_at_100: mean_recall(&got100, truth, 100),
        ndcg_at_10: ndcg,
        judged_recall_at_100: jr,
        memory_before,
        memory_after,
        stages,
    })
}

/// Rounds of [`paired_top10`]: enough that one stalled block (this machine's page-cache
/// scanner and noisy neighbours stall a core for tens of milliseconds at random) moves the
/// pooled median little, few enough to cost seconds.
pub const PAIRED_ROUNDS: usize = 8;

/// Two settings timed against each other: every query's top-10 latency pooled over the
/// rounds, each round's ratio of medians, and each setting's mean stages.
#[derive(Serialize, Debug, Clone)]
pub struct Paired {
    /// Label of the first setting.
    pub a: String,
    /// Label of the second setting.
    pub b: String,
    /// Rounds run; every query ran once per round under each setting.
    pub rounds: usize,
    /// Top-10 one-thread latency of `a`, over every query of every round.
    pub a_latency: Latency,
    /// The same for `b`.
    pub b_latency: Latency,
    /// Per round, `a`'s median over `b`'s.
    pub round_ratios: Vec<f64>,
    /// Mean stages of `a` over the rounds, when the engine reports them.
    pub a_stages: Option<Stages>,
    /// The same for `b`.
    pub b_stages: Option<Stages>,
}

/// Top-10 latency of `a` against `b` on one thread, in alternating blocks of every query:
/// A B, then B A, and so on. Timing one setting's whole pass after the other's lets a slow
/// minute of a shared machine land on one side (single runs here swing by ±20%); alternating
/// blocks put drift on both sides, and keeping each block whole keeps what one query leaves
/// in the caches for the next within a setting.
pub fn paired_top10(
    a: &dyn Engine,
    b: &dyn Engine,
    queries: &[Vec<f32>],
    knobs: Knobs,
    rounds: usize,
) -> Result<Paired> {
    warm_up(a, queries, knobs, &[10])?;
    warm_up(b, queries, knobs, &[10])?;
    let (mut ms_a, mut ms_b) = (Vec::new(), Vec::new());
    let (mut st_a, mut st_b) = (Vec::new(), Vec::new());
    let mut round_ratios = Vec::with_capacity(rounds);
    for r in 0..rounds {
        let block = |e: &dyn Engine| sequential(e, queries, 10, knobs);
        let ((_, la, sa), (_, lb, sb)) = if r % 2 == 0 {
            let x = block(a)?;
            (x, block(b)?)
        } else {
            let y = block(b)?;
            (block(a)?, y)
        };
        round_ratios.push(Latency::of(&la).p50_ms / Latency::of(&lb).p50_ms);
        ms_a.extend(la);
        ms_b.extend(lb);
        st_a.extend(sa);
        st_b.extend(sb);
    }
    Ok(Paired {
        a: a.name().to_string(),
        b: b.name().to_string(),
        rounds,
        a_latency: Latency::of(&ms_a),
        b_latency: Latency::of(&ms_b),
        round_ratios,
        a_stages: Stages::mean_of(&st_a),
        b_stages: Stages::mean_of(&st_b),
    })
}

/// nDCG@10 and judged recall@100 of the exhaustive ranking itself: the ceiling any
/// approximate search of these vectors can reach.
pub fn exhaustive_quality(ds: &Dataset, truth: &Truth) -> Option<(f64, f64)> {
    let q = ds.qrels.as_ref()?;
    let nd: Vec<f64> = (0..q.len())
        .map(|i| metrics::ndcg_at(&truth.ids(i, 10), &q[i], 10))
        .collect();
    let jr: Vec<f64> = (0..q.len())
        .map(|i| metrics::judged_recall_at(&truth.ids(i, 100), &q[i], 100))
        .collect();
    Some((metrics::mean(&nd), metrics::mean(&jr)))
}
