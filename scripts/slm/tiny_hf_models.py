#!/usr/bin/env python3
"""Tiny random HF checkpoints (Llama, Qwen2 with q/k/v biases, Phi-3 with fused projections) and
their float32 logits, for pulserec-slm's HF-directory loading tests.

Writes crates/pulserec-slm/tests/fixtures/hf/<arch>/{config.json, model.safetensors} and
crates/pulserec-slm/tests/fixtures/hf/logits.json (last-position logits of a fixed id sequence).

Usage: /opt/pyref/bin/python scripts/slm/tiny_hf_models.py OUT_DIR
"""
import json
import os
import sys

import torch
from transformers import (LlamaConfig, LlamaForCausalLM, Phi3Config, Phi3ForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM)

IDS = [3, 17, 99, 42, 7, 120, 5, 64, 33, 2]
COMMON = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
              rms_norm_eps=1e-5, rope_theta=10000.0)


def main():
    out = sys.argv[1]
    torch.manual_seed(0)
    models = {
        "llama": LlamaForCausalLM(LlamaConfig(**COMMON, tie_word_embeddings=False)),
        "qwen2": Qwen2ForCausalLM(Qwen2Config(**COMMON, tie_word_embeddings=True)),
        "phi3": Phi3ForCausalLM(Phi3Config(**COMMON, tie_word_embeddings=False,
                                           pad_token_id=0)),
    }
    logits = {"ids": IDS, "source": "scripts/slm/tiny_hf_models.py", "torch": torch.__version__}
    for name, model in models.items():
        model = model.float().eval()
        # Random init leaves biases at zero; make the Qwen2 ones matter.
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n.endswith("bias"):
                    p.normal_(0, 0.5)
            y = model(torch.tensor([IDS])).logits[0]
        d = os.path.join(out, name)
        model.save_pretrained(d, safe_serialization=True)
        for extra in ("generation_config.json",):
            p = os.path.join(d, extra)
            if os.path.exists(p):
                os.remove(p)
        logits[name] = {"last": [float(v) for v in y[-1]], "first": [float(v) for v in y[0]]}
    with open(os.path.join(out, "logits.json"), "w") as fh:
        json.dump(logits, fh)
        fh.write("\n")


if __name__ == "__main__":
    main()
