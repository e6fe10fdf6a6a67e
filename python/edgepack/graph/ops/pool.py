"""Pooling operators (NumPy; see edgepack.graph.registry for the maker contract).

MaxPool 1 / 8 (storage_order, the Indices output) / 10 (ceil_mode, dilations) / 11 / 12 (int8,
    uint8): any spatial rank, strides, dilations, pads, auto_pad, ceil_mode.  Indices are flat
    positions in the input (N, C, *spatial) tensor, row-major or, with storage_order=1,
    column-major over the spatial axes; ties keep the first window position.
AveragePool 7 (count_include_pad) / 10 (ceil_mode) / 11 / 19 (dilations): same geometry;
    count_include_pad=1 counts padding but not the window part past it that ceil_mode adds
    (PyTorch and onnxruntime do the same).
LpPool 2 / 11 / 18 (ceil_mode, dilations): ``(sum |x|^p) ** (1/p)`` over each window.
GlobalAveragePool, GlobalMaxPool (1), GlobalLpPool (2): over every spatial axis.

Window maxima and sums are separable: one strided whole-tensor operation per tap and spatial
axis (3 + 3 for 3x3), innermost axis first; no per-pixel Python loops.  MaxPool's Indices output
takes one pass per window tap instead (it must know which tap won).  MaxPool runs on any real
dtype; the others on floating-point tensors (float16 is computed in float32 and cast back).
"""

from __future__ import annotations

import itertools

import numpy as np

from ..registry import REQUIRED, register_op
from ._util import check_alloc
from .conv import _check_check, _compute_dtype, same_pads, spatial_attrs

_BASE = {"auto_pad": "NOTSET", "kernel_shape": REQUIRED, "pads": None, "strides": None}


