"""edgepack.nn.Graph: import of real-shaped ONNX graphs (residuals, several inputs/outputs, shape
subgraphs, Constant weights), the compiled executor, save/load, and hostile graphs.

Float tolerance against onnxruntime: rtol 1e-4 on the L2 norm (the issue's bar), plus elementwise
1e-4 of the output's scale: both sides compute in float32 but sum in different orders (BLAS vs
MLAS), and BatchNorm is folded into the conv weights here.
"""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import edgepack  # noqa: E402
from edgepack import nn  # noqa: E402


def _f(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def _save(model, path):
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _ort(path, feeds):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def _close(a, b, rtol=1e-4):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    assert a.shape == b.shape
    assert np.linalg.norm(a - b) <= rtol * max(np.linalg.norm(b), 1e-12)


def residual_cnn(rng, constant_weights=False, opset=13):
    """Conv-BN-Relu stem, a residual block (two convs + Add + Relu), an SE gate (GAP -> 1x1 conv ->
    Relu -> 1x1 conv -> HardSigmoid -> Mul), a depthwise conv, GAP, Flatten, Gemm."""
    c = 8
    w = {
        "w0": rng.standard_normal((c, 3, 3, 3)) * 0.3, "b0": rng.standard_normal(c) * 0.1,
        "g": rng.uniform(0.5, 1.5, c), "be": rng.standard_normal(c) * 0.1, "m": rng.standard_normal(c) * 0.1,
        "v": rng.uniform(0.5, 2, c),
        "w1": rng.standard_normal((c, c, 3, 3)) * 0.2, "b1": rng.standard_normal(c) * 0.1,
        "w2": rng.standard_normal((c, c, 3, 3)) * 0.2,
        "se1": rng.standard_normal((4, c, 1, 1)) * 0.3, "se1b": rng.standard_normal(4) * 0.1,
        "se2": rng.standard_normal((c, 4, 1, 1)) * 0.3, "se2b": rng.standard_normal(c) * 0.1,
        "dw": rng.standard_normal((c, 1, 3, 3)) * 0.3,
        "fc": rng.standard_normal((10, c)) * 0.3, "fcb": rng.standard_normal(10) * 0.1,
    }
    w = {k: np.asarray(v, np.float32) for k, v in w.items()}
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c0", "g", "be", "m", "v"], ["n0"]),
        helper.make_node("Relu", ["n0"], ["r0"]),
        helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r0"], ["a2"]),
        helper.make_node("Relu", ["a2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Conv", ["p", "se1", "se1b"], ["s1"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["s1"], ["s1r"]),
        helper.make_node("Conv", ["s1r", "se2", "se2b"], ["s2"], kernel_shape=[1, 1]),
        helper.make_node("HardSigmoid", ["s2"], ["gate"], alpha=0.2, beta=0.5),
        helper.make_node("Mul", ["r2", "gate"], ["se"]),
        helper.make_node("Conv", ["se", "dw"], ["d"], kernel_shape=[3, 3], pads=[0, 1, 2, 1], group=c),
        helper.make_node("GlobalAveragePool", ["d"], ["gp"]),
        helper.make_node("Flatten", ["gp"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"], transB=1),
    ]
    inits = [_f(k, v) for k, v in w.items()]
    if constant_weights:  # PaddleOCR style: every weight in a Constant node
        nodes = [helper.make_node("Constant", [], [k], value=_f(k, v)) for k, v in w.items()] + nodes
        inits = []
    g = helper.make_graph(nodes, "rescnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("constant_weights", [False, True])
def test_residual_se_cnn_matches_onnxruntime(tmp_path, rng, constant_weights):
    path = _save(residual_cnn(rng, constant_weights), tmp_path / "m.onnx")
    g = edgepack.from_onnx(path)
    assert isinstance(g, nn.Graph) and isinstance(g, nn.Module)
    assert "BatchNormalization" not in g.op_counts()       # folded into the stem conv
    assert "Constant" not in g.op_counts()                 # Constant weights became parameters
    for n in (1, 5):
        x = rng.standard_normal((n, 3, 16, 16)).astype(np.float32)
        _close(g(x), _ort(path, {"x": x})[0])
    # save/load keeps the exact function
    x = rng.standard_normal((3, 3, 16, 16)).astype(np.float32)
    edgepack.save(g, tmp_path / "m.edgepack")
    g2 = edgepack.load(tmp_path / "m.edgepack")
    assert isinstance(g2, nn.Graph)
    np.testing.assert_array_equal(g2(x), g(x))
    np.testing.assert_array_equal(g.predict(np.concatenate([x] * 3), batch_size=2), np.concatenate([g(x)] * 3))
    text = g.summary((1, 3, 16, 16), print_fn=None)
    assert "Conv" in text and "(1, 10)" in text


def test_several_inputs_and_outputs(tmp_path, rng):
    nodes = [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Relu", ["s"], ["r"]),
             helper.make_node("Mul", ["r", "a"], ["p"])]
    g = helper.make_graph(nodes, "two", [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 4]),
                                         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("r", TensorProto.FLOAT, ["N", 4]),
                           helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 4])])
    path = _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "two.onnx")
    gr = edgepack.from_onnx(path)
    a, b = rng.standard_normal((2, 3, 4)).astype(np.float32)
    out = gr.run({"a": a, "b": b})
    ref = _ort(path, {"a": a, "b": b})
    np.testing.assert_allclose(out["r"], ref[0], rtol=1e-6)
    np.testing.assert_allclose(out["p"], ref[1], rtol=1e-6)
    r, p = gr({"a": a, "b": b})
    np.testing.assert_array_equal(p, out["p"])
    with pytest.raises(ValueError, match="2 inputs"):
        gr(a)
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        gr.run({"a": a})
    with pytest.raises(ValueError, match="'a' must have 2 dimensions"):
        gr.run({"a": a[None], "b": b})


