#!/usr/bin/env bash
# Quality and speed parity of pulserec-seqrec's SASRec against the PyTorch reference
# (scripts/seqrec/sasrec_reference.py): same data, split, candidates (written by the Rust example
# and read by the reference), hyperparameters, layer-norm placement, loss and epochs; runs
# interleaved per seed (ours, then the reference).
#
#   scripts/seqrec/parity.sh <data path> <epochs> <run dir> [seeds...]
#   scripts/seqrec/parity.sh assets/ml-100k 50 runs/parity-ml100k 1 2 3
#
# NORM=pre|post (default pre, the paper's) picks the placement for both. TORCH_THREADS (default
# 2) sets the reference's threads: 1 is far less hurt by other jobs on a small shared machine.
# Both processes run with the same glibc malloc tunables (see crates/pulserec-seqrec/README.md);
# set GLIBC_TUNABLES= to measure with glibc's defaults instead.
set -euo pipefail
data=$1; epochs=$2; runs=$3; shift 3
seeds=${*:-1 2 3}
py=${PYTHON:-/opt/pyref/bin/python}
norm=${NORM:-pre}
export GLIBC_TUNABLES=${GLIBC_TUNABLES-glibc.malloc.mmap_threshold=268435456:glibc.malloc.trim_threshold=536870912:glibc.malloc.top_pad=67108864}
cargo build --release --bin pulserec --examples
mkdir -p "$runs"
for seed in $seeds; do
  out=$runs/seed$seed
  target/release/examples/sasrec --data "$data" --epochs "$epochs" --protocol sampled100 \
    --norm "$norm" --seed "$seed" --out "$out/rust" 2> "$out.rust.log"
  "$py" scripts/seqrec/sasrec_reference.py --inputs "$out/rust" --epochs "$epochs" \
    --norm "$norm" --seed "$seed" --threads "${TORCH_THREADS:-2}" --out "$out/torch.json" > "$out.torch.log" 2>&1
done
"$py" scripts/seqrec/summarize_parity.py "$runs" $seeds | tee "$runs/summary.json"
