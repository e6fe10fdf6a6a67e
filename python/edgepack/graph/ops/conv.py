"""Convolution operators (NumPy reference path; see edgepack.graph.registry for the maker contract).

Conv (registered since opset 1; versions 11 and 22 only widened types)
    Any spatial rank (1-D, 2-D and 3-D in practice), ``group`` (grouped, depthwise, depth
    multiplier), ``strides``, ``dilations``, explicit ``pads``, ``auto_pad``
    NOTSET/SAME_UPPER/SAME_LOWER/VALID, ``kernel_shape`` inferred from W when absent, optional
    bias.  A 1x1 stride-1 unpadded conv with constant float32 weights is one prepared
    ``(M, C) @ (C, pixels)`` matmul.  Otherwise 1-D and 2-D run
    :func:`edgepack.nn.functional.conv2d` (1x1 is one matmul, depthwise one whole-tensor
    multiply-add per kernel tap, the rest im2col + a batched matmul per group in bands of rows);
    a 3-D (or higher) conv loops over the taps of its leading spatial axis, each a 2-D conv with
    the output depth folded into the batch.
ConvTranspose (registered since opset 1)
    Any spatial rank, ``group``, ``strides``, ``dilations``, ``pads``, ``output_padding``,
    ``output_shape`` (pads then derived as the ONNX spec says: SAME_UPPER puts the smaller half at
    the start, anything else the larger half), ``auto_pad``.  One batched matmul
    ``W^T @ X`` per group, then one strided add per kernel tap into the output (col2im).

Limits: floating-point tensors only; float16 is computed in float32 and cast back.  Padding is
zero padding; pads must be non-negative.
"""

from __future__ import annotations

import itertools

import numpy as np

from ...nn import functional as F
from ..registry import register_op
from ._util import check_alloc

__all__ = ["spatial_attrs", "same_pads", "conv_nd", "conv_transpose_nd"]

_AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")

_CONV_ATTRS = {"auto_pad": "NOTSET", "dilations": None, "group": 1, "kernel_shape": None, "pads": None,
               "strides": None}
_CONVT_ATTRS = dict(_CONV_ATTRS, output_padding=None, output_shape=None)


# -- attribute helpers shared with pool.py -----------------------------------------------------------

def _ints(v, n: int, default: int, what: str, minimum: int) -> tuple[int, ...]:
    """An INTS attribute of length ``n`` (``default`` repeated when absent), each >= ``minimum``."""
    if v is None:
        return (default,) * n
    t = tuple(int(a) for a in v)
    if len(t) != n:
        raise ValueError(f"{what} must have {n} values (one per spatial axis); got {list(t)}")
    if any(a < minimum for a in t):
        raise ValueError(f"{what} must be >= {minimum}; got {list(t)}")
    return t


def spatial_attrs(node, n: int, *, dilations: bool = True):
    """(strides, dilations, pads_begin, pads_end, auto_pad) for ``n`` spatial axes, validated.

    ``pads`` is ONNX order ``[x1_begin, x2_begin, ..., x1_end, x2_end, ...]``."""
    a = node.attrs
    strides = _ints(a.get("strides"), n, 1, "strides", 1)
    dil = _ints(a.get("dilations") if dilations else None, n, 1, "dilations", 1)
    pads = a.get("pads")
    if pads is None:
        pb = pe = (0,) * n
    else:
        p = tuple(int(v) for v in pads)
        if len(p) != 2 * n:
            raise ValueError(f"pads must have {2 * n} values (begin and end per spatial axis); got {list(p)}")
        if min(p) < 0:
            raise ValueError(f"pads must be non-negative; got {list(p)}")
        pb, pe = p[:n], p[n:]
    auto = a.get("auto_pad", "NOTSET") or "NOTSET"
    if auto not in _AUTO_PADS:
        raise ValueError(f"auto_pad must be one of {list(_AUTO_PADS)}; got {auto!r}")
    return strides, dil, pb, pe, auto


