//! One scenario, in one process and one run: ground truth, index builds, measurements of
//! every engine at its default and over a sweep, and the report.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::dataset::Dataset;
use crate::engines::{Engine, Knobs, TesseraEngine};
use crate::measure;
use crate::report::{DatasetInfo, EngineReport, Report, TruthInfo};
use crate::{metrics, stats, truth};

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Scenario name for the report.
    pub scenario: String,
    /// Command line for the report.
    pub command: String,
    /// Residual bits (both engines).
    pub nbits: u32,
    /// Tessera's centroid count (`None`: the engine's rule).
    pub centroids: Option<u32>,
    /// Tessera ingest batch (documents).
    pub batch: usize,
    /// Tessera's default setting (fully measured).
    pub default_knobs: Knobs,
    /// Tessera's sweep.
    pub sweep: Vec<Knobs>,
    /// Devices Tessera is measured on, each a row of its own; one that this machine cannot
    /// use is skipped and the reason recorded.
    pub devices: Vec<tessera::Device>,
    /// Also build and measure next-plaid (needs the `peer-next-plaid` feature).
    pub peer: bool,
    /// next-plaid's default setting.
    pub peer_default: Knobs,
    /// next-plaid's sweep.
    pub peer_sweep: Vec<Knobs>,
    /// Where indexes are built (a temporary directory when `None`).
    pub work_dir: Option<PathBuf>,
    /// Search the Tessera index already in `work_dir` instead of building one.
    pub reuse_index: bool,
    /// Ground-truth cache directory (`None`: always compute).
    pub truth_cache: Option<PathBuf>,
    /// Compute token statistics.
    pub stats: bool,
    /// Queries searched exhaustively over Tessera's compressed vectors (codec ceiling).
    pub exhaustive_queries: usize,
    /// Also measure the CPU build with the refine stage off, as a row of its own.
    pub refine_off_row: bool,
    /// Tessera's prefilter budget (`None`: the engine's default rule).
    pub prefilter: Option<usize>,
}

/// Documents of a streamed corpus that token statistics are computed over.
const STATS_HEAD_DOCS: usize = 20_000;

/// Whether this build can measure next-plaid.
pub const PEER_AVAILABLE: bool = cfg!(feature = "peer-next-plaid");

fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=10"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn utc_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn measure_engine(
    engine: &dyn Engine,
    ds: &Dataset,
    t: &truth::Truth,
    default: Knobs,
    sweep: &[Knobs],
    build: crate::engines::BuildInfo,
) -> Result<EngineReport> {
    eprintln!("{}: measuring the default setting", engine.name());
    let full = measure::full(engine, ds, t, default)?;
    eprintln!(
        "  recall@10 {:.3}, top-10 p50 {:.2} ms (1 thread), {:.1} QPS ({} threads)",
        full.recall_at_10, full.top10_one_thread.p50_ms, full.all_threads_qps, full.threads
    );
    let mut points = Vec::new();
    for &k in sweep {
        let p = measure::sweep_point(engine, ds, t, k)?;
        eprintln!(
            "  {} {} {} {}: recall@10 {:.3}, p50 {:.2} ms",
            engine.knob_names().0,
            k.probe,
            engine.knob_names().1,
            p.rerank_effective,
            p.recall_at_10,
            p.latency.p50_ms
        );
        points.push(p);
    }
    let (a, b) = engine.knob_names();
    Ok(EngineReport {
        name: engine.name().to_string(),
        knob_names: (a.into(), b.into()),
        build,
        default: full,
        sweep: points,
        exhaustive_recall_at_10: None,
        exhaustive_queries: 0,
        originals_exhaustive_recall_at_10: None,
    })
}

/// `dir`, if nothing is there yet: an index is never built over an earlier one.
fn unused(dir: PathBuf) -> Result<PathBuf> {
    if dir.exists() {
        bail!(
            "{}: already exists (remove it or pick another --work-dir)",
            dir.display()
        );
    }
    Ok(dir)
}

