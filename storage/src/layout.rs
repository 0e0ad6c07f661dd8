//! The database directory's layout: where the catalog and each collection's data files live,
//! how data files are named, and what a writer's open does with files the catalog does not
//! account for (FORMAT.md, "Database directory").
//!
//! ```text
//! DB/LOCK                        writer lock (advisory, held by the one writer)
//! DB/catalog/                    RocksDB: collections, manifests, id map, tombstones, metadata
//! DB/collections/<id>/codec-<n>.tcd, seg-<n>.tsg, vec-<n>.tov   immutable data files
//! ```
//! A commit writes its data files first under temporary names (temp file, fsync, fsync
//! directory), makes them part of the collection in one synced RocksDB write batch, and only
//! then renames them to their final names. A temporary file that the catalog references is
//! a commit that crashed before its renames (the writer completes them at open); one that it
//! does not reference is a commit that never happened (removed at open). A final-named file
//! that the catalog does not reference can only mean the catalog lost commits, unless its
//! file id is below the manifest's counter: then a later commit superseded it (a codec
//! replaced by an expanded one, segments replaced by their merge) and it is removed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::catalog::Manifest;
use crate::fsutil::{fsync_dir, publish, remove_tmp_files, tmp_path};
use crate::{Error, Result};

/// The catalog's directory under a database directory.
pub const CATALOG_DIR: &str = "catalog";
/// The directory of the collections' data directories under a database directory.
pub const COLLECTIONS_DIR: &str = "collections";

/// What a writer's open does with files that the catalog does not account for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cleanup {
    /// A read-only open changes nothing.
    None,
    /// Databases from before [`crate::catalog::PUBLISH_AFTER_COMMIT`]: files were renamed
    /// into place before their commit, so an unreferenced one is a crashed commit's debris
    /// and is removed.
    Legacy,
    /// Temporary files are completed (referenced) or removed (not); an unreferenced
    /// published file below the manifest's file counter is superseded and removed; one at or
    /// above it is [`Error::LostCommits`].
    RefuseLostCommits,
}

/// The kinds of data file a collection directory holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataFile {
    /// `codec-<id>.tcd`.
    Codec,
    /// `seg-<id>.tsg`.
    Segment,
    /// `vec-<id>.tov`, named by its segment's id.
    Originals,
}

impl DataFile {
    fn parts(self) -> (&'static str, &'static str) {
        match self {
            DataFile::Codec => ("codec", "tcd"),
            DataFile::Segment => ("seg", "tsg"),
            DataFile::Originals => ("vec", "tov"),
        }
    }

    /// The file name of this kind with file id `id`.
    pub fn name(self, id: u64) -> String {
        let (stem, ext) = self.parts();
        format!("{stem}-{id:06}.{ext}")
    }

    /// The kind and file id in a name of the form Tessera writes (`seg-000012.tsg` → 12).
    pub fn parse(name: &str) -> Option<(DataFile, u64)> {
        let (stem, ext) = name.rsplit_once('.')?;
        let (kind, id) = stem.split_once('-')?;
        let kind = [DataFile::Codec, DataFile::Segment, DataFile::Originals]
            .into_iter()
            .find(|k| k.parts() == (kind, ext))?;
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some((kind, id.parse().ok()?))
    }
}

/// Whether `name` has a data file's extension (whatever its stem).
fn is_data_file(name: &str) -> bool {
    name.ends_with(".tsg") || name.ends_with(".tcd") || name.ends_with(".tov")
}

/// One collection's data directory.
#[derive(Clone, Debug)]
pub struct CollectionDir {
    path: PathBuf,
}

