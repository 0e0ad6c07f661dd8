//! Tessera's ONNX-free text encoder: BERT-family forward passes and the PyLate ColBERT head in
//! pure Rust.
//!
//! ```no_run
//! use std::path::Path;
//! use tessera_encoder::{Encoder, EncoderOptions};
//!
//! # fn main() -> Result<(), tessera_encoder::EncoderError> {
//! let encoder = Encoder::load(Path::new("models/colbert-minilm"), EncoderOptions::default())?;
//! let docs = encoder.encode_documents(&["late interaction over token embeddings"])?;
//! let queries = encoder.encode_queries(&["what is late interaction?"])?;
//! assert_eq!(docs[0].dim, encoder.dim());
//! assert_eq!(queries[0].rows, 32);
//! # Ok(())
//! # }
//! ```
//!
//! Two model directory layouts load:
//! * a Hugging Face BERT directory (`config.json`, `model.safetensors`, `tokenizer.json`):
//!   [`ModelKind::Bert`], whose outputs are per-token last hidden states;
//! * a PyLate / sentence-transformers ColBERT directory (`modules.json` listing a Transformer
//!   and Dense projections, `config_sentence_transformers.json`): [`ModelKind::ColBert`], whose
//!   outputs are the projected, L2-normalised token vectors PyLate's `encode` returns.

mod bert;
mod colbert;
mod config;
mod error;
mod ops;
mod tokenize;
mod tokenizer_limits;
mod weights;

use std::path::{Path, PathBuf};

use faer::Par;

use crate::bert::{BertModel, SeqInput, Workspace};
use crate::colbert::ColbertHead;
use crate::config::{DenseConfig, Fingerprint, ModuleLayout, read_file};
use crate::weights::{BertWeights, Dense};

pub use crate::config::{Activation, BertConfig, ColbertSettings};
pub use crate::error::{EncoderError, Result};
// Public so that the tokenizer input path can be fuzzed on its own (tests/fuzz), without a model.
pub use crate::tokenize::TextTokenizer;

/// Load-time options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderOptions {
    /// Worker threads for one encode call; `0` means all available cores.
    pub threads: usize,
    /// Texts per forward pass. Larger batches amortise per-call overhead; memory grows with
    /// `batch_size × tokens × intermediate_size`.
    pub batch_size: usize,
    /// Truncation length for plain BERT inputs and [`Encoder::last_hidden_states`], special
    /// tokens included; `None` (and anything larger) means `max_position_embeddings`. ColBERT
    /// queries and documents use the model's own `query_length` / `document_length`.
    pub max_length: Option<usize>,
}

impl Default for EncoderOptions {
    fn default() -> Self {
        Self {
            threads: 0,
            batch_size: 32,
            max_length: None,
        }
    }
}

/// Which head the model directory declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// A bare transformer: outputs are per-token hidden states.
    Bert,
    /// Transformer plus ColBERT projection, with PyLate's query/document handling.
    ColBert,
}

/// Identity of a loaded model.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelId {
    /// The model directory's name.
    pub name: String,
    /// Lowercase hex SHA-256 over every file that determines the outputs (configs, tokenizer,
    /// weights), each framed by its relative path and length. Equal hashes mean equal vectors.
    pub hash: String,
}

/// Which input construction to apply, for [`Encoder::token_ids`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// As [`Encoder::encode_queries`] builds its inputs.
    Query,
    /// As [`Encoder::encode_documents`] builds its inputs.
    Document,
    /// The tokenizer alone (`[CLS] … [SEP]`), as [`Encoder::last_hidden_states`] uses.
    Plain,
}

/// Per-token vectors of one text, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenMatrix {
    /// `rows × dim` values, one token vector after another.
    pub data: Vec<f32>,
    /// Number of token vectors.
    pub rows: usize,
    /// Width of each vector.
    pub dim: usize,
}

impl TokenMatrix {
    /// The `i`-th token vector.
    ///
    /// # Panics
    /// If `i >= self.rows`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Iterates over the token vectors.
    pub fn iter_rows(&self) -> impl Iterator<Item = &[f32]> {
        self.data.chunks_exact(self.dim.max(1)).take(self.rows)
    }
}

/// The ColBERT head with the tokenizers for its two input kinds (each truncating at its own
/// length).
struct Colbert {
    head: ColbertHead,
    query_tok: TextTokenizer,
    document_tok: TextTokenizer,
}

/// What to do with the transformer output.
#[derive(Clone, Copy)]
enum Output {
    Hidden { normalize: bool },
    ColbertQuery,
    ColbertDocument,
}

