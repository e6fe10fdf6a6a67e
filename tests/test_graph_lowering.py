"""The inference lowering (edgepack.graph.passes.layout): channels-last convolutions on the C++
kernels with fused epilogues, transposes only at the graph's edges, int8 convs chained in int8.

float32 tolerance against the stored (NCHW, NumPy) graph: 1e-5 of the output's scale (summation
order and FMA differ between the kernels and BLAS); the int8 lowering computes the same integer
accumulations and the same float32 epilogue as the NCHW int8 layers, so its outputs are equal but
for requantization ties (a multiply by 1/scale instead of a division): bit-identical here.
"""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import edgepack  # noqa: E402
from edgepack.graph.passes.layout import lower_for_inference  # noqa: E402

from test_graph import residual_cnn  # noqa: E402


def _close(a, b, tol=1e-5):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= tol * max(np.abs(b).max(), 1e-6)


def test_float_graph_runs_nhwc_with_fused_epilogues(rng, isa):
    g = edgepack.from_onnx(residual_cnn(rng))
    lg = lower_for_inference(g)
    ops = lg.op_counts()
    assert ops.get("edgepack.ConvNHWC") == 6 and "Conv" not in ops
    assert ops.get("Transpose") == 2            # in at the first conv, out before Flatten
    assert "Relu" not in ops and "HardSigmoid" not in ops and "Add" not in ops   # all in epilogues
    acts = sorted(n.attrs["activation"] for n in lg.nodes if n.op == "ConvNHWC")
    assert acts == ["", "hardsigmoid", "relu", "relu", "relu", "relu"]
    assert sum(len(n.inputs) == 4 for n in lg.nodes if n.op == "ConvNHWC") == 1   # the residual
    for n in (1, 3):
        x = rng.standard_normal((n, 3, 16, 16)).astype(np.float32)
        _close(g.run({"x": x})["y"], g.program(lowered=False).run({"x": x})["y"])


def test_int8_graph_runs_qconv_nhwc_chained(rng, isa):
    g = edgepack.from_onnx(residual_cnn(rng))
    q = edgepack.quantize(g, rng.standard_normal((16, 3, 16, 16)).astype(np.float32), activations="static",
                          min_macs=0)
    lq = lower_for_inference(q)
    ops = lq.op_counts()
    assert ops.get("edgepack.QConvNHWC", 0) == 5     # the depthwise layer computes float (int8 weights)
    chained = [n for n in lq.nodes if n.op == "QConvNHWC" and n.attrs.get("out_scale")]
    assert chained, "an int8 conv feeding an int8 conv should write int8"
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(q.run({"x": x})["y"], q.program(lowered=False).run({"x": x})["y"])


def test_nhwc_input_model_has_no_transpose(rng):
    """tf2onnx exports take NHWC images and transpose them to NCHW first: after lowering, that
    transpose and the first conv's cancel, and no Transpose is left in the graph."""
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((4, 8, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["t", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["c2"], kernel_shape=[1, 1]),
             helper.make_node("Transpose", ["c2"], ["y"], perm=[0, 2, 3, 1])]
    gr = helper.make_graph(nodes, "nhwc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 8, 3])],
                           [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 8, 4])],
                           initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(w2, "w2")])
    g = edgepack.from_onnx(helper.make_model(gr, opset_imports=[helper.make_opsetid("", 13)]))
    lg = lower_for_inference(g)
    assert "Transpose" not in lg.op_counts(), lg.op_counts()
    x = rng.standard_normal((2, 8, 8, 3)).astype(np.float32)
    _close(g(x), g.program(lowered=False).run({"x": x})["y"])


