"""Minimal, faithful PyTorch SASRec: the reference for pulserec-seqrec's parity and speed checks.

Same model and training as the Rust crate's `SasRecConfig::paper()` + `TrainConfig::paper()`:
d 50, 2 blocks, 2 heads, dropout 0.5 (embeddings, attention weights, sub-layer outputs), FFN
width d with ReLU, pre-LN with a final LayerNorm (eps 1e-8; the paper's Sec. III-B) by default or
post-LN with `--norm post`, item
embeddings scaled by sqrt(d) plus learned slot positions, sequences left-padded to 50, causal and
padding-key attention mask, Xavier init, zero biases. One sequence per user with a loss at every
position: BCE with one uniform negative per position outside the user's training items. Adam lr
1e-3, betas (0.9, 0.98), eps 1e-8, batch 128 users, one shuffled pass over the users per epoch.

It reads the exact inputs the Rust example used (`sequences.tsv`, `candidates_test.tsv` written
by `cargo run --release --example sasrec -- ... --out DIR`), so split and candidates are
identical, and evaluates the test item with both protocols: full ranking (history items removed
from the competitors, pessimistic ties) and sampled (stored candidates, positive first).

    /opt/pyref/bin/python scripts/seqrec/sasrec_reference.py --inputs DIR --epochs 20 --seed 1 \
        --out result.json
"""

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_lists(path):
    rows = {}
    with open(path) as f:
        for line in f:
            u, items = line.rstrip("\n").split("\t")
            rows[int(u)] = [int(x) for x in items.split()] if items else []
    return rows


class Block(nn.Module):
    def __init__(self, d, heads, inner, dropout, pre_norm):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.ff1, self.ff2 = nn.Linear(d, inner), nn.Linear(inner, d)
        self.ln1, self.ln2 = nn.LayerNorm(d, eps=1e-8), nn.LayerNorm(d, eps=1e-8)
        self.drop = nn.Dropout(dropout)
        self.heads, self.pre_norm = heads, pre_norm

    def attention(self, x, bias):
        b, l, d = x.shape
        h, dk = self.heads, d // self.heads
        split = lambda t: t.view(b, l, h, dk).transpose(1, 2)
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        w = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(dk) + bias, dim=-1)
        ctx = (self.drop(w) @ v).transpose(1, 2).reshape(b, l, d)
        return self.o(ctx)

    def ffn(self, x):
        return self.ff2(self.drop(F.relu(self.ff1(x))))

    def forward(self, x, bias):
        if self.pre_norm:
            x = x + self.drop(self.attention(self.ln1(x), bias))
            return x + self.drop(self.ffn(self.ln2(x)))
        x = self.ln1(x + self.drop(self.attention(x, bias)))
        return self.ln2(x + self.drop(self.ffn(x)))


class SASRec(nn.Module):
    def __init__(self, n_items, d=50, blocks=2, heads=2, dropout=0.5, max_len=50, pre_norm=False):
        super().__init__()
        self.item = nn.Embedding(n_items + 1, d)
        self.pos = nn.Embedding(max_len, d)
        self.blocks = nn.ModuleList(Block(d, heads, d, dropout, pre_norm) for _ in range(blocks))
        self.final = nn.LayerNorm(d, eps=1e-8) if pre_norm else None
        self.drop = nn.Dropout(dropout)
        self.d, self.max_len = d, max_len
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.xavier_normal_(m.weight)

    def forward(self, ids):
        b, l = ids.shape
        real = ids != 0
        keep = real.unsqueeze(-1).float()
        x = self.item(ids) * math.sqrt(self.d) + self.pos.weight[self.max_len - l :].unsqueeze(0)
        x = self.drop(x) * keep
        causal = torch.ones(l, l, dtype=torch.bool, device=ids.device).tril().logical_not()
        forbidden = causal.view(1, 1, l, l) | (~real).view(b, 1, 1, l)
        bias = torch.zeros(b, 1, l, l, device=ids.device).masked_fill(forbidden, -1e9)
        for blk in self.blocks:
            x = blk(x, bias) * keep
        if self.final is not None:
            x = self.final(x) * keep
        return x


def pad(histories, max_len):
    out = np.zeros((len(histories), max_len), dtype=np.int64)
    for r, h in enumerate(histories):
        tail = h[-max_len:]
        if tail:
            out[r, max_len - len(tail) :] = tail
    return out


