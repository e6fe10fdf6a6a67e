"""Activations and the softmax family (ai.onnx, opsets 7 and later).

Registered here:

* Relu (6+, integer inputs too), LeakyRelu (6+), PRelu (7+, the slope broadcast to X), Elu, Selu
  (6+), Celu (12+), ThresholdedRelu (10+), Shrink (9+), Sigmoid, Tanh, HardSigmoid (6+),
  HardSwish (14+), Softplus, Softsign (1+), Mish (18+), Gelu (20+: ``approximate`` none or tanh),
  Swish (24+);
* Clip: opset 6 with ``min``/``max`` attributes, 11+ with optional scalar ``min``/``max`` inputs
  (an absent one is no bound; integer tensors too);
* Softmax, LogSoftmax, Hardmax: opsets 1-12 coerce the input to 2-D at ``axis`` (default 1) and
  normalise each row of ``prod(shape[axis:])`` values; 13+ work along the single ``axis``
  (default -1).

All keep the input's float dtype (float16, float32, float64): scalars enter as Python floats,
which NumPy casts to the array's type.  Activations of several steps evaluate float16 in float32
and round once; Gelu follows :func:`edgepack.nn.functional.gelu`.
"""

from __future__ import annotations

import numpy as np

from ...nn.functional import gelu as _gelu
from ..registry import register_op
from ._util import norm_axis
from .elementwise import _arity, _unary

# Float attribute defaults as the ONNX schema stores them (float32), so that a default and the
# same value written into the model give identical results, also for float64 inputs.
_f32 = lambda v: float(np.float32(v))  # noqa: E731


def _act(fn, upcast: bool = True):
    """``run`` for ``fn(x, *rest)`` written for float arrays of rank >= 1 (temporaries updated in
    place): 0-d inputs go through as 1-element arrays (ufuncs would return NumPy scalars, which
    take no ``out=``), and with ``upcast`` float16 is evaluated in float32 and rounded once."""

    def run(x, *rest):
        if x.ndim and x.dtype.char != "e":
            return fn(x, *rest)
        shape = x.shape
        if not shape:
            x = x.reshape(1)
        if upcast and x.dtype.char == "e":
            return fn(x.astype(np.float32), *rest).astype(np.float16).reshape(shape)
        return fn(x, *rest).reshape(shape)

    return run


def _float(node, name: str) -> float:
    v = node.attrs[name]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"attribute {name!r} must be a float; got {v!r}")
    return float(v)


# -- rectifiers ----------------------------------------------------------------------------------

_ZERO32 = np.zeros((), np.float32)
_ZERO32.setflags(write=False)


def _relu(x):
    # A float32 0-d zero for float32 (half the call overhead of converting a Python 0); other
    # dtypes take a Python 0, which is "weak" and keeps x's dtype (a float32 zero would turn
    # float16 and integer inputs into float32).
    return np.maximum(x, _ZERO32 if x.dtype.char == "f" else 0)


_relu_run = _unary(_relu)


@register_op("Relu", 6)
def _make_relu(node, consts):
    _arity(node, 1)
    return _relu_run


@register_op("LeakyRelu", 6, attrs={"alpha": _f32(0.01)})
def _leaky_relu(node, consts):
    _arity(node, 1)
    a = _float(node, "alpha")
    # One multiply and one max/min instead of a compare, a multiply and a select: for a <= 1,
    # max(x, a*x) is x where x >= 0 and a*x below; for a > 1 min() does the same.
    pick = np.maximum if a <= 1.0 else np.minimum

    def run(x):
        r = np.multiply(x, a)
        return pick(x, r, out=r)

    return _act(run, upcast=False)


@register_op("PRelu", 7)
def _prelu(node, consts):
    _arity(node, 2)
    s = consts[1]
    small = s is not None and s.size > 0 and bool(np.all(s <= 1))

    def run(x, slope):
        try:
            r = np.multiply(x, slope)
        except ValueError:
            r = None
        if r is None or r.shape != x.shape:
            raise ValueError(f"slope of shape {slope.shape} does not broadcast to X of shape {x.shape} "
                             "(PRelu broadcasts the slope one way)")
        if small:
            return np.maximum(x, r, out=r)
        return np.where(x < 0, r, x)

    return _act(run, upcast=False)


def _exp_linear(x, alpha: float, scale: float | None = None, inv_alpha: float | None = None):
    # max(x, 0) + alpha * expm1(min(x, 0) [/ alpha]): no exp of large positives (no overflow
    # warnings) and expm1 keeps the relative accuracy of small negative inputs.
    t = np.minimum(x, 0)
    if inv_alpha is not None:
        t *= inv_alpha
    np.expm1(t, out=t)
    t *= alpha
    t += np.maximum(x, 0)
    if scale is not None:
        t *= scale
    return t


@register_op("Elu", 6, attrs={"alpha": 1.0})
def _elu(node, consts):
    _arity(node, 1)
    a = _float(node, "alpha")
    return _act(lambda x: _exp_linear(x, a))


