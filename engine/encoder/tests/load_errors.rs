//! Loading behaviour on small synthetic model directories: accepted naming and dtype variants,
//! and clear errors for missing or inconsistent files and tensors.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde_json::json;
use tessera_encoder::{Encoder, EncoderError, EncoderOptions, InputKind, ModelKind, TextTokenizer};

const HIDDEN: usize = 8;
const INTER: usize = 16;
const VOCAB: usize = 16;
const POSITIONS: usize = 24;

/// Token strings of the synthetic vocabulary, by id.
const VOCAB_TOKENS: [&str; VOCAB] = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "[unused0]",
    "[unused1]",
    "hello",
    "world",
    ",",
    ".",
    "a",
    "b",
    "c",
    "##s",
    "!",
];

/// Deterministic weights that are multiples of 1/64 in [-1, 1], hence exact in f16 and bf16.
fn values(seed: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let k = ((i * 7919 + seed * 104_729) % 129) as f32 - 64.0;
            k / 64.0
        })
        .collect()
}

/// The tensors of a one-layer BERT, keyed by canonical name.
fn bert_tensors() -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let mut t = BTreeMap::new();
    let mut seed = 0;
    let mut add = |name: String, shape: Vec<usize>| {
        seed += 1;
        let n = shape.iter().product();
        t.insert(name, (shape, values(seed, n)));
    };
    add(
        "embeddings.word_embeddings.weight".into(),
        vec![VOCAB, HIDDEN],
    );
    add(
        "embeddings.position_embeddings.weight".into(),
        vec![POSITIONS, HIDDEN],
    );
    add(
        "embeddings.token_type_embeddings.weight".into(),
        vec![2, HIDDEN],
    );
    add("embeddings.LayerNorm.weight".into(), vec![HIDDEN]);
    add("embeddings.LayerNorm.bias".into(), vec![HIDDEN]);
    let b = "encoder.layer.0";
    for lin in [
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
    ] {
        add(format!("{b}.{lin}.weight"), vec![HIDDEN, HIDDEN]);
        add(format!("{b}.{lin}.bias"), vec![HIDDEN]);
    }
    add(
        format!("{b}.intermediate.dense.weight"),
        vec![INTER, HIDDEN],
    );
    add(format!("{b}.intermediate.dense.bias"), vec![INTER]);
    add(format!("{b}.output.dense.weight"), vec![HIDDEN, INTER]);
    add(format!("{b}.output.dense.bias"), vec![HIDDEN]);
    for ln in ["attention.output.LayerNorm", "output.LayerNorm"] {
        add(format!("{b}.{ln}.weight"), vec![HIDDEN]);
        add(format!("{b}.{ln}.bias"), vec![HIDDEN]);
    }
    t
}

fn encode_values(dtype: Dtype, v: &[f32]) -> Vec<u8> {
    match dtype {
        Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Dtype::F16 => v
            .iter()
            .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
            .collect(),
        Dtype::BF16 => v
            .iter()
            .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
            .collect(),
        Dtype::I32 => v.iter().flat_map(|x| (*x as i32).to_le_bytes()).collect(),
        other => panic!("test helper does not encode {other:?}"),
    }
}

fn write_safetensors(
    path: &Path,
    tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    dtype: Dtype,
) {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, (shape, v))| (name.clone(), shape.clone(), encode_values(dtype, v)))
        .collect();
    let views = bytes.iter().map(|(name, shape, data)| {
        (
            name.clone(),
            TensorView::new(dtype, shape.clone(), data).expect("consistent tensor"),
        )
    });
    let file = safetensors::serialize(views, None).expect("serialises");
    fs::write(path, file).expect("writes weights");
}

fn write_json(path: &Path, value: &serde_json::Value) {
    fs::write(path, serde_json::to_vec_pretty(value).expect("json")).expect("writes json");
}

