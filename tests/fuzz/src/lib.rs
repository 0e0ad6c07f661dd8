//! Fuzz targets for every decoder of Tessera: each is a plain function of bytes that must
//! never panic, whatever the bytes are (RELIABILITY.md, "Fuzzing").
//!
//! * [`storage`]: segment, codec and originals files, and a document's stored text.
//! * [`records`]: the catalog's records (keys and values as RocksDB holds them).
//! * [`inputs`]: the command line's `.npy`, `.safetensors` and JSON-lines readers.
//! * [`text`]: the text-corpus reader of `ingest --text`.
//! * [`tokenizer`]: the encoder's tokenizer input path (`tokenizer.json` and text).
//!
//! Two drivers run them: the test suite replays the kept corpus (`tests/fuzz/corpus/TARGET`)
//! and a bounded number of seeded mutations of it (`tests/replay.rs`), and
//! `scripts/fuzz.sh TARGET SECONDS` runs AFL++ on the `fuzz-afl` binary for long runs.

// The command line's readers live in its binary crate, which links the engine and RocksDB;
// they are compiled here from the same files, with storage's `ExternalId` under the name
// they import it by (the engine re-exports that same type as `tessera::ExternalId`).
extern crate tessera_storage as tessera;

// Where the command line's readers find each other (`crate::formats`, `crate::text`).
#[path = "../../../cli/src/formats/mod.rs"]
#[allow(dead_code, missing_docs, clippy::all)]
mod formats;

pub mod inputs;
pub mod mutate;
pub mod records;
pub mod storage;
pub mod text;
pub mod tokenizer;

/// A fuzz target: decodes `data` and must not panic.
pub type Target = fn(&[u8]);

/// Every target, by the name `scripts/fuzz.sh`, the corpus directories and the replay tests
/// use.
pub const TARGETS: &[(&str, Target)] = &[
    ("segment", storage::segment),
    ("codec", storage::codec),
    ("originals", storage::originals),
    ("doctext", storage::doctext),
    ("catalog_records", records::catalog_records),
    ("npy", inputs::npy),
    ("safetensors", inputs::safetensors),
    ("jsonl", inputs::jsonl),
    ("text_corpus", text::text_corpus),
    ("tokenizer_json", tokenizer::tokenizer_json),
    ("tokenizer_text", tokenizer::tokenizer_text),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|&(_, t)| t)
}

/// The directory of target `name`'s kept corpus in the repository.
pub fn corpus_dir(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(name)
}
