//! Limits on the work a `tokenizer.json` can make the tokenizers crate do, checked on the
//! file's JSON before the crate parses it ([`check`], called by `TextTokenizer::parse`).
//!
//! The crate trusts the file, and two of its parts cost more than their size:
//!
//! * **Added tokens.** For up to 100 of them the crate (0.22) matches them with an Aho-Corasick
//!   DFA, built while it parses, whose construction walks failure links: one per byte already
//!   matched for a token that repeats itself (`gggg…`), so its time grows with the square of
//!   the token's length (RELIABILITY.md, bug 20: the fuzzer's 28,244-byte token took 56 s).
//!   An added token is a marker (`[CLS]`, `[unused0]`); one over [`MAX_ADDED_TOKEN_BYTES`],
//!   as written or as the matcher looks for it (after the normalizer, for a `normalized` one),
//!   is refused. At that length the worst file measured, 89 periodic tokens over distinct
//!   bytes, parses in 0.22 s (12.3 s at 1,024 bytes). Past 100 tokens the crate builds no DFA,
//!   so their number needs no limit.
//! * **Text growth.** The normalizer and the pre-tokenizer rewrite every text encoded, and a
//!   sequence of steps that each grow it grows it exponentially (bug 21: 20 `Replace`
//!   normalizers turning `a` into `aa` took 2.2 s and 228 MB to encode 60 characters). Each
//!   step has a growth factor `g` (an input of `n ≥ 1` bytes gives at most `g·n`), a sequence
//!   multiplies them, and a file whose total is over [`MAX_TEXT_GROWTH`] is refused.
//!
//! The growth factors, per step kind (lengths in UTF-8 bytes):
//!
//! * character by character (`BertNormalizer`, `NFD`, `NFKD`, `Lowercase`, `Nmt`,
//!   `StripAccents`, `Strip`, the `ByteLevel` normalizer): the largest growth of any one
//!   character, since each maps a string to the concatenation of its characters' images
//!   (`NFD` reorders combining marks, which keeps the length). Constants below, each checked
//!   against every Unicode scalar value by this module's tests. `NFC` and `NFKC` compose what
//!   `NFD` and `NFKD` decompose, which never lengthens it, so they take those bounds.
//! * `Replace` of a non-empty string `p` by `c`: `max(1, |c| / |p|)`. Of a regex or the empty
//!   string (which may match between every two characters): `n + (n + 1)·|c| ≤ (1 + 2|c|)·n`.
//! * `Prepend` of `p`, and a pre-tokenizer's prefix: added to each piece the text is split
//!   into (at added tokens, at the pre-tokenizer's splits), and a piece is at least one byte:
//!   `1 + |p|`.
//! * `Precompiled` (a SentencePiece character map): each character or short grapheme becomes
//!   a string of the map, so the longest of them, `r`, bounds it: `max(1, r)`.
//! * the `ByteLevel` pre-tokenizer maps each byte to a character of at most 2 bytes, and may
//!   prefix a space (itself mapped): `2`, or `4` with `add_prefix_space`. `Metaspace` replaces
//!   each space by its replacement character `m` and may prefix it: `max(1, |m|)`, plus `|m|`
//!   when it prefixes.
//! * every other pre-tokenizer only splits: `1`. A kind not listed here is refused, so a newer
//!   crate cannot add an unbounded one unseen.
//!
//! Real tokenizers are far inside the limit: MiniLM's (BERT normalizer and pre-tokenizer) has
//! a bound of [`BERT_NORMALIZER_GROWTH`]; `Prepend("▁")` then `Replace(" ", "▁")` (SentencePiece
//! BPE files) 12; the `ByteLevel` pre-tokenizer 4.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;
use tokenizers::{
    AddedToken, NormalizedString, Normalizer, NormalizerWrapper, PreTokenizerWrapper,
};

/// The longest added token, in bytes, as written and as matched.
const MAX_ADDED_TOKEN_BYTES: usize = 128;

