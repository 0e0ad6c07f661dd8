//! Tessera's storage layer: on-disk formats and durability, and nothing about compute.
//!
//! * [`container`]: the checksummed, sectioned file container every data file uses.
//! * [`segment`]: segment files (compressed documents of one commit) and their reader.
//! * [`codec`]: codec files (centroids and residual quantiser).
//! * [`originals`]: originals files (a segment's ingested vectors at f16, bf16 or f32).
//! * [`verify`]: full checks of one data file, every problem reported as a value.
//! * [`records`]: the catalog's keys and values as bytes, and their checked decoders.
//! * [`catalog`]: the RocksDB catalog (collections, manifests, id map, tombstones, metadata);
//!   with [`layout`], behind the default feature `catalog` (the formats build without RocksDB).
//! * [`fsutil`]: durable publication of files and the writer lock.
//! * [`failpoint`]: test-only fault injection in the commit path (feature `failpoints`).
//!
//! The byte-level specification is `storage/FORMAT.md`; readers validate length, magic,
//! version and checksums before handing out any view.
//!
//! # Safety contract for a database directory
//! Files under a database directory are written once and never modified in place; they are
//! memory-mapped while in use. Editing or truncating them from outside Tessera while a
//! database is open is undefined behaviour, as it is for SQLite and RocksDB.

#[cfg(target_endian = "big")]
compile_error!(
    "Tessera's file formats are little-endian and mapped in place; big-endian hosts are not supported"
);

#[cfg(feature = "catalog")]
pub mod catalog;
pub mod codec;
pub mod container;
pub mod doctext;
mod error;
pub mod failpoint;
pub mod fsutil;
mod ids;
#[cfg(feature = "catalog")]
pub mod layout;
mod mmap;
pub mod originals;
pub mod records;
pub mod segment;
pub mod verify;

pub use error::{Error, Result};
pub use ids::ExternalId;
pub use mmap::FileBytes;
