//! Faults at every step of a commit (issue 15, "Faults"), injected with the test-only
//! `failpoints` feature: creating, writing (a full disk) and syncing each data file,
//! syncing the directory, the catalog's write, and the renames after it. Each fails with a
//! clear error and no panic, commits all of the batch or none of it, and the database opens
//! again with the batch there exactly when it was acknowledged. After a failed fsync or
//! catalog write the handle refuses further writes until the database is opened again.

use std::io::ErrorKind;
use std::path::Path;

use tessera::synthetic::SyntheticCorpus;
use tessera::{CollectionConfig, Database, Document, ExternalId, IngestOptions, SearchParams};
use tessera_storage::failpoint;
use tessera_tests::{documents_in, small_collection, small_corpus};

const FIRST: usize = 20;
const SECOND: usize = 10;

fn corpus() -> SyntheticCorpus {
    small_corpus(FIRST + SECOND, 10, 8)
}

fn tmp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("collections/0"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".tmp"))
                .collect()
        })
        .unwrap_or_default()
}

/// Opens `dir` again and checks it holds exactly documents `0..n`, searchable, and takes
/// another batch.
fn reopen_and_check(dir: &Path, c: &SyntheticCorpus, n: usize, what: &str) {
    let db = Database::open(dir).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
    let coll = db.collection("c").expect("collection");
    assert_eq!(
        coll.info().documents,
        n as u64,
        "{what}: documents after reopen"
    );
    assert!(
        tmp_files(dir).is_empty(),
        "{what}: temporary files after reopen"
    );
    if n > 0 {
        let hits = coll
            .search(c.doc(0), n, &SearchParams::exhaustive())
            .expect("search");
        assert_eq!(hits.len(), n, "{what}");
    }
    coll.ingest(
        &[Document::new(1_000u64, c.doc(0).to_vec())],
        &IngestOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{what}: ingest after reopen: {e}"));
}

#[test]
fn a_failure_before_the_catalog_write_commits_nothing_and_leaves_no_file() {
    let c = corpus();
    // (point, file, error kind, whether the batch is the collection's first, so that it
    // also writes the codec; whether the handle must then refuse writes)
    let cases = [
        (
            failpoint::CREATE,
            "codec-*.tcd.tmp",
            ErrorKind::PermissionDenied,
            true,
            false,
        ),
        (
            failpoint::WRITE,
            "codec-*.tcd.tmp",
            ErrorKind::StorageFull,
            true,
            false,
        ),
        (
            failpoint::FSYNC,
            "codec-*.tcd.tmp",
            ErrorKind::Other,
            true,
            true,
        ),
        (
            failpoint::CREATE,
            "seg-*.tsg.tmp",
            ErrorKind::PermissionDenied,
            false,
            false,
        ),
        (
            failpoint::WRITE,
            "seg-*.tsg.tmp",
            ErrorKind::StorageFull,
            false,
            false,
        ),
        (
            failpoint::FSYNC,
            "seg-*.tsg.tmp",
            ErrorKind::Other,
            false,
            true,
        ),
        (
            failpoint::CREATE,
            "vec-*.tov.tmp",
            ErrorKind::PermissionDenied,
            false,
            false,
        ),
        (
            failpoint::WRITE,
            "vec-*.tov.tmp",
            ErrorKind::StorageFull,
            false,
            false,
        ),
        (
            failpoint::FSYNC,
            "vec-*.tov.tmp",
            ErrorKind::Other,
            false,
            true,
        ),
        (
            failpoint::FSYNC_DIR,
            "collections/0",
            ErrorKind::Other,
            false,
            true,
        ),
    ];
    for (point, file, kind, first_batch, refuses) in cases {
        let what = format!("{point} on {file}");
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open_or_create(dir.path()).expect("create");
        let coll = db
            .create_collection("c", CollectionConfig::new(16))
            .expect("collection");
        let (before, batch) = if first_batch {
            (0, documents_in(&c, 0..FIRST))
        } else {
            coll.ingest(&documents_in(&c, 0..FIRST), &IngestOptions::default())
                .expect("first batch");
            (FIRST, documents_in(&c, FIRST..FIRST + SECOND))
        };
        let pattern = format!("{}*{file}", dir.path().display());
        failpoint::arm(point, &pattern, kind);
        let err = coll
            .ingest(&batch, &IngestOptions::default())
            .expect_err(&what);
        failpoint::disarm(&pattern);
        let msg = err.to_string();
        assert!(msg.contains("injected failure"), "{what}: {msg}");
        assert_eq!(
            coll.info().documents,
            before as u64,
            "{what}: nothing committed"
        );
        assert!(
            !coll.contains(&batch[0].id).expect("contains"),
            "{what}: nothing committed"
        );
        assert!(
            tmp_files(dir.path()).is_empty(),
            "{what}: files left behind"
        );
        let next = coll.ingest(&batch, &IngestOptions::default());
        if refuses {
            assert!(
                matches!(next, Err(tessera::Error::WritesRefused { .. })),
                "{what}: after a failed sync the handle must refuse writes, got {next:?}"
            );
            assert!(matches!(
                coll.delete(&[ExternalId::Int(0)]),
                Err(tessera::Error::WritesRefused { .. })
            ));
        } else {
            next.unwrap_or_else(|e| panic!("{what}: the retry (space back) must work: {e}"));
        }
        let after = if refuses {
            before
        } else {
            before + batch.len()
        };
        drop(coll);
        drop(db);
        reopen_and_check(dir.path(), &c, after, &what);
    }
}

#[test]
fn a_failed_catalog_write_refuses_further_writes_and_the_next_open_decides() {
    let c = corpus();
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, coll) = small_collection(dir.path(), &c, 0..FIRST);
    let pattern = format!("{}*catalog", dir.path().display());
    failpoint::arm(failpoint::CATALOG_COMMIT, &pattern, ErrorKind::Other);
    let err = coll
        .ingest(
            &documents_in(&c, FIRST..FIRST + SECOND),
            &IngestOptions::default(),
        )
        .expect_err("the catalog write fails");
    assert!(err.to_string().contains("injected failure"), "{err}");
    // Whether such a write reached the disk is unknown: its files wait, under their
    // temporary names, for the next open to complete or remove them.
    assert!(
        !tmp_files(dir.path()).is_empty(),
        "files kept for the next open"
    );
    failpoint::disarm(&pattern);
    for attempt in [
        coll.ingest(
            &documents_in(&c, FIRST..FIRST + 1),
            &IngestOptions::default(),
        )
        .map(|_| ()),
        coll.delete(&[ExternalId::Int(0)]).map(|_| ()),
        db.create_collection("d", CollectionConfig::new(16))
            .map(|_| ()),
    ] {
        assert!(
            matches!(attempt, Err(tessera::Error::WritesRefused { .. })),
            "{attempt:?}"
        );
    }
    // Reads go on.
    assert_eq!(coll.info().documents, FIRST as u64);
    assert!(
        coll.vectors(&ExternalId::Int(0))
            .expect("vectors")
            .is_some()
    );
    drop(coll);
    drop(db);
    reopen_and_check(dir.path(), &c, FIRST, "catalog write");
}