fn tokenizer_json() -> serde_json::Value {
    let added = |id: usize, special: bool| {
        json!({"id": id, "content": VOCAB_TOKENS[id], "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": !special, "special": special})
    };
    let vocab: serde_json::Map<String, serde_json::Value> = VOCAB_TOKENS
        .iter()
        .enumerate()
        .map(|(i, t)| ((*t).to_owned(), json!(i)))
        .collect();
    json!({
        "version": "1.0",
        // Stale settings like those real tokenizer.json files carry; the encoder must override.
        "truncation": {"direction": "Right", "max_length": 4, "strategy": "LongestFirst", "stride": 0},
        "padding": {"strategy": {"Fixed": 12}, "direction": "Right", "pad_to_multiple_of": null,
                    "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
        "added_tokens": [added(0, true), added(1, true), added(2, true), added(3, true),
                         added(4, true), added(5, false), added(6, false)],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}
            }
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}
    })
}

/// Writes a complete tiny BERT directory; returns the directory.
fn write_bert(
    dir: &Path,
    tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    dtype: Dtype,
) -> PathBuf {
    fs::create_dir_all(dir).expect("mkdir");
    write_json(
        &dir.join("config.json"),
        &json!({"model_type": "bert", "architectures": ["BertModel"], "vocab_size": VOCAB,
                "hidden_size": HIDDEN, "num_hidden_layers": 1, "num_attention_heads": 2,
                "intermediate_size": INTER, "hidden_act": "gelu",
                "max_position_embeddings": POSITIONS, "type_vocab_size": 2,
                "layer_norm_eps": 1e-12}),
    );
    write_json(&dir.join("tokenizer.json"), &tokenizer_json());
    write_safetensors(&dir.join("model.safetensors"), tensors, dtype);
    dir.to_path_buf()
}

/// Writes a tiny PyLate ColBERT directory with a 8 → 4 projection.
fn write_colbert(
    dir: &Path,
    dense: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    in_features: usize,
) -> PathBuf {
    write_bert(dir, &bert_tensors(), Dtype::F32);
    write_json(
        &dir.join("modules.json"),
        &json!([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"}]),
    );
    write_json(
        &dir.join("config_sentence_transformers.json"),
        &json!({"query_prefix": "[unused0]", "document_prefix": "[unused1]", "query_length": 8,
                "document_length": 10, "attend_to_expansion_tokens": false,
                "do_query_expansion": true, "skiplist_words": [",", "!"]}),
    );
    fs::create_dir_all(dir.join("1_Dense")).expect("mkdir");
    write_json(
        &dir.join("1_Dense/config.json"),
        &json!({"in_features": in_features, "out_features": 4, "bias": false,
                "activation_function": "torch.nn.modules.linear.Identity"}),
    );
    write_safetensors(&dir.join("1_Dense/model.safetensors"), &dense, Dtype::F32);
    dir.to_path_buf()
}

fn dense_tensors() -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    BTreeMap::from([(
        "linear.weight".to_owned(),
        (vec![4, HIDDEN], values(99, 4 * HIDDEN)),
    )])
}

fn load(dir: &Path) -> Result<Encoder, EncoderError> {
    Encoder::load(
        dir,
        EncoderOptions {
            threads: 1,
            ..EncoderOptions::default()
        },
    )
}

fn encode(dir: &Path) -> Vec<f32> {
    let encoder = load(dir).expect("tiny model loads");
    encoder
        .last_hidden_states(&["hello world, a b c!", "abs"])
        .expect("encodes")
        .into_iter()
        .flat_map(|m| m.data)
        .collect()
}

#[test]
fn tiny_bert_loads_and_overrides_stale_tokenizer_truncation_and_padding() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = write_bert(tmp.path(), &bert_tensors(), Dtype::F32);
    let encoder = load(&dir).expect("loads");
    assert_eq!(encoder.kind(), ModelKind::Bert);
    assert_eq!(encoder.dim(), HIDDEN);
    let ids = encoder
        .token_ids(&["hello world, a b c!"], InputKind::Plain)
        .expect("tokenizes");
    // Neither the stored 4-token truncation nor the 12-token padding applies.
    assert_eq!(ids[0], vec![2, 7, 8, 9, 11, 12, 13, 15, 3]);
    let out = encoder.last_hidden_states(&["hello"]).expect("encodes");
    assert_eq!((out[0].rows, out[0].dim), (3, HIDDEN));
    assert!(out[0].data.iter().all(|v| v.is_finite()));
}

