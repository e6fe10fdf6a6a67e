"""Stand-ins for the edgepack.nn layers this package uses, until edgepack.nn is available.

Same names, constructors and attributes as edgepack.nn (see MODULE_CONTRACT); deleted once
edgepack.nn lands on main.
"""

from __future__ import annotations

import numpy as np


class Module:
    training = False
    _tensor_names: tuple[str, ...] = ()

    def __setattr__(self, name, value):
        mods = self.__dict__.get("_modules")
        if isinstance(value, Module):
            if mods is None:
                mods = {}
                object.__setattr__(self, "_modules", mods)
            mods[name] = value
        elif mods is not None and name in mods:
            del mods[name]
        object.__setattr__(self, name, value)

    def children(self):
        return list(self.__dict__.get("_modules", {}).items())

    def set_child(self, name, module):
        setattr(self, name, module)

    def named_modules(self, prefix=""):
        yield prefix, self
        for n, c in self.children():
            yield from c.named_modules(f"{prefix}.{n}" if prefix else n)

    def get_tensors(self):
        return {n: getattr(self, n) for n in self._tensor_names if getattr(self, n, None) is not None}

    def get_config(self):
        return {}

    def kernel_path(self):
        return "numpy f32"

    def num_parameters(self):
        return sum(int(t.size) for _, m in self.named_modules() for t in m.get_tensors().values())

    def nbytes(self):
        return sum(int(t.nbytes) for _, m in self.named_modules() for t in m.get_tensors().values())

    def __call__(self, x, **kw):
        return self.forward(x, **kw)


def register_layer(cls):
    return cls


class Linear(Module):
    _tensor_names = ("weight", "bias")

    @classmethod
    def from_weights(cls, weight, bias=None):
        obj = cls.__new__(cls)
        obj.weight = np.ascontiguousarray(weight, np.float32)
        obj.bias = None if bias is None else np.ascontiguousarray(bias, np.float32)
        obj.out_features, obj.in_features = obj.weight.shape
        return obj

    def forward(self, x, **kw):
        y = x @ self.weight.T
        if self.bias is not None:
            y += self.bias
        return y


class Embedding(Module):
    _tensor_names = ("weight",)

    @classmethod
    def from_weights(cls, weight):
        obj = cls.__new__(cls)
        obj.weight = np.ascontiguousarray(weight, np.float32)
        obj.num_embeddings, obj.embedding_dim = obj.weight.shape
        return obj

    def forward(self, x, **kw):
        return self.weight[x]


class LayerNorm(Module):
    _tensor_names = ("weight", "bias")

    def __init__(self, normalized_shape, eps=1e-5):
        self.normalized_shape = int(normalized_shape)
        self.eps = float(eps)
        self.weight = np.ones(normalized_shape, np.float32)
        self.bias = np.zeros(normalized_shape, np.float32)


class GELU(Module):
    def __init__(self, approximate="none"):
        self.approximate = approximate

    def forward(self, x, **kw):
        # erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7)
        z = np.abs(x.astype(np.float64)) / np.sqrt(2.0)
        t = 1.0 / (1.0 + 0.3275911 * z)
        poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
        erf = 1.0 - poly * np.exp(-z * z)
        erf = np.where(x < 0, -erf, erf)
        return (0.5 * x * (1.0 + erf)).astype(np.float32)
