"""Quantize / dequantize (ONNX QuantizeLinear / DequantizeLinear semantics), per-row dynamic
quantization of activations, and quantization parameters from min/max.

All kernels are C++ on every instruction-set path (scalar, AVX2, AVX-512, NEON) and give the
same bits as the NumPy reference ``clip(rint(x / scale) + zero_point, lo, hi)`` in float32, ties
to even included. Large inputs are split over the thread pool (:func:`edgepack.set_num_threads`);
results do not depend on the thread count. The GIL is released while a kernel runs.

Non-contiguous input (a strided view, Fortran order) is accepted and copied once to C order
before the kernel runs; pass C-contiguous arrays to avoid the copy.
"""

from __future__ import annotations

import numbers
import operator

import numpy as np

from .. import _core

__all__ = ["quantize", "dequantize", "quantize_rows", "choose_qparams"]

_RANGES = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255)}


def _out_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be numpy.int8 or numpy.uint8; got {dtype!r}") from None
    if dt not in _RANGES:
        raise TypeError(f"dtype must be numpy.int8 or numpy.uint8; got {dt}")
    return dt


def _scale_arg(scale) -> np.ndarray:
    """scale as a float32 array of 0 or 1 dimensions (ONNX stores scales as float32)."""
    if isinstance(scale, (bool, np.bool_)):
        raise TypeError("scale must be a positive float or a 1-D float array; got bool")
    if isinstance(scale, numbers.Real):
        with np.errstate(over="ignore"):  # beyond float32's range: inf, refused by the kernel
            return np.asarray(scale, dtype=np.float32)
    a = scale if isinstance(scale, np.ndarray) else None
    if a is None:
        try:
            a = np.asarray(scale)
        except Exception:
            raise TypeError(f"scale must be a positive float or a 1-D float array; got "
                            f"{type(scale).__name__}") from None
    if a.dtype.kind not in "fiu":
        raise TypeError(f"scale must be a positive float or a 1-D float array; got {a.dtype} "
                        f"{a.shape}")
    with np.errstate(over="ignore"):  # float64 beyond float32's range: inf, refused by the kernel
        return np.ascontiguousarray(a, dtype=np.float32)


def _axis_arg(axis):
    """None or a Python int (numpy integers accepted); range is checked against x by the kernel."""
    if axis is None:
        return None
    if isinstance(axis, (bool, np.bool_)):
        raise TypeError("axis must be None or an int; got bool")
    try:
        a = operator.index(axis)
    except TypeError:
        raise TypeError(f"axis must be None or an int; got {type(axis).__name__}") from None
    if not -(1 << 31) <= a < (1 << 31):
        raise ValueError(f"axis {a} is out of range")
    return a


def _zp_arg(zero_point, dt: np.dtype, name: str = "zero_point"):
    """zero_point as an int32 array (0-D or 1-D), or None for 0."""
    if zero_point is None:
        return None
    lo, hi = _RANGES[dt]
    if isinstance(zero_point, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer or an integer array; got bool")
    if isinstance(zero_point, numbers.Integral) and not isinstance(zero_point, np.generic):
        if not lo <= zero_point <= hi:
            raise ValueError(f"{name} must be in [{lo}, {hi}] for {dt}; got {zero_point}")
        return np.asarray(zero_point, dtype=np.int32)
    a = zero_point if isinstance(zero_point, np.ndarray) else np.asarray(zero_point)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer or an integer array ({dt}); got {a.dtype} "
                        f"{a.shape}")
    if a.dtype in _RANGES and a.dtype != dt:
        raise TypeError(f"{name} is {a.dtype} but the quantized dtype is {dt} (ONNX requires them "
                        f"to match; pass dtype=np.{a.dtype})")
    if a.size and (a.min() < lo or a.max() > hi):
        bad = a.min() if a.min() < lo else a.max()
        raise ValueError(f"{name} must be in [{lo}, {hi}] for {dt}; got {bad}")
    return np.ascontiguousarray(a, dtype=np.int32)


def quantize(x: np.ndarray, scale, zero_point=None, axis: int | None = None,
             dtype=np.int8, *, out: np.ndarray | None = None) -> np.ndarray:
    """Affine quantization, ONNX QuantizeLinear: ``q = saturate(round_half_even(x / scale) + zp)``.

    Parameters
    ----------
    x : numpy.ndarray of float32, any shape (empty allowed)
        Values to quantize; NaN or Inf raises ``ValueError``.
    scale : float or numpy.ndarray of float, shape () or (x.shape[axis],)
        Step size(s), converted to float32; each must be finite and > 0. A scalar (or a 1-element
        array with ``axis=None``) quantizes per tensor; a 1-D array quantizes per channel along
        ``axis``.
    zero_point : int or integer numpy.ndarray, same shape as scale, optional
        Value(s) in the range of ``dtype`` (default 0). An int8/uint8 array must have ``dtype``.
    axis : int, optional
        Channel axis for a 1-D scale (negative counts from the end). ``None``: per tensor.
    dtype : numpy.int8 or numpy.uint8
        Output type: saturates to [-128, 127] or [0, 255].
    out : numpy.ndarray of dtype, shape x.shape, C-contiguous, optional
        Written in place and returned (saves allocating, and first-touching, a new array).

    Returns
    -------
    numpy.ndarray of dtype, shape x.shape

    Raises
    ------
    TypeError
        x not float32; dtype not int8/uint8; scale or zero_point of a non-numeric type.
    ValueError
        NaN/Inf in x; scale not finite and positive; scale of the wrong length or a 1-D scale
        without axis; axis out of range; zero_point out of range; out of the wrong shape or
        not C-contiguous (a wrong out dtype is a TypeError).
    """
    dt = _out_dtype(dtype)
    return _core.quantize(x, _scale_arg(scale), _zp_arg(zero_point, dt), _axis_arg(axis), dt == np.uint8, out)


