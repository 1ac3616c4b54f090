#!/usr/bin/env bash
# Encode speed side by side (docs/benchmarks.md, "Thought Space"): ours (flex, 2 rayon threads) vs
# sentence-transformers on PyTorch CPU (2 threads), all-MiniLM-L6-v2, the first 1,024 Games
# titles, batch 32, median of 3 passes per run; rounds interleaved ours / reference.
# Usage: scripts/thoughtspace/bench_encode.sh [ROUNDS]   (after cargo build --release --examples)
set -euo pipefail
rounds=${1:-3}
py=${PYTHON:-/opt/pyref/bin/python}
titles=$(mktemp)
trap 'rm -f "$titles"' EXIT
awk -F'\t' 'NR > 1 && NR <= 1025 { print $2 }' ../shared/data/amazon-games-2018/Games-6k.item > "$titles"
for r in $(seq "$rounds"); do
  ours=$(RAYON_NUM_THREADS=2 target/release/examples/encode --model assets/all-minilm-l6-v2 \
    --texts-file "$titles" --batch-size 32 --repeat 3 2>&1 >/dev/null |
    sed -n 's/.*(\([0-9.]*\) texts\/s.*/\1/p')
  ref=$("$py" scripts/thoughtspace/bench_reference.py encode --n 1024 --repeats 3 --threads 2 |
    python3 -c "import json,sys; print(round(json.load(sys.stdin)['median_per_s'], 1))")
  echo "round $r ours $ours reference $ref"
done
