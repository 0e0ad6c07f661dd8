//! The catalog's write-ahead log and the files it publishes: damage to the log never rolls
//! back acknowledged commits silently, and a data file of a commit the catalog lost is never
//! garbage-collected (issue 15).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tessera::synthetic::SyntheticCorpus;
use tessera::{CollectionConfig, Database, ExternalId, IngestOptions, SearchParams};
use tessera_tests::{copy_dir, documents_in, small_collection, small_corpus};

const DELETED: u64 = 42;

fn corpus() -> SyntheticCorpus {
    small_corpus(200, 12, 16)
}

fn ingest(dir: &Path, c: &SyntheticCorpus, range: std::ops::Range<usize>) {
    small_collection(dir, c, range);
}

fn delete(dir: &Path, id: u64) {
    let db = Database::open(dir).expect("open");
    let report = db
        .collection("c")
        .expect("c")
        .delete(&[ExternalId::Int(id)])
        .expect("delete");
    assert_eq!(report.deleted, 1);
}

/// The scenario, one open per step as the command line does it: ingest 100,
/// delete one, ingest 100 more; every step acknowledged.
fn build(dir: &Path, c: &SyntheticCorpus) {
    ingest(dir, c, 0..100);
    delete(dir, DELETED);
    ingest(dir, c, 100..200);
}