def test_hardswish_patterns_and_bias_add_fuse(rng):
    """PaddleOCR writes HardSwish as Add(3) -> Clip(0, 6) -> Mul(x) -> Div(6) and its SE convs
    without bias, followed by an Add of a per-channel constant."""
    w = rng.standard_normal((6, 3, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((6, 6, 1, 1)).astype(np.float32)
    b2 = rng.standard_normal((1, 6, 1, 1)).astype(np.float32)
    f = lambda n, v: numpy_helper.from_array(np.asarray(v, np.float32), n)  # noqa: E731
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "three"], ["a"]),
             helper.make_node("Clip", ["a", "zero", "six"], ["cl"]),
             helper.make_node("Mul", ["c", "cl"], ["m"]),
             helper.make_node("Div", ["m", "six"], ["hs"]),
             helper.make_node("Conv", ["hs", "w2"], ["c2"], kernel_shape=[1, 1]),
             helper.make_node("Add", ["c2", "b2"], ["c2b"]),
             helper.make_node("Sigmoid", ["c2b"], ["s"]),
             helper.make_node("Mul", ["c2b", "s"], ["y"])]
    gr = helper.make_graph(nodes, "hs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 9, 7])],
                           [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6, 9, 7])],
                           initializer=[f("w", w), f("w2", w2), f("b2", b2), f("three", 3.0), f("zero", 0.0),
                                        f("six", 6.0)])
    g = edgepack.from_onnx(helper.make_model(gr, opset_imports=[helper.make_opsetid("", 13)]))
    lg = lower_for_inference(g)
    assert sorted(n.attrs["activation"] for n in lg.nodes if n.op == "ConvNHWC") == ["hardswish", "silu"]
    assert set(lg.op_counts()) == {"edgepack.ConvNHWC", "Transpose"}
    x = rng.standard_normal((2, 3, 9, 7)).astype(np.float32) * 3
    _close(g(x), g.program(lowered=False).run({"x": x})["y"], 2e-5)


def test_int8_chain_through_maxpool_is_exact(rng):
    """Conv -> Relu -> MaxPool -> Conv: the first int8 conv writes uint8 for the second, MaxPool
    runs on the uint8 tensor (max commutes with the monotone quantization), and the result equals
    the NCHW int8 layers' bit for bit."""
    w1 = rng.standard_normal((16, 3, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((8, 16, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p1", "w2"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    gr = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
                           [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 16, 16])],
                           initializer=[numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    g = edgepack.from_onnx(helper.make_model(gr, opset_imports=[helper.make_opsetid("", 13)]))
    q = edgepack.quantize(g, rng.standard_normal((8, 3, 32, 32)).astype(np.float32), activations="static")
    lq = lower_for_inference(q)
    first = next(n for n in lq.nodes if n.op == "QConvNHWC")
    assert first.attrs.get("out_scale") and first.attrs.get("out_dtype") == "uint8"
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(q.run({"x": x})["y"], q.program(lowered=False).run({"x": x})["y"])


def test_int8_concat_shares_the_consumer_scale(rng):
    """Two int8 convs -> Concat -> int8 conv: both producers write uint8 at the consumer's scale,
    the Concat joins uint8 tensors, and the result equals the NCHW int8 layers' bit for bit."""
    f = lambda n, v: numpy_helper.from_array(np.asarray(v, np.float32), n)  # noqa: E731
    nodes = [helper.make_node("Conv", ["x", "wa"], ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "wb"], ["b"], kernel_shape=[1, 1]),
             helper.make_node("Concat", ["a", "b"], ["c"], axis=1),
             helper.make_node("Conv", ["c", "wc"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    gr = helper.make_graph(nodes, "cat", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 24, 24])],
                           [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 24, 24])],
                           initializer=[f("wa", rng.standard_normal((16, 8, 3, 3))), f("wb", rng.standard_normal((8, 8, 1, 1))),
                                        f("wc", rng.standard_normal((8, 24, 3, 3)))])
    g = edgepack.from_onnx(helper.make_model(gr, opset_imports=[helper.make_opsetid("", 13)]))
    q = edgepack.quantize(g, rng.standard_normal((8, 8, 24, 24)).astype(np.float32), activations="static")
    lq = lower_for_inference(q)
    writers = [n for n in lq.nodes if n.op == "QConvNHWC" and n.attrs.get("out_scale")]
    assert len(writers) == 2 and len({n.attrs["out_scale"] for n in writers}) == 1
    x = rng.standard_normal((2, 8, 24, 24)).astype(np.float32)
    np.testing.assert_array_equal(q.run({"x": x})["y"], q.program(lowered=False).run({"x": x})["y"])
