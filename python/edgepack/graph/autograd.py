"""Reverse-mode gradients over a :class:`~edgepack.graph.ir.Graph`'s nodes.

A :class:`GraphTape` binds a graph for training: every node is compiled with the same operator
makers as inference (so the forward values *are* the inference values, computed by the same
code), except that trainable parameters are passed at run time instead of being baked in, and
BatchNormalization (batch statistics) and Dropout (random mask) have training forwards.  A
forward records, for each node that depends on a trainable parameter (or on a value gradients
are asked for), what its backward rule needs; the backward walks the record in reverse and each
rule maps the output gradients to input gradients.

Shape subgraphs and integer ops are constants for training: their values never depend on a
parameter, so they run forward only.  Convolution weight and input gradients are GEMMs (NumPy's
BLAS, like the float forward): im2col columns times the output gradient, and the transposed
weight times the output gradient scattered back (col2im); depthwise convolutions loop over the
kernel taps like their forward.

``RULES`` maps an operator name to ``rule(nc, gys) -> [gradient per input]``; every rule is
checked against central finite differences in float64 (tests/test_graph_train.py).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from .ir import Graph
from .registry import fill_attrs, get_op

__all__ = ["GraphTape", "RULES", "default_trainable", "logits_value", "taylor_scores", "gradients"]

# Positions of each op's inputs that gradients flow through (others are shapes, indices, bounds).
_DIFF = {
    "Conv": (0, 1, 2), "ConvTranspose": (0, 1, 2), "Gemm": (0, 1, 2), "MatMul": (0, 1),
    "BatchNormalization": (0, 1, 2), "InstanceNormalization": (0, 1, 2), "LayerNormalization": (0, 1, 2),
    "Add": (0, 1), "Sub": (0, 1), "Mul": (0, 1), "Div": (0, 1), "Pow": (0, 1), "PRelu": (0, 1),
    "Where": (1, 2), "Clip": (0,), "Reshape": (0,), "Slice": (0,), "Gather": (0,), "Expand": (0,), "Tile": (0,),
    "Pad": (0,), "Resize": (0,), "Upsample": (0,), "Split": (0,), "Squeeze": (0,), "Unsqueeze": (0,),
    "GatherElements": (0,), "ReduceMean": (0,), "ReduceSum": (0,), "ReduceMax": (0,), "ReduceMin": (0,),
    "ReduceSumSquare": (0,), "ReduceL2": (0,),
}
_VARIADIC = {"Concat", "Sum", "Mean", "Max", "Min"}

# Ops whose inputs/outputs need not be kept for the backward (only shapes/dtypes): saves memory
# on the long elementwise chains of mobile networks.
_NO_KEEP_IN = {"Add", "Sub", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Split", "Sum",
               "Mean", "Identity", "Cast", "GlobalAveragePool", "Relu", "Sigmoid", "Tanh", "Exp", "Sqrt",
               "Reciprocal", "Softmax", "LogSoftmax", "Neg", "Dropout", "Slice", "Gather", "Expand", "Tile",
               "Pad", "ReduceMean", "ReduceSum", "Resize", "Upsample"}
_KEEP_OUT = {"Relu", "Sigmoid", "Tanh", "Exp", "Sqrt", "Reciprocal", "Softmax", "LogSoftmax", "Elu", "Selu",
             "Celu", "MaxPool", "GlobalMaxPool", "ReduceMax", "ReduceMin", "ReduceL2", "Max", "Min", "Pow"}


@dataclasses.dataclass
class NodeCtx:
    """What a backward rule sees: the node (attributes filled), inputs/outputs (kept ones; None
    otherwise), their shapes and dtypes, which inputs need a gradient, the compiled forward, the
    graph's opset, and what a training forward saved."""

    node: object
    ins: list
    outs: list
    in_shapes: list
    in_dtypes: list
    need: list
    fwd: Callable
    opset: int
    saved: dict
    cache: dict = dataclasses.field(default_factory=dict)    # per node, kept across steps
    out_shapes: list = dataclasses.field(default_factory=list)


RULES: dict[str, Callable] = {}
TRAIN_FORWARD: dict[str, Callable] = {}


def _rule(*names):
    def deco(fn):
        for n in names:
            RULES[n] = fn
        return fn
    return deco


def _unbroadcast(g: np.ndarray, shape) -> np.ndarray:
    """Sum ``g`` down to ``shape`` (the adjoint of NumPy broadcasting)."""
    shape = tuple(shape)
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    if lead:
        g = g.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, (a, b) in enumerate(zip(g.shape, shape)) if b == 1 and a != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


def _dt(nc, i):
    return nc.in_dtypes[i]


# -- elementwise --------------------------------------------------------------------------------------

@_rule("Add")
def _add(nc, gys):
    g = gys[0]
    return [_unbroadcast(g, s) if need else None for need, s in zip(nc.need, nc.in_shapes)]


@_rule("Sub")
def _sub(nc, gys):
    g = gys[0]
    return [_unbroadcast(g, nc.in_shapes[0]) if nc.need[0] else None,
            _unbroadcast(-g, nc.in_shapes[1]) if nc.need[1] else None]


@_rule("Mul")
def _mul(nc, gys):
    g = gys[0]
    a, b = nc.ins
    return [_unbroadcast(g * b, nc.in_shapes[0]) if nc.need[0] else None,
            _unbroadcast(g * a, nc.in_shapes[1]) if nc.need[1] else None]


@_rule("Div")
def _div(nc, gys):
    g = gys[0]
    a, b = nc.ins
    ga = g / b
    return [_unbroadcast(ga, nc.in_shapes[0]) if nc.need[0] else None,
            _unbroadcast(-ga * a / b, nc.in_shapes[1]) if nc.need[1] else None]


@_rule("Pow")
def _pow(nc, gys):
    g = gys[0]
    a, b = nc.ins
    y = nc.outs[0]
    out = [None, None]
    if nc.need[0]:
        if np.size(b) == 1 and float(np.asarray(b).reshape(-1)[0]) == 2.0:
            out[0] = _unbroadcast(2.0 * g * a, nc.in_shapes[0])
        else:
            out[0] = _unbroadcast(g * b * np.power(a, b - 1), nc.in_shapes[0])
    if nc.need[1]:
        with np.errstate(divide="ignore", invalid="ignore"):
            out[1] = _unbroadcast(np.where(a > 0, g * y * np.log(np.where(a > 0, a, 1)), 0), nc.in_shapes[1])
    return out


@_rule("Sum")
def _sum(nc, gys):
    return [_unbroadcast(gys[0], s) if need else None for need, s in zip(nc.need, nc.in_shapes)]


@_rule("Mean")
def _mean(nc, gys):
    k = len(nc.in_shapes)
    return [_unbroadcast(gys[0] / k, s) if need else None for need, s in zip(nc.need, nc.in_shapes)]


@_rule("Max", "Min")
def _maxmin(nc, gys):
    y = nc.outs[0]
    taken = np.zeros(y.shape, bool)
    out = []
    for need, x, s in zip(nc.need, nc.ins, nc.in_shapes):
        hit = (np.broadcast_to(x, y.shape) == y) & ~taken      # ties: the first input wins
        taken |= hit
        out.append(_unbroadcast(np.where(hit, gys[0], 0), s) if need else None)
    return out


