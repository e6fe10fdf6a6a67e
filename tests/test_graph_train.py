"""The graph autograd, and training / distillation of graphs.

Every backward rule is checked against central finite differences in float64 on a one-node
graph (the forward is the inference operator itself, so the tape's outputs must equal
``graph.run``); then whole graphs: a residual/SE/depthwise CNN, BatchNorm with batch statistics,
training to a task, distillation (KD, hidden states with a learned projection, a callable
teacher giving probabilities), CTC, masks, gradual channel pruning and Taylor importance.
"""

import itertools

import numpy as np
import pytest

import edgepack
from edgepack import nn
from edgepack.graph.autograd import RULES, GraphTape, gradients
from edgepack.graph.ir import Node
from edgepack.train.losses import ctc_loss, log_softmax

R = np.random.default_rng(7)


def _a(*shape, lo=None):
    a = R.standard_normal(shape)
    return np.abs(a) + 0.5 if lo == "pos" else a


def _graph(nodes, params, feeds, out, opset):
    ins = [{"name": k, "dtype": "float64" if v.dtype.kind == "f" else v.dtype.name, "shape": list(v.shape)}
           for k, v in feeds.items()]
    return nn.Graph(nodes, ins, [out], params, opset)


def _fd_check(nodes, params, feeds, wrt, opset=17, out="y", eps=1e-6, samples=10, training=False):
    """Largest relative error between the rule's gradients and central differences of
    sum(R * y) over a few entries of each tensor in ``wrt`` (inputs or parameters)."""
    g = _graph(nodes, params, feeds, out, opset)
    tape = GraphTape(g, trainable=[w for w in wrt if w in params], requires=[w for w in wrt if w not in params],
                     dtype=np.float64)
    vals, back = tape.forward(feeds, [out], training=training)
    y = vals[out]
    if not training:
        np.testing.assert_allclose(y, g.run(feeds)[out], rtol=1e-12, atol=1e-14)   # the inference op
    w = R.standard_normal(y.shape)
    grads = back({out: w})

    def f(name, arr):
        if name in params:
            t2 = GraphTape(g.copy(params=dict(g.params, **{name: arr})), trainable=[], dtype=np.float64)
            return float((t2.forward(feeds, [out], training=training)[0][out] * w).sum())
        t2 = GraphTape(g, trainable=[], dtype=np.float64)
        return float((t2.forward(dict(feeds, **{name: arr}), [out], training=training)[0][out] * w).sum())

    worst = 0.0
    for name in wrt:
        base = params[name] if name in params else feeds[name]
        an = grads.get(name)
        assert an is not None, f"no gradient for {name}"
        assert an.shape == base.shape, (name, an.shape, base.shape)
        for k in R.choice(base.size, min(samples, base.size), replace=False):
            p, m = base.copy(), base.copy()
            p.reshape(-1)[k] += eps
            m.reshape(-1)[k] -= eps
            num = (f(name, p) - f(name, m)) / (2 * eps)
            a = float(an.reshape(-1)[k])
            worst = max(worst, abs(num - a) / max(1e-7, abs(num), abs(a)))
    return worst


x4 = _a(2, 4, 7, 6)
x3 = _a(2, 5, 9)
x2 = _a(3, 5)

