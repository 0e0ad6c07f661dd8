//! `tessera-bench`: Tessera's benchmark harness, one subcommand per scenario. Each runs in one
//! process and one run: exhaustive full-precision ground truth (cached), Tessera's index and
//! search at its default and over a parameter sweep, next-plaid beside it (when built with
//! `--features peer-next-plaid`), and writes `<out>/<name>.md` and `<out>/<name>.json`.
//! See BENCHMARKS.md for the commands behind every recorded table.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use tessera::synthetic::SyntheticSpec;
use tessera_bench::dataset::Preset;
use tessera_bench::engines::Knobs;
use tessera_bench::run::{PEER_AVAILABLE, RunOptions};
use tessera_bench::{dataset, drift, lifecycle, pydoc, report, run, stats, truth};

mod filtered;
mod gpu;
mod rag;

#[derive(Parser)]
#[command(name = "tessera-bench", about = "Tessera benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Synthetic clustered corpus (10K / 100K / 400K documents with --docs).
    Synthetic(SyntheticArgs),
    /// The real corpus: Python's documentation encoded with ColBERT MiniLM, with judgments.
    PythonDoc(PythonDocArgs),
    /// A tiny synthetic run (seconds) exercising every measurement; the test suite runs it.
    Smoke(SmokeArgs),
    /// Encode the python-doc passages and queries into the flat .npy + doclens layout
    /// (called by scripts/bench-data.sh).
    PreparePythonDoc(PrepareArgs),
    /// CPU vs GPU search: latency, batch QPS, recall, bytes moved, bandwidth.
    Gpu(gpu::GpuArgs),
    /// Rerank-only throughput and the cost of a diverse top-10 (issue 14).
    Rag(rag::RagArgs),
    /// A collection through churn (small batches, deletes, upserts), before and after
    /// `compact()`, against a fresh build of the same live documents (synthetic-minilm).
    Lifecycle(LifecycleArgs),
    /// The same synthetic-minilm corpus ingested in one batch and in small batches:
    /// centroids, bytes, recall@10 (issue 13).
    SmallBatches(SmallBatchesArgs),
    /// Filtered search at several selectivities (metadata filters): p50 and recall@10
    /// against exact MaxSim over the matching documents.
    Filtered(filtered::FilteredArgs),
}

