//! Targets for the encoder's tokenizer input path: a model's `tokenizer.json`, and the text
//! of documents and queries run through a BERT WordPiece tokenizer.

use std::path::Path;
use std::sync::OnceLock;

use tessera_encoder::TextTokenizer;

/// A small BERT-style tokenizer (lower-casing BERT normaliser and pre-tokeniser, WordPiece,
/// `[CLS] … [SEP]`), the kind every supported model ships: the same code path as a real
/// model's, with a vocabulary small enough to keep in the repository.
pub const WORDPIECE_JSON: &str = include_str!("wordpiece-tokenizer.json");

/// The truncation lengths the encoder uses (query and document defaults) and a tiny one.
const TRUNCATIONS: [usize; 3] = [32, 180, 3];

/// Text the `tokenizer_json` target encodes with a tokenizer it parsed.
const SAMPLE_TEXT: &str = "Late interaction: MaxSim over tokens, ÉTÉ 夏 ##ing [MASK] \u{0}\u{feff}";

/// A `tokenizer.json`: parsed (with truncation and padding replaced, as the encoder does),
/// then used to encode a sample text untruncated and truncated.
pub fn tokenizer_json(data: &[u8]) {
    let Ok(tok) = TextTokenizer::parse(Path::new("tokenizer.json"), data) else {
        return;
    };
    // A file's template may add more special tokens than a truncation length leaves room
    // for, so lengths are not checked here: the encoder refuses an over-long input against
    // the model's positions (`EncoderError::SequenceTooLong`), not the tokenizer.
    encode_all(&tok, SAMPLE_TEXT, false);
}

/// Text (as UTF-8, invalid sequences replaced, since the readers hand over `str`s) encoded
/// with the kept WordPiece tokenizer, untruncated and at each truncation length.
pub fn tokenizer_text(data: &[u8]) {
    static TOKENIZER: OnceLock<TextTokenizer> = OnceLock::new();
    let tok = TOKENIZER.get_or_init(|| {
        TextTokenizer::parse(
            Path::new("wordpiece-tokenizer.json"),
            WORDPIECE_JSON.as_bytes(),
        )
        .expect("the kept WordPiece tokenizer parses")
    });
    encode_all(tok, &String::from_utf8_lossy(data), true);
}

/// Encodes `text` untruncated and at each truncation length; with `check_lengths`, each
/// truncated encoding must fit its length.
fn encode_all(tok: &TextTokenizer, text: &str, check_lengths: bool) {
    let untruncated = tok.encode(&[text]).map(|mut v| v.remove(0));
    for max in TRUNCATIONS {
        let Ok(short) = tok.truncating(max) else {
            continue;
        };
        if let (Ok(ids), true) = (short.encode(&[text]), check_lengths) {
            assert!(
                ids[0].len() <= max,
                "{} ids truncated to {max}",
                ids[0].len()
            );
        }
    }
    if let Ok(ids) = untruncated {
        for id in ids {
            let _ = tok.token_text(id);
        }
    }
}
