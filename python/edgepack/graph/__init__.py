"""Graphs: an ONNX-like IR (:class:`Graph`, :class:`Node`), the operator registry, the compiled
executor and the graph passes.  ``edgepack.from_onnx`` builds a Graph from an ONNX file."""

from .ir import Graph, Node
from .lower import from_module, to_module
from .registry import get_op, register_op, registered_ops

__all__ = ["Graph", "Node", "register_op", "get_op", "registered_ops", "from_module", "to_module"]
