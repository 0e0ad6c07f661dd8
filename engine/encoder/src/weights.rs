//! Reading tensors out of `.safetensors` files into `f32` buffers.
//!
//! Checkpoints in the wild differ in small ways that do not change the maths: tensor names may
//! carry a `bert.` prefix (models saved from `BertForMaskedLM` and friends), and old TensorFlow
//! conversions call the LayerNorm parameters `gamma`/`beta` instead of `weight`/`bias`. Both
//! variants are accepted; anything else missing is an error naming the file and tensor.

use std::path::{Path, PathBuf};

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};

use crate::config::{BertConfig, DenseActivation, DenseConfig};
use crate::error::{EncoderError, Result};
use crate::ops::{LayerNorm, Linear};

/// One parsed `.safetensors` file.
pub(crate) struct TensorFile<'a> {
    path: PathBuf,
    tensors: SafeTensors<'a>,
    /// Prefix under which the model's tensors live (`""` or `"bert."`).
    prefix: &'static str,
}

impl<'a> TensorFile<'a> {
    pub(crate) fn parse(path: &Path, bytes: &'a [u8]) -> Result<Self> {
        let tensors = SafeTensors::deserialize(bytes).map_err(|e| EncoderError::Safetensors {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
            prefix: "",
        })
    }

    /// Picks the name prefix by probing for a tensor every model of the family has.
    fn detect_prefix(&mut self, probe: &str) {
        for prefix in ["", "bert."] {
            if self.tensors.tensor(&format!("{prefix}{probe}")).is_ok() {
                self.prefix = prefix;
                return;
            }
        }
    }

    /// Finds the first of `names` present in the file (after the prefix).
    fn find(&self, names: &[&str]) -> Option<(String, safetensors::tensor::TensorView<'a>)> {
        names.iter().find_map(|name| {
            let full = format!("{}{name}", self.prefix);
            self.tensors.tensor(&full).ok().map(|view| (full, view))
        })
    }

    /// Loads the first present tensor among `names` (alternative spellings of one parameter),
    /// checking its shape, as `f32`.
    pub(crate) fn get(&self, names: &[&str], shape: &[usize]) -> Result<Vec<f32>> {
        self.get_optional(names, shape)?
            .ok_or_else(|| EncoderError::MissingTensor {
                path: self.path.clone(),
                tensor: format!(
                    "{}{}",
                    self.prefix,
                    names.first().copied().unwrap_or_default()
                ),
            })
    }

    /// Like [`get`](Self::get) but absence is not an error (optional biases).
    pub(crate) fn get_optional(&self, names: &[&str], shape: &[usize]) -> Result<Option<Vec<f32>>> {
        let Some((name, view)) = self.find(names) else {
            return Ok(None);
        };
        if view.shape() != shape {
            return Err(EncoderError::ShapeMismatch {
                path: self.path.clone(),
                tensor: name,
                expected: shape.to_vec(),
                actual: view.shape().to_vec(),
            });
        }
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(EncoderError::UnsupportedDtype {
                    path: self.path.clone(),
                    tensor: name,
                    dtype: format!("{other:?}"),
                });
            }
        };
        // safetensors validates offsets against the header shape, so this only guards against
        // a future dtype whose element size differs from the match arms above.
        let expected: usize = shape.iter().product();
        if values.len() != expected {
            return Err(EncoderError::Safetensors {
                path: self.path.clone(),
                reason: format!(
                    "tensor `{name}` holds {} values, expected {expected}",
                    values.len()
                ),
            });
        }
        Ok(Some(values))
    }

    /// Loads an `nn.Linear` whose parameters are `{base}.weight` `[out, in]` and an optional
    /// `{base}.bias` `[out]`.
    pub(crate) fn linear(&self, base: &str, out_dim: usize, in_dim: usize) -> Result<Linear> {
        let weight = self.get(&[&format!("{base}.weight")], &[out_dim, in_dim])?;
        let bias = self.get_optional(&[&format!("{base}.bias")], &[out_dim])?;
        Ok(Linear::from_torch(&weight, bias, out_dim, in_dim))
    }

    fn layer_norm(&self, base: &str, width: usize, eps: f32) -> Result<LayerNorm> {
        let gamma = self.get(
            &[&format!("{base}.weight"), &format!("{base}.gamma")],
            &[width],
        )?;
        let beta = self.get(
            &[&format!("{base}.bias"), &format!("{base}.beta")],
            &[width],
        )?;
        Ok(LayerNorm { gamma, beta, eps })
    }
}

