#!/usr/bin/env python3
"""Why a likelihood selector scores below random: what its choices favour, beside the positives.

    target/release/examples/likelihood_bench --data assets/ml-100k --style chat --history 10 \
        --users 300 --warmup 0 --split valid --dump /tmp/req.jsonl --scores /tmp/scores.jsonl
    python3 scripts/eval/selector_bias.py /tmp/req.jsonl /tmp/scores.jsonl   # or .jsonl.gz

Reads the requests (`--dump`: each user's context and candidate continuations in the shown order)
and the per-token log-probabilities with the positive's index (`--scores`), and prints, for the
mean and the sum of the log-probabilities (the two reductions a selector can rank by):
HR@1 with a 95 % bootstrap interval; how often each shown position is chosen against how often
it holds the positive; the chosen candidate's token count against the positive's and the list's;
and the rank correlation between a candidate's token count and its score. A selector that
systematically prefers a position or a title length that the positives do not share scores
below the 1/n of a random choice. Standard library only.
"""
import argparse
import gzip
import json
import random
import statistics


def read_lines(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def spearman(xs, ys):
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    rx, ry = ranks(xs), ranks(ys)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    return cov / (vx * vy) ** 0.5 if vx and vy else float("nan")


def interval(hits, resamples=2000, seed=7):
    rng = random.Random(seed)
    n = len(hits)
    means = sorted(sum(hits[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    return means[int(0.025 * resamples)], means[int(0.975 * resamples)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("requests", help="likelihood_bench --dump file")
    ap.add_argument("scores", help="likelihood_bench --scores file (with `target`)")
    args = ap.parse_args()
    requests = {r["user"]: r for r in read_lines(args.requests)}
    rows = read_lines(args.scores)
    if not rows or "target" not in rows[0]:
        raise SystemExit(f"{args.scores}: no `target` field (rerun likelihood_bench with --scores)")
    size = len(rows[0]["logprobs"])
    print(f"users {len(rows)}, {size} candidates each; random HR@1 {1 / size:.3f}")
    positives = [0] * size
    for r in rows:
        positives[r["target"]] += 1
    for name, reduce in [("mean", statistics.fmean), ("sum", sum)]:
        hits, chosen_at = [], [0] * size
        chosen_len, target_len, list_len, corr = [], [], [], []
        for r in rows:
            lps = r["logprobs"]
            lens = [len(lp) for lp in lps]
            scores = [reduce(lp) for lp in lps]
            best = max(range(size), key=lambda i: (scores[i], -i))
            hits.append(int(best == r["target"]))
            chosen_at[best] += 1
            chosen_len.append(lens[best])
            target_len.append(lens[r["target"]])
            list_len.append(statistics.fmean(lens))
            corr.append(spearman(lens, scores))
        lo, hi = interval(hits)
        print(f"\n[{name} log-probability] HR@1 {statistics.fmean(hits):.3f} [{lo:.3f}, {hi:.3f}]")
        print("  position: chosen / holds the positive")
        for i in range(size):
            print(f"    {i + 1}: {chosen_at[i] / len(rows):.3f} / {positives[i] / len(rows):.3f}")
        print(
            f"  tokens per title: chosen {statistics.fmean(chosen_len):.2f}, positive "
            f"{statistics.fmean(target_len):.2f}, list mean {statistics.fmean(list_len):.2f}"
        )
        valid = [c for c in corr if c == c]
        print(f"  Spearman(title tokens, score) per user, mean {statistics.fmean(valid):+.3f}")
    missing = [r["user"] for r in rows if r["user"] not in requests]
    if missing:
        print(f"\nnote: {len(missing)} users of the scores are not in the requests file")


if __name__ == "__main__":
    main()
