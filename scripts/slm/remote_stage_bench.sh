#!/usr/bin/env bash
# The hindsight stage of configs/experiments/hindsight-bench.toml (32 Games users, 80 tokens),
# generated three ways in one sitting, interleaved: the local SLM (8 users per generate call),
# pulserec's own server (`examples/serve`, batching waiting requests) and llama-cpp-python's
# server (one request at a time), both on 127.0.0.1 over the same GGUF, both with 2 threads, the
# client sending 8 requests at once. Prints the stage's wall seconds and generated tok/s from each
# run's rationales/done.json.
#
#   cargo build --release --bin pulserec --examples
#   scripts/setup_python.sh
#   CMAKE_ARGS="$LLAMA_FLAGS" /opt/pyref/bin/pip install "llama-cpp-python[server]==0.3.36"
#   scripts/slm/remote_stage_bench.sh [ROUNDS (default 2)]
#
# LLAMA_FLAGS: "-DGGML_NATIVE=ON" where that works. On CPUs with AMX (Sapphire Rapids and later)
# the native build's AMX matmul segfaults on the first prompt of more than one token
# (ggml-org/llama.cpp#20824; seen here with 0.3.36), so there build without it:
#   -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
#   -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_BF16=ON
#   -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-2}
PY=${PY:-/opt/pyref/bin/python}
MODEL=assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
CONFIG=configs/experiments/hindsight-bench.toml
OUT=${OUT:-runs/bench/remote-hindsight}
mkdir -p "$OUT"

# A fresh server for each run, so neither starts from the previous round's prompt caches.
SERVER=
serve() { # kind
    case $1 in
        llama) "$PY" -m llama_cpp.server --model "$MODEL" --model_alias smollm2 --n_threads 2 \
                   --n_ctx 4096 --host 127.0.0.1 --port 8091 > "$OUT/llama-server.log" 2>&1 & ;;
        pulserec) target/release/examples/serve --model "$MODEL" --name smollm2 \
                      --addr 127.0.0.1:8091 > "$OUT/pulserec-serve.log" 2>&1 & ;;
        *) return ;;
    esac
    SERVER=$!
    for _ in $(seq 120); do
        curl -sf http://127.0.0.1:8091/v1/models > /dev/null && return
        sleep 1
    done
    echo "the $1 server did not start" >&2
    exit 1
}
stop() {
    [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true
    SERVER=
}
trap stop EXIT

run() { # kind round
    local dir="$OUT/$1-$2" config="$OUT/$1.toml"
    cp "$CONFIG" "$config"
    case $1 in
        llama | pulserec) printf '\n[generator]\nkind = "remote"\nbase_url = "http://127.0.0.1:8091"\nmodel = "smollm2"\nconcurrency = 8\n' >> "$config" ;;
    esac
    serve "$1"
    rm -rf "$dir"
    target/release/pulserec rationales --config "$config" --run-dir "$dir" > "$dir.log" 2>&1
    stop
    python3 - "$1" "$2" "$dir/rationales/done.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[3]))
s = d["summary"]
print(f"{sys.argv[1]:9} round {sys.argv[2]}: {d['seconds']:7.1f} s, {s['tokens']} tokens, "
      f"{s['tokens_per_second']:6.1f} tok/s, {s['parse_failures']} parse failures")
PY
}
for round in $(seq "$ROUNDS"); do
    for kind in local pulserec llama; do
        run "$kind" "$round"
    done
done