#[test]
fn plain_truncation_follows_max_length_option() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = write_bert(tmp.path(), &bert_tensors(), Dtype::F32);
    let opts = EncoderOptions {
        threads: 1,
        max_length: Some(5),
        ..EncoderOptions::default()
    };
    let encoder = Encoder::load(&dir, opts).expect("loads");
    let ids = encoder
        .token_ids(&["hello world, a b c!"], InputKind::Plain)
        .expect("tokenizes");
    assert_eq!(ids[0], vec![2, 7, 8, 9, 3]);
}

#[test]
fn bert_prefix_and_gamma_beta_names_give_identical_vectors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let plain = write_bert(&tmp.path().join("plain"), &bert_tensors(), Dtype::F32);
    let renamed: BTreeMap<_, _> = bert_tensors()
        .into_iter()
        .map(|(name, v)| {
            let name = if name.contains("LayerNorm") {
                name.replace(".weight", ".gamma").replace(".bias", ".beta")
            } else {
                name
            };
            (format!("bert.{name}"), v)
        })
        .collect();
    let variant = write_bert(&tmp.path().join("variant"), &renamed, Dtype::F32);
    assert_eq!(encode(&plain), encode(&variant));
}

#[test]
fn f16_and_bf16_weights_give_the_same_vectors_as_f32() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let f32_dir = write_bert(&tmp.path().join("f32"), &bert_tensors(), Dtype::F32);
    let f16_dir = write_bert(&tmp.path().join("f16"), &bert_tensors(), Dtype::F16);
    let bf16_dir = write_bert(&tmp.path().join("bf16"), &bert_tensors(), Dtype::BF16);
    let reference = encode(&f32_dir);
    assert_eq!(encode(&f16_dir), reference);
    assert_eq!(encode(&bf16_dir), reference);
}

#[test]
fn missing_config_json_is_reported_with_its_path() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = write_bert(tmp.path(), &bert_tensors(), Dtype::F32);
    fs::remove_file(dir.join("config.json")).expect("rm");
    let err = load(&dir).expect_err("no config");
    assert!(
        matches!(&err, EncoderError::MissingFile { path } if path.ends_with("config.json")),
        "{err}"
    );
    assert!(err.to_string().contains("config.json"));
}

#[test]
fn missing_weights_file_is_reported_with_its_path() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = write_bert(tmp.path(), &bert_tensors(), Dtype::F32);
    fs::remove_file(dir.join("model.safetensors")).expect("rm");
    let err = load(&dir).expect_err("no weights");
    assert!(
        matches!(&err, EncoderError::MissingFile { path } if path.ends_with("model.safetensors")),
        "{err}"
    );
}

#[test]
fn missing_tokenizer_json_is_reported_with_its_path() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = write_bert(tmp.path(), &bert_tensors(), Dtype::F32);
    fs::remove_file(dir.join("tokenizer.json")).expect("rm");
    let err = load(&dir).expect_err("no tokenizer");
    assert!(
        matches!(&err, EncoderError::MissingFile { path } if path.ends_with("tokenizer.json")),
        "{err}"
    );
}

/// Found by fuzzing (tests/fuzz, target `tokenizer_json`): a syntax error inside the
/// `decoder` object made the tokenizers crate panic (`.expect("Helper")`) instead of
/// returning an error. The file is now parsed as JSON before the crate reads it, so this is
/// a syntax error with its position (a panic the crate still raises is caught as before).
#[test]
fn a_tokenizer_json_with_a_syntax_error_in_its_decoder_is_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = write_bert(tmp.path(), &bert_tensors(), Dtype::F32);
    let text = serde_json::to_string(&tokenizer_json()).expect("json");
    let bad = text.replace("\"cleanup\":true", "\"cl##\",\"cleanup\":true");
    assert_ne!(
        bad, text,
        "the decoder's cleanup field is where the fuzzer cut in"
    );
    fs::write(dir.join("tokenizer.json"), bad).expect("writes tokenizer.json");
    let err = load(&dir).expect_err("an unknown decoder");
    match &err {
        EncoderError::Tokenizer { path, reason } => {
            assert!(path.ends_with("tokenizer.json"), "{err}");
            assert!(reason.contains("at line 1 column"), "{err}");
        }
        other => panic!("wrong error: {other}"),
    }
}