#[derive(Args, Clone)]
struct SmallBatchesArgs {
    /// Documents of the synthetic-minilm corpus.
    #[arg(long, default_value_t = 2_000)]
    docs: usize,
    /// Tokens per small batch.
    #[arg(long, default_value_t = 2_000)]
    batch_tokens: usize,
    /// Queries (32 tokens each), with exhaustive ground truth.
    #[arg(long, default_value_t = 50)]
    queries: usize,
    /// Where to write the JSON report.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args, Clone)]
struct LifecycleArgs {
    /// Documents of the synthetic-minilm corpus.
    #[arg(long, default_value_t = 100_000)]
    docs: usize,
    /// Ingest batches the corpus arrives in.
    #[arg(long, default_value_t = 200)]
    batches: usize,
    /// Share of the documents deleted along the way.
    #[arg(long, default_value_t = 0.3)]
    delete_share: f64,
    /// Share of the documents upserted along the way.
    #[arg(long, default_value_t = 0.1)]
    upsert_share: f64,
    /// Queries (32 tokens each), with exhaustive ground truth.
    #[arg(long, default_value_t = 50)]
    queries: usize,
    /// Further fresh builds, each with another codec seed: how far recall moves between
    /// fresh builds of the same documents.
    #[arg(long, default_value_t = 0)]
    fresh_seeds: usize,
    /// Database directory to build in (must not exist; default: a temporary directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Where to write the JSON report.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args, Clone)]
struct Common {
    /// Residual bits (both engines).
    #[arg(long, default_value_t = 2)]
    nbits: u32,
    /// Tessera's centroid count (default: the engine's rule).
    #[arg(long)]
    centroids: Option<u32>,
    /// Documents per Tessera ingest call (the first trains the codec).
    #[arg(long, default_value_t = 25_000)]
    batch: usize,
    /// Tessera's default nprobe (fully measured; default: the engine's default).
    #[arg(long, default_value_t = tessera::SearchParams::default().nprobe)]
    nprobe: u32,
    /// Tessera's default n_rerank (0 = the engine's default budget).
    #[arg(long, default_value_t = 0)]
    rerank: usize,
    /// Tessera sweep: nprobe values (crossed with --sweep-rerank).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32")]
    sweep_nprobe: Vec<u32>,
    /// Tessera sweep: n_rerank values (0 = default budget).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    sweep_rerank: Vec<usize>,
    /// Tessera sweep: n_refine values crossed with the others (0 = refine off; none given:
    /// the default refine budget only).
    #[arg(long, value_delimiter = ',')]
    sweep_refine: Vec<usize>,
    /// Tessera sweep: prefilter budgets crossed with the others (none given: the engine's
    /// rule only).
    #[arg(long, value_delimiter = ',')]
    sweep_prefilter: Vec<usize>,
    /// Tessera sweep: threads per search (`SearchParams::threads`) crossed with the others
    /// (none given: one); every other figure is one thread per search.
    #[arg(long, value_delimiter = ',')]
    sweep_threads: Vec<usize>,
    /// Devices to measure Tessera's search on, a row each (cpu, cuda, cuda:N); a device this
    /// machine cannot use is skipped, with the reason in the report.
    #[arg(long, value_delimiter = ',', default_value = "cpu,cuda")]
    devices: Vec<tessera::Device>,
    /// Measure next-plaid too (default: yes when built with --features peer-next-plaid).
    #[arg(long)]
    peer: Option<bool>,
    /// next-plaid sweep: n_ivf_probe values (crossed with --peer-sweep-full).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32")]
    peer_sweep_probe: Vec<u32>,
    /// next-plaid sweep: n_full_scores values (0 = its default, 4096).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    peer_sweep_full: Vec<usize>,
    /// Directory for the reports.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// Report file stem (default: derived from the scenario).
    #[arg(long)]
    name: Option<String>,
    /// Where indexes are built (default: a temporary directory, removed afterwards).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// With --work-dir: search the Tessera index an earlier run of the same corpus left
    /// there instead of building it (for iterating on search; ingest is then not timed).
    #[arg(long, requires = "work_dir")]
    reuse_index: bool,
    /// Ground-truth cache directory (default: $TESSERA_BENCH_CACHE/truth or
    /// ~/.cache/tessera/truth).
    #[arg(long)]
    truth_cache: Option<PathBuf>,
    /// Always recompute the ground truth.
    #[arg(long)]
    no_truth_cache: bool,
    /// Queries searched exhaustively over Tessera's compressed vectors (its codec's ceiling).
    #[arg(long, default_value_t = 20)]
    exhaustive_queries: usize,
    /// Tessera's prefilter budget (default: the engine's rule, which grows with the
    /// collection).
    #[arg(long)]
    prefilter: Option<usize>,
    /// Also measure the same build with the refine stage off (a row of its own).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    refine_off: bool,
}

#[derive(Args, Clone)]
struct SyntheticArgs {
    /// Documents.
    #[arg(long, default_value_t = 100_000)]
    docs: usize,
    /// Dimension.
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// Fewest tokens per document [default: 32, or the preset's].
    #[arg(long)]
    min_tokens: Option<usize>,
    /// Most tokens per document [default: 256, or the preset's].
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Cluster centres of the generator.
    #[arg(long, default_value_t = 8192)]
    clusters: usize,
    /// Clusters each document draws its tokens from [default: 8, or the preset's].
    #[arg(long)]
    clusters_per_doc: Option<usize>,
    /// Norm of the noise added to each token [default: 0.6, or the preset's].
    #[arg(long)]
    noise: Option<f32>,
    /// Exponent of the clusters' Zipf popularity [default: 1, or the preset's].
    #[arg(long)]
    zipf: Option<f64>,
    /// Norm of the corpus-wide direction added to every token, i.e. anisotropy
    /// [default: 0, or the preset's].
    #[arg(long)]
    shared: Option<f32>,
    /// Generator settings fitted to real embeddings: `minilm` matches the python-doc
    /// corpus's token statistics (BENCHMARKS.md, "Synthetic corpora against real
    /// embeddings"); the flags above override single settings.
    #[arg(long, value_enum)]
    preset: Option<Preset>,
    /// Print the corpus's token statistics (over its first 20K documents) and stop.
    #[arg(long)]
    stats_only: bool,
    /// Queries (32 tokens each), all with exhaustive ground truth.
    #[arg(long, default_value_t = 100)]
    queries: usize,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also measure codec drift (two corpora of docs/4 documents).
    #[arg(long)]
    drift: bool,
    /// Regenerate the documents block by block instead of holding them (same corpus, same
    /// queries); the default streams when the vectors would take more than 12 GiB.
    #[arg(long)]
    stream: Option<bool>,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Clone)]
struct PythonDocArgs {
    /// The prepared corpus (scripts/bench-data.sh python-doc).
    #[arg(long)]
    data: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Clone)]
