"""Post-training int8 quantization of a model's Linear and Conv2d layers (and Conv/Gemm/MatMul
nodes of a graph).

There is one implementation, :mod:`edgepack.graph.passes.quantize`: a module tree is lowered to a
graph (:func:`edgepack.graph.from_module`), quantized there, and written back into a copy of the
tree (:func:`edgepack.graph.to_module`), so hand-built and imported models share calibration,
conversion and the report.  This module checks the arguments, translates module-tree options
(``skip`` by dotted name or class) and keeps :func:`to_float`.
"""

from __future__ import annotations

import copy
import types

import numpy as np

from ..nn.base import Module
from ..nn.containers import Sequential
from ..nn.layers import GELU, Conv2d, Identity, Linear, ReLU, SiLU
from ..nn.quantized import QConv2d, QLinear
from .observers import METHODS
from .report import QuantizationReport

__all__ = ["quantize", "to_float"]

_CHUNK = 256          # rows per forward pass while calibrating (bounds activation memory)
_REPORT_ROWS = 1024   # rows of an array calibration set used for the report


def _skip_matcher(skip, names: list[str]):
    if isinstance(skip, (str, type)):
        skip = (skip,)
    try:
        items = tuple(skip)
    except TypeError:
        raise TypeError("skip must be a sequence of layer names or Module classes; "
                        f"got {type(skip).__name__}") from None
    strs, classes = [], []
    for s in items:
        if isinstance(s, str):
            if s not in names and not any(n.startswith(s + ".") for n in names):
                raise ValueError(f"skip: no layer named {s!r}; layer names are {[n for n in names if n][:30]}")
            strs.append(s)
        elif isinstance(s, type) and issubclass(s, Module):
            classes.append(s)
        else:
            raise TypeError(f"skip items must be layer names (str) or Module classes; got {s!r}")
    return strs, tuple(classes)


