"""Resize and Upsample (NumPy; see edgepack.graph.registry for the maker contract).

Resize 10 (X, scales; nearest/linear; asymmetric coordinates) / 11 (roi, scales, sizes;
    cubic, coordinate_transformation_mode, nearest_mode, cubic_coeff_a, exclude_outside,
    extrapolation_value) / 13 (roi and scales optional) / 18 (antialias, axes,
    keep_aspect_ratio_policy) / 19 (half_pixel_symmetric).
Upsample 7 (scales attribute) / 9 (scales input): nearest or linear, asymmetric coordinates.

Modes: nearest (round_prefer_floor, round_prefer_ceil, floor, ceil), linear and cubic on any
number of axes; antialias (linear and cubic, when downscaling); every coordinate transformation
mode (half_pixel, half_pixel_symmetric, pytorch_half_pixel, align_corners, asymmetric,
tf_half_pixel_for_nn, tf_crop_and_resize with extrapolation_value).  Semantics follow the ONNX
reference implementation, which is the conformance oracle: coordinates are computed in float64;
where the spec leaves a gap, onnxruntime's choice is taken (Resize 10 and Upsample round nearest
as onnxruntime does: truncate when upscaling, ceil when downscaling; an output size comes from a
scale as ``floor(scale * input size)`` without the roi factor; a missing roi is the whole input).
One place where the two disagree follows the reference: with a ``scales`` input whose product
with the input size is fractional, align_corners (and the length tests of pytorch_half_pixel and
tf_crop_and_resize) use that fractional length, as the backend node cases expect; onnxruntime
uses the integer output size (e.g. 2x4 -> 1x2 at scale 0.6: 1, 3.142857 here, 1, 4 there).
Exporters give sizes or whole-number products, where both agree.

Interpolation is separable: per resized axis a table of (input index, weight) taps is built once
per (input size, output size, scale, roi) and kept per input shape, so a call is one gather per
tap and axis (two taps, linear, as ``a + (b - a) * w``).  Tables that reduce to whole-pixel
copies run as cheaper operations: an identity axis is skipped, an integer nearest upscale (what
exporters emit for 2x upsampling) is ``f`` slot writes, an integer nearest downscale a strided
slice.  The axes are resized in the order that moves the fewest elements (shrinking axes first,
gathers along the innermost axis on the smaller tensor).

Integer inputs interpolated linearly or cubically are rounded (half to even) and saturated.
"""

from __future__ import annotations

import numpy as np

from ..registry import REQUIRED, register_op
from ._util import check_alloc, norm_axes
from .conv import _check_check, _compute_dtype

_COORD_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
                "tf_half_pixel_for_nn", "tf_crop_and_resize")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
_POLICIES = ("stretch", "not_larger", "not_smaller")
_CACHE_MAX = 32


class _Config:
    """One node's attributes, validated."""

    def __init__(self, node, version: int):
        a = node.attrs
        self.version = version
        self.mode = a.get("mode", "nearest")
        modes = ("nearest", "linear") if version < 11 else ("nearest", "linear", "cubic")
        if self.mode not in modes:
            raise ValueError(f"mode must be one of {list(modes)}; got {self.mode!r}")
        if version < 11:
            self.coord, self.nearest = "asymmetric", "simple"
        else:
            self.coord = a.get("coordinate_transformation_mode", "half_pixel")
            if self.coord not in _COORD_MODES:
                raise ValueError(f"coordinate_transformation_mode must be one of {list(_COORD_MODES)}; "
                                 f"got {self.coord!r}")
            self.nearest = a.get("nearest_mode", "round_prefer_floor")
            if self.nearest not in _NEAREST_MODES:
                raise ValueError(f"nearest_mode must be one of {list(_NEAREST_MODES)}; got {self.nearest!r}")
        self.cubic_a = float(a.get("cubic_coeff_a", -0.75))
        self.exclude = bool(int(a.get("exclude_outside", 0) or 0))
        self.extrap = float(a.get("extrapolation_value", 0.0))
        self.antialias = bool(int(a.get("antialias", 0) or 0))
        if self.antialias and self.mode == "nearest":
            raise ValueError("antialias=1 applies to the linear and cubic modes only; got mode 'nearest'")
        self.policy = a.get("keep_aspect_ratio_policy", "stretch")
        if self.policy not in _POLICIES:
            raise ValueError(f"keep_aspect_ratio_policy must be one of {list(_POLICIES)}; got {self.policy!r}")
        axes = a.get("axes")
        self.axes = None if axes is None else [int(v) for v in axes]
        if self.axes is not None and len(set(self.axes)) != len(self.axes):
            raise ValueError(f"axes {self.axes} has repeated axes")


