//! Parsing of the JSON files that describe a model directory.
//!
//! Two layouts are understood: a Hugging Face BERT directory (`config.json`, `model.safetensors`,
//! `tokenizer.json`) and a PyLate / sentence-transformers ColBERT directory, which adds
//! `modules.json`, one or more Dense projection folders and `config_sentence_transformers.json`.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::error::{EncoderError, Result};

/// Reads a file, turning "not found" into [`EncoderError::MissingFile`] so the message names
/// the file the layout required rather than a bare OS error.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            EncoderError::MissingFile {
                path: path.to_path_buf(),
            }
        } else {
            EncoderError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// SHA-256 over every file the encoder reads, in reading order, each framed by its path
/// relative to the model directory and its length so that moving bytes between files changes
/// the digest.
pub(crate) struct Fingerprint {
    root: PathBuf,
    hasher: Sha256,
}

impl Fingerprint {
    pub(crate) fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            hasher: Sha256::new(),
        }
    }

    pub(crate) fn add(&mut self, path: &Path, bytes: &[u8]) {
        let rel = path.strip_prefix(&self.root).unwrap_or(path);
        // Forward slashes so the digest does not depend on the platform's separator.
        let rel: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        self.hasher.update(rel.join("/").as_bytes());
        self.hasher.update([0u8]);
        self.hasher.update((bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
    }

    pub(crate) fn finish(self) -> String {
        self.hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Parses JSON bytes read from `path`.
pub(crate) fn parse_json<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| EncoderError::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn invalid(path: &Path, reason: impl Into<String>) -> EncoderError {
    EncoderError::InvalidConfig {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn unsupported(path: &Path, reason: impl Into<String>) -> EncoderError {
    EncoderError::Unsupported {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The feed-forward non-linearity named by `hidden_act`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: the exact GELU, `x * Φ(x)` computed with erf, as BERT and PyTorch define it.
    GeluErf,
    /// `gelu_new` / `gelu_pytorch_tanh` / `gelu_fast`: the tanh approximation.
    GeluTanh,
    /// `relu`.
    Relu,
}

#[derive(Debug, Deserialize)]
struct RawBertConfig {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    #[serde(default = "default_hidden_act")]
    hidden_act: String,
    #[serde(default = "default_max_positions")]
    max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    type_vocab_size: usize,
    #[serde(default = "default_ln_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_position_type")]
    position_embedding_type: String,
}

fn default_hidden_act() -> String {
    "gelu".to_owned()
}
fn default_max_positions() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_ln_eps() -> f64 {
    1e-12
}
fn default_position_type() -> String {
    "absolute".to_owned()
}

/// The subset of a BERT `config.json` that determines the forward pass.
#[derive(Debug, Clone)]
pub struct BertConfig {
    /// Rows of the word-embedding table.
    pub vocab_size: usize,
    /// Width of the hidden state.
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_layers: usize,
    /// Attention heads per layer.
    pub num_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Feed-forward activation.
    pub activation: Activation,
    /// Rows of the position-embedding table: the longest input the model accepts.
    pub max_positions: usize,
    /// Rows of the token-type table.
    pub type_vocab_size: usize,
    /// Epsilon of every LayerNorm.
    pub layer_norm_eps: f32,
}

impl BertConfig {
    /// Parses and validates `config.json` bytes read from `path`.
    pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        let raw: RawBertConfig = parse_json(path, bytes)?;
        if let Some(model_type) = &raw.model_type
            && model_type != "bert"
        {
            // RoBERTa-style models offset their position ids and DistilBERT names its tensors
            // differently; running them through this code would give silently wrong vectors.
            return Err(unsupported(
                path,
                format!("model_type `{model_type}` (only `bert` is implemented)"),
            ));
        }
        if raw
            .architectures
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|a| a == "HF_ColBERT")
        {
            return Err(unsupported(
                path,
                "Stanford `HF_ColBERT` checkpoint; convert it to a PyLate directory first",
            ));
        }
        if raw.position_embedding_type != "absolute" {
            return Err(unsupported(
                path,
                format!(
                    "position_embedding_type `{}` (only `absolute` is implemented)",
                    raw.position_embedding_type
                ),
            ));
        }
        let activation = match raw.hidden_act.as_str() {
            "gelu" => Activation::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            other => return Err(unsupported(path, format!("hidden_act `{other}`"))),
        };
        for (name, value) in [
            ("vocab_size", raw.vocab_size),
            ("hidden_size", raw.hidden_size),
            ("num_hidden_layers", raw.num_hidden_layers),
            ("num_attention_heads", raw.num_attention_heads),
            ("intermediate_size", raw.intermediate_size),
            ("max_position_embeddings", raw.max_position_embeddings),
            ("type_vocab_size", raw.type_vocab_size),
        ] {
            if value == 0 {
                return Err(invalid(path, format!("`{name}` must be positive")));
            }
        }
        if !raw.hidden_size.is_multiple_of(raw.num_attention_heads) {
            return Err(invalid(
                path,
                format!(
                    "hidden_size {} is not a multiple of num_attention_heads {}",
                    raw.hidden_size, raw.num_attention_heads
                ),
            ));
        }
        Ok(Self {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            num_layers: raw.num_hidden_layers,
            num_heads: raw.num_attention_heads,
            intermediate_size: raw.intermediate_size,
            activation,
            max_positions: raw.max_position_embeddings,
            type_vocab_size: raw.type_vocab_size,
            // PyTorch stores eps as a double but applies it in the tensor's dtype.
            layer_norm_eps: raw.layer_norm_eps as f32,
        })
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
}

#[derive(Debug, Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

/// What `modules.json` says about a sentence-transformers directory.
#[derive(Debug)]
pub(crate) struct ModuleLayout {
    /// Directory of the transformer (usually the model root).
    pub transformer_dir: PathBuf,
    /// Directories of the Dense projections, in the order they are applied.
    pub dense_dirs: Vec<PathBuf>,
}

impl ModuleLayout {
    /// Reads `dir/modules.json` if there is one; `Ok(None)` means a plain Hugging Face layout.
    pub(crate) fn read(dir: &Path, fingerprint: &mut Fingerprint) -> Result<Option<Self>> {
        let path = dir.join("modules.json");
        if !path.is_file() {
            return Ok(None);
        }
        let bytes = read_file(&path)?;
        let entries: Vec<ModuleEntry> = parse_json(&path, &bytes)?;
        fingerprint.add(&path, &bytes);
        let mut transformer_dir = None;
        let mut dense_dirs = Vec::new();
        for entry in &entries {
            // Module types are Python class paths (`sentence_transformers.models.Transformer`,
            // `pylate.models.Dense.Dense`, ...); only the class name matters here. Pooling and
            // Normalize modules are skipped: token-level outputs never go through them.
            let class = entry.kind.rsplit('.').next().unwrap_or_default();
            match class {
                "Transformer" if transformer_dir.is_none() => {
                    transformer_dir = Some(dir.join(&entry.path));
                }
                "Transformer" => {
                    return Err(unsupported(&path, "more than one Transformer module"));
                }
                "Dense" => {
                    if transformer_dir.is_none() {
                        return Err(invalid(&path, "a Dense module precedes the Transformer"));
                    }
                    dense_dirs.push(dir.join(&entry.path));
                }
                _ => {}
            }
        }
        let transformer_dir =
            transformer_dir.ok_or_else(|| invalid(&path, "no Transformer module listed"))?;
        Ok(Some(Self {
            transformer_dir,
            dense_dirs,
        }))
    }
}

#[derive(Debug, Deserialize)]
struct RawDenseConfig {
    in_features: usize,
    out_features: usize,
    // sentence-transformers' Dense defaults to a bias; PyLate always writes the key.
    #[serde(default = "default_true")]
    bias: bool,
    #[serde(default = "default_identity")]
    activation_function: String,
    #[serde(default)]
    use_residual: bool,
}

fn default_true() -> bool {
    true
}
fn default_identity() -> String {
    "torch.nn.modules.linear.Identity".to_owned()
}

/// Activation applied after a Dense projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DenseActivation {
    Identity,
    Tanh,
}

/// A Dense module's `config.json`.
#[derive(Debug, Clone)]
pub(crate) struct DenseConfig {
    pub in_features: usize,
    pub out_features: usize,
    pub bias: bool,
    pub activation: DenseActivation,
}

impl DenseConfig {
    pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        let raw: RawDenseConfig = parse_json(path, bytes)?;
        if raw.use_residual {
            return Err(unsupported(path, "Dense `use_residual: true`"));
        }
        let activation = match raw.activation_function.rsplit('.').next() {
            Some("Identity") => DenseActivation::Identity,
            Some("Tanh") => DenseActivation::Tanh,
            _ => {
                return Err(unsupported(
                    path,
                    format!("Dense activation `{}`", raw.activation_function),
                ));
            }
        };
        if raw.in_features == 0 || raw.out_features == 0 {
            return Err(invalid(
                path,
                "Dense in_features/out_features must be positive",
            ));
        }
        Ok(Self {
            in_features: raw.in_features,
            out_features: raw.out_features,
            bias: raw.bias,
            activation,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
struct RawColbertSettings {
    query_prefix: Option<String>,
    document_prefix: Option<String>,
    query_length: Option<usize>,
    document_length: Option<usize>,
    attend_to_expansion_tokens: Option<bool>,
    do_query_expansion: Option<bool>,
    skiplist_words: Option<Vec<String>>,
}

/// PyLate's ColBERT settings from `config_sentence_transformers.json`, with PyLate's defaults
/// for anything the file leaves out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColbertSettings {
    /// Marker token inserted after `[CLS]` in queries (`None` when the prefix is empty).
    pub query_prefix: Option<String>,
    /// Marker token inserted after `[CLS]` in documents (`None` when the prefix is empty).
    pub document_prefix: Option<String>,
    /// Every query is padded or truncated to exactly this many tokens (with expansion).
    pub query_length: usize,
    /// Documents are truncated to at most this many tokens, prefix included.
    pub document_length: usize,
    /// Whether query tokens may attend to the `[MASK]` expansion tokens.
    pub attend_to_expansion_tokens: bool,
    /// Whether queries are padded to `query_length` with `[MASK]` tokens.
    pub do_query_expansion: bool,
    /// Tokens whose vectors are dropped from document outputs (punctuation by default).
    pub skiplist_words: Vec<String>,
}

impl ColbertSettings {
    /// Reads `config_sentence_transformers.json` from `dir`; a missing file means all defaults.
    pub(crate) fn read(dir: &Path, fingerprint: &mut Fingerprint) -> Result<Self> {
        let path = dir.join("config_sentence_transformers.json");
        let raw = if path.is_file() {
            let bytes = read_file(&path)?;
            let raw: RawColbertSettings = parse_json(&path, &bytes)?;
            fingerprint.add(&path, &bytes);
            raw
        } else {
            RawColbertSettings::default()
        };
        // PyLate treats an empty prefix as "no marker token at all".
        let prefix = |p: Option<String>, default: &str| {
            let p = p.unwrap_or_else(|| default.to_owned());
            (!p.is_empty()).then_some(p)
        };
        let do_query_expansion = raw.do_query_expansion.unwrap_or(true);
        let settings = Self {
            query_prefix: prefix(raw.query_prefix, "[Q] "),
            document_prefix: prefix(raw.document_prefix, "[D] "),
            query_length: raw.query_length.unwrap_or(32),
            document_length: raw.document_length.unwrap_or(180),
            // Without expansion there is nothing to attend to; PyLate forces the flag off.
            attend_to_expansion_tokens: do_query_expansion
                && raw.attend_to_expansion_tokens.unwrap_or(false),
            do_query_expansion,
            skiplist_words: raw.skiplist_words.unwrap_or_else(|| {
                "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
                    .chars()
                    .map(String::from)
                    .collect()
            }),
        };
        // [CLS], [SEP] and the optional marker must fit.
        let specials = 2 + usize::from(settings.query_prefix.is_some());
        if settings.query_length < specials {
            return Err(invalid(
                &path,
                format!("query_length {} is too short", settings.query_length),
            ));
        }
        let specials = 2 + usize::from(settings.document_prefix.is_some());
        if settings.document_length < specials {
            return Err(invalid(
                &path,
                format!("document_length {} is too short", settings.document_length),
            ));
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINI: &str = r#"{"model_type":"bert","vocab_size":10,"hidden_size":8,
        "num_hidden_layers":1,"num_attention_heads":2,"intermediate_size":16}"#;

    #[test]
    fn bert_config_defaults_to_exact_gelu_and_512_positions() {
        let config = BertConfig::parse(Path::new("config.json"), MINI.as_bytes())
            .expect("minimal config parses");
        assert_eq!(config.activation, Activation::GeluErf);
        assert_eq!(config.max_positions, 512);
        assert_eq!(config.head_dim(), 4);
    }

    #[test]
    fn bert_config_rejects_heads_not_dividing_hidden_size() {
        let text = MINI.replace("\"num_attention_heads\":2", "\"num_attention_heads\":3");
        let err = BertConfig::parse(Path::new("config.json"), text.as_bytes())
            .expect_err("3 heads cannot split 8 dims");
        assert!(matches!(err, EncoderError::InvalidConfig { .. }), "{err}");
    }

    #[test]
    fn bert_config_rejects_unknown_activation() {
        let text = MINI.replace("\"model_type\"", "\"hidden_act\":\"swish\",\"model_type\"");
        let err = BertConfig::parse(Path::new("config.json"), text.as_bytes())
            .expect_err("swish is not implemented");
        assert!(err.to_string().contains("swish"), "{err}");
    }

    #[test]
    fn bert_config_reports_missing_field_with_file_name() {
        let err = BertConfig::parse(Path::new("/m/config.json"), br#"{"vocab_size":3}"#)
            .expect_err("hidden_size is required");
        let msg = err.to_string();
        assert!(
            msg.contains("/m/config.json") && msg.contains("hidden_size"),
            "{msg}"
        );
    }
}
