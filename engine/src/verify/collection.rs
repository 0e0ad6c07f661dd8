//! Verification of one collection: its files in full, each against its manifest entry, then
//! its catalog records against what the files hold.

use std::collections::HashMap;
use std::path::PathBuf;

use roaring::RoaringBitmap;
use tessera_storage::ExternalId;
use tessera_storage::catalog::{Catalog, CollectionRecord, DocLocation, Manifest, SegmentRef};
use tessera_storage::fsutil::tmp_path;
use tessera_storage::layout::CollectionDir;
use tessera_storage::segment::SegmentReader;
use tessera_storage::verify::{FileCheck, verify_codec, verify_originals, verify_segment};

use super::VerifyReport;
use super::orphans::check_collection_files;
use crate::error::Result;
use crate::load::originals_mismatch;
use crate::options::CollectionConfig;

/// One manifest segment as verification found it.
struct Segment<'m> {
    entry: &'m SegmentRef,
    /// `None` when the file is missing or damaged (reported already).
    reader: Option<SegmentReader>,
    /// Its tombstones that are in range (out-of-range ones are reported and left out).
    deleted: RoaringBitmap,
}

/// Checks collection `record` (directory `dir`), adding what it finds to `report`. Errors
/// are the catalog's own read failures.
pub(super) fn check(
    catalog: &Catalog,
    record: &CollectionRecord,
    dir: &CollectionDir,
    report: &mut VerifyReport,
) -> Result<()> {
    let name = record.name.as_str();
    let c = Some(name);
    let config: Option<CollectionConfig> = match serde_json::from_value(record.config.clone()) {
        Ok(config) => Some(config),
        Err(e) => {
            report.push(c, "collection record".into(), format!("settings: {e}"));
            None
        }
    };
    let manifest = match catalog.manifest(record.id) {
        Ok(Some(m)) => m,
        Ok(None) => {
            report.push(c, "manifest".into(), "the catalog has none".into());
            return Ok(());
        }
        Err(e @ tessera_storage::Error::CorruptRecord { .. }) => {
            // Without a manifest nothing else can be checked against it.
            report.push_storage(c, &e);
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(codec) = &manifest.codec {
        let check = verify_codec(&locate(dir, &codec.file));
        if let (Some(data), Some(config)) = (&check.reader, &config)
            && data.dim != config.dim
        {
            report.push(
                c,
                locate(dir, &codec.file).display().to_string(),
                format!(
                    "codec of dimension {}, collection of {}",
                    data.dim, config.dim
                ),
            );
        }
        count_file(report, name, &check);
    }
    let mut segments: HashMap<u64, Segment<'_>> = HashMap::new();
    for entry in &manifest.segments {
        let reader = check_segment(report, name, dir, entry, config.as_ref());
        segments.insert(
            entry.id,
            Segment {
                entry,
                reader,
                deleted: RoaringBitmap::new(),
            },
        );
    }
    let records = catalog.collection_records(record.id)?;
    for e in &records.problems {
        report.push_storage(c, e);
    }
    check_tombstones(report, name, records.tombstones, &mut segments);
    let map = check_id_map(report, name, records.locations, &segments);
    check_live_documents(report, name, &map, &manifest, &segments);
    check_live_counts(report, name, &manifest, &segments);
    for id in records.metadata {
        report.checked.metadata_records += 1;
        if !map.contains_key(&id) {
            report.push(
                c,
                format!("metadata of document {id}"),
                "the id map has no such document".into(),
            );
        }
    }
    for id in records.texts {
        report.checked.text_records += 1;
        if !map.contains_key(&id) {
            report.push(
                c,
                format!("kept text of document {id}"),
                "the id map has no such document".into(),
            );
        }
    }
    check_collection_files(name, dir, &manifest, report);
    Ok(())
}

/// Where data file `name` is: under its final name, or still under its temporary one when
/// its commit crashed before the rename (a writer's open completes it; not a fault). A file
/// under neither name is looked for under its final name, which reports it missing.
fn locate(dir: &CollectionDir, name: &str) -> PathBuf {
    let path = dir.file(name);
    let tmp = tmp_path(&path);
    if !path.exists() && tmp.exists() {
        tmp
    } else {
        path
    }
}

fn count_file<T>(report: &mut VerifyReport, collection: &str, check: &FileCheck<T>) {
    report.checked.files += 1;
    report.checked.sections += check.sections as u64;
    report.checked.original_documents += check.documents as u64;
    for e in &check.problems {
        report.push_storage(Some(collection), e);
    }
}

/// Verifies a segment's file and its originals, each against the manifest entry.
fn check_segment(
    report: &mut VerifyReport,
    collection: &str,
    dir: &CollectionDir,
    entry: &SegmentRef,
    config: Option<&CollectionConfig>,
) -> Option<SegmentReader> {
    let path = locate(dir, &entry.file);
    let check = verify_segment(&path);
    count_file(report, collection, &check);
    report.checked.documents += u64::from(entry.n_docs);
    let originals = entry.originals.as_ref().map(|o| {
        let opath = locate(dir, &o.file);
        let check = verify_originals(&opath);
        count_file(report, collection, &check);
        if let Some(originals) = &check.reader
            && originals.file_len() != o.bytes
        {
            report.push(
                Some(collection),
                opath.display().to_string(),
                format!(
                    "{} bytes, its manifest entry {}",
                    originals.file_len(),
                    o.bytes
                ),
            );
        }
        (opath, check.reader)
    });
    let reader = check.reader?;
    if let Some((opath, Some(o))) = &originals
        && let Some(reason) = originals_mismatch(o, &reader, entry.id)
    {
        report.push(Some(collection), opath.display().to_string(), reason);
    }
    let m = reader.meta();
    let mut mismatch = Vec::new();
    if m.n_docs != entry.n_docs {
        mismatch.push(format!("{} documents, manifest {}", m.n_docs, entry.n_docs));
    }
    if m.n_tokens != entry.n_tokens {
        mismatch.push(format!(
            "{} tokens, manifest {}",
            m.n_tokens, entry.n_tokens
        ));
    }
    if let Some(config) = config
        && m.dim != config.dim
    {
        mismatch.push(format!("dimension {}, collection {}", m.dim, config.dim));
    }
    if reader.file_len() != entry.bytes {
        mismatch.push(format!(
            "{} bytes, manifest {}",
            reader.file_len(),
            entry.bytes
        ));
    }
    if !mismatch.is_empty() {
        report.push(
            Some(collection),
            path.display().to_string(),
            format!(
                "does not match its manifest entry (segment {}): {}",
                entry.id,
                mismatch.join("; ")
            ),
        );
    }
    // A segment whose shape disagrees with its entry cannot check records against it.
    (m.n_docs == entry.n_docs).then_some(reader)
}

/// Tombstones must name a segment of the manifest and a document inside it; those that do
/// are kept in `segments` for the id-map and count checks.
fn check_tombstones(
    report: &mut VerifyReport,
    collection: &str,
    tombstones: Vec<(u64, RoaringBitmap)>,
    segments: &mut HashMap<u64, Segment<'_>>,
) {
    for (seg, mut bitmap) in tombstones {
        report.checked.tombstones += bitmap.len();
        let subject = format!("tombstones of segment {seg}");
        let Some(s) = segments.get_mut(&seg) else {
            report.push(
                Some(collection),
                subject,
                format!(
                    "the manifest has no such segment ({} deleted documents)",
                    bitmap.len()
                ),
            );
            continue;
        };
        let n_docs = s.entry.n_docs;
        let beyond = bitmap.range(n_docs..).collect::<Vec<u32>>();
        if let Some(first) = beyond.first() {
            report.push(
                Some(collection),
                subject,
                format!(
                    "local document {first} is deleted, but the segment has {n_docs} documents \
                     ({} tombstones out of range)",
                    beyond.len()
                ),
            );
            bitmap.remove_range(n_docs..);
        }
        s.deleted = bitmap;
    }
}

/// Every id-map entry must name a segment of the manifest, a document inside it that is not
/// deleted, and one whose external id is the entry's. Returns the map for the checks that
/// follow.
fn check_id_map(
    report: &mut VerifyReport,
    collection: &str,
    locations: Vec<(ExternalId, DocLocation)>,
    segments: &HashMap<u64, Segment<'_>>,
) -> HashMap<ExternalId, DocLocation> {
    let mut map = HashMap::with_capacity(locations.len());
    for (id, loc) in locations {
        report.checked.id_map_entries += 1;
        let subject = format!("id-map entry of document {id}");
        let (seg, local) = (loc.segment, loc.local);
        let reason = match segments.get(&seg) {
            None => Some(format!(
                "points at segment {seg}, which the manifest does not have"
            )),
            Some(s) if local >= s.entry.n_docs => Some(format!(
                "points at local document {local} of segment {seg}, which has {} documents",
                s.entry.n_docs
            )),
            Some(s) if s.deleted.contains(local) => Some(format!(
                "points at local document {local} of segment {seg}, which is deleted"
            )),
            Some(s) => match s.reader.as_ref().and_then(|r| r.external_id(local)) {
                Some(held) if *held != id => Some(format!(
                    "points at local document {local} of segment {seg}, which is document {held}"
                )),
                _ => None,
            },
        };
        if let Some(reason) = reason {
            report.push(Some(collection), subject, reason);
        }
        map.insert(id, loc);
    }
    map
}

/// Every live document of every segment must have the id-map entry that points at it.
fn check_live_documents(
    report: &mut VerifyReport,
    collection: &str,
    map: &HashMap<ExternalId, DocLocation>,
    manifest: &Manifest,
    segments: &HashMap<u64, Segment<'_>>,
) {
    for entry in &manifest.segments {
        let Some(s) = segments.get(&entry.id) else {
            continue;
        };
        let Some(reader) = &s.reader else {
            continue;
        };
        for (local, id) in reader.external_ids().iter().enumerate() {
            let local = local as u32;
            if s.deleted.contains(local) {
                continue;
            }
            let here = DocLocation {
                segment: entry.id,
                local,
            };
            let reason = match map.get(id) {
                Some(loc) if *loc == here => continue,
                Some(loc) => format!(
                    "its id-map entry points at local document {} of segment {} instead",
                    loc.local, loc.segment
                ),
                None => "it has no id-map entry".into(),
            };
            report.push(
                Some(collection),
                format!(
                    "document {id} (local document {local} of segment {})",
                    entry.id
                ),
                format!("live (not deleted), but {reason}"),
            );
        }
    }
}

/// The manifest's live counts must be what its segments and tombstones imply. Tokens are
/// only counted when every segment could be read.
fn check_live_counts(
    report: &mut VerifyReport,
    collection: &str,
    manifest: &Manifest,
    segments: &HashMap<u64, Segment<'_>>,
) {
    let mut docs = 0u64;
    let mut tokens = Some(0u64);
    for entry in &manifest.segments {
        let Some(s) = segments.get(&entry.id) else {
            continue;
        };
        docs += u64::from(entry.n_docs).saturating_sub(s.deleted.len());
        tokens = match (tokens, &s.reader) {
            (Some(t), Some(r)) => {
                let off = r.doc_offsets();
                let deleted: u64 = s
                    .deleted
                    .iter()
                    .map(|l| off[l as usize + 1] - off[l as usize])
                    .sum();
                Some(t + r.meta().n_tokens - deleted)
            }
            _ => None,
        };
    }
    let mut wrong = Vec::new();
    if docs != manifest.live_docs {
        wrong.push(format!(
            "it counts {} live documents, its segments and tombstones {docs}",
            manifest.live_docs
        ));
    }
    if let Some(t) = tokens
        && t != manifest.live_tokens
    {
        wrong.push(format!(
            "it counts {} live tokens, its segments and tombstones {t}",
            manifest.live_tokens
        ));
    }
    if !wrong.is_empty() {
        report.push(Some(collection), "manifest".into(), wrong.join("; "));
    }
}
