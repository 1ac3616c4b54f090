#!/usr/bin/env bash
# Quality and speed parity of pulserec-seqrec's SASRec against the PyTorch reference
# (scripts/seqrec/sasrec_reference.py): same data, split, candidates (written by the Rust example
# and read by the reference), hyperparameters, loss and epochs; runs interleaved per seed.
#
#   scripts/seqrec/parity.sh <data path> <epochs> <run dir> [seeds...]
#   scripts/seqrec/parity.sh assets/ml-100k 50 runs/parity-ml100k 1 2 3
set -euo pipefail
data=$1; epochs=$2; runs=$3; shift 3
seeds=${*:-1 2 3}
py=${PYTHON:-/opt/pyref/bin/python}
cargo build --release --example sasrec
for seed in $seeds; do
  out=$runs/seed$seed
  target/release/examples/sasrec --data "$data" --epochs "$epochs" --protocol sampled100 \
    --seed "$seed" --out "$out/rust" 2> "$out.rust.log"
  "$py" scripts/seqrec/sasrec_reference.py --inputs "$out/rust" --epochs "$epochs" \
    --seed "$seed" --threads 2 --out "$out/torch.json" > "$out.torch.log" 2>&1
done
"$py" scripts/seqrec/summarize_parity.py "$runs" $seeds