CASES = {
    # convolutions
    "conv_pads_strides_dilations": ([Node("Conv", ["x", "w", "b"], ["y"], {"pads": [1, 0, 2, 1], "strides": [2, 1],
                                                                          "dilations": [1, 2]})],
                                    {"w": _a(6, 4, 3, 2), "b": _a(6)}, {"x": x4}, ["x", "w", "b"], 17),
    "conv_same_upper": ([Node("Conv", ["x", "w"], ["y"], {"auto_pad": "SAME_UPPER", "strides": [2, 2]})],
                        {"w": _a(3, 4, 3, 3)}, {"x": x4}, ["x", "w"], 17),
    "conv_depthwise": ([Node("Conv", ["x", "w", "b"], ["y"], {"pads": [1, 1, 1, 1], "strides": [2, 1], "group": 4})],
                       {"w": _a(4, 1, 3, 3), "b": _a(4)}, {"x": x4}, ["x", "w", "b"], 17),
    "conv_depth_multiplier": ([Node("Conv", ["x", "w"], ["y"], {"pads": [2, 2, 2, 2], "group": 4})],
                              {"w": _a(8, 1, 5, 5)}, {"x": x4}, ["x", "w"], 17),
    "conv_grouped": ([Node("Conv", ["x", "w"], ["y"], {"pads": [1, 1, 1, 1], "group": 2})],
                     {"w": _a(6, 2, 3, 3)}, {"x": x4}, ["x", "w"], 17),
    "conv_1x1_strided": ([Node("Conv", ["x", "w"], ["y"], {"strides": [2, 2]})], {"w": _a(5, 4, 1, 1)}, {"x": x4},
                         ["x", "w"], 17),
    "conv_1d": ([Node("Conv", ["x", "w", "b"], ["y"], {"pads": [1, 2], "strides": [2]})],
                {"w": _a(3, 5, 3), "b": _a(3)}, {"x": x3}, ["x", "w", "b"], 17),
    "conv_transpose": ([Node("ConvTranspose", ["x", "w", "b"], ["y"], {"strides": [2, 2], "pads": [1, 0, 0, 1],
                                                                      "output_padding": [1, 0]})],
                       {"w": _a(4, 3, 3, 3), "b": _a(3)}, {"x": x4}, ["x", "w", "b"], 17),
    "conv_transpose_1d_grouped": ([Node("ConvTranspose", ["x", "w"], ["y"], {"strides": [2], "group": 5})],
                                  {"w": _a(5, 2, 3)}, {"x": x3}, ["x", "w"], 17),
    # normalization
    "batchnorm_eval": ([Node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], {"epsilon": 1e-3})],
                       {"s": _a(4), "b": _a(4), "m": _a(4), "v": _a(4, lo="pos")}, {"x": x4}, ["x", "s", "b"], 15),
    "layernorm": ([Node("LayerNormalization", ["x", "s", "b"], ["y"], {"axis": -1})], {"s": _a(9), "b": _a(9)},
                  {"x": x3}, ["x", "s", "b"], 17),
    "layernorm_2axes": ([Node("LayerNormalization", ["x", "s"], ["y"], {"axis": 2})], {"s": _a(7, 6)},
                        {"x": x4}, ["x", "s"], 17),
    "instancenorm": ([Node("InstanceNormalization", ["x", "s", "b"], ["y"], {})], {"s": _a(4), "b": _a(4)},
                     {"x": x4}, ["x", "s", "b"], 17),
    # activations
    **{f"act_{op}": ([Node(op, ["x"], ["y"], attrs)], {}, {"x": x4}, ["x"], opset) for op, attrs, opset in [
        ("Relu", {}, 17), ("LeakyRelu", {"alpha": 0.1}, 17), ("Elu", {"alpha": 0.7}, 17), ("Selu", {}, 17),
        ("Celu", {"alpha": 1.3}, 17), ("Sigmoid", {}, 17), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, 17),
        ("HardSwish", {}, 17), ("Tanh", {}, 17), ("Softplus", {}, 17), ("Softsign", {}, 17),
        ("Gelu", {}, 20), ("Gelu", {"approximate": "tanh"}, 21), ("Mish", {}, 18), ("Exp", {}, 17),
        ("Neg", {}, 17), ("Abs", {}, 17), ("Erf", {}, 17), ("Identity", {}, 17), ("Dropout", {}, 17),
        ("ThresholdedRelu", {"alpha": 0.2}, 17)]},
    "act_Gelu_tanh": ([Node("Gelu", ["x"], ["y"], {"approximate": "tanh"})], {}, {"x": x4}, ["x"], 20),
    "log_sqrt_reciprocal": ([Node("Log", ["x"], ["a"], {}), Node("Sqrt", ["x"], ["b"], {}),
                             Node("Reciprocal", ["x"], ["c"], {}), Node("Sum", ["a", "b", "c"], ["y"], {})],
                            {}, {"x": _a(3, 4, lo="pos")}, ["x"], 17),
    "prelu": ([Node("PRelu", ["x", "s"], ["y"], {})], {"s": _a(4, 1, 1)}, {"x": x4}, ["x", "s"], 17),
    "clip_inputs": ([Node("Clip", ["x", "lo", "hi"], ["y"], {})], {"lo": np.array(-0.5), "hi": np.array(0.8)},
                    {"x": x4}, ["x"], 13),
    "clip_attrs": ([Node("Clip", ["x"], ["y"], {"min": -0.3, "max": 0.6})], {}, {"x": x4}, ["x"], 9),
    "softmax_axis1": ([Node("Softmax", ["x"], ["y"], {"axis": 1})], {}, {"x": x4}, ["x"], 13),
    "softmax_coerced_opset11": ([Node("Softmax", ["x"], ["y"], {"axis": 1})], {}, {"x": x4}, ["x"], 11),
    "logsoftmax": ([Node("LogSoftmax", ["x"], ["y"], {"axis": -1})], {}, {"x": x3}, ["x"], 13),
    # pooling
    "maxpool_ceil_pads": ([Node("MaxPool", ["x"], ["y"], {"kernel_shape": [3, 2], "strides": [2, 2],
                                                          "pads": [1, 0, 1, 1], "ceil_mode": 1})], {}, {"x": x4},
                          ["x"], 17),
    "avgpool_exclude_pad": ([Node("AveragePool", ["x"], ["y"], {"kernel_shape": [3, 3], "strides": [2, 2],
                                                                "pads": [1, 1, 1, 1], "ceil_mode": 1})], {},
                            {"x": x4}, ["x"], 17),
    "avgpool_include_pad": ([Node("AveragePool", ["x"], ["y"], {"kernel_shape": [2, 3], "strides": [1, 2],
                                                                "pads": [1, 1, 0, 1], "count_include_pad": 1})], {},
                            {"x": x4}, ["x"], 17),
    "global_pools": ([Node("GlobalAveragePool", ["x"], ["a"], {}), Node("GlobalMaxPool", ["x"], ["b"], {}),
                      Node("Add", ["a", "b"], ["y"], {})], {}, {"x": x4}, ["x"], 17),
    # elementwise with broadcasting
    "add_sub_mul_div_broadcast": ([Node("Add", ["x", "c"], ["a"], {}), Node("Mul", ["a", "x"], ["b"], {}),
                                   Node("Sub", ["b", "c"], ["d"], {}), Node("Div", ["d", "e"], ["y"], {})],
                                  {"c": _a(4, 1, 1), "e": _a(6, lo="pos")}, {"x": x4}, ["x", "c", "e"], 17),
    "pow": ([Node("Pow", ["x", "p"], ["y"], {})], {"p": _a(4, 1, 1) + 2}, {"x": _a(2, 4, 3, 3, lo="pos")},
            ["x", "p"], 17),
    "pow_square": ([Node("Pow", ["x", "p"], ["y"], {})], {"p": np.array([2.0])}, {"x": x4}, ["x"], 17),
    "max_min_mean_sum": ([Node("Max", ["x", "c"], ["a"], {}), Node("Min", ["x", "a", "c"], ["b"], {}),
                          Node("Mean", ["a", "b"], ["d"], {}), Node("Sum", ["d", "x"], ["y"], {})],
                         {"c": _a(7, 6)}, {"x": x4}, ["x", "c"], 17),
    "where": ([Node("Greater", ["x", "c"], ["m"], {}), Node("Where", ["m", "x", "c"], ["y"], {})],
              {"c": _a(6)}, {"x": x4}, ["x", "c"], 17),
    # shapes and data movement
    "concat_split": ([Node("Concat", ["x", "c"], ["a"], {"axis": 1}),
                      Node("Split", ["a", "sp"], ["s1", "s2"], {"axis": 1}), Node("Mul", ["s1", "s2"], ["y"], {})],
                     {"c": _a(2, 2, 7, 6), "sp": np.array([3, 3], np.int64)}, {"x": x4}, ["x", "c"], 13),
    "slice_steps": ([Node("Slice", ["x", "st", "en", "ax", "sp"], ["y"], {})],
                    {"st": np.array([1, -1], np.int64), "en": np.array([7, 0], np.int64),
                     "ax": np.array([2, 3], np.int64), "sp": np.array([2, -2], np.int64)}, {"x": x4}, ["x"], 13),
    "reshape_transpose_flatten": ([Node("Reshape", ["x", "s"], ["a"], {}),
                                   Node("Transpose", ["a"], ["b"], {"perm": [2, 0, 1]}),
                                   Node("Flatten", ["b"], ["y"], {"axis": 2})],
                                  {"s": np.array([2, -1, 6], np.int64)}, {"x": x4}, ["x"], 17),
    "squeeze_unsqueeze": ([Node("Unsqueeze", ["x", "ax"], ["a"], {}), Node("Squeeze", ["a", "ax"], ["y"], {})],
                          {"ax": np.array([0, 3], np.int64)}, {"x": x3}, ["x"], 13),
    "expand_tile": ([Node("Expand", ["x", "s"], ["a"], {}), Node("Tile", ["a", "r"], ["y"], {})],
                    {"s": np.array([3, 2, 5], np.int64), "r": np.array([1, 2, 1], np.int64)},
                    {"x": _a(2, 1)}, ["x"], 17),
    "gather": ([Node("Gather", ["x", "i"], ["y"], {"axis": 1})], {"i": np.array([[0, 2], [2, 4]], np.int64)},
               {"x": x3}, ["x"], 17),
    **{f"pad_{mode}": ([Node("Pad", ["x", "p"], ["y"], {"mode": mode})],
                       {"p": np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64)}, {"x": x4}, ["x"], 13)
       for mode in ("constant", "reflect", "edge")},
    # linear algebra
    "gemm_trans_alpha_beta": ([Node("Gemm", ["x", "w", "c"], ["y"], {"transA": 1, "transB": 1, "alpha": 0.7,
                                                                     "beta": 1.3})],
                              {"w": _a(4, 3), "c": _a(4)}, {"x": _a(3, 5)}, ["x", "w", "c"], 17),
    "gemm_plain": ([Node("Gemm", ["x", "w", "c"], ["y"], {})], {"w": _a(5, 4), "c": _a(3, 1)}, {"x": x2},
                   ["x", "w", "c"], 17),
    "matmul_batched_broadcast": ([Node("MatMul", ["x", "w"], ["y"], {})], {"w": _a(9, 4)}, {"x": x3}, ["x", "w"], 17),
    "matmul_two_activations": ([Node("Transpose", ["x"], ["t"], {"perm": [0, 2, 1]}),
                                Node("MatMul", ["x", "t"], ["y"], {})], {}, {"x": x3}, ["x"], 17),
    "matmul_1d": ([Node("MatMul", ["v", "x"], ["y"], {})], {"v": _a(3)}, {"x": x2}, ["x", "v"], 17),
    # resize and reductions
    "resize_linear": ([Node("Resize", ["x", "", "sc"], ["y"], {"mode": "linear"})],
                      {"sc": np.array([1, 1, 2, 1.5], np.float32)}, {"x": x4}, ["x"], 13),
    "resize_nearest_sizes": ([Node("Resize", ["x", "", "", "sz"], ["y"], {"mode": "nearest"})],
                             {"sz": np.array([2, 4, 14, 9], np.int64)}, {"x": x4}, ["x"], 13),
    "reduce_mean_sum_attr": ([Node("ReduceMean", ["x"], ["a"], {"axes": [1, 3], "keepdims": 0}),
                              Node("ReduceSum", ["x", "ax"], ["b"], {"keepdims": 1}),
                              Node("ReduceMax", ["x"], ["c"], {"axes": [2], "keepdims": 1}),
                              Node("Mul", ["b", "c"], ["d"], {}), Node("ReduceSumSquare", ["d"], ["e"], {}),
                              Node("Unsqueeze", ["a", "ax"], ["a2"], {}), Node("Add", ["a2", "e"], ["y"], {})],
                             {"ax": np.array([1, 3], np.int64)}, {"x": x4}, ["x"], 13),
    "reduce_mean_axes_input": ([Node("ReduceMean", ["x", "ax"], ["y"], {"keepdims": 1}),
                                ], {"ax": np.array([-1], np.int64)}, {"x": x3}, ["x"], 18),
    "reduce_l2": ([Node("ReduceL2", ["x"], ["y"], {"axes": [2]})], {}, {"x": x4}, ["x"], 13),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rule_matches_finite_differences(case):
    nodes, params, feeds, wrt, opset = CASES[case]
    params = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in params.items()}
    assert _fd_check(nodes, params, feeds, wrt, opset) < 1e-5