/// Every file under `collections/`.
fn data_files(dir: &Path) -> BTreeSet<PathBuf> {
    fn walk(p: &Path, out: &mut BTreeSet<PathBuf>) {
        for e in std::fs::read_dir(p).expect("ls").flatten() {
            if e.path().is_dir() {
                walk(&e.path(), out);
            } else {
                out.insert(e.path());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&dir.join("collections"), &mut out);
    out
}

fn largest_log(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir.join("catalog"))
        .expect("ls catalog")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a write-ahead log")
}

/// Offsets of the record headers of a RocksDB write-ahead log (32 KiB blocks; a header is
/// CRC u32, length u16, type u8; a block's last 6 bytes or fewer are padding).
fn record_headers(log: &[u8]) -> Vec<usize> {
    const BLOCK: usize = 32 * 1024;
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 7 <= log.len() {
        let left_in_block = BLOCK - pos % BLOCK;
        if left_in_block < 7 {
            pos += left_in_block;
            continue;
        }
        let len = usize::from(u16::from_le_bytes([log[pos + 4], log[pos + 5]]));
        if log[pos + 6] == 0 && len == 0 {
            break;
        }
        out.push(pos);
        pos += 7 + len;
    }
    out
}

/// How a damaged copy of the database opened for writing.
enum Outcome {
    Damaged,
    LostCommits,
    RecoveredEverything,
}

/// Opens a damaged copy for writing: it must refuse with a typed error (damaged catalog or
/// lost commits), or open with every acknowledged commit; either way no data file may go.
fn check_damaged(dir: &Path, files_before: &BTreeSet<PathBuf>, what: &str) -> Outcome {
    let outcome = match Database::open(dir) {
        Err(tessera::Error::Storage(tessera_storage::Error::CatalogDamaged { .. })) => {
            Outcome::Damaged
        }
        Err(tessera::Error::Storage(tessera_storage::Error::LostCommits { .. })) => {
            Outcome::LostCommits
        }
        Err(e) => panic!("{what}: unexpected error kind: {e}"),
        Ok(db) => {
            let coll = db.collection("c").expect("collection");
            assert_eq!(
                coll.info().documents,
                199,
                "{what}: opened without every acknowledged commit"
            );
            assert!(
                !coll.contains(&ExternalId::Int(DELETED)).expect("contains"),
                "{what}: a deleted document came back"
            );
            assert!(coll.contains(&ExternalId::Int(199)).expect("contains"));
            Outcome::RecoveredEverything
        }
    };
    assert_eq!(&data_files(dir), files_before, "{what}: data files changed");
    outcome
}

#[test]
fn a_damaged_catalog_log_refuses_the_open_or_recovers_every_commit_and_deletes_nothing() {
    let c = corpus();
    let template = tempfile::tempdir().expect("tempdir");
    build(template.path(), &c);
    let files = data_files(template.path());
    let log_name = largest_log(template.path())
        .file_name()
        .expect("name")
        .to_owned();
    let log = std::fs::read(template.path().join("catalog").join(&log_name)).expect("read log");
    assert!(!log.is_empty(), "the last commit is in the log");
    let headers = record_headers(&log);
    assert!(!headers.is_empty(), "log records");

    // Bit flips: spread over the whole log, and every bit of every record header (a flipped
    // length can make the last record look cut short by a crash, which the log alone cannot
    // tell from damage).
    let mut flips: Vec<(usize, u8)> = (0..96)
        .map(|i| (i * log.len() / 96, (i % 8) as u8))
        .collect();
    for &h in &headers {
        for byte in h..h + 7 {
            for bit in 0..8 {
                flips.push((byte, bit));
            }
        }
    }
    // Truncations: a torn last byte, and the log cut at each record boundary (the shape a
    // lost write would leave, indistinguishable by the log from a crash).
    let mut cuts: Vec<usize> = headers.clone();
    cuts.push(log.len() - 1);

    let (mut damaged, mut lost, mut recovered) = (0, 0, 0);
    let trials = flips
        .iter()
        .map(|&(at, bit)| (format!("bit {bit} of byte {at}"), Some((at, bit)), None))
        .chain(
            cuts.iter()
                .map(|&len| (format!("cut to {len} bytes"), None, Some(len))),
        );
    for (what, flip, cut) in trials {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_dir(template.path(), dir.path());
        let mut bytes = log.clone();
        if let Some((at, bit)) = flip {
            bytes[at] ^= 1 << bit;
        }
        if let Some(len) = cut {
            bytes.truncate(len);
        }
        std::fs::write(dir.path().join("catalog").join(&log_name), &bytes).expect("damage");
        let files = files
            .iter()
            .map(|p| {
                dir.path()
                    .join(p.strip_prefix(template.path()).expect("prefix"))
            })
            .collect();
        match check_damaged(dir.path(), &files, &what) {
            Outcome::Damaged => damaged += 1,
            Outcome::LostCommits => lost += 1,
            Outcome::RecoveredEverything => recovered += 1,
        }
    }
    eprintln!(
        "{} damaged logs ({} bytes, {} records): {damaged} refused as damaged, {lost} as lost \
         commits, {recovered} recovered whole",
        damaged + lost + recovered,
        log.len(),
        headers.len()
    );
    assert!(
        damaged > 0 && lost > 0,
        "both defences must have been exercised"
    );
}

#[test]
fn a_flipped_bit_in_the_log_of_many_commits_names_the_damaged_log() {
    // All three commits in one log (one open), damage in its middle: the log's checksums
    // catch it.
    let c = corpus();
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = Database::open_or_create(dir.path()).expect("create");
        let coll = db
            .create_collection("c", CollectionConfig::new(16))
            .expect("collection");
        coll.ingest(&documents_in(&c, 0..100), &IngestOptions::default())
            .expect("ingest");
        coll.delete(&[ExternalId::Int(DELETED)]).expect("delete");
        coll.ingest(&documents_in(&c, 100..200), &IngestOptions::default())
            .expect("ingest");
    }
    let files = data_files(dir.path());
    let log = largest_log(dir.path());
    let mut bytes = std::fs::read(&log).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&log, &bytes).expect("damage");
    let err = Database::open(dir.path()).expect_err("a damaged log must refuse the open");
    assert!(
        matches!(
            err,
            tessera::Error::Storage(tessera_storage::Error::CatalogDamaged { .. })
        ),
        "{err}"
    );
    let name = log
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(err.to_string().contains(&name), "{err}");
    let err = Database::open_read_only(dir.path()).expect_err("readers refuse it too");
    assert!(err.to_string().contains(&name), "{err}");
    assert_eq!(data_files(dir.path()), files, "nothing deleted");
}

#[test]
fn files_of_commits_the_catalog_lost_are_kept_and_refuse_the_open() {
    let c = corpus();
    let dir = tempfile::tempdir().expect("tempdir");
    let old_catalog = tempfile::tempdir().expect("tempdir");
    ingest(dir.path(), &c, 0..100);
    copy_dir(&dir.path().join("catalog"), old_catalog.path());
    delete(dir.path(), DELETED);
    ingest(dir.path(), &c, 100..200);
    let files = data_files(dir.path());
    // The catalog as of the first commit: the delete and the second ingest are lost.
    std::fs::remove_dir_all(dir.path().join("catalog")).expect("rm catalog");
    copy_dir(old_catalog.path(), &dir.path().join("catalog"));
    for attempt in 0..2 {
        let err = Database::open(dir.path()).expect_err("lost commits must refuse the open");
        match &err {
            tessera::Error::Storage(tessera_storage::Error::LostCommits { path, reason }) => {
                assert!(files.contains(path), "{}", path.display());
                assert!(reason.contains("at commit 1"), "{reason}");
            }
            other => panic!("attempt {attempt}: expected LostCommits, got {other}"),
        }
        assert_eq!(
            data_files(dir.path()),
            files,
            "attempt {attempt}: files deleted"
        );
    }
}

