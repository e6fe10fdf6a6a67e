"""Elementwise maths, comparisons, logic and casts (ai.onnx, opsets 7 and later).

Registered here:

* arithmetic (NumPy broadcasting): Add, Sub, Mul, Div (7+), Pow (7+), Mod (10+), Max, Min, Sum,
  Mean (variadic, 6+); integer Div truncates toward zero, Pow keeps the base's dtype;
* unary maths: Sqrt, Exp, Log, Neg, Abs, Reciprocal, Floor, Ceil (6+), Erf, Sign (9+), Round (11+,
  halves to even), Sin, Cos, Tan, Asin, Acos, Atan (7+), Sinh, Cosh, Asinh, Acosh, Atanh (9+);
* comparisons and logic: Equal, Less, Greater (7+), GreaterOrEqual, LessOrEqual (12+), Not, And,
  Or, Xor (7+), IsNaN (9+), IsInf (10+), BitShift (11+), BitwiseAnd, BitwiseOr, BitwiseXor,
  BitwiseNot (18+), Where (9+);
* Cast (6, 19, 24) and CastLike (15, 19, 24).

Limits: Cast and CastLike run the dtypes of :data:`~edgepack.graph.ops._util.ONNX_DTYPES`
(string, bfloat16, float8 and 4-bit targets are refused at import).  ``saturate`` and
``round_mode`` change only float8 (and float8e8m0) results, so any valid value is accepted.
Erf is accurate to about half a float32 ulp (a rational approximation evaluated in float64);
float64 inputs use :func:`math.erf` per element (exact, slower).

Broadcasting binary and variadic ops refuse outputs larger than
:data:`~edgepack.graph.ops._util.MAX_ELEMENTS` (checked only when the inputs' sizes could reach
it, so the common case is one ufunc call).
"""

from __future__ import annotations

import math

import numpy as np

from ..registry import REQUIRED, register_op
from ._util import MAX_ELEMENTS, ONNX_DTYPES, check_alloc, onnx_dtype

__all__ = ["erf"]


# -- shared helpers ------------------------------------------------------------------------------

def _arity(node, lo: int, hi: int | None = None) -> None:
    # A ufunc returned as `run` would take a surplus positional input as its `out=` and write
    # into it, so the input count is checked before any ufunc is handed out.
    hi = lo if hi is None else hi
    n = len(node.inputs)
    if not lo <= n <= hi or any(not v for v in node.inputs[:lo]):
        want = str(lo) if lo == hi else f"{lo} to {hi}"
        raise ValueError(f"{node.op} takes {want} inputs (required ones named); got {list(node.inputs)}")


def _guard(*arrays) -> None:
    # The product of the input sizes bounds the broadcast size, so the exact shape is only
    # worked out when that product is already past the limit.
    check_alloc(np.broadcast_shapes(*(a.shape for a in arrays)), "broadcast output")


def _binary(uf):
    def run(a, b):
        if a.size * b.size > MAX_ELEMENTS:
            _guard(a, b)
        r = uf(a, b)
        return r if r.__class__ is np.ndarray else np.asarray(r)

    return run


def _unary(uf):
    # Ufuncs return NumPy scalars for 0-d inputs; operators return arrays.
    def run(x):
        r = uf(x)
        return r if r.__class__ is np.ndarray else np.asarray(r)

    return run


def _variadic(node, uf):
    _arity(node, 1, 1 << 16)

    def run(*xs):
        if len(xs) == 1:
            return xs[0]
        n = 1
        for x in xs:
            n *= max(x.size, 1)
        if n > MAX_ELEMENTS:
            _guard(*xs)
        r = uf(xs[0], xs[1])
        if r.__class__ is not np.ndarray:
            r = np.asarray(r)
        for x in xs[2:]:
            if x.shape == r.shape or np.broadcast_shapes(r.shape, x.shape) == r.shape:
                uf(r, x, out=r)   # r is ours: accumulate in place
            else:
                r = uf(r, x)
        return r

    return run


# -- arithmetic ----------------------------------------------------------------------------------