struct SmokeArgs {
    /// Directory for the reports.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args, Clone)]
struct PrepareArgs {
    /// Directory with passages.jsonl, queries.jsonl, qrels.tsv (scripts/python_doc_corpus.py).
    #[arg(long)]
    text: PathBuf,
    /// ColBERT model directory.
    #[arg(long)]
    model: PathBuf,
    /// Output directory (must not exist).
    #[arg(long)]
    out: PathBuf,
    /// The source .deb, recorded in the manifest with its SHA-256.
    #[arg(long)]
    source: Option<PathBuf>,
    /// Texts per encoder call.
    #[arg(long, default_value_t = 64)]
    batch: usize,
}

/// Synthetic corpora whose vectors would take more than this are streamed by default.
const STREAM_ABOVE_BYTES: f64 = 12.0 * (1u64 << 30) as f64;

fn cross(probes: &[u32], reranks: &[usize]) -> Vec<Knobs> {
    probes
        .iter()
        .flat_map(|&probe| {
            reranks.iter().map(move |&rerank| Knobs {
                probe,
                rerank,
                refine: None,
                prefilter: None,
                threads: None,
            })
        })
        .collect()
}

/// Tessera's sweep: probes x re-rank budgets x refine budgets x prefilter budgets (an empty
/// list: that budget's default only).
fn tessera_sweep(c: &Common) -> Vec<Knobs> {
    let sweep = cross(&c.sweep_nprobe, &c.sweep_rerank);
    let sweep = crossed(sweep, &c.sweep_refine, |k, r| k.refine = Some(r));
    let sweep = crossed(sweep, &c.sweep_prefilter, |k, p| k.prefilter = Some(p));
    crossed(sweep, &c.sweep_threads, |k, t| k.threads = Some(t))
}

/// Every setting of `sweep` once per value of `values` set by `set` (`values` empty: as is).
fn crossed(sweep: Vec<Knobs>, values: &[usize], set: impl Fn(&mut Knobs, usize)) -> Vec<Knobs> {
    if values.is_empty() {
        return sweep;
    }
    sweep
        .iter()
        .flat_map(|k| {
            values.iter().map(|&v| {
                let mut k = *k;
                set(&mut k, v);
                k
            })
        })
        .collect()
}

fn options(scenario: &str, c: &Common) -> RunOptions {
    RunOptions {
        scenario: scenario.to_string(),
        command: std::env::args()
            .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
            .collect::<Vec<_>>()
            .join(" "),
        nbits: c.nbits,
        centroids: c.centroids,
        batch: c.batch,
        default_knobs: Knobs {
            probe: c.nprobe,
            rerank: c.rerank,
            refine: None,
            prefilter: None,
            threads: None,
        },
        sweep: tessera_sweep(c),
        devices: c.devices.clone(),
        peer: c.peer.unwrap_or(PEER_AVAILABLE),
        peer_default: Knobs {
            probe: 8,
            rerank: 0,
            refine: None,
            prefilter: None,
            threads: None,
        },
        peer_sweep: cross(&c.peer_sweep_probe, &c.peer_sweep_full),
        work_dir: c.work_dir.clone(),
        reuse_index: c.reuse_index,
        truth_cache: if c.no_truth_cache {
            None
        } else {
            c.truth_cache.clone().or_else(truth::default_cache_dir)
        },
        stats: true,
        exhaustive_queries: c.exhaustive_queries,
        refine_off_row: c.refine_off,
        prefilter: c.prefilter,
    }
}

fn write(out: &PathBuf, name: &str, r: &report::Report) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;
    let md = report::markdown(r);
    print!("{md}");
    let mdp = out.join(format!("{name}.md"));
    std::fs::write(&mdp, &md).with_context(|| format!("{}: cannot write", mdp.display()))?;
    let jp = out.join(format!("{name}.json"));
    std::fs::write(&jp, serde_json::to_string_pretty(r)?)
        .with_context(|| format!("{}: cannot write", jp.display()))?;
    eprintln!("wrote {} and {}", mdp.display(), jp.display());
    Ok(())
}

