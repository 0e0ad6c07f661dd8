//! Tessera's benchmark harness as a library: datasets, the exhaustive ground truth and its
//! cache, quality and speed metrics, the engines under test (Tessera, and next-plaid behind
//! the `peer-next-plaid` feature), token statistics, and the markdown/JSON report. The
//! `tessera-bench` binary is one subcommand per scenario over these; the smoke test drives
//! the same binary.

pub mod dataset;
pub mod drift;
pub mod engines;
pub mod lifecycle;
pub mod measure;
pub mod metrics;
#[cfg(feature = "peer-next-plaid")]
pub mod peer;
pub mod pydoc;
pub mod report;
pub mod run;
pub mod stats;
pub mod truth;
