"""Resize and Upsample beyond the backend node cases: a grid of modes x coordinate modes x
scales/sizes against onnx's reference implementation (the conformance oracle), onnxruntime
parity for the exporter patterns and for the older versions (Resize 10/11, Upsample 7/9, whose
nearest rounding the reference does not model), integer inputs and the fast paths."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgepack.io.onnx import from_onnx  # noqa: E402

_T = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE,
      np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8,
      np.dtype(np.int32): TensorProto.INT32}


def resize_model(x, *, opset=19, scales=None, sizes=None, roi=None, op="Resize", const=True, **attrs):
    if op == "Upsample" or opset < 11:
        names = ["x", "scales"] if scales is not None else ["x"]
    else:
        names = ["x", "roi" if roi is not None else "", "scales" if scales is not None else "",
                 "sizes" if sizes is not None else ""]
        while names[-1] == "":
            names.pop()
    vals = {"roi": None if roi is None else np.asarray(roi, np.float32),
            "scales": None if scales is None else np.asarray(scales, np.float32),
            "sizes": None if sizes is None else np.asarray(sizes, np.int64)}
    inits = [numpy_helper.from_array(vals[n], n) for n in names[1:] if n and const]
    ins = [helper.make_tensor_value_info("x", _T[x.dtype], x.shape)]
    ins += [helper.make_tensor_value_info(n, TensorProto.INT64 if n == "sizes" else TensorProto.FLOAT, vals[n].shape)
            for n in names[1:] if n and not const]
    node = helper.make_node(op, names, ["y"], **attrs)
    g = helper.make_graph([node], "g", ins, [helper.make_tensor_value_info("y", _T[x.dtype], None)],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    feeds = {"x": x}
    if not const:
        feeds.update({n: vals[n] for n in names[1:] if n})
    return m, feeds


def run_edgepack(model, feeds):
    g = from_onnx(model)
    keep = {k: v.copy() for k, v in feeds.items()}
    y = g.run({k: v for k, v in feeds.items() if k in g.input_names})["y"]
    for k in feeds:
        np.testing.assert_array_equal(feeds[k], keep[k])
    return y


def run_reference(model, feeds):
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(model).run(None, feeds)[0]


def run_ort(model, feeds):
    ort = pytest.importorskip("onnxruntime")
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)[0]


_COORDS = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric"]
_TARGETS = [  # (input shape, scales or None, sizes or None)
    ((1, 2, 5, 7), [1, 1, 2, 2], None),
    ((1, 2, 5, 7), [1, 1, 0.6, 1.7], None),
    ((2, 1, 8, 6), None, [2, 1, 3, 11]),
    ((1, 3, 4, 4), [1, 1, 3, 0.5], None),
    ((3, 5, 6), [1, 1.5, 0.75], None),          # a non-spatial axis resized too
]


@pytest.mark.parametrize("mode,coord,target", list(itertools.product(["nearest", "linear", "cubic"], _COORDS,
                                                                     range(len(_TARGETS)))))
def test_resize_grid_vs_reference(mode, coord, target):
    shape, scales, sizes = _TARGETS[target]
    x = np.random.default_rng(target).standard_normal(shape).astype(np.float32)
    attrs = {"mode": mode, "coordinate_transformation_mode": coord}
    if mode == "nearest":
        attrs["nearest_mode"] = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"][target % 4]
    if mode == "cubic" and target % 2:
        attrs.update(cubic_coeff_a=-0.5, exclude_outside=1)
    m, feeds = resize_model(x, scales=scales, sizes=sizes, **attrs)
    y = run_edgepack(m, feeds)
    want = run_reference(m, feeds)
    assert y.dtype == np.float32 and y.shape == want.shape
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("scales,sizes", [([1, 1, 0.4, 0.7], None), (None, [1, 2, 3, 5]), ([1, 1, 1.5, 0.3], None)])
def test_resize_antialias_vs_reference(mode, scales, sizes):
    x = np.random.default_rng(9).standard_normal((1, 2, 9, 11)).astype(np.float32)
    for exclude in (0, 1):
        m, feeds = resize_model(x, scales=scales, sizes=sizes, mode=mode, antialias=1, exclude_outside=exclude)
        np.testing.assert_allclose(run_edgepack(m, feeds), run_reference(m, feeds), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
def test_resize_axes_and_policy_vs_reference(policy):
    x = np.random.default_rng(10).standard_normal((2, 3, 5, 8)).astype(np.float32)
    # (sizes avoiding source coordinates a rounding error away from a whole pixel: the reference
    # then picks the wrong neighbour pair, e.g. 8 -> 11 columns at scale 1.4 gives 6.2857, 6.0)
    for axes, sizes in (([2, 3], [6, 9]), ([3, 1], [4, 5]), ([3], [12])):
        m, feeds = resize_model(x, sizes=sizes, axes=axes, mode="linear", keep_aspect_ratio_policy=policy)
        y = run_edgepack(m, feeds)
        np.testing.assert_allclose(y, run_reference(m, feeds), rtol=1e-5, atol=1e-5)
    # negative axes count from the back (the reference does not take them)
    m, feeds = resize_model(x, sizes=[12], axes=[-1], mode="linear", keep_aspect_ratio_policy=policy)
    np.testing.assert_array_equal(run_edgepack(m, feeds), y)


def test_resize_tf_crop_and_resize_vs_reference():
    x = np.random.default_rng(11).standard_normal((1, 1, 6, 7)).astype(np.float32)
    roi = [0, 0, -0.2, 0.3, 1, 1, 0.8, 1.4]
    for mode in ("nearest", "linear", "cubic"):
        m, feeds = resize_model(x, roi=roi, sizes=[1, 1, 5, 4], mode=mode,
                                coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=-7.0)
        np.testing.assert_allclose(run_edgepack(m, feeds), run_reference(m, feeds), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_resize_integers_vs_reference(dtype):
    info = np.iinfo(dtype)
    x = np.random.default_rng(12).integers(info.min, info.max, (1, 1, 4, 5)).astype(dtype)
    for mode in ("nearest", "linear", "cubic"):      # cubic overshoots: saturated
        m, feeds = resize_model(x, scales=[1, 1, 1.7, 2.3], mode=mode)
        y = run_edgepack(m, feeds)
        assert y.dtype == dtype
        np.testing.assert_array_equal(y, run_reference(m, feeds))


def test_resize_inputs_given_at_run_time():
    x = np.random.default_rng(13).standard_normal((1, 2, 4, 6)).astype(np.float32)
    for scales in ([1, 1, 2, 2], [1, 1, 0.5, 1.5]):    # one graph, two scale values: plans per value
        m, feeds = resize_model(x, scales=scales, const=False, mode="linear")
        np.testing.assert_allclose(run_edgepack(m, feeds), run_reference(m, feeds), rtol=1e-5, atol=1e-6)


# -- fast paths -----------------------------------------------------------------------------------

def test_nearest_integer_factors_are_repeats_and_slices():
    x = np.random.default_rng(14).standard_normal((1, 3, 5, 6)).astype(np.float32)
    for coord, nm in (("asymmetric", "floor"), ("half_pixel", "round_prefer_floor"),
                      ("pytorch_half_pixel", "round_prefer_floor")):
        m, feeds = resize_model(x, scales=[1, 1, 2, 3], mode="nearest", coordinate_transformation_mode=coord,
                                nearest_mode=nm, opset=13)
        y = run_edgepack(m, feeds)
        np.testing.assert_array_equal(y, np.repeat(np.repeat(x, 2, axis=2), 3, axis=3))
        np.testing.assert_array_equal(y, run_ort(m, feeds))
    m, feeds = resize_model(x, scales=[1, 1, 0.5, 0.5], mode="nearest", coordinate_transformation_mode="asymmetric",
                            nearest_mode="floor", opset=13)
    y = run_edgepack(m, feeds)
    np.testing.assert_array_equal(y, x[:, :, 0:4:2, 0:6:2])      # floor(5 * 0.5) = 2 rows
    assert not np.shares_memory(y, feeds["x"])


def test_identity_resize_returns_a_copy():
    x = np.random.default_rng(15).standard_normal((1, 1, 3, 3)).astype(np.float32)
    m, feeds = resize_model(x, scales=[1, 1, 1, 1], mode="linear")
    y = run_edgepack(m, feeds)
    np.testing.assert_array_equal(y, x)
    assert not np.shares_memory(y, feeds["x"])


# -- onnxruntime parity ---------------------------------------------------------------------------

_EXPORTER_PATTERNS = [
    dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
    dict(mode="nearest", coordinate_transformation_mode="half_pixel", nearest_mode="round_prefer_floor"),
    dict(mode="nearest", coordinate_transformation_mode="tf_half_pixel_for_nn", nearest_mode="round_prefer_ceil"),
    dict(mode="linear", coordinate_transformation_mode="half_pixel"),
    dict(mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
    dict(mode="linear", coordinate_transformation_mode="align_corners"),
    dict(mode="linear", coordinate_transformation_mode="asymmetric"),
    dict(mode="cubic", coordinate_transformation_mode="half_pixel"),
    dict(mode="cubic", coordinate_transformation_mode="align_corners", cubic_coeff_a=-0.5),
]


@pytest.mark.parametrize("pattern", range(len(_EXPORTER_PATTERNS)))
@pytest.mark.parametrize("sizes", [[1, 2, 20, 24], [1, 2, 13, 7], [1, 2, 26, 36]])
def test_resize_opset11_matches_onnxruntime(pattern, sizes):
    x = np.random.default_rng(16).standard_normal((1, 2, 13, 12)).astype(np.float32)
    m, feeds = resize_model(x, opset=11, roi=[], scales=[], sizes=sizes, **_EXPORTER_PATTERNS[pattern])
    np.testing.assert_allclose(run_edgepack(m, feeds), run_ort(m, feeds), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("op,opset", [("Resize", 10), ("Upsample", 9), ("Upsample", 7)])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_old_versions_match_onnxruntime(op, opset, mode):
    x = np.random.default_rng(17).standard_normal((1, 2, 5, 6)).astype(np.float32)
    grid = [[1, 1, 2, 3], [1, 1, 1.5, 2.5]] + ([[1, 1, 0.5, 0.6]] if op == "Resize" else [])
    for scales in grid:
        if opset == 7:
            m, feeds = resize_model(x, opset=7, op=op, mode=mode, scales=None)
            node = m.graph.node[0]
            node.attribute.append(helper.make_attribute("scales", [float(s) for s in scales]))
        else:
            m, feeds = resize_model(x, opset=opset, op=op, mode=mode, scales=scales)
        y = run_edgepack(m, feeds)
        np.testing.assert_allclose(y, run_ort(m, feeds), rtol=1e-5, atol=1e-5)


# -- errors ---------------------------------------------------------------------------------------

def test_resize_rejections():
    x = np.zeros((1, 1, 4, 4), np.float32)
    m, feeds = resize_model(x, scales=[1, 1, 0.5, 0.5], mode="nearest", antialias=1)
    with pytest.raises(ValueError, match=r"Resize.*antialias"):
        from_onnx(m)
    m, feeds = resize_model(x, scales=[1, 1, 2, 2], mode="bilinear")
    with pytest.raises(ValueError, match="mode must be one of"):
        from_onnx(m)
    m, feeds = resize_model(x, scales=[1, 1, 2, 2], mode="cubic", opset=10)
    with pytest.raises(ValueError, match="mode must be one of"):
        from_onnx(m)
    m, feeds = resize_model(x, scales=[2, 2], mode="linear", const=False)
    with pytest.raises(ValueError, match="scales must have 4 values"):
        run_edgepack(m, feeds)
    m, feeds = resize_model(x, sizes=[1, 1, 1 << 20, 1 << 20], mode="nearest", const=False)
    with pytest.raises(ValueError, match="elements"):
        run_edgepack(m, feeds)
