//! Tokenization through the `tokenizers` crate from a model's `tokenizer.json`.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{EncoderError, Result};
use crate::tokenizer_limits;

/// A `tokenizer.json` tokenizer with one fixed truncation length.
///
/// `tokenizer.json` files often carry the padding and truncation of whatever call last used them
/// (MiniLM's ships `Fixed(128)` padding and truncation at 128); both are replaced, since lengths
/// are a property of the encoding mode, not of the file.
#[derive(Clone)]
pub struct TextTokenizer {
    path: PathBuf,
    inner: Tokenizer,
}

// By its file: the vocabulary the tokenizer holds is tens of thousands of entries long.
impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl TextTokenizer {
    /// Parses `tokenizer.json` bytes read from `path`, with no truncation and no padding.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        // The tokenizers crate panics on some malformed files instead of returning an error
        // (a syntax error in `decoder` hit `.expect("Helper")`; found by fuzzing, tests/fuzz;
        // parse_bounded's first pass now refuses that one): a file on disk must not panic
        // the encoder, so a panic is its error.
        let parsed = std::panic::catch_unwind(|| parse_bounded(path, bytes)).map_err(|_| {
            EncoderError::Tokenizer {
                path: path.to_path_buf(),
                reason: "malformed tokenizer.json (the tokenizers crate panicked parsing it)"
                    .to_owned(),
            }
        })?;
        let mut inner = parsed?;
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| EncoderError::Tokenizer {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            inner,
        })
    }

    /// A copy that truncates every encoding, special tokens included, to `max_length` tokens,
    /// cutting text from the right as Hugging Face's `truncation=True` does.
    pub fn truncating(&self, max_length: usize) -> Result<Self> {
        let mut copy = self.clone();
        copy.inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| EncoderError::Tokenizer {
                path: self.path.clone(),
                reason: format!("cannot truncate to {max_length} tokens: {e}"),
            })?;
        Ok(copy)
    }

    /// Text of a vocabulary or added token id (a wordpiece, e.g. `##ing`, or `[MASK]`).
    pub fn token_text(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Id of a vocabulary or added token.
    pub(crate) fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Id of `token`, or an error naming it and what it is needed for.
    pub(crate) fn require_token(&self, token: &str, purpose: &str) -> Result<u32> {
        self.token_id(token).ok_or_else(|| EncoderError::Tokenizer {
            path: self.path.clone(),
            reason: format!("token `{token}` ({purpose}) is not in the vocabulary"),
        })
    }

    /// Token ids of each text with the post-processor's special tokens (`[CLS] … [SEP]`).
    /// Runs on the current rayon pool.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        texts
            .par_iter()
            .enumerate()
            .map(|(index, text)| {
                // As at parse: a tokenizer.json whose post-processor names a sequence it
                // does not get (`B` in the single template; found by fuzzing) panics in the
                // tokenizers crate when encoding; that is this text's error, not a crash.
                // The tokenizer holds no state a half-done encoding could leave wrong.
                let encoded =
                    std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.encode(*text, true)))
                        .map_err(|_| EncoderError::Tokenize {
                        index,
                        reason: format!(
                            "the tokenizers crate panicked encoding it with {}",
                            self.path.display()
                        ),
                    })?;
                encoded
                    .map(|enc| enc.get_ids().to_vec())
                    .map_err(|e| EncoderError::Tokenize {
                        index,
                        reason: e.to_string(),
                    })
            })
            .collect()
    }
}

/// [`Tokenizer::from_bytes`], once the file is within [`tokenizer_limits`]: the crate builds
/// its added-token matcher while it parses, so the limits are checked on the JSON first.
fn parse_bounded(path: &Path, bytes: &[u8]) -> Result<Tokenizer> {
    let invalid = |reason: String| EncoderError::Tokenizer {
        path: path.to_path_buf(),
        reason,
    };
    tokenizer_limits::check(bytes).map_err(invalid)?;
    Tokenizer::from_bytes(bytes).map_err(|e| invalid(e.to_string()))
}
