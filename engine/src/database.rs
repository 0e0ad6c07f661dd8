//! The database: its directory, the writer lock, the catalog and the set of collections.
//! The directory's layout and what an open does with files the catalog does not account for
//! are `tessera_storage::layout`'s; the commit protocol is the writer's ([`crate::writer`]).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::{Mutex, RwLock};
use tessera_storage::catalog::{
    Catalog, CatalogBatch, CollectionRecord, DbRecord, Manifest, PUBLISH_AFTER_COMMIT,
};
use tessera_storage::fsutil::{DirLock, fsync_dir};
use tessera_storage::layout::{
    CATALOG_DIR, COLLECTIONS_DIR, Cleanup, CollectionDir, remove_orphan_collection_dirs,
};

use crate::collection::{Collection, CollectionState};
use crate::error::{Error, Result};
use crate::load::load_collection;
use crate::options::CollectionConfig;
use crate::snapshot::SnapshotInner;

/// How often a read-only open loads a fresh catalog view when a file of the previous one
/// was removed meanwhile.
const READ_ONLY_LOAD_ATTEMPTS: u32 = 20;

/// An open database. Cheap to clone, `Send + Sync`: share it between threads freely.
#[derive(Clone, Debug)]
pub struct Database {
    inner: Arc<DbInner>,
}

#[derive(Debug)]
pub(crate) struct DbInner {
    pub(crate) path: PathBuf,
    pub(crate) catalog: Catalog,
    read_only: bool,
    _lock: Option<DirLock>,
    collections: RwLock<BTreeMap<String, Arc<CollectionState>>>,
    /// Serialises writers: one commit at a time per database.
    pub(crate) writer: Mutex<()>,
    /// Why this handle refuses writes, once a catalog write or an fsync has failed: the
    /// state on disk is then unknown (the write may yet be durable; the kernel may have
    /// dropped the unsynced pages), and only a new open establishes it.
    refused: Mutex<Option<String>>,
}

impl Database {
    /// Opens the database at `path` for writing, creating it if it does not exist.
    pub fn open_or_create(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_impl(path.as_ref(), true, false)
    }

