//! Query files: `.npy` (`[tokens, dim]` or `[queries, tokens, dim]`), `.safetensors` (each
//! 2-D tensor a query, 3-D tensors several), `.json` (a matrix or a list of matrices) and
//! `.jsonl` (one query per line: a matrix, or `{"id": …, "embeddings": …}`).

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::formats::{npy, safetensors};

/// One query matrix with a label for output.
#[derive(Clone, Debug)]
pub struct Query {
    /// The query's name in results: its position, id or tensor name.
    pub label: Value,
    /// Row-major `[tokens, dim]`.
    pub vectors: Vec<f32>,
}

fn check_rows(path: &Path, label: &Value, rows: &[Vec<f32>], dim: usize) -> Result<Vec<f32>> {
    if rows.is_empty() {
        bail!("{}: query {label} has no token vectors", path.display());
    }
    let mut out = Vec::with_capacity(rows.len() * dim);
    for (i, r) in rows.iter().enumerate() {
        if r.len() != dim {
            bail!(
                "{}: query {label}: token vector {i} has {} values but the collection's dimension is {dim}",
                path.display(),
                r.len()
            );
        }
        out.extend_from_slice(r);
    }
    Ok(out)
}

/// Reads the queries in `path` for a collection of dimension `dim`.
pub fn read_queries(path: &Path, dim: usize) -> Result<Vec<Query>> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let p = path.display();
    let queries = match ext.as_str() {
        "npy" => {
            let meta = npy::read_meta(path)?;
            let data = meta.read_all()?;
            match meta.shape[..] {
                [_, d] if d == dim => vec![Query {
                    label: Value::from(0),
                    vectors: data,
                }],
                [q, t, d] if d == dim => (0..q)
                    .map(|i| Query {
                        label: Value::from(i),
                        vectors: data[i * t * d..(i + 1) * t * d].to_vec(),
                    })
                    .collect(),
                _ => bail!(
                    "{p}: query shape {:?} is neither [tokens, {dim}] nor [queries, tokens, {dim}]",
                    meta.shape
                ),
            }
        }
        "safetensors" => {
            let meta = safetensors::read_meta(path)?;
            let mut out = Vec::new();
            for (name, info) in &meta.tensors {
                let (q, t) = match info.shape[..] {
                    [t, d] if d == dim => (1, t),
                    [q, t, d] if d == dim => (q, t),
                    _ => bail!(
                        "{p}: tensor {name:?} has shape {:?}, expected [tokens, {dim}] or [queries, tokens, {dim}]",
                        info.shape
                    ),
                };
                let elem = safetensors::float_elem(info.dtype).with_context(|| {
                    format!(
                        "{p}: tensor {name:?} has dtype {}, not a float type",
                        info.dtype
                    )
                })?;
                let layout = crate::formats::rows::MatrixLayout {
                    path: path.to_path_buf(),
                    offset: meta.data_start + info.data_offsets.0 as u64,
                    rows: q * t,
                    dim,
                    elem,
                    order: crate::formats::elem::ByteOrder::Little,
                    fortran: false,
                };
                let data = layout.open()?.read_rows(q * t)?;
                for i in 0..q {
                    let label = if info.shape.len() == 2 {
                        Value::from(name.as_str())
                    } else {
                        Value::from(format!("{name}[{i}]"))
                    };
                    out.push(Query {
                        label,
                        vectors: data[i * t * dim..(i + 1) * t * dim].to_vec(),
                    });
                }
            }
            out
        }
        "json" => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("{p}: cannot read"))?;
            if let Ok(m) = serde_json::from_str::<Vec<Vec<f32>>>(&text) {
                let label = Value::from(0);
                vec![Query {
                    vectors: check_rows(path, &label, &m, dim)?,
                    label,
                }]
            } else {
                let ms: Vec<Vec<Vec<f32>>> = serde_json::from_str(&text).with_context(|| {
                    format!("{p}: expected a [tokens][dim] matrix or a list of them")
                })?;
                let mut out = Vec::new();
                for (i, m) in ms.iter().enumerate() {
                    let label = Value::from(i);
                    out.push(Query {
                        vectors: check_rows(path, &label, m, dim)?,
                        label,
                    });
                }
                out
            }
        }
        "jsonl" | "ndjson" => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("{p}: cannot read (is it UTF-8?)"))?;
            let mut out = Vec::new();
            for (n, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let v: Value = serde_json::from_str(line)
                    .with_context(|| format!("{p}: line {}: not valid JSON", n + 1))?;
                let (label, m) = match v {
                    Value::Object(mut o) => {
                        let label = o.remove("id").unwrap_or_else(|| Value::from(out.len()));
                        let m = o
                            .remove("embeddings")
                            .with_context(|| format!("{p}: line {}: no \"embeddings\"", n + 1))?;
                        (label, m)
                    }
                    m => (Value::from(out.len()), m),
                };
                let m: Vec<Vec<f32>> = serde_json::from_value(m).with_context(|| {
                    format!(
                        "{p}: line {}: embeddings must be a list of lists of numbers",
                        n + 1
                    )
                })?;
                out.push(Query {
                    vectors: check_rows(path, &label, &m, dim)?,
                    label,
                });
            }
            out
        }
        _ => bail!("{p}: unknown query file type; use .npy, .safetensors, .json or .jsonl"),
    };
    if queries.is_empty() {
        bail!("{p}: the file holds no queries");
    }
    for q in &queries {
        if q.vectors.is_empty() {
            bail!("{p}: query {} has no token vectors", q.label);
        }
        if let Some(j) = q.vectors.iter().position(|x| !x.is_finite()) {
            bail!(
                "{p}: query {}: token {} dimension {} is {}",
                q.label,
                j / dim,
                j % dim,
                q.vectors[j]
            );
        }
    }
    Ok(queries)
}
