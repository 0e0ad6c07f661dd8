//! `tessera-bench gpu`: the CPU and GPU search paths on one collection, in one run.
//!
//! Builds (or reuses, with `--db`) a synthetic clustered collection of `--docs` documents of
//! exactly `--tokens` tokens, then for each device of `--devices` measures: single-query
//! latency p50/p99 for top-10 and top-100 (one query at a time, one thread issuing),
//! throughput of batches of 32 and 256 queries (`Snapshot::search_batch`: one batched launch
//! sequence on a GPU, all cores on the CPU), recall@10 against exact MaxSim (the engine's
//! exhaustive search on the CPU over every document's originals, f16, on all cores), and on a GPU the bytes moved per query
//! (host<->device copies, and the kernels' device-memory traffic from the launch code's access
//! model) and that traffic over the single-query time as a fraction of the device's
//! theoretical memory bandwidth. A device that cannot be used is reported as skipped with
//! the reason, never measured as something else.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tessera::synthetic::{SyntheticCorpus, SyntheticSpec};
use tessera::{
    CollectionConfig, Database, Device, Document, ExternalId, IngestOptions, ResolvedDevice,
    SearchParams, Snapshot,
};

/// Options of `tessera-bench gpu`.
#[derive(Parser, Clone, Debug)]
pub struct GpuArgs {
    /// Documents.
    #[arg(long, default_value_t = 400_000)]
    docs: usize,
    /// Tokens per document.
    #[arg(long, default_value_t = 100)]
    tokens: usize,
    /// Dimension.
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// Residual bits.
    #[arg(long, default_value_t = 2)]
    nbits: u32,
    /// Cluster centres of the generator.
    #[arg(long, default_value_t = 8192)]
    clusters: usize,
    /// Queries timed one by one (32 tokens each).
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Queries with exhaustive ground truth (recall is measured on these).
    #[arg(long, default_value_t = 50)]
    truth_queries: usize,
    /// Batch sizes for throughput (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "32,256")]
    batches: Vec<usize>,
    /// Devices to measure (comma-separated: cpu, cuda, cuda:N).
    #[arg(long, value_delimiter = ',', default_value = "cpu,cuda")]
    devices: Vec<Device>,
    /// Centroids probed per query token (the engine's default).
    #[arg(long, default_value_t = 16)]
    nprobe: u32,
    /// Documents per ingest batch.
    #[arg(long, default_value_t = 50_000)]
    batch_docs: usize,
    /// Database directory; an existing collection of the same shape there is reused (skips
    /// generation and ingest).
    #[arg(long)]
    db: Option<PathBuf>,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Serialize, Clone, Debug)]
struct DeviceRow {
    device: String,
    /// Why the device was not measured, if it was not.
    skipped: Option<String>,
    /// First search: uploads the collection to the device (GPU) or warms caches (CPU).
    first_search_ms: f64,
    p50_ms_top10: f64,
    p99_ms_top10: f64,
    p50_ms_top100: f64,
    p99_ms_top100: f64,
    /// (batch size, queries per second, top-10).
    qps: Vec<(usize, f64)>,
    recall_at_10: f64,
    /// GPU only: host-to-device and device-to-host bytes per query.
    h2d_bytes_per_query: Option<f64>,
    d2h_bytes_per_query: Option<f64>,
    /// GPU only: modelled device-memory bytes per query (top-10 single queries).
    device_bytes_per_query: Option<f64>,
    /// GPU only: modelled bytes over p50 top-10 latency, over the theoretical bandwidth.
    bandwidth_fraction: Option<f64>,
}