def test_issue_ops_all_have_rules():
    need = {"Conv", "ConvTranspose", "BatchNormalization", "Relu", "LeakyRelu", "PRelu", "Elu", "Clip", "Sigmoid",
            "HardSigmoid", "HardSwish", "Tanh", "Softplus", "Gelu", "Softmax", "MaxPool", "AveragePool",
            "GlobalAveragePool", "Add", "Mul", "Div", "Sub", "Concat", "Split", "Slice", "Reshape", "Transpose",
            "Flatten", "Squeeze", "Unsqueeze", "Gemm", "MatMul", "LayerNormalization", "Resize", "ReduceMean"}
    assert need <= set(RULES)


def test_batchnorm_training_mode():
    x = _a(6, 3, 4, 5)
    s, b, m, v = _a(3), _a(3), _a(3), _a(3, lo="pos")
    nodes = [Node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], {"epsilon": 1e-3, "momentum": 0.8})]
    params = {"s": s, "b": b, "m": m, "v": v}
    assert _fd_check(nodes, params, {"x": x}, ["x", "s", "b"], 15, training=True) < 1e-5
    g = _graph(nodes, params, {"x": x}, "y", 15)
    tape = GraphTape(g, trainable=["s", "b"], dtype=np.float64)
    y = tape.forward({"x": x}, ["y"], training=True)[0]["y"]
    mu = x.mean(axis=(0, 2, 3), keepdims=True)
    var = x.var(axis=(0, 2, 3), keepdims=True)
    np.testing.assert_allclose(y, (x - mu) / np.sqrt(var + 1e-3) * s.reshape(1, 3, 1, 1) + b.reshape(1, 3, 1, 1),
                               rtol=1e-10)
    tape.sync()     # running statistics move towards the batch ones
    n = x.size // 3
    np.testing.assert_allclose(g.params["m"], 0.8 * m + 0.2 * mu.reshape(-1))
    np.testing.assert_allclose(g.params["v"], 0.8 * v + 0.2 * var.reshape(-1) * n / (n - 1))


