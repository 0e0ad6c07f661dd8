//! Catalog records are checked before use: a tombstone, a document location or a live count
//! that does not fit its segment is an error naming the record, never a panic or a wrong
//! answer.

use std::path::Path;

use roaring::RoaringBitmap;
use tessera::synthetic::{SyntheticCorpus, SyntheticSpec};
use tessera::{CollectionConfig, Database, ExternalId, IngestOptions};
use tessera_storage::catalog::{Catalog, CatalogBatch, DocLocation};
use tessera_tests::documents;

/// A database with collection "c" (id 0): one segment of 30 documents, ids 0..30.
fn build(dir: &Path) -> u64 {
    let db = Database::open_or_create(dir).expect("create");
    let coll = db
        .create_collection("c", CollectionConfig::new(16))
        .expect("collection");
    let corpus = SyntheticCorpus::generate(&SyntheticSpec {
        n_docs: 30,
        dim: 16,
        min_tokens: 3,
        max_tokens: 10,
        n_clusters: 8,
        ..SyntheticSpec::default()
    });
    coll.ingest(&documents(&corpus), &IngestOptions::default())
        .expect("ingest");
    drop(db);
    let catalog = Catalog::open(&dir.join("catalog"), false, true).expect("catalog");
    catalog
        .manifest(0)
        .expect("manifest")
        .expect("present")
        .segments[0]
        .id
}

/// Applies `edit` to the closed database's catalog in one commit.
fn edit_catalog(dir: &Path, edit: impl FnOnce(&mut CatalogBatch)) {
    let catalog = Catalog::open(&dir.join("catalog"), false, false).expect("catalog");
    let mut batch = CatalogBatch::default();
    edit(&mut batch);
    catalog.commit(batch).expect("commit");
}

fn corrupt_record_key(err: &tessera::Error) -> Option<&str> {
    match err {
        tessera::Error::Storage(tessera_storage::Error::CorruptRecord { key, .. }) => Some(key),
        _ => None,
    }
}

#[test]
fn a_tombstone_beyond_its_segment_refuses_the_open_naming_the_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seg = build(dir.path());
    edit_catalog(dir.path(), |b| {
        b.put_tombstones(0, seg, &RoaringBitmap::from_iter([3u32, 30]))
            .expect("tombstones");
    });
    for read_only in [false, true] {
        let err = if read_only {
            Database::open_read_only(dir.path())
        } else {
            Database::open(dir.path())
        }
        .expect_err("a stray tombstone must be refused");
        let key = corrupt_record_key(&err).unwrap_or_else(|| panic!("{err}"));
        assert!(
            key.contains(&format!("tombstones of segment {seg}")),
            "{key}"
        );
        assert!(err.to_string().contains("local document 30"), "{err}");
    }
}

#[test]
fn a_tombstone_of_a_segment_the_manifest_lacks_refuses_the_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seg = build(dir.path());
    edit_catalog(dir.path(), |b| {
        b.put_tombstones(0, seg + 100, &RoaringBitmap::from_iter([0u32]))
            .expect("tombstones");
    });
    let err = Database::open(dir.path()).expect_err("orphan tombstones");
    let key = corrupt_record_key(&err).unwrap_or_else(|| panic!("{err}"));
    assert!(
        key.contains(&format!("tombstones of segment {}", seg + 100)),
        "{key}"
    );
}

#[test]
fn live_counts_that_disagree_with_the_segments_refuse_the_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path());
    let catalog = Catalog::open(&dir.path().join("catalog"), false, false).expect("catalog");
    let mut manifest = catalog.manifest(0).expect("manifest").expect("present");
    // Zero live documents: a delete would have decremented below zero.
    manifest.live_docs = 0;
    let mut batch = CatalogBatch::default();
    batch.put_manifest(0, &manifest).expect("manifest");
    catalog.commit(batch).expect("commit");
    drop(catalog);
    let err = Database::open(dir.path()).expect_err("inconsistent counts");
    let key = corrupt_record_key(&err).unwrap_or_else(|| panic!("{err}"));
    assert!(key.contains("manifest"), "{key}");
    assert!(err.to_string().contains("0 live documents"), "{err}");
}

#[test]
fn a_location_outside_its_segment_is_refused_by_delete_and_vectors_without_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seg = build(dir.path());
    let id = ExternalId::Int(5);
    edit_catalog(dir.path(), |b| {
        b.put_location(
            0,
            &id,
            DocLocation {
                segment: seg,
                local: 1_000_000,
            },
        );
    });
    let db = Database::open(dir.path()).expect("open");
    let coll = db.collection("c").expect("c");
    let err = coll.vectors(&id).expect_err("out of range location");
    assert!(
        corrupt_record_key(&err).is_some_and(|k| k.contains("location of document 5")),
        "{err}"
    );
    let err = coll.delete(&[id]).expect_err("out of range location");
    assert!(
        corrupt_record_key(&err).is_some_and(|k| k.contains("location of document 5")),
        "{err}"
    );
    assert_eq!(coll.info().documents, 30, "nothing was deleted");
    // Other documents are unaffected.
    let report = coll.delete(&[ExternalId::Int(6)]).expect("delete");
    assert_eq!(report.deleted, 1);
}
