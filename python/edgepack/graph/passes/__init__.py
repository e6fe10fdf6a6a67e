"""Graph passes.  Each takes a Graph and returns a new Graph (the input is never modified):

- :mod:`.cleanup`: drop Identity/inference Dropout, remove nodes nothing uses;
- :mod:`.fold`: evaluate constant subgraphs at import (with a size cap), fold BatchNorm into the
  preceding Conv/Gemm;
- :mod:`.qdq`: Conv/MatMul/Gemm on DequantizeLinear'd int8 weights (models quantized elsewhere)
  become edgepack int8 layers using those weights;
- :mod:`.targets`, :mod:`.quantize`: post-training quantization of graphs.
"""

from .cleanup import eliminate_dead, remove_identity
from .fold import fold_batchnorm, fold_constants
from .qdq import map_qdq

__all__ = ["eliminate_dead", "remove_identity", "fold_constants", "fold_batchnorm", "map_qdq", "simplify"]


def simplify(graph, *, batchnorm: bool = True):
    """The import-time pipeline: identities out, constants folded, BatchNorm folded, dead nodes
    removed."""
    g = remove_identity(graph)
    g = fold_constants(g)
    if batchnorm:
        g = fold_batchnorm(g)
    g = map_qdq(g)
    return eliminate_dead(g)