@pytest.fixture
def rescnn(rng):
    pytest.importorskip("onnx")
    from test_graph import residual_cnn

    return edgepack.from_onnx(residual_cnn(rng))


def test_whole_residual_se_graph_gradients(rescnn, rng):
    g = rescnn.copy(params={k: v.astype(np.float64) for k, v in rescnn.params.items()})
    g = nn.Graph(g.nodes, [{"name": "x", "dtype": "float64", "shape": ["N", 3, 16, 16]}], g.outputs, g.params,
                 g.opset)
    x = rng.standard_normal((2, 3, 16, 16))
    wrt = sorted(edgepack.graph.autograd.default_trainable(g)) + ["x"]
    assert _fd_check(g.nodes, g.params, {"x": x}, wrt, g.opset, out=g.outputs[0], samples=4) < 1e-5


def test_not_differentiable_names_the_node(rescnn, rng):
    q = edgepack.quantize(rescnn)
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    with pytest.raises(ValueError, match="no trainable float parameters"):
        edgepack.train(q, x, np.array([0, 1]), epochs=1, progress=False)
    # a float layer before an int8 one: the gradient would have to cross the Layer node
    part = edgepack.quantize(rescnn, skip=("Conv_0",))
    with pytest.raises(TypeError, match="cannot differentiate Layer"):
        edgepack.train(part, x, np.array([0, 1]), epochs=1, progress=False, trainable=["Conv_0.bn_weight"])


