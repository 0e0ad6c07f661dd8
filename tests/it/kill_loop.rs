//! A writer SIGKILLed at random points, over and over (issue 15, "Kill loop"): after every
//! kill the database opens, every acknowledged ingest, upsert and delete is there (and
//! compactions and re-trainings, acknowledged or killed, changed no document), the
//! operation in flight is all there or not at all, no deleted document is back, and every
//! live document is returned by search with exactly the vectors last written for it.
//!
//! `TESSERA_KILLS=N` sets the number of kills (default [`DEFAULT_KILLS`]);
//! `bash scripts/kill-loop.sh N` runs the long mode.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera::{CollectionConfig, Database, Document, ExternalId, IngestOptions, SearchParams};

const DIM: usize = 8;
const DEFAULT_KILLS: usize = 100;
/// Kills before starting over with a fresh database (keeps each open cheap).
const KILLS_PER_DATABASE: usize = 25;

/// The vectors written for document `id` by operation `seq`: a few tokens of multiples of
/// 1/64, which f16 originals hold exactly, so `vectors` must return them bit for bit.
fn doc_vectors(id: u64, seq: u64) -> Vec<f32> {
    let tokens = 2 + ((id + seq) % 4) as usize;
    let mut h = id
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(seq.wrapping_mul(0xc2b2_ae3d_27d4_eb4f));
    (0..tokens * DIM)
        .map(|_| {
            h ^= h >> 29;
            h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
            ((h >> 40) % 129) as f32 / 64.0 - 1.0
        })
        .collect()
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Ingest,
    Upsert,
    Delete,
    /// `compact()`: rewrites every segment; the live documents must not change.
    Compact,
    /// `retrain()`: a new codec and every segment re-encoded; the live documents must not
    /// change.
    Retrain,
}

#[derive(Clone, Debug)]
struct Op {
    seq: u64,
    kind: Kind,
    ids: Vec<u64>,
}

impl Op {
    fn line(&self) -> String {
        let kind = match self.kind {
            Kind::Ingest => "ingest",
            Kind::Upsert => "upsert",
            Kind::Delete => "delete",
            Kind::Compact => "compact",
            Kind::Retrain => "retrain",
        };
        let ids: Vec<String> = self.ids.iter().map(u64::to_string).collect();
        let ids = if ids.is_empty() {
            "-".to_owned()
        } else {
            ids.join(",")
        };
        format!("BEGIN {} {kind} {ids}", self.seq)
    }

    fn is_maintenance(&self) -> bool {
        matches!(self.kind, Kind::Compact | Kind::Retrain)
    }

    fn parse(line: &str) -> Option<Self> {
        let mut parts = line.strip_prefix("BEGIN ")?.split(' ');
        let seq = parts.next()?.parse().ok()?;
        let kind = match parts.next()? {
            "ingest" => Kind::Ingest,
            "upsert" => Kind::Upsert,
            "delete" => Kind::Delete,
            "compact" => Kind::Compact,
            "retrain" => Kind::Retrain,
            _ => return None,
        };
        let ids = match parts.next()? {
            "-" => Vec::new(),
            ids => ids
                .split(',')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?,
        };
        Some(Op { seq, kind, ids })
    }

    /// The model after this operation: live id → the seq that wrote its vectors.
    fn apply(&self, model: &mut BTreeMap<u64, u64>) {
        for &id in &self.ids {
            match self.kind {
                Kind::Ingest | Kind::Upsert => {
                    model.insert(id, self.seq);
                }
                Kind::Delete => {
                    model.remove(&id);
                }
                Kind::Compact | Kind::Retrain => {}
            }
        }
    }
}

/// What the database holds for `ids`: live id → the seq whose vectors it returns (`hint`,
/// the model's, is tried first).
fn observed(
    coll: &tessera::Collection,
    ids: &[u64],
    max_seq: u64,
    hint: &BTreeMap<u64, u64>,
) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    for &id in ids {
        let Some(v) = coll.vectors(&ExternalId::Int(id)).expect("vectors") else {
            continue;
        };
        let seq = hint
            .get(&id)
            .copied()
            .filter(|&s| doc_vectors(id, s) == v)
            .or_else(|| (0..=max_seq).rev().find(|&s| doc_vectors(id, s) == v))
            .unwrap_or_else(|| panic!("document {id} holds vectors no operation wrote"));
        out.insert(id, seq);
    }
    out
}

#[derive(Default, Debug)]
struct Counts {
    kills: usize,
    acknowledged: usize,
    in_flight_applied: usize,
    in_flight_absent: usize,
    /// Compactions and re-trainings acknowledged, and killed while they ran.
    maintenance_acknowledged: usize,
    maintenance_in_flight: usize,
    documents_checked: usize,
}

