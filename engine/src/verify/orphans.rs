//! Files and directories the catalog does not account for. A writer's open removes most of
//! them (`tessera_storage::layout`'s cleanup rules); verification only reports them, with
//! what their name says about how they came to be there. Superseded data files are notes,
//! not problems: a healthy database has them between a merge or codec expansion and the
//! next writer open.

use std::collections::HashSet;
use std::path::Path;

use tessera_storage::catalog::Manifest;
use tessera_storage::fsutil::TMP_SUFFIX;
use tessera_storage::layout::{COLLECTIONS_DIR, CollectionDir, DataFile};

use super::VerifyReport;

/// Reports the data files and temporary files of `dir` that `manifest` does not reference.
pub(super) fn check_collection_files(
    name: &str,
    dir: &CollectionDir,
    manifest: &Manifest,
    report: &mut VerifyReport,
) {
    let c = Some(name);
    match dir.unreferenced_files(manifest) {
        Ok(files) => {
            for path in files {
                let file = path.file_name().map(|n| n.to_string_lossy().into_owned());
                let subject = path.display().to_string();
                match file.as_deref().and_then(DataFile::parse) {
                    // File ids come from the manifest's counter: one below it was published
                    // by a commit the catalog has, and superseded since (a merge, an
                    // expanded codec). The engine keeps it while snapshots may map it.
                    Some((_, id)) if id < manifest.next_file_id => report.note(
                        c,
                        subject,
                        "superseded by a later commit; a writer's open removes it".into(),
                    ),
                    Some((_, id)) => report.push(
                        c,
                        subject,
                        format!(
                            "a data file the manifest does not reference, with file id {id} not \
                             below the next file id {}: published by a commit the catalog lost",
                            manifest.next_file_id
                        ),
                    ),
                    None => report.push(
                        c,
                        subject,
                        "a data file the manifest does not reference".into(),
                    ),
                }
            }
        }
        Err(e) => report.push_storage(c, &e),
    }
    let referenced = referenced_names(manifest);
    let Ok(entries) = std::fs::read_dir(dir.path()) else {
        // A missing directory shows as missing files, if the manifest has any.
        return;
    };
    let mut tmps: Vec<_> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let published = name.strip_suffix(TMP_SUFFIX)?.to_owned();
            (!referenced.contains(&published)).then(|| e.path())
        })
        .collect();
    tmps.sort();
    for path in tmps {
        report.push(
            c,
            path.display().to_string(),
            "a temporary file of a commit that never reached the catalog (a writer's open \
             removes it)"
                .into(),
        );
    }
}

/// The file names a manifest references (a referenced file may still be under its
/// temporary name, if its commit crashed before the rename; that is not an orphan).
fn referenced_names(manifest: &Manifest) -> HashSet<String> {
    let mut names: HashSet<String> = HashSet::new();
    for s in &manifest.segments {
        names.insert(s.file.clone());
        if let Some(o) = &s.originals {
            names.insert(o.file.clone());
        }
    }
    if let Some(c) = &manifest.codec {
        names.insert(c.file.clone());
    }
    names
}

/// Reports the directories under `db/collections` that belong to no collection of the
/// catalog (`live` holds the ids of those that exist).
pub(super) fn check_collection_dirs(db: &Path, live: &[u32], report: &mut VerifyReport) {
    let root = db.join(COLLECTIONS_DIR);
    let Ok(entries) = std::fs::read_dir(&root) else {
        return;
    };
    let mut orphans: Vec<_> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.parse::<u32>().is_ok_and(|id| !live.contains(&id))
        })
        .map(|e| e.path())
        .collect();
    orphans.sort();
    for path in orphans {
        report.push(
            None,
            path.display().to_string(),
            "a collection directory of no collection in the catalog (a dropped or never \
             created one; a writer's open removes it)"
                .into(),
        );
    }
}
