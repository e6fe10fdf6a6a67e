"""edgepack.kernels.attention on every path against a float64 NumPy reference, its argument
checks, and thread-count invariance."""

import numpy as np
import pytest

import edgepack
from edgepack.kernels import attention


def reference(qkv, offsets, heads):
    n, d3 = qkv.shape
    d = d3 // 3
    dh = d // heads
    out = np.zeros((n, d))
    for s in range(len(offsets) - 1):
        a, b = offsets[s], offsets[s + 1]
        if a == b:
            continue
        blk = qkv[a:b].astype(np.float64).reshape(b - a, 3, heads, dh)
        for h in range(heads):
            q, k, v = blk[:, 0, h], blk[:, 1, h], blk[:, 2, h]
            sc = q @ k.T
            sc -= sc.max(axis=1, keepdims=True)
            p = np.exp(sc)
            out[a:b, h * dh:(h + 1) * dh] = (p / p.sum(axis=1, keepdims=True)) @ v
    return out


CASES = [([128], 12, 32), ([1, 5, 17, 40, 3], 3, 20), ([33, 16], 2, 7), ([200], 4, 64), ([20], 2, 100),
         ([9], 1, 48), ([16, 1], 1, 16), ([0, 4, 0], 2, 8), ([11], 2, 24), ([6, 19], 1, 40), ([13], 1, 56),
         ([300], 1, 32)]


@pytest.mark.parametrize("lens,heads,dh", CASES)
def test_matches_float64_reference(isa, lens, heads, dh):
    rng = np.random.default_rng(len(lens) * 100 + dh)
    offsets = np.r_[0, np.cumsum(lens)].astype(np.int64)
    qkv = (rng.standard_normal((offsets[-1], 3 * heads * dh)) * 2).astype(np.float32)
    got = attention(qkv, offsets, heads)
    ref = reference(qkv, offsets, heads)
    assert got.dtype == np.float32 and got.shape == ref.shape
    # float32 dot products of up to 100 terms of size ~4 and a vectorized exp (~2 ulp): the
    # outputs are convex combinations of the values, so bound the error by the values' scale
    if ref.size:
        assert np.abs(got - ref).max() <= 3e-5 * np.abs(qkv).max()


def test_vectorized_flag_names_the_simd_paths(isa):
    # edgepack.text picks the kernel over its NumPy attention by this flag: true on the paths
    # with a SIMD kernel measured faster than NumPy (AVX2, AVX-512), false for the scalar one
    with edgepack.use_isa(isa):
        assert edgepack.kernels.attention_is_vectorized() == (isa.startswith("avx2") or isa.startswith("avx512"))


def test_extreme_scores_and_out(isa):
    rng = np.random.default_rng(1)
    qkv = rng.standard_normal((40, 3 * 16)).astype(np.float32)
    qkv[:, :16] *= 50.0              # scores in the thousands: one key takes all the weight
    offsets = np.array([0, 40], np.int64)
    out = np.full((40, 16), np.nan, np.float32)
    r = attention(qkv, offsets, 1, out=out)
    assert r is out and np.isfinite(out).all()
    np.testing.assert_allclose(out, reference(qkv, offsets, 1), atol=1e-4)


def test_same_bits_at_any_thread_count():
    rng = np.random.default_rng(2)
    offsets = np.array([0, 100, 228, 300], np.int64)
    qkv = rng.standard_normal((300, 3 * 384)).astype(np.float32)
    n0 = edgepack.get_num_threads()
    try:
        edgepack.set_num_threads(1)
        a = attention(qkv, offsets, 12)
        edgepack.set_num_threads(max(2, n0))
        b = attention(qkv, offsets, 12)
    finally:
        edgepack.set_num_threads(n0)
    np.testing.assert_array_equal(a, b)


def test_strided_qkv_is_accepted():
    rng = np.random.default_rng(3)
    big = rng.standard_normal((10, 2 * 24)).astype(np.float32)
    qkv = big[:, ::2]
    np.testing.assert_array_equal(attention(qkv, np.array([0, 10]), 2),
                                  attention(np.ascontiguousarray(qkv), np.array([0, 10]), 2))


