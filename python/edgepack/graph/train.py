"""Training and distillation of graphs: :func:`edgepack.train` and :func:`edgepack.distill` for an
:class:`edgepack.nn.Graph` (an imported ONNX model, possibly pruned), on the graph autograd
(:mod:`edgepack.graph.autograd`) and the same loop and optimizers as layer models
(:func:`edgepack.train.trainer.fit`, :mod:`edgepack.train.optim`).

Losses work on the logits: when a graph ends in Softmax/LogSoftmax over its last axis, its input
is trained (``output=`` names any other value).  Outputs with a time axis (N, T, C) are scored
per step (cross-entropy, the Hinton KD loss) or per sequence (``loss="ctc"``).
"""

from __future__ import annotations

import numpy as np

from ..train.losses import cross_entropy, ctc_loss, kd_loss, mse
from ..train.trainer import _pos_float, _pos_int, fit, rows_of, take_rows, wrap_user_loss
from .autograd import GraphTape, logits_value
from .ir import Graph

__all__ = ["GraphEngine", "train_graph", "distill_graph"]

_HARD = ("cross_entropy", "mse", "ctc")


class GraphEngine:
    """Drives a graph in :func:`~edgepack.train.trainer.fit`: parameters for the optimizer,
    a training forward returning ``(output, backward)``, and ``train()``/``eval()`` (``eval``
    writes the trained values back into the graph, so it runs them at inference).

    Parameters
    ----------
    graph : edgepack.nn.Graph
    output : str
        The value the loss reads.
    trainable : see :class:`~edgepack.graph.autograd.GraphTape`
    masks : dict {parameter: float mask}, optional
        Pruning masks: masked weights stay exactly zero (the optimizers honour ``weight_mask``).
    batchnorm : {"train", "frozen"}
        BatchNormalization with batch statistics (updating the running ones), or with the
        stored statistics (better for small batches and for fine-tuning a trained model).
    """

    def __init__(self, graph: Graph, output: str, *, trainable=None, masks=None, batchnorm: str = "train"):
        if batchnorm not in ("train", "frozen"):
            raise ValueError(f"batchnorm must be 'train' or 'frozen'; got {batchnorm!r}")
        self.graph = graph
        self.output = output
        self.tape = GraphTape(graph, trainable)
        if not self.tape.holders:
            raise ValueError("the graph has no trainable float parameters (edgepack.Layer nodes, made by quantize or "
                             "sparse pruning, run inference only: train before quantizing)")
        if batchnorm == "frozen":
            self.tape.frozen_ops = {"BatchNormalization"}
        for k, m in (masks or {}).items():
            h = self.tape.holders.get(k)
            if h is None:
                raise ValueError(f"masks: {k!r} is not a trainable parameter of the graph")
            if np.shape(m) != h.weight.shape:
                raise ValueError(f"masks[{k!r}] has shape {np.shape(m)}; the parameter has {h.weight.shape}")
            h.weight_mask = np.asarray(m, h.weight.dtype)
            h.weight = h.weight * h.weight_mask
        names = graph.input_names
        self.input = names[0] if len(names) == 1 else None

    def parameters(self):
        return self.tape.parameters()

    def feeds(self, x) -> dict:
        if isinstance(x, dict):
            return x
        if self.input is None:
            raise ValueError(f"the graph has inputs {self.graph.input_names}: pass X as a dict of arrays")
        return {self.input: x}

    def forward(self, x, ctx):
        taps = dict(ctx.taps or {})
        vals, back = self.tape.forward(self.feeds(x), [self.output] + [k for k in taps if k != self.output],
                                       training=True, rng=ctx.rng)
        out = vals[self.output]
        holders = self.tape.holders

        def backward(g):
            grads = {self.output: g}
            for k, tap in taps.items():
                extra = tap(vals[k])
                grads[k] = grads[k] + extra if k in grads else extra
            for k, gv in back(grads).items():
                h = holders.get(k)
                if h is not None:
                    ctx.add(h, "weight", gv.astype(h.weight.dtype, copy=False))
            return None
        return out, backward

    def predict(self, X, batch_size: int = 64) -> np.ndarray:
        """The ``output`` value for every row of ``X`` (inference, current weights)."""
        self.eval()
        n = rows_of(X)
        parts = []
        for s in range(0, n, batch_size):
            parts.append(self.graph.run(self.feeds(take_rows(X, slice(s, s + batch_size))),
                                        outputs=[self.output])[self.output])
        return np.concatenate(parts)

    def train(self):
        self.tape.training = True

    def eval(self):
        self.tape.training = False
        self.tape.sync()


