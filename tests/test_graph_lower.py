"""Module trees as graphs: edgepack.graph.lower.from_module / to_module, and edgepack.quantize on
a module tree going through the graph passes (one implementation for hand-built and imported
models)."""

import numpy as np
import pytest

import edgepack
from edgepack import nn
from edgepack.graph.lower import from_module, layer_from_nodes, to_module
from edgepack.nn.quantized import QConv2d, QLinear
from edgepack.ptq.observers import sqnr_db


def _bn(c, rng):
    b = nn.BatchNorm(c)
    b.weight = rng.uniform(0.5, 2, c).astype(np.float32)
    b.bias = rng.standard_normal(c).astype(np.float32)
    b.running_mean = rng.standard_normal(c).astype(np.float32)
    b.running_var = rng.uniform(0.5, 2, c).astype(np.float32)
    return b


def zoo(rng):
    """(name, model, input): every layer from_module lowers to ONNX operators."""
    nn.seed(1)
    yield "mlp", nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.GELU("tanh"), nn.Linear(32, 24),
                               nn.SiLU(), nn.Dropout(0.3), nn.Linear(24, 8), nn.Tanh(), nn.Linear(8, 4), nn.Sigmoid(),
                               nn.Identity(), nn.Linear(4, 3), nn.Softmax()), rng.standard_normal((5, 16))
    yield "cnn", nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), _bn(8, rng), nn.ReLU(),
                               nn.Conv2d(8, 8, 3, stride=2, padding=(0, 1, 1, 0), groups=8), nn.MaxPool2d(2, 1, 1),
                               nn.AvgPool2d(2, 1, count_include_pad=False, padding=1),
                               nn.Residual(nn.Conv2d(8, 8, 1), nn.GELU()), nn.GlobalAvgPool2d(keepdims=True),
                               nn.Flatten(), nn.Linear(8, 4)), rng.standard_normal((2, 3, 9, 9))
    yield "flatten2", nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(2), nn.Linear(9, 5), nn.Reshape([0, -1]),
                                    nn.LayerNorm(20), nn.Linear(20, 2)), rng.standard_normal((3, 1, 5, 5))
    yield "gap", nn.Sequential(nn.Conv2d(2, 4, 3), nn.GlobalAvgPool2d(), nn.BatchNorm(4), nn.Linear(4, 2)), \
        rng.standard_normal((3, 2, 6, 6))
    yield "tokens", nn.Sequential(nn.Embedding(30, 16), nn.TransformerEncoderLayer(16, 4, 32), nn.LayerNorm(16),
                                  nn.Linear(16, 3)), rng.integers(0, 30, (2, 7))
    yield "pre_ln", nn.Sequential(nn.TransformerEncoderLayer(16, 2, 32, activation="relu", norm_first=True),
                                  nn.Linear(16, 2)), rng.standard_normal((2, 5, 16))
    yield "one_layer", nn.Linear(6, 2), rng.standard_normal((4, 6))


@pytest.mark.parametrize("rank", [False, True])
def test_lowered_graph_computes_the_model(rng, rank):
    for name, m, x in zoo(rng):
        x = x.astype(np.float32) if x.dtype.kind == "f" else x
        g = from_module(m, input_rank=x.ndim if rank else None)
        np.testing.assert_allclose(g(x), m(x), rtol=1e-5, atol=1e-5, err_msg=name)
        # nodes carry the layers' dotted names; parameters are named like named_tensors()
        owners = {n.name.split("/")[0] for n in g.nodes}
        paths = {p for p, _ in m.named_modules()}
        assert owners <= paths, (name, owners - paths)
        assert {k for k in g.params if not k.endswith("shape") and not k.endswith(".scale")} <= \
            {k for k, _ in m.named_tensors()}, name


def test_linear_becomes_gemm_only_on_a_known_2d_input(rng):
    nn.seed(0)
    m = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2, bias=False))
    assert from_module(m).op_counts() == {"MatMul": 2, "Add": 1, "Relu": 1}
    g = from_module(m, input_rank=2)
    assert g.op_counts() == {"Gemm": 2, "Relu": 1}
    assert [n.name for n in g.nodes] == ["0", "1", "2"]
    assert g.inputs[0]["shape"] == [None, None]
    x = rng.standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_array_equal(g(x), m(x))


