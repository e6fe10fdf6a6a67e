"""int8 GEMM: every path bit-exact against NumPy int64; linear_int8 against a NumPy model of the
same quantization; validation errors name the argument."""

import math

import numpy as np
import pytest

import edgepack
from edgepack import kernels as K

SHAPES = [  # M, K, N: sub-tiles, tile edges, primes, M = 0, K = 0, long K
    (0, 16, 16), (1, 1, 1), (1, 3, 5), (1, 768, 33), (2, 64, 16), (3, 5, 47), (4, 130, 64),
    (5, 17, 31), (6, 64, 48), (7, 257, 49), (13, 100, 97), (16, 64, 130), (37, 129, 65),
    (1, 0, 8), (3, 0, 4), (2, 16384, 19), (9, 4099, 3),
]


def ref_gemm(a, w):
    return a.astype(np.int64) @ w.astype(np.int64).T


def ref_dynamic_quant(x):
    amax = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(x.shape[0], np.float32)
    scale = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
    q = np.clip(np.rint(x / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


def ref_linear(x, w, ws, bias=None, act=None, q=None, xs=None):
    if q is None:
        q, xs = ref_dynamic_quant(x)
    acc = ref_gemm(q, w).astype(np.float32)
    y = (acc * xs[:, None]).astype(np.float32) * ws[None, :]
    if bias is not None:
        y = y + bias[None, :]
    y = y.astype(np.float64)
    if act == "relu":
        y = np.maximum(y, 0)
    elif act == "gelu":
        erf = np.vectorize(math.erf)
        y = 0.5 * y * (1 + erf(y / math.sqrt(2))) if y.size else y
    elif act == "gelu_tanh":
        y = 0.5 * y * (1 + np.tanh(0.7978845608028654 * (y + 0.044715 * y**3)))
    elif act == "silu":
        y = y / (1 + np.exp(-y))
    return y.astype(np.float32)


@pytest.mark.parametrize("m,k,n", SHAPES)
def test_gemm_random_exact(isa, rng, m, k, n):
    a = rng.integers(-128, 128, (m, k), dtype=np.int8)
    w = rng.integers(-127, 128, (n, k), dtype=np.int8)
    pw = K.pack_weights(w)
    np.testing.assert_array_equal(K.gemm_int8(a, pw), ref_gemm(a, w))
    np.testing.assert_array_equal(K.gemm_int8(a, w), ref_gemm(a, w))  # raw weights packed per call


@pytest.mark.parametrize("av,wv", [(-128, 127), (-128, -127), (127, 127), (127, -127), (-128, 1)])
@pytest.mark.parametrize("m,k,n", [(1, 16384, 17), (5, 4097, 33), (8, 1000, 64)])
def test_gemm_extremes_exact(isa, m, k, n, av, wv):
    a = np.full((m, k), av, np.int8)
    w = np.full((n, k), wv, np.int8)
    np.testing.assert_array_equal(K.gemm_int8(a, K.pack_weights(w)), ref_gemm(a, w))


def test_gemm_alternating_extremes(isa, rng):
    a = rng.choice(np.array([-128, 127, -127, 0], np.int8), size=(11, 2051))
    w = rng.choice(np.array([-127, 127], np.int8), size=(37, 2051))
    np.testing.assert_array_equal(K.gemm_int8(a, K.pack_weights(w)), ref_gemm(a, w))


def test_paths_agree_bitwise(rng):
    a = rng.integers(-128, 128, (23, 300), dtype=np.int8)
    w = rng.integers(-127, 128, (70, 300), dtype=np.int8)
    pw = K.pack_weights(w)
    x = rng.standard_normal((23, 300)).astype(np.float32)
    ws = rng.random(70).astype(np.float32) * 0.01
    b = rng.standard_normal(70).astype(np.float32)
    outs, lins = [], []
    for name in edgepack.available_isas():
        with edgepack.use_isa(name):
            outs.append(K.gemm_int8(a, pw))
            lins.append(K.linear_int8(x, pw, ws, b, activation="relu"))
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])
    for o in lins[1:]:
        np.testing.assert_array_equal(o, lins[0])