#[test]
fn killed_writers_lose_no_acknowledged_operation_and_half_apply_none() {
    let kills: usize = std::env::var("TESSERA_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_KILLS);
    let exe = std::env::current_exe().expect("exe");
    let mut rng = StdRng::seed_from_u64(0x6b11_1009);
    let mut counts = Counts::default();
    let start = Instant::now();
    let mut dir = tempfile::tempdir().expect("tempdir");
    let mut model: BTreeMap<u64, u64> = BTreeMap::new();
    let (mut next_id, mut next_seq) = (0u64, 1u64);
    let mut acked_in_database = 0;
    for kill in 0..kills {
        if kill > 0 && kill % KILLS_PER_DATABASE == 0 {
            dir = tempfile::tempdir().expect("tempdir");
            model.clear();
            (next_id, next_seq) = (0, 1);
            acked_in_database = 0;
        }
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "kill_loop::kill_loop_writer_child",
                "--include-ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TESSERA_KILL_DB", dir.path())
            .env("TESSERA_KILL_SEED", rng.random::<u64>().to_string())
            .env("TESSERA_KILL_NEXT_ID", next_id.to_string())
            .env("TESSERA_KILL_NEXT_SEQ", next_seq.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn writer");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Kill at a random moment: one time in eight counted from the start (often during
        // the writer's open, which completes or removes what the last kill left), otherwise
        // once it has begun operating (anywhere in an operation, or between two).
        let mut lines = Vec::new();
        if rng.random_range(0..8) == 0 {
            std::thread::sleep(Duration::from_micros(rng.random_range(0..40_000)));
        } else {
            let deadline = Instant::now() + Duration::from_secs(60);
            while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                let begun = line.starts_with("BEGIN ");
                lines.push(line);
                if begun {
                    break;
                }
            }
            std::thread::sleep(Duration::from_micros(rng.random_range(0..60_000)));
        }
        child.kill().expect("kill");
        let _ = child.wait();
        reader.join().expect("reader");
        lines.extend(rx.try_iter());
        counts.kills += 1;

        // The operations begun, in order, and which were acknowledged.
        let mut begun: Vec<Op> = Vec::new();
        let mut acked = 0;
        for line in &lines {
            if let Some(op) = Op::parse(line) {
                begun.push(op);
            } else if let Some(seq) = line.strip_prefix("ACK ") {
                let seq: u64 = seq.parse().expect("ack");
                assert_eq!(begun.last().map(|o| o.seq), Some(seq), "acks follow begins");
                acked += 1;
            }
        }
        assert!(acked + 1 >= begun.len(), "one operation in flight at most");
        for op in &begun[..acked] {
            op.apply(&mut model);
        }
        counts.acknowledged += acked;
        counts.maintenance_acknowledged +=
            begun[..acked].iter().filter(|o| o.is_maintenance()).count();
        let in_flight = begun.get(acked).cloned();
        if let Some(last) = begun.last() {
            next_seq = last.seq + 1;
        }
        for op in &begun {
            next_id = next_id.max(op.ids.iter().max().map_or(0, |m| m + 1));
        }

        let db = match Database::open(dir.path()) {
            Ok(db) => db,
            // Killed while creating the database: nothing was acknowledged, and creating
            // it again must complete it.
            Err(e)
                if acked_in_database == 0
                    && acked == 0
                    && e.to_string().contains("creation did not complete") =>
            {
                Database::open_or_create(dir.path())
                    .unwrap_or_else(|e| panic!("kill {kill}: create again after kill: {e}"))
            }
            Err(e) => panic!("kill {kill}: reopen after kill: {e}"),
        };
        acked_in_database += acked;
        let Ok(coll) = db.collection("c") else {
            assert!(
                model.is_empty() && acked == 0,
                "kill {kill}: the collection is gone"
            );
            continue;
        };
        if in_flight.as_ref().is_some_and(Op::is_maintenance) {
            // Nothing to apply: the whole-collection check below proves it changed nothing.
            counts.maintenance_in_flight += 1;
        } else if let Some(op) = in_flight {
            let before: BTreeMap<u64, u64> = op
                .ids
                .iter()
                .filter_map(|id| model.get(id).map(|s| (*id, *s)))
                .collect();
            let mut with = model.clone();
            op.apply(&mut with);
            let after: BTreeMap<u64, u64> = op
                .ids
                .iter()
                .filter_map(|id| with.get(id).map(|s| (*id, *s)))
                .collect();
            let seen = observed(&coll, &op.ids, op.seq, &with);
            if seen == after {
                model = with;
                counts.in_flight_applied += 1;
            } else {
                assert_eq!(
                    seen, before,
                    "kill {kill}: operation {op:?} in flight was half applied"
                );
                counts.in_flight_absent += 1;
            }
        }

        // The whole collection equals the model.
        let all: Vec<u64> = (0..next_id).collect();
        let seen = observed(&coll, &all, next_seq, &model);
        assert_eq!(
            seen, model,
            "kill {kill}: the database differs from the model"
        );
        assert_eq!(coll.info().documents, model.len() as u64, "kill {kill}");
        if let Some((&id, &seq)) = model.iter().next() {
            let hits = coll
                .search(
                    &doc_vectors(id, seq),
                    model.len(),
                    &SearchParams::exhaustive(),
                )
                .expect("search");
            let mut found: Vec<u64> = hits
                .iter()
                .map(|h| match h.id {
                    ExternalId::Int(i) => i,
                    ref other => panic!("unexpected id {other}"),
                })
                .collect();
            found.sort_unstable();
            assert_eq!(
                found,
                model.keys().copied().collect::<Vec<_>>(),
                "kill {kill}: search does not return exactly the live documents"
            );
            // The default (approximate) path runs on the recovered state too.
            coll.search(&doc_vectors(id, seq), 5, &SearchParams::default())
                .expect("default search");
        }
        counts.documents_checked += model.len();
    }
    eprintln!(
        "kill loop: {} kills, {} acknowledged operations ({} compactions and re-trainings), in \
         flight at the kill: {} applied whole and {} not at all, {} compactions and \
         re-trainings, {} live documents checked, {:.1} s",
        counts.kills,
        counts.acknowledged,
        counts.maintenance_acknowledged,
        counts.in_flight_applied,
        counts.in_flight_absent,
        counts.maintenance_in_flight,
        counts.documents_checked,
        start.elapsed().as_secs_f64()
    );
    assert!(counts.acknowledged > 0, "the writers never committed");
}

