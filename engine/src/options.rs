//! Settings of collections, ingest and search. Every field has a measured default.

use serde::{Deserialize, Serialize};
pub use tessera_storage::originals::Precision;

pub use crate::writer::MergePolicy;

/// Settings fixed when a collection is created.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CollectionConfig {
    /// Dimension of token vectors (1 to 4096).
    pub dim: u32,
    /// Residual bits per dimension: 1, 2, 4 or 8.
    pub nbits: u32,
    /// Number of IVF centroids; `None` picks [`crate::default_centroids`] (four times PLAID's
    /// `2^floor(log2(16 sqrt(tokens)))`, at most 65,536 and one per 16 tokens, never fewer
    /// than PLAID's) from the expected total, or else the batch that trains the codec.
    pub n_centroids: Option<u32>,
    /// Upper bound on tokens per document.
    pub max_tokens_per_doc: u32,
    /// k-means iterations for each level of codec training.
    pub kmeans_iters: u32,
    /// Seed of codec training; the same data and seed give the same codec.
    pub seed: u64,
    /// Precision at which each segment keeps the ingested vectors (FORMAT.md, "Originals"):
    /// `F16` by default, read by search only for the candidates it refines
    /// ([`SearchParams::n_refine`]) and returned by `Collection::vectors`. `None` keeps only
    /// the compressed codes. Collections created before originals existed read as `None`.
    #[serde(default = "no_originals")]
    pub originals: Precision,
    /// When the writer merges segments by itself, and how large merges make them
    /// ([`MergePolicy`]; collections created before merges existed get the default).
    #[serde(default)]
    pub merge_policy: MergePolicy,
}

fn no_originals() -> Precision {
    Precision::None
}

impl CollectionConfig {
    /// Settings for vectors of `dim` dimensions, with defaults for everything else.
    pub fn new(dim: u32) -> Self {
        CollectionConfig {
            dim,
            nbits: 2,
            n_centroids: None,
            max_tokens_per_doc: 65_536,
            kmeans_iters: 8,
            seed: 42,
            originals: Precision::F16,
            merge_policy: MergePolicy::default(),
        }
    }

    /// Sets the precision of the kept original vectors ([`Precision::None`]: keep none).
    pub fn originals(mut self, precision: Precision) -> Self {
        self.originals = precision;
        self
    }

    /// Sets the residual bits per dimension.
    pub fn with_nbits(mut self, nbits: u32) -> Self {
        self.nbits = nbits;
        self
    }

    /// Fixes the number of centroids instead of the default rule.
    pub fn with_n_centroids(mut self, n: u32) -> Self {
        self.n_centroids = Some(n);
        self
    }

    /// Sets the per-document token limit.
    pub fn with_max_tokens_per_doc(mut self, n: u32) -> Self {
        self.max_tokens_per_doc = n;
        self
    }

    /// Sets the merge policy.
    pub fn with_merge_policy(mut self, policy: MergePolicy) -> Self {
        self.merge_policy = policy;
        self
    }

    /// Sets the training seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.dim == 0 || self.dim > 4096 {
            return Err(format!("dim must be between 1 and 4096, got {}", self.dim));
        }
        if !matches!(self.nbits, 1 | 2 | 4 | 8) {
            return Err(format!("nbits must be 1, 2, 4 or 8, got {}", self.nbits));
        }
        if self.n_centroids == Some(0) {
            return Err("n_centroids must be at least 1".into());
        }
        if self.max_tokens_per_doc == 0 {
            return Err("max_tokens_per_doc must be at least 1".into());
        }
        if self.kmeans_iters == 0 {
            return Err("kmeans_iters must be at least 1".into());
        }
        if let Some(problem) = self.merge_policy.problem() {
            return Err(format!("merge policy: {problem}"));
        }
        Ok(())
    }
}

/// What to do when an ingested id already exists in the collection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnConflict {
    /// Reject the whole batch (the default: silent overwrites lose data).
    #[default]
    Reject,
    /// Replace the existing document, atomically with the rest of the batch.
    Replace,
}