@pytest.mark.parametrize("m,k,n", [(1, 768, 77), (4, 33, 16), (7, 130, 50), (64, 256, 96), (0, 8, 8)])
@pytest.mark.parametrize("act", [None, "relu", "gelu", "gelu_tanh", "silu"])
def test_linear_int8_dynamic(isa, rng, m, k, n, act):
    x = (rng.standard_normal((m, k)) * 3).astype(np.float32)
    if m > 2:
        x[1] = 0  # all-zero row: scale 1
    w = rng.integers(-127, 128, (n, k), dtype=np.int8)
    ws = (rng.random(n) * 0.02 + 1e-3).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    y = K.linear_int8(x, K.pack_weights(w), ws, b, activation=act)
    ref = ref_linear(x, w, ws, b, act)
    if act in (None, "relu"):
        np.testing.assert_array_equal(y, ref)  # same float ops in the same order on every path
    else:
        np.testing.assert_allclose(y, ref, rtol=2e-6, atol=2e-6)


def test_linear_int8_ties_round_half_even(isa):
    # x / scale lands exactly on k + 0.5 for these values: scale = 127/127 = 1.
    x = np.array([[127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.0]], np.float32)
    w = np.eye(8, dtype=np.int8)
    y = K.linear_int8(x, K.pack_weights(w), np.ones(8, np.float32))
    np.testing.assert_array_equal(y[0], [127, 0, 2, 2, -0, -2, -2, 3])


@pytest.mark.parametrize("dt,zp", [("uint8", 128), ("uint8", 3), ("int8", 0), ("int8", -5)])
def test_linear_int8_static(isa, rng, dt, zp):
    m, k, n = 9, 70, 40
    x = (rng.standard_normal((m, k)) * 2).astype(np.float32)
    w = rng.integers(-127, 128, (n, k), dtype=np.int8)
    ws = (rng.random(n) * 0.01).astype(np.float32)
    xs = np.float32(0.02)
    lo, hi = (0, 255) if dt == "uint8" else (-128, 127)
    q = np.clip(np.rint(x / xs) + zp, lo, hi).astype(np.int64) - zp  # saturates on purpose
    y = K.linear_int8(x, K.pack_weights(w), ws, x_scale=float(xs), x_zero_point=zp, x_dtype=dt)
    acc = (q @ w.astype(np.int64).T).astype(np.float32)
    ref = (acc * xs).astype(np.float32) * ws[None, :]
    np.testing.assert_array_equal(y, ref)


def test_linear_out_and_scalar_scale(rng):
    x = rng.standard_normal((5, 20)).astype(np.float32)
    w = rng.integers(-127, 128, (8, 20), dtype=np.int8)
    pw = K.pack_weights(w)
    out = np.empty((5, 8), np.float32)
    r = K.linear_int8(x, pw, 0.5, out=out)
    assert r is out
    np.testing.assert_array_equal(out, K.linear_int8(x, pw, np.full(8, 0.5, np.float32)))


def test_packed_weights_roundtrip(rng):
    w = rng.integers(-127, 128, (33, 45), dtype=np.int8)
    pw = K.pack_weights(w)
    assert pw.shape == (33, 45) and pw.nbytes >= w.nbytes
    arrays = pw.to_arrays()
    assert set(arrays) == {"weight"} and arrays["weight"].dtype == np.int8
    np.testing.assert_array_equal(arrays["weight"], w)
    pw2 = K.PackedWeights.from_arrays(arrays)
    a = rng.integers(-128, 128, (3, 45), dtype=np.int8)
    np.testing.assert_array_equal(K.gemm_int8(a, pw2), K.gemm_int8(a, pw))


def test_thread_counts_give_same_bits(rng):
    a = rng.integers(-128, 128, (200, 512), dtype=np.int8)
    w = rng.integers(-127, 128, (300, 512), dtype=np.int8)
    pw = K.pack_weights(w)
    n0 = edgepack.get_num_threads()
    try:
        edgepack.set_num_threads(1)
        one = K.gemm_int8(a, pw)
        edgepack.set_num_threads(2)
        two = K.gemm_int8(a, pw)
    finally:
        edgepack.set_num_threads(n0)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(one, ref_gemm(a, w))