fn synthetic(a: &SyntheticArgs) -> Result<()> {
    let base = a.preset.map_or(
        SyntheticSpec {
            min_tokens: 32,
            max_tokens: 256,
            ..SyntheticSpec::default()
        },
        Preset::spec,
    );
    let spec = SyntheticSpec {
        n_docs: a.docs,
        dim: a.dim,
        min_tokens: a.min_tokens.unwrap_or(base.min_tokens),
        max_tokens: a.max_tokens.unwrap_or(base.max_tokens),
        n_clusters: a.clusters,
        clusters_per_doc: a.clusters_per_doc.unwrap_or(base.clusters_per_doc),
        noise: a.noise.unwrap_or(base.noise),
        zipf_exponent: a.zipf.unwrap_or(base.zipf_exponent),
        shared: a.shared.unwrap_or(base.shared),
        seed: a.seed,
    };
    // The dataset's name (also the ground-truth cache's file prefix) follows the corpus;
    // `--name` renames only the report, so differently named runs share one cache entry.
    let dataset_name = {
        let preset = a
            .preset
            .map(|p| format!("{p:?}-").to_lowercase())
            .unwrap_or_default();
        if a.docs.is_multiple_of(1000) {
            format!("synthetic-{preset}{}k", a.docs / 1000)
        } else {
            format!("synthetic-{preset}{}", a.docs)
        }
    };
    let name = a
        .common
        .name
        .clone()
        .unwrap_or_else(|| dataset_name.clone());
    if a.stats_only {
        let head = SyntheticSpec {
            n_docs: a.docs.min(20_000),
            ..spec.clone()
        };
        let ds = dataset::synthetic(&dataset_name, &head, 0);
        println!("{spec:?}");
        println!(
            "{}",
            serde_json::to_string_pretty(&stats::token_stats(&ds))?
        );
        return Ok(());
    }
    let t = std::time::Instant::now();
    let approx_bytes =
        a.docs as f64 * (spec.min_tokens + spec.max_tokens) as f64 / 2.0 * a.dim as f64 * 4.0;
    let stream = a.stream.unwrap_or(approx_bytes > STREAM_ABOVE_BYTES);
    let ds = if stream {
        eprintln!(
            "streaming the corpus (about {:.1} GiB of vectors): documents are regenerated per use",
            approx_bytes / (1u64 << 30) as f64
        );
        dataset::synthetic_streamed(&dataset_name, &spec, a.queries)?
    } else {
        dataset::synthetic(&dataset_name, &spec, a.queries)
    };
    eprintln!(
        "generated {} documents, {} tokens in {:.1} s",
        ds.n_docs(),
        ds.n_tokens(),
        t.elapsed().as_secs_f64()
    );
    let mut r = run::run(ds, &options("synthetic", &a.common))?;
    if a.drift {
        r.drift = Some(drift::measure(
            &spec,
            (a.docs / 4).max(1000),
            a.queries.min(50),
            a.common.nbits,
        )?);
    }
    write(&a.common.out, &name, &r)
}

fn python_doc(a: &PythonDocArgs) -> Result<()> {
    let dir = match &a.data {
        Some(d) => d.clone(),
        None => std::env::var_os("TESSERA_DATASETS")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/tessera/datasets"))
            })
            .context("HOME is not set; pass --data")?
            .join("python-doc"),
    };
    let ds = dataset::load_flat(&dir)?;
    eprintln!(
        "loaded {}: {} passages, {} tokens, {} queries",
        dir.display(),
        ds.n_docs(),
        ds.n_tokens(),
        ds.queries.len()
    );
    let name = a.common.name.clone().unwrap_or_else(|| "python-doc".into());
    let r = run::run(ds, &options("python-doc", &a.common))?;
    write(&a.common.out, &name, &r)
}

