"""Does a row add anything to popularity? Log-linear fusion of per-candidate scores, weights
chosen on the validation split, the test split read once.

For each row given with --row NAME (its predictions must carry `scores`, which the pipeline
writes for ranking selectors), the fused score of a candidate is

    score_row + w * ln(1 + training count)

and for --pair A+B (two rows, both with scores) `v * score_A + score_B + w * ln(1 + count)`
(v = 0 is on the grid, so the pair can fall back to B + popularity on validation).
The counts are the most-popular baseline's: every user's training interactions in the data
files (each sequence without its last two items), recomputed here from --data as
scripts/eval/recompute.py does. The weights are grid-searched on the validation predictions
(HR@1 at --size candidates; ties keep the smaller weight); the chosen weights are then applied
to the test predictions once, and each fused row is printed with its bootstrap interval and its
paired difference against most popular (paired bootstrap over users and McNemar's exact p).
The best candidate wins, the first listed on ties, as in the pipeline.

    /opt/pyref/bin/python scripts/eval/fusion.py --data ../shared/data/amazon-games-2018 \
        --valid runs/exp/seq-scores-games/eval/valid --test runs/exp/seq-scores-games/eval/test \
        --row base-slm --row content --pair base-slm+content --out fusion.json

Only the standard library is needed (no torch).
"""
import argparse
import json
import math
import random
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recompute import RESAMPLES, bootstrap, load_sequences, mcnemar, read_text  # noqa: E402

GRID = [0.0] + [round(10 ** (k / 8), 4) for k in range(-24, 17)]  # 0, 0.001 ... 100


def load_rows(folder, name, size):
    """{user: prediction} of row `name` at `size` candidates, from NAME.jsonl[.gz]."""
    for suffix in (".jsonl", ".jsonl.gz"):
        path = Path(folder) / f"{name}{suffix}"
        if path.exists():
            break
    else:
        sys.exit(f"{folder}: no {name}.jsonl or {name}.jsonl.gz")
    out = {}
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        p = json.loads(line)
        if len(p["candidates"]) != size:
            continue
        if name != "most-popular" and not p.get("scores"):
            sys.exit(f"{path}:{n}: no `scores` (rerun the row with a pipeline that writes them)")
        out[p["user"]] = p
    if not out:
        sys.exit(f"{path}: no prediction with {size} candidates")
    return out


def hit(pred, scores):
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return pred["candidates"][best] == pred["target"]


def fused_hits(preds, counts, weights, rows):
    """Per-user hits of sum_k weights[k] * scores of rows[k] + weights[-1] * ln(1 + count)
    (`weights` has one entry per row, then the popularity weight)."""
    out = {}
    for user, base in preds[rows[0]].items():
        logc = [math.log1p(counts[c]) for c in base["candidates"]]
        total = [weights[-1] * l for l in logc]
        for w, r in zip(weights[:-1], rows):
            s = preds[r][user]["scores"]
            total = [t + w * x for t, x in zip(total, s)]
        out[user] = hit(base, total)
    return out


def choose(preds, counts, rows):
    """Weights maximising validation HR@1: the last row's weight is 1, the other rows' and the
    popularity weight come from the grid (the first best in grid order on ties)."""
    best = None
    free = len(rows)  # (rows - 1) score weights + the popularity weight

    def rec(prefix):
        nonlocal best
        if len(prefix) == free:
            w = prefix[:-1] + [1.0, prefix[-1]]
            hr = sum(fused_hits(preds, counts, w, rows).values()) / len(preds[rows[0]])
            if best is None or hr > best[0]:
                best = (hr, w)
            return
        for g in GRID:
            rec(prefix + [g])
    rec([])
    return best


def paired(a, b):
    users = sorted(set(a) & set(b))
    diffs = [float(a[u]) - float(b[u]) for u in users]
    lo, hi = bootstrap(diffs)
    only_a = sum(1 for u in users if a[u] and not b[u])
    only_b = sum(1 for u in users if b[u] and not a[u])
    return sum(diffs) / len(diffs), lo, hi, mcnemar(only_a, only_b), len(users)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, type=Path, help="folder of the RecBole atomic files")
    ap.add_argument("--valid", required=True, help="eval folder of the validation split")
    ap.add_argument("--test", required=True, help="eval folder of the test split")
    ap.add_argument("--row", action="append", default=[], help="a row to fuse with popularity")
    ap.add_argument("--pair", action="append", default=[], help="A+B: two rows and popularity")
    ap.add_argument("--size", type=int, default=5, help="candidates per list (default 5)")
    ap.add_argument("--out", type=Path, help="JSON file to write")
    a = ap.parse_args()
    _, seqs = load_sequences(a.data)
    counts = Counter(it for s in seqs.values() for it in (s[:-2] if len(s) >= 3 else s))
    specs = [[r] for r in a.row] + [p.split("+") for p in a.pair]
    names = sorted({r for s in specs for r in s} | {"most-popular"})
    valid = {n: load_rows(a.valid, n, a.size) for n in names}
    test = {n: load_rows(a.test, n, a.size) for n in names}
    pop_test = {u: p["hit"] for u, p in test["most-popular"].items()}
    report = {"size": a.size, "grid": GRID, "resamples": RESAMPLES, "rows": []}
    print(f"| fused row | weights (row, ..., popularity) | valid HR@1 | test HR@1 [95 % CI] | "
          f"test - most popular [95 % CI] | McNemar p | users |")
    print("|---|---|---:|---:|---:|---:|---:|")
    pv = sum(p["hit"] for p in valid["most-popular"].values()) / len(valid["most-popular"])
    pt = sum(pop_test.values()) / len(pop_test)
    lo, hi = bootstrap([float(h) for h in pop_test.values()])
    print(f"| most popular | - | {pv:.3f} | {pt:.3f} [{lo:.3f}, {hi:.3f}] | - | - | {len(pop_test)} |")
    for spec in specs:
        hr_v, w = choose(valid, counts, spec)
        hits = fused_hits(test, counts, w, spec)
        vals = [float(h) for h in hits.values()]
        lo, hi = bootstrap(vals)
        d, dlo, dhi, p, users = paired(hits, pop_test)
        label = " + ".join(spec) + " + popularity"
        print(f"| {label} | {', '.join(f'{x:g}' for x in w)} | {hr_v:.3f} | "
              f"{sum(vals) / len(vals):.3f} [{lo:.3f}, {hi:.3f}] | {d:+.3f} [{dlo:+.3f}, {dhi:+.3f}] | "
              f"{p:.3g} | {users} |")
        report["rows"].append({"rows": spec, "weights": w, "valid_hr1": hr_v,
                               "test_hr1": sum(vals) / len(vals), "test_ci": [lo, hi],
                               "minus_most_popular": [d, dlo, dhi], "mcnemar_p": p,
                               "users": users, "test_hits": hits})
    for spec in specs:
        if len(spec) == 1:
            continue
        # Does the first row add anything to (second row + popularity)?
        alone = next((r for r in report["rows"] if r["rows"] == spec[1:]), None)
        both = next(r for r in report["rows"] if r["rows"] == spec)
        if alone:
            d, dlo, dhi, p, users = paired(both["test_hits"], alone["test_hits"])
            print(f"\n{' + '.join(spec)} + popularity - ({spec[1]} + popularity): "
                  f"{d:+.3f} [{dlo:+.3f}, {dhi:+.3f}], McNemar p = {p:.3g}, {users} users")
    if a.out:
        a.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
