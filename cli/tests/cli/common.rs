//! Helpers: run the real binary, write inputs in every format, and compute the library's
//! results on the same vectors.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use tessera::synthetic::{SyntheticCorpus, SyntheticSpec};
use tessera::{CollectionConfig, Database, Document, ExternalId, IngestOptions, SearchParams};

/// The binary under test.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
    // History and terminal behaviour must not depend on the machine running the tests.
    c.env(
        "TESSERA_HISTORY",
        std::env::temp_dir().join("tessera-test-history"),
    );
    c
}

/// Runs the binary with `args`.
pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("the tessera binary runs")
}

/// Runs the binary with `args` and `stdin`.
pub fn run_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the tessera binary starts");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin.as_bytes())
        .expect("stdin accepts the script");
    child
        .wait_with_output()
        .expect("the tessera binary finishes")
}

/// Standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs the binary and asserts success; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "tessera {args:?} failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Runs the binary, asserts failure, and returns stderr.
pub fn fails(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        !o.status.success(),
        "tessera {args:?} should fail; stdout:\n{}",
        stdout(&o)
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "errors exit with code 1; stderr: {}",
        stderr(&o)
    );
    stderr(&o)
}

/// A path as `&str` (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// JSON lines of stdout.
pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line: {l:?}: {e}")))
        .collect()
}

/// Documents in `collection` according to `tessera info --json`.
pub fn documents(db: &Path, collection: &str) -> u64 {
    let out = ok(&["info", s(db), collection, "--json"]);
    let rows = json_lines(&out);
    assert_eq!(rows.len(), 1, "one info row: {out}");
    rows[0]["documents"]
        .as_u64()
        .expect("documents is a number")
}

/// A small corpus: documents of 4 to 20 tokens in `dim` dimensions.
pub fn corpus(n_docs: usize, dim: usize, seed: u64) -> SyntheticCorpus {
    SyntheticCorpus::generate(&SyntheticSpec {
        n_docs,
        dim,
        min_tokens: 4,
        max_tokens: 20,
        n_clusters: 32,
        clusters_per_doc: 3,
        seed,
        ..SyntheticSpec::default()
    })
}

/// Documents of a corpus as `(id, vectors)` with ids `doc-000i`.
pub fn docs_of(c: &SyntheticCorpus) -> Vec<(ExternalId, Vec<f32>)> {
    (0..c.n_docs())
        .map(|i| (ExternalId::from(format!("doc-{i:06}")), c.doc(i).to_vec()))
        .collect()
}

/// Creates a collection through the CLI.
pub fn create(db: &Path, collection: &str, dim: usize) {
    ok(&["create", s(db), collection, "--dim", &dim.to_string()]);
}

/// Writes an `.npy` with an explicit dtype string and order; `data` is in storage order.
pub fn write_npy<T: npyz::Serialize + Copy>(
    path: &Path,
    descr: &str,
    shape: &[u64],
    fortran: bool,
    data: &[T],
) {
    use npyz::WriterBuilder;
    let file = std::fs::File::create(path).expect("create npy");
    let dtype = npyz::DType::Plain(descr.parse().expect("valid dtype string"));
    let order = if fortran {
        npyz::Order::Fortran
    } else {
        npyz::Order::C
    };
    let mut w = npyz::WriteOptions::<T>::new()
        .dtype(dtype)
        .shape(shape)
        .order(order)
        .writer(std::io::BufWriter::new(file))
        .begin_nd()
        .expect("npy header");
    w.extend(data.iter().copied()).expect("npy data");
    w.finish().expect("npy finish");
}

/// Writes a row-major `[rows, dim]` f32 matrix as a little-endian C-order `.npy`.
pub fn write_npy_f32(path: &Path, rows: usize, dim: usize, data: &[f32]) {
    write_npy(path, "<f4", &[rows as u64, dim as u64], false, data);
}

