"""Pruning of graphs: channel dependency groups (residual Add, Concat offsets, depthwise, SE gates,
Flatten -> Gemm, Reshape constants), channels removed for real and checked against the original
graph with the removed channels' consumer columns zeroed (an independent reference: a removed
channel then contributes nothing, which is exactly what removing it means), blocked groups with
their reasons, round_to, save/load/quantize of the pruned graph, unstructured and 2:4 pruning
onto the sparse kernels, and sensitivity per group.
"""

import numpy as np
import pytest

import edgepack
from edgepack import nn
from edgepack.graph.ir import Node
from edgepack.graph.passes.channels import analyze_channels, graph_flops, prune_channels
from edgepack.prune.graph import quantize_sparse_graph


def _graph(nodes, params, outputs, shape, name="t"):
    params = {k: np.asarray(v, np.float32) if np.asarray(v).dtype.kind == "f" else np.asarray(v)
              for k, v in params.items()}
    return nn.Graph(nodes, [{"name": "x", "dtype": "float32", "shape": ["N", *shape]}], outputs, params, 17, name)


def _kept_rows(orig, new, axis=0):
    """Indices of ``orig`` slices (along ``axis``) that survive in ``new`` (each matched exactly)."""
    o = np.moveaxis(orig, axis, 0).reshape(orig.shape[axis], -1)
    n = np.moveaxis(new, axis, 0).reshape(new.shape[axis], -1)
    idx = []
    for row in n:
        hits = np.flatnonzero((o == row).all(axis=1))
        assert hits.size >= 1, "a pruned slice is not a slice of the original"
        idx.append(int(hits[0]))
    assert idx == sorted(idx)
    return np.array(idx)


def _zero_cols(params, name, axis, keep, block=1):
    """A copy of params[name] with every input column (along ``axis``) not in ``keep`` zeroed."""
    w = params[name].copy()
    n = w.shape[axis] // block
    gone = np.setdiff1d(np.arange(n), keep)
    cols = (gone[:, None] * block + np.arange(block)[None, :]).ravel()
    idx = [slice(None)] * w.ndim
    idx[axis] = cols
    w[tuple(idx)] = 0
    return w


def _node(g, name):
    return next(n for n in g.nodes if n.name == name)


def _w(g, name, k=1):
    return g.params[_node(g, name).inputs[k]]


@pytest.fixture
def rescnn(rng):
    pytest.importorskip("onnx")
    from test_graph import residual_cnn

    return edgepack.from_onnx(residual_cnn(rng))


# -- groups and exact removal --------------------------------------------------------------------