/// A loaded model, ready to encode. Cheap to share across threads (`&self` methods); each call
/// runs on the encoder's own thread pool.
pub struct Encoder {
    kind: ModelKind,
    id: ModelId,
    bert: BertModel,
    colbert: Option<Colbert>,
    /// Tokenizer for plain inputs (truncates at `max_length`).
    plain: TextTokenizer,
    pool: rayon::ThreadPool,
    threads: usize,
    batch_size: usize,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("kind", &self.kind)
            .field("id", &self.id)
            .field("dim", &self.dim())
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

impl Encoder {
    /// Loads a model directory (see the crate docs for the layouts understood).
    ///
    /// Weights may be f32, f16 or bf16 and are converted to f32. Every file is read fully and
    /// hashed into [`ModelId::hash`].
    pub fn load(dir: &Path, opts: EncoderOptions) -> Result<Self> {
        let mut fingerprint = Fingerprint::new(dir);
        let layout = ModuleLayout::read(dir, &mut fingerprint)?;
        let (transformer_dir, dense_dirs) = match layout {
            Some(l) => (l.transformer_dir, l.dense_dirs),
            None => (dir.to_path_buf(), Vec::new()),
        };
        // A sentence-transformers model without Dense (e.g. all-MiniLM's Pooling/Normalize
        // stack) is a plain BERT as far as token vectors go.
        let kind = if dense_dirs.is_empty() {
            ModelKind::Bert
        } else {
            ModelKind::ColBert
        };

        let config_path = transformer_dir.join("config.json");
        let config_bytes = read_file(&config_path)?;
        let config = BertConfig::parse(&config_path, &config_bytes)?;
        fingerprint.add(&config_path, &config_bytes);

        let tok_path = transformer_dir.join("tokenizer.json");
        let tok_bytes = read_file(&tok_path)?;
        let base_tok = TextTokenizer::parse(&tok_path, &tok_bytes)?;
        fingerprint.add(&tok_path, &tok_bytes);

        let weights_path = transformer_dir.join("model.safetensors");
        let weights_bytes = read_file(&weights_path)?;
        let weights = BertWeights::load(&weights_path, &weights_bytes, &config)?;
        fingerprint.add(&weights_path, &weights_bytes);
        drop(weights_bytes);

        let plain_len = opts
            .max_length
            .unwrap_or(config.max_positions)
            .clamp(2, config.max_positions);
        let plain = base_tok.truncating(plain_len)?;

        let colbert = if kind == ModelKind::ColBert {
            let head = load_colbert_head(
                dir,
                &transformer_dir,
                &dense_dirs,
                &config,
                &base_tok,
                &mut fingerprint,
            )?;
            Some(Colbert {
                query_tok: base_tok.truncating(head.query_tokenizer_length())?,
                document_tok: base_tok.truncating(head.document_tokenizer_length())?,
                head,
            })
        } else {
            None
        };

        let threads = if opts.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            opts.threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("tessera-encoder-{i}"))
            .build()
            .map_err(|e| EncoderError::ThreadPool(e.to_string()))?;

