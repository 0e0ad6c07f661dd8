//! The BERT encoder forward pass.
//!
//! A batch is *packed*: the sequences' tokens are stacked into one `[total_tokens, hidden]`
//! matrix with no padding rows, so the dense products (Q/K/V, attention output, feed-forward),
//! which are most of the work, run once per batch on exactly the real tokens. Only attention
//! looks at sequence boundaries; there each sequence attends within itself, which is what a
//! padded batch with a padding mask computes, minus the wasted rows.

use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use crate::config::BertConfig;
use crate::error::{EncoderError, Result};
use crate::ops;
use crate::weights::BertWeights;

/// One sequence of model input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SeqInput {
    /// Token ids, special tokens included.
    pub ids: Vec<u32>,
    /// Tokens `0..attend_len` can be attended to; later ones (ColBERT's `[MASK]` query
    /// expansion) still produce outputs but are masked out as keys, like attention-mask zeros.
    pub attend_len: usize,
}

impl SeqInput {
    /// A sequence whose every token is visible.
    pub(crate) fn full(ids: Vec<u32>) -> Self {
        let attend_len = ids.len();
        Self { ids, attend_len }
    }
}

/// Scratch buffers of the forward pass, kept across batches of one encode call so that each
/// batch does not page in fresh tens of megabytes.
#[derive(Default)]
pub(crate) struct Workspace {
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    proj: Vec<f32>,
    ffn: Vec<f32>,
}

/// Resizes `buf` to `len` without caring about its contents (every user overwrites it).
fn scratch(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buf.resize(len, 0.0);
    &mut buf[..len]
}

/// A loaded BERT encoder.
pub(crate) struct BertModel {
    pub config: BertConfig,
    weights: BertWeights,
}

impl BertModel {
    pub(crate) fn new(config: BertConfig, weights: BertWeights) -> Self {
        Self { config, weights }
    }

    /// Runs the encoder over `seqs` and returns the last hidden state of every token, the
    /// sequences' rows stacked in order (`[Σ len, hidden]`, row-major).
    ///
    /// `threads > 1` parallelises on the current rayon pool, so call it inside the pool that
    /// should do the work.
    pub(crate) fn forward(
        &self,
        seqs: &[SeqInput],
        threads: usize,
        ws: &mut Workspace,
    ) -> Result<Vec<f32>> {
        let cfg = &self.config;
        let h = cfg.hidden_size;
        let total: usize = seqs.iter().map(|s| s.ids.len()).sum();
        if total == 0 {
            return Ok(Vec::new());
        }
        let parallel = threads > 1;
        let par = if parallel {
            Par::rayon(threads)
        } else {
            Par::Seq
        };

        let mut x = self.embed(seqs)?;
        ops::layernorm_rows(parallel, &mut x, &self.weights.embeddings.norm);

        let qkv = scratch(&mut ws.qkv, total * 3 * h);
        let ctx = scratch(&mut ws.ctx, total * h);
        let proj = scratch(&mut ws.proj, total * h);
        let ffn = scratch(&mut ws.ffn, total * cfg.intermediate_size);

        for layer in &self.weights.layers {
            layer.qkv.forward_no_bias(&x, total, qkv, par);
            if let Some(bias) = &layer.qkv.bias {
                ops::add_bias(parallel, qkv, bias);
            }
            self.attention(seqs, qkv, ctx, parallel);
            layer.attn_out.forward_no_bias(ctx, total, proj, par);
            ops::residual_layernorm(
                parallel,
                &mut x,
                proj,
                layer.attn_out.bias.as_deref(),
                &layer.attn_norm,
            );

            layer.ffn_up.forward_no_bias(&x, total, ffn, par);
            ops::bias_activation(
                parallel,
                ffn,
                layer.ffn_up.bias.as_deref(),
                cfg.intermediate_size,
                cfg.activation,
            );
            layer.ffn_down.forward_no_bias(ffn, total, proj, par);
            ops::residual_layernorm(
                parallel,
                &mut x,
                proj,
                layer.ffn_down.bias.as_deref(),
                &layer.ffn_norm,
            );
        }
        Ok(x)
    }

