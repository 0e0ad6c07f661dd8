//! `tessera-bench rag`: what issue 14 adds to a RAG pipeline, measured on one synthetic
//! collection in one run: rerank-only throughput (documents scored per second when another
//! retriever hands over 100 or 1,000 candidates) and the cost of a diverse top-10 (p50 and
//! p95 of the same queries with and without diversity, interleaved query by query so that
//! load on a shared machine falls on both alike).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use rand::SeedableRng;
use rand::seq::index::sample;
use serde::Serialize;
use tessera::synthetic::{QuerySpec, SyntheticSpec, SyntheticStream, queries_from};
use tessera::{
    Collection, CollectionConfig, Database, Device, Diversity, Document, ExternalId, IngestOptions,
    SearchParams,
};
use tessera_bench::dataset::Preset;
use tessera_bench::metrics::{Latency, load_average, machine};

/// Options of `tessera-bench rag`.
#[derive(Parser, Clone, Debug)]
pub struct RagArgs {
    /// Documents (the synthetic-minilm generator: python-doc's token statistics).
    #[arg(long, default_value_t = 100_000)]
    docs: usize,
    /// Queries (32 tokens each, from stored documents plus noise).
    #[arg(long, default_value_t = 50)]
    queries: usize,
    /// Candidate counts handed to rerank.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    candidates: Vec<usize>,
    /// Diversity thresholds to measure, `QUERY:KEPT` each (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "0.9:0.9,0.9:0.6")]
    diversity: Vec<String>,
    /// Database directory to build in, or to reuse when it already holds the collection
    /// (default: a temporary directory).
    #[arg(long)]
    db: Option<PathBuf>,
    /// Documents per ingest batch.
    #[arg(long, default_value_t = 25_000)]
    batch_docs: usize,
    /// Seed of the corpus, queries and candidate samples.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where to write rag.json.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
}

/// Rerank throughput for one candidate count.
#[derive(Serialize, Debug)]
struct RerankRow {
    candidates: usize,
    latency: Latency,
    docs_per_s_at_p50: f64,
    docs_per_s_mean: f64,
}

/// A diverse top-10 against the plain one.
#[derive(Serialize, Debug)]
struct DiversityRow {
    max_query_similarity: f32,
    max_kept_similarity: f32,
    plain: Latency,
    diverse: Latency,
    p50_ratio: f64,
    /// Mean of the diverse top-10's documents that are not in the plain top-10.
    mean_replaced: f64,
}

#[derive(Serialize, Debug)]
struct Report {
    command: String,
    docs: u64,
    tokens: u64,
    queries: usize,
    cpu: String,
    load_start: f64,
    load_end: f64,
    rerank: Vec<RerankRow>,
    diversity: Vec<DiversityRow>,
}

/// Runs the scenario and writes `<out>/rag.json`.
pub fn run(a: &RagArgs) -> Result<()> {
    let tmp;
    let path: &Path = match &a.db {
        Some(p) => p,
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path()
        }
    };
    let coll = collection(a, path)?;
    let qs = queries(&coll, a)?;
    let load_start = load_average();
    let rerank = a
        .candidates
        .iter()
        .map(|&n| rerank_row(&coll, &qs, n, a.seed))
        .collect::<Result<Vec<_>>>()?;
    let diversity = a
        .diversity
        .iter()
        .map(|d| diversity_row(&coll, &qs, parse_thresholds(d)?))
        .collect::<Result<Vec<_>>>()?;
    let info = coll.info();
    let report = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        docs: info.documents,
        tokens: info.tokens,
        queries: qs.len(),
        cpu: machine().cpu,
        load_start,
        load_end: load_average(),
        rerank,
        diversity,
    };
    print_report(&report);
    std::fs::create_dir_all(&a.out)?;
    let out = a.out.join("rag.json");
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("{}: cannot write", out.display()))?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

fn parse_thresholds(s: &str) -> Result<Diversity> {
    let (q, k) = s
        .split_once(':')
        .with_context(|| format!("diversity {s:?}: expected QUERY:KEPT"))?;
    let d = Diversity::new(q.trim().parse()?, k.trim().parse()?);
    d.check().map_err(anyhow::Error::msg)?;
    Ok(d)
}

/// Every query reranks its own random sample of `n` live ids, once to warm the page cache
/// and once measured.
fn rerank_row(coll: &Collection, qs: &[Vec<f32>], n: usize, seed: u64) -> Result<RerankRow> {
    let live = coll.info().documents as usize;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ n as u64);
    let samples: Vec<Vec<ExternalId>> = qs
        .iter()
        .map(|_| {
            sample(&mut rng, live, n.min(live))
                .into_iter()
                .map(|i| ExternalId::Int(i as u64))
                .collect()
        })
        .collect();
    let mut ms = Vec::with_capacity(qs.len());
    for pass in 0..2 {
        for (q, ids) in qs.iter().zip(&samples) {
            let t = Instant::now();
            let r = coll.rerank(q, ids, 10)?;
            let el = t.elapsed().as_secs_f64() * 1e3;
            anyhow::ensure!(r.unknown.is_empty(), "sampled ids are live");
            if pass == 1 {
                ms.push(el);
            }
        }
    }
    let latency = Latency::of(&ms);
    Ok(RerankRow {
        candidates: n,
        docs_per_s_at_p50: n as f64 / (latency.p50_ms / 1e3),
        docs_per_s_mean: n as f64 / (latency.mean_ms / 1e3),
        latency,
    })
}