def dequantize(q: np.ndarray, scale, zero_point=None, axis: int | None = None, *,
               out: np.ndarray | None = None) -> np.ndarray:
    """ONNX DequantizeLinear: ``x = float32(q - zero_point) * scale``.

    Parameters
    ----------
    q : numpy.ndarray of int8 or uint8, any shape (empty allowed)
    scale : float or numpy.ndarray of float, shape () or (q.shape[axis],)
        As in :func:`quantize` (float32, finite, > 0).
    zero_point : int or integer numpy.ndarray, same shape as scale, optional
        In the range of ``q.dtype`` (default 0).
    axis : int, optional
        Channel axis for a 1-D scale. ``None``: per tensor.
    out : numpy.ndarray of float32, shape q.shape, C-contiguous, optional
        Written in place and returned.

    Returns
    -------
    numpy.ndarray of float32, shape q.shape
        Exactly ``(q - zero_point).astype(np.float32) * scale`` (one rounding).

    Raises
    ------
    TypeError
        q not int8/uint8; scale or zero_point of a non-numeric type or zero_point of the other
        8-bit type.
    ValueError
        Bad scale, scale length, axis or zero_point range (as in :func:`quantize`).
    """
    if not isinstance(q, np.ndarray):
        raise TypeError(f"q must be a numpy.ndarray of int8 or uint8; got {type(q).__name__}")
    if q.dtype not in _RANGES:
        raise TypeError(f"q must be int8 or uint8; got {q.dtype} {q.shape}")
    return _core.dequantize(q, _scale_arg(scale), _zp_arg(zero_point, q.dtype), _axis_arg(axis), out)


def quantize_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8 quantization of activations (the dynamic path of ``linear_int8``).

    For each row, ``scale = max|x| / 127`` (1 for an all-zero row) and
    ``q = clip(round_half_even(x / scale), -127, 127)``; absmax and quantization are fused, one
    pass over each row while it is in L1. This is the very routine ``linear_int8`` runs.

    Parameters
    ----------
    x : numpy.ndarray of float32, shape (M, K)

    Returns
    -------
    q : numpy.ndarray of int8, shape (M, K)
    scale : numpy.ndarray of float32, shape (M,)

    Raises
    ------
    TypeError
        x not a float32 array.
    ValueError
        x not 2-D; NaN or Inf in x.
    """
    return _core.quantize_rows(x)


def choose_qparams(x: np.ndarray, axis: int | None = None, symmetric: bool = True,
                   dtype=np.int8):
    """Scale and zero point from the min/max of x (per tensor or per channel along ``axis``).

    The range always includes 0. In float32 arithmetic:

    * symmetric: ``scale = max(|min|, |max|) / 127``; zero point 0 for int8, 128 for uint8.
    * asymmetric: ``scale = (max - min) / (qmax - qmin)`` and
      ``zero_point = round_half_even(clip(qmin - min / scale, qmin, qmax))``; for uint8 this is
      exactly ONNX DynamicQuantizeLinear (qmin 0, qmax 255); int8 uses [-128, 127].
    * a scale that comes out 0 (all zeros, or a range below ~1e-43 whose quotient underflows)
      is 1 instead, so the result is always valid for :func:`quantize` (where ONNX Runtime
      would return 0 for the underflow case); a range wider than float32 (max - min overflows)
      is halved before dividing, where ONNX Runtime would return inf.

    Parameters
    ----------
    x : numpy.ndarray of float32, any shape (empty allowed: scale 1, zero point as for zeros)
    axis : int, optional
        Channel axis: one (scale, zero_point) per ``x.shape[axis]``. ``None``: per tensor.
    symmetric : bool
    dtype : numpy.int8 or numpy.uint8

    Returns
    -------
    scale : numpy.float32 (per tensor) or numpy.ndarray of float32, shape (x.shape[axis],)
    zero_point : numpy.int8/uint8 scalar, or numpy.ndarray of dtype, shape (x.shape[axis],)
        Ready for :func:`quantize` (pass the same ``dtype`` and ``axis``).

    Raises
    ------
    TypeError
        x not float32; dtype not int8/uint8.
    ValueError
        NaN/Inf in x (found in the min/max pass); axis out of range.
    """
    dt = _out_dtype(dtype)
    mn, mx = _core.minmax(x, _axis_arg(axis))
    zero = np.float32(0)
    mn = np.minimum(mn, zero)  # empty channels (+inf / -inf) become 0 here
    mx = np.maximum(mx, zero)
    lo, hi = _RANGES[dt]
    # A zero range, or one so small that the quotient underflows, gets scale 1 (never 0).
    if symmetric:
        scale = np.maximum(-mn, mx) / np.float32(127)
        scale = np.where(scale > 0, scale, np.float32(1)).astype(np.float32)
        zp = np.full(scale.shape, 128 if dt == np.uint8 else 0, dtype=dt)
    else:
        with np.errstate(over="ignore"):
            span = mx - mn
        scale = span / np.float32(hi - lo)
        big = ~np.isfinite(span)  # max - min beyond float32: halve first (ORT would return inf)
        if big.any():
            half = (mx[big] * np.float32(0.5) - mn[big] * np.float32(0.5)) / np.float32(hi - lo)
            scale[big] = half * np.float32(2)
        scale = np.where(scale > 0, scale, np.float32(1)).astype(np.float32)
        init = np.float32(lo) - mn / scale
        zp = np.rint(np.clip(init, np.float32(lo), np.float32(hi))).astype(dt)
    if axis is None:
        return scale[0], zp[0]
    return scale, zp
