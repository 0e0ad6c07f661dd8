//! Datasets: token vectors of every document (in one row-major array, or regenerated block
//! by block when a synthetic corpus is larger than memory), queries, and (for real corpora)
//! relevance judgments. Document ids are row indices `0..n`.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};
use tessera::synthetic::{
    QuerySpec, SyntheticCorpus, SyntheticSpec, SyntheticStream, queries_from,
};

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
    /// Token rows of all documents, row-major; empty when `stream` is set.
    pub flat: Vec<f32>,
    /// The generator of a streamed synthetic corpus: documents are regenerated on demand by
    /// [`Dataset::for_each_block`] instead of held in `flat`.
    pub stream: Option<SyntheticSpec>,
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

    /// Token rows of document `i` (in-memory datasets only).
    pub fn doc(&self, i: usize) -> &[f32] {
        &self.flat[self.offsets[i] * self.dim..self.offsets[i + 1] * self.dim]
    }

    /// Calls `f(first_doc, offsets, rows)` for consecutive blocks of at most `block`
    /// documents in id order: `offsets` are the block's `len + 1` absolute row offsets and
    /// `rows` its token rows (row `offsets[0]` first). A streamed corpus is regenerated here,
    /// in the calling thread, so callers can time their own work apart from generation.
    pub fn for_each_block(
        &self,
        block: usize,
        mut f: impl FnMut(usize, &[usize], &[f32]) -> Result<()>,
    ) -> Result<()> {
        let (n, dim, block) = (self.n_docs(), self.dim, block.max(1));
        let mut stream = self.stream.as_ref().map(SyntheticStream::new);
        if stream.is_none() && self.flat.len() != self.n_tokens() * dim {
            bail!("{}: the document vectors were already freed", self.name);
        }
        let mut buf = Vec::new();
        let mut first = 0;
        while first < n {
            let end = (first + block).min(n);
            let offs = &self.offsets[first..=end];
            let rows = match &mut stream {
                None => &self.flat[offs[0] * dim..offs[end - first] * dim],
                Some(s) => {
                    buf.clear();
                    for d in first..end {
                        let len = s.next_doc(&mut buf).with_context(|| {
                            format!("{}: the generator ended at document {d}", self.name)
                        })?;
                        if len != self.offsets[d + 1] - self.offsets[d] {
                            bail!(
                                "{}: document {d} regenerated with another length",
                                self.name
                            );
                        }
                    }
                    &buf[..]
                }
            };
            f(first, offs, rows)?;
            first = end;
        }
        Ok(())
    }

    /// The first `n` documents in memory (all of them when `n` is larger), with no queries:
    /// a sample of a streamed corpus for statistics.
    pub fn head(&self, n: usize) -> Result<Dataset> {
        let n = n.min(self.n_docs());
        let mut flat = Vec::with_capacity(self.offsets[n] * self.dim);
        match &self.stream {
            None => flat.extend_from_slice(&self.flat[..self.offsets[n] * self.dim]),
            Some(spec) => {
                let mut s = SyntheticStream::new(spec);
                for d in 0..n {
                    s.next_doc(&mut flat).with_context(|| {
                        format!("{}: the generator ended at document {d}", self.name)
                    })?;
                }
            }
        }
        flat.truncate(self.offsets[n] * self.dim);
        Ok(Dataset {
            name: self.name.clone(),
            key: format!("{} head {n}", self.key),
            dim: self.dim,
            flat,
            stream: None,
            offsets: self.offsets[..=n].to_vec(),
            queries: Vec::new(),
            qrels: None,
        })
    }

    /// Frees the document vectors (indexes and ground truth are built; searching needs only
    /// the queries), so that memory measured while searching is the engines', not ours.
    pub fn drop_vectors(&mut self) {
        self.flat = Vec::new();
    }
}

/// Generator settings fitted to a real corpus.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Preset {
    /// The token statistics of python-doc (ColBERT all-MiniLM-L6-v2, 128-d).
    Minilm,
}

