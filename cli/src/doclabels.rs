//! Labels for the document tokens of `explain`: the wordpiece behind each stored vector.
//!
//! The vectors of a text-ingested document are what `Encoder::encode_documents` made of its
//! text, one per kept input token (special tokens and the ColBERT document marker included,
//! skiplist punctuation dropped), and that text is kept in the catalog. Tokenising the kept
//! text again with the same model, through the encoder's own input construction
//! (`Encoder::document_token_ids`), gives the token behind each vector in order. When it
//! cannot (no kept text, or a count that differs from the stored vectors: another model, or
//! vectors that did not come from this text) the tokens are labelled by position and a note
//! says why: a label is a wordpiece only when the count proves the alignment possible.

use tessera::{Collection, ExternalId};

use crate::text::Model;

/// One label per document token, and why they are positions when they are.
pub struct DocLabels {
    /// `doc_tokens` labels: wordpieces, or `d0`, `d1`, … by position.
    pub labels: Vec<String>,
    /// Set when a model was given but the labels are positions anyway.
    pub note: Option<String>,
}

impl DocLabels {
    fn by_position(doc_tokens: usize, note: Option<String>) -> Self {
        DocLabels {
            labels: (0..doc_tokens).map(|j| format!("d{j}")).collect(),
            note,
        }
    }
}

/// Labels for the `doc_tokens` stored vectors of document `id`: its kept text tokenised by
/// `model` when there is one and the token count matches, else positions.
pub fn doc_labels(
    coll: &Collection,
    model: Option<&Model>,
    id: &ExternalId,
    doc_tokens: usize,
) -> DocLabels {
    let Some(model) = model else {
        return DocLabels::by_position(doc_tokens, None);
    };
    let fallback = |why: String| {
        DocLabels::by_position(
            doc_tokens,
            Some(format!(
                "note: document {id}: {why}; document tokens are labelled by position"
            )),
        )
    };
    let text = match coll.text(id) {
        Ok(Some(text)) => text,
        Ok(None) => {
            return fallback(
                "no text is kept for it (ingested as vectors, or with --no-store-text)".into(),
            );
        }
        Err(e) => return fallback(format!("cannot read its kept text: {e}")),
    };
    let ids = match model.encoder.document_token_ids(&[text.as_str()]) {
        Ok(mut ids) => ids.pop().unwrap_or_default(),
        Err(e) => return fallback(format!("cannot tokenise its kept text: {e}")),
    };
    if ids.len() != doc_tokens {
        return fallback(format!(
            "model {} makes {} tokens of its kept text but {doc_tokens} vectors are stored \
             (was it ingested with another model?)",
            model.record.name,
            ids.len()
        ));
    }
    DocLabels {
        labels: ids
            .iter()
            .map(|&t| {
                model
                    .encoder
                    .token_text(t)
                    .unwrap_or_else(|| format!("#{t}"))
            })
            .collect(),
        note: None,
    }
}