#[derive(Serialize, Debug)]
struct GpuReport {
    docs: usize,
    tokens: usize,
    dim: usize,
    nbits: u32,
    centroids: u32,
    nprobe: u32,
    rows: Vec<DeviceRow>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((p * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1)]
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// Opens the collection, generating and ingesting the corpus unless `--db` already holds it.
fn collection(a: &GpuArgs, path: &std::path::Path) -> Result<tessera::Collection> {
    let db = Database::open_or_create(path)?;
    let name = format!("gpu-{}x{}x{}-b{}", a.docs, a.tokens, a.dim, a.nbits);
    if let Ok(c) = db.collection(&name) {
        if c.info().documents == a.docs as u64 {
            eprintln!("reusing collection {name} in {}", path.display());
            return Ok(c);
        }
        db.drop_collection(&name)?;
    }
    let t = Instant::now();
    let corpus = SyntheticCorpus::generate(&SyntheticSpec {
        n_docs: a.docs,
        dim: a.dim,
        min_tokens: a.tokens,
        max_tokens: a.tokens,
        n_clusters: a.clusters,
        seed: a.seed,
        ..SyntheticSpec::default()
    });
    eprintln!(
        "generated {} docs / {} tokens in {:.1} s",
        corpus.n_docs(),
        corpus.n_tokens(),
        t.elapsed().as_secs_f64()
    );
    let coll = db.create_collection(
        &name,
        CollectionConfig::new(a.dim as u32).with_nbits(a.nbits),
    )?;
    let t = Instant::now();
    let opts = IngestOptions::default().with_expected_total_tokens(corpus.n_tokens() as u64);
    let mut start = 0;
    while start < a.docs {
        let end = (start + a.batch_docs.max(1)).min(a.docs);
        let docs: Vec<Document> = (start..end)
            .map(|i| Document::new(i as u64, corpus.doc(i).to_vec()))
            .collect();
        coll.ingest(&docs, &opts)
            .with_context(|| format!("ingesting docs {start}..{end}"))?;
        eprintln!("  ingested {end}/{} documents", a.docs);
        start = end;
    }
    eprintln!("ingest: {:.1} s", t.elapsed().as_secs_f64());
    Ok(coll)
}

/// Queries of 32 tokens from stored documents plus noise (as `SyntheticCorpus::queries`, but
/// from the collection, so a reused database needs no corpus).
fn queries(coll: &tessera::Collection, a: &GpuArgs) -> Result<Vec<Vec<f32>>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(a.seed ^ 0x9e37_79b9);
    let dim = a.dim;
    let sigma = 0.3 / (dim as f32).sqrt();
    let mut out = Vec::with_capacity(a.queries);
    while out.len() < a.queries {
        let src = rng.random_range(0..a.docs) as u64;
        let Some(doc) = coll.vectors(&ExternalId::Int(src))? else {
            continue;
        };
        let rows = doc.len() / dim;
        let mut q = Vec::with_capacity(32 * dim);
        for _ in 0..32 {
            let r = rng.random_range(0..rows);
            let mut t: Vec<f32> = doc[r * dim..(r + 1) * dim]
                .iter()
                .map(|&x| {
                    // Box-Muller: one normal sample per coordinate.
                    let (u1, u2): (f32, f32) = (rng.random_range(1e-7..1.0), rng.random());
                    x + sigma * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
                })
                .collect();
            normalise(&mut t);
            q.extend(t);
        }
        out.push(q);
    }
    Ok(out)
}

fn recall(got: &[tessera::Hit], truth: &[tessera::Hit]) -> f64 {
    let found = truth
        .iter()
        .filter(|t| got.iter().any(|h| h.id == t.id))
        .count();
    found as f64 / truth.len().max(1) as f64
}

fn measure(
    snap: &Snapshot,
    dev: Device,
    qs: &[Vec<f32>],
    truth: &[Vec<tessera::Hit>],
    a: &GpuArgs,
) -> Result<DeviceRow> {
    let mut row = DeviceRow {
        device: dev.to_string(),
        skipped: None,
        first_search_ms: 0.0,
        p50_ms_top10: f64::NAN,
        p99_ms_top10: f64::NAN,
        p50_ms_top100: f64::NAN,
        p99_ms_top100: f64::NAN,
        qps: Vec::new(),
        recall_at_10: f64::NAN,
        h2d_bytes_per_query: None,
        d2h_bytes_per_query: None,
        device_bytes_per_query: None,
        bandwidth_fraction: None,
    };
    let resolved = match tessera::resolve_device(dev) {
        Ok(r) => r,
        Err(e) => {
            row.skipped = Some(e.to_string());
            return Ok(row);
        }
    };
    row.device = resolved.to_string();
    let params = SearchParams::default()
        .with_nprobe(a.nprobe)
        .with_device(dev);
    let t = Instant::now();
    snap.search(&qs[0], 10, &params)?;
    row.first_search_ms = t.elapsed().as_secs_f64() * 1e3;
    let before = tessera::gpu_counters();
    for k in [10usize, 100] {
        let mut lat = Vec::with_capacity(qs.len());
        let mut rec = 0.0;
        for (i, q) in qs.iter().enumerate() {
            let t = Instant::now();
            let hits = snap.search(q, k, &params)?;
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            if let Some(tr) = truth.get(i) {
                rec += recall(&hits[..hits.len().min(10)], tr);
            }
        }
        lat.sort_by(f64::total_cmp);
        if k == 10 {
            row.p50_ms_top10 = percentile(&lat, 0.5);
            row.p99_ms_top10 = percentile(&lat, 0.99);
            row.recall_at_10 = rec / truth.len().max(1) as f64;
            if let ResolvedDevice::Cuda {
                memory_bandwidth, ..
            } = &resolved
            {
                let c = tessera::gpu_counters();
                let n = (c.queries - before.queries).max(1) as f64;
                row.h2d_bytes_per_query = Some((c.h2d_bytes - before.h2d_bytes) as f64 / n);
                row.d2h_bytes_per_query = Some((c.d2h_bytes - before.d2h_bytes) as f64 / n);
                let dev_bytes = (c.device_bytes_model - before.device_bytes_model) as f64 / n;
                row.device_bytes_per_query = Some(dev_bytes);
                if *memory_bandwidth > 0 {
                    row.bandwidth_fraction =
                        Some(dev_bytes / (row.p50_ms_top10 / 1e3) / *memory_bandwidth as f64);
                }
            }
        } else {
            row.p50_ms_top100 = percentile(&lat, 0.5);
            row.p99_ms_top100 = percentile(&lat, 0.99);
        }
    }
    for &b in &a.batches {
        let batch: Vec<Vec<f32>> = qs.iter().cycle().take(b).cloned().collect();
        snap.search_batch(&batch, 10, &params)?;
        let t = Instant::now();
        let mut reps = 0usize;
        while reps < 3 || (t.elapsed().as_secs_f64() < 2.0 && reps < 50) {
            snap.search_batch(&batch, 10, &params)?;
            reps += 1;
        }
        row.qps
            .push((b, (b * reps) as f64 / t.elapsed().as_secs_f64()));
    }
    Ok(row)
}