def test_chain_graph_back_to_the_same_tree(rng, tmp_path):
    for name, m, x in zoo(rng):
        if name in ("tokens", "pre_ln"):
            continue      # attention is not a chain: to_module(like=) writes those back
        x = x.astype(np.float32)
        g = from_module(m, input_rank=x.ndim)
        edgepack.save(g, tmp_path / "g.edgepack")           # the container record is plain JSON
        back = to_module(edgepack.load(tmp_path / "g.edgepack"))
        np.testing.assert_allclose(back(x), m(x), rtol=1e-5, atol=1e-5, err_msg=name)
        want = [type(mm).__name__ for _, mm in m.named_modules()]
        got = [type(mm).__name__ for _, mm in back.named_modules()]
        # inference identities come back as Identity; Flatten(2) as the Reshape it lowers to
        want = ["Identity" if w == "Dropout" else "Reshape" if (name, w) == ("flatten2", "Flatten") else w
                for w in want]
        assert got == want, name


def test_imported_chain_without_a_module_record(rng):
    nn.seed(0)
    m = nn.Sequential(nn.Linear(4, 8), nn.SiLU(), nn.Linear(8, 2))
    g = from_module(m)
    g = g.copy()
    g.metadata = {}               # as if it came from ONNX: one layer per node or per known pair
    back = to_module(g)
    assert [type(layer) for layer in back.layers] == [nn.Linear, nn.SiLU, nn.Linear]
    x = rng.standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_allclose(back(x), m(x), rtol=1e-6)


def test_quantized_graph_back_to_a_sequential_of_int8_layers(rng):
    nn.seed(3)
    m = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Sequential(nn.Linear(32, 32), nn.GELU()), nn.Linear(32, 4))
    x = rng.standard_normal((64, 16)).astype(np.float32)
    qg = edgepack.quantize(from_module(m, input_rank=2), x, activations="static", min_macs=0)
    assert qg.op_counts() == {"edgepack.Layer": 3}
    back = to_module(qg)
    assert [type(mm).__name__ for _, mm in back.named_modules()] == \
        ["Sequential", "QLinear", "Identity", "Sequential", "QLinear", "Identity", "QLinear"]
    assert back.layers[0].activation == "relu" and back.layers[2].layers[0].activation == "gelu"
    # the module front end runs the same passes: the same layers, scales and outputs
    q = edgepack.quantize(m, x, activations="static")
    np.testing.assert_array_equal(back(x), q(x))
    assert [r.name for r in q.report.layers] == [r.name for r in qg.report.layers] == ["0", "2.0", "3"]
    assert q.layers[2].layers[0].x_scale == back.layers[2].layers[0].x_scale


def test_write_back_keeps_containers_and_unchanged_layers(rng):
    nn.seed(2)
    m = nn.Sequential(nn.TransformerEncoderLayer(16, 4, 32), nn.Linear(16, 3))
    g = from_module(m)
    same = to_module(g, like=m)
    assert same is not m and same.layers[0].norm1 is not m.layers[0].norm1
    assert [type(a) for _, a in same.named_modules()] == [type(b) for _, b in m.named_modules()]
    q = edgepack.quantize(m)
    # every projection is int8; the feed-forward activation went into linear1's epilogue
    assert isinstance(q.layers[0].self_attn.v_proj, QLinear) and isinstance(q.layers[0].linear2, QLinear)
    assert q.layers[0].linear1.activation == "gelu" and type(q.layers[0].act) is nn.Identity
    assert type(q.layers[0].norm2) is nn.LayerNorm and type(q.layers[0].dropout) is nn.Dropout
    x = rng.standard_normal((2, 5, 16)).astype(np.float32)
    assert sqnr_db(m(x), q(x)) > 30
    with pytest.raises(ValueError, match="do not come from a layer of `like`"):
        to_module(from_module(nn.Sequential(nn.Linear(16, 3), nn.ReLU(), nn.Linear(3, 3))), like=m)


def test_batchnorm_folds_into_the_int8_conv(rng):
    nn.seed(4)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), _bn(8, rng), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 2))
    x = rng.standard_normal((8, 3, 6, 6)).astype(np.float32)
    q = edgepack.quantize(m, x, activations="static")
    assert [type(layer) for layer in q.layers] == [QConv2d, nn.Identity, nn.Identity, nn.Flatten, QLinear]
    assert q.layers[0].activation == "relu"
    assert sqnr_db(m(x), q(x)) > 30
    # kept float, the conv still carries the folded BatchNorm (one layer instead of two)
    f = edgepack.quantize(m, x, skip=["0"])
    assert [type(layer) for layer in f.layers[:3]] == [nn.Conv2d, nn.Identity, nn.ReLU]
    np.testing.assert_allclose(f.layers[0](x), m.layers[1](m.layers[0](x)), rtol=1e-4, atol=1e-5)


