#!/usr/bin/env bash
# Batch-1 decode, ours against llama.cpp's own `llama-bench` built with its native CPU flags
# (docs/benchmarks.md, "Batch-1 decode against a native llama.cpp build"), interleaved rounds on
# the same machine: ours with f32 decode steps (`WeightMode::Auto`), ours with 8-bit decode inputs
# (`WeightMode::Int8`, as llama.cpp decodes), then llama.cpp; then the next round. 2 threads each (ours: rayon's default on a 2-core machine; RAYON_NUM_THREADS
# and llama-bench's -t follow THREADS when set).
#
# Usage: scripts/slm/bench_decode.sh GGUF LLAMA_BENCH [ROUNDS] [TOKENS] > results.jsonl
#
# LLAMA_BENCH is a llama.cpp `llama-bench` binary, for instance built from the llama.cpp sources
# that the llama-cpp-python sdist carries (vendor/llama.cpp):
#   cmake -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF
#   cmake --build build --target llama-bench
# Every run is a fresh process: ours generates TOKENS tokens greedily after "Once upon a time"
# (stop strings off); llama-bench's `tg` test decodes TOKENS tokens after an empty context.
set -euo pipefail
gguf=$1
bench=$2
rounds=${3:-3}
tokens=${4:-128}
threads=${THREADS:-2}
gen=target/release/examples/generate
cargo build --release --bin pulserec --examples >&2
for r in $(seq "$rounds"); do
  echo "round $r" >&2
  for mode in auto int8; do
    flag=()
    [ "$mode" = int8 ] && flag=(--int8)
    RAYON_NUM_THREADS=$threads "$gen" --model "$gguf" --prompt "Once upon a time" \
      --max-tokens "$tokens" --stop "@@@@" --batch 1 --temperature 0 --json "${flag[@]}" |
      python3 -c "import json,sys; d=json.load(sys.stdin); print(json.dumps({'runtime':'ours-$mode','round':$r,'threads':$threads,'decode_tok_s':d['decode_tok_s']}))"
  done
  "$bench" -m "$gguf" -t "$threads" -p 0 -n "$tokens" -r 1 -o json |
    python3 -c "import json,sys; d=json.load(sys.stdin)[0]; print(json.dumps({'runtime':'llama.cpp','round':$r,'decode_tok_s':d['avg_ts'],'build':d.get('build_commit'),'cpu':d.get('cpu_info')}))"
done
