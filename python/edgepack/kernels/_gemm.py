"""int8 GEMM: packed weights, exact int8 x int8 -> int32 products, and the fused int8 linear layer."""

from __future__ import annotations

import numpy as np

from .. import _core

__all__ = ["PackedWeights", "pack_weights", "gemm_int8", "linear_int8"]

_ACTIVATIONS = (None, "relu", "gelu", "gelu_tanh", "silu")


class PackedWeights(_core.PackedWeights):
    """int8 weights [N, K] packed once for every kernel path.

    The layout is the same on every path (``[ceil(N/16)][ceil(K/4)][16][4]`` int8 panels, zero
    padded, plus int32 column sums for the unsigned-activation correction), so switching the
    instruction-set path never requires repacking. Build it with :func:`pack_weights`.

    Attributes
    ----------
    shape : tuple[int, int]
        ``(N, K)``: out_features x in_features.
    nbytes : int
        Bytes held (packed panels + column sums).
    """

    def __init__(self, w: np.ndarray) -> None:
        super().__init__(w)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays for saving (npz/safetensors): ``{"weight": int8 [N, K]}``.

        The packed layout is an implementation detail; saving the weights themselves keeps
        files valid across layout changes. :meth:`from_arrays` repacks.
        """
        return {"weight": self.unpack()}

    @classmethod
    def from_arrays(cls, arrays: dict) -> "PackedWeights":
        """Inverse of :meth:`to_arrays`: ``arrays["weight"]`` int8 [N, K] packed again."""
        if not hasattr(arrays, "__getitem__") or "weight" not in arrays:
            raise ValueError("arrays must be a mapping with key 'weight' (int8 [N, K]) as written by "
                             "PackedWeights.to_arrays()")
        return cls(arrays["weight"])

    def __repr__(self) -> str:
        return f"PackedWeights(shape={self.shape}, nbytes={self.nbytes})"

    def __reduce__(self):
        # Pickle-free formats are the supported way to save; this only makes copy/deepcopy and
        # multiprocessing work, through the plain int8 weights.
        return (PackedWeights, (self.unpack(),))


def pack_weights(w: np.ndarray) -> PackedWeights:
    """Pack int8 weights once per model for :func:`gemm_int8` and :func:`linear_int8`.

    Parameters
    ----------
    w : numpy.ndarray, int8, shape (N, K)
        out_features x in_features, values in [-127, 127] (symmetric quantization never uses
        -128, and excluding it keeps the AVX2/AVX-512BW sign trick exact).

    Returns
    -------
    PackedWeights
        ``.shape == (N, K)``.

    Raises
    ------
    TypeError
        ``w`` is not an int8 ndarray.
    ValueError
        ``w`` is not 2-D, or holds -128 (the message gives its position).
    """
    return PackedWeights(w)


def gemm_int8(a: np.ndarray, w, *, out: np.ndarray | None = None) -> np.ndarray:
    """Exact int8 matrix product ``a @ w.T`` with int32 output.

    Parameters
    ----------
    a : numpy.ndarray, int8, shape (M, K)
        Any int8 values (-128 included).
    w : PackedWeights or numpy.ndarray int8 (N, K)
        Weights in [-127, 127]; a raw array is packed on every call (use :func:`pack_weights`
        for repeated calls).
    out : numpy.ndarray, int32, shape (M, N), optional
        C-contiguous destination; avoids the output allocation.

    Returns
    -------
    numpy.ndarray, int32, shape (M, N)
        Bit-identical to ``(a.astype(np.int64) @ w.T.astype(np.int64))`` on every path and at
        every thread count whenever that fits int32 (always for K <= 132152); beyond, the result
        wraps modulo 2**32.
    """
    return _core.gemm_int8(a, w, out)


def linear_int8(
    x: np.ndarray,
    w,
    w_scale,
    bias: np.ndarray | None = None,
    activation: str | None = None,
    out: np.ndarray | None = None,
    *,
    x_scale: float | None = None,
    x_zero_point=None,
) -> np.ndarray:
    """Fused int8 linear layer: quantize x, int8 GEMM, scale, bias and activation in one call.

    Dynamic (default): each row of ``x`` is quantized symmetrically, ``s[m] = max|x[m]| / 127``
    (1 for an all-zero row), ``q = round_half_even(x / s[m])``, then
    ``y = act((acc * s[m]) * w_scale[n] + bias[n])`` with ``acc = q @ w.T`` exact in int32.

    Static (``x_scale`` given, for calibrated models): one activation scale and zero point for
    the whole tensor, ONNX QuantizeLinear semantics ``q = saturate(round_half_even(x / x_scale) +
    x_zero_point)``; the zero point's dtype (``np.uint8`` or ``np.int8``, default int8 0) picks the
    activation type. ``x`` may also be already-quantized activations of that dtype.

    Parameters
    ----------
    x : numpy.ndarray, float32, shape (M, K) or (K,)
        Activations (finite). Static mode also accepts uint8/int8 quantized activations.
    w : PackedWeights or numpy.ndarray int8 (N, K)
        Weights in [-127, 127].
    w_scale : float or numpy.ndarray float32 (N,)
        Per-tensor or per-output-channel weight scale.
    bias : numpy.ndarray float32 (N,), optional
    activation : None, "relu", "gelu", "gelu_tanh" or "silu"
        ``"gelu"`` is the erf form, ``"gelu_tanh"`` the tanh approximation,
        ``"silu"`` is ``y * sigmoid(y)``.
    out : numpy.ndarray float32 (M, N) (or (N,) for 1-D x), optional
        C-contiguous destination.
    x_scale : float, optional
        Static activation scale (> 0); selects the static variant.
    x_zero_point : numpy.uint8 or numpy.int8 scalar, optional
        Static activation zero point (default ``np.int8(0)``).

    Returns
    -------
    numpy.ndarray, float32, shape (M, N) (or (N,) for 1-D x)

    Notes
    -----
    Tolerance: the integer product is exact and ``(acc * s[m]) * w_scale[n] + bias[n]`` is
    evaluated in float32 in that order (no FMA) on every path, so without an activation, or with
    ``"relu"``, all paths agree bit for bit and differ from a float64 evaluation of the same
    formula by float32 rounding (about 2 ulp). ``"gelu"``, ``"gelu_tanh"`` and ``"silu"`` use
    vector polynomial approximations of erf/exp on SIMD paths (the C library on the scalar path):
    within ``1e-5 * (1 + |y|)`` of the exact function.

    Raises
    ------
    TypeError
        Wrong dtype of ``x``, ``w``, ``w_scale``, ``bias``, ``out``, or a bad ``activation``
        type.
    ValueError
        Shape mismatch, NaN/Inf in ``x`` (with its flat index), unknown ``activation``, bad
        ``x_scale``/``x_zero_point``.
    """
    if x_scale is None:
        if x_zero_point is not None:
            raise ValueError("x_zero_point needs x_scale (static quantization); got x_scale=None")
        return _core.linear_int8(x, w, w_scale, bias, activation, out)
    u8, zp = _zero_point(x_zero_point, x)
    if isinstance(x_scale, (np.ndarray, np.generic)) and np.ndim(x_scale) == 0:
        x_scale = float(x_scale)
    if isinstance(x_scale, bool) or not isinstance(x_scale, (int, float)):
        raise TypeError(f"x_scale must be a number; got {type(x_scale).__name__}")
    return _core.linear_int8_static(x, w, w_scale, bias, activation, out, float(x_scale), u8, zp)


def _zero_point(zp, x) -> tuple[bool, int]:
    if zp is None:
        if isinstance(x, np.ndarray) and x.dtype == np.uint8:
            raise ValueError("x is uint8: give its x_zero_point as np.uint8")
        return False, 0
    if isinstance(zp, np.ndarray) and zp.ndim == 0:
        zp = zp[()]
    if isinstance(zp, np.uint8):
        return True, int(zp)
    if isinstance(zp, np.int8):
        return False, int(zp)
    if isinstance(zp, (int, np.integer)) and not isinstance(zp, bool) and isinstance(x, np.ndarray):
        # A plain int takes the dtype of already-quantized x.
        if x.dtype == np.uint8 and 0 <= int(zp) <= 255:
            return True, int(zp)
        if x.dtype == np.int8 and -128 <= int(zp) <= 127:
            return False, int(zp)
    raise TypeError(
        "x_zero_point must be np.uint8 or np.int8 (its dtype selects uint8 or int8 activations); got "
        f"{type(zp).__name__} {zp!r}"
    )
