//! Read-only opens beside a writer in another process: the writer's every open rotates the
//! catalog's write-ahead log and manifest, which a reader listing the files at that moment
//! finds missing (issue 15: 2 of 367 opens failed). Every read-only open must succeed and see
//! a consistent state.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tessera::synthetic::{SyntheticCorpus, SyntheticSpec};
use tessera::{CollectionConfig, Database, Document, IngestOptions};

const BATCH: usize = 5;
/// Writer opens to read beside (each rotates the catalog's log and manifest).
const WRITER_OPENS: usize = 240;

fn corpus() -> SyntheticCorpus {
    SyntheticCorpus::generate(&SyntheticSpec {
        n_docs: 4000,
        dim: 8,
        min_tokens: 2,
        max_tokens: 6,
        n_clusters: 8,
        ..SyntheticSpec::default()
    })
}

fn batch(c: &SyntheticCorpus, first: usize) -> Vec<Document> {
    (first..first + BATCH)
        .map(|i| Document::new(i as u64, c.doc(i % c.n_docs()).to_vec()))
        .collect()
}

#[test]
fn read_only_opens_succeed_beside_a_writer_that_reopens_continuously() {
    let c = corpus();
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = Database::open_or_create(dir.path()).expect("create");
        db.create_collection("c", CollectionConfig::new(8))
            .expect("collection")
            .ingest(&batch(&c, 0), &IngestOptions::default())
            .expect("first batch");
    }
    let stop = dir.path().join("stop-writer");
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "readers::reopening_writer_child",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TESSERA_READERS_DB", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn writer");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    // Start reading once the writer is cycling.
    assert!(
        lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.starts_with("OPENED")),
        "writer never started"
    );

    let writer_opens = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(1));
    let counter = {
        let opens = writer_opens.clone();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                if l.starts_with("OPENED") {
                    opens.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        })
    };
    let mut failures = Vec::new();
    let mut last_seen = 0;
    let mut reader_opens = 0;
    let start = Instant::now();
    while writer_opens.load(std::sync::atomic::Ordering::Relaxed) < WRITER_OPENS
        && start.elapsed() < Duration::from_secs(50)
    {
        let i = reader_opens;
        reader_opens += 1;
        match Database::open_read_only(dir.path()) {
            Ok(db) => {
                let n = db.collection("c").expect("collection").info().documents;
                // Whole batches only, and never fewer than an earlier open saw.
                assert!(
                    (n as usize).is_multiple_of(BATCH) && n >= last_seen,
                    "open {i}: {n} documents after {last_seen}"
                );
                last_seen = n;
            }
            Err(e) => failures.push(format!("open {i}: {e}")),
        }
    }
    std::fs::write(&stop, b"").expect("stop the writer");
    let status = child.wait().expect("writer exit");
    counter.join().expect("counter");
    let writer_opens = writer_opens.load(std::sync::atomic::Ordering::Relaxed);
    assert!(status.success(), "the writer failed: {status}");
    eprintln!("{reader_opens} read-only opens beside {writer_opens} writer opens");
    assert!(
        failures.is_empty(),
        "{} of {reader_opens} read-only opens failed: {failures:?}",
        failures.len()
    );
    assert!(
        writer_opens >= 50,
        "the writer barely ran ({writer_opens} opens)"
    );
}

/// Child half: opens the database for writing and closes it, committing a small batch every
/// third time (so readers also meet commits whose files are being renamed) and creating,
/// filling and dropping a scratch collection every fifth, over and over, until the parent
/// creates the stop file (or a minute passes).
#[test]
#[ignore = "helper run as a child process by read_only_opens_succeed_beside_a_writer_that_reopens_continuously"]
fn reopening_writer_child() {
    let Some(path) = std::env::var_os("TESSERA_READERS_DB") else {
        return;
    };
    let path = Path::new(&path);
    let c = corpus();
    let start = Instant::now();
    let mut next = BATCH;
    let mut opens = 0;
    while !path.join("stop-writer").exists() && start.elapsed() < Duration::from_secs(60) {
        let db = Database::open(path).expect("writer open");
        opens += 1;
        if opens % 3 == 0 {
            db.collection("c")
                .expect("collection")
                .ingest(&batch(&c, next), &IngestOptions::default())
                .expect("ingest");
            next += BATCH;
        }
        if opens % 5 == 0 {
            // A collection whose files vanish under readers whose view still has it.
            let scratch = db
                .create_collection("scratch", CollectionConfig::new(8))
                .expect("scratch");
            scratch
                .ingest(&batch(&c, 0), &IngestOptions::default())
                .expect("scratch ingest");
            db.drop_collection("scratch").expect("drop scratch");
        }
        drop(db);
        println!("OPENED {opens}");
    }
}
