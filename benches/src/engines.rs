//! The engines under test behind one interface, so that every figure of every engine is
//! measured by the same code.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tessera::{
    CollectionConfig, Database, Device, Document, ExternalId, IngestOptions, SearchParams,
};

use crate::dataset::Dataset;

/// The two knobs both engines share: index cells probed per query token, and candidates
/// re-ranked with decompressed vectors (`0` = the engine's default).
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Knobs {
    /// Tessera `nprobe`; next-plaid `n_ivf_probe`.
    pub probe: u32,
    /// Tessera `n_rerank`; next-plaid `n_full_scores`; 0 = default.
    pub rerank: usize,
    /// Tessera `n_refine` (`None`: its default; `Some(0)`: off); next-plaid has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refine: Option<usize>,
    /// Tessera prefilter budget (`None`: its rule); next-plaid has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefilter: Option<usize>,
    /// Tessera `threads` per search (`None`: one); next-plaid has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
}

/// A searchable index.
pub trait Engine: Sync {
    /// Name in reports.
    fn name(&self) -> &str;
    /// The knobs' names in this engine's vocabulary.
    fn knob_names(&self) -> (&'static str, &'static str);
    /// Top-`k` document ids, best first, and the engine's stage counters when it has them.
    fn search(
        &self,
        query: &[f32],
        k: usize,
        knobs: Knobs,
    ) -> Result<(Vec<u64>, Option<tessera::SearchStats>)>;
    /// Many queries at once through the engine's own batch API (all cores).
    fn search_batch(&self, queries: &[Vec<f32>], k: usize, knobs: Knobs) -> Result<Vec<Vec<u64>>>;
    /// Candidates re-ranked for top-`k` at `knobs` (the effective value of a 0 default).
    fn rerank_budget(&self, k: usize, knobs: Knobs) -> usize;
}

/// How an index was built and how big it is.
#[derive(Serialize, Debug, Clone, Default)]
pub struct BuildInfo {
    /// Wall seconds from the first document to a searchable, durable index.
    pub seconds: f64,
    /// Tokens indexed per second.
    pub tokens_per_s: f64,
    /// Every file of the index directory, bytes.
    pub dir_bytes: u64,
    /// `dir_bytes` per token.
    pub dir_bytes_per_token: f64,
    /// The engine's own size figure per token (Tessera: segments only, the index that must
    /// stay in memory for speed), when it has one.
    pub engine_bytes_per_token: Option<f64>,
    /// Bytes per token of kept original vectors (Tessera; read per query only for the
    /// refined candidates).
    #[serde(default)]
    pub originals_bytes_per_token: Option<f64>,
    /// Settings, in words.
    pub settings: String,
}

impl BuildInfo {
    /// The figures of an index of `tokens` tokens built at `dir` in `seconds`.
    pub fn measured(
        dir: &Path,
        seconds: f64,
        tokens: usize,
        engine_bytes_per_token: Option<f64>,
        settings: String,
    ) -> Self {
        let bytes = dir_bytes(dir);
        BuildInfo {
            seconds,
            tokens_per_s: tokens as f64 / seconds,
            dir_bytes: bytes,
            dir_bytes_per_token: bytes as f64 / tokens as f64,
            engine_bytes_per_token,
            originals_bytes_per_token: None,
            settings,
        }
    }
}

/// Total size of the files under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Tessera, opened from a database directory, searching on one device.
pub struct TesseraEngine {
    _db: Database,
    coll: tessera::Collection,
    device: Device,
    /// `Some(0)`: the refine stage off, for the side-by-side row; `None`: the default.
    refine: Option<usize>,
    /// The prefilter budget; `None`: the engine's rule.
    prefilter: Option<usize>,
    label: String,
}

/// Collection name inside a benchmark database.
const COLLECTION: &str = "bench";

impl TesseraEngine {
    /// Ingests `ds` into a new database at `dir` (ids = row indices) in batches of `batch`
    /// documents; the first batch trains the codec. The time is that of opening the database
    /// and the ingest calls: regenerating a streamed corpus between calls is not counted.
    pub fn build(
        ds: &Dataset,
        dir: &Path,
        nbits: u32,
        centroids: Option<u32>,
        batch: usize,
    ) -> Result<BuildInfo> {
        let t = Instant::now();
        let db = Database::open_or_create(dir)
            .with_context(|| format!("{}: cannot create the database", dir.display()))?;
        let mut config = CollectionConfig::new(ds.dim as u32).with_nbits(nbits);
        if let Some(n) = centroids {
            config = config.with_n_centroids(n);
        }
        let coll = db.create_collection(COLLECTION, config)?;
        let opts = IngestOptions::default().with_expected_total_tokens(ds.n_tokens() as u64);
        let n = ds.n_docs();
        let mut seconds = t.elapsed().as_secs_f64();
        ds.for_each_block(batch, |start, offs, rows| {
            let base = offs[0];
            let docs: Vec<Document> = offs
                .windows(2)
                .enumerate()
                .map(|(i, w)| {
                    Document::new(
                        (start + i) as u64,
                        rows[(w[0] - base) * ds.dim..(w[1] - base) * ds.dim].to_vec(),
                    )
                })
                .collect();
            let end = start + docs.len();
            let t = Instant::now();
            coll.ingest(&docs, &opts)
                .with_context(|| format!("ingesting documents {start}..{end}"))?;
            seconds += t.elapsed().as_secs_f64();
            eprintln!(
                "  tessera: ingested {end}/{n} documents, {:.0} tokens/s",
                ds.offsets[end] as f64 / seconds
            );
            Ok(())
        })?;
        let info = coll.info();
        drop(coll);
        drop(db);
        let mut built = BuildInfo::measured(
            dir,
            seconds,
            ds.n_tokens(),
            Some(info.bytes_per_token),
            format!(
                "nbits {nbits}, {} centroids, originals {}, ingest batches of {batch} documents",
                info.centroids, info.config.originals
            ),
        );
        built.originals_bytes_per_token = Some(info.originals_bytes_per_token);
        Ok(built)
    }

