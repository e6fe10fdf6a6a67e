"""Sequential and Residual containers."""

from __future__ import annotations

import numpy as np

from . import functional as F
from .base import Module, register_layer

__all__ = ["Sequential", "Residual"]


@register_layer
class Sequential(Module):
    """Runs its layers in order.  Children are named "0", "1", ...; ``.layers`` is the list.

    Supports ``len``, integer indexing, slicing (a new Sequential sharing the layers), iteration and
    ``append``.  Keyword arguments of a call (e.g. an attention ``mask``) go to every layer.
    """

    def __init__(self, *layers: Module):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for i, m in enumerate(layers):
            if not isinstance(m, Module):
                raise TypeError(f"layer {i} must be an edgepack Module; got {type(m).__name__}")
        object.__setattr__(self, "layers", list(layers))

    def children(self):
        return [(str(i), m) for i, m in enumerate(self.layers)]

    def set_child(self, name: str, module: Module) -> None:
        """Replace layer ``name`` ("0", "1", ...); ``name == str(len(self))`` appends."""
        if not isinstance(module, Module):
            raise TypeError(f"module must be an edgepack Module; got {type(module).__name__}")
        try:
            i = int(name)
        except (TypeError, ValueError):
            i = -1
        if str(i) != str(name) or not 0 <= i <= len(self.layers):
            raise ValueError(f"Sequential has no child {name!r}; children are '0'..'{len(self.layers) - 1}'")
        if i == len(self.layers):
            self.layers.append(module)
        else:
            self.layers[i] = module

    def append(self, module: Module) -> "Sequential":
        self.set_child(str(len(self.layers)), module)
        return self

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return type(self)(*self.layers[i]) if type(self) is Sequential else Sequential(*self.layers[i])
        return self.layers[i]

    def kernel_path(self) -> str:
        return ""

    def forward(self, x, **kw):
        if kw:
            for m in self.layers:
                x = m(x, **kw)
        else:
            for m in self.layers:
                x = m(x)
        return x


@register_layer
class Residual(Sequential):
    """``x + Sequential(*layers)(x)``: the residual Add block (body must keep x's shape)."""

    def forward(self, x, **kw):
        x = F.as_float32(x)
        y = super().forward(x, **kw)
        if np.shape(y) != np.shape(x):
            raise ValueError(f"Residual body changed the shape from {np.shape(x)} to {np.shape(y)}")
        return x + y