def same_pads(size: int, k: int, s: int, d: int, upper: bool) -> tuple[int, int, int]:
    """SAME padding of one axis: (output size, pad begin, pad end); the output is ceil(size / s)
    and the odd pixel goes at the end for SAME_UPPER, at the start for SAME_LOWER."""
    out = -(-size // s)
    total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
    small = total // 2
    return (out, small, total - small) if upper else (out, total - small, small)


def _check_check(fn):
    """``check(node)`` from a parser that raises ValueError: each problem becomes a message."""
    def check(node):
        try:
            fn(node)
        except ValueError as e:
            return [str(e)]
        return []
    return check


def _compute_dtype(dt: np.dtype) -> np.dtype:
    # float16 would accumulate (and, without BLAS, multiply) in half precision: run it in float32.
    return np.dtype(np.float32) if dt == np.float16 else dt


def _as_float(a: np.ndarray, what: str) -> np.ndarray:
    if a.dtype.kind != "f":
        raise ValueError(f"{what} must be a floating-point tensor; got {a.dtype}")
    return a


# -- Conv -----------------------------------------------------------------------------------------

def conv_nd(x, w, strides, dil, pb, pe, group):
    """Zero-padded N-D convolution (cross-correlation), NC* layout, no bias.

    x: (N, C, *S); w: (M, C // group, *K).  1-D and 2-D go to ``functional.conv2d``; a higher
    rank loops over the taps of its first spatial axis, each tap a lower-rank conv over the output
    depth folded into the batch."""
    nsp = x.ndim - 2
    if nsp == 2:
        return F.conv2d(x, w, None, strides, (pb[0], pb[1], pe[0], pe[1]), dil, group)
    if nsp == 1:
        y = F.conv2d(x[:, :, None, :], w[:, :, None, :], None, (1, strides[0]), (0, pb[0], 0, pe[0]),
                     (1, dil[0]), group)
        return y[:, :, 0, :]
    n, c, size = x.shape[0], x.shape[1], x.shape[2]
    k, s, d = w.shape[2], strides[0], dil[0]
    out = (size + pb[0] + pe[0] - d * (k - 1) - 1) // s + 1
    if out < 1:
        raise ValueError(f"input spatial size {size} (+ padding {pb[0]}+{pe[0]}) is smaller than the "
                         f"dilated kernel {d * (k - 1) + 1} on spatial axis 0")
    if pb[0] or pe[0]:
        widths = [(0, 0), (0, 0), (pb[0], pe[0])] + [(0, 0)] * (nsp - 1)
        x = np.pad(x, widths)
    y = None
    for i in range(k):
        xs = x[:, :, i * d: i * d + s * (out - 1) + 1: s]                    # (N, C, out, *rest)
        xs = np.moveaxis(xs, 2, 1).reshape((n * out, c) + xs.shape[3:])
        r = conv_nd(xs, w[:, :, i], strides[1:], dil[1:], pb[1:], pe[1:], group)
        if y is None:
            y = r
        else:
            y += r
    y = y.reshape((n, out) + y.shape[1:])
    return np.moveaxis(y, 1, 2)


def _conv_pads(x_shape, kshape, strides, dil, pb, pe, auto):
    if auto == "NOTSET":
        return pb, pe
    if auto == "VALID":
        return (0,) * len(kshape), (0,) * len(kshape)
    up = auto == "SAME_UPPER"
    res = [same_pads(sz, k, s, d, up) for sz, k, s, d in zip(x_shape[2:], kshape, strides, dil)]
    return tuple(r[1] for r in res), tuple(r[2] for r in res)


def _parse_conv(node, nsp=None):
    a = node.attrs
    group = int(a.get("group", 1))
    if group < 1:
        raise ValueError(f"group must be >= 1; got {group}")
    ks = a.get("kernel_shape")
    if ks is not None:
        ks = tuple(int(v) for v in ks)
        if not ks or min(ks) < 1:
            raise ValueError(f"kernel_shape must be positive; got {list(ks)}")
    if nsp is None:
        nsp = len(ks) if ks is not None else None
    if nsp is None:
        for k in ("strides", "dilations"):
            if a.get(k) is not None:
                nsp = len(a[k])
                break
        else:
            if a.get("pads") is not None:
                nsp = len(a["pads"]) // 2
    if nsp is None:
        return group, ks, None
    return group, ks, spatial_attrs(node, nsp)


def _pointwise(w, b, group, geo):
    """``run`` for a 1x1, stride-1, unpadded, ungrouped conv with constant weights (SE blocks and
    most MobileNet layers): one (M, C) @ (C, pixels) matmul per image, no geometry work per call."""
    if w is None or group != 1 or geo is None or w.dtype != np.float32:
        return None
    strides, dil, pb, pe, auto = geo
    if any(k != 1 for k in w.shape[2:]) or any(s != 1 for s in strides) or (
            auto == "NOTSET" and (any(pb) or any(pe))):
        return None
    m, c = w.shape[:2]
    nsp = w.ndim - 2
    wm = np.ascontiguousarray(w.reshape(m, c))
    bias = None if b is None else b.reshape(m, 1)
    if bias is not None and bias.shape[0] != m:
        return None

    def run(x, w_=None, b_=None):
        if x.dtype != np.float32 or x.ndim != nsp + 2 or x.shape[1] != c:
            raise ValueError(f"X must be a float32 tensor of rank {nsp + 2} with {c} channels; got "
                             f"{x.dtype} of shape {x.shape}")
        y = np.matmul(wm, x.reshape(x.shape[0], c, -1))
        if bias is not None:
            y += bias
        return y.reshape((x.shape[0], m) + x.shape[2:])

    return run


@register_op("Conv", 1, attrs=_CONV_ATTRS, check=_check_check(_parse_conv))
def _conv(node, consts):
    group, ks, geo = _parse_conv(node)
    w_const = consts[1] if len(consts) > 1 else None
    b_const = consts[2] if len(consts) > 2 else None
    if w_const is not None:
        if w_const.ndim < 3:
            raise ValueError(f"W must have rank >= 3 (M, C/group, *kernel); got shape {w_const.shape}")
        w_const = np.ascontiguousarray(_as_float(w_const, "W"), dtype=_compute_dtype(w_const.dtype))
        if geo is None:
            geo = spatial_attrs(node, w_const.ndim - 2)
    if b_const is not None:
        b_const = np.ascontiguousarray(b_const.reshape(-1), dtype=_compute_dtype(b_const.dtype))
    pointwise = _pointwise(w_const, b_const, group, geo)
    if pointwise is not None:
        return pointwise

    def run(x, w, b=None):
        x = _as_float(x, "X")
        out_dt = x.dtype
        cdt = _compute_dtype(out_dt)
        w = w_const if w_const is not None else np.asarray(w, dtype=cdt)
        if b_const is not None:
            b = b_const
        nsp = w.ndim - 2
        if x.ndim != nsp + 2 or nsp < 1:
            raise ValueError(f"X must have rank {nsp + 2} to match W of shape {w.shape}; got shape {x.shape}")
        if ks is not None and tuple(w.shape[2:]) != ks:
            raise ValueError(f"kernel_shape {list(ks)} does not match W of shape {w.shape}")
        m, cg = w.shape[0], w.shape[1]
        if x.shape[1] != cg * group or m % group:
            raise ValueError(f"X has {x.shape[1]} channels and group={group}: W must have shape "
                             f"(M, {x.shape[1] // group if x.shape[1] % group == 0 else '?'}, ...) with M "
                             f"divisible by {group}; got W of shape {w.shape}")
        strides, dil, pb, pe, auto = geo if geo is not None else spatial_attrs(node, nsp)
        if len(strides) != nsp:
            raise ValueError(f"strides/dilations/pads have {len(strides)} spatial axes; W has {nsp}")
        pb, pe = _conv_pads(x.shape, w.shape[2:], strides, dil, pb, pe, auto)
        check_alloc(x.shape[:2] + tuple(sz + p + q for sz, p, q in zip(x.shape[2:], pb, pe)), "padded X")
        xc = x if x.dtype == cdt else x.astype(cdt)
        y = conv_nd(xc, w, strides, dil, pb, pe, group)
        if b is not None:
            b = np.asarray(b)
            if b.size != m:
                raise ValueError(f"B must have {m} values (one per output channel); got shape {b.shape}")
            y += b.reshape((1, m) + (1,) * nsp).astype(cdt, copy=False)
        return y if y.dtype == out_dt else y.astype(out_dt)

    return run


# -- ConvTranspose --------------------------------------------------------------------------------

def conv_transpose_nd(x, wt, m, kshape, strides, dil, pb, out_sp):
    """Transposed convolution, no bias.

    x: (N, C, *S); wt: (group, M/group * prod(K), C/group) (W regrouped and transposed);
    output: (N, m, *out_sp) whose index o on axis i is position ``o + pb[i]`` of the full
    (uncropped) transposed convolution."""
    n, c = x.shape[:2]
    in_sp = x.shape[2:]
    g = wt.shape[0]
    cols = np.matmul(wt, x.reshape(n, g, c // g, -1))          # (N, g, M/g * K, L)
    cols = cols.reshape((n, m) + tuple(kshape) + tuple(in_sp))
    y = np.zeros((n, m) + tuple(out_sp), dtype=cols.dtype)
    nsp = len(in_sp)
    # Per axis and tap: which input positions j land inside the output window, and where.
    per_axis = []
    for i in range(nsp):
        s, d, k, size, o, p = strides[i], dil[i], kshape[i], in_sp[i], out_sp[i], pb[i]
        taps = []
        for t in range(k):
            # output index of input j is t*d + s*j - p; keep 0 <= index < o
            lo = max(0, -(-(p - t * d) // s))
            hi = min(size - 1, (p + o - 1 - t * d) // s)
            if lo <= hi:
                start = t * d + s * lo - p
                taps.append((t, slice(lo, hi + 1), slice(start, start + s * (hi - lo) + 1, s)))
        per_axis.append(taps)
    for combo in itertools.product(*per_axis):
        src = (slice(None), slice(None)) + tuple(t for t, _, _ in combo) + tuple(js for _, js, _ in combo)
        dst = (slice(None), slice(None)) + tuple(os_ for _, _, os_ in combo)
        y[dst] += cols[src]
    return y


def _parse_convt(node, nsp=None):
    group, ks, geo = _parse_conv(node, nsp)
    a = node.attrs
    n = len(geo[0]) if geo is not None else nsp
    opad = oshape = None
    if n is not None:
        opad = _ints(a.get("output_padding"), n, 0, "output_padding", 0)
        if a.get("output_shape") is not None:
            oshape = tuple(int(v) for v in a["output_shape"])
            if len(oshape) == n + 2:       # some exporters give the full (N, C, *spatial) shape
                oshape = oshape[2:]
            if len(oshape) != n or min(oshape) < 1:
                raise ValueError(f"output_shape must have {n} positive values; got {list(a['output_shape'])}")
            check_alloc(oshape, "output_shape")
    return group, ks, geo, opad, oshape


def _convt_geometry(in_sp, kshape, strides, dil, pb, pe, auto, opad, oshape):
    """(pads_begin, output spatial shape) as the ONNX spec defines them."""
    full = [s * (i - 1) + op + (k - 1) * d + 1 for i, k, s, d, op in zip(in_sp, kshape, strides, dil, opad)]
    if oshape is None and auto in ("SAME_UPPER", "SAME_LOWER"):
        oshape = tuple(i * s for i, s in zip(in_sp, strides))
    if oshape is not None:
        begins = []
        for f, o in zip(full, oshape):
            total = f - o
            begins.append(total // 2 if auto == "SAME_UPPER" else total - total // 2)
        return tuple(begins), tuple(oshape)
    if auto == "VALID":
        pb = pe = (0,) * len(in_sp)
    out = tuple(f - p - q for f, p, q in zip(full, pb, pe))
    if min(out) < 1:
        raise ValueError(f"pads {list(pb) + list(pe)} leave an empty output (uncropped size {full})")
    return tuple(pb), out


@register_op("ConvTranspose", 1, attrs=_CONVT_ATTRS, check=_check_check(_parse_convt))
def _conv_transpose(node, consts):
    group, ks, geo, opad, oshape = _parse_convt(node)
    w_const = consts[1] if len(consts) > 1 else None
    b_const = consts[2] if len(consts) > 2 else None

    def regroup(w):
        # (C, M/g, *K) -> (g, M/g * K, C/g): one matmul per group gives every tap's columns
        c = w.shape[0]
        if c % group:
            raise ValueError(f"W has {c} input channels, not divisible by group={group}")
        return np.ascontiguousarray(w.reshape(group, c // group, -1).transpose(0, 2, 1))

    wt_const = None
    if w_const is not None:
        if w_const.ndim < 3:
            raise ValueError(f"W must have rank >= 3 (C, M/group, *kernel); got shape {w_const.shape}")
        w_const = _as_float(w_const, "W").astype(_compute_dtype(w_const.dtype), copy=False)
        wt_const = regroup(w_const)
        if geo is None:
            group, ks, geo, opad, oshape = _parse_convt(node, w_const.ndim - 2)
    if b_const is not None:
        b_const = np.ascontiguousarray(b_const.reshape(-1), dtype=_compute_dtype(b_const.dtype))

    def run(x, w, b=None):
        x = _as_float(x, "X")
        out_dt = x.dtype
        cdt = _compute_dtype(out_dt)
        if wt_const is not None:
            w_shape, wt = w_const.shape, wt_const
        else:
            w = np.asarray(w, dtype=cdt)
            w_shape, wt = w.shape, regroup(w)
        if b_const is not None:
            b = b_const
        nsp = len(w_shape) - 2
        if x.ndim != nsp + 2 or nsp < 1:
            raise ValueError(f"X must have rank {nsp + 2} to match W of shape {w_shape}; got shape {x.shape}")
        if x.shape[1] != w_shape[0]:
            raise ValueError(f"X has {x.shape[1]} channels but W of shape {w_shape} expects {w_shape[0]}")
        kshape = tuple(w_shape[2:])
        if ks is not None and kshape != ks:
            raise ValueError(f"kernel_shape {list(ks)} does not match W of shape {w_shape}")
        if geo is not None:
            strides, dil, pb, pe, auto = geo
            op_, os_ = opad, oshape
        else:
            _, _, (strides, dil, pb, pe, auto), op_, os_ = _parse_convt(node, nsp)
        if len(strides) != nsp:
            raise ValueError(f"strides/dilations/pads have {len(strides)} spatial axes; W has {nsp}")
        begins, out_sp = _convt_geometry(x.shape[2:], kshape, strides, dil, pb, pe, auto, op_, os_)
        m = w_shape[1] * group
        check_alloc((x.shape[0], m) + tuple(out_sp), "output")
        xc = x if x.dtype == cdt else x.astype(cdt)
        y = conv_transpose_nd(xc, wt, m, kshape, strides, dil, begins, out_sp)
        if b is not None:
            b = np.asarray(b)
            if b.size != m:
                raise ValueError(f"B must have {m} values (one per output channel); got shape {b.shape}")
            y += b.reshape((1, m) + (1,) * nsp).astype(cdt, copy=False)
        return y if y.dtype == out_dt else y.astype(out_dt)

    return run
