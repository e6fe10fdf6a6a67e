"""Normalisation operators (NumPy; see edgepack.graph.registry for the maker contract).

BatchNormalization 7 (spatial) / 9 / 14 (training_mode) / 15: inference only,
    ``y = x * a + b`` with per-channel ``a = scale / sqrt(var + eps)`` and
    ``b = B - mean * a`` (precomputed in float64 when the statistics are constants).
    training_mode=1 and the training-only outputs (saved mean/variance) are rejected at import;
    the running_mean/running_var outputs, if asked for, are the inputs unchanged (inference).
    ``spatial=0`` (opset 7) takes per-activation statistics of shape (C, D1, ...).
InstanceNormalization 6: per (N, C) over the spatial axes.
LayerNormalization 17: over ``x.shape[axis:]``; Scale/B broadcast to that shape; the Mean and
    InvStdDev outputs when asked for (shape ``x.shape[:axis] + (1,) * (rank - axis)``);
    computed in float32 (stash_type=1) or float64 (stash_type=11 or a float64 input).
GroupNormalization 18 (scale/bias per group) / 21 (per channel, stash_type).
LRN 1: across channels, ``x / (bias + alpha / size * sum(x^2)) ** beta``.
LpNormalization 1: p = 1 or 2 along ``axis``; an all-zero slice stays zero.
MeanVarianceNormalization 9: ``(x - mean) / (sqrt(var) + 1e-9)`` over ``axes``, as the ONNX
    function body defines it.

float16 inputs are computed in float32 and cast back.
"""

from __future__ import annotations

import numpy as np

from ..registry import REQUIRED, register_op
from ._util import norm_axes, norm_axis
from .conv import _check_check, _compute_dtype


def _float_input(x, what="X"):
    if x.dtype.kind != "f":
        raise ValueError(f"{what} must be a floating-point tensor; got {x.dtype}")
    cdt = _compute_dtype(x.dtype)
    return (x if x.dtype == cdt else x.astype(cdt)), x.dtype


def _out(y, dt):
    return y if y.dtype == dt else y.astype(dt)


def _eps(node) -> float:
    e = float(node.attrs.get("epsilon", 1e-5))
    if not np.isfinite(e) or e < 0:
        raise ValueError(f"epsilon must be a non-negative number; got {e}")
    return e


# -- BatchNormalization ---------------------------------------------------------------------------

def _bn_parse(node):
    if int(node.attrs.get("training_mode", 0) or 0):
        raise ValueError("training_mode=1 (batch statistics) is not supported: edgepack runs inference")
    if int(node.attrs.get("spatial", 1)) not in (0, 1):
        raise ValueError(f"spatial must be 0 or 1; got {node.attrs.get('spatial')}")
    outs = [o for o in node.outputs[3:] if o]
    if outs:
        raise ValueError("the saved_mean/saved_var outputs exist only in training; edgepack runs inference")
    _eps(node)
    if len(node.inputs) < 5 or not all(node.inputs[:5]):
        raise ValueError("BatchNormalization needs the inputs X, scale, B, mean and var")


def _bn_affine(scale, bias, mean, var, eps, nsp, spatial):
    """(a, b) in float64, shaped to broadcast against (N, C, *spatial)."""
    s, b_, m, v = (np.asarray(t, dtype=np.float64) for t in (scale, bias, mean, var))
    a = s / np.sqrt(v + eps)
    b = b_ - m * a
    if spatial:
        shape = (1, -1) + (1,) * nsp
        return a.reshape(shape), b.reshape(shape)
    return a[None], b[None]


def _bn_maker(node, consts):
    _bn_parse(node)
    eps = _eps(node)
    spatial = bool(int(node.attrs.get("spatial", 1)))
    n_out = len(node.outputs)
    pre = None
    if all(c is not None for c in consts[1:5]):
        pre = tuple(np.asarray(t) for t in consts[1:5])
    cache: dict = {}

    def affine(nsp, dt, params):
        key = (nsp, dt.char)
        if params is None:
            got = cache.get(key)
            if got is None:
                a, b = _bn_affine(*pre, eps, nsp, spatial)
                got = cache[key] = (a.astype(dt), b.astype(dt))
            return got
        a, b = _bn_affine(*params, eps, nsp, spatial)
        return a.astype(dt), b.astype(dt)

    def run(x, scale, bias, mean, var):
        xc, out_dt = _float_input(x)
        if x.ndim < 2:
            raise ValueError(f"X must have rank >= 2 (N, C, ...); got shape {x.shape}")
        c = x.shape[1]
        params = None if pre is not None else (scale, bias, mean, var)
        for name, t in zip(("scale", "B", "mean", "var"), pre if pre is not None else params):
            want = (c,) if spatial else x.shape[1:]
            if np.shape(t) != want and np.size(t) != int(np.prod(want)):
                raise ValueError(f"{name} must have shape {want}; got {np.shape(t)}")
        a, b = affine(x.ndim - 2, xc.dtype, params)
        if not spatial:
            a, b = a.reshape((1,) + x.shape[1:]), b.reshape((1,) + x.shape[1:])
        y = xc * a
        y += b
        y = _out(y, out_dt)
        if n_out == 1:
            return y
        return (y, mean, var)[:n_out]

    return run


