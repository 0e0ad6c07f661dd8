//! Plain BERT parity with Hugging Face `transformers` on all-MiniLM-L6-v2: identical token ids
//! and last hidden states within 1e-4 for every reference case.

mod common;

use tessera_encoder::{Encoder, EncoderOptions, InputKind, ModelKind};

const TOLERANCE: f32 = 1e-4;

struct Case {
    key: String,
    text: String,
    input_ids: Vec<u32>,
}

fn cases() -> Vec<Case> {
    let json = common::read_json(&common::reference_dir().join("bert_cases.json"));
    json["cases"]
        .as_array()
        .expect("cases array")
        .iter()
        .map(|c| Case {
            key: c["key"].as_str().expect("key").to_owned(),
            text: c["text"].as_str().expect("text").to_owned(),
            input_ids: c["input_ids"]
                .as_array()
                .expect("input_ids")
                .iter()
                .map(|v| v.as_u64().expect("id") as u32)
                .collect(),
        })
        .collect()
}

fn load(threads: usize, batch_size: usize) -> Encoder {
    Encoder::load(
        &common::minilm_dir(),
        EncoderOptions {
            threads,
            batch_size,
            max_length: None,
        },
    )
    .expect("MiniLM loads")
}

#[test]
fn minilm_directory_loads_as_plain_bert_with_384_dims() {
    let encoder = load(1, 32);
    assert_eq!(encoder.kind(), ModelKind::Bert);
    assert_eq!(encoder.dim(), 384);
    assert_eq!(encoder.model_id().hash.len(), 64);
    // Same bytes, same identity.
    assert_eq!(encoder.model_id(), load(1, 32).model_id());
}

#[test]
fn bert_token_ids_match_reference_for_all_cases() {
    let cases = cases();
    assert_eq!(cases.len(), 16);
    let encoder = load(1, 32);
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let ids = encoder
        .token_ids(&texts, InputKind::Plain)
        .expect("tokenizes");
    for (case, got) in cases.iter().zip(&ids) {
        assert_eq!(got, &case.input_ids, "{}: {:?}", case.key, case.text);
    }
}

/// Checks every case's last hidden state against the reference and returns the worst error.
fn check_hidden_states(encoder: &Encoder) -> f32 {
    let cases = cases();
    let reference =
        common::read_f32_tensors(&common::reference_dir().join("bert_reference.safetensors"));
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let outputs = encoder.last_hidden_states(&texts).expect("encodes");
    let mut worst = 0.0f32;
    for (case, out) in cases.iter().zip(&outputs) {
        let (shape, want) = &reference[&case.key];
        assert_eq!(&[out.rows, out.dim][..], &shape[..], "{} shape", case.key);
        let diff = common::max_abs_diff(&out.data, want);
        eprintln!("{}: {} tokens, max abs diff {diff:.3e}", case.key, out.rows);
        assert!(
            diff <= TOLERANCE,
            "{}: max abs diff {diff} > {TOLERANCE}",
            case.key
        );
        worst = worst.max(diff);
    }
    worst
}

#[test]
fn bert_last_hidden_states_match_reference_within_1e_4_single_thread() {
    let worst = check_hidden_states(&load(1, 32));
    eprintln!("BERT single thread, one batch: worst max abs diff {worst:.3e}");
}

#[test]
fn bert_last_hidden_states_match_reference_within_1e_4_two_threads_small_batches() {
    // Small batches and two threads exercise batch splitting and the parallel kernels.
    let worst = check_hidden_states(&load(2, 5));
    eprintln!("BERT two threads, batches of 5: worst max abs diff {worst:.3e}");
}

#[test]
fn bert_encode_outputs_are_unit_norm_hidden_states() {
    let encoder = load(1, 32);
    let raw = encoder.last_hidden_states(&["hello world"]).expect("raw");
    let normed = encoder
        .encode_documents(&["hello world"])
        .expect("normalised");
    assert_eq!(raw[0].rows, normed[0].rows);
    for (r, n) in raw[0].iter_rows().zip(normed[0].iter_rows()) {
        let norm = r.iter().map(|v| v * v).sum::<f32>().sqrt();
        for (a, b) in r.iter().zip(n) {
            assert!((a / norm - b).abs() < 1e-6);
        }
    }
    assert_eq!(
        encoder.encode_queries(&["hello world"]).expect("queries"),
        normed,
        "plain BERT encodes queries and documents alike"
    );
}
