"""Independent recomputation of the evaluation tables from per-user prediction files.

A pure-standard-library reference for checking the Rust results code (`src/results.rs`,
`pulserec_core::stats`) and the most-popular baseline. It reads the prediction JSON lines the
pipeline writes (`eval/<split>/<row>.jsonl`) and the raw data files, and writes OUT.json:

    python3 scripts/eval/recompute.py --data DATA_DIR --out OUT.json PRED.jsonl [PRED.jsonl ...]

DATA_DIR is a folder of RecBole atomic files: Amazon Games (`Games-6k.test.inter`: each row a
user's whole sequence, `item_id_list` then `item_id`, oldest first) or MovieLens-100K
(`ml-100k.inter`: one interaction per row, a user's events sorted by `timestamp`).

Checks, per prediction line (the first failure stops with FILE:LINE and exit code 2):
  * the fields and their types; `data` equals the data set's name; no duplicate
    (split, variant, size, seed, user);
  * the user is an evaluation user and `target` is their held-out item (last = test,
    second-to-last = valid); `target` is a candidate, candidates are distinct, `chosen` is
    null or a candidate; without answer text, `hit == (chosen == target)`;
  * for `most-popular` rows, the choice is recomputed (highest training count, ties to the first
    listed candidate); exit code 1 when any disagrees.
Tables, per (split, variant, list size): HR@1 = mean over users of each user's seed-averaged
hits, a 95 % percentile bootstrap over users (10,000 resamples, random.Random(12345) afresh for
each interval, quantiles linearly interpolated between order statistics, as numpy's default and
the Rust code do) and the Wald interval mean +- 1.96 * sqrt(var / n) (var the population variance
of the per-user values, i.e. p(1 - p) with one seed; not clipped to [0, 1]); HR@1 by the 0-based
position of the target (counted per prediction line); paired differences of every non-baseline
row against `no-rationale` and `most-popular` on their common users, with McNemar's exact
two-sided p-value when both rows together have exactly one seed. Rows and pairs also carry
`split`, so test and valid files may be given together.

Conventions matched with `pulserec_data::load` (crates/pulserec-data/src):
  * the RecBole file is the folder's whole `.inter` file, else its `.test.inter` (names sorted);
    blank lines are skipped, fields are TAB-separated and must number as in the header, ids are
    trimmed; a `token_seq` is split on single spaces (empty pieces dropped); gzip is read too;
  * timestamps are integers, or floats truncated toward zero; within a user, events are sorted by
    timestamp with ties kept in file order; without timestamps, file order;
  * no user or item filtering at load; repeated (user, item) events are kept;
  * leave-one-out: users with >= 3 items have test = last, valid = second-to-last, train = the
    rest; shorter users are train-only (all their items count as training);
  * popularity counts every user of the data files (not only the first `max_users`);
  * the data set's name is `games` when the folder name contains "games", `ml100k` when it
    contains "ml-100k" or "ml100k", else the lower-cased folder name (`eval::data_name`).
"""
import argparse
import gzip
import json
import math
import random
import sys
from collections import Counter, defaultdict
from pathlib import Path

BASELINES = {"random", "most-popular", "content", "sasrec"}
RESAMPLES = 10_000
FIELDS = {"data": str, "split": str, "variant": str, "seed": int, "user": str, "target": str,
          "candidates": list, "hit": bool}


def fail(msg, code=2):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


def read_text(path):
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw.decode("utf-8")


