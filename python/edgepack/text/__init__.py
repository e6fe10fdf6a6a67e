"""Sentence embeddings with a BERT encoder (all-MiniLM-L6-v2 and kin), float32 or int8.

Needs the optional extra ``text`` (``tokenizers``, ``safetensors``)::

    enc = edgepack.SentenceEncoder.from_pretrained(model_dir, quantize="int8")
    emb = enc.encode(["A man is eating food.", "Someone eats."])   # float32 [2, 384]
"""

from __future__ import annotations

from .bert import BertConfig, BertModel
from .encoder import SentenceEncoder

__all__ = ["SentenceEncoder", "BertModel", "BertConfig"]
