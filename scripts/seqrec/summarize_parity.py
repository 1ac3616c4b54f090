"""Summarises scripts/seqrec/parity.sh runs: per-protocol test HR@10 / NDCG@10 of both
implementations (mean over seeds, relative gap) and median seconds per epoch (ratio).

    python scripts/seqrec/summarize_parity.py RUN_DIR SEED [SEED ...]  > summary.json
"""

import json
import statistics
import sys


def main():
    runs, seeds = sys.argv[1], sys.argv[2:]
    rows = {"rust": {"full": [], "sampled": [], "s_per_epoch": []},
            "torch": {"full": [], "sampled": [], "s_per_epoch": []}}
    for s in seeds:
        r = json.load(open(f"{runs}/seed{s}/rust/metrics.json"))
        t = json.load(open(f"{runs}/seed{s}/torch.json"))
        rows["rust"]["sampled"].append(r["test"]["metrics"])
        rows["rust"]["full"].append(r["test_full_ranking"]["metrics"])
        rows["rust"]["s_per_epoch"].append(r["median_seconds_per_epoch"])
        rows["torch"]["sampled"].append(t["sampled"]["metrics"])
        rows["torch"]["full"].append(t["full"]["metrics"])
        rows["torch"]["s_per_epoch"].append(t["median_seconds_per_epoch"])
        epochs = r["epochs_run"]
    out = {"seeds": [int(s) for s in seeds], "epochs": epochs, "protocols": {}}
    for proto in ("sampled", "full"):
        p = {}
        for m in ("HR@10", "NDCG@10"):
            ours = statistics.mean(x[m] for x in rows["rust"][proto])
            ref = statistics.mean(x[m] for x in rows["torch"][proto])
            p[m] = {"rust": ours, "torch": ref, "relative_gap": (ours - ref) / ref,
                    "rust_per_seed": [x[m] for x in rows["rust"][proto]],
                    "torch_per_seed": [x[m] for x in rows["torch"][proto]]}
        out["protocols"]["sampled100" if proto == "sampled" else "full"] = p
    rs, ts = rows["rust"]["s_per_epoch"], rows["torch"]["s_per_epoch"]
    out["seconds_per_epoch"] = {"rust_median": statistics.median(rs),
                                "torch_median": statistics.median(ts),
                                "rust_over_torch": statistics.median(rs) / statistics.median(ts),
                                "rust_per_seed": rs, "torch_per_seed": ts}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
