"""SentenceEncoder: text -> L2-normalized mean-pooled BERT embeddings, like sentence-transformers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .bert import BertConfig, BertModel, load_bert_weights, pack_ids
from .tokenizer import Tokenizer

__all__ = ["SentenceEncoder"]

_QUANTIZE = (None, "int8")
_KIND_KEY = "edgepack_kind"


def is_saved_encoder(metadata) -> bool:
    """True when a model file's user metadata (``read_header(path)["metadata"]``) marks a
    :meth:`SentenceEncoder.save` file."""
    return (isinstance(metadata, dict) and metadata.get(_KIND_KEY) == "SentenceEncoder"
            and isinstance(metadata.get("tokenizer_json"), str))


class SentenceEncoder:
    """A BERT sentence encoder (tokenizer + :class:`BertModel` + mean pooling).

    Build one with :meth:`from_pretrained`.  ``model`` is the edgepack.nn module tree (its
    ``summary()`` lists every layer and the kernel it runs on); ``tokenizer`` turns text into ids.
    """

    def __init__(self, model: BertModel, tokenizer: Tokenizer, quantize: str | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.quantize = quantize

    @property
    def dim(self) -> int:
        """Embedding size (384 for all-MiniLM-L6-v2)."""
        return self.model.hidden_size

    @property
    def max_seq_length(self) -> int:
        """Tokens per sentence ([CLS] and [SEP] included) beyond which text is truncated."""
        return self.tokenizer.max_length

    @classmethod
    def from_pretrained(cls, path, quantize: str | None = None, *, max_seq_length: int | None = None
                        ) -> "SentenceEncoder":
        """Load a Hugging Face BERT directory.

        Parameters
        ----------
        path : str or Path
            Directory holding ``config.json`` (``model_type`` "bert"), ``model.safetensors`` and
            ``tokenizer.json``; a ``sentence_bert_config.json`` there sets the truncation length.
        quantize : None or "int8"
            ``"int8"``: every Linear layer runs the int8 GEMM (per-output-channel weight scales,
            per-row dynamic activation scales); embeddings, LayerNorm and attention stay float32.
        max_seq_length : int, optional
            Override the truncation length (default: sentence-transformers' setting, else the
            model's max_position_embeddings).

        Returns
        -------
        SentenceEncoder

        Raises
        ------
        FileNotFoundError
            The directory or one of its three files is missing (the message names it).
        ValueError
            The config is not a BERT encoder, or a file is corrupt or does not match the config.
        ImportError
            ``tokenizers`` or ``safetensors`` is not installed (``pip install 'edgepack[text]'``).
        """
        if quantize not in _QUANTIZE:
            raise ValueError(f"quantize must be None or 'int8'; got {quantize!r}")
        d = Path(path)
        if not d.exists():
            raise FileNotFoundError(f"model directory not found: {d}")
        if not d.is_dir():
            raise NotADirectoryError(f"path must be a model directory (config.json, model.safetensors, "
                                     f"tokenizer.json); got a file: {d}")
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            if not (d / name).is_file():
                raise FileNotFoundError(f"{name} not found in model directory {d}")
        config = BertConfig.from_json_file(d / "config.json")
        tensors = load_bert_weights(d / "model.safetensors", config)
        model = BertModel.from_hf(config, tensors)
        if max_seq_length is None:
            max_seq_length = Tokenizer.default_max_length(d, config.max_position_embeddings)
        elif isinstance(max_seq_length, bool) or not isinstance(max_seq_length, int) or not (
                3 <= max_seq_length <= config.max_position_embeddings):
            raise ValueError(f"max_seq_length must be an integer in [3, {config.max_position_embeddings}]; "
                             f"got {max_seq_length!r}")
        tok = Tokenizer(d / "tokenizer.json", max_seq_length)
        if quantize == "int8":
            from .quant import CALIBRATION_TEXT, quantize_bert

            model = quantize_bert(model, tok.encode(CALIBRATION_TEXT))
        return cls(model, tok, quantize)

    def save(self, path) -> None:
        """Write the encoder to one edgepack model file, tokenizer included.

        The file is :func:`edgepack.save`'s format (JSON header + raw tensors, no pickle): the
        module tree with its tensors as they are (an int8 encoder keeps its int8 weights, scales
        and smoothing factors, so :meth:`load` never recalibrates), and in the header's metadata
        the tokenizer.json text, the truncation length and the quantization mode.
        ``edgepack.load(path)`` on the same file gives the bare module tree.
        """
        from ..io import save

        save(self.model, path, metadata={_KIND_KEY: "SentenceEncoder", "quantize": self.quantize,
                                         "max_seq_length": self.max_seq_length,
                                         "tokenizer_json": self.tokenizer.to_json()})

    @classmethod
    def load(cls, path) -> "SentenceEncoder":
        """Read a file written by :meth:`save`; the result encodes bit-identically to the saved one.

        Raises
        ------
        FileNotFoundError
            ``path`` does not exist.
        ValueError
            The file is corrupt, or is an edgepack model file but not a saved SentenceEncoder.
        """
        from ..io import load, read_header

        meta = read_header(path)["metadata"]
        if not is_saved_encoder(meta):
            raise ValueError(f"{path}: not a saved SentenceEncoder (no tokenizer in its metadata); "
                             "load it with edgepack.load")
        max_len, quantize = meta.get("max_seq_length"), meta.get("quantize")
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 3 or quantize not in _QUANTIZE:
            raise ValueError(f"{path}: corrupt SentenceEncoder metadata (max_seq_length {max_len!r}, "
                             f"quantize {quantize!r})")
        model = load(path)
        if not isinstance(model, BertModel):
            raise ValueError(f"{path}: a SentenceEncoder file must hold a BertModel; got {type(model).__name__}")
        tok = Tokenizer(path, max_len, json_text=meta["tokenizer_json"])
        return cls(model, tok, quantize)

    def encode(self, sentences, batch_size: int = 32, normalize: bool = True,
               progress: bool = False) -> np.ndarray:
        """Embed sentences.

        Parameters
        ----------
        sentences : str or sequence of str
            The text. A single str gives one vector.
        batch_size : int
            Sentences per forward pass.  Sentences are sorted by length first, so a batch holds
            sentences of similar length; each batch computes only its real tokens (no padding at
            all), and the results come back in input order.
        normalize : bool
            L2-normalize each embedding (as all-MiniLM-L6-v2 does); False gives the raw mean.
        progress : bool
            Show a tqdm progress bar over batches (when tqdm is installed).

        Returns
        -------
        ndarray, float32, shape (n, dim), or (dim,) for a single str
        """
        single = isinstance(sentences, str)
        items = [sentences] if single else list(sentences)
        for i, s in enumerate(items):
            if not isinstance(s, str):
                raise TypeError(f"sentences[{i}] must be a str; got {type(s).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
        n = len(items)
        out = np.empty((n, self.dim), np.float32)
        if n == 0:
            return out
        ids = self.tokenizer.encode(items)
        order = np.argsort([-len(t) for t in ids], kind="stable")
        starts = range(0, n, batch_size)
        if progress:
            try:
                from tqdm.auto import tqdm

                starts = tqdm(starts, total=(n + batch_size - 1) // batch_size, unit="batch")
            except ImportError:
                pass
        for s in starts:
            sel = order[s:s + batch_size]
            out[sel] = self.encode_ids([ids[i] for i in sel], normalize=normalize)
        return out[0] if single else out

    def encode_ids(self, seqs, normalize: bool = True) -> np.ndarray:
        """One batch of token-id sequences (list of 1-D int arrays) -> float32 [len(seqs), dim]."""
        flat, pos, offsets = pack_ids(seqs)
        h = self.model.forward_packed(flat, pos, offsets)
        return self.model.pool(h, offsets, normalize)

    def __repr__(self) -> str:
        return (f"SentenceEncoder(dim={self.dim}, layers={self.model.num_layers}, "
                f"max_seq_length={self.max_seq_length}, quantize={self.quantize!r})")