# -- inputs and targets ------------------------------------------------------------------------------

def _inputs(graph: Graph, X, name="X"):
    names = graph.input_names
    if isinstance(X, dict):
        missing = [k for k in names if k not in X]
        if missing:
            raise ValueError(f"{name}: the graph's inputs are {names}; missing {missing}")
        out = {k: np.asarray(X[k]) for k in names}
    else:
        if len(names) != 1:
            raise ValueError(f"{name}: the graph has inputs {names}; pass a dict of arrays")
        out = {names[0]: np.asarray(X)}
    sizes = {v.shape[0] if v.ndim else 0 for v in out.values()}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"{name}: every input needs the same non-empty batch axis; got sizes {sorted(sizes)}")
    out = {k: (v.astype(np.float32, copy=False) if v.dtype.kind == "f" else v) for k, v in out.items()}
    return out if isinstance(X, dict) or len(names) != 1 else out[names[0]]


def _resolve_output(graph: Graph, output, want_logits: bool):
    if output is not None:
        if output not in {v for n in graph.nodes for v in n.outputs} | set(graph.outputs):
            raise ValueError(f"output: no value named {output!r} in the graph")
        return output, None
    if want_logits:
        return logits_value(graph)
    return graph.outputs[0], None


def _check_axis(out: np.ndarray, axis, what: str):
    if axis is not None and axis % out.ndim != out.ndim - 1:
        raise ValueError(f"{what}: the graph's final Softmax is over axis {axis} of its {out.ndim}-D input, not the "
                         "last axis; pass output= (the value holding the class scores on its last axis)")


class _Seqs:
    """CTC targets: a list of label sequences (or (padded, lengths)), indexable by row indices."""

    def __init__(self, y, n):
        if isinstance(y, tuple) and len(y) == 2 and np.ndim(y[0]) == 2:
            pad, lens = np.asarray(y[0]), np.asarray(y[1]).reshape(-1)
            self.seqs = [pad[i, : int(lens[i])].astype(np.int64) for i in range(pad.shape[0])]
        else:
            self.seqs = [np.asarray(t, np.int64).reshape(-1) for t in y]
        if len(self.seqs) != n:
            raise ValueError(f"y: one label sequence per row of X ({n}); got {len(self.seqs)}")

    def __getitem__(self, idx):
        return [self.seqs[i] for i in np.asarray(idx).reshape(-1)]


def _hard_loss(loss, y, n: int):
    """(fn(out, target) -> (value, grad), targets indexable by row, correct(out, target) or None)."""
    if callable(loss):
        return wrap_user_loss(loss), (y if y is None or not isinstance(y, list) else _Seqs(y, n)), None
    if loss not in _HARD:
        raise ValueError(f"loss must be one of {_HARD} or a callable; got {loss!r}")
    if loss == "ctc":
        seqs = _Seqs(y, n)

        def ctc(out, t):
            if out.ndim != 3:
                raise ValueError(f"loss='ctc' needs (N, T, C) outputs; got shape {out.shape}")
            return ctc_loss(out, t)
        return ctc, seqs, None
    y = np.asarray(y)
    if y.shape[0] != n:
        raise ValueError(f"y must have one target per row of X ({n}); got shape {y.shape}")
    if loss == "mse":
        return mse, y.astype(np.float32) if y.dtype.kind == "f" else y, None
    if y.dtype.kind not in "iuf":
        raise TypeError(f"y must hold integer class labels (or probabilities) for cross_entropy; got {y.dtype}")

    def ce(out, t):
        c = out.shape[-1]
        if t.dtype.kind in "iu":
            if t.size * c != out.size:
                raise ValueError(f"y has {t.shape[1:]} labels per row but the output is {out.shape[1:]}")
            if t.size and (t.min() < 0 or t.max() >= c):
                raise ValueError(f"y has class labels outside [0, {c})")
            v, g = cross_entropy(out.reshape(-1, c), t.reshape(-1))
        else:
            v, g = cross_entropy(out.reshape(-1, c), t.reshape(-1, c))
        return v, g.reshape(out.shape)

    def correct(out, t):
        if t.dtype.kind not in "iu":
            return None
        hit = out.argmax(-1) == t.reshape(out.shape[:-1])
        return int(hit.reshape(hit.shape[0], -1).all(axis=1).sum())
    return ce, y, correct


