"""Normalisation operators against NumPy float64 formulas of the ONNX definitions: the versions
and attribute values the backend node cases leave out (BatchNormalization 7 spatial=0, statistics
as initializers, LayerNormalization axes/broadcast Scale/stash outputs, GroupNormalization 18
vs 21, LRN with even sizes, zero slices in LpNormalization, MeanVarianceNormalization axes)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")

from test_graph_ops_conv import run_node  # noqa: E402


def _bn_ref(x, s, b, m, v, eps, spatial=True):
    x = x.astype(np.float64)
    shape = (1, -1) + (1,) * (x.ndim - 2) if spatial else (1,) + x.shape[1:]
    s, b, m, v = (np.asarray(t, np.float64).reshape(shape) for t in (s, b, m, v))
    return (x - m) / np.sqrt(v + eps) * s + b


@pytest.mark.parametrize("opset", [7, 9, 14, 15])
@pytest.mark.parametrize("const", [False, True])
def test_batchnorm_versions(opset, const):
    rng = np.random.default_rng(opset)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    s, b, m = (rng.standard_normal(3).astype(np.float32) for _ in range(3))
    v = rng.random(3).astype(np.float32) + 0.5
    ins = {"x": x, "s": s, "b": b, "m": m, "v": v}
    y = run_node("BatchNormalization", ins, {"epsilon": 1e-3}, opset=opset,
                 consts=("s", "b", "m", "v") if const else ())
    np.testing.assert_allclose(y, _bn_ref(x, s, b, m, v, 1e-3), rtol=1e-5, atol=1e-5)


def test_batchnorm_spatial0_and_dtypes():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 2, 2)).astype(np.float32)
    s, b, m = (rng.standard_normal((3, 2, 2)).astype(np.float32) for _ in range(3))
    v = rng.random((3, 2, 2)).astype(np.float32) + 0.5
    y = run_node("BatchNormalization", {"x": x, "s": s, "b": b, "m": m, "v": v}, {"spatial": 0}, opset=7)
    np.testing.assert_allclose(y, _bn_ref(x, s, b, m, v, 1e-5, spatial=False), rtol=1e-5, atol=1e-5)
    for dt in (np.float64, np.float16):
        xd = x.astype(dt)
        p = [t.astype(dt) for t in (s[:, 0, 0], b[:, 0, 0], m[:, 0, 0], v[:, 0, 0])]
        y = run_node("BatchNormalization", dict(zip("xsbmv", [xd] + p)), {}, opset=15)
        assert y.dtype == dt
        tol = 1e-2 if dt == np.float16 else 1e-12
        np.testing.assert_allclose(y.astype(np.float64), _bn_ref(xd, *p, 1e-5), rtol=tol, atol=tol)


def test_batchnorm_training_rejected():
    x = np.zeros((1, 2, 2, 2), np.float32)
    p = np.ones(2, np.float32)
    with pytest.raises(ValueError, match=r"BatchNormalization.*training_mode=1"):
        run_node("BatchNormalization", {"x": x, "s": p, "b": p, "m": p, "v": p}, {"training_mode": 1}, opset=15)


def test_instance_norm():
    rng = np.random.default_rng(2)
    for dt in (np.float32, np.float64, np.float16):
        x = rng.standard_normal((2, 3, 4, 5)).astype(dt)
        s, b = rng.standard_normal(3).astype(dt), rng.standard_normal(3).astype(dt)
        y = run_node("InstanceNormalization", {"x": x, "s": s, "b": b}, {"epsilon": 1e-4}, opset=7)
        x64 = x.astype(np.float64)
        mu = x64.mean(axis=(2, 3), keepdims=True)
        var = x64.var(axis=(2, 3), keepdims=True)
        want = (x64 - mu) / np.sqrt(var + 1e-4) * s.astype(np.float64).reshape(1, 3, 1, 1) + \
            b.astype(np.float64).reshape(1, 3, 1, 1)
        assert y.dtype == dt
        tol = 2e-2 if dt == np.float16 else 1e-5
        np.testing.assert_allclose(y.astype(np.float64), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("axis", [-1, -2, 1, 0])
def test_layer_norm_axes_and_stats(axis):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    a = axis % 3
    norm_shape = x.shape[a:]
    scale = rng.standard_normal(norm_shape[-1:]).astype(np.float32)     # broadcasts to norm_shape
    bias = rng.standard_normal(norm_shape).astype(np.float32)
    y, mean, inv = run_node("LayerNormalization", {"x": x, "s": scale, "b": bias}, {"axis": axis, "epsilon": 1e-3},
                            opset=17, n_out=3)
    x64 = x.astype(np.float64)
    red = tuple(range(a, 3))
    mu = x64.mean(axis=red, keepdims=True)
    istd = 1 / np.sqrt(x64.var(axis=red, keepdims=True) + 1e-3)
    np.testing.assert_allclose(y, (x64 - mu) * istd * scale + bias, rtol=1e-5, atol=1e-5)
    assert mean.dtype == inv.dtype == np.float32
    np.testing.assert_allclose(mean, mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(inv, istd, rtol=1e-5)
    # Y only, no bias
    y1 = run_node("LayerNormalization", {"x": x, "s": scale}, {"axis": axis}, opset=17)
    mu_ = x64.mean(axis=red, keepdims=True)
    np.testing.assert_allclose(y1, (x64 - mu_) / np.sqrt(x64.var(axis=red, keepdims=True) + 1e-5) * scale,
                               rtol=1e-5, atol=1e-5)


def test_layer_norm_dtypes():
    rng = np.random.default_rng(4)
    for dt in (np.float64, np.float16):
        x = rng.standard_normal((3, 8)).astype(dt)
        s = rng.standard_normal(8).astype(dt)
        y = run_node("LayerNormalization", {"x": x, "s": s}, {}, opset=17)
        x64 = x.astype(np.float64)
        want = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5) * s.astype(np.float64)
        assert y.dtype == dt
        tol = 1e-2 if dt == np.float16 else 1e-12
        np.testing.assert_allclose(y.astype(np.float64), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("opset", [18, 21])
def test_group_norm_versions(opset):
    rng = np.random.default_rng(opset)
    x = rng.standard_normal((2, 6, 3, 2)).astype(np.float32)
    g = 3
    nparam = g if opset == 18 else 6
    s, b = rng.standard_normal(nparam).astype(np.float32), rng.standard_normal(nparam).astype(np.float32)
    y = run_node("GroupNormalization", {"x": x, "s": s, "b": b}, {"num_groups": g, "epsilon": 1e-4}, opset=opset)
    xg = x.astype(np.float64).reshape(2, g, -1)
    d = (xg - xg.mean(-1, keepdims=True)) / np.sqrt(xg.var(-1, keepdims=True) + 1e-4)
    d = d.reshape(2, 6, 3, 2)
    sc = np.repeat(s, 2) if opset == 18 else s
    bc = np.repeat(b, 2) if opset == 18 else b
    np.testing.assert_allclose(y, d * sc.reshape(1, 6, 1, 1) + bc.reshape(1, 6, 1, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size,beta", [(3, 0.75), (4, 0.75), (5, 0.5), (1, 1.0), (9, 0.75)])
def test_lrn(size, beta):
    x = np.random.default_rng(size).standard_normal((2, 6, 3, 3)).astype(np.float32)
    y = run_node("LRN", {"x": x}, {"size": size, "alpha": 0.02, "beta": beta, "bias": 1.5}, opset=13)
    x64 = x.astype(np.float64)
    sq = np.zeros_like(x64)
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    for c in range(6):
        sq[:, c] = (x64[:, max(0, c - lo):min(6, c + hi + 1)] ** 2).sum(axis=1)
    np.testing.assert_allclose(y, x64 / (1.5 + 0.02 / size * sq) ** beta, rtol=1e-5, atol=1e-6)


def test_lp_normalization_zero_slices():
    x = np.random.default_rng(5).standard_normal((3, 4)).astype(np.float32)
    x[1] = 0
    for p in (1, 2):
        y = run_node("LpNormalization", {"x": x}, {"axis": 1, "p": p}, opset=7 if p == 1 else 22)
        nrm = np.linalg.norm(x.astype(np.float64), ord=p, axis=1, keepdims=True)
        np.testing.assert_allclose(y, np.where(nrm == 0, 0, x / np.where(nrm == 0, 1, nrm)), rtol=1e-6, atol=1e-7)
        assert not np.isnan(y).any()
    with pytest.raises(ValueError, match="p must be 1 or 2"):
        run_node("LpNormalization", {"x": x}, {"p": 3})


def test_mean_variance_normalization_axes():
    x = np.random.default_rng(6).standard_normal((2, 3, 4, 5)).astype(np.float32)
    for axes in ([0, 2, 3], [1], [2, 3], [-1]):
        y = run_node("MeanVarianceNormalization", {"x": x}, {"axes": axes}, opset=13)
        x64 = x.astype(np.float64)
        ax = tuple(a % 4 for a in axes)
        want = (x64 - x64.mean(ax, keepdims=True)) / (np.sqrt(x64.var(ax, keepdims=True)) + 1e-9)
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
