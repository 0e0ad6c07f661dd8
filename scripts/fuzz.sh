#!/usr/bin/env bash
# Coverage-guided fuzzing of one decoder with AFL++ (cargo-afl), for the long runs that
# RELIABILITY.md records; the test suite's short runs need none of this
# (tests/fuzz/tests/replay.rs).
#
#   bash scripts/fuzz.sh TARGET SECONDS [OUTPUT_DIR]
#
# TARGET is one of tests/fuzz's targets (segment, codec, originals, doctext, catalog_records,
# npy, safetensors, jsonl, text_corpus, tokenizer_json, tokenizer_text). Starts from tests/fuzz/corpus/TARGET,
# or resumes OUTPUT_DIR (default ~/.cache/tessera/fuzz/TARGET) when it holds a run. Prints
# the CPU time (of this run; AFL++'s counts are cumulative over resumed runs), executions,
# edges and crashes at the end; crashing inputs stay under
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
# CPU seconds (user + system) used so far by process $1 and all its descendants: each live
# process's own time and the time of the children it has reaped (/proc/PID/stat fields 14-17).
# Processes end while the files are read: cat skips those (awk would stop at the first).
tree_cpu() {
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v root="$1" -v tick="$(getconf CLK_TCK)" '
        {
            pid = $1; line = $0; sub(/^[0-9]+ \(.*\) /, "", line); split(line, f, " ")
            ppid[pid] = f[2]; ticks[pid] = f[12] + f[13] + f[14] + f[15]
        }
        END {
            keep[root] = 1
            for (grew = 1; grew;) {
                grew = 0
                for (p in ppid) if (!(p in keep) && (ppid[p] in keep)) { keep[p] = 1; grew = 1 }
            }
            for (p in keep) s += ticks[p]
            printf "%.2f\n", s / tick
        }'
}
start=$(date +%s)
# CPU time, two ways. /usr/bin/time counts the fuzzer and the processes it reaped; that misses
# the persistent-mode child alive at the end (killed, never reaped), which can hold minutes of
# CPU. So the process tree is also sampled every 5 seconds; its last sample misses at most
# the run's last 5 seconds.
/usr/bin/time -f '%U %S' -o "$out/cpu-seconds" \
    cargo afl fuzz -V "$seconds" -i "$input" -o "$out" -- "$bin" "$target" >"$out/afl.log" 2>&1 &
fuzzer=$!
tree=0
while kill -0 "$fuzzer" 2>/dev/null; do
    # A failed sample (under `set -e`) must not end the script while the fuzzer runs on.
    now=$(tree_cpu "$fuzzer") || now=
    tree=${now:-$tree}
    sleep 5
done
if ! wait "$fuzzer"; then
    tail -n 30 "$out/afl.log" >&2
    exit 1
fi
stat() { sed -n "s/^$1 *: *//p" "$out/default/fuzzer_stats"; }
read -r user sys <"$out/cpu-seconds"
echo "$target: $(($(date +%s) - start)) s wall, $tree s CPU (process tree, sampled)," \
    "$(echo "$user + $sys" | bc) s CPU (reaped, /usr/bin/time)," \
    "$(stat execs_done) executions, $(stat corpus_count) corpus entries," \
    "edges $(stat edges_found) of $(stat total_edges), crashes $(stat saved_crashes)," \
    "hangs $(stat saved_hangs)"
