//! Corruption sweep (issue 15, "Corruption sweep"): every file of a database, data files and
//! the catalog's RocksDB files alike, damaged by bit flips, zeroed ranges and truncation at
//! positions across the whole file. Opening, searching and reading vectors must never
//! panic, and whatever they return must be what the undamaged database returns: damage is
//! an error, never a different answer.
//!
//! `TESSERA_SWEEP_POSITIONS=N` sets the positions per file and kind of damage (default
//! [`DEFAULT_POSITIONS`]).

use std::path::{Path, PathBuf};

use tessera::synthetic::SyntheticCorpus;
use tessera::{Database, ExternalId, Hit, IngestOptions, SearchParams};
use tessera_tests::{copy_dir, documents_in, small_collection, small_corpus};

const DEFAULT_POSITIONS: usize = 12;
const N_DOCS: usize = 60;

fn corpus() -> SyntheticCorpus {
    small_corpus(N_DOCS, 10, 8)
}

/// Two ingests and a delete, one open each as the command line does, the last commit an
/// ingest (a lost delete that publishes no file is the one loss no check can see).
fn build(dir: &Path, c: &SyntheticCorpus) {
    small_collection(dir, c, 0..30);
    {
        let db = Database::open(dir).expect("open");
        db.collection("c")
            .expect("c")
            .delete(&[ExternalId::Int(7)])
            .expect("delete");
    }
    let db = Database::open(dir).expect("open");
    db.collection("c")
        .expect("c")
        .ingest(&documents_in(c, 30..N_DOCS), &IngestOptions::default())
        .expect("ingest");
}

/// Everything the sweep compares: per document its vectors (or an error), per query the
/// exhaustive and default top-10 (or an error), and the live count.
#[derive(Debug)]
struct Answers {
    documents: u64,
    vectors: Vec<Result<Option<Vec<f32>>, String>>,
    searches: Vec<Result<Vec<Hit>, String>>,
}

fn answers(db: &Database, c: &SyntheticCorpus) -> Answers {
    let coll = db.collection("c").expect("collection");
    let vectors = (0..N_DOCS)
        .map(|i| {
            coll.vectors(&ExternalId::Int(i as u64))
                .map_err(|e| e.to_string())
        })
        .collect();
    let mut searches = Vec::new();
    for q in [3usize, 31, 50] {
        for params in [SearchParams::exhaustive(), SearchParams::default()] {
            searches.push(
                coll.search(c.doc(q), 10, &params)
                    .map_err(|e| e.to_string()),
            );
        }
    }
    Answers {
        documents: coll.info().documents,
        vectors,
        searches,
    }
}

/// The files to damage, relative to the database: data files, and the catalog's files
/// RocksDB reads at open (tables, logs, manifest, CURRENT; not its info logs or OPTIONS).
fn targets(db: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in ["collections/0", "catalog"] {
        for e in std::fs::read_dir(db.join(sub)).expect("ls").flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let data = [".tsg", ".tcd", ".tov"].iter().any(|x| name.ends_with(x));
            let catalog = name.ends_with(".sst")
                || name.ends_with(".log")
                || name.starts_with("MANIFEST-")
                || name == "CURRENT";
            if data || catalog {
                out.push(Path::new(sub).join(name));
            }
        }
    }
    out.sort();
    out
}

enum Damage {
    Flip(usize, u8),
    Zero(usize, usize),
    Truncate(usize),
}

fn apply(bytes: &[u8], d: &Damage) -> Vec<u8> {
    let mut b = bytes.to_vec();
    match *d {
        Damage::Flip(at, bit) => b[at] ^= 1 << bit,
        Damage::Zero(at, len) => b[at..(at + len).min(bytes.len())].fill(0),
        Damage::Truncate(len) => b.truncate(len),
    }
    b
}

#[derive(Default)]
struct Tally {
    trials: usize,
    open_refused: usize,
    opened_all_equal: usize,
    opened_some_errors: usize,
}

#[test]
fn damage_anywhere_in_any_file_is_an_error_never_a_different_answer() {
    let positions: usize = std::env::var("TESSERA_SWEEP_POSITIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_POSITIONS);
    let c = corpus();
    let template = tempfile::tempdir().expect("tempdir");
    build(template.path(), &c);
    let truth = answers(
        &Database::open(template.path()).expect("open undamaged"),
        &c,
    );
    assert_eq!(truth.documents, (N_DOCS - 1) as u64);
    assert!(truth.vectors.iter().all(Result::is_ok));
    assert!(truth.searches.iter().all(Result::is_ok));

    let mut tally = Tally::default();
    for file in targets(template.path()) {
        let original = std::fs::read(template.path().join(&file)).expect("read");
        if original.is_empty() {
            continue;
        }
        let len = original.len();
        let mut damages = Vec::new();
        for i in 0..positions {
            // Spread over the file, with the first and last bytes always among them.
            let at = if positions > 1 {
                i * (len - 1) / (positions - 1)
            } else {
                0
            };
            damages.push(Damage::Flip(at, (i % 8) as u8));
            if i % 2 == 0 {
                damages.push(Damage::Zero(at, 64));
            }
            if i % 3 == 0 {
                damages.push(Damage::Truncate(at));
            }
        }
        for damage in &damages {
            let what = match damage {
                Damage::Flip(at, bit) => format!("{}: bit {bit} of byte {at}", file.display()),
                Damage::Zero(at, n) => format!("{}: {n} bytes zeroed at {at}", file.display()),
                Damage::Truncate(n) => format!("{}: cut to {n} bytes", file.display()),
            };
            let damaged = apply(&original, damage);
            if damaged == original {
                continue;
            }
            let dir = tempfile::tempdir().expect("tempdir");
            copy_dir(template.path(), dir.path());
            std::fs::write(dir.path().join(&file), &damaged).expect("damage");
            tally.trials += 1;
            for read_only in [true, false] {
                let opened = if read_only {
                    Database::open_read_only(dir.path())
                } else {
                    Database::open(dir.path())
                };
                let db = match opened {
                    Ok(db) => db,
                    Err(e) => {
                        assert!(
                            matches!(e, tessera::Error::Storage(_)),
                            "{what}: not a storage error: {e}"
                        );
                        if !read_only {
                            tally.open_refused += 1;
                        }
                        continue;
                    }
                };
                let got = answers(&db, &c);
                assert_eq!(got.documents, truth.documents, "{what}: live count");
                let mut errors = 0;
                for (i, (g, t)) in got.vectors.iter().zip(&truth.vectors).enumerate() {
                    match g {
                        Ok(v) => assert_eq!(Ok(v), t.as_ref(), "{what}: vectors of {i}"),
                        Err(_) => errors += 1,
                    }
                }
                for (i, (g, t)) in got.searches.iter().zip(&truth.searches).enumerate() {
                    match g {
                        Ok(hits) => assert_eq!(
                            Ok(hits),
                            t.as_ref(),
                            "{what}: search {i} answered differently"
                        ),
                        Err(_) => errors += 1,
                    }
                }
                if !read_only {
                    if errors == 0 {
                        tally.opened_all_equal += 1;
                    } else {
                        tally.opened_some_errors += 1;
                    }
                }
            }
        }
    }
    eprintln!(
        "corruption sweep: {} damaged copies: open refused {}, opened and every answer equal {}, \
         opened with errors for the damaged part (the rest equal) {}",
        tally.trials, tally.open_refused, tally.opened_all_equal, tally.opened_some_errors
    );
    assert!(tally.trials > 0);
}
