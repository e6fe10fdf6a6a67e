"""Gemm, MatMul and Einsum beyond the backend node cases: constant B/C (the folded alpha/beta
path real models take), Gemm 7 and 11, integer MatMul, N-D @ 2-D, Einsum's implicit output."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")

from test_graph_ops_conv import run_node  # noqa: E402


@pytest.mark.parametrize("ta,tb", [(0, 0), (0, 1), (1, 0), (1, 1)])
@pytest.mark.parametrize("const", [(), ("b",), ("b", "c")])
def test_gemm_constant_operands(ta, tb, const):
    rng = np.random.default_rng(ta * 2 + tb)
    a = rng.standard_normal((5, 4) if not ta else (4, 5)).astype(np.float32)
    b = rng.standard_normal((4, 3) if not tb else (3, 4)).astype(np.float32)
    for c in (rng.standard_normal(3).astype(np.float32), rng.standard_normal((5, 1)).astype(np.float32),
              np.float32(rng.standard_normal()).reshape(())):
        attrs = {"alpha": 0.5, "beta": -2.0, "transA": ta, "transB": tb}
        y = run_node("Gemm", {"a": a, "b": b, "c": c}, attrs, consts=const, opset=13)
        want = 0.5 * ((a.T if ta else a).astype(np.float64) @ (b.T if tb else b)) - 2.0 * c
        assert y.dtype == np.float32 and y.shape == (5, 3)
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def test_gemm_versions_and_beta_zero():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((3, 4))
    c = np.full((2, 4), np.inf)
    y = run_node("Gemm", {"a": a, "b": b, "c": c}, {"beta": 0.0}, opset=7)   # C required at 7, ignored at beta=0
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, a @ b, rtol=1e-12)
    y = run_node("Gemm", {"a": a, "b": b}, {"alpha": 2.0}, opset=11, consts=("b",))  # C optional from 11
    np.testing.assert_allclose(y, 2 * a @ b, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float64])
def test_matmul_dtypes_and_broadcasting(dtype):
    rng = np.random.default_rng(2)
    shapes = [((3,), (3,)), ((2, 3), (3,)), ((3,), (3, 4)), ((2, 1, 3, 4), (5, 4, 2)), ((2, 3, 4), (4, 5))]
    for sa, sb in shapes:
        a = rng.integers(-5, 5, sa).astype(dtype)
        b = rng.integers(-5, 5, sb).astype(dtype)
        for const in ((), ("b",)):
            y = run_node("MatMul", {"a": a, "b": b}, {}, consts=const, opset=13)
            want = np.matmul(a, b)
            assert y.dtype == dtype and y.shape == np.shape(want)
            np.testing.assert_array_equal(y, want)


def test_matmul_nd_by_2d_constant_weight():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((2, 7, 16)).astype(np.float32)
    w = rng.standard_normal((16, 8)).astype(np.float32)
    y = run_node("MatMul", {"a": a[:, ::-1], "w": w}, {}, consts=("w",))   # a non-contiguous input too
    np.testing.assert_allclose(y, a[:, ::-1].astype(np.float64) @ w, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="contracted axis"):
        run_node("MatMul", {"a": a, "w": w[:8]}, {})


@pytest.mark.parametrize("eq,shapes", [
    ("ij,jk", [(2, 3), (3, 4)]),               # implicit output: free labels sorted -> ik
    ("ba,bc", [(3, 2), (3, 4)]),               # implicit: ac
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("...ij,...jk->...ik", [(2, 1, 3, 4), (5, 4, 2)]),
    ("i,i->", [(5,), (5,)]),
    ("ii->i", [(4, 4)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]),
    ("b h i d, b h j d -> b h i j", [(1, 2, 3, 4), (1, 2, 5, 4)]),
])
def test_einsum(eq, shapes):
    rng = np.random.default_rng(4)
    ops = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    names = [f"x{i}" for i in range(len(ops))]
    y = run_node("Einsum", dict(zip(names, ops)), {"equation": eq}, opset=12)
    want = np.einsum(eq.replace(" ", ""), *[o.astype(np.float64) for o in ops])
    assert y.dtype == np.float32 and y.shape == np.shape(want)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    y2 = run_node("Einsum", dict(zip(names, ops)), {"equation": eq}, opset=12)   # second call: cached path
    np.testing.assert_array_equal(y, y2)


def test_einsum_bad_equation():
    with pytest.raises(ValueError, match="equation"):
        run_node("Einsum", {"x": np.zeros((2, 2), np.float32)}, {"equation": "ij->j; drop"}, opset=12)