/// Found by fuzzing: a template naming a special token that `special_tokens` lacks under
/// that key panicked the tokenizers crate while encoding (a map index), not at load.
#[test]
fn a_tokenizer_json_whose_template_panics_encoding_fails_the_input_not_the_process() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = write_bert(tmp.path(), &bert_tensors(), Dtype::F32);
    let mut tok = tokenizer_json();
    let specials = tok["post_processor"]["special_tokens"]
        .as_object_mut()
        .expect("special tokens");
    let cls = specials.remove("[CLS]").expect("[CLS]");
    specials.insert("[CLQ]".to_owned(), cls);
    write_json(&dir.join("tokenizer.json"), &tok);
    let err = match load(&dir) {
        Ok(encoder) => encoder
            .encode_documents(&["hello world"])
            .expect_err("the template cannot be applied"),
        Err(err) => err,
    };
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}

/// `tokenizer_json()` with one more added token, `content`, and what parsing it gives.
fn parse_with_added_token(content: &str, normalized: bool) -> Result<TextTokenizer, EncoderError> {
    let mut tok = tokenizer_json();
    tok["added_tokens"]
        .as_array_mut()
        .expect("added_tokens")
        .push(
            json!({"id": 900, "content": content, "single_word": false, "lstrip": false,
                     "rstrip": false, "normalized": normalized, "special": !normalized}),
        );
    let bytes = serde_json::to_vec(&tok).expect("json");
    TextTokenizer::parse(Path::new("model/tokenizer.json"), &bytes)
}

/// Found by fuzzing (target `tokenizer_json`, kept as `regression-added-token-*`): an added
/// token of 28,244 bytes made the tokenizers crate spend about a minute building its
/// matcher. Past 128 bytes an added token is refused, naming the file and the token.
#[test]
fn an_added_token_over_128_bytes_is_refused_naming_the_file_and_the_token() {
    for len in [129, 1_000, 28_244] {
        let err = parse_with_added_token(&"g".repeat(len), false).expect_err("too long");
        match &err {
            EncoderError::Tokenizer { path, reason } => {
                assert_eq!(path, Path::new("model/tokenizer.json"), "{err}");
                assert!(reason.contains("added token 900"), "{err}");
                assert!(reason.contains(&format!("is {len} bytes")), "{err}");
            }
            other => panic!("wrong error: {other}"),
        }
    }
    let tok = parse_with_added_token(&"g".repeat(128), false).expect("128 bytes is allowed");
    let ids = tok.encode(&[&"g".repeat(128)]).expect("encodes");
    let added = tok.token_text(ids[0][1]).expect("a token");
    assert_eq!(added, "g".repeat(128), "the added token is matched whole");
}

/// The limit is on what the matcher looks for: a normalized token's text after the
/// normalizer, which can be longer (BERT's puts spaces around each CJK character).
#[test]
fn an_added_token_the_normalizer_lengthens_past_128_bytes_is_refused() {
    let content = "夏".repeat(40);
    assert_eq!(content.len(), 120);
    parse_with_added_token(&content, false).expect("120 bytes as written");
    let err = parse_with_added_token(&content, true).expect_err("200 bytes normalized");
    assert!(err.to_string().contains("normalizes to 200 bytes"), "{err}");
    assert!(err.to_string().contains("model/tokenizer.json"), "{err}");
}

/// Built by hand after the added-token fix: a chain of normalizers that each double the text
/// grows every text encoded exponentially (with twenty, encoding a 60-character text took
/// 2.2 s and 228 MB). One whose bound passes 1,024 is refused, naming the file.
#[test]
fn a_normalizer_chain_that_grows_text_exponentially_is_refused_naming_the_file() {
    let doubling = json!({"type": "Replace", "pattern": {"String": "a"}, "content": "aa"});
    let mut tok = tokenizer_json();
    tok["normalizer"] = json!({"type": "Sequence", "normalizers": vec![doubling; 20]});
    let bytes = serde_json::to_vec(&tok).expect("json");
    let err = TextTokenizer::parse(Path::new("model/tokenizer.json"), &bytes)
        .expect_err("a million times longer");
    assert!(err.to_string().contains("model/tokenizer.json"), "{err}");
    assert!(
        err.to_string().contains("up to 1048576 times longer"),
        "{err}"
    );
}

