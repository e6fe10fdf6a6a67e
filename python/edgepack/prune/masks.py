"""Pruning masks: magnitude (unstructured, global or per layer), N:M, and structured L1 scores."""

from __future__ import annotations

import numpy as np

__all__ = ["lamp_scores", "magnitude_masks", "nm_mask", "unit_scores"]


def lamp_scores(w: np.ndarray) -> np.ndarray:
    """LAMP scores (Lee et al., ICLR 2021): ``w_i^2 / sum_{|w_j| >= |w_i|} w_j^2`` within the
    layer.  Same order as |w| inside a layer, but comparable across layers, so one global
    threshold does not empty a layer whose weights are merely smaller (its largest weight scores 1)."""
    a = np.asarray(w, np.float64).ravel() ** 2
    order = np.argsort(a, kind="stable")
    sa = a[order]
    suffix = np.cumsum(sa[::-1])[::-1]
    out = np.empty_like(a)
    out[order] = np.divide(sa, suffix, out=np.zeros_like(sa), where=suffix > 0)
    return out.reshape(np.shape(w))


def magnitude_masks(weights: dict[str, np.ndarray], sparsity: float, scope: str = "global",
                    criterion: str = "magnitude") -> dict[str, np.ndarray]:
    """Keep the largest-magnitude weights.

    Parameters
    ----------
    weights : dict of name -> float32 array (any shape)
    sparsity : float in [0, 1)
        Fraction of weights set to zero: over all arrays together (``scope="global"``: one
        threshold, so layers with many small weights lose more) or in each array (``"layer"``).
    criterion : {"magnitude", "lamp"}
        Rank by |w|, or (global scope) by :func:`lamp_scores`; per layer both give the same mask.

    Returns
    -------
    dict of name -> bool array of the same shape, True where the weight is kept.  Exactly
    ``round(sparsity * size)`` weights are dropped (ties broken by position).
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1); got {sparsity!r}")
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer'; got {scope!r}")
    if criterion not in ("magnitude", "lamp"):
        raise ValueError(f"criterion must be 'magnitude' or 'lamp'; got {criterion!r}")
    if scope == "layer":
        return {n: magnitude_masks({n: w}, sparsity, "global")[n] for n, w in weights.items()}
    names = list(weights)
    score = (lambda w: np.abs(np.asarray(w, np.float32))) if criterion == "magnitude" else lamp_scores
    flat = np.concatenate([score(weights[n]).ravel() for n in names]) if names else np.zeros(0, np.float32)
    drop = int(round(sparsity * flat.size))
    keep = np.ones(flat.size, bool)
    if drop:
        keep[np.argpartition(flat, drop - 1, kind="introselect")[:drop]] = False
    out, off = {}, 0
    for n in names:
        size = np.asarray(weights[n]).size
        out[n] = keep[off:off + size].reshape(np.shape(weights[n]))
        off += size
    return out


def nm_mask(w: np.ndarray, n: int = 2, m: int = 4) -> np.ndarray:
    """Keep the ``n`` largest of every ``m`` consecutive weights along the last axis of the
    [out, in] view of ``w`` (a Conv2d weight [out, in, kh, kw] is viewed as [out, in*kh*kw]).

    Returns a bool mask of ``w``'s shape.  The flattened input size must be a multiple of ``m``.
    """
    w2 = np.abs(np.asarray(w)).reshape(w.shape[0], -1)
    k = w2.shape[1]
    if k % m:
        raise ValueError(f"w: {n}:{m} needs the input size to be a multiple of {m}; got {k}")
    g = w2.reshape(w2.shape[0], k // m, m)
    order = np.argsort(-g, axis=-1, kind="stable")[..., :n]
    mask = np.zeros(g.shape, bool)
    np.put_along_axis(mask, order, True, axis=-1)
    return mask.reshape(w.shape)


def unit_scores(w: np.ndarray) -> np.ndarray:
    """Mean absolute weight (L1 norm / fan-in) of each output unit (row of a Linear, filter of a
    Conv2d).  Dividing by fan-in makes scores of layers with different widths comparable when
    structures are ranked globally."""
    w2 = np.abs(np.asarray(w, np.float32)).reshape(w.shape[0], -1)
    return w2.mean(axis=1)
