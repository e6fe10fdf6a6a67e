"""Quantized operators: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger,
ConvInteger, QLinearMatMul, QLinearConv.

Versions and limits
-------------------
* QuantizeLinear 10, 13 (``axis``), 19 (``saturate``), 21 (``block_size``, ``output_dtype``),
  23 (``precision``; 24-28 only widened types).  Output int8, uint8, int16 or uint16; per tensor,
  per axis and blocked.  float8/float4/int4/int2 outputs are refused at import; ``saturate`` only
  matters for float8, so it is accepted and has no effect.  ``precision`` may be float32 or
  float16.  float32 ``x`` quantized to int8/uint8 per tensor or per axis runs
  :func:`edgepack.kernels.quantize` (bit-exact with ``rint(x / scale) + zero_point``); everything
  else runs NumPy with the same formula, the division done in the type NumPy promotes ``x`` and
  ``scale`` to (as the ONNX reference does).  NaN quantizes to the zero point, +-inf saturates.
* DequantizeLinear 10, 13, 19, 21 (``block_size``), 23 (``output_dtype``): int8, uint8, int16,
  uint16 and int32 input, per tensor, per axis and blocked; output float32, float16 or float64
  (the scale's type unless ``output_dtype`` says otherwise).  int8/uint8 per tensor/axis run
  :func:`edgepack.kernels.dequantize`.  int32 input is dequantized as ``float(x - zero_point) *
  scale`` with the difference exact (the reference rounds ``x`` to float32 first; the two agree
  while ``|x| < 2**24``).
* DynamicQuantizeLinear 11: float32 -> uint8, the ONNX formula in float32: scale
  ``(max(0, max x) - min(0, min x)) / 255``, and 1 when that range is 0 (as ONNX Runtime; the
  ONNX reference gives 1/255 there, the ONNX text divides by 0).
* MatMulInteger 10, QLinearMatMul 10/21, ConvInteger 10, QLinearConv 10: int8/uint8 operands,
  exact int32 accumulation (wrapping modulo 2**32 like the reference when a sum overflows int32).
  Zero points: per tensor for ``A``/``x``, per row of ``A`` (``[M]``) for MatMulInteger; per
  tensor or per column/output channel for ``B``/``w``.  Convolutions take any number of spatial
  dimensions, groups, strides, dilations, pads and ``auto_pad``.
  Requantization (QLinear*) is ``saturate(rint(acc * (s_a * s_b / s_y)) + zp_y)`` with the scale
  product formed in the scales' own type and the multiply done in float64, as the ONNX reference
  does (ORT multiplies in float32, so ORT can differ by 1 at a rounding tie).

How the integer products run
----------------------------
* Constant weights whose zero-point-corrected values ``w - zp_w`` fit [-127, 127] (every
  symmetric int8 weight, and uint8 weights whose range fits) are packed once for
  :func:`edgepack.kernels.gemm_int8`; uint8 activations are shifted to int8 (``x ^ 0x80``) and the
  shift and the activation zero point are corrected with the weights' row sums, exactly.
* Depthwise convolutions run a per-tap multiply-add in int32 (exact).
* Anything else runs a float BLAS matmul on ``(x - zp_x) @ (w - zp_w)``: float32 when the largest
  possible partial sum (max |x - zp_x| times the largest column L1 norm of ``w - zp_w``) stays
  below 2**24, so that every partial sum is an exactly representable integer whatever order BLAS
  adds in; float64 otherwise (exact below 2**53).
"""

from __future__ import annotations

import numpy as np

from ..registry import register_op
from ._util import check_alloc, norm_axis

# quantized integer types: numpy dtype -> (lo, hi)
_QRANGE = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255),
           np.dtype(np.int16): (-32768, 32767), np.dtype(np.uint16): (0, 65535)}
# ONNX TensorProto codes of the integer types QuantizeLinear may produce
_Q_CODES = {2: np.dtype(np.uint8), 3: np.dtype(np.int8), 4: np.dtype(np.uint16), 5: np.dtype(np.int16)}
# float types DequantizeLinear may produce / QuantizeLinear may divide in
_F_CODES = {1: np.dtype(np.float32), 10: np.dtype(np.float16), 11: np.dtype(np.float64)}
_I8 = (np.dtype(np.int8), np.dtype(np.uint8))
_F32 = np.dtype(np.float32)
_EXACT_F32 = 1 << 24   # integers below this are exact in float32 (and so are sums of them)
_EXACT_F64 = 1 << 53


def _kernels():
    # edgepack.kernels loads the C++ extension: imported when a graph is compiled, not on import.
    from ... import kernels

    return kernels


# ---------------------------------------------------------------------------------------------
# QuantizeLinear / DequantizeLinear
# ---------------------------------------------------------------------------------------------

def _float_param(v, what: str) -> np.ndarray:
    a = np.asarray(v)
    if a.dtype.kind != "f":
        raise ValueError(f"{what} must be a float tensor; got {a.dtype}")
    return a


def _zp_param(v, what: str) -> np.ndarray | None:
    if v is None:
        return None
    a = np.asarray(v)
    if a.dtype not in _QRANGE and a.dtype != np.int32:
        raise ValueError(f"{what} must be int8, uint8, int16, uint16 or int32; got {a.dtype}")
    return a


