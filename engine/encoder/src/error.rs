//! The crate's single error type.

use std::path::PathBuf;

/// Everything that can go wrong while loading a model or encoding text.
///
/// Load-time variants name the file (and, for weights, the tensor) at fault so that a broken
/// model directory can be fixed without reading this crate's source.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    /// A file the model layout requires is absent.
    #[error("missing model file {path}")]
    MissingFile {
        /// The file that was looked for.
        path: PathBuf,
    },

    /// A file exists but could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file being read.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A JSON file is malformed or lacks a required field.
    #[error("invalid JSON in {path}: {source}")]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// The parser's complaint.
        source: serde_json::Error,
    },

    /// A configuration value is out of range or contradicts another one.
    #[error("invalid configuration in {path}: {reason}")]
    InvalidConfig {
        /// The configuration file holding the bad value.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The model uses a feature this encoder does not implement.
    #[error("unsupported model feature in {path}: {reason}")]
    Unsupported {
        /// The file that declares the feature.
        path: PathBuf,
        /// The feature.
        reason: String,
    },

    /// A `.safetensors` file could not be parsed.
    #[error("cannot parse safetensors file {path}: {reason}")]
    Safetensors {
        /// The weights file.
        path: PathBuf,
        /// The parser's complaint.
        reason: String,
    },

    /// A tensor the architecture needs is not in the weights file.
    #[error("{path}: missing tensor `{tensor}`")]
    MissingTensor {
        /// The weights file.
        path: PathBuf,
        /// The tensor name that was looked for (without any `bert.` prefix).
        tensor: String,
    },

    /// A tensor has a shape that does not match the configuration.
    #[error("{path}: tensor `{tensor}` has shape {actual:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The weights file.
        path: PathBuf,
        /// The tensor's full name.
        tensor: String,
        /// The shape implied by the configuration.
        expected: Vec<usize>,
        /// The shape stored in the file.
        actual: Vec<usize>,
    },

    /// A tensor is stored in a dtype other than f32, f16 or bf16.
    #[error("{path}: tensor `{tensor}` has unsupported dtype {dtype} (need F32, F16 or BF16)")]
    UnsupportedDtype {
        /// The weights file.
        path: PathBuf,
        /// The tensor's full name.
        tensor: String,
        /// The stored dtype.
        dtype: String,
    },

    /// `tokenizer.json` could not be loaded or lacks a token the model needs.
    #[error("tokenizer {path}: {reason}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// Tokenizing one of the inputs failed.
    #[error("cannot tokenize input #{index}: {reason}")]
    Tokenize {
        /// Position of the text in the slice passed to the encoder.
        index: usize,
        /// The tokenizer's complaint.
        reason: String,
    },

    /// A token id produced by the tokenizer is outside the embedding table.
    #[error("token id {id} is outside the vocabulary of {vocab_size} embeddings")]
    TokenOutOfRange {
        /// The offending id.
        id: u32,
        /// Number of rows in the word-embedding table.
        vocab_size: usize,
    },

    /// A model input is longer than the position-embedding table.
    #[error("input of {len} tokens exceeds the model's {max} positions")]
    SequenceTooLong {
        /// Tokens in the input.
        len: usize,
        /// `max_position_embeddings`.
        max: usize,
    },

    /// The worker thread pool could not be created.
    #[error("cannot start encoder thread pool: {0}")]
    ThreadPool(String),
}

/// Shorthand for results carrying [`EncoderError`].
pub type Result<T, E = EncoderError> = std::result::Result<T, E>;
