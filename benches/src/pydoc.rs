//! The real corpus: Python 3.11's documentation (Debian's `python3.11-doc`), split into
//! passages with queries and relevance judgments by `scripts/python_doc_corpus.py`, encoded
//! here by Tessera's own encoder and written once to the flat `.npy` + doclens layout that
//! `tessera ingest --format npy-flat` reads. `scripts/bench-data.sh python-doc` runs the whole
//! chain; [`crate::dataset::load_flat`] reads the result back and verifies its checksums.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tessera_encoder::{Encoder, EncoderOptions};

/// Version of the cached layout; bump when the files or their meaning change.
pub const LAYOUT_VERSION: u32 = 1;

/// `manifest.json` of a prepared corpus: what it was made from and a SHA-256 per file.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Manifest {
    /// [`LAYOUT_VERSION`] at the time of writing.
    pub layout: u32,
    /// Dataset name.
    pub name: String,
    /// Source package file name and its SHA-256, when given.
    pub source: Option<(String, String)>,
    /// Encoder model directory name and its hash (`tessera_encoder::ModelId`).
    pub model: (String, String),
    /// Vector dimension.
    pub dim: usize,
    /// Passages (documents).
    pub passages: usize,
    /// Token vectors over all passages.
    pub tokens: usize,
    /// Queries.
    pub queries: usize,
    /// Lines of `qrels.tsv`.
    pub judgments: usize,
    /// Seconds spent encoding.
    pub encode_seconds: f64,
    /// File name -> SHA-256 (hex).
    pub files: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct TextRecord {
    id: u64,
    text: String,
}

