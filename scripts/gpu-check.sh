#!/usr/bin/env bash
# GPU verification of issue 5 (GPU search), in two steps, because the GPU machine has CUDA 13,
# nvcc and compute-sanitizer but no Rust toolchain and no network:
#
#   1. on a build machine (this repository, Rust toolchain):
#        bash scripts/gpu-check.sh build
#      builds the GPU test binary, the integration tests and the benchmark, strips them, and
#      puts them in gpu-carry/ (git-ignored; about 40 MB) with a manifest of the commit;
#   2. on the GPU machine, with gpu-carry/ copied next to this script's repository root:
#        bash scripts/gpu-check.sh run            # everything below, in order
#        bash scripts/gpu-check.sh parity         # parity/delete/budget tests, integration suite
#        bash scripts/gpu-check.sh sanitize       # compute-sanitizer memcheck/racecheck/synccheck/initcheck
#        bash scripts/gpu-check.sh bench [ARGS]   # the 400K x 100 x 128 benchmark table
#      Results (logs, the markdown table, JSON) go to $OUT if set, else gpu-carry/results/.
#
# Nothing here passes silently: every step's exit status is checked and the logs kept.
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=gpu-carry
RESULTS="${OUT:-$CARRY/results}"

build() {
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tessera-target}"
    rm -rf "$CARRY"
    mkdir -p "$CARRY"
    # The engine's GPU test binary (parity matrix, deletes/snapshots, budget, fallback).
    local test_bin
    test_bin=$(cargo test --release -p tessera --test gpu --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "gpu":
        print(m["executable"])')
    [ -x "$test_bin" ] || { echo "gpu-check: could not build the GPU test binary" >&2; exit 1; }
    # The integration suite: with the default device `auto` it runs on the GPU there.
    local it_bin
    it_bin=$(cargo test --release -p tessera-tests --test integration --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "integration":
        print(m["executable"])')
    [ -x "$it_bin" ] || { echo "gpu-check: could not build the integration test binary" >&2; exit 1; }
    cargo build --release -p tessera-bench
    cp "$test_bin" "$CARRY/gpu-tests"
    cp "$it_bin" "$CARRY/integration-tests"
    cp "$CARGO_TARGET_DIR/release/tessera-bench" "$CARRY/tessera-bench"
    strip "$CARRY/gpu-tests" "$CARRY/integration-tests" "$CARRY/tessera-bench"
    {
        echo "commit $(git rev-parse HEAD)$(git diff --quiet || echo ' (with uncommitted changes)')"
        echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -srm)"
        sha256sum "$CARRY/gpu-tests" "$CARRY/integration-tests" "$CARRY/tessera-bench"
    } >"$CARRY/MANIFEST"
    cat "$CARRY/MANIFEST"
    du -sh "$CARRY"
}

need_carry() {
    for f in gpu-tests integration-tests tessera-bench; do
        [ -x "$CARRY/$f" ] || { echo "gpu-check: $CARRY/$f missing; run 'bash scripts/gpu-check.sh build' on a build machine" >&2; exit 1; }
    done
    mkdir -p "$RESULTS"
    # cudarc loads libcuda.so.1 and libnvrtc.so.13 by name: make the toolkit's libraries
    # visible when ld.so.conf does not list them.
    local cuda="${CUDA_HOME:-/usr/local/cuda}"
    for d in "$cuda/lib64" "$cuda/targets/x86_64-linux/lib"; do
        [ -d "$d" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    done
    return 0
}

device_info() {
    need_carry
    {
        cat "$CARRY/MANIFEST"
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.memory --format=csv
        nvcc --version | tail -n 2
        compute-sanitizer --version | head -n 1
    } 2>&1 | tee "$RESULTS/device.txt"
}

parity() {
    need_carry
    # Non-ignored tests too: on a GPU machine `auto` must resolve to the GPU and agree.
    "$CARRY/gpu-tests" --include-ignored --test-threads=1 --skip gpu_over_budget 2>&1 |
        tee "$RESULTS/parity.log"
    # Every integration test (lifecycle, deletes, snapshots, concurrency, quality floors)
    # with searches on the GPU through `auto`.
    "$CARRY/integration-tests" 2>&1 | tee "$RESULTS/integration.log"
    # The budget test needs the budget set before the device is opened, so a process alone.
    TESSERA_GPU_MEMORY_BUDGET=4096 "$CARRY/gpu-tests" --ignored --exact \
        gpu_over_budget_is_an_error_for_cuda_and_a_cpu_fallback_for_auto 2>&1 |
        tee "$RESULTS/budget.log"
}

sanitize() {
    need_carry
    # A representative subset (each kernel, both code widths of the data, 1-token and long
    # documents, deletes across two segments); the full matrix under memcheck takes hours.
    local tests=(gpu_parity_random_dim128_nbits2 gpu_parity_clustered_dim768_nbits8
        gpu_parity_random_dim96_nbits1 gpu_parity_with_four_byte_codes
        gpu_deletes_and_snapshots_behave_as_on_the_cpu)
    for tool in memcheck racecheck synccheck initcheck; do
        for t in "${tests[@]}"; do
            echo "== compute-sanitizer --tool $tool $t"
            compute-sanitizer --tool "$tool" --error-exitcode 99 --target-processes all \
                "$CARRY/gpu-tests" --ignored --exact "$t" --test-threads=1
        done
    done 2>&1 | tee "$RESULTS/sanitizer.log"
}

bench() {
    need_carry
    # The issue's table: 400K docs x 100 tokens x 128-d, top-10/top-100, batches 32 and 256.
    # The database is kept in $CARRY/bench.db so a second run skips generation and ingest.
    "$CARRY/tessera-bench" gpu --docs 400000 --tokens 100 --dim 128 --devices cpu,cuda \
        --db "$CARRY/bench.db" --json "$RESULTS/gpu-bench.json" "$@" 2>"$RESULTS/bench.stderr" |
        tee "$RESULTS/gpu-bench.md"
}

case "${1:-}" in
build) build ;;
run)
    device_info
    parity
    sanitize
    bench
    ;;
parity) device_info && parity ;;
sanitize) sanitize ;;
bench)
    shift
    bench "$@"
    ;;
*)
    echo "usage: bash scripts/gpu-check.sh build | run | parity | sanitize | bench [ARGS]" >&2
    exit 2
    ;;
esac
