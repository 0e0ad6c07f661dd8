//! The ColBERT layer on top of BERT: how PyLate builds query and document inputs, and the
//! projection head.
//!
//! Input construction follows PyLate (`ColBERT.preprocess` / `encode`):
//! * The text is tokenized with `[CLS] … [SEP]` and truncated to `length - 1` tokens when a
//!   marker prefix is used (the marker counts against the length), then the marker id is
//!   inserted right after `[CLS]`.
//! * Queries with expansion are padded to `query_length - 1` with `[MASK]` *before* the marker
//!   is inserted, so every query is exactly `query_length` tokens: `[CLS] [Q] text [SEP] [MASK]…`.
//!   The `[MASK]` tokens have attention-mask 0 unless `attend_to_expansion_tokens`, i.e. other
//!   tokens do not attend to them, but they attend to the text and all their vectors are kept.
//! * Documents are not padded; after the projection, tokens whose id is in the skiplist
//!   (punctuation by default) are dropped. `[CLS]`, the marker and `[SEP]` are kept.
//! * Every output vector is L2-normalised.

use faer::Par;

use crate::bert::SeqInput;
use crate::config::{ColbertSettings, DenseActivation};
use crate::ops;
use crate::weights::Dense;

/// Everything ColBERT adds to the transformer.
pub(crate) struct ColbertHead {
    pub settings: ColbertSettings,
    denses: Vec<Dense>,
    query_prefix_id: Option<u32>,
    document_prefix_id: Option<u32>,
    /// Expansion token for queries (`[MASK]`); unused without query expansion.
    mask_id: u32,
    /// Sorted, deduplicated ids dropped from document outputs.
    skiplist: Vec<u32>,
}

impl ColbertHead {
    pub(crate) fn new(
        settings: ColbertSettings,
        denses: Vec<Dense>,
        query_prefix_id: Option<u32>,
        document_prefix_id: Option<u32>,
        mask_id: u32,
        mut skiplist: Vec<u32>,
    ) -> Self {
        skiplist.sort_unstable();
        skiplist.dedup();
        Self {
            settings,
            denses,
            query_prefix_id,
            document_prefix_id,
            mask_id,
            skiplist,
        }
    }

    /// Width of the output vectors.
    pub(crate) fn dim(&self) -> usize {
        self.denses.last().map_or(0, |d| d.linear.out_dim)
    }

    /// Tokenizer truncation length for queries: the marker takes one of `query_length` slots.
    pub(crate) fn query_tokenizer_length(&self) -> usize {
        self.settings.query_length - usize::from(self.query_prefix_id.is_some())
    }

    /// Tokenizer truncation length for documents.
    pub(crate) fn document_tokenizer_length(&self) -> usize {
        self.settings.document_length - usize::from(self.document_prefix_id.is_some())
    }

    /// Builds a query input from its tokenized `[CLS] … [SEP]` ids.
    pub(crate) fn build_query(&self, mut ids: Vec<u32>) -> SeqInput {
        let real = ids.len();
        if self.settings.do_query_expansion {
            ids.resize(self.query_tokenizer_length().max(real), self.mask_id);
        }
        let marker = insert_marker(&mut ids, self.query_prefix_id);
        let attend_len = if self.settings.attend_to_expansion_tokens {
            ids.len()
        } else {
            real + marker
        };
        SeqInput { ids, attend_len }
    }

    /// Builds a document input from its tokenized `[CLS] … [SEP]` ids.
    pub(crate) fn build_document(&self, mut ids: Vec<u32>) -> SeqInput {
        insert_marker(&mut ids, self.document_prefix_id);
        SeqInput::full(ids)
    }

    /// Whether a document token's vector is part of the output.
    pub(crate) fn keeps_document_token(&self, id: u32) -> bool {
        self.skiplist.binary_search(&id).is_err()
    }

    /// Applies the Dense projections to `rows` hidden states and L2-normalises the result.
    pub(crate) fn project(&self, hidden: Vec<f32>, rows: usize, par: Par) -> Vec<f32> {
        let mut x = hidden;
        for dense in &self.denses {
            let lin = &dense.linear;
            let mut y = vec![0.0f32; rows * lin.out_dim];
            lin.forward_no_bias(&x, rows, &mut y, par);
            ops::bias_tanh_rows(
                &mut y,
                lin.bias.as_deref(),
                lin.out_dim,
                dense.activation == DenseActivation::Tanh,
            );
            x = y;
        }
        ops::l2_normalize_rows(&mut x, self.dim());
        x
    }
}

/// Inserts `marker` after the first token (`[CLS]`), returning how many tokens were added.
fn insert_marker(ids: &mut Vec<u32>, marker: Option<u32>) -> usize {
    match marker {
        Some(id) => {
            ids.insert(ids.len().min(1), id);
            1
        }
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLS: u32 = 101;
    const SEP: u32 = 102;
    const MASK: u32 = 103;
    const Q: u32 = 1;
    const D: u32 = 2;

    fn head(attend_to_expansion_tokens: bool, do_query_expansion: bool) -> ColbertHead {
        let settings = ColbertSettings {
            query_prefix: Some("[unused0]".into()),
            document_prefix: Some("[unused1]".into()),
            query_length: 8,
            document_length: 6,
            attend_to_expansion_tokens,
            do_query_expansion,
            skiplist_words: vec![",".into()],
        };
        ColbertHead::new(settings, Vec::new(), Some(Q), Some(D), MASK, vec![1010])
    }

    #[test]
    fn query_gets_marker_after_cls_and_mask_padding_to_query_length() {
        let h = head(false, true);
        assert_eq!(h.query_tokenizer_length(), 7);
        let q = h.build_query(vec![CLS, 7, 8, SEP]);
        assert_eq!(q.ids, vec![CLS, Q, 7, 8, SEP, MASK, MASK, MASK]);
        // Expansion tokens are not attendable: only [CLS] [Q] 7 8 [SEP] are keys.
        assert_eq!(q.attend_len, 5);
    }

    #[test]
    fn query_attends_to_expansion_tokens_when_configured() {
        let q = head(true, true).build_query(vec![CLS, 7, SEP]);
        assert_eq!(q.ids.len(), 8);
        assert_eq!(q.attend_len, 8);
    }

    #[test]
    fn query_without_expansion_is_not_padded() {
        let q = head(false, false).build_query(vec![CLS, 7, SEP]);
        assert_eq!(q.ids, vec![CLS, Q, 7, SEP]);
        assert_eq!(q.attend_len, 4);
    }

    #[test]
    fn document_gets_marker_and_skiplist_only_drops_listed_ids() {
        let h = head(false, true);
        assert_eq!(h.document_tokenizer_length(), 5);
        let d = h.build_document(vec![CLS, 7, 1010, SEP]);
        assert_eq!(d.ids, vec![CLS, D, 7, 1010, SEP]);
        let kept: Vec<u32> = d
            .ids
            .iter()
            .copied()
            .filter(|&id| h.keeps_document_token(id))
            .collect();
        assert_eq!(kept, vec![CLS, D, 7, SEP]);
    }
}