/// Runs a scenario on `ds` (its vectors are freed once the indexes are built).
pub fn run(mut ds: Dataset, o: &RunOptions) -> Result<Report> {
    if o.peer && !PEER_AVAILABLE {
        bail!(
            "next-plaid was requested but this binary was built without --features peer-next-plaid"
        );
    }
    if o.peer && ds.stream.is_some() {
        bail!(
            "{}: next-plaid indexes a corpus held in memory, and this one is streamed \
             ({} tokens); run with --peer false",
            ds.name,
            ds.n_tokens()
        );
    }
    if ds.queries.is_empty() || ds.n_docs() == 0 {
        bail!("{}: the dataset has no documents or no queries", ds.name);
    }
    let machine = metrics::machine();
    let started_utc = utc_now();
    // Read now: a long run must report the tree it started from, not one committed since.
    let commit = git_commit();
    let token_stats = if !o.stats {
        None
    } else if ds.stream.is_some() {
        // A streamed corpus is sampled from its head; the generator is stationary, so the
        // head's statistics are the corpus's.
        Some(stats::token_stats(&ds.head(STATS_HEAD_DOCS)?))
    } else {
        Some(stats::token_stats(&ds))
    };
    let t0 = Instant::now();
    let (t, cached) = truth::cached(&ds, 100, o.truth_cache.as_deref())?;
    eprintln!(
        "ground truth: {} queries, {}",
        t.ranked.len(),
        if cached {
            "from cache".to_string()
        } else {
            format!("{:.0} s", t0.elapsed().as_secs_f64())
        }
    );
    let tmp = tempfile::tempdir().context("cannot create a temporary directory")?;
    let work = o
        .work_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&work).with_context(|| format!("{}: cannot create", work.display()))?;
    let tbuild;
    let tdir;
    if o.reuse_index {
        tdir = work.join("tessera.db");
        tbuild = TesseraEngine::reuse(&tdir, ds.n_docs(), ds.n_tokens())?;
        eprintln!("tessera: reusing {} (ingest not timed)", tdir.display());
    } else {
        tdir = unused(work.join("tessera.db"))?;
        eprintln!("tessera: ingesting {} documents", ds.n_docs());
        tbuild = TesseraEngine::build(&ds, &tdir, o.nbits, o.centroids, o.batch)?;
    }
    eprintln!(
        "  {:.1} s, {:.0} tokens/s, {:.2} B/token",
        tbuild.seconds,
        tbuild.tokens_per_s,
        tbuild.engine_bytes_per_token.unwrap_or(f64::NAN)
    );
    #[cfg(feature = "peer-next-plaid")]
    let pbuild = if o.peer {
        let pdir = unused(work.join("next-plaid"))?;
        eprintln!("next-plaid: indexing {} documents", ds.n_docs());
        let b = crate::peer::NextPlaid::build(&mut ds, &pdir, o.nbits)?;
        eprintln!(
            "  {:.1} s, {:.0} tokens/s, {:.2} B/token",
            b.seconds, b.tokens_per_s, b.dir_bytes_per_token
        );
        Some((pdir, b))
    } else {
        None
    };
    let info = DatasetInfo {
        name: ds.name.clone(),
        docs: ds.n_docs(),
        tokens: ds.n_tokens(),
        dim: ds.dim,
        queries: ds.queries.len(),
        judged: ds.qrels.is_some(),
    };
    ds.drop_vectors();
    let mut engines = Vec::new();
    let mut refine_cost = None;
    let mut skipped = Vec::new();
    for &device in &o.devices {
        if let Err(e) = tessera::resolve_device(device) {
            eprintln!("tessera on {device}: not measured: {e}");
            skipped.push(format!("tessera on {device}: not measured: {e}"));
            continue;
        }
        let engine = TesseraEngine::open(&tdir, device)?.with_prefilter(o.prefilter);
        let mut rep = measure_engine(&engine, &ds, &t, o.default_knobs, &o.sweep, tbuild.clone())?;
        // The codec's ceiling does not depend on the device: measured once.
        let n = if engines.is_empty() {
            ds.queries.len().min(o.exhaustive_queries)
        } else {
            0
        };
        let (mut r, mut ro) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for (i, q) in ds.queries.iter().take(n).enumerate() {
            r.push(metrics::recall_at(
                &engine.search_exhaustive(q, 10, false)?,
                &t.ids(i, 10),
                10,
            ));
            if tbuild.originals_bytes_per_token.is_some_and(|b| b > 0.0) {
                ro.push(metrics::recall_at(
                    &engine.search_exhaustive(q, 10, true)?,
                    &t.ids(i, 10),
                    10,
                ));
            }
        }
        if n > 0 {
            rep.exhaustive_recall_at_10 = Some(metrics::mean(&r));
            rep.exhaustive_queries = n;
            eprintln!(
                "  exhaustive over compressed vectors: recall@10 {:.3}",
                metrics::mean(&r)
            );
        }
        if !ro.is_empty() {
            rep.originals_exhaustive_recall_at_10 = Some(metrics::mean(&ro));
            eprintln!(
                "  exhaustive over the originals: recall@10 {:.3}",
                metrics::mean(&ro)
            );
        }
        engines.push(rep);
        if device == tessera::Device::Cpu && o.refine_off_row {
            // The same build with the refine stage off, in the same run: what refining costs
            // and what it buys.
            let off = engine.refine_off();
            engines.push(measure_engine(
                &off,
                &ds,
                &t,
                o.default_knobs,
                &[],
                tbuild.clone(),
            )?);
            // What the stage costs, timed against each other rather than one after the other.
            let p = measure::paired_top10(
                &engine,
                &off,
                &ds.queries,
                o.default_knobs,
                measure::PAIRED_ROUNDS,
            )?;
            eprintln!(
                "  refine on against off, {} alternating rounds: p50 {:.2} against {:.2} ms (ratio {:.3})",
                p.rounds,
                p.a_latency.p50_ms,
                p.b_latency.p50_ms,
                p.a_latency.p50_ms / p.b_latency.p50_ms
            );
            refine_cost.get_or_insert(p);
        }
    }
    #[cfg(feature = "peer-next-plaid")]
    if let Some((pdir, b)) = pbuild {
        let engine = crate::peer::NextPlaid::open(&pdir)?;
        engines.push(measure_engine(
            &engine,
            &ds,
            &t,
            o.peer_default,
            &o.peer_sweep,
            b,
        )?);
    }
    let (nd, jr) = match measure::exhaustive_quality(&ds, &t) {
        Some((a, b)) => (Some(a), Some(b)),
        None => (None, None),
    };
    let mut machine = machine;
    machine.load_end = metrics::load_average();
    Ok(Report {
        scenario: o.scenario.clone(),
        command: o.command.clone(),
        git_commit: commit,
        started_utc,
        machine,
        dataset: info,
        token_stats,
        truth: TruthInfo {
            k: t.k,
            seconds: t.seconds,
            cached,
            ndcg_at_10: nd,
            judged_recall_at_100: jr,
        },
        engines,
        skipped,
        drift: None,
        refine_cost,
    })
}
