"""edgepack.quantize on graphs: int8 Conv/Gemm/MatMul nodes, static calibration, reports,
keep_float_below_db, the accuracy-aware mode, save/load, and QDQ models quantized by
onnxruntime running on edgepack's kernels."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import edgepack  # noqa: E402
from edgepack import nn  # noqa: E402

from test_graph import _save, residual_cnn, shape_subgraph_model  # noqa: E402


def _sqnr(ref, x):
    ref = np.asarray(ref, np.float64)
    return 10 * np.log10((ref ** 2).sum() / max(((ref - x) ** 2).sum(), 1e-30))


@pytest.fixture
def cnn(tmp_path, rng):
    path = _save(residual_cnn(rng), tmp_path / "m.onnx")
    return edgepack.from_onnx(path), path


@pytest.mark.parametrize("activations", ["dynamic", "static"])
def test_quantized_graph_close_to_float(cnn, rng, activations, tmp_path):
    g, _ = cnn
    calib = rng.standard_normal((32, 3, 16, 16)).astype(np.float32)
    q = edgepack.quantize(g, calib, activations=activations, min_macs=0)   # this toy's layers are all small
    assert isinstance(q, nn.Graph)
    layers = q.op_counts().get("edgepack.Layer", 0)
    assert layers == 7          # 6 convs (stem, block x2, SE x2, depthwise) and the Gemm
    rep = q.report
    assert len(rep.quantized) == 7 and all(r.status == "int8" for r in rep.layers)
    assert "Conv" not in q.op_counts() and "Gemm" not in q.op_counts()
    x = rng.standard_normal((4, 3, 16, 16)).astype(np.float32)
    assert _sqnr(g(x), q(x)) > 25
    assert rep.output_sqnr_db is not None and rep.output_sqnr_db > 25
    # int8 weights: a third of the tensor bytes (this toy's file is mostly its JSON header);
    # save/load keeps the exact function
    assert q.nbytes() < 0.35 * g.nbytes()
    edgepack.save(q, tmp_path / "q.edgepack")
    q2 = edgepack.load(tmp_path / "q.edgepack")
    np.testing.assert_array_equal(q2(x), q(x))


def test_skip_keep_float_and_accuracy_mode(cnn, rng):
    g, _ = cnn
    calib = rng.standard_normal((16, 3, 16, 16)).astype(np.float32)
    names = [r.name for r in edgepack.quantize(g, calib, min_macs=0).report.layers]
    q = edgepack.quantize(g, calib, activations="static", skip=[names[0]], min_macs=0)
    assert q.report[names[0]].status == "float (skip)"
    q = edgepack.quantize(g, calib, activations="static", keep_float_below_db=200.0, min_macs=0)
    assert set(q.report.kept_float) == set(names)           # nothing reaches 200 dB
    assert q.op_counts().get("edgepack.Layer", 0) == 0
    with pytest.raises(ValueError, match="no Conv/Gemm/MatMul node named 'nope'"):
        edgepack.quantize(g, calib, skip=["nope"])

    x = rng.standard_normal((64, 3, 16, 16)).astype(np.float32)
    ref = g(x)

    def agreement(out, y):
        return float(np.mean(out.argmax(1) == y))
    y = ref.argmax(1)
    q = edgepack.quantize(g, calib, activations="static", accuracy=(agreement, x, y), max_drop=0.0,
                          min_macs=0)
    acc = q.report.settings["accuracy"]
    assert acc["float_score"] == 1.0
    assert acc["final_score"] >= 1.0 - 1e-12 or "warning" in acc
    kept = [r for r in q.report.layers if r.status == "float (accuracy)"]
    assert len(kept) == len(acc["kept_float"])


def test_matmul_models_and_shape_subgraphs_quantize(tmp_path, rng):
    path = _save(shape_subgraph_model(), tmp_path / "s.onnx")
    g = edgepack.from_onnx(path)
    x = rng.standard_normal((8, 2, 3, 4)).astype(np.float32)
    q = edgepack.quantize(g, x, activations="static", min_macs=0)
    assert q.op_counts().get("edgepack.Layer") == 1
    assert _sqnr(g(x), q(x)) > 30


def test_onnxruntime_qdq_model_runs_on_edgepack_int8(cnn, rng, tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    _, path = cnn
    calib = [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(8)]

    class R(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            return next(self.it, None)

    qpath = tmp_path / "qdq.onnx"
    quantize_static(str(path), str(qpath), R(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    g = edgepack.from_onnx(qpath)
    assert g.op_counts().get("edgepack.Layer", 0) >= 4     # convs now on edgepack's int8 kernels
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ref = ort.InferenceSession(str(qpath), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert _sqnr(ref, g(x)) > 30


def test_small_convs_keep_int8_weights_and_compute_float(cnn, rng):
    """Convs doing fewer than min_macs multiply-adds per sample (the SE block's 1x1 convs on a 1x1
    map) keep int8 weights but compute in float: int8 arithmetic would add a quantize pass and a
    kernel call for no work."""
    g, _ = cnn
    calib = rng.standard_normal((8, 3, 16, 16)).astype(np.float32)
    q = edgepack.quantize(g, calib, activations="static", min_macs=1000)
    st = {r.name: r.status for r in q.report.layers}
    # stem 8x8x8x27 = 13824, block convs 8x8x8x72 = 36864, depthwise 8x8x8x9 = 4608 MACs: int8;
    # SE convs 8x4 = 32 and 4x8 = 32: int8 weights, float compute; the Gemm stays int8
    assert sorted(st.values()).count("int8 weights (small)") == 2, st
    assert sum(s == "int8" for s in st.values()) == 5
    assert q.op_counts().get("edgepack.Layer") == 7            # every weight is int8 in the file
    assert q.nbytes() < 0.35 * g.nbytes()
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    assert _sqnr(g(x), q(x)) > 25
    np.testing.assert_allclose(q.run({"x": x})["y"], q.program(lowered=False).run({"x": x})["y"], rtol=1e-5,
                               atol=1e-6)