fn read_jsonl(path: &Path) -> Result<Vec<TextRecord>> {
    let f = fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.with_context(|| format!("{}: cannot read", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let r: TextRecord = serde_json::from_str(&line).with_context(|| {
            format!(
                "{}: line {}: not a {{id, text}} record",
                path.display(),
                i + 1
            )
        })?;
        if r.id != out.len() as u64 {
            bail!(
                "{}: line {}: id {} out of sequence (ids must be 0, 1, 2, ...)",
                path.display(),
                i + 1,
                r.id
            );
        }
        out.push(r);
    }
    Ok(out)
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("{}: cannot read", path.display()))?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes an `.npy` array of `shape` (row-major `data`).
fn write_npy<T: npyz::AutoSerialize + Copy>(path: &Path, shape: &[u64], data: &[T]) -> Result<()> {
    use npyz::WriterBuilder;
    let f = fs::File::create(path).with_context(|| format!("{}: cannot create", path.display()))?;
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(BufWriter::with_capacity(1 << 20, f))
        .begin_nd()
        .with_context(|| format!("{}: cannot write", path.display()))?;
    w.extend(data.iter().copied())
        .with_context(|| format!("{}: cannot write", path.display()))?;
    w.finish()
        .with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(())
}

/// Writes an f32 `.npy` array.
pub fn write_npy_f32(path: &Path, shape: &[u64], data: &[f32]) -> Result<()> {
    write_npy(path, shape, data)
}

/// Writes an i64 `.npy` vector.
pub fn write_npy_i64(path: &Path, data: &[i64]) -> Result<()> {
    write_npy(path, &[data.len() as u64], data)
}

/// Inputs of [`prepare`].
#[derive(Debug, Clone)]
pub struct PrepareSpec {
    /// Directory with `passages.jsonl`, `queries.jsonl` and `qrels.tsv`.
    pub text_dir: PathBuf,
    /// ColBERT model directory for `tessera_encoder::Encoder::load`.
    pub model_dir: PathBuf,
    /// Output directory (created; must not exist yet).
    pub out_dir: PathBuf,
    /// Dataset name for the manifest.
    pub name: String,
    /// The source package, recorded in the manifest with its SHA-256.
    pub source: Option<PathBuf>,
    /// Texts per encoder call.
    pub batch: usize,
}

/// Encodes passages and queries and writes the flat layout, atomically: the output directory
/// appears complete or not at all.
pub fn prepare(spec: &PrepareSpec) -> Result<Manifest> {
    if spec.out_dir.exists() {
        bail!(
            "{}: already exists; remove it to rebuild the corpus",
            spec.out_dir.display()
        );
    }
    let passages = read_jsonl(&spec.text_dir.join("passages.jsonl"))?;
    let queries = read_jsonl(&spec.text_dir.join("queries.jsonl"))?;
    let qrels_src = spec.text_dir.join("qrels.tsv");
    let qrels = fs::read_to_string(&qrels_src)
        .with_context(|| format!("{}: cannot read", qrels_src.display()))?;
    crate::dataset::parse_qrels(&qrels, &qrels_src, queries.len(), passages.len())?;
    let encoder = Encoder::load(&spec.model_dir, EncoderOptions::default())
        .with_context(|| format!("{}: cannot load the encoder", spec.model_dir.display()))?;
    let dim = encoder.dim();
    let parent = spec
        .out_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).with_context(|| format!("{}: cannot create", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".tmp-prepare-")
        .tempdir_in(parent)
        .with_context(|| format!("{}: cannot create a staging directory", parent.display()))?;
    let dir = staging.path();

    let t = Instant::now();
    let mut flat: Vec<f32> = Vec::new();
    let mut doclens: Vec<i64> = Vec::with_capacity(passages.len());
    for (b, chunk) in passages.chunks(spec.batch.max(1)).enumerate() {
        let texts: Vec<&str> = chunk.iter().map(|p| p.text.as_str()).collect();
        let mats = encoder
            .encode_documents(&texts)
            .with_context(|| format!("encoding passages from {}", b * spec.batch.max(1)))?;
        for (m, p) in mats.iter().zip(chunk) {
            if m.rows == 0 {
                bail!("passage {} encodes to no vectors", p.id);
            }
            flat.extend_from_slice(&m.data);
            doclens.push(m.rows as i64);
        }
        let done = doclens.len();
        let secs = t.elapsed().as_secs_f64();
        let tokens = flat.len() / dim;
        eprintln!(
            "  encoded {done}/{} passages, {tokens} tokens, {:.0} tokens/s, ETA {:.0} s",
            passages.len(),
            tokens as f64 / secs,
            secs / done as f64 * (passages.len() - done) as f64
        );
    }
    let texts: Vec<&str> = queries.iter().map(|q| q.text.as_str()).collect();
    let qmats = encoder.encode_queries(&texts).context("encoding queries")?;
    let encode_seconds = t.elapsed().as_secs_f64();
    let mut qflat = Vec::new();
    let mut qlens = Vec::new();
    for m in &qmats {
        qflat.extend_from_slice(&m.data);
        qlens.push(m.rows as i64);
    }
    let tokens = flat.len() / dim;
    write_npy_f32(&dir.join("docs.npy"), &[tokens as u64, dim as u64], &flat)?;
    write_npy_i64(&dir.join("doclens.npy"), &doclens)?;
    write_npy_f32(
        &dir.join("queries.npy"),
        &[(qflat.len() / dim) as u64, dim as u64],
        &qflat,
    )?;
    write_npy_i64(&dir.join("query_lens.npy"), &qlens)?;
    for f in ["qrels.tsv", "passages.jsonl", "queries.jsonl"] {
        fs::copy(spec.text_dir.join(f), dir.join(f))
            .with_context(|| format!("{}: cannot copy", spec.text_dir.join(f).display()))?;
    }
    let mut files = BTreeMap::new();
    for f in [
        "docs.npy",
        "doclens.npy",
        "queries.npy",
        "query_lens.npy",
        "qrels.tsv",
        "passages.jsonl",
        "queries.jsonl",
    ] {
        files.insert(f.to_string(), sha256_file(&dir.join(f))?);
    }
    let source = match &spec.source {
        Some(p) => Some((
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            sha256_file(p)?,
        )),
        None => None,
    };
    let id = encoder.model_id();
    let manifest = Manifest {
        layout: LAYOUT_VERSION,
        name: spec.name.clone(),
        source,
        model: (id.name.clone(), id.hash.clone()),
        dim,
        passages: passages.len(),
        tokens,
        queries: queries.len(),
        judgments: qrels.lines().filter(|l| !l.trim().is_empty()).count(),
        encode_seconds,
        files,
    };
    let mpath = dir.join("manifest.json");
    let mut f =
        fs::File::create(&mpath).with_context(|| format!("{}: cannot create", mpath.display()))?;
    f.write_all(serde_json::to_string_pretty(&manifest)?.as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("{}: cannot write", mpath.display()))?;
    let staged = staging.keep();
    fs::rename(&staged, &spec.out_dir).with_context(|| {
        format!(
            "cannot move {} to {}",
            staged.display(),
            spec.out_dir.display()
        )
    })?;
    eprintln!(
        "wrote {}: {} passages, {tokens} tokens, {} queries in {encode_seconds:.0} s",
        spec.out_dir.display(),
        manifest.passages,
        manifest.queries
    );
    Ok(manifest)
}