/// Options of one ingest call.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct IngestOptions {
    /// Policy for ids that already exist.
    pub on_conflict: OnConflict,
    /// Worker threads for encoding (`0`: all cores).
    pub threads: usize,
    /// Tokens the whole corpus is expected to hold, when it arrives in several batches.
    /// If this batch trains the codec, the default centroid count follows this total
    /// instead of the batch's own size.
    pub expected_total_tokens: Option<u64>,
    /// The text encoder that produced the batch's vectors. The first batch that carries a
    /// model records it in the collection; a batch with a different model (another hash) is
    /// rejected with [`crate::Error::ModelMismatch`].
    pub model: Option<crate::ModelRecord>,
}

impl IngestOptions {
    /// Replace existing documents with the same id instead of rejecting the batch.
    pub fn upsert() -> Self {
        IngestOptions {
            on_conflict: OnConflict::Replace,
            ..IngestOptions::default()
        }
    }

    /// Sets the expected size of the whole corpus (see the field's documentation).
    pub fn with_expected_total_tokens(mut self, tokens: u64) -> Self {
        self.expected_total_tokens = Some(tokens);
        self
    }

    /// Sets the number of encoding threads (`0`: all cores).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// Declares the encoder model of the batch's vectors (see the field's documentation).
    pub fn with_model(mut self, model: crate::ModelRecord) -> Self {
        self.model = Some(model);
        self
    }
}

/// Parameters of one search.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SearchParams {
    /// Centroids probed per query token. The default, 16, gave the same recall as
    /// 8 on a 40K-document corpus while the candidate prefilter kept the extra candidates
    /// cheap (BENCHMARKS.md, "search pipeline").
    pub nprobe: u32,
    /// Documents kept after approximate (centroid) scoring and re-ranked exactly, exactly
    /// this many; `None`: at least `max(rerank_floor, 8 k)` and deeper, up to
    /// [`RERANK_DEPTH`] times that, while documents still reach the refine stage
    /// ([`SearchParams::rerank_limit`]).
    pub n_rerank: Option<usize>,
    /// Lower bound of the default re-rank budget. The default, 256, lifted recall@10 on
    /// real ColBERT vectors from 0.682 to 0.734 over 128 for about 3 ms (BENCHMARKS.md,
    /// python-doc run 4).
    pub rerank_floor: usize,
    /// Candidates re-scored with full-precision MaxSim over their original vectors after
    /// the compressed exact stage; the final ranking and the returned scores come from these
    /// scores. `Some(0)` turns the stage off; `None` (the default) refines
    /// [`SearchParams::refine_budget`] candidates. Segments without originals (collections
    /// created with `Precision::None`, or before originals existed) keep their compressed
    /// scores.
    #[serde(default)]
    pub n_refine: Option<usize>,
    /// Candidates kept by the postings-only estimate for the centroid-code estimate;
    /// `None`: [`SearchParams::prefilter_budget`]'s rule, which grows with the collection.
    #[serde(default)]
    pub prefilter: Option<usize>,
    /// Score every live document exactly (slow; for verification): MaxSim over the
    /// originals where the collection keeps them (unless `n_refine` is set), else over the
    /// compressed vectors.
    pub exhaustive: bool,
    /// Where the search runs (default `auto`: the first CUDA device when one is usable).
    #[serde(default)]
    pub device: Device,
    /// Diverse top-k (issue 14): skip candidates too similar to the query or to a document
    /// already kept ([`crate::Diversity`], `diversity.rs`); `None` (the default): plain
    /// top-k.
    #[serde(default)]
    pub diversity: Option<crate::Diversity>,
    /// Only documents matching this filter are returned; the candidate stages skip the
    /// others, so the top-k is filled from matching documents (module `filter`). A filtered
    /// search runs on the CPU (the GPU path logs why and falls back).
    #[serde(skip)]
    pub filter: Option<crate::Filter>,
    /// A filtered search ranks every matching document by its centroid-code estimate
    /// instead of gathering candidates from the probed postings when at most this many
    /// match; `None`: the prefilter budget at the depth the filter asks for
    /// ([`SearchParams::filter_scan_budget`]), or whenever the postings walk would read
    /// more than the matches' codes (engine module `filter::depth`).
    #[serde(default)]
    pub filter_scan: Option<usize>,
    /// A filtered search scores every matching document by full-precision MaxSim over its
    /// originals, skipping the centroid stages altogether, when at most this many match
    /// (and every segment keeps originals); `None`: [`FILTER_EXACT_DOCS`].
    #[serde(default)]
    pub filter_exact: Option<usize>,
    /// What each hit carries besides its id and score (metadata, text). Off by default, so
    /// a bare search reads nothing from the catalog. Filled by `Collection::search` and
    /// `search_batch`; a `Snapshot` holds no catalog and leaves them empty.
    #[serde(default)]
    pub fields: HitFields,
    /// Worker threads one search may use (intra-query parallelism, for latency on idle
    /// cores): the per-document stages (centroid-code estimate, exact stage over compressed
    /// vectors, refine) split their documents among them. 1 (the default) searches on the
    /// calling thread only; 0 uses one per core. The hits are the same for every value
    /// (`parallel.rs`); throughput across concurrent queries is better served by one
    /// thread each.
    #[serde(default = "one_thread")]
    pub threads: usize,
}