/// Child half: random ingests (fresh ids), upserts, deletes, compactions and re-trainings,
/// each announced before it starts and acknowledged after it returns, until killed (or
/// 2,000 operations).
#[test]
#[ignore = "helper run as a child process by killed_writers_lose_no_acknowledged_operation_and_half_apply_none"]
fn kill_loop_writer_child() {
    let Some(path) = std::env::var_os("TESSERA_KILL_DB") else {
        return;
    };
    let var = |name: &str| -> u64 { std::env::var(name).expect(name).parse().expect("a number") };
    // libtest has printed "test NAME ... " without a newline: end that line first, so that
    // every line of ours starts with its keyword.
    println!();
    let mut rng = StdRng::seed_from_u64(var("TESSERA_KILL_SEED"));
    let (mut next_id, mut seq) = (var("TESSERA_KILL_NEXT_ID"), var("TESSERA_KILL_NEXT_SEQ"));
    let db = Database::open_or_create(Path::new(&path)).expect("open");
    let coll = match db.collection("c") {
        Ok(c) => c,
        Err(_) => db
            .create_collection("c", CollectionConfig::new(DIM as u32))
            .expect("collection"),
    };
    for _ in 0..2000 {
        // Half ingests, a quarter upserts, nearly a quarter deletes, and one operation in
        // 26 each a compaction and a re-training.
        let roll = rng.random_range(0..26);
        let op = if roll < 13 || next_id == 0 {
            let n = rng.random_range(1..8);
            let ids: Vec<u64> = (next_id..next_id + n).collect();
            next_id += n;
            Op {
                seq,
                kind: Kind::Ingest,
                ids,
            }
        } else {
            let n = rng.random_range(1..4);
            let mut ids: Vec<u64> = (0..n).map(|_| rng.random_range(0..next_id)).collect();
            ids.sort_unstable();
            ids.dedup();
            let kind = if roll < 19 {
                Kind::Upsert
            } else {
                Kind::Delete
            };
            Op { seq, kind, ids }
        };
        let op = match roll {
            24 => Op {
                seq,
                kind: Kind::Compact,
                ids: Vec::new(),
            },
            25 => Op {
                seq,
                kind: Kind::Retrain,
                ids: Vec::new(),
            },
            _ => op,
        };
        println!("{}", op.line());
        match op.kind {
            Kind::Ingest | Kind::Upsert => {
                let docs: Vec<Document> = op
                    .ids
                    .iter()
                    .map(|&id| Document::new(id, doc_vectors(id, op.seq)))
                    .collect();
                let opts = if op.kind == Kind::Upsert {
                    IngestOptions::upsert()
                } else {
                    IngestOptions::default()
                };
                coll.ingest(&docs, &opts).expect("ingest");
            }
            Kind::Delete => {
                let ids: Vec<ExternalId> = op.ids.iter().map(|&i| ExternalId::Int(i)).collect();
                coll.delete(&ids).expect("delete");
            }
            Kind::Compact => {
                coll.compact().expect("compact");
            }
            Kind::Retrain => {
                coll.retrain().expect("retrain");
            }
        }
        println!("ACK {}", op.seq);
        seq += 1;
    }
}
