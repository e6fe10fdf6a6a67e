"""Losses as ``(value, gradient with respect to the model output)`` pairs, means over the batch."""

from __future__ import annotations

import numpy as np

__all__ = ["cross_entropy", "mse", "kd_loss", "log_softmax", "softmax"]


def log_softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    m = z.max(axis=axis, keepdims=True)
    s = z - m
    return s - np.log(np.exp(s).sum(axis=axis, keepdims=True))


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Softmax cross-entropy, mean over the batch.

    Parameters
    ----------
    logits : float array (B, C)
    y : int array (B,) of class indices, or float array (B, C) of target probabilities

    Returns
    -------
    (float, ndarray (B, C)) : the loss and its gradient with respect to ``logits``.
    """
    b = logits.shape[0]
    ls = log_softmax(logits)
    p = np.exp(ls)
    if y.ndim == 1:
        loss = -float(ls[np.arange(b), y].sum()) / b
        g = p
        g[np.arange(b), y] -= 1
    else:
        loss = -float((y * ls).sum()) / b
        g = p * y.sum(axis=1, keepdims=True) - y
    return loss, g / b


def mse(out: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean squared error over all elements: ``mean((out - target)**2)`` and its gradient."""
    d = out - target
    n = d.size
    return float((d * d).sum()) / max(n, 1), (2.0 / max(n, 1)) * d


def kd_loss(student: np.ndarray, teacher: np.ndarray, y: np.ndarray | None, temperature: float,
            alpha: float) -> tuple[float, np.ndarray]:
    """Hinton's distillation loss and its gradient with respect to the student's logits.

    ``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)``, the KL summed
    over classes and both terms averaged over the batch; ``y=None`` drops the label term (alpha = 1).
    The T^2 factor keeps the soft term's gradient on the scale of the hard one as T grows.

    Parameters
    ----------
    student, teacher : float arrays (B, C) of logits
    y : int array (B,) or None
    temperature : float > 0
    alpha : float in [0, 1]
    """
    t = temperature
    b = student.shape[0]
    ls = log_softmax(student / t)
    lt = log_softmax(teacher / t)
    pt = np.exp(lt)
    kl = float((pt * (lt - ls)).sum()) / b
    g = (t * (np.exp(ls) - pt) / b) * alpha     # d(T^2 KL)/ds = T (p_s - p_t)
    loss = alpha * t * t * kl
    if y is not None and alpha < 1.0:
        ce, gce = cross_entropy(student, y)
        loss += (1.0 - alpha) * ce
        g = g + (1.0 - alpha) * gce
    return loss, g.astype(student.dtype, copy=False)
