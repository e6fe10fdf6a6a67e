"""The training loop shared by :func:`edgepack.train` and :func:`edgepack.distill`."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from ..nn.layers import _pos_int
from . import autograd
from .losses import cross_entropy, mse
from .optim import make_optimizer

__all__ = ["train", "fit"]

LOSSES = {"cross_entropy": cross_entropy, "mse": mse}


def _pos_float(v, name: str, allow_zero: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not np.isfinite(v) \
            or v < 0 or (v == 0 and not allow_zero):
        what = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise ValueError(f"{name} must be {what}; got {v!r}")
    return float(v)


def as_inputs(X, name: str = "X") -> np.ndarray:
    """Float inputs as float32 (integer ids, for an Embedding first layer, are kept)."""
    if not isinstance(X, np.ndarray):
        try:
            X = np.asarray(X)
        except Exception:
            raise TypeError(f"{name} must be an array; got {type(X).__name__}") from None
    if X.ndim == 0 or X.shape[0] == 0:
        raise ValueError(f"{name} must have a non-empty batch axis; got shape {X.shape}")
    if X.dtype.kind == "f":
        return X.astype(np.float32, copy=False)
    if X.dtype.kind in "iu":
        return X
    raise TypeError(f"{name} must hold floats (or integer token ids); got {X.dtype}")


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress bars are an optional extra
        return None
    return tqdm(total=total, desc=desc, unit="epoch", leave=False)


class _LayerEngine:
    """How :func:`fit` drives an edgepack.nn layer model (graphs use
    :class:`edgepack.graph.train.GraphEngine`, which has the same methods)."""

    def __init__(self, model):
        autograd.supported(model)
        self.model = model

    def parameters(self):
        return autograd.parameters(self.model)

    def forward(self, x, ctx):
        return autograd.forward(self.model, x, ctx)

    def train(self):
        self.model.train()

    def eval(self):
        self.model.eval()


def rows_of(X) -> int:
    """Rows of an input array, or of a dict of input arrays (all the same)."""
    if isinstance(X, dict):
        return int(next(iter(X.values())).shape[0])
    return int(X.shape[0])


def take_rows(X, idx):
    if isinstance(X, dict):
        return {k: v[idx] for k, v in X.items()}
    return X[idx]


def fit(model, X: np.ndarray, batch_loss: Callable, *, epochs: int, batch_size: int, optimizer: str,
        lr: float, weight_decay: float, seed, progress: bool, evaluate: Callable | None = None,
        extra_params=(), taps: Callable | None = None, desc: str = "train", engine=None,
        steps_per_epoch: int | None = None, callback: Callable | None = None) -> dict:
    """Mini-batch gradient descent over ``model`` (and ``extra_params``).

    ``batch_loss(idx, out, ctx) -> (loss, grad_out, correct or None)`` scores one batch;
    ``taps(idx, ctx)`` may return ``{id(module): fn(y) -> extra grad}`` for hidden-state losses
    (a tap adds the gradients of its own parameters with ``ctx.add``; for a graph the keys are
    value names); ``evaluate()`` returns a dict of validation figures added to the history each
    epoch.  ``engine`` drives the model (default: the layer autograd); ``X`` may be a dict of
    input arrays.  ``steps_per_epoch`` caps the batches of an epoch; ``callback(step, loss)`` is
    called after every optimizer step.
    """
    eng = engine if engine is not None else _LayerEngine(model)
    params = eng.parameters() + list(extra_params)
    opt = make_optimizer(optimizer, params, lr, weight_decay)
    rng = np.random.default_rng(seed)
    n = rows_of(X)
    hist: dict[str, list] = {"loss": [], "accuracy": [], "time": []}
    bar = _progress(epochs, desc, progress)
    eng.train()
    step = 0
    try:
        for _ in range(epochs):
            t0 = time.perf_counter()
            order = rng.permutation(n)
            tot, correct, scored, seen = 0.0, 0, 0, 0
            starts = range(0, n, batch_size)
            if steps_per_epoch is not None:
                starts = list(starts)[:steps_per_epoch]
            for s in starts:
                idx = order[s:s + batch_size]
                ctx = autograd.Context(rng)
                if taps is not None:
                    ctx.taps = taps(idx, ctx)
                out, back = eng.forward(take_rows(X, idx), ctx)
                loss, g, ok = batch_loss(idx, out, ctx)
                if not np.isfinite(loss):
                    raise FloatingPointError(f"the loss became {loss} (lower lr, or check the inputs)")
                back(g.astype(out.dtype, copy=False))
                opt.step(ctx.grads)
                tot += loss * len(idx)
                seen += len(idx)
                step += 1
                if callback is not None:
                    callback(step, loss)
                if ok is not None:
                    correct += ok
                    scored += len(idx)
            hist["loss"].append(tot / max(seen, 1))
            hist["accuracy"].append(correct / scored if scored else None)
            if evaluate is not None:
                eng.eval()
                for k, v in evaluate().items():
                    hist.setdefault(k, []).append(v)
                eng.train()
            hist["time"].append(time.perf_counter() - t0)
            if bar is not None:
                post = {"loss": f"{hist['loss'][-1]:.4f}"}
                if hist["accuracy"][-1] is not None:
                    post["acc"] = f"{hist['accuracy'][-1]:.3f}"
                if hist.get("val_accuracy") and hist["val_accuracy"][-1] is not None:
                    post["val_acc"] = f"{hist['val_accuracy'][-1]:.3f}"
                bar.set_postfix(post)
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        eng.eval()
    if all(a is None for a in hist["accuracy"]):
        del hist["accuracy"]
    return hist


def wrap_user_loss(loss: Callable) -> Callable:
    """A user loss ``loss(output, target) -> (value, grad)`` with its result checked."""
    def user(out, target):
        r = loss(out, target)
        if not (isinstance(r, tuple) and len(r) == 2):
            raise TypeError("a callable loss must return (value, gradient with respect to the output)")
        v, g = r
        g = np.asarray(g)
        if g.shape != out.shape:
            raise ValueError(f"the loss gradient must have the output's shape {out.shape}; got {g.shape}")
        return float(v), g
    return user


def _resolve_loss(loss):
    if callable(loss):
        return wrap_user_loss(loss), False
    if loss not in LOSSES:
        raise ValueError(f"loss must be 'cross_entropy', 'mse' or a callable; got {loss!r}")
    return LOSSES[loss], loss == "cross_entropy"


def _targets(y, n: int, classification: bool, name: str = "y") -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 0 or y.shape[0] != n:
        raise ValueError(f"{name} must have one target per row of X ({n}); got shape {y.shape}")
    if classification:
        if y.ndim == 1:
            if y.dtype.kind not in "iu":
                raise TypeError(f"{name} must hold integer class labels for loss='cross_entropy'; got {y.dtype}")
            if y.min() < 0:
                raise ValueError(f"{name} class labels must be >= 0; got {y.min()}")
            return y.astype(np.int64, copy=False)
        if y.ndim == 2 and y.dtype.kind == "f":
            return y.astype(np.float32, copy=False)
        raise ValueError(f"{name} must be class labels (N,) or probabilities (N, C); got {y.dtype} {y.shape}")
    return y.astype(np.float32, copy=False) if y.dtype.kind == "f" else y


def _check_classes(out: np.ndarray, y: np.ndarray, name: str = "y") -> None:
    if y.ndim == 1 and (out.ndim != 2 or y.max() >= out.shape[-1]):
        raise ValueError(f"{name} has class label {int(y.max())} but the model outputs shape {out.shape[1:]}")
    if y.ndim == 2 and out.shape != y.shape:
        raise ValueError(f"{name} probabilities have shape {y.shape[1:]} but the model outputs {out.shape[1:]}")


def validation_eval(model, validation, loss_fn, classification: bool) -> Callable | None:
    if validation is None:
        return None
    if not (isinstance(validation, (tuple, list)) and len(validation) == 2):
        raise TypeError("validation must be a pair (X_val, y_val)")
    xv = as_inputs(validation[0], "validation X")
    yv = _targets(validation[1], xv.shape[0], classification, "validation y")

    def evaluate():
        out = np.asarray(model.predict(xv))
        if classification:
            _check_classes(out, yv, "validation y")
        loss, _ = loss_fn(out, yv)
        res = {"val_loss": loss}
        if classification and yv.ndim == 1:
            res["val_accuracy"] = float((out.argmax(-1) == yv).mean())
        return res
    return evaluate


def train(model, X, y, *, loss="cross_entropy", epochs: int = 10, batch_size: int = 64, optimizer: str = "adam",
          lr: float = 1e-3, weight_decay: float = 0.0, validation=None, seed=None, progress: bool = True,
          **graph_kw) -> dict:
    """Train ``model`` in place by mini-batch gradient descent (NumPy reverse-mode autograd).

    A graph (:class:`edgepack.nn.Graph`) is trained by :func:`edgepack.graph.train.train_graph`
    (losses on the logits before a final Softmax, ``loss="ctc"`` for sequence recognizers, and
    the graph-only keywords ``output``, ``trainable``, ``masks``, ``batchnorm``,
    ``steps_per_epoch``, ``callback``).

    Parameters
    ----------
    model : edgepack.nn.Module
        Built from Linear, Conv2d, MaxPool2d/AvgPool2d/GlobalAvgPool2d, Flatten/Reshape, LayerNorm,
        BatchNorm (batch statistics while training), Embedding, ReLU/GELU/SiLU/Tanh/Sigmoid/Softmax,
        Dropout, Identity, Sequential and Residual; any other layer raises ``TypeError``.  A layer
        carrying ``weight_mask`` (set by :func:`edgepack.prune` during fine-tuning) keeps its
        masked weights at exactly zero.
    X : ndarray (N, ...)
        Inputs; float (cast to float32) or integer token ids for an Embedding first layer.
    y : ndarray
        ``loss="cross_entropy"``: int class labels (N,) or target probabilities (N, C), the model
        giving logits (N, C).  ``loss="mse"``: float targets of the output's shape.
    loss : "cross_entropy", "mse" or callable
        A callable ``loss(output, target) -> (value, d value / d output)`` (mean over the batch).
    epochs, batch_size : int
    optimizer : "adam" or "sgd"
        Adam (weight decay decoupled, AdamW) or SGD with momentum 0.9 (L2 decay).
    lr : float
        Learning rate.
    weight_decay : float
        Applied to weight matrices and kernels, not to biases or normalisation parameters.
    validation : (X_val, y_val), optional
        Scored after every epoch (``val_loss``, and ``val_accuracy`` for class labels).
    seed : int, optional
        Seeds shuffling and dropout: the same seed and initial weights give bit-identical results.
    progress : bool
        Show a tqdm bar (loss, accuracy, validation accuracy) when tqdm is installed.

    Returns
    -------
    dict
        Per-epoch lists: ``loss`` (training, mean over samples), ``accuracy`` (classification),
        ``val_loss``/``val_accuracy`` (with ``validation``), ``time`` (seconds).  The model is
        left in eval mode.
    """
    from ..graph.ir import Graph
    from ..nn.base import Module

    if isinstance(model, Graph):
        from ..graph.train import train_graph

        return train_graph(model, X, y, loss=loss, epochs=epochs, batch_size=batch_size, optimizer=optimizer,
                           lr=lr, weight_decay=weight_decay, validation=validation, seed=seed, progress=progress,
                           **graph_kw)
    if graph_kw:
        raise TypeError(f"train() got unexpected keyword arguments {sorted(graph_kw)} (they apply to graphs)")
    if not isinstance(model, Module):
        raise TypeError(f"model must be an edgepack.nn Module; got {type(model).__name__}")
    X = as_inputs(X)
    loss_fn, classification = _resolve_loss(loss)
    Y = _targets(y, X.shape[0], classification)
    epochs = _pos_int(epochs, "epochs")
    batch_size = _pos_int(batch_size, "batch_size")
    lr = _pos_float(lr, "lr")
    weight_decay = _pos_float(weight_decay, "weight_decay", allow_zero=True)
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd'; got {optimizer!r}")
    checked = []

    def batch_loss(idx, out, ctx):
        t = Y[idx]
        if classification and not checked:
            _check_classes(out, Y)
            checked.append(True)
        value, g = loss_fn(out, t)
        ok = int((out.argmax(-1) == t).sum()) if classification and t.ndim == 1 else None
        return value, g, ok

    return fit(model, X, batch_loss, epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
               weight_decay=weight_decay, seed=seed, progress=progress,
               evaluate=validation_eval(model, validation, loss_fn, classification))