@_rule("Where")
def _where(nc, gys):
    c = nc.ins[0]
    g = gys[0]
    return [None, _unbroadcast(np.where(c, g, 0), nc.in_shapes[1]) if nc.need[1] else None,
            _unbroadcast(np.where(c, 0, g), nc.in_shapes[2]) if nc.need[2] else None]


def _unary(fn):
    def rule(nc, gys):
        return [fn(nc, gys[0])] + [None] * (len(nc.in_shapes) - 1)
    return rule


RULES["Identity"] = _unary(lambda nc, g: g)
for _n in ("Floor", "Ceil", "Round", "Sign"):
    RULES[_n] = _unary(lambda nc, g: np.zeros_like(g))      # piecewise constant
RULES["Neg"] = _unary(lambda nc, g: -g)
RULES["Cast"] = _unary(lambda nc, g: g.astype(nc.in_dtypes[0]) if nc.in_dtypes[0].kind == "f" else None)
RULES["Relu"] = _unary(lambda nc, g: g * (nc.outs[0] > 0))
RULES["Sigmoid"] = _unary(lambda nc, g: g * nc.outs[0] * (1 - nc.outs[0]))
RULES["Tanh"] = _unary(lambda nc, g: g * (1 - nc.outs[0] * nc.outs[0]))
RULES["Exp"] = _unary(lambda nc, g: g * nc.outs[0])
RULES["Log"] = _unary(lambda nc, g: g / nc.ins[0])
RULES["Sqrt"] = _unary(lambda nc, g: g * 0.5 / nc.outs[0])
RULES["Reciprocal"] = _unary(lambda nc, g: -g * nc.outs[0] * nc.outs[0])
RULES["Abs"] = _unary(lambda nc, g: g * np.sign(nc.ins[0]))
RULES["Erf"] = _unary(lambda nc, g: g * (2.0 / np.sqrt(np.pi)) * np.exp(-nc.ins[0] * nc.ins[0]))
RULES["Sin"] = _unary(lambda nc, g: g * np.cos(nc.ins[0]))
RULES["Cos"] = _unary(lambda nc, g: -g * np.sin(nc.ins[0]))
RULES["Softsign"] = _unary(lambda nc, g: g / (1 + np.abs(nc.ins[0])) ** 2)
RULES["LeakyRelu"] = _unary(lambda nc, g: g * np.where(nc.ins[0] > 0, 1.0, float(nc.node.attrs["alpha"]))
                            .astype(g.dtype))
RULES["ThresholdedRelu"] = _unary(lambda nc, g: g * (nc.ins[0] > float(nc.node.attrs["alpha"])))


def _sig(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))      # overflow-free logistic


RULES["Softplus"] = _unary(lambda nc, g: g * _sig(nc.ins[0]))


@_rule("Elu")
def _elu(nc, gys):
    a = float(nc.node.attrs["alpha"])
    x, y = nc.ins[0], nc.outs[0]
    return [gys[0] * np.where(x > 0, 1.0, y + a).astype(gys[0].dtype)]


@_rule("Selu")
def _selu(nc, gys):
    a, gam = float(nc.node.attrs["alpha"]), float(nc.node.attrs["gamma"])
    x, y = nc.ins[0], nc.outs[0]
    return [gys[0] * np.where(x > 0, gam, y + gam * a).astype(gys[0].dtype)]


@_rule("Celu")
def _celu(nc, gys):
    a = float(nc.node.attrs["alpha"])
    x = nc.ins[0]
    return [gys[0] * np.where(x > 0, 1.0, np.exp(np.minimum(x, 0) / a)).astype(gys[0].dtype)]


@_rule("PRelu")
def _prelu(nc, gys):
    x, s = nc.ins
    g = gys[0]
    neg = x < 0
    return [g * np.where(neg, s, 1).astype(g.dtype) if nc.need[0] else None,
            _unbroadcast(np.where(neg, g * x, 0), nc.in_shapes[1]) if nc.need[1] else None]


def _clip_bounds(nc):
    a = nc.node.attrs
    if nc.opset < 11:
        return float(a.get("min", -np.inf)), float(a.get("max", np.inf))
    lo = nc.ins[1] if len(nc.ins) > 1 and nc.ins[1] is not None else -np.inf
    hi = nc.ins[2] if len(nc.ins) > 2 and nc.ins[2] is not None else np.inf
    return lo, hi


@_rule("Clip")
def _clip(nc, gys):
    lo, hi = _clip_bounds(nc)
    x = nc.ins[0]
    return [gys[0] * ((x > lo) & (x < hi))] + [None] * (len(nc.in_shapes) - 1)


@_rule("HardSigmoid")
def _hard_sigmoid(nc, gys):
    a, b = float(nc.node.attrs["alpha"]), float(nc.node.attrs["beta"])
    t = a * nc.ins[0] + b
    return [gys[0] * (a * ((t > 0) & (t < 1))).astype(gys[0].dtype)]


@_rule("HardSwish")
def _hard_swish(nc, gys):
    x = nc.ins[0]
    t = x / 6.0 + 0.5
    d = np.where(t <= 0, 0.0, np.where(t >= 1, 1.0, x / 3.0 + 0.5))
    return [gys[0] * d.astype(gys[0].dtype)]


@_rule("Gelu")
def _gelu(nc, gys):
    x = nc.ins[0]
    if nc.node.attrs.get("approximate", "none") == "tanh":
        c = np.sqrt(2.0 / np.pi)
        u = c * (x + 0.044715 * x ** 3)
        t = np.tanh(u)
        d = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x)
    else:
        from ..nn.functional import erf

        d = 0.5 * (1 + erf(x / np.sqrt(2.0))) + x * np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)
    return [gys[0] * d.astype(gys[0].dtype)]


@_rule("Mish")
def _mish(nc, gys):
    x = nc.ins[0]
    sp = np.logaddexp(0, x)
    t = np.tanh(sp)
    return [gys[0] * (t + x * (1 - t * t) * _sig(x)).astype(gys[0].dtype)]


@_rule("Swish")
def _swish(nc, gys):
    a = float(nc.node.attrs.get("alpha", 1.0))
    x = nc.ins[0]
    s = _sig(a * x)
    return [gys[0] * (s + a * x * s * (1 - s)).astype(gys[0].dtype)]


def _softmax_axis(nc, ndim):
    default = 1 if nc.opset < 13 else -1
    return int(nc.node.attrs.get("axis", default)) % ndim


def _coerced(nc, a):
    """Softmax before opset 13 works on the 2-D view [prod(shape[:axis]), prod(shape[axis:])]."""
    ax = _softmax_axis(nc, a.ndim)
    if nc.opset < 13:
        return a.reshape(int(np.prod(a.shape[:ax], dtype=np.int64)), -1), -1
    return a, ax


@_rule("Softmax")
def _softmax(nc, gys):
    y, ax = _coerced(nc, nc.outs[0])
    g, _ = _coerced(nc, gys[0])
    return [(y * (g - (g * y).sum(axis=ax, keepdims=True))).reshape(nc.in_shapes[0])]


