#!/usr/bin/env bash
# The `generate` example on LibTorch (CPU) vs flex, interleaved rounds on the same machine
# (docs/benchmarks.md, "SLM runtime" / "tch backend"). Per round, in this order: flex with
# quantised kernels (the default), flex with dense f32 weights, tch (dense f32, always).
# Usage: LIBTORCH=... scripts/slm/bench_tch.sh GGUF [ROUNDS] > results.jsonl
#   (LIBTORCH defaults to target/libtorch, made by scripts/slm/setup_libtorch.sh)
set -euo pipefail
gguf=$1
rounds=${2:-3}
root=$(cd "$(dirname "$0")/../.." && pwd)
export LIBTORCH=${LIBTORCH:-$root/target/libtorch}
export LD_LIBRARY_PATH=$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
(cd "$root" && cargo build --release --features tch --example generate >&2)
gen=$root/target/release/examples/generate
long=$(python3 -c "print(' '.join(['The history of the city goes back to ancient times, when traders settled along the river.']*17))")
run() { # label, generate args...
  local label=$1
  shift
  "$gen" --model "$gguf" --temperature 0 --json "$@" |
    python3 -c "import json,sys; d=json.load(sys.stdin); print(json.dumps({'run':'$label','device':d['device'],'batch':d['batch'],'prefill_tokens':d['prefill_tokens'],'prefill_tok_s':d['prefill_tok_s'],'decode_tok_s':d['decode_tok_s']}))"
}
for r in $(seq "$rounds"); do
  echo "round $r" >&2
  for cfg in "flex-q:--device flex" "flex-dense:--device flex --dense" "tch:--device tch"; do
    label=${cfg%%:*}
    # shellcheck disable=SC2086 # the device flags are meant to split
    run "$label-prefill" ${cfg#*:} --prompt "$long" --max-tokens 1
    # shellcheck disable=SC2086
    run "$label-decode" ${cfg#*:} --prompt "Once upon a time" --max-tokens 64 --stop "@@@@"
  done
done
