//! `tessera generate`: a synthetic clustered corpus (see `tessera::synthetic`) written in the
//! formats `tessera ingest` reads.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use tessera::synthetic::{SyntheticCorpus, SyntheticSpec};

use crate::args::GenerateArgs;

fn create(path: &Path) -> Result<BufWriter<File>> {
    let f = File::create(path).with_context(|| format!("{}: cannot create", path.display()))?;
    Ok(BufWriter::with_capacity(1 << 20, f))
}

/// Writes an `.npy` array of `shape` (row-major `data`).
fn write_npy<T: npyz::AutoSerialize + Copy>(path: &Path, shape: &[u64], data: &[T]) -> Result<()> {
    use npyz::WriterBuilder;
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(create(path)?)
        .begin_nd()
        .with_context(|| format!("{}: cannot write", path.display()))?;
    w.extend(data.iter().copied())
        .with_context(|| format!("{}: cannot write", path.display()))?;
    w.finish()
        .with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(())
}

/// Writes an f32 `.npy` array.
pub fn write_npy_f32(path: &Path, shape: &[u64], data: &[f32]) -> Result<()> {
    write_npy(path, shape, data)
}

/// Writes an i64 `.npy` vector.
pub fn write_npy_i64(path: &Path, data: &[i64]) -> Result<()> {
    write_npy(path, &[data.len() as u64], data)
}

#[derive(serde::Serialize)]
struct JsonlDoc<'a> {
    id: &'a str,
    embeddings: Vec<&'a [f32]>,
    metadata: JsonlMeta,
}

#[derive(serde::Serialize)]
struct JsonlMeta {
    n: usize,
}

fn f32_bytes(data: &[f32]) -> Vec<u8> {
    data.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes the corpus (and queries) to `args.out`.
pub fn run(args: &GenerateArgs) -> Result<()> {
    let out = &args.out;
    let mut formats: Vec<String> = args
        .formats
        .iter()
        .map(|f| f.trim().to_ascii_lowercase())
        .collect();
    if formats.iter().any(|f| f == "all") {
        formats = ["npy-dir", "safetensors", "safetensors-docs", "jsonl"]
            .map(String::from)
            .to_vec();
    }
    for f in &formats {
        if !matches!(
            f.as_str(),
            "npy-dir" | "safetensors" | "safetensors-docs" | "jsonl"
        ) {
            bail!(
                "unknown format {f:?} for --formats (npy-dir, safetensors, safetensors-docs, jsonl, all)"
            );
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;
    let dim = args.dim;
    let corpus = SyntheticCorpus::generate(&SyntheticSpec {
        n_docs: args.docs,
        dim,
        seed: args.seed,
        ..SyntheticSpec::default()
    });
    let ids: Vec<String> = (0..args.docs).map(|i| format!("doc-{i:06}")).collect();
    let lens: Vec<i64> = corpus
        .offsets
        .windows(2)
        .map(|w| (w[1] - w[0]) as i64)
        .collect();

    write_npy_f32(
        &out.join("flat.npy"),
        &[corpus.n_tokens() as u64, dim as u64],
        &corpus.flat,
    )?;
    write_npy_i64(&out.join("doclens.npy"), &lens)?;
    let mut w = create(&out.join("ids.txt"))?;
    for id in &ids {
        writeln!(w, "{id}")?;
    }
    w.flush()?;
    let qs = corpus.queries(args.queries, 32, 0.3, args.seed);
    write_npy_f32(
        &out.join("queries.npy"),
        &[args.queries as u64, 32, dim as u64],
        &qs.concat(),
    )?;

    for f in &formats {
        match f.as_str() {
            "npy-dir" => {
                let dir = out.join("docs");
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("{}: cannot create", dir.display()))?;
                for (i, id) in ids.iter().enumerate() {
                    let d = corpus.doc(i);
                    write_npy_f32(
                        &dir.join(format!("{id}.npy")),
                        &[(d.len() / dim) as u64, dim as u64],
                        d,
                    )?;
                }
            }
            "safetensors" => {
                use safetensors::tensor::{Dtype, TensorView};
                let emb = f32_bytes(&corpus.flat);
                let lens_bytes: Vec<u8> = lens.iter().flat_map(|x| x.to_le_bytes()).collect();
                let tensors = vec![
                    (
                        "embeddings",
                        TensorView::new(Dtype::F32, vec![corpus.n_tokens(), dim], &emb)?,
                    ),
                    (
                        "doclens",
                        TensorView::new(Dtype::I64, vec![lens.len()], &lens_bytes)?,
                    ),
                ];
                let path = out.join("corpus.safetensors");
                safetensors::serialize_to_file(tensors, None::<HashMap<String, String>>, &path)
                    .with_context(|| format!("{}: cannot write", path.display()))?;
            }
            "safetensors-docs" => {
                use safetensors::tensor::{Dtype, TensorView};
                let bytes: Vec<Vec<u8>> =
                    (0..args.docs).map(|i| f32_bytes(corpus.doc(i))).collect();
                let mut tensors = Vec::with_capacity(args.docs);
                for (i, id) in ids.iter().enumerate() {
                    let rows = corpus.doc(i).len() / dim;
                    tensors.push((
                        id.as_str(),
                        TensorView::new(Dtype::F32, vec![rows, dim], &bytes[i])?,
                    ));
                }
                let path = out.join("docs.safetensors");
                safetensors::serialize_to_file(tensors, None::<HashMap<String, String>>, &path)
                    .with_context(|| format!("{}: cannot write", path.display()))?;
            }
            "jsonl" => {
                let path = out.join("corpus.jsonl");
                let mut w = create(&path)?;
                for (i, id) in ids.iter().enumerate() {
                    let rows: Vec<&[f32]> = corpus.doc(i).chunks(dim).collect();
                    // Serialised directly (not via `Value`), floats print as the shortest f32.
                    let line = JsonlDoc {
                        id,
                        embeddings: rows,
                        metadata: JsonlMeta { n: i },
                    };
                    serde_json::to_writer(&mut w, &line)?;
                    w.write_all(b"\n")?;
                }
                w.flush()
                    .with_context(|| format!("{}: cannot write", path.display()))?;
            }
            _ => {}
        }
    }
    eprintln!(
        "wrote {} documents ({} tokens, dim {dim}) and {} queries to {}{}",
        args.docs,
        corpus.n_tokens(),
        args.queries,
        out.display(),
        if formats.is_empty() {
            String::new()
        } else {
            format!(" (also as {})", formats.join(", "))
        }
    );
    Ok(())
}