/// Embedding tables and their LayerNorm.
pub(crate) struct Embeddings {
    pub word: Vec<f32>,
    pub position: Vec<f32>,
    pub token_type: Vec<f32>,
    pub norm: LayerNorm,
}

/// One transformer layer.
pub(crate) struct Layer {
    /// Q, K and V projections fused into one `[hidden, 3·hidden]` product.
    pub qkv: Linear,
    pub attn_out: Linear,
    pub attn_norm: LayerNorm,
    pub ffn_up: Linear,
    pub ffn_down: Linear,
    pub ffn_norm: LayerNorm,
}

/// All BERT weights, converted to `f32`.
pub(crate) struct BertWeights {
    pub embeddings: Embeddings,
    pub layers: Vec<Layer>,
}

impl BertWeights {
    pub(crate) fn load(path: &Path, bytes: &[u8], config: &BertConfig) -> Result<Self> {
        let mut file = TensorFile::parse(path, bytes)?;
        file.detect_prefix("embeddings.word_embeddings.weight");
        let h = config.hidden_size;
        let eps = config.layer_norm_eps;
        let embeddings = Embeddings {
            word: file.get(
                &["embeddings.word_embeddings.weight"],
                &[config.vocab_size, h],
            )?,
            position: file.get(
                &["embeddings.position_embeddings.weight"],
                &[config.max_positions, h],
            )?,
            token_type: file.get(
                &["embeddings.token_type_embeddings.weight"],
                &[config.type_vocab_size, h],
            )?,
            norm: file.layer_norm("embeddings.LayerNorm", h, eps)?,
        };
        let inter = config.intermediate_size;
        let layers = (0..config.num_layers)
            .map(|i| {
                let base = format!("encoder.layer.{i}");
                let q = file.linear(&format!("{base}.attention.self.query"), h, h)?;
                let k = file.linear(&format!("{base}.attention.self.key"), h, h)?;
                let v = file.linear(&format!("{base}.attention.self.value"), h, h)?;
                Ok(Layer {
                    qkv: Linear::concat(&[q, k, v]),
                    attn_out: file.linear(&format!("{base}.attention.output.dense"), h, h)?,
                    attn_norm: file.layer_norm(
                        &format!("{base}.attention.output.LayerNorm"),
                        h,
                        eps,
                    )?,
                    ffn_up: file.linear(&format!("{base}.intermediate.dense"), inter, h)?,
                    ffn_down: file.linear(&format!("{base}.output.dense"), h, inter)?,
                    ffn_norm: file.layer_norm(&format!("{base}.output.LayerNorm"), h, eps)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { embeddings, layers })
    }
}

/// A sentence-transformers / PyLate Dense projection.
pub(crate) struct Dense {
    pub linear: Linear,
    pub activation: DenseActivation,
}

impl Dense {
    pub(crate) fn load(path: &Path, bytes: &[u8], config: &DenseConfig) -> Result<Self> {
        let file = TensorFile::parse(path, bytes)?;
        let (out_dim, in_dim) = (config.out_features, config.in_features);
        let weight = file.get(&["linear.weight"], &[out_dim, in_dim])?;
        // A bias stored in the file is applied even if the config forgot to declare it; a
        // declared bias that is absent is an error rather than a silent zero.
        let bias = file.get_optional(&["linear.bias"], &[out_dim])?;
        if config.bias && bias.is_none() {
            return Err(EncoderError::MissingTensor {
                path: path.to_path_buf(),
                tensor: "linear.bias".to_owned(),
            });
        }
        Ok(Self {
            linear: Linear::from_torch(&weight, bias, out_dim, in_dim),
            activation: config.activation,
        })
    }
}
