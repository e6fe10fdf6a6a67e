"""int8 GEMM: packed weights, exact integer products, and the fused float linear layer."""

from __future__ import annotations

import numpy as np

from .. import _core

__all__ = ["PackedWeights", "pack_weights", "gemm_int8", "linear_int8", "int8_peak"]


class PackedWeights:
    """int8 weights [N, K] packed once for every kernel path (see ``pack_weights``).

    The layout is the same on every instruction-set path, so switching paths with
    ``edgepack.set_isa`` never needs a repack. Safe to share between threads.

    Attributes
    ----------
    shape : tuple (N, K)
        out_features x in_features.
    nbytes : int
        Bytes held by the packed layout (padded panels plus int32 column sums).
    """

    __slots__ = ("_p",)

    def __init__(self, packed):
        self._p = packed

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self._p.shape)

    @property
    def nbytes(self) -> int:
        return int(self._p.nbytes)

    def numpy(self) -> np.ndarray:
        """The original int8 weights, shape (N, K) (exact)."""
        return self._p.unpack()

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays for saving: ``{"weight": int8 [N, K]}`` (no pointers, no pickle)."""
        return {"weight": self.numpy()}

    @classmethod
    def from_arrays(cls, arrays: dict) -> "PackedWeights":
        """Rebuild from ``to_arrays()`` output (repacks; exact)."""
        if "weight" not in arrays:
            raise ValueError("arrays must contain 'weight' (int8 [N, K]) as written by PackedWeights.to_arrays()")
        return pack_weights(arrays["weight"])

    def __repr__(self) -> str:
        n, k = self.shape
        return f"PackedWeights(shape=({n}, {k}), nbytes={self.nbytes})"


def pack_weights(w: np.ndarray) -> PackedWeights:
    """Pack int8 weights for ``gemm_int8`` and ``linear_int8``; do it once per model.

    Parameters
    ----------
    w : np.ndarray, int8, shape (N, K)
        out_features x in_features, values in [-127, 127]. -128 is refused (ValueError):
        symmetric weights never use it, and excluding it keeps every path exact.
        K <= 65536.

    Returns
    -------
    PackedWeights
    """
    return PackedWeights(_core.gemm_pack(w))


def _raw(w):
    return w._p if isinstance(w, PackedWeights) else w


def gemm_int8(a: np.ndarray, w) -> np.ndarray:
    """Exact int8 matrix product ``a @ w.T``.

    Parameters
    ----------
    a : np.ndarray, int8, shape (M, K)
        Any int8 values, -128 included.
    w : PackedWeights or np.ndarray int8 (N, K)
        Raw arrays are packed on each call: pack once with ``pack_weights`` for speed.

    Returns
    -------
    np.ndarray, int32, shape (M, N)
        Bit-exact on every path (equal to the int64 product, which always fits int32 for K <= 65536).
    """
    return _core.gemm_int8(a, _raw(w))


def linear_int8(x, w, w_scale, bias=None, activation=None, out=None, *, x_scale=None,
                x_zero_point=None, x_dtype="int8"):
    """Quantized linear layer: float in, float out, in one call.

    Dynamic (default): each row of ``x`` is quantized to int8 with its own scale
    ``max|x[m]| / 127`` (an all-zero row uses 1), rounding half to even. Static: pass the
    calibrated ``x_scale`` (and ``x_zero_point``, ``x_dtype`` "int8" or "uint8"), then
    ``q = saturate(round_half_even(x / x_scale) + x_zero_point)``.

    The int8 product is exact; then ``y = acc * s_x[m] * w_scale[n] + bias[n]`` in float32 and an
    optional fused activation, in one pass over the output.

    Parameters
    ----------
    x : np.ndarray, float32, shape (M, K)
        Finite values (NaN/Inf -> ValueError).
    w : PackedWeights of shape (N, K)
    w_scale : float or np.ndarray float32 (N,)
        Per-output-channel (or per-tensor) weight scales.
    bias : np.ndarray float32 (N,), optional
    activation : None, "relu", "gelu" (erf form), "gelu_tanh" or "silu"
    out : np.ndarray float32 (M, N), C-contiguous, optional
        Written in place and returned.

    Returns
    -------
    np.ndarray, float32, shape (M, N)

    Notes
    -----
    Tolerance against a float64 evaluation of the same integer accumulator: the epilogue rounds
    three times in float32 (<= ~2 ulp); with ``None``/``"relu"`` every path gives the same bits.
    The vector gelu/gelu_tanh/silu approximations differ from the libm ones by <= ~1e-6 relative
    (plus 1e-7 absolute near zero).
    """
    if not isinstance(w, PackedWeights):
        raise TypeError(f"w must be PackedWeights (from pack_weights); got {type(w).__name__}")
    n = w._p.shape[0]
    if not isinstance(w_scale, np.ndarray) or w_scale.ndim == 0:
        try:
            w_scale = np.full(n, float(w_scale), dtype=np.float32)
        except (TypeError, ValueError):
            raise TypeError(f"w_scale must be a float or a float32 array of shape ({n},); "
                            f"got {type(w_scale).__name__}") from None
    return _core.linear_int8(x, w._p, w_scale, bias, activation, out, x_scale, x_zero_point, x_dtype)


def int8_peak(iters: int = 20_000_000) -> float:
    """Measured int8 multiply-accumulate throughput of the active path on one thread, in GOP/s
    (2 operations per multiply-accumulate), from a dependency-free dot-product loop."""
    macs, secs = _core.gemm_peak(int(iters))
    return 2.0 * macs / secs / 1e9