#[test]
fn a_collection_whose_creation_the_catalog_lost_is_kept_and_refuses_the_open() {
    let c = corpus();
    let dir = tempfile::tempdir().expect("tempdir");
    let old_catalog = tempfile::tempdir().expect("tempdir");
    drop(Database::open_or_create(dir.path()).expect("create"));
    copy_dir(&dir.path().join("catalog"), old_catalog.path());
    ingest(dir.path(), &c, 0..100);
    let files = data_files(dir.path());
    std::fs::remove_dir_all(dir.path().join("catalog")).expect("rm catalog");
    copy_dir(old_catalog.path(), &dir.path().join("catalog"));
    let err = Database::open(dir.path()).expect_err("lost creation must refuse the open");
    assert!(
        matches!(
            &err,
            tessera::Error::Storage(tessera_storage::Error::LostCommits { path, .. })
                if path.ends_with("collections/0")
        ),
        "{err}"
    );
    assert_eq!(data_files(dir.path()), files);
}

#[test]
fn a_commit_that_crashed_before_renaming_its_files_is_completed_at_open() {
    let c = corpus();
    let dir = tempfile::tempdir().expect("tempdir");
    ingest(dir.path(), &c, 0..100);
    ingest(dir.path(), &c, 100..200);
    // What a crash between the catalog write and the renames leaves: the newest segment
    // and its originals still under their temporary names.
    let cdir = dir.path().join("collections/0");
    let newest_segment = data_files(dir.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "tsg"))
        .max()
        .expect("a segment");
    let newest = vec![
        newest_segment.with_extension("tsg"),
        cdir.join(
            newest_segment
                .file_name()
                .expect("name")
                .to_string_lossy()
                .replace("seg-", "vec-")
                .replace(".tsg", ".tov"),
        ),
    ];
    for p in &newest {
        let mut tmp = p.as_os_str().to_owned();
        tmp.push(".tmp");
        std::fs::rename(p, PathBuf::from(tmp)).expect("rename back");
    }
    let q = c.doc(150);
    {
        let db = Database::open_read_only(dir.path()).expect("read-only open");
        let coll = db.collection("c").expect("c");
        assert_eq!(coll.info().documents, 200);
        let hits = coll
            .search(q, 1, &SearchParams::exhaustive())
            .expect("search");
        assert_eq!(hits[0].id, ExternalId::Int(150));
        assert!(
            coll.vectors(&ExternalId::Int(150))
                .expect("vectors")
                .is_some()
        );
    }
    let db = Database::open(dir.path()).expect("writer open completes the commit");
    let coll = db.collection("c").expect("c");
    assert_eq!(coll.info().documents, 200);
    for p in &newest {
        assert!(p.exists(), "{} was not renamed into place", p.display());
    }
    assert!(
        std::fs::read_dir(&cdir)
            .expect("ls")
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().ends_with(".tmp")),
        "temporary files remain"
    );
}

#[test]
fn a_database_of_the_old_commit_protocol_removes_its_debris_once_then_guards_its_files() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/format-v1/db");
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&fixture, dir.path());
    let cdir = dir.path().join("collections/0");
    let seg = cdir.join("seg-000002.tsg");
    // The old protocol renamed files into place before the catalog write, so a crash left
    // unreferenced published files: the first open of this build still removes those.
    let stray = cdir.join("seg-000099.tsg");
    std::fs::copy(&seg, &stray).expect("debris");
    {
        let db = Database::open(dir.path()).expect("open an old database");
        assert!(!stray.exists(), "old-protocol debris is removed");
        assert_eq!(db.collection("docs").expect("docs").info().segments, 3);
    }
    // From then on such a file can only be a lost commit's.
    std::fs::copy(&seg, &stray).expect("stray");
    let err = Database::open(dir.path()).expect_err("guarded now");
    assert!(
        matches!(
            err,
            tessera::Error::Storage(tessera_storage::Error::LostCommits { .. })
        ),
        "{err}"
    );
    assert!(stray.exists());
}
