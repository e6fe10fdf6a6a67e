"""Knowledge distillation: a student learns a teacher's soft targets (Hinton et al., 2015)."""

from __future__ import annotations

import numpy as np

from ._callable import make_module_callable
from .train import autograd
from .train.losses import cross_entropy, kd_loss
from .train.trainer import _check_classes, _pos_float, _pos_int, as_inputs, fit, validation_eval

__all__ = ["distill", "teacher_logits"]


def _run_teacher(teacher, x: np.ndarray) -> np.ndarray:
    out = np.asarray(teacher(x))
    if out.ndim != 2 or out.shape[0] != x.shape[0]:
        raise ValueError(f"teacher must return logits of shape (batch, classes); got {out.shape} for a batch of "
                         f"{x.shape[0]}")
    if out.dtype.kind != "f":
        raise TypeError(f"teacher must return float logits; got {out.dtype}")
    return out.astype(np.float32, copy=False)


def teacher_logits(teacher, X: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The teacher's logits for every row of ``X``, float32 (N, C), computed in batches."""
    from .nn.base import Module

    if isinstance(teacher, Module):
        teacher.eval()
    return np.concatenate([_run_teacher(teacher, X[s:s + batch_size]) for s in range(0, X.shape[0], batch_size)])


class _Projection:
    """Learned affine map from a student layer's (flattened) output to the teacher's width."""

    def __init__(self, d_student: int, d_teacher: int, rng: np.random.Generator):
        self.weight = (rng.standard_normal((d_teacher, d_student)) / np.sqrt(d_student)).astype(np.float32)
        self.bias = np.zeros(d_teacher, np.float32)


def _named(model, name: str, what: str):
    mods = dict(model.named_modules())
    if name not in mods:
        names = [n for n in mods if n]
        raise ValueError(f"hidden: {what} has no layer {name!r}; its layers are {names}")
    return mods[name]


def _teacher_hidden(teacher, layers, X, batch_size):
    """Run the teacher once, keeping its logits and the flattened outputs of ``layers``."""
    store = {id(m): [] for m in layers}
    handles = [m.register_forward_hook(lambda mod, x, y: store[id(mod)].append(
        np.asarray(y, np.float32).reshape(len(y), -1))) for m in layers]
    try:
        logits = teacher_logits(teacher, X, batch_size)
    finally:
        for h in handles:
            h.remove()
    return logits, [np.concatenate(store[id(m)]) for m in layers]


def distill(teacher, student, X, y=None, *, temperature: float = 4.0, alpha: float = 0.9, epochs: int = 10,
            batch_size: int = 64, optimizer: str = "adam", lr: float = 1e-3, weight_decay: float = 0.0,
            validation=None, seed=None, progress: bool = True, hidden=None, hidden_weight: float = 0.1,
            teacher_batch_size: int = 256, max_cached_bytes: int = 1 << 30, **graph_kw) -> dict:
    """Train ``student`` in place on ``teacher``'s soft targets.

    A graph student (:class:`edgepack.nn.Graph`, e.g. a pruned import) is distilled by
    :func:`edgepack.graph.train.distill_graph`: the KD loss per time step for (N, T, C) outputs,
    labels optional (``loss="ctc"`` for sequence labels), ``hidden`` pairs naming graph values,
    and the graph-only keywords ``soft_loss``, ``loss``, ``output``, ``teacher_output``,
    ``trainable``, ``masks``, ``batchnorm``, ``steps_per_epoch``, ``callback``.  The teacher may
    be any callable (the original graph, or an onnxruntime session wrapper returning logits or
    probabilities).

    Loss per batch: ``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)``
    with teacher logits ``t``, student logits ``s`` and ``T = temperature`` (KL summed over
    classes, both terms averaged over the batch), plus the optional hidden-state term.

    Parameters
    ----------
    teacher : callable
        Returns float logits (B, C) for a batch of X: an edgepack model, or any function (e.g.
        wrapping onnxruntime or torch).  Its logits are computed once for every row of X, in
        batches of ``teacher_batch_size``, when (N, C) float32 fits in ``max_cached_bytes``;
        otherwise once per batch and epoch.
    student : edgepack.nn.Module
        Trained in place (any model :func:`edgepack.train` supports, ``weight_mask`` honoured).
    X : ndarray (N, ...)
        Inputs for both models (labels are optional: unlabelled data distills too).
    y : int ndarray (N,), optional
        Class labels; ``None`` means ``alpha = 1`` (soft targets only).
    temperature : float > 0
    alpha : float in [0, 1]
        Weight of the soft (teacher) term.
    epochs, batch_size, optimizer, lr, weight_decay, validation, seed, progress
        As in :func:`edgepack.train`.
    hidden : dict {student_layer: teacher_layer} or sequence of pairs, optional
        Dotted layer names (from ``named_modules()``; the teacher must then be an edgepack model).
        Adds ``hidden_weight * mean((P h_s - h_t)^2)`` per pair on the flattened layer outputs,
        where ``P`` is a learned affine projection (trained with the student, not kept in it)
        when the widths differ and the identity when they match.  Matching pre-activation
        outputs (a Linear or Conv2d) works better than post-ReLU ones, which a strong pull can
        switch off.
    hidden_weight : float >= 0
        Weight of the hidden-state term (0.1 suits standardised activations).

    Returns
    -------
    dict
        As :func:`edgepack.train`'s history; ``accuracy`` is against ``y`` when given, else the
        agreement with the teacher's top class.
    """
    from .graph.ir import Graph
    from .nn.base import Module

    if isinstance(student, Graph):
        from .graph.train import distill_graph

        return distill_graph(teacher, student, X, y, temperature=temperature, alpha=alpha, epochs=epochs,
                             batch_size=batch_size, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                             validation=validation, seed=seed, progress=progress, hidden=hidden,
                             hidden_weight=hidden_weight,
                             # a graph's first run at a new batch size keeps every intermediate
                             # value (the executor's plan-building run): keep teacher batches small
                             teacher_batch_size=min(teacher_batch_size, 16),
                             max_cached_bytes=max_cached_bytes, **graph_kw)
    if graph_kw:
        raise TypeError(f"distill() got unexpected keyword arguments {sorted(graph_kw)} (they apply to graphs)")
    if not isinstance(student, Module):
        raise TypeError(f"student must be an edgepack.nn Module; got {type(student).__name__}")
    if not callable(teacher):
        raise TypeError(f"teacher must be callable (returning logits); got {type(teacher).__name__}")
    X = as_inputs(X)
    n = X.shape[0]
    temperature = _pos_float(temperature, "temperature")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1]; got {alpha!r}")
    hidden_weight = _pos_float(hidden_weight, "hidden_weight", allow_zero=True)
    epochs = _pos_int(epochs, "epochs")
    batch_size = _pos_int(batch_size, "batch_size")
    teacher_batch_size = _pos_int(teacher_batch_size, "teacher_batch_size")
    if y is not None:
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != n or y.dtype.kind not in "iu":
            raise ValueError(f"y must be integer class labels of shape ({n},); got {y.dtype} {y.shape}")
        if y.min() < 0:
            raise ValueError(f"y class labels must be >= 0; got {y.min()}")
    else:
        alpha = 1.0

    pairs = list(hidden.items()) if isinstance(hidden, dict) else list(hidden or ())
    s_layers, t_layers = [], []
    if pairs:
        if not isinstance(teacher, Module):
            raise TypeError("hidden needs the teacher to be an edgepack model (its layers are read by name)")
        for sn, tn in pairs:
            s_layers.append(_named(student, sn, "the student"))
            t_layers.append(_named(teacher, tn, "the teacher"))

    cached = n * 4 * 1024 <= max_cached_bytes or bool(pairs)   # C unknown yet: assume <= 1024 classes
    t_hidden: list[np.ndarray] = []
    if pairs:
        logits, t_hidden = _teacher_hidden(teacher, t_layers, X, teacher_batch_size)
    elif cached:
        logits = teacher_logits(teacher, X, teacher_batch_size)
        if logits.nbytes > max_cached_bytes:   # more classes than assumed: fall back to batches
            logits, cached = None, False
    else:
        logits = None
    if isinstance(teacher, Module):
        teacher.eval()

    rng = np.random.default_rng(seed)
    projections: list[_Projection | None] = []
    if pairs:
        # each student layer's flattened width, from a one-row forward whose taps record it
        widths = {}
        ctx = autograd.Context(rng, {id(m): (lambda yy, _m=m: widths.__setitem__(id(_m), yy[0].size)
                                             or np.zeros_like(yy)) for m in s_layers})
        out, back = autograd.forward(student, X[:1], ctx)
        back(np.zeros_like(out))
        for m, th in zip(s_layers, t_hidden):
            ds, dt = widths[id(m)], th.shape[1]
            projections.append(None if ds == dt else _Projection(ds, dt, np.random.default_rng(seed)))
        student.eval()

    def taps(idx, ctx):
        if not pairs:
            return None
        out = {}
        for m, th, proj in zip(s_layers, t_hidden, projections):
            ht = th[idx]

            def tap(ys, ht=ht, proj=proj):
                hs = ys.reshape(len(ys), -1)
                z = hs if proj is None else hs @ proj.weight.T + proj.bias
                dz = (2.0 * hidden_weight / z.size) * (z - ht)
                if proj is None:
                    return dz.reshape(ys.shape).astype(ys.dtype, copy=False)
                ctx.add(proj, "weight", dz.T @ hs)
                ctx.add(proj, "bias", dz.sum(axis=0))
                return (dz @ proj.weight).reshape(ys.shape).astype(ys.dtype, copy=False)
            out[id(m)] = tap
        return out

    checked = []

    def batch_loss(idx, out, ctx):
        t = logits[idx] if cached else _run_teacher(teacher, X[idx])
        if not checked:
            if out.shape != t.shape:
                raise ValueError(f"the student outputs {out.shape[1:]} but the teacher {t.shape[1:]} logits")
            if y is not None:
                _check_classes(out, y)
            checked.append(True)
        lab = y[idx] if y is not None else None
        value, g = kd_loss(out, t, lab, temperature, alpha)
        ref = lab if lab is not None else t.argmax(-1)
        return value, g, int((out.argmax(-1) == ref).sum())

    extra = [(p, n) for p in projections if p is not None for n in ("weight", "bias")]
    return fit(student, X, batch_loss, epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
               weight_decay=weight_decay, seed=seed, progress=progress,
               evaluate=validation_eval(student, validation, cross_entropy, True), extra_params=extra,
               taps=taps if pairs else None, desc="distill")


make_module_callable(__name__, "distill")
