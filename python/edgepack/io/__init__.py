"""Model files (``save``/``load``) and importers (``edgepack.io.onnx.from_onnx``)."""

from .format import FORMAT_VERSION, load, read_header, save

__all__ = ["save", "load", "read_header", "FORMAT_VERSION"]
