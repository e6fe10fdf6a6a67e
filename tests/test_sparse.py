"""Sparse weights and spmm: every path against the dense NumPy reference.

Float tolerance: each output is a float32 sum of its row's products in a path-dependent order,
so it may differ from the exact sum by a few ulps of sum_k |x w| (bound nnz * 2**-24 relative);
the tests allow 1e-5 * sum_k |x w|, the bound the docstring promises. int8 accumulators are
compared bit-exactly with an int64 matmul.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import edgepack
from edgepack.kernels import SparseWeights, pack_sparse, spmm
from edgepack.kernels._sparse import _spmm_acc_s8

# Row counts that hit every route: empty, the small-M kernels (1..7, 4-row chunks), one 16-wide
# tile, several 64-wide tiles with a ragged last one.
MS = [0, 1, 3, 4, 5, 7, 8, 17, 64, 70, 129]


def _pattern(rng, n, k, density, *, nm24=False):
    """A mask with random rows plus an empty row, a fully dense row (unstructured) and extremes."""
    if nm24:
        g = k // 4
        keep = np.zeros((n, g, 4), bool)
        # Random 2-of-4 choice per group, with some groups thinned to 1 or 0 nonzeros.
        order = np.argsort(rng.random((n, g, 4)), axis=-1)[..., :2]
        np.put_along_axis(keep, order, True, axis=-1)
        keep &= rng.random((n, g, 4)) < max(density * 2, 0.05)
        keep = keep.reshape(n, k)
        if n > 1:
            keep[1] = False
        return keep
    keep = rng.random((n, k)) < density
    if n > 2:
        keep[1] = False  # empty row
        keep[2] = True   # fully dense row
    return keep


def _weights(rng, n, k, density, dtype, nm24=False):
    keep = _pattern(rng, n, k, density, nm24=nm24)
    if dtype == np.int8:
        w = rng.integers(-128, 128, size=(n, k)).astype(np.int8)
        w[w == 0] = 1
        w[~keep] = 0
        scale = (rng.random(n) * 0.02 + 1e-3).astype(np.float32)
        return w, scale
    w = rng.standard_normal((n, k)).astype(np.float32)
    w[~keep] = 0
    return w, None


def _check_float(y, x, w, bias=None):
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    ref = x64 @ w64.T
    bound = 1e-5 * (np.abs(x64) @ np.abs(w64).T) + 1e-30
    if bias is not None:
        ref = ref + bias
        bound = bound + 1e-7 * np.abs(bias)
    assert y.dtype == np.float32 and y.shape == ref.shape
    err = np.abs(y - ref)
    assert np.all(err <= bound), float(np.max(err - bound))


def _quantize_rows(x):
    xs = (np.max(np.abs(x), axis=1) / np.float32(127)).astype(np.float32) if x.shape[1] else \
        np.zeros(x.shape[0], np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.rint(x / xs[:, None])
    q[xs == 0] = 0
    return np.clip(q, -127, 127).astype(np.int8), xs


@pytest.mark.parametrize("fmt", ["unstructured", "2:4"])
@pytest.mark.parametrize("n,k,density", [(67, 36, 0.1), (130, 44, 0.3), (33, 200, 0.05), (5, 1028, 0.5)])
def test_float_matches_dense(isa, rng, fmt, n, k, density):
    w, _ = _weights(rng, n, k, density, np.float32, nm24=fmt == "2:4")
    sw = pack_sparse(w, format=fmt)
    assert sw.format == fmt
    assert np.array_equal(sw.to_dense(), w)
    for m in MS:
        x = rng.standard_normal((m, k)).astype(np.float32)
        _check_float(spmm(x, sw), x, w)


@pytest.mark.parametrize("fmt", ["unstructured", "2:4"])
@pytest.mark.parametrize("n,k,density", [(67, 36, 0.1), (45, 300, 0.3)])
def test_int8_accumulators_exact(isa, rng, fmt, n, k, density):
    w, scale = _weights(rng, n, k, density, np.int8, nm24=fmt == "2:4")
    sw = pack_sparse(w, format=fmt, scale=scale)
    assert np.array_equal(sw.to_dense(), w)
    for m in MS:
        xq = rng.integers(-128, 128, size=(m, k)).astype(np.int8)
        if m:
            xq[0] = -128  # extremes
        acc = _spmm_acc_s8(xq, sw)
        assert acc.dtype == np.int32
        assert np.array_equal(acc, xq.astype(np.int64) @ w.astype(np.int64).T)


def test_int8_extreme_long_rows(isa):
    # Longest rows K allows for uint16 columns: every product 128 * 128, summed 65536 times = 2^30.
    k = 65536
    w = np.full((3, k), -128, np.int8)
    w[1, ::2] = 0
    sw = pack_sparse(w, format="unstructured", scale=np.ones(3, np.float32))
    for m in (1, 9):
        xq = np.full((m, k), -128, np.int8)
        assert np.array_equal(_spmm_acc_s8(xq, sw), xq.astype(np.int64) @ w.astype(np.int64).T)


@pytest.mark.parametrize("fmt", ["unstructured", "2:4"])
def test_int8_spmm_dynamic_quantization(isa, rng, fmt):
    n, k = 50, 64
    w, scale = _weights(rng, n, k, 0.25, np.int8, nm24=fmt == "2:4")
    sw = pack_sparse(w, format=fmt, scale=scale)
    bias = rng.standard_normal(n).astype(np.float32)
    for m in (1, 5, 8, 70):
        x = (rng.standard_normal((m, k)) * 3).astype(np.float32)
        x[0] = 0.0  # an all-zero row quantizes with scale 0
        xq, xs = _quantize_rows(x)
        acc = xq.astype(np.int64) @ w.astype(np.int64).T
        assert np.array_equal(_spmm_acc_s8(xq, sw), acc)
        ref = acc * xs[:, None].astype(np.float64) * scale.astype(np.float64) + bias
        y = spmm(x, sw, bias=bias)
        np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("activation", [None, "relu", "gelu", "gelu_tanh", "silu"])
def test_bias_and_activations(isa, rng, activation):
    n, k = 40, 48
    w, _ = _weights(rng, n, k, 0.2, np.float32)
    sw = pack_sparse(w)
    bias = rng.standard_normal(n).astype(np.float32)
    erf = np.vectorize(math.erf)
    acts = {
        None: lambda v: v,
        "relu": lambda v: np.maximum(v, 0),
        "gelu": lambda v: 0.5 * v * (1 + erf(v / math.sqrt(2))),
        "gelu_tanh": lambda v: 0.5 * v * (1 + np.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3))),
        "silu": lambda v: v / (1 + np.exp(-v)),
    }
    for m in (1, 6, 20):
        x = rng.standard_normal((m, k)).astype(np.float32)
        ref = acts[activation](x.astype(np.float64) @ w.astype(np.float64).T + bias)
        y = spmm(x, sw, bias=bias, activation=activation)
        np.testing.assert_allclose(y, ref, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh", "silu"])
def test_activations_wide_range(isa, activation):
    # identity weights: y = x + 0, so every activation input from -40 to 40 (and the ±0, tiny
    # values and tails where the vectorized forms clamp) is checked, also in the 16-lane tails
    k = 50
    sw = pack_sparse(np.eye(k, dtype=np.float32), format="unstructured")
    x = np.concatenate([np.linspace(-40, 40, 1987), [0.0, -0.0, 1e-30, -1e-30, 1e-7, -1e-7, 87.5, -87.5, 95.0]])
    x = np.resize(x.astype(np.float32), (x.size + k - 1) // k * k).reshape(-1, k)
    v = x.astype(np.float64)
    erf = np.vectorize(math.erf)
    ref = {"gelu": lambda: 0.5 * v * (1 + erf(v / math.sqrt(2))),
           "gelu_tanh": lambda: 0.5 * v * (1 + np.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3))),
           "silu": lambda: v / (1 + np.exp(-v))}[activation]()
    y = spmm(x, sw, activation=activation)
    # the documented bound of the vectorized activations: 1e-6 * (1 + |y|)
    assert np.all(np.abs(y - ref) <= 1e-6 * (1 + np.abs(ref))), np.max(np.abs(y - ref) / (1 + np.abs(ref)))


@pytest.mark.parametrize("fmt", ["unstructured", "2:4"])
@pytest.mark.parametrize("dtype", [np.float32, np.int8])
def test_all_zero_matrix(isa, fmt, dtype):
    n, k = 19, 24
    w = np.zeros((n, k), dtype)
    scale = np.ones(n, np.float32) if dtype == np.int8 else None
    sw = pack_sparse(w, format=fmt, scale=scale)
    assert sw.nnz == 0 and sw.density == 0.0
    bias = np.arange(n, dtype=np.float32)
    for m in (0, 1, 9):
        x = np.ones((m, k), np.float32)
        y = spmm(x, sw, bias=bias)
        assert np.array_equal(y, np.broadcast_to(bias, (m, n)))


def test_empty_shapes(isa):
    for n, k in [(0, 8), (5, 0), (0, 0)]:
        sw = pack_sparse(np.zeros((n, k), np.float32), format="unstructured")
        y = spmm(np.zeros((3, k), np.float32), sw)
        assert y.shape == (3, n) and not np.any(y)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 90), g=st.integers(1, 20), m=st.integers(0, 40), density=st.floats(0.0, 1.0),
       nm24=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_property_random_shapes(n, g, m, density, nm24, seed):
    rng = np.random.default_rng(seed)
    k = 4 * g + (0 if nm24 else int(rng.integers(0, 4)))
    w, _ = _weights(rng, n, k, density, np.float32, nm24=nm24)
    sw = pack_sparse(w, format="2:4" if nm24 else "unstructured")
    x = rng.standard_normal((m, k)).astype(np.float32)
    _check_float(spmm(x, sw), x, w)


@pytest.mark.parametrize("m", [3, 33, 100])
def test_threads_bit_identical(rng, m):
    # density 0.1 sends M = 100 down the tiled route, M <= 64 down the small-M route
    w, _ = _weights(rng, 700, 256, 0.1, np.float32)
    sw = pack_sparse(w)
    x = rng.standard_normal((m, 256)).astype(np.float32)
    prev = edgepack.get_num_threads()
    try:
        edgepack.set_num_threads(1)
        y1 = spmm(x, sw)
        edgepack.set_num_threads(2)
        y2 = spmm(x, sw)
    finally:
        edgepack.set_num_threads(prev)
    assert np.array_equal(y1, y2)


def test_concurrent_python_threads(rng):
    from concurrent.futures import ThreadPoolExecutor

    w, scale = _weights(rng, 300, 128, 0.1, np.int8)
    sw = pack_sparse(w, scale=scale)  # the small-M layout is derived by whichever call comes first
    xs = [rng.standard_normal((m, 128)).astype(np.float32) for m in (1, 2, 5, 40, 90) * 4]
    with ThreadPoolExecutor(4) as ex:
        ys = list(ex.map(lambda x: spmm(x, sw), xs))
    for x, y in zip(xs, ys):
        assert np.array_equal(y, spmm(x, sw))


def test_strided_x(isa, rng):
    w, _ = _weights(rng, 30, 40, 0.3, np.float32)
    sw = pack_sparse(w)
    big = rng.standard_normal((20, 80)).astype(np.float32)
    x = big[::2, ::2]
    _check_float(spmm(x, sw), x, w)


def test_attributes_and_auto(rng):
    w, _ = _weights(rng, 64, 128, 0.1, np.float32)
    sw = pack_sparse(w)
    assert sw.format == "unstructured"
    assert sw.shape == (64, 128) and sw.dtype == np.float32
    assert sw.nnz == np.count_nonzero(w)
    assert sw.density == pytest.approx(sw.nnz / w.size)
    assert sw.nbytes == 8 * 65 + 6 * sw.nnz
    w24, _ = _weights(rng, 64, 128, 0.5, np.float32, nm24=True)
    s24 = pack_sparse(w24)
    assert s24.format == "2:4"
    assert s24.nbytes == 64 * 64 * 4 + 64 * 16
    assert "2:4" in repr(s24)
    wi, scale = _weights(rng, 64, 128, 0.1, np.int8)
    si = pack_sparse(wi, scale=scale)
    assert si.dtype == np.int8 and np.array_equal(si.scale, scale)
    assert si.nbytes == 8 * 65 + 3 * si.nnz + 4 * 64


def test_derived_nbytes_counts_small_batch_copies(rng):
    w, _ = _weights(rng, 256, 512, 0.1, np.float32)
    sw = pack_sparse(w)
    assert sw.derived_nbytes == 0  # nothing derived before the first call
    spmm(np.ones((1, 512), np.float32), sw)
    if edgepack.get_isa().startswith("avx512"):
        # the M <= 2 sliding copy holds every value (4 bytes) and an index byte per slot at least
        assert sw.derived_nbytes >= 5 * sw.nnz
    before = sw.derived_nbytes
    spmm(np.ones((1, 512), np.float32), sw)
    assert sw.derived_nbytes == before  # built once, not per call


@pytest.mark.parametrize("fmt", ["unstructured", "2:4"])
@pytest.mark.parametrize("dtype", [np.float32, np.int8])
def test_save_load_roundtrip(tmp_path, rng, fmt, dtype):
    w, scale = _weights(rng, 21, 44, 0.3, dtype, nm24=fmt == "2:4")
    sw = pack_sparse(w, format=fmt, scale=scale)
    path = tmp_path / "w.npz"
    np.savez(path, **sw.to_arrays())
    with np.load(path, allow_pickle=False) as f:
        back = SparseWeights.from_arrays(f)
    assert back.format == fmt and back.shape == sw.shape and back.nnz == sw.nnz
    assert np.array_equal(back.to_dense(), w)
    x = rng.standard_normal((3, 44)).astype(np.float32)
    assert np.array_equal(spmm(x, back), spmm(x, sw))


def test_pack_errors(rng):
    with pytest.raises(TypeError, match="w must be a float32 or int8"):
        pack_sparse(np.zeros((4, 4)))
    with pytest.raises(TypeError, match="w must be"):
        pack_sparse([[1.0]])
    with pytest.raises(ValueError, match="w must be 2-D"):
        pack_sparse(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="format must be"):
        pack_sparse(np.zeros((4, 4), np.float32), format="csr5")
    with pytest.raises(ValueError, match=r"w is not 2:4: row 0, columns 0..3 hold 3"):
        pack_sparse(np.array([[1, 1, 1, 0]], np.float32), format="2:4")
    with pytest.raises(ValueError, match="w cannot be 2:4: its K = 6"):
        pack_sparse(np.zeros((2, 6), np.float32), format="2:4")
    with pytest.raises(ValueError, match="K must be <= 65536"):
        pack_sparse(np.zeros((1, 65537), np.float32), format="unstructured")
    with pytest.raises(ValueError, match="int8 w needs scale"):
        pack_sparse(np.zeros((2, 4), np.int8))
    with pytest.raises(ValueError, match="scale must have shape"):
        pack_sparse(np.zeros((2, 4), np.int8), scale=np.ones(3, np.float32))
    with pytest.raises(TypeError, match="scale must be float32"):
        pack_sparse(np.zeros((2, 4), np.int8), scale=np.ones(2))
    with pytest.raises(ValueError, match="scale is only for int8"):
        pack_sparse(np.zeros((2, 4), np.float32), scale=np.ones(2, np.float32))
    # auto falls back to unstructured when K is not a multiple of 4
    assert pack_sparse(np.eye(3, 6, dtype=np.float32)).format == "unstructured"


def test_spmm_errors(rng):
    w, scale = _weights(rng, 8, 12, 0.5, np.int8)
    sw = pack_sparse(w, scale=scale)
    x = np.ones((2, 12), np.float32)
    with pytest.raises(TypeError, match="x must be float32"):
        spmm(x.astype(np.float64), sw)
    with pytest.raises(ValueError, match=r"x must have shape \(M, K\) with K = 12"):
        spmm(np.ones((2, 11), np.float32), sw)
    with pytest.raises(ValueError, match="x must be 2-D"):
        spmm(np.ones(12, np.float32), sw)
    with pytest.raises(TypeError, match="w must be a SparseWeights"):
        spmm(x, w)
    with pytest.raises(ValueError, match=r"bias must have shape \(N,\)"):
        spmm(x, sw, bias=np.ones(7, np.float32))
    with pytest.raises(ValueError, match="activation must be"):
        spmm(x, sw, activation="tanh")
    bad = x.copy()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="x must be finite.*index 15"):
        spmm(bad, sw)


def test_from_arrays_rejects_corruption(rng):
    w, _ = _weights(rng, 6, 10, 0.5, np.float32)
    d = pack_sparse(w, format="unstructured").to_arrays()
    bad = dict(d, col=d["col"].copy())
    bad["col"][0] = 10
    with pytest.raises(ValueError, match="out of range for K = 10"):
        SparseWeights.from_arrays(bad)
    bad = dict(d, row_ptr=d["row_ptr"].copy())
    bad["row_ptr"][2], bad["row_ptr"][3] = bad["row_ptr"][3] + 1, bad["row_ptr"][2]
    with pytest.raises(ValueError, match="row_ptr|strictly increasing"):
        SparseWeights.from_arrays(bad)
    with pytest.raises(TypeError, match="col must be uint16"):
        SparseWeights.from_arrays(dict(d, col=d["col"].astype(np.int32)))
    with pytest.raises(ValueError, match="missing the array 'values'"):
        SparseWeights.from_arrays({k: v for k, v in d.items() if k != "values"})
    w24, _ = _weights(rng, 6, 16, 0.5, np.float32, nm24=True)
    d24 = pack_sparse(w24, format="2:4").to_arrays()
    bad = dict(d24, meta=d24["meta"].copy())
    bad["meta"][0, 0] = 0  # pos0 == pos1
    with pytest.raises(ValueError, match="distinct increasing"):
        SparseWeights.from_arrays(bad)
    with pytest.raises(ValueError, match=r"d\['format'\] must be"):
        SparseWeights.from_arrays(dict(d24, format=np.array("4:8")))