impl Preset {
    /// The settings, fitted with `tessera-bench synthetic --stats-only` to the statistics
    /// the python-doc reports print (and checked by a test below).
    pub fn spec(self) -> SyntheticSpec {
        match self {
            Preset::Minilm => SyntheticSpec {
                min_tokens: 8,
                max_tokens: 180,
                clusters_per_doc: 3,
                noise: 0.6,
                n_clusters: 8192,
                zipf_exponent: 0.65,
                shared: 0.27,
                ..SyntheticSpec::default()
            },
        }
    }
}

/// The ground-truth cache key of a synthetic corpus. The knobs added after the first
/// version appear only when they differ from its behaviour, so earlier caches stay valid.
fn synthetic_key(spec: &SyntheticSpec, n_queries: usize, q: &QuerySpec) -> String {
    let SyntheticSpec {
        n_docs,
        dim,
        min_tokens,
        max_tokens,
        n_clusters,
        clusters_per_doc,
        noise,
        zipf_exponent,
        shared,
        seed,
    } = spec;
    let mut fields = format!(
        "n_docs: {n_docs}, dim: {dim}, min_tokens: {min_tokens}, max_tokens: {max_tokens}, \
         n_clusters: {n_clusters}, clusters_per_doc: {clusters_per_doc}, noise: {noise:?}, \
         seed: {seed}"
    );
    if *zipf_exponent != 1.0 || *shared != 0.0 {
        fields += &format!(", zipf_exponent: {zipf_exponent:?}, shared: {shared:?}");
    }
    format!(
        "synthetic-v1 SyntheticSpec {{ {fields} }} queries {n_queries}x{} noise {} seed {}",
        q.tokens, q.noise, q.seed
    )
}

fn query_spec(spec: &SyntheticSpec, n: usize) -> QuerySpec {
    QuerySpec {
        n,
        tokens: 32,
        noise: 0.3,
        seed: spec.seed + 1,
    }
}

/// The synthetic corpus of `spec` with `n_queries` queries of 32 tokens (noise 0.3), held
/// in memory.
pub fn synthetic(name: &str, spec: &SyntheticSpec, n_queries: usize) -> Dataset {
    let corpus = SyntheticCorpus::generate(spec);
    let q = query_spec(spec, n_queries);
    let queries = corpus.queries(q.n, q.tokens, q.noise, q.seed);
    Dataset {
        name: name.to_string(),
        key: synthetic_key(spec, n_queries, &q),
        dim: corpus.dim,
        offsets: corpus.offsets,
        flat: corpus.flat,
        stream: None,
        queries,
        qrels: None,
    }
}

