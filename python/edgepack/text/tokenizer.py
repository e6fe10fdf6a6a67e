"""Glue to the Hugging Face ``tokenizers`` package (optional extra ``text``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["Tokenizer", "require"]


def require(module: str, what: str):
    """Import an optional dependency or raise ImportError saying how to get it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{what} needs the '{module}' package, which is not installed; "
                          f"install it with: pip install 'edgepack[text]'") from None


class Tokenizer:
    """WordPiece tokenizer from a ``tokenizer.json``: sentences -> lists of int64 token ids.

    Truncates to ``max_length`` tokens ([CLS] and [SEP] included) and never pads: batching
    and padding are the encoder's job.
    """

    def __init__(self, path, max_length: int, *, json_text: str | None = None):
        tk = require("tokenizers", "edgepack.text")
        if json_text is not None:
            # the tokenizer.json text itself (a saved SentenceEncoder carries it in its file)
            try:
                self._tok = tk.Tokenizer.from_str(json_text)
            except Exception as e:  # tokenizers raises a bare Exception for bad JSON
                raise ValueError(f"{path}: the embedded tokenizer.json is not readable: {e}") from None
        else:
            path = Path(path)
            if not path.is_file():
                raise FileNotFoundError(f"tokenizer file not found: {path}")
            try:
                self._tok = tk.Tokenizer.from_file(str(path))
            except Exception as e:  # tokenizers raises a bare Exception for a bad file
                raise ValueError(f"{path} is not a readable tokenizer.json: {e}") from None
        self.max_length = int(max_length)
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=self.max_length)

    def to_json(self) -> str:
        """The tokenizer as tokenizer.json text (what :class:`Tokenizer` reads back)."""
        return self._tok.to_str()

    @staticmethod
    def default_max_length(model_dir: Path, max_positions: int) -> int:
        """sentence-transformers' max_seq_length when the directory has one, else the model's."""
        st = model_dir / "sentence_bert_config.json"
        if st.is_file():
            try:
                v = json.loads(st.read_text(encoding="utf-8")).get("max_seq_length")
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ValueError(f"{st} is not valid JSON: {e}") from None
            if isinstance(v, int) and v > 0:
                return min(v, max_positions)
        return max_positions

    def encode(self, sentences: list[str]) -> list[np.ndarray]:
        # sentence-transformers strips surrounding whitespace before tokenizing
        encs = self._tok.encode_batch([s.strip() for s in sentences], add_special_tokens=True)
        return [np.asarray(e.ids, dtype=np.int64) for e in encs]