def _expand_param(p: np.ndarray, shape: tuple, axis: int, block: int, what: str) -> np.ndarray:
    """``p`` (a scale or zero point) reshaped or repeated so that it broadcasts against ``shape``:
    one value (per tensor), a 1-D vector along ``axis`` (per axis) or a tensor of ``shape``'s rank
    blocked along ``axis`` (``block`` > 0).  One value of any shape counts as per tensor, as in the
    ONNX reference."""
    if p.size == 1:
        return p.reshape(())
    nd = len(shape)
    if nd == 0:
        raise ValueError(f"{what} has {p.size} values but the input is a scalar")
    ax = norm_axis(axis, nd, "axis")
    if block <= 0:
        if p.ndim != 1 or p.shape[0] != shape[ax]:
            raise ValueError(f"{what} must be a scalar or a 1-D tensor of {shape[ax]} values (axis {ax} of "
                             f"the input {tuple(shape)}); got shape {p.shape}")
        dims = [1] * nd
        dims[ax] = p.shape[0]
        return p.reshape(dims)
    want = list(shape)
    want[ax] = -(-shape[ax] // block)
    if list(p.shape) != want:
        raise ValueError(f"{what} must have shape {tuple(want)} for blocks of {block} along axis {ax} of "
                         f"the input {tuple(shape)}; got {p.shape}")
    r = np.repeat(p, block, axis=ax)
    return r[(slice(None),) * ax + (slice(0, shape[ax]),)]


def _per_axis_vector(p: np.ndarray, shape: tuple, axis: int, what: str):
    """(axis, 1-D vector) for the kernels' per-axis form, or (None, scalar) for one value."""
    if p.size == 1:
        return None, p.reshape(())
    e = _expand_param(p, shape, axis, 0, what)   # validates the length
    return norm_axis(axis, len(shape), "axis"), e.reshape(-1)


def _check_quantize(node):
    a = node.attrs
    bad = []
    od = int(a.get("output_dtype", 0) or 0)
    if od and od not in _Q_CODES:
        bad.append(f"output_dtype {od} is not supported (int8, uint8, int16 and uint16 are; float8, "
                   "float4, int4 and int2 are not)")
    if int(a.get("block_size", 0) or 0) < 0:
        bad.append(f"block_size must be >= 0; got {a['block_size']}")
    prec = int(a.get("precision", 0) or 0)
    if prec and prec not in (1, 10):
        bad.append(f"precision {prec} is not supported (float32 (1) or float16 (10))")
    return bad


_Q_ATTRS_21 = {"axis": 1, "saturate": 1, "block_size": 0, "output_dtype": 0}


@register_op("QuantizeLinear", 10, attrs={}, fold=False)
@register_op("QuantizeLinear", 13, attrs={"axis": 1}, fold=False)
@register_op("QuantizeLinear", 19, attrs={"axis": 1, "saturate": 1}, fold=False)
@register_op("QuantizeLinear", 21, attrs=_Q_ATTRS_21, check=_check_quantize, fold=False)
@register_op("QuantizeLinear", 23, attrs={**_Q_ATTRS_21, "precision": 0}, check=_check_quantize, fold=False)
def _quantize_linear(node, consts):
    a = node.attrs
    axis = int(a.get("axis", 1))
    block = int(a.get("block_size", 0) or 0)
    od = int(a.get("output_dtype", 0) or 0)
    out_attr = _Q_CODES.get(od)
    prec = _F_CODES.get(int(a.get("precision", 0) or 0))
    k = _kernels()

    def params(scale, zp):
        scale = _float_param(scale, "y_scale")
        zp = _zp_param(zp, "y_zero_point")
        if zp is not None:
            if zp.dtype not in _QRANGE:
                raise ValueError(f"y_zero_point must be int8, uint8, int16 or uint16; got {zp.dtype}")
            if out_attr is not None and zp.dtype != out_attr:
                raise ValueError(f"output_dtype is {out_attr} but y_zero_point is {zp.dtype}")
            if zp.shape != scale.shape and zp.size != 1:
                raise ValueError(f"y_zero_point must have the shape of y_scale {scale.shape}; got {zp.shape}")
        dt = zp.dtype if zp is not None else (out_attr or np.dtype(np.uint8))
        return scale, zp, dt

    fixed = None
    if consts[1] is not None and (len(consts) < 3 or consts[2] is not None or not node.inputs[2]):
        fixed = params(consts[1], consts[2] if len(consts) > 2 else None)

    def run(x, y_scale, y_zero_point=None):
        scale, zp, dt = fixed if fixed is not None else params(y_scale, y_zero_point)
        if prec is not None:
            xd, sd = x.astype(prec, copy=False), scale.astype(prec, copy=False)
        else:
            xd, sd = x, scale
        if block == 0 and dt in _I8 and np.result_type(xd, sd) == _F32:
            ax, s = _per_axis_vector(sd, x.shape, axis, "y_scale")
            z = None if zp is None else _per_axis_vector(zp, x.shape, axis, "y_zero_point")[1]
            if z is not None and ax is not None and z.ndim == 0:
                z = np.broadcast_to(z, s.shape)
            try:
                return k.quantize(xd.astype(_F32, copy=False), s.astype(_F32),
                                  None if z is None else (z if z.ndim else int(z)), ax, dt)
            except ValueError:
                pass  # NaN/Inf in x, or a scale <= 0: the NumPy path below defines those
        s = _expand_param(sd, x.shape, axis, block, "y_scale")
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            v = np.rint(xd / s).astype(np.float64)
            v[np.isnan(v)] = 0
            if zp is not None:
                v += _expand_param(zp, x.shape, axis, block, "y_zero_point")
            lo, hi = _QRANGE[dt]
            np.clip(v, lo, hi, out=v)
        return v.astype(dt)

    return run


def _check_dequantize(node):
    a = node.attrs
    bad = []
    od = int(a.get("output_dtype", 0) or 0)
    if od and od not in _F_CODES:
        bad.append(f"output_dtype {od} is not supported (float32, float16 or float64)")
    if int(a.get("block_size", 0) or 0) < 0:
        bad.append(f"block_size must be >= 0; got {a['block_size']}")
    return bad


@register_op("DequantizeLinear", 10, attrs={}, fold=False)
@register_op("DequantizeLinear", 13, attrs={"axis": 1}, fold=False)
@register_op("DequantizeLinear", 21, attrs={"axis": 1, "block_size": 0}, check=_check_dequantize, fold=False)
@register_op("DequantizeLinear", 23, attrs={"axis": 1, "block_size": 0, "output_dtype": 0},
             check=_check_dequantize, fold=False)
def _dequantize_linear(node, consts):
    a = node.attrs
    axis = int(a.get("axis", 1))
    block = int(a.get("block_size", 0) or 0)
    out_attr = _F_CODES.get(int(a.get("output_dtype", 0) or 0))
    k = _kernels()

    def params(scale, zp):
        scale = _float_param(scale, "x_scale")
        zp = _zp_param(zp, "x_zero_point")
        if zp is not None and zp.shape != scale.shape and zp.size != 1:
            raise ValueError(f"x_zero_point must have the shape of x_scale {scale.shape}; got {zp.shape}")
        return scale, zp, out_attr or scale.dtype

    fixed = None
    if consts[1] is not None and (len(consts) < 3 or consts[2] is not None or not node.inputs[2]):
        fixed = params(consts[1], consts[2] if len(consts) > 2 else None)

    def run(x, x_scale, x_zero_point=None):
        scale, zp, odt = fixed if fixed is not None else params(x_scale, x_zero_point)
        if x.dtype not in _QRANGE and x.dtype != np.int32:
            raise ValueError(f"x must be int8, uint8, int16, uint16 or int32; got {x.dtype}")
        if zp is not None and zp.dtype != x.dtype:
            raise ValueError(f"x_zero_point is {zp.dtype} but x is {x.dtype} (they must match)")
        if block == 0 and x.dtype in _I8 and scale.dtype.itemsize <= 4:
            ax, s = _per_axis_vector(scale, x.shape, axis, "x_scale")
            z = None if zp is None else _per_axis_vector(zp, x.shape, axis, "x_zero_point")[1]
            if z is not None and ax is not None and z.ndim == 0:
                z = np.broadcast_to(z, s.shape)
            try:
                y = k.dequantize(x, s.astype(_F32), None if z is None else (z if z.ndim else int(z)), ax)
                return y if odt == _F32 else y.astype(odt)
            except ValueError:
                pass  # a scale <= 0 or not finite: the NumPy path below
        s = _expand_param(scale, x.shape, axis, block, "x_scale")
        if x.dtype == np.int32:
            # (x - zp) exactly in int64, then one product in float64
            d = x.astype(np.int64)
            if zp is not None:
                d -= _expand_param(zp, x.shape, axis, block, "x_zero_point")
            y = d.astype(np.float64) * s.astype(np.float64)
        else:
            d = x.astype(_F32)   # int8/16 values and their differences are exact in float32
            if zp is not None:
                d -= _expand_param(zp, x.shape, axis, block, "x_zero_point")
            y = d * s
        return y.astype(odt, copy=False)

    return run


@register_op("DynamicQuantizeLinear", 11, attrs={})
def _dynamic_quantize_linear(node, consts):
    k = _kernels()
    f0, f255 = np.float32(0), np.float32(255)

    def run(x):
        if x.dtype != _F32:
            raise ValueError(f"x must be float32; got {x.dtype}")
        hi = max(f0, np.float32(x.max())) if x.size else f0
        lo = min(f0, np.float32(x.min())) if x.size else f0
        with np.errstate(over="ignore", invalid="ignore"):
            scale = np.float32(1) if hi == lo else np.float32(hi - lo) / f255
            zp_f = np.float32(np.clip(f0 - lo / scale, f0, f255))
        zp = np.uint8(np.rint(zp_f)) if np.isfinite(zp_f) else np.uint8(0)
        try:
            y = k.quantize(x, scale, int(zp), None, np.uint8)
        except ValueError:  # NaN/Inf in x or an infinite scale
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                v = np.rint(x.astype(np.float64) / np.float64(scale))
                v[np.isnan(v)] = 0
                v += int(zp)
                y = np.clip(v, 0, 255).astype(np.uint8)
        return y, np.array(scale, _F32), np.array(zp, np.uint8)

    return run


# ---------------------------------------------------------------------------------------------
# exact integer products
# ---------------------------------------------------------------------------------------------

def _int8_input(x: np.ndarray, what: str) -> np.ndarray:
    if x.dtype not in _I8:
        raise ValueError(f"{what} must be int8 or uint8; got {x.dtype}")
    return x


def _max_abs_shifted(dtype, zp) -> int:
    """The largest |v - zp| over the values v of ``dtype`` (255 when either is unknown)."""
    if dtype is None or zp is None:
        return 255 if dtype is None else max(abs(_QRANGE[dtype][0]), abs(_QRANGE[dtype][1]))
    z = np.asarray(zp).astype(np.int64)
    lo, hi = _QRANGE[dtype]
    return int(max((z - lo).max(initial=0), (hi - z).max(initial=0)))


def _scalar_zp(zp, what: str):
    """A per-tensor zero point as an int (0 when absent), or None when it has several values."""
    if zp is None:
        return 0
    z = np.asarray(zp)
    if z.dtype.kind not in "iu":
        raise ValueError(f"{what} must be an integer tensor; got {z.dtype}")
    return int(z.reshape(-1)[0]) if z.size == 1 else None


def _to_int32(acc: np.ndarray) -> np.ndarray:
    """Exact integer-valued float products as int32 (wrapping modulo 2**32 like int32 sums)."""
    if acc.dtype == np.float32:
        return acc.astype(np.int32)
    return acc.astype(np.int64).astype(np.int32)


class _PackedRight:
    """A constant right operand ``w - zp_w`` (K x N per group) prepared once: packed for
    gemm_int8 when it fits [-127, 127], else as float for BLAS with its exactness bound."""

    def __init__(self, wc: np.ndarray):
        # wc: int64 [G, N, K] (rows = output columns / channels), zero point already subtracted
        self.groups, self.n, self.k = wc.shape
        self.l1 = int(np.abs(wc).sum(axis=2).max(initial=0))   # largest |w| sum of one output
        self.packed = None
        if wc.size and wc.min() >= -127 and wc.max() <= 127:
            k = _kernels()
            w8 = wc.astype(np.int8)
            self.packed = [k.pack_weights(np.ascontiguousarray(w8[g])) for g in range(self.groups)]
            self.rowsum = wc.sum(axis=2).astype(np.int64)      # [G, N]
        self._wc = wc
        self._float = {}

    def float_t(self, dt) -> np.ndarray:
        """[G, K, N] in float dtype ``dt`` (made on first use and kept)."""
        key = ("kn", np.dtype(dt))
        f = self._float.get(key)
        if f is None:
            f = np.ascontiguousarray(self._wc.transpose(0, 2, 1).astype(dt))
            self._float[key] = f
        return f


def _as_int8(a: np.ndarray) -> tuple[np.ndarray, int]:
    """(a8, shift) with ``a == a8 + shift``: uint8 becomes int8 by ``a ^ 0x80`` (a - 128)."""
    if a.dtype == np.uint8:
        return np.bitwise_xor(a, np.uint8(0x80)).view(np.int8), 128
    return a, 0


def _gemm_shifted(a8: np.ndarray, shift: int, a_zp: int, pr: _PackedRight, g: int) -> np.ndarray:
    """``(a8 + shift - a_zp) @ w_g^T`` exactly, int32 [M, N], for int8 ``a8`` [M, K]."""
    k = _kernels()
    acc = k.gemm_int8(np.ascontiguousarray(a8), pr.packed[g])
    corr = (shift - a_zp) * pr.rowsum[g]
    if corr.any():
        acc += corr.astype(np.int32)   # wraps like the int32 accumulation it corrects
    return acc


def _float_dtype_for(bound: int):
    if bound < _EXACT_F32:
        return np.float32
    if bound < _EXACT_F64:
        return np.float64
    raise ValueError(f"the integer product's partial sums may reach {bound}, beyond exact float64")


# ---------------------------------------------------------------------------------------------
# MatMulInteger / QLinearMatMul
# ---------------------------------------------------------------------------------------------

def _prep_matmul_b(b, b_zp):
    """A constant 2-D B with a constant zero point, prepared; None when that does not apply."""
    if b is None or b.ndim != 2 or b.dtype not in _I8:
        return None
    bc = b.astype(np.int64)
    if b_zp is not None:
        z = np.asarray(b_zp)
        if z.dtype != b.dtype:
            raise ValueError(f"b_zero_point is {z.dtype} but B is {b.dtype} (they must match)")
        if z.size == 1:
            bc -= int(z.reshape(-1)[0])
        elif z.ndim == 1 and z.shape[0] == b.shape[1]:
            bc -= z.astype(np.int64)
        else:
            raise ValueError(f"b_zero_point must be a scalar or have {b.shape[1]} values (one per column "
                             f"of B {b.shape}); got shape {z.shape}")
    return _PackedRight(bc.T[None])


def _shift_operand(v: np.ndarray, zp, dt, row: bool, what: str) -> np.ndarray:
    """``v - zp`` in float dtype ``dt``: zp per tensor, or per row ([M], ``row``) of the left
    operand / per column ([N]) of the right one, or any shape that broadcasts."""
    f = v.astype(dt)
    if zp is None:
        return f
    z = np.asarray(zp)
    if z.dtype != v.dtype:
        raise ValueError(f"{what} is {z.dtype} but its operand is {v.dtype} (they must match)")
    if z.size == 1:
        f -= dt(z.reshape(-1)[0])
        return f
    z = z.astype(dt)
    if row and z.ndim == 1:
        if v.ndim < 2 or z.shape[0] != v.shape[-2]:
            raise ValueError(f"{what} has {z.shape[0]} values but its operand has shape {v.shape} "
                             "(one per row expected)")
        z = z.reshape(-1, 1)
    try:
        return f - z
    except ValueError:
        raise ValueError(f"{what} of shape {z.shape} does not match its operand {v.shape}") from None


def _matmul_shape(a_shape, b_shape):
    if not a_shape or not b_shape:
        raise ValueError(f"MatMul operands must have at least 1 dimension; got {a_shape} and {b_shape}")
    ka = a_shape[-1]
    kb = b_shape[-2] if len(b_shape) > 1 else b_shape[0]
    if ka != kb:
        raise ValueError(f"A {tuple(a_shape)} and B {tuple(b_shape)}: inner dimensions {ka} and {kb} differ")
    batch = np.broadcast_shapes(tuple(a_shape[:-2]), tuple(b_shape[:-2]))
    out = batch + (tuple(a_shape[-2:-1]) if len(a_shape) > 1 else ()) + (
        tuple(b_shape[-1:]) if len(b_shape) > 1 else ())
    return check_alloc(out, "MatMul output")


def _make_int_matmul(node, consts, b_index, bzp_index):
    """The exact ``(A - a_zp) @ (B - b_zp)`` as ``run(A, B, a_zp, b_zp) -> int32``."""
    b_c = consts[b_index] if b_index < len(consts) else None
    has_bzp = bzp_index < len(node.inputs) and bool(node.inputs[bzp_index])
    bzp_c = consts[bzp_index] if has_bzp else None
    prep = None
    if b_c is not None and (not has_bzp or bzp_c is not None):
        prep = _prep_matmul_b(b_c, bzp_c)

    def run(A, B, a_zp, b_zp):
        _int8_input(A, "A")
        _int8_input(B, "B")
        shape = _matmul_shape(A.shape, B.shape)
        if a_zp is not None and np.asarray(a_zp).dtype != A.dtype:
            raise ValueError(f"a_zero_point is {np.asarray(a_zp).dtype} but A is {A.dtype} (they must match)")
        az = _scalar_zp(a_zp, "a_zero_point")
        if prep is not None and prep.packed is not None and az is not None:
            k = B.shape[0]
            acc = _gemm_shifted(*_as_int8(A.reshape(-1, k)), az, prep, 0)
            return acc.reshape(shape)
        amax = _max_abs_shifted(A.dtype, a_zp if a_zp is not None else 0)
        if prep is not None:
            bound = amax * prep.l1
        else:
            bound = amax * _max_abs_shifted(B.dtype, b_zp if b_zp is not None else 0) * A.shape[-1]
        dt = _float_dtype_for(bound)
        af = _shift_operand(A, a_zp, dt, True, "a_zero_point")
        bf = prep.float_t(dt)[0] if prep is not None else _shift_operand(B, b_zp, dt, False, "b_zero_point")
        return _to_int32(np.matmul(af, bf))

    return run


@register_op("MatMulInteger", 10, attrs={})
def _matmul_integer(node, consts):
    consts = list(consts) + [None] * (4 - len(consts))
    mm = _make_int_matmul(node, consts, 1, 3)

    def run(A, B, a_zero_point=None, b_zero_point=None):
        return mm(A, B, a_zero_point, b_zero_point)

    return run


def _multiplier(a_scale, b_scale, y_scale, what_b: str) -> np.ndarray:
    """``a_scale * b_scale / y_scale`` in the scales' own type (as the reference forms it), then
    float64 for the requantizing multiply."""
    a_s = _float_param(a_scale, "a_scale")
    b_s = _float_param(b_scale, what_b)
    y_s = _float_param(y_scale, "y_scale")
    if a_s.size != 1 or y_s.size != 1:
        raise ValueError(f"a_scale and y_scale must hold one value; got shapes {a_s.shape} and {y_s.shape}")
    if b_s.size != 1 and b_s.ndim != 1:
        raise ValueError(f"{what_b} must be a scalar or a 1-D tensor; got shape {b_s.shape}")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        m = a_s.reshape(-1)[0] * b_s.reshape(-1) / y_s.reshape(-1)[0]
    m = np.asarray(m).astype(np.float64)
    return m.reshape(()) if m.size == 1 else m


def _requantize(acc: np.ndarray, mult: np.ndarray, y_zp, default_dtype) -> np.ndarray:
    """``saturate(rint(acc * mult) + y_zp)`` in y_zp's type (``default_dtype`` when absent), as a
    new C-ordered array (``acc`` may be a transposed view)."""
    z = np.asarray(y_zp) if y_zp is not None else None
    dt = z.dtype if z is not None else np.dtype(default_dtype)
    if dt not in _I8:
        raise ValueError(f"y_zero_point must be int8 or uint8; got {dt}")
    if z is not None and z.size != 1:
        raise ValueError(f"y_zero_point must hold one value; got shape {z.shape}")
    lo, hi = _QRANGE[dt]
    with np.errstate(over="ignore", invalid="ignore"):
        v = np.multiply(acc, mult, dtype=np.float64)
        np.rint(v, out=v)
        if not np.isfinite(mult).all():
            v[np.isnan(v)] = 0   # 0 * inf: no defined result; the zero point, like NaN in QuantizeLinear
        if z is not None:
            v += float(z.reshape(-1)[0])
        np.clip(v, lo, hi, out=v)
    out = np.empty(v.shape, dt)
    np.copyto(out, v, casting="unsafe")
    return out


@register_op("QLinearMatMul", 10, attrs={})
@register_op("QLinearMatMul", 21, attrs={})
def _qlinear_matmul(node, consts):
    consts = list(consts) + [None] * (8 - len(consts))
    mm = _make_int_matmul(node, consts, 3, 5)
    fixed = None
    if all(c is not None for c in (consts[1], consts[4], consts[6])):
        fixed = _multiplier(consts[1], consts[4], consts[6], "b_scale")

    def run(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point=None):
        acc = mm(a, b, a_zero_point, b_zero_point)
        m = fixed if fixed is not None else _multiplier(a_scale, b_scale, y_scale, "b_scale")
        if m.ndim and acc.ndim and m.shape[0] != acc.shape[-1]:
            raise ValueError(f"b_scale has {m.shape[0]} values; the output has {acc.shape[-1]} columns")
        return _requantize(acc, m, y_zero_point, a.dtype)

    return run


# ---------------------------------------------------------------------------------------------
# ConvInteger / QLinearConv
# ---------------------------------------------------------------------------------------------

_CONV_ATTRS = {"auto_pad": "NOTSET", "dilations": None, "group": 1, "kernel_shape": None, "pads": None,
               "strides": None}
_AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


def _check_conv(node):
    a = node.attrs
    bad = []
    if a.get("auto_pad", "NOTSET") not in _AUTO_PADS:
        bad.append(f"auto_pad must be one of {list(_AUTO_PADS)}; got {a['auto_pad']!r}")
    if int(a.get("group", 1)) < 1:
        bad.append(f"group must be >= 1; got {a['group']}")
    for k in ("dilations", "strides", "kernel_shape"):
        v = a.get(k)
        if v is not None and any(int(s) < 1 for s in v):
            bad.append(f"{k} must be positive; got {list(v)}")
    p = a.get("pads")
    if p is not None and (len(p) % 2 or any(int(s) < 0 for s in p)):
        bad.append(f"pads must hold 2 non-negative values per spatial axis; got {list(p)}")
    return bad


def _conv_geometry(in_sp, k_sp, a):
    """(pads_begin, pads_end, strides, dilations, out) for spatial input ``in_sp`` and kernel
    ``k_sp`` under the ONNX Conv attributes ``a``."""
    nd = len(in_sp)

    def vec(name, default):
        v = a.get(name)
        if v is None:
            return [default] * nd
        v = [int(s) for s in v]
        if len(v) != nd:
            raise ValueError(f"{name} must have {nd} values (one per spatial axis); got {v}")
        return v

    strides, dil = vec("strides", 1), vec("dilations", 1)
    ks = a.get("kernel_shape")
    if ks is not None and [int(s) for s in ks] != list(k_sp):
        raise ValueError(f"kernel_shape {list(ks)} does not match the weights' spatial shape {list(k_sp)}")
    span = [(k - 1) * d + 1 for k, d in zip(k_sp, dil)]
    mode = a.get("auto_pad", "NOTSET")
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        out = [-(-i // s) for i, s in zip(in_sp, strides)]
        total = [max(0, (o - 1) * s + e - i) for o, s, e, i in zip(out, strides, span, in_sp)]
        begin = [t // 2 if mode == "SAME_UPPER" else t - t // 2 for t in total]
        end = [t - b for t, b in zip(total, begin)]
    else:
        if mode == "VALID" or a.get("pads") is None:
            begin, end = [0] * nd, [0] * nd
        else:
            p = [int(s) for s in a["pads"]]
            if len(p) != 2 * nd:
                raise ValueError(f"pads must have {2 * nd} values; got {p}")
            begin, end = p[:nd], p[nd:]
        out = [(i + b + e - sp) // s + 1 for i, b, e, sp, s in zip(in_sp, begin, end, span, strides)]
    if any(o < 1 for o in out):
        raise ValueError(f"input spatial shape {list(in_sp)} is smaller than the kernel {list(k_sp)} "
                         f"(dilations {dil}) plus padding")
    return begin, end, strides, dil, out


def _weights_shifted(w: np.ndarray, w_zp) -> np.ndarray:
    """``w - w_zp`` as int64, the zero point per tensor or per output channel."""
    wc = w.astype(np.int64)
    if w_zp is None:
        return wc
    z = np.asarray(w_zp)
    if z.dtype != w.dtype:
        raise ValueError(f"w_zero_point is {z.dtype} but w is {w.dtype} (they must match)")
    if z.size == 1:
        return wc - int(z.reshape(-1)[0])
    if z.ndim == 1 and z.shape[0] == w.shape[0]:
        return wc - z.astype(np.int64).reshape((-1,) + (1,) * (w.ndim - 1))
    raise ValueError(f"w_zero_point must be a scalar or have {w.shape[0]} values (one per output channel); "
                     f"got shape {z.shape}")


class _ConvWeights:
    """Weights ``w - zp_w`` [O, C/group, *k] prepared for one of three paths (see the module
    docstring): 'int8' (packed per group), 'depthwise' (int32 taps) or 'float' (BLAS).  The
    matmul paths keep each output channel's weights in (*k, C/group) order, the order of the
    channels-last columns :func:`_im2col` builds."""

    def __init__(self, w: np.ndarray, w_zp, group: int):
        _int8_input(w, "w")
        if w.ndim < 3:
            raise ValueError(f"w must have shape [O, C/group, *kernel] (3-D or more); got {w.shape}")
        o = w.shape[0]
        if o % group:
            raise ValueError(f"w has {o} output channels, not a multiple of group {group}")
        wc = _weights_shifted(w, w_zp)
        self.shape = w.shape
        self.group = group
        self.k_sp = w.shape[2:]
        self.cg = w.shape[1]
        self.og = o // group
        kk = int(np.prod(w.shape[1:]))
        if self.cg == 1 and group > 1:
            self.mode = "depthwise"
            # [*k, C, multiplier]: one [C, m] row of weights per tap, broadcast over positions
            nd = len(self.k_sp)
            w32 = wc.astype(np.int32).reshape((group, self.og) + self.k_sp)
            taps = w32.transpose(tuple(range(2, 2 + nd)) + (0, 1))
            # multiplier 1 (the usual case): [*k, C], so the inner loop runs over the channels
            self.taps = np.ascontiguousarray(taps[..., 0] if self.og == 1 else taps)
            return
        nd = len(self.k_sp)
        wl = wc.transpose((0,) + tuple(range(2, 2 + nd)) + (1,))          # [O, *k, Cg]
        self.right = _PackedRight(wl.reshape(group, self.og, kk))
        self.mode = "int8" if self.right.packed is not None else "float"


def _channels_last(x: np.ndarray, begin, end, fill, dtype, xor128: bool = False, sub=0) -> np.ndarray:
    """``x`` [N, C, *sp] as a padded channels-last array [N, *(sp + pads), C] of ``dtype``
    (``x ^ 0x80`` for uint8 -> int8, or ``x - sub``), the padding holding ``fill``; one pass."""
    nd = x.ndim - 2
    shape = (x.shape[0],) + tuple(s + b + e for s, b, e in zip(x.shape[2:], begin, end)) + (x.shape[1],)
    padded = any(begin) or any(end)
    xp = np.full(check_alloc(shape, "padded input"), fill, dtype) if padded else np.empty(shape, dtype)
    inner = xp[(slice(None),) + tuple(slice(b, b + s) for b, s in zip(begin, x.shape[2:]))]
    xt = x.transpose((0,) + tuple(range(2, 2 + nd)) + (1,))
    if xor128:
        np.bitwise_xor(xt, np.uint8(0x80), out=inner.view(np.uint8))
    else:
        np.copyto(inner, xt, casting="unsafe")
        if sub:
            inner -= dtype(sub)
    return xp


def _im2col(xp: np.ndarray, g: int, cg: int, k_sp, strides, dil, out) -> np.ndarray:
    """Columns [N*L, prod(k)*cg] of group ``g`` from channels-last padded ``xp``: one strided
    copy per kernel tap, each moving ``cg`` contiguous channels per output position."""
    n = xp.shape[0]
    nd = len(out)
    lsize = int(np.prod(out))
    kprod = int(np.prod(k_sp))
    csl = slice(g * cg, (g + 1) * cg)
    if kprod == 1 and all(s == 1 for s in strides) and xp.shape[-1] == cg and list(xp.shape[1:-1]) == list(out):
        return xp.reshape(n * lsize, cg)   # 1x1, stride 1, one group: the input is the columns
    cols = np.empty(check_alloc((n,) + tuple(out) + tuple(k_sp) + (cg,), "conv columns"), xp.dtype)
    for t in np.ndindex(*k_sp):
        src = xp[(slice(None),) + tuple(slice(i * d, i * d + s * (o - 1) + 1, s)
                                        for i, d, s, o in zip(t, dil, strides, out)) + (csl,)]
        cols[(slice(None),) * (1 + nd) + t] = src
    return cols.reshape(n * lsize, kprod * cg)


def _conv_int(x: np.ndarray, x_zp, cw: _ConvWeights, attrs):
    """Exact integer convolution: (acc, channels_last, out) where acc is int32 [N, O, *out], or
    [N*L, O] when ``channels_last`` (the matmul paths' natural layout), and ``out`` the output's
    spatial shape."""
    _int8_input(x, "x")
    if x.ndim != 2 + len(cw.k_sp):
        raise ValueError(f"x must have shape [N, C, *spatial] with {len(cw.k_sp)} spatial axes; got {x.shape}")
    n, c = x.shape[:2]
    if c != cw.cg * cw.group:
        raise ValueError(f"x has {c} channels; w {cw.shape} with group {cw.group} expects {cw.cg * cw.group}")
    if x_zp is not None and np.asarray(x_zp).dtype != x.dtype:
        raise ValueError(f"x_zero_point is {np.asarray(x_zp).dtype} but x is {x.dtype} (they must match)")
    xz = _scalar_zp(x_zp, "x_zero_point")
    if xz is None:
        raise ValueError(f"x_zero_point must hold one value (per tensor); got shape {np.shape(x_zp)}")
    begin, end, strides, dil, out = _conv_geometry(x.shape[2:], cw.k_sp, attrs)
    o = cw.shape[0]
    lsize = int(np.prod(out))
    check_alloc((n, o, lsize), "conv output")
    nd = len(out)
    if cw.mode == "depthwise":
        # channels last, int32 multiply-adds per tap (exact; about 1.5x faster than NCHW taps)
        xp = _channels_last(x, begin, end, 0, np.int32, sub=xz)
        m1 = cw.og == 1
        acc = np.zeros((n,) + tuple(out) + ((c,) if m1 else (c, cw.og)), np.int32)
        tmp = np.empty_like(acc)
        taps = cw.taps
        if m1:
            # weights repeated along the last output axis, so that with unit stride there
            # the (position, channel) block is one contiguous run for NumPy's inner loop
            taps = np.ascontiguousarray(np.broadcast_to(taps[..., None, :], taps.shape[:-1] + (out[-1], c)))
        for t in np.ndindex(*cw.k_sp):
            sl = tuple(slice(i * d, i * d + s * (o_ - 1) + 1, s) for i, d, s, o_ in zip(t, dil, strides, out))
            src = xp[(slice(None),) + sl]
            np.multiply(src if m1 else src[..., None], taps[t], out=tmp)
            acc += tmp
        return acc.reshape(n * lsize, o), True, out
    pr = cw.right
    g, cg = cw.group, cw.cg
    if cw.mode == "int8":
        # uint8 becomes int8 by x ^ 0x80 (x - 128); the padding holds the shifted zero point, so
        # it contributes nothing once the zero point is corrected.
        shift = 128 if x.dtype == np.uint8 else 0
        xp = _channels_last(x, begin, end, np.int8(xz - shift), np.int8, xor128=bool(shift))

        def part(gi):
            return _gemm_shifted(_im2col(xp, gi, cg, cw.k_sp, strides, dil, out), shift, xz, pr, gi)
    else:
        dt = _float_dtype_for(_max_abs_shifted(x.dtype, xz) * pr.l1)
        xp = _channels_last(x, begin, end, 0, dt, sub=xz)

        def part(gi):
            return _to_int32(_im2col(xp, gi, cg, cw.k_sp, strides, dil, out) @ pr.float_t(dt)[gi])
    if g == 1:
        return part(0), True, out
    acc = np.empty((n * lsize, o), np.int32)
    for gi in range(g):
        acc[:, gi * cw.og:(gi + 1) * cw.og] = part(gi)
    return acc, True, out


def _make_conv(node, consts, w_i, wzp_i):
    a = node.attrs
    group = int(a.get("group", 1))
    w_c = consts[w_i]
    has_wzp = wzp_i < len(node.inputs) and bool(node.inputs[wzp_i])
    wzp_c = consts[wzp_i] if has_wzp else None
    fixed = _ConvWeights(w_c, wzp_c, group) if w_c is not None and (not has_wzp or wzp_c is not None) else None

    def conv(x, x_zp, w, w_zp):
        cw = fixed if fixed is not None else _ConvWeights(w, w_zp, group)
        return _conv_int(x, x_zp, cw, a) + (cw,)

    return conv


@register_op("ConvInteger", 10, attrs=_CONV_ATTRS, check=_check_conv)
def _conv_integer(node, consts):
    consts = list(consts) + [None] * (4 - len(consts))
    conv = _make_conv(node, consts, 1, 3)

    def run(x, w, x_zero_point=None, w_zero_point=None):
        acc, last, out_sp, cw = conv(x, x_zero_point, w, w_zero_point)
        if not last:
            return acc
        n, o = x.shape[0], cw.shape[0]
        return np.ascontiguousarray(acc.reshape(n, -1, o).transpose(0, 2, 1)).reshape((n, o) + tuple(out_sp))

    return run


@register_op("QLinearConv", 10, attrs=_CONV_ATTRS, check=_check_conv)
def _qlinear_conv(node, consts):
    consts = list(consts) + [None] * (9 - len(consts))
    conv = _make_conv(node, consts, 3, 5)
    fixed_m = None
    if all(c is not None for c in (consts[1], consts[4], consts[6])):
        fixed_m = _multiplier(consts[1], consts[4], consts[6], "w_scale")
    b_c = consts[8]

    def run(x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point=None, B=None):
        acc, last, out_sp, cw = conv(x, x_zero_point, w, w_zero_point)
        o = cw.shape[0]
        m = fixed_m if fixed_m is not None else _multiplier(x_scale, w_scale, y_scale, "w_scale")
        if m.ndim and m.shape[0] != o:
            raise ValueError(f"w_scale has {m.shape[0]} values; w has {o} output channels")
        bias = b_c if b_c is not None else B
        if bias is not None:
            bias = np.asarray(bias)
            if bias.dtype != np.int32 or bias.shape != (o,):
                raise ValueError(f"B must be int32 of shape ({o},); got {bias.dtype} {bias.shape}")
        n = x.shape[0]
        if last:
            # [N*L, O]: the bias and per-channel multiplier broadcast over the last axis; the
            # transpose to [N, O, *out] happens in the final cast.
            if bias is not None:
                acc += bias
            view = acc.reshape(n, -1, o).transpose(0, 2, 1)
            mm = m if not m.ndim else m.reshape(1, o, 1)
            return _requantize(view, mm, y_zero_point, x.dtype).reshape((n, o) + tuple(out_sp))
        if bias is not None:
            acc += bias.reshape((1, o) + (1,) * (acc.ndim - 2))
        mm = m if not m.ndim else m.reshape((1, o) + (1,) * (acc.ndim - 2))
        return _requantize(acc, mm, y_zero_point, x.dtype)

    return run