#[test]
fn a_failed_delete_commit_deletes_nothing() {
    let c = corpus();
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (_db, coll) = small_collection(dir.path(), &c, 0..FIRST);
        let pattern = format!("{}*catalog", dir.path().display());
        failpoint::arm(failpoint::CATALOG_COMMIT, &pattern, ErrorKind::Other);
        let err = coll
            .delete(&[ExternalId::Int(3)])
            .expect_err("delete fails");
        failpoint::disarm(&pattern);
        assert!(err.to_string().contains("injected failure"), "{err}");
        assert!(coll.contains(&ExternalId::Int(3)).expect("contains"));
    }
    reopen_and_check(dir.path(), &c, FIRST, "delete commit");
}

#[test]
fn a_failed_rename_after_the_catalog_write_still_acknowledges_the_batch() {
    let c = corpus();
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (_db, coll) = small_collection(dir.path(), &c, 0..FIRST);
        let pattern = format!("{}*collections/0/", dir.path().display());
        failpoint::arm(failpoint::RENAME, &pattern, ErrorKind::Other);
        coll.ingest(
            &documents_in(&c, FIRST..FIRST + SECOND),
            &IngestOptions::default(),
        )
        .expect("committed: the renames cannot fail it");
        failpoint::disarm(&pattern);
        assert_eq!(tmp_files(dir.path()).len(), 2, "segment and originals wait");
        assert_eq!(coll.info().documents, (FIRST + SECOND) as u64);
        let id = ExternalId::Int((FIRST + 1) as u64);
        assert!(coll.vectors(&id).expect("vectors").is_some());
        // Another reader finds the files under their temporary names.
        let reader = Database::open_read_only(dir.path()).expect("read-only open");
        assert_eq!(
            reader.collection("c").expect("c").info().documents,
            (FIRST + SECOND) as u64
        );
    }
    reopen_and_check(dir.path(), &c, FIRST + SECOND, "rename");
}
