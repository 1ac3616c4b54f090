#!/usr/bin/env python3
"""Learning curve of an SLM row: HR@1 against training examples, with baselines as lines.

    /opt/pyref/bin/python scripts/eval/learning_curve.py --out docs/results/curve.png --title "Games, valid" \
        --size 5 \
        --point 2713=runs/a/eval/valid/no-rationale.jsonl \
        --point 10814=runs/b/eval/valid/no-rationale.jsonl \
        --baseline "most popular=runs/b/eval/valid/most-popular.jsonl" \
        --baseline "random=runs/b/eval/valid/random.jsonl"

Each `--point X=FILE` is one prediction file (`eval/<split>/<row>.jsonl`, plain or .gz) of a
model trained on X examples; several files with the same X (seeds) are pooled as
`scripts/eval/recompute.py` pools seeds: each user's hits are averaged over seeds first. Every
point and baseline is HR@1 on the `--size`-candidate lists with the 95 % percentile bootstrap
over users of recompute.py (same resamples and seed). Needs matplotlib (scripts/setup_python.sh
installs it into /opt/pyref). Writes the PNG (log x axis,
labelled axes, legend, interval bars and bands) and prints a Markdown table of the same numbers.
"""
import argparse
import gzip
import json
import os
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from recompute import bootstrap  # noqa: E402


def hits_per_user(files, size):
    """{user: mean hit over the files (seeds)} for the lists of `size` candidates."""
    per = defaultdict(list)
    for path in files:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt") as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    p = json.loads(line)
                    if len(p["candidates"]) == size:
                        per[p["user"]].append(1.0 if p["hit"] else 0.0)
                except (ValueError, KeyError) as e:
                    sys.exit(f"{path}:{n}: {e}")
    if not per:
        sys.exit(f"no predictions with {size} candidates in {files}")
    return {u: sum(v) / len(v) for u, v in per.items()}


def summary(files, size):
    users = hits_per_user(files, size)
    values = [users[u] for u in sorted(users)]
    lo, hi = bootstrap(values)
    return sum(values) / len(values), lo, hi, len(values)


def pairs(specs, what):
    out = []
    for s in specs:
        if "=" not in s:
            sys.exit(f"{what} `{s}`: expected NAME=FILE")
        k, v = s.split("=", 1)
        out.append((k.strip(), v.strip()))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--point", action="append", default=[], help="EXAMPLES=PRED.jsonl")
    ap.add_argument("--baseline", action="append", default=[], help="NAME=PRED.jsonl")
    ap.add_argument("--size", type=int, default=5, help="candidates per list")
    ap.add_argument("--title", default="")
    ap.add_argument("--label", default="SFT without rationale", help="legend of the curve")
    ap.add_argument("--out", required=True, help="PNG path")
    args = ap.parse_args()
    points = defaultdict(list)
    for x, f in pairs(args.point, "--point"):
        try:
            points[int(x)].append(f)
        except ValueError:
            sys.exit(f"--point `{x}={f}`: the number of examples must be an integer")
    if not points:
        sys.exit("give at least one --point")
    curve = [(x, *summary(fs, args.size)) for x, fs in sorted(points.items())]
    baselines = [(name, *summary([f], args.size)) for name, f in pairs(args.baseline, "--baseline")]

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    xs = [c[0] for c in curve]
    ys = [c[1] for c in curve]
    err = [[c[1] - c[2] for c in curve], [c[3] - c[1] for c in curve]]
    ax.errorbar(xs, ys, yerr=err, marker="o", capsize=4, color="tab:blue", label=args.label)
    colours = ["tab:gray", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    for (name, m, lo, hi, _), c in zip(baselines, colours):
        ax.axhline(m, color=c, linestyle="--", linewidth=1.2, label=f"{name} ({m:.3f})")
        ax.axhspan(lo, hi, color=c, alpha=0.12)
    ax.set_xscale("log")
    ax.set_xlabel("training examples (next-item targets)")
    ax.set_ylabel(f"HR@1, {args.size} candidates")
    if args.title:
        ax.set_title(args.title)
    ax.set_ylim(0, 1)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out)

    print(f"| row | examples | users | HR@1 @{args.size} | 95 % interval |")
    print("|---|---:|---:|---:|---|")
    for x, m, lo, hi, n in curve:
        print(f"| {args.label} | {x} | {n} | {m:.3f} | [{lo:.3f}, {hi:.3f}] |")
    for name, m, lo, hi, n in baselines:
        print(f"| {name} | - | {n} | {m:.3f} | [{lo:.3f}, {hi:.3f}] |")


if __name__ == "__main__":
    main()