        let name = dir
            .canonicalize()
            .unwrap_or_else(|_| dir.to_path_buf())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Self {
            kind,
            id: ModelId {
                name,
                hash: fingerprint.finish(),
            },
            bert: BertModel::new(config, weights),
            colbert,
            plain,
            pool,
            threads,
            batch_size: opts.batch_size.max(1),
        })
    }

    /// Whether this is a plain BERT or a ColBERT model.
    pub fn kind(&self) -> ModelKind {
        self.kind
    }

    /// Width of the vectors returned by `encode_queries` / `encode_documents`.
    pub fn dim(&self) -> usize {
        match &self.colbert {
            Some(c) => c.head.dim(),
            None => self.bert.config.hidden_size,
        }
    }

    /// Name and content hash of the loaded model.
    pub fn model_id(&self) -> &ModelId {
        &self.id
    }

    /// The transformer's configuration.
    pub fn config(&self) -> &BertConfig {
        &self.bert.config
    }

    /// The ColBERT settings in force (`None` for plain BERT models).
    pub fn colbert_settings(&self) -> Option<&ColbertSettings> {
        self.colbert.as_ref().map(|c| &c.head.settings)
    }

    /// Worker threads used per call.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Encodes queries.
    ///
    /// ColBERT: one L2-normalised vector per input token, marker and `[MASK]` expansion
    /// included (so exactly `query_length` rows with expansion). BERT: the L2-normalised last
    /// hidden state of every token.
    pub fn encode_queries(&self, texts: &[&str]) -> Result<Vec<TokenMatrix>> {
        match self.colbert {
            Some(_) => self.run(self.build(texts, InputKind::Query)?, Output::ColbertQuery),
            None => self.run(
                self.build(texts, InputKind::Plain)?,
                Output::Hidden { normalize: true },
            ),
        }
    }

    /// Encodes documents.
    ///
    /// ColBERT: L2-normalised vectors of the kept tokens (skiplist tokens removed). BERT: the
    /// L2-normalised last hidden state of every token.
    pub fn encode_documents(&self, texts: &[&str]) -> Result<Vec<TokenMatrix>> {
        match self.colbert {
            Some(_) => self.run(
                self.build(texts, InputKind::Document)?,
                Output::ColbertDocument,
            ),
            None => self.run(
                self.build(texts, InputKind::Plain)?,
                Output::Hidden { normalize: true },
            ),
        }
    }

    /// The transformer's raw last hidden state (`[tokens, hidden_size]`, not normalised, no
    /// projection) for the plain tokenization of each text; what Hugging Face's
    /// `AutoModel(...).last_hidden_state` returns.
    pub fn last_hidden_states(&self, texts: &[&str]) -> Result<Vec<TokenMatrix>> {
        self.run(
            self.build(texts, InputKind::Plain)?,
            Output::Hidden { normalize: false },
        )
    }

    /// The model input ids each text becomes, special tokens, ColBERT marker and `[MASK]`
    /// expansion included. For BERT models `Query` and `Document` equal `Plain`.
    pub fn token_ids(&self, texts: &[&str], kind: InputKind) -> Result<Vec<Vec<u32>>> {
        Ok(self
            .build(texts, kind)?
            .into_iter()
            .map(|s| s.ids)
            .collect())
    }

    /// The input id behind each vector [`Encoder::encode_documents`] returns for each text,
    /// in the same order: the document input ids ([`InputKind::Document`]) less the
    /// skiplist tokens the ColBERT head drops (the same test the encoder applies). Labels
    /// stored document vectors with their wordpieces (`tessera explain --text`).
    pub fn document_token_ids(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let ids = self.token_ids(texts, InputKind::Document)?;
        let Some(colbert) = &self.colbert else {
            return Ok(ids);
        };
        Ok(ids
            .into_iter()
            .map(|mut seq| {
                seq.retain(|&id| colbert.head.keeps_document_token(id));
                seq
            })
            .collect())
    }

    /// The text of a token id that [`Encoder::token_ids`] returns (its wordpiece, or the
    /// special token's name); `None` for an id outside the vocabulary. Labels token
    /// vectors for people (the explanations of `tessera explain --text`).
    pub fn token_text(&self, id: u32) -> Option<String> {
        self.plain.token_text(id)
    }

    /// Tokenizes and builds model inputs.
    fn build(&self, texts: &[&str], kind: InputKind) -> Result<Vec<SeqInput>> {
        self.pool.install(|| {
            let plain = || {
                Ok(self
                    .plain
                    .encode(texts)?
                    .into_iter()
                    .map(SeqInput::full)
                    .collect())
            };
            let Some(colbert) = &self.colbert else {
                return plain();
            };
            // sentence-transformers strips surrounding whitespace before tokenizing.
            let stripped: Vec<&str> = texts.iter().map(|t| t.trim()).collect();
            let head = &colbert.head;
            match kind {
                InputKind::Plain => plain(),
                InputKind::Query => Ok(colbert
                    .query_tok
                    .encode(&stripped)?
                    .into_iter()
                    .map(|ids| head.build_query(ids))
                    .collect()),
                InputKind::Document => Ok(colbert
                    .document_tok
                    .encode(&stripped)?
                    .into_iter()
                    .map(|ids| head.build_document(ids))
                    .collect()),
            }
        })
    }

    /// Runs the forward pass batch by batch and shapes each text's output.
    fn run(&self, inputs: Vec<SeqInput>, output: Output) -> Result<Vec<TokenMatrix>> {
        let par = if self.threads > 1 {
            Par::rayon(self.threads)
        } else {
            Par::Seq
        };
        self.pool.install(|| {
            let mut results = Vec::with_capacity(inputs.len());
            let mut workspace = Workspace::default();
            for batch in inputs.chunks(self.batch_size) {
                let hidden = self.bert.forward(batch, self.threads, &mut workspace)?;
                let rows: usize = batch.iter().map(|s| s.ids.len()).sum();
                let h = self.bert.config.hidden_size;
                let head = self.colbert.as_ref().map(|c| &c.head);
                let (values, dim) = match (output, head) {
                    (Output::ColbertQuery | Output::ColbertDocument, Some(head)) => {
                        (head.project(hidden, rows, par), head.dim())
                    }
                    (Output::Hidden { normalize: false }, _) => (hidden, h),
                    // ColBERT outputs without a head cannot be requested (`build` only makes
                    // them for ColBERT models); treat them as normalised hidden states.
                    (Output::Hidden { normalize: true }, _)
                    | (Output::ColbertQuery | Output::ColbertDocument, None) => {
                        let mut hidden = hidden;
                        ops::l2_normalize_rows(&mut hidden, h);
                        (hidden, h)
                    }
                };
                let mut offset = 0;
                for seq in batch {
                    let n = seq.ids.len();
                    let block = &values[offset * dim..(offset + n) * dim];
                    offset += n;
                    let matrix = match (output, head) {
                        (Output::ColbertDocument, Some(head)) => {
                            let mut data = Vec::with_capacity(block.len());
                            for (row, &id) in block.chunks_exact(dim).zip(&seq.ids) {
                                if head.keeps_document_token(id) {
                                    data.extend_from_slice(row);
                                }
                            }
                            TokenMatrix {
                                rows: data.len() / dim,
                                data,
                                dim,
                            }
                        }
                        _ => TokenMatrix {
                            data: block.to_vec(),
                            rows: n,
                            dim,
                        },
                    };
                    results.push(matrix);
                }
            }
            Ok(results)
        })
    }
}