@register_op("Selu", 6, attrs={"alpha": _f32(1.67326319217681884765625), "gamma": _f32(1.05070102214813232421875)})
def _selu(node, consts):
    _arity(node, 1)
    a, g = _float(node, "alpha"), _float(node, "gamma")
    return _act(lambda x: _exp_linear(x, a, g))


def _check_celu(node):
    return ["alpha must not be 0"] if node.attrs.get("alpha", 1.0) == 0 else []


@register_op("Celu", 12, attrs={"alpha": 1.0}, check=_check_celu)
def _celu(node, consts):
    _arity(node, 1)
    a = _float(node, "alpha")
    if a == 0:
        raise ValueError("alpha must not be 0")
    if a > 0:
        return _act(lambda x: _exp_linear(x, a, inv_alpha=1.0 / a))

    def run(x):   # alpha < 0: the formula as written, max(0,x) + min(0, alpha*expm1(x/alpha))
        with np.errstate(over="ignore"):
            t = np.multiply(x, 1.0 / a)
            np.expm1(t, out=t)
        t *= a
        np.minimum(t, 0, out=t)
        t += np.maximum(x, 0)
        return t

    return _act(run)


@register_op("ThresholdedRelu", 10, attrs={"alpha": 1.0})
def _thresholded_relu(node, consts):
    _arity(node, 1)
    a = _float(node, "alpha")
    return lambda x: np.where(x > a, x, 0)


@register_op("Shrink", 9, attrs={"bias": 0.0, "lambd": 0.5})
def _shrink(node, consts):
    _arity(node, 1)
    lam, bias = _float(node, "lambd"), _float(node, "bias")

    def run(x):
        return np.where(x < -lam, x + bias, np.where(x > lam, x - bias, 0)).astype(x.dtype, copy=False)

    return run


# -- sigmoids ------------------------------------------------------------------------------------

def _sigmoid(x):
    # exp(-|x|) never overflows, and e / (1 + e) keeps full relative precision in the negative
    # tail (a text detector's background logits sit at -60..-16, where 0.5 * (1 + tanh(x / 2))
    # cancels to ~100% relative error)
    e = np.abs(x)
    np.negative(e, out=e)
    np.exp(e, out=e)
    r = e + 1
    np.reciprocal(r, out=r)
    return np.where(x >= 0, r, e * r)


_sigmoid_run = _act(_sigmoid)


@register_op("Sigmoid", 6)
def _make_sigmoid(node, consts):
    _arity(node, 1)
    return _sigmoid_run


@register_op("Tanh", 6)
def _tanh(node, consts):
    _arity(node, 1)
    return _unary(np.tanh)


@register_op("HardSigmoid", 6, attrs={"alpha": _f32(0.2), "beta": 0.5})
def _hard_sigmoid(node, consts):
    _arity(node, 1)
    a, b = _float(node, "alpha"), _float(node, "beta")

    def run(x):
        t = np.multiply(x, a)
        t += b
        np.maximum(t, 0, out=t)
        return np.minimum(t, 1, out=t)

    return _act(run)


@register_op("HardSwish", 14)
def _hard_swish(node, consts):
    _arity(node, 1)
    a = _f32(1.0 / 6.0)

    def run(x):
        t = np.multiply(x, a)
        t += 0.5
        np.maximum(t, 0, out=t)
        np.minimum(t, 1, out=t)
        t *= x
        return t

    return _act(run)


@register_op("Swish", 24, attrs={"alpha": 1.0})
def _swish(node, consts):
    _arity(node, 1)
    a = _float(node, "alpha")

    def run(x):
        t = np.multiply(x, 0.5 * a)
        np.tanh(t, out=t)
        t += 1
        t *= 0.5
        t *= x
        return t

    return _act(run)


# -- smooth activations --------------------------------------------------------------------------

def _softplus(x):
    # log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)): no overflow, exact in both tails, and ten
    # times faster than np.logaddexp.
    t = np.maximum(x, 0)
    u = np.absolute(x)
    np.negative(u, out=u)
    np.exp(u, out=u)
    np.log1p(u, out=u)
    t += u
    return t


@register_op("Softplus", 1)
def _make_softplus(node, consts):
    _arity(node, 1)
    return _act(_softplus)


@register_op("Softsign", 1)
def _softsign(node, consts):
    _arity(node, 1)

    def run(x):
        t = np.absolute(x)
        t += 1
        return np.divide(x, t, out=t)

    return _act(run)


@register_op("Mish", 18)
def _mish(node, consts):
    _arity(node, 1)

    def run(x):
        t = _softplus(x)
        np.tanh(t, out=t)
        t *= x
        return t

    return _act(run)


def _check_gelu(node):
    a = node.attrs.get("approximate", "none")
    return [] if a in ("none", "tanh") else [f"approximate must be 'none' or 'tanh'; got {a!r}"]


