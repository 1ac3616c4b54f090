#!/usr/bin/env bash
# The hindsight stage of configs/experiments/hindsight-bench.toml (32 Games users, 80 tokens)
# on llama-cpp-python's OpenAI-compatible server, the server killed in the middle of the stage
# (SIGKILL, as a crashed engine), two ways:
#
#   outage: the server stays down longer than the client's retries (generator.retries = 2: 0.5 s
#           + 1 s of backoff). The stage must end with an error naming the endpoint and the
#           request, keep the batches already stored, and, rerun against a restarted server,
#           generate only the missing users.
#   blip:   the server is restarted 3 s after the kill, inside the retries' backoff
#           (generator.retries = 6: 0.5 + 1 + ... + 16 s). The same run must finish by itself.
#
# Either way the store must end with each of the 32 users exactly once (`pulserec verify`, and
# the rows of the parts counted with pyarrow). Prints one line per check; exits non-zero on the
# first that fails.
#
#   cargo build --release --bin pulserec --examples
#   scripts/setup_python.sh
#   CMAKE_ARGS="$LLAMA_FLAGS" /opt/pyref/bin/pip install "llama-cpp-python[server]==0.3.36"
#   scripts/slm/remote_kill_resume.sh
#
# LLAMA_FLAGS as in scripts/slm/remote_stage_bench.sh (no AMX on CPUs that have it).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-/opt/pyref/bin/python}
BIN=${BIN:-target/release/pulserec}
MODEL=assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
OUT=${OUT:-runs/bench/remote-kill}
PORT=8092
USERS=32
mkdir -p "$OUT"

SERVER=
serve() { # log
    "$PY" -m llama_cpp.server --model "$MODEL" --model_alias smollm2 --n_threads 2 \
        --n_ctx 4096 --host 127.0.0.1 --port $PORT >> "$1" 2>&1 &
    SERVER=$!
    for _ in $(seq 120); do
        curl -sf http://127.0.0.1:$PORT/v1/models > /dev/null && return
        sleep 1
    done
    echo "the server did not start" >&2
    exit 1
}
kill_server() {
    [ -n "$SERVER" ] && kill -9 "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true
    SERVER=
}
trap kill_server EXIT

config() { # retries -> path
    local path="$OUT/retries-$1.toml"
    cp configs/experiments/hindsight-bench.toml "$path"
    printf '\n[generator]\nkind = "remote"\nbase_url = "http://127.0.0.1:%s"\nmodel = "smollm2"\nconcurrency = 8\nretries = %s\n' \
        "$PORT" "$1" >> "$path"
    echo "$path"
}

parts() { # store dir -> number of part files
    find "$1" -maxdepth 1 -name 'part-*.parquet' | wc -l
}

# Waits until the store has at least one part, then kills the server.
kill_after_first_part() { # store
    for _ in $(seq 600); do
        if [ -d "$1" ] && [ "$(parts "$1")" -ge 1 ]; then
            kill_server
            echo "killed the server with $(parts "$1") part(s) stored"
            return
        fi
        sleep 0.5
    done
    echo "no part was stored in 300 s" >&2
    exit 1
}

check_store() { # run dir, config
    local store="$1/rationales/hindsight"
    "$PY" - "$store" "$USERS" <<'PY'
import collections, glob, sys
import pyarrow.parquet as pq
store, want = sys.argv[1], int(sys.argv[2])
users = []
for part in sorted(glob.glob(f"{store}/part-*.parquet")):
    users += pq.read_table(part, columns=["user"]).column("user").to_pylist()
dup = [u for u, n in collections.Counter(users).items() if n > 1]
print(f"store: {len(users)} rows, {len(set(users))} users, duplicates {dup}")
sys.exit(0 if len(users) == want and not dup else 1)
PY
    # verify exits 1 while any stage is missing (here every stage after this one).
    "$BIN" verify --config "$2" --run-dir "$1" > "$1-verify.txt" 2>&1 || true
    grep -i "rationales" "$1-verify.txt" | head -3
}

# Starts a server and the stage (in the background, pid STAGE), and kills the server once the
# first part is stored.
start() { # name retries
    RUN="$OUT/$1"
    CONFIG=$(config "$2")
    rm -rf "$RUN"
    serve "$OUT/$1-server.log"
    "$BIN" rationales --config "$CONFIG" --run-dir "$RUN" > "$RUN.log" 2>&1 &
    STAGE=$!
    kill_after_first_part "$RUN/rationales/hindsight"
}

echo "== outage: down longer than 2 retries"
start outage 2
if wait $STAGE; then
    echo "FAIL: the stage finished without its server" >&2
    exit 1
fi
echo "stage failed as it should; its error:"
grep -i "error" "$RUN.log" | tail -1 | cut -c1-400
echo "parts kept: $(parts "$RUN/rationales/hindsight")"
serve "$OUT/outage-server.log"
"$BIN" rationales --config "$CONFIG" --run-dir "$RUN" > "$RUN-resume.log" 2>&1
kill_server
sed 's/\x1b\[[0-9;]*m//g' "$RUN-resume.log" | grep -o "resuming the store.*" | head -1
check_store "$RUN" "$CONFIG"

echo "== blip: restarted within 6 retries"
start blip 6
sleep 3
serve "$OUT/blip-server.log"
echo "server restarted"
wait $STAGE
kill_server
echo "retries logged: $(grep -c 'retrying' "$RUN.log")"
check_store "$RUN" "$CONFIG"
echo "all checks passed"