def test_gelu_fuses_in_graphs_too(rng):
    nn.seed(5)
    g = from_module(nn.Sequential(nn.Linear(8, 8), nn.GELU("tanh"), nn.Linear(8, 2)))
    q = edgepack.quantize(g)
    assert "Gelu" not in q.op_counts() and q.op_counts()["edgepack.Layer"] == 2
    assert "+gelu_tanh" in q.report["0"].kernel


def test_iterator_calibration_reports_on_its_first_batch(rng):
    nn.seed(6)
    g = from_module(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)))
    batches = [rng.standard_normal((5, 8)).astype(np.float32) for _ in range(3)]
    q = edgepack.quantize(g, iter(batches), activations="static")
    assert q.report.batch_rows == 5 and q.report.output_sqnr_db > 25


def test_pruned_layers_in_a_graph_get_int8_values(rng):
    nn.seed(7)
    m = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 4))
    p = edgepack.prune(m, 0.8, scope="layer", sparse_kernels="always")
    g = from_module(p)
    assert g.op_counts() == {"edgepack.Layer": 2}
    x = rng.standard_normal((16, 32)).astype(np.float32)
    q = edgepack.quantize(g, x)
    assert [r.status for r in q.report.layers] == ["int8 sparse", "int8 sparse"]
    layers = [layer_from_nodes([n], q.params) for n in q.nodes]
    assert all(type(layer).__name__ == "SparseLinear" and layer.dtype == "int8" for layer in layers)
    assert sqnr_db(p(x), q(x)) > 30


def test_accuracy_mode_on_a_module_scores_modules(rng):
    nn.seed(3)
    m = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    x = rng.standard_normal((100, 16)).astype(np.float32)
    y = m(x).argmax(1)
    seen = set()

    def score(model):
        seen.add(type(model))
        return float((model(x).argmax(1) == y).mean())

    q = edgepack.quantize(m, x, accuracy=score, max_drop=0.5)
    assert seen == {nn.Sequential}
    assert q.report.settings["accuracy"]["float_score"] == 1.0 and q.report.settings["max_drop"] == 0.5


def test_quantize_leaves_the_init_stream_alone(rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    nn.seed(8)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 2))
    nn.seed(9)
    want = nn.Linear(5, 5).weight
    nn.seed(9)
    edgepack.quantize(m, x)
    np.testing.assert_array_equal(nn.Linear(5, 5).weight, want)


class _Doubler(nn.Module):          # not registered: no file could name it
    def forward(self, x, **kw):
        return x * 2


class _Block(nn.Module):            # a container with its own forward
    def __init__(self):
        self.fc = nn.Linear(4, 4)

    def forward(self, x, **kw):
        return self.fc(x) * 2


@pytest.mark.parametrize("model, match", [
    (lambda: nn.Sequential(nn.Linear(4, 4), _Block()), r"layer '1' \(_Block\) is a container"),
    (lambda: nn.Sequential(_Doubler()), r"layer '0' \(_Doubler\) has no ONNX equivalent and is not a registered"),
    (lambda: nn.Sequential(nn.Linear(4, 4), nn.Flatten(-1)), r"layer '1' Flatten\(start_dim=-1\) needs the input's"),
])
def test_lowering_errors_name_the_layer(model, match):
    with pytest.raises(ValueError, match=match):
        from_module(model())
    with pytest.raises(ValueError, match=match):
        edgepack.quantize(model())


def test_errors(rng):
    with pytest.raises(TypeError, match="model must be an edgepack.nn module tree"):
        from_module(from_module(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="input_rank"):
        from_module(nn.Linear(2, 2), input_rank=0)
    nn.seed(0)
    res = from_module(nn.Residual(nn.Linear(4, 4)))
    res.metadata = {}
    with pytest.raises(ValueError, match=r"Add.*do not map to an edgepack layer|not a chain"):
        to_module(res)
    with pytest.raises(TypeError, match="calibration must be a floating-point array"):
        edgepack.quantize(nn.Sequential(nn.Linear(3, 2)), np.ones((4, 3), np.int64))