@_rule("LogSoftmax")
def _log_softmax(nc, gys):
    y, ax = _coerced(nc, nc.outs[0])
    g, _ = _coerced(nc, gys[0])
    return [(g - np.exp(y) * g.sum(axis=ax, keepdims=True)).reshape(nc.in_shapes[0])]


@_rule("Dropout")
def _dropout(nc, gys):
    mask = nc.saved.get("mask")
    return [gys[0] if mask is None else gys[0] * mask] + [None] * (len(nc.in_shapes) - 1)


def _dropout_train(nc, inputs, rng):
    x = inputs[0]
    p = float(nc.node.attrs.get("ratio", 0.5)) if nc.opset < 12 else (
        float(np.asarray(inputs[1]).reshape(-1)[0]) if len(inputs) > 1 and inputs[1] is not None else 0.5)
    if p <= 0:
        return [x] + [None] * (len(nc.node.outputs) - 1)
    keep = (rng.random(x.shape) >= p)
    mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p))
    nc.saved["mask"] = mask
    return [x * mask] + ([keep] if len(nc.node.outputs) > 1 else [])


TRAIN_FORWARD["Dropout"] = _dropout_train


# -- shapes and data movement ---------------------------------------------------------------------------

@_rule("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def _reshape(nc, gys):
    return [gys[0].reshape(nc.in_shapes[0])] + [None] * (len(nc.in_shapes) - 1)


@_rule("Transpose")
def _transpose(nc, gys):
    perm = nc.node.attrs.get("perm") or list(range(len(nc.in_shapes[0]) - 1, -1, -1))
    return [gys[0].transpose(np.argsort(perm))]


@_rule("Concat")
def _concat(nc, gys):
    g = gys[0]
    ax = int(nc.node.attrs["axis"]) % g.ndim
    out, s = [], 0
    for need, shp in zip(nc.need, nc.in_shapes):
        e = s + shp[ax]
        out.append(np.take(g, np.arange(s, e), axis=ax) if need else None)
        s = e
    return out


@_rule("Split")
def _split(nc, gys):
    ax = int(nc.node.attrs.get("axis", 0)) % len(nc.in_shapes[0])
    parts = [g if g is not None else np.zeros(s, nc.in_dtypes[0]) for g, s in zip(gys, nc.saved["out_shapes"])]
    return [np.concatenate(parts, axis=ax)] + [None] * (len(nc.in_shapes) - 1)


def _index_adjoint(nc, gys):
    """Adjoint of a data-movement op (Slice, Gather, Expand, Tile, Pad edge/reflect, ...): run the
    same compiled op on the flat indices of the input and add each output gradient back."""
    x_shape = tuple(nc.in_shapes[0])
    size = int(np.prod(x_shape, dtype=np.int64))
    aux = list(nc.saved["aux"])
    small = sum(int(np.size(a)) for a in aux if a is not None) <= 4096
    key = (x_shape, tuple((a.dtype.str, a.shape, a.tobytes()) if isinstance(a, np.ndarray) else a
                          for a in aux)) if small else None
    idx = nc.cache.get(key) if key is not None else None
    if idx is None:
        base = np.arange(size, dtype=np.int64).reshape(x_shape)
        idx = np.asarray(nc.fwd(base, *aux)).reshape(-1)
        if key is not None:
            nc.cache.clear()
            nc.cache[key] = idx
    flat = np.bincount(idx, weights=gys[0].reshape(-1), minlength=size)
    return [flat.astype(gys[0].dtype, copy=False).reshape(x_shape)] + [None] * (len(nc.in_shapes) - 1)


for _n in ("Slice", "Gather", "Expand", "Tile", "GatherElements", "DepthToSpace", "SpaceToDepth"):
    RULES[_n] = _index_adjoint


@_rule("Pad")
def _pad(nc, gys):
    mode = nc.node.attrs.get("mode", "constant")
    if isinstance(mode, bytes):
        mode = mode.decode()
    if mode == "constant":
        # the output holds the input at an offset: slice it back out (pads may be negative: crop)
        g = gys[0]
        x_shape = nc.in_shapes[0]
        pads = nc.saved["pads"]
        nd = len(x_shape)
        sl = []
        pad_back = []
        for ax in range(nd):
            b, e = int(pads[ax]), int(pads[ax + nd])
            start = max(b, 0)
            stop = g.shape[ax] - max(e, 0)
            sl.append(slice(start, stop))
            pad_back.append((max(-b, 0), max(-e, 0)))
        gx = g[tuple(sl)]
        if any(p != (0, 0) for p in pad_back):
            gx = np.pad(gx, pad_back)
        return [gx] + [None] * (len(nc.in_shapes) - 1)
    return _index_adjoint(nc, gys)


def _pads_of(nc, inputs):
    nd = len(nc.in_shapes[0])
    if nc.opset < 11:
        pads = list(nc.node.attrs["pads"])
    else:
        pads = [int(v) for v in np.asarray(inputs[1]).reshape(-1)]
    if nc.opset >= 18 and len(inputs) > 3 and inputs[3] is not None:
        axes = [int(a) % nd for a in np.asarray(inputs[3]).reshape(-1)]
        full = [0] * (2 * nd)
        k = len(axes)
        for t, a in enumerate(axes):
            full[a], full[a + nd] = pads[t], pads[t + k]
        pads = full
    return pads


# -- reductions ---------------------------------------------------------------------------------------

def _reduce_axes(nc, nd):
    a = nc.node.attrs
    axes = a.get("axes")
    if axes is None and len(nc.saved.get("aux", ())) and nc.saved["aux"][0] is not None:
        axes = [int(v) for v in np.asarray(nc.saved["aux"][0]).reshape(-1)]
    if axes is None or (len(axes) == 0 and not a.get("noop_with_empty_axes", 0)):
        axes = list(range(nd))
    return sorted(int(v) % nd for v in axes)


def _expand_back(nc, g):
    nd = len(nc.in_shapes[0])
    axes = _reduce_axes(nc, nd)
    if not int(nc.node.attrs.get("keepdims", 1)):
        for ax in axes:
            g = np.expand_dims(g, ax)
    return g, axes


@_rule("ReduceSum")
def _reduce_sum(nc, gys):
    g, _ = _expand_back(nc, gys[0])
    return [np.broadcast_to(g, nc.in_shapes[0]).copy()] + [None] * (len(nc.in_shapes) - 1)


@_rule("ReduceMean")
def _reduce_mean(nc, gys):
    g, axes = _expand_back(nc, gys[0])
    n = int(np.prod([nc.in_shapes[0][a] for a in axes], dtype=np.int64)) if axes else 1
    return [np.broadcast_to(g / n, nc.in_shapes[0]).copy()] + [None] * (len(nc.in_shapes) - 1)


@_rule("ReduceSumSquare")
def _reduce_sum_square(nc, gys):
    g, _ = _expand_back(nc, gys[0])
    return [2.0 * g * nc.ins[0]] + [None] * (len(nc.in_shapes) - 1)


@_rule("ReduceL2")
def _reduce_l2(nc, gys):
    g, _ = _expand_back(nc, gys[0])
    y, _ = _expand_back(nc, nc.outs[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        return [np.where(y > 0, g * nc.ins[0] / y, 0)] + [None] * (len(nc.in_shapes) - 1)


@_rule("ReduceMax", "ReduceMin")
def _reduce_max(nc, gys):
    g, axes = _expand_back(nc, gys[0])
    y, _ = _expand_back(nc, nc.outs[0])
    hit = nc.ins[0] == y
    cnt = hit.sum(axis=tuple(axes), keepdims=True)
    return [np.where(hit, g / cnt, 0)] + [None] * (len(nc.in_shapes) - 1)


# -- linear algebra -------------------------------------------------------------------------------------

@_rule("MatMul")
def _matmul(nc, gys):
    a, b = nc.ins
    g = gys[0]
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    g2 = g
    if a.ndim == 1:
        g2 = np.expand_dims(g2, -2)
    if b.ndim == 1:
        g2 = np.expand_dims(g2, -1)
    out = [None, None]
    if nc.need[0]:
        ga = np.matmul(g2, np.swapaxes(b2, -1, -2))
        out[0] = _unbroadcast(ga.reshape(ga.shape[:-2] + (-1,)) if a.ndim == 1 else ga, a.shape) \
            if a.ndim != 1 else _unbroadcast(ga, (1,) + a.shape).reshape(a.shape)
    if nc.need[1]:
        if b.ndim == 2 and a2.ndim > 2:
            # weight gradient of x [..., K] @ W [K, N]: one GEMM over all leading rows
            gb = a2.reshape(-1, a2.shape[-1]).T @ g2.reshape(-1, g2.shape[-1])
        else:
            gb = np.matmul(np.swapaxes(a2, -1, -2), g2)
        out[1] = _unbroadcast(gb, b2.shape).reshape(b.shape)
    return out


@_rule("Gemm")
def _gemm(nc, gys):
    a, b = nc.ins[0], nc.ins[1]
    at = nc.node.attrs
    alpha, beta = float(at.get("alpha", 1.0)), float(at.get("beta", 1.0))
    ta, tb = int(at.get("transA", 0)), int(at.get("transB", 0))
    A = a.T if ta else a
    B = b.T if tb else b
    g = gys[0]
    out = [None, None, None]
    if nc.need[0]:
        gA = alpha * (g @ B.T)
        out[0] = gA.T if ta else gA
    if nc.need[1]:
        gB = alpha * (A.T @ g)
        out[1] = gB.T if tb else gB
    if len(nc.in_shapes) > 2 and nc.need[2]:
        out[2] = _unbroadcast(beta * g, nc.in_shapes[2])
    return out


# -- convolution -------------------------------------------------------------------------------------

def _conv_geometry(nc, x_shape, w_shape):
    from .ops.conv import _conv_pads, spatial_attrs

    nsp = len(w_shape) - 2
    strides, dil, pb, pe, auto = spatial_attrs(nc.node, nsp)
    pb, pe = _conv_pads(x_shape, w_shape[2:], strides, dil, pb, pe, auto)
    return nsp, strides, dil, pb, pe


def _as2d(nsp, x, strides, dil, pb, pe):
    """1-D convolutions run as 2-D with height 1."""
    if nsp == 1:
        return x[:, :, None, :], (1, strides[0]), (1, dil[0]), (0, pb[0], 0, pe[0])
    return x, tuple(strides), tuple(dil), (pb[0], pb[1], pe[0], pe[1])


def _taps(xp, kh, kw, sh, sw, dh, dw, oh, ow):
    for i in range(kh):
        for j in range(kw):
            yield i, j, (slice(None), slice(None), slice(i * dh, i * dh + sh * (oh - 1) + 1, sh),
                         slice(j * dw, j * dw + sw * (ow - 1) + 1, sw))


def _bias_grad(nc, g) -> list:
    """[None, None, dL/dB] of a (transposed) convolution: the output gradient summed per channel."""
    out = [None, None, None]
    if len(nc.in_shapes) > 2 and nc.need[2]:
        out[2] = g.sum(axis=(0,) + tuple(range(2, g.ndim))).reshape(nc.in_shapes[2])
    return out


@_rule("Conv")
def _conv(nc, gys):
    from ..nn import functional as F

    x, w = nc.ins[0], nc.ins[1]
    g = gys[0]
    group = int(nc.node.attrs.get("group", 1))
    nsp, strides, dil, pb, pe = _conv_geometry(nc, x.shape, w.shape)
    if nsp not in (1, 2):
        raise TypeError(f"{nc.node.label()}: training supports 1-D and 2-D convolutions; got {nsp}-D")
    out = _bias_grad(nc, g)
    if not (nc.need[0] or nc.need[1]):
        return out
    x4, st, dl, p4 = _as2d(nsp, x, strides, dil, pb, pe)
    w4 = w[:, :, None, :] if nsp == 1 else w
    g4 = g[:, :, None, :] if nsp == 1 else g
    n, c, h, wd = x4.shape
    m, cg, kh, kw = w4.shape
    oh, ow = g4.shape[2:]
    sh, sw = st
    dh, dw = dl
    xp = F._pad(x4, p4)
    gw = gx = None
    if cg == 1 and group == c and group > 1:            # depthwise (with depth multiplier)
        mult = m // c
        g5 = g4.reshape(n, c, mult, oh, ow)
        wr = w4.reshape(c, mult, kh, kw)
        if nc.need[1]:
            gw = np.empty((c, mult, kh, kw), dtype=g.dtype)
        if nc.need[0]:
            gxp = np.zeros(xp.shape, dtype=g.dtype)
        for i, j, sl in _taps(xp, kh, kw, sh, sw, dh, dw, oh, ow):
            xs = xp[sl]
            if nc.need[1]:
                if mult == 1:
                    gw[:, 0, i, j] = np.einsum("nchw,nchw->c", g4, xs, optimize=False)
                else:
                    gw[:, :, i, j] = np.einsum("ncmhw,nchw->cm", g5, xs)
            if nc.need[0]:
                if mult == 1:
                    gxp[sl] += g4 * wr[:, 0, i, j].reshape(1, c, 1, 1)
                else:
                    gxp[sl] += np.einsum("ncmhw,cm->nchw", g5, wr[:, :, i, j])
        if nc.need[1]:
            gw = gw.reshape(m, 1, kh, kw)
    elif kh == kw == 1 and group == 1:
        xs = xp[:, :, : sh * (oh - 1) + 1: sh, : sw * (ow - 1) + 1: sw]
        g3 = g4.reshape(n, m, oh * ow)
        if nc.need[1]:
            x3 = xs.reshape(n, c, oh * ow)
            gw = np.matmul(g3, x3.transpose(0, 2, 1)).sum(axis=0).reshape(m, c, 1, 1)
        if nc.need[0]:
            gxs = np.matmul(w4.reshape(m, c).T, g3).reshape(n, c, oh, ow)
            if xs.shape == xp.shape:
                gxp = gxs
            else:
                gxp = np.zeros(xp.shape, dtype=g.dtype)
                gxp[:, :, : sh * (oh - 1) + 1: sh, : sw * (ow - 1) + 1: sw] = gxs
    else:
        win = F._receptive_fields(xp, kh, kw, sh, sw, dh, dw, oh, ow)
        cols = win.reshape(n, group, cg, oh, ow, kh, kw).transpose(0, 1, 2, 5, 6, 3, 4)
        cols = cols.reshape(n, group, cg * kh * kw, oh * ow)
        gg = g4.reshape(n, group, m // group, oh * ow)
        wm = w4.reshape(group, m // group, cg * kh * kw)
        if nc.need[1]:
            gw = np.matmul(gg, cols.transpose(0, 1, 3, 2)).sum(axis=0).reshape(m, cg, kh, kw)
        if nc.need[0]:
            gcols = np.matmul(wm.transpose(0, 2, 1), gg).reshape(n, c, kh, kw, oh, ow)
            gxp = np.zeros(xp.shape, dtype=g.dtype)
            for i, j, sl in _taps(xp, kh, kw, sh, sw, dh, dw, oh, ow):
                gxp[sl] += gcols[:, :, i, j]
    if nc.need[1]:
        out[1] = (gw[:, :, 0, :] if nsp == 1 else gw).reshape(nc.in_shapes[1])
    if nc.need[0]:
        t, l, b, r = p4
        gx = gxp[:, :, t: gxp.shape[2] - b, l: gxp.shape[3] - r]
        out[0] = np.ascontiguousarray(gx[:, :, 0, :] if nsp == 1 else gx)
    return out


@_rule("ConvTranspose")
def _conv_transpose(nc, gys):
    from .ops.conv import _convt_geometry, _parse_convt

    x, w = nc.ins[0], nc.ins[1]
    g = gys[0]
    group, _, (strides, dil, pb, pe, auto), opad, oshape = _parse_convt(nc.node, w.ndim - 2)
    nsp = w.ndim - 2
    if nsp not in (1, 2):
        raise TypeError(f"{nc.node.label()}: training supports 1-D and 2-D transposed convolutions")
    out = _bias_grad(nc, g)
    if not (nc.need[0] or nc.need[1]):
        return out
    kshape = tuple(w.shape[2:])
    begins, out_sp = _convt_geometry(x.shape[2:], kshape, strides, dil, pb, pe, auto, opad, oshape)
    if nsp == 1:
        x, w, g = x[:, :, None, :], w[:, :, None, :], g[:, :, None, :]
        strides, dil, begins, kshape = (1,) + tuple(strides), (1,) + tuple(dil), (0,) + tuple(begins), (1,) + kshape
    n, c, h, wd = x.shape
    _, mg, kh, kw = w.shape
    sh, sw = strides
    dh, dw = dil
    # gradient of the uncropped output, then every tap's (h, w) grid read back (the adjoint of
    # the forward's strided adds)
    full_h = sh * (h - 1) + (kh - 1) * dh + 1
    full_w = sw * (wd - 1) + (kw - 1) * dw + 1
    fh, fw = max(full_h, begins[0] + g.shape[2]), max(full_w, begins[1] + g.shape[3])
    gfull = np.zeros((n, g.shape[1], fh, fw), g.dtype)
    gfull[:, :, begins[0]: begins[0] + g.shape[2], begins[1]: begins[1] + g.shape[3]] = g
    gcols = np.empty((n, g.shape[1], kh, kw, h, wd), g.dtype)
    for i in range(kh):
        for j in range(kw):
            gcols[:, :, i, j] = gfull[:, :, i * dh: i * dh + sh * (h - 1) + 1: sh, j * dw: j * dw + sw * (wd - 1) + 1: sw]
    cg = c // group
    gc = gcols.reshape(n, group, mg * kh * kw, h * wd)
    xg = x.reshape(n, group, cg, h * wd)
    wt = w.reshape(group, cg, mg * kh * kw)                   # (g, C/g, M/g*K)
    if nc.need[0]:
        gx = np.matmul(wt, gc).reshape(n, c, h, wd)
        out[0] = gx[:, :, 0, :] if nsp == 1 else gx
    if nc.need[1]:
        gw = np.matmul(xg, gc.transpose(0, 1, 3, 2)).sum(axis=0).reshape(c, mg, kh, kw)
        out[1] = (gw[:, :, 0, :] if nsp == 1 else gw).reshape(nc.in_shapes[1])
    return out


# -- pooling ----------------------------------------------------------------------------------------------

def _pool_geometry(nc, x_shape):
    from .ops.pool import _Geometry, _parse

    ks, strides, dil, pb, pe, auto, ceil_mode = _parse(nc.node, "dilations" in nc.node.attrs)
    return _Geometry(tuple(x_shape[2:]), ks, strides, dil, pb, pe, auto, ceil_mode)


def _scatter_taps(geo, gtaps, x_shape, dtype):
    """Add per-tap gradients (tap index -> (N, C, *out)) back into a padded input; crop."""
    padded = tuple(x_shape[:2]) + tuple(s + p + q for s, p, q in zip(geo.in_sp, geo.pb, geo.pad_end))
    gxp = np.zeros(padded, dtype)
    for t, tap in enumerate(geo.taps):
        if gtaps[t] is None:
            continue
        sl = (slice(None), slice(None)) + tuple(
            slice(i * d, i * d + s * (o - 1) + 1, s) for i, d, s, o in zip(tap, geo.dil, geo.strides, geo.out))
        gxp[sl] += gtaps[t]
    crop = (slice(None), slice(None)) + tuple(slice(p, p + s) for p, s in zip(geo.pb, geo.in_sp))
    return gxp[crop]


@_rule("MaxPool")
def _maxpool(nc, gys):
    x, y = nc.ins[0], nc.outs[0]
    geo = _pool_geometry(nc, x.shape)
    xp = geo.pad(x, -np.inf)
    g = gys[0]
    taken = np.zeros(y.shape, bool)
    gt = []
    for _, v in geo.tap_slices(xp):
        hit = (v == y) & ~taken         # the first maximum of each window takes the gradient
        taken |= hit
        gt.append(np.where(hit, g, 0).astype(g.dtype) if hit.any() else None)
    return [_scatter_taps(geo, gt, x.shape, g.dtype)]


@_rule("AveragePool")
def _avgpool(nc, gys):
    geo = _pool_geometry(nc, nc.in_shapes[0])
    include_pad = bool(int(nc.node.attrs.get("count_include_pad", 0) or 0))
    cnt = geo.counts(include_pad)
    g = gys[0]
    gd = g / (cnt.astype(g.dtype) if cnt is not None else g.dtype.type(np.prod(geo.kshape)))
    return [_scatter_taps(geo, [gd] * len(geo.taps), nc.in_shapes[0], g.dtype)]


@_rule("GlobalAveragePool")
def _gap(nc, gys):
    shp = nc.in_shapes[0]
    n = int(np.prod(shp[2:], dtype=np.int64))
    return [np.broadcast_to(gys[0] / n, shp).copy()]


@_rule("GlobalMaxPool")
def _gmp(nc, gys):
    x, y = nc.ins[0], nc.outs[0]
    hit = x == y
    cnt = hit.sum(axis=tuple(range(2, x.ndim)), keepdims=True)
    return [np.where(hit, gys[0] / cnt, 0)]


# -- resize ------------------------------------------------------------------------------------------------

@_rule("Resize", "Upsample")
def _resize(nc, gys):
    """Resize is linear in X and separable over axes (nearest, linear and cubic modes): the 1-D
    interpolation matrix A (out x in) of each resized axis is probed through the op itself (so
    every coordinate mode matches inference) once per input shape, then g -> A^T g per axis."""
    x_shape = tuple(nc.in_shapes[0])
    g = gys[0]
    key = (x_shape, tuple(g.shape))
    mats = nc.cache.get(key)
    if mats is None:
        mats = _probe_resize(nc, x_shape, tuple(g.shape))
        nc.cache.clear()
        nc.cache[key] = mats
    out = g.astype(np.float64)
    for ax, A in mats:
        out = np.moveaxis(np.tensordot(out, A, axes=([ax], [0])), -1, ax)
    return [out.astype(g.dtype, copy=False)] + [None] * (len(nc.in_shapes) - 1)


def _probe_resize(nc, x_shape, y_shape):
    aux = list(nc.saved["aux"])
    nd = len(x_shape)
    mats = []
    for ax in range(nd):
        a, b = x_shape[ax], y_shape[ax]
        if a == b:
            continue
        unres = [i for i in range(nd) if i != ax and x_shape[i] == y_shape[i]]
        res = [i for i in range(nd) if i != ax and x_shape[i] != y_shape[i]]
        perm = unres + [ax] + res
        inv = np.argsort(perm)
        rows_n = int(np.prod([x_shape[i] for i in unres], dtype=np.int64))
        A = np.zeros((b, a))
        # each row over the unresized axes carries its own one-hot along `ax`; the probe is
        # constant along the other resized axes, which interpolation keeps constant
        for start in range(0, a, rows_n):
            k = min(rows_n, a - start)
            block = np.zeros((rows_n, a))
            block[np.arange(k), start + np.arange(k)] = 1.0
            full = np.broadcast_to(block.reshape([x_shape[i] for i in unres] + [a] + [1] * len(res)),
                                   [x_shape[i] for i in unres] + [a] + [x_shape[i] for i in res])
            y = np.asarray(nc.fwd(np.ascontiguousarray(np.transpose(full, inv)), *aux), np.float64)
            yp = np.transpose(y, perm)[(Ellipsis,) + (0,) * len(res)]
            A[:, start: start + k] = yp.reshape(rows_n, b)[:k].T
        mats.append((ax, A))
    return mats


# -- normalization ----------------------------------------------------------------------------------

def _bn_axes(x):
    return (0,) + tuple(range(2, x.ndim))


def _bn_train(nc, inputs, rng):
    x, scale, bias, mean, var = inputs[:5]
    eps = float(nc.node.attrs.get("epsilon", 1e-5))
    mom = float(nc.node.attrs.get("momentum", 0.9))
    axes = _bn_axes(x)
    bshape = (1, -1) + (1,) * (x.ndim - 2)
    mu = x.mean(axis=axes, keepdims=True)
    xc = x - mu
    v = (xc * xc).mean(axis=axes, keepdims=True)
    rstd = 1.0 / np.sqrt(v + x.dtype.type(eps))
    xh = xc * rstd
    n = x.size // x.shape[1]
    nc.saved.update(xh=xh, rstd=rstd, train=True)
    # running statistics (ONNX: running = running * momentum + batch * (1 - momentum); the
    # variance is unbiased as in PyTorch, whose exports set momentum = 1 - its momentum)
    nc.saved["running"] = (
        (np.asarray(mean, np.float64) * mom + mu.reshape(-1) * (1 - mom)).astype(np.asarray(mean).dtype),
        (np.asarray(var, np.float64) * mom + v.reshape(-1) * (n / max(n - 1, 1)) * (1 - mom))
        .astype(np.asarray(var).dtype))
    y = xh * scale.reshape(bshape) + bias.reshape(bshape)
    return [y.astype(x.dtype, copy=False)] + [None] * (len(nc.node.outputs) - 1)


TRAIN_FORWARD["BatchNormalization"] = _bn_train


@_rule("BatchNormalization")
def _batchnorm(nc, gys):
    x = nc.ins[0]
    scale = nc.ins[1]
    g = gys[0]
    axes = _bn_axes(g)
    bshape = (1, -1) + (1,) * (g.ndim - 2)
    if nc.saved.get("train"):
        xh, rstd = nc.saved["xh"], nc.saved["rstd"]
        gxh = g * scale.reshape(bshape)
        gx = rstd * (gxh - gxh.mean(axis=axes, keepdims=True) - xh * (gxh * xh).mean(axis=axes, keepdims=True))
    else:
        mean, var = nc.ins[3], nc.ins[4]
        eps = float(nc.node.attrs.get("epsilon", 1e-5))
        rstd = (1.0 / np.sqrt(np.asarray(var, np.float64) + eps)).astype(g.dtype).reshape(bshape)
        xh = (x - mean.reshape(bshape)) * rstd
        gx = g * scale.reshape(bshape) * rstd
    return [gx if nc.need[0] else None,
            (g * xh).sum(axis=axes).reshape(nc.in_shapes[1]) if nc.need[1] else None,
            g.sum(axis=axes).reshape(nc.in_shapes[2]) if nc.need[2] else None, None, None]


@_rule("InstanceNormalization")
def _instance_norm(nc, gys):
    x, scale = nc.ins[0], nc.ins[1]
    eps = float(nc.node.attrs.get("epsilon", 1e-5))
    axes = tuple(range(2, x.ndim))
    bshape = (1, -1) + (1,) * (x.ndim - 2)
    mu = x.mean(axis=axes, keepdims=True)
    xc = x - mu
    rstd = 1.0 / np.sqrt((xc * xc).mean(axis=axes, keepdims=True) + eps)
    xh = xc * rstd
    g = gys[0]
    gxh = g * scale.reshape(bshape)
    gx = rstd * (gxh - gxh.mean(axis=axes, keepdims=True) - xh * (gxh * xh).mean(axis=axes, keepdims=True))
    return [gx.astype(g.dtype, copy=False) if nc.need[0] else None,
            (g * xh).sum(axis=(0,) + axes).reshape(nc.in_shapes[1]) if nc.need[1] else None,
            g.sum(axis=(0,) + axes).reshape(nc.in_shapes[2]) if nc.need[2] else None]


@_rule("LayerNormalization")
def _layer_norm(nc, gys):
    x, scale = nc.ins[0], nc.ins[1]
    eps = float(nc.node.attrs.get("epsilon", 1e-5))
    ax = int(nc.node.attrs.get("axis", -1)) % x.ndim
    axes = tuple(range(ax, x.ndim))
    mu = x.mean(axis=axes, keepdims=True)
    xc = x - mu
    rstd = 1.0 / np.sqrt((xc * xc).mean(axis=axes, keepdims=True) + eps)
    xh = xc * rstd
    g = gys[0]
    gxh = g * scale
    gx = rstd * (gxh - gxh.mean(axis=axes, keepdims=True) - xh * (gxh * xh).mean(axis=axes, keepdims=True))
    lead = tuple(range(g.ndim - len(nc.in_shapes[1])))
    out = [gx.astype(g.dtype, copy=False) if nc.need[0] else None,
           _unbroadcast((g * xh).sum(axis=lead) if lead else g * xh, nc.in_shapes[1]) if nc.need[1] else None]
    if len(nc.in_shapes) > 2:
        out.append(_unbroadcast(g.sum(axis=lead) if lead else g, nc.in_shapes[2]) if nc.need[2] else None)
    return out


# -- trainable parameters ---------------------------------------------------------------------------------

_WEIGHT_SLOTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (0, 1, 2), "MatMul": (0, 1),
                 "BatchNormalization": (1, 2), "InstanceNormalization": (1, 2), "LayerNormalization": (1, 2),
                 "GroupNormalization": (1, 2), "PRelu": (1,)}


def default_trainable(graph: Graph) -> set[str]:
    """The parameters training updates by default: weights and biases of Conv/ConvTranspose/
    Gemm/MatMul, BatchNorm/LayerNorm/InstanceNorm scales and biases, PRelu slopes, and float
    vectors (size > 1) added to or multiplied with activations (bias Adds after MatMul, the scale
    and shift of a decomposed LayerNorm).  Scalars (the 3 and 6 of a decomposed HardSwish, eps,
    a learnable-affine block's scalars) and running statistics stay fixed."""
    out = set()
    params = graph.params
    for n in graph.nodes:
        if n.domain not in ("", "ai.onnx"):
            continue
        slots = _WEIGHT_SLOTS.get(n.op)
        for pos, v in enumerate(n.inputs):
            if v not in params or params[v].dtype.kind != "f":
                continue
            if slots is not None and pos in slots:
                out.add(v)
            elif n.op in ("Add", "Sub", "Mul") and params[v].size > 1:
                out.add(v)
    return out


def logits_value(graph: Graph, output: str | None = None) -> tuple[str, int | None]:
    """``(value name, softmax axis)``: the input of a final Softmax/LogSoftmax (the logits the
    losses want) with its axis attribute, or ``(output, None)`` when the output is not one."""
    out = output or graph.outputs[0]
    prod = graph.producers()
    if out in prod:
        _, n = prod[out]
        if n.op in ("Softmax", "LogSoftmax") and n.domain in ("", "ai.onnx"):
            return n.inputs[0], int(n.attrs.get("axis", 1 if graph.opset < 13 else -1))
    return out, None


# -- the tape -----------------------------------------------------------------------------------------------

class _Holder:
    """One trainable tensor as the optimizers see it: ``holder.weight`` (and ``weight_mask``)."""

    def __init__(self, name: str, value: np.ndarray):
        self.name = name
        self.weight = value


class GraphTape:
    """A graph bound for training (see the module docstring).

    Parameters
    ----------
    graph : edgepack.nn.Graph
        Its ``params`` are read at construction; :meth:`sync` writes trained values back.
    trainable : collection of str or callable(name, array) -> bool, optional
        Default :func:`default_trainable`.
    requires : collection of str
        Extra values (graph inputs or parameters) whose gradients :meth:`backward` returns.
    dtype : numpy dtype, optional
        Cast every float parameter to it (float64 for gradient checks).
    """

    def __init__(self, graph: Graph, trainable=None, requires=(), dtype=None):
        if not isinstance(graph, Graph):
            raise TypeError(f"graph must be an edgepack.nn.Graph; got {type(graph).__name__}")
        self.graph = graph
        params = graph.params
        if trainable is None:
            names = default_trainable(graph)
        elif callable(trainable):
            names = {k for k, v in params.items() if trainable(k, v)}
        else:
            names = set(trainable)
            bad = [k for k in names if k not in params]
            if bad:
                raise ValueError(f"trainable: {bad[:5]} are not parameters of the graph")
        self.dtype = None if dtype is None else np.dtype(dtype)
        self.holders = {k: _Holder(k, self._cast(params[k])) for k in sorted(names)
                        if params[k].dtype.kind == "f"}
        self.requires = set(requires)
        self.training = True
        self.frozen_ops: set = set()      # ops that keep their inference forward while training
        self._cache: dict = {}
        self._running: dict = {}
        self._compile()

    def _cast(self, a):
        if self.dtype is not None and a.dtype.kind == "f" and a.dtype != self.dtype:
            return a.astype(self.dtype)
        return a

    def _compile(self):
        g = self.graph
        dynamic = set(self.holders) | self.requires | set(g.input_names)
        consts = {k: self._cast(v) for k, v in g.params.items() if k not in dynamic}
        self.consts = consts
        steps = []
        for i, n in enumerate(g.nodes):
            d = get_op(n.op, n.domain, g.opset)
            if d is None:
                raise ValueError(f"{n.label()}: operator {n.op} is not supported")
            attrs, _ = fill_attrs(d, n.attrs)
            node = dataclasses.replace(n, attrs=attrs)
            cin = [consts.get(v) if v else None for v in n.inputs]
            try:
                fn = d.make(node, cin)
            except (ValueError, TypeError, KeyError, IndexError) as e:
                raise ValueError(f"{n.label()}: {e}") from None
            steps.append((i, node, fn))
        self.steps = steps

    # parameters -------------------------------------------------------------------------------
    def parameters(self) -> list[tuple[_Holder, str]]:
        """``[(holder, "weight")]`` for the optimizers (:mod:`edgepack.train.optim`)."""
        return [(h, "weight") for h in self.holders.values()]

    def sync(self) -> None:
        """Write trained values (and BatchNorm running statistics) back into ``graph.params``."""
        g = self.graph
        for k, h in self.holders.items():
            g.params[k] = np.ascontiguousarray(h.weight, dtype=g.params[k].dtype)
        for k, v in self._running.items():
            g.params[k] = np.ascontiguousarray(v, dtype=g.params[k].dtype)
            self.consts[k] = self._cast(g.params[k])
        self._running = {}
        g.invalidate()
        self._compile()

    # forward / backward ----------------------------------------------------------------------------
    def forward(self, feeds: dict, outputs, *, training: bool | None = None, rng=None, grad: bool = True,
                sources=()):
        """Run the graph; returns ``(values, backward)``.

        ``values`` maps each name in ``outputs`` to its array; ``backward(grads)`` takes
        ``{value name: gradient}`` (any computed values) and returns ``{name: gradient}`` for the
        trainable parameters, the ``requires`` values and the intermediate values in ``sources``
        (gradients flow from each source on, as if it were an input).
        """
        training = self.training if training is None else training
        rng = rng if rng is not None else np.random.default_rng(0)
        g = self.graph
        sources = set(sources)
        vals: dict = dict(self.consts)
        for k, h in self.holders.items():
            vals[k] = h.weight
        for k, v in feeds.items():
            a = np.asarray(v)
            vals[k] = self._cast(a) if a.dtype.kind == "f" else a
        for k in self.requires:
            if k not in vals:
                raise ValueError(f"requires: {k!r} is not a graph input or parameter")
        live = (set(self.holders) | self.requires) if grad else set()
        tape = []
        for idx, (i, node, fn) in enumerate(self.steps):
            ins = [vals.get(v) if v else None for v in node.inputs]
            diff = _diff_positions(node)
            need = [bool(v) and v in live and p in diff and ins[p] is not None and
                    np.asarray(ins[p]).dtype.kind == "f" for p, v in enumerate(node.inputs)]
            nc = None
            train_fwd = training and node.op in TRAIN_FORWARD and node.op not in self.frozen_ops and \
                node.domain in ("", "ai.onnx")
            if any(need) or train_fwd:
                nc = NodeCtx(node, ins, None, [None if a is None else np.shape(a) for a in ins],
                             [None if a is None else np.asarray(a).dtype for a in ins], need, fn, g.opset, {},
                             self._cache.setdefault(idx, {}))
            if train_fwd:
                res = list(TRAIN_FORWARD[node.op](nc, ins, rng))
            else:
                try:
                    r = fn(*ins)
                except (ValueError, TypeError, IndexError, KeyError, ZeroDivisionError) as e:
                    raise ValueError(f"{node.label()}: {e}") from None
                res = [r] if len(node.outputs) == 1 else list(r)
            res = res + [None] * (len(node.outputs) - len(res))
            for o, r in zip(node.outputs, res):
                if o:
                    vals[o] = r
            if nc is not None and "running" in nc.saved:
                self._running[node.inputs[3]], self._running[node.inputs[4]] = nc.saved.pop("running")
            if nc is not None and any(need) and not any(isinstance(r, np.ndarray) and r.dtype.kind == "f"
                                                        for r in res):
                need = [False] * len(need)      # comparisons, ArgMax, Shape...: nothing flows back
            if nc is not None and any(need):
                if node.op not in RULES or node.domain not in ("", "ai.onnx"):
                    raise TypeError(f"{node.label()}: edgepack cannot differentiate {node.op} (no backward rule); "
                                    f"supported: {', '.join(sorted(RULES))}")
                for o, r in zip(node.outputs, res):
                    if o and isinstance(r, np.ndarray) and r.dtype.kind == "f":
                        live.add(o)
                self._prepare(nc, ins, res)
                tape.append(nc)
            if grad and sources:
                for o, r in zip(node.outputs, res):
                    if o in sources and isinstance(r, np.ndarray) and r.dtype.kind == "f":
                        live.add(o)
        missing = [o for o in outputs if o not in vals]
        if missing:
            raise ValueError(f"outputs: no value named {missing[0]!r} in the graph")
        result = {o: vals[o] for o in outputs}
        del vals
        keep = set(self.holders) | self.requires

        def backward(grads: dict) -> dict:
            acc: dict[str, np.ndarray] = {k: v for k, v in grads.items() if v is not None}
            found = {}
            for nc in reversed(tape):
                gys = []
                for o in nc.node.outputs:
                    gy = acc.pop(o, None) if o else None
                    if o in sources and gy is not None:
                        found[o] = gy
                    gys.append(gy)
                if all(gy is None for gy in gys):
                    continue
                if nc.node.op != "Split":
                    gys = [gy if gy is not None else (np.zeros(shp, dt) if shp is not None else None)
                           for gy, (shp, dt) in zip(gys, nc.out_shapes)]
                try:
                    gins = RULES[nc.node.op](nc, gys)
                except (ValueError, IndexError) as e:
                    raise ValueError(f"{nc.node.label()} (backward): {e}") from None
                for v, need, gi in zip(nc.node.inputs, nc.need, gins):
                    if need and gi is not None:
                        acc[v] = acc[v] + gi if v in acc else gi
            out = {k: v for k, v in acc.items() if k in keep}
            for k in sources:
                if k in acc:
                    found[k] = acc[k]
            out.update(found)
            return out

        return result, backward

    def _prepare(self, nc: NodeCtx, ins, res):
        """Keep only what the node's backward rule needs (outputs of _KEEP_OUT ops, the inputs
        of ops outside _NO_KEEP_IN, auxiliary inputs of data-movement ops)."""
        op = nc.node.op
        nc.out_shapes = [(np.shape(r), np.asarray(r).dtype) if isinstance(r, np.ndarray) else (None, None)
                         for r in res]
        nc.outs = list(res) if op in _KEEP_OUT else [None] * len(res)
        if op == "Split":
            nc.saved["out_shapes"] = [np.shape(r) for r in res]
        if op in _AUX:
            nc.saved["aux"] = ins[1:]
        if op == "Pad":
            nc.saved["pads"] = _pads_of(nc, ins)
        if op in _NO_KEEP_IN:
            nc.ins = [None] * len(ins)


_AUX = {"Slice", "Gather", "Expand", "Tile", "GatherElements", "DepthToSpace", "SpaceToDepth", "Pad", "Resize",
        "Upsample", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceSumSquare", "ReduceL2"}


def _diff_positions(node) -> tuple:
    if node.op in _VARIADIC:
        return tuple(range(len(node.inputs)))
    return _DIFF.get(node.op, (0,))


# -- helpers used by training and pruning ---------------------------------------------------------------

def gradients(graph: Graph, feeds: dict, output: str, grad_output: np.ndarray, wrt=None, *, training=False,
              dtype=None) -> dict:
    """``{name: d <grad_output, output> / d name}`` for the parameters/inputs ``wrt`` (default:
    the trainable parameters), one forward and backward in inference mode (BatchNorm running
    statistics).  A convenience for tests and importance scores."""
    wrt = list(wrt) if wrt is not None else None
    params = [w for w in (wrt or []) if w in graph.params]
    req = [w for w in (wrt or []) if w not in graph.params]
    tape = GraphTape(graph, trainable=params if wrt is not None else None, requires=req, dtype=dtype)
    vals, back = tape.forward(feeds, [output], training=training)
    return back({output: np.asarray(grad_output, dtype=vals[output].dtype)})


def taylor_scores(graph: Graph, data, values, labels=None, *, axes: dict | None = None, batch_size: int = 32):
    """First-order Taylor importance per channel (Molchanov et al., ICLR 2017):
    ``|mean over positions of a * dL/da|`` per channel of each value in ``values``, averaged over
    the rows of ``data``.  ``L`` is the cross-entropy of the graph's logits (over the last axis)
    against ``labels``, or against its own predictions when there are none.  ``axes`` gives each
    value's channel axis (default 1 for 3-D+ values, the last for 2-D).

    Returns ``{value: float64 array (channels,)}``."""
    from ..train.losses import cross_entropy

    names = graph.input_names
    X = dict(data) if isinstance(data, dict) else {names[0]: np.asarray(data)}
    n = next(iter(X.values())).shape[0]
    out, _ = logits_value(graph)
    tape = GraphTape(graph, trainable=())
    values = list(values)
    acc: dict = {}
    for s in range(0, n, batch_size):
        feeds = {k: np.asarray(v)[s:s + batch_size] for k, v in X.items()}
        feeds = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in feeds.items()}
        vals, back = tape.forward(feeds, [out] + values, training=False, sources=values)
        logits = vals[out]
        lg = logits.reshape(-1, logits.shape[-1]).astype(np.float64)
        y = np.asarray(labels[s:s + batch_size]).reshape(-1) if labels is not None else lg.argmax(-1)
        _, gl = cross_entropy(lg, y)
        grads = back({out: gl.reshape(logits.shape).astype(logits.dtype)})
        for v in values:
            a, gv = vals[v], grads.get(v)
            if gv is None:
                continue
            ax = (axes or {}).get(v, 1 if a.ndim >= 3 else a.ndim - 1)
            prod = np.moveaxis(a * gv, ax, 1)
            prod = prod.reshape(prod.shape[0], prod.shape[1], -1).mean(axis=2)    # (N, C)
            sc = np.abs(prod).sum(axis=0)
            acc[v] = sc if v not in acc else acc[v] + sc
    return {v: sc / n for v, sc in acc.items()}
