"""int8 GEMM: bit-exact against a NumPy int64 reference on every path, and linear_int8."""

import math
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edgepack
from edgepack.kernels import PackedWeights, gemm_int8, linear_int8, pack_weights

F32 = np.float32


def ref_gemm(a, w):
    return a.astype(np.int64) @ w.astype(np.int64).T


def rand_a(rng, m, k):
    return rng.integers(-128, 128, (m, k), dtype=np.int16).astype(np.int8)


def rand_w(rng, n, k):
    return rng.integers(-127, 128, (n, k), dtype=np.int16).astype(np.int8)


def ref_quant_rows(x):
    amax = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(x.shape[0], F32)
    s = np.where(amax > 0, amax / F32(127), F32(1)).astype(F32)
    q = np.clip(np.round(x / s[:, None]), -127, 127).astype(np.int8)
    return q, s


def ref_epilogue(acc, xs, ws, bias):
    # The documented float32 order: (acc * xs[m]) * ws[n] + bias[n], each step rounded.
    y = (acc.astype(F32) * xs[:, None].astype(F32)) * ws[None, :].astype(F32)
    if bias is not None:
        y = y + bias[None, :]
    return y.astype(F32)


def ref_act(y, act):
    y = y.astype(np.float64)
    if act is None:
        return y
    if act == "relu":
        return np.maximum(y, 0)
    if act == "gelu":
        erf = np.vectorize(math.erf)
        return 0.5 * y * (1 + erf(y / math.sqrt(2)))
    if act == "gelu_tanh":
        return 0.5 * y * (1 + np.tanh(math.sqrt(2 / math.pi) * (y + 0.044715 * y**3)))
    if act == "silu":
        return y / (1 + np.exp(-y))
    raise AssertionError(act)


# M, K, N: tiles are 1-8 rows x 16-64 columns x 4 k; none of these is safe from remainders.
SHAPES = [
    (1, 1, 1), (1, 3, 17), (2, 5, 16), (3, 64, 33), (4, 65, 48), (5, 7, 100), (7, 128, 15),
    (8, 96, 64), (9, 130, 49), (17, 33, 129), (33, 200, 80), (1, 768, 200), (64, 64, 64),
    (0, 16, 16), (5, 0, 7), (3, 9, 0),
]


@pytest.mark.parametrize("m,k,n", SHAPES)
def test_gemm_exact_random(isa, rng, m, k, n):
    a, w = rand_a(rng, m, k), rand_w(rng, n, k)
    c = gemm_int8(a, pack_weights(w))
    assert c.dtype == np.int32 and c.shape == (m, n)
    np.testing.assert_array_equal(c, ref_gemm(a, w))


@pytest.mark.parametrize("aval,wval", [(-128, 127), (-128, -127), (127, 127), (127, -127)])
@pytest.mark.parametrize("m,k,n", [(1, 16384, 17), (5, 16384, 33), (9, 4099, 50)])
def test_gemm_exact_extremes(isa, m, k, n, aval, wval):
    a = np.full((m, k), aval, np.int8)
    w = np.full((n, k), wval, np.int8)
    np.testing.assert_array_equal(gemm_int8(a, pack_weights(w)), ref_gemm(a, w))


def test_gemm_exact_mixed_extremes(isa, rng):
    # Every pair of extremes next to each other in a dot-product group (the AVX2 int16 pairs).
    m, k, n = 11, 4096, 37
    a = rng.choice(np.array([-128, 127, -127, 0, 1, -1], np.int8), (m, k))
    w = rng.choice(np.array([-127, 127, 0, 1, -1], np.int8), (n, k))
    np.testing.assert_array_equal(gemm_int8(a, pack_weights(w)), ref_gemm(a, w))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(m=st.integers(0, 40), k=st.integers(0, 300), n=st.integers(0, 90), seed=st.integers(0, 2**32 - 1))
def test_gemm_exact_hypothesis(isa, m, k, n, seed):
    r = np.random.default_rng(seed)
    a, w = rand_a(r, m, k), rand_w(r, n, k)
    np.testing.assert_array_equal(gemm_int8(a, w), ref_gemm(a, w))


def test_gemm_same_at_any_thread_count(rng):
    a, w = rand_a(rng, 70, 300), rand_w(rng, 200, 300)
    pw = pack_weights(w)
    prev = edgepack.get_num_threads()
    try:
        edgepack.set_num_threads(1)
        c1 = gemm_int8(a, pw)
        edgepack.set_num_threads(2)
        c2 = gemm_int8(a, pw)
    finally:
        edgepack.set_num_threads(prev)
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(c1, ref_gemm(a, w))


