"""edgepack.nn: float32 layers and containers on NumPy weights (see MODULE_CONTRACT).

Every layer is a :class:`Module`: ``model(x)`` runs inference, ``model.predict(x, batch_size=)``
batches, ``model.summary(input_shape)`` prints the layer table, ``prepare_for_inference()`` folds
BatchNorm.  Floating inputs of another dtype are cast to float32; integer inputs to float layers
raise TypeError.
"""

from .base import LAYER_REGISTRY, Module, register_layer, seed
from .layers import (
    AvgPool2d, BatchNorm, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Embedding, Flatten, GELU,
    GlobalAvgPool2d, Identity, LayerNorm, Linear, MaxPool2d, ReLU, Reshape, SiLU, Sigmoid, Softmax,
    Tanh,
)
from .containers import Residual, Sequential
from .attention import MultiHeadAttention, TransformerEncoderLayer
from .fold import fold_batchnorm
from .summary import summary
from . import functional

__all__ = [
    "LAYER_REGISTRY", "Module", "register_layer", "seed", "fold_batchnorm", "summary", "functional",
    "Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "Flatten", "Reshape",
    "Embedding", "LayerNorm", "BatchNorm", "BatchNorm1d", "BatchNorm2d", "ReLU", "GELU", "SiLU",
    "Tanh", "Sigmoid", "Softmax", "Dropout", "Identity", "Sequential", "Residual",
    "MultiHeadAttention", "TransformerEncoderLayer", "Graph", "Node",
]


def __getattr__(name):
    # Graph and Node live in edgepack.graph (which imports this package's base): loaded on first use.
    if name in ("Graph", "Node"):
        from ..graph import ir

        return getattr(ir, name)
    raise AttributeError(f"module 'edgepack.nn' has no attribute {name!r}")
