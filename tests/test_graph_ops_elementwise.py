"""Elementwise maths and activation operators beyond what the ONNX backend cases cover: old-opset
semantics (Softmax family coercion, Clip-6), Erf accuracy, dtype preservation, 0-d tensors,
integer corner cases and the guards (input counts, broadcast size, unsupported casts)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from edgepack.graph.ir import Graph, Node
from edgepack.graph.ops.elementwise import erf

rng = np.random.default_rng(0)


def run1(op, *inputs, opset=17, attrs=None, params=None, n_in=None):
    """Run one node; ``inputs`` are arrays fed as graph inputs (None = absent)."""
    names = [f"x{i}" if a is not None else "" for i, a in enumerate(inputs)]
    params = dict(params or {})
    g = Graph([Node(op, names + list(params), ["y"], dict(attrs or {}))],
              inputs=[n for n in names if n], outputs=["y"], params=params, opset=opset)
    return g.run({n: a for n, a in zip(names, inputs) if n})["y"]


def _ref_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# -- softmax family --------------------------------------------------------------------------------

@pytest.mark.parametrize("opset", [7, 11, 12])
def test_softmax_old_opsets_coerce_to_2d(opset):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    for axis, kw in ((1, {}), (1, {"axis": 1}), (0, {"axis": 0}), (2, {"axis": -1}), (1, {"axis": -2})):
        want = _ref_softmax(x.reshape(int(np.prod(x.shape[:axis])), -1), 1).reshape(x.shape)
        got = run1("Softmax", x, opset=opset, attrs=kw)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
        lw = np.log(want)
        np.testing.assert_allclose(run1("LogSoftmax", x, opset=opset, attrs=kw), lw, rtol=1e-5, atol=1e-6)
        hm = run1("Hardmax", x, opset=opset, attrs=kw)
        x2 = x.reshape(int(np.prod(x.shape[:axis])), -1)
        want_h = np.zeros_like(x2)
        want_h[np.arange(x2.shape[0]), x2.argmax(1)] = 1
        np.testing.assert_array_equal(hm, want_h.reshape(x.shape))


def test_softmax_13_single_axis_default_last():
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(run1("Softmax", x, opset=13), _ref_softmax(x, -1), rtol=1e-6)
    np.testing.assert_allclose(run1("Softmax", x, opset=13, attrs={"axis": 1}), _ref_softmax(x, 1), rtol=1e-6)
    # opset 11's default (axis=1) normalises over axes 1 and 2 together: not the same thing
    assert not np.allclose(run1("Softmax", x, opset=11), run1("Softmax", x, opset=13, attrs={"axis": 1}))


def test_softmax_large_values_and_hardmax_ties():
    x = np.array([[1000.0, 1001.0, -1e30]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = run1("Softmax", x, opset=13)
    np.testing.assert_allclose(y, [[1 / (1 + math.e), math.e / (1 + math.e), 0]], rtol=1e-6)
    h = run1("Hardmax", np.array([[3.0, 3.0, 1.0]], np.float32), opset=13)
    np.testing.assert_array_equal(h, [[1, 0, 0]])   # the first maximum


def test_softmax_axis_out_of_range():
    with pytest.raises(ValueError, match="axis"):
        run1("Softmax", np.ones((2, 3), np.float32), opset=13, attrs={"axis": 2})


# -- Clip ----------------------------------------------------------------------------------------

def test_clip_opset6_attributes():
    x = np.array([-3.0, -0.5, 0.5, 3.0], np.float32)
    np.testing.assert_array_equal(run1("Clip", x, opset=7, attrs={"min": -1.0, "max": 1.0}), [-1, -0.5, 0.5, 1])
    np.testing.assert_array_equal(run1("Clip", x, opset=7), x)
    fmax = np.finfo(np.float32).max
    inf = np.array([np.inf, -np.inf], np.float32)
    np.testing.assert_array_equal(run1("Clip", inf, opset=7), [fmax, -fmax])   # the defaults are bounds
    np.testing.assert_array_equal(run1("Clip", np.array([1e300]), opset=7), [float(fmax)])
    np.testing.assert_array_equal(run1("Clip", inf.astype(np.float16), opset=7), inf)
    h = x.astype(np.float16)
    y = run1("Clip", h, opset=7, attrs={"max": 0.0})
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y, [-3, -0.5, 0, 0])


def test_clip_inputs_absent_integer_and_crossed():
    x = np.array([-5, 0, 5, 100], np.int8)
    g = Graph([Node("Clip", ["x", "", "hi"], ["y"])], inputs=["x"], outputs=["y"],
              params={"hi": np.array(4, np.int8)}, opset=13)
    y = g.run({"x": x})["y"]
    assert y.dtype == np.int8
    np.testing.assert_array_equal(y, [-5, 0, 4, 4])
    f = np.array([-2.0, 0.0, 2.0], np.float32)
    y = run1("Clip", f, np.array(1.0, np.float32), np.array(-1.0, np.float32), opset=13)
    np.testing.assert_array_equal(y, [-1, -1, -1])   # min > max: every value becomes max
    assert run1("Clip", np.array([np.nan], np.float32), np.array(0, np.float32), opset=13).tolist() != [0.0]


# -- Erf -----------------------------------------------------------------------------------------

def test_erf_float32_within_one_ulp():
    x = np.concatenate([np.linspace(-6, 6, 200001), np.geomspace(1e-38, 6, 20000),
                        -np.geomspace(1e-38, 6, 20000), [0.0, -0.0]]).astype(np.float32)
    want = np.array([math.erf(v) for v in x.astype(np.float64)])
    got = erf(x)
    assert got.dtype == np.float32
    ulp = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got - want) / ulp) <= 1.0
    assert np.all(np.abs(got) <= 1)
    assert np.isnan(erf(np.full(40, np.nan, np.float32))).all()
    np.testing.assert_array_equal(erf(np.array([np.inf, -np.inf] * 20, np.float32))[:2], [1, -1])


def test_erf_float16_float64_and_small():
    x = np.linspace(-3, 3, 101)
    want = np.array([math.erf(v) for v in x])
    np.testing.assert_array_equal(erf(x), want)
    y = erf(x.astype(np.float16))
    assert y.dtype == np.float16
    np.testing.assert_allclose(y, want, rtol=1e-3, atol=1e-4)
    z = run1("Erf", np.array(0.5, np.float32))
    assert isinstance(z, np.ndarray) and z.shape == () and z.dtype == np.float32


# -- arithmetic ----------------------------------------------------------------------------------

def test_integer_div_truncates_and_mod():
    a = np.array([7, -7, 7, -7, 6, -6], np.int32)
    b = np.array([2, 2, -2, -2, -3, 3], np.int32)
    np.testing.assert_array_equal(run1("Div", a, b), [3, -3, -3, 3, -2, -2])
    np.testing.assert_array_equal(run1("Div", a.astype(np.int64), b.astype(np.int64)), [3, -3, -3, 3, -2, -2])
    np.testing.assert_array_equal(run1("Div", np.array([7, 250], np.uint8), np.array([2, 3], np.uint8)), [3, 83])
    np.testing.assert_array_equal(run1("Mod", a, b), [1, 1, -1, -1, 0, 0])
    np.testing.assert_array_equal(run1("Mod", a, b, attrs={"fmod": 1}), [1, -1, 1, -1, 0, 0])


def test_pow_dtypes_and_negative_integer_exponent():
    x = np.array([1.5, -2.0, 3.0], np.float32)
    y = run1("Pow", x, np.array([2, 3, -1], np.int64))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [2.25, -8, 1 / 3], rtol=1e-6)
    i = np.array([2, -1, 1, 3], np.int32)
    y = run1("Pow", i, np.array([-1, -3, -5, 2], np.int64))
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, [0, -1, 1, 9])
    y = run1("Pow", i, np.array([0.5, 2.0, 1.0, 2.0], np.float32))
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, [1, 1, 1, 9])
    # a constant exponent of 2 and one that widens the output's rank
    g = Graph([Node("Pow", ["x", "e"], ["y"])], inputs=["x"], outputs=["y"],
              params={"e": np.full((1, 1), 2.0, np.float32)}, opset=15)
    y = g.run({"x": x})["y"]
    assert y.shape == (1, 3) and y.dtype == np.float32
    np.testing.assert_array_equal(y[0], x * x)


def test_variadic_broadcast_and_mean():
    a = np.ones((2, 1), np.float32)
    b = np.arange(3, dtype=np.float32)
    c = np.full((2, 3), 2, np.float32)
    np.testing.assert_array_equal(run1("Sum", a, b, c), a + b + c)
    np.testing.assert_array_equal(run1("Max", a, b), np.maximum(a, b))
    m = run1("Mean", a, b, c)
    assert m.dtype == np.float32
    np.testing.assert_allclose(m, (a + b + c) / 3, rtol=1e-6)
    one = run1("Min", b)
    np.testing.assert_array_equal(one, b)


def test_bitshift_and_logic():
    x = np.array([1, -8, 16], np.int8)
    np.testing.assert_array_equal(run1("BitShift", x, np.array([1, 1, 9], np.int8), attrs={"direction": "RIGHT"},
                                       opset=11), [0, -4, 0])
    np.testing.assert_array_equal(run1("BitShift", x, np.array([2, 1, 8], np.int8), attrs={"direction": "LEFT"},
                                       opset=11), [4, -16, 0])
    t = np.array([True, False])
    np.testing.assert_array_equal(run1("Xor", t, np.array([True, True])), [False, True])
    np.testing.assert_array_equal(run1("Not", t), [False, True])
    np.testing.assert_array_equal(run1("IsInf", np.array([np.inf, -np.inf, 1], np.float32),
                                       attrs={"detect_negative": 0}), [True, False, False])


def test_cast_and_castlike():
    x = np.array([-1.7, 2.5, 300.0], np.float32)
    np.testing.assert_array_equal(run1("Cast", x, attrs={"to": 6}), [-1, 2, 300])
    y = run1("Cast", np.array([200, -56], np.int16), attrs={"to": 3})
    assert y.dtype == np.int8 and y.tolist() == [-56, -56]
    assert run1("Cast", x, attrs={"to": 9}).tolist() == [True, True, True]
    assert run1("Cast", x, attrs={"to": 1, "saturate": 0}, opset=19).dtype == np.float32
    y = run1("CastLike", x, np.zeros(1, np.float16), opset=15)
    assert y.dtype == np.float16
    with pytest.raises(ValueError, match="data type 16"):
        run1("Cast", x, attrs={"to": 16})   # bfloat16


# -- activations ---------------------------------------------------------------------------------

ACTS = ["Relu", "LeakyRelu", "Elu", "Selu", "Celu", "ThresholdedRelu", "Sigmoid", "HardSigmoid", "HardSwish",
        "Tanh", "Softplus", "Softsign", "Mish", "Gelu", "Shrink", "Softmax", "LogSoftmax", "Hardmax", "Erf", "Exp",
        "Neg", "Abs", "Floor", "Sqrt"]


@pytest.mark.parametrize("op", ACTS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_dtype_kept_and_input_untouched(op, dtype):
    x = (rng.standard_normal((2, 5)) * 4).astype(dtype)
    if op == "Sqrt":
        x = np.abs(x)
    keep = x.copy()
    y = run1(op, x, opset=22 if op != "Gelu" else 20)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_array_equal(x, keep)


@pytest.mark.parametrize("op", [a for a in ACTS if a not in ("Softmax", "LogSoftmax", "Hardmax")])
def test_zero_dim_gives_zero_dim_array(op):
    for dtype in (np.float16, np.float32):
        y = run1(op, np.array(0.75, dtype), opset=22 if op != "Gelu" else 20)
        assert isinstance(y, np.ndarray) and y.shape == () and y.dtype == dtype, op


def test_activation_values():
    x = np.array([-100.0, -2.0, -0.5, 0.0, 0.5, 2.0, 100.0], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # no overflow warnings in the tails
        sig = run1("Sigmoid", x)
        sp = run1("Softplus", x)
        elu = run1("Elu", x)
    np.testing.assert_allclose(sig, 1 / (1 + np.exp(-x.astype(np.float64))), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(sp, np.logaddexp(0, x.astype(np.float64)), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(elu, np.where(x > 0, x, np.expm1(np.minimum(x, 0))), rtol=1e-6)
    np.testing.assert_allclose(run1("LeakyRelu", x, attrs={"alpha": 2.0}), np.where(x < 0, 2 * x, x))
    np.testing.assert_allclose(run1("LeakyRelu", x, attrs={"alpha": -0.5}), np.where(x < 0, -0.5 * x, x))
    np.testing.assert_allclose(run1("HardSigmoid", x), np.clip(0.2 * x + 0.5, 0, 1), rtol=1e-6)
    np.testing.assert_allclose(run1("HardSwish", x), x * np.clip(x / 6 + 0.5, 0, 1), rtol=1e-6)
    np.testing.assert_array_equal(run1("Relu", np.array([-3, 4], np.int8)), np.array([0, 4], np.int8))
    np.testing.assert_allclose(run1("Celu", x, attrs={"alpha": 2.0}, opset=12),
                               np.maximum(x, 0) + np.minimum(0, 2 * np.expm1(x / 2)), rtol=1e-6)


def test_prelu_broadcast_one_way():
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    for slope in (np.array([0.1, 0.2, 0.3], np.float32).reshape(3, 1), np.array([1.5, -2, 3, 4], np.float32)):
        g = Graph([Node("PRelu", ["x", "s"], ["y"])], inputs=["x"], outputs=["y"], params={"s": slope}, opset=9)
        np.testing.assert_allclose(g.run({"x": x})["y"], np.where(x < 0, x * slope, x), rtol=1e-6)
    g = Graph([Node("PRelu", ["x", "s"], ["y"])], inputs=["x"], outputs=["y"],
              params={"s": np.ones((5, 3, 4), np.float32)}, opset=9)
    with pytest.raises(ValueError, match="slope"):
        g.run({"x": x})


def test_gelu_matches_exact():
    x = np.linspace(-8, 8, 1001).astype(np.float32)
    want = np.array([0.5 * v * math.erfc(-v / math.sqrt(2)) for v in x.astype(np.float64)])
    np.testing.assert_allclose(run1("Gelu", x, opset=20), want, rtol=1e-5, atol=1e-30)
    t = run1("Gelu", x, opset=20, attrs={"approximate": "tanh"})
    np.testing.assert_allclose(t, want, atol=1e-3)


# -- guards --------------------------------------------------------------------------------------

def test_surplus_input_is_refused_not_written():
    x = np.ones(3, np.float32)
    out = np.zeros(3, np.float32)
    g = Graph([Node("Exp", ["x", "o"], ["y"])], inputs=["x", "o"], outputs=["y"], opset=13)
    with pytest.raises(ValueError, match="takes 1"):
        g.run({"x": x, "o": out})
    assert not out.any()


def test_broadcast_size_guard(monkeypatch):
    from edgepack.graph.ops import _util, elementwise

    monkeypatch.setattr(elementwise, "MAX_ELEMENTS", 1000)
    monkeypatch.setattr(_util, "MAX_ELEMENTS", 1000)
    a = np.ones((100, 1), np.float32)
    b = np.ones((1, 100), np.float32)
    with pytest.raises(ValueError, match="elements"):
        run1("Add", a, b)
    np.testing.assert_array_equal(run1("Add", a, a), a + a)   # large product, small output


def test_unsupported_attribute_values_named_at_import():
    g = Graph([Node("Gelu", ["x"], ["y"], {"approximate": "erf"}, name="g1")], inputs=["x"], outputs=["y"],
              opset=20)
    with pytest.raises(ValueError, match="g1.*approximate"):
        g.check_ops()
    g = Graph([Node("Mod", ["x", "x"], ["y"], {"fmod": 2}, name="m1")], inputs=["x"], outputs=["y"], opset=13)
    with pytest.raises(ValueError, match="m1.*fmod"):
        g.check_ops()
