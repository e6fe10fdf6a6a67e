"""SGD (momentum) and Adam over ``(module, attribute)`` parameters, honouring pruning masks."""

from __future__ import annotations

import numpy as np

__all__ = ["SGD", "Adam", "make_optimizer"]


def _mask(m, name):
    # edgepack.prune sets ``weight_mask`` (1 = kept) on pruned layers during fine-tuning
    return m.__dict__.get("weight_mask") if name == "weight" else None


class _Optimizer:
    def __init__(self, params, lr: float, weight_decay: float):
        self.params = params
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.t = 0

    def step(self, grads: dict) -> None:
        self.t += 1
        for i, (m, name) in enumerate(self.params):
            g = grads.get((id(m), name))
            if g is None:
                continue
            w = getattr(m, name)
            mk = _mask(m, name)
            if mk is not None:
                g = g * mk
            new = self._update(i, w, g.astype(w.dtype, copy=False))
            if mk is not None:
                new *= mk           # pruned weights stay exactly zero
            setattr(m, name, new.astype(w.dtype, copy=False))


class SGD(_Optimizer):
    """``v = momentum * v + g + wd * w``; ``w -= lr * v`` (L2 weight decay in the gradient)."""

    def __init__(self, params, lr: float = 0.01, weight_decay: float = 0.0, momentum: float = 0.9):
        super().__init__(params, lr, weight_decay)
        self.momentum = float(momentum)
        self.v = [None] * len(params)

    def _update(self, i, w, g):
        if self.weight_decay and w.ndim > 1:
            g = g + self.weight_decay * w
        v = g if self.v[i] is None else self.momentum * self.v[i] + g
        self.v[i] = v
        return w - self.lr * v


class Adam(_Optimizer):
    """Adam with bias correction; ``weight_decay`` is decoupled (AdamW), applied to weight
    matrices and kernels only (not to biases or normalisation scales)."""

    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.0, betas=(0.9, 0.999),
                 eps: float = 1e-8):
        super().__init__(params, lr, weight_decay)
        self.b1, self.b2 = betas
        self.eps = eps
        self.m = [np.zeros_like(getattr(mod, n)) for mod, n in params]
        self.v = [np.zeros_like(getattr(mod, n)) for mod, n in params]

    def _update(self, i, w, g):
        m, v = self.m[i], self.v[i]
        m *= self.b1
        m += (1 - self.b1) * g
        v *= self.b2
        v += (1 - self.b2) * (g * g)
        c1 = 1 - self.b1 ** self.t
        c2 = 1 - self.b2 ** self.t
        upd = (self.lr / c1) * m / (np.sqrt(v / c2) + self.eps)
        if self.weight_decay and w.ndim > 1:
            upd += self.lr * self.weight_decay * w
        return w - upd


def make_optimizer(name: str, params, lr: float, weight_decay: float):
    if name == "adam":
        return Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return SGD(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'adam' or 'sgd'; got {name!r}")
