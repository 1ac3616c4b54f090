#!/usr/bin/env python3
"""How much of the answer a rationale store gives away.

For every stored rationale, the user's explained item (the last training item: the third from
the end of the sequence in the LLMRank `.test.inter` file) is looked up, and the rationale is
checked for the item's whole title and for its first word of three or more letters that is not
a common English word (a franchise name such as "Halo"), after the paper's normalisation (lower case, punctuation stripped,
whitespace collapsed). A hindsight rationale is written knowing the item, so a training prompt
that carries it can name the answer; test prompts carry none.

    python3 scripts/eval/rationale_leak.py --data ../shared/data/amazon-games-2018 \
        runs/exp/rank-games-reasons/rationales/hindsight

Needs pyarrow (the stores are Parquet; scripts/setup_python.sh installs it).
"""
import argparse
import glob
import html
import os
import re

import pyarrow.parquet as pq


COMMON = {"the", "and", "for", "new", "with", "game", "games", "edition", "super", "world"}


def norm(text):
    text = html.unescape(text).lower()
    text = re.sub(r"[^a-z0-9 ]+", " ", text)
    return " ".join(text.split())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="folder with *.item and *.test.inter")
    ap.add_argument("store", help="rationale store folder (part-*.parquet)")
    args = ap.parse_args()
    item_file = glob.glob(os.path.join(args.data, "*.item"))[0]
    inter_file = glob.glob(os.path.join(args.data, "*.test.inter"))[0]
    titles = {}
    with open(item_file) as f:
        next(f)
        for line in f:
            i, t = line.rstrip("\n").split("\t", 1)
            titles[int(i)] = t
    explained = {}
    with open(inter_file) as f:
        next(f)
        for line in f:
            u, hist, last = line.rstrip("\n").split("\t")
            seq = [int(x) for x in hist.split()] + [int(last)]
            if len(seq) >= 3:
                explained[int(u)] = seq[-3]
    rows = []
    for part in sorted(glob.glob(os.path.join(args.store, "*.parquet"))):
        rows += pq.read_table(part, columns=["user", "text"]).to_pylist()
    whole = first = 0
    for r in rows:
        title = norm(titles[explained[r["user"]]])
        text = norm(r["text"])
        whole += title in text
        word = next(
            (w for w in title.split() if len(w) >= 3 and w.isalpha() and w not in COMMON), None
        )
        first += word is not None and re.search(rf"\b{re.escape(word)}\b", text) is not None
    n = len(rows)
    print(f"rationales: {n}")
    print(f"whole title named: {whole} ({whole / n:.3f})")
    print(f"first uncommon word of the title (3+ letters) named: {first} ({first / n:.3f})")


if __name__ == "__main__":
    main()
