"""Conv, ConvTranspose and the pooling operators against direct (loop) implementations of the
ONNX definitions, over grids the backend node cases do not cover: 1-D/2-D/3-D, groups and
depthwise with a depth multiplier, strides, dilations, asymmetric pads, every auto_pad, ceil_mode,
count_include_pad, MaxPool's Indices; weights both as graph inputs and as initializers (the
path real models take); float64 and float16 keep their dtype."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgepack.io.onnx import from_onnx  # noqa: E402

_NP2ONNX = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE,
            np.dtype(np.float16): TensorProto.FLOAT16, np.dtype(np.uint8): TensorProto.UINT8,
            np.dtype(np.int8): TensorProto.INT8, np.dtype(np.int32): TensorProto.INT32,
            np.dtype(np.int64): TensorProto.INT64}


def run_node(op, inputs: dict, attrs: dict, *, consts=(), opset=19, n_out=1):
    """Build a one-node model (inputs named in ``consts`` become initializers) and run it."""
    names = list(inputs)
    graph_in = [helper.make_tensor_value_info(k, _NP2ONNX[v.dtype], v.shape) for k, v in inputs.items()
                if k not in consts]
    inits = [numpy_helper.from_array(inputs[k], k) for k in consts]
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, **attrs)
    g = helper.make_graph([node], "g", graph_in, [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None)
                                                  for o in outs], initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    graph = from_onnx(model)
    feeds = {k: v for k, v in inputs.items() if k not in consts}
    before = {k: v.copy() for k, v in feeds.items()}
    res = graph.run(feeds)
    for k in feeds:   # operators never write into their inputs
        np.testing.assert_array_equal(feeds[k], before[k])
    return [res[o] for o in outs] if n_out > 1 else res[outs[0]]


# -- reference implementations (direct loops over the ONNX definitions) ------------------------------

def ref_conv(x, w, b, strides, pb, pe, dil, group):
    x, w = x.astype(np.float64), w.astype(np.float64)
    xp = np.pad(x, [(0, 0), (0, 0)] + list(zip(pb, pe)))
    n, c = x.shape[:2]
    m = w.shape[0]
    cg, mg = c // group, m // group
    ks = w.shape[2:]
    out_sp = [(xp.shape[2 + i] - dil[i] * (ks[i] - 1) - 1) // strides[i] + 1 for i in range(len(ks))]
    y = np.zeros((n, m, *out_sp))
    for oc in range(m):
        g = oc // mg
        for tap in itertools.product(*[range(k) for k in ks]):
            sl = tuple(slice(t * d, t * d + s * (o - 1) + 1, s) for t, d, s, o in zip(tap, dil, strides, out_sp))
            patch = xp[(slice(None), slice(g * cg, (g + 1) * cg)) + sl]
            y[:, oc] += np.tensordot(w[(oc, slice(None)) + tap], patch, axes=([0], [1]))
    if b is not None:
        y += b.reshape((1, m) + (1,) * len(ks))
    return y


def ref_conv_transpose(x, w, b, strides, dil, group, pb, out_sp):
    x, w = x.astype(np.float64), w.astype(np.float64)
    n, c = x.shape[:2]
    mg = w.shape[1]
    m = mg * group
    cg = c // group
    ks = w.shape[2:]
    in_sp = x.shape[2:]
    full = [s * (i - 1) + (k - 1) * d + 1 for i, k, s, d in zip(in_sp, ks, strides, dil)]
    size = [max(f, p + o) + max(0, -p) for f, p, o in zip(full, pb, out_sp)]
    shift = [max(0, -p) for p in pb]
    buf = np.zeros((n, m, *size))
    for oc in range(m):
        g, j = oc // mg, oc % mg
        for tap in itertools.product(*[range(k) for k in ks]):
            contrib = np.tensordot(w[(slice(g * cg, (g + 1) * cg), j) + tap], x[:, g * cg:(g + 1) * cg],
                                   axes=([0], [1]))
            sl = tuple(slice(sh + t * d, sh + t * d + s * (i - 1) + 1, s)
                       for sh, t, d, s, i in zip(shift, tap, dil, strides, in_sp))
            buf[(slice(None), oc) + sl] += contrib
    crop = tuple(slice(sh + p, sh + p + o) for sh, p, o in zip(shift, pb, out_sp))
    y = buf[(slice(None), slice(None)) + crop]
    if b is not None:
        y = y + b.reshape((1, m) + (1,) * len(ks))
    return y


def pool_out_shape(in_sp, ks, strides, dil, pb, pe, auto, ceil):
    out, pbs, pes = [], [], []
    for size, k, s, d, p, q in zip(in_sp, ks, strides, dil, pb, pe):
        win = (k - 1) * d + 1
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            o = -(-size // s)
            tot = max(0, (o - 1) * s + win - size)
            p = tot // 2 if auto == "SAME_UPPER" else tot - tot // 2
            q = tot - p
        else:
            if auto == "VALID":
                p = q = 0
            f = (size + p + q - win) / s + 1
            o = int(np.ceil(f)) if ceil else int(np.floor(f))
            if ceil and (o - 1) * s >= size + p:
                o -= 1
        out.append(o)
        pbs.append(p)
        pes.append(q)
    return out, pbs, pes


def ref_pool(x, kind, ks, strides, dil, pb, pe, auto="NOTSET", ceil=False, include_pad=False, p=2,
             storage_order=0):
    in_sp = x.shape[2:]
    out, pbs, pes = pool_out_shape(in_sp, ks, strides, dil, pb, pe, auto, ceil)
    n, c = x.shape[:2]
    y = np.zeros((n, c, *out))
    idx = np.zeros((n, c, *out), np.int64)
    plane = int(np.prod(in_sp))
    for o in itertools.product(*[range(v) for v in out]):
        vals, flat, count = [], [], 0
        for tap in itertools.product(*[range(k) for k in ks]):
            pos = [oi * s - pp + t * d for oi, s, pp, t, d in zip(o, strides, pbs, tap, dil)]
            if all(-pp <= q < sz + qq for q, pp, sz, qq in zip(pos, pbs, in_sp, pes)):
                count += 1
            if all(0 <= q < sz for q, sz in zip(pos, in_sp)):
                vals.append(x[(slice(None), slice(None)) + tuple(pos)].astype(np.float64))
                if storage_order:
                    flat.append(sum(q * int(np.prod(in_sp[:i])) for i, q in enumerate(pos)))
                else:
                    flat.append(sum(q * int(np.prod(in_sp[i + 1:])) for i, q in enumerate(pos)))
        v = np.stack(vals)
        sl = (slice(None), slice(None)) + o
        if kind == "max":
            y[sl] = v.max(0)
            idx[sl] = np.array(flat)[v.argmax(0)] + (np.arange(n * c) * plane).reshape(n, c)
        elif kind == "avg":
            y[sl] = v.sum(0) / (count if include_pad else len(vals))
        else:
            y[sl] = (np.abs(v) ** p).sum(0) ** (1.0 / p)
    return y, idx


# -- Conv -----------------------------------------------------------------------------------------

_CONV_GRID = [
    # (x shape, (M, kernel), group, strides, dilations, pads or auto_pad)
    ((2, 4, 9), (6, (3,)), 1, (2,), (1,), (1, 0)),
    ((1, 4, 10), (8, (3,)), 4, (1,), (2,), "SAME_UPPER"),                    # 1-D depthwise x2
    ((1, 3, 7, 8), (5, (3, 3)), 1, (1, 1), (1, 1), (1, 1, 1, 1)),
    ((2, 6, 9, 7), (4, (3, 2)), 2, (2, 1), (1, 2), (0, 1, 2, 0)),            # grouped, asymmetric
    ((1, 5, 8, 8), (5, (3, 3)), 5, (2, 2), (1, 1), "SAME_LOWER"),            # depthwise stride 2
    ((1, 4, 9, 11), (8, (5, 5)), 4, (1, 1), (2, 1), "SAME_UPPER"),           # depth multiplier 2
    ((2, 3, 6, 6), (4, (1, 1)), 1, (2, 2), (1, 1), (0, 0, 0, 0)),            # strided 1x1
    ((1, 8, 5, 5), (8, (1, 1)), 4, (1, 1), (1, 1), "VALID"),                 # grouped 1x1
    ((2, 6, 4, 5), (3, (1, 1)), 1, (1, 1), (1, 1), (0, 0, 0, 0)),            # pointwise (one matmul)
    ((1, 4, 7), (2, (1,)), 1, (1,), (1,), "SAME_UPPER"),                     # 1-D pointwise
    ((1, 2, 4, 5, 6), (3, (2, 3, 2)), 1, (1, 2, 1), (1, 1, 2), (1, 0, 1, 0, 1, 1)),
    ((1, 4, 5, 4, 4), (4, (3, 3, 3)), 4, (2, 1, 1), (1, 1, 1), "SAME_UPPER"),  # 3-D depthwise
]


def _pads_for(auto_or_pads, x_shape, ks, strides, dil):
    nsp = len(ks)
    if not isinstance(auto_or_pads, str):
        return {"pads": list(auto_or_pads)}, auto_or_pads[:nsp], auto_or_pads[nsp:]
    if auto_or_pads == "VALID":
        return {"auto_pad": "VALID"}, (0,) * nsp, (0,) * nsp
    pb, pe = [], []
    for size, k, s, d in zip(x_shape[2:], ks, strides, dil):
        o = -(-size // s)
        tot = max(0, (o - 1) * s + (k - 1) * d + 1 - size)
        lo = tot // 2 if auto_or_pads == "SAME_UPPER" else tot - tot // 2
        pb.append(lo)
        pe.append(tot - lo)
    return {"auto_pad": auto_or_pads}, pb, pe


@pytest.mark.parametrize("case", range(len(_CONV_GRID)))
@pytest.mark.parametrize("const", [False, True])
def test_conv_grid(case, const):
    xs, (m, ks), group, strides, dil, pads = _CONV_GRID[case]
    rng = np.random.default_rng(case)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal((m, xs[1] // group) + ks).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    attrs, pb, pe = _pads_for(pads, xs, ks, strides, dil)
    attrs.update(strides=list(strides), dilations=list(dil), group=group)
    if case % 2:
        attrs["kernel_shape"] = list(ks)        # and inferred from W otherwise
    y = run_node("Conv", {"x": x, "w": w, "b": b}, attrs, consts=("w", "b") if const else ())
    want = ref_conv(x, w, b, strides, pb, pe, dil, group)
    assert y.dtype == np.float32 and y.shape == want.shape
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_conv_dtypes(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 6, 6)).astype(dtype)
    w = rng.standard_normal((4, 1, 3, 3)).astype(dtype)
    for group, ww in ((4, w), (1, rng.standard_normal((3, 4, 3, 3)).astype(dtype))):
        y = run_node("Conv", {"x": x, "w": ww}, {"pads": [1, 1, 1, 1], "group": group})
        assert y.dtype == dtype
        tol = 1e-12 if dtype == np.float64 else 2e-2
        np.testing.assert_allclose(y, ref_conv(x, ww, None, (1, 1), (1, 1), (1, 1), (1, 1), group),
                                   rtol=tol, atol=tol)


def test_conv_errors_name_the_node():
    x = np.zeros((1, 3, 5, 5), np.float32)
    w = np.zeros((2, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"Conv.*pads must be non-negative"):
        run_node("Conv", {"x": x, "w": w}, {"pads": [-1, 0, 0, 0]})
    with pytest.raises(ValueError, match=r"auto_pad must be one of"):
        run_node("Conv", {"x": x, "w": w}, {"auto_pad": "SAME"})
    with pytest.raises(ValueError, match=r"channels"):
        run_node("Conv", {"x": x, "w": np.zeros((2, 2, 3, 3), np.float32)}, {})


# -- ConvTranspose --------------------------------------------------------------------------------

_CONVT_GRID = [
    # (x shape, (M/group, kernel), group, strides, dilations, attrs)
    ((1, 2, 5), (3, (3,)), 1, (2,), (1,), {"pads": [1, 0], "output_padding": [1]}),
    ((2, 4, 3, 4), (1, (2, 2)), 4, (2, 2), (1, 1), {}),                       # depthwise 2x upsampler
    ((1, 2, 3, 3), (2, (3, 3)), 2, (3, 2), (1, 1), {"output_shape": [10, 8]}),
    ((1, 2, 3, 3), (2, (3, 3)), 1, (2, 2), (2, 1), {"auto_pad": "SAME_UPPER"}),
    ((1, 2, 3, 3), (2, (3, 3)), 1, (2, 2), (1, 1), {"auto_pad": "SAME_LOWER"}),
    ((1, 3, 4, 3), (2, (4, 4)), 1, (2, 2), (1, 1), {"pads": [1, 1, 1, 1]}),   # DCGAN-style
    ((1, 2, 2, 3, 2), (2, (2, 3, 2)), 1, (2, 1, 2), (1, 1, 1), {"pads": [0, 1, 0, 1, 0, 1]}),
    ((1, 2, 4, 4), (3, (3, 3)), 1, (1, 1), (1, 1), {"output_shape": [1, 3, 7, 7]}),  # full shape given
]


def _convt_geometry(xs, ks, strides, dil, attrs):
    nsp = len(ks)
    in_sp = xs[2:]
    op = attrs.get("output_padding", [0] * nsp)
    full = [s * (i - 1) + o + (k - 1) * d + 1 for i, k, s, d, o in zip(in_sp, ks, strides, dil, op)]
    auto = attrs.get("auto_pad", "NOTSET")
    oshape = attrs.get("output_shape")
    if oshape is not None:
        oshape = list(oshape)[-nsp:]
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        oshape = [i * s for i, s in zip(in_sp, strides)]
    if oshape is not None:
        tot = [f - o for f, o in zip(full, oshape)]
        pb = [t // 2 if auto == "SAME_UPPER" else t - t // 2 for t in tot]
        return pb, oshape
    pads = attrs.get("pads", [0] * 2 * nsp)
    return pads[:nsp], [f - p - q for f, p, q in zip(full, pads[:nsp], pads[nsp:])]


@pytest.mark.parametrize("case", range(len(_CONVT_GRID)))
@pytest.mark.parametrize("const", [False, True])
def test_conv_transpose_grid(case, const):
    xs, (mg, ks), group, strides, dil, extra = _CONVT_GRID[case]
    rng = np.random.default_rng(100 + case)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal((xs[1], mg) + ks).astype(np.float32)
    b = rng.standard_normal(mg * group).astype(np.float32)
    attrs = dict(extra, strides=list(strides), dilations=list(dil), group=group)
    y = run_node("ConvTranspose", {"x": x, "w": w, "b": b}, attrs, consts=("w", "b") if const else ())
    pb, out_sp = _convt_geometry(xs, ks, strides, dil, extra)
    want = ref_conv_transpose(x, w, b, strides, dil, group, pb, out_sp)
    assert y.shape == want.shape
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)


def test_conv_transpose_matches_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 4, 5, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    attrs = {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1], "group": 1}
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(w, "w")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(from_onnx(model)(x), want, rtol=1e-4, atol=1e-5)


# -- pooling --------------------------------------------------------------------------------------

_POOL_GRID = [
    # (x shape, kernel, strides, dilations, pads, auto_pad, ceil_mode)
    ((1, 2, 9), (3,), (2,), (1,), (1, 1), "NOTSET", False),
    ((2, 3, 7, 8), (3, 3), (2, 2), (1, 1), (1, 1, 1, 1), "NOTSET", True),
    ((1, 2, 8, 9), (2, 3), (2, 3), (2, 1), (0, 1, 1, 0), "NOTSET", True),
    ((1, 2, 6, 7), (3, 2), (3, 2), (1, 1), (0, 0, 0, 0), "SAME_UPPER", False),
    ((1, 2, 6, 7), (2, 3), (1, 2), (1, 1), (0, 0, 0, 0), "SAME_LOWER", False),
    ((1, 2, 6, 7), (3, 3), (2, 1), (1, 1), (0, 0, 0, 0), "VALID", False),
    ((1, 1, 10, 10), (3, 3), (3, 3), (1, 1), (1, 1, 1, 1), "NOTSET", True),   # last window starts on pad
    ((1, 2, 5, 4, 6), (2, 3, 2), (2, 1, 2), (1, 1, 2), (1, 0, 1, 0, 1, 1), "NOTSET", True),
]


def _pool_attrs(ks, strides, dil, pads, auto, ceil, dilations=True, ceil_ok=True):
    a = {"kernel_shape": list(ks), "strides": list(strides)}
    if dilations:
        a["dilations"] = list(dil)
    if auto == "NOTSET":
        a["pads"] = list(pads)
    else:
        a["auto_pad"] = auto
    if ceil_ok:
        a["ceil_mode"] = int(ceil)
    return a


@pytest.mark.parametrize("case", range(len(_POOL_GRID)))
def test_maxpool_grid_with_indices(case):
    xs, ks, strides, dil, pads, auto, ceil = _POOL_GRID[case]
    nsp = len(ks)
    rng = np.random.default_rng(200 + case)
    x = rng.standard_normal(xs).astype(np.float32)
    for so in (0, 1):
        attrs = _pool_attrs(ks, strides, dil, pads, auto, ceil)
        attrs["storage_order"] = so
        y, idx = run_node("MaxPool", {"x": x}, attrs, n_out=2)
        want, want_idx = ref_pool(x, "max", ks, strides, dil, pads[:nsp], pads[nsp:], auto, ceil, storage_order=so)
        np.testing.assert_array_equal(y, want.astype(np.float32))
        np.testing.assert_array_equal(idx, want_idx)
    y1 = run_node("MaxPool", {"x": x}, _pool_attrs(ks, strides, dil, pads, auto, ceil))
    np.testing.assert_array_equal(y1, want.astype(np.float32))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_maxpool_integers(dtype):
    x = np.random.default_rng(1).integers(np.iinfo(dtype).min, np.iinfo(dtype).max, (1, 2, 6, 6)).astype(dtype)
    y = run_node("MaxPool", {"x": x}, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]})
    want, _ = ref_pool(x, "max", (3, 3), (2, 2), (1, 1), (1, 1), (1, 1))
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, want.astype(dtype))


@pytest.mark.parametrize("case", range(len(_POOL_GRID)))
@pytest.mark.parametrize("include_pad", [0, 1])
def test_averagepool_grid(case, include_pad):
    xs, ks, strides, dil, pads, auto, ceil = _POOL_GRID[case]
    nsp = len(ks)
    x = np.random.default_rng(300 + case).standard_normal(xs).astype(np.float32)
    attrs = _pool_attrs(ks, strides, dil, pads, auto, ceil)
    attrs["count_include_pad"] = include_pad
    y = run_node("AveragePool", {"x": x}, attrs, opset=19)
    want, _ = ref_pool(x, "avg", ks, strides, dil, pads[:nsp], pads[nsp:], auto, ceil, include_pad=include_pad)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", [0, 1, 3, 7])
def test_lppool_grid(case):
    xs, ks, strides, dil, pads, auto, ceil = _POOL_GRID[case]
    nsp = len(ks)
    x = np.random.default_rng(400 + case).standard_normal(xs).astype(np.float32)
    for p in (1, 2, 3):
        attrs = _pool_attrs(ks, strides, dil, pads, auto, ceil)
        attrs["p"] = p
        y = run_node("LpPool", {"x": x}, attrs, opset=18)
        want, _ = ref_pool(x, "lp", ks, strides, dil, pads[:nsp], pads[nsp:], auto, ceil, p=p)
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


def test_pool_older_opsets_ignore_newer_attributes():
    x = np.random.default_rng(5).standard_normal((1, 2, 7, 7)).astype(np.float32)
    y = run_node("AveragePool", {"x": x}, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1},
                 opset=7)
    want, _ = ref_pool(x, "avg", (3, 3), (1, 1), (1, 1), (1, 1), (1, 1), include_pad=True)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="ceil_mode"):       # AveragePool-7 has no ceil_mode
        run_node("AveragePool", {"x": x}, {"kernel_shape": [3, 3], "ceil_mode": 1}, opset=7)
    with pytest.raises(ValueError, match="dilations"):       # MaxPool-8 has no dilations
        run_node("MaxPool", {"x": x}, {"kernel_shape": [3, 3], "dilations": [2, 2]}, opset=8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_global_pools(dtype):
    x = np.random.default_rng(6).standard_normal((2, 3, 4, 5)).astype(dtype)
    x64 = x.astype(np.float64)
    for op, want in (("GlobalAveragePool", x64.mean(axis=(2, 3), keepdims=True)),
                     ("GlobalMaxPool", x64.max(axis=(2, 3), keepdims=True)),
                     ("GlobalLpPool", np.sqrt((x64 ** 2).sum(axis=(2, 3), keepdims=True)))):
        y = run_node(op, {"x": x}, {})
        assert y.dtype == dtype and y.shape == (2, 3, 1, 1)
        tol = 1e-2 if dtype == np.float16 else 1e-5
        np.testing.assert_allclose(y.astype(np.float64), want, rtol=tol, atol=tol)


def test_pool_errors():
    x = np.zeros((1, 1, 4, 4), np.float32)
    with pytest.raises(ValueError, match="storage_order"):
        run_node("MaxPool", {"x": x}, {"kernel_shape": [2, 2], "storage_order": 2}, n_out=2)
    with pytest.raises(ValueError, match="kernel_shape"):
        run_node("MaxPool", {"x": x}, {"strides": [1, 1]})
    with pytest.raises(ValueError, match="smaller than"):
        run_node("AveragePool", {"x": x}, {"kernel_shape": [5, 5]})
