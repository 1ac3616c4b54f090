#!/usr/bin/env python3
"""Peer benchmark: continuation log-likelihood scoring with HF transformers on CPU (float32).

Input: a JSONL file, one line per user:
  {"user": int, "context": str, "continuations": [str, ...]}
For each user it computes the per-token log-probabilities of every continuation given the
context, as a fair, cache-using peer of pulserec-slm's `score_ids`:
  * tokenization mirrors the Rust side: context ids = tokenizer(context, add_special_tokens=False),
    continuation ids = tokenizer(cont, add_special_tokens=False), each tokenized on its own (no
    BOS is added: SmolLM2's GGUF says add_bos_token = false). An empty context is replaced by the
    BOS (else EOS) id, as `Slm::score_ids` does.
  * one forward of the context (batch 1, use_cache=True, logits of the last position only);
    its last logits give the first token of every continuation;
  * the DynamicCache is expanded to C rows (Cache.batch_repeat_interleave) and the continuations
    minus their last token go in ONE right-padded batch [C, max_len - 1] on top of it, with an
    attention mask of ones over the context and 1/0 over the continuation slots (right padding:
    no real token ever sees a pad, positions continue from the context length). Its logits give
    tokens 2.. of each continuation. If every continuation is a single token, this second forward
    is skipped.
Runs under torch.inference_mode, float32 weights (transformers dequantises the GGUF), SDPA
attention (the transformers default). `--bf16` runs the forwards under CPU bf16 autocast
(torch.autocast("cpu", torch.bfloat16): matmuls in bf16 through oneDNN, on AMX where the CPU
has it), the peer of pulserec's `--bf16` (`WeightMode::Bf16`). The timed span per user is tokenization + both forwards +
log_softmax/gather + conversion to Python lists (not the JSON writing). The first
`--warmup-users` users are scored (and written) but not timed.

Output (`--out`): one JSONL line per user, {"user": id, "logprobs": [[lp, ...], ...]} in the
input's continuation order, for a parity check against the Rust scorer.
Final line:
  hf likelihood users/s <x> s/user <y> (users <n>, candidates per user <c>)
where n counts the timed users only and c is the mean number of continuations over them.

Usage:
  /opt/pyref/bin/python scripts/sft/likelihood_bench.py \
      assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf USERS.jsonl \
      [--threads 2] [--warmup-users 5] [--limit N] [--out OUT.jsonl] [--bf16]
`--limit N` reads only the first N lines (warm-up users included).
"""
import argparse
import inspect
import json
import os
import time

import torch


def load(gguf_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d, f = os.path.split(gguf_path)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model.eval()
    return model, tok


def cache_kwarg(model):
    """Name of the KV-cache argument: transformers >= 5.2x calls it `cache` (`past_key_values`
    is deprecated there and warns), older versions `past_key_values`."""
    params = inspect.signature(type(model).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def read_users(path, limit):
    users = []
    with open(path) as fh:
        for line in fh:
            if not line.strip():
                continue
            if limit is not None and len(users) >= limit:
                break
            users.append(json.loads(line))
    return users


def score_user(model, tok, start_id, pad_id, cache_kw, context, continuations):
    """Per-token log-probs of each continuation given `context` (strings)."""
    ctx = tok(context, add_special_tokens=False)["input_ids"] or [start_id]
    conts = [tok(c, add_special_tokens=False)["input_ids"] for c in continuations]
    max_pos = model.config.max_position_embeddings
    longest = max((len(c) for c in conts), default=0)
    if len(ctx) + longest > max_pos:
        raise ValueError(f"context {len(ctx)} + continuation {longest} tokens > {max_pos}")

    out = model(input_ids=torch.tensor([ctx]), use_cache=True, logits_to_keep=1)
    first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
    result = [[float(first[c[0]])] if c else [] for c in conts]
    if longest <= 1:
        return result, len(ctx), sum(len(c) for c in conts)

    n = len(conts)
    width = longest - 1
    inp = torch.full((n, width), pad_id, dtype=torch.long)
    tgt = torch.zeros((n, width), dtype=torch.long)
    mask = torch.zeros((n, len(ctx) + width), dtype=torch.long)
    mask[:, : len(ctx)] = 1
    for i, c in enumerate(conts):
        k = len(c) - 1
        if k > 0:
            inp[i, :k] = torch.tensor(c[:-1])
            tgt[i, :k] = torch.tensor(c[1:])
            mask[i, len(ctx): len(ctx) + k] = 1
    cache = out[cache_kw]
    cache.batch_repeat_interleave(n)
    logits = model(input_ids=inp, attention_mask=mask, use_cache=True,
                   **{cache_kw: cache}).logits
    lp = torch.log_softmax(logits.float(), dim=-1).gather(2, tgt[:, :, None])[:, :, 0]
    for i, c in enumerate(conts):
        result[i].extend(lp[i, : len(c) - 1].tolist())
    return result, len(ctx), sum(len(c) for c in conts)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("gguf")
    p.add_argument("users", help="JSONL: {user, context, continuations}")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--warmup-users", type=int, default=5, help="scored but not timed")
    p.add_argument("--limit", type=int, default=None, help="read only the first N users")
    p.add_argument("--out", default=None, help="per-user log-probs (JSONL) for a parity check")
    p.add_argument("--bf16", action="store_true", help="CPU bf16 autocast around the forwards")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    model, tok = load(args.gguf)
    users = read_users(args.users, args.limit)
    start_id = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    cache_kw = cache_kwarg(model)
    print(f"loaded in {time.perf_counter() - t0:.1f} s: {len(users)} users, "
          f"attention {model.config._attn_implementation}, threads {torch.get_num_threads()}, "
          f"torch {torch.__version__}, bf16 autocast {args.bf16}, bos {tok.bos_token_id} eos {tok.eos_token_id} "
          f"pad {pad_id}")
    if len(users) <= args.warmup_users:
        raise SystemExit(f"need more than --warmup-users ({args.warmup_users}) users to time")

    fh = open(args.out, "w") if args.out else None
    timed = 0.0
    n_timed = cands = ctx_tokens = cont_tokens = 0
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16)
    with torch.inference_mode(), autocast:
        for k, u in enumerate(users):
            t = time.perf_counter()
            lps, n_ctx, n_cont = score_user(model, tok, start_id, pad_id, cache_kw,
                                            u["context"], u["continuations"])
            dt = time.perf_counter() - t
            if k >= args.warmup_users:
                timed += dt
                n_timed += 1
                cands += len(u["continuations"])
                ctx_tokens += n_ctx
                cont_tokens += n_cont
            if fh:
                fh.write(json.dumps({"user": u["user"], "logprobs": lps}) + "\n")
    if fh:
        fh.close()
    c = cands / n_timed
    c_str = str(cands // n_timed) if cands % n_timed == 0 else f"{c:.2f}"
    print(f"timed users: mean context {ctx_tokens / n_timed:.1f} tokens, mean continuation "
          f"{cont_tokens / cands if cands else 0:.2f} tokens")
    print(f"hf likelihood users/s {n_timed / timed:.3f} s/user {timed / n_timed:.4f} "
          f"(users {n_timed}, candidates per user {c_str})")


if __name__ == "__main__":
    main()