_BN = {"epsilon": 1e-5, "momentum": 0.9}
_bn_check = _check_check(_bn_parse)
register_op("BatchNormalization", 7, attrs=dict(_BN, spatial=1), check=_bn_check)(_bn_maker)
register_op("BatchNormalization", 9, attrs=_BN, check=_bn_check)(_bn_maker)
register_op("BatchNormalization", 14, attrs=dict(_BN, training_mode=0), check=_bn_check)(_bn_maker)
register_op("BatchNormalization", 15, attrs=dict(_BN, training_mode=0), check=_bn_check)(_bn_maker)


# -- shared: normalise over trailing axes of a reshaped view -----------------------------------------

def _moments(v, cdt):
    """Mean and (biased) variance over the last axis of ``v`` in dtype ``cdt``, keepdims."""
    v = v if v.dtype == cdt else v.astype(cdt)
    mu = v.mean(axis=-1, keepdims=True)
    xc = v - mu
    var = np.mean(xc * xc, axis=-1, keepdims=True)
    return xc, mu, var


@register_op("InstanceNormalization", 6, attrs={"epsilon": 1e-5}, check=_check_check(_eps))
def _instance_norm(node, consts):
    eps = _eps(node)

    def run(x, scale, bias):
        xc, out_dt = _float_input(x)
        if x.ndim < 3:
            raise ValueError(f"input must have rank >= 3 (N, C, spatial...); got shape {x.shape}")
        n, c = x.shape[:2]
        if np.size(scale) != c or np.size(bias) != c:
            raise ValueError(f"scale and B must have {c} values (one per channel); got shapes "
                             f"{np.shape(scale)} and {np.shape(bias)}")
        d, _, var = _moments(xc.reshape(n, c, -1), xc.dtype)
        d /= np.sqrt(var + xc.dtype.type(eps))
        d *= np.asarray(scale, xc.dtype).reshape(1, c, 1)
        d += np.asarray(bias, xc.dtype).reshape(1, c, 1)
        return _out(d.reshape(x.shape), out_dt)

    return run


# -- LayerNormalization ---------------------------------------------------------------------------

def _stash(node):
    st = int(node.attrs.get("stash_type", 1))
    if st not in (1, 11):
        raise ValueError(f"stash_type must be 1 (float32) or 11 (float64); got {st}")
    return st


@register_op("LayerNormalization", 17, attrs={"axis": -1, "epsilon": 1e-5, "stash_type": 1},
             check=_check_check(lambda n: (_eps(n), _stash(n))))
def _layer_norm(node, consts):
    eps = _eps(node)
    stash = _stash(node)
    axis_attr = int(node.attrs.get("axis", -1))
    outs = [bool(o) for o in node.outputs]
    stats = len(outs) > 1 and any(outs[1:])

    def run(x, scale, bias=None):
        if x.dtype.kind != "f":
            raise ValueError(f"X must be a floating-point tensor; got {x.dtype}")
        axis = norm_axis(axis_attr, x.ndim)
        inner_shape = x.shape[axis:]
        inner = int(np.prod(inner_shape))
        cdt = np.dtype(np.float64) if stash == 11 or x.dtype == np.float64 else np.dtype(np.float32)
        v = x.reshape(-1, inner)
        d, mu, var = _moments(v, cdt)
        inv = 1.0 / np.sqrt(var + cdt.type(eps))
        d *= inv
        try:
            s = np.broadcast_to(np.asarray(scale, cdt), inner_shape).reshape(1, inner)
            d *= s
            if bias is not None:
                d += np.broadcast_to(np.asarray(bias, cdt), inner_shape).reshape(1, inner)
        except ValueError:
            raise ValueError(f"Scale {np.shape(scale)} and B {np.shape(bias)} must broadcast to the normalized "
                             f"shape {inner_shape}") from None
        y = _out(d.reshape(x.shape), x.dtype)
        if not stats:
            return y if len(outs) == 1 else (y,) + (None,) * (len(outs) - 1)
        sshape = x.shape[:axis] + (1,) * (x.ndim - axis)
        st_dt = np.float64 if stash == 11 else np.float32
        res = (y, mu.reshape(sshape).astype(st_dt, copy=False), inv.reshape(sshape).astype(st_dt, copy=False))
        return res[:len(outs)]

    return run


# -- GroupNormalization ---------------------------------------------------------------------------

def _group_parse(node):
    g = int(node.attrs["num_groups"])
    if g < 1:
        raise ValueError(f"num_groups must be >= 1; got {g}")
    _eps(node)
    if "stash_type" in node.attrs:
        _stash(node)
    return g


