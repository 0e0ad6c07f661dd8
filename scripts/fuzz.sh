#!/usr/bin/env bash
# Coverage-guided fuzzing of one decoder with AFL++ (cargo-afl), for the long runs that
# RELIABILITY.md records; the test suite's short runs need none of this
# (tests/fuzz/tests/replay.rs).
#
#   bash scripts/fuzz.sh TARGET SECONDS [OUTPUT_DIR]
#
# TARGET is one of tests/fuzz's targets (segment, codec, originals, doctext, npy,
# safetensors, jsonl, tokenizer_json, tokenizer_text). Starts from tests/fuzz/corpus/TARGET,
# or resumes OUTPUT_DIR (default ~/.cache/tessera/fuzz/TARGET) when it holds a run. Prints
# the CPU time, executions, edges and crashes at the end; crashing inputs stay under
# OUTPUT_DIR/default/crashes, and each one fixed becomes a regression input in the corpus.
#
# Why cargo-afl: it fuzzes on the stable toolchain (coverage through rustc's own
# SanitizerCoverage pass; cargo-fuzz and libFuzzer need nightly), and its AFL++ is built
# against the rustc in use. Setup, once: `cargo install cargo-afl` (its install builds AFL++).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
    sed -n '6p' "$0" >&2
    exit 2
fi
target=$1
seconds=$2
out=${3:-$HOME/.cache/tessera/fuzz/$target}
if ! command -v cargo-afl >/dev/null; then
    echo "scripts/fuzz.sh needs cargo-afl: cargo install cargo-afl" >&2
    exit 2
fi
# An instrumented build of its own, apart from the release build: the fuzz crate depends on
# storage without its RocksDB catalog, so no C++ is compiled here.
export CARGO_TARGET_DIR=${TESSERA_AFL_TARGET_DIR:-$HOME/.cache/tessera-afl-target}
cargo afl build --release -p tessera-fuzz --features afl --bin fuzz-afl
bin=$CARGO_TARGET_DIR/release/fuzz-afl
if [ ! -d "tests/fuzz/corpus/$target" ]; then
    echo "unknown target $target (no tests/fuzz/corpus/$target)" >&2
    exit 2
fi
# The input-format targets write each input to a file: keep those in memory.
if [ -w /dev/shm ]; then
    export TMPDIR=/dev/shm
fi
input=tests/fuzz/corpus/$target
if [ -f "$out/default/fuzzer_stats" ]; then
    input=-
fi
mkdir -p "$out"
export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
start=$(date +%s)
# CPU time of the fuzzer and every process it forked (user + system seconds).
/usr/bin/time -f '%U %S' -o "$out/cpu-seconds" \
    cargo afl fuzz -V "$seconds" -i "$input" -o "$out" -- "$bin" "$target" >"$out/afl.log" 2>&1 ||
    { tail -n 30 "$out/afl.log" >&2; exit 1; }
stat() { sed -n "s/^$1 *: *//p" "$out/default/fuzzer_stats"; }
read -r user sys <"$out/cpu-seconds"
echo "$target: $(($(date +%s) - start)) s wall, $(echo "$user + $sys" | bc) s CPU," \
    "$(stat execs_done) executions, $(stat corpus_count) corpus entries," \
    "edges $(stat edges_found) of $(stat total_edges), crashes $(stat saved_crashes)," \
    "hangs $(stat saved_hangs)"
