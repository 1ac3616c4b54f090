#!/usr/bin/env bash
# Seeds a run directory of the ranking-SFT ablation (configs/experiments/rank-games-*.toml) from
# what earlier parts committed under docs/results/, so a part on a fresh machine does not redo
# them: the seed-1 no-rationale adapter of configs/experiments/rank-games.toml and its rows
# (random, most popular, no rationale; validation and test), and the hindsight store of
# configs/experiments/rank-games-reasons.toml. The prepare stage is rebuilt from the data
# (`pulserec prepare`, deterministic); the pipeline then skips every stage and row found here.
# When docs/results/<config name>-seed1/ holds stages of the config's own earlier parts (SASRec
# with its similar users, a partial Tree-of-Thought store, trained adapters), they are copied in
# too; the Thought Space (two ~90 MB encoders) is not committed: the pipeline retrains it, and
# its thought_space/SHA256SUMS there says whether it came out bit for bit the same.
#
#   scripts/eval/restore_rank_run.sh configs/experiments/rank-games-tot.toml
set -euo pipefail
config=${1:?usage: restore_rank_run.sh CONFIG}
cd "$(dirname "$0")/../.."
run=$(sed -n 's/^run_dir = "\(.*\)"/\1/p' "$config")
[ -n "$run" ] || { echo "no run_dir in $config" >&2; exit 1; }
base=docs/results/rank-games-seed1
mkdir -p "$run/eval/valid" "$run/eval/test"
scripts/eval/copy_adapter.sh "$base/no-rationale-adapter" "$run/sft/no-rationale"
for split in valid test; do
  src=$base
  [ "$split" = valid ] && src=$base/valid
  for row in random most-popular no-rationale; do
    cp "$src/$row.json" "$run/eval/$split/"
    gunzip -c "$src/$row.jsonl.gz" > "$run/eval/$split/$row.jsonl"
  done
done
if [ ! -d "$run/rationales" ] && [ -d docs/results/rank-games-reasons-seed1/rationales ]; then
  cp -r docs/results/rank-games-reasons-seed1/rationales "$run/"
fi
own=docs/results/$(basename "$config" .toml)-seed1
for stage in sasrec tot; do
  if [ -d "$own/$stage" ] && [ ! -d "$run/$stage" ]; then
    cp -r "$own/$stage" "$run/"
  fi
done
# Adapters the config's own earlier parts trained (<variant>-adapter/): the SFT stage skips them.
for src in "$own"/*-adapter; do
  variant=$(basename "$src" -adapter)
  if [ -f "$src/adapter_model.safetensors" ] && [ ! -f "$run/sft/$variant/train.json" ]; then
    scripts/eval/copy_adapter.sh "$src" "$run/sft/$variant"
  fi
done
[ -d "$run/prepare" ] || target/release/pulserec prepare --config "$config"
if [ -f "$own/thought_space/SHA256SUMS" ]; then
  echo "after the thought-space stage: (cd $run && sha256sum -c ../../../$own/thought_space/SHA256SUMS)"
fi
echo "seeded $run"