def load_sequences(data_dir):
    """Per-user chronological item lists {raw user id: [raw item id, ...]}, in file order."""
    plain = lambda p: p.name.lower().removesuffix(".gz")  # noqa: E731
    inter = sorted(p for p in data_dir.iterdir() if p.is_file() and plain(p).endswith(".inter"))
    whole = [p for p in inter if not plain(p).endswith((".train.inter", ".valid.inter", ".test.inter"))]
    test = [p for p in inter if plain(p).endswith(".test.inter")]
    if not (whole or test):
        fail(f"{data_dir}: no .inter file (whole or .test.inter)")
    path = (whole or test)[0]
    lines = [(n, l.removesuffix("\r")) for n, l in enumerate(read_text(path).split("\n"), 1)]
    lines = [(n, l) for n, l in lines if l.strip()]
    if not lines:
        fail(f"{path}: empty")
    cols = [c.split(":", 1)[0].strip() for c in lines[0][1].split("\t")]
    if "user_id" not in cols or "item_id" not in cols:
        fail(f"{path}:{lines[0][0]}: header lacks user_id or item_id")
    at = {c: i for i, c in enumerate(cols)}
    events = defaultdict(list)  # user -> [(timestamp, file position, item)]
    for pos, (n, line) in enumerate(lines[1:]):
        f = line.split("\t")
        if len(f) != len(cols):
            fail(f"{path}:{n}: expected {len(cols)} fields, found {len(f)}")
        user, item = f[at["user_id"]].strip(), f[at["item_id"]].strip()
        if not user or not item:
            fail(f"{path}:{n}: empty id")
        if "item_id_list" in at:
            if user in events:
                fail(f"{path}:{n}: user {user} repeated in a pre-split file")
            events[user] = [(0, 0, it) for it in f[at["item_id_list"]].split(" ") if it]
        t = f[at["timestamp"]].strip() if "timestamp" in at else "0"
        try:
            ts = int(t) if t.lstrip("-").isdigit() else int(float(t))  # float: truncated, as `as i64`
        except (ValueError, OverflowError):
            fail(f"{path}:{n}: `{t}` is not a timestamp")
        events[user].append((ts, pos, item))
    seqs = {u: [it for _, _, it in sorted(ev, key=lambda e: e[0])] for u, ev in events.items()}
    return path, seqs


def data_name(data_dir):
    name = data_dir.resolve().name.lower()
    return "games" if "games" in name else "ml100k" if ("ml-100k" in name or "ml100k" in name) else name


def quantile(sorted_v, q):
    pos = q * (len(sorted_v) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_v[lo] + (sorted_v[hi] - sorted_v[lo]) * (pos - lo)


def bootstrap(values):
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    rng = random.Random(12345)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(RESAMPLES))
    return quantile(means, 0.025), quantile(means, 0.975)


def wald(values):
    n = len(values)
    m = sum(values) / n
    half = 1.96 * math.sqrt(sum((v - m) ** 2 for v in values) / n / n)
    return m - half, m + half


def mcnemar(b, c):
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)  # exact big-integer ratio, rounded once


