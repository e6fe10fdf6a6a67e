"""float32 NHWC convolution (edgepack.kernels.conv2d_f32) on every path against a float64 NumPy
reference, on an edge-case grid of geometries, with the fused epilogue.

Tolerance: |y - ref| <= 1e-5 * (sum |x w| + |bias| + |residual|) (+ activation slack below), where
the sum runs over the output's receptive field in float64. Why that bound: paths differ only by
the order of the float32 additions and by FMA (one rounding instead of two); the rounding error
of a float32 dot product is at most ~K * 2**-24 * sum |x w| and is ~sqrt(K) * 2**-24 * sum |x w|
in practice, so 1e-5 holds with a wide margin for every K of this grid (<= 5*5*65) while a
wrong tap, channel, pad or stride (an error of the size of one product) breaks it. After the
activation the bound is multiplied by its largest slope (1.5 for hardswish, <= 1.1 for the
others) and, for the exp-based ones (silu, sigmoid, tanh), 1e-6 * (1 + |ref|) is added for the
vector exp (relative error < 2e-7) and the division.
"""

import copy
import math
import threading

import numpy as np
import pytest

import edgepack
from edgepack.kernels import ConvWeightsF32, conv2d_f32, pack_conv_weights_f32

F32 = np.float32
EXP_ACTS = ("silu", "sigmoid", "tanh")


def conv_ref(x, w, bias, stride, pads, dilation, groups, residual=None):
    """float64 NHWC reference: (pre-activation output, sum of |x w| + |bias| + |residual|)."""
    x = x.astype(np.float64)
    w = w.astype(np.float64)
    n, h, wd, c = x.shape
    co, cg, kh, kw = w.shape
    sh, sw = stride
    dh, dw = dilation
    pt, pl, pb, pr = pads
    xp = np.zeros((n, h + pt + pb, wd + pl + pr, c))
    xp[:, pt:pt + h, pl:pl + wd] = x
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n, oh, ow, co))
    mag = np.zeros_like(y)
    cog = co // groups
    for g in range(groups):
        for ky in range(kh):
            for kx in range(kw):
                patch = xp[:, ky * dh: ky * dh + sh * (oh - 1) + 1: sh, kx * dw: kx * dw + sw * (ow - 1) + 1: sw,
                           g * cg:(g + 1) * cg]
                wk = w[g * cog:(g + 1) * cog, :, ky, kx]
                y[..., g * cog:(g + 1) * cog] += patch @ wk.T
                mag[..., g * cog:(g + 1) * cog] += np.abs(patch) @ np.abs(wk).T
    if bias is not None:
        y += bias
        mag += np.abs(bias)
    if residual is not None:
        y += residual
        mag += np.abs(residual)
    return y, mag


def act_ref(y, act, params):
    if act is None:
        return y
    if act == "relu":
        return np.maximum(y, 0)
    if act == "relu6":
        return np.clip(y, 0, 6)
    if act == "clip":
        return np.clip(y, params[0], params[1])
    if act == "hardswish":
        return y * np.clip(y / 6 + 0.5, 0, 1)
    if act == "hardsigmoid":
        a, b = params if params is not None else (0.2, 0.5)
        return np.clip(a * y + b, 0, 1)
    if act == "silu":
        return y / (1 + np.exp(-y))
    if act == "leakyrelu":
        a = 0.01 if params is None else (params[0] if isinstance(params, tuple) else params)
        return np.where(y < 0, a * y, y)
    if act == "sigmoid":
        return 1 / (1 + np.exp(-y))
    if act == "tanh":
        return np.tanh(y)
    raise AssertionError(act)


def check(y, x, w, bias, geo, residual=None, act=None, params=None):
    ref, mag = conv_ref(x, w, bias, geo["stride"], geo["pads"], geo["dilation"], geo["groups"], residual)
    want = act_ref(ref, act, params)
    slope = 1.5 if act == "hardswish" else 1.1
    tol = slope * 1e-5 * mag + 1e-30
    if act in EXP_ACTS:
        tol = tol + 1e-6 * (1 + np.abs(want))
    assert y.shape == want.shape and y.dtype == F32
    err = np.abs(y.astype(np.float64) - want)
    worst = np.unravel_index(np.argmax(err - tol), err.shape)
    assert np.all(err <= tol), (f"max excess at {worst}: got {y[worst]!r}, want {want[worst]!r}, "
                                f"tol {tol[worst]:.3g}")


