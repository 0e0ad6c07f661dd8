//! Datasets: token vectors of every document in one row-major array, queries, and (for real
//! corpora) relevance judgments. Document ids are row indices `0..n`.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};
use tessera::synthetic::{SyntheticCorpus, SyntheticSpec};

use crate::pydoc::{LAYOUT_VERSION, Manifest, sha256_file};

/// Per query: relevant document id -> grade (> 0).
pub type Qrels = Vec<HashMap<u64, u32>>;

/// A corpus with its queries, all in memory.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Short name used in reports.
    pub name: String,
    /// Identity of the vectors and queries (generator spec or file checksums), the key of
    /// the ground-truth cache.
    pub key: String,
    /// Dimension.
    pub dim: usize,
    /// Token rows of all documents, row-major.
    pub flat: Vec<f32>,
    /// `n_docs + 1` row offsets.
    pub offsets: Vec<usize>,
    /// Queries, each row-major `[tokens, dim]`.
    pub queries: Vec<Vec<f32>>,
    /// Relevance judgments, when the dataset has them.
    pub qrels: Option<Qrels>,
}

impl Dataset {
    /// Number of documents.
    pub fn n_docs(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Number of token rows.
    pub fn n_tokens(&self) -> usize {
        self.offsets[self.offsets.len() - 1]
    }

    /// Token rows of document `i`.
    pub fn doc(&self, i: usize) -> &[f32] {
        &self.flat[self.offsets[i] * self.dim..self.offsets[i + 1] * self.dim]
    }

    /// Frees the document vectors (indexes and ground truth are built; searching needs only
    /// the queries), so that memory measured while searching is the engines', not ours.
    pub fn drop_vectors(&mut self) {
        self.flat = Vec::new();
    }
}

/// The synthetic corpus of `spec` with `n_queries` queries of 32 tokens (noise 0.3).
pub fn synthetic(name: &str, spec: &SyntheticSpec, n_queries: usize) -> Dataset {
    let corpus = SyntheticCorpus::generate(spec);
    let query_seed = spec.seed + 1;
    let queries = corpus.queries(n_queries, 32, 0.3, query_seed);
    Dataset {
        name: name.to_string(),
        key: format!("synthetic-v1 {spec:?} queries {n_queries}x32 noise 0.3 seed {query_seed}"),
        dim: corpus.dim,
        offsets: corpus.offsets,
        flat: corpus.flat,
        queries,
        qrels: None,
    }
}

/// Parses `qrels.tsv` (query id, document id, grade; tab-separated), checking ids.
pub fn parse_qrels(text: &str, path: &Path, n_queries: usize, n_docs: usize) -> Result<Qrels> {
    let mut q: Qrels = vec![HashMap::new(); n_queries];
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        let bad = |why: &str| anyhow::anyhow!("{}: line {}: {why}", path.display(), i + 1);
        if f.len() != 3 {
            return Err(bad("expected query id, document id, grade"));
        }
        let qid: usize = f[0]
            .parse()
            .map_err(|_| bad("query id is not an integer"))?;
        let did: u64 = f[1]
            .parse()
            .map_err(|_| bad("document id is not an integer"))?;
        let grade: u32 = f[2].parse().map_err(|_| bad("grade is not an integer"))?;
        if qid >= n_queries {
            return Err(bad(&format!(
                "query {qid} does not exist ({n_queries} queries)"
            )));
        }
        if did as usize >= n_docs {
            return Err(bad(&format!(
                "document {did} does not exist ({n_docs} documents)"
            )));
        }
        if grade > 0 {
            q[qid].insert(did, grade);
        }
    }
    Ok(q)
}

fn read_f32_matrix(path: &Path, dim: usize) -> Result<Vec<f32>> {
    let bytes = fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let npy = npyz::NpyFile::new(&bytes[..])
        .with_context(|| format!("{}: not a valid .npy file", path.display()))?;
    let shape = npy.shape().to_vec();
    if shape.len() != 2 || shape[1] as usize != dim {
        bail!(
            "{}: expected shape [rows, {dim}], got {shape:?}",
            path.display()
        );
    }
    npy.into_vec::<f32>()
        .with_context(|| format!("{}: expected float32 data", path.display()))
}

fn read_i64(path: &Path) -> Result<Vec<i64>> {
    let bytes = fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let npy = npyz::NpyFile::new(&bytes[..])
        .with_context(|| format!("{}: not a valid .npy file", path.display()))?;
    npy.into_vec::<i64>()
        .with_context(|| format!("{}: expected int64 data", path.display()))
}

fn offsets_from(lens: &[i64], path: &Path, rows: usize) -> Result<Vec<usize>> {
    let mut offsets = Vec::with_capacity(lens.len() + 1);
    offsets.push(0usize);
    for (i, &l) in lens.iter().enumerate() {
        if l <= 0 {
            bail!(
                "{}: entry {i} is {l}; lengths must be positive",
                path.display()
            );
        }
        offsets.push(offsets[i] + l as usize);
    }
    if offsets[lens.len()] != rows {
        bail!(
            "{}: lengths sum to {} but the matrix has {rows} rows",
            path.display(),
            offsets[lens.len()]
        );
    }
    Ok(offsets)
}

/// Loads a corpus prepared by [`crate::pydoc::prepare`], verifying every file against the
/// manifest's SHA-256 (a changed or truncated cache is an error, not a silent new result).
pub fn load_flat(dir: &Path) -> Result<Dataset> {
    let mpath = dir.join("manifest.json");
    let m: Manifest = serde_json::from_slice(&fs::read(&mpath).with_context(|| {
        format!(
            "{}: cannot read (build the corpus with scripts/bench-data.sh)",
            mpath.display()
        )
    })?)
    .with_context(|| format!("{}: not a valid manifest", mpath.display()))?;
    if m.layout != LAYOUT_VERSION {
        bail!(
            "{}: layout {} but this harness reads layout {LAYOUT_VERSION}; rebuild the corpus",
            mpath.display(),
            m.layout
        );
    }
    for (f, want) in &m.files {
        let got = sha256_file(&dir.join(f))?;
        if &got != want {
            bail!(
                "{}: SHA-256 {got} does not match the manifest ({want}); rebuild the corpus",
                dir.join(f).display()
            );
        }
    }
    let flat = read_f32_matrix(&dir.join("docs.npy"), m.dim)?;
    let offsets = offsets_from(
        &read_i64(&dir.join("doclens.npy"))?,
        &dir.join("doclens.npy"),
        flat.len() / m.dim,
    )?;
    let qflat = read_f32_matrix(&dir.join("queries.npy"), m.dim)?;
    let qpath = dir.join("query_lens.npy");
    let qoff = offsets_from(&read_i64(&qpath)?, &qpath, qflat.len() / m.dim)?;
    let queries: Vec<Vec<f32>> = qoff
        .windows(2)
        .map(|w| qflat[w[0] * m.dim..w[1] * m.dim].to_vec())
        .collect();
    let rpath = dir.join("qrels.tsv");
    let qrels = parse_qrels(
        &fs::read_to_string(&rpath).with_context(|| format!("{}: cannot read", rpath.display()))?,
        &rpath,
        queries.len(),
        offsets.len() - 1,
    )?;
    Ok(Dataset {
        name: m.name.clone(),
        key: format!("flat {} docs.npy {}", m.name, m.files["docs.npy"]),
        dim: m.dim,
        flat,
        offsets,
        queries,
        qrels: Some(qrels),
    })
}
