//! Checks of an ingest batch before anything is written: ids unique, shapes whole, values
//! finite and within what the collection's originals can hold.

use std::collections::HashMap;

use tessera_storage::ExternalId;

use crate::collection::Collection;
use crate::document::Document;
use crate::error::{Error, Result};

impl Collection {
    fn invalid(&self, doc: &Document, position: usize, reason: String) -> Error {
        Error::InvalidDocument {
            collection: self.state.name.to_string(),
            id: doc.id.clone(),
            position,
            reason,
        }
    }

    /// Checks `docs`; returns their token count.
    pub(super) fn validate(&self, docs: &[Document]) -> Result<usize> {
        let dim = self.state.config.dim as usize;
        let max_rows = self.state.config.max_tokens_per_doc as usize;
        let mut seen: HashMap<&ExternalId, usize> = HashMap::with_capacity(docs.len());
        let mut tokens = 0;
        for (i, doc) in docs.iter().enumerate() {
            if let Some(first) = seen.insert(&doc.id, i) {
                return Err(Error::DuplicateId {
                    collection: self.state.name.to_string(),
                    id: doc.id.clone(),
                    first,
                    second: i,
                });
            }
            if doc.vectors.is_empty() {
                return Err(self.invalid(doc, i, "has no token vectors".into()));
            }
            if doc.vectors.len() % dim != 0 {
                return Err(self.invalid(
                    doc,
                    i,
                    format!("has {} values, not a whole number of {dim}-dimensional vectors (wrong dimension?)", doc.vectors.len()),
                ));
            }
            let rows = doc.vectors.len() / dim;
            if rows > max_rows {
                return Err(self.invalid(
                    doc,
                    i,
                    format!(
                        "has {rows} token vectors, more than the collection's limit of {max_rows}"
                    ),
                ));
            }
            // One pass refuses NaN, infinities and what f16 or bf16 originals would store
            // as infinity.
            let originals = self.state.config.originals;
            if let Some(j) = doc.vectors.iter().position(|&x| !originals.holds(x)) {
                let x = doc.vectors[j];
                let beyond = if x.is_finite() {
                    format!(
                        ", beyond what the collection's {originals} originals can hold (f16 \
                         holds magnitudes up to 65504); create the collection with originals \
                         bf16 or f32"
                    )
                } else {
                    String::new()
                };
                return Err(self.invalid(
                    doc,
                    i,
                    format!("token {} dimension {} is {x}{beyond}", j / dim, j % dim),
                ));
            }
            tokens += rows;
        }
        Ok(tokens)
    }
}
