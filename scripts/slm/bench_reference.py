#!/usr/bin/env python3
"""Peer timings for docs/benchmarks.md (SLM runtime): llama.cpp and HF transformers float32 on the
SmolLM2-135M-Instruct Q4_1 GGUF, 2 threads, the same prompts as `examples/generate.rs` runs in
scripts/slm/bench.sh. Prints one JSON object per measurement.

Usage: /opt/pyref/bin/python scripts/slm/bench_reference.py {llama_cpp|hf|hf_prefill} GGUF
"""
import json
import os
import sys
import time

LONG = " ".join(["The history of the city goes back to ancient times, when traders settled "
                 "along the river."] * 17)
SHORT = "Once upon a time"
NEW = 64


def llama_cpp(path):
    from llama_cpp import Llama

    llm = Llama(model_path=path, n_ctx=1024, n_batch=512, n_threads=2, n_threads_batch=2,
                verbose=False)
    ids = llm.tokenize(LONG.encode(), add_bos=False, special=True)
    llm.reset()
    t = time.perf_counter()
    llm.eval(ids)
    prefill = len(ids) / (time.perf_counter() - t)
    short = llm.tokenize(SHORT.encode(), add_bos=False, special=True)
    llm.reset()
    llm.eval(short)
    t = time.perf_counter()
    for _ in range(NEW):
        nxt = int(llm.scores[llm.n_tokens - 1].argmax())
        llm.eval([nxt])
    decode = NEW / (time.perf_counter() - t)
    print(json.dumps({"runtime": "llama.cpp", "prefill_tokens": len(ids), "prefill_tok_s": prefill,
                      "batch": 1, "decode_tok_s": decode}), flush=True)


def hf(path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    d, f = os.path.split(path)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    ids = torch.tensor([tok.encode(LONG, add_special_tokens=False)])
    with torch.no_grad():
        model(ids[:, :8])
        t = time.perf_counter()
        model(ids)
        prefill = ids.shape[1] / (time.perf_counter() - t)
        short = torch.tensor([tok.encode(SHORT, add_special_tokens=False)])
        for batch in (1, 8, 32):
            x = short.repeat(batch, 1)
            mask = torch.ones_like(x)
            t = time.perf_counter()
            model.generate(x, attention_mask=mask, max_new_tokens=1, min_new_tokens=1,
                           do_sample=False, pad_token_id=2)
            t_first = time.perf_counter() - t
            t = time.perf_counter()
            model.generate(x, attention_mask=mask, max_new_tokens=NEW, min_new_tokens=NEW,
                           do_sample=False, pad_token_id=2)
            total = time.perf_counter() - t
            decode = batch * (NEW - 1) / (total - t_first)
            print(json.dumps({"runtime": "hf-f32", "prefill_tokens": ids.shape[1],
                              "prefill_tok_s": prefill, "batch": batch, "decode_tok_s": decode}),
                  flush=True)


def hf_prefill(path, repeats=3):
    """Prefill only: the median of `repeats` timed forwards of the long prompt."""
    import statistics

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    d, f = os.path.split(path)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    ids = torch.tensor([tok.encode(LONG, add_special_tokens=False)])
    rates = []
    with torch.no_grad():
        model(ids[:, :8])
        for _ in range(repeats):
            t = time.perf_counter()
            model(ids)
            rates.append(ids.shape[1] / (time.perf_counter() - t))
    print(json.dumps({"runtime": "hf-f32", "prefill_tokens": ids.shape[1],
                      "prefill_tok_s": statistics.median(rates), "per_run": rates}), flush=True)


if __name__ == "__main__":
    {"llama_cpp": llama_cpp, "hf": hf, "hf_prefill": hf_prefill}[sys.argv[1]](sys.argv[2])
