//! Durable file publication and the database's writer lock.

use std::fs::{File, OpenOptions};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::failpoint;

/// Suffix of files being written; any left at open time are debris of a crash.
pub const TMP_SUFFIX: &str = ".tmp";

/// Flushes a directory's entries to disk, so a rename or unlink inside it survives a crash.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let d = File::open(dir).map_err(|e| Error::io(dir, e))?;
    failpoint::check(failpoint::FSYNC_DIR, dir)
        .and_then(|()| d.sync_all())
        .map_err(|source| Error::Sync {
            path: dir.to_path_buf(),
            source,
        })
}

/// The temporary name under which `path` is written: `path` + [`TMP_SUFFIX`].
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(TMP_SUFFIX);
    PathBuf::from(name)
}

/// Writes the bytes of `path` durably under its temporary name ([`tmp_path`]): written,
/// synced, and its directory entry synced, but not yet renamed. [`publish`] renames it once
/// whatever makes it part of the database is durable. On error the temporary file is
/// removed. Returns what `write` returned.
pub fn write_unpublished<T>(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<T>,
) -> Result<T> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::corrupt(path, "file has no parent directory"))?;
    let tmp = tmp_path(path);
    let result = (|| {
        let file = failpoint::check(failpoint::CREATE, &tmp)
            .and_then(|()| OpenOptions::new().write(true).create_new(true).open(&tmp))
            .map_err(|e| Error::io(&tmp, e))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        let value = write(&mut w)
            .and_then(|v| failpoint::check(failpoint::WRITE, &tmp).map(|()| v))
            .map_err(|e| Error::io(&tmp, e))?;
        let file = w
            .into_inner()
            .map_err(|e| Error::io(&tmp, e.into_error()))?;
        failpoint::check(failpoint::FSYNC, &tmp)
            .and_then(|()| file.sync_all())
            .map_err(|source| Error::Sync {
                path: tmp.clone(),
                source,
            })?;
        fsync_dir(dir)?;
        Ok(value)
    })();
    if result.is_err() {
        // Best effort: the temporary file is garbage either way and open() removes it too.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Renames `path`'s temporary file (written by [`write_unpublished`]) to `path`. The caller
/// syncs the directory when the rename must survive a crash.
pub fn publish(path: &Path) -> Result<()> {
    failpoint::check(failpoint::RENAME, path)
        .and_then(|()| std::fs::rename(tmp_path(path), path))
        .map_err(|e| Error::io(path, e))
}

/// Writes `path` durably and publishes it at once: [`write_unpublished`], [`publish`], and
/// the directory synced. A crash leaves either no file or the complete one (plus perhaps a
/// `.tmp` file, which [`remove_tmp_files`] clears). Returns what `write` returned.
pub fn write_durably<T>(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<T>,
) -> Result<T> {
    let value = write_unpublished(path, write)?;
    if let Err(e) = publish(path) {
        let _ = std::fs::remove_file(tmp_path(path));
        return Err(e);
    }
    let dir = path
        .parent()
        .ok_or_else(|| Error::corrupt(path, "file has no parent directory"))?;
    fsync_dir(dir)?;
    Ok(value)
}

/// Removes files ending in [`TMP_SUFFIX`] from `dir`; returns how many were removed.
pub fn remove_tmp_files(dir: &Path) -> Result<usize> {
    let mut removed = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if entry.file_name().to_string_lossy().ends_with(TMP_SUFFIX) {
            std::fs::remove_file(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
            removed += 1;
        }
    }
    if removed > 0 {
        fsync_dir(dir)?;
    }
    Ok(removed)
}

/// An exclusive advisory lock on a database directory, held while the value lives.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Name of the lock file inside the database directory.
    pub const FILE_NAME: &'static str = "LOCK";

    /// How long a held lock is retried before [`Error::Locked`]: far longer than a fork's
    /// window before its exec, far shorter than anything a user would wait on.
    pub const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

    /// Takes the writer lock of database `dir`, failing with [`Error::Locked`] if another
    /// process (or another handle in this process) holds it for [`DirLock::RELEASE_WAIT`].
    pub fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(Self::FILE_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        // A lock belongs to the open file, which a process forking at this moment shares
        // with its child until the child's exec closes the copy: a writer that has just
        // closed the database can still be seen holding it for that long. Retry briefly
        // before calling the directory locked.
        let deadline = std::time::Instant::now() + Self::RELEASE_WAIT;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(DirLock { _file: file, path }),
                Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(Error::Locked {
                        path: dir.to_path_buf(),
                        lock: path,
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
            }
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn second_lock_on_same_dir_is_refused_until_first_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DirLock::acquire(dir.path()).expect("first lock");
        assert!(matches!(
            DirLock::acquire(dir.path()),
            Err(Error::Locked { .. })
        ));
        drop(first);
        DirLock::acquire(dir.path()).expect("lock after release");
    }

    #[test]
    fn failed_write_leaves_neither_file_nor_tmp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.bin");
        let res = write_durably(&path, |w| {
            w.write_all(b"partial")?;
            Err::<(), _>(std::io::Error::other("injected"))
        });
        assert!(res.is_err());
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
    }

    #[test]
    fn tmp_debris_is_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.tsg.tmp"), b"x").expect("write");
        std::fs::write(dir.path().join("b.tsg"), b"x").expect("write");
        assert_eq!(remove_tmp_files(dir.path()).expect("gc"), 1);
        assert!(dir.path().join("b.tsg").exists());
    }
}
