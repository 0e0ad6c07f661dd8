//! Command-line arguments (clap derive), shared by the subcommands and the shell's
//! dot-commands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::formats::Format;
use crate::render::Mode;

/// The `tessera` command line.
#[derive(Parser, Debug)]
#[command(
    name = "tessera",
    version,
    about = "An embedded database for multi-vector (late-interaction) search",
    after_help = "Run `tessera shell DB` for an interactive shell (type .help there)."
)]
pub struct Cli {
    /// Say more: why searches run on the CPU, and other notes.
    #[arg(short = 'v', long, global = true)]
    pub verbose: bool,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a collection (and the database, if needed).
    Create {
        /// Database directory.
        db: PathBuf,
        /// Collection settings.
        #[command(flatten)]
        args: CreateArgs,
    },
    /// Ingest documents: a directory of .npy, .npy files, a flat .npy with --doclens,
    /// .safetensors or .jsonl of vectors, or text (--text corpus.jsonl --model DIR),
    /// streamed in atomic batches.
    ///
    /// The collection must exist, unless --create is given: then a missing database and
    /// collection are created, with the dimension of the input (the model's for --text, the
    /// vectors' otherwise) and default settings. Without --create, a missing collection is an
    /// error that names the `tessera create` command to run.
    Ingest {
        /// Database directory.
        db: PathBuf,
        /// Collection name.
        collection: String,
        /// Inputs and options.
        #[command(flatten)]
        args: IngestArgs,
        /// Create the database and the collection if missing (dimension from the input,
        /// default settings; `tessera create` chooses others).
        #[arg(long)]
        create: bool,
        /// Print the ingest summary as JSON on stdout (and nothing on stderr).
        #[arg(long)]
        json: bool,
    },
    /// Search with query matrices (`[tokens, dim]`, or `[queries, tokens, dim]` for many),
    /// query text (--text), or a stored document (--like ID).
    #[command(group(
        clap::ArgGroup::new("queries")
            .required(true)
            .args(["query", "text", "like"])
    ))]
    Search {
        /// Database directory.
        db: PathBuf,
        /// Collection name.
        collection: String,
        /// Query file: .npy, .safetensors, .json or .jsonl.
        #[arg(long)]
        query: Option<PathBuf>,
        /// Query text, encoded with the model (repeat for several queries).
        #[arg(long, value_name = "TEXT", value_parser = query_text)]
        text: Vec<String>,
        /// Use this document's stored vectors as the query ("more like this").
        #[arg(long, value_name = "ID")]
        like: Option<String>,
        /// Encoder model directory for --text (default: the one recorded with the
        /// collection, if it still holds the same model).
        #[arg(long, value_name = "DIR", requires = "text")]
        model: Option<PathBuf>,
        /// Search settings.
        #[command(flatten)]
        opts: SearchOpts,
        /// Output format.
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Score given documents against a query by exact MaxSim (rerank only): full
    /// precision over the originals where kept, else over the decompressed codes. Ids
    /// that are not in the collection are listed on stderr; an empty id list prints no rows.
    #[command(group(QUERIES.clone()))]
    Rerank(RerankArgs),
    /// Explain a document's score for a query: for each query token, the best document
    /// token, its position and the similarity (their sum is the MaxSim score); with
    /// --plot, a heatmap of every query token x document token similarity (SVG). With
    /// --text, tokens are labelled with their wordpieces (the document's from its kept text).
    #[command(group(QUERIES.clone()))]
    Explain(ExplainArgs),
    /// Show stored documents by id: token count, metadata, kept text and, with --vectors,
    /// the vectors.
    Get {
        /// Database directory.
        db: PathBuf,
        /// Collection name.
        collection: String,
        /// Ids (a number that is not a string id names an integer id).
        #[arg(required = true)]
        ids: Vec<String>,
        /// Also print each document's vectors (as stored: the originals, else decompressed).
        #[arg(long)]
        vectors: bool,
        /// Output format.
        #[command(flatten)]
        out: OutputArgs,
    },
    /// List every document: id, token count and metadata, in id order.
    List {
        /// Database directory.
        db: PathBuf,
        /// Collection name.
        collection: String,
        /// Only documents matching this filter (see `search --where`).
        #[arg(long = "where", value_name = "EXPR")]
        filter: Option<String>,
        /// Output format.
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Export every document's id, metadata and (with --text) kept text as JSON lines.
    Export {
        /// Database directory.
        db: PathBuf,
        /// Collection name.
        collection: String,
        /// Include the kept passage text.
        #[arg(long)]
        text: bool,
    },
    /// Delete documents by id.
    Delete {
        /// Database directory.
        db: PathBuf,
        /// Collection name.
        collection: String,
        /// Ids to delete (a number that is not a string id names an integer id).
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Merge a collection's segments and drop the bytes of deleted and replaced documents
    /// (searches and other writers go on meanwhile).
    Compact {
        /// Database directory.
        db: PathBuf,
        /// Collection name.
        collection: String,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Train a new codec from a sample of the collection's original vectors and re-encode
    /// every segment with it (searches and other writers go on meanwhile).
    Retrain {
        /// Database directory.
        db: PathBuf,
        /// Collection name.
        collection: String,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Read every file and catalog record and report every fault, one line each (checksums
    /// of every section and originals document, the id map, tombstones and counts against
    /// the segments, orphan files). Changes nothing; exits with status 1 if it finds any.
    Verify {
        /// Database directory.
        db: PathBuf,
        /// Print the report (problems, notes, counts) as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Show collections: documents, tokens, segments, bytes per token, codec, model.
    Info {
        /// Database directory.
        db: PathBuf,
        /// Only this collection.
        collection: Option<String>,
        /// Output format.
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Encode texts with a model into token vectors: DIR/flat.npy ([rows, dim] f32),
    /// DIR/doclens.npy, DIR/ids.txt and DIR/model.json, the flat layout `ingest` reads.
    Encode(EncodeArgs),
    /// Interactive shell (or a script piped into standard input); `.help` lists commands.
    Shell(ShellArgs),
    /// Write a synthetic clustered corpus (flat.npy, doclens.npy, ids.txt, queries.npy and,
    /// with --formats, the same corpus in other formats).
    Generate(GenerateArgs),
}

/// Settings of a new collection.
#[derive(Args, Debug, Clone)]
pub struct CreateArgs {
    /// Collection name.
    pub collection: String,
    /// Dimension of the token vectors.
    #[arg(long)]
    pub dim: u32,
    /// Residual bits per dimension (1, 2, 4 or 8).
    #[arg(long, default_value_t = 2)]
    pub nbits: u32,
    /// Number of IVF centroids (default: four times PLAID's heuristic, at most 65,536).
    #[arg(long)]
    pub centroids: Option<u32>,
    /// Most token vectors a document may have.
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// Precision of the kept original vectors, used to refine search results and returned
    /// by `vectors`: f16, bf16, f32, or none (codes only, the smallest footprint).
    #[arg(long, default_value = "f16", value_name = "PRECISION")]
    pub originals: tessera::Precision,
}

/// Inputs and options of an ingest.
#[derive(Args, Debug, Clone)]
pub struct IngestArgs {
    /// Input files or directories (format detected from the name unless --format).
    #[arg(value_name = "FILES", required_unless_present = "text")]
    pub inputs: Vec<PathBuf>,
    /// Text corpus instead of vectors: JSON lines `{"id": …, "text": "…", "metadata": {…}}`,
    /// encoded with --model while earlier batches compress and commit. Creates the
    /// collection (dimension from the model) if it does not exist.
    #[arg(long, value_name = "JSONL", num_args = 1.., conflicts_with_all = ["inputs", "format", "doclens", "ids", "no_validate"])]
    pub text: Vec<PathBuf>,
    /// Encoder model directory (Hugging Face BERT or PyLate ColBERT). With --text: the model
    /// to encode with (default: the one recorded with the collection). With vector inputs:
    /// declares the model that produced them (e.g. `tessera encode` output), so the collection
    /// records it. A model other than the collection's recorded one is an error.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Texts per encoder forward pass (with --text).
    #[arg(long, default_value_t = 32)]
    pub encode_batch: usize,
    /// Input format of all inputs.
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Tokens per document of a flat input (.npy integers or a .json list).
    #[arg(long)]
    pub doclens: Option<PathBuf>,
    /// Ids of a flat input, one per line (default: positions 0, 1, ...).
    #[arg(long)]
    pub ids: Option<PathBuf>,
    /// Replace documents whose id exists instead of rejecting the input.
    #[arg(long)]
    pub upsert: bool,
    /// Skip documents whose id exists (counted in the summary) instead of rejecting the
    /// input: resumes an ingest that stopped part way.
    #[arg(long, conflicts_with = "upsert")]
    pub skip_existing: bool,
    /// Token vectors per committed batch (each batch commits atomically).
    #[arg(long, default_value_t = 1_000_000)]
    pub batch_tokens: usize,
    /// Skip the validation pass (faster; a bad document then fails its batch after earlier
    /// batches have committed).
    #[arg(long)]
    pub no_validate: bool,
    /// Threads for text encoding and vector compression (0: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// With --text: do not keep the passage text (by default it is stored compressed with
    /// each document and returned with hits).
    #[arg(long, requires = "text")]
    pub no_store_text: bool,
}

/// Options of `tessera encode`.
#[derive(Args, Debug, Clone)]
pub struct EncodeArgs {
    /// Encoder model directory (Hugging Face BERT or PyLate ColBERT).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// JSON-lines texts: `{"id": …, "text": "…"}` per line (repeatable).
    #[arg(long, value_name = "JSONL", required = true, num_args = 1..)]
    pub input: Vec<PathBuf>,
    /// Encode as queries (ColBERT query marker and [MASK] expansion) instead of documents.
    #[arg(long)]
    pub queries: bool,
    /// Output directory (created if missing; must not hold an earlier output).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Encoder threads (0: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Search settings.
#[derive(Args, Debug, Clone)]
pub struct SearchOpts {
    /// Results per query (at least 1).
    #[arg(short = 'k', default_value_t = 10, value_parser = at_least_one::<usize>)]
    pub k: usize,
    /// Centroids probed per query token (at least 1).
    #[arg(long, value_parser = at_least_one::<u32>)]
    pub nprobe: Option<u32>,
    /// Documents re-ranked exactly over the compressed vectors, exactly this many (default:
    /// at least max(256, 8k), deeper while documents still reach the refine stage).
    #[arg(long)]
    pub rerank: Option<usize>,
    /// Candidates re-scored with the original vectors (0: off; default max(64, 4k); in the
    /// shell, the `.refine` setting).
    #[arg(long, value_name = "N")]
    pub refine: Option<usize>,
    /// Score every document exactly (slow; for verification).
    #[arg(long)]
    pub exhaustive: bool,
    /// Where to search: auto (a CUDA GPU when usable, else the CPU), cpu, cuda or cuda:N
    /// (default: auto; in the shell, the `.device` setting).
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<tessera::Device>,
    /// Diverse top-k: skip a candidate whose normalised MaxSim to the query or to a kept
    /// result exceeds the thresholds (default 0.9 each; in the shell, the `.diversity`
    /// setting).
    #[arg(long)]
    pub diverse: bool,
    /// Diverse top-k, skipping candidates with MaxSim(query, doc) / query tokens above T
    /// (|T| at most 1; 1: no test).
    #[arg(long, value_name = "T", value_parser = similarity, allow_negative_numbers = true)]
    pub max_query_similarity: Option<f32>,
    /// Diverse top-k, skipping candidates whose symmetric normalised MaxSim to a result
    /// already kept is above T (|T| at most 1; 1: no test).
    #[arg(long, value_name = "T", value_parser = similarity, allow_negative_numbers = true)]
    pub max_kept_similarity: Option<f32>,
    /// Only documents whose metadata match EXPR, e.g. `lang = "en" AND year >= 2020 AND NOT
    /// tag IN ("a","b") AND EXISTS author`, or `@id IN ("d1", 7)` (README, "Filters"; in
    /// the shell, the `.where` setting).
    #[arg(long = "where", value_name = "EXPR")]
    pub filter: Option<String>,
    /// Columns of each hit, comma-separated, from query, rank, id, score, metadata, text
    /// (default: query,rank,id,score; in the shell, the `.fields` setting).
    #[arg(long, value_name = "LIST", value_parser = parse_fields)]
    pub fields: Option<Fields>,
    /// Threads one query may use (its per-document stages split among them; 0: all cores;
    /// the same hits for every value).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// The columns a search prints ([`SearchOpts::fields`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fields(pub Vec<&'static str>);

/// Every column a hit can show, in the default order.
pub const HIT_COLUMNS: [&str; 6] = ["query", "rank", "id", "score", "metadata", "text"];

impl Default for Fields {
    fn default() -> Self {
        Fields(vec!["query", "rank", "id", "score"])
    }
}

impl std::fmt::Display for Fields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// A comma-separated list of hit columns, each known and none twice.
pub fn parse_fields(s: &str) -> Result<Fields, String> {
    let mut out: Vec<&'static str> = Vec::new();
    for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let Some(&col) = HIT_COLUMNS.iter().find(|c| c.eq_ignore_ascii_case(word)) else {
            return Err(format!(
                "unknown field {word:?}; choose from {}",
                HIT_COLUMNS.join(", ")
            ));
        };
        if out.contains(&col) {
            return Err(format!("field {word:?} is listed twice"));
        }
        out.push(col);
    }
    if out.is_empty() {
        return Err(format!(
            "no fields given; choose from {}",
            HIT_COLUMNS.join(", ")
        ));
    }
    Ok(Fields(out))
}

/// A diversity threshold: normalised MaxSim, a number from -1 to 1.
pub fn similarity(s: &str) -> Result<f32, String> {
    let v: f32 = s.trim().parse().map_err(|e| format!("{e}"))?;
    let probe = tessera::Diversity::new(v, v);
    probe
        .check()
        .map_err(|_| format!("{s} is not a number from -1 to 1 (normalised MaxSim)"))?;
    Ok(v)
}

/// Where the query of `rerank` and `explain` comes from: the options of `search`.
/// One of --query, --text and --like is required (the `queries` group of the commands that
/// flatten this).
#[derive(Args, Debug, Clone)]
pub struct QuerySource {
    /// Query file: .npy, .safetensors, .json or .jsonl.
    #[arg(long)]
    pub query: Option<PathBuf>,
    /// Query text, encoded with the model.
    #[arg(long, value_name = "TEXT", value_parser = query_text)]
    pub text: Option<String>,
    /// Use this document's stored vectors as the query.
    #[arg(long, value_name = "ID")]
    pub like: Option<String>,
    /// Encoder model directory for --text (default: the one recorded with the collection).
    #[arg(long, value_name = "DIR", requires = "text")]
    pub model: Option<PathBuf>,
}

/// Exactly one query source for `rerank` and `explain`.
static QUERIES: std::sync::LazyLock<clap::ArgGroup> = std::sync::LazyLock::new(|| {
    clap::ArgGroup::new("queries")
        .required(true)
        .args(["query", "text", "like"])
});

/// Options of `tessera rerank`.
#[derive(Args, Debug, Clone)]
pub struct RerankArgs {
    /// Database directory.
    pub db: PathBuf,
    /// Collection name.
    pub collection: String,
    /// The query.
    #[command(flatten)]
    pub source: QuerySource,
    /// Ids of the documents to score, comma-separated (repeatable).
    #[arg(
        long,
        value_name = "ID,ID",
        value_delimiter = ',',
        required_unless_present = "ids_file"
    )]
    pub ids: Vec<String>,
    /// A file of ids to score, one per line.
    #[arg(long, value_name = "FILE", conflicts_with = "ids")]
    pub ids_file: Option<PathBuf>,
    /// Results per query (default: every given document).
    #[arg(short = 'k', value_parser = at_least_one::<usize>)]
    pub k: Option<usize>,
    /// Output format.
    #[command(flatten)]
    pub out: OutputArgs,
}

/// Options of `tessera explain`.
#[derive(Args, Debug, Clone)]
pub struct ExplainArgs {
    /// Database directory.
    pub db: PathBuf,
    /// Collection name.
    pub collection: String,
    /// The document to explain.
    pub id: String,
    /// The query.
    #[command(flatten)]
    pub source: QuerySource,
    /// Write a heatmap of query tokens x document tokens to this .svg file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Output format.
    #[command(flatten)]
    pub out: OutputArgs,
}

/// A count that must be positive: 0 results or 0 probes would silently return nothing.
pub fn at_least_one<T>(s: &str) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + From<u8>,
    T::Err: std::fmt::Display,
{
    let n: T = s.parse().map_err(|e: T::Err| e.to_string())?;
    if n < T::from(1) {
        Err("must be at least 1".into())
    } else {
        Ok(n)
    }
}

/// Query text that has something to encode: an empty query would match nothing in particular.
pub fn query_text(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        Err("the query text is empty".into())
    } else {
        Ok(s.to_owned())
    }
}

/// Output format of a subcommand.
#[derive(Args, Debug, Clone)]
pub struct OutputArgs {
    /// JSON lines (the default when stdout is not a terminal).
    #[arg(long)]
    pub json: bool,
    /// Output mode.
    #[arg(long, value_enum, conflicts_with = "json")]
    pub mode: Option<Mode>,
}

impl OutputArgs {
    /// The chosen mode: `--mode`, `--json`, or table on a terminal and JSON lines otherwise.
    pub fn mode(&self) -> Mode {
        match (self.mode, self.json) {
            (Some(m), _) => m,
            (None, true) => Mode::Jsonl,
            (None, false) => Mode::auto(),
        }
    }
}

/// Options of `tessera shell`.
#[derive(Args, Debug, Clone)]
pub struct ShellArgs {
    /// Database directory to open (created if missing); `.open` opens another.
    pub db: Option<PathBuf>,
    /// Run this shell command and exit (repeatable; runs in order).
    #[arg(short = 'c', long = "command", value_name = "CMD")]
    pub commands: Vec<String>,
    /// Open the database read-only (works while another process writes it).
    #[arg(long)]
    pub read_only: bool,
    /// Print each command before running it (for scripts).
    #[arg(long)]
    pub echo: bool,
    /// Stop at the first error (like `.bail on`).
    #[arg(long)]
    pub bail: bool,
    /// Output mode (default: table on a terminal, JSON lines otherwise).
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
}

/// Options of `tessera generate`.
#[derive(Args, Debug, Clone)]
pub struct GenerateArgs {
    /// Output directory.
    pub out: PathBuf,
    /// Number of documents.
    #[arg(long, default_value_t = 2000)]
    pub docs: usize,
    /// Dimension.
    #[arg(long, default_value_t = 128)]
    pub dim: usize,
    /// Number of queries (32 tokens each).
    #[arg(long, default_value_t = 5)]
    pub queries: usize,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also write the corpus as: npy-dir (docs/*.npy), safetensors (corpus.safetensors:
    /// embeddings + doclens), safetensors-docs (docs.safetensors: a tensor per document),
    /// jsonl (corpus.jsonl); or `all`.
    #[arg(long, value_delimiter = ',')]
    pub formats: Vec<String>,
}
