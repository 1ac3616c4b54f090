#!/bin/bash
# LoRA training steps, ours against HF transformers + PEFT, A B A B in one sitting
# (docs/benchmarks.md, "LoRA training"). LoRA r8 on q/k/v/o of the top 8 layers, batch 4 x 256.
#   scripts/slm/lora_ab.sh [PYTHON]     # PYTHON: the reference venv (default /opt/pyref/bin/python)
# Needs `cargo build --release -p pulserec-slm --example lora_step` and scripts/setup_python.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${1:-/opt/pyref/bin/python}
G=assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
for round in 1 2; do
  for m in autodiff host_bf16; do
    echo "round $round ours $m: $(target/release/examples/lora_step $G --batch 4 --seq 256 \
      --steps 7 --top-layers 8 --frozen-bottom $m 2>&1 | tail -1)"
  done
  for dtype in "" --bf16; do
    echo "round $round peft ${dtype:-f32}: $("$PY" scripts/slm/lora_peft_bench.py $G --batch 4 \
      --seq 256 --steps 7 --warmup 3 --threads 2 --top-layers 8 $dtype 2>&1 | tail -1)"
  done
done
