//! ColBERT parity with PyLate on the reference MiniLM ColBERT directory: query and document
//! token vectors within 1e-4 of `ColBERT.encode(..., is_query=True/False)`.

mod common;

use tessera_encoder::{Encoder, EncoderOptions, InputKind, ModelKind};

const TOLERANCE: f32 = 1e-4;
const CLS: u32 = 101;
const SEP: u32 = 102;
const MASK: u32 = 103;
const QUERY_MARKER: u32 = 1; // [unused0]
const DOC_MARKER: u32 = 2; // [unused1]

fn cases(kind: &str) -> Vec<(String, String)> {
    let json = common::read_json(&common::reference_dir().join("colbert_cases.json"));
    json["cases"]
        .as_array()
        .expect("cases array")
        .iter()
        .filter(|c| c["kind"] == kind)
        .map(|c| {
            (
                c["key"].as_str().expect("key").to_owned(),
                c["text"].as_str().expect("text").to_owned(),
            )
        })
        .collect()
}

fn load(threads: usize, batch_size: usize) -> Encoder {
    Encoder::load(
        &common::colbert_dir(),
        EncoderOptions {
            threads,
            batch_size,
            max_length: None,
        },
    )
    .expect("ColBERT directory loads")
}

fn check(kind: &str, threads: usize, batch_size: usize) -> f32 {
    let encoder = load(threads, batch_size);
    let cases = cases(kind);
    assert!(!cases.is_empty());
    let reference =
        common::read_f32_tensors(&common::reference_dir().join("colbert_reference.safetensors"));
    let texts: Vec<&str> = cases.iter().map(|(_, t)| t.as_str()).collect();
    let outputs = if kind == "query" {
        encoder.encode_queries(&texts)
    } else {
        encoder.encode_documents(&texts)
    }
    .expect("encodes");
    let mut worst = 0.0f32;
    for ((key, _), out) in cases.iter().zip(&outputs) {
        let (shape, want) = &reference[key];
        assert_eq!(&[out.rows, out.dim][..], &shape[..], "{key} shape");
        let diff = common::max_abs_diff(&out.data, want);
        eprintln!("{key}: {} vectors, max abs diff {diff:.3e}", out.rows);
        assert!(
            diff <= TOLERANCE,
            "{key}: max abs diff {diff} > {TOLERANCE}"
        );
        worst = worst.max(diff);
    }
    eprintln!("ColBERT {kind} cases ({threads} threads): worst max abs diff {worst:.3e}");
    worst
}

#[test]
fn colbert_directory_loads_with_pylate_settings() {
    let encoder = load(1, 32);
    assert_eq!(encoder.kind(), ModelKind::ColBert);
    assert_eq!(encoder.dim(), 128);
    let settings = encoder.colbert_settings().expect("ColBERT settings");
    assert_eq!(settings.query_length, 32);
    assert_eq!(settings.document_length, 180);
    assert!(settings.do_query_expansion);
    assert!(!settings.attend_to_expansion_tokens);
    assert_eq!(settings.skiplist_words.len(), 32);
}

#[test]
fn colbert_query_input_is_cls_marker_text_sep_then_mask_expansion() {
    let encoder = load(1, 32);
    let ids = encoder
        .token_ids(&["a", ""], InputKind::Query)
        .expect("tokenizes");
    let mut want = vec![CLS, QUERY_MARKER, 1037, SEP];
    want.resize(32, MASK);
    assert_eq!(ids[0], want);
    let mut empty = vec![CLS, QUERY_MARKER, SEP];
    empty.resize(32, MASK);
    assert_eq!(ids[1], empty);
}

#[test]
fn colbert_long_query_is_truncated_to_query_length_keeping_sep() {
    let encoder = load(1, 32);
    let long = "very long query ".repeat(40);
    let ids = encoder
        .token_ids(&[long.as_str()], InputKind::Query)
        .expect("tokenizes");
    assert_eq!(ids[0].len(), 32);
    assert_eq!(&ids[0][..2], &[CLS, QUERY_MARKER]);
    assert_eq!(ids[0][31], SEP);
    assert!(!ids[0].contains(&MASK));
}

#[test]
fn colbert_document_input_has_marker_and_counts_it_in_document_length() {
    let encoder = load(1, 32);
    let long = "token ".repeat(400);
    let ids = encoder
        .token_ids(&["x", long.as_str()], InputKind::Document)
        .expect("tokenizes");
    assert_eq!(ids[0], vec![CLS, DOC_MARKER, 1060, SEP]);
    assert_eq!(ids[1].len(), 180);
    assert_eq!(ids[1][179], SEP);
}

#[test]
fn colbert_query_vectors_match_pylate_within_1e_4() {
    check("query", 1, 32);
}

#[test]
fn colbert_document_vectors_match_pylate_within_1e_4() {
    check("document", 1, 32);
}

#[test]
fn colbert_vectors_match_pylate_with_two_threads_and_small_batches() {
    check("query", 2, 4);
    check("document", 2, 4);
}

#[test]
fn colbert_document_skiplist_drops_punctuation_vectors_only() {
    let encoder = load(1, 32);
    let out = encoder
        .encode_documents(&["Hello, world!", "Hello world"])
        .expect("encodes");
    // [CLS] [D] hello , world ! [SEP] minus "," and "!" = 5; the unpunctuated text has 5 too.
    assert_eq!(out[0].rows, 5);
    assert_eq!(out[1].rows, 5);
    for row in out[0].iter_rows() {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
}

#[test]
fn document_token_ids_name_each_encoded_document_vector_skiplist_dropped() {
    let encoder = load(1, 32);
    let texts = ["Hello, world!", "Paris is the capital of France.", ""];
    let ids = encoder.document_token_ids(&texts).expect("tokenizes");
    let out = encoder.encode_documents(&texts).expect("encodes");
    for (i, (ids, m)) in ids.iter().zip(&out).enumerate() {
        assert_eq!(ids.len(), m.rows, "text {i}: one id per vector");
    }
    let words = |ids: &[u32]| -> Vec<String> {
        ids.iter()
            .map(|&id| encoder.token_text(id).expect("in the vocabulary"))
            .collect()
    };
    assert_eq!(
        words(&ids[0]),
        ["[CLS]", "[unused1]", "hello", "world", "[SEP]"]
    );
    assert_eq!(ids[1][..2], [CLS, DOC_MARKER]);
    assert_eq!(ids[2], vec![CLS, DOC_MARKER, SEP]);
    // The plain tokenization keeps the punctuation the skiplist drops.
    let all = encoder
        .token_ids(&texts[..1], InputKind::Document)
        .expect("tokenizes");
    assert_eq!(all[0].len(), ids[0].len() + 2);
}

#[test]
fn colbert_and_bert_directories_have_distinct_model_ids() {
    let colbert = load(1, 32);
    let bert = Encoder::load(&common::minilm_dir(), EncoderOptions::default()).expect("loads");
    assert_ne!(colbert.model_id().hash, bert.model_id().hash);
    assert_eq!(colbert.model_id().name, "colbert-minilm-gt-0.1.0");
}
