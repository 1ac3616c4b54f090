"""Reference embeddings for the Rust encoder parity test.

Embeds fixed sentences with sentence-transformers (all-MiniLM-L6-v2: mean pooling + L2
normalisation) and, through plain transformers, the un-normalised [CLS] state, so both pooling
paths of `SentenceEncoder` are checked. Also stores the token ids of every sentence.

Usage: /opt/pyref/bin/python scripts/thoughtspace/make_parity_fixture.py \
           [MODEL_DIR] [OUT_JSON]
defaults: assets/all-minilm-l6-v2, crates/pulserec-thoughtspace/tests/fixtures/minilm_parity.json
"""

import json
import sys

import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoTokenizer

SENTENCES = [
    "The Legend of Zelda: Breath of the Wild",
    "A relaxing farming game with a charming pixel-art style.",
    "",
    "FIFA 18 - PlayStation 4",
    "Why did this user pick a racing wheel? They had bought three driving games in a row and "
    "rated each of them five stars, so a wheel that makes those games feel real is a natural "
    "next step for someone who clearly enjoys simulation racing.",
    "Café, naïve façade — Pokémon™ & résumé!",
    "ok",
    "Call of Duty: Black Ops III (Xbox One) [Digital Code] $59.99 #1 best-seller",
    "They like dark fantasy RPGs with hard combat.",
    "Star Wars Battlefront II: Elite Trooper Deluxe Edition",
]


def main() -> None:
    model_dir = sys.argv[1] if len(sys.argv) > 1 else "assets/all-minilm-l6-v2"
    out = (
        sys.argv[2]
        if len(sys.argv) > 2
        else "crates/pulserec-thoughtspace/tests/fixtures/minilm_parity.json"
    )
    torch.manual_seed(0)
    st = SentenceTransformer(model_dir, device="cpu")
    st.eval()
    with torch.no_grad():
        mean_norm = st.encode(SENTENCES, batch_size=32, convert_to_numpy=True)
        tok = AutoTokenizer.from_pretrained(model_dir)
        hf = AutoModel.from_pretrained(model_dir).eval()
        enc = tok(SENTENCES, padding=True, truncation=True, max_length=256, return_tensors="pt")
        cls = hf(**enc).last_hidden_state[:, 0, :].numpy()
    ids = [tok(s, truncation=True, max_length=256)["input_ids"] for s in SENTENCES]
    fixture = {
        "source": "scripts/thoughtspace/make_parity_fixture.py",
        "versions": {
            "torch": torch.__version__,
            "sentence_transformers": __import__("sentence_transformers").__version__,
            "transformers": __import__("transformers").__version__,
        },
        "model": "all-MiniLM-L6-v2",
        "sentences": SENTENCES,
        "token_ids": ids,
        "mean_normalized": [[round(float(x), 7) for x in row] for row in mean_norm],
        "cls_raw": [[round(float(x), 6) for x in row] for row in cls],
    }
    with open(out, "w") as f:
        json.dump(fixture, f)
    print(f"wrote {out}: {len(SENTENCES)} sentences, dim {mean_norm.shape[1]}")


if __name__ == "__main__":
    main()