    /// The figures of an index an earlier [`TesseraEngine::build`] left at `dir`, checked to
    /// hold `docs` documents; the ingest time is unknown (NaN).
    pub fn reuse(dir: &Path, docs: usize, tokens: usize) -> Result<BuildInfo> {
        let db = Database::open_read_only(dir)
            .with_context(|| format!("{}: cannot open the database", dir.display()))?;
        let info = db.collection(COLLECTION)?.info();
        if info.documents as usize != docs {
            bail!(
                "{}: holds {} documents, the corpus has {docs}: not the same corpus",
                dir.display(),
                info.documents
            );
        }
        let mut built = BuildInfo::measured(
            dir,
            f64::NAN,
            tokens,
            Some(info.bytes_per_token),
            format!(
                "reused index: {} centroids, originals {}",
                info.centroids, info.config.originals
            ),
        );
        built.originals_bytes_per_token = Some(info.originals_bytes_per_token);
        Ok(built)
    }

    /// Opens a database built by [`TesseraEngine::build`], to search on `device` (named in
    /// reports as `tessera` on the CPU, `tessera (cuda:N)` on a GPU).
    pub fn open(dir: &Path, device: Device) -> Result<Self> {
        let db = Database::open_read_only(dir)
            .with_context(|| format!("{}: cannot open the database", dir.display()))?;
        let coll = db.collection(COLLECTION)?;
        let label = match device {
            Device::Cpu => "tessera".to_string(),
            d => format!("tessera ({d})"),
        };
        Ok(TesseraEngine {
            _db: db,
            coll,
            device,
            refine: None,
            prefilter: None,
            label,
        })
    }

    /// The same open collection (same maps, same caches) with the refine stage off, named
    /// `…, refine off` in reports: a side-by-side row whose only difference is the stage.
    pub fn refine_off(&self) -> Self {
        TesseraEngine {
            _db: self._db.clone(),
            coll: self.coll.clone(),
            device: self.device,
            refine: Some(0),
            prefilter: self.prefilter,
            label: format!("{}, refine off", self.label),
        }
    }

    /// Fixes the prefilter budget (`None`: the engine's rule).
    pub fn with_prefilter(mut self, prefilter: Option<usize>) -> Self {
        self.prefilter = prefilter;
        if let Some(n) = prefilter {
            self.label.push_str(&format!(", prefilter {n}"));
        }
        self
    }

    /// Top-`k` by exact MaxSim over every document: over the originals when `originals`
    /// (what their precision alone loses), else over the compressed vectors (what the codec
    /// alone loses), with no pruning either way.
    pub fn search_exhaustive(&self, query: &[f32], k: usize, originals: bool) -> Result<Vec<u64>> {
        let p = SearchParams::exhaustive().with_device(self.device);
        let p = if originals { p } else { p.with_n_refine(0) };
        Ok(ids(&self.coll.search(query, k, &p)?))
    }

    fn params(&self, knobs: Knobs) -> SearchParams {
        let mut p = SearchParams::default()
            .with_nprobe(knobs.probe)
            .with_device(self.device);
        if let Some(r) = self.refine.or(knobs.refine) {
            p = p.with_n_refine(r);
        }
        if let Some(n) = self.prefilter.or(knobs.prefilter) {
            p = p.with_prefilter(n);
        }
        if knobs.rerank > 0 {
            p = p.with_n_rerank(knobs.rerank);
        }
        if let Some(t) = knobs.threads {
            p = p.with_threads(t);
        }
        p
    }
}

fn ids(hits: &[tessera::Hit]) -> Vec<u64> {
    hits.iter()
        .map(|h| match &h.id {
            ExternalId::Int(i) => *i,
            // The harness only ever ingests integer ids.
            _ => u64::MAX,
        })
        .collect()
}

impl Engine for TesseraEngine {
    fn name(&self) -> &str {
        &self.label
    }

    fn knob_names(&self) -> (&'static str, &'static str) {
        ("nprobe", "n_rerank")
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        knobs: Knobs,
    ) -> Result<(Vec<u64>, Option<tessera::SearchStats>)> {
        let (hits, stats) =
            self.coll
                .snapshot()
                .search_with_stats(query, k, &self.params(knobs))?;
        Ok((ids(&hits), Some(stats)))
    }

    fn search_batch(&self, queries: &[Vec<f32>], k: usize, knobs: Knobs) -> Result<Vec<Vec<u64>>> {
        Ok(self
            .coll
            .search_batch(queries, k, &self.params(knobs))?
            .iter()
            .map(|h| ids(h))
            .collect())
    }

    fn rerank_budget(&self, k: usize, knobs: Knobs) -> usize {
        self.params(knobs).rerank_budget(k)
    }
}