class _Geometry:
    """Window geometry of one input shape: output size, padding and per-axis tap slices."""

    def __init__(self, in_sp, kshape, strides, dil, pb, pe, auto, ceil_mode):
        out, pbs, pes, ends = [], [], [], []
        for size, k, s, d, p, q in zip(in_sp, kshape, strides, dil, pb, pe):
            win = (k - 1) * d + 1
            if auto in ("SAME_UPPER", "SAME_LOWER"):
                o, p, q = same_pads(size, k, s, d, auto == "SAME_UPPER")
            else:
                if auto == "VALID":
                    p = q = 0
                span = size + p + q - win
                o = (-(-span // s) if ceil_mode else span // s) + 1 if span >= 0 else 0
                # ceil_mode: the last window must start inside the input or its begin padding
                if ceil_mode and o > 0 and (o - 1) * s >= size + p:
                    o -= 1
            if o < 1:
                raise ValueError(f"input spatial size {size} (+ padding {p}+{q}) is smaller than the "
                                 f"(dilated) window {win}")
            out.append(o)
            pbs.append(p)
            pes.append(q)
            ends.append(size + p + q)   # padded extent: what count_include_pad counts
        self.out = tuple(out)
        self.pb = tuple(pbs)
        self.pe = tuple(pes)
        # ceil_mode windows may run past the end padding: pad that far too (never counted)
        self.pad_end = tuple(max(q, (o - 1) * s + (k - 1) * d + 1 - size - p)
                             for o, s, k, d, size, p, q in zip(out, strides, kshape, dil, in_sp, pbs, pes))
        self.in_sp = tuple(in_sp)
        self.kshape, self.strides, self.dil = tuple(kshape), tuple(strides), tuple(dil)
        self.ends = tuple(ends)
        self.taps = list(itertools.product(*[range(k) for k in kshape]))

    def pad(self, x, value):
        if not any(self.pb) and not any(self.pad_end):
            return x
        check_alloc(x.shape[:2] + tuple(sz + p + q for sz, p, q in zip(self.in_sp, self.pb, self.pad_end)),
                    "padded X")
        widths = [(0, 0), (0, 0)] + list(zip(self.pb, self.pad_end))
        return np.pad(x, widths, mode="constant", constant_values=value)

    def tap_slices(self, xp):
        """(tap index, strided view of padded ``xp``) for each kernel tap."""
        for t, tap in enumerate(self.taps):
            sl = (slice(None), slice(None)) + tuple(
                slice(i * d, i * d + s * (o - 1) + 1, s) for i, d, s, o in zip(tap, self.dil, self.strides, self.out))
            yield t, xp[sl]

    def reduce(self, xp, ufunc):
        """``ufunc`` (np.maximum or np.add) over every window of padded ``xp``, one spatial
        axis at a time: a k1 x k2 window costs k1 + k2 passes instead of k1 * k2 (max and sum
        are separable)."""
        v = xp
        for i in reversed(range(len(self.out))):       # innermost first: it shrinks the rest
            ax = 2 + i
            k, d, s, o = self.kshape[i], self.dil[i], self.strides[i], self.out[i]
            lead = (slice(None),) * ax
            if k == 1 and s == 1 and v.shape[ax] == o:
                continue
            y = v[lead + (slice(0, s * (o - 1) + 1, s),)].copy()
            for t in range(1, k):
                ufunc(y, v[lead + (slice(t * d, t * d + s * (o - 1) + 1, s),)], out=y)
            v = y
        return v if v is not xp else v.copy()

    def counts(self, include_pad: bool) -> np.ndarray | None:
        """Divisor per output position (broadcastable), or None when every window is full."""
        per_axis = []
        full = True
        for o, k, s, d, p, size, end in zip(self.out, self.kshape, self.strides, self.dil, self.pb,
                                             self.in_sp, self.ends):
            pos = np.arange(o)[:, None] * s + np.arange(k)[None, :] * d    # padded coordinates
            ok = pos < end if include_pad else (pos >= p) & (pos < p + size)
            c = ok.sum(axis=1)
            full &= bool((c == k).all())
            per_axis.append(c)
        if full:
            return None
        cnt = per_axis[0].astype(np.float64)
        for c in per_axis[1:]:
            cnt = np.multiply.outer(cnt, c)
        return cnt.reshape((1, 1) + self.out)


def _parse(node, dilations: bool):
    a = node.attrs
    ks = tuple(int(v) for v in a["kernel_shape"])
    if not ks or min(ks) < 1:
        raise ValueError(f"kernel_shape must be positive; got {list(ks)}")
    strides, dil, pb, pe, auto = spatial_attrs(node, len(ks), dilations=dilations)
    ceil_mode = bool(int(a.get("ceil_mode", 0) or 0))
    return ks, strides, dil, pb, pe, auto, ceil_mode


def _geometry_cache(params):
    ks, strides, dil, pb, pe, auto, ceil_mode = params
    cache: dict = {}

    def geometry(x):
        if x.ndim != len(ks) + 2:
            raise ValueError(f"X must have rank {len(ks) + 2} (N, C and {len(ks)} spatial axes for "
                             f"kernel_shape {list(ks)}); got shape {x.shape}")
        key = x.shape[2:]
        g = cache.get(key)
        if g is None:
            g = _Geometry(key, ks, strides, dil, pb, pe, auto, ceil_mode)
            if len(cache) > 64:
                cache.clear()
            cache[key] = g
        return g

    return geometry


def _lowest(dt):
    return -np.inf if dt.kind == "f" else np.iinfo(dt).min if dt.kind in "iu" else False


def _check_real(x, what="X"):
    if x.dtype.kind not in "fiu" and x.dtype != np.bool_:
        raise ValueError(f"{what} must be a real-valued tensor; got {x.dtype}")


# -- MaxPool --------------------------------------------------------------------------------------

def _maxpool_maker(dilations: bool):
    def make(node, consts):
        params = _parse(node, dilations)
        storage_order = int(node.attrs.get("storage_order", 0) or 0)
        geometry = _geometry_cache(params)
        want_indices = len(node.outputs) > 1 and bool(node.outputs[1])

        def run(x):
            _check_real(x)
            g = geometry(x)
            xp = g.pad(x, _lowest(x.dtype))
            if not want_indices:
                y = g.reduce(xp, np.maximum)
                return y if len(node.outputs) == 1 else (y, None)
            return _maxpool_indices(x, xp, g, storage_order)

        return run

    return make


def _maxpool_indices(x, xp, g, storage_order):
    nsp = len(g.out)
    # valid[t] says, per output position, whether tap t reads the input (not padding)
    axis_valid = []
    for i in range(nsp):
        o, s, d, p, size = g.out[i], g.strides[i], g.dil[i], g.pb[i], g.in_sp[i]
        pos = np.arange(o)[:, None] * s + np.arange(g.kshape[i])[None, :] * d - p   # input coordinate
        axis_valid.append((pos >= 0) & (pos < size))
    y = np.full(x.shape[:2] + g.out, _lowest(x.dtype), dtype=x.dtype)
    arg = np.full(x.shape[:2] + g.out, -1, dtype=np.int64)
    for t, sl in g.tap_slices(xp):
        tap = g.taps[t]
        valid = np.ones((1,) * nsp, dtype=bool)
        for i in range(nsp):
            shape = [1] * nsp
            shape[i] = g.out[i]
            valid = valid & axis_valid[i][:, tap[i]].reshape(shape)
        take = valid & ((sl > y) | (arg < 0))
        np.copyto(y, sl, where=take)
        np.copyto(arg, t, where=take)
    # flat index: ((n * C + c) * prod(spatial)) + spatial offset of the winning tap
    taps = np.array(g.taps, dtype=np.int64).reshape(-1, nsp) if g.taps else np.zeros((1, nsp), np.int64)
    a = np.maximum(arg, 0)
    in_sp = g.in_sp
    if storage_order:
        mult = [int(np.prod(in_sp[:i])) for i in range(nsp)]           # column-major spatial strides
    else:
        mult = [int(np.prod(in_sp[i + 1:])) for i in range(nsp)]
    idx = np.zeros(arg.shape, dtype=np.int64)
    for i in range(nsp):
        shape = [1] * (nsp + 2)
        shape[2 + i] = g.out[i]
        base = (np.arange(g.out[i]) * g.strides[i] - g.pb[i]).reshape(shape)
        coord = base + taps[:, i][a] * g.dil[i]
        idx += coord * mult[i]
    n, c = x.shape[:2]
    plane = int(np.prod(in_sp))
    idx += (np.arange(n * c, dtype=np.int64) * plane).reshape(n, c, *([1] * nsp))
    return y, idx


def _check_maxpool(dilations):
    def check(node):
        msgs = _check_check(lambda n: _parse(n, dilations))(node)
        so = int(node.attrs.get("storage_order", 0) or 0)
        if so not in (0, 1):
            msgs.append(f"storage_order must be 0 or 1; got {so}")
        return msgs
    return check


register_op("MaxPool", 1, attrs=_BASE, check=_check_maxpool(False))(_maxpool_maker(False))
register_op("MaxPool", 8, attrs=dict(_BASE, storage_order=0), check=_check_maxpool(False))(_maxpool_maker(False))
# 10 added ceil_mode and dilations; 11 clarified pads/auto_pad; 12 added int8/uint8: one maker.
for _v in (10, 11, 12):
    register_op("MaxPool", _v, attrs=dict(_BASE, storage_order=0, ceil_mode=0, dilations=None),
                check=_check_maxpool(True))(_maxpool_maker(True))


# -- AveragePool / LpPool -------------------------------------------------------------------------

def _float_input(x):
    if x.dtype.kind != "f":
        raise ValueError(f"X must be a floating-point tensor; got {x.dtype}")
    cdt = _compute_dtype(x.dtype)
    return (x if x.dtype == cdt else x.astype(cdt)), x.dtype


def _window_sum(xp, g):
    return g.reduce(xp, np.add)


def _avgpool_maker(dilations: bool):
    def make(node, consts):
        params = _parse(node, dilations)
        include_pad = bool(int(node.attrs.get("count_include_pad", 0) or 0))
        geometry = _geometry_cache(params)
        ksize = int(np.prod(params[0]))

        def run(x):
            xc, out_dt = _float_input(x)
            g = geometry(xc)
            y = _window_sum(g.pad(xc, 0), g)
            cnt = g.counts(include_pad)
            if cnt is None:
                y *= y.dtype.type(1.0 / ksize)
            else:
                y /= cnt.astype(y.dtype)
            return y if y.dtype == out_dt else y.astype(out_dt)

        return run

    return make


_AVG = dict(_BASE, count_include_pad=0)
_chk = _check_check(lambda n: _parse(n, False))
register_op("AveragePool", 7, attrs=_AVG, check=_chk)(_avgpool_maker(False))
register_op("AveragePool", 10, attrs=dict(_AVG, ceil_mode=0), check=_chk)(_avgpool_maker(False))
register_op("AveragePool", 11, attrs=dict(_AVG, ceil_mode=0), check=_chk)(_avgpool_maker(False))
register_op("AveragePool", 19, attrs=dict(_AVG, ceil_mode=0, dilations=None),
            check=_check_check(lambda n: _parse(n, True)))(_avgpool_maker(True))


def _lp_p(node) -> float:
    p = node.attrs.get("p", 2)
    p = float(p)
    if not p > 0 or not np.isfinite(p):
        raise ValueError(f"p must be a positive number; got {node.attrs.get('p')!r}")
    return p


def _pow_abs(x, p):
    if p == 1:
        return np.abs(x)
    if p == 2:
        return x * x
    return np.power(np.abs(x), x.dtype.type(p))


def _root(y, p):
    if p == 1:
        return y
    if p == 2:
        return np.sqrt(y, out=y)
    return np.power(y, y.dtype.type(1.0 / p), out=y)


def _lppool_maker(dilations: bool):
    def make(node, consts):
        params = _parse(node, dilations)
        p = _lp_p(node)
        geometry = _geometry_cache(params)

        def run(x):
            xc, out_dt = _float_input(x)
            g = geometry(xc)
            y = _root(_window_sum(g.pad(_pow_abs(xc, p), 0), g), p)
            return y if y.dtype == out_dt else y.astype(out_dt)

        return run

    return make


def _check_lp(dilations):
    def check(node):
        return _check_check(lambda n: (_parse(n, dilations), _lp_p(n)))(node)
    return check


register_op("LpPool", 2, attrs=dict(_BASE, p=2), check=_check_lp(False))(_lppool_maker(False))
register_op("LpPool", 11, attrs=dict(_BASE, p=2), check=_check_lp(False))(_lppool_maker(False))
register_op("LpPool", 18, attrs=dict(_BASE, p=2, ceil_mode=0, dilations=None),
            check=_check_lp(True))(_lppool_maker(True))


# -- global pools ---------------------------------------------------------------------------------

def _spatial_view(x):
    if x.ndim < 3:
        raise ValueError(f"X must have rank >= 3 (N, C, spatial...); got shape {x.shape}")
    return x.reshape(x.shape[0], x.shape[1], -1), x.shape[:2] + (1,) * (x.ndim - 2)


@register_op("GlobalAveragePool", 1)
def _global_avg(node, consts):
    def run(x):
        xc, out_dt = _float_input(x)
        v, shape = _spatial_view(xc)
        y = v.mean(axis=2).reshape(shape)
        return y if y.dtype == out_dt else y.astype(out_dt)
    return run


@register_op("GlobalMaxPool", 1)
def _global_max(node, consts):
    def run(x):
        _check_real(x)
        v, shape = _spatial_view(x)
        return v.max(axis=2).reshape(shape)
    return run


@register_op("GlobalLpPool", 2, attrs={"p": 2}, check=_check_check(_lp_p))
def _global_lp(node, consts):
    p = _lp_p(node)

    def run(x):
        xc, out_dt = _float_input(x)
        v, shape = _spatial_view(xc)
        y = _root(_pow_abs(v, p).sum(axis=2), p).reshape(shape)
        return y if y.dtype == out_dt else y.astype(out_dt)
    return run