def _validation(engine: GraphEngine, validation, fn, correct_fn, n_hint):
    if validation is None:
        return None
    if not (isinstance(validation, (tuple, list)) and len(validation) == 2):
        raise TypeError("validation must be a pair (X_val, y_val)")
    xv = _inputs(engine.graph, validation[0], "validation X")
    nv = rows_of(xv)
    yv = validation[1]
    yv = _Seqs(yv, nv) if isinstance(yv, list) or (isinstance(yv, tuple) and len(yv) == 2) else np.asarray(yv)

    def evaluate():
        out = engine.predict(xv)
        t = yv[np.arange(nv)] if isinstance(yv, _Seqs) else yv
        loss, _ = fn(out, t)
        res = {"val_loss": loss}
        if correct_fn is not None:
            c = correct_fn(out, t)
            if c is not None:
                res["val_accuracy"] = c / nv
        return res
    return evaluate


def _common(epochs, batch_size, lr, weight_decay, optimizer):
    epochs = _pos_int(epochs, "epochs")
    batch_size = _pos_int(batch_size, "batch_size")
    lr = _pos_float(lr, "lr")
    weight_decay = _pos_float(weight_decay, "weight_decay", allow_zero=True)
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd'; got {optimizer!r}")
    return epochs, batch_size, lr, weight_decay


# -- train -----------------------------------------------------------------------------------------------

def train_graph(graph: Graph, X, y, *, loss="cross_entropy", epochs: int = 10, batch_size: int = 32,
                optimizer: str = "adam", lr: float = 1e-3, weight_decay: float = 0.0, validation=None, seed=None,
                progress: bool = True, output: str | None = None, trainable=None, masks=None,
                batchnorm: str = "train", steps_per_epoch: int | None = None, callback=None) -> dict:
    """Train a graph in place (the graph form of :func:`edgepack.train`).

    Parameters
    ----------
    graph : edgepack.nn.Graph
        Its float parameters are updated in place (see
        :func:`edgepack.graph.autograd.default_trainable` for which ones).
    X : ndarray (N, ...) or dict of arrays
    y : targets
        ``loss="cross_entropy"``: int labels (N,) for (N, C) logits or (N, T) for (N, T, C), or
        probabilities of the logits' shape.  ``"mse"``: floats of the output's shape.
        ``"ctc"``: a list of N label sequences (or ``(padded (N, L), lengths)``) for (N, T, C)
        logits, blank = class 0.
    loss : "cross_entropy", "mse", "ctc" or callable ``loss(output, target) -> (value, grad)``
    output : str, optional
        The value the loss reads; default the input of a final Softmax/LogSoftmax (logits) for
        cross-entropy and CTC, else the graph's first output.
    trainable : collection of names or callable(name, array) -> bool, optional
    masks : dict {parameter name: mask}, optional
        Pruned weights stay zero.
    batchnorm : {"train", "frozen"}
    steps_per_epoch : int, optional
        Cap on the batches per epoch (for very large X).
    callback : callable(step, loss), optional

    Other parameters are as in :func:`edgepack.train`.

    Returns
    -------
    dict
        Per-epoch history (``loss``, ``accuracy`` for labels, ``val_*``, ``time``).
    """
    if not isinstance(graph, Graph):
        raise TypeError(f"graph must be an edgepack.nn.Graph; got {type(graph).__name__}")
    X = _inputs(graph, X)
    n = rows_of(X)
    epochs, batch_size, lr, weight_decay = _common(epochs, batch_size, lr, weight_decay, optimizer)
    fn, targets, correct_fn = _hard_loss(loss, y, n)
    out_name, axis = _resolve_output(graph, output, loss in ("cross_entropy", "ctc") or callable(loss))
    engine = GraphEngine(graph, out_name, trainable=trainable, masks=masks, batchnorm=batchnorm)
    checked = []

    def batch_loss(idx, out, ctx):
        if not checked:
            _check_axis(out, axis, "train")
            checked.append(True)
        t = targets[idx] if targets is not None else None
        value, g = fn(out, t)
        ok = correct_fn(out, t) if correct_fn is not None else None
        return value, g, ok

    return fit(graph, X, batch_loss, epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
               weight_decay=weight_decay, seed=seed, progress=progress, engine=engine,
               evaluate=_validation(engine, validation, fn, correct_fn, n), steps_per_epoch=steps_per_epoch,
               callback=callback)


