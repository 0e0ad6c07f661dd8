#!/usr/bin/env bash
# Ingest throughput of every input format on one generated corpus: tokens/s (end to end and
# of the validation pass, which is pure reading and checking) and peak RSS.
# Usage: cli/scripts/ingest_bench.sh [WORK_DIR] [DOCS]      (TESSERA=path/to/tessera to pick a binary)
# Prints a Markdown table; raw outputs stay in WORK_DIR.
set -euo pipefail
T="${TESSERA:-${CARGO_TARGET_DIR:-$HOME/.cache/tessera-target}/release/tessera}"
W="${1:-/tmp/tessera-ingest-bench}"
DOCS="${2:-10000}"
C="$W/corpus"
mkdir -p "$W"
if [ ! -f "$C/corpus.jsonl" ]; then
  "$T" generate "$C" --docs "$DOCS" --dim 128 --queries 5 --formats all
fi
echo "| input | format | batches | tokens | wall s | validate s | tokens/s (end to end) | tokens/s (validate pass) | peak RSS MiB |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
bench() {
  local name="$1" format="$2"; shift 2
  rm -rf "$W/db-$name"
  "$T" create "$W/db-$name" c --dim 128 2>/dev/null
  /usr/bin/time -v "$T" ingest "$W/db-$name" c "$@" --json >"$W/$name.json" 2>"$W/$name.stderr"
  python3 - "$W/$name.json" "$W/$name.stderr" "$name" "$format" <<'PY'
import json, re, sys
summary = json.load(open(sys.argv[1]))
err = open(sys.argv[2]).read()
rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", err).group(1))
wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", err).group(1)
secs = 0.0
for part in wall.split(":"):
    secs = secs * 60 + float(part)
tok, val = summary["tokens"], summary["validate_seconds"]
print(f"| {sys.argv[3]} | {sys.argv[4]} | {summary['batches']} | {tok} | {secs:.1f} | {val:.2f} | "
      f"{tok / secs:,.0f} | {tok / val:,.0f} | {rss_kb / 1024:,.0f} |")
PY
}
bench npy-flat npy-flat "$C/flat.npy" --doclens "$C/doclens.npy" --ids "$C/ids.txt"
bench npy-flat-250k npy-flat "$C/flat.npy" --doclens "$C/doclens.npy" --ids "$C/ids.txt" --batch-tokens 250000
bench npy-dir npy-dir "$C/docs"
bench safetensors-flat safetensors "$C/corpus.safetensors" --ids "$C/ids.txt"
bench safetensors-docs safetensors "$C/docs.safetensors"
bench jsonl jsonl "$C/corpus.jsonl"
