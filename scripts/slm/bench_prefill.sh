#!/usr/bin/env bash
# Prefill only, ours vs HF transformers float32 (2 threads), interleaved rounds: each round is the
# median of 3 runs of the `generate` example (a fresh process each) and the median of 3 timed
# forwards in one HF process, on the same 306-token prompt as scripts/slm/bench.sh.
# Usage: scripts/slm/bench_prefill.sh GGUF [ROUNDS]   (after cargo build --release --bin pulserec --examples)
set -euo pipefail
gguf=$1
rounds=${2:-5}
py=${PYTHON:-/opt/pyref/bin/python}
here=$(dirname "$0")
long=$(python3 -c "print(' '.join(['The history of the city goes back to ancient times, when traders settled along the river.']*17))")
for r in $(seq "$rounds"); do
  ours=$(for i in 1 2 3; do
    target/release/examples/generate --model "$gguf" --prompt "$long" --max-tokens 1 --json |
      python3 -c "import json,sys; print(json.load(sys.stdin)['prefill_tok_s'])"
  done | sort -g | sed -n 2p)
  ref=$(OMP_NUM_THREADS=2 "$py" "$here/bench_reference.py" hf_prefill "$gguf" 2>/dev/null |
    python3 -c "import json,sys; print(json.load(sys.stdin)['prefill_tok_s'])")
  echo "round $r ours $ours hf $ref"
done
