#!/usr/bin/env bash
# The test command: formatting, lints, then every test of the workspace, in the release
# profile (one profile for tests, benches and the CLI, so RocksDB's C++ builds once), with
# debug assertions and overflow checks on in Tessera's own crates (scripts/test-checks.toml
# says why they are set there and not in Cargo.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Reuse a build cache outside the clone when one exists (a speed-up, never a requirement).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tessera-target}"
cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets -- -D warnings
cargo test --release --config scripts/test-checks.toml --workspace
