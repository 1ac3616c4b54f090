#!/usr/bin/env bash
# Seconds per epoch, ours vs the PyTorch reference, interleaved (A B A B) on the same machine,
# same data, batch (128) and length (50), with 1 and then 2 threads each per round.
#
#   scripts/seqrec/speed.sh <data path> <epochs per run> <rounds> <out dir> [norm]
#   scripts/seqrec/speed.sh assets/ml-100k 3 3 /tmp/speed post
#
# Prints one line per run; take the medians per implementation and thread count. Both processes
# get the same glibc malloc tunables (set GLIBC_TUNABLES= to use glibc's defaults).
set -euo pipefail
data=$1; epochs=$2; rounds=$3; out=$4; norm=${5:-pre}
py=${PYTHON:-/opt/pyref/bin/python}
export GLIBC_TUNABLES=${GLIBC_TUNABLES-glibc.malloc.mmap_threshold=268435456:glibc.malloc.trim_threshold=536870912:glibc.malloc.top_pad=67108864}
cargo build --release --bin pulserec --examples
for r in $(seq "$rounds"); do
  for th in 1 2; do
    RAYON_NUM_THREADS=$th target/release/examples/sasrec --data "$data" --epochs "$epochs" \
      --protocol full --norm "$norm" --out "$out/t$th-$r" 2>/dev/null | grep s/epoch | sed "s/^/round $r threads $th ours /"
    "$py" scripts/seqrec/sasrec_reference.py --norm "$norm" --inputs "$out/t$th-$r" \
      --epochs "$epochs" --threads "$th" --out "$out/ref$th-$r.json" | tail -n 1 | sed "s/^/round $r threads $th torch /"
  done
done
