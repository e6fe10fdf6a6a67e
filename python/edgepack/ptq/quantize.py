"""Post-training int8 quantization of a model's Linear and Conv2d layers."""

from __future__ import annotations

import copy
import types
from typing import Iterable

import numpy as np

from ..nn.base import Module
from ..nn.containers import Sequential
from ..nn.layers import GELU, Conv2d, Identity, Linear, ReLU, SiLU
from ..nn.quantized import QConv2d, QLinear
from .observers import METHODS, make_observer, sqnr_db
from .report import LayerReport, QuantizationReport

__all__ = ["quantize", "to_float"]

_CHUNK = 256          # rows per forward pass while calibrating (bounds activation memory)
_REPORT_ROWS = 1024   # rows of an array calibration set used for the report


def _fusable(m: Module) -> str | None:
    """The linear_int8 activation name that reproduces layer ``m``, or None."""
    if type(m) is ReLU:
        return "relu"
    if type(m) is SiLU:
        return "silu"
    if type(m) is GELU:
        return "gelu" if m.approximate == "none" else "gelu_tanh"
    return None


def _batches(calibration) -> Iterable[np.ndarray]:
    """An array (split into chunks of rows) or an iterable of arrays -> float arrays."""
    if calibration is None:
        return
    if isinstance(calibration, np.ndarray):
        if calibration.ndim == 0 or calibration.shape[0] == 0:
            raise ValueError(f"calibration must have at least one row; got shape {calibration.shape}")
        for s in range(0, calibration.shape[0], _CHUNK):
            yield calibration[s:s + _CHUNK]
        return
    if isinstance(calibration, (str, bytes)) or not hasattr(calibration, "__iter__"):
        raise TypeError(f"calibration must be an array or an iterable of arrays; got {type(calibration).__name__}")
    for i, b in enumerate(calibration):
        b = np.asarray(b)
        if b.dtype.kind not in "fiu" or b.ndim == 0:
            raise TypeError(f"calibration batch {i} must be a numeric array with a batch axis; got {b.dtype} {b.shape}")
        yield b


