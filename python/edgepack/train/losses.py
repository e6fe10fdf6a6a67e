"""Losses as ``(value, gradient with respect to the model output)`` pairs, means over the batch."""

from __future__ import annotations

import numpy as np

__all__ = ["cross_entropy", "mse", "kd_loss", "ctc_loss", "log_softmax", "softmax"]


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


def _ctc_targets(targets, n: int):
    """Targets as a list of int arrays: a list of sequences, or (padded (N, L) array, lengths)."""
    if isinstance(targets, tuple) and len(targets) == 2 and np.ndim(targets[0]) == 2:
        pad, lens = np.asarray(targets[0]), np.asarray(targets[1]).reshape(-1)
        seqs = [pad[i, : int(lens[i])] for i in range(pad.shape[0])]
    else:
        seqs = [np.asarray(t, np.int64).reshape(-1) for t in targets]
    if len(seqs) != n:
        raise ValueError(f"targets: one label sequence per row; got {len(seqs)} for {n} rows")
    return seqs


def ctc_loss(logits: np.ndarray, targets, blank: int = 0) -> tuple[float, np.ndarray]:
    """Connectionist temporal classification loss (Graves et al., 2006) for a sequence recognizer.

    Parameters
    ----------
    logits : float array (N, T, C)
        Unnormalised scores per time step (a log-softmax is applied here).
    targets : list of N int sequences (labels in [0, C), without blanks), or ``(padded (N, L),
        lengths (N,))``
    blank : int
        The blank class.

    Returns
    -------
    (float, ndarray (N, T, C))
        ``mean over rows of -log p(target | x)`` and its gradient with respect to ``logits``.
        Rows whose target cannot be aligned in T steps contribute 0 (as PyTorch's
        ``zero_infinity=True``).
    """
    z = np.asarray(logits, np.float64)
    if z.ndim != 3:
        raise ValueError(f"logits must be (N, T, C); got shape {z.shape}")
    n, t_len, c = z.shape
    seqs = _ctc_targets(targets, n)
    for i, s in enumerate(seqs):
        if s.size and (s.min() < 0 or s.max() >= c or (s == blank).any()):
            raise ValueError(f"targets[{i}] must hold labels in [0, {c}) other than the blank {blank}")
    lp = log_softmax(z, axis=-1)
    s_max = 2 * max((len(s) for s in seqs), default=0) + 1
    ext = np.full((n, s_max), blank, np.int64)
    s_len = np.empty(n, np.int64)
    for i, s in enumerate(seqs):
        ext[i, 1: 2 * len(s): 2] = s
        s_len[i] = 2 * len(s) + 1
    valid = np.arange(s_max)[None, :] < s_len[:, None]
    # the skip from s-2 to s: allowed onto a label that differs from the label two back
    skip = np.zeros((n, s_max), bool)
    skip[:, 2:] = (ext[:, 2:] != blank) & (ext[:, 2:] != ext[:, :-2])
    em = np.take_along_axis(lp, np.broadcast_to(ext[:, None, :], (n, t_len, s_max)), axis=2)   # (N, T, S)
    ninf = -np.inf
    alpha = np.full((n, t_len, s_max), ninf)
    alpha[:, 0, 0] = em[:, 0, 0]
    if s_max > 1:
        alpha[:, 0, 1] = np.where(s_len > 1, em[:, 0, 1], ninf)
    for t in range(1, t_len):
        a = alpha[:, t - 1]
        a1 = np.concatenate([np.full((n, 1), ninf), a[:, :-1]], axis=1)
        a2 = np.where(skip, np.concatenate([np.full((n, 2), ninf), a[:, :-2]], axis=1), ninf)
        alpha[:, t] = np.where(valid, np.logaddexp(np.logaddexp(a, a1), a2) + em[:, t], ninf)
    beta = np.full((n, t_len, s_max), ninf)
    last = s_len - 1
    beta[np.arange(n), t_len - 1, last] = em[np.arange(n), t_len - 1, last]
    two = s_len > 1
    beta[np.arange(n)[two], t_len - 1, last[two] - 1] = em[np.arange(n)[two], t_len - 1, last[two] - 1]
    skip_next = np.zeros((n, s_max), bool)      # from s to s+2 allowed when s+2 may be skipped onto
    skip_next[:, :-2] = skip[:, 2:]
    for t in range(t_len - 2, -1, -1):
        b = beta[:, t + 1]
        b1 = np.concatenate([b[:, 1:], np.full((n, 1), ninf)], axis=1)
        b2 = np.where(skip_next, np.concatenate([b[:, 2:], np.full((n, 2), ninf)], axis=1), ninf)
        beta[:, t] = np.where(valid, np.logaddexp(np.logaddexp(b, b1), b2) + em[:, t], ninf)
    end = alpha[np.arange(n), t_len - 1, last]
    end2 = np.where(two, alpha[np.arange(n), t_len - 1, np.maximum(last - 1, 0)], ninf)
    logp = np.logaddexp(end, end2)
    ok = np.isfinite(logp)
    with np.errstate(invalid="ignore"):
        gamma = np.exp(alpha + beta - em - np.where(ok, logp, 0.0)[:, None, None])    # (N, T, S)
    gamma = np.where(np.isfinite(gamma), gamma, 0.0)
    grad = np.exp(lp)
    for s in range(s_max):
        grad[np.arange(n), :, ext[:, s]] -= gamma[:, :, s]
    grad[~ok] = 0.0
    loss = float(-logp[ok].sum()) / n
    return loss, (grad / n).astype(np.asarray(logits).dtype, copy=False)