def test_gemm_concurrent_python_threads(rng):
    a, w = rand_a(rng, 40, 500), rand_w(rng, 300, 500)
    pw, ref = pack_weights(w), ref_gemm(a, w)
    bad = []

    def work():
        for _ in range(5):
            if not np.array_equal(gemm_int8(a, pw), ref):
                bad.append(1)

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not bad


def test_gemm_out_and_strided_input(rng):
    a, w = rand_a(rng, 6, 40), rand_w(rng, 20, 40)
    out = np.empty((6, 20), np.int32)
    r = gemm_int8(a, pack_weights(w), out=out)
    assert r is out or np.shares_memory(r, out)
    np.testing.assert_array_equal(out, ref_gemm(a, w))
    big = rand_a(rng, 12, 80)
    view = big[::2, ::2]
    np.testing.assert_array_equal(gemm_int8(view, w), ref_gemm(view, w))


def test_gemm_errors(rng):
    w = pack_weights(rand_w(rng, 8, 10))
    with pytest.raises(TypeError, match="a must be int8"):
        gemm_int8(np.zeros((2, 10), np.float32), w)
    with pytest.raises(TypeError, match="a must be a numpy"):
        gemm_int8([[1, 2]], w)
    with pytest.raises(ValueError, match=r"a must have shape \(M, K\) with K = w.shape\[1\] = 10"):
        gemm_int8(np.zeros((2, 9), np.int8), w)
    with pytest.raises(ValueError, match="a must be 2-D"):
        gemm_int8(np.zeros(10, np.int8), w)
    with pytest.raises(TypeError, match="w must be a PackedWeights"):
        gemm_int8(np.zeros((2, 10), np.int8), "w")
    with pytest.raises(ValueError, match=r"out must have shape \(2, 8\)"):
        gemm_int8(np.zeros((2, 10), np.int8), w, out=np.zeros((2, 7), np.int32))
    with pytest.raises(TypeError, match="out must be int32"):
        gemm_int8(np.zeros((2, 10), np.int8), w, out=np.zeros((2, 8), np.int64))


def test_pack_weights_checks_and_roundtrip(rng):
    w = rand_w(rng, 19, 23)
    pw = pack_weights(w)
    assert isinstance(pw, PackedWeights) and pw.shape == (19, 23)
    np.testing.assert_array_equal(pw._column_sums(), w.astype(np.int64).sum(1))
    d = pw.to_arrays()
    assert set(d) == {"weight"} and d["weight"].dtype == np.int8
    np.testing.assert_array_equal(d["weight"], w)
    pw2 = PackedWeights.from_arrays({k: v.copy() for k, v in d.items()})
    a = rand_a(rng, 3, 23)
    np.testing.assert_array_equal(gemm_int8(a, pw2), gemm_int8(a, pw))
    bad = w.copy()
    bad[4, 7] = -128
    with pytest.raises(ValueError, match=r"w must hold int8 values in \[-127, 127\].*\[4, 7\]"):
        pack_weights(bad)
    with pytest.raises(ValueError, match=r"w must hold int8 values"):
        gemm_int8(a, bad)
    with pytest.raises(TypeError, match="w must be int8"):
        pack_weights(w.astype(np.int16))
    with pytest.raises(ValueError, match="w must be 2-D"):
        pack_weights(w[0])
    with pytest.raises(ValueError, match="weight"):
        PackedWeights.from_arrays({"w": w})


def test_packed_weights_copy():
    import copy

    w = np.arange(-60, 60, dtype=np.int8).reshape(8, 15)
    pw = copy.deepcopy(pack_weights(w))
    np.testing.assert_array_equal(pw.to_arrays()["weight"], w)


# ---- linear_int8 ------------------------------------------------------------------------------


