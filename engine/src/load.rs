//! Loading a collection at open: its codec, segments, originals and tombstones, each
//! checked against the catalog before use (the disk can say anything).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use roaring::RoaringBitmap;
use tessera_storage::ExternalId;
use tessera_storage::catalog::{Catalog, CollectionRecord, DocLocation, Manifest};
use tessera_storage::codec as codec_file;
use tessera_storage::layout::{CATALOG_DIR, Cleanup, CollectionDir};
use tessera_storage::originals::OriginalsReader;
use tessera_storage::segment::SegmentReader;

use crate::codec::Codec;
use crate::collection::CollectionState;
use crate::error::{Error, Result};
use crate::options::CollectionConfig;
use crate::snapshot::{SegmentView, SnapshotInner};

pub(crate) fn load_collection(
    db: &Path,
    catalog: &Catalog,
    record: CollectionRecord,
    cleanup: Cleanup,
) -> Result<CollectionState> {
    let config: CollectionConfig = serde_json::from_value(record.config.clone()).map_err(|e| {
        tessera_storage::Error::CorruptRecord {
            path: db.join(CATALOG_DIR),
            key: format!("collection {:?}", record.name),
            reason: e.to_string(),
        }
    })?;
    let dir = CollectionDir::new(db, record.id);
    let manifest = catalog.manifest(record.id)?.unwrap_or_default();
    let codec = match &manifest.codec {
        Some(c) => Some(Arc::new(Codec::from_data(
            c.id,
            dir.open_published(
                &c.file,
                cleanup,
                |p| Ok(codec_file::read_codec(p)?),
                is_not_found,
            )?,
        ))),
        None => None,
    };
    let mut tombstones: HashMap<u64, RoaringBitmap> =
        catalog.tombstones(record.id)?.into_iter().collect();
    let mut segments = Vec::with_capacity(manifest.segments.len());
    // Filter indexes, rebuilt from the catalog's metadata (module `filter`).
    let mut fields = crate::filter::index::load(catalog, record.id, &manifest, &record.name)?;
    for s in &manifest.segments {
        let reader = dir.open_published(
            &s.file,
            cleanup,
            |p| Ok(SegmentReader::open(p)?),
            is_not_found,
        )?;
        if reader.meta().dim != config.dim || reader.meta().n_docs != s.n_docs {
            return Err(tessera_storage::Error::Corrupt {
                path: reader.path().to_path_buf(),
                reason: "segment does not match its manifest entry".into(),
            }
            .into());
        }
        let originals = match &s.originals {
            Some(o) => Some(Arc::new(dir.open_published(
                &o.file,
                cleanup,
                |p| open_originals(p, &reader, s.id),
                is_not_found,
            )?)),
            None => None,
        };
        let deleted = tombstones.remove(&s.id).unwrap_or_default();
        if let Some(max) = deleted.max()
            && max >= s.n_docs
        {
            return Err(corrupt_record(
                db,
                &record.name,
                format!("tombstones of segment {}", s.id),
                format!(
                    "local document {max} is deleted, but the segment has {} documents",
                    s.n_docs
                ),
            ));
        }
        segments.push(SegmentView {
            id: s.id,
            reader: Arc::new(reader),
            originals,
            tombstones: Arc::new(deleted),
            fields: Arc::new(fields.remove(&s.id).unwrap_or_default()),
        });
    }
    if let Some(seg) = tombstones.keys().min() {
        return Err(corrupt_record(
            db,
            &record.name,
            format!("tombstones of segment {seg}"),
            "the manifest has no such segment".into(),
        ));
    }
    check_live_counts(db, &record.name, &manifest, &segments)?;
    dir.clean(&manifest, &record.name, cleanup)?;
    Ok(CollectionState::new(
        record,
        config,
        dir,
        manifest,
        SnapshotInner { codec, segments },
    ))
}

pub(crate) fn corrupt_record(db: &Path, collection: &str, key: String, reason: String) -> Error {
    tessera_storage::Error::CorruptRecord {
        path: db.join(CATALOG_DIR),
        key: format!("collection {collection:?}: {key}"),
        reason,
    }
    .into()
}

/// A catalog location of document `id` must name a document of its segment (`n_docs`
/// documents): the id map comes from disk and is checked before it indexes anything.
pub(crate) fn check_location(
    id: &ExternalId,
    loc: &DocLocation,
    n_docs: u32,
    corrupt: impl Fn(String, String) -> Error,
) -> Result<()> {
    if loc.local < n_docs {
        return Ok(());
    }
    Err(corrupt(
        format!("location of document {id}"),
        format!(
            "local document {} of segment {}, which has {n_docs} documents",
            loc.local, loc.segment
        ),
    ))
}

/// The manifest's live counts must be what its segments and tombstones imply: deletes
/// decrement them, and a count that disagrees would underflow or report documents that
/// searches cannot return.
fn check_live_counts(
    db: &Path,
    collection: &str,
    manifest: &Manifest,
    segments: &[SegmentView],
) -> Result<()> {
    let (mut docs, mut tokens) = (0u64, 0u64);
    for s in segments {
        let off = s.reader.doc_offsets();
        docs += u64::from(s.reader.meta().n_docs) - s.tombstones.len();
        tokens += s.reader.meta().n_tokens;
        for local in s.tombstones.iter() {
            let l = local as usize;
            tokens -= off[l + 1] - off[l];
        }
    }
    if (docs, tokens) != (manifest.live_docs, manifest.live_tokens) {
        return Err(corrupt_record(
            db,
            collection,
            "manifest".into(),
            format!(
                "it counts {} live documents and {} live tokens, its segments and tombstones {docs} and {tokens}",
                manifest.live_docs, manifest.live_tokens
            ),
        ));
    }
    Ok(())
}

/// Opens a segment's originals file and checks that it holds the same documents: the
/// segment it names, its dimension, and token offsets equal to the segment's.
pub(crate) fn open_originals(
    path: &Path,
    seg: &SegmentReader,
    seg_id: u64,
) -> Result<OriginalsReader> {
    let originals = OriginalsReader::open(path)?;
    if let Some(reason) = originals_mismatch(&originals, seg, seg_id) {
        return Err(tessera_storage::Error::Corrupt {
            path: path.to_path_buf(),
            reason,
        }
        .into());
    }
    Ok(originals)
}

/// How an originals file fails to hold the same documents as segment `seg_id`, if it does.
pub(crate) fn originals_mismatch(
    originals: &OriginalsReader,
    seg: &SegmentReader,
    seg_id: u64,
) -> Option<String> {
    let (m, sm) = (originals.meta(), seg.meta());
    if m.segment_id != seg_id
        || m.dim != sm.dim
        || m.n_docs != sm.n_docs
        || originals.doc_offsets() != seg.doc_offsets()
    {
        return Some(format!(
            "originals do not match segment {seg_id} ({}): segment {}, dim {}, {} documents",
            seg.path().display(),
            m.segment_id,
            m.dim,
            m.n_docs
        ));
    }
    None
}

/// Whether `e` says a file does not exist (a reader's view may name a file that a writer in
/// another process has renamed or removed since).
fn is_not_found(e: &Error) -> bool {
    matches!(e, Error::Storage(tessera_storage::Error::Io { source, .. })
        if source.kind() == std::io::ErrorKind::NotFound)
}