def test_residual_se_depthwise_flatten_group(rescnn, rng):
    an = analyze_channels(rescnn)
    byname = {g.name: g for g in an.groups}
    stem = byname["Conv_0"]
    # the stem's channels reach the residual Add (Conv_5), the SE gate (Conv_11 via Mul), the
    # depthwise conv and the classifier: one group
    roles = {m.split(" ")[1]: m.split("(")[-1].rstrip(")") for m in stem.members}
    assert roles["Conv_0"] == "out" and roles["Conv_5"] == "out" and roles["Conv_11"] == "out"
    assert roles["Conv_14"] == "dw" and roles["Conv_3"] == "in" and roles["Conv_9"] == "in"
    assert roles["Gemm_17"] == "in"
    assert stem.prunable and stem.channels == 8
    assert byname["Conv_3"].channels == 8 and byname["Conv_9"].channels == 4
    assert not byname["Gemm_17"].prunable and "graph output" in byname["Gemm_17"].reason

    p = prune_channels(rescnn, 0.5, scope="layer")
    keep0 = _kept_rows(_w(rescnn, "Conv_0"), _w(p, "Conv_0"))
    keep3 = _kept_rows(_w(rescnn, "Conv_3")[:, keep0], _w(p, "Conv_3"))
    keep9 = _kept_rows(_w(rescnn, "Conv_9")[:, keep0], _w(p, "Conv_9"))
    assert len(keep0) == 4 and len(keep3) == 4 and len(keep9) == 2
    # every member sliced with the same indices
    np.testing.assert_array_equal(_w(p, "Conv_5"), _w(rescnn, "Conv_5")[keep0][:, keep3])
    np.testing.assert_array_equal(_w(p, "Conv_11"), _w(rescnn, "Conv_11")[keep0][:, keep9])
    np.testing.assert_array_equal(_w(p, "Conv_14"), _w(rescnn, "Conv_14")[keep0])
    np.testing.assert_array_equal(_w(p, "Gemm_17"), _w(rescnn, "Gemm_17")[:, keep0])
    assert _node(p, "Conv_14").attrs["group"] == 4
    # reference: the original with the removed channels' consumer columns zeroed
    ref_params = dict(rescnn.params)
    for name, axis, keep in (("Conv_3", 1, keep0), ("Conv_9", 1, keep0), ("Gemm_17", 1, keep0),
                             ("Conv_5", 1, keep3), ("Conv_11", 1, keep9)):
        ref_params[_node(rescnn, name).inputs[1]] = _zero_cols(rescnn.params, _node(rescnn, name).inputs[1], axis,
                                                               keep)
    ref = rescnn.copy(params=ref_params)
    x = rng.standard_normal((4, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(p(x), ref(x), rtol=1e-4, atol=1e-5)
    assert p(x).shape == (4, 10)


def test_report_sizes_save_load_quantize(rescnn, rng, tmp_path):
    p = edgepack.prune(rescnn, 0.5)
    r = p.report
    assert r.params[1] < r.params[0] and r.flops[1] < r.flops[0] and r.bytes[1] < r.bytes[0]
    assert r.params[1] == p.num_parameters()
    assert r.conv_flops[0] == graph_flops(rescnn)["conv"] and r.conv_flops[1] == graph_flops(p)["conv"]
    assert "Conv_0" in str(r) and "kept whole: feeds graph output" in str(r)
    assert r.group("Conv_0")["after"] < r.group("Conv_0")["before"]
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    edgepack.save(p, tmp_path / "p.edgepack")
    p2 = edgepack.load(tmp_path / "p.edgepack")
    np.testing.assert_array_equal(p2(x), p(x))
    q = edgepack.quantize(p)
    assert "edgepack.Layer" in q.op_counts()
    np.testing.assert_allclose(q(x), p(x), atol=0.05 * np.abs(p(x)).max())
    assert rescnn(x).shape == p(x).shape        # the original is untouched
    assert rescnn.num_parameters() == r.params[0]


def test_concat_offsets_and_concat_add_coupling(rng):
    c = lambda *s: rng.standard_normal(s) * 0.3  # noqa: E731
    params = {"wa": c(4, 3, 3, 3), "wb": c(6, 3, 1, 1), "wc": c(5, 10, 3, 3), "wd": c(10, 3, 1, 1),
              "we": c(7, 10, 1, 1)}
    nodes = [Node("Conv", ["x", "wa"], ["a"], {"pads": [1, 1, 1, 1]}, "A"),
             Node("Relu", ["a"], ["ar"], {}, "ra"),
             Node("Conv", ["x", "wb"], ["b"], {}, "B"),
             Node("Concat", ["ar", "b"], ["cat"], {"axis": 1}, "cat"),
             Node("Conv", ["cat", "wc"], ["y1"], {"pads": [1, 1, 1, 1]}, "C"),
             Node("Conv", ["x", "wd"], ["d"], {}, "D"),
             Node("Add", ["cat", "d"], ["s"], {}, "add"),      # ties A, B and D: two blocks
             Node("Conv", ["s", "we"], ["y2"], {}, "E")]
    g = _graph(nodes, params, ["y1", "y2"], (3, 6, 6))
    an = analyze_channels(g)
    grp = {gr.name: gr for gr in an.groups}
    assert grp["A"].channels == 10 and sorted(len(b) for b in grp["A"].blocks) == [4, 6]
    assert {m.split(" ")[1] for m in grp["A"].members} >= {"A", "B", "D", "C", "E", "cat", "add"}
    p = prune_channels(g, 0.5, scope="layer")
    ka = _kept_rows(g.params["wa"], p.params[_node(p, "A").inputs[1]])
    kb = _kept_rows(g.params["wb"], p.params[_node(p, "B").inputs[1]])
    kd = _kept_rows(g.params["wd"], p.params[_node(p, "D").inputs[1]])
    assert len(ka) == 2 and len(kb) == 3
    np.testing.assert_array_equal(kd, np.concatenate([ka, 4 + kb]))   # the Add ties D to the concat
    cols = np.concatenate([ka, 4 + kb])
    np.testing.assert_array_equal(p.params[_node(p, "C").inputs[1]], g.params["wc"][:, cols])
    ref = g.copy(params=dict(g.params, wc=_zero_cols(g.params, "wc", 1, cols), we=_zero_cols(g.params, "we", 1, cols)))
    x = rng.standard_normal((3, 3, 6, 6)).astype(np.float32)
    for a, b in zip(p.run({"x": x}).values(), ref.run({"x": x}).values()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_flatten_gemm_blocks_and_hidden_units(rng):
    c = lambda *s: rng.standard_normal(s) * 0.3  # noqa: E731
    params = {"w": c(4, 3, 3, 3), "b": c(4), "f1": c(8, 64), "f1b": c(8), "f2": c(3, 8)}
    nodes = [Node("Conv", ["x", "w", "b"], ["c"], {"pads": [1, 1, 1, 1], "strides": [2, 2]}, "conv"),
             Node("Relu", ["c"], ["r"], {}, "relu"),
             Node("Flatten", ["r"], ["f"], {"axis": 1}, "flat"),
             Node("Gemm", ["f", "f1", "f1b"], ["h"], {"transB": 1}, "fc1"),
             Node("Relu", ["h"], ["hr"], {}, "relu2"),
             Node("Gemm", ["hr", "f2"], ["y"], {"transB": 1}, "fc2")]
    g = _graph(nodes, params, ["y"], (3, 8, 8))
    p = prune_channels(g, 0.5, scope="layer")
    kc = _kept_rows(g.params["w"], p.params["w"])
    cols = (kc[:, None] * 16 + np.arange(16)).ravel()      # channel c -> features [16c, 16c+16)
    kh = _kept_rows(g.params["f1"][:, cols], p.params["f1"])
    assert len(kc) == 2 and len(kh) == 4
    np.testing.assert_array_equal(p.params["f1"], g.params["f1"][kh][:, cols])
    np.testing.assert_array_equal(p.params["f2"], g.params["f2"][:, kh])
    ref = g.copy(params=dict(g.params, f1=_zero_cols(g.params, "f1", 1, kc, block=16),
                             f2=_zero_cols(g.params, "f2", 1, kh)))
    x = rng.standard_normal((5, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(p(x), ref(x), rtol=1e-4, atol=1e-5)


def test_reshape_constants_rewritten_nhwc_head(rng):
    # open-nsfw's head: [N, C, 1, 1] -> Reshape [-1, 1, 1, C] -> Reshape [-1, C] -> MatMul
    c = lambda *s: rng.standard_normal(s) * 0.3  # noqa: E731
    params = {"w": c(8, 3, 3, 3), "s1": np.array([-1, 1, 1, 8], np.int64), "s2": np.array([-1, 8], np.int64),
              "fc": c(8, 3), "fcb": c(3)}
    nodes = [Node("Conv", ["x", "w"], ["c"], {"pads": [1, 1, 1, 1]}, "conv"),
             Node("Relu", ["c"], ["r"], {}, "relu"),
             Node("GlobalAveragePool", ["r"], ["p"], {}, "gap"),
             Node("Reshape", ["p", "s1"], ["p1"], {}, "rs1"),
             Node("Reshape", ["p1", "s2"], ["p2"], {}, "rs2"),
             Node("MatMul", ["p2", "fc"], ["m"], {}, "fc"),
             Node("Add", ["m", "fcb"], ["y"], {}, "bias")]
    g = _graph(nodes, params, ["y"], (3, 5, 5))
    p = prune_channels(g, 0.25, scope="layer")
    k = _kept_rows(g.params["w"], p.params["w"])
    assert len(k) == 6
    assert p.params["s1"].tolist() == [-1, 1, 1, 6] and p.params["s2"].tolist() == [-1, 6]
    ref = g.copy(params=dict(g.params, fc=_zero_cols(g.params, "fc", 0, k)))
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(p(x), ref(x), rtol=1e-4, atol=1e-5)


def test_blocked_groups_are_reported_and_left_whole(rng):
    c = lambda *s: rng.standard_normal(s) * 0.3  # noqa: E731
    params = {"w1": c(8, 3, 1, 1), "w2": c(8, 8, 1, 1), "wg": c(8, 4, 3, 3), "w3": c(4, 8, 1, 1),
              "ln_s": np.ones(4), "ln_b": np.zeros(4), "shp": np.array([0, 2, 2, -1], np.int64),
              "m1": c(4, 6), "m2": c(6, 4)}
    nodes = [Node("Conv", ["x", "w1"], ["a"], {}, "c1"),
             Node("Conv", ["a", "wg"], ["b"], {"group": 2, "pads": [1, 1, 1, 1]}, "grouped"),
             Node("Conv", ["b", "w2"], ["c"], {}, "c2"),
             Node("Reshape", ["c", "shp"], ["h"], {}, "heads"),          # splits c2's channels
             Node("Conv", ["x", "w1"], ["a2"], {}, "c1b"),
             Node("Conv", ["a2", "w3"], ["d"], {}, "c3"),
             Node("Transpose", ["d"], ["dt"], {"perm": [0, 2, 3, 1]}, "nhwc"),
             Node("LayerNormalization", ["dt", "ln_s", "ln_b"], ["n"], {"axis": -1}, "ln"),
             Node("MatMul", ["n", "m1"], ["e"], {}, "mlp1"),
             Node("Relu", ["e"], ["er"], {}, "act"),
             Node("MatMul", ["er", "m2"], ["y2"], {}, "mlp2")]
    g = _graph(nodes, params, ["h", "y2"], (3, 4, 4))
    grp = {gr.name: gr for gr in analyze_channels(g).groups}
    assert not grp["c1"].prunable and "grouped" in grp["c1"].reason
    assert not grp["c2"].prunable and "'heads'" in grp["c2"].reason
    assert not grp["c3"].prunable and "'ln'" in grp["c3"].reason
    assert grp["c1b"].prunable and grp["mlp1"].prunable       # the MLP's hidden units can go
    p = prune_channels(g, 0.5, scope="layer")
    assert p.params[_node(p, "c2").inputs[1]].shape == (8, 8, 1, 1)
    assert p.params[_node(p, "mlp1").inputs[1]].shape == (4, 3)
    assert "kept whole" in p.report.group("c3")["status"] and "ln" in p.report.group("c3")["status"]
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    r0, r1 = g.run({"x": x}), p.run({"x": x})
    assert all(r0[k].shape == r1[k].shape for k in r0)


def test_round_to_amount_dict_and_skip(rng):
    c = lambda *s: rng.standard_normal(s) * 0.3  # noqa: E731
    params = {"w1": c(40, 3, 3, 3), "w2": c(24, 40, 3, 3), "w3": c(5, 24, 1, 1)}
    nodes = [Node("Conv", ["x", "w1"], ["a"], {"pads": [1, 1, 1, 1]}, "c1"),
             Node("Relu", ["a"], ["ar"], {}, "r1"),
             Node("Conv", ["ar", "w2"], ["b"], {"pads": [1, 1, 1, 1]}, "c2"),
             Node("Relu", ["b"], ["br"], {}, "r2"),
             Node("Conv", ["br", "w3"], ["y"], {}, "c3")]
    g = _graph(nodes, params, ["y"], (3, 6, 6))
    for scope in ("global", "layer"):
        p = prune_channels(g, 0.45, scope=scope, round_to=8)
        assert p.params["w1"].shape[0] % 8 == 0 and p.params["w2"].shape[0] % 8 == 0
        assert p.params["w1"].shape[0] < 40 or p.params["w2"].shape[0] < 24
    p = prune_channels(g, {"c2": 0.5})
    assert p.params["w1"].shape[0] == 40 and p.params["w2"].shape == (12, 40, 3, 3)
    p = prune_channels(g, 0.5, scope="layer", skip=("c1",))
    assert p.params["w1"].shape[0] == 40 and p.params["w2"].shape[0] == 12
    assert p.report.group("c1")["status"] == "skipped"
    ff = prune_channels(g, 0.3, target="flops")
    assert graph_flops(ff)["total"] <= 0.75 * graph_flops(g)["total"]
    with pytest.raises(ValueError, match="no channel group named"):
        prune_channels(g, {"nope": 0.5})
    with pytest.raises(ValueError, match="amount must be a number in"):
        prune_channels(g, 1.5)
    with pytest.raises(ValueError, match="importance must be one of"):
        prune_channels(g, 0.5, importance="random")
    with pytest.raises(ValueError, match="skip: 'zzz'"):
        prune_channels(g, 0.5, skip="zzz")


def test_importance_l2_and_bn_scale(rng):
    c = lambda *s: rng.standard_normal(s) * 0.3  # noqa: E731
    gamma = np.array([1.0, 0.01, 2.0, 0.02, 1.5, 0.03], np.float32)
    params = {"w1": c(6, 3, 3, 3), "g": gamma, "be": c(6), "m": np.zeros(6), "v": np.ones(6), "w2": c(4, 6, 1, 1)}
    nodes = [Node("Conv", ["x", "w1"], ["a"], {"pads": [1, 1, 1, 1]}, "c1"),
             Node("BatchNormalization", ["a", "g", "be", "m", "v"], ["n"], {}, "bn"),
             Node("Relu", ["n"], ["r"], {}, "relu"),
             Node("Conv", ["r", "w2"], ["y"], {}, "c2")]
    g = _graph(nodes, params, ["y"], (3, 5, 5))
    p = prune_channels(g, 0.5, importance="bn_scale")
    np.testing.assert_array_equal(p.params["g"], gamma[[0, 2, 4]])       # smallest |gamma| removed
    np.testing.assert_array_equal(p.params["w1"], g.params["w1"][[0, 2, 4]])
    assert prune_channels(g, 0.5, importance="l2").params["w1"].shape[0] == 3
    folded = edgepack.graph.passes.fold_batchnorm(g)
    with pytest.raises(ValueError, match="fold_batchnorm=False"):
        prune_channels(folded, 0.5, importance="bn_scale")


def test_public_prune_dispatch_and_errors(rescnn, rng):
    p = edgepack.prune(rescnn, amount=0.5, round_to=2)
    assert isinstance(p, nn.Graph) and p.report.settings["structure"] == "channels"
    with pytest.raises(TypeError, match="not both"):
        edgepack.prune(rescnn, 0.5, amount=0.5)
    with pytest.raises(ValueError, match="structure must be"):
        edgepack.prune(rescnn, 0.5, structure="neurons")
    with pytest.raises(ValueError, match="example="):
        g = nn.Graph(rescnn.nodes, [{"name": "x", "dtype": "float32", "shape": ["N", 3, "H", "W"]}],
                     rescnn.outputs, rescnn.params, rescnn.opset)
        edgepack.prune(g, 0.5)
    x = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    assert edgepack.prune(g, 0.5, example=x)(x).shape == (1, 10)


# -- unstructured / 2:4 onto the sparse kernels --------------------------------------------------

@pytest.mark.parametrize("structure,amount", [("unstructured", 0.8), ("2:4", 0.5)])
def test_unstructured_and_24_graph_pruning(rescnn, rng, tmp_path, structure, amount):
    with pytest.warns(UserWarning, match="not a multiple of 4") if structure == "2:4" else _nothing():
        p = edgepack.prune(rescnn, amount, structure=structure, sparse_kernels="always")
    kinds = [n.attrs["class"] for n in p.nodes if n.op == "Layer"]
    assert "SparseConv2d" in kinds and "SparseLinear" in kinds
    rows = p.report.groups
    if structure == "2:4":
        assert all(r["after"] * 2 == r["before"] for r in rows)
    else:
        assert abs(sum(r["after"] for r in rows) / sum(r["before"] for r in rows) - 0.2) < 0.01
    x = rng.standard_normal((3, 3, 16, 16)).astype(np.float32)
    # the same function as the original graph with the masked weights
    masked = rescnn.copy(params={k: v for k, v in rescnn.params.items()})
    for r in rows:
        w = masked.params[r["members"][0]]
        thr = np.sort(np.abs(w).ravel())[r["before"] - r["after"] - 1] if structure == "unstructured" else None
        assert thr is None or np.count_nonzero(np.abs(w) > thr) <= r["after"]
    edgepack.save(p, tmp_path / "s.edgepack")
    p2 = edgepack.load(tmp_path / "s.edgepack")
    np.testing.assert_array_equal(p2(x), p(x))
    q = quantize_sparse_graph(p)
    assert all('"dtype": "int8"' in n.attrs["config"] for n in q.nodes if n.op == "Layer")
    np.testing.assert_allclose(q(x), p(x), atol=0.05 * np.abs(p(x)).max() + 1e-3)


def test_unstructured_matches_masked_dense_graph(rescnn, rng):
    from edgepack.prune.graph import weight_masks

    masks = weight_masks(rescnn, 0.6, scope="layer")
    dense = rescnn.copy(params={k: v * masks[k] if k in masks else v for k, v in rescnn.params.items()})
    p = edgepack.prune(rescnn, 0.6, structure="unstructured", scope="layer", sparse_kernels="always")
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(p(x), dense(x), rtol=1e-4, atol=1e-5)
    for k, m in masks.items():
        assert abs(m.mean() - 0.4) < 0.05


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


# -- sensitivity ------------------------------------------------------------------------------------

def test_sensitivity_per_group(rescnn, rng):
    x = rng.standard_normal((32, 3, 16, 16)).astype(np.float32)
    res = edgepack.sensitivity(rescnn, x, sparsities=(0.25, 0.75))
    assert set(res.drops) == {"Conv_0", "Conv_3", "Conv_9"}
    assert res.baseline == 1.0 and all(len(v) == 2 for v in res.drops.values())
    assert all(-1e-9 <= d <= 100 for v in res.drops.values() for d in v)
    y = rescnn(x).argmax(-1)
    res2 = edgepack.sensitivity(rescnn, x, y, sparsities=(0.5,))
    assert res2.baseline == 1.0 and "Conv_0" in str(res2)


# -- a real model ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_open_nsfw_residual_stages(rng):
    from _real_models import model_path

    g = edgepack.from_onnx(model_path("open-nsfw"))
    an = analyze_channels(g)
    stages = [gr for gr in an.groups if "proj_shortcut" in gr.name]
    assert len(stages) == 4 and all(gr.prunable for gr in stages)
    # stage 1: the shortcut and every branch2c conv of its 4 blocks share the residual channels
    outs = [m for m in stages[1].members if m.endswith("(out)")]
    assert len(outs) == 5
    p = prune_channels(g, 0.5, scope="layer")
    for gr in p.report.groups:
        if gr["status"] == "pruned":
            assert gr["after"] == gr["before"] // 2
    x = rng.uniform(0, 255, (1, 224, 224, 3)).astype(np.float32)
    assert p(x).shape == (1, 2)
    assert p.report.flops[1] < 0.5 * p.report.flops[0]
