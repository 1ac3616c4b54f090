#!/bin/bash
# The pipeline's SFT stage with and without `sft.frozen_bottom = "host_bf16"`, A B A B
# (docs/benchmarks.md, "LoRA training"): configs/experiments/rank-games-250.toml (500 ranking
# examples) in throw-away run directories under ${TMPDIR:-/tmp}.
#   scripts/slm/sft_stage_ab.sh
# Needs `cargo build --release --bin pulserec`.
set -euo pipefail
cd "$(dirname "$0")/../.."
T=${TMPDIR:-/tmp}
sed "s#^run_dir = .*#run_dir = \"$T/fb-autodiff\"#" configs/experiments/rank-games-250.toml \
  > "$T/fb-autodiff.toml"
sed -e "s#^run_dir = .*#run_dir = \"$T/fb-host_bf16\"#" \
  -e 's#^lora_top_layers = 8#lora_top_layers = 8\nfrozen_bottom = "host_bf16"#' \
  configs/experiments/rank-games-250.toml > "$T/fb-host_bf16.toml"
for round in 1 2; do
  for m in autodiff host_bf16; do
    rm -rf "$T/fb-$m"
    target/release/pulserec sft --config "$T/fb-$m.toml" > "$T/fb-$m-$round.log" 2>&1
    plain=$(sed 's/\x1b\[[0-9;]*m//g' "$T/fb-$m-$round.log")
    echo "round $round $m: $(grep -o 'stage="sft" seconds=[0-9.]*' <<< "$plain" | tail -1);" \
      "$(grep -o 'sft epoch done.*' <<< "$plain" | head -1)"
  done
done
