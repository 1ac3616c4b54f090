#!/usr/bin/env bash
# Builds the results-table fixture: the first USERS users' 5-candidate predictions of some rows of
# a finished run, and the tables scripts/eval/recompute.py computes from them (the independent
# reference `tests/results_reference.rs` compares `pulserec::results` with).
#   scripts/eval/make_fixture.sh RUN_DIR DATA_DIR USERS ROW...
# e.g. scripts/eval/make_fixture.sh runs/exp/eval-games ../shared/data/amazon-games-2018 300 \
#        most-popular content base-slm
set -euo pipefail
run=$1
data=$2
users=$3
shift 3
out=tests/fixtures/results
mkdir -p "$out"
python3 - "$run" "$users" "$out/predictions.jsonl" "$@" <<'PY'
import json, sys
run, users, out, rows = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
with open(out, "w") as f:
    for row in rows:
        kept = 0
        for line in open(f"{run}/eval/test/{row}.jsonl"):
            p = json.loads(line)
            if len(p["candidates"]) == 5 and kept < users:
                f.write(json.dumps(p) + "\n")
                kept += 1
PY
python3 scripts/eval/recompute.py --data "$data" --out "$out/reference.json" "$out/predictions.jsonl"
