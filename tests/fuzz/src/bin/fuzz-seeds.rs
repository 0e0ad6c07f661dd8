//! Writes the seed inputs of every target into `tests/fuzz/corpus/TARGET/seed-*`: small valid
//! files of each format, written by Tessera's own writers where it has them. Run once when a
//! format changes (`cargo run -p tessera-fuzz --bin fuzz-seeds`); the fuzzers' finds and the
//! regression inputs sit beside them.

use tessera_storage::ExternalId;
use tessera_storage::codec::{CodecData, write_codec};
use tessera_storage::originals::{OriginalValues, OriginalsInput, Precision, write_originals};
use tessera_storage::segment::{SegmentInput, residual_bytes_per_token, write_segment};

fn main() -> std::io::Result<()> {
    let seeds: Vec<(&str, &str, Vec<u8>)> = vec![
        ("segment", "u16-codes", segment(&[])?),
        (
            "segment",
            "token-scales",
            segment(&[0x3c00, 0x3800, 0, 0x4000, 0x3c00, 0x3555])?,
        ),
        ("codec", "2-bits", codec(2)?),
        ("codec", "1-bit", codec(1)?),
        ("originals", "f16", originals(Precision::F16)?),
        ("originals", "bf16", originals(Precision::Bf16)?),
        ("originals", "f32", originals(Precision::F32)?),
        ("doctext", "empty", tessera_storage::doctext::encode("")?),
        (
            "doctext",
            "passage",
            tessera_storage::doctext::encode(PASSAGE)?,
        ),
        (
            "npy",
            "f32-3x4",
            npy("<f4", "(3, 4)", false, &f32_bytes(12)),
        ),
        (
            "npy",
            "f16-2x4",
            npy("<f2", "(2, 4)", false, &[0x00, 0x3c].repeat(8)),
        ),
        (
            "npy",
            "f64-be-fortran",
            npy(
                ">f8",
                "(2, 3)",
                true,
                &[0x3f, 0xf0, 0, 0, 0, 0, 0, 0].repeat(6),
            ),
        ),
        (
            "npy",
            "i64-doclens",
            npy(
                "<i8",
                "(2,)",
                false,
                &[[1u8, 0, 0, 0, 0, 0, 0, 0], [2, 0, 0, 0, 0, 0, 0, 0]].concat(),
            ),
        ),
        (
            "safetensors",
            "per-document",
            safetensors(&[
                ("doc-a", "F32", &[2, 4], f32_bytes(8)),
                ("doc-b", "F16", &[1, 4], [0x00, 0x3c].repeat(4)),
            ]),
        ),
        (
            "safetensors",
            "flat",
            safetensors(&[
                ("embeddings", "BF16", &[3, 2], [0x80, 0x3f].repeat(6)),
                (
                    "doclens",
                    "I64",
                    &[2],
                    [[1u8, 0, 0, 0, 0, 0, 0, 0], [2, 0, 0, 0, 0, 0, 0, 0]].concat(),
                ),
            ]),
        ),
        ("jsonl", "documents", JSONL.as_bytes().to_vec()),
        ("jsonl", "ids-and-lengths", b"[1, 2, 3]\n".to_vec()),
        (
            "tokenizer_json",
            "wordpiece",
            tessera_fuzz::tokenizer::WORDPIECE_JSON.as_bytes().to_vec(),
        ),
        ("tokenizer_text", "passage", PASSAGE.as_bytes().to_vec()),
        (
            "tokenizer_text",
            "unicode",
            "Ça été 夏天 naïve\u{301} \u{200b}ﬁ \u{0} \t\r\n 😀 ##x [MASK][CLS]"
                .as_bytes()
                .to_vec(),
        ),
        ("tokenizer_text", "long-word", "a".repeat(300).into_bytes()),
    ];
    for (target, name, bytes) in seeds {
        let dir = tessera_fuzz::corpus_dir(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
    }
    println!(
        "seeds written under {}",
        tessera_fuzz::corpus_dir("").display()
    );
    Ok(())
}

const PASSAGE: &str =
    "Late interaction scores a query against a document by MaxSim over token vectors.";

const JSONL: &str = r#"{"id": "doc-1", "embeddings": [[0.5, 1, -2, 3e-2], [0, 0, 0, 1]], "metadata": {"lang": "en"}}
{"id": 7, "embeddings": [[1, 2, 3, 4]]}

{"id": "doc-2", "embeddings": [[1.5, -1, 0.25, 8]], "metadata": null}
"#;

/// Four tokens in two documents, dim 4, 2 bits, 8 centroids.
fn segment(token_scales: &[u16]) -> std::io::Result<Vec<u8>> {
    let (dim, nbits, n_tokens) = (4, 2, 6);
    let ids = [
        ExternalId::from("doc-a"),
        ExternalId::from(42u64),
        ExternalId::from("c"),
    ];
    let mut out = Vec::new();
    write_segment(
        &mut out,
        &SegmentInput {
            dim,
            nbits,
            n_centroids: 8,
            codec_id: 1,
            doc_offsets: &[0, 2, 5, 6],
            codes: &[0, 3, 3, 7, 1, 0],
            residuals: &(0..n_tokens * residual_bytes_per_token(dim, nbits))
                .map(|i| (i * 37) as u8)
                .collect::<Vec<_>>(),
            ids: &ids,
            token_scales,
        },
    )?;
    Ok(out)
}

/// dim 2, two centroids in one group.
fn codec(nbits: u32) -> std::io::Result<Vec<u8>> {
    let buckets = 1usize << nbits;
    let mut out = Vec::new();
    write_codec(
        &mut out,
        &CodecData {
            dim: 2,
            nbits,
            centroids: vec![0.0, 1.0, 1.0, 0.0],
            cutoffs: (0..2 * (buckets - 1))
                .map(|i| (i % (buckets - 1)) as f32)
                .collect(),
            weights: (0..2 * buckets)
                .map(|i| (i % buckets) as f32 - 0.5)
                .collect(),
            group_centers: vec![0.5, 0.5],
            group_offsets: vec![0, 2],
            trained_tokens: 100,
            mean_residual_norm: 0.25,
        },
    )?;
    Ok(out)
}

/// Three documents of 2, 1 and 2 tokens, dim 3.
fn originals(precision: Precision) -> std::io::Result<Vec<u8>> {
    let values: Vec<f32> = (0..15).map(|i| i as f32 * 0.5 - 3.0).collect();
    let mut out = Vec::new();
    write_originals(
        &mut out,
        &OriginalsInput {
            dim: 3,
            precision,
            segment_id: 1,
            doc_offsets: &[0, 2, 3, 5],
            vectors: OriginalValues::F32(&values),
        },
    )?;
    Ok(out)
}

fn f32_bytes(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| (i as f32 * 0.25 - 1.0).to_le_bytes())
        .collect()
}

/// A version 1.0 `.npy` file.
fn npy(descr: &str, shape: &str, fortran: bool, data: &[u8]) -> Vec<u8> {
    let fortran = if fortran { "True" } else { "False" };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}");
    // Magic, version, length and header together are a multiple of 64 bytes, ending in '\n'.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// A `.safetensors` file of `(name, dtype, shape, bytes)` tensors, in order.
fn safetensors(tensors: &[(&str, &str, &[usize], Vec<u8>)]) -> Vec<u8> {
    let mut entries = Vec::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let (start, end) = (data.len(), data.len() + bytes.len());
        entries.push(format!(
            "\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":{shape:?},\"data_offsets\":[{start},{end}]}}"
        ));
        data.extend_from_slice(bytes);
    }
    let header = format!("{{{}}}", entries.join(","));
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&data);
    out
}
