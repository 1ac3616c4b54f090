#!/usr/bin/env bash
# Side-by-side SLM runtime timings (docs/benchmarks.md, "SLM runtime"): ours (flex, quantised
# kernels) vs llama.cpp vs HF transformers float32, interleaved rounds on the same machine.
# Usage: scripts/slm/bench.sh GGUF [ROUNDS] > results.jsonl
set -euo pipefail
gguf=$1
rounds=${2:-3}
py=${PYTHON:-/opt/pyref/bin/python}
here=$(dirname "$0")
cargo build --release --bin pulserec --examples >&2
gen=target/release/examples/generate
long=$(python3 -c "print(' '.join(['The history of the city goes back to ancient times, when traders settled along the river.']*17))")
for r in $(seq "$rounds"); do
  echo "round $r" >&2
  "$gen" --model "$gguf" --prompt "$long" --max-tokens 1 --json |
    python3 -c "import json,sys; d=json.load(sys.stdin); print(json.dumps({'runtime':'ours','prefill_tokens':d['prefill_tokens'],'prefill_tok_s':d['prefill_tok_s']}))"
  for b in 1 8 32; do
    "$gen" --model "$gguf" --prompt "Once upon a time" --max-tokens 64 --stop "@@@@" --batch "$b" \
      --temperature 0 --json |
      python3 -c "import json,sys; d=json.load(sys.stdin); print(json.dumps({'runtime':'ours','batch':d['batch'],'decode_tok_s':d['decode_tok_s']}))"
  done
  RAYON_NUM_THREADS=2 "$py" "$here/bench_reference.py" llama_cpp "$gguf"
  OMP_NUM_THREADS=2 "$py" "$here/bench_reference.py" hf "$gguf" 2>/dev/null
done
