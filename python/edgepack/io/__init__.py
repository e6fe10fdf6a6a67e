"""Model files (``save``/``load``) and importers (``edgepack.io.onnx.from_onnx``)."""

import os

from .format import FORMAT_VERSION, load, read_header, save

__all__ = ["save", "load", "read_header", "read_model", "is_onnx_path", "FORMAT_VERSION"]


def is_onnx_path(path) -> bool:
    """True when ``path`` names an ONNX file (by its ``.onnx`` suffix)."""
    return os.fspath(path).lower().endswith(".onnx")


def read_model(path):
    """``(model, header)`` for an edgepack file or an ``.onnx`` file (imported as a Graph; its
    header has ``file_bytes``, ``format_version`` ``"onnx"`` and no metadata)."""
    if is_onnx_path(path):
        from .onnx import from_onnx

        model = from_onnx(path)
        return model, {"file_bytes": os.path.getsize(path), "format_version": "onnx", "metadata": None}
    return load(path), read_header(path)