#[test]
fn missing_tensor_is_reported_with_file_and_tensor_name() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut tensors = bert_tensors();
    tensors.remove("encoder.layer.0.attention.self.key.weight");
    let dir = write_bert(tmp.path(), &tensors, Dtype::F32);
    let err = load(&dir).expect_err("key weight missing");
    match &err {
        EncoderError::MissingTensor { path, tensor } => {
            assert!(path.ends_with("model.safetensors"));
            assert_eq!(tensor, "encoder.layer.0.attention.self.key.weight");
        }
        other => panic!("wrong error: {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("model.safetensors") && msg.contains("attention.self.key.weight"),
        "{msg}"
    );
}

#[test]
fn missing_layer_norm_parameter_is_reported_under_its_weight_name() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut tensors = bert_tensors();
    tensors.remove("encoder.layer.0.output.LayerNorm.bias");
    let dir = write_bert(tmp.path(), &tensors, Dtype::F32);
    let err = load(&dir).expect_err("LayerNorm bias missing");
    assert!(
        matches!(&err, EncoderError::MissingTensor { tensor, .. }
            if tensor == "encoder.layer.0.output.LayerNorm.bias"),
        "{err}"
    );
}

#[test]
fn wrong_tensor_shape_reports_expected_and_actual_shapes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut tensors = bert_tensors();
    tensors.insert(
        "encoder.layer.0.intermediate.dense.weight".into(),
        (vec![INTER - 1, HIDDEN], values(7, (INTER - 1) * HIDDEN)),
    );
    let dir = write_bert(tmp.path(), &tensors, Dtype::F32);
    let err = load(&dir).expect_err("shape mismatch");
    match &err {
        EncoderError::ShapeMismatch {
            tensor,
            expected,
            actual,
            ..
        } => {
            assert_eq!(tensor, "encoder.layer.0.intermediate.dense.weight");
            assert_eq!(expected, &vec![INTER, HIDDEN]);
            assert_eq!(actual, &vec![INTER - 1, HIDDEN]);
        }
        other => panic!("wrong error: {other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("[15, 8]") && msg.contains("[16, 8]"), "{msg}");
}

#[test]
fn integer_weights_are_rejected_naming_the_tensor_and_dtype() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = write_bert(tmp.path(), &bert_tensors(), Dtype::I32);
    let err = load(&dir).expect_err("i32 weights");
    assert!(
        matches!(&err, EncoderError::UnsupportedDtype { tensor, dtype, .. }
            if tensor.starts_with("embeddings.") && dtype == "I32"),
        "{err}"
    );
}

#[test]
fn corrupt_weights_file_is_reported_with_its_path() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = write_bert(tmp.path(), &bert_tensors(), Dtype::F32);
    fs::write(dir.join("model.safetensors"), b"not a safetensors file").expect("write");
    let err = load(&dir).expect_err("corrupt weights");
    assert!(
        matches!(&err, EncoderError::Safetensors { path, .. } if path.ends_with("model.safetensors")),
        "{err}"
    );
}

#[test]
fn vocab_size_larger_than_embedding_table_is_a_shape_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = write_bert(tmp.path(), &bert_tensors(), Dtype::F32);
    let config = fs::read_to_string(dir.join("config.json")).expect("read");
    fs::write(
        dir.join("config.json"),
        config.replace("\"vocab_size\": 16", "\"vocab_size\": 17"),
    )
    .expect("write");
    let err = load(&dir).expect_err("vocab mismatch");
    assert!(
        matches!(&err, EncoderError::ShapeMismatch { tensor, .. }
            if tensor == "embeddings.word_embeddings.weight"),
        "{err}"
    );
}

