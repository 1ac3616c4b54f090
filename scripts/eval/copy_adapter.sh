#!/usr/bin/env bash
# Copies one committed adapter folder (docs/results/<run>/<variant>-adapter/: adapter, sft_config,
# train.json, loss.svg) into a run directory's sft/<variant>/ in the layout the pipeline wrote it
# (checkpoints/epoch-001/ + train.json), so the SFT stage skips that variant and the evaluation
# (or `sft.adapters_from`) reads it. Used by restore_rank_run.sh and gather_adapters.sh.
#
#   scripts/eval/copy_adapter.sh docs/results/rank-games-tot-seed1/pulse-adapter runs/exp/rank-games-tot/sft/pulse
set -euo pipefail
src=${1:?usage: copy_adapter.sh ADAPTER_DIR SFT_VARIANT_DIR}
dst=${2:?usage: copy_adapter.sh ADAPTER_DIR SFT_VARIANT_DIR}
mkdir -p "$dst/checkpoints/epoch-001"
cp "$src"/{adapter_config.json,adapter_model.safetensors,sft_config.json} "$dst/checkpoints/epoch-001/"
cp "$src/train.json" "$dst/"
if [ -f "$src/loss.svg" ]; then cp "$src/loss.svg" "$dst/"; fi
