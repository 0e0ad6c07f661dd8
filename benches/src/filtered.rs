//! `tessera-bench filtered`: filtered search on a synthetic collection whose documents carry a
//! random `bucket` (0..1,000,000, from a hash of the id), so `bucket < s * 1e6` keeps a
//! fraction `s` of them. Per selectivity: p50 latency and recall@10 against exact MaxSim
//! (full-precision, plain scoring of every matching document) at the defaults, with the
//! postings stage forced (`filter_scan 0`) and with the centroid-code estimate of every
//! matching document forced (`filter_scan max`), and exact MaxSim over the originals of every
//! matching document forced (`filter_exact max`): the three paths the default chooses
//! between, and two alternatives to the rule that chooses them (twice the probes for the
//! postings stage, twice the refine budget for the estimate of every match).
//! Also the unfiltered search and the time a reopen spends rebuilding the filter index
//! from the catalog.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use rayon::prelude::*;
use serde_json::json;
use tessera::{
    Cmp, CollectionConfig, Database, Document, ExternalId, Filter, IngestOptions, SearchParams,
};
use tessera_bench::dataset::{self, Dataset, Preset};

/// Options of `tessera-bench filtered`.
#[derive(Args, Clone)]
pub struct FilteredArgs {
    /// Documents.
    #[arg(long, default_value_t = 100_000)]
    docs: usize,
    /// Generator settings (see `synthetic --preset`).
    #[arg(long, value_enum, default_value = "minilm")]
    preset: Preset,
    /// Queries (32 tokens each).
    #[arg(long, default_value_t = 20)]
    queries: usize,
    /// Seed of the corpus.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Fractions of the documents the filters keep.
    #[arg(long, value_delimiter = ',', default_value = "0.5,0.1,0.01,0.001")]
    filter_selectivity: Vec<f64>,
    /// Documents per ingest call.
    #[arg(long, default_value_t = 25_000)]
    batch: usize,
    /// Directory for the report.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// Report file stem.
    #[arg(long, default_value = "filtered")]
    name: String,
    /// Build the collection here (default: a temporary directory); a database an earlier
    /// run left there is searched as it is (ingest not timed).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

/// The bucket of document `i`: a fixed hash (splitmix64), uniform over 0..1,000,000.
fn bucket(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) % 1_000_000
}

/// Exact top-10 (ids) of each query over the documents `keep` accepts, full precision.
fn exact_top10(ds: &Dataset, keep: &(dyn Fn(u64) -> bool + Sync)) -> Result<Vec<Vec<u64>>> {
    let mut best: Vec<Vec<(f32, u64)>> = vec![Vec::new(); ds.queries.len()];
    ds.for_each_block(16_384, |first, offs, rows| {
        let dim = ds.dim;
        let docs: Vec<usize> = (0..offs.len() - 1)
            .filter(|&j| keep((first + j) as u64))
            .collect();
        for (q, best) in ds.queries.iter().zip(best.iter_mut()) {
            let scored: Vec<(f32, u64)> = docs
                .par_iter()
                .map(|&j| {
                    let r = &rows[(offs[j] - offs[0]) * dim..(offs[j + 1] - offs[0]) * dim];
                    (tessera_kernels::maxsim(q, r, dim), (first + j) as u64)
                })
                .collect();
            best.extend(scored);
            best.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            best.truncate(10);
        }
        Ok(())
    })?;
    Ok(best
        .into_iter()
        .map(|v| v.into_iter().map(|(_, id)| id).collect())
        .collect())
}

/// The exact top-10 of a selectivity, kept in the work directory so that a run over a
/// reused index does not recompute it.
fn cached_truth(
    work: &std::path::Path,
    a: &FilteredArgs,
    s: f64,
    compute: impl FnOnce() -> Result<Vec<Vec<u64>>>,
) -> Result<Vec<Vec<u64>>> {
    let path = work.join(format!(
        "truth-{}-{}-{}-{s}.json",
        a.docs, a.queries, a.seed
    ));
    if let Ok(bytes) = std::fs::read(&path)
        && let Ok(t) = serde_json::from_slice(&bytes)
    {
        return Ok(t);
    }
    let t = compute()?;
    std::fs::write(&path, serde_json::to_vec(&t)?)
        .with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(t)
}

/// p50 latency (ms, one query at a time after one warm-up pass) and mean recall@10.
fn measure(
    coll: &tessera::Collection,
    ds: &Dataset,
    params: &SearchParams,
    truth: &[Vec<u64>],
) -> Result<(f64, f64)> {
    for q in &ds.queries {
        coll.search(q, 10, params)?;
    }
    let mut times = Vec::with_capacity(ds.queries.len());
    let mut recall = 0.0;
    for (q, t) in ds.queries.iter().zip(truth) {
        let start = Instant::now();
        let hits = coll.search(q, 10, params)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
        let found = t
            .iter()
            .filter(|id| hits.iter().any(|h| h.id == ExternalId::Int(**id)))
            .count();
        recall += found as f64 / t.len().max(1) as f64;
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], recall / ds.queries.len() as f64))
}