# -- distill ---------------------------------------------------------------------------------------------

def _as_logits(a: np.ndarray) -> np.ndarray:
    """Teacher outputs as logits: probabilities (non-negative, summing to 1 over the last axis)
    become log-probabilities (a softmax of them gives the probabilities back)."""
    a = np.asarray(a, np.float32)
    if a.size and a.min() >= 0 and np.allclose(a.sum(-1), 1.0, atol=1e-3):
        return np.log(np.maximum(a, 1e-30)).astype(np.float32)
    return a


class _Teacher:
    """Runs the teacher on rows of X: a Graph (its logits value and hidden values read directly)
    or any callable returning logits or probabilities."""

    def __init__(self, teacher, X, t_output, hidden_t, batch_size, max_bytes):
        self.teacher = teacher
        self.X = X
        self.batch_size = batch_size
        self.hidden = list(hidden_t)
        self.graph = teacher if isinstance(teacher, Graph) else None
        if self.hidden and self.graph is None:
            raise TypeError("hidden needs the teacher to be a Graph (its values are read by name)")
        if self.graph is not None:
            self.out, self.axis = _resolve_output(self.graph, t_output, True)
        self.cache = None
        n = rows_of(X)
        first = self._run(take_rows(X, np.arange(min(n, 2))))
        per_row = sum(a[0].nbytes for a in first)
        if per_row * n <= max_bytes:
            parts = [self._run(take_rows(X, np.arange(s, min(n, s + batch_size)))) for s in range(0, n, batch_size)]
            self.cache = [np.concatenate([p[k] for p in parts]) for k in range(len(first))]

    def _run(self, xb):
        if self.graph is not None:
            feeds = xb if isinstance(xb, dict) else {self.graph.input_names[0]: xb}
            r = self.graph.run(feeds, outputs=[self.out] + self.hidden)
            return [np.asarray(r[self.out], np.float32)] + [np.asarray(r[h], np.float32) for h in self.hidden]
        out = self.teacher(xb)
        if isinstance(out, (tuple, list)):
            out = out[0]
        out = np.asarray(out)
        if out.dtype.kind != "f":
            raise TypeError(f"teacher must return float logits or probabilities; got {out.dtype}")
        return [_as_logits(out)]

    def __call__(self, idx):
        if self.cache is not None:
            return [c[idx] for c in self.cache]
        return self._run(take_rows(self.X, idx))


class _Projection:
    """Learned map over one axis from a student value's width to the teacher's (hidden loss)."""

    def __init__(self, axis: int, ds: int, dt: int, rng):
        self.axis = axis
        self.weight = (rng.standard_normal((dt, ds)) / np.sqrt(ds)).astype(np.float32)