@pytest.mark.parametrize("m,k,n", [(1, 64, 48), (3, 37, 20), (9, 130, 70), (20, 256, 33), (0, 8, 5), (3, 0, 5)])
@pytest.mark.parametrize("use_bias", [False, True])
@pytest.mark.parametrize("act", [None, "relu"])
def test_linear_exact_without_transcendentals(isa, rng, m, k, n, use_bias, act):
    x = (rng.standard_normal((m, k)) * 3).astype(F32)
    w = rand_w(rng, n, k)
    ws = (rng.random(n) * 0.02 + 0.001).astype(F32)
    b = rng.standard_normal(n).astype(F32) if use_bias else None
    y = linear_int8(x, pack_weights(w), ws, bias=b, activation=act)
    q, s = ref_quant_rows(x)
    ref = ref_epilogue(ref_gemm(q, w), s, ws, b)
    if act == "relu":
        ref = np.maximum(ref, F32(0))
    assert y.dtype == np.float32 and y.shape == (m, n)
    np.testing.assert_array_equal(y, ref)


@pytest.mark.parametrize("act", ["gelu", "gelu_tanh", "silu"])
def test_linear_activations(isa, rng, act):
    m, k, n = 7, 96, 300
    x = (rng.standard_normal((m, k)) * 2).astype(F32)
    w = rand_w(rng, n, k)
    ws = np.full(n, 0.004, F32)
    b = np.linspace(-12, 12, n).astype(F32)  # covers the tails of every activation
    y = linear_int8(x, w, ws, bias=b, activation=act)
    q, s = ref_quant_rows(x)
    pre = ref_epilogue(ref_gemm(q, w), s, ws, b)
    ref = ref_act(pre, act)
    assert np.abs(y - ref).max() <= 1e-5 * (1 + np.abs(ref)).max()
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_linear_quantization_ties_and_zero_rows(isa):
    # absmax 127 -> scale 1, so x / s = x exactly: halves must round to even.
    k = 16
    x = np.zeros((3, k), F32)
    x[0, :8] = [127, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5]
    x[2, 0] = -254  # scale 2, ties at odd x
    x[2, 1:4] = [1, 3, 5]
    w = np.eye(k, dtype=np.int8)
    y = linear_int8(x, w, 1.0)
    np.testing.assert_array_equal(y[0, :8], [127, 0, 2, 2, 0, -2, -2, 4])
    np.testing.assert_array_equal(y[1], np.zeros(k, F32))  # all-zero row: scale 1, q = 0
    np.testing.assert_array_equal(y[2, :4], [-254, 0, 4, 4])


def test_linear_scalar_w_scale_out_and_1d(rng):
    x = rng.standard_normal((4, 50)).astype(F32)
    w = pack_weights(rand_w(rng, 30, 50))
    y1 = linear_int8(x, w, 0.01)
    y2 = linear_int8(x, w, np.full(30, 0.01, F32))
    y3 = linear_int8(x, w, np.float32(0.01))
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(y1, y3)
    out = np.empty((4, 30), F32)
    linear_int8(x, w, 0.01, out=out)
    np.testing.assert_array_equal(out, y1)
    np.testing.assert_array_equal(linear_int8(x[1], w, 0.01), y1[1])


def test_linear_same_at_any_thread_count(rng):
    x = rng.standard_normal((64, 512)).astype(F32)
    w = pack_weights(rand_w(rng, 256, 512))
    prev = edgepack.get_num_threads()
    try:
        edgepack.set_num_threads(1)
        y1 = linear_int8(x, w, 0.01, activation="gelu")
        edgepack.set_num_threads(2)
        y2 = linear_int8(x, w, 0.01, activation="gelu")
    finally:
        edgepack.set_num_threads(prev)
    np.testing.assert_array_equal(y1, y2)


@pytest.mark.parametrize("zp", [np.uint8(0), np.uint8(131), np.uint8(255), np.int8(0), np.int8(-7), None])
def test_linear_static(isa, rng, zp):
    m, k, n = 5, 70, 40
    x = (rng.standard_normal((m, k)) * 2).astype(F32)
    w = rand_w(rng, n, k)
    ws = (rng.random(n) * 0.01 + 0.001).astype(F32)
    xs = F32(0.03)
    u8 = isinstance(zp, np.uint8)
    z = 0 if zp is None else int(zp)
    lo, hi = (0, 255) if u8 else (-128, 127)
    q = np.clip(np.round(x / xs) + z, lo, hi).astype(np.int64)
    ref = ref_epilogue(ref_gemm(q - z, w), np.full(m, xs, F32), ws, None)
    y = linear_int8(x, w, ws, x_scale=float(xs), x_zero_point=zp)
    np.testing.assert_array_equal(y, ref)
    # Already-quantized activations of the zero point's dtype give the same result.
    yq = linear_int8(q.astype(np.uint8 if u8 else np.int8), w, ws, x_scale=float(xs), x_zero_point=zp)
    np.testing.assert_array_equal(yq, ref)


