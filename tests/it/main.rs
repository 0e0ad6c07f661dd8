//! Integration tests of the Tessera library through its public API.

mod bad_input;
mod compat;
mod concurrency;
mod corruption;
mod crash;
mod lifecycle;
mod originals;
mod quality;