/// The same corpus and queries as [`synthetic`] without holding the vectors: two generator
/// passes (one for the document lengths, one for the queries' source documents), after which
/// every use regenerates the documents block by block.
pub fn synthetic_streamed(name: &str, spec: &SyntheticSpec, n_queries: usize) -> Result<Dataset> {
    let mut stream = SyntheticStream::new(spec);
    let dim = stream.dim();
    let mut buf = Vec::new();
    let mut offsets = vec![0usize];
    while let Some(len) = stream.next_doc(&mut buf) {
        offsets.push(offsets[offsets.len() - 1] + len);
        buf.clear();
    }
    let n = offsets.len() - 1;
    let q = query_spec(spec, n_queries);
    // Which documents the queries come from depends on lengths only (see `queries_from`).
    let mut sources = Vec::new();
    queries_from(n, dim, q, |i| {
        sources.push(i);
        vec![0.0; (offsets[i + 1] - offsets[i]) * dim]
    });
    sources.sort_unstable();
    sources.dedup();
    let mut wanted: HashMap<usize, Vec<f32>> = HashMap::new();
    let mut stream = SyntheticStream::new(spec);
    let mut next = sources.iter().peekable();
    for d in 0..n {
        if next.peek().is_none() {
            break;
        }
        buf.clear();
        stream
            .next_doc(&mut buf)
            .with_context(|| format!("{name}: the generator ended at document {d}"))?;
        if next.peek() == Some(&&d) {
            wanted.insert(d, buf.clone());
            next.next();
        }
    }
    let mut missing = None;
    let queries = queries_from(n, dim, q, |i| match wanted.get(&i) {
        Some(v) => v.clone(),
        None => {
            missing = Some(i);
            vec![0.0; (offsets[i + 1] - offsets[i]) * dim]
        }
    });
    if let Some(i) = missing {
        bail!("{name}: query source document {i} was not captured");
    }
    Ok(Dataset {
        name: name.to_string(),
        key: synthetic_key(spec, n_queries, &q),
        dim,
        flat: Vec::new(),
        stream: Some(spec.clone()),
        offsets,
        queries,
        qrels: None,
    })
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
        stream: None,
        offsets,
        queries,
        qrels: Some(qrels),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minilm_preset_matches_the_real_corpus_token_statistics() {
        // python-doc's statistics, as its reports print them (BENCHMARKS.md).
        let spec = SyntheticSpec {
            n_docs: 5000,
            ..Preset::Minilm.spec()
        };
        let s = crate::stats::token_stats(&synthetic("t", &spec, 0));
        let near = |got: f64, want: f64, tol: f64, what: &str| {
            assert!(
                (got - want).abs() <= tol,
                "{what}: {got:.3}, python-doc {want:.3}"
            );
        };
        near(s.tokens_per_doc_mean, 95.3, 5.0, "tokens per document");
        near(s.cos_same_doc, 0.293, 0.03, "cosine within a document");
        near(s.cos_other_doc, 0.051, 0.01, "cosine across documents");
        near(
            s.top10pct_cluster_share,
            0.185,
            0.03,
            "largest-decile cluster share",
        );
        near(s.norm_mean, 1.0, 1e-3, "norm");
    }

    #[test]
    fn default_synthetic_key_is_the_first_versions() {
        let spec = SyntheticSpec {
            n_docs: 10_000,
            n_clusters: 8192,
            ..SyntheticSpec::default()
        };
        // The key under which the recorded 10K run's ground truth is cached.
        assert_eq!(
            synthetic_key(&spec, 100, &query_spec(&spec, 100)),
            "synthetic-v1 SyntheticSpec { n_docs: 10000, dim: 128, min_tokens: 32, \
             max_tokens: 256, n_clusters: 8192, clusters_per_doc: 8, noise: 0.6, seed: 1 } \
             queries 100x32 noise 0.3 seed 2"
        );
        let other = SyntheticSpec {
            shared: 0.3,
            ..spec.clone()
        };
        assert_ne!(
            synthetic_key(&other, 100, &query_spec(&other, 100)),
            synthetic_key(&spec, 100, &query_spec(&spec, 100))
        );
    }

    #[test]
    fn streamed_synthetic_dataset_equals_the_in_memory_one() {
        let spec = SyntheticSpec {
            n_docs: 120,
            dim: 8,
            min_tokens: 2,
            max_tokens: 9,
            n_clusters: 16,
            ..SyntheticSpec::default()
        };
        let mem = synthetic("t", &spec, 7);
        let st = synthetic_streamed("t", &spec, 7).expect("streamed");
        assert!(st.flat.is_empty());
        assert_eq!(st.key, mem.key, "one corpus, one ground-truth cache key");
        assert_eq!(st.offsets, mem.offsets);
        assert_eq!(st.queries, mem.queries);
        let mut rows = Vec::new();
        let mut firsts = Vec::new();
        st.for_each_block(50, |first, offs, r| {
            assert_eq!(offs[0], st.offsets[first]);
            assert_eq!(r.len(), (offs[offs.len() - 1] - offs[0]) * 8);
            firsts.push(first);
            rows.extend_from_slice(r);
            Ok(())
        })
        .expect("blocks");
        assert_eq!(firsts, vec![0, 50, 100]);
        assert_eq!(rows, mem.flat);
        let head = st.head(30).expect("head");
        assert_eq!(head.n_docs(), 30);
        assert_eq!(head.flat[..], mem.flat[..mem.offsets[30] * 8]);
    }
}
