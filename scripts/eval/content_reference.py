"""Independent Python reference for the zero-shot content-similarity baseline (MiniLM).

Rebuilds each user's history from the RecBole files, encodes titles with sentence-transformers
and scores candidates the way `pulserec_core::baselines::ContentSelector` does (cosine between
the mean of the history titles' unit embeddings and each candidate's unit embedding; argmax,
first listed on ties), then reports HR@1 per list size and how often the choice equals the
pipeline's `chosen`:

    /opt/pyref/bin/python scripts/eval/content_reference.py \
        --data assets/ml-100k --model assets/all-minilm-l6-v2 \
        docs/results/eval-ml100k-seed1/content.jsonl.gz [variant flags]

Variant flags (defaults = the Rust pipeline on eval-ml100k):
  --history N        last N history titles (default 3; 0 = the whole history)
  --title-form F     plain (the file's `movie_title`, e.g. "Usual Suspects, The"),
                     year ("Usual Suspects, The (1995)", as in the original u.item),
                     article ("The Usual Suspects"), article-year, genres ("Title; Crime Thriller"),
                     year-only ("(1995)": the year alone, to isolate what it contributes)
  --strip-year       remove a trailing " (1995)" from the final text
  --pooling P        mean-of-unit (ours), unit-of-sum (sum of raw, un-normalised embeddings),
                     max (most similar single history title), joined (one embedding of the
                     history titles joined with ", ")
  --ties T           order of same-timestamp events: file (ours, stable sort) or item (by id)
  --history-end E    test (history = everything before the target) or valid (the valid item is
                     dropped too, i.e. history = training items only)
  --resample K       ignore the stored negatives: draw K fresh lists per user and size from
                     --negatives unrated (never-rated items, ours) | all (any item but the
                     target) | popularity (weighted by interaction count); the target stays the
                     user's last item. Also reports most-popular HR@1 on the same lists.
  --all-users        with --resample: every user with >= 3 interactions, not only the file's
"""
import argparse
import gzip
import json
import random
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ARTICLES = r"The|A|An|Il|La|Le|Les|L'|Das|Der|Die|El|Los|Las|Lo|I|Un|Une"


def load(data_dir, ties):
    """({user: [item, ...] chronological}, {item: (title, year, genres)})."""
    events = defaultdict(list)
    lines = (Path(data_dir) / "ml-100k.inter").read_text(encoding="utf-8").splitlines()
    cols = [c.split(":")[0] for c in lines[0].split("\t")]
    for pos, line in enumerate(l for l in lines[1:] if l.strip()):
        f = dict(zip(cols, line.split("\t")))
        events[f["user_id"].strip()].append((int(float(f["timestamp"])), pos, f["item_id"].strip()))
    key = (lambda e: e[0]) if ties == "file" else (lambda e: (e[0], int(e[2])))
    seqs = {u: [e[2] for e in sorted(ev, key=key)] for u, ev in events.items()}
    items = {}
    lines = (Path(data_dir) / "ml-100k.item").read_text(encoding="utf-8").splitlines()
    cols = [c.split(":")[0] for c in lines[0].split("\t")]
    for line in lines[1:]:
        if line.strip():
            f = dict(zip(cols, line.split("\t")))
            items[f["item_id"].strip()] = (" ".join(f["movie_title"].split()),
                                           f.get("release_year", "").strip(),
                                           " ".join(f.get("class", "").split()))
    return seqs, items


def title_text(item, items, form, strip_year):
    title, year, genres = items[item]
    if form.startswith("article"):
        title = re.sub(rf"^(.*), ({ARTICLES})( \(.*\))?$", r"\2 \1\3", title)
    if form.endswith("year") and year:
        title = f"{title} ({year})"
    if form == "year-only":
        title = f"({year})"
    if form == "genres" and genres:
        title = f"{title}; {genres}"
    if strip_year:
        title = re.sub(r" \(\d{4}\)$", "", title)
    return title