def distill_graph(teacher, student: Graph, X, y=None, *, temperature: float = 4.0, alpha: float = 0.9,
                  epochs: int = 10, batch_size: int = 32, optimizer: str = "adam", lr: float = 1e-3,
                  weight_decay: float = 0.0, validation=None, seed=None, progress: bool = True, hidden=None,
                  hidden_weight: float = 0.1, teacher_batch_size: int = 16, max_cached_bytes: int = 1 << 30,
                  soft_loss: str = "kd", loss="cross_entropy", output: str | None = None,
                  teacher_output: str | None = None, trainable=None, masks=None, batchnorm: str = "train",
                  steps_per_epoch: int | None = None, callback=None) -> dict:
    """Distil ``teacher`` into the graph ``student`` in place (the graph form of
    :func:`edgepack.distill`).

    The soft term is Hinton's ``T^2 KL(softmax(t/T) || softmax(s/T))`` over the last axis
    (per time step for (N, T, C) outputs; ``soft_loss="mse"`` matches logits instead), weighted
    ``alpha``; with labels ``y`` the hard term ``loss`` ("cross_entropy" or "ctc") weighs
    ``1 - alpha``.  Without labels only the teacher is learned from: the default recovery after
    pruning.

    Parameters
    ----------
    teacher : Graph or callable
        A Graph (e.g. the unpruned original; its logits value is read directly), or any
        callable returning logits or probabilities for a batch (e.g. an onnxruntime session
        wrapper); probabilities are turned into log-probabilities.
    student : edgepack.nn.Graph
    hidden : dict {student value: teacher value}, optional
        Adds ``hidden_weight * mean((P h_s - h_t)^2)`` per pair; ``P`` is a learned map over the
        one axis where the shapes differ (a pruned student's channels), the identity when they
        match.  Needs a Graph teacher.
    output, teacher_output : str, optional
        The values compared (default: the logits before each graph's final Softmax).
    teacher_batch_size, max_cached_bytes
        The teacher's outputs are computed once for every row of X when they fit in
        ``max_cached_bytes``, else per batch.

    Other parameters are as in :func:`train_graph` and :func:`edgepack.distill`.
    """
    if not isinstance(student, Graph):
        raise TypeError(f"student must be an edgepack.nn.Graph; got {type(student).__name__}")
    if not callable(teacher):
        raise TypeError(f"teacher must be callable (a Graph or a function returning logits); got "
                        f"{type(teacher).__name__}")
    if soft_loss not in ("kd", "mse"):
        raise ValueError(f"soft_loss must be 'kd' or 'mse'; got {soft_loss!r}")
    X = _inputs(student, X)
    n = rows_of(X)
    epochs, batch_size, lr, weight_decay = _common(epochs, batch_size, lr, weight_decay, optimizer)
    temperature = _pos_float(temperature, "temperature")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1]; got {alpha!r}")
    hidden_weight = _pos_float(hidden_weight, "hidden_weight", allow_zero=True)
    teacher_batch_size = _pos_int(teacher_batch_size, "teacher_batch_size")
    hard = None
    if y is not None:
        hard = _hard_loss(loss, y, n)
    else:
        alpha = 1.0
    pairs = list(hidden.items()) if isinstance(hidden, dict) else list(hidden or ())
    s_values = {v for nd in student.nodes for v in nd.outputs}
    for sv, tv in pairs:
        if sv not in s_values:
            raise ValueError(f"hidden: the student has no value named {sv!r}")
        if isinstance(teacher, Graph) and tv not in {v for nd in teacher.nodes for v in nd.outputs}:
            raise ValueError(f"hidden: the teacher has no value named {tv!r}")
    out_name, axis = _resolve_output(student, output, True)
    T = _Teacher(teacher, X, teacher_output, [t for _, t in pairs], teacher_batch_size, max_cached_bytes)
    engine = GraphEngine(student, out_name, trainable=trainable, masks=masks, batchnorm=batchnorm)

    rng = np.random.default_rng(seed)
    projections: list = [None] * len(pairs)
    if pairs:
        probe = student.run(GraphEngine.feeds(engine, take_rows(X, np.arange(1))), outputs=[s for s, _ in pairs])
        t_first = T(np.arange(1))
        for k, (sv, tv) in enumerate(pairs):
            ss, ts = probe[sv].shape, t_first[1 + k].shape
            if len(ss) != len(ts):
                raise ValueError(f"hidden: {sv!r} has shape {ss[1:]} and {tv!r} {ts[1:]}: ranks differ")
            diff = [i for i in range(1, len(ss)) if ss[i] != ts[i]]
            if len(diff) > 1:
                raise ValueError(f"hidden: {sv!r} {ss[1:]} and {tv!r} {ts[1:]} differ in more than one axis")
            if diff:
                projections[k] = _Projection(diff[0], ss[diff[0]], ts[diff[0]], rng)

    cur_t: dict = {}

    def taps(idx, ctx):
        cur_t["t"] = T(idx)
        if not pairs:
            return None
        out = {}
        for k, (sv, _) in enumerate(pairs):
            ht = cur_t["t"][1 + k]
            proj = projections[k]

            def tap(hs, ht=ht, proj=proj):
                if proj is None:
                    z = hs
                else:
                    z = np.moveaxis(np.tensordot(proj.weight, np.moveaxis(hs, proj.axis, 0), axes=(1, 0)), 0,
                                    proj.axis)
                dz = (2.0 * hidden_weight / z.size) * (z - ht)
                if proj is None:
                    return dz.astype(hs.dtype, copy=False)
                a = np.moveaxis(dz, proj.axis, 0).reshape(dz.shape[proj.axis], -1)
                b = np.moveaxis(hs, proj.axis, 0).reshape(hs.shape[proj.axis], -1)
                ctx.add(proj, "weight", a @ b.T)
                return np.moveaxis(np.tensordot(proj.weight.T, np.moveaxis(dz, proj.axis, 0), axes=(1, 0)), 0,
                                   proj.axis).astype(hs.dtype, copy=False)
            out[sv] = tap
        return out

    checked = []

    def batch_loss(idx, out, ctx):
        t = cur_t["t"][0] if "t" in cur_t else T(idx)[0]
        if not checked:
            _check_axis(out, axis, "distill")
            if out.shape != t.shape:
                raise ValueError(f"the student's output {out.shape[1:]} and the teacher's {t.shape[1:]} differ; "
                                 "pass output=/teacher_output= naming values of the same shape")
            checked.append(True)
        c = out.shape[-1]
        if soft_loss == "kd":
            value, g = kd_loss(out.reshape(-1, c), t.reshape(-1, c), None, temperature, 1.0)
            value, g = alpha * value, alpha * g.reshape(out.shape)
        else:
            value, g = mse(out, t)
            value, g = alpha * value, alpha * g
        if hard is not None and alpha < 1.0:
            fn, targets, _ = hard
            hv, hg = fn(out, targets[idx])
            value += (1.0 - alpha) * hv
            g = g + (1.0 - alpha) * hg
        ref = out.argmax(-1) == t.argmax(-1)
        ok = int(ref.reshape(ref.shape[0], -1).all(axis=1).sum())
        return value, g.astype(out.dtype, copy=False), ok

    extra = [(p, "weight") for p in projections if p is not None]
    v_fn, _, v_correct = hard if hard is not None else _hard_loss(loss, validation[1], rows_of(
        _inputs(student, validation[0], "validation X"))) if validation is not None else (None, None, None)
    return fit(student, X, batch_loss, epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
               weight_decay=weight_decay, seed=seed, progress=progress, engine=engine, extra_params=extra,
               taps=taps, desc="distill", steps_per_epoch=steps_per_epoch, callback=callback,
               evaluate=_validation(engine, validation, v_fn, v_correct, n))

