"""Scaled-dot-product attention over packed sequences (the float core of a transformer layer)."""

from __future__ import annotations

import numpy as np

from .. import _core

__all__ = ["attention", "attention_is_vectorized", "layer_norm"]


def attention(qkv: np.ndarray, offsets, num_heads: int, *, out: np.ndarray | None = None) -> np.ndarray:
    """``softmax(q k^T) v`` per sequence and head, for sequences packed without padding.

    Parameters
    ----------
    qkv : numpy.ndarray of float32, shape (N, 3 * D), C-contiguous (a strided view is copied once)
        Row ``t`` is token ``t``'s query, key and value, each ``D = num_heads * head_dim`` wide
        and split into heads in order (the layout of a fused QKV projection).  The query must
        already be scaled by ``1 / sqrt(head_dim)``.
    offsets : array of int64, shape (S + 1,)
        Sequence ``s`` is rows ``offsets[s]:offsets[s + 1]``; ``offsets[0] == 0``,
        ``offsets[-1] == N``, non-decreasing.  Tokens attend only within their sequence.
    num_heads : int
        ``D`` must be divisible by it.
    out : numpy.ndarray of float32, shape (N, D), optional
        Written in place and returned.

    Returns
    -------
    numpy.ndarray of float32, shape (N, D)
        The context vectors, heads interleaved like the input.  Float rounding differs from a
        float64 reference by about 1e-6 relative (a vectorized exp, other summation orders);
        results do not depend on the thread count.  NaN or Inf in ``qkv`` gives unspecified
        (but memory-safe) outputs: the input is not scanned.

    Raises
    ------
    TypeError
        ``qkv`` not float32, ``offsets`` not int64, ``num_heads`` not an int.
    ValueError
        Shapes that do not fit (columns not 3 * D, D not divisible by ``num_heads``), bad
        ``offsets``, ``out`` of the wrong shape.
    MemoryError
        A sequence so long that its scores (L * L floats per thread) cannot be allocated.
    """
    return _core.attention(qkv, offsets, num_heads, out)


def attention_is_vectorized() -> bool:
    """True when the active kernel path has a SIMD attention kernel (AVX2 and AVX-512 today);
    elsewhere the scalar reference runs, slower than NumPy's batched matmuls, and edgepack.text
    uses NumPy."""
    return bool(_core.attention_vectorized())


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = 1e-5, *,
               residual: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """LayerNorm over the last axis, with an optional residual added first (post-LN blocks).

    ``t = x + residual``; ``out = (t - mean(t)) / sqrt(var(t) + eps) * weight + bias``, the
    biased variance taken around the mean (two passes).

    Parameters
    ----------
    x : numpy.ndarray of float32, shape (M, D)
    weight, bias : numpy.ndarray of float32, shape (D,)
    eps : float >= 0
    residual : numpy.ndarray of float32, shape (M, D), optional
    out : numpy.ndarray of float32, shape (M, D), C-contiguous, optional
        Written in place and returned; may be ``x`` or ``residual`` itself.

    Returns
    -------
    numpy.ndarray of float32, shape (M, D)
        Within a few float32 ulps of the NumPy formula (other summation orders); each row's
        result depends on that row only, at any thread count.

    Raises
    ------
    TypeError
        A non-float32 array.
    ValueError
        Shapes that do not match, eps negative or not finite.
    """
    return _core.layer_norm(x, weight, bias, float(eps), residual, out)