/// The alternatives measured against the default's rule (BENCHMARKS.md says what chose it):
/// the postings stage with twice the probes, and the estimate of every matching document
/// with twice the refine budget.
fn alternatives(forced: &SearchParams) -> Vec<(&'static str, SearchParams)> {
    let d = SearchParams::default();
    vec![
        (
            "postings stage at 2x nprobe (filter_scan 0)",
            forced.clone().with_filter_scan(0).with_nprobe(2 * d.nprobe),
        ),
        (
            "estimate every matching doc, 2x refine (filter_scan max)",
            forced
                .clone()
                .with_filter_scan(usize::MAX)
                .with_n_refine(2 * d.refine_budget(10)),
        ),
    ]
}

/// Runs the scenario and writes `<out>/<name>.md`.
pub fn run(a: &FilteredArgs) -> Result<()> {
    let spec = tessera::synthetic::SyntheticSpec {
        n_docs: a.docs,
        seed: a.seed,
        ..a.preset.spec()
    };
    let ds = dataset::synthetic_streamed("synthetic-filtered", &spec, a.queries)?;
    let temp = tempfile::tempdir().context("work directory")?;
    let work = a
        .work_dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let reuse = work.join("catalog").exists();
    let t = Instant::now();
    if !reuse {
        let db = Database::open_or_create(&work)?;
        let coll = db.create_collection("c", CollectionConfig::new(ds.dim as u32))?;
        let opts = IngestOptions::default().with_expected_total_tokens(ds.n_tokens() as u64);
        ds.for_each_block(a.batch, |first, offs, rows| {
            let docs: Vec<Document> = (0..offs.len() - 1)
                .map(|j| {
                    let id = (first + j) as u64;
                    let r = &rows[(offs[j] - offs[0]) * ds.dim..(offs[j + 1] - offs[0]) * ds.dim];
                    Document::new(id, r.to_vec()).with_metadata(json!({"bucket": bucket(id)}))
                })
                .collect();
            coll.ingest(&docs, &opts)?;
            eprintln!("  ingested {} documents", first + docs.len());
            Ok(())
        })?;
    }
    let ingest = if reuse {
        "reused index".to_string()
    } else {
        format!("ingest {:.0} s", t.elapsed().as_secs_f64())
    };
    let t = Instant::now();
    let db = Database::open(&work)?;
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    let coll = db.collection("c")?;
    let mut md = format!(
        "{} documents ({} tokens, preset {:?}), {} queries of 32 tokens, k = 10; {ingest}; \
         reopen (filter index rebuilt from the catalog) {open_ms:.0} ms\n\n\
         | filter keeps | matching docs | mode | p50 ms | recall@10 vs exact over matching |\n\
         | ---: | ---: | --- | ---: | ---: |\n",
        a.docs,
        ds.n_tokens(),
        a.preset,
        a.queries
    );
    let all = cached_truth(&work, a, 1.0, || exact_top10(&ds, &|_| true))?;
    let (p50, r) = measure(&coll, &ds, &SearchParams::default(), &all)?;
    md += &format!(
        "| 100% (no filter) | {} | default | {p50:.2} | {r:.3} |\n",
        a.docs
    );
    println!("no filter: p50 {p50:.2} ms, recall@10 {r:.3}");
    for &s in &a.filter_selectivity {
        let limit = (s * 1e6).round() as u64;
        let keep = move |id: u64| bucket(id) < limit;
        let matching = (0..a.docs as u64).filter(|&i| keep(i)).count();
        let truth = cached_truth(&work, a, s, || exact_top10(&ds, &keep))?;
        let f = Filter::range("bucket", Cmp::Lt, limit as f64);
        let forced = SearchParams::default().with_filter_exact(0);
        for (mode, params) in [
            ("default", SearchParams::default()),
            (
                "postings stage (filter_scan 0)",
                forced.clone().with_filter_scan(0),
            ),
            (
                "estimate every matching doc (filter_scan max)",
                forced.clone().with_filter_scan(usize::MAX),
            ),
            (
                "exact over originals (filter_exact max)",
                SearchParams::default().with_filter_exact(usize::MAX),
            ),
        ]
        .into_iter()
        .chain(alternatives(&forced))
        {
            let (p50, r) = measure(&coll, &ds, &params.with_filter(f.clone()), &truth)?;
            println!(
                "{:.1}% ({matching} docs) {mode}: p50 {p50:.2} ms, recall@10 {r:.3}",
                s * 100.0
            );
            md += &format!(
                "| {}% | {matching} | {mode} | {p50:.2} | {r:.3} |\n",
                s * 100.0
            );
        }
    }
    std::fs::create_dir_all(&a.out)?;
    let path = a.out.join(format!("{}.md", a.name));
    std::fs::write(&path, &md).with_context(|| format!("{}: cannot write", path.display()))?;
    println!("{md}\nwrote {}", path.display());
    Ok(())
}