fn one_thread() -> usize {
    1
}

/// Matching documents up to which a filtered search is answered by exact MaxSim over their
/// originals alone ([`SearchParams::filter_exact`]): the centroid stages cost a fixed
/// query × centroid table per query (65,536 centroids × 32 query tokens at 100K documents),
/// which scoring a few hundred documents exactly undercuts (BENCHMARKS.md, "Filtered
/// search").
pub const FILTER_EXACT_DOCS: usize = 512;

/// What hits carry besides id and score ([`SearchParams::fields`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HitFields {
    /// The document's JSON metadata.
    pub metadata: bool,
    /// The document's kept passage text.
    pub text: bool,
}

/// Lower bound of the default prefilter budget ([`SearchParams::prefilter_budget`]).
pub const PREFILTER_FLOOR: usize = 4096;
/// The default prefilter budget keeps at least one in this many live documents.
pub const PREFILTER_DIVISOR: u64 = 64;

/// How many times the re-rank budget the exact stage may go deeper by default when the
/// estimates leave candidates that could still reach the refine stage.
pub const RERANK_DEPTH: usize = 8;

/// Lower bound of the default refine budget ([`SearchParams::refine_budget`]). On
/// python-doc (real ColBERT vectors, whose 2-bit codes rank the exact top-10 deeper than
/// synthetic ones do) the exact top-10 documents that the compressed stage scored lay at
/// compressed ranks up to 64 at top-10; refining 32, 48, 64 or 128 gave the same recall@10
/// on synthetic-minilm 100K (BENCHMARKS.md, "Exact answers").
pub const REFINE_FLOOR: usize = 64;
/// Candidates refined per requested hit by default: 64 at top-10, 400 at top-100.
pub const REFINE_PER_K: usize = 4;
/// The exact stage's early stop watches the best `refine + refine / SETTLE_MARGIN_DIVISOR`
/// exact scores ([`SearchParams::settle_cut`]): a document that enters that wider set
/// late still moves the documents the refine stage takes, so stopping only once the wider
/// set is settled reaches the exact top-k that the estimate ranked deep. On python-doc it
/// took recall@10 from 0.988 to 0.990 at 64 refined, for 22% more documents scored over
/// the compressed vectors (BENCHMARKS.md, "Exact answers").
pub const SETTLE_MARGIN_DIVISOR: usize = 2;

impl Default for SearchParams {
    fn default() -> Self {
        SearchParams {
            nprobe: 16,
            n_rerank: None,
            rerank_floor: 256,
            n_refine: None,
            prefilter: None,
            exhaustive: false,
            device: Device::Auto,
            diversity: None,
            filter: None,
            filter_scan: None,
            filter_exact: None,
            fields: HitFields::default(),
            threads: 1,
        }
    }
}

impl SearchParams {
    /// Exact MaxSim over every live document's decompressed vectors.
    pub fn exhaustive() -> Self {
        SearchParams {
            exhaustive: true,
            ..SearchParams::default()
        }
    }

    /// Sets the worker threads one search may use ([`SearchParams::threads`]).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// Sets the number of centroids probed per query token.
    pub fn with_nprobe(mut self, nprobe: u32) -> Self {
        self.nprobe = nprobe;
        self
    }