def read_predictions(files, name, seqs, counts):
    """groups[(split, variant, size)][user][seed] = hit; positions[same key][pos] = [hits, n]."""
    groups, positions = defaultdict(lambda: defaultdict(dict)), {}
    agree = total = 0
    for path in files:
        with open(path, encoding="utf-8") if not str(path).endswith(".gz") else \
                gzip.open(path, "rt", encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                where = f"{path}:{n}"
                try:
                    r = json.loads(line)
                except json.JSONDecodeError as e:
                    fail(f"{where}: not JSON ({e})")
                if not isinstance(r, dict):
                    fail(f"{where}: not a JSON object")
                for k, t in FIELDS.items():
                    if not isinstance(r.get(k), t) or (t is int and isinstance(r[k], bool)):
                        fail(f"{where}: field `{k}` missing or not {t.__name__}")
                cands, chosen, target, user = r["candidates"], r.get("chosen"), r["target"], r["user"]
                if chosen is not None and not isinstance(chosen, str):
                    fail(f"{where}: `chosen` must be a string or null")
                if r["data"] != name:
                    fail(f"{where}: data `{r['data']}` but --data is `{name}`")
                seq = seqs.get(user)
                if seq is None or len(seq) < 3:
                    fail(f"{where}: user {user} is not an evaluation user of the data")
                held = {"test": seq[-1], "valid": seq[-2]}.get(r["split"])
                if held is None:
                    fail(f"{where}: split `{r['split']}` is neither test nor valid")
                if target != held:
                    fail(f"{where}: target {target} but the {r['split']} item of user {user} is {held}")
                if not all(isinstance(c, str) for c in cands) or len(set(cands)) != len(cands):
                    fail(f"{where}: candidates must be distinct strings")
                if target not in cands:
                    fail(f"{where}: target {target} not among the candidates")
                if chosen is not None and chosen not in cands:
                    fail(f"{where}: chosen {chosen} not among the candidates")
                if not r.get("answer") and r["hit"] != (chosen == target):
                    fail(f"{where}: hit is {r['hit']} but chosen {chosen} vs target {target}")
                if r["variant"] == "most-popular":
                    total += 1
                    mine = max(cands, key=lambda c: counts.get(c, 0))  # the first maximum wins
                    agree += mine == chosen
                    if mine != chosen and total - agree <= 5:
                        print(f"{where}: most-popular chose {chosen}, recomputed {mine} "
                              f"(counts {[counts.get(c, 0) for c in cands]})", file=sys.stderr)
                key = (r["split"], r["variant"], len(cands))
                if r["seed"] in groups[key][user]:
                    fail(f"{where}: duplicate {key} seed {r['seed']} user {user}")
                groups[key][user][r["seed"]] = r["hit"]
                cell = positions.setdefault(key, [[0, 0] for _ in cands])[cands.index(target)]
                cell[0] += r["hit"]
                cell[1] += 1
    return groups, positions, agree, total


def per_user(group):
    return {u: sum(s.values()) / len(s) for u, s in group.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, type=Path, help="folder of the RecBole atomic files")
    ap.add_argument("--out", required=True, type=Path, help="JSON file to write")
    ap.add_argument("predictions", nargs="+", type=Path, help="prediction .jsonl files")
    a = ap.parse_args()
    inter, seqs = load_sequences(a.data)
    counts = Counter(it for s in seqs.values() for it in (s[:-2] if len(s) >= 3 else s))
    print(f"{inter}: {len(seqs)} users, {sum(map(len, seqs.values()))} interactions, "
          f"{sum(counts.values())} training interactions over {len(counts)} items")
    groups, positions, agree, total = read_predictions(a.predictions, data_name(a.data), seqs, counts)

    rows = []
    for key in sorted(groups, key=lambda k: (k[1], k[2], k[0])):
        split, variant, size = key
        vals = list(per_user(groups[key]).values())
        seeds = {s for d in groups[key].values() for s in d}
        lo, hi = bootstrap(vals)
        wl, wh = wald(vals)
        rows.append({"variant": variant, "size": size, "split": split, "users": len(vals),
                     "seeds": len(seeds), "hr1": sum(vals) / len(vals), "boot_low": lo,
                     "boot_high": hi, "wald_low": wl, "wald_high": wh, "by_position": positions[key]})

    pairs = []
    for split, variant, size in sorted(groups, key=lambda k: (k[1], k[2], k[0])):
        if variant in BASELINES:
            continue
        for other in ("no-rationale", "most-popular"):
            kb = (split, other, size)
            if other == variant or kb not in groups:
                continue
            ga, gb = groups[(split, variant, size)], groups[kb]
            ua, ub = per_user(ga), per_user(gb)
            common = sorted(set(ua) & set(ub))
            if not common:
                continue
            d = [ua[u] - ub[u] for u in common]
            lo, hi = bootstrap(d)
            seeds = {s for g in (ga, gb) for u in common for s in g[u]}
            p = None
            if len(seeds) == 1:
                b = sum(1 for u in common if ua[u] == 1 and ub[u] == 0)
                c = sum(1 for u in common if ua[u] == 0 and ub[u] == 1)
                p = mcnemar(b, c)
            pairs.append({"a": variant, "b": other, "size": size, "split": split,
                          "users": len(common), "diff": sum(d) / len(d), "boot_low": lo,
                          "boot_high": hi, "mcnemar_p": p})

    out = {"data_dir": str(a.data), "files": [str(p) for p in a.predictions],
           "popularity_agreement": {"agree": agree, "total": total}, "rows": rows, "pairs": pairs}
    a.out.write_text(json.dumps(out, indent=1) + "\n")

    print(f"{'split':<6} {'variant':<16} {'size':>4} {'users':>5} {'seeds':>5}  HR@1   bootstrap 95 %   Wald 95 %")
    for r in rows:
        print(f"{r['split']:<6} {r['variant']:<16} {r['size']:>4} {r['users']:>5} {r['seeds']:>5}  "
              f"{r['hr1']:.3f} [{r['boot_low']:.3f}, {r['boot_high']:.3f}] [{r['wald_low']:.3f}, {r['wald_high']:.3f}]")
    for p in pairs:
        mp = "n/a" if p["mcnemar_p"] is None else f"{p['mcnemar_p']:.3g}"
        print(f"{p['split']:<6} {p['a']} - {p['b']} @{p['size']}: {p['diff']:+.3f} "
              f"[{p['boot_low']:+.3f}, {p['boot_high']:+.3f}] McNemar p {mp}, {p['users']} users")
    print(f"most-popular agreement: {agree}/{total}")
    if agree != total:
        sys.exit(1)


if __name__ == "__main__":
    main()
