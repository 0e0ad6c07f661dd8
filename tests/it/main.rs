//! Integration tests of the Tessera library through its public API.

mod bad_input;
mod concurrency;
mod corruption;
mod crash;
mod lifecycle;
mod quality;