def shape_subgraph_model(opset=13):
    """Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1])) - the BERT/PyTorch export idiom -
    followed by a MatMul."""
    nodes = [
        helper.make_node("Shape", ["x"], ["sh"]),
        helper.make_node("Gather", ["sh", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["newshape"], axis=0),
        helper.make_node("Reshape", ["x", "newshape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["y"]),
    ]
    w = np.linspace(-1, 1, 24 * 5, dtype=np.float32).reshape(24, 5)
    inits = [_f("zero", np.array(0, np.int64)), _f("axes0", np.array([0], np.int64)),
             _f("minus1", np.array([-1], np.int64)), _f("w", w)]
    g = helper.make_graph(nodes, "shp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 2, 3, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 5])], initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def test_shape_subgraph_is_evaluated_once_per_shape(tmp_path, rng):
    path = _save(shape_subgraph_model(), tmp_path / "s.onnx")
    g = edgepack.from_onnx(path)
    for b in (1, 4, 1):
        x = rng.standard_normal((b, 2, 3, 4)).astype(np.float32)
        _close(g(x), _ort(path, {"x": x})[0], 1e-5)
    prog = g.program()
    plan = prog.plan_for({"x": np.zeros((4, 2, 3, 4), np.float32)})
    ops = [g.nodes[st.index].op for st in plan.steps]
    assert ops == ["Reshape", "MatMul"], ops   # Shape/Gather/Unsqueeze/Concat baked into the plan
    assert len(prog._plans) == 2                  # one plan per input shape


def test_plan_frees_values_after_last_use(rng):
    from edgepack.graph import Graph, Node

    nodes = [Node("Relu", ["x" if i == 0 else f"v{i - 1}"], [f"v{i}"], name=f"r{i}") for i in range(300)]
    g = Graph(nodes, [{"name": "x", "dtype": "float32", "shape": ["N", 8]}], ["v299"], opset=17)
    x = rng.standard_normal((1, 8)).astype(np.float32)
    np.testing.assert_array_equal(g(x), np.maximum(x, 0))
    plan = g.program().plan_for({"x": x})
    assert len(plan.steps) == 300
    freed = [c[-1] for c in plan._compiled]
    assert all(len(f) == 1 for f in freed[1:])   # each step frees its input (not the graph input)


def test_unsupported_ops_are_all_listed_at_import(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="ok"),
             helper.make_node("Det", ["a"], ["b"], name="det1"),
             helper.make_node("Relu", ["b"], ["c"], name="ok2", bogus=3),
             helper.make_node("Det", ["c"], ["y"], name="det2")]
    g = helper.make_graph(nodes, "u", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, str(tmp_path / "u.onnx"))
    with pytest.raises(ValueError) as e:
        edgepack.from_onnx(tmp_path / "u.onnx")
    msg = str(e.value)
    assert "3 unsupported" in msg and "'det1' (Det)" in msg and "'det2' (Det)" in msg and "'bogus'" in msg


def test_hostile_graphs_end_in_value_error(tmp_path):
    def model(nodes, inits=(), out_shape=None):
        g = helper.make_graph(nodes, "h", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              initializer=list(inits))
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])

    # a name nothing defines
    with pytest.raises(ValueError, match="'ghost'"):
        edgepack.from_onnx(model([helper.make_node("Add", ["x", "ghost"], ["y"], name="a")]))
    # a cycle
    with pytest.raises(ValueError, match="cycle"):
        edgepack.from_onnx(model([helper.make_node("Add", ["x", "z"], ["y"], name="a"),
                                  helper.make_node("Relu", ["y"], ["z"], name="b")]))
    # a constant that asks for 10^12 elements: refused while folding, node named
    huge = model([helper.make_node("ConstantOfShape", ["shape"], ["big"], name="boom"),
                  helper.make_node("Add", ["x", "big"], ["y"], name="a")],
                 [_f("shape", np.array([10 ** 6, 10 ** 6], np.int64))])
    with pytest.raises(ValueError, match="boom"):
        edgepack.from_onnx(huge)


def test_hostile_graph_file_is_refused(tmp_path, rng):
    from edgepack.graph import Graph, Node

    g = Graph([Node("Relu", ["x"], ["y"], name="r")], ["x"], ["y"], opset=17)
    edgepack.save(g, tmp_path / "g.edgepack")
    raw = (tmp_path / "g.edgepack").read_bytes()
    bad = raw.replace(b'\\"Relu\\"', b'\\"Eval\\"')
    assert bad != raw
    (tmp_path / "b.edgepack").write_bytes(bad)
    with pytest.raises(ValueError, match="Eval"):
        edgepack.load(tmp_path / "b.edgepack")
    bad = raw.replace(b'\\"x\\"],[\\"y\\"]', b'\\"q\\"],[\\"y\\"]')
    (tmp_path / "c.edgepack").write_bytes(bad)
    with pytest.raises(ValueError, match="'q'"):
        edgepack.load(tmp_path / "c.edgepack")
