"""Reductions (see edgepack.graph.registry for the maker contract).

Registered (ai.onnx, first opset of each range):

* ReduceSum 1 (``axes`` attribute), 13 (``axes`` input, ``noop_with_empty_axes``).
* ReduceMean, ReduceMax, ReduceMin, ReduceProd, ReduceL1, ReduceL2, ReduceLogSum,
  ReduceLogSumExp, ReduceSumSquare 1 (``axes`` attribute), 18 (``axes`` input,
  ``noop_with_empty_axes``).  (ReduceMax/Min 12 and 20 only widened the types.)
* ArgMax, ArgMin 1, 12 (``select_last_index``).

No axes (absent, or an empty list or tensor) reduces every axis, unless ``noop_with_empty_axes``
is set, when the input is returned unchanged.  Results keep the input dtype: sums and products
accumulate in it (as ONNX and onnxruntime do); integer inputs of Mean/L2/LogSum/LogSumExp are
computed in float64 and cast back.  Reducing an empty set gives the operation's identity: 0 for
Sum/L1/L2/SumSquare, 1 for Prod, -inf (the dtype's minimum for integers, False for bool) for Max
and LogSum/LogSumExp, +inf (maximum, True) for Min, NaN for Mean.  ArgMax/ArgMin return int64
and fail on an empty axis.
"""

from __future__ import annotations

import numpy as np

from ..registry import register_op
from ._util import as_int_list, norm_axes, norm_axis

__all__: list = []


def _float_or_cast(fn):
    """``fn`` for float inputs; integer inputs computed in float64 and cast back."""
    def g(x, axes, keep):
        if x.dtype.kind in "fc":
            return fn(x, axes, keep)
        return fn(x.astype(np.float64), axes, keep).astype(x.dtype)
    return g


# ufunc.reduce directly: np.sum/np.max/np.mean add several microseconds of Python dispatch per call.
_add, _maximum, _minimum, _multiply = np.add.reduce, np.maximum.reduce, np.minimum.reduce, np.multiply.reduce


def _sum(x, axes, keep):
    return _add(x, axis=axes, keepdims=keep, dtype=x.dtype)