def test_errors_name_the_argument():
    qkv = np.zeros((4, 24), np.float32)
    off = np.array([0, 4], np.int64)
    with pytest.raises(TypeError, match="qkv must be float32"):
        attention(qkv.astype(np.float64), off, 2)
    with pytest.raises(TypeError, match="offsets must be int64"):
        attention(qkv, off.astype(np.int32), 2)
    with pytest.raises(TypeError, match="num_heads must be an int"):
        attention(qkv, off, 2.0)
    with pytest.raises(ValueError, match="num_heads must be >= 1"):
        attention(qkv, off, 0)
    with pytest.raises(ValueError, match="D divisible by num_heads"):
        attention(qkv, off, 3)
    with pytest.raises(ValueError, match="qkv must have 3 \\* D columns"):
        attention(np.zeros((4, 25), np.float32), off, 1)
    with pytest.raises(ValueError, match="offsets must start at 0 and end at N"):
        attention(qkv, np.array([0, 3], np.int64), 2)
    with pytest.raises(ValueError, match="offsets must be non-decreasing"):
        attention(qkv, np.array([0, 3, 2, 4], np.int64), 2)
    with pytest.raises(ValueError, match="qkv must be 2-D"):
        attention(np.zeros(24, np.float32), off, 2)
    with pytest.raises(ValueError, match="out must have shape"):
        attention(qkv, off, 2, out=np.zeros((4, 9), np.float32))


# ---- layer_norm (the other float kernel of a transformer block) ---------------------------------

from edgepack.kernels import layer_norm  # noqa: E402


@pytest.mark.parametrize("m,d", [(5, 384), (3, 7), (130, 33), (1, 1), (0, 16), (2, 1000)])
def test_layer_norm_matches_float64(isa, m, d):
    rng = np.random.default_rng(m * 1000 + d)
    x = (rng.standard_normal((m, d)) * 3 + 1).astype(np.float32)
    r = rng.standard_normal((m, d)).astype(np.float32)
    w = rng.standard_normal(d).astype(np.float32)
    b = rng.standard_normal(d).astype(np.float32)
    for res in (None, r):
        t = x.astype(np.float64) + (0 if res is None else res)
        ref = (t - t.mean(1, keepdims=True)) / np.sqrt(t.var(1, keepdims=True) + 1e-5) * w + b
        got = layer_norm(x, w, b, 1e-5, residual=res)
        # float32 sums of up to 1000 terms: a few ulps of the normalised values (|w| <~ 4)
        np.testing.assert_allclose(got, ref, atol=5e-6 * max(1, np.sqrt(d)) * max(1, np.abs(w).max()))


def test_layer_norm_in_place_and_rows_independent():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((64, 96)).astype(np.float32)
    r = rng.standard_normal((64, 96)).astype(np.float32)
    w, b = np.ones(96, np.float32), np.zeros(96, np.float32)
    full = layer_norm(x, w, b, 1e-12, residual=r)
    one = layer_norm(x[7:8], w, b, 1e-12, residual=r[7:8])
    np.testing.assert_array_equal(full[7:8], one)
    y = x.copy()
    assert layer_norm(y, w, b, 1e-12, residual=r, out=y) is y
    np.testing.assert_array_equal(y, full)


def test_layer_norm_errors():
    x = np.zeros((2, 4), np.float32)
    w = np.ones(4, np.float32)
    with pytest.raises(TypeError, match="x must be float32"):
        layer_norm(x.astype(np.float64), w, w)
    with pytest.raises(ValueError, match="weight must have shape \\(4,\\)"):
        layer_norm(x, np.ones(5, np.float32), w)
    with pytest.raises(ValueError, match="residual must have shape"):
        layer_norm(x, w, w, residual=np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="eps must be a finite number"):
        layer_norm(x, w, w, eps=-1.0)
    with pytest.raises(ValueError, match="out must have shape"):
        layer_norm(x, w, w, out=np.zeros((3, 4), np.float32))