#[test]
fn tiny_colbert_builds_pylate_inputs_and_unit_vectors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = write_colbert(tmp.path(), dense_tensors(), HIDDEN);
    let encoder = load(&dir).expect("loads");
    assert_eq!(encoder.kind(), ModelKind::ColBert);
    assert_eq!(encoder.dim(), 4);
    let q = encoder
        .token_ids(&["hello"], InputKind::Query)
        .expect("ids");
    assert_eq!(q[0], vec![2, 5, 7, 3, 4, 4, 4, 4]);
    let d = encoder
        .token_ids(&["  hello, world!  "], InputKind::Document)
        .expect("ids");
    assert_eq!(d[0], vec![2, 6, 7, 9, 8, 15, 3]);
    let docs = encoder
        .encode_documents(&["hello, world!"])
        .expect("encodes");
    // "," and "!" are skiplisted: [CLS] [D] hello world [SEP] remain.
    assert_eq!((docs[0].rows, docs[0].dim), (5, 4));
    for row in docs[0].iter_rows() {
        let norm: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
    let queries = encoder.encode_queries(&["hello"]).expect("encodes");
    assert_eq!(queries[0].rows, 8);
}

#[test]
fn colbert_missing_projection_tensor_names_the_dense_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = write_colbert(
        tmp.path(),
        BTreeMap::from([(
            "other.weight".to_owned(),
            (vec![4, HIDDEN], values(1, 4 * HIDDEN)),
        )]),
        HIDDEN,
    );
    let err = load(&dir).expect_err("no linear.weight");
    match &err {
        EncoderError::MissingTensor { path, tensor } => {
            assert!(
                path.ends_with("1_Dense/model.safetensors"),
                "{}",
                path.display()
            );
            assert_eq!(tensor, "linear.weight");
        }
        other => panic!("wrong error: {other}"),
    }
}

#[test]
fn colbert_projection_with_wrong_input_width_is_rejected() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = write_colbert(tmp.path(), dense_tensors(), HIDDEN + 1);
    let err = load(&dir).expect_err("in_features mismatch");
    assert!(
        matches!(&err, EncoderError::InvalidConfig { path, .. } if path.ends_with("1_Dense/config.json")),
        "{err}"
    );
}

#[test]
fn colbert_projection_weight_shape_mismatch_reports_both_shapes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dense = BTreeMap::from([(
        "linear.weight".to_owned(),
        (vec![HIDDEN, 4], values(3, 4 * HIDDEN)),
    )]);
    let dir = write_colbert(tmp.path(), dense, HIDDEN);
    let err = load(&dir).expect_err("transposed projection");
    assert!(
        matches!(&err, EncoderError::ShapeMismatch { expected, actual, .. }
            if expected == &vec![4, HIDDEN] && actual == &vec![HIDDEN, 4]),
        "{err}"
    );
}

#[test]
fn colbert_prefix_missing_from_vocabulary_is_reported() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = write_colbert(tmp.path(), dense_tensors(), HIDDEN);
    // PyLate's default "[Q] " marker is not in this vocabulary.
    write_json(
        &dir.join("config_sentence_transformers.json"),
        &json!({"document_prefix": "[unused1]", "query_length": 8, "document_length": 10}),
    );
    let err = load(&dir).expect_err("unknown prefix");
    assert!(
        matches!(&err, EncoderError::Tokenizer { .. }) && err.to_string().contains("[Q] "),
        "{err}"
    );
}

#[test]
fn model_id_hash_changes_when_any_weight_changes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let a = write_bert(&tmp.path().join("m"), &bert_tensors(), Dtype::F32);
    let first = load(&a).expect("loads").model_id().clone();
    assert_eq!(first.name, "m");
    assert_eq!(load(&a).expect("loads").model_id(), &first);
    let mut tensors = bert_tensors();
    if let Some((_, v)) = tensors.get_mut("encoder.layer.0.output.dense.bias") {
        v[0] += 1.0 / 64.0;
    }
    write_bert(&a, &tensors, Dtype::F32);
    assert_ne!(load(&a).expect("loads").model_id().hash, first.hash);
}
