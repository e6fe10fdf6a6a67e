"""Quantized graph operators (edgepack.graph.ops.quant) against ONNX Runtime and onnx's reference.

Integer results (QuantizeLinear, MatMulInteger, ConvInteger, DynamicQuantizeLinear) must equal
ONNX Runtime's exactly.  Requantized results (QLinearMatMul, QLinearConv) follow the ONNX
reference (the multiply in float64) and must equal it exactly; ONNX Runtime multiplies in float32,
so against it they may differ by 1 where the product lands within float32 rounding of a tie.
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

from edgepack.io.onnx import from_onnx  # noqa: E402

_NP2ONNX = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float16): TensorProto.FLOAT16,
            np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8,
            np.dtype(np.int16): TensorProto.INT16, np.dtype(np.uint16): TensorProto.UINT16,
            np.dtype(np.int32): TensorProto.INT32}


def _model(op, inputs, consts=(), n_out=1, opset=13, **attrs):
    """One-node model: ``inputs`` is a list of (name, array); names in ``consts`` become
    initializers, the rest graph inputs; ``""`` names an absent input."""
    names, gin, inits, feeds = [], [], [], {}
    for name, arr in inputs:
        names.append(name)
        if not name:
            continue
        arr = np.asarray(arr)
        if name in consts:
            inits.append(numpy_helper.from_array(arr, name))
        else:
            gin.append(helper.make_tensor_value_info(name, _NP2ONNX[arr.dtype], arr.shape))
            feeds[name] = arr
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, **attrs)
    gout = [onnx.ValueInfoProto(name=o) for o in outs]
    g = helper.make_graph([node], "g", gin, gout, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10 if opset >= 21 else 8
    return onnx.shape_inference.infer_shapes(m), feeds   # ONNX Runtime wants the output types


def _ort(m, feeds):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def _ref(m, feeds):
    return ReferenceEvaluator(m).run(None, feeds)


def _ours(m, feeds):
    g = from_onnx(m)
    r = g.run(feeds)
    return [r[o] for o in g.outputs]


def _same(got, want):
    for a, b in zip(got, want):
        b = np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, a.shape, b.dtype, b.shape)
        np.testing.assert_array_equal(a, b)


rng = np.random.default_rng(1234)


# -- QuantizeLinear / DequantizeLinear ------------------------------------------------------------

@pytest.mark.parametrize("dt", [np.uint8, np.int8])
@pytest.mark.parametrize("per_axis", [False, True])
@pytest.mark.parametrize("const", [True, False])
def test_quantize_linear_matches_ort(dt, per_axis, const):
    x = rng.normal(0, 3, (2, 5, 7)).astype(np.float32)
    x[0, 0, :4] = [0.25, 0.75, -0.25, 1e9]   # ties (scale 0.5 below) and saturation
    if per_axis:
        scale = rng.uniform(0.01, 0.5, 5).astype(np.float32)
        scale[0] = 0.5
        zp = rng.integers(0, 20, 5).astype(dt)
    else:
        scale, zp = np.float32(0.5), np.array(3, dt)
    m, f = _model("QuantizeLinear", [("x", x), ("s", scale), ("z", zp)], consts=("s", "z") if const else (), axis=1)
    _same(_ours(m, f), _ort(m, f))


def test_quantize_linear_nan_inf():
    x = np.array([np.nan, np.inf, -np.inf, 1.0], np.float32)
    m, f = _model("QuantizeLinear", [("x", x), ("s", np.float32(0.1)), ("z", np.uint8(10))], consts=("s", "z"))
    (y,) = _ours(m, f)
    assert y.tolist() == [10, 255, 0, 20]


@pytest.mark.parametrize("dt", [np.int16, np.uint16])
def test_quantize_linear_16bit(dt):
    x = rng.normal(0, 300, (3, 8)).astype(np.float32)
    zp = np.array(7 if dt == np.int16 else 30000, dt)
    m, f = _model("QuantizeLinear", [("x", x), ("s", np.float32(0.02)), ("z", zp)], consts=("s", "z"), opset=21)
    _same(_ours(m, f), _ref(m, f))


def test_quantize_linear_blocked_and_output_dtype():
    x = rng.normal(0, 3, (3, 10)).astype(np.float32)
    s = rng.uniform(0.05, 0.2, (3, 4)).astype(np.float32)   # blocks of 3 along axis 1 (last one short)
    m, f = _model("QuantizeLinear", [("x", x), ("s", s)], consts=("s",), opset=21, axis=1, block_size=3,
                  output_dtype=TensorProto.INT8)
    got = _ours(m, f)
    assert got[0].dtype == np.int8
    _same(got, _ref(m, f))


def test_quantize_linear_float16_input():
    x = rng.normal(0, 3, (4, 6)).astype(np.float16)
    m, f = _model("QuantizeLinear", [("x", x), ("s", np.float16(0.1)), ("z", np.uint8(128))], consts=("s", "z"),
                  opset=19)
    _same(_ours(m, f), _ref(m, f))


def test_quantize_linear_rejects_float8_output():
    x = np.ones((2, 2), np.float32)
    m, _ = _model("QuantizeLinear", [("x", x), ("s", np.float32(1))], consts=("s",), opset=21,
                  output_dtype=TensorProto.FLOAT8E4M3FN)
    with pytest.raises(ValueError, match="output_dtype 17"):
        from_onnx(m)


@pytest.mark.parametrize("dt", [np.uint8, np.int8, np.int32])
@pytest.mark.parametrize("per_axis", [False, True])
def test_dequantize_linear_matches_ort(dt, per_axis):
    info = np.iinfo(dt)
    lo, hi = max(info.min, -(1 << 20)), min(info.max, 1 << 20)
    x = rng.integers(lo, hi, (2, 4, 3), endpoint=True).astype(dt)
    if per_axis:
        s = rng.uniform(0.01, 1, 4).astype(np.float32)
        z = (rng.integers(0, 10, 4) if dt != np.int32 else np.zeros(4, int)).astype(dt)
    else:
        s, z = np.float32(0.037), np.array(0 if dt == np.int32 else 5, dt)
    m, f = _model("DequantizeLinear", [("x", x), ("s", s), ("z", z)], consts=("s", "z"), axis=1)
    got = _ours(m, f)
    want = _ort(m, f)
    assert got[0].dtype == np.float32
    np.testing.assert_array_equal(got[0], want[0])


def test_dequantize_linear_int32_large_values_exact():
    # (x - zp) is formed exactly before the one rounding to float32
    x = np.array([2 ** 30 + 1, -(2 ** 30) - 3], np.int32)
    z = np.array(5, np.int32)
    m, f = _model("DequantizeLinear", [("x", x), ("s", np.float32(1.0)), ("z", z)], consts=("s", "z"))
    (y,) = _ours(m, f)
    np.testing.assert_array_equal(y, (x.astype(np.int64) - 5).astype(np.float32))


def test_dequantize_linear_blocked_and_16bit():
    x = rng.integers(-30000, 30000, (4, 6)).astype(np.int16)
    s = rng.uniform(0.001, 0.01, (2, 6)).astype(np.float32)
    z = rng.integers(-5, 5, (2, 6)).astype(np.int16)
    m, f = _model("DequantizeLinear", [("x", x), ("s", s), ("z", z)], consts=("s", "z"), opset=21, axis=0,
                  block_size=2)
    _same(_ours(m, f), _ref(m, f))


def test_dequantize_linear_is_not_folded():
    # Constant weights stay as DequantizeLinear nodes: the int8 passes need to see the pattern.
    w = rng.integers(-127, 127, (3, 3)).astype(np.int8)
    m, f = _model("DequantizeLinear", [("w", w), ("s", np.float32(0.1))], consts=("w", "s"))
    g = from_onnx(m)
    assert [n.op for n in g.nodes] == ["DequantizeLinear"]
    np.testing.assert_array_equal(g.run({})[g.outputs[0]], w.astype(np.float32) * np.float32(0.1))


# -- DynamicQuantizeLinear ------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["mixed", "positive", "negative", "zeros"])
def test_dynamic_quantize_linear_matches_ort(kind):
    # "zeros": ONNX Runtime's scale 1 (the reference's 1/255 differs there)
    x = {"mixed": rng.normal(0, 2, (5, 9)), "positive": rng.uniform(0.5, 3, (5, 9)),
         "negative": -rng.uniform(0.5, 3, (5, 9)), "zeros": np.zeros((5, 9))}[kind].astype(np.float32)
    m, f = _model("DynamicQuantizeLinear", [("x", x)], n_out=3, opset=11)
    _same(_ours(m, f), _ort(m, f))


def test_dynamic_quantize_linear_empty():
    m, f = _model("DynamicQuantizeLinear", [("x", np.zeros((0, 9), np.float32))], n_out=3, opset=11)
    y, s, z = _ours(m, f)
    assert y.shape == (0, 9) and y.dtype == np.uint8 and s == 1 and z == 0


# -- MatMulInteger / QLinearMatMul ----------------------------------------------------------------

def _ints(dt, shape, lo=None, hi=None):
    info = np.iinfo(dt)
    return rng.integers(info.min if lo is None else lo, info.max if hi is None else hi, shape,
                        endpoint=True).astype(dt)


@pytest.mark.parametrize("adt,bdt", [(np.uint8, np.int8), (np.int8, np.int8), (np.uint8, np.uint8)])
@pytest.mark.parametrize("b_const", [True, False])
@pytest.mark.parametrize("a_shape", [(6, 40), (2, 3, 40), (40,)])
def test_matmul_integer_matches_ort(adt, bdt, b_const, a_shape):
    a = _ints(adt, a_shape)
    # int8 weights in [-127, 127] take the packed int8 kernel when constant; uint8 ones with a zero
    # point near their middle too; the rest the float path.
    b = _ints(bdt, (40, 9), -127 if bdt == np.int8 else None)
    azp = np.array(7 if adt == np.uint8 else -3, adt)
    bzp = np.array(0 if bdt == np.int8 else 128, bdt)
    m, f = _model("MatMulInteger", [("a", a), ("b", b), ("az", azp), ("bz", bzp)],
                  consts=("b", "bz", "az") if b_const else ("az",), opset=10)
    want = _ort(m, f) if adt == np.uint8 else _ref(m, f)   # ORT has no int8 x int8 MatMulInteger
    _same(_ours(m, f), want)


def test_matmul_integer_float_paths():
    # -128 in a constant int8 B (not packable), per-column b zero points, a per-row a zero point,
    # no zero points, and a large K (float64 accumulation)
    a = _ints(np.uint8, (5, 70))
    b = _ints(np.int8, (70, 6))
    b[0, 0] = -128
    bz = _ints(np.int8, (6,), -3, 3)
    m, f = _model("MatMulInteger", [("a", a), ("b", b), ("az", np.uint8(200)), ("bz", bz)], consts=("b", "bz"),
                  opset=10)
    _same(_ours(m, f), _ort(m, f))
    az = _ints(np.uint8, (5,))   # per row of A: in the ONNX text, not in ORT or the reference
    m, f = _model("MatMulInteger", [("a", a), ("b", b), ("az", az)], consts=("b",), opset=10)
    want = (a.astype(np.int64) - az[:, None]) @ b.astype(np.int64)
    _same(_ours(m, f), [want.astype(np.int32)])
    m, f = _model("MatMulInteger", [("a", a), ("b", b)], opset=10)
    _same(_ours(m, f), _ort(m, f))
    a = _ints(np.uint8, (3, 3000))
    b = _ints(np.uint8, (3000, 4))
    m, f = _model("MatMulInteger", [("a", a), ("b", b), ("az", np.uint8(255)), ("bz", np.uint8(255))], opset=10)
    _same(_ours(m, f), _ort(m, f))


@pytest.mark.parametrize("adt,bdt,ydt", [(np.uint8, np.int8, np.uint8), (np.int8, np.int8, np.int8),
                                         (np.uint8, np.uint8, np.uint8)])
@pytest.mark.parametrize("per_column", [False, True])
def test_qlinear_matmul(adt, bdt, ydt, per_column):
    a = _ints(adt, (2, 5, 32))
    b = _ints(bdt, (32, 12), -127 if bdt == np.int8 else None)
    bs = rng.uniform(0.001, 0.02, 12 if per_column else ()).astype(np.float32)
    bz = (np.zeros(12, bdt) if bdt == np.int8 else _ints(bdt, (12,), 100, 150)) if per_column else \
        np.array(0 if bdt == np.int8 else 128, bdt)
    ins = [("a", a), ("as", np.float32(0.05)), ("az", np.array(10, adt)), ("b", b), ("bs", bs), ("bz", bz),
           ("ys", np.float32(0.3)), ("yz", np.array(3, ydt))]
    m, f = _model("QLinearMatMul", ins, consts=("as", "az", "b", "bs", "bz", "ys", "yz"), opset=10)
    got = _ours(m, f)
    _same(got, _ref(m, f))
    if not per_column or bdt == np.int8:
        want = _ort(m, f)[0]
        assert np.abs(got[0].astype(int) - want.astype(int)).max() <= 1


# -- ConvInteger / QLinearConv --------------------------------------------------------------------

_CONV_CASES = [
    # (x shape, w shape, attrs)
    ((2, 3, 9, 8), (4, 3, 3, 3), {}),
    ((1, 4, 10, 10), (6, 4, 3, 3), {"pads": [1, 2, 0, 1], "strides": [2, 1]}),
    ((1, 4, 11, 9), (4, 2, 3, 2), {"group": 2, "dilations": [2, 1], "pads": [1, 1, 1, 1]}),
    ((2, 6, 8, 8), (12, 1, 3, 3), {"group": 6, "pads": [1, 1, 1, 1], "strides": [2, 2]}),   # depthwise x2
    ((1, 3, 7, 7), (5, 3, 1, 1), {}),
    ((1, 3, 7, 9), (5, 3, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((1, 3, 7, 9), (5, 3, 2, 3), {"auto_pad": "SAME_LOWER"}),
    ((1, 3, 7, 9), (5, 3, 3, 3), {"auto_pad": "VALID", "strides": [2, 3]}),
    ((2, 3, 20), (4, 3, 5), {"pads": [2, 2], "strides": [3]}),                             # 1-D
    ((1, 2, 5, 6, 7), (3, 2, 2, 3, 2), {"pads": [1, 0, 1, 0, 1, 1]}),                      # 3-D
]


@pytest.mark.parametrize("case", range(len(_CONV_CASES)))
@pytest.mark.parametrize("xdt,wdt", [(np.uint8, np.int8), (np.uint8, np.uint8), (np.int8, np.int8)])
def test_conv_integer(case, xdt, wdt):
    xs, ws, attrs = _CONV_CASES[case]
    x = _ints(xdt, xs)
    w = _ints(wdt, ws, -127 if wdt == np.int8 else None)
    xz = np.array(100 if xdt == np.uint8 else -7, xdt)
    wz = np.array(0 if wdt == np.int8 else 120, wdt)
    m, f = _model("ConvInteger", [("x", x), ("w", w), ("xz", xz), ("wz", wz)], consts=("w", "xz", "wz"),
                  opset=10, **attrs)
    got = _ours(m, f)
    # ORT runs ConvInteger for uint8 x only; the reference otherwise
    want = _ort(m, f) if xdt == np.uint8 and len(xs) == 4 else _ref(m, f)
    _same(got, want)


def test_conv_integer_weights_as_input_and_wide_sums():
    # weights fed at run time (float path), and uint8 weights far from their zero point so that
    # float32 would not be exact (float64 path)
    x = _ints(np.uint8, (1, 64, 6, 6))
    w = np.full((3, 64, 3, 3), 255, np.uint8)
    m, f = _model("ConvInteger", [("x", x), ("w", w), ("xz", np.uint8(0)), ("wz", np.uint8(0))], opset=10)
    _same(_ours(m, f), _ort(m, f))
    m, f = _model("ConvInteger", [("x", x), ("w", w), ("xz", np.uint8(0)), ("wz", np.uint8(0))],
                  consts=("w", "wz"), opset=10)
    _same(_ours(m, f), _ort(m, f))


@pytest.mark.parametrize("case", range(len(_CONV_CASES)))
@pytest.mark.parametrize("xdt,wdt", [(np.uint8, np.int8), (np.int8, np.int8), (np.uint8, np.uint8)])
@pytest.mark.parametrize("per_channel", [False, True])
def test_qlinear_conv(case, xdt, wdt, per_channel):
    xs, ws, attrs = _CONV_CASES[case]
    o = ws[0]
    x = _ints(xdt, xs)
    w = _ints(wdt, ws, -127 if wdt == np.int8 else None)
    ws_ = rng.uniform(0.002, 0.02, o if per_channel else ()).astype(np.float32)
    wz = np.zeros(o if per_channel else (), wdt) if wdt == np.int8 else np.array(128, wdt)
    bias = rng.integers(-2000, 2000, o).astype(np.int32)
    ins = [("x", x), ("xs", np.float32(0.02)), ("xz", np.array(120 if xdt == np.uint8 else 0, xdt)), ("w", w),
           ("ws", ws_), ("wz", wz), ("ys", np.float32(0.05)), ("yz", np.array(128 if xdt == np.uint8 else 0, xdt)),
           ("b", bias)]
    m, f = _model("QLinearConv", ins, consts=("xs", "xz", "w", "ws", "wz", "ys", "yz", "b"), opset=10, **attrs)
    got = _ours(m, f)
    if len(xs) == 4 or not per_channel:
        _same(got, _ref(m, f))
    else:
        # the reference's per-channel scale handles 2-D only: its formula, with ConvInteger's result
        wz0 = ("wz", wz.reshape(-1)[:1].reshape(()))   # the per-channel zero points are all 0 here
        mc, fc = _model("ConvInteger", [ins[0], ins[3], ins[2], wz0], consts=("xz", "w", "wz"), opset=10, **attrs)
        acc = _ref(mc, fc)[0] + bias.reshape((o,) + (1,) * (len(xs) - 2))
        mult = (np.float32(0.02) * ws_ / np.float32(0.05)).reshape((o,) + (1,) * (len(xs) - 2))
        want = np.clip(np.rint(acc * mult.astype(np.float64)) + int(ins[7][1]), *(
            (0, 255) if xdt == np.uint8 else (-128, 127))).astype(xdt)
        _same(got, [want])
    want = _ort(m, f)[0]
    assert np.abs(got[0].astype(int) - want.astype(int)).max() <= 1
    assert np.mean(got[0] == want) > 0.99


def test_qlinear_conv_without_bias_and_inputs_untouched():
    x = _ints(np.uint8, (1, 3, 6, 6))
    w = _ints(np.int8, (4, 3, 3, 3), -127)
    x0, w0 = x.copy(), w.copy()
    ins = [("x", x), ("xs", np.float32(0.02)), ("xz", np.uint8(3)), ("w", w), ("ws", np.float32(0.01)),
           ("wz", np.int8(0)), ("ys", np.float32(0.04)), ("yz", np.uint8(5))]
    m, f = _model("QLinearConv", ins, consts=("xs", "xz", "ws", "wz", "ys", "yz"), opset=10)
    _same(_ours(m, f), _ref(m, f))
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(w, w0)


def test_conv_weight_paths():
    from edgepack.graph.ops.quant import _ConvWeights

    w8 = _ints(np.int8, (4, 3, 3, 3), -127)
    assert _ConvWeights(w8, None, 1).mode == "int8"
    w8m = w8.copy()
    w8m[0, 0, 0, 0] = -128
    assert _ConvWeights(w8m, None, 1).mode == "float"
    wu = _ints(np.uint8, (4, 3, 3, 3), 10, 250)
    assert _ConvWeights(wu, np.uint8(128), 1).mode == "int8"       # w - 128 fits [-127, 127]
    assert _ConvWeights(wu, np.uint8(0), 1).mode == "float"
    assert _ConvWeights(_ints(np.int8, (6, 1, 3, 3)), None, 6).mode == "depthwise"


def test_conv_errors_name_the_argument():
    x = _ints(np.uint8, (1, 3, 6, 6))
    w = _ints(np.int8, (4, 2, 3, 3), -127)
    m, f = _model("ConvInteger", [("x", x), ("w", w)], consts=("w",), opset=10)
    with pytest.raises(ValueError, match="x has 3 channels"):
        _ours(m, f)
    m, _ = _model("ConvInteger", [("x", x), ("w", w)], consts=("w",), opset=10, auto_pad="SAME")
    with pytest.raises(ValueError, match="auto_pad"):
        from_onnx(m)


# -- whole quantized models made by onnxruntime.quantization -------------------------------------

def _float_model():
    """Conv -> Relu -> Conv (grouped) -> Flatten -> MatMul, random weights."""
    r = np.random.default_rng(7)
    w1 = r.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)
    b1 = r.normal(0, 0.1, 8).astype(np.float32)
    w2 = r.normal(0, 0.3, (8, 4, 3, 3)).astype(np.float32)
    w3 = r.normal(0, 0.1, (8 * 4 * 4, 10)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], group=2),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Flatten", ["r2"], ["f"]),
        helper.make_node("MatMul", ["f", "w3"], ["y"]),
    ]
    inits = [numpy_helper.from_array(v, k) for k, v in (("w1", w1), ("b1", b1), ("w2", w2), ("w3", w3))]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("fmt", ["QDQ", "QOperator", "dynamic"])
def test_quantized_models_from_onnxruntime(tmp_path, fmt):
    quantization = pytest.importorskip("onnxruntime.quantization")
    src = tmp_path / "f.onnx"
    dst = tmp_path / "q.onnx"
    onnx.save(_float_model(), src)
    r = np.random.default_rng(3)
    calib = [r.normal(0, 1, (2, 3, 16, 16)).astype(np.float32) for _ in range(4)]
    if fmt == "dynamic":
        quantization.quantize_dynamic(str(src), str(dst), weight_type=quantization.QuantType.QInt8)
    else:
        class Reader(quantization.CalibrationDataReader):
            def __init__(self):
                self.it = iter({"x": c} for c in calib)

            def get_next(self):
                return next(self.it, None)

        quantization.quantize_static(str(src), str(dst), Reader(), per_channel=True,
                                     quant_format=getattr(quantization.QuantFormat, fmt),
                                     activation_type=quantization.QuantType.QUInt8,
                                     weight_type=quantization.QuantType.QInt8)
    qm = onnx.load(str(dst))
    ops = {n.op_type for n in qm.graph.node}
    expect = {"QDQ": {"QuantizeLinear", "DequantizeLinear"}, "QOperator": {"QLinearConv", "QLinearMatMul"},
              "dynamic": {"DynamicQuantizeLinear", "MatMulInteger"}}[fmt]
    assert expect <= ops, ops
    g = from_onnx(str(dst))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL   # run the nodes as written
    s = ort.InferenceSession(str(dst), so, providers=["CPUExecutionProvider"])
    for x in calib[:2]:
        want = s.run(None, {"x": x})[0]
        got = g(x)
        # QOperator/QDQ: integer pipelines agree up to ORT's float32 requantization (1 step of the
        # output scale at a rounding tie, which can propagate through one more layer); dynamic:
        # float epilogues only differ in float32 rounding.
        scale = np.abs(want).max() / 127
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=2 * scale if fmt != "dynamic" else 1e-4)
