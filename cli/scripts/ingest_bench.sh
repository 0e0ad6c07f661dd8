#!/usr/bin/env bash
# Ingest throughput of every input format on one generated corpus: tokens/s end to end and
# of the validation pass (pure reading and checking), CPU time, and peak RSS.
# Usage: cli/scripts/ingest_bench.sh [WORK_DIR] [DOCS]
#   TESSERA=path/to/tessera picks the binary; REPEAT=N runs each case N times (default 3)
#   and reports medians (wall, validate, CPU) and the largest peak RSS.
# Prints a Markdown table; raw outputs stay in WORK_DIR.
set -euo pipefail
T="${TESSERA:-${CARGO_TARGET_DIR:-$HOME/.cache/tessera-target}/release/tessera}"
W="${1:-/tmp/tessera-ingest-bench}"
DOCS="${2:-10000}"
REPEAT="${REPEAT:-3}"
C="$W/corpus"
mkdir -p "$W"
if [ ! -f "$C/corpus.jsonl" ]; then
  "$T" generate "$C" --docs "$DOCS" --dim 128 --queries 5 --formats all
fi
echo "| case | format | batches | tokens | wall s | validate s | CPU s | tokens/s end to end | tokens/s validate pass | peak RSS MiB |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
bench() {
  local name="$1" format="$2"; shift 2
  for i in $(seq "$REPEAT"); do
    rm -rf "$W/db-$name"
    "$T" create "$W/db-$name" c --dim 128 2>/dev/null
    /usr/bin/time -v "$T" ingest "$W/db-$name" c "$@" --json >"$W/$name.$i.json" 2>"$W/$name.$i.stderr"
  done
  python3 - "$W" "$name" "$format" "$REPEAT" <<'PY'
import json, re, statistics, sys
w, name, fmt, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
walls, vals, cpus, rss = [], [], [], []
for i in range(1, n + 1):
    s = json.load(open(f"{w}/{name}.{i}.json"))
    err = open(f"{w}/{name}.{i}.stderr").read()
    rss.append(int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", err).group(1)))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", err).group(1)
    secs = 0.0
    for part in wall.split(":"):
        secs = secs * 60 + float(part)
    walls.append(secs)
    vals.append(s["validate_seconds"])
    cpus.append(float(re.search(r"User time \(seconds\): (\S+)", err).group(1))
                + float(re.search(r"System time \(seconds\): (\S+)", err).group(1)))
    tok, batches = s["tokens"], s["batches"]
wall, val, cpu = statistics.median(walls), statistics.median(vals), statistics.median(cpus)
print(f"| {name} | {fmt} | {batches} | {tok} | {wall:.1f} | {val:.2f} | {cpu:.1f} | "
      f"{tok / wall:,.0f} | {tok / val:,.0f} | {max(rss) / 1024:,.0f} |")
PY
}
bench npy-flat npy-flat "$C/flat.npy" --doclens "$C/doclens.npy" --ids "$C/ids.txt"
bench npy-flat-250k npy-flat "$C/flat.npy" --doclens "$C/doclens.npy" --ids "$C/ids.txt" --batch-tokens 250000
bench npy-dir npy-dir "$C/docs"
bench safetensors-flat safetensors "$C/corpus.safetensors" --ids "$C/ids.txt"
bench safetensors-docs safetensors "$C/docs.safetensors"
bench jsonl jsonl "$C/corpus.jsonl"