/// Plain and diverse top-10 of each query, alternating, after one warm-up pass of both.
fn diversity_row(coll: &Collection, qs: &[Vec<f32>], d: Diversity) -> Result<DiversityRow> {
    let plain_p = SearchParams::default().with_device(Device::Cpu);
    let diverse_p = plain_p.clone().with_diversity(d);
    let (mut plain, mut diverse, mut replaced) = (Vec::new(), Vec::new(), Vec::new());
    for pass in 0..2 {
        for q in qs {
            let t = Instant::now();
            let a = coll.search(q, 10, &plain_p)?;
            let ta = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            let b = coll.search(q, 10, &diverse_p)?;
            let tb = t.elapsed().as_secs_f64() * 1e3;
            if pass == 1 {
                plain.push(ta);
                diverse.push(tb);
                replaced.push(b.iter().filter(|h| !a.iter().any(|x| x.id == h.id)).count() as f64);
            }
        }
    }
    let (plain, diverse) = (Latency::of(&plain), Latency::of(&diverse));
    Ok(DiversityRow {
        max_query_similarity: d.max_query_similarity,
        max_kept_similarity: d.max_kept_similarity,
        p50_ratio: diverse.p50_ms / plain.p50_ms,
        mean_replaced: replaced.iter().sum::<f64>() / replaced.len().max(1) as f64,
        plain,
        diverse,
    })
}

fn print_report(r: &Report) {
    println!(
        "rag: {} documents, {} tokens, {} queries; {}; load average {:.2} -> {:.2}",
        r.docs, r.tokens, r.queries, r.cpu, r.load_start, r.load_end
    );
    println!("\n| rerank candidates | p50 ms | p95 ms | documents/s (at p50) |");
    println!("| ---: | ---: | ---: | ---: |");
    for x in &r.rerank {
        println!(
            "| {} | {:.2} | {:.2} | {:.0} |",
            x.candidates, x.latency.p50_ms, x.latency.p95_ms, x.docs_per_s_at_p50
        );
    }
    println!(
        "\n| diversity (query, kept) | plain p50 / p95 ms | diverse p50 / p95 ms | p50 ratio | top-10 replaced |"
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    for x in &r.diversity {
        println!(
            "| {}, {} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} | {:.2} |",
            x.max_query_similarity,
            x.max_kept_similarity,
            x.plain.p50_ms,
            x.plain.p95_ms,
            x.diverse.p50_ms,
            x.diverse.p95_ms,
            x.p50_ratio,
            x.mean_replaced
        );
    }
}

/// Opens the collection, or generates (streamed, batch by batch) and ingests the corpus.
fn collection(a: &RagArgs, path: &Path) -> Result<Collection> {
    let db = Database::open_or_create(path)?;
    let name = format!("rag-minilm-{}-s{}", a.docs, a.seed);
    if let Ok(c) = db.collection(&name) {
        if c.info().documents == a.docs as u64 {
            eprintln!("reusing collection {name} in {}", path.display());
            return Ok(c);
        }
        db.drop_collection(&name)?;
    }
    let spec = SyntheticSpec {
        n_docs: a.docs,
        seed: a.seed,
        ..Preset::Minilm.spec()
    };
    let coll = db.create_collection(&name, CollectionConfig::new(spec.dim as u32))?;
    // The expected total sizes the codec: one pass over the lengths (cheap) first.
    let total = {
        let mut s = SyntheticStream::new(&spec);
        let mut buf = Vec::new();
        let mut n = 0u64;
        while let Some(t) = s.next_doc(&mut buf) {
            n += t as u64;
            buf.clear();
        }
        n
    };
    let opts = IngestOptions::default().with_expected_total_tokens(total);
    let t = Instant::now();
    let mut stream = SyntheticStream::new(&spec);
    let mut next = 0u64;
    loop {
        let mut docs = Vec::with_capacity(a.batch_docs);
        let mut buf = Vec::new();
        while docs.len() < a.batch_docs && stream.next_doc(&mut buf).is_some() {
            docs.push(Document::new(next, std::mem::take(&mut buf)));
            next += 1;
        }
        if docs.is_empty() {
            break;
        }
        coll.ingest(&docs, &opts)?;
        eprintln!("  ingested {next}/{} documents", a.docs);
    }
    eprintln!("ingest: {:.1} s", t.elapsed().as_secs_f64());
    Ok(coll)
}

/// Queries of 32 tokens from stored documents plus noise (the synthetic generator's rule).
fn queries(coll: &Collection, a: &RagArgs) -> Result<Vec<Vec<f32>>> {
    let dim = coll.config().dim as usize;
    let mut failed = None;
    let qs = queries_from(
        a.docs,
        dim,
        QuerySpec {
            n: a.queries,
            tokens: 32,
            noise: 0.3,
            seed: a.seed,
        },
        |i| match coll.vectors(&ExternalId::Int(i as u64)) {
            Ok(Some(v)) => v,
            other => {
                failed = Some(format!("document {i}: {other:?}"));
                vec![0.0; dim]
            }
        },
    );
    match failed {
        Some(f) => anyhow::bail!("cannot read a query's source {f}"),
        None => Ok(qs),
    }
}