/// The largest growth factor of normalizer and pre-tokenizer together.
///
/// An encoded text can become this many times longer in memory while it is tokenized: 1 MiB
/// of text, 1 GiB at the limit. The tokenizers named in the module doc are at 12 or less;
/// the margin leaves room for a SentencePiece character map (`Precompiled`), whose bound is
/// its longest replacement string, followed by `Metaspace` (6 with `▁`).
const MAX_TEXT_GROWTH: f64 = 1024.0;

/// Growth bound of the BERT normalizer, whatever its options: with accents stripped it
/// decomposes first (NFD), and a Hangul syllable, 3 bytes, becomes three jamo, 9 (a CJK
/// character, spaced, only goes from 3 to 5).
const BERT_NORMALIZER_GROWTH: f64 = 3.0;
/// Growth bound of canonical decomposition (NFD, and so of NFC).
const NFD_GROWTH: f64 = 3.0;
/// Growth bound of compatibility decomposition (NFKD, and so of NFKC): U+FDFA, 3 bytes, is
/// 33 bytes decomposed.
const NFKD_GROWTH: f64 = 11.0;
/// Growth bound of lower-casing (U+0130, 2 bytes, lower-cases to 3).
const LOWERCASE_GROWTH: f64 = 1.5;
/// Growth bound of the byte-level normalizer and pre-tokenizer (each byte to a character of
/// at most 2 bytes).
const BYTE_LEVEL_GROWTH: f64 = 2.0;

/// The parts of a `tokenizer.json` that these limits read; every other field (the
/// vocabulary above all) is skipped unread.
#[derive(Deserialize)]
struct Head {
    #[serde(default)]
    normalizer: Option<NormalizerWrapper>,
    #[serde(default)]
    pre_tokenizer: Option<PreTokenizerWrapper>,
    #[serde(default)]
    added_tokens: Vec<AddedTokenEntry>,
}

/// One entry of `added_tokens`, shaped as the tokenizers crate reads it.
#[derive(Deserialize)]
struct AddedTokenEntry {
    id: u32,
    #[serde(flatten)]
    token: AddedToken,
}

/// Checks a `tokenizer.json` against both limits; the error is the reason to report.
pub(crate) fn check(bytes: &[u8]) -> Result<(), String> {
    let head: Head = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    // Growth first: checking an added token runs the normalizer on it.
    let (normalizer, pre_tokenizer) = text_growth(&head)?;
    let growth = normalizer * pre_tokenizer;
    if growth > MAX_TEXT_GROWTH {
        return Err(format!(
            "its normalizer and pre-tokenizer may make a text up to {growth:.0} times longer \
             (normalizer {normalizer:.0}, pre-tokenizer {pre_tokenizer:.0}); the limit is \
             {MAX_TEXT_GROWTH:.0}, as a chain of steps that each grow the text grows it \
             exponentially"
        ));
    }
    for entry in &head.added_tokens {
        check_added_token(head.normalizer.as_ref(), entry)?;
    }
    Ok(())
}

/// Growth bounds of the file's normalizer and of its pre-tokenizer (1 where it has none).
fn text_growth(head: &Head) -> Result<(f64, f64), String> {
    let normalizer = match &head.normalizer {
        Some(n) => normalizer_growth(&to_json(n)?)?,
        None => 1.0,
    };
    let pre_tokenizer = match &head.pre_tokenizer {
        Some(p) => pre_tokenizer_growth(&to_json(p)?)?,
        None => 1.0,
    };
    Ok((normalizer, pre_tokenizer))
}

/// The crate's own serialization of a step: one canonical form (`type` tagged) whichever
/// form the file used.
fn to_json(step: &impl serde::Serialize) -> Result<Value, String> {
    serde_json::to_value(step).map_err(|e| format!("cannot re-serialize a step: {e}"))
}

/// The `type` of a serialized step.
fn kind(step: &Value) -> &str {
    step.get("type").and_then(Value::as_str).unwrap_or("")
}

/// Byte length of the string field `field` of `step` (0 when absent).
fn str_len(step: &Value, field: &str) -> f64 {
    step.get(field).and_then(Value::as_str).map_or(0, str::len) as f64
}