    /// Word + position + token-type embeddings (before the LayerNorm). Every token is segment 0,
    /// as for single-text inputs in Hugging Face.
    fn embed(&self, seqs: &[SeqInput]) -> Result<Vec<f32>> {
        let cfg = &self.config;
        let h = cfg.hidden_size;
        let emb = &self.weights.embeddings;
        let total: usize = seqs.iter().map(|s| s.ids.len()).sum();
        let mut x = Vec::with_capacity(total * h);
        let segment = &emb.token_type[..h];
        for seq in seqs {
            if seq.ids.len() > cfg.max_positions {
                // Tokenizers are configured to truncate below this; reaching it is a bug in the
                // input builders, reported rather than indexing out of the position table.
                return Err(EncoderError::SequenceTooLong {
                    len: seq.ids.len(),
                    max: cfg.max_positions,
                });
            }
            for (pos, &id) in seq.ids.iter().enumerate() {
                let id_us = id as usize;
                if id_us >= cfg.vocab_size {
                    return Err(EncoderError::TokenOutOfRange {
                        id,
                        vocab_size: cfg.vocab_size,
                    });
                }
                let word = &emb.word[id_us * h..(id_us + 1) * h];
                let position = &emb.position[pos * h..(pos + 1) * h];
                x.extend(
                    word.iter()
                        .zip(position)
                        .zip(segment)
                        .map(|((w, p), s)| w + p + s),
                );
            }
        }
        Ok(x)
    }

    /// Multi-head self-attention of every sequence; `qkv` holds `[Q | K | V]` per token row and
    /// the per-head outputs are written side by side into `ctx`.
    fn attention(&self, seqs: &[SeqInput], qkv: &[f32], ctx: &mut [f32], parallel: bool) {
        let h = self.config.hidden_size;
        // Sequences own disjoint row ranges of `ctx`, which makes them the unit of parallelism.
        let mut jobs = Vec::with_capacity(seqs.len());
        let mut rest = ctx;
        let mut start = 0;
        for seq in seqs {
            let (mine, tail) = rest.split_at_mut(seq.ids.len() * h);
            jobs.push((start, seq, mine));
            start += seq.ids.len();
            rest = tail;
        }
        let run = |(start, seq, out): (usize, &SeqInput, &mut [f32])| {
            self.attend_sequence(&qkv[start * 3 * h..], seq.ids.len(), seq.attend_len, out);
        };
        if parallel {
            jobs.into_par_iter().for_each(run);
        } else {
            jobs.into_iter().for_each(run);
        }
    }

    /// Attention for one sequence of `n` tokens whose first `keys` tokens are attendable.
    /// `qkv` starts at the sequence's first row; `out` is its `[n, hidden]` block of `ctx`.
    fn attend_sequence(&self, qkv: &[f32], n: usize, keys: usize, out: &mut [f32]) {
        let h = self.config.hidden_size;
        let d = self.config.head_dim();
        let stride = 3 * h;
        if n == 0 || keys == 0 {
            return;
        }
        let scale = 1.0 / (d as f32).sqrt();
        // Scores only over attendable keys: masked keys would get exactly zero weight.
        let mut scores = vec![0.0f32; n * keys];
        // Every product is phrased with a column-major destination (faer's native layout,
        // unit row stride), reading the row-major activations as transposes; row-major
        // destinations with a stride hit an out-of-bounds store in faer 0.24's small kernels.
        for head in 0..self.config.num_heads {
            let q = &qkv[head * d..];
            let k = &qkv[h + head * d..];
            let v = &qkv[2 * h + head * d..];
            // Sᵀ (keys × n) = K · Qᵀ; column i of Sᵀ is row i of S, contiguous.
            {
                let k = MatRef::from_row_major_slice_with_stride(k, keys, d, stride);
                let qt = MatRef::from_column_major_slice_with_stride(q, d, n, stride);
                let st = MatMut::from_column_major_slice_mut(&mut scores, keys, n);
                faer::linalg::matmul::matmul(st, Accum::Replace, k, qt, scale, Par::Seq);
            }
            ops::softmax_rows(&mut scores, keys);
            // Oᵀ (d × n) = Vᵀ · Pᵀ, written straight into this head's columns of `out`.
            let vt = MatRef::from_column_major_slice_with_stride(v, d, keys, stride);
            let pt = MatRef::from_column_major_slice(&scores, keys, n);
            let ot = MatMut::from_column_major_slice_with_stride_mut(&mut out[head * d..], d, n, h);
            faer::linalg::matmul::matmul(ot, Accum::Replace, vt, pt, 1.0f32, Par::Seq);
        }
    }
}