# -- training and distillation -----------------------------------------------------------------------

def _task(rng, n=384):
    x = rng.standard_normal((n, 3, 16, 16)).astype(np.float32)
    x[:, 0, :8] += 0.5 * np.sign(rng.standard_normal((n, 1, 1)))
    y = (x[:, 0, :8].mean((1, 2)) > 0).astype(np.int64) + 2 * (x[:, 1, 8:].mean((1, 2)) > 0)
    return x, y


def test_train_graph_learns_and_keeps_masked_weights_zero(rescnn, rng):
    x, y = _task(rng)
    h = edgepack.train(rescnn, x[:320], y[:320], epochs=25, lr=3e-3, batch_size=32, seed=0, progress=False,
                       validation=(x[320:], y[320:]))
    assert h["loss"][-1] < 0.6 * h["loss"][0]
    assert h["val_accuracy"][-1] > 0.6
    np.testing.assert_allclose((rescnn(x[320:]).argmax(-1) == y[320:]).mean(), h["val_accuracy"][-1])
    w = rescnn.params["w1"]
    mask = (np.abs(w) > np.median(np.abs(w))).astype(np.float32)
    edgepack.train(rescnn, x, y, epochs=1, seed=0, progress=False, masks={"w1": mask})
    assert np.all(rescnn.params["w1"][mask == 0] == 0)
    with pytest.raises(ValueError, match="class labels outside"):
        edgepack.train(rescnn, x, y + 10, epochs=1, progress=False)
    with pytest.raises(TypeError, match="apply to graphs"):
        edgepack.train(nn.Sequential(nn.Linear(4, 2)), np.zeros((2, 4)), np.zeros(2, np.int64), output="y")