# -- one axis -------------------------------------------------------------------------------------

def _source_coords(cfg, size, out, scale, length, roi):
    """Input coordinate (float64) of every output index, and the tf_crop_and_resize mask of
    positions outside the input (or None).  ``length`` is the fractional output length
    ``scale * size`` (the reference uses it where the spec says "length_resized")."""
    y = np.arange(out, dtype=np.float64)
    ct = cfg.coord
    extrap = None
    if ct == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif ct == "asymmetric":
        x = y / scale
    elif ct == "pytorch_half_pixel":
        x = (y + 0.5) / scale - 0.5 if length > 1 else np.zeros(out)
    elif ct == "align_corners":
        x = y * (size - 1) / (length - 1) if length != 1 else np.zeros(out)
    elif ct == "tf_half_pixel_for_nn":
        x = (y + 0.5) / scale
    elif ct == "half_pixel_symmetric":
        offset = size / 2 * (1 - out / length)
        x = offset + (y + 0.5) / scale - 0.5
    else:  # tf_crop_and_resize
        # roi arithmetic in float32, as onnxruntime and the reference do it (roi is a float
        # tensor): 0.8 - (-0.2) is exactly 1 there, and a nearest tie then rounds the same way
        start, end = np.float32(roi[0]), np.float32(roi[1])
        if length > 1:
            x = float(start * np.float32(size - 1)) + y * float(end - start) * (size - 1) / (length - 1)
        else:
            x = np.full(out, float(np.float32(0.5) * (start + end) * np.float32(size - 1)))
        extrap = (x < 0) | (x > size - 1)
        if not extrap.any():
            extrap = None
    return x, extrap


def _keys(d, a):
    """Keys' cubic convolution kernel at distances ``d >= 0``."""
    d2 = d * d
    d3 = d2 * d
    near = (a + 2) * d3 - (a + 3) * d2 + 1
    far = a * d3 - 5 * a * d2 + 8 * a * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def _axis_op(cfg, size, out, scale, length, roi):
    """The operation resizing one axis: ('identity',), ('repeat', f), ('slice', start, step, n),
    ('take', idx, extrap) or ('taps', idx[n, out], w[n, out], extrap)."""
    x, extrap = _source_coords(cfg, size, out, scale, length, roi)
    if cfg.mode == "nearest":
        nm = cfg.nearest
        if nm == "simple":      # Resize 10 / Upsample, as onnxruntime rounds them
            i = np.ceil(x) if scale < 1 else np.trunc(x)
        elif nm == "round_prefer_floor":
            i = np.ceil(x - 0.5)
        elif nm == "round_prefer_ceil":
            i = np.floor(x + 0.5)
        elif nm == "floor":
            i = np.floor(x)
        else:
            i = np.ceil(x)
        return _simplify_take(np.clip(i, 0, size - 1).astype(np.intp), size, out, extrap)
    f = np.floor(x)
    r = x - f
    s = min(scale, 1.0) if cfg.antialias else 1.0
    if cfg.mode == "linear":
        start = int(np.floor(-1 / s)) + 1 if s < 1 else 0
        n = 2 - 2 * start
        offs = np.arange(start, start + n)
        w = np.clip(1 - np.abs(offs[:, None] - r[None, :]) * s, 0, 1)
    else:
        start = int(np.floor(-2 / s)) + 1 if s < 1 else -1
        n = 2 - 2 * start
        offs = np.arange(start, start + n)
        w = _keys(np.abs(offs[:, None] - r[None, :]) * s, cfg.cubic_a)
    idx = f[None, :].astype(np.int64) + offs[:, None]          # (n, out)
    if cfg.antialias:
        w = w / w.sum(axis=0, keepdims=True)
    if cfg.exclude:
        w = np.where((idx < 0) | (idx >= size), 0.0, w)
        tot = w.sum(axis=0, keepdims=True)
        w = w / np.where(tot == 0, 1.0, tot)
    idx = np.clip(idx, 0, size - 1).astype(np.intp)
    # Positions where one tap carries all the weight (whole-pixel samples) need no arithmetic.
    one = (w == 1.0).sum(axis=0) == 1
    if one.all() and ((w == 0.0) | (w == 1.0)).all():
        return _simplify_take(idx[np.argmax(w, axis=0), np.arange(out)], size, out, extrap)
    keep = np.any(w != 0.0, axis=1)        # taps that are zero everywhere (antialias edges)
    return ("taps", idx[keep], w[keep], extrap)


