"""ModelRef: what crosses to the workers instead of the model (a path and a content hash).

Each worker process loads the file once (cache keyed by path and SHA-256) and checks that its
bytes still hash to the value the driver saw, so every worker runs exactly the model the run was
started with, and a task stays a few hundred bytes whatever the model's size.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass

import numpy as np

__all__ = ["ModelRef", "load_runner"]

_KINDS = ("edgepack", "sentence_encoder", "onnx")


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class ModelRef:
    """A model file by path and content hash.

    Attributes
    ----------
    path : str
        Absolute path, readable from every worker (a shared filesystem on a cluster).
    sha256 : str
        Hex digest of the file's bytes; a worker that reads other bytes refuses to run.
    kind : str
        ``"sentence_encoder"`` (:meth:`SentenceEncoder.save` file: text in, embeddings out),
        ``"edgepack"`` (any :func:`edgepack.save` model: arrays in, arrays out) or ``"onnx"``
        (imported with :func:`edgepack.from_onnx` in the worker).
    """

    path: str
    sha256: str
    kind: str

    @classmethod
    def from_path(cls, path) -> "ModelRef":
        """Hash ``path`` and work out its kind (an ``.onnx`` suffix, else the file's header)."""
        if isinstance(path, ModelRef):
            return path
        if not isinstance(path, (str, os.PathLike)):
            kind = type(path).__name__
            raise TypeError(f"model must be the path of a saved edgepack model or an .onnx file; got a "
                            f"{kind} object (save it first: edgepack.save(model, path), or "
                            "encoder.save(path) for a SentenceEncoder)")
        p = os.path.abspath(os.fspath(path))
        if not os.path.isfile(p):
            raise FileNotFoundError(f"model file not found: {p}")
        if p.lower().endswith(".onnx"):
            kind = "onnx"
        else:
            from ..io import read_header
            from ..text.encoder import is_saved_encoder

            kind = "sentence_encoder" if is_saved_encoder(read_header(p)["metadata"]) else "edgepack"
        return cls(p, _sha256(p), kind)

    def to_dict(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "kind": self.kind}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelRef":
        return cls(d["path"], d["sha256"], d["kind"])


class Runner:
    """A loaded model behind one interface: ``run(batch) -> float32 [n, ...]``.

    ``text``: whether it takes a list of str (a SentenceEncoder) or an array [n, ...].
    """

    def __init__(self, ref: ModelRef, model):
        self.ref = ref
        self.model = model
        self.text = ref.kind == "sentence_encoder"

    def tokenize(self, texts: list[str]) -> list[np.ndarray]:
        return self.model.tokenizer.encode(texts)

    def embed_ids(self, ids: list[np.ndarray]) -> np.ndarray:
        return self.model.encode_ids(ids)

    def run(self, x: np.ndarray) -> np.ndarray:
        y = self.model(x)
        if isinstance(y, (tuple, list)):
            if len(y) != 1:
                raise ValueError(f"model {self.ref.path} returns {len(y)} outputs; edgepack.batch writes one "
                                 "output per row (cut the graph to one output)")
            y = y[0]
        y = np.asarray(y)
        if y.ndim == 0 or y.shape[0] != x.shape[0]:
            raise ValueError(f"model {self.ref.path} returned shape {y.shape} for a batch of {x.shape[0]} rows; "
                             "expected one output row per input row")
        return y


_CACHE: dict = {}
_LOCK = threading.Lock()
LOADS = {"count": 0}  # models loaded by this process (tests check one load per worker)


def load_runner(ref: ModelRef) -> Runner:
    """The model of ``ref``, loaded once per process and checked against its hash."""
    key = (ref.path, ref.sha256)
    r = _CACHE.get(key)
    if r is not None:
        return r
    with _LOCK:
        r = _CACHE.get(key)
        if r is None:
            r = _CACHE[key] = _load(ref)
            LOADS["count"] += 1
    return r


def _load(ref: ModelRef) -> Runner:
    if ref.kind not in _KINDS:
        raise ValueError(f"model kind must be one of {_KINDS}; got {ref.kind!r}")
    if not os.path.isfile(ref.path):
        raise FileNotFoundError(f"model file {ref.path} is not visible from this worker (host "
                                f"{os.uname().nodename}); put it on storage every worker can read")
    got = _sha256(ref.path)
    if got != ref.sha256:
        raise ValueError(f"model file {ref.path} changed since the run started: expected sha256 "
                         f"{ref.sha256[:16]}..., this worker read {got[:16]}...")
    if ref.kind == "sentence_encoder":
        from ..text import SentenceEncoder

        model = SentenceEncoder.load(ref.path)
    elif ref.kind == "onnx":
        from .. import from_onnx

        model = from_onnx(ref.path)
    else:
        from ..io import load

        model = load(ref.path)
    return Runner(ref, model)