@register_op(("Add", "Sub", "Mul"), 7)
def _add_sub_mul(node, consts):
    _arity(node, 2)
    return _binary({"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}[node.op])


def _int_div(a, b):
    # ONNX integer Div truncates toward zero; NumPy's // floors.  Unsigned floor == trunc.
    q = np.floor_divide(a, b)
    if q.dtype.kind == "i":
        fix = np.not_equal(np.remainder(a, b), 0)
        fix &= np.less(np.bitwise_xor(a, b), 0)
        q += fix.astype(q.dtype, copy=False)
    return q


@register_op("Div", 7)
def _div(node, consts):
    _arity(node, 2)

    def run(a, b):
        if a.size * b.size > MAX_ELEMENTS:
            _guard(a, b)
        r = _int_div(a, b) if a.dtype.kind in "iu" else np.divide(a, b)
        return r if r.__class__ is np.ndarray else np.asarray(r)

    return run


def _check_mod(node):
    f = node.attrs.get("fmod", 0)
    return [] if f in (0, 1) else [f"fmod must be 0 or 1; got {f!r}"]


@register_op("Mod", 10, attrs={"fmod": 0}, check=_check_mod)
def _mod(node, consts):
    _arity(node, 2)
    msg = _check_mod(node)
    if msg:
        raise ValueError(msg[0])
    # fmod=0: the sign of the divisor (np.mod, also for floats: ONNX 28 spells out the same
    # special cases NumPy's floored modulo has); fmod=1: the sign of the dividend (C fmod).
    return _binary(np.fmod if node.attrs["fmod"] else np.mod)


def _pow_run(a, b):
    r = _pow(a, b)
    return r if r.__class__ is np.ndarray else np.asarray(r)


def _pow(a, b):
    if a.size * b.size > MAX_ELEMENTS:
        _guard(a, b)
    dt = a.dtype
    if dt.kind == "f":
        if b.dtype == dt:
            return np.power(a, b)
        if b.dtype.kind in "iub":
            return np.power(a, b.astype(dt))
        return np.power(a, b).astype(dt, copy=False)   # a float exponent of another width
    if b.dtype.kind in "iu" and (b.dtype.kind == "u" or not (b < 0).any()):
        if b.dtype == dt:
            return np.power(a, b)
        # In a 64-bit type of the base's signedness (uint64 with int64 would promote to float64);
        # integer powers wrap, so narrowing afterwards gives what the base's type would.
        return np.power(a, b.astype(np.uint64 if dt.kind == "u" else np.int64)).astype(dt)
    # An integer base with a float or negative exponent: evaluate in float64, truncate to the
    # base's type (what a C++ runtime's std::pow and cast give; NumPy refuses negative int powers).
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        r = np.trunc(np.power(a.astype(np.float64), b.astype(np.float64)))
        return np.asarray(np.nan_to_num(r)).astype(dt)


@register_op("Pow", 7)
def _make_pow(node, consts):
    _arity(node, 2)
    b = consts[1]
    if b is not None and b.dtype.kind == "f" and b.size == 1 and b.ndim <= 8:
        # x**2 (LayerNorm and variance decompositions) as one multiply; both round once, so
        # the result is the same as pow's.  The exponent's rank may still widen the output.
        e = float(b.reshape(-1)[0])
        if e == 2.0:
            bshape = (1,) * b.ndim

            def run(a, b_):
                if a.dtype.kind != "f":
                    return _pow_run(a, b_)
                r = np.multiply(a, a)
                if r.ndim < len(bshape):
                    r = r.reshape(bshape[r.ndim:] + r.shape)
                return r if r.__class__ is np.ndarray else np.asarray(r)

            return run
    return _pow_run


def _mean_run(node):
    acc = _variadic(node, np.add)

    def run(*xs):
        if len(xs) == 1:
            return xs[0]
        r = acc(*xs)
        r /= len(xs)   # r is a fresh array; a Python int keeps its float dtype
        return r

    return run


@register_op(("Max", "Min", "Sum", "Mean"), 6)
def _max_min_sum_mean(node, consts):
    if node.op == "Mean":
        return _mean_run(node)
    return _variadic(node, {"Max": np.maximum, "Min": np.minimum, "Sum": np.add}[node.op])


# -- unary maths ---------------------------------------------------------------------------------

_UNARY = {
    6: {"Sqrt": np.sqrt, "Exp": np.exp, "Log": np.log, "Neg": np.negative, "Abs": np.absolute,
        "Reciprocal": np.reciprocal, "Floor": np.floor, "Ceil": np.ceil},
    7: {"Sin": np.sin, "Cos": np.cos, "Tan": np.tan, "Asin": np.arcsin, "Acos": np.arccos, "Atan": np.arctan},
    9: {"Sign": np.sign, "Sinh": np.sinh, "Cosh": np.cosh, "Asinh": np.arcsinh, "Acosh": np.arccosh,
        "Atanh": np.arctanh},
    11: {"Round": np.rint},   # rint rounds halves to even, as ONNX Round does
}


def _unary_maker(table):
    def make(node, consts):
        _arity(node, 1)
        return _unary(table[node.op])

    return make


for _since, _table in _UNARY.items():
    register_op(tuple(_table), _since)(_unary_maker(_table))


# Erf: x * P(x^2) / Q(x^2) on |x| <= 4 (erf(4) rounds to 1 in float32), fitted to math.erf by
# weighted least squares on the relative error (max 2.5e-9).  Evaluated in float64 and rounded
# once, the float32 result is within 0.54 ulp of the exact value everywhere (float32 Horner
# steps would add up to 6 ulps).  Coefficients ascending in x^2.
_ERF_P = (1.1283791680783328, 0.18527999833264064, 0.0543540033907347, 0.0038564779872212423,
          0.0003808589606782053, 4.715109374727464e-06, -1.3360234258092494e-08)
_ERF_Q = (1.0, 0.49753352091936776, 0.11401401340895341, 0.015479842987991092, 0.0013106910328102247,
          6.340348258268894e-05)
_ERF_CHUNK = 1 << 15   # the four float64 temporaries of a chunk (1 MiB) stay in L2
_ERF_SMALL = 16        # up to this many elements math.erf per element is faster


def erf(x: np.ndarray) -> np.ndarray:
    """The error function of a float array, in its dtype (float16, float32 or float64)."""
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"Erf input must be a float tensor; got {x.dtype}")
    if x.dtype == np.float64 or x.size <= _ERF_SMALL:
        return np.array([math.erf(v) for v in x.reshape(-1).tolist()], dtype=x.dtype).reshape(x.shape)
    xf = np.ascontiguousarray(x).reshape(-1)
    out = np.empty(xf.shape, x.dtype)
    m = min(xf.size, _ERF_CHUNK)
    xb, tb, pb, qb = (np.empty(m, np.float64) for _ in range(4))
    P, Q = _ERF_P, _ERF_Q
    for s in range(0, xf.size, m):
        n = min(m, xf.size - s)
        xc, t, p, q = xb[:n], tb[:n], pb[:n], qb[:n]
        np.clip(xf[s:s + n], -4.0, 4.0, out=xc)   # NaN passes through
        np.multiply(xc, xc, out=t)
        np.multiply(t, P[-1], out=p)
        p += P[-2]
        for c in P[-3::-1]:
            p *= t
            p += c
        np.multiply(t, Q[-1], out=q)
        q += Q[-2]
        for c in Q[-3::-1]:
            q *= t
            q += c
        p *= xc
        np.divide(p, q, out=out[s:s + n])
    return out.reshape(x.shape)


@register_op("Erf", 9)
def _erf(node, consts):
    _arity(node, 1)
    return erf


# -- comparisons and logic -----------------------------------------------------------------------

_CMP = {"Equal": np.equal, "Less": np.less, "Greater": np.greater, "GreaterOrEqual": np.greater_equal,
        "LessOrEqual": np.less_equal, "And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor,
        "BitwiseAnd": np.bitwise_and, "BitwiseOr": np.bitwise_or, "BitwiseXor": np.bitwise_xor}


@register_op(("Equal", "Less", "Greater", "And", "Or", "Xor"), 7)
@register_op(("GreaterOrEqual", "LessOrEqual"), 12)
@register_op(("BitwiseAnd", "BitwiseOr", "BitwiseXor"), 18)
def _compare(node, consts):
    _arity(node, 2)
    return _binary(_CMP[node.op])


@register_op("Not", 1)
@register_op("BitwiseNot", 18)
def _not(node, consts):
    _arity(node, 1)
    return _unary(np.logical_not if node.op == "Not" else np.invert)


@register_op("IsNaN", 9)
def _isnan(node, consts):
    _arity(node, 1)
    return _unary(np.isnan)


@register_op("IsInf", 10, attrs={"detect_negative": 1, "detect_positive": 1})
def _isinf(node, consts):
    _arity(node, 1)
    neg, pos = bool(node.attrs["detect_negative"]), bool(node.attrs["detect_positive"])
    if neg and pos:
        return _unary(np.isinf)
    if pos:
        return _unary(lambda x: np.equal(x, np.inf))
    if neg:
        return _unary(lambda x: np.equal(x, -np.inf))
    return lambda x: np.zeros(x.shape, np.bool_)


def _check_bitshift(node):
    d = node.attrs.get("direction")
    return [] if d in ("LEFT", "RIGHT") else [f"direction must be 'LEFT' or 'RIGHT'; got {d!r}"]


@register_op("BitShift", 11, attrs={"direction": REQUIRED}, check=_check_bitshift)
def _bitshift(node, consts):
    _arity(node, 2)
    msg = _check_bitshift(node)
    if msg:
        raise ValueError(msg[0])
    # NumPy already gives what ONNX 28 specifies for shifts past the width or negative ones
    # (0, or -1 for a right shift of a negative value) and shifts right arithmetically.
    return _binary(np.left_shift if node.attrs["direction"] == "LEFT" else np.right_shift)


@register_op("Where", 9)
def _where(node, consts):
    _arity(node, 3)

    def run(c, a, b):
        if c.size * a.size * b.size > MAX_ELEMENTS:
            _guard(c, a, b)
        return np.where(c, a, b)

    return run


# -- casts ---------------------------------------------------------------------------------------

_ROUND_MODES = ("up", "down", "nearest")


def _check_cast_attrs(node) -> list[str]:
    out = []
    sat = node.attrs.get("saturate", 1)
    if sat not in (0, 1):
        out.append(f"saturate must be 0 or 1; got {sat!r}")
    rm = node.attrs.get("round_mode", "up")
    if rm not in _ROUND_MODES:
        out.append(f"round_mode must be one of {list(_ROUND_MODES)}; got {rm!r}")
    return out


def _check_cast(node) -> list[str]:
    out = _check_cast_attrs(node)
    to = node.attrs.get("to")
    try:
        onnx_dtype(to, "to")
    except ValueError:
        out.append(f"Cast to ONNX data type {to!r} is not supported (edgepack runs the types "
                   f"{sorted(ONNX_DTYPES)}: no string, bfloat16, float8 or 4-bit tensors)")
    return out


_CAST_ATTRS = {6: {"to": REQUIRED}, 19: {"to": REQUIRED, "saturate": 1},
               24: {"to": REQUIRED, "saturate": 1, "round_mode": "up"}}


def _cast(node, consts):
    _arity(node, 1)
    msg = _check_cast(node)
    if msg:
        raise ValueError(msg[0])
    to = onnx_dtype(node.attrs["to"], "to")
    # Float -> integer truncates toward zero and integer -> narrower integer wraps, as ONNX
    # specifies (out-of-range float -> integer is undefined there).
    return lambda x: x.astype(to, copy=False)


for _since, _attrs in _CAST_ATTRS.items():
    register_op("Cast", _since, attrs=_attrs, check=_check_cast)(_cast)


def _castlike(node, consts):
    _arity(node, 2)
    msg = _check_cast_attrs(node)
    if msg:
        raise ValueError(msg[0])
    like = consts[1]
    if like is not None:
        to = like.dtype
        return lambda x, _like: x.astype(to, copy=False)
    return lambda x, like_: x.astype(like_.dtype, copy=False)


for _since, _attrs in ((15, {}), (19, {"saturate": 1}), (24, {"saturate": 1, "round_mode": "up"})):
    register_op("CastLike", _since, attrs=_attrs, check=_check_cast_attrs)(_castlike)