/// The product of the growth of each step in the array `field` of a `Sequence`.
fn sequence(
    step: &Value,
    field: &str,
    growth: fn(&Value) -> Result<f64, String>,
) -> Result<f64, String> {
    let steps = step.get(field).and_then(Value::as_array);
    steps
        .into_iter()
        .flatten()
        .try_fold(1.0, |product, s| Ok(product * growth(s)?))
}

/// Growth bound of a serialized normalizer (module doc).
fn normalizer_growth(step: &Value) -> Result<f64, String> {
    Ok(match kind(step) {
        "Sequence" => sequence(step, "normalizers", normalizer_growth)?,
        "BertNormalizer" => BERT_NORMALIZER_GROWTH,
        "NFD" | "NFC" => NFD_GROWTH,
        "NFKD" | "NFKC" => NFKD_GROWTH,
        "Lowercase" => LOWERCASE_GROWTH,
        "ByteLevel" => BYTE_LEVEL_GROWTH,
        "Nmt" | "Strip" | "StripAccents" => 1.0,
        "Prepend" => 1.0 + str_len(step, "prepend"),
        "Replace" => {
            let content = str_len(step, "content");
            match step.pointer("/pattern/String").and_then(Value::as_str) {
                Some(p) if !p.is_empty() => (content / p.len() as f64).max(1.0),
                _ => 1.0 + 2.0 * content,
            }
        }
        "Precompiled" => longest_replacement(step)?.max(1.0),
        other => return Err(format!("normalizer `{other}` has no known growth bound")),
    })
}

/// Growth bound of a serialized pre-tokenizer (module doc).
fn pre_tokenizer_growth(step: &Value) -> Result<f64, String> {
    Ok(match kind(step) {
        "Sequence" => sequence(step, "pretokenizers", pre_tokenizer_growth)?,
        "ByteLevel" => {
            let prefix = step.get("add_prefix_space") == Some(&Value::Bool(true));
            BYTE_LEVEL_GROWTH * if prefix { 2.0 } else { 1.0 }
        }
        "Metaspace" => {
            let replacement = str_len(step, "replacement");
            let prefix = step.get("prepend_scheme").and_then(Value::as_str) != Some("never");
            replacement.max(1.0) + if prefix { replacement } else { 0.0 }
        }
        "BertPreTokenizer" | "Whitespace" | "WhitespaceSplit" | "CharDelimiterSplit"
        | "Punctuation" | "Digits" | "Split" | "UnicodeScripts" | "FixedLength" => 1.0,
        other => return Err(format!("pre-tokenizer `{other}` has no known growth bound")),
    })
}

/// The longest replacement string of a `Precompiled` normalizer's character map, in bytes.
///
/// The map (SentencePiece's `precompiled_charsmap`, base64) is a little-endian `u32` trie
/// size, the trie, then the replacement strings, each ending in a NUL. A map too short for
/// its trie size is bounded by its whole length (the crate refuses it anyway).
fn longest_replacement(step: &Value) -> Result<f64, String> {
    let encoded = step
        .get("precompiled_charsmap")
        .and_then(Value::as_str)
        .ok_or("Precompiled normalizer: no character map")?;
    let map = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("Precompiled normalizer: its character map is not base64: {e}"))?;
    let strings = map
        .get(..4)
        .map(|size| u32::from_le_bytes([size[0], size[1], size[2], size[3]]) as usize)
        .and_then(|trie| map.get(4usize.saturating_add(trie)..))
        .unwrap_or(&map);
    let longest = strings.split(|&b| b == 0).map(<[u8]>::len).max();
    Ok(longest.unwrap_or(0) as f64)
}