def test_distill_pruned_graph_recovers_agreement(rescnn, rng):
    x, y = _task(rng)
    edgepack.train(rescnn, x, y, epochs=12, lr=3e-3, batch_size=32, seed=0, progress=False)
    ref = rescnn(x).argmax(-1)
    p = edgepack.prune(rescnn, 0.4)
    before = (p(x).argmax(-1) == ref).mean()
    h = edgepack.distill(rescnn, p, x, epochs=8, lr=1e-2, seed=0, progress=False)
    after = (p(x).argmax(-1) == ref).mean()
    assert after > before + 0.1 and after > 0.7
    assert h["loss"][-1] < h["loss"][0]


def test_distill_hidden_projection_and_callable_teacher(rescnn, rng):
    x, _ = _task(rng, 128)
    p = edgepack.prune(rescnn, 0.5, scope="layer")
    hid = "a2"          # the residual Add: 8 channels in the teacher, 4 in the student
    assert p.run({"x": x[:1]}, outputs=[hid])[hid].shape[1] == 4
    h = edgepack.distill(rescnn, p, x, epochs=3, seed=0, progress=False, hidden={hid: hid}, hidden_weight=1.0)
    assert np.isfinite(h["loss"]).all()

    def probs(xb):          # e.g. onnxruntime returning softmax probabilities
        z = rescnn(xb)
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)
    p2 = edgepack.prune(rescnn, 0.5)
    h2 = edgepack.distill(probs, p2, x, epochs=3, seed=0, progress=False, lr=1e-2)
    assert h2["loss"][-1] < h2["loss"][0]
    with pytest.raises(TypeError, match="teacher to be a Graph"):
        edgepack.distill(probs, p2, x, epochs=1, progress=False, hidden={hid: hid})