/// Runs the scenario and prints a markdown table (and JSON with `--json`).
pub fn run(a: &GpuArgs) -> Result<()> {
    if a.queries == 0 || a.docs == 0 {
        bail!("--queries and --docs must be at least 1");
    }
    let tmp = tempfile::tempdir()?;
    let path = a.db.clone().unwrap_or_else(|| tmp.path().join("bench.db"));
    let coll = collection(a, &path)?;
    let info = coll.info();
    let qs = queries(&coll, a)?;
    let snap = coll.snapshot();
    // Ground truth: exact MaxSim over every document's originals (the exhaustive search
    // refines every document), on the CPU's cores: the device's exhaustive path would
    // refine them on the host all the same.
    let t = Instant::now();
    let exact = SearchParams::exhaustive()
        .with_threads(0)
        .with_device(Device::Cpu);
    let truth = qs[..a.truth_queries.min(qs.len())]
        .iter()
        .map(|q| snap.search(q, 10, &exact))
        .collect::<tessera::Result<Vec<_>>>()?;
    eprintln!(
        "exact MaxSim ground truth for {} queries in {:.1} s",
        truth.len(),
        t.elapsed().as_secs_f64()
    );
    let mut report = GpuReport {
        docs: info.documents as usize,
        tokens: info.tokens as usize,
        dim: a.dim,
        nbits: a.nbits,
        centroids: info.centroids,
        nprobe: a.nprobe,
        rows: Vec::new(),
    };
    for &dev in &a.devices {
        let row = measure(&snap, dev, &qs, &truth, a)?;
        eprintln!("{row:?}");
        report.rows.push(row);
    }
    print_markdown(&report);
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

fn opt(v: Option<f64>, scale: f64, digits: usize) -> String {
    v.map_or("n/a".into(), |x| format!("{:.*}", digits, x * scale))
}

fn print_markdown(r: &GpuReport) {
    println!(
        "corpus: {} docs, {} tokens, dim {}, nbits {}, {} centroids; nprobe {}, 32-token queries",
        r.docs, r.tokens, r.dim, r.nbits, r.centroids, r.nprobe
    );
    println!();
    let batches: Vec<usize> =
        r.rows
            .iter()
            .flat_map(|x| x.qps.iter().map(|q| q.0))
            .fold(Vec::new(), |mut v, b| {
                if !v.contains(&b) {
                    v.push(b);
                }
                v
            });
    let mut head = String::from(
        "| device | first search ms | top-10 p50 ms | top-10 p99 ms | top-100 p50 ms | top-100 p99 ms |",
    );
    for b in &batches {
        head.push_str(&format!(" QPS batch {b} |"));
    }
    head.push_str(" recall@10 vs exact MaxSim | H2D B/query | D2H B/query | device B/query (model) | fraction of peak bandwidth |");
    println!("{head}");
    println!("|{}", " --- |".repeat(11 + batches.len()));
    for row in &r.rows {
        if let Some(why) = &row.skipped {
            println!("| {} | skipped: {why} |", row.device);
            continue;
        }
        let mut line = format!(
            "| {} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} |",
            row.device,
            row.first_search_ms,
            row.p50_ms_top10,
            row.p99_ms_top10,
            row.p50_ms_top100,
            row.p99_ms_top100
        );
        for b in &batches {
            let q = row.qps.iter().find(|q| q.0 == *b).map(|q| q.1);
            line.push_str(&format!(" {} |", opt(q, 1.0, 0)));
        }
        line.push_str(&format!(
            " {:.3} | {} | {} | {} | {} |",
            row.recall_at_10,
            opt(row.h2d_bytes_per_query, 1.0, 0),
            opt(row.d2h_bytes_per_query, 1.0, 0),
            opt(row.device_bytes_per_query, 1.0, 0),
            opt(row.bandwidth_fraction, 1.0, 3)
        ));
        println!("{line}");
    }
}
