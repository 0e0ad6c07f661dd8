//! Document-encoding throughput on a fixed set of passages.
//!
//! ```text
//! cargo bench -p tessera-encoder --bench throughput -- [--model colbert|bert] [--threads 1,2]
//!     [--passages 128] [--batch-size 32] [--repeats 3] [--dump-ids FILE] [--dump-texts FILE]
//! ```
//!
//! The model is the MiniLM from PyPI (fetched into the cache like the parity tests) or, for
//! `colbert`, the reference PyLate directory assembled from it. Reported tokens are model input
//! tokens (special tokens and the document marker included) and the time is the best of
//! `--repeats` runs after one warm-up. `--dump-ids` writes the exact model inputs as JSON so
//! that another implementation can be timed on identical work; `--dump-texts` writes the
//! passages as a JSON-lines text corpus (`{"id", "text"}`) for timing `tessera ingest --text`
//! end to end on the same text.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use tessera_encoder::{Encoder, EncoderOptions, InputKind};

/// Words the passages are drawn from: a mix of common words, technical terms that split into
/// word pieces, numbers and punctuation, so token counts resemble real prose.
const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "a",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "with",
    "was",
    "on",
    "by",
    "are",
    "be",
    "this",
    "from",
    "or",
    "which",
    "an",
    "at",
    "have",
    "not",
    "were",
    "can",
    "index",
    "query",
    "document",
    "token",
    "embedding",
    "vector",
    "retrieval",
    "search",
    "model",
    "late",
    "interaction",
    "centroid",
    "residual",
    "compression",
    "database",
    "storage",
    "transaction",
    "latency",
    "throughput",
    "benchmark",
    "encoder",
    "transformer",
    "attention",
    "layer",
    "matrix",
    "similarity",
    "maximum",
    "score",
    "passage",
    "corpus",
    "collection",
    "inverted",
    "list",
    "cluster",
    "quantization",
    "precision",
    "recall",
    "ranking",
    "relevance",
    "multilingual",
    "tokenizer",
    "wordpiece",
    "vocabulary",
    "normalisation",
    "projection",
    "dimension",
    "memory",
    "disk",
    "cache",
    "thread",
    "parallel",
    "batch",
    "latent",
    "semantic",
    "Normandy",
    "Paris",
    "river",
    "history",
    "century",
    "government",
    "population",
    "city",
    "1998",
    "2026",
    "3.14",
    "42",
    ",",
    ".",
    ";",
    "(",
    ")",
    "-",
    "'s",
    "colbert",
    "rocksdb",
    "antidisestablishmentarianism",
    "hyperparameter",
    "preprocessing",
    "reimplementation",
];

/// Deterministic passages of 60–160 words (a fixed LCG, so every run and machine sees the
/// same text).
fn passages(count: usize) -> Vec<String> {
    let mut state: u64 = 0x5eed_1234_abcd_0001;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize
    };
    (0..count)
        .map(|_| {
            let words = 60 + next() % 101;
            (0..words)
                .map(|_| WORDS[next() % WORDS.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// CPU seconds (user + system, all threads) this process has used, from `/proc/self/stat`;
/// `None` off Linux. Under contention from other processes, CPU time is steadier than wall
/// time for single-thread runs. Assumes the usual 100 clock ticks per second.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

struct Args {
    model: String,
    threads: Vec<usize>,
    passages: usize,
    batch_size: usize,
    repeats: usize,
    dump_ids: Option<String>,
    dump_texts: Option<String>,
}

fn parse_args() -> Args {
    let mut args = Args {
        model: "colbert".into(),
        threads: vec![1, 2],
        passages: 128,
        batch_size: 32,
        repeats: 3,
        dump_ids: None,
        dump_texts: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        // `cargo bench` appends `--bench`; ignore it and anything unknown to us.
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => args.model = value(),
            "--threads" => {
                args.threads = value()
                    .split(',')
                    .map(|t| t.trim().parse().expect("--threads takes numbers like 1,2"))
                    .collect();
            }
            "--passages" => args.passages = value().parse().expect("--passages takes a number"),
            "--batch-size" => {
                args.batch_size = value().parse().expect("--batch-size takes a number");
            }
            "--repeats" => args.repeats = value().parse().expect("--repeats takes a number"),
            "--dump-ids" => args.dump_ids = Some(value()),
            "--dump-texts" => args.dump_texts = Some(value()),
            _ => {}
        }
    }
    args
}

fn main() {
    let args = parse_args();
    let dir = match args.model.as_str() {
        "colbert" => common::colbert_dir(),
        "bert" => common::minilm_dir(),
        other => panic!("--model must be colbert or bert, not {other}"),
    };
    let texts = passages(args.passages);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    if let Some(path) = &args.dump_texts {
        let lines: String = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                serde_json::json!({"id": format!("p{i:06}"), "text": t}).to_string() + "\n"
            })
            .collect();
        std::fs::write(path, lines).expect("write texts");
    }

    for &threads in &args.threads {
        let encoder = Encoder::load(
            &dir,
            EncoderOptions {
                threads,
                batch_size: args.batch_size,
                max_length: None,
            },
        )
        .expect("model loads");
        let ids = encoder
            .token_ids(&refs, InputKind::Document)
            .expect("tokenizes");
        let tokens: usize = ids.iter().map(Vec::len).sum();
        if let Some(path) = &args.dump_ids {
            std::fs::write(path, serde_json::to_vec(&ids).expect("json")).expect("write ids");
        }
        // Warm-up: page in weights, spin up the pool.
        encoder
            .encode_documents(&refs[..refs.len().min(args.batch_size)])
            .expect("encodes");
        let mut best = f64::INFINITY;
        let mut best_cpu = f64::INFINITY;
        for _ in 0..args.repeats.max(1) {
            let cpu_start = cpu_seconds();
            let start = Instant::now();
            let out = encoder.encode_documents(&refs).expect("encodes");
            best = best.min(start.elapsed().as_secs_f64());
            if let (Some(a), Some(b)) = (cpu_start, cpu_seconds()) {
                best_cpu = best_cpu.min(b - a);
            }
            assert_eq!(out.len(), refs.len());
        }
        println!(
            "model={} threads={threads} passages={} tokens={tokens} batch={} best_of={} \
             seconds={best:.3} cpu_seconds={best_cpu:.2} tokens_per_s={:.0} passages_per_s={:.1}",
            args.model,
            refs.len(),
            args.batch_size,
            args.repeats.max(1),
            tokens as f64 / best,
            refs.len() as f64 / best,
        );
    }
}
