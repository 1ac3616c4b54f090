#!/usr/bin/env bash
# Side-by-side: loading a 1M-interaction RecBole atomic file with pulserec vs pandas, interleaved
# (A B A B ...) so machine drift hits both alike. Needs the reference venv (scripts/setup_python.sh).
# Usage: scripts/data/bench_vs_pandas.sh [ROUNDS] [PYTHON]
set -euo pipefail
rounds=${1:-4}
py=${2:-/opt/pyref/bin/python}
file=${TMPDIR:-/tmp}/pulserec_bench_1m.inter
cd "$(dirname "$0")/../.."
cargo build --release --quiet --bin pulserec --examples
bin=target/release/examples/load_bench
"$bin" "$file" --generate --repeat 1 >/dev/null
for r in $(seq "$rounds"); do
  "$bin" "$file" --repeat 3
  "$py" scripts/data/pandas_load.py "$file" --repeat 3
done