def quantize(model: Module, calibration=None, *, weights: str = "per_channel", activations: str = "dynamic",
             method: str = "minmax", percentile: float = 99.99, skip=(), keep_float_below_db: float | None = None,
             report_batch=None, accuracy=None, max_drop: float = 0.01, min_macs: int = 32768) -> Module:
    """Post-training int8 quantization: a new model whose Linear and Conv2d layers run int8 kernels.

    A :class:`edgepack.nn.Graph` (e.g. from :func:`edgepack.from_onnx`) is quantized node by node:
    every Conv (1-D, 2-D), Gemm and MatMul with a constant weight gets per-channel int8 weights and
    runs the same int8 layers; ``skip`` then takes node names or op types, and ``calibration`` may
    be a dict of arrays (or an iterable of dicts) for graphs with several inputs.  A module tree
    goes through the same passes (lowered with :func:`edgepack.graph.from_module`, written back
    with :func:`edgepack.graph.to_module`).

    Parameters
    ----------
    model : edgepack.nn.Module
        A float model (left untouched; the result is a deep copy with its layers replaced).
    calibration : ndarray or iterable of ndarrays, optional
        Representative inputs, e.g. float32 (N, features) or (N, C, H, W); an array is processed
        in chunks of 256 rows (64 for a graph), an iterable batch by batch, so memory stays
        bounded.  Required for ``activations="static"``; otherwise only used for the report (the
        first 1024 rows of an array, 256 for a graph; an iterable's first batch).
    weights : "per_channel" or "per_tensor"
        Symmetric int8 weights in [-127, 127]: one scale per output channel or one per layer.
    activations : "dynamic" or "static"
        Dynamic: each input row gets its own scale at run time (no calibration needed).
        Static: each layer's input gets one uint8 scale and zero point from the calibration data.
    method : "minmax", "percentile", "entropy" or "mse"
        How static ranges are chosen (see :mod:`edgepack.ptq.observers`).
    percentile : float
        For ``method="percentile"``: the range spans the (100 - p)-th to p-th percentile.
    skip : sequence of str or Module classes
        Layers to keep float: dotted names (a container's name covers everything inside it) or
        classes (layers of that class, or inside a module of that class).
    keep_float_below_db : float, optional
        Keep a layer float when its own int8 output SQNR against float (on the report batch) is
        below this many dB.  Needs ``calibration`` or ``report_batch``.
    report_batch : ndarray, optional
        Inputs for the report's SQNR figures (default: the calibration data).
    accuracy : (metric, X, y) or callable, optional
        The accuracy-aware mode: ``metric(outputs, y) -> float`` (higher is better) on the
        model's output for ``X``, or ``score(model) -> float`` (a module tree gets the candidate
        as a module tree, a graph as a graph).  When the all-int8 model scores more than
        ``max_drop`` below float, the layers whose float version helps most are kept float, one
        at a time, until it does not (see :func:`edgepack.graph.passes.quantize.quantize_graph`).
    min_macs : int
        Graphs only: Conv/Gemm/MatMul nodes with fewer multiply-adds per sample than this (on the
        first calibration batch) stay float, reported as "float (small)" (0: quantize all).
    max_drop : float
        The score drop the accuracy-aware mode accepts.

    Returns
    -------
    edgepack.nn.Module
        The quantized model; Linear -> :class:`~edgepack.nn.quantized.QLinear`, Conv2d ->
        :class:`~edgepack.nn.quantized.QConv2d` (a ReLU/GELU/SiLU right after one is fused into
        it and replaced by Identity, as is a BatchNorm right after a Conv2d, folded into its
        weights); pruned float layers (SparseLinear, SparseConv2d from :func:`edgepack.prune`)
        get int8 values with per-row scales and run the int8 sparse kernel with dynamic
        activations, whatever ``activations`` says.  ``qmodel.report`` is a
        :class:`~edgepack.ptq.report.QuantizationReport`, also appended to ``qmodel.summary()``.

    Raises
    ------
    ValueError
        Bad option values; static without calibration data; unknown layer names in ``skip``; a
        layer :func:`edgepack.graph.from_module` cannot lower (the message names it).
    TypeError
        ``model`` is not a Module; bad ``calibration`` or ``skip`` types.
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be an edgepack.nn Module; got {type(model).__name__}")
    if weights not in ("per_channel", "per_tensor"):
        raise ValueError(f"weights must be 'per_channel' or 'per_tensor'; got {weights!r}")
    if activations not in ("dynamic", "static"):
        raise ValueError(f"activations must be 'dynamic' or 'static'; got {activations!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(repr(m) for m in METHODS)}; got {method!r}")
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 50 < percentile <= 100:
        raise ValueError(f"percentile must be a number in (50, 100]; got {percentile!r}")
    if keep_float_below_db is not None and (isinstance(keep_float_below_db, bool)
                                            or not isinstance(keep_float_below_db, (int, float))):
        raise TypeError(f"keep_float_below_db must be a number of dB or None; got {keep_float_below_db!r}")
    if activations == "static" and calibration is None:
        raise ValueError("activations='static' needs calibration data (an array or an iterable of arrays); "
                         "use activations='dynamic' to quantize without it")

    from ..graph.ir import Graph

    if isinstance(model, Graph):
        from ..graph.passes.quantize import quantize_graph

        return quantize_graph(model, calibration, weights=weights, activations=activations, method=method,
                              percentile=percentile, skip=skip, keep_float_below_db=keep_float_below_db,
                              report_batch=report_batch, accuracy=accuracy, max_drop=max_drop,
                              min_macs=min_macs)
    return _quantize_module(model, calibration, weights=weights, activations=activations, method=method,
                            percentile=percentile, skip=skip, keep_float_below_db=keep_float_below_db,
                            report_batch=report_batch, accuracy=accuracy, max_drop=max_drop)


def _quantize_module(model: Module, calibration, *, weights, activations, method, percentile, skip,
                     keep_float_below_db, report_batch, accuracy, max_drop) -> Module:
    """quantize() for a module tree: lower, run the graph passes, write back."""
    from ..graph.lower import from_module, to_module
    from ..graph.passes.calibrate import peek
    from ..graph.passes.quantize import prepare, run_quantize

    work = copy.deepcopy(model)
    work.eval()
    modules = dict(work.named_modules())
    skip_names, skip_classes = _skip_matcher(skip, list(modules))

    def skipped(name: str) -> bool:
        if any(name == s or name.startswith(s + ".") for s in skip_names):
            return True
        if skip_classes:
            parts = name.split(".") if name else []
            for k in range(len(parts) + 1):
                m = modules.get(".".join(parts[:k]))
                if m is not None and isinstance(m, skip_classes):
                    return True
        return False

    # The input's rank (a batch of the data) lets Linear layers on 2-D inputs lower to Gemm.
    first, calibration = peek(calibration)
    sample = report_batch if report_batch is not None else first
    rank = np.ndim(sample) if sample is not None and not isinstance(sample, dict) else None
    lowered = from_module(work, input_rank=rank or None)
    if lowered.inputs[0]["dtype"] == "float32":
        calibration = _float_batches(calibration, "calibration")
        if report_batch is not None:
            report_batch = _float_batches(np.asarray(report_batch), "report_batch")
    g, targets = prepare(lowered)
    r = run_quantize(g, targets, {t.index for t in targets if skipped(t.name)}, weights=weights,
                     activations=activations, method=method, percentile=percentile,
                     keep_float_below_db=keep_float_below_db, calibration=calibration, report_batch=report_batch,
                     accuracy=accuracy, max_drop=max_drop, chunk=_CHUNK, report_rows=_REPORT_ROWS,
                     wrap=lambda gr: to_module(gr, like=work))
    qmodel = to_module(r.graph, like=work)

    # Rows name the layers as the module tree does: class and kernel of the layer at that path.
    qmods = dict(qmodel.named_modules())
    for row in r.rows:
        if row.name in modules:
            row.layer = type(modules[row.name]).__name__
        m = qmods.get(row.name)
        if m is not None:
            row.kernel = m.kernel_path()
    settings = {"weights": weights, "activations": activations, "method": method, "percentile": percentile,
                "keep_float_below_db": keep_float_below_db,
                "skip": [s if isinstance(s, str) else s.__name__ for s in
                         ((skip,) if isinstance(skip, (str, type)) else tuple(skip))]}
    if accuracy is not None:
        settings.update(accuracy=r.notes or None, max_drop=max_drop)
    report = QuantizationReport(layers=r.rows, settings=settings, output_sqnr_db=r.output_sqnr_db,
                                batch_rows=r.batch_rows)
    _attach_report(qmodel, report)
    return qmodel


def _float_batches(data, what: str):
    """``data`` with every batch checked to be floating point (a float model's layers refuse
    integer input rather than cast it: token ids sent to a float layer are usually a bug)."""
    def check(b, where):
        kind = np.asarray(b).dtype.kind
        if kind != "f":
            raise TypeError(f"{where} must be a floating-point array for this model (its first layer takes "
                            f"float32; integer ids need a model that starts with an Embedding); "
                            f"got {np.asarray(b).dtype}")
        return b

    if data is None:
        return None
    if isinstance(data, np.ndarray):
        return check(data, what)
    if isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        return data      # the calibration step raises its TypeError
    return (check(b, f"{what} batch {i}") for i, b in enumerate(data))


def _summary_with_report(self, input_shape=None, *, print_fn=print, **kw) -> str:
    text = type(self).summary(self, input_shape, print_fn=None, **kw)
    rep = self.__dict__.get("report")
    if rep is not None:
        text += "\n\n" + str(rep)
    if print_fn is not None:
        print_fn(text)
    return text


def _attach_report(qmodel: Module, report: QuantizationReport) -> None:
    # The report belongs to this result object (it is not saved with the model); summary() shows
    # it under the layer table.  A bound method (not a closure) so deepcopy rebinds it.
    object.__setattr__(qmodel, "report", report)
    object.__setattr__(qmodel, "summary", types.MethodType(_summary_with_report, qmodel))


_FLOAT_ACT = {"relu": lambda: ReLU(), "silu": lambda: SiLU(), "gelu": lambda: GELU("none"),
              "gelu_tanh": lambda: GELU("tanh")}


def to_float(model: Module) -> Module:
    """The float counterpart of a quantized model: every QLinear/QConv2d back to Linear/Conv2d.

    Weights are the dequantized int8 weights (``weight_q * w_scale``), so the result computes
    what the int8 model approximates, with the float kernels; a fused activation is restored in
    the Identity slot :func:`quantize` left (or wrapped with the layer in a Sequential).  Used
    by ``edgepack bench`` to time an int8 file against float.

    Parameters
    ----------
    model : edgepack.nn.Module
        Any model (the input is not modified; float layers are copied unchanged).

    Returns
    -------
    edgepack.nn.Module
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be an edgepack.nn Module; got {type(model).__name__}")

    def floated(q: Module) -> Module:
        if isinstance(q, QLinear):
            return Linear.from_weights(q.dequantized_weight(), q.bias)
        return Conv2d.from_weights(q.dequantized_weight(), q.bias, q.stride, q.padding, q.dilation, q.groups)

    out = copy.deepcopy(model)
    if isinstance(out, (QLinear, QConv2d)):
        f = floated(out)
        return Sequential(f, _FLOAT_ACT[out.activation]()) if out.activation else f
    mods = dict(out.named_modules())
    for name, m in list(mods.items()):
        if not isinstance(m, (QLinear, QConv2d)):
            continue
        parent, _, child = name.rpartition(".")
        pm = mods[parent]
        f = floated(m)
        if m.activation:
            nxt = str(int(child) + 1) if child.isdigit() else None
            if isinstance(pm, Sequential) and nxt is not None and int(nxt) < len(pm.layers) \
                    and type(pm.layers[int(nxt)]) is Identity:
                pm.set_child(nxt, _FLOAT_ACT[m.activation]())
            else:
                f = Sequential(f, _FLOAT_ACT[m.activation]())
        pm.set_child(child, f)
    return out