    /// Opens an existing database for writing. Fails with a "locked" error if another
    /// process has it open for writing.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_impl(path.as_ref(), false, false)
    }

    /// Opens an existing database for reading only; works while another process writes.
    /// The view is the state at open time.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_impl(path.as_ref(), false, true)
    }

    fn open_impl(path: &Path, create: bool, read_only: bool) -> Result<Self> {
        let catalog_path = path.join(CATALOG_DIR);
        if !catalog_path.exists() {
            if !create {
                return Err(Error::NotADatabase {
                    path: path.to_path_buf(),
                    reason: "no catalog directory (create the database first)".into(),
                });
            }
            std::fs::create_dir_all(path.join(COLLECTIONS_DIR)).map_err(|e| {
                tessera_storage::Error::Io {
                    path: path.to_path_buf(),
                    source: e,
                }
            })?;
            fsync_dir(path)?;
        }
        let lock = if read_only {
            None
        } else {
            Some(DirLock::acquire(path)?)
        };
        let (catalog, collections, mut db_record, cleanup) = if read_only {
            // The files of a reader's catalog view can disappear before it maps them: a
            // writer in another process removes a dropped collection's directory, or at its
            // open a codec superseded since. A newer view no longer names them.
            let mut attempt = 1;
            loop {
                match Self::load(path, &catalog_path, create, read_only) {
                    Err(Error::Storage(tessera_storage::Error::Io { source, .. }))
                        if source.kind() == std::io::ErrorKind::NotFound
                            && attempt < READ_ONLY_LOAD_ATTEMPTS =>
                    {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        attempt += 1;
                    }
                    loaded => break loaded?,
                }
            }
        } else {
            Self::load(path, &catalog_path, create, read_only)?
        };
        if cleanup != Cleanup::None {
            let live: HashSet<u32> = collections.values().map(|s| s.record.id).collect();
            remove_orphan_collection_dirs(path, &live, db_record.next_collection_id, cleanup)?;
        }
        if cleanup == Cleanup::Legacy {
            // The debris of the old protocol is gone: from now on an unreferenced file is
            // evidence of lost commits.
            db_record.commit_protocol = PUBLISH_AFTER_COMMIT;
            catalog.put_db_record(&db_record)?;
        }
        Ok(Database {
            inner: Arc::new(DbInner {
                path: path.to_path_buf(),
                catalog,
                read_only,
                _lock: lock,
                collections: RwLock::new(collections),
                writer: Mutex::new(()),
                refused: Mutex::new(None),
            }),
        })
    }

    /// Opens the catalog and every collection's files.
    #[allow(clippy::type_complexity)]
    fn load(
        path: &Path,
        catalog_path: &Path,
        create: bool,
        read_only: bool,
    ) -> Result<(
        Catalog,
        BTreeMap<String, Arc<CollectionState>>,
        DbRecord,
        Cleanup,
    )> {
        let catalog = Catalog::open(catalog_path, create, read_only)?;
        let db_record = catalog.db_record()?;
        let cleanup = if read_only {
            Cleanup::None
        } else if db_record.commit_protocol >= PUBLISH_AFTER_COMMIT {
            Cleanup::RefuseLostCommits
        } else {
            Cleanup::Legacy
        };
        let mut collections = BTreeMap::new();
        for record in catalog.collections()? {
            let state = load_collection(path, &catalog, record, cleanup)?;
            collections.insert(state.record.name.clone(), Arc::new(state));
        }
        Ok((catalog, collections, db_record, cleanup))
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether this handle was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    /// Creates a collection.
    pub fn create_collection(&self, name: &str, config: CollectionConfig) -> Result<Collection> {
        self.inner.check_writable()?;
        let _w = self.inner.writer.lock();
        if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
            return Err(Error::InvalidConfig {
                collection: name.to_owned(),
                reason: "names must be 1 to 255 bytes without control characters".into(),
            });
        }
        config.validate().map_err(|reason| Error::InvalidConfig {
            collection: name.to_owned(),
            reason,
        })?;
        if self.inner.collections.read().contains_key(name) {
            return Err(Error::CollectionExists(name.to_owned()));
        }
        let mut dbr = self.inner.catalog.db_record()?;
        let id = dbr.next_collection_id;
        dbr.next_collection_id += 1;
        let record = CollectionRecord {
            id,
            name: name.to_owned(),
            config: serde_json::to_value(&config).map_err(|e| Error::InvalidConfig {
                collection: name.to_owned(),
                reason: e.to_string(),
            })?,
        };
        let dir = CollectionDir::new(&self.inner.path, id);
        self.inner.note(dir.create())?;
        let manifest = Manifest {
            next_file_id: 1,
            ..Manifest::default()
        };
        let mut batch = CatalogBatch::default();
        batch.put_collection(&record)?;
        batch.put_db_record(&dbr)?;
        batch.put_manifest(id, &manifest)?;
        self.inner.commit(batch)?;
        let state = Arc::new(CollectionState::new(
            record,
            config,
            dir,
            manifest,
            SnapshotInner::default(),
        ));
        self.inner
            .collections
            .write()
            .insert(name.to_owned(), state.clone());
        Ok(Collection::new(self.inner.clone(), state))
    }

    /// A handle on an existing collection.
    pub fn collection(&self, name: &str) -> Result<Collection> {
        let state = self.inner.state(name)?;
        Ok(Collection::new(self.inner.clone(), state))
    }

    /// Names of all collections, sorted.
    pub fn collection_names(&self) -> Vec<String> {
        self.inner.collections.read().keys().cloned().collect()
    }

    /// Drops a collection and deletes its files. Handles on it fail afterwards; searches
    /// already running on one of its snapshots finish normally.
    pub fn drop_collection(&self, name: &str) -> Result<()> {
        self.inner.check_writable()?;
        let _w = self.inner.writer.lock();
        let state = self.inner.state(name)?;
        let mut batch = CatalogBatch::default();
        batch.delete_collection(&state.record);
        self.inner.commit(batch)?;
        state.dropped.store(true, Ordering::SeqCst);
        self.inner.collections.write().remove(name);
        // Committed already; a failure here only leaves files that the next open removes.
        let _ = std::fs::remove_dir_all(state.dir.path());
        let _ = fsync_dir(&self.inner.path.join(COLLECTIONS_DIR));
        Ok(())
    }
}

impl Database {
    /// Reads every file and catalog record of the database and reports every fault found
    /// (see [`crate::verify()`], which does the same from a path without opening the
    /// database, and also works when the open fails). Nothing is repaired or removed.
    ///
    /// It takes this handle's writer mutex, so no commit through this handle changes the
    /// files while they are checked, but not the database's writer lock: it works on a
    /// read-only handle too, and then checks the catalog as of that handle's open. A writer
    /// handle's open has already completed interrupted commits and removed debris, so
    /// orphan files only show through a read-only handle or [`crate::verify()`].
    pub fn verify(&self) -> Result<crate::VerifyReport> {
        let _w = self.inner.writer.lock();
        crate::verify::verify_catalog(&self.inner.path, &self.inner.catalog)
    }
}

impl DbInner {
    /// The state of collection `name`.
    fn state(&self, name: &str) -> Result<Arc<CollectionState>> {
        self.collections
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::CollectionNotFound(name.to_owned()))
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly(self.path.clone()));
        }
        if let Some(reason) = self.refused.lock().clone() {
            return Err(Error::WritesRefused {
                path: self.path.clone(),
                reason,
            });
        }
        Ok(())
    }

    pub(crate) fn refuse_writes(&self, reason: String) {
        self.refused.lock().get_or_insert(reason);
    }

    /// Passes `r` on, refusing further writes if it is a failed sync.
    pub(crate) fn note<T>(&self, r: tessera_storage::Result<T>) -> Result<T> {
        if let Err(e @ tessera_storage::Error::Sync { .. }) = &r {
            self.refuse_writes(e.to_string());
        }
        Ok(r?)
    }

    /// Commits a catalog batch; a failure refuses further writes.
    pub(crate) fn commit(&self, batch: CatalogBatch) -> Result<()> {
        self.catalog.commit(batch).map_err(|e| {
            self.refuse_writes(format!("a catalog write failed: {e}"));
            e.into()
        })
    }
}