    /// Returns only documents that match `filter`.
    pub fn with_filter(mut self, filter: crate::Filter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Makes hits carry the chosen fields (metadata, text).
    pub fn with_fields(mut self, fields: HitFields) -> Self {
        self.fields = fields;
        self
    }

    /// Sets the most matching documents a filtered search scores exactly over their
    /// originals alone (`0`: never).
    pub fn with_filter_exact(mut self, n: usize) -> Self {
        self.filter_exact = Some(n);
        self
    }

    /// `filter_exact`, else [`FILTER_EXACT_DOCS`].
    pub fn filter_exact_budget(&self) -> usize {
        self.filter_exact.unwrap_or(FILTER_EXACT_DOCS)
    }

    /// Sets the most matching documents a filtered search ranks all of instead of probing
    /// postings (`0`: always probe).
    pub fn with_filter_scan(mut self, n: usize) -> Self {
        self.filter_scan = Some(n);
        self
    }

    /// The most matching documents for which a top-`k` search over `live_docs` documents
    /// ranks every matching document by its centroid-code estimate instead of gathering
    /// candidates from the probed postings: `filter_scan`, else the prefilter budget
    /// ([`SearchParams::prefilter_budget`]). A filtered search asks it for `k` divided by
    /// the filter's selectivity, the depth of the unfiltered ranking its top `k` are spread
    /// over (module `filter::depth`). Why that budget: the postings stage of a search that
    /// deep keeps that many candidates for the same estimate, so estimating all matching
    /// documents costs no more, and it reaches the matching documents that share no probed
    /// centroid with the query (BENCHMARKS.md, "Filtered search").
    pub fn filter_scan_budget(&self, k: usize, live_docs: u64) -> usize {
        self.filter_scan
            .unwrap_or_else(|| self.prefilter_budget(k, live_docs))
    }

    /// Sets where the search runs.
    pub fn with_device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }

    /// Sets the number of documents re-ranked exactly.
    pub fn with_n_rerank(mut self, n: usize) -> Self {
        self.n_rerank = Some(n);
        self
    }

    /// Sets the number of candidates refined with the original vectors (`0`: off).
    pub fn with_n_refine(mut self, n: usize) -> Self {
        self.n_refine = Some(n);
        self
    }

    /// The most documents a top-`k` search scores exactly over the compressed vectors: the
    /// re-rank budget when `n_rerank` is set (then exactly that many), else
    /// [`RERANK_DEPTH`] times it. Between the budget and this bound the search stops as soon
    /// as no remaining candidate can reach the refine stage (`search.rs`, "Early stop").
    pub fn rerank_limit(&self, k: usize) -> usize {
        let budget = self.rerank_budget(k);
        if self.n_rerank.is_some() {
            budget
        } else {
            budget.saturating_mul(RERANK_DEPTH)
        }
    }

    /// How many best exact scores the exact stage's early stop watches for a top-`k` search:
    /// those the refine stage will take and half as many again
    /// ([`SETTLE_MARGIN_DIVISOR`]), at least `k`. With refine off it is still computed from
    /// the refine budget (`n_refine` unset), so turning refine off changes only that stage,
    /// not the candidates before it.
    pub(crate) fn settle_cut(&self, k: usize) -> usize {
        let refine = match self.refine_count(k) {
            0 => SearchParams {
                n_refine: None,
                ..self.clone()
            }
            .refine_budget(k),
            n => n,
        };
        refine.saturating_add(refine / SETTLE_MARGIN_DIVISOR).max(k)
    }

    /// Documents re-ranked exactly for a top-`k` search with these parameters (at least;
    /// see [`SearchParams::rerank_limit`]).
    pub fn rerank_budget(&self, k: usize) -> usize {
        self.n_rerank
            .unwrap_or_else(|| self.rerank_floor.max(8 * k))
            .max(k)
    }

    /// Sets the number of candidates kept by the postings-only estimate.
    pub fn with_prefilter(mut self, n: usize) -> Self {
        self.prefilter = Some(n);
        self
    }

    /// Candidates kept by the postings-only estimate for a top-`k` search over `live_docs`
    /// documents: `prefilter` when set, else `max(PREFILTER_FLOOR, 16 * rerank budget,
    /// live_docs / PREFILTER_DIVISOR)`. The last term makes the budget grow with the
    /// collection: the pool it is cut from (every document that shares a probed centroid
    /// with the query) grows linearly with the collection, and a fixed cut loses recall as
    /// it does (BENCHMARKS.md, "Budgets that scale").
    pub fn prefilter_budget(&self, k: usize, live_docs: u64) -> usize {
        self.prefilter.unwrap_or_else(|| {
            let by_size = usize::try_from(live_docs / PREFILTER_DIVISOR).unwrap_or(usize::MAX);
            PREFILTER_FLOOR.max(16 * self.rerank_budget(k)).max(by_size)
        })
    }

