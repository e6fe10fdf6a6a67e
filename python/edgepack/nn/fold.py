"""BatchNorm folding: Conv2d/Linear followed by BatchNorm -> one Conv2d/Linear."""

from __future__ import annotations

import numpy as np

from .base import Module
from .containers import Sequential
from .layers import BatchNorm, Conv2d, Identity, Linear

__all__ = ["fold_batchnorm"]


def _fold_into(layer: Module, bn: BatchNorm) -> bool:
    if type(layer) is Conv2d:
        n_out = layer.out_channels
    elif type(layer) is Linear:
        n_out = layer.out_features
    else:
        return False
    if bn.num_features != n_out:
        return False
    scale, shift = bn.scale_shift()  # float64, so the fold adds no rounding of its own
    w = layer.weight.astype(np.float64)
    w *= scale.reshape((-1,) + (1,) * (w.ndim - 1))
    b = np.zeros(n_out) if layer.bias is None else layer.bias.astype(np.float64)
    layer.weight = np.ascontiguousarray(w, dtype=np.float32)
    layer.bias = (b * scale + shift).astype(np.float32)
    return True


def fold_batchnorm(model: Module) -> Module:
    """Fold every BatchNorm that directly follows a Conv2d or Linear into that layer (in place).

    The pair must be consecutive children of one container.  In a Sequential the BatchNorm is
    removed (later layers are renumbered); in other containers it becomes an Identity.  A
    BatchNorm with no foldable predecessor stays and keeps running (as an affine op).
    Returns ``model``.  Only valid for inference (uses the running statistics).
    """
    for _, m in list(model.named_modules()):
        kids = m.children()
        drop = []
        for i in range(1, len(kids)):
            name, child = kids[i]
            if type(child) is BatchNorm and _fold_into(kids[i - 1][1], child):
                drop.append(i)
        if not drop:
            continue
        if isinstance(m, Sequential):
            m.layers[:] = [c for j, c in enumerate(m.layers) if j not in drop]
        else:
            for i in drop:
                m.set_child(kids[i][0], Identity())
    return model
