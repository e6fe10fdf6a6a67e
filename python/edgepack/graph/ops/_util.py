"""Helpers shared by the operator families: ONNX dtype codes, axes, broadcasting limits and the
allocation guard that keeps a hostile graph from asking for unbounded memory."""

from __future__ import annotations

import numpy as np

__all__ = ["ONNX_DTYPES", "onnx_dtype", "check_alloc", "norm_axis", "norm_axes", "as_int_list",
           "MAX_ELEMENTS"]

# TensorProto.DataType codes -> NumPy dtypes (kept here so graphs run without the onnx package).
ONNX_DTYPES = {
    1: np.dtype(np.float32), 2: np.dtype(np.uint8), 3: np.dtype(np.int8), 4: np.dtype(np.uint16),
    5: np.dtype(np.int16), 6: np.dtype(np.int32), 7: np.dtype(np.int64), 9: np.dtype(np.bool_),
    10: np.dtype(np.float16), 11: np.dtype(np.float64), 12: np.dtype(np.uint32), 13: np.dtype(np.uint64),
}

# Upper bound on the elements one operator may create from sizes it reads from a tensor
# (ConstantOfShape, Expand, Tile, Range, Pad, Resize, ...): 2**31 elements (8 GiB of float32)
# is far past any model's activation and well short of what an int64 size could ask for.
MAX_ELEMENTS = 1 << 31


def onnx_dtype(code, what: str = "to") -> np.dtype:
    """NumPy dtype for an ONNX TensorProto data type code."""
    try:
        return ONNX_DTYPES[int(code)]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{what}: ONNX data type {code!r} is not supported "
                         f"(supported codes: {sorted(ONNX_DTYPES)})") from None


def check_alloc(shape, what: str = "output") -> tuple[int, ...]:
    """``shape`` as a tuple of non-negative ints whose product is at most MAX_ELEMENTS."""
    out = []
    n = 1
    for d in shape:
        d = int(d)
        if d < 0:
            raise ValueError(f"{what}: negative dimension {d} in shape {list(shape)}")
        out.append(d)
        n *= d
    if n > MAX_ELEMENTS:
        raise ValueError(f"{what}: shape {out} has {n} elements, more than the {MAX_ELEMENTS} edgepack allows")
    return tuple(out)


def norm_axis(axis: int, ndim: int, what: str = "axis") -> int:
    a = int(axis)
    if not -ndim <= a < max(ndim, 1):
        raise ValueError(f"{what} {axis} is out of range for a tensor of rank {ndim}")
    return a % ndim if ndim else 0


def norm_axes(axes, ndim: int, what: str = "axes") -> tuple[int, ...]:
    out = tuple(norm_axis(a, ndim, what) for a in axes)
    if len(set(out)) != len(out):
        raise ValueError(f"{what} {list(axes)} has repeated axes")
    return out


def as_int_list(v, what: str) -> list[int]:
    """A 0-D or 1-D integer tensor (or list) as a list of Python ints."""
    a = np.asarray(v)
    if a.dtype.kind not in "iu" or a.ndim > 1:
        raise ValueError(f"{what} must be a 1-D integer tensor; got {a.dtype} of shape {a.shape}")
    return [int(x) for x in a.reshape(-1)]