/// Reads the ColBERT settings, Dense projections and special-token ids of a PyLate directory.
fn load_colbert_head(
    dir: &Path,
    transformer_dir: &Path,
    dense_dirs: &[PathBuf],
    config: &BertConfig,
    tok: &TextTokenizer,
    fingerprint: &mut Fingerprint,
) -> Result<ColbertHead> {
    let settings = ColbertSettings::read(dir, fingerprint)?;
    let settings_path = dir.join("config_sentence_transformers.json");
    for (name, len) in [
        ("query_length", settings.query_length),
        ("document_length", settings.document_length),
    ] {
        if len > config.max_positions {
            return Err(EncoderError::InvalidConfig {
                path: settings_path,
                reason: format!(
                    "{name} {len} exceeds max_position_embeddings {}",
                    config.max_positions
                ),
            });
        }
    }

    let mut denses = Vec::with_capacity(dense_dirs.len());
    let mut width = config.hidden_size;
    for dense_dir in dense_dirs {
        let cfg_path = dense_dir.join("config.json");
        let cfg_bytes = read_file(&cfg_path)?;
        let dense_cfg = DenseConfig::parse(&cfg_path, &cfg_bytes)?;
        fingerprint.add(&cfg_path, &cfg_bytes);
        if dense_cfg.in_features != width {
            return Err(EncoderError::InvalidConfig {
                path: cfg_path,
                reason: format!(
                    "in_features {} does not match the {width}-wide input it receives",
                    dense_cfg.in_features
                ),
            });
        }
        let w_path = dense_dir.join("model.safetensors");
        let w_bytes = read_file(&w_path)?;
        denses.push(Dense::load(&w_path, &w_bytes, &dense_cfg)?);
        fingerprint.add(&w_path, &w_bytes);
        width = dense_cfg.out_features;
    }

    // Special-token names come from tokenizer_config.json when present (PyLate asks the HF
    // tokenizer for `mask_token`/`unk_token`), else the BERT defaults.
    let tc_path = transformer_dir.join("tokenizer_config.json");
    let tc: serde_json::Value = if tc_path.is_file() {
        let bytes = read_file(&tc_path)?;
        let value = config::parse_json(&tc_path, &bytes)?;
        fingerprint.add(&tc_path, &bytes);
        value
    } else {
        serde_json::Value::Null
    };
    let special = |key: &str, default: &str| -> String {
        match &tc[key] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Object(o) => o
                .get("content")
                .and_then(|c| c.as_str())
                .unwrap_or(default)
                .to_owned(),
            _ => default.to_owned(),
        }
    };

    let query_prefix_id = settings
        .query_prefix
        .as_deref()
        .map(|p| tok.require_token(p, "query prefix"))
        .transpose()?;
    let document_prefix_id = settings
        .document_prefix
        .as_deref()
        .map(|p| tok.require_token(p, "document prefix"))
        .transpose()?;
    let mask_id = if settings.do_query_expansion {
        tok.require_token(&special("mask_token", "[MASK]"), "query expansion")?
    } else {
        0
    };
    // PyLate maps skiplist words through `convert_tokens_to_ids`, which yields the unknown
    // token's id for words outside the vocabulary; mirror that so outputs match exactly.
    let unk_id = tok.token_id(&special("unk_token", "[UNK]"));
    let skiplist = settings
        .skiplist_words
        .iter()
        .filter_map(|w| tok.token_id(w).or(unk_id))
        .collect();

    Ok(ColbertHead::new(
        settings,
        denses,
        query_prefix_id,
        document_prefix_id,
        mask_id,
        skiplist,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoder_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Encoder>();
    }
}