/// Refuses an added token longer than [`MAX_ADDED_TOKEN_BYTES`] as written, or, for a
/// `normalized` one, as the matcher looks for it.
fn check_added_token(
    normalizer: Option<&NormalizerWrapper>,
    entry: &AddedTokenEntry,
) -> Result<(), String> {
    let token = &entry.token;
    let refuse = |what: &str, bytes: usize| {
        let preview: String = token.content.chars().take(24).collect();
        format!(
            "added token {} ({preview:?}…) {what} {bytes} bytes; added tokens are limited \
             to {MAX_ADDED_TOKEN_BYTES} (they are markers like [CLS]; the tokenizers crate \
             takes time quadratic in their length to build its matcher)",
            entry.id
        )
    };
    if token.content.len() > MAX_ADDED_TOKEN_BYTES {
        return Err(refuse("is", token.content.len()));
    }
    if token.normalized
        && let Some(normalizer) = normalizer
    {
        let mut text = NormalizedString::from(token.content.as_str());
        normalizer
            .normalize(&mut text)
            .map_err(|e| format!("added token {}: the normalizer fails on it: {e}", entry.id))?;
        if text.get().len() > MAX_ADDED_TOKEN_BYTES {
            return Err(refuse("normalizes to", text.get().len()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rayon::prelude::*;
    use serde_json::json;
    use tokenizers::normalizers::{
        BertNormalizer, ByteLevel, Lowercase, NFC, NFD, NFKC, NFKD, Nmt, Strip, StripAccents,
    };

    use super::*;

    /// The largest `output bytes / input bytes` of `normalizer` over every Unicode scalar
    /// value, with the character that reaches it.
    fn largest_growth(normalizer: &NormalizerWrapper) -> (f64, char) {
        (0..=u32::from(char::MAX))
            .into_par_iter()
            .filter_map(char::from_u32)
            .map(|c| {
                let mut text = NormalizedString::from(c.to_string().as_str());
                normalizer.normalize(&mut text).expect("normalizes");
                (text.get().len() as f64 / c.len_utf8() as f64, c)
            })
            .reduce(|| (0.0, '\0'), |a, b| if b.0 > a.0 { b } else { a })
    }

    /// The constants of the character-by-character kinds are the true maxima: each reached
    /// by some character, none exceeded by any.
    #[test]
    fn each_character_wise_bound_is_the_largest_growth_of_any_unicode_scalar_value() {
        let mut cases: Vec<(NormalizerWrapper, bool)> = Vec::new();
        for clean in [false, true] {
            for chinese in [false, true] {
                for strip in [None, Some(false), Some(true)] {
                    for lower in [false, true] {
                        let bert = BertNormalizer::new(clean, chinese, strip, lower);
                        // Accents are stripped, after NFD, where the bound is reached.
                        let stripped = strip.unwrap_or(lower);
                        cases.push((NormalizerWrapper::BertNormalizer(bert), stripped));
                    }
                }
            }
        }
        cases.extend([
            (NormalizerWrapper::NFD(NFD), true),
            (NormalizerWrapper::NFC(NFC), false),
            (NormalizerWrapper::NFKD(NFKD), true),
            (NormalizerWrapper::NFKC(NFKC), true),
            (NormalizerWrapper::Lowercase(Lowercase), true),
            (NormalizerWrapper::ByteLevel(ByteLevel), true),
            (NormalizerWrapper::Nmt(Nmt), true),
            (NormalizerWrapper::StripAccents(StripAccents), true),
            (
                NormalizerWrapper::StripNormalizer(Strip::new(true, true)),
                true,
            ),
        ]);
        for (normalizer, reached) in cases {
            let json = to_json(&normalizer).expect("serializes");
            let bound = normalizer_growth(&json).expect("a known kind");
            let (largest, at) = largest_growth(&normalizer);
            assert!(
                largest <= bound,
                "{json}: U+{:04X} grows {largest}x, over {bound}",
                at as u32
            );
            if reached {
                assert_eq!(
                    largest, bound,
                    "{json}: the bound is reached (U+{:04X})",
                    at as u32
                );
            }
        }
    }

    /// The growth bound [`check`] computes for a file with these two steps, or its refusal.
    fn growth_of(normalizer: Value, pre_tokenizer: Value) -> Result<f64, String> {
        let file = json!({"normalizer": normalizer, "pre_tokenizer": pre_tokenizer});
        check(&serde_json::to_vec(&file).expect("json"))?;
        let (n, p) = text_growth(&serde_json::from_value(file).expect("parses"))?;
        Ok(n * p)
    }

    fn replace(pattern: Value, content: &str) -> Value {
        json!({"type": "Replace", "pattern": pattern, "content": content})
    }

    #[test]
    fn the_usual_tokenizer_configurations_are_well_within_the_limit() {
        let bert = json!({"type": "BertNormalizer", "clean_text": true,
                          "handle_chinese_chars": true, "strip_accents": null,
                          "lowercase": true});
        let bert_pre = json!({"type": "BertPreTokenizer"});
        assert_eq!(growth_of(bert, bert_pre), Ok(BERT_NORMALIZER_GROWTH));
        let sentencepiece = json!({"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            replace(json!({"String": " "}), "▁")]});
        assert_eq!(growth_of(sentencepiece, Value::Null), Ok(12.0));
        let byte_level = json!({"type": "ByteLevel", "add_prefix_space": true,
                                "trim_offsets": true, "use_regex": true});
        assert_eq!(growth_of(Value::Null, byte_level), Ok(4.0));
        let metaspace = json!({"type": "Metaspace", "replacement": "▁",
                               "prepend_scheme": "always", "split": true});
        assert_eq!(growth_of(Value::Null, metaspace), Ok(6.0));
    }

    #[test]
    fn a_replacement_by_a_regex_or_the_empty_string_counts_an_insertion_per_character() {
        let regex = replace(json!({"Regex": " {2,}"}), "xx");
        assert_eq!(growth_of(regex, Value::Null), Ok(5.0));
        let empty = replace(json!({"String": ""}), "xx");
        assert_eq!(growth_of(empty, Value::Null), Ok(5.0));
        let shrinking = replace(json!({"String": "abc"}), "x");
        assert_eq!(growth_of(shrinking, Value::Null), Ok(1.0));
    }

    /// Built by hand after bug 20: twenty of these turned a 60-character text into 228 MB.
    #[test]
    fn a_chain_of_steps_that_each_double_the_text_is_refused_past_the_limit() {
        let doubling = |n| {
            json!({"type": "Sequence",
                   "normalizers": vec![replace(json!({"String": "a"}), "aa"); n]})
        };
        assert_eq!(growth_of(doubling(10), Value::Null), Ok(1024.0));
        let err = growth_of(doubling(11), Value::Null).expect_err("2,048 times");
        assert!(err.contains("up to 2048 times longer"), "{err}");
        let byte_levels = |n| {
            json!({"type": "Sequence", "pretokenizers": vec![
                json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                       "use_regex": false}); n]})
        };
        assert_eq!(growth_of(Value::Null, byte_levels(10)), Ok(1024.0));
        let err = growth_of(Value::Null, byte_levels(20)).expect_err("a million times");
        assert!(err.contains("pre-tokenizer 1048576"), "{err}");
    }

    #[test]
    fn a_character_map_is_bounded_by_its_longest_replacement() {
        let map = |bytes: &[u8]| {
            let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
            json!({"type": "Precompiled", "precompiled_charsmap": encoded})
        };
        let mut blob = 4u32.to_le_bytes().to_vec();
        blob.extend_from_slice(b"TRIE");
        blob.extend_from_slice(b"ab\0abcdef\0x\0");
        assert_eq!(longest_replacement(&map(&blob)), Ok(6.0));
        // As the crate reads and writes it back (the form `check` bounds).
        let parsed: NormalizerWrapper = serde_json::from_value(map(&blob)).expect("parses");
        assert_eq!(normalizer_growth(&to_json(&parsed).expect("json")), Ok(6.0));
        // A trie size past the end: the whole map bounds it.
        let mut short = 99u32.to_le_bytes().to_vec();
        short.extend_from_slice(b"ab\0abc");
        assert_eq!(longest_replacement(&map(&short)), Ok(3.0));
        assert!(longest_replacement(&json!({"precompiled_charsmap": "not base64!"})).is_err());
        assert!(longest_replacement(&json!({})).is_err());
    }
}
