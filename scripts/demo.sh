#!/usr/bin/env bash
# The main job end to end: build, generate a corpus, then create a database, ingest the
# corpus and search it in the tessera shell (a script piped into `tessera shell`).
# Usage: scripts/demo.sh [WORK_DIR]   (default: a fresh temporary directory)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tessera-target}"
cargo build --release -p tessera-cli
T="$CARGO_TARGET_DIR/release/tessera"
WORK="${1:-$(mktemp -d)}"
mkdir -p "$WORK"
C="$WORK/corpus"
echo "== generating a synthetic corpus in $C"
"$T" generate "$C" --docs 2000 --dim 128 --queries 3
rm -rf "$WORK/demo.db"
echo "== the tessera shell: create, ingest, info, search (each command echoed before its output)"
# --bail: the first failing command stops the script with a non-zero exit (and so this script).
"$T" shell "$WORK/demo.db" --echo --bail --mode table <<SCRIPT
.create passages --dim 128 --nbits 2
.ingest "$C/flat.npy" --doclens "$C/doclens.npy" --ids "$C/ids.txt"
.info
.timer on
.search "$C/queries.npy" -k 5
.search --like doc-000042 -k 3
.timer off
.mode jsonl
.search "$C/queries.npy" -k 1
SCRIPT
echo "== done: database at $WORK/demo.db (explore it: $T shell $WORK/demo.db)"