def geometry(k=(3, 3), stride=1, pads=0, dilation=1, groups=1):
    def pair(v):
        return (v, v) if isinstance(v, int) else tuple(v)
    if isinstance(pads, int):
        p = (pads,) * 4
    elif len(pads) == 2:
        p = (pads[0], pads[1], pads[0], pads[1])
    else:
        p = tuple(pads)
    return {"k": pair(k), "stride": pair(stride), "pads": p, "dilation": pair(dilation), "groups": groups}


def make(rng, n, h, w, cin, cout, geo, scale=1.0):
    kh, kw = geo["k"]
    x = (rng.standard_normal((n, h, w, cin)) * scale).astype(F32)
    wt = (rng.standard_normal((cout, cin // geo["groups"], kh, kw)) / math.sqrt(kh * kw * cin)).astype(F32)
    b = rng.standard_normal(cout).astype(F32)
    cw = pack_conv_weights_f32(wt, stride=geo["stride"], pads=geo["pads"], dilation=geo["dilation"],
                               groups=geo["groups"])
    return x, wt, b, cw


# (n, h, w, cin, cout, geometry): every route (gemm: 1x1 s1 p0; igemm; depthwise) on channel
# counts around the 16-wide panels and vectors (1, 3, 17, 33, 65), odd sizes, batch 1 and 3.
CASES = [
    # 1x1 stride 1, no padding: the plain GEMM route
    (1, 5, 7, 17, 33, geometry(1)),
    (3, 4, 3, 1, 1, geometry(1)),
    (1, 1, 1, 3, 17, geometry(1)),
    (1, 9, 9, 64, 65, geometry(1)),
    (2, 3, 5, 33, 129, geometry(1)),
    # 1x1 strided / padded: igemm with one tap (a padded border is bias only)
    (1, 7, 7, 16, 48, geometry(1, stride=2)),
    (1, 3, 4, 4, 5, geometry(1, pads=1)),
    # 3x3 dense
    (1, 5, 5, 3, 1, geometry(3, pads=1)),
    (1, 8, 9, 17, 3, geometry(3, pads=1)),
    (3, 6, 7, 17, 17, geometry(3, pads=1)),
    (1, 11, 13, 33, 65, geometry(3, pads=1)),
    (1, 12, 12, 64, 64, geometry(3, pads=1)),
    (2, 9, 7, 16, 50, geometry(3, stride=2, pads=1)),
    (1, 9, 9, 8, 16, geometry(3, pads=2, dilation=2)),
    (1, 6, 6, 5, 7, geometry(3)),  # no padding
    # reductions long enough to be split into blocks of taps and of channels on every path
    (1, 5, 6, 300, 20, geometry(1)),
    (1, 4, 5, 257, 40, geometry(3, pads=1)),
    (2, 3, 3, 70, 70, geometry(3, pads=1)),
    # 5x5 and the 7x7 stride-2 first layer with 3 input channels
    (1, 10, 11, 6, 20, geometry(5, pads=2)),
    (2, 15, 17, 3, 64, geometry(7, stride=2, pads=3)),
    (1, 32, 32, 3, 24, geometry(3, stride=2, pads=1)),
    # non-square kernels and strides, TF "SAME" asymmetric padding (extra row/column at the end)
    (1, 7, 8, 9, 10, geometry((1, 3), pads=(0, 1))),
    (1, 7, 8, 9, 10, geometry((3, 1), stride=(2, 1), pads=(1, 0))),
    (1, 8, 8, 6, 11, geometry(3, stride=2, pads=(0, 0, 1, 1))),
    (1, 6, 9, 4, 4, geometry(2, pads=(0, 0, 1, 1))),
    # the kernel larger than the input; windows mostly or entirely in the padding
    (1, 2, 3, 5, 6, geometry(5, pads=2)),
    (1, 1, 1, 3, 4, geometry(3, pads=1)),
    (1, 2, 2, 3, 5, geometry(3, stride=3, pads=(2, 2, 2, 2))),
    # grouped convolutions and a depth multiplier (igemm per group)
    (1, 7, 7, 8, 8, geometry(3, pads=1, groups=2)),
    (2, 6, 5, 12, 36, geometry(3, stride=2, pads=1, groups=4)),
    (1, 5, 5, 6, 12, geometry(3, pads=1, groups=6)),  # depth multiplier 2
    (1, 6, 6, 32, 64, geometry(1, groups=2)),
    # depthwise: 3x3 / 5x5 / other tap counts, strides 1 and 2, dilation, asymmetric padding
    (1, 9, 9, 1, 1, geometry(3, pads=1, groups=1)),
    (1, 9, 10, 3, 3, geometry(3, pads=1, groups=3)),
    (2, 8, 7, 17, 17, geometry(3, pads=1, groups=17)),
    (1, 13, 11, 32, 32, geometry(3, stride=2, pads=1, groups=32)),
    (1, 14, 14, 33, 33, geometry(5, pads=2, groups=33)),
    (3, 9, 9, 20, 20, geometry(5, stride=2, pads=2, groups=20)),
    (1, 10, 9, 24, 24, geometry(3, pads=2, dilation=2, groups=24)),
    (1, 8, 8, 40, 40, geometry(3, stride=2, pads=(0, 0, 1, 1), groups=40)),
    (1, 9, 9, 16, 16, geometry(7, pads=3, groups=16)),
    (1, 5, 6, 65, 65, geometry((1, 3), pads=(0, 1), groups=65)),
    (1, 3, 3, 16, 16, geometry(5, pads=2, groups=16)),  # every pixel is a border pixel
    (1, 6, 6, 48, 48, geometry(3, groups=48)),  # no padding
    (1, 20, 21, 144, 144, geometry(3, pads=1, groups=144)),
]


def case_id(c):
    n, h, w, cin, cout, g = c
    kh, kw = g["k"]
    return (f"n{n}_{h}x{w}_c{cin}-{cout}_k{kh}x{kw}_s{g['stride'][0]}{g['stride'][1]}_p{''.join(map(str, g['pads']))}"
            f"_d{g['dilation'][0]}_g{g['groups']}")


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_conv_matches_reference(isa, rng, case):
    n, h, w, cin, cout, geo = case
    x, wt, b, cw = make(rng, n, h, w, cin, cout, geo)
    y = conv2d_f32(x, cw, b)
    assert y.shape == cw.output_shape(x.shape)
    check(y, x, wt, b, geo)
    # no bias
    check(conv2d_f32(x, cw), x, wt, None, geo)


ACT_CASES = [
    (None, None), ("relu", None), ("relu6", None), ("clip", (-0.5, 0.75)), ("clip", (-np.inf, 0.1)),
    ("hardswish", None), ("hardsigmoid", None), ("hardsigmoid", (0.25, 0.4)), ("silu", None),
    ("leakyrelu", None), ("leakyrelu", 0.2), ("sigmoid", None), ("tanh", None),
]
ROUTE_CASES = [
    (1, 6, 7, 33, 40, geometry(1)),                      # gemm
    (1, 7, 6, 17, 65, geometry(3, stride=2, pads=1)),    # igemm
    (2, 7, 8, 35, 35, geometry(3, pads=1, groups=35)),   # depthwise 3x3
    (1, 9, 9, 18, 18, geometry(5, pads=2, groups=18)),   # depthwise 5x5
    (1, 6, 6, 7, 7, geometry((2, 3), pads=(0, 1, 1, 1), groups=7)),  # depthwise generic taps
]


@pytest.mark.parametrize("act,params", ACT_CASES, ids=[f"{a}-{p}" for a, p in ACT_CASES])
@pytest.mark.parametrize("case", ROUTE_CASES, ids=[case_id(c) for c in ROUTE_CASES])
def test_epilogue(isa, rng, case, act, params):
    n, h, w, cin, cout, geo = case
    x, wt, b, cw = make(rng, n, h, w, cin, cout, geo, scale=3.0)  # outputs spread over every act's range
    res = rng.standard_normal(cw.output_shape(x.shape)).astype(F32)
    y = conv2d_f32(x, cw, b, activation=act, act_params=params, residual=res)
    check(y, x, wt, b, geo, residual=res, act=act, params=params)
    # the residual as the output (in place, as a ResNet block would do)
    r2 = res.copy()
    y2 = conv2d_f32(x, cw, b, activation=act, act_params=params, residual=r2, out=r2)
    assert y2 is r2
    np.testing.assert_array_equal(r2, y)


@pytest.mark.parametrize("case", [CASES[3], CASES[10], CASES[16], CASES[32], CASES[36]],
                         ids=lambda c: case_id(c))
def test_threads_bit_identical(isa, rng, case):
    n, h, w, cin, cout, geo = case
    x, wt, b, cw = make(rng, n, h, w, cin, cout, geo)
    x = np.repeat(x, 4, axis=0)  # enough work for the pool to split it
    old = edgepack.get_num_threads()
    try:
        edgepack.set_num_threads(1)
        y1 = conv2d_f32(x, cw, b, activation="silu")
        edgepack.set_num_threads(3)
        y3 = conv2d_f32(x, cw, b, activation="silu")
    finally:
        edgepack.set_num_threads(old)
    np.testing.assert_array_equal(y1, y3)


def test_large_layers_each_path(isa, rng):
    # Shapes of real layers (many tiles, several tasks, the 64-channel panels blocks).
    for n, h, w, cin, cout, geo in [(1, 28, 28, 64, 64, geometry(3, pads=1)),
                                    (1, 14, 14, 128, 96, geometry(1)),
                                    (1, 28, 28, 96, 96, geometry(3, stride=2, pads=1, groups=96))]:
        x, wt, b, cw = make(rng, n, h, w, cin, cout, geo)
        check(conv2d_f32(x, cw, b, activation="relu"), x, wt, b, geo, act="relu")


def test_strided_and_unaligned_inputs(isa, rng):
    geo = geometry(3, pads=1)
    x, wt, b, cw = make(rng, 1, 9, 8, 20, 24, geo)
    want = conv2d_f32(x, cw, b)
    big = np.zeros((1, 9, 8, 40), F32)
    big[..., ::2] = x
    np.testing.assert_array_equal(conv2d_f32(big[..., ::2], cw, b), want)  # a strided view: copied once
    buf = np.zeros(x.size + 1, F32)
    xu = buf[1:].reshape(x.shape)  # 4 bytes off every vector boundary
    xu[...] = x
    out = np.zeros(want.size + 3, F32)[3:].reshape(want.shape)
    np.testing.assert_array_equal(conv2d_f32(xu, cw, b, out=out), want)


def test_plan_follows_input_shape(isa, rng):
    # One packed weight object, input sizes changing from call to call (the plan cache).
    geo = geometry(3, stride=2, pads=(0, 0, 1, 1))
    x, wt, b, cw = make(rng, 1, 9, 9, 5, 6, geo)
    for h, w in [(9, 9), (4, 7), (9, 9), (13, 2), (2, 2), (6, 6), (7, 5), (4, 7)]:
        xi = rng.standard_normal((2, h, w, 5)).astype(F32)
        check(conv2d_f32(xi, cw, b), xi, wt, b, geo)
    assert cw.plan_nbytes > 0


def test_empty_batch_and_output_shape():
    cw = pack_conv_weights_f32(np.ones((4, 2, 3, 3), F32), stride=2, pads=1)
    y = conv2d_f32(np.zeros((0, 5, 5, 2), F32), cw)
    assert y.shape == (0, 3, 3, 4)
    assert cw.output_shape((0, 5, 5, 2)) == (0, 3, 3, 4)


def test_outputs_are_aligned(rng):
    geo = geometry(3, pads=1, groups=16)
    x, wt, b, cw = make(rng, 1, 5, 5, 16, 16, geo)
    for _ in range(3):
        assert conv2d_f32(x, cw, b).ctypes.data % 64 == 0


def test_weights_object():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((12, 2, 3, 5)).astype(F32)
    cw = pack_conv_weights_f32(w, stride=(2, 1), pads=(1, 2, 0, 1), dilation=(1, 2), groups=3)
    assert isinstance(cw, ConvWeightsF32)
    assert cw.shape == (12, 2, 3, 5) and cw.in_channels == 6 and cw.out_channels == 12 and cw.groups == 3
    assert cw.stride == (2, 1) and cw.pads == (1, 2, 0, 1) and cw.dilation == (1, 2)
    assert cw.kernel_shape == (3, 5) and cw.route == "igemm" and cw.nbytes >= w.nbytes
    np.testing.assert_array_equal(cw.unpack(), w)
    for c2 in (copy.deepcopy(cw), ConvWeightsF32.from_arrays(cw.to_arrays())):
        assert repr(c2) == repr(cw)
        np.testing.assert_array_equal(c2.unpack(), w)
    dw = pack_conv_weights_f32(rng.standard_normal((7, 1, 3, 3)).astype(F32), groups=7)
    assert dw.route == "depthwise"
    np.testing.assert_array_equal(copy.deepcopy(dw).unpack(), dw.unpack())
    assert pack_conv_weights_f32(w[:, :, :1, :1], groups=3).route == "gemm"


def test_concurrent_calls_share_weights(rng):
    # Several Python threads on one weights object and new input shapes (the plan cache is locked).
    geo = geometry(3, pads=1)
    x, wt, b, cw = make(rng, 1, 12, 12, 16, 32, geo)
    inputs = [rng.standard_normal((1, 8 + i % 5, 9 + i % 3, 16)).astype(F32) for i in range(12)]
    want = [conv2d_f32(xi, cw, b) for xi in inputs]
    got = [None] * len(inputs)
    errors = []

    def work(i):
        try:
            for _ in range(5):
                got[i] = conv2d_f32(inputs[i], cw, b)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    for g, wv in zip(got, want):
        np.testing.assert_array_equal(g, wv)


# ---- errors: the argument is named, with what was expected and what came ----------------------

W = np.ones((4, 2, 3, 3), F32)


def _cw(**kw):
    return pack_conv_weights_f32(W, **kw)


PACK_ERRORS = [
    (lambda: pack_conv_weights_f32(W.astype(np.float64)), TypeError, r"w must be float32.*got float64"),
    (lambda: pack_conv_weights_f32([[1.0]]), TypeError, r"w must be a numpy.ndarray"),
    (lambda: pack_conv_weights_f32(W[0]), ValueError, r"w must be 4-D.*got 3-D"),
    (lambda: pack_conv_weights_f32(np.ones((0, 2, 3, 3), F32)), ValueError, r"every dimension >= 1"),
    (lambda: pack_conv_weights_f32(W, groups=3), ValueError, r"divisible by groups"),
    (lambda: pack_conv_weights_f32(W, groups=0), ValueError, r"groups must be an int >= 1"),
    (lambda: pack_conv_weights_f32(W, groups=2.0), TypeError, r"groups must be an int"),
    (lambda: pack_conv_weights_f32(W, stride=0), ValueError, r"stride must be .* >= 1"),
    (lambda: pack_conv_weights_f32(W, stride=(1, 2, 3)), ValueError, r"stride must be .*sequence of 3"),
    (lambda: pack_conv_weights_f32(W, stride="2"), TypeError, r"stride must be"),
    (lambda: pack_conv_weights_f32(W, stride=True), TypeError, r"stride must be"),
    (lambda: pack_conv_weights_f32(W, pads=-1), ValueError, r"pads must be"),
    (lambda: pack_conv_weights_f32(W, pads=(1, 1, 1)), ValueError, r"pads must be"),
    (lambda: pack_conv_weights_f32(W, pads=2**62), ValueError, r"pads must be .*values in \[0, 1048576\]"),
    (lambda: pack_conv_weights_f32(W, pads=2**70), ValueError, r"pads must be .*does not fit int64"),
    (lambda: pack_conv_weights_f32(W, dilation=(1, 0)), ValueError, r"dilation must be"),
    (lambda: pack_conv_weights_f32(np.full((4, 2, 3, 3), np.nan, F32)), ValueError, r"w must be finite"),
]

X = np.ones((1, 5, 5, 2), F32)
CALL_ERRORS = [
    (lambda: conv2d_f32(X.astype(np.float64), _cw()), TypeError, r"x must be float32.*got float64"),
    (lambda: conv2d_f32(X[0], _cw()), ValueError, r"x must be 4-D.*NHWC.*got 3-D"),
    (lambda: conv2d_f32(np.ones((1, 5, 5, 3), F32), _cw()), ValueError, r"C = 2.*got \(1, 5, 5, 3\)"),
    (lambda: conv2d_f32(np.ones((1, 0, 5, 2), F32), _cw()), ValueError, r"H >= 1 and W >= 1"),
    (lambda: conv2d_f32(np.ones((1, 2, 5, 2), F32), _cw()), ValueError, r"too small for kernel 3x3"),
    (lambda: conv2d_f32(X, W), TypeError, r"weights must be a ConvWeightsF32"),
    (lambda: conv2d_f32(X, _cw(), np.ones(3, F32)), ValueError, r"bias must have shape \(4,\); got \(3,\)"),
    (lambda: conv2d_f32(X, _cw(), np.ones(4, np.float64)), TypeError, r"bias must be float32"),
    (lambda: conv2d_f32(X, _cw(), activation="gelu"), ValueError, r"activation must be None, 'relu'.*got 'gelu'"),
    (lambda: conv2d_f32(X, _cw(), activation=1), TypeError, r"activation must be None or a str"),
    (lambda: conv2d_f32(X, _cw(), activation="clip"), ValueError, r"'clip' needs act_params=\(lo, hi\)"),
    (lambda: conv2d_f32(X, _cw(), activation="clip", act_params=(1, 0)), ValueError, r"lo <= hi"),
    (lambda: conv2d_f32(X, _cw(), activation="clip", act_params=(0, np.nan)), ValueError, r"act_params"),
    (lambda: conv2d_f32(X, _cw(), activation="relu", act_params=1.0), ValueError, r"act_params must be None"),
    (lambda: conv2d_f32(X, _cw(), activation="hardsigmoid", act_params=(1.0,)), ValueError, r"got 1 value"),
    (lambda: conv2d_f32(X, _cw(), activation="leakyrelu", act_params="x"), TypeError, r"act_params must be"),
    (lambda: conv2d_f32(X, _cw(), activation="leakyrelu", act_params=np.inf), ValueError, r"finite"),
    (lambda: conv2d_f32(X, _cw(), act_params=1.0), ValueError, r"act_params given without an activation"),
    (lambda: conv2d_f32(X, _cw(pads=1), residual=np.ones((1, 3, 3, 4), F32)), ValueError,
     r"residual must have the output's shape \(1, 5, 5, 4\); got \(1, 3, 3, 4\)"),
    (lambda: conv2d_f32(X, _cw(), out=np.ones((1, 3, 3, 5), F32)), ValueError, r"out must have shape \(1, 3, 3, 4\)"),
    (lambda: conv2d_f32(X, _cw(), out=np.ones((1, 3, 3, 8), F32)[..., ::2]), ValueError, r"out must be C-contiguous"),
    (lambda: conv2d_f32(X, _cw(), out=np.ones((1, 3, 3, 4), np.float64)), TypeError, r"out must be float32"),
]


@pytest.mark.parametrize("fn,exc,msg", PACK_ERRORS + CALL_ERRORS)
def test_errors(fn, exc, msg):
    with pytest.raises(exc, match=msg):
        fn()


def test_out_aliasing_rules():
    cw = pack_conv_weights_f32(np.ones((2, 2, 1, 1), F32))
    x = np.ones((1, 4, 4, 2), F32)
    with pytest.raises(ValueError, match="out must not share memory with x"):
        conv2d_f32(x, cw, out=x)
    buf = np.zeros(40, F32)
    res, out = buf[:32].reshape(1, 4, 4, 2), buf[8:].reshape(1, 4, 4, 2)
    with pytest.raises(ValueError, match="must not partly overlap"):
        conv2d_f32(x, cw, residual=res, out=out)
    ro = np.zeros((1, 4, 4, 2), F32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out must be writeable"):
        conv2d_f32(x, cw, out=ro)


@pytest.mark.parametrize("ort", [False, True])
def test_bench_smoke(capsys, ort):
    """`edgepack bench conv_f32` runs end to end on one small layer (no timing is asserted)."""
    if ort:
        pytest.importorskip("onnx")
        pytest.importorskip("onnxruntime")
    from edgepack.benchsuite.conv_f32 import main

    args = ["--quick", "--layers", "lcnet dw3x3/2 64"] + ([] if ort else ["--no-ort"])
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "lcnet dw3x3/2 64 56>28" in out and "depthwise" in out and "CPU:" in out
    if ort:
        assert "disagree" not in out and "x conv over all layers" in out
    with pytest.raises(ValueError, match="matches no layer"):
        main(["--layers", "no such layer"])