@register_op("Gelu", 20, attrs={"approximate": "none"}, check=_check_gelu)
def _make_gelu(node, consts):
    _arity(node, 1)
    msg = _check_gelu(node)
    if msg:
        raise ValueError(msg[0])
    approx = node.attrs["approximate"]

    # float16 goes through float32: the erfc evaluation needs its range and precision.
    return _act(lambda x: _gelu(x, approx))


# -- Clip ----------------------------------------------------------------------------------------

_FLT_MAX = float(np.finfo(np.float32).max)


def _clip_run(lo, hi):
    if lo is None and hi is None:
        return lambda x: x
    if hi is None:
        return _unary(lambda x: np.maximum(x, lo))
    if lo is None:
        return _unary(lambda x: np.minimum(x, hi))

    def run(x):
        r = np.maximum(x, lo)
        return np.minimum(r, hi, out=r)   # min > max gives max everywhere, as ONNX specifies

    return _act(run, upcast=False)


@register_op("Clip", 6, attrs={"min": -_FLT_MAX, "max": _FLT_MAX})
def _clip6(node, consts):
    _arity(node, 1)
    lo, hi = _float(node, "min"), _float(node, "max")
    # The defaults (+-FLT_MAX) still bound float32 infinities and float64 values; in float16
    # they would round to infinities and bound nothing, so there they are left out (NumPy would
    # warn about the overflow).
    wide = _clip_run(lo, hi)
    if lo > -_FLT_MAX and hi < _FLT_MAX:
        return wide
    narrow = _clip_run(None if lo <= -_FLT_MAX else lo, None if hi >= _FLT_MAX else hi)
    return lambda x: narrow(x) if x.dtype.char == "e" else wide(x)


def _bound(v, what: str):
    if v.size != 1:
        raise ValueError(f"{what} must be a scalar; got shape {v.shape}")
    return v.reshape(())


@register_op("Clip", 11)
def _clip11(node, consts):
    _arity(node, 1, 3)
    ins = list(node.inputs) + [""] * (3 - len(node.inputs))
    if all(not ins[k] or consts[k] is not None for k in (1, 2)):
        # Constant bounds as Python scalars: weak, so the result keeps x's dtype.
        lo = _bound(consts[1], "min").item() if ins[1] else None
        hi = _bound(consts[2], "max").item() if ins[2] else None
        f = _clip_run(lo, hi)
        return lambda x, _lo=None, _hi=None: f(x)

    def run(x, lo=None, hi=None):
        r = x
        if lo is not None:
            r = np.maximum(r, _bound(lo, "min"))
        if hi is not None:
            r = np.minimum(r, _bound(hi, "max"), out=None if r is x else r)
        return r

    return _act(run, upcast=False)


# -- softmax family ------------------------------------------------------------------------------

def _softmax_along(x, ax):
    e = np.subtract(x, x.max(axis=ax, keepdims=True))
    np.exp(e, out=e)
    e /= e.sum(axis=ax, keepdims=True)
    return e


def _log_softmax_along(x, ax):
    d = np.subtract(x, x.max(axis=ax, keepdims=True))
    s = np.exp(d).sum(axis=ax, keepdims=True)
    np.log(s, out=s)
    d -= s
    return d


def _hardmax_along(x, ax):
    out = np.zeros(x.shape, x.dtype)
    np.put_along_axis(out, np.argmax(x, axis=ax, keepdims=True), 1, axis=ax)   # first maximum wins
    return out


_SOFTMAX = {"Softmax": _softmax_along, "LogSoftmax": _log_softmax_along, "Hardmax": _hardmax_along}


def _softmax_maker(coerce_2d: bool):
    def make(node, consts):
        _arity(node, 1)
        along = _SOFTMAX[node.op]
        axis = node.attrs["axis"]
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise ValueError(f"attribute 'axis' must be an int; got {axis!r}")

        def run_13(x):
            ax = norm_axis(axis, x.ndim)
            if x.size == 0:
                return np.empty(x.shape, x.dtype)
            return along(x, ax)

        def run_1(x):
            # Opsets 1-12: the input as a [prod(shape[:axis]), prod(shape[axis:])] matrix, each
            # row normalised.  A trailing axis is the same as opset 13's single axis.
            ax = norm_axis(axis, x.ndim)
            if x.size == 0:
                return np.empty(x.shape, x.dtype)
            if ax == x.ndim - 1:
                return along(x, ax)
            n = 1
            for d in x.shape[:ax]:
                n *= d
            return along(x.reshape(n, -1), 1).reshape(x.shape)

        # float16 stays float16 (NumPy accumulates its sums in float32), as the ONNX reference does.
        return run_1 if coerce_2d else run_13

    return make


for _name in _SOFTMAX:
    register_op(_name, 1, attrs={"axis": 1})(_softmax_maker(True))
    register_op(_name, 13, attrs={"axis": -1})(_softmax_maker(False))
