//! The test suite's short fuzz runs: every kept input of a target's corpus, then a bounded
//! number of seeded mutations of them, through the target; none may panic. The long,
//! coverage-guided runs are `scripts/fuzz.sh TARGET SECONDS` (RELIABILITY.md, "Fuzzing").

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;
use std::time::{Duration, Instant};

use tessera_fuzz::mutate::mutate;

/// Mutations per target, unless `TESSERA_FUZZ_MUTATIONS` says otherwise.
const MUTATIONS: u64 = 2000;
/// A target's mutations stop after this many seconds (slow CI machines keep their budget),
/// unless `TESSERA_FUZZ_SECONDS` says otherwise.
const TIME_LIMIT_S: u64 = 8;
/// The longest one kept input may take (generous for a loaded CI machine).
const KEPT_INPUT_LIMIT: Duration = Duration::from_secs(5);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn kept_inputs(name: &str) -> Vec<(String, Vec<u8>)> {
    let dir = tessera_fuzz::corpus_dir(name);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a corpus entry").path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.display().to_string(), bytes)
        })
        .collect()
}

thread_local! {
    /// The last panic in a decoder on this thread, as the panic hook saw it.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Panics of this file print as usual; any other is recorded instead of printed: the
/// encoder turns panics of the tokenizers crate into errors, and thousands of inputs would
/// print thousands of messages. A panic that escapes a target is reported with its message.
fn quiet_decoder_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info
                .location()
                .is_some_and(|l| l.file().ends_with("replay.rs"))
            {
                default(info);
            } else {
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(info.to_string()));
            }
        }));
    });
}

/// Runs `target`'s kept corpus and its mutations; panics naming the input that panicked.
fn replay(name: &str) {
    quiet_decoder_panics();
    let target = tessera_fuzz::target(name).expect("a target of that name");
    let kept = kept_inputs(name);
    assert!(!kept.is_empty(), "{name}: the corpus is empty");
    let run = |what: &str, bytes: &[u8]| {
        let escaped = catch_unwind(AssertUnwindSafe(|| target(bytes))).is_err();
        let message = LAST_PANIC.with(|p| p.borrow_mut().take());
        if escaped {
            let message = message.unwrap_or_default();
            panic!("{name}: {what} panicked the decoder: {message}");
        }
    };
    for (path, bytes) in &kept {
        // Kept inputs include ones that used to hang a decoder (`regression-header-nesting-*`
        // took over 20 seconds each); a small input must take far less than this.
        let start = Instant::now();
        run(path, bytes);
        let took = start.elapsed();
        assert!(took < KEPT_INPUT_LIMIT, "{name}: {path} took {took:?}");
    }
    let mutations = env_or("TESSERA_FUZZ_MUTATIONS", MUTATIONS);
    let time_limit = Duration::from_secs(env_or("TESSERA_FUZZ_SECONDS", TIME_LIMIT_S));
    let start = Instant::now();
    let mut done = 0;
    for seed in 0..mutations {
        if start.elapsed() > time_limit {
            break;
        }
        let i = seed as usize % kept.len();
        let other = &kept[(i + 1) % kept.len()].1;
        run(
            &format!("mutation {seed} of {}", kept[i].0),
            &mutate(&kept[i].1, other, seed),
        );
        done += 1;
    }
    println!(
        "{name}: {} kept inputs and {done} mutations in {:.1} s, no panic",
        kept.len(),
        start.elapsed().as_secs_f64()
    );
}

macro_rules! replay_tests {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                replay($name);
            }
        )*

        #[test]
        fn every_target_has_a_replay_test() {
            let tested = [$($name),*];
            for (name, _) in tessera_fuzz::TARGETS {
                assert!(tested.contains(name), "{name} has no replay test");
            }
        }
    };
}

replay_tests! {
    segment_inputs_and_mutations_never_panic_the_reader => "segment",
    codec_inputs_and_mutations_never_panic_the_reader => "codec",
    originals_inputs_and_mutations_never_panic_the_reader => "originals",
    doctext_inputs_and_mutations_never_panic_the_decoder => "doctext",
    catalog_record_inputs_and_mutations_never_panic_the_decoders => "catalog_records",
    npy_inputs_and_mutations_never_panic_ingest => "npy",
    safetensors_inputs_and_mutations_never_panic_ingest => "safetensors",
    jsonl_inputs_and_mutations_never_panic_ingest => "jsonl",
    text_corpus_inputs_and_mutations_never_panic_the_reader => "text_corpus",
    tokenizer_json_inputs_and_mutations_never_panic_the_encoder => "tokenizer_json",
    tokenizer_text_inputs_and_mutations_never_panic_the_encoder => "tokenizer_text",
}

/// The kept inputs of target `name` that `fuzz-seeds` wrote.
fn seeds(name: &str) -> Vec<(String, Vec<u8>)> {
    kept_inputs(name)
        .into_iter()
        .filter(|(p, _)| {
            std::path::Path::new(p)
                .file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with("seed-"))
        })
        .collect()
}

/// The seeds are valid files, so mutations start from inputs that reach every check.
#[test]
fn the_storage_seeds_open_as_valid_files() {
    use std::path::Path;
    use tessera_storage::FileBytes;
    for (path, bytes) in seeds("segment") {
        let r = tessera_storage::segment::SegmentReader::from_bytes(
            Path::new(&path),
            FileBytes::copy_of(&bytes),
        );
        assert_eq!(r.expect("a valid segment").meta().n_docs, 3, "{path}");
    }
    for (path, bytes) in seeds("codec") {
        tessera_storage::codec::read_codec_bytes(Path::new(&path), FileBytes::copy_of(&bytes))
            .expect("a valid codec");
    }
    for (path, bytes) in seeds("originals") {
        let r = tessera_storage::originals::OriginalsReader::from_bytes(
            Path::new(&path),
            FileBytes::copy_of(&bytes),
        )
        .expect("valid originals");
        for local in 0..3 {
            r.doc(local)
                .unwrap_or_else(|e| panic!("{path}: document {local}: {e}"));
        }
    }
    for (path, bytes) in seeds("doctext") {
        tessera_storage::doctext::decode(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}

/// The catalog seeds are valid records of every kind, so mutations reach every decoder.
#[test]
fn the_catalog_seeds_decode_as_one_valid_record_of_each_kind() {
    use std::collections::BTreeSet;
    use tessera_storage::records::{Record, decode};
    let mut kinds = BTreeSet::new();
    for (path, bytes) in seeds("catalog_records") {
        let (key, value) = tessera_fuzz::records::split_record(&bytes).expect("a record");
        let (_, record) = decode(std::path::Path::new("seeds"), key, value)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        kinds.insert(match record {
            Record::Format => "format",
            Record::Db(_) => "db",
            Record::Collection(_) => "collection",
            Record::Manifest(_) => "manifest",
            Record::Location(_) => "location",
            Record::Tombstones(_) => "tombstones",
            Record::Metadata(_) => "metadata",
            Record::Text(_) => "text",
        });
    }
    assert_eq!(kinds.len(), 8, "{kinds:?}");
}