def _group_norm_maker(per_group_params: bool):
    def make(node, consts):
        groups = _group_parse(node)
        eps = _eps(node)
        stash = int(node.attrs.get("stash_type", 1))

        def run(x, scale, bias):
            if x.dtype.kind != "f":
                raise ValueError(f"X must be a floating-point tensor; got {x.dtype}")
            if x.ndim < 2:
                raise ValueError(f"X must have rank >= 2 (N, C, ...); got shape {x.shape}")
            n, c = x.shape[:2]
            if c % groups:
                raise ValueError(f"X has {c} channels, not divisible by num_groups={groups}")
            want = groups if per_group_params else c
            if np.size(scale) != want or np.size(bias) != want:
                raise ValueError(f"scale and bias must have {want} values; got shapes {np.shape(scale)} "
                                 f"and {np.shape(bias)}")
            cdt = np.dtype(np.float64) if stash == 11 or x.dtype == np.float64 else np.dtype(np.float32)
            d, _, var = _moments(x.reshape(n, groups, -1), cdt)
            d /= np.sqrt(var + cdt.type(eps))
            d = d.reshape(n, c, -1)
            s = np.asarray(scale, cdt).reshape(-1)
            b = np.asarray(bias, cdt).reshape(-1)
            if per_group_params:
                s, b = np.repeat(s, c // groups), np.repeat(b, c // groups)
            d *= s.reshape(1, c, 1)
            d += b.reshape(1, c, 1)
            return _out(d.reshape(x.shape), x.dtype)

        return run

    return make


_gchk = _check_check(_group_parse)
register_op("GroupNormalization", 18, attrs={"epsilon": 1e-5, "num_groups": REQUIRED},
            check=_gchk)(_group_norm_maker(True))
register_op("GroupNormalization", 21, attrs={"epsilon": 1e-5, "num_groups": REQUIRED, "stash_type": 1},
            check=_gchk)(_group_norm_maker(False))


# -- LRN ------------------------------------------------------------------------------------------

def _lrn_parse(node):
    size = int(node.attrs["size"])
    if size < 1:
        raise ValueError(f"size must be >= 1; got {size}")
    return size, float(node.attrs.get("alpha", 1e-4)), float(node.attrs.get("beta", 0.75)), \
        float(node.attrs.get("bias", 1.0))


@register_op("LRN", 1, attrs={"alpha": 1e-4, "beta": 0.75, "bias": 1.0, "size": REQUIRED},
             check=_check_check(_lrn_parse))
def _lrn(node, consts):
    size, alpha, beta, bias = _lrn_parse(node)
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2   # channels before / after each channel

    def run(x):
        xc, out_dt = _float_input(x)
        if x.ndim < 2:
            raise ValueError(f"X must have rank >= 2 (N, C, ...); got shape {x.shape}")
        c = x.shape[1]
        sq = xc * xc
        acc = sq.copy()
        # one shifted whole-tensor add per neighbour channel offset (size is small: 3-5)
        for off in range(1, max(lo, hi) + 1):
            if off <= lo and off < c:
                acc[:, off:] += sq[:, :c - off]
            if off <= hi and off < c:
                acc[:, :c - off] += sq[:, off:]
        dt = xc.dtype.type
        acc *= dt(alpha / size)
        acc += dt(bias)
        if beta == 0.75:
            # x ** -0.75 as rsqrt(a) * rsqrt(sqrt(a)): much cheaper than a general power
            r = np.sqrt(acc)
            r *= np.sqrt(r)
            y = xc / r
        else:
            y = xc / np.power(acc, dt(beta), out=acc)
        return _out(y, out_dt)

    return run


# -- LpNormalization / MeanVarianceNormalization --------------------------------------------------

def _lpn_parse(node):
    p = int(node.attrs.get("p", 2))
    if p not in (1, 2):
        raise ValueError(f"p must be 1 or 2; got {p}")
    return p


@register_op("LpNormalization", 1, attrs={"axis": -1, "p": 2}, check=_check_check(_lpn_parse))
def _lp_norm(node, consts):
    p = _lpn_parse(node)
    axis_attr = int(node.attrs.get("axis", -1))

    def run(x):
        xc, out_dt = _float_input(x, "input")
        axis = norm_axis(axis_attr, x.ndim)
        if p == 1:
            nrm = np.abs(xc).sum(axis=axis, keepdims=True)
        else:
            nrm = np.sqrt((xc * xc).sum(axis=axis, keepdims=True))
        # an all-zero slice has norm 0: leave it zero instead of 0/0 = NaN
        nrm[nrm == 0] = 1
        return _out(xc / nrm, out_dt)

    return run


@register_op("MeanVarianceNormalization", 9, attrs={"axes": [0, 2, 3]})
def _mvn(node, consts):
    axes_attr = list(node.attrs.get("axes") or [0, 2, 3])

    def run(x):
        xc, out_dt = _float_input(x)
        axes = norm_axes(axes_attr, x.ndim)
        mu = xc.mean(axis=axes, keepdims=True)
        d = xc - mu
        var = np.mean(d * d, axis=axes, keepdims=True)
        d /= np.sqrt(var) + xc.dtype.type(1e-9)
        return _out(d, out_dt)

    return run