def train_batch(seqs, max_len, n_items, rng, trim=False):
    rows = len(seqs)
    if trim:
        # Only left padding is dropped: positions count from the last slot, so nothing changes.
        max_len = max(1, min(max_len, max(len(s) - 1 for s in seqs)))
    inputs = np.zeros((rows, max_len), dtype=np.int64)
    pos, tgt, neg = [], [], []
    for r, s in enumerate(seqs):
        seen = set(s)
        pairs = len(s) - 1
        take = min(pairs, max_len)
        first = pairs - take
        for p in range(take):
            slot = r * max_len + max_len - take + p
            inputs[r, max_len - take + p] = s[first + p]
            pos.append(slot)
            tgt.append(s[first + p + 1])
            while True:
                n = int(rng.integers(1, n_items + 1))
                if n not in seen:
                    break
            neg.append(n)
    return inputs, np.array(pos), np.array(tgt), np.array(neg)


def evaluate(model, cases, cands, n_items, ks=(1, 5, 10, 20), batch=256):
    model.eval()
    acc = {"full": [], "sampled": []}
    item_w = model.item.weight
    with torch.no_grad():
        for start in range(0, len(cases), batch):
            chunk = cases[start : start + batch]
            ids = torch.from_numpy(pad([h for _, h, _ in chunk], model.max_len))
            users = model(ids)[:, -1, :]
            scores = (users @ item_w.T).numpy()
            for r, (u, hist, target) in enumerate(chunk):
                row = scores[r]
                mask = np.zeros(n_items + 1, dtype=bool)
                mask[0] = True
                mask[hist] = True
                mask[target] = True
                acc["full"].append(1 + int((row[~mask] >= row[target]).sum()))
                if cands is not None:
                    c = cands[u]
                    assert c[0] == target
                    acc["sampled"].append(1 + int((row[c[1:]] >= row[c[0]]).sum()))
    out = {}
    for proto, ranks in acc.items():
        if not ranks:
            continue
        r = np.array(ranks, dtype=np.float64)
        m = {"MRR": float((1 / r).mean())}
        for k in ks:
            m[f"HR@{k}"] = float((r <= k).mean())
            m[f"NDCG@{k}"] = float(np.where(r <= k, 1 / np.log2(r + 1), 0).mean())
        out[proto] = {"users": len(ranks), "metrics": m}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--norm", choices=("pre", "post"), default="pre")
    ap.add_argument("--trim", action="store_true",
                    help="cut each batch to its longest row, as the Rust trainer does")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(a.seed)

    seqs = read_lists(f"{a.inputs}/sequences.tsv")
    try:
        cands = read_lists(f"{a.inputs}/candidates_test.tsv")
    except FileNotFoundError:
        cands = None
    n_items = max(max(s) for s in seqs.values() if s)
    users = sorted(seqs)
    train = {u: (s[:-2] if len(s) >= 3 else s) for u, s in seqs.items()}
    cases = [(u, seqs[u][:-1], seqs[u][-1]) for u in users if len(seqs[u]) >= 3]
    trainable = [u for u in users if len(train[u]) >= 2]

    model = SASRec(n_items, pre_norm=a.norm == "pre")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-8)
    epoch_s, losses = [], []
    for epoch in range(a.epochs):
        model.train()
        t0 = time.perf_counter()
        order = rng.permutation(trainable)
        total, nb = 0.0, 0
        for s in range(0, len(order), a.batch_size):
            inputs, pos, tgt, neg = train_batch(
                [train[u] for u in order[s : s + a.batch_size]], model.max_len, n_items, rng,
                a.trim,
            )
            h = model(torch.from_numpy(inputs)).reshape(-1, model.d)[torch.from_numpy(pos)]
            w = model.item.weight
            pl = (h * w[torch.from_numpy(tgt)]).sum(-1)
            nl = (h * w[torch.from_numpy(neg)]).sum(-1)
            loss = -(F.logsigmoid(pl) + F.logsigmoid(-nl)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
            nb += 1
        epoch_s.append(time.perf_counter() - t0)
        losses.append(total / nb)
        print(f"epoch {epoch + 1} loss {losses[-1]:.4f} {epoch_s[-1]:.2f}s", flush=True)
    res = evaluate(model, cases, cands, n_items)
    res.update(
        seed=a.seed,
        epochs=a.epochs,
        threads=a.threads,
        torch=torch.__version__,
        median_seconds_per_epoch=float(np.median(epoch_s)),
        epoch_seconds=epoch_s,
        losses=losses,
        formulation="one sequence per user, loss at every position",
        norm=a.norm,
        trim=a.trim,
    )
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps({k: v for k, v in res.items() if k in ("full", "sampled")}))
    print(f"{res['median_seconds_per_epoch']:.3f} s/epoch")


if __name__ == "__main__":
    main()