def test_linear_errors(rng):
    w = pack_weights(rand_w(rng, 8, 10))
    x = rng.standard_normal((3, 10)).astype(F32)
    bad = x.copy()
    bad[2, 5] = np.nan
    with pytest.raises(ValueError, match="x must be finite.*index 25"):
        linear_int8(bad, w, 1.0)
    bad[2, 5] = np.inf
    with pytest.raises(ValueError, match="x must be finite"):
        linear_int8(bad, w, 1.0)
    with pytest.raises(ValueError, match="x must be finite"):
        linear_int8(bad, w, 1.0, x_scale=0.1)
    with pytest.raises(TypeError, match="x must be float32"):
        linear_int8(x.astype(np.float64), w, 1.0)
    with pytest.raises(ValueError, match=r"x must have shape \(M, K\) with K = w.shape\[1\] = 10"):
        linear_int8(x[:, :9], w, 1.0)
    with pytest.raises(ValueError, match="w_scale must have shape"):
        linear_int8(x, w, np.ones(7, F32))
    with pytest.raises(TypeError, match="w_scale must be float32"):
        linear_int8(x, w, np.ones(8))
    with pytest.raises(ValueError, match="w_scale must be finite"):
        linear_int8(x, w, float("nan"))
    with pytest.raises(ValueError, match="bias must have shape"):
        linear_int8(x, w, 1.0, bias=np.ones(9, F32))
    with pytest.raises(TypeError, match="bias must be float32"):
        linear_int8(x, w, 1.0, bias=np.ones(8))
    with pytest.raises(ValueError, match="activation must be None"):
        linear_int8(x, w, 1.0, activation="tanh")
    with pytest.raises(TypeError, match="activation must be None or a str"):
        linear_int8(x, w, 1.0, activation=3)
    with pytest.raises(ValueError, match="out must have shape"):
        linear_int8(x, w, 1.0, out=np.empty((3, 9), F32))
    with pytest.raises(ValueError, match="x_scale must be a finite number > 0"):
        linear_int8(x, w, 1.0, x_scale=0.0)
    with pytest.raises(TypeError, match="x_zero_point must be np.uint8 or np.int8"):
        linear_int8(x, w, 1.0, x_scale=0.1, x_zero_point=3)
    with pytest.raises(ValueError, match="x_zero_point needs x_scale"):
        linear_int8(x, w, 1.0, x_zero_point=np.uint8(3))
    with pytest.raises(TypeError, match="x must be float32 or uint8"):
        linear_int8(x.astype(np.int8), w, 1.0, x_scale=0.1, x_zero_point=np.uint8(3))


def test_peak_probe_positive():
    from edgepack import _core

    assert _core.gemm_peak_gops(0.01) > 0


def test_linear_quantization_near_ties_exact(isa, rng):
    # The vector quantizers multiply by 1/s and fall back to division near half-integers; values
    # on and a few ulp around every tie must still match round_half_even(x / s) exactly.
    k = 128
    base = (np.arange(k, dtype=np.float32) - 64) + F32(0.5)
    rows = [np.concatenate([[F32(127)], base[1:]])]
    for d in (1, 2, 3, 8, 64, 1024):
        up = np.nextafter(base, np.inf)
        for _ in range(d - 1):
            up = np.nextafter(up, np.inf)
        rows.append(np.concatenate([[F32(127)], up[1:]]))
        rows.append(np.concatenate([[F32(-127)], (-up)[1:]]))
    x = np.stack(rows).astype(F32) * F32(0.37)  # scale != 1: x / s is not exact
    x = np.concatenate([x, (rng.standard_normal((40, k)) * 5).astype(F32)])
    w = np.eye(k, dtype=np.int8)
    y = linear_int8(x, w, 1.0)
    q, s = ref_quant_rows(x)
    np.testing.assert_array_equal(y, ref_epilogue(q.astype(np.int64), s, np.ones(k, F32), None))


def test_bench_suite_smoke(capsys):
    from edgepack.benchsuite.gemm import main

    assert main(["--shapes", "4x64x40", "--threads", "1", "--quick", "--no-ort"]) == 0
    text = capsys.readouterr().out
    assert "4x64x40" in text and "GOP/s" in text
    with pytest.raises(ValueError, match="MxKxN"):
        main(["--shapes", "4x64", "--quick", "--no-ort"])