ERRORS = [
    (lambda: K.pack_weights(np.zeros((2, 3), np.float32)), TypeError, r"^w must be int8"),
    (lambda: K.pack_weights(np.zeros(3, np.int8)), ValueError, r"^w must be 2-D"),
    (lambda: K.pack_weights(np.full((2, 3), -128, np.int8)), ValueError, r"^w must hold values in \[-127, 127\]"),
    (lambda: K.pack_weights([[1, 2]]), TypeError, r"^w must be a numpy.ndarray"),
    (lambda: K.gemm_int8(np.zeros((2, 4), np.int16), np.zeros((3, 4), np.int8)), TypeError, r"^a must be int8"),
    (lambda: K.gemm_int8(np.zeros((2, 5), np.int8), K.pack_weights(np.zeros((3, 4), np.int8))), ValueError,
     r"^a must have shape \(M, K\) with K = 4"),
    (lambda: K.gemm_int8(np.zeros((2, 4), np.int8), "w"), TypeError, r"^w must be PackedWeights"),
    (lambda: K.linear_int8(np.zeros((2, 4), np.float64), K.pack_weights(np.zeros((3, 4), np.int8)), 1.0),
     TypeError, r"^x must be float32"),
    (lambda: K.linear_int8(np.zeros((2, 4), np.float32), np.zeros((3, 4), np.int8), 1.0), TypeError,
     r"^w must be PackedWeights"),
    (lambda: K.linear_int8(np.zeros((2, 4), np.float32), K.pack_weights(np.zeros((3, 4), np.int8)),
                           np.ones(2, np.float32)), ValueError, r"^w_scale must have shape \(3,\)"),
    (lambda: K.linear_int8(np.zeros((2, 4), np.float32), K.pack_weights(np.zeros((3, 4), np.int8)), 1.0,
                           bias=np.ones(4, np.float32)), ValueError, r"^bias must have shape \(3,\)"),
    (lambda: K.linear_int8(np.zeros((2, 4), np.float32), K.pack_weights(np.zeros((3, 4), np.int8)), 1.0,
                           activation="tanh"), ValueError, r"^activation must be None or one of"),
    (lambda: K.linear_int8(np.array([[1, np.nan, 0, 0]], np.float32), K.pack_weights(np.zeros((3, 4), np.int8)),
                           1.0), ValueError, r"^x must be finite; found NaN or Inf at flat index 1"),
    (lambda: K.linear_int8(np.zeros((2, 4), np.float32), K.pack_weights(np.zeros((3, 4), np.int8)), 1.0,
                           out=np.zeros((3, 3), np.float32)), ValueError, r"^out must have shape \(2, 3\)"),
    (lambda: K.linear_int8(np.zeros((2, 4), np.float32), K.pack_weights(np.zeros((3, 4), np.int8)), 1.0,
                           x_scale=0.0), ValueError, r"^x_scale must be a finite float > 0"),
    (lambda: K.linear_int8(np.zeros((2, 4), np.float32), K.pack_weights(np.zeros((3, 4), np.int8)), 1.0,
                           x_scale=0.1, x_zero_point=300, x_dtype="uint8"), ValueError, r"^x_zero_point must lie"),
]


@pytest.mark.parametrize("call,exc,pattern", ERRORS)
def test_errors(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


def test_nan_found_on_every_path(isa):
    x = np.zeros((3, 40), np.float32)
    x[2, 17] = np.inf
    with pytest.raises(ValueError, match="flat index 97"):
        K.linear_int8(x, K.pack_weights(np.ones((5, 40), np.int8)), 1.0)


def test_strided_input_is_copied(rng):
    a = rng.integers(-128, 128, (6, 40), dtype=np.int8)
    w = rng.integers(-127, 128, (9, 20), dtype=np.int8)
    view = a[:, ::2]
    np.testing.assert_array_equal(K.gemm_int8(view, K.pack_weights(w)), ref_gemm(view, w))