def _simplify_take(idx, size, out, extrap):
    if extrap is None and out > 0:
        ar = np.arange(out)
        if out == size and np.array_equal(idx, ar):
            return ("identity",)
        if out % size == 0 and np.array_equal(idx, ar // (out // size)):
            return ("repeat", out // size)
        if out > 1:
            step = int(idx[1] - idx[0])
            if step > 1 and np.array_equal(idx, idx[0] + step * ar):
                return ("slice", int(idx[0]), step, out)
    return ("take", idx, extrap)


# -- the whole tensor -----------------------------------------------------------------------------

def _repeat(v, ax: int, f: int):
    """Nearest integer upscaling of one axis: ``f`` slot writes into a (..., n, f, ...) buffer
    (several times faster than a broadcast copy, whose innermost loop would be f long)."""
    out = np.empty(v.shape[:ax + 1] + (f,) + v.shape[ax + 1:], dtype=v.dtype)
    lead = (slice(None),) * (ax + 1)
    for k in range(f):
        out[lead + (k,)] = v
    return out.reshape(v.shape[:ax] + (v.shape[ax] * f,) + v.shape[ax + 1:])


def _fill(y, ax, mask, value):
    sl = (slice(None),) * ax + (mask,)
    y[sl] = value


def _apply(plan, x, cfg):
    ops = [(ax, op) for ax, op in plan if op[0] != "identity"]
    if not ops:
        return x.copy()
    interp = any(op[0] == "taps" for _, op in ops)
    out_dt = x.dtype
    if interp and x.dtype.kind != "f":
        v = x.astype(np.float64 if x.dtype.itemsize >= 4 else np.float32)
    else:
        v = x.astype(_compute_dtype(x.dtype), copy=False) if interp else x
    for ax, op in ops:
        kind = op[0]
        if kind == "repeat":
            v = _repeat(v, ax, op[1])
        elif kind == "slice":
            v = v[(slice(None),) * ax + (slice(op[1], op[1] + op[2] * (op[3] - 1) + 1, op[2]),)]
        elif kind == "take":
            v = np.take(v, op[1], axis=ax)
            if op[2] is not None:
                _fill(v, ax, op[2], cfg.extrap)
        else:
            _, idx, w, extrap = op
            wshape = (-1,) + (1,) * (v.ndim - ax - 1)
            w = w.astype(v.dtype)
            if idx.shape[0] == 2 and np.array_equal(w[0] + w[1], np.ones_like(w[0])):
                # linear: a + (b - a) * w1, in place on the two gathers
                acc = np.take(v, idx[0], axis=ax)
                t = np.take(v, idx[1], axis=ax)
                t -= acc
                t *= w[1].reshape(wshape)
                acc += t
            else:
                acc = None
                for k in range(idx.shape[0]):
                    t = np.take(v, idx[k], axis=ax)
                    t *= w[k].reshape(wshape)
                    if acc is None:
                        acc = t
                    else:
                        acc += t
            v = acc
            if extrap is not None:
                _fill(v, ax, extrap, cfg.extrap)
    if v.dtype != out_dt:
        if out_dt.kind in "iu":
            info = np.iinfo(out_dt)
            v = np.clip(np.rint(v), info.min, info.max)
        elif out_dt == np.bool_:
            v = v != 0
        v = v.astype(out_dt)
    elif np.may_share_memory(v, x):
        v = v.copy()      # a view of the input (strided nearest downscale): hand out our own array
    return v


def _order(plan, shape):
    """The plan's axes in the order that moves the fewest elements: each step costs its output
    size times its taps, and gathers along the innermost axis (element gathers, not row
    copies) cost about four times as much."""
    import itertools

    def cost(seq):
        size = float(np.prod(shape)) if len(shape) else 1.0
        total = 0.0
        for ax, op in seq:
            size = size / max(shape[ax], 1) * _out_len(op, shape[ax])
            taps = op[1].shape[0] if op[0] == "taps" else 1
            total += size * taps * (4 if ax == len(shape) - 1 else 1)
        return total

    if len(plan) <= 1:
        return plan
    if len(plan) > 5:
        return sorted(plan, key=lambda p: _out_len(p[1], shape[p[0]]) / max(shape[p[0]], 1))
    return list(min(itertools.permutations(plan), key=cost))


def _out_len(op, size):
    kind = op[0]
    if kind == "identity":
        return size
    if kind == "repeat":
        return size * op[1]
    if kind == "slice":
        return op[3]
    return op[1].shape[-1]


def _plan(cfg, shape, scales, sizes, roi):
    """[(axis, op)] for an input shape and the node's scales/sizes/roi (Python lists or None)."""
    r = len(shape)
    axes = list(range(r)) if cfg.axes is None else list(norm_axes(cfg.axes, r, "axes"))
    n = len(axes)
    if (scales is None) == (sizes is None):
        raise ValueError("exactly one of scales and sizes must be given (non-empty); got "
                         f"scales={scales} and sizes={sizes}")
    given = scales if scales is not None else sizes
    if len(given) != n:
        raise ValueError(f"{'scales' if scales is not None else 'sizes'} must have {n} values "
                         f"(one per {'axis in axes' if cfg.axes is not None else 'input dimension'}); got {given}")
    out_shape = list(shape)
    scale = [1.0] * r
    length = [float(s) for s in shape]
    if scales is not None:
        for ax, s in zip(axes, scales):
            if not s > 0 or not np.isfinite(s):
                raise ValueError(f"scales must be positive; got {scales}")
            scale[ax] = float(s)
            length[ax] = s * shape[ax]
            out_shape[ax] = int(np.floor(length[ax]))
    else:
        if any(v < 0 for v in sizes):
            raise ValueError(f"sizes must be non-negative; got {sizes}")
        if any(shape[ax] == 0 for ax in axes):
            raise ValueError(f"cannot resize an empty axis of an input of shape {tuple(shape)}")
        if cfg.policy == "stretch":
            for ax, s in zip(axes, sizes):
                out_shape[ax] = int(s)
                scale[ax] = s / shape[ax]
                length[ax] = float(s)
        else:
            ratios = [s / shape[ax] for ax, s in zip(axes, sizes)]
            common = min(ratios) if cfg.policy == "not_larger" else max(ratios)
            for ax in axes:
                scale[ax] = common
                out_shape[ax] = int(common * shape[ax] + 0.5)   # round half up, as the spec says
                length[ax] = common * shape[ax]
    check_alloc(out_shape, "Resize output")
    rois = [(0.0, 1.0)] * r
    if cfg.coord == "tf_crop_and_resize" and roi is not None:
        if len(roi) != 2 * n:
            raise ValueError(f"roi must have {2 * n} values (starts then ends); got {len(roi)}")
        for i, ax in enumerate(axes):
            rois[ax] = (float(roi[i]), float(roi[n + i]))
    plan = []
    for ax in axes:
        if out_shape[ax] == shape[ax] and scale[ax] == 1.0 and rois[ax] == (0.0, 1.0):
            continue
        if out_shape[ax] == 0:
            plan.append((ax, ("take", np.zeros(0, np.intp), None)))
            continue
        plan.append((ax, _axis_op(cfg, shape[ax], out_shape[ax], scale[ax], length[ax], rois[ax])))
    return _order(plan, shape)


def _vector(v, what, kind):
    if v is None:
        return None
    a = np.asarray(v)
    if a.size == 0:
        return None
    if a.ndim != 1:
        raise ValueError(f"{what} must be a 1-D tensor; got shape {a.shape}")
    if kind == "i" and a.dtype.kind not in "iu":
        raise ValueError(f"{what} must be an integer tensor; got {a.dtype}")
    if kind == "f" and a.dtype.kind not in "fiu":
        raise ValueError(f"{what} must be a float tensor; got {a.dtype}")
    return [int(t) for t in a] if kind == "i" else [float(t) for t in a]


def _maker(version: int, upsample: bool = False):
    def make(node, consts):
        cfg = _Config(node, version)
        fixed_scales = None
        if upsample and version < 9:
            fixed_scales = [float(s) for s in node.attrs["scales"]]
        cache: dict = {}

        def run(x, *rest):
            if version < 11:
                scales_in = fixed_scales if fixed_scales is not None else (rest[0] if rest else None)
                roi, scales, sizes = None, _vector(scales_in, "scales", "f"), None
            else:
                rest = rest + (None,) * (3 - len(rest))
                roi = _vector(rest[0], "roi", "f") if cfg.coord == "tf_crop_and_resize" else None
                scales, sizes = _vector(rest[1], "scales", "f"), _vector(rest[2], "sizes", "i")
            key = (x.shape, None if scales is None else tuple(scales), None if sizes is None else tuple(sizes),
                   None if roi is None else tuple(roi))
            plan = cache.get(key)
            if plan is None:
                if cfg.axes is None and len(scales if scales is not None else sizes or []) != x.ndim:
                    given = scales if scales is not None else sizes
                    raise ValueError(f"{'scales' if scales is not None else 'sizes'} must have {x.ndim} values "
                                     f"(the rank of X); got {given}")
                plan = _plan(cfg, x.shape, scales, sizes, roi)
                if len(cache) >= _CACHE_MAX:
                    cache.clear()
                cache[key] = plan
            return _apply(plan, x, cfg)

        return run

    return make


def _check(version, upsample=False):
    def parse(node):
        _Config(node, version)
        if upsample and version < 9:
            s = node.attrs.get("scales")
            if not s or any(not float(v) > 0 for v in s):
                raise ValueError(f"scales must be a list of positive numbers; got {s!r}")
    return _check_check(parse)


_R11 = {"coordinate_transformation_mode": "half_pixel", "cubic_coeff_a": -0.75, "exclude_outside": 0,
        "extrapolation_value": 0.0, "mode": "nearest", "nearest_mode": "round_prefer_floor"}
_R18 = dict(_R11, antialias=0, axes=None, keep_aspect_ratio_policy="stretch")

register_op("Resize", 10, attrs={"mode": "nearest"}, check=_check(10), shape_inputs=(1,))(_maker(10))
register_op("Resize", 11, attrs=_R11, check=_check(11), shape_inputs=(1, 2, 3))(_maker(11))
register_op("Resize", 13, attrs=_R11, check=_check(13), shape_inputs=(1, 2, 3))(_maker(13))
register_op("Resize", 18, attrs=_R18, check=_check(18), shape_inputs=(1, 2, 3))(_maker(18))
register_op("Resize", 19, attrs=_R18, check=_check(19), shape_inputs=(1, 2, 3))(_maker(19))
register_op("Upsample", 7, attrs={"mode": "nearest", "scales": REQUIRED}, check=_check(7, True))(_maker(7, True))
register_op("Upsample", 9, attrs={"mode": "nearest"}, check=_check(9), shape_inputs=(1,))(_maker(9, True))
