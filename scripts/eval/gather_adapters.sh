#!/usr/bin/env bash
# Gathers the committed LoRA adapters of the Games ranking ablation (docs/results/, each from the
# run that trained it: 1,000 training users x 2 positions, ranking objective, seed 1) into one run
# directory's sft/<variant>/, the layout `sft.adapters_from` reads, for the cross-domain configs
# (configs/experiments/rank-games-to-ml100k.toml). A variant whose adapter is not committed yet
# is skipped and named; the pipeline then refuses the config, naming the missing variant.
#
#   scripts/eval/gather_adapters.sh runs/exp/rank-games-adapters
set -euo pipefail
out=${1:?usage: gather_adapters.sh RUN_DIR}
cd "$(dirname "$0")/../.."
for pair in no-rationale:rank-games-seed1 with-reasons:rank-games-reasons-seed1 \
    shuffled-reasons:rank-games-reasons-seed1 auxiliary-reasons:rank-games-aux-seed1 \
    tot-likelihood:rank-games-tot-seed1 pulse:rank-games-tot-seed1; do
  variant=${pair%%:*}
  src=docs/results/${pair#*:}/$variant-adapter
  if [ ! -f "$src/adapter_model.safetensors" ]; then
    echo "not committed yet: $variant ($src)" >&2
    continue
  fi
  scripts/eval/copy_adapter.sh "$src" "$out/sft/$variant"
  echo "$variant <- $src"
done
