"""quantize / dequantize / quantize_rows / choose_qparams: every path bit for bit against NumPy."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edgepack
from edgepack import kernels as K

F32 = np.float32
RANGES = {np.int8: (-128, 127), np.uint8: (0, 255)}


# ---- NumPy references (float32 arithmetic, as ONNX specifies) -----------------------------------

def _bcast(v, ndim, axis):
    v = np.asarray(v)
    if v.ndim == 0 or axis is None:
        return v
    shape = [1] * ndim
    shape[axis] = -1
    return v.reshape(shape)


def ref_quantize(x, scale, zp=0, axis=None, dtype=np.int8):
    s = _bcast(np.asarray(scale, F32), x.ndim, axis)
    z = _bcast(np.asarray(0 if zp is None else zp, np.int64), x.ndim, axis)
    lo, hi = RANGES[dtype]
    with np.errstate(over="ignore", invalid="ignore"):
        t = np.rint(x / s)  # float32 quotient, rounded half to even
    return np.clip(t.astype(np.float64) + z, lo, hi).astype(dtype)


def ref_dequantize(q, scale, zp=0, axis=None):
    s = _bcast(np.asarray(scale, F32), q.ndim, axis)
    z = _bcast(np.asarray(0 if zp is None else zp, np.int32), q.ndim, axis)
    return (q.astype(np.int32) - z).astype(F32) * s


def ref_quant_rows(x):
    amax = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(x.shape[0], F32)
    s = amax / F32(127)
    s = np.where(s > 0, s, F32(1)).astype(F32)  # zero row, or absmax / 127 underflowed
    q = np.clip(np.rint(x / s[:, None]), -127, 127).astype(np.int8)
    return q, s


def ref_qparams(x, axis, symmetric, dtype):
    if axis is None:
        mn = np.array([x.min() if x.size else np.inf], F32)
        mx = np.array([x.max() if x.size else -np.inf], F32)
    else:
        red = tuple(i for i in range(x.ndim) if i != axis % x.ndim)
        if x.size:
            mn, mx = x.min(axis=red).astype(F32), x.max(axis=red).astype(F32)
        else:
            mn = np.full(x.shape[axis], np.inf, F32)
            mx = -mn
    mn, mx = np.minimum(mn, F32(0)), np.maximum(mx, F32(0))
    lo, hi = RANGES[dtype]
    if symmetric:
        amax = np.maximum(-mn, mx)
        s = amax / F32(127)
        s = np.where(s > 0, s, F32(1)).astype(F32)
        z = np.full(s.shape, 128 if dtype == np.uint8 else 0)
    else:
        with np.errstate(over="ignore"):
            span = mx - mn
        s = np.where(np.isfinite(span), span / F32(hi - lo),
                     ((mx * F32(0.5) - mn * F32(0.5)) / F32(hi - lo)) * F32(2))
        s = np.where(s > 0, s, F32(1)).astype(F32)
        z = np.rint(np.clip(F32(lo) - mn / s, F32(lo), F32(hi)))
    return s, z.astype(dtype)


def hard_values(rng, n, scale=F32(0.25)):
    """Ties (k + 0.5) * scale, saturation, denormals, extremes, zeros and ordinary values."""
    kind = rng.integers(0, 6, n)
    v = rng.standard_normal(n).astype(F32) * F32(20)
    ties = ((rng.integers(-300, 300, n) + F32(0.5)) * scale).astype(F32)
    v = np.where(kind == 0, ties, v)
    v = np.where(kind == 1, rng.choice(np.array([1e-45, -1e-45, 1e-39, -3e-39, 0.0, -0.0], F32), n), v)
    v = np.where(kind == 2, rng.choice(np.array([3.4e38, -3.4e38, 1e20, -1e20, 1e6, -1e6], F32), n), v)
    return v.astype(F32)


SIZES = [0, 1, 2, 3, 5, 7, 13, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 129, 1000, 4099]


# ---- quantize -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,zp", [(np.int8, None), (np.int8, 3), (np.int8, -128), (np.int8, 127),
                                      (np.uint8, None), (np.uint8, 128), (np.uint8, 255)])
def test_quantize_per_tensor(isa, rng, dtype, zp):
    for n in SIZES:
        x = hard_values(rng, n)
        for scale in (F32(0.25), F32(0.1), F32(1e-30), F32(3e38), F32(7.0)):
            got = K.quantize(x, scale, zp, dtype=dtype)
            assert got.dtype == dtype and got.shape == x.shape
            np.testing.assert_array_equal(got, ref_quantize(x, scale, zp, None, dtype),
                                          err_msg=f"n={n} scale={scale}")


def test_quantize_exact_ties_and_saturation(isa):
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, 127.5, -127.5, -128.5, 1e30, -1e30], F32)
    np.testing.assert_array_equal(K.quantize(x, 1.0), [0, 2, 2, 0, -2, -2, 126, 127, -128, -128, 127, -128])
    np.testing.assert_array_equal(K.quantize(x, 1.0, 128, dtype=np.uint8),
                                  [128, 130, 130, 128, 126, 126, 254, 255, 0, 0, 255, 0])
    # x / scale where the product with the reciprocal would round differently than the division
    x = np.arange(1, 200001, dtype=F32) * F32(0.1)
    np.testing.assert_array_equal(K.quantize(x, F32(0.3), dtype=np.uint8), ref_quantize(x, F32(0.3), 0, None, np.uint8))


def test_quantize_divides_not_multiplies(isa, rng):
    # Values within 1e-4 of ties, where rint(x * (1 / s)) differs from rint(x / s) thousands of
    # times: the kernels must give the quotient's rounding (ONNX divides).
    for s in (F32(0.3), F32(0.1), F32(1 / 3), F32(0.013), F32(1e-30), F32(3e35)):
        k = rng.integers(-300, 300, 20000)
        x = ((k + F32(0.5) + rng.uniform(-1e-4, 1e-4, k.size).astype(F32)) * s).astype(F32)
        with np.errstate(over="ignore", invalid="ignore"):
            differ = np.rint(x / s) != np.rint(x * (F32(1) / s))
        assert s > 1e30 or s < 1e-20 or differ.sum() > 100  # the test has teeth
        for dtype, zp in ((np.int8, 0), (np.int8, -100), (np.uint8, 128), (np.uint8, 0)):
            np.testing.assert_array_equal(K.quantize(x, s, zp, dtype=dtype), ref_quantize(x, s, zp, None, dtype))
        sc = np.array([s, s], F32)
        x2 = x.reshape(2, -1)
        np.testing.assert_array_equal(K.quantize(x2, sc, axis=0), ref_quantize(x2, sc, 0, 0))
        xt = np.ascontiguousarray(x2.T)
        np.testing.assert_array_equal(K.quantize(xt, sc, axis=1), ref_quantize(xt, sc, 0, 1))


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_quantize_per_channel_every_axis(isa, rng, dtype):
    lo, hi = RANGES[dtype]
    for shape in [(3, 5, 7), (1, 17, 2), (4, 1, 33), (2, 64, 16), (5, 0, 3), (0, 4, 4)]:
        x = hard_values(rng, int(np.prod(shape))).reshape(shape)
        for axis in range(-3, 3):
            c = shape[axis]
            scale = rng.uniform(0.05, 2.0, c).astype(F32)
            zp = rng.integers(lo, hi + 1, c).astype(dtype)
            got = K.quantize(x, scale, zp, axis=axis, dtype=dtype)
            np.testing.assert_array_equal(got, ref_quantize(x, scale, zp, axis, dtype),
                                          err_msg=f"shape={shape} axis={axis}")
            back = K.dequantize(got, scale, zp, axis=axis)
            np.testing.assert_array_equal(back, ref_dequantize(got, scale, zp, axis))


def test_numpy_integer_axis(rng):
    x = rng.standard_normal((4, 6)).astype(F32)
    s = np.full(6, 0.05, F32)
    np.testing.assert_array_equal(K.quantize(x, s, axis=np.int64(-1)), ref_quantize(x, s, 0, 1))
    assert K.choose_qparams(x, axis=np.int32(0))[0].shape == (4,)


def test_quantize_scalar_scale_with_axis_is_per_tensor(isa, rng):
    x = rng.standard_normal((4, 6)).astype(F32)
    np.testing.assert_array_equal(K.quantize(x, 0.05, axis=1), ref_quantize(x, 0.05))
    np.testing.assert_array_equal(K.quantize(x, np.array([0.05], F32)), ref_quantize(x, 0.05))


def test_quantize_large_threaded_paths(isa, rng):
    # Above the threading threshold, with runs longer and shorter than a task block.
    x = hard_values(rng, 1 << 19, F32(0.5))
    np.testing.assert_array_equal(K.quantize(x, F32(0.5), 7), ref_quantize(x, F32(0.5), 7))
    x2 = x.reshape(64, 8192)
    s = rng.uniform(0.1, 1, 64).astype(F32)
    np.testing.assert_array_equal(K.quantize(x2, s, axis=0), ref_quantize(x2, s, 0, 0))
    s = rng.uniform(0.1, 1, 8192).astype(F32)
    z = rng.integers(0, 256, 8192).astype(np.uint8)
    np.testing.assert_array_equal(K.quantize(x2, s, z, axis=1, dtype=np.uint8),
                                  ref_quantize(x2, s, z, 1, np.uint8))
    x3 = x.reshape(2, 4, 65536)
    s = rng.uniform(0.1, 1, 4).astype(F32)
    np.testing.assert_array_equal(K.quantize(x3, s, axis=1), ref_quantize(x3, s, 0, 1))


# ---- dequantize ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_dequantize(isa, rng, dtype):
    lo, hi = RANGES[dtype]
    for n in SIZES + [1 << 19]:
        q = rng.integers(lo, hi + 1, n).astype(dtype)
        for scale, zp in ((F32(0.1), None), (F32(3e-39), lo), (F32(1e30), hi), (F32(0.7), (lo + hi) // 2)):
            got = K.dequantize(q, scale, zp)
            assert got.dtype == F32 and got.shape == q.shape
            np.testing.assert_array_equal(got, ref_dequantize(q, scale, zp))


# ---- quantize_rows ------------------------------------------------------------------------------

def test_quantize_rows(isa, rng):
    for m in (0, 1, 3, 17):
        for k in SIZES:
            x = hard_values(rng, m * k).reshape(m, k)
            x[x == F32(3.4e38)] = 1  # keep absmax / 127 well inside float range
            x[x == F32(-3.4e38)] = -1
            if m > 1:
                x[1] = 0  # an all-zero row: scale 1
            q, s = K.quantize_rows(x)
            rq, rs = ref_quant_rows(x)
            assert q.dtype == np.int8 and s.dtype == F32 and q.shape == (m, k) and s.shape == (m,)
            np.testing.assert_array_equal(s, rs)
            np.testing.assert_array_equal(q, rq, err_msg=f"m={m} k={k}")


def test_quantize_rows_ties_and_large(isa, rng):
    # scale exactly 0.125 (absmax 15.875), every value a tie k + 0.5
    x = ((rng.integers(-127, 127, (8, 100)) + F32(0.5)) * F32(0.125)).astype(F32)
    x[:, 0] = F32(15.875)
    q, s = K.quantize_rows(x)
    np.testing.assert_array_equal(s, np.full(8, 0.125, F32))
    np.testing.assert_array_equal(q, ref_quant_rows(x)[0])
    # absmax / 127 denormal (1 / scale overflows) or underflowing to 0: zeros must stay 0
    x = np.zeros((3, 40), F32)
    x[0, 5], x[1, 7], x[2, 39] = F32(1.1754942e-38), F32(-3e-39), F32(1e-45)
    x = np.concatenate([x, np.zeros((2, 40), F32)])
    # absmax 190 * 2^-149: scale rounds to 2^-149, so |x| / scale = 190 -> clipped to +-127, not -128
    x[3, :] = F32(-190 * 2.0**-149)
    x[4, ::2] = F32(190 * 2.0**-149)
    q, s = K.quantize_rows(x)
    rq, rs = ref_quant_rows(x)
    np.testing.assert_array_equal(s, rs)
    np.testing.assert_array_equal(q, rq)
    x = rng.standard_normal((300, 3000)).astype(F32)  # above the threading threshold
    q, s = K.quantize_rows(x)
    rq, rs = ref_quant_rows(x)
    np.testing.assert_array_equal(s, rs)
    np.testing.assert_array_equal(q, rq)


def test_quantize_rows_is_the_linear_int8_quantizer(isa, rng):
    # linear_int8 with identity weights returns the dequantized activations of its row quantizer.
    x = rng.standard_normal((5, 16)).astype(F32)
    w = K.pack_weights(np.eye(16, dtype=np.int8))
    y = K.linear_int8(x, w, np.ones(16, F32))
    q, s = K.quantize_rows(x)
    np.testing.assert_array_equal(y, q.astype(F32) * s[:, None])


# ---- choose_qparams -----------------------------------------------------------------------------

@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_choose_qparams(isa, rng, symmetric, dtype):
    for x in (rng.standard_normal(1000).astype(F32) * F32(3) + F32(1),
              np.abs(rng.standard_normal((7, 33)).astype(F32)),
              -np.abs(rng.standard_normal((4, 5, 6)).astype(F32)),
              np.zeros((3, 4), F32), np.zeros((0,), F32), np.zeros((2, 0, 3), F32),
              hard_values(rng, 1 << 19)):
        for axis in [None] + list(range(-x.ndim, x.ndim)):
            s, z = K.choose_qparams(x, axis=axis, symmetric=symmetric, dtype=dtype)
            rs, rz = ref_qparams(x, axis, symmetric, dtype)
            if axis is None:
                assert isinstance(s, np.float32) and isinstance(z, dtype)
                rs, rz = rs[0], rz[0]
            else:
                assert s.dtype == F32 and z.dtype == dtype and s.shape == (x.shape[axis],)
            np.testing.assert_array_equal(s, rs, err_msg=f"shape={x.shape} axis={axis}")
            np.testing.assert_array_equal(z, rz, err_msg=f"shape={x.shape} axis={axis}")
            if x.size:  # the parameters are usable as they come
                K.quantize(x, s, z, axis=axis, dtype=dtype)


def test_choose_qparams_matches_onnx_dynamic_quantize_linear(rng):
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, None),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("z", TensorProto.UINT8, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    cases = [np.zeros(5, F32), np.array([1, 2, 3], F32), np.array([-1, -2], F32), np.array([0.1], F32)]
    for _ in range(100):
        n = int(rng.integers(1, 500))
        mag = 10 ** rng.uniform(-6, 6)
        cases.append((rng.standard_normal(n) * mag + rng.uniform(-3, 3) * mag).astype(F32))
    for x in cases:
        y, s, z = sess.run(None, {"x": x})
        es, ez = K.choose_qparams(x, symmetric=False, dtype=np.uint8)
        assert es == s and ez == z, (x[:4], s, es, z, ez)
        np.testing.assert_array_equal(K.quantize(x, es, ez, dtype=np.uint8), y)


# ---- hypothesis: shapes and values, every path --------------------------------------------------

sizes = st.sampled_from([0, 1, 2, 3, 5, 7, 11, 13, 15, 16, 17, 31, 33, 63, 65, 127, 257, 1021])
values = st.one_of(
    st.floats(-1e6, 1e6, width=32, allow_nan=False),
    st.integers(-600, 600).map(lambda k: (k + 0.5) * 0.25),       # ties at scale 0.25
    st.sampled_from([1e-45, -1e-45, 1.1754942e-38, -2e-39, 0.0, -0.0, 3.4e38, -3.4e38]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=st.sampled_from([0, 1, 2, 3, 5, 17, 64, 257]), k=sizes, data=st.data(),
       dtype=st.sampled_from([np.int8, np.uint8]))
def test_hypothesis_every_path(m, k, data, dtype):
    # A drawn pool of values (ties, extremes, denormals), spread over the shape by a drawn seed.
    pool = np.array(data.draw(st.lists(values, min_size=1, max_size=64)), F32)
    seed = data.draw(st.integers(0, 2**32 - 1))
    x = np.random.default_rng(seed).choice(pool, m * k).astype(F32).reshape(m, k)
    lo, hi = RANGES[dtype]
    zp = data.draw(st.integers(lo, hi))
    scale = F32(data.draw(st.sampled_from([0.25, 0.1, 3.0, 1e-20, 1e20])))
    axis = data.draw(st.sampled_from([None, 0, 1]))
    if axis is not None:
        scale = np.full(x.shape[axis], scale, F32) * (1 + np.arange(x.shape[axis], dtype=F32) % 3)
        zp = np.full(x.shape[axis], zp, dtype)
    want = ref_quantize(x, scale, zp, axis, dtype)
    xr = np.clip(x, -1e30, 1e30)
    want_rows = ref_quant_rows(xr)
    for name in edgepack.available_isas():
        with edgepack.use_isa(name):
            np.testing.assert_array_equal(K.quantize(x, scale, zp, axis=axis, dtype=dtype), want, err_msg=name)
            np.testing.assert_array_equal(K.dequantize(want, scale, zp, axis=axis),
                                          ref_dequantize(want, scale, zp, axis), err_msg=name)
            q, s = K.quantize_rows(xr)
            np.testing.assert_array_equal(s, want_rows[1], err_msg=name)
            np.testing.assert_array_equal(q, want_rows[0], err_msg=name)


# ---- non-contiguous and empty -------------------------------------------------------------------

def test_non_contiguous_is_copied(isa, rng):
    base = rng.standard_normal((6, 40)).astype(F32)
    for x in (base[:, ::3], base.T, np.asfortranarray(base), base[::2]):
        np.testing.assert_array_equal(K.quantize(x, 0.02), ref_quantize(np.ascontiguousarray(x), 0.02))
        s = np.full(x.shape[1], 0.03, F32)
        np.testing.assert_array_equal(K.quantize(x, s, axis=1), ref_quantize(np.ascontiguousarray(x), s, 0, 1))
        q, sc = K.quantize_rows(x)
        np.testing.assert_array_equal(q, ref_quant_rows(np.ascontiguousarray(x))[0])
        qq = K.quantize(x, 0.02)
        np.testing.assert_array_equal(K.dequantize(qq.T, 0.02), ref_dequantize(qq.T, 0.02))


def test_empty(isa):
    for shape in [(0,), (3, 0), (0, 5), (2, 0, 4)]:
        x = np.zeros(shape, F32)
        assert K.quantize(x, 0.1).shape == shape
        assert K.quantize(x, 0.1, dtype=np.uint8).dtype == np.uint8
        assert K.dequantize(np.zeros(shape, np.int8), 0.1).shape == shape
    q, s = K.quantize_rows(np.zeros((0, 7), F32))
    assert q.shape == (0, 7) and s.shape == (0,)
    q, s = K.quantize_rows(np.zeros((3, 0), F32))
    assert q.shape == (3, 0)
    np.testing.assert_array_equal(s, np.ones(3, F32))
    assert K.choose_qparams(np.zeros(0, F32)) == (F32(1), np.int8(0))


def test_out_argument(isa, rng):
    x = rng.standard_normal((5, 7)).astype(F32)
    out = np.empty((5, 7), np.uint8)
    got = K.quantize(x, 0.05, 100, dtype=np.uint8, out=out)
    assert got is out or np.shares_memory(got, out)
    np.testing.assert_array_equal(out, ref_quantize(x, 0.05, 100, None, np.uint8))
    back = np.empty((5, 7), F32)
    K.dequantize(out, 0.05, 100, out=back)
    np.testing.assert_array_equal(back, ref_dequantize(out, 0.05, 100))
    with pytest.raises(TypeError, match="out"):
        K.quantize(x, 0.05, out=np.empty((5, 7), np.uint8))  # int8 expected
    with pytest.raises(ValueError, match="out"):
        K.quantize(x, 0.05, out=np.empty((7, 5), np.int8))
    with pytest.raises(ValueError, match="out"):
        K.dequantize(out, 0.05, out=np.empty((5, 14), F32)[:, ::2])


# ---- non-finite input ---------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 17, 100, 1 << 19])
def test_nan_inf_reported_at_first_index(isa, rng, n):
    for bad in (np.nan, np.inf, -np.inf):
        x = rng.standard_normal(n).astype(F32)
        i = n * 2 // 3
        x[i] = bad
        if i + 5 < n:
            x[i + 5] = np.nan
        for fn in (lambda: K.quantize(x, 0.1), lambda: K.quantize(x, 0.1, 5, dtype=np.uint8),
                   lambda: K.choose_qparams(x), lambda: K.choose_qparams(x.reshape(1, n), axis=1),
                   lambda: K.quantize(x.reshape(1, n), np.ones(n, F32), axis=1)):
            with pytest.raises(ValueError, match=rf"x must be finite.*index {i}\b"):
                fn()
        with pytest.raises(ValueError, match=rf"x must be finite.*index {i}\b"):
            K.quantize_rows(x.reshape(1, n))


# ---- bad input: type and argument name ----------------------------------------------------------

X = np.ones((4, 3), F32)

BAD = [
    (lambda: K.quantize(X.astype(np.float64), 0.1), TypeError, "x"),
    (lambda: K.quantize([1.0, 2.0], 0.1), TypeError, "x"),
    (lambda: K.quantize(X.astype(np.float16), 0.1), TypeError, "float32"),
    (lambda: K.quantize(X, 0.1, dtype=np.int16), TypeError, "dtype"),
    (lambda: K.quantize(X, 0.1, dtype="int4x"), TypeError, "dtype"),
    (lambda: K.quantize(X, 0.0), ValueError, "scale"),
    (lambda: K.quantize(X, -1.0), ValueError, "scale"),
    (lambda: K.quantize(X, np.nan), ValueError, "scale"),
    (lambda: K.quantize(X, np.inf), ValueError, "scale"),
    (lambda: K.quantize(X, 1e-50), ValueError, "scale"),  # zero as float32
    (lambda: K.quantize(X, 1e300), ValueError, "scale"),  # inf as float32
    (lambda: K.quantize(X, "0.1"), TypeError, "scale"),
    (lambda: K.quantize(X, None), TypeError, "scale"),
    (lambda: K.quantize(X, np.ones((2, 2), F32), axis=0), ValueError, "scale"),
    (lambda: K.quantize(X, np.ones(3, F32), axis=0), ValueError, "scale"),
    (lambda: K.quantize(X, np.ones(4, F32)), ValueError, "scale"),
    (lambda: K.quantize(X, np.array([0.1, 0.0, 0.1, 0.1], F32), axis=0), ValueError, "scale"),
    (lambda: K.quantize(X, np.ones(3, F32), axis=2), ValueError, "axis"),
    (lambda: K.quantize(X, np.ones(3, F32), axis=-3), ValueError, "axis"),
    (lambda: K.quantize(X, np.ones(3, F32), axis=1.0), TypeError, "axis"),
    (lambda: K.quantize(X, np.ones(3, F32), axis=10**30), ValueError, "axis"),
    (lambda: K.quantize(X, np.ones(3, F32), axis=True), TypeError, "axis"),
    (lambda: K.choose_qparams(X, axis="0"), TypeError, "axis"),
    (lambda: K.quantize(np.ones((), F32), np.ones(1, F32), axis=0), ValueError, "axis"),
    (lambda: K.quantize(X, 0.1, 128), ValueError, "zero_point"),
    (lambda: K.quantize(X, 0.1, -1, dtype=np.uint8), ValueError, "zero_point"),
    (lambda: K.quantize(X, 0.1, 1.5), TypeError, "zero_point"),
    (lambda: K.quantize(X, 0.1, np.uint8(3)), TypeError, "zero_point"),
    (lambda: K.quantize(X, 0.1, np.array([1, 2], np.int8)), ValueError, "zero_point"),
    (lambda: K.quantize(X, np.ones(3, F32), np.array([1, 2], np.int8), axis=1), ValueError, "zero_point"),
    (lambda: K.quantize(X, np.ones(3, F32), np.array([1, 2, 300]), axis=1), ValueError, "zero_point"),
    (lambda: K.dequantize(X, 0.1), TypeError, "q"),
    (lambda: K.dequantize([1, 2], 0.1), TypeError, "q"),
    (lambda: K.dequantize(np.ones(3, np.int16), 0.1), TypeError, "q"),
    (lambda: K.dequantize(np.ones(3, np.int8), 0.0), ValueError, "scale"),
    (lambda: K.dequantize(np.ones(3, np.int8), np.ones(2, F32), axis=0), ValueError, "scale"),
    (lambda: K.dequantize(np.ones(3, np.int8), np.ones(3, F32), axis=1), ValueError, "axis"),
    (lambda: K.dequantize(np.ones(3, np.uint8), 0.1, 256), ValueError, "zero_point"),
    (lambda: K.dequantize(np.ones(3, np.uint8), 0.1, np.int8(1)), TypeError, "zero_point"),
    (lambda: K.quantize_rows(np.ones(5, F32)), ValueError, "x"),
    (lambda: K.quantize_rows(np.ones((2, 2, 2), F32)), ValueError, "x"),
    (lambda: K.quantize_rows(np.ones((2, 2), np.float64)), TypeError, "x"),
    (lambda: K.quantize_rows("x"), TypeError, "x"),
    (lambda: K.choose_qparams(np.ones(3, np.float64)), TypeError, "x"),
    (lambda: K.choose_qparams(X, axis=5), ValueError, "axis"),
    (lambda: K.choose_qparams(X, dtype=np.float32), TypeError, "dtype"),
]


@pytest.mark.parametrize("case", range(len(BAD)))
def test_bad_input(case):
    fn, exc, name = BAD[case]
    with pytest.raises(exc, match=name):
        fn()


# ---- the benchmark suite runs (tiny shapes; no timing asserted) ---------------------------------

def test_bench_quantize_cli(capsys):
    from edgepack.cli import main

    assert main(["bench", "quantize", "--shapes", "8x40", "3x5", "--min-time", "0.001", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for name in ("quantize per-channel", "dequantize per-tensor", "quantize_rows", "copy"):
        assert name in out
    with pytest.raises(SystemExit):
        main(["bench", "quantize", "--shapes", "8by40"])