def _mean(x, axes, keep):
    # As np.mean: the sum in the input dtype (float32 for float16), then one division.
    dt = x.dtype
    if dt.kind == "f":
        s = _add(x, axis=axes, keepdims=keep, dtype=np.float32 if dt.itemsize < 4 else dt)
        s = np.true_divide(s, x.size // max(s.size, 1))
        return s if s.dtype == dt else s.astype(dt)
    s = _add(x, axis=axes, keepdims=keep, dtype=np.float64)
    return (s / (x.size // max(s.size, 1))).astype(dt)


def _max(x, axes, keep):
    return _maximum(x, axis=axes, keepdims=keep)


def _min(x, axes, keep):
    return _minimum(x, axis=axes, keepdims=keep)


def _prod(x, axes, keep):
    return _multiply(x, axis=axes, keepdims=keep, dtype=x.dtype)


def _l1(x, axes, keep):
    return _add(np.abs(x), axis=axes, keepdims=keep, dtype=x.dtype)


def _sum_square(x, axes, keep):
    return _add(np.square(x), axis=axes, keepdims=keep, dtype=x.dtype)


@_float_or_cast
def _l2(x, axes, keep):
    return np.sqrt(_add(np.square(x), axis=axes, keepdims=keep, dtype=x.dtype))


@_float_or_cast
def _log_sum(x, axes, keep):
    return np.log(_add(x, axis=axes, keepdims=keep, dtype=x.dtype))


@_float_or_cast
def _log_sum_exp(x, axes, keep):
    # Shift by the maximum so that exp cannot overflow; an infinite maximum is not subtracted
    # (inf - inf would be NaN) and then decides the result by itself.
    m = _maximum(x, axis=axes, keepdims=True)
    m = np.where(np.isfinite(m), m, np.zeros((), x.dtype))
    s = _add(np.exp(x - m), axis=axes, keepdims=keep, dtype=x.dtype)
    if not keep:
        m = m.reshape(s.shape)
    return np.log(s) + m


def _empty_max(dt):
    if dt.kind == "b":
        return False
    return np.iinfo(dt).min if dt.kind in "iu" else -np.inf


def _empty_min(dt):
    if dt.kind == "b":
        return True
    return np.iinfo(dt).max if dt.kind in "iu" else np.inf


def _empty_neg_inf(dt):
    return -np.inf if dt.kind == "f" else 0


# op -> (reduction on a non-empty input, value of an empty reduction for a dtype)
_REDUCE = {
    "ReduceSum": (_sum, lambda dt: 0),
    "ReduceMean": (_mean, lambda dt: np.nan if dt.kind == "f" else 0),
    "ReduceMax": (_max, _empty_max),
    "ReduceMin": (_min, _empty_min),
    "ReduceProd": (_prod, lambda dt: 1),
    "ReduceL1": (_l1, lambda dt: 0),
    "ReduceL2": (_l2, lambda dt: 0),
    "ReduceLogSum": (_log_sum, _empty_neg_inf),
    "ReduceLogSumExp": (_log_sum_exp, _empty_neg_inf),
    "ReduceSumSquare": (_sum_square, lambda dt: 0),
}


def _reduced_shape(shape, axes, keep):
    r = len(shape)
    ax = set(range(r)) if axes is None else set(norm_axes(axes, r))
    if keep:
        return tuple(1 if d in ax else s for d, s in enumerate(shape))
    return tuple(s for d, s in enumerate(shape) if d not in ax)


def _make_run(op, keep, noop):
    fn, empty = _REDUCE[op]

    def reduce(x, axes):
        # axes: a tuple (possibly empty) or None (every axis)
        if not axes:
            if noop:
                return x
            axes = None
        if x.size == 0:
            return np.full(_reduced_shape(x.shape, axes, keep), empty(x.dtype), x.dtype)
        return np.asarray(fn(x, axes, keep))
    return reduce


def _check_attr_axes(node):
    axes = node.attrs.get("axes")
    if axes is not None and len(set(int(a) for a in axes)) != len(axes):
        return [f"axes {list(axes)} has repeated axes"]
    return []


_NAMES = tuple(_REDUCE)


@register_op(_NAMES, 1, attrs={"axes": None, "keepdims": 1}, check=_check_attr_axes)
def _reduce_attr(node, consts):
    reduce = _make_run(node.op, bool(node.attrs["keepdims"]), False)
    a = node.attrs["axes"]
    axes = tuple(int(v) for v in a) if a is not None else ()
    return lambda x: reduce(x, axes)


@register_op("ReduceSum", 13, attrs={"keepdims": 1, "noop_with_empty_axes": 0}, shape_inputs=(1,))
@register_op(tuple(n for n in _NAMES if n != "ReduceSum"), 18,
             attrs={"keepdims": 1, "noop_with_empty_axes": 0}, shape_inputs=(1,))
def _reduce_input(node, consts):
    reduce = _make_run(node.op, bool(node.attrs["keepdims"]), bool(node.attrs["noop_with_empty_axes"]))
    given = len(node.inputs) > 1 and bool(node.inputs[1])
    c = consts[1] if len(consts) > 1 else None
    if not given or c is not None:
        axes = () if c is None else tuple(as_int_list(c, "axes"))
        if len(set(axes)) != len(axes):
            raise ValueError(f"axes {list(axes)} has repeated axes")
        return lambda x, _axes=None: reduce(x, axes)
    return lambda x, axes=None: reduce(x, () if axes is None else tuple(as_int_list(axes, "axes")))


@register_op(("ArgMax", "ArgMin"), 1, attrs={"axis": 0, "keepdims": 1})
@register_op(("ArgMax", "ArgMin"), 12, attrs={"axis": 0, "keepdims": 1, "select_last_index": 0})
def _arg(node, consts):
    f = np.argmax if node.op == "ArgMax" else np.argmin
    axis = int(node.attrs["axis"])
    keep = bool(node.attrs["keepdims"])
    last = bool(node.attrs.get("select_last_index", 0))

    def run(x):
        a = norm_axis(axis, x.ndim)
        if x.shape[a] == 0:
            raise ValueError(f"cannot take {node.op} over axis {axis}, which is empty (input shape {x.shape})")
        if last:
            # The first hit in the reversed axis is the last one in the input.
            r = (x.shape[a] - 1) - f(np.flip(x, a), axis=a, keepdims=keep)
        else:
            r = f(x, axis=a, keepdims=keep)
        return np.asarray(r, dtype=np.int64)
    return run
