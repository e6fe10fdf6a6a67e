"""edgepack.from_onnx: MLP and CNN graphs built with onnx.helper match onnxruntime.

from_onnx returns an edgepack.nn.Graph (any graph of supported operators, not only chains); the
graph-specific tests (residuals, shape subgraphs, hostile graphs) are in tests/test_graph.py.

Tolerance: rtol=1e-5, atol=1e-5.  Both sides compute in float32 but sum in different orders
(BLAS vs MLAS) and edgepack folds BatchNorm into the conv weights, so results differ by a few
float32 ulps of O(1) values; 1e-5 bounds that with margin.
"""

import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import edgepack  # noqa: E402
from edgepack import nn  # noqa: E402

TOL = dict(rtol=1e-5, atol=1e-5)
OPSET = 20  # Gelu needs opset 20


def _init(name, arr):
    return numpy_helper.from_array(np.asarray(arr, dtype=np.float32) if np.asarray(arr).dtype.kind == "f"
                                   else np.asarray(arr), name)


def _model(nodes, inits, in_shape, out_shape, path):
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        initializer=inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = 9
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


def _ort(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_mlp_matches_onnxruntime(tmp_path, rng):
    w1 = rng.standard_normal((8, 16)).astype(np.float32)  # Gemm transB=1: [out, in]
    b1 = rng.standard_normal(8).astype(np.float32)
    w2 = rng.standard_normal((8, 12)).astype(np.float32)  # Gemm transB=0: [in, out]
    b2 = rng.standard_normal((1, 12)).astype(np.float32)
    w3 = rng.standard_normal((12, 6)).astype(np.float32)  # MatMul + Add
    b3 = rng.standard_normal(6).astype(np.float32)
    w4 = rng.standard_normal((6, 5)).astype(np.float32)
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h1"], transB=1),
        helper.make_node("Relu", ["h1"], ["a1"]),
        helper.make_node("Gemm", ["a1", "w2", "b2"], ["h2"], alpha=0.5, beta=2.0),
        helper.make_node("Gelu", ["h2"], ["a2"]),
        helper.make_node("MatMul", ["a2", "w3"], ["h3"]),
        helper.make_node("Add", ["h3", "b3"], ["h3b"]),
        helper.make_node("Tanh", ["h3b"], ["a3"]),
        helper.make_node("Dropout", ["a3"], ["d3"]),
        helper.make_node("MatMul", ["d3", "w4"], ["h4"]),
        helper.make_node("Sigmoid", ["h4"], ["a4"]),
        helper.make_node("Softmax", ["a4"], ["y"], axis=-1),
    ]
    inits = [_init(n, v) for n, v in [("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2), ("w3", w3),
                                       ("b3", b3), ("w4", w4)]]
    path = _model(nodes, inits, ["N", 16], ["N", 5], tmp_path / "mlp.onnx")
    model = edgepack.from_onnx(path)
    assert isinstance(model, nn.Graph)
    assert "Dropout" not in model.op_counts()  # inference Dropout is removed at import
    x = rng.standard_normal((7, 16)).astype(np.float32)
    np.testing.assert_allclose(model(x), _ort(path, x), **TOL)


def test_cnn_matches_onnxruntime(tmp_path, rng):
    c1 = rng.standard_normal((6, 1, 3, 3)).astype(np.float32)
    c1b = rng.standard_normal(6).astype(np.float32)
    bn = [rng.standard_normal(6), rng.standard_normal(6), rng.standard_normal(6), rng.uniform(0.5, 2, 6)]
    dw = rng.standard_normal((6, 1, 3, 3)).astype(np.float32)
    pw = rng.standard_normal((8, 6, 1, 1)).astype(np.float32)
    pwb = rng.standard_normal((1, 8, 1, 1)).astype(np.float32)
    fc = rng.standard_normal((10, 8 * 2 * 2)).astype(np.float32)
    fcb = rng.standard_normal(10).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "c1", "c1b"], ["h1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["h1", "s", "b", "m", "v"], ["h1n"], epsilon=1e-3),
        helper.make_node("Relu", ["h1n"], ["a1"]),
        helper.make_node("MaxPool", ["a1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "dw"], ["h2"], kernel_shape=[3, 3], pads=[1, 0, 1, 2],
                         group=6, strides=[1, 1]),
        helper.make_node("Relu", ["h2"], ["a2"]),
        helper.make_node("Conv", ["a2", "pw"], ["h3"], kernel_shape=[1, 1]),
        helper.make_node("Add", ["h3", "pwb"], ["h3b"]),
        helper.make_node("AveragePool", ["h3b"], ["p3"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Flatten", ["p3"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["g"], transB=1),
        helper.make_node("Reshape", ["g", "shape"], ["y"]),
    ]
    inits = [_init(n, v) for n, v in [("c1", c1), ("c1b", c1b), ("s", bn[0]), ("b", bn[1]), ("m", bn[2]),
                                       ("v", bn[3]), ("dw", dw), ("pw", pw), ("pwb", pwb), ("fc", fc),
                                       ("fcb", fcb)]]
    inits.append(numpy_helper.from_array(np.array([-1, 2, 5], np.int64), "shape"))
    path = _model(nodes, inits, ["N", 1, 8, 8], ["N", 2, 5], tmp_path / "cnn.onnx")
    model = edgepack.from_onnx(path)
    assert "BatchNormalization" not in model.op_counts()  # folded into the first Conv
    x = rng.standard_normal((3, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(model(x), _ort(path, x), **TOL)
    edgepack.save(model, tmp_path / "cnn.edgepack")
    np.testing.assert_array_equal(edgepack.load(tmp_path / "cnn.edgepack")(x), model(x))
    kept = edgepack.from_onnx(path, fold_batchnorm=False)
    assert kept.op_counts()["BatchNormalization"] == 1
    np.testing.assert_allclose(kept(x), _ort(path, x), **TOL)


def test_global_pool_and_pool_variants(tmp_path, rng):
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["h"], kernel_shape=[3, 3], strides=[2, 1], dilations=[1, 2]),
        helper.make_node("MaxPool", ["h"], ["p"], kernel_shape=[2, 2], pads=[1, 1, 0, 0]),
        helper.make_node("AveragePool", ["p"], ["q"], kernel_shape=[2, 2], count_include_pad=1, pads=[0, 1, 0, 1]),
        helper.make_node("GlobalAveragePool", ["q"], ["y"]),
    ]
    path = _model(nodes, [_init("w", w)], ["N", 2, 9, 9], ["N", 4, 1, 1], tmp_path / "p.onnx")
    x = rng.standard_normal((2, 2, 9, 9)).astype(np.float32)
    np.testing.assert_allclose(edgepack.from_onnx(path)(x), _ort(path, x), **TOL)


def test_unsupported_ops_all_listed(tmp_path, rng):
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Det", ["a"], ["b"]),
        helper.make_node("Erf", ["b"], ["c"]),
        helper.make_node("Det", ["c"], ["d"]),
        helper.make_node("LeakyRelu", ["d"], ["y"]),
    ]
    path = _model(nodes, [], ["N", 4], ["N", 4], tmp_path / "u.onnx")
    with pytest.raises(ValueError, match="2 unsupported") as e:
        edgepack.from_onnx(path)
    assert str(e.value).count("operator Det") == 2


def test_residual_and_bad_files(tmp_path, rng):
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Add", ["a", "x"], ["y"]),  # residual: two computed inputs
    ]
    path = _model(nodes, [], ["N", 4], ["N", 4], tmp_path / "r.onnx")
    x = rng.standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_allclose(edgepack.from_onnx(path)(x), _ort(path, x), **TOL)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01not a protobuf\xff" * 3)
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        edgepack.from_onnx(junk)
    with pytest.raises(FileNotFoundError):
        edgepack.from_onnx(tmp_path / "missing.onnx")


def test_imported_model_saves_and_loads(tmp_path, rng):
    w = rng.standard_normal((4, 3)).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
    path = _model(nodes, [_init("w", w)], ["N", 4], ["N", 3], tmp_path / "s.onnx")
    model = edgepack.from_onnx(path)
    edgepack.save(model, tmp_path / "s.edgepack")
    x = rng.standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_array_equal(edgepack.load(tmp_path / "s.edgepack")(x), model(x))


def test_missing_onnx_gives_clear_error(monkeypatch, tmp_path):
    import edgepack.io.onnx as mod

    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'edgepack\[onnx\]'"):
        mod.from_onnx(tmp_path / "x.onnx")
