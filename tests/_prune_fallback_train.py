"""A tiny NumPy trainer (Sequential of Linear / ReLU / Identity, cross-entropy, Adam) used by the
pruning tests only while ``edgepack.train`` is not importable; it honours ``weight_mask`` the way
edgepack.train does (masked weights stay zero)."""

from __future__ import annotations

import sys
import types

import numpy as np


def train(model, X, y, *, epochs=1, batch_size=64, lr=1e-3, seed=0, optimizer="adam", progress=False,
          loss="cross_entropy", weight_decay=0.0, validation=None):
    from edgepack.nn import Identity, Linear, ReLU

    layers = list(model.layers)
    for m in layers:
        if type(m) not in (Linear, ReLU, Identity):
            raise TypeError(f"fallback trainer cannot train {type(m).__name__}")
    params = [(m, "weight") for m in layers if type(m) is Linear] + \
             [(m, "bias") for m in layers if type(m) is Linear and m.bias is not None]
    mom = {id(m) * 2 + (t == "bias"): [np.zeros_like(getattr(m, t)), np.zeros_like(getattr(m, t))] for m, t in params}
    rng = np.random.default_rng(seed)
    X = np.asarray(X, np.float32)
    y = np.asarray(y)
    step = 0
    for _ in range(epochs):
        order = rng.permutation(len(X))
        for s in range(0, len(X), batch_size):
            idx = order[s:s + batch_size]
            acts = [X[idx]]
            for m in layers:
                acts.append(m(acts[-1]))
            z = acts[-1]
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            g = p
            g[np.arange(len(idx)), y[idx]] -= 1
            g /= len(idx)
            grads = {}
            for i in range(len(layers) - 1, -1, -1):
                m = layers[i]
                if type(m) is ReLU:
                    g = g * (acts[i] > 0)
                elif type(m) is Linear:
                    grads[(id(m), "weight")] = g.T @ acts[i]
                    if m.bias is not None:
                        grads[(id(m), "bias")] = g.sum(0)
                    g = g @ m.weight
            step += 1
            for m, t in params:
                gr = grads[(id(m), t)].astype(np.float32)
                st = mom[id(m) * 2 + (t == "bias")]
                st[0] = 0.9 * st[0] + 0.1 * gr
                st[1] = 0.999 * st[1] + 0.001 * gr * gr
                upd = lr * (st[0] / (1 - 0.9 ** step)) / (np.sqrt(st[1] / (1 - 0.999 ** step)) + 1e-8)
                new = (getattr(m, t) - upd).astype(np.float32)
                mk = m.__dict__.get("weight_mask") if t == "weight" else None
                if mk is not None:
                    new *= mk
                setattr(m, t, new)
    model.eval()
    return {}


def distill(teacher, student, X, y=None, *, epochs=1, seed=0, progress=False, **kw):
    """Stand-in for edgepack.distill: trains on the teacher's argmax (or y) labels."""
    if y is None:
        y = np.asarray(teacher.predict(X)).argmax(-1)
    return train(student, X, y, epochs=epochs, seed=seed)


def install() -> None:
    """Make ``edgepack.train`` / ``edgepack.distill`` importable with these stand-ins when the real
    ones are missing."""
    import edgepack

    for name, fn in (("train", train), ("distill", distill)):
        try:
            __import__(f"edgepack.{name}")
        except ImportError:
            mod = types.ModuleType(f"edgepack.{name}")
            setattr(mod, name, fn)
            sys.modules[f"edgepack.{name}"] = mod
            edgepack.__dict__.pop(name, None)
