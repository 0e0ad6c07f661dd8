//! Read-only memory maps of immutable files: the only module of this crate with `unsafe`.
//!
//! # Safety contract
//! Tessera never modifies, truncates or overwrites a segment or codec file after it has been
//! published (files are written under a temporary name, synced and renamed into place), and
//! removes them only by unlinking, which leaves existing maps valid on POSIX systems. Mapping
//! such files read-only is therefore sound as long as no outside process edits the database
//! directory, which the crate documentation forbids.
#![allow(unsafe_code)]

use std::fs::File;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};

/// Immutable bytes of a file: memory-mapped, empty (an empty file), or a copy in memory
/// (bytes that did not come from a file, e.g. a fuzzer's input).
#[derive(Clone, Debug)]
pub struct FileBytes {
    map: Option<Arc<memmap2::Mmap>>,
    /// A copy in 8-byte words, so that typed views of sections (which start at multiples of
    /// 64 in the file) are aligned as they are in a page-aligned map; `len` bytes are used.
    copy: Option<(Arc<[u64]>, usize)>,
}

impl FileBytes {
    /// Maps `path` read-only.
    pub fn map(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len == 0 {
            return Ok(FileBytes {
                map: None,
                copy: None,
            });
        }
        // SAFETY: the file is immutable once published (see the module's safety contract), so
        // the mapped bytes cannot change or disappear while the map is alive.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Ok(FileBytes {
            map: Some(Arc::new(map)),
            copy: None,
        })
    }

    /// A copy of `bytes`, read as a file's contents would be: the readers' entry point for
    /// bytes that are not in a file (the fuzz targets under `tests/fuzz`).
    pub fn copy_of(bytes: &[u8]) -> Self {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        FileBytes {
            map: None,
            copy: Some((Arc::from(words), bytes.len())),
        }
    }
}

impl FileBytes {
    /// Asks the kernel to start reading `len` bytes at `offset` into the page cache, without
    /// waiting for them: a caller about to read several scattered ranges of a file that may
    /// not be resident announces them all first, so their reads overlap instead of faulting
    /// in one after another. Advisory: out-of-range requests and failures are ignored.
    pub fn will_need(&self, offset: usize, len: usize) {
        if let Some(map) = &self.map
            && offset.checked_add(len).is_some_and(|end| end <= map.len())
        {
            #[cfg(unix)]
            let _ = map.advise_range(memmap2::Advice::WillNeed, offset, len);
        }
    }
}

impl Deref for FileBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match (&self.map, &self.copy) {
            (Some(map), _) => map,
            (None, Some((words, len))) => &bytemuck::cast_slice::<u64, u8>(words)[..*len],
            (None, None) => &[],
        }
    }
}