/// 400 documents of 8–24 tokens at dim 32 with 16 queries and synthetic judgments (each
/// query's source-like top-3 by exact MaxSim): every code path of a real run in seconds.
fn smoke(a: &SmokeArgs) -> Result<()> {
    let spec = SyntheticSpec {
        n_docs: 400,
        dim: 32,
        min_tokens: 8,
        max_tokens: 24,
        n_clusters: 64,
        seed: 5,
        ..SyntheticSpec::default()
    };
    let mut ds = dataset::synthetic("smoke", &spec, 16);
    // Judgments: the exact top-3 of each query, graded 3, 2, 1. The exhaustive ranking is
    // then ideal by construction, so its nDCG@10 must be exactly 1.
    ds.qrels = Some(
        ds.queries
            .iter()
            .map(|q| {
                Ok(truth::exact_top_k(&ds, q, 3)?
                    .iter()
                    .enumerate()
                    .map(|(i, (id, _))| (*id, 3 - i as u32))
                    .collect())
            })
            .collect::<Result<_>>()?,
    );
    let common = Common {
        nbits: 2,
        centroids: None,
        batch: 150,
        nprobe: 8,
        rerank: 0,
        sweep_nprobe: vec![1, 4],
        sweep_rerank: vec![0, 400],
        sweep_refine: vec![],
        sweep_prefilter: vec![],
        sweep_threads: vec![],
        devices: vec![tessera::Device::Cpu, tessera::Device::Cuda(0)],
        peer: Some(false),
        peer_sweep_probe: vec![],
        peer_sweep_full: vec![],
        out: a.out.clone(),
        name: None,
        work_dir: None,
        reuse_index: false,
        truth_cache: None,
        no_truth_cache: true,
        exhaustive_queries: 16,
        refine_off: true,
        prefilter: None,
    };
    let r = run::run(ds, &options("smoke", &common))?;
    write(&a.out, "smoke", &r)
}

fn small_batches(a: &SmallBatchesArgs) -> Result<()> {
    let (spec, name) = minilm(a.docs);
    let ds = dataset::synthetic(&name, &spec, a.queries);
    let (truth, _) = truth::cached(&ds, 100, truth::default_cache_dir().as_deref())?;
    let tmp = tempfile::tempdir()?;
    let r = lifecycle::small_batches(&ds, &truth, &tmp.path().join("db"), a.batch_tokens)?;
    std::fs::write(&a.out, serde_json::to_string_pretty(&r)?)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

/// The synthetic-minilm corpus of `docs` documents as `synthetic --preset minilm --docs N`
/// makes it, and its name there (so the scenarios share its ground-truth cache entries).
fn minilm(docs: usize) -> (SyntheticSpec, String) {
    let spec = SyntheticSpec {
        n_docs: docs,
        dim: 128,
        n_clusters: 8192,
        seed: 1,
        ..Preset::Minilm.spec()
    };
    let name = if docs.is_multiple_of(1000) {
        format!("synthetic-minilm-{}k", docs / 1000)
    } else {
        format!("synthetic-minilm-{docs}")
    };
    (spec, name)
}

fn lifecycle(a: &LifecycleArgs) -> Result<()> {
    let (spec, name) = minilm(a.docs);
    let ds = dataset::synthetic_streamed(&name, &spec, a.queries)?;
    let (truth, _) = truth::cached(&ds, 100, truth::default_cache_dir().as_deref())?;
    let tmp;
    let dir = match &a.work_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().join("db")
        }
    };
    let r = lifecycle::run(
        &ds,
        &truth,
        &dir,
        a.batches,
        a.delete_share,
        a.upsert_share,
        a.fresh_seeds,
    )?;
    std::fs::write(&a.out, serde_json::to_string_pretty(&r)?)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Synthetic(a) => synthetic(&a),
        Command::PythonDoc(a) => python_doc(&a),
        Command::Smoke(a) => smoke(&a),
        Command::Gpu(a) => gpu::run(&a),
        Command::Lifecycle(a) => lifecycle(&a),
        Command::SmallBatches(a) => small_batches(&a),
        Command::Rag(a) => rag::run(&a),
        Command::Filtered(a) => filtered::run(&a),
        Command::PreparePythonDoc(a) => {
            pydoc::prepare(&pydoc::PrepareSpec {
                text_dir: a.text,
                model_dir: a.model,
                out_dir: a.out,
                name: "python-doc".into(),
                source: a.source,
                batch: a.batch,
            })?;
            Ok(())
        }
    }
}
