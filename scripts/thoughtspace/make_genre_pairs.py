"""MovieLens-100K genre pairs for the `thought_space` example (the same construction as the
crate's genre test): behaviour = a user's N latest titles, rationale = a sentence about the genre
that dominates them. Standard library only.

Usage: python3 scripts/thoughtspace/make_genre_pairs.py ML100K_DIR OUT.jsonl [TITLES=6]
"""

import collections
import json
import sys


def rows(path):
    with open(path, encoding="utf-8") as f:
        next(f)
        for line in f:
            yield line.rstrip("\n").split("\t")


def main():
    src, out = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 6
    items = {r[0]: (r[1], r[3].split(" ")) for r in rows(f"{src}/ml-100k.item")}
    seqs = collections.defaultdict(list)
    for u, i, _, ts in rows(f"{src}/ml-100k.inter"):
        seqs[int(u)].append((int(float(ts)), int(i), i))
    with open(out, "w", encoding="utf-8") as f:
        for u in sorted(seqs):
            recent = sorted(seqs[u])[-n:]
            counts = collections.Counter()
            titles = []
            for _, _, i in recent:
                title, genres = items[i]
                titles.append(title)
                counts.update(genres)
            top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
            f.write(json.dumps({
                "user": str(u),
                "behaviour": "History: " + "; ".join(titles),
                "rationale": f"This viewer is drawn to {top} films.",
            }) + "\n")


if __name__ == "__main__":
    main()
