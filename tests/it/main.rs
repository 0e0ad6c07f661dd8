//! Integration tests of the Tessera library through its public API.

mod bad_input;
mod catalog_records;
mod compat;
mod concurrency;
mod corruption;
mod corruption_sweep;
mod crash;
mod failpoints;
mod filters;
mod full_disk;
mod kill_loop;
mod lifecycle;
mod merges;
mod originals;
mod quality;
mod rag;
mod readers;
mod threads;
mod verify;
mod wal;