def encode(model_dir, texts, threads):
    """(unit, raw) embedding matrices of `texts`: Transformer + mean pooling, as the model ships."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    torch.set_num_threads(threads)
    st = SentenceTransformer(modules=[models.Transformer(model_dir),
                                      models.Pooling.load(str(Path(model_dir) / "1_Pooling"))],
                             device="cpu")
    raw = st.encode(texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=False)
    unit = st.encode(texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True)
    return unit, raw


def read_lines(path):
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(l) for l in fh if l.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("predictions")
    ap.add_argument("--data", default="assets/ml-100k")
    ap.add_argument("--model", default="assets/all-minilm-l6-v2")
    ap.add_argument("--history", type=int, default=3)
    ap.add_argument("--title-form", default="plain",
                    choices=["plain", "year", "article", "article-year", "genres", "year-only"])
    ap.add_argument("--strip-year", action="store_true")
    ap.add_argument("--pooling", default="mean-of-unit",
                    choices=["mean-of-unit", "unit-of-sum", "max", "joined"])
    ap.add_argument("--ties", default="file", choices=["file", "item"])
    ap.add_argument("--history-end", default="test", choices=["test", "valid"])
    ap.add_argument("--resample", type=int, default=0)
    ap.add_argument("--negatives", default="unrated", choices=["unrated", "all", "popularity"])
    ap.add_argument("--all-users", action="store_true")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--show", type=int, default=0, help="print this many disagreements")
    a = ap.parse_args()

    seqs, items = load(a.data, a.ties)
    lines = read_lines(a.predictions)
    for r in lines:
        assert seqs[r["user"]][-1] == r["target"] or a.ties != "file", r["user"]
    # Popularity = training counts (each user's last two items held out), as recompute.py.
    counts = Counter(it for s in seqs.values() for it in (s[:-2] if len(s) >= 3 else s))

    if a.resample:
        rng = random.Random(a.seed)
        catalogue = sorted(items, key=int)
        allcount = Counter(it for s in seqs.values() for it in s)
        weights = [allcount.get(i, 0) for i in catalogue]
        users = sorted({r["user"] for r in lines}, key=int) if not a.all_users else \
            sorted((u for u, s in seqs.items() if len(s) >= 3), key=int)
        sizes = sorted({len(r["candidates"]) for r in lines})
        new = []
        for u in users:
            target, rated = seqs[u][-1], set(seqs[u])
            for n in sizes:
                for _ in range(a.resample):
                    negs = set()
                    while len(negs) < n - 1:
                        c = rng.choices(catalogue, weights)[0] if a.negatives == "popularity" \
                            else rng.choice(catalogue)
                        if c != target and (a.negatives == "all" or c not in rated):
                            negs.add(c)
                    cands = sorted(negs, key=int) + [target]
                    rng.shuffle(cands)
                    new.append({"user": u, "target": target, "candidates": cands, "chosen": None})
        lines = new

    def history(r):
        seq = [it for it in seqs[r["user"]] if it != r["target"]]
        if a.history_end == "valid":
            seq = seq[:-1]
        return seq[-a.history:] if a.history > 0 else seq

    hists = [history(r) for r in lines]
    text = {it: title_text(it, items, a.title_form, a.strip_year) for it in items}
    joined = [", ".join(text[h] for h in hs) for hs in hists] if a.pooling == "joined" else []
    keys = sorted(items, key=int)
    unit, raw = encode(a.model, [text[k] for k in keys] + joined, a.threads)
    row = {k: i for i, k in enumerate(keys)}

    by_size = defaultdict(lambda: [0, 0, 0, 0])  # hits, n, agree, popularity hits
    shown = 0
    for j, (r, hs) in enumerate(zip(lines, hists)):
        C = np.array([row[c] for c in r["candidates"]])
        H = np.array([row[h] for h in hs], dtype=int)
        if len(H) == 0:
            scores = np.zeros(len(C))
        elif a.pooling == "mean-of-unit":
            p = unit[H].sum(0)
            scores = unit[C] @ (p / np.linalg.norm(p))
        elif a.pooling == "unit-of-sum":
            p = raw[H].sum(0)
            scores = (raw[C] / np.linalg.norm(raw[C], axis=1, keepdims=True)) @ (p / np.linalg.norm(p))
        elif a.pooling == "max":
            scores = (unit[C] @ unit[H].T).max(1)
        else:
            scores = unit[C] @ unit[len(keys) + j]
        mine = r["candidates"][int(np.argmax(scores))]  # np.argmax: first maximum
        cell = by_size[len(C)]
        cell[0] += mine == r["target"]
        cell[1] += 1
        cell[2] += mine == r["chosen"]
        cell[3] += max(r["candidates"], key=lambda c: counts.get(c, 0)) == r["target"]
        if r["chosen"] is not None and mine != r["chosen"] and shown < a.show:
            shown += 1
            gap = scores.max() - scores[r["candidates"].index(r["chosen"])]
            print(f"  user {r['user']}: ours {r['chosen']}, reference {mine} (score gap {gap:.2e})")

    print(f"history={a.history or 'all'} title={a.title_form} strip_year={a.strip_year} "
          f"pooling={a.pooling} ties={a.ties} history_end={a.history_end} "
          f"resample={a.resample} negatives={a.negatives if a.resample else 'stored'}")
    print("  example:", [text[h] for h in hists[0]], "->", [text[c] for c in lines[0]["candidates"]])
    for n, (h, tot, ag, pop) in sorted(by_size.items()):
        agree = f"agree with ours {ag}/{tot}" if not a.resample else f"most-popular {pop / tot:.3f}"
        print(f"  {n:>2} candidates: HR@1 {h / tot:.3f} ({h}/{tot} lists)  {agree}")


if __name__ == "__main__":
    main()