/// Column-major copy of a row-major `[rows, dim]` matrix.
pub fn to_fortran<T: Copy>(data: &[T], rows: usize, dim: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(data.len());
    for c in 0..dim {
        for r in 0..rows {
            out.push(data[r * dim + c]);
        }
    }
    out
}

/// Writes queries `[q, t, dim]` f32.
pub fn write_queries(path: &Path, queries: &[Vec<f32>], dim: usize) {
    let t = queries[0].len() / dim;
    write_npy(
        path,
        "<f4",
        &[queries.len() as u64, t as u64, dim as u64],
        false,
        &queries.concat(),
    );
}

/// Splits documents into batches as the CLI does: a batch closes before the document that
/// would take it past `batch_tokens` tokens.
pub fn partition(rows: &[usize], batch_tokens: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut tokens) = (0, 0);
    for (i, &r) in rows.iter().enumerate() {
        if i > start && tokens + r > batch_tokens {
            out.push(start..i);
            start = i;
            tokens = 0;
        }
        tokens += r;
    }
    if start < rows.len() {
        out.push(start..rows.len());
    }
    out
}

/// Hits per query as `(id as JSON, score)`.
pub type Results = Vec<Vec<(Value, f32)>>;

/// The library's results for `docs` ingested in the CLI's batches, for `queries`.
pub fn library_results(
    dir: &Path,
    dim: usize,
    docs: &[(ExternalId, Vec<f32>)],
    batch_tokens: usize,
    queries: &[Vec<f32>],
    k: usize,
) -> Results {
    let db = Database::open_or_create(dir.join("library.db")).expect("library db");
    let coll = db
        .create_collection("c", CollectionConfig::new(dim as u32))
        .expect("library collection");
    let rows: Vec<usize> = docs.iter().map(|(_, v)| v.len() / dim).collect();
    let total: usize = rows.iter().sum();
    let opts = IngestOptions::default().with_expected_total_tokens(total as u64);
    for r in partition(&rows, batch_tokens) {
        let batch: Vec<Document> = docs[r]
            .iter()
            .map(|(id, v)| Document::new(id.clone(), v.clone()))
            .collect();
        coll.ingest(&batch, &opts).expect("library ingest");
    }
    queries
        .iter()
        .map(|q| {
            coll.search(q, k, &SearchParams::default())
                .expect("library search")
                .into_iter()
                .map(|h| (serde_json::to_value(&h.id).expect("id to JSON"), h.score))
                .collect()
        })
        .collect()
}

/// Parses `tessera search --json` output into results per query (queries numbered 0..).
pub fn cli_results(out: &str, n_queries: usize) -> Results {
    let mut res: Results = vec![Vec::new(); n_queries];
    for row in json_lines(out) {
        let q = row["query"].as_u64().expect("numeric query label") as usize;
        let rank = row["rank"].as_u64().expect("rank") as usize;
        assert_eq!(rank, res[q].len() + 1, "ranks are consecutive: {row}");
        let score = row["score"].as_f64().expect("score") as f32;
        res[q].push((row["id"].clone(), score));
    }
    res
}

/// Asserts the same ids in the same order, and scores equal to f32 precision.
pub fn assert_same_results(cli: &Results, lib: &Results) {
    assert_eq!(cli.len(), lib.len());
    for (q, (c, l)) in cli.iter().zip(lib).enumerate() {
        let cid: Vec<&Value> = c.iter().map(|(id, _)| id).collect();
        let lid: Vec<&Value> = l.iter().map(|(id, _)| id).collect();
        assert_eq!(cid, lid, "query {q}: ids differ");
        assert!(!c.is_empty(), "query {q} has hits");
        for ((_, a), (_, b)) in c.iter().zip(l) {
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "query {q}: score {a} vs {b}"
            );
        }
    }
}

/// A temporary directory with a path helper.
pub struct Tmp(pub tempfile::TempDir);

impl Tmp {
    /// A fresh directory.
    pub fn new() -> Self {
        Tmp(tempfile::tempdir().expect("temp dir"))
    }

    /// A path inside it.
    pub fn p(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
}
