//! `tessera-bench`: Tessera's benchmark harness.
//!
//! `tessera-bench synthetic` generates a clustered corpus (see `tessera::synthetic`), ingests
//! it, and measures in one process and one run: ingest throughput (codec training included),
//! index bytes per token, single-thread search latency (p50/p95) for top-10 and top-100,
//! recall@10 against full-precision exhaustive MaxSim, and the recall cost of codec drift.
//! It prints a markdown table and can write the same figures as JSON.

mod gpu;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use rayon::prelude::*;
use serde::Serialize;
use tessera::synthetic::{SyntheticCorpus, SyntheticSpec};
use tessera::{CollectionConfig, Database, Document, ExternalId, IngestOptions, SearchParams};

#[derive(Parser)]
#[command(name = "tessera-bench", about = "Tessera benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Synthetic clustered corpus: ingest, size, latency, recall, drift.
    Synthetic(SyntheticArgs),
    /// CPU vs GPU search: latency, batch QPS, recall, bytes moved, bandwidth.
    Gpu(gpu::GpuArgs),
}

#[derive(Parser, Clone)]
struct SyntheticArgs {
    /// Documents.
    #[arg(long, default_value_t = 100_000)]
    docs: usize,
    /// Dimension.
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// Fewest tokens per document.
    #[arg(long, default_value_t = 32)]
    min_tokens: usize,
    /// Most tokens per document.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Cluster centres of the generator.
    #[arg(long, default_value_t = 8192)]
    clusters: usize,
    /// Queries timed (32 tokens each).
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Queries with exhaustive ground truth (recall is measured on these).
    #[arg(long, default_value_t = 50)]
    truth_queries: usize,
    /// Residual bits.
    #[arg(long, default_value_t = 2)]
    nbits: u32,
    /// Documents per ingest batch (the first batch trains the codec).
    #[arg(long, default_value_t = 25_000)]
    batch: usize,
    /// nprobe values to sweep (comma-separated); the first is reported as the default row.
    #[arg(long, value_delimiter = ',', default_value = "8")]
    nprobe: Vec<u32>,
    /// Re-rank budgets to sweep (comma-separated; 0 = default).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    rerank: Vec<usize>,
    /// Also measure codec drift (train on part of the clusters, ingest the rest).
    #[arg(long)]
    drift: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Database directory (default: a temporary one).
    #[arg(long)]
    db: Option<PathBuf>,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Serialize, Default)]
struct Report {
    docs: usize,
    tokens: usize,
    dim: usize,
    nbits: u32,
    centroids: u32,
    ingest_seconds: f64,
    ingest_tokens_per_s: f64,
    bytes_per_token: f64,
    disk_bytes: u64,
    postings_stored: u64,
    postings_raw: u64,
    rows: Vec<Row>,
    drift: Option<Drift>,
}

#[derive(Serialize, Clone)]
struct Row {
    nprobe: u32,
    rerank: usize,
    k: usize,
    p50_ms: f64,
    p95_ms: f64,
    recall_at_10: f64,
    /// Mean documents scored approximately.
    candidates: f64,
    /// Mean milliseconds per stage: centroid scores, approximate scoring, exact re-rank.
    centroid_ms: f64,
    approx_ms: f64,
    rerank_ms: f64,
}

#[derive(Serialize)]
struct Drift {
    recall_in_distribution: f64,
    recall_drifted: f64,
    recall_after_retrain: f64,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Synthetic(a) => synthetic(&a),
        Command::Gpu(a) => gpu::run(&a),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((p * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1)]
}

