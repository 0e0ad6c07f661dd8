//! Which text encoder produced a collection's vectors.
//!
//! Vectors from different models live in different spaces: MaxSim between them is
//! meaningless. A collection therefore records the model of its first text ingest (in its
//! manifest, committed with that batch) and rejects text ingests by another one.

use serde::{Deserialize, Serialize};

/// Identity of the encoder model behind a collection's vectors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// A human-readable name (the model directory's name).
    pub name: String,
    /// Content hash of the model's configuration, tokenizer and weights: equal hashes mean
    /// equal vectors for equal text.
    pub hash: String,
    /// Where the model was loaded from at the last text ingest: a hint for loading it again
    /// to encode queries (it is checked against `hash` before use).
    #[serde(default)]
    pub path: Option<String>,
}

impl ModelRecord {
    /// Whether `other` is the same model (same hash; names and paths may differ).
    pub fn same_model(&self, other: &ModelRecord) -> bool {
        self.hash == other.hash
    }

    /// `name (sha256 first 12 hex digits)`, for messages.
    pub fn short(&self) -> String {
        let h: String = self.hash.chars().take(12).collect();
        format!("{} ({h})", self.name)
    }
}

impl std::fmt::Display for ModelRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.short())
    }
}
