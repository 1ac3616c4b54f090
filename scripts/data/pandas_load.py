"""The pandas side of the loading benchmark: read a RecBole atomic .inter file, remap ids,
sort each user's events by time (stable) and build per-user sequences as offsets into one item
array -- the same work `pulserec_data::load` does. Prints one JSON line with the median time.

Usage: python scripts/data/pandas_load.py FILE.inter [--repeat 5]
"""
import argparse
import json
import time

import numpy as np
import pandas as pd


def load(path):
    df = pd.read_csv(path, sep="\t")
    df.columns = [c.split(":")[0] for c in df.columns]
    users, user_ids = pd.factorize(df["user_id"])
    items, item_ids = pd.factorize(df["item_id"])
    df = df.assign(u=users, i=items + 1)
    df = df.sort_values(["u", "timestamp"], kind="stable")
    counts = np.bincount(df["u"].to_numpy(), minlength=len(user_ids))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return offsets, df["i"].to_numpy(), df["rating"].to_numpy(), df["timestamp"].to_numpy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    times = []
    for _ in range(max(1, args.repeat)):
        t = time.perf_counter()
        offsets, items, _, _ = load(args.path)
        times.append(time.perf_counter() - t)
    times.sort()
    print(json.dumps({"impl": f"pandas {pd.__version__}", "interactions": int(len(items)),
                      "median_s": round(times[len(times) // 2], 4),
                      "runs": [round(t, 4) for t in times]}))


if __name__ == "__main__":
    main()