    /// Whether a top-`k` search over `live_docs` documents scores every one of them: when
    /// asked to (`exhaustive`), or when `k` covers the collection, since the candidate
    /// stages could then only lose documents.
    pub(crate) fn full_scan(&self, k: usize, live_docs: u64) -> bool {
        self.exhaustive || k as u64 >= live_docs
    }

    /// Candidates a search refines: [`SearchParams::refine_budget`], except that an
    /// exhaustive search without an explicit `n_refine` refines every document (it is then
    /// exact MaxSim over the originals).
    pub(crate) fn refine_count(&self, k: usize) -> usize {
        if self.exhaustive && self.n_refine.is_none() {
            usize::MAX
        } else {
            self.refine_budget(k)
        }
    }

    /// Candidates refined with original vectors for a top-`k` search: `n_refine` when set,
    /// else `max(REFINE_FLOOR, REFINE_PER_K * k)`, never more than the re-rank budget.
    pub fn refine_budget(&self, k: usize) -> usize {
        self.n_refine
            .unwrap_or_else(|| REFINE_FLOOR.max(REFINE_PER_K * k))
            .min(self.rerank_budget(k))
    }
}

/// Where searches run: `auto`, `cpu`, `cuda` or `cuda:N` in text form.
///
/// `auto` uses CUDA device 0 when a driver, the device and NVRTC are usable and the
/// collection fits the device's memory budget, and the CPU otherwise (the reason is logged
/// once per process). `cuda[:N]` insists: a search fails with [`crate::Error::Device`] when
/// the device cannot be used. Both paths return the same top-k (see the README).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Device {
    /// CUDA device 0 when usable, else the CPU.
    #[default]
    Auto,
    /// The CPU path.
    Cpu,
    /// CUDA device `N`, or an error.
    Cuda(usize),
}

/// A device name that is not `auto`, `cpu`, `cuda` or `cuda:N`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid device {0:?}: expected auto, cpu, cuda or cuda:N (N a device number)")]
pub struct ParseDeviceError(pub String);

impl std::str::FromStr for Device {
    type Err = ParseDeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => t
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<usize>().ok())
                .map(Device::Cuda)
                .ok_or_else(|| ParseDeviceError(s.to_string())),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Auto => f.write_str("auto"),
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl From<Device> for String {
    fn from(d: Device) -> String {
        d.to_string()
    }
}

impl TryFrom<String> for Device {
    type Error = ParseDeviceError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_round_trip_and_bad_names_say_what_is_expected() {
        for (text, dev) in [
            ("auto", Device::Auto),
            ("cpu", Device::Cpu),
            ("cuda:0", Device::Cuda(0)),
            ("cuda:3", Device::Cuda(3)),
        ] {
            assert_eq!(text.parse::<Device>(), Ok(dev));
            assert_eq!(dev.to_string(), text);
        }
        assert_eq!("cuda".parse::<Device>(), Ok(Device::Cuda(0)));
        assert_eq!(" CUDA:1 ".parse::<Device>(), Ok(Device::Cuda(1)));
        for bad in ["", "tpu", "cuda:", "cuda:x", "cuda:-1", "cpu:0"] {
            let e = bad.parse::<Device>().expect_err(bad);
            assert!(
                e.to_string().contains("expected auto, cpu, cuda or cuda:N"),
                "{e}"
            );
        }
    }

    #[test]
    fn search_params_without_a_device_field_deserialise_to_auto() {
        let p: SearchParams = serde_json::from_str(
            r#"{"nprobe":4,"n_rerank":null,"rerank_floor":128,"exhaustive":false}"#,
        )
        .expect("old params parse");
        assert_eq!(p.device, Device::Auto);
        let back: SearchParams = serde_json::from_str(
            &serde_json::to_string(&p.clone().with_device(Device::Cuda(2))).expect("serialise"),
        )
        .expect("round trip");
        assert_eq!(back.device, Device::Cuda(2));
    }
}
