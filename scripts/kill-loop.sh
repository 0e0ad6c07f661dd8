#!/usr/bin/env bash
# The kill loop's long mode (issue 15): SIGKILLs a writer KILLS times (default 1,000) at
# random points and checks the database against a model after each kill (see
# tests/it/kill_loop.rs). The test suite runs the same test with 50 kills.
#   bash scripts/kill-loop.sh [KILLS]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tessera-target}"
TESSERA_KILLS="${1:-1000}" exec cargo test --release --config scripts/test-checks.toml \
  -p tessera-tests --test integration -- \
  kill_loop::killed_writers_lose_no_acknowledged_operation_and_half_apply_none --nocapture