impl CollectionDir {
    /// The directory of collection `id` under database directory `db`.
    pub fn new(db: &Path, id: u32) -> Self {
        CollectionDir {
            path: db.join(COLLECTIONS_DIR).join(id.to_string()),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of data file `name` (a final name).
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Creates the directory and syncs its parent.
    pub fn create(&self) -> Result<()> {
        std::fs::create_dir_all(&self.path).map_err(|e| Error::io(&self.path, e))?;
        match self.path.parent() {
            Some(parent) => fsync_dir(parent),
            None => Ok(()),
        }
    }

    /// Opens data file `name` with `open`. A file whose commit crashed before its rename is
    /// still under its temporary name: a writer completes the rename first; a reader opens it
    /// where it is, and since a writer in another process may rename it at any moment, a
    /// file missing under both names is looked for once more. `missing` tells `open`'s
    /// not-found errors from the rest.
    pub fn open_published<T, E: From<Error>>(
        &self,
        name: &str,
        cleanup: Cleanup,
        open: impl Fn(&Path) -> std::result::Result<T, E>,
        missing: impl Fn(&E) -> bool,
    ) -> std::result::Result<T, E> {
        let path = self.file(name);
        let tmp = tmp_path(&path);
        if cleanup != Cleanup::None {
            if !path.exists() && tmp.exists() {
                publish(&path)?;
                fsync_dir(&self.path)?;
            }
            return open(&path);
        }
        let first = open(&path);
        if !matches!(&first, Err(e) if missing(e)) {
            return first;
        }
        let second = open(&tmp);
        if !matches!(&second, Err(e) if missing(e)) {
            return second;
        }
        open(&path)
    }

    /// Renames a committed batch's files from their temporary names and syncs the directory;
    /// whether every rename succeeded. A failure is not an error of the commit, which is
    /// durable already (see [`CollectionDir::open_published`]).
    pub fn publish_all(&self, files: &[PathBuf]) -> bool {
        let renamed = files.iter().all(|p| publish(p).is_ok());
        fsync_dir(&self.path).is_ok() && renamed
    }

    /// Data files (by their final names) that `manifest` does not reference, sorted.
    pub fn unreferenced_files(&self, manifest: &Manifest) -> Result<Vec<PathBuf>> {
        let keep = referenced(manifest);
        let entries = match std::fs::read_dir(&self.path) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&self.path, e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_data_file(&name) && !keep.contains(name.as_str()) {
                out.push(entry.path());
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes `files` and syncs the directory.
    pub fn remove_files(&self, files: &[PathBuf]) -> Result<()> {
        for path in files {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(path, e)),
            }
        }
        if !files.is_empty() {
            fsync_dir(&self.path)?;
        }
        Ok(())
    }

    /// What a writer's open does with the directory's files that `manifest` (of collection
    /// `collection`) does not account for; see [`Cleanup`].
    pub fn clean(&self, manifest: &Manifest, collection: &str, cleanup: Cleanup) -> Result<()> {
        match cleanup {
            Cleanup::None => Ok(()),
            Cleanup::Legacy => {
                remove_tmp_files(&self.path)?;
                self.remove_files(&self.unreferenced_files(manifest)?)
            }
            Cleanup::RefuseLostCommits => {
                remove_tmp_files(&self.path)?;
                let mut superseded = Vec::new();
                for path in self.unreferenced_files(manifest)? {
                    // File ids come from the manifest's counter, which every commit saves
                    // with the files it publishes: an id below it was published by a commit
                    // the catalog has, so the file was superseded since. An id at or above
                    // it belongs to a commit the catalog lacks.
                    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                    match name.as_deref().and_then(DataFile::parse) {
                        Some((_, id)) if id < manifest.next_file_id => superseded.push(path),
                        Some((_, id)) => {
                            return Err(Error::LostCommits {
                                path,
                                reason: format!(
                                    "its file id {id} is not below the next file id {} of collection {collection:?}, which is at commit {}",
                                    manifest.next_file_id, manifest.commits
                                ),
                            });
                        }
                        // Not a name Tessera writes: neither evidence nor ours to delete.
                        None => {}
                    }
                }
                self.remove_files(&superseded)
            }
        }
    }
}

/// The file names `manifest` references.
fn referenced(manifest: &Manifest) -> HashSet<&str> {
    let mut keep: HashSet<&str> = manifest.segments.iter().map(|s| s.file.as_str()).collect();
    keep.extend(
        manifest
            .segments
            .iter()
            .filter_map(|s| s.originals.as_ref().map(|o| o.file.as_str())),
    );
    if let Some(c) = &manifest.codec {
        keep.insert(c.file.as_str());
    }
    keep
}

/// Removes collection directories under database directory `db` whose id is not in `live`:
/// dropped collections (the drop committed, then crashed before removing the files) and
/// creations that crashed before their commit. Under [`Cleanup::RefuseLostCommits`], a
/// directory holding data files whose id the catalog has not handed out yet
/// (`next_collection_id` and above) can only come from a creation and ingests that the
/// catalog lost: the open fails instead.
pub fn remove_orphan_collection_dirs(
    db: &Path,
    live: &HashSet<u32>,
    next_collection_id: u32,
    cleanup: Cleanup,
) -> Result<()> {
    let root = db.join(COLLECTIONS_DIR);
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(id) = name.parse::<u32>() else {
            continue;
        };
        if live.contains(&id) {
            continue;
        }
        if cleanup == Cleanup::RefuseLostCommits && id >= next_collection_id {
            let has_data = std::fs::read_dir(entry.path())
                .map_err(|e| Error::io(entry.path(), e))?
                .flatten()
                .any(|f| is_data_file(&f.file_name().to_string_lossy()));
            if has_data {
                return Err(Error::LostCommits {
                    path: entry.path(),
                    reason: format!(
                        "the catalog has no collection {id} and would give that id to the next \
                         collection created ({next_collection_id})"
                    ),
                });
            }
        }
        std::fs::remove_dir_all(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_file_names_round_trip_and_foreign_names_are_not_ours() {
        for kind in [DataFile::Codec, DataFile::Segment, DataFile::Originals] {
            assert_eq!(DataFile::parse(&kind.name(12)), Some((kind, 12)));
        }
        assert_eq!(DataFile::name(DataFile::Segment, 12), "seg-000012.tsg");
        for foreign in [
            "seg-.tsg",
            "seg-12a.tsg",
            "seg-000012.tcd",
            "x-1.tsg",
            "notes.txt",
        ] {
            assert_eq!(DataFile::parse(foreign), None, "{foreign}");
        }
    }
}
