"""PyTorch reference timings for docs/benchmarks.md (## Thought Space).

encode: sentence-transformers all-MiniLM-L6-v2 encodes Games titles at batch 32.
step:   one InfoNCE + AdamW step of two MiniLM encoders (batch 16, K=10, temperature 1.0,
        mean pooling + L2, dropout on), the same step as `benches/thoughtspace.rs`.
Prints one JSON line. Threads: --threads (default 2, like the Rust flex run on this machine).

Usage: /opt/pyref/bin/python scripts/thoughtspace/bench_reference.py encode|step \
          [--model assets/all-minilm-l6-v2] [--titles ../shared/data/amazon-games-2018/Games-6k.item]
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F


def titles(path, n):
    with open(path, encoding="utf-8") as f:
        next(f)
        out = [line.rstrip("\n").split("\t")[1] for line in f]
    return out[:n]


def bench_encode(args):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(args.model, device="cpu")
    texts = titles(args.titles, args.n)
    st.encode(texts[:64], batch_size=32)
    rates = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        st.encode(texts, batch_size=32)
        rates.append(len(texts) / (time.perf_counter() - t))
    return {"what": "encode", "texts": len(texts), "per_s": rates, "median_per_s": statistics.median(rates)}


def bench_step(args):
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(args.model)
    beh = AutoModel.from_pretrained(args.model).train()
    rat = AutoModel.from_pretrained(args.model).train()
    opt = torch.optim.AdamW(list(beh.parameters()) + list(rat.parameters()), lr=2e-5, weight_decay=0.01)
    t = titles(args.titles, 512)
    b_texts = [f"History: {'; '.join(t[i * 8:i * 8 + 8])}. Chosen: {t[300 + i]}" for i in range(16)]
    r_texts = [
        f"They keep buying games like {t[i * 8]} and {t[i * 8 + 1]}, so {t[300 + i]} fits their taste."
        for i in range(16)
    ]

    def embed(model, texts):
        enc = tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        h = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        return F.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)

    gen = torch.Generator().manual_seed(0)

    def step():
        b, r = embed(beh, b_texts), embed(rat, r_texts)
        sims = F.normalize(b, dim=-1) @ F.normalize(r, dim=-1).T / 1.0
        cols = []
        for i in range(16):
            others = torch.tensor([j for j in range(16) if j != i])
            neg = others[torch.randperm(15, generator=gen)[:10]]
            cols.append(torch.cat([torch.tensor([i]), neg]))
        logits = sims.gather(1, torch.stack(cols))
        loss = -F.log_softmax(logits, dim=1)[:, 0].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    step()
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"what": "step", "seconds": times, "median_s": statistics.median(times)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["encode", "step"])
    p.add_argument("--model", default="assets/all-minilm-l6-v2")
    p.add_argument("--titles", default="../shared/data/amazon-games-2018/Games-6k.item")
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = bench_encode(args) if args.what == "encode" else bench_step(args)
    out["torch"] = torch.__version__
    out["threads"] = args.threads
    print(json.dumps(out))


if __name__ == "__main__":
    main()
