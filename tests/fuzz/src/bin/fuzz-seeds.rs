//! Writes the seed inputs of every target into `tests/fuzz/corpus/TARGET/seed-*`: small valid
//! files of each format, written by Tessera's own writers where it has them. Run once when a
//! format changes (`cargo run -p tessera-fuzz --bin fuzz-seeds`); the fuzzers' finds and the
//! regression inputs sit beside them.

use tessera_storage::ExternalId;
use tessera_storage::codec::{CodecData, write_codec};
use tessera_storage::originals::{OriginalValues, OriginalsInput, Precision, write_originals};
use tessera_storage::segment::{SegmentInput, residual_bytes_per_token, write_segment};

/// A seed: its target, its name (after `seed-`) and its bytes.
type Seed = (&'static str, &'static str, Vec<u8>);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seeds: Vec<Seed> = vec![
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
        ("text_corpus", "documents", TEXT_CORPUS.as_bytes().to_vec()),
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
    let seeds = seeds.into_iter().chain(catalog_records()?);
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

const TEXT_CORPUS: &str = r#"{"id": "doc-1", "text": "Late interaction scores tokens.", "metadata": {"lang": "en", "n": [1, 2.5]}}
{"id": 42, "text": "Ça été 夏天 \u00e9\ud83d\ude00", "metadata": null, "other": true}

  {"text": "keys in any order", "id": "doc-3"}
"#;

/// One record of every kind the catalog holds, written by the storage crate's own encoders
/// (`tessera_storage::records`), each as the `catalog_records` target reads it.
fn catalog_records() -> Result<Vec<Seed>, Box<dyn std::error::Error>> {
    use roaring::RoaringBitmap;
    use tessera_fuzz::records::join_record;
    use tessera_storage::records::*;
    let (int_id, str_id) = (ExternalId::from(7u64), ExternalId::from("doc-é"));
    let manifest = Manifest {
        codec: Some(CodecRef {
            id: 1,
            file: "codec-000001.tcd".into(),
        }),
        segments: vec![
            SegmentRef {
                id: 2,
                file: "seg-000002.tsg".into(),
                n_docs: 30,
                n_tokens: 412,
                bytes: 9_216,
                originals: Some(OriginalsRef {
                    file: "vec-000002.tov".into(),
                    bytes: 13_248,
                }),
            },
            SegmentRef {
                id: 3,
                file: "seg-000003.tsg".into(),
                n_docs: 2,
                n_tokens: 7,
                bytes: 1_024,
                originals: None,
            },
        ],
        next_file_id: 4,
        live_docs: 31,
        live_tokens: 415,
        commits: 3,
        model: Some(serde_json::json!({"name": "m", "hash": "ab12", "path": null})),
    };
    let collection = CollectionRecord {
        id: 0,
        name: "docs".into(),
        config: serde_json::json!({
            "dim": 128, "nbits": 2, "n_centroids": 0, "max_tokens_per_doc": 512,
            "kmeans_iters": 8, "seed": 42, "originals": "f16"
        }),
    };
    // One array container, one run container and one bitmap container.
    let mut bitmap: RoaringBitmap = [1u32, 5, 9].into_iter().collect();
    bitmap.insert_range(70_000..80_000);
    bitmap.extend((140_000..160_000).step_by(3));
    bitmap.optimize();
    let location = DocLocation {
        segment: 2,
        local: 17,
    };
    let seeds = vec![
        (
            "format",
            join_record(&RecordKey::Format.to_bytes(), CATALOG_FORMAT.as_bytes()),
        ),
        (
            "db",
            join_record(
                &RecordKey::Db.to_bytes(),
                &encode_json(&DbRecord {
                    next_collection_id: 3,
                    commit_protocol: PUBLISH_AFTER_COMMIT,
                })?,
            ),
        ),
        (
            "collection",
            join_record(&collection_key("docs"), &encode_json(&collection)?),
        ),
        (
            "manifest",
            join_record(&manifest_key(0), &encode_json(&manifest)?),
        ),
        (
            "location-int",
            join_record(&location_key(0, &int_id), &location.encode()),
        ),
        (
            "location-str",
            join_record(&location_key(5, &str_id), &location.encode()),
        ),
        (
            "tombstones",
            join_record(&tombstones_key(0, 2), &encode_tombstones(&bitmap)?),
        ),
        (
            "tombstones-small",
            join_record(
                &tombstones_key(1, 9),
                &encode_tombstones(&[0u32, 3].into_iter().collect())?,
            ),
        ),
        (
            "metadata",
            join_record(
                &metadata_key(0, &int_id),
                br#"{"lang": "en", "tags": ["a", "b"], "score": 0.5, "n": null}"#,
            ),
        ),
        (
            "text",
            join_record(&text_key(0, &str_id), &encode_text(&str_id, PASSAGE)?),
        ),
    ];
    Ok(seeds
        .into_iter()
        .map(|(name, bytes)| ("catalog_records", name, bytes))
        .collect())
}

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
