#!/usr/bin/env python3
"""Peer benchmark: LoRA SFT steps of SmolLM2-135M-Instruct with HF transformers + PEFT on CPU.

Loads the Q4_1 GGUF the way scripts/slm/lora_reference.py does (transformers dequantises it to
float32), attaches a PEFT LoRA (rank 8, alpha 16, dropout 0.05 by default) on q/k/v/o_proj of all
layers or of the top K, and times training steps on random-but-seeded rows:
  * each row is `--seq` token ids; the first 75% are the prompt (labels -100), the loss is the
    mean cross-entropy over the last 25% of each row (next-token, HF convention: the logit at
    position t predicts the token at t + 1);
  * one step = forward + masked cross-entropy + backward + clip_grad_norm_(1.0) + AdamW step
    (lr 1e-4, torch defaults otherwise: weight decay 0.01) over the adapter params + zero_grad;
  * `--bf16` wraps forward + loss in torch.autocast("cpu", bfloat16) (weights and optimizer stay
    float32: mixed precision); otherwise everything is float32.
The first `--warmup` steps are run untimed (PyTorch's first steps are slow). Each timed step
prints one line; the last line is
  peft tok/s median <x> (steps <n>, batch <b>, seq <s>, top_layers <k|all>, dtype <f32|bf16>)
with tok/s = batch * seq / step seconds (all tokens of the batch, prompt included).

Usage:
  /opt/pyref/bin/python scripts/slm/lora_peft_bench.py \
      assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
      [--batch 4] [--seq 256] [--steps 10] [--warmup 3] [--threads 2] \
      [--rank 8] [--alpha 16] [--dropout 0.05] [--top-layers K] [--bf16] [--seed 0]
"""
import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def load_base(gguf_path):
    from transformers import AutoModelForCausalLM

    d, f = os.path.split(gguf_path)
    return AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("gguf")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before the timed ones")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16.0)
    p.add_argument("--dropout", type=float, default=0.05)
    p.add_argument("--top-layers", type=int, default=None,
                   help="LoRA only on the top K decoder layers (default: all layers)")
    p.add_argument("--bf16", action="store_true", help="autocast forward + loss to bfloat16")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if a.seq < 4:
        p.error("--seq must be at least 4 (the loss is on the last 25%)")
    if a.steps < 1 or a.warmup < 0 or a.batch < 1:
        p.error("--steps >= 1, --warmup >= 0 and --batch >= 1 are required")
    return a


def main():
    args = parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    from peft import LoraConfig, get_peft_model

    t0 = time.perf_counter()
    model = load_base(args.gguf)
    n_layers = model.config.num_hidden_layers
    vocab = model.config.vocab_size
    if args.top_layers is not None and not 1 <= args.top_layers <= n_layers:
        raise SystemExit(f"--top-layers must be in 1..={n_layers}")
    layers = (None if args.top_layers is None
              else list(range(n_layers - args.top_layers, n_layers)))
    cfg = LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=args.dropout,
                     target_modules=TARGETS, layers_to_transform=layers, bias="none",
                     task_type="CAUSAL_LM")
    model = get_peft_model(model, cfg)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    n_train = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)  # as SftConfig::paper()
    print(f"loaded in {time.perf_counter() - t0:.1f} s: {n_layers} layers, vocab {vocab}, "
          f"trainable {n_train} params, attention {model.config._attn_implementation}, "
          f"threads {torch.get_num_threads()}, torch {torch.__version__}")

    prompt = args.seq - args.seq // 4
    gen = torch.Generator().manual_seed(args.seed)

    def batch():
        ids = torch.randint(0, vocab, (args.batch, args.seq), generator=gen)
        labels = ids.clone()
        labels[:, :prompt] = -100
        return ids, labels

    def step(ids, labels):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            logits = model(input_ids=ids).logits
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                   labels[:, 1:].reshape(-1), ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    for i in range(args.warmup):
        ids, labels = batch()
        t = time.perf_counter()
        loss = step(ids, labels)
        print(f"warmup {i} loss {loss:.4f} {time.perf_counter() - t:.3f} s (untimed)")

    tokens = args.batch * args.seq
    rates = []
    for i in range(args.steps):
        ids, labels = batch()
        t = time.perf_counter()
        loss = step(ids, labels)
        dt = time.perf_counter() - t
        rates.append(tokens / dt)
        print(f"step {i} loss {loss:.4f} {dt:.3f} s {tokens / dt:.1f} tok/s")

    top = "all" if args.top_layers is None else str(args.top_layers)
    dtype = "bf16" if args.bf16 else "f32"
    print(f"peft tok/s median {statistics.median(rates):.1f} (steps {args.steps}, "
          f"batch {args.batch}, seq {args.seq}, top_layers {top}, dtype {dtype})")


if __name__ == "__main__":
    main()
