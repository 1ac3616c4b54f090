#!/usr/bin/env python3
"""Reference outputs for pulserec-slm's parity tests.

Runs the SmolLM2-135M-Instruct Q4_1 GGUF through
  * HF transformers in float32 (it dequantises the GGUF: the exact target of an f32 runtime), and
  * llama.cpp through llama-cpp-python (quantised arithmetic), if installed,
on five fixed prompts, and writes greedy token ids (first 32 new tokens), the top-5 logits of the
first generated position and tokenizations to a small JSON fixture.

Usage: /opt/pyref/bin/python scripts/slm/reference.py GGUF OUT.json
"""
import json
import os
import sys

import numpy as np
import torch

PROMPTS = [
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "The quick brown fox jumps over the lazy dog. Then the fox",
    "<|im_start|>system\nYou are a concise assistant.<|im_end|>\n<|im_start|>user\n"
    "A user bought Zelda, Mario Kart and Animal Crossing. Why might they buy Splatoon next?"
    "<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Numbers: 1, 2, 3, 12345, 3.14159. Caf\u00e9 na\u00efve \u2014 emojis \U0001F600!",
]
TOKENIZE_ONLY = [
    "Hello world",
    "  leading spaces and\ttabs\n\nnew lines",
    "<|im_start|>user\nhi<|im_end|>",
    "1234567890 1,000,000",
    "Caf\u00e9 \u00fcber \u65e5\u672c\u8a9e \U0001F600",
    "don't won't I'm you're",
]
N_NEW = 32


def hf_reference(gguf_path, prompt_ids):
    from transformers import AutoModelForCausalLM

    d, f = os.path.split(gguf_path)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    model.eval()
    out = []
    for ids in prompt_ids:
        x = torch.tensor([ids])
        with torch.no_grad():
            logits = model(x).logits[0, -1]
            # An explicit all-ones mask: otherwise generate() infers one from pad_token_id and
            # hides every `<|im_end|>` (id 2) of the prompt.
            gen = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=N_NEW,
                                 do_sample=False, eos_token_id=None, pad_token_id=2)
        top = torch.topk(logits, 5)
        out.append({
            "greedy": gen[0, len(ids):].tolist(),
            "top5_ids": top.indices.tolist(),
            "top5_logits": [float(v) for v in top.values],
        })
    return out


def llama_cpp_reference(gguf_path, prompts):
    try:
        from llama_cpp import Llama
    except ImportError:
        return None, None
    llm = Llama(model_path=gguf_path, n_ctx=512, n_threads=2, logits_all=True, verbose=False)
    toks = [llm.tokenize(p.encode(), add_bos=False, special=True) for p in prompts]
    out = []
    for ids in toks[: len(PROMPTS)]:
        llm.reset()
        llm.eval(ids)
        first = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        gen = []
        for _ in range(N_NEW):
            nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            gen.append(nxt)
            llm.eval([nxt])
        top = np.argsort(-first)[:5]
        out.append({"greedy": gen, "top5_ids": top.tolist(),
                    "top5_logits": [float(first[i]) for i in top]})
    return toks, out


def main():
    gguf_path, out_path = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    torch.set_num_threads(2)
    toks, lcpp = llama_cpp_reference(gguf_path, PROMPTS + TOKENIZE_ONLY)
    if toks is None:
        from transformers import AutoTokenizer

        d, f = os.path.split(gguf_path)
        tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
        toks = [tok.encode(p, add_special_tokens=False) for p in PROMPTS + TOKENIZE_ONLY]
    prompt_ids = toks[: len(PROMPTS)]
    hf = hf_reference(gguf_path, prompt_ids)
    fixture = {
        "source": "scripts/slm/reference.py",
        "model": os.path.basename(gguf_path),
        "torch": torch.__version__,
        "prompts": [
            {"text": p, "ids": ids, "hf_f32": h, "llama_cpp": (lcpp[i] if lcpp else None)}
            for i, (p, ids, h) in enumerate(zip(PROMPTS, prompt_ids, hf))
        ],
        "tokenize": [{"text": t, "ids": ids} for t, ids in zip(TOKENIZE_ONLY, toks[len(PROMPTS):])],
    }
    with open(out_path, "w") as fh:
        json.dump(fixture, fh, indent=1, ensure_ascii=False)
        fh.write("\n")


if __name__ == "__main__":
    main()
