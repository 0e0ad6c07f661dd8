//! Documents going in and hits coming out.

use tessera_storage::ExternalId;

/// A document to ingest: an id, its token vectors (row-major `[tokens, dim]`) and optional
/// JSON metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// The caller's id for the document.
    pub id: ExternalId,
    /// Token vectors, row-major; the row count is `vectors.len() / dim`.
    pub vectors: Vec<f32>,
    /// Optional metadata, stored in the catalog and returned on request.
    pub metadata: Option<serde_json::Value>,
    /// Optional passage text, kept compressed in the catalog (FORMAT.md, key `P`) and
    /// returned on request, so a RAG pipeline needs no second store.
    pub text: Option<String>,
}

impl Document {
    /// A document from f32 token vectors.
    pub fn new(id: impl Into<ExternalId>, vectors: Vec<f32>) -> Self {
        Document {
            id: id.into(),
            vectors,
            metadata: None,
            text: None,
        }
    }

    /// A document from f16 token vectors (converted to f32 on the way in).
    pub fn from_f16(id: impl Into<ExternalId>, vectors: &[half::f16]) -> Self {
        let mut out = vec![0f32; vectors.len()];
        half::slice::HalfFloatSliceExt::convert_to_f32_slice(vectors, &mut out);
        Document::new(id, out)
    }

    /// Attaches the passage text the vectors were encoded from.
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// Attaches JSON metadata.
    pub fn with_metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = Some(metadata);
        self
    }
}

/// One search result.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Hit {
    /// The document's external id.
    pub id: ExternalId,
    /// Its late-interaction (MaxSim) score against the query.
    pub score: f32,
    /// Its metadata, when the search asked for it ([`crate::HitFields`]) and it has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// Its kept text, when the search asked for it and one is kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl Hit {
    /// A hit with an id and a score only.
    pub fn new(id: ExternalId, score: f32) -> Self {
        Hit {
            id,
            score,
            metadata: None,
            text: None,
        }
    }
}

/// A stored document as `Collection::get` returns it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct StoredDocument {
    /// Its id.
    pub id: ExternalId,
    /// Its token count.
    pub tokens: usize,
    /// Its metadata, if any.
    pub metadata: Option<serde_json::Value>,
    /// Its kept text, if any.
    pub text: Option<String>,
    /// Its vectors (row-major `[tokens, dim]`, as `Collection::vectors` returns them), when
    /// asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vectors: Option<Vec<f32>>,
}
