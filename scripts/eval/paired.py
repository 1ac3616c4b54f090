"""Paired comparison of two prediction files, e.g. rows of different runs on the same users.

    python3 scripts/eval/paired.py A.jsonl[.gz] B.jsonl[.gz] [--size 5] [--out OUT.json]

Both files are the per-user predictions the pipeline writes (`eval/<split>/<row>.jsonl`, or the
gzipped copies under docs/results/). For each candidate-list size present in both, on the users
both have (each user's hits first averaged over seeds): HR@1 of A and of B, the mean of A - B
with a 95 % percentile bootstrap over users (10,000 resamples, seeded as in recompute.py), and
McNemar's exact two-sided p-value when each file has one seed. The two files must be on the same
split and show each common user the same candidates (an error otherwise): a paired difference of
different lists is meaningless.
"""
import argparse
import gzip
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recompute import bootstrap, mcnemar  # noqa: E402


def load(path):
    """{size: {user: (split, sorted candidates, {seed: hit})}} of one prediction file."""
    opener = gzip.open if path.suffix == ".gz" else open
    rows = defaultdict(dict)
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                p = json.loads(line)
                size, user = len(p["candidates"]), p["user"]
                entry = rows[size].setdefault(user, (p["split"], sorted(p["candidates"]), {}))
                entry[2][p["seed"]] = 1.0 if p["hit"] else 0.0
            except (KeyError, TypeError, ValueError) as e:
                sys.exit(f"error: {path}:{n}: {e}")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--size", type=int, action="append", help="list sizes (default: all shared)")
    ap.add_argument("--out", type=Path, help="JSON file to write")
    args = ap.parse_args()
    a, b = load(args.a), load(args.b)
    results = []
    for size in sorted(set(a) & set(b)):
        if args.size and size not in args.size:
            continue
        common = sorted(set(a[size]) & set(b[size]))
        for u in common:
            (sa, ca, _), (sb, cb, _) = a[size][u], b[size][u]
            if sa != sb or ca != cb:
                sys.exit(f"error: user {u} at {size} candidates: splits {sa}/{sb} or candidate lists differ")
        mean = lambda e: sum(e[2].values()) / len(e[2])  # noqa: E731
        ha = [mean(a[size][u]) for u in common]
        hb = [mean(b[size][u]) for u in common]
        d = [x - y for x, y in zip(ha, hb)]
        lo, hi = bootstrap(d)
        one_seed = all(len(a[size][u][2]) == 1 and len(b[size][u][2]) == 1 for u in common)
        p = None
        if one_seed:
            p = mcnemar(sum(1 for x, y in zip(ha, hb) if x > y), sum(1 for x, y in zip(ha, hb) if x < y))
        r = {"a": str(args.a), "b": str(args.b), "size": size, "users": len(common),
             "hr1_a": sum(ha) / len(ha), "hr1_b": sum(hb) / len(hb), "diff": sum(d) / len(d),
             "boot_low": lo, "boot_high": hi, "mcnemar_p": p}
        results.append(r)
        pv = "n/a" if p is None else f"{p:.3g}"
        print(f"@{size}, {len(common)} users: A {r['hr1_a']:.3f}, B {r['hr1_b']:.3f}, "
              f"A - B {r['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}], McNemar p {pv}")
    if not results:
        sys.exit("error: no candidate-list size with common users")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
