#!/usr/bin/env python3
"""Reference numbers for pulserec-slm's LoRA tests (tests/lora.rs).

Loads the SmolLM2-135M-Instruct Q4_1 GGUF with HF transformers in float32 (it dequantises the
GGUF), attaches a PEFT LoRA on all seven projections whose A/B values follow a closed formula
(`adapter_tensor` below; the Rust test computes the same), and on two fixed training rows (prompt
tokens masked out, loss on the answer only) records:
  * the masked mean cross-entropy over both rows,
  * logits at a few positions (the top-5 ids of the base-free LoRA model there),
  * the L2 norm of the loss gradient of a few named lora_A / lora_B tensors.
Dropout is 0 so both sides are deterministic.

Usage:
  /opt/pyref/bin/python scripts/slm/lora_reference.py GGUF OUT.json
  /opt/pyref/bin/python scripts/slm/lora_reference.py GGUF --check-adapter DIR
The second form checks that PEFT loads an adapter directory written by `LoraModel::save_adapter`
(`DIR/adapter_model.safetensors` + `adapter_config.json`) and that its logits on
`DIR/check.json`'s tokens equal the ones the Rust side wrote there.
"""
import json
import os
import sys

import torch

RANK = 4
ALPHA = 12.0
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ROWS = [
    ("<|im_start|>user\nA user played Zelda, then Mario Kart. Candidates: Splatoon, FIFA 19. "
     "Which one is next?<|im_end|>\n<|im_start|>assistant\nlet me think: they like Nintendo "
     "party games. Answer: ", "Splatoon<|im_end|>"),
    ("<|im_start|>user\nWhich game follows Halo?<|im_end|>\n<|im_start|>assistant\nAnswer: ",
     "Gears of War<|im_end|>"),
]
GRAD_TENSORS = [
    (0, "q_proj", "A"), (0, "q_proj", "B"), (7, "k_proj", "A"), (13, "v_proj", "B"),
    (21, "o_proj", "A"), (29, "gate_proj", "B"), (29, "up_proj", "A"), (15, "down_proj", "B"),
]


def adapter_tensor(layer, target, which, shape):
    """lora_A ([r, in]) or lora_B ([out, r]) of `target` in `layer`, from a closed formula."""
    rows, cols = shape
    i = torch.arange(rows, dtype=torch.float64)[:, None]
    j = torch.arange(cols, dtype=torch.float64)[None, :]
    k = TARGETS.index(target)
    if which == "A":
        v = 0.03 * torch.sin(1.0 + 0.9 * i + 0.31 * j + 0.17 * layer + 1.3 * k)
    else:
        v = 0.03 * torch.cos(2.0 + 0.23 * i + 0.7 * j + 0.11 * layer + 0.5 * k)
    return v.to(torch.float32)


def load_base(gguf_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d, f = os.path.split(gguf_path)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    return model, tok


def reference(gguf_path, out_path):
    from peft import LoraConfig, get_peft_model

    model, tok = load_base(gguf_path)
    cfg = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=TARGETS,
                     bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, cfg)
    named = dict(model.named_parameters())
    with torch.no_grad():
        for name, p in named.items():
            if ".lora_" not in name:
                continue
            parts = name.split(".")
            layer = int(parts[parts.index("layers") + 1])
            target = parts[parts.index("layers") + 3]
            which = "A" if ".lora_A." in name else "B"
            p.copy_(adapter_tensor(layer, target, which, tuple(p.shape)))
    model.eval()  # dropout is 0 anyway

    rows = []
    total, count = None, 0
    for prompt, answer in ROWS:
        p_ids = tok.encode(prompt, add_special_tokens=False)
        a_ids = tok.encode(answer, add_special_tokens=False)
        ids = p_ids + a_ids
        mask = [0.0] * len(p_ids) + [1.0] * len(a_ids)
        logits = model(torch.tensor([ids])).logits[0]
        logp = torch.log_softmax(logits[:-1], dim=-1)
        tgt = torch.tensor(ids[1:])
        m = torch.tensor(mask[1:])
        nll = -(logp.gather(1, tgt[:, None])[:, 0] * m).sum()
        total = nll if total is None else total + nll
        count += int(m.sum())
        positions = [0, len(p_ids) - 1, len(ids) - 1]
        checks = []
        for pos in positions:
            top = torch.topk(logits[pos].detach(), 5)
            checks.append({"position": pos, "ids": top.indices.tolist(),
                           "logits": [float(v) for v in top.values]})
        rows.append({"ids": ids, "loss_mask": mask, "prompt": prompt, "answer": answer,
                     "logits": checks})
    loss = total / count
    loss.backward()
    grads = []
    for layer, target, which in GRAD_TENSORS:
        parent = "self_attn" if target in TARGETS[:4] else "mlp"
        name = (f"base_model.model.model.layers.{layer}.{parent}.{target}"
                f".lora_{which}.default.weight")
        g = named[name].grad
        grads.append({"layer": layer, "target": target, "which": which,
                      "l2": float(g.norm())})
    import peft
    import transformers

    fixture = {
        "source": "scripts/slm/lora_reference.py",
        "model": os.path.basename(gguf_path),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__},
        "rank": RANK,
        "alpha": ALPHA,
        "targets": TARGETS,
        "adapter_formula": "A[i][j] = 0.03 sin(1 + 0.9 i + 0.31 j + 0.17 layer + 1.3 k); "
                           "B[i][j] = 0.03 cos(2 + 0.23 i + 0.7 j + 0.11 layer + 0.5 k); "
                           "k = index in targets; computed in float64, stored as float32",
        "loss": float(loss.detach()),
        "target_tokens": count,
        "rows": rows,
        "grad_l2": grads,
    }
    with open(out_path, "w") as fh:
        json.dump(fixture, fh, indent=1, ensure_ascii=False)
        fh.write("\n")


def check_adapter(gguf_path, adapter_dir):
    from peft import PeftModel

    model, _ = load_base(gguf_path)
    model = PeftModel.from_pretrained(model, adapter_dir)
    model.eval()
    with open(os.path.join(adapter_dir, "check.json")) as fh:
        check = json.load(fh)
    with torch.no_grad():
        logits = model(torch.tensor([check["ids"]])).logits[0]
    worst = 0.0
    for pos, ids, want in zip(check["positions"], check["top_ids"], check["top_logits"]):
        got = logits[pos, ids]
        worst = max(worst, float((got - torch.tensor(want)).abs().max()))
    print(f"PEFT loaded {adapter_dir}: max |logit diff| vs Rust = {worst:.2e}")
    if worst > 2e-3:
        sys.exit(1)


def main():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    if len(sys.argv) == 4 and sys.argv[2] == "--check-adapter":
        check_adapter(sys.argv[1], sys.argv[3])
    elif len(sys.argv) == 3:
        reference(sys.argv[1], sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