/// Exact full-precision top-k of `q` over the raw corpus, on all cores.
fn exact_top_k(corpus: &SyntheticCorpus, q: &[f32], k: usize) -> Vec<u64> {
    let n = corpus.n_docs();
    let dim = corpus.dim;
    let chunk = 256;
    let mut scores: Vec<(f32, u64)> = (0..n.div_ceil(chunk))
        .into_par_iter()
        .flat_map_iter(|c| {
            let lo = c * chunk;
            let hi = ((c + 1) * chunk).min(n);
            let base = corpus.offsets[lo];
            let offsets: Vec<usize> = corpus.offsets[lo..=hi].iter().map(|o| o - base).collect();
            let rows = &corpus.flat[base * dim..corpus.offsets[hi] * dim];
            let mut s = vec![0f32; hi - lo];
            tessera_kernels::maxsim_many(q, rows, &offsets, dim, &mut s);
            s.into_iter()
                .enumerate()
                .map(move |(i, v)| (v, (lo + i) as u64))
        })
        .collect();
    let top = k.min(scores.len());
    if top > 0 {
        scores.select_nth_unstable_by(top - 1, |a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    }
    scores.truncate(top);
    scores.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scores.into_iter().map(|(_, i)| i).collect()
}

fn recall(got: &[tessera::Hit], truth: &[u64]) -> f64 {
    let hits = truth
        .iter()
        .filter(|t| got.iter().any(|h| h.id == ExternalId::Int(**t)))
        .count();
    hits as f64 / truth.len().max(1) as f64
}

fn ingest(
    coll: &tessera::Collection,
    corpus: &SyntheticCorpus,
    range: std::ops::Range<usize>,
    batch: usize,
) -> Result<()> {
    let mut start = range.start;
    while start < range.end {
        let end = (start + batch).min(range.end);
        let docs: Vec<Document> = (start..end)
            .map(|i| Document::new(i as u64, corpus.doc(i).to_vec()))
            .collect();
        coll.ingest(&docs, &IngestOptions::default())
            .with_context(|| format!("ingesting docs {start}..{end}"))?;
        eprintln!("  ingested {end}/{} documents", range.end);
        start = end;
    }
    Ok(())
}

fn synthetic(a: &SyntheticArgs) -> Result<()> {
    let spec = SyntheticSpec {
        n_docs: a.docs,
        dim: a.dim,
        min_tokens: a.min_tokens,
        max_tokens: a.max_tokens,
        n_clusters: a.clusters,
        seed: a.seed,
        ..SyntheticSpec::default()
    };
    let t = Instant::now();
    let corpus = SyntheticCorpus::generate(&spec);
    eprintln!(
        "generated {} docs / {} tokens in {:.1} s",
        corpus.n_docs(),
        corpus.n_tokens(),
        t.elapsed().as_secs_f64()
    );
    let tmp = tempfile::tempdir()?;
    let path = a.db.clone().unwrap_or_else(|| tmp.path().join("bench.db"));
    let db = Database::open_or_create(&path)?;
    let coll = db.create_collection(
        "bench",
        CollectionConfig::new(a.dim as u32).with_nbits(a.nbits),
    )?;

    let t = Instant::now();
    ingest(&coll, &corpus, 0..a.docs, a.batch)?;
    let ingest_s = t.elapsed().as_secs_f64();
    let info = coll.info();
    let mut report = Report {
        docs: a.docs,
        tokens: corpus.n_tokens(),
        dim: a.dim,
        nbits: a.nbits,
        centroids: info.centroids,
        ingest_seconds: ingest_s,
        ingest_tokens_per_s: corpus.n_tokens() as f64 / ingest_s,
        bytes_per_token: info.bytes_per_token,
        disk_bytes: info.disk_bytes,
        postings_stored: info.postings_bytes.0,
        postings_raw: info.postings_bytes.1,
        ..Report::default()
    };
    eprintln!(
        "ingest: {ingest_s:.1} s, {:.0} tokens/s, {} centroids",
        report.ingest_tokens_per_s, info.centroids
    );

    let queries = corpus.queries(a.queries, 32, 0.3, a.seed + 1);
    let t = Instant::now();
    let truth: Vec<Vec<u64>> = queries
        .iter()
        .take(a.truth_queries)
        .map(|q| exact_top_k(&corpus, q, 10))
        .collect();
    eprintln!(
        "ground truth for {} queries in {:.1} s",
        truth.len(),
        t.elapsed().as_secs_f64()
    );

    // Latency on one thread: searches run on this thread, one at a time.
    let snap = coll.snapshot();
    for &nprobe in &a.nprobe {
        for &rerank in &a.rerank {
            for k in [10usize, 100] {
                let mut params = SearchParams::default().with_nprobe(nprobe);
                if rerank > 0 {
                    params = params.with_n_rerank(rerank);
                }
                let mut lat = Vec::with_capacity(queries.len());
                let mut rec = 0.0;
                let mut stage = [0f64; 4];
                for (i, q) in queries.iter().enumerate() {
                    let t = Instant::now();
                    let (hits, st) = snap.search_with_stats(q, k, &params)?;
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                    stage[0] += st.candidates as f64;
                    stage[1] += st.centroid_us as f64 / 1e3;
                    stage[2] += st.approx_us as f64 / 1e3;
                    stage[3] += st.rerank_us as f64 / 1e3;
                    if let Some(tr) = truth.get(i) {
                        rec += recall(&hits[..hits.len().min(10)], tr);
                    }
                }
                lat.sort_by(f64::total_cmp);
                let row = Row {
                    nprobe,
                    rerank: params.rerank_budget(k),
                    k,
                    p50_ms: percentile(&lat, 0.5),
                    p95_ms: percentile(&lat, 0.95),
                    recall_at_10: rec / truth.len().max(1) as f64,
                    candidates: stage[0] / queries.len() as f64,
                    centroid_ms: stage[1] / queries.len() as f64,
                    approx_ms: stage[2] / queries.len() as f64,
                    rerank_ms: stage[3] / queries.len() as f64,
                };
                eprintln!(
                    "  nprobe {nprobe} rerank {} top-{k}: p50 {:.2} ms p95 {:.2} ms recall@10 {:.3}",
                    row.rerank, row.p50_ms, row.p95_ms, row.recall_at_10
                );
                report.rows.push(row);
            }
        }
    }
    if a.drift {
        report.drift = Some(drift(a)?);
    }
    print_markdown(&report);
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

/// Codec drift: corpus A uses the first half of the clusters, corpus B the other half.
/// Recall of B's queries when the codec was trained on A only, vs trained on B.
fn drift(a: &SyntheticArgs) -> Result<Drift> {
    let n = (a.docs / 4).max(1000);
    let half = a.clusters / 2;
    let mk = |seed: u64| {
        SyntheticCorpus::generate(&SyntheticSpec {
            n_docs: n,
            dim: a.dim,
            min_tokens: a.min_tokens,
            max_tokens: a.max_tokens,
            n_clusters: half,
            seed,
            ..SyntheticSpec::default()
        })
    };
    // Different seeds give disjoint random cluster centres: B is out of A's distribution.
    let ca = mk(a.seed + 100);
    let cb = mk(a.seed + 200);
    let qb = cb.queries(a.truth_queries, 32, 0.3, 9);
    let truth: Vec<Vec<u64>> = qb.iter().map(|q| exact_top_k(&cb, q, 10)).collect();
    let measure = |coll: &tessera::Collection, offset: u64| -> Result<f64> {
        let mut r = 0.0;
        for (q, t) in qb.iter().zip(&truth) {
            let hits = coll.search(q, 10, &SearchParams::default())?;
            let shifted: Vec<u64> = t.iter().map(|i| i + offset).collect();
            r += recall(&hits, &shifted);
        }
        Ok(r / qb.len() as f64)
    };
    let tmp = tempfile::tempdir()?;
    let db = Database::open_or_create(tmp.path())?;
    // Trained on A, then B ingested with A's codec.
    let drifted = db.create_collection(
        "drifted",
        CollectionConfig::new(a.dim as u32).with_nbits(a.nbits),
    )?;
    ingest(&drifted, &ca, 0..n, n)?;
    let docs_b: Vec<Document> = (0..n)
        .map(|i| Document::new((n + i) as u64, cb.doc(i).to_vec()))
        .collect();
    drifted.ingest(&docs_b, &IngestOptions::default())?;
    let recall_drifted = measure(&drifted, n as u64)?;
    // Trained on B itself.
    let fresh = db.create_collection(
        "fresh",
        CollectionConfig::new(a.dim as u32).with_nbits(a.nbits),
    )?;
    ingest(&fresh, &cb, 0..n, n)?;
    let recall_fresh = measure(&fresh, 0)?;
    // In distribution: A's own queries on the drifted collection.
    let qa = ca.queries(a.truth_queries, 32, 0.3, 10);
    let mut r_in = 0.0;
    for q in &qa {
        let hits = drifted.search(q, 10, &SearchParams::default())?;
        r_in += recall(&hits, &exact_top_k(&ca, q, 10));
    }
    let d = Drift {
        recall_in_distribution: r_in / qa.len() as f64,
        recall_drifted,
        recall_after_retrain: recall_fresh,
    };
    eprintln!(
        "drift: in-distribution {:.3}, drifted {:.3}, trained on the new data {:.3}",
        d.recall_in_distribution, d.recall_drifted, d.recall_after_retrain
    );
    Ok(d)
}

fn print_markdown(r: &Report) {
    println!(
        "corpus: {} docs, {} tokens, dim {}, nbits {}, {} centroids",
        r.docs, r.tokens, r.dim, r.nbits, r.centroids
    );
    println!();
    println!("| metric | value |");
    println!("| --- | --- |");
    println!(
        "| ingest (codec training included) | {:.1} s, {:.0} tokens/s |",
        r.ingest_seconds, r.ingest_tokens_per_s
    );
    println!(
        "| index bytes/token (segments) | {:.2} |",
        r.bytes_per_token
    );
    println!("| disk bytes (segments + codec) | {} |", r.disk_bytes);
    println!(
        "| postings zstd | {} B stored vs {} B raw ({:.1}x) |",
        r.postings_stored,
        r.postings_raw,
        r.postings_raw as f64 / r.postings_stored.max(1) as f64
    );
    println!();
    println!(
        "| nprobe | rerank | k | p50 ms (1 thread) | p95 ms | recall@10 vs exhaustive | candidates | centroids ms | approx ms | rerank ms |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for row in &r.rows {
        println!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.3} | {:.0} | {:.2} | {:.2} | {:.2} |",
            row.nprobe,
            row.rerank,
            row.k,
            row.p50_ms,
            row.p95_ms,
            row.recall_at_10,
            row.candidates,
            row.centroid_ms,
            row.approx_ms,
            row.rerank_ms
        );
    }
    if let Some(d) = &r.drift {
        println!();
        println!("| codec drift | recall@10 |");
        println!("| --- | ---: |");
        println!(
            "| in distribution (codec trained on these clusters) | {:.3} |",
            d.recall_in_distribution
        );
        println!(
            "| drifted (new clusters, old codec) | {:.3} |",
            d.recall_drifted
        );
        println!(
            "| same data, codec trained on it | {:.3} |",
            d.recall_after_retrain
        );
    }
}