def test_ctc_loss_matches_enumeration_and_trains_a_sequence_graph(rng):
    z = rng.standard_normal((2, 5, 3))
    targets = [[1, 2], [1, 1]]
    loss, grad = ctc_loss(z, targets)
    p = np.exp(log_softmax(z))
    ref = 0.0
    for i, t in enumerate(targets):
        tot = 0.0
        for path in itertools.product(range(3), repeat=5):
            col = [c for k, c in enumerate(path) if c != 0 and (k == 0 or c != path[k - 1])]
            if col == t:
                tot += np.prod([p[i, k, c] for k, c in enumerate(path)])
        ref -= np.log(tot)
    assert abs(loss - ref / 2) < 1e-10
    for idx in [(0, 1, 2), (1, 4, 0), (0, 0, 1)]:
        zp, zm = z.copy(), z.copy()
        zp[idx] += 1e-6
        zm[idx] -= 1e-6
        assert abs((ctc_loss(zp, targets)[0] - ctc_loss(zm, targets)[0]) / 2e-6 - grad[idx]) < 1e-6
    # a tiny recognizer: (N, 4, 12) features -> MatMul -> (N, 12, 5) logits -> Softmax
    params = {"w": (rng.standard_normal((4, 5)) * 0.1).astype(np.float32), "b": np.zeros(5, np.float32)}
    nodes = [Node("Transpose", ["x"], ["t"], {"perm": [0, 2, 1]}), Node("MatMul", ["t", "w"], ["m"], {}),
             Node("Add", ["m", "b"], ["z"], {}), Node("Softmax", ["z"], ["y"], {"axis": 2})]
    g = nn.Graph(nodes, [{"name": "x", "dtype": "float32", "shape": ["N", 4, 12]}], ["y"], params, 13)
    seqs = [list(rng.integers(1, 5, rng.integers(1, 4))) for _ in range(64)]
    x = np.zeros((64, 4, 12), np.float32)
    for i, s in enumerate(seqs):       # channel c lights up while label c is "spoken"
        for k, c in enumerate(s):
            x[i, c - 1, 3 * k: 3 * k + 2] = 3.0
    h = edgepack.train(g, x, seqs, loss="ctc", epochs=30, lr=0.05, seed=0, progress=False, batch_size=16)
    assert h["loss"][-1] < 0.3 * h["loss"][0]


def test_gradual_channel_pruning_with_distillation(rescnn, rng):
    x, y = _task(rng, 128)
    one = edgepack.prune(rescnn, 0.5)
    grad = edgepack.prune(rescnn, 0.5, schedule="gradual", steps=3, fine_tune=x, epochs=1, seed=0)
    assert grad.report.settings["schedule"] == "gradual"
    kept = lambda p: sum(r["after"] for r in p.report.groups if "whole" not in r["status"])  # noqa: E731
    assert abs(kept(grad) - kept(one)) <= 1          # the schedule ends at the same channel count
    assert grad.report.params[0] == rescnn.num_parameters()
    assert grad(x).shape == (128, 10)
    with pytest.raises(ValueError, match="needs fine_tune"):
        edgepack.prune(rescnn, 0.5, schedule="gradual")


def test_taylor_importance_drops_channels_that_do_not_matter(rng):
    # conv (6 channels) -> Relu -> 1x1 conv whose weights for channels 0, 2, 4 are zero: those
    # channels cannot change the loss, so their Taylor score is zero and they go first
    w2 = rng.standard_normal((3, 6, 1, 1)).astype(np.float32)
    w2[:, [0, 2, 4]] = 0
    params = {"w1": rng.standard_normal((6, 3, 3, 3)).astype(np.float32), "w2": w2}
    nodes = [Node("Conv", ["x", "w1"], ["a"], {"pads": [1, 1, 1, 1]}, "c1"), Node("Relu", ["a"], ["r"], {}, "relu"),
             Node("Conv", ["r", "w2"], ["b"], {}, "c2"), Node("GlobalAveragePool", ["b"], ["p"], {}, "gap"),
             Node("Flatten", ["p"], ["y"], {}, "flat")]
    g = nn.Graph(nodes, [{"name": "x", "dtype": "float32", "shape": ["N", 3, 6, 6]}], ["y"], params, 17)
    x = rng.standard_normal((16, 3, 6, 6)).astype(np.float32)
    p = edgepack.prune(g, 0.5, importance="taylor", example=x)
    kept = [int(np.flatnonzero((g.params["w1"] == r).all(axis=(1, 2, 3)))[0]) for r in p.params["w1"]]
    assert kept == [1, 3, 5]