def _report_batch(calibration, report_batch):
    if report_batch is not None:
        return np.asarray(report_batch)
    if isinstance(calibration, np.ndarray):
        return calibration[:_REPORT_ROWS]
    return None


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
             report_batch=None, accuracy=None, max_drop: float = 0.01) -> Module:
    """Post-training int8 quantization: a new model whose Linear and Conv2d layers run int8 kernels.

    A :class:`edgepack.nn.Graph` (e.g. from :func:`edgepack.from_onnx`) is quantized node by node:
    every Conv (1-D, 2-D), Gemm and MatMul with a constant weight gets per-channel int8 weights and
    runs the same int8 layers; ``skip`` then takes node names or op types, ``calibration`` may be a
    dict of arrays (or an iterable of dicts) for graphs with several inputs, and ``accuracy`` /
    ``max_drop`` select the accuracy-aware mode (see
    :func:`edgepack.graph.passes.quantize.quantize_graph`).

    Parameters
    ----------
    model : edgepack.nn.Module
        A float model (left untouched; the result is a deep copy with its layers replaced).
    calibration : ndarray or iterable of ndarrays, optional
        Representative inputs, e.g. float32 (N, features) or (N, C, H, W); an array is processed
        in chunks of 256 rows, an iterable batch by batch, so memory stays bounded.  Required for
        ``activations="static"``; otherwise only used for the report (its first 1024 rows).
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

    Returns
    -------
    edgepack.nn.Module
        The quantized model; Linear -> :class:`~edgepack.nn.quantized.QLinear`, Conv2d ->
        :class:`~edgepack.nn.quantized.QConv2d` (a ReLU/GELU/SiLU right after one in a Sequential
        is fused into it and replaced by Identity); pruned float layers (SparseLinear,
        SparseConv2d from :func:`edgepack.prune`) get int8 values with per-row scales and run
        the int8 sparse kernel with dynamic activations, whatever ``activations`` says.  ``qmodel.report`` is a
        :class:`~edgepack.ptq.report.QuantizationReport`, also appended to ``qmodel.summary()``.

    Raises
    ------
    ValueError
        Bad option values; static without calibration data; unknown layer names in ``skip``.
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
                              report_batch=report_batch, accuracy=accuracy, max_drop=max_drop)
    if accuracy is not None:
        raise ValueError("accuracy= (the accuracy-aware mode) works on graphs; convert the model with "
                         "edgepack.from_onnx or quantize it with keep_float_below_db")

    qmodel = copy.deepcopy(model)
    qmodel.eval()
    modules = dict(qmodel.named_modules())
    names = list(modules)
    skip_names, skip_classes = _skip_matcher(skip, names)

    def skipped(name: str) -> bool:
        if any(name == s or name.startswith(s + ".") for s in skip_names):
            return True
        if skip_classes:
            parts = name.split(".") if name else []
            for k in range(len(parts) + 1):
                if isinstance(modules[".".join(parts[:k])], skip_classes):
                    return True
        return False

    targets = [n for n, m in modules.items() if type(m) in (Linear, Conv2d)]

    # Following activation for fusion: only inside a Sequential (call order is child order).
    fuse: dict[str, tuple[str, str]] = {}
    for n in targets:
        parent, _, child = n.rpartition(".")
        pm = modules.get(parent) if n else None
        if isinstance(pm, Sequential) and child.isdigit() and int(child) + 1 < len(pm.layers):
            act = _fusable(pm.layers[int(child) + 1])
            if act is not None:
                fuse[n] = (act, f"{parent}.{int(child) + 1}" if parent else str(int(child) + 1))

    # -- calibration: observe every target's input on the float model ---------------------------
    observers = {}
    if activations == "static":
        observers = {n: make_observer(method, percentile) for n in targets if not skipped(n)}
        def observe(o):
            def hook(m, x, y):  # returns None: a hook's return value would replace y
                o.update(x)
            return hook

        hooks = [modules[n].register_forward_hook(observe(o)) for n, o in observers.items()]
        seen = 0
        first = None
        try:
            for b in _batches(calibration):
                if first is None:
                    first = b
                qmodel(b)
                seen += 1
        finally:
            for h in hooks:
                h.remove()
        if seen == 0:
            raise ValueError("calibration is empty: static activations need at least one batch")
        xr = _report_batch(calibration, report_batch)
        if xr is None:
            xr = first
    else:
        xr = _report_batch(calibration, report_batch)
        if xr is None and calibration is not None:
            xr = next(iter(_batches(calibration)), None)
    if keep_float_below_db is not None and xr is None:
        raise ValueError("keep_float_below_db needs data to measure SQNR: pass calibration= or report_batch=")

    # -- float reference on the report batch ----------------------------------------------------
    f_in: dict[str, np.ndarray] = {}
    f_out: dict[str, np.ndarray] = {}
    f_final = None
    if xr is not None:
        def grab(name):
            def hook(m, x, y):
                f_in[name] = np.asarray(x)
                f_out[name] = y
            return hook

        hooks = [modules[n].register_forward_hook(grab(n)) for n in targets]
        act_hooks = [modules[an].register_forward_hook(lambda m, x, y, n=n: f_out.__setitem__(n, y))
                     for n, (_, an) in fuse.items()]
        try:
            f_final = qmodel(xr)
        finally:
            for h in hooks + act_hooks:
                h.remove()

    # -- build the int8 layers and decide which stay float --------------------------------------
    rows: list[LayerReport] = []
    replace: dict[str, Module] = {}
    for n in targets:
        fl = modules[n]
        before = fl.nbytes()
        if skipped(n):
            rows.append(LayerReport(n, type(fl).__name__, "float (skip)", None, None, before, before, ""))
            continue
        kw = {"weights": weights, "activations": activations, "activation": fuse.get(n, (None,))[0]}
        if activations == "static":
            s, z = observers[n].qparams()
            kw.update(x_scale=s, x_zero_point=z)
        ql = (QLinear if type(fl) is Linear else QConv2d).from_float(fl, **kw)
        sq = None
        if n in f_in:
            sq = sqnr_db(f_out[n], ql(f_in[n]))
        status = "int8"
        if keep_float_below_db is not None and sq is not None and sq < keep_float_below_db:
            status = "float (sqnr)"
        row = LayerReport(n, type(fl).__name__, status, sq, None, before,
                          ql.nbytes() if status == "int8" else before, "",
                          kw.get("x_scale"), kw.get("x_zero_point"))
        rows.append(row)
        if status == "int8":
            replace[n] = ql

    # -- install ----------------------------------------------------------------------------------
    for n, ql in replace.items():
        if n == "":
            qmodel = ql
            continue
        parent, _, child = n.rpartition(".")
        modules[parent].set_child(child, ql)
        if n in fuse:
            ap, _, ac = fuse[n][1].rpartition(".")
            modules[ap].set_child(ac, Identity())

    # Pruned layers (edgepack.prune's SparseLinear/SparseConv2d) get int8 values too: per-row
    # weight scales, dynamic activations, the int8 sparse kernel.
    from ..nn.sparse import SparseConv2d, SparseLinear

    for n, m in list(qmodel.named_modules()):
        if type(m) in (SparseLinear, SparseConv2d) and m.dtype == "float32" and not skipped(n):
            qm = m.to_int8()
            rows.append(LayerReport(n, type(m).__name__, "int8 sparse", None, None, m.nbytes(), qm.nbytes(), ""))
            if n == "":
                qmodel = qm
            else:
                parent, _, child = n.rpartition(".")
                dict(qmodel.named_modules())[parent].set_child(child, qm)

    # -- cumulative SQNR on the quantized model ---------------------------------------------------
    output_sqnr = None
    if xr is not None:
        qmods = dict(qmodel.named_modules())
        q_out: dict[str, np.ndarray] = {}
        hooks = [qmods[n].register_forward_hook(lambda m, x, y, n=n: q_out.__setitem__(n, y))
                 for n in targets if n in qmods]
        try:
            q_final = qmodel(xr)
        finally:
            for h in hooks:
                h.remove()
        for r in rows:
            if r.name in q_out and r.name in f_out:
                # A kept-float layer's float reference is its pre-activation output, as in qmodel.
                ref = f_out[r.name]
                if r.status != "int8" and r.name in fuse:
                    ref = modules[r.name](f_in[r.name])
                r.cumulative_sqnr_db = sqnr_db(ref, q_out[r.name])
        output_sqnr = sqnr_db(f_final, q_final)

    qmods = dict(qmodel.named_modules())
    for r in rows:
        m = qmods.get(r.name)
        if m is not None:
            r.kernel = m.kernel_path()

    report = QuantizationReport(
        layers=rows,
        settings={"weights": weights, "activations": activations, "method": method,
                  "percentile": percentile, "keep_float_below_db": keep_float_below_db,
                  "skip": [s if isinstance(s, str) else s.__name__ for s in
                           ((skip,) if isinstance(skip, (str, type)) else tuple(skip))]},
        output_sqnr_db=output_sqnr,
        batch_rows=0 if xr is None else int(np.shape(xr)[0]) if np.ndim(xr) else 0,
    )
    _attach_report(qmodel, report)
    return qmodel


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
