"""Shape, tensor-manipulation and reduction operators (edgepack.graph.ops.shape / reduce):
hostile sizes end in a ValueError naming the node, edge cases agree with onnx's reference
evaluator, dtypes are preserved and inputs are never written to."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import edgepack  # noqa: E402

_NP2ONNX = {np.dtype(k): v for k, v in (
    (np.float32, TensorProto.FLOAT), (np.float64, TensorProto.DOUBLE), (np.float16, TensorProto.FLOAT16),
    (np.int64, TensorProto.INT64), (np.int32, TensorProto.INT32), (np.int8, TensorProto.INT8),
    (np.uint8, TensorProto.UINT8), (np.bool_, TensorProto.BOOL))}


def _model(nodes, inputs, outputs, inits=(), opset=18):
    """inputs: [(name, array)] fed at run time (dimensions left free); inits: [(name, array)]
    stored as initializers; outputs: names (type left to inference)."""
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, _NP2ONNX[a.dtype], [None] * a.ndim) for n, a in inputs],
        [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in outputs],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _run(model, inputs):
    g = edgepack.from_onnx(model)
    return g.run({n: a for n, a in inputs})


# -- hostile sizes ----------------------------------------------------------------------------
def test_constant_of_shape_huge_constant_fails_at_import():
    m = _model([helper.make_node("ConstantOfShape", ["s"], ["y"], name="huge_cos")], [], ["y"],
               inits=[("s", np.array([10 ** 12], np.int64))])
    with pytest.raises(ValueError, match="huge_cos"):
        edgepack.from_onnx(m)


def test_constant_of_shape_huge_runtime_shape():
    m = _model([helper.make_node("ConstantOfShape", ["s"], ["y"], name="cos_rt")], [("s", np.zeros(2, np.int64))],
               ["y"])
    g = edgepack.from_onnx(m)
    assert g.run({"s": np.array([2, 3], np.int64)})["y"].shape == (2, 3)
    with pytest.raises(ValueError, match="cos_rt"):
        g.run({"s": np.array([10 ** 6, 10 ** 6], np.int64)})


def test_range_huge_fails():
    m = _model([helper.make_node("Range", ["a", "b", "c"], ["y"], name="huge_range")], [], ["y"],
               inits=[("a", np.array(0, np.int64)), ("b", np.array(10 ** 15, np.int64)), ("c", np.array(1, np.int64))])
    with pytest.raises(ValueError, match="huge_range"):
        edgepack.from_onnx(m)
    m = _model([helper.make_node("Range", ["a", "b", "c"], ["y"], name="range_rt")],
               [("a", np.array(0.0, np.float32)), ("b", np.array(1.0, np.float32)),
                ("c", np.array(1.0, np.float32))], ["y"])
    g = edgepack.from_onnx(m)
    with pytest.raises(ValueError, match="range_rt"):
        g.run({"a": np.array(0, np.float32), "b": np.array(1e15, np.float32), "c": np.array(1, np.float32)})


def test_tile_huge_repeats_fails():
    m = _model([helper.make_node("Tile", ["x", "r"], ["y"], name="huge_tile")], [("x", np.zeros((2, 2), np.float32))],
               ["y"], inits=[("r", np.array([10 ** 6, 10 ** 6], np.int64))])
    g = edgepack.from_onnx(m)
    with pytest.raises(ValueError, match="huge_tile"):
        g.run({"x": np.zeros((2, 2), np.float32)})


def test_expand_huge_shape_fails():
    m = _model([helper.make_node("Expand", ["x", "s"], ["y"], name="huge_expand")], [("x", np.zeros((1, 1), np.float32))],
               ["y"], inits=[("s", np.array([10 ** 6, 10 ** 6], np.int64))])
    g = edgepack.from_onnx(m)
    with pytest.raises(ValueError, match="huge_expand"):
        g.run({"x": np.zeros((1, 1), np.float32)})
    # all constant: folding at import hits the same guard
    m = _model([helper.make_node("Expand", ["x", "s"], ["y"], name="huge_expand_c")], [], ["y"],
               inits=[("x", np.zeros((1, 1), np.float32)), ("s", np.array([10 ** 6, 10 ** 6], np.int64))])
    with pytest.raises(ValueError, match="huge_expand_c"):
        edgepack.from_onnx(m)


def test_pad_and_one_hot_huge_fail():
    m = _model([helper.make_node("Pad", ["x", "p"], ["y"], name="huge_pad")], [("x", np.zeros((2, 2), np.float32))],
               ["y"], inits=[("p", np.array([10 ** 9, 0, 10 ** 9, 0], np.int64))])
    with pytest.raises(ValueError, match="huge_pad"):
        edgepack.from_onnx(m).run({"x": np.zeros((2, 2), np.float32)})
    m = _model([helper.make_node("OneHot", ["i", "d", "v"], ["y"], name="huge_onehot")],
               [("i", np.zeros(1000, np.int64))], ["y"],
               inits=[("d", np.array(10 ** 9, np.int64)), ("v", np.array([0, 1], np.float32))])
    with pytest.raises(ValueError, match="huge_onehot"):
        edgepack.from_onnx(m).run({"i": np.zeros(1000, np.int64)})


def test_gather_amplification_fails():
    m = _model([helper.make_node("Gather", ["t", "i"], ["y"], name="huge_gather")], [("i", np.zeros(8, np.int64))],
               ["y"], inits=[("t", np.zeros((2, 1000), np.float32))])
    g = edgepack.from_onnx(m)
    with pytest.raises(ValueError, match="huge_gather"):
        g.run({"i": np.zeros(3_000_000, np.int64)})


def test_bad_attribute_rejected_at_import():
    m = _model([helper.make_node("Pad", ["x", "p"], ["y"], name="pad_bad", mode="mirror")],
               [("x", np.zeros((2, 2), np.float32))], ["y"], inits=[("p", np.zeros(4, np.int64))])
    with pytest.raises(ValueError, match="pad_bad.*mirror"):
        edgepack.from_onnx(m)


# -- edge cases against the onnx reference -----------------------------------------------------
rng = np.random.default_rng(0)
X = rng.standard_normal((3, 4, 5)).astype(np.float32)
XI = rng.integers(-5, 5, (3, 4, 5)).astype(np.int32)
I64 = lambda *v: np.array(v, np.int64)  # noqa: E731

# (id, nodes, runtime inputs, initializers, opset)
CASES = [
    ("slice_neg_steps", [helper.make_node("Slice", ["x", "s", "e", "a", "t"], ["y"])], [("x", X)],
     [("s", I64(-1, 10)), ("e", I64(-2 ** 63, 0)), ("a", I64(-1, 1)), ("t", I64(-2, -1))], 13),
    ("slice_mixed_axes", [helper.make_node("Slice", ["x", "s", "e", "a"], ["y"])], [("x", X)],
     [("s", I64(1, 1)), ("e", I64(2 ** 62, -1)), ("a", I64(0, -1))], 13),
    ("slice_runtime", [helper.make_node("Slice", ["x", "s", "e", "a", "t"], ["y"])],
     [("x", X), ("s", I64(0, 4)), ("e", I64(3, -100)), ("a", I64(1, 2)), ("t", I64(2, -2))], [], 13),
    ("pad_reflect_axes", [helper.make_node("Pad", ["x", "p", "", "a"], ["y"], mode="reflect")], [("x", X)],
     [("p", I64(2, 1, 3, 0)), ("a", I64(-1, 1))], 18),
    ("pad_edge", [helper.make_node("Pad", ["x", "p"], ["y"], mode="edge")], [("x", XI)],
     [("p", I64(0, 2, 1, 1, 0, 2))], 13),
    ("pad_wrap", [helper.make_node("Pad", ["x", "p"], ["y"], mode="wrap")], [("x", X)],
     [("p", I64(0, 1, 2, 0, 3, 1))], 19),
    ("pad_v2", [helper.make_node("Pad", ["x"], ["y"], pads=[0, 1, 0, 0, 2, 1], value=-1.0)], [("x", XI)], [], 7),
    ("topk_ties_largest", [helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=1)],
     [("x", np.array([[1, 3, 3, 2, 3, 1]], np.int32))], [("k", I64(4))], 11),
    ("topk_ties_smallest", [helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=-1, largest=0)],
     [("x", np.array([[1, 3, 1, 2, 3, 1]], np.float32))], [("k", I64(6))], 11),
    ("topk_axis0", [helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=0)], [("x", X)], [("k", I64(2))], 11),
    ("gathernd_batch", [helper.make_node("GatherND", ["x", "i"], ["y"], batch_dims=1)],
     [("x", X), ("i", np.array([[[1, 0], [3, -1]], [[0, 4], [2, 2]], [[-1, 0], [1, 1]]], np.int64))], [], 13),
    ("gathernd_batch2", [helper.make_node("GatherND", ["x", "i"], ["y"], batch_dims=2)],
     [("x", X), ("i", rng.integers(0, 5, (3, 4, 2, 1)).astype(np.int64))], [], 13),
    ("scatternd_mul", [helper.make_node("ScatterND", ["x", "i", "u"], ["y"], reduction="mul")],
     [("x", X), ("i", np.array([[0, 1], [2, 3], [0, 1]], np.int64)), ("u", rng.standard_normal((3, 5)).astype(np.float32))],
     [], 16),
    ("scatternd_max", [helper.make_node("ScatterND", ["x", "i", "u"], ["y"], reduction="max")],
     [("x", X), ("i", np.array([[1], [1]], np.int64)), ("u", rng.standard_normal((2, 4, 5)).astype(np.float32))],
     [], 18),
    ("scatter_elements_add", [helper.make_node("ScatterElements", ["x", "i", "u"], ["y"], axis=-1, reduction="add")],
     [("x", X), ("i", rng.integers(-5, 5, (3, 4, 2)).astype(np.int64)), ("u", rng.standard_normal((3, 4, 2)).astype(np.float32))],
     [], 18),
    ("scatter_elements_min_int", [helper.make_node("ScatterElements", ["x", "i", "u"], ["y"], axis=0, reduction="min")],
     [("x", XI), ("i", rng.integers(0, 3, (2, 4, 5)).astype(np.int64)), ("u", rng.integers(-9, 9, (2, 4, 5)).astype(np.int32))],
     [], 18),
    ("reshape_zero_neg", [helper.make_node("Reshape", ["x", "s"], ["y"])], [("x", X)], [("s", I64(0, -1, 1))], 13),
    ("reshape_allowzero", [helper.make_node("Reshape", ["x", "s"], ["y"], allowzero=1)],
     [("x", np.zeros((0, 4), np.float32))], [("s", I64(2, 0, 2))], 14),
    ("unsqueeze_neg", [helper.make_node("Unsqueeze", ["x", "a"], ["y"])], [("x", X)], [("a", I64(-1, 0, -3))], 13),
    ("squeeze_all", [helper.make_node("Squeeze", ["x"], ["y"])], [("x", np.zeros((1, 3, 1, 2), np.int8))], [], 13),
    ("split_uneven", [helper.make_node("Split", ["x"], ["a", "b", "c"], axis=-1, num_outputs=3)], [("x", X)], [], 18),
    ("split_sizes", [helper.make_node("Split", ["x", "s"], ["a", "b"], axis=1)], [("x", X)], [("s", I64(1, 3))], 13),
    ("split_v2", [helper.make_node("Split", ["x"], ["a", "b"], axis=2, split=[4, 1])], [("x", X)], [], 7),
    ("concat_neg", [helper.make_node("Concat", ["x", "x2"], ["y"], axis=-2)],
     [("x", X), ("x2", X[:, :2].copy())], [], 13),
    ("transpose_default", [helper.make_node("Transpose", ["x"], ["y"])], [("x", X)], [], 13),
    ("flatten_neg", [helper.make_node("Flatten", ["x"], ["y"], axis=-1)], [("x", X)], [], 13),
    ("shape_slice", [helper.make_node("Shape", ["x"], ["y"], start=-2, end=10)], [("x", X)], [], 15),
    ("expand_keep", [helper.make_node("Expand", ["x", "s"], ["y"])],
     [("x", np.arange(4, dtype=np.int64).reshape(4, 1))], [("s", I64(2, 1, 3))], 13),
    ("tile", [helper.make_node("Tile", ["x", "r"], ["y"])], [("x", XI)], [("r", I64(2, 1, 3))], 13),
    ("range_float", [helper.make_node("Range", ["a", "b", "c"], ["y"])],
     [("a", np.array(1.0, np.float32)), ("b", np.array(-2.2, np.float32)), ("c", np.array(-0.3, np.float32))], [], 13),
    ("range_int", [helper.make_node("Range", ["a", "b", "c"], ["y"])],
     [("a", np.array(10, np.int32)), ("b", np.array(-3, np.int32)), ("c", np.array(-4, np.int32))], [], 13),
    ("onehot_neg", [helper.make_node("OneHot", ["i", "d", "v"], ["y"], axis=1)],
     [("i", np.array([[-1, 0, 7], [2, -4, 3]], np.int64))], [("d", np.array(4.0, np.float32)),
                                                           ("v", np.array([2, 5], np.int32))], 11),
    ("nonzero", [helper.make_node("NonZero", ["x"], ["y"])], [("x", XI)], [], 13),
    ("trilu_k", [helper.make_node("Trilu", ["x", "k"], ["y"], upper=0)], [("x", X)], [("k", I64(-1))], 14),
    ("trilu_big_k", [helper.make_node("Trilu", ["x", "k"], ["y"], upper=1)], [("x", XI)], [("k", I64(2 ** 62))], 14),
    ("cumsum_excl_rev", [helper.make_node("CumSum", ["x", "a"], ["y"], exclusive=1, reverse=1)], [("x", XI)],
     [("a", np.array(-1, np.int32))], 14),
    ("d2s_crd", [helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=2, mode="CRD")],
     [("x", rng.standard_normal((2, 8, 3, 2)).astype(np.float32))], [], 13),
    ("gather_neg", [helper.make_node("Gather", ["x", "i"], ["y"], axis=-2)],
     [("x", X), ("i", np.array([[-1, 0], [2, 3]], np.int32))], [], 13),
    ("gather_scalar", [helper.make_node("Gather", ["x", "i"], ["y"], axis=0)],
     [("x", np.arange(5, dtype=np.int64))], [("i", np.array(-2, np.int64))], 13),
    ("argmax_last", [helper.make_node("ArgMax", ["x"], ["y"], axis=1, keepdims=0, select_last_index=1)],
     [("x", np.array([[1, 3, 3], [2, 2, 1]], np.int32))], [], 13),
    ("argmin_keep", [helper.make_node("ArgMin", ["x"], ["y"], axis=-1)], [("x", X)], [], 13),
    ("reduce_sum_int32", [helper.make_node("ReduceSum", ["x", "a"], ["y"], keepdims=0)], [("x", XI)],
     [("a", I64(0, -1))], 13),
    ("reduce_sum_noop", [helper.make_node("ReduceSum", ["x", "a"], ["y"], noop_with_empty_axes=1)], [("x", X)],
     [("a", np.zeros(0, np.int64))], 13),
    ("reduce_sum_all", [helper.make_node("ReduceSum", ["x"], ["y"], keepdims=0)], [("x", X)], [], 13),
    ("reduce_prod_v13", [helper.make_node("ReduceProd", ["x"], ["y"], axes=[1])], [("x", X)], [], 13),
    ("reduce_l2", [helper.make_node("ReduceL2", ["x", "a"], ["y"])], [("x", X)], [("a", I64(2))], 18),
    ("reduce_max_empty", [helper.make_node("ReduceMax", ["x", "a"], ["y"])], [("x", np.zeros((2, 0, 3), np.float32))],
     [("a", I64(1))], 18),
    ("reduce_mean_int", [helper.make_node("ReduceMean", ["x"], ["y"], axes=[2], keepdims=0)], [("x", XI)], [], 13),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_against_reference(case):
    _, nodes, inputs, inits, opset = case
    outs = [o for n in nodes for o in n.output if o]
    m = _model(nodes, inputs, outs, inits, opset)
    before = [a.copy() for _, a in inputs]
    got = _run(m, inputs)
    for (_, a), b in zip(inputs, before):
        np.testing.assert_array_equal(a, b)   # inputs untouched
    ref = ReferenceEvaluator(m).run(None, {n: a for n, a in inputs})
    for o, want in zip(outs, ref):
        res = got[o]
        assert isinstance(res, np.ndarray)
        assert res.shape == want.shape, (o, res.shape, want.shape)
        assert res.dtype == want.dtype, (o, res.dtype, want.dtype)
        np.testing.assert_allclose(res, want, rtol=1e-5, atol=1e-6)


def test_float32_reductions_stay_float32():
    for op in ("ReduceMean", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
               "ReduceLogSumExp", "ReduceSumSquare", "ReduceMax", "ReduceMin"):
        x = np.abs(X) + 0.5
        m = _model([helper.make_node(op, ["x"], ["y"], keepdims=0)], [("x", x)], ["y"], opset=18)
        y = _run(m, [("x", x)])["y"]
        assert y.dtype == np.float32 and y.shape == (), op


def test_scatter_does_not_write_constant_data():
    data = np.zeros((4,), np.float32)
    m = _model([helper.make_node("ScatterElements", ["d", "i", "u"], ["y"])], [("i", np.array([1], np.int64))], ["y"],
               inits=[("d", data), ("u", np.ones(1, np.float32))])
    g = edgepack.from_onnx(m)
    for k in range(4):
        y = g.run({"i": np.array([k], np.int64)})["y"]
        assert y.sum() == 1 and y[k] == 1


def test_shape_chain_runs_once_per_shape():
    # Shape -> Gather -> Unsqueeze -> Concat -> Reshape: the shape subgraph is baked per input shape.
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "i0"], ["b"], axis=0),
             helper.make_node("Unsqueeze", ["b", "ax"], ["b1"]),
             helper.make_node("Concat", ["b1", "m1"], ["shp"], axis=0),
             helper.make_node("Reshape", ["x", "shp"], ["y"])]
    m = _model(nodes, [("x", X)], ["y"], inits=[("i0", np.array(0, np.int64)), ("ax", I64(0)), ("m1", I64(-1))], opset=13)
    g = edgepack.from_onnx(m)
    for shape in ((3, 4, 5), (2, 4, 5)):
        x = rng.standard_normal(shape).astype(np.float32)
        np.testing.assert_array_equal(g.run({"x": x})["y"], x.reshape(shape[0], -1))


# Cases onnx's reference evaluator gets wrong or cannot run (np.pad has no negative pads, its
# GatherElements needs full-size indices, its Unsqueeze-11 inserts axes one by one against the
# growing rank, its ReduceLogSumExp gives NaN for an all -inf row): expected values by hand.
GE_I = rng.integers(-4, 4, (2, 6, 3)).astype(np.int64)
LSE_X = np.array([[1.0, np.inf, 0], [-np.inf, -np.inf, -np.inf], [100.0, 101.0, 50.0]], np.float32)
MANUAL = [
    ("pad_neg", helper.make_node("Pad", ["x", "p", "c"], ["y"]), X,
     [("p", I64(1, -1, 2, -1, 0, 3)), ("c", np.array(2.5, np.float32))], 13,
     np.pad(X[:2, 1:], [(1, 0), (0, 0), (2, 3)], constant_values=2.5)),
    ("gather_elements_small", helper.make_node("GatherElements", ["x", "i"], ["y"], axis=1), X,
     [("i", GE_I)], 13,
     np.array([[[X[a, GE_I[a, b, c], c] for c in range(3)] for b in range(6)] for a in range(2)])),
    ("unsqueeze_v1", helper.make_node("Unsqueeze", ["x"], ["y"], axes=[4, 0]), X, [], 11,
     X.reshape(1, 3, 4, 5, 1)),
    ("reduce_lse_inf", helper.make_node("ReduceLogSumExp", ["x", "a"], ["y"], keepdims=0), LSE_X,
     [("a", I64(1))], 18,
     np.array([np.inf, -np.inf, 101 + np.log1p(np.exp(-1.0) + np.exp(-51.0))], np.float32)),
]


@pytest.mark.parametrize("case", MANUAL, ids=[c[0] for c in MANUAL])
def test_manual_expectations(case):
    _, node, x, inits, opset, want = case
    m = _model([node], [("x", x)], ["y"], inits, opset)
    res = _run(m, [("x", x)])["y"]
    assert res.shape == want.shape and res.dtype == want.dtype
    np.testing.assert_allclose(res, want, rtol=1e-6)
