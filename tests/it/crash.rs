//! A writer killed at an arbitrary point loses no acknowledged batch and leaves no partial one.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tessera::synthetic::{SyntheticCorpus, SyntheticSpec};
use tessera::{CollectionConfig, Database, Document, ExternalId, IngestOptions, SearchParams};

const BATCH: usize = 25;

fn corpus() -> SyntheticCorpus {
    SyntheticCorpus::generate(&SyntheticSpec {
        n_docs: 2000,
        dim: 16,
        min_tokens: 4,
        max_tokens: 30,
        n_clusters: 64,
        ..SyntheticSpec::default()
    })
}

#[test]
fn killed_writer_leaves_only_whole_acknowledged_batches() {
    let exe = std::env::current_exe().expect("exe");
    let corpus = corpus();
    for (round, kill_after_ms) in [40u64, 150, 400].into_iter().enumerate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash::crash_writer_child",
                "--include-ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TESSERA_CRASH_DB", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn writer");
        let stdout = child.stdout.take().expect("stdout");
        let mut acknowledged = 0usize;
        let mut lines = BufReader::new(stdout).lines();
        // Wait for the first acknowledged batch, then let it run a little and kill it.
        let start = Instant::now();
        while let Some(Ok(line)) = lines.next() {
            if let Some(n) = line.strip_prefix("ACK ") {
                acknowledged = n.trim().parse().expect("count");
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "writer never committed"
            );
        }
        std::thread::sleep(Duration::from_millis(kill_after_ms));
        child.kill().expect("kill");
        for line in lines.map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("ACK ") {
                acknowledged = n.trim().parse().expect("count");
            }
        }
        let _ = child.wait();

        let db = Database::open(dir.path()).expect("reopen after kill");
        let coll = db.collection("c").expect("collection");
        let n = coll.info().documents as usize;
        assert_eq!(
            n % BATCH,
            0,
            "round {round}: a partial batch survived ({n} documents)"
        );
        assert!(
            n >= acknowledged,
            "round {round}: acknowledged {acknowledged} but only {n} survived"
        );
        let hits = coll
            .search(corpus.doc(0), n, &SearchParams::exhaustive())
            .expect("search");
        assert_eq!(hits.len(), n);
        assert!(
            hits.iter()
                .all(|h| matches!(h.id, ExternalId::Int(i) if (i as usize) < n))
        );
        // The database keeps working after recovery.
        let next = Document::new(n as u64, corpus.doc(n % corpus.n_docs()).to_vec());
        coll.ingest(&[next], &IngestOptions::default())
            .expect("ingest after recovery");
    }
}

/// Child half of the crash test: ingests batches until killed, acknowledging each commit.
#[test]
#[ignore = "helper run as a child process by killed_writer_leaves_only_whole_acknowledged_batches"]
fn crash_writer_child() {
    let Some(path) = std::env::var_os("TESSERA_CRASH_DB") else {
        return;
    };
    let corpus = corpus();
    let db = Database::open_or_create(&path).expect("create");
    let coll = db
        .create_collection("c", CollectionConfig::new(16))
        .expect("collection");
    let mut next = 0;
    while next + BATCH <= corpus.n_docs() {
        let docs: Vec<Document> = (next..next + BATCH)
            .map(|i| Document::new(i as u64, corpus.doc(i).to_vec()))
            .collect();
        coll.ingest(&docs, &IngestOptions::default())
            .expect("ingest");
        next += BATCH;
        println!("ACK {next}");
    }
}
