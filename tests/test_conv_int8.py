"""int8 convolution: every path bit-exact against NumPy int64 / float32 references of the same
formula, and bit-identical to the scalar path for every activation and output kind."""

import copy
import math
import threading

import numpy as np
import pytest

import edgepack
from edgepack.kernels import ConvInt8, conv2d_int8, conv2d_int8_acc, pack_conv_weights, same_pads

from _fuzz_targets import _conv_ref as ref_acc  # int64 NHWC reference: ref_acc(x, w, zp, stride, pads, dilation, groups)

F32 = np.float32

# (cin, cout, kernel (kh, kw), stride, pads (t, l, b, r), dilation, groups, batch, h, w)
CASES = [
    (16, 24, (1, 1), 1, (0, 0, 0, 0), 1, 1, 1, 7, 5),      # direct GEMM
    (64, 40, (1, 1), 1, (0, 0, 0, 0), 1, 1, 3, 5, 6),      # direct, batch 3
    (8, 17, (1, 1), 2, (0, 0, 0, 0), 1, 1, 1, 9, 7),       # 1x1 stride 2 (igemm)
    (3, 5, (1, 1), 1, (0, 0, 0, 0), 1, 1, 1, 4, 4),        # 1x1 with 3 channels (padded copy)
    (16, 32, (3, 3), 1, (1, 1, 1, 1), 1, 1, 1, 8, 8),
    (17, 33, (3, 3), 2, (1, 1, 1, 1), 1, 1, 3, 9, 11),     # odd sizes, 17 channels, batch 3
    (8, 16, (3, 3), 2, (0, 0, 1, 1), 1, 1, 1, 10, 7),      # TF SAME: extra bottom/right
    (12, 20, (3, 3), 1, (2, 2, 2, 2), 2, 1, 1, 11, 9),     # dilation 2
    (4, 9, (5, 5), 1, (2, 2, 2, 2), 1, 1, 1, 7, 7),
    (3, 64, (7, 7), 2, (3, 3, 3, 3), 1, 1, 1, 31, 29),     # first layer: 7x7 s2, 3 channels
    (3, 20, (3, 3), 2, (1, 1, 1, 1), 1, 1, 3, 17, 15),     # 3x3 s2 first layer, batch 3
    (1, 8, (3, 3), 1, (1, 1, 1, 1), 1, 1, 3, 5, 5),        # one channel
    (16, 32, (3, 3), 1, (1, 1, 1, 1), 1, 2, 1, 6, 6),      # groups 2
    (6, 4, (3, 3), 1, (1, 0, 1, 2), 1, 2, 1, 5, 6),        # groups with 3 channels each, asymmetric pads
    (32, 16, (1, 1), 1, (0, 0, 0, 0), 1, 4, 1, 5, 5),      # grouped 1x1 (direct per group)
    (4, 4, (5, 5), 1, (2, 2, 2, 2), 1, 1, 1, 3, 3),        # kernel larger than the input
    (5, 7, (1, 3), 1, (0, 1, 0, 1), 1, 1, 1, 4, 9),        # 1x3
    (64, 130, (3, 3), 1, (1, 1, 1, 1), 1, 1, 1, 6, 7),     # several panels and a column tail
    (8, 16, (3, 3), 1, (1, 1, 1, 1), 1, 8, 1, 5, 5),       # depth multiplier 2 (grouped igemm)
    # depthwise (groups == Cin == Cout)
    (17, 17, (3, 3), 1, (1, 1, 1, 1), 1, 17, 3, 7, 9),
    (32, 32, (3, 3), 2, (0, 0, 1, 1), 1, 32, 1, 9, 8),     # s2 TF SAME
    (40, 40, (5, 5), 2, (2, 2, 2, 2), 1, 40, 1, 11, 13),
    (16, 16, (5, 5), 1, (4, 4, 4, 4), 2, 16, 1, 12, 12),   # 5x5 dilation 2
    (3, 3, (7, 7), 1, (3, 3, 3, 3), 1, 3, 1, 9, 9),        # generic tap count
    (24, 24, (3, 1), 2, (1, 0, 1, 0), 1, 24, 1, 8, 5),
    (1, 1, (3, 3), 1, (1, 1, 1, 1), 1, 1, 1, 6, 6),
    (130, 130, (3, 3), 1, (1, 1, 1, 1), 1, 130, 1, 5, 6),  # channel tiles + tail
    (96, 96, (3, 3), 1, (0, 0, 0, 0), 1, 96, 1, 3, 3),     # one output pixel, no padding
]
IDS = [f"c{c[0]}-{c[1]}-k{c[2][0]}x{c[2][1]}-s{c[3]}-p{''.join(map(str, c[4]))}-d{c[5]}-g{c[6]}-n{c[7]}-{c[8]}x{c[9]}"
       for c in CASES]


def ref_float(acc, xs, ws, bias, residual, act, params):
    """The documented float32 epilogue, step by step (no FMA)."""
    y = (acc.astype(F32) * F32(xs)) * ws.astype(F32)
    if bias is not None:
        y = y + bias
    if residual is not None:
        y = y + residual
    p0, p1 = (F32(p) for p in (tuple(params) + (0.0, 0.0))[:2])
    if act == "relu":
        y = np.maximum(y, F32(0))
    elif act in ("clip", "relu6"):
        y = np.minimum(np.maximum(y, p0), p1)
    elif act == "hardsigmoid":
        y = np.minimum(np.maximum(y * p0 + p1, F32(0)), F32(1))
    elif act == "hardswish":
        y = y * np.minimum(np.maximum(y * (F32(1) / F32(6)) + F32(0.5), F32(0)), F32(1))
    elif act == "leakyrelu":
        y = np.where(y < 0, y * p0, y)
    elif act == "sigmoid":
        y = (1 / (1 + np.exp(-y.astype(np.float64))))
    elif act == "silu":
        y = y.astype(np.float64) / (1 + np.exp(-y.astype(np.float64)))
    return y


def ref_quant(y, out_scale, zp, u8):
    lo, hi = (0, 255) if u8 else (-128, 127)
    v = y.astype(F32) * (F32(1) / F32(out_scale))
    v = np.minimum(np.maximum(v, F32(lo - zp)), F32(hi - zp))
    return (np.rint(v).astype(np.int64) + zp).astype(np.uint8 if u8 else np.int8)


def make_case(case, seed, u8=None):
    cin, cout, k, s, p, d, g, n, h, w = case
    rng = np.random.default_rng(seed)
    u8 = bool(seed % 2) if u8 is None else u8
    if u8:
        x = rng.integers(0, 256, (n, h, w, cin), dtype=np.int16).astype(np.uint8)
        zp = int(rng.integers(0, 256))
    else:
        x = rng.integers(-128, 128, (n, h, w, cin), dtype=np.int16).astype(np.int8)
        zp = int(rng.integers(-128, 128))
    wq = rng.integers(-127, 128, (cout, cin // g, *k), dtype=np.int16).astype(np.int8)
    wq.flat[:: max(1, wq.size // 7)] = 127  # extremes next to random values
    wq.flat[1:: max(1, wq.size // 5)] = -127
    packed = pack_conv_weights(wq, stride=s, pads=p, dilation=d, groups=g)
    return x, zp, wq, packed, rng


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_acc_exact(isa, case):
    for seed in (1, 2):  # uint8 and int8 activations
        x, zp, wq, packed, _ = make_case(case, seed)
        got = conv2d_int8_acc(x, packed, x_zero_point=zp)
        want = ref_acc(x, wq, zp, case[3], case[4], case[5], case[6])
        assert got.dtype == np.int32 and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_epilogue_float_and_quantized(isa, case):
    acts = [(None, None), ("relu", None), ("relu6", None), ("clip", (-0.5, 0.75)), ("hardswish", None),
            ("hardsigmoid", (0.2, 0.5)), ("leakyrelu", 0.1)]
    ci = CASES.index(case)
    act, params = acts[ci % len(acts)]
    x, zp, wq, packed, rng = make_case(case, 3 + ci)
    cout = case[1]
    acc = ref_acc(x, wq, zp, case[3], case[4], case[5], case[6])
    ws = (rng.random(cout) * 0.004 + 0.0005).astype(F32)
    bias = rng.standard_normal(cout).astype(F32)
    res = rng.standard_normal(acc.shape).astype(F32) if ci % 2 else None
    xs = 0.05
    y = conv2d_int8(x, packed, ws, bias, x_scale=xs, x_zero_point=zp, activation=act, act_params=params, residual=res)
    pp = {"relu6": (0, 6), "leakyrelu": (0.1,)}.get(act, params or ())
    want = ref_float(acc, xs, ws, bias, res, act, pp)
    assert y.dtype == np.float32 and y.shape == acc.shape
    np.testing.assert_array_equal(y, want)
    for u8, ozp in ((True, np.uint8(rng.integers(0, 256))), (False, np.int8(rng.integers(-128, 128)))):
        q = conv2d_int8(x, packed, ws, bias, x_scale=xs, x_zero_point=zp, activation=act, act_params=params,
                        residual=res, out_scale=0.02, out_zero_point=ozp)
        assert q.dtype == (np.uint8 if u8 else np.int8)
        np.testing.assert_array_equal(q, ref_quant(want, 0.02, int(ozp), u8))


@pytest.mark.parametrize("act", ["sigmoid", "silu"])
@pytest.mark.parametrize("case", [CASES[5], CASES[9], CASES[19], CASES[21], CASES[1]], ids=["igemm", "first", "dw3", "dw5", "direct"])
def test_exp_activations_identical_on_every_path(act, case):
    x, zp, wq, packed, rng = make_case(case, 11)
    cout = case[1]
    ws = np.full(cout, 0.004, F32)
    bias = np.linspace(-12, 12, cout).astype(F32)  # both tails
    acc = ref_acc(x, wq, zp, case[3], case[4], case[5], case[6])
    want = ref_float(acc, 0.05, ws, bias, None, act, ())
    outs = {}
    for path in edgepack.available_isas():
        with edgepack.use_isa(path):
            y = conv2d_int8(x, packed, ws, bias, x_scale=0.05, x_zero_point=zp, activation=act)
            q = conv2d_int8(x, packed, ws, bias, x_scale=0.05, x_zero_point=zp, activation=act, out_scale=0.01,
                            out_zero_point=np.int8(-20))
        assert np.abs(y - want).max() <= 1e-5 * (1 + np.abs(want)).max()
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
        outs[path] = (y, q)
    for path, (y, q) in outs.items():
        np.testing.assert_array_equal(y, outs["scalar"][0], err_msg=path)
        np.testing.assert_array_equal(q, outs["scalar"][1], err_msg=path)
    assert np.abs(outs["scalar"][1].astype(int) - ref_quant(want, 0.01, -20, False).astype(int)).max() <= 1


@pytest.mark.parametrize("case", [CASES[5], CASES[19], CASES[1]], ids=["igemm", "dw", "direct"])
def test_extreme_values(isa, case):
    # Every activation at its extreme against every weight extreme: the int16 pair sums of the
    # AVX2 / AVX-512BW sign trick and the widening multiplies of the depthwise kernels.
    cin, cout, k, s, p, d, g, n, h, w = case
    for xv, wv, u8, zp in ((255, 127, True, 0), (0, -127, True, 255), (-128, 127, False, 127), (-128, -127, False, -128),
                           (127, -127, False, -128)):
        x = np.full((n, h, w, cin), xv, np.uint8 if u8 else np.int8)
        wq = np.full((cout, cin // g, *k), wv, np.int8)
        packed = pack_conv_weights(wq, stride=s, pads=p, dilation=d, groups=g)
        np.testing.assert_array_equal(conv2d_int8_acc(x, packed, x_zero_point=zp), ref_acc(x, wq, zp, s, p, d, g))


def test_same_at_any_thread_count_and_concurrent(rng):
    cases = [CASES[4], CASES[1], CASES[19], CASES[9]]
    prev = edgepack.get_num_threads()
    try:
        for case in cases:
            x, zp, wq, packed, _ = make_case(case, 5)
            big = np.concatenate([x] * 3)  # enough work to use the threads
            ws = np.full(case[1], 0.01, F32)
            outs = []
            for t in (1, 2, 3):
                edgepack.set_num_threads(t)
                outs.append(conv2d_int8(big, packed, ws, x_scale=0.1, x_zero_point=zp, activation="silu",
                                        out_scale=0.05, out_zero_point=np.uint8(3)))
            for o in outs[1:]:
                np.testing.assert_array_equal(o, outs[0])
    finally:
        edgepack.set_num_threads(prev)
    x, zp, wq, packed, _ = make_case(CASES[5], 1)
    ref = conv2d_int8_acc(x, packed, x_zero_point=zp)
    bad = []

    def work():
        for _ in range(5):
            if not np.array_equal(conv2d_int8_acc(x, packed, x_zero_point=zp), ref):
                bad.append(1)

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not bad


def test_input_shape_changes_and_plan_reuse(isa):
    case = CASES[6]
    x, zp, wq, packed, rng = make_case(case, 2)
    for h, w in ((10, 7), (5, 12), (10, 7), (2, 2), (13, 17)):
        xi = rng.integers(-128, 128, (2, h, w, case[0]), dtype=np.int16).astype(np.int8)
        np.testing.assert_array_equal(conv2d_int8_acc(xi, packed, x_zero_point=zp),
                                      ref_acc(xi, wq, zp, case[3], case[4], case[5], case[6]))


def test_out_residual_inplace_and_strided_input(rng):
    case = CASES[4]
    x, zp, wq, packed, _ = make_case(case, 2)
    ws = np.full(case[1], 0.01, F32)
    res = rng.standard_normal(packed.output_shape(x.shape)).astype(F32)
    want = conv2d_int8(x, packed, ws, x_scale=0.1, x_zero_point=zp, residual=res, activation="relu")
    r2 = res.copy()
    got = conv2d_int8(x, packed, ws, x_scale=0.1, x_zero_point=zp, residual=r2, activation="relu", out=r2)
    assert got is r2 or np.shares_memory(got, r2)
    np.testing.assert_array_equal(r2, want)
    big = np.zeros((1, 16, 16, 32), np.int8)
    big[:, ::2, ::2, ::2] = x
    view = big[:, ::2, ::2, ::2]
    np.testing.assert_array_equal(conv2d_int8_acc(view, packed, x_zero_point=zp), conv2d_int8_acc(x, packed, x_zero_point=zp))
    q = np.empty(want.shape, np.uint8)
    r = conv2d_int8(x, packed, ws, x_scale=0.1, x_zero_point=zp, out_scale=0.1, out_zero_point=np.uint8(128), out=q)
    assert r is q or np.shares_memory(r, q)


def test_packed_properties_copy_and_same_pads():
    wq = np.arange(-60, 60, dtype=np.int8).reshape(8, 5, 3, 1)
    pw = pack_conv_weights(wq, stride=(2, 1), pads=(1, 0), dilation=2)
    assert isinstance(pw, ConvInt8)
    assert (pw.out_channels, pw.in_channels, pw.kernel_size, pw.stride, pw.pads, pw.dilation, pw.groups) == \
        (8, 5, (3, 1), (2, 1), (1, 0, 1, 0), (2, 2), 1)
    assert pw.route == "igemm" and pw.nbytes > 0 and "ConvInt8" in repr(pw)
    np.testing.assert_array_equal(pw.unpack(), wq)
    pw2 = copy.deepcopy(pw)
    np.testing.assert_array_equal(pw2.unpack(), wq)
    assert pw2.pads == pw.pads and pw2.stride == pw.stride
    assert pack_conv_weights(np.ones((4, 1, 3, 3), np.int8), groups=4).route == "depthwise"
    np.testing.assert_array_equal(pack_conv_weights(wq[:, :, :1], groups=1).unpack(), wq[:, :, :1])
    assert pack_conv_weights(np.ones((4, 8, 1, 1), np.int8)).route == "direct"
    assert pack_conv_weights(np.ones((4, 3, 7, 7), np.int8)).route == "im2row"
    first = np.arange(-90, 90, dtype=np.int8)[:4 * 3 * 5 * 3].reshape(4, 3, 5, 3)
    np.testing.assert_array_equal(pack_conv_weights(first).unpack(), first)
    dw = np.arange(-20, 25, dtype=np.int8).reshape(5, 1, 3, 3)
    np.testing.assert_array_equal(pack_conv_weights(dw, groups=5).unpack(), dw)
    assert pw.output_shape((2, 9, 4, 5)) == (2, 4, 4, 8)
    # TF SAME: output ceil(in / s), the odd pixel at the bottom / right.
    assert same_pads(224, 224, 3, 2) == (0, 0, 1, 1)
    assert same_pads(7, 7, 3, 1) == (1, 1, 1, 1)
    assert same_pads(8, 9, 5, 2, upper=False) == (2, 2, 1, 2)
    for h in (7, 8, 224):
        t, l, b, r = same_pads(h, h, 3, 2)
        p = pack_conv_weights(np.ones((1, 1, 3, 3), np.int8), stride=2, pads=(t, l, b, r))
        assert p.output_hw(h, h) == (math.ceil(h / 2),) * 2


def test_errors(rng):
    wq = rng.integers(-127, 128, (8, 4, 3, 3), dtype=np.int16).astype(np.int8)
    pw = pack_conv_weights(wq, pads=1)
    x = rng.integers(-128, 128, (1, 5, 5, 4), dtype=np.int16).astype(np.int8)
    ws = np.full(8, 0.1, F32)
    bad = wq.copy()
    bad[3, 2, 1, 0] = -128
    with pytest.raises(ValueError, match=r"w must hold int8 values in \[-127, 127\].*\(3, 2, 1, 0\)"):
        pack_conv_weights(bad)
    with pytest.raises(TypeError, match="w must be int8"):
        pack_conv_weights(wq.astype(np.int16))
    with pytest.raises(ValueError, match="w must be 4-D"):
        pack_conv_weights(wq[0])
    with pytest.raises(ValueError, match="multiple of groups"):
        pack_conv_weights(wq, groups=3)
    with pytest.raises(ValueError, match="stride must be an int in"):
        pack_conv_weights(wq, stride=0)
    with pytest.raises(ValueError, match="pads must be an int in"):
        pack_conv_weights(wq, pads=-1)
    with pytest.raises(TypeError, match="pads must be an int or a tuple"):
        pack_conv_weights(wq, pads="same")
    with pytest.raises(ValueError, match="pads must be an int, "):
        pack_conv_weights(wq, pads=(1, 2, 3))
    with pytest.raises(TypeError, match="x must be uint8 or int8"):
        conv2d_int8(x.astype(np.float32), pw, ws, x_scale=0.1)
    with pytest.raises(TypeError, match="x must be a numpy"):
        conv2d_int8([[1]], pw, ws, x_scale=0.1)
    with pytest.raises(ValueError, match=r"x must have shape \(N, H, W, Cin\) with Cin = 4"):
        conv2d_int8(x[..., :3], pw, ws, x_scale=0.1)
    with pytest.raises(ValueError, match="x must be 4-D"):
        conv2d_int8(x[0], pw, ws, x_scale=0.1)
    with pytest.raises(ValueError, match="smaller than the dilated kernel"):
        conv2d_int8(x, pack_conv_weights(wq, dilation=3), ws, x_scale=0.1)
    with pytest.raises(TypeError, match="packed must be a ConvInt8"):
        conv2d_int8(x, wq, ws, x_scale=0.1)
    with pytest.raises(ValueError, match=r"w_scale must have shape \(8,\)"):
        conv2d_int8(x, pw, np.ones(7, F32), x_scale=0.1)
    with pytest.raises(TypeError, match="w_scale must be float32"):
        conv2d_int8(x, pw, np.ones(8), x_scale=0.1)
    with pytest.raises(ValueError, match="w_scale must be a finite"):
        conv2d_int8(x, pw, float("inf"), x_scale=0.1)
    with pytest.raises(ValueError, match=r"bias must have shape \(8,\)"):
        conv2d_int8(x, pw, ws, np.ones(9, F32), x_scale=0.1)
    with pytest.raises(ValueError, match=r"residual must have shape \(1, 5, 5, 8\)"):
        conv2d_int8(x, pw, ws, x_scale=0.1, residual=np.zeros((1, 5, 5, 7), F32))
    with pytest.raises(TypeError, match="residual must be float32"):
        conv2d_int8(x, pw, ws, x_scale=0.1, residual=np.zeros((1, 5, 5, 8)))
    with pytest.raises(ValueError, match="x_scale must be a finite number > 0"):
        conv2d_int8(x, pw, ws, x_scale=0.0)
    with pytest.raises(TypeError, match="x_scale must be a number"):
        conv2d_int8(x, pw, ws, x_scale="1")
    with pytest.raises(ValueError, match="x is uint8: give its x_zero_point"):
        conv2d_int8(x.view(np.uint8), pw, ws, x_scale=0.1)
    with pytest.raises(TypeError, match="x_zero_point must have x's dtype"):
        conv2d_int8(x, pw, ws, x_scale=0.1, x_zero_point=np.uint8(3))
    with pytest.raises(ValueError, match=r"x_zero_point must be in \[-128, 127\]"):
        conv2d_int8(x, pw, ws, x_scale=0.1, x_zero_point=200)
    with pytest.raises(ValueError, match="activation must be None"):
        conv2d_int8(x, pw, ws, x_scale=0.1, activation="gelu")
    with pytest.raises(TypeError, match="activation must be None or a str"):
        conv2d_int8(x, pw, ws, x_scale=0.1, activation=1)
    with pytest.raises(ValueError, match="needs act_params"):
        conv2d_int8(x, pw, ws, x_scale=0.1, activation="clip")
    with pytest.raises(ValueError, match="lo <= hi"):
        conv2d_int8(x, pw, ws, x_scale=0.1, activation="clip", act_params=(1, 0))
    with pytest.raises(ValueError, match="takes no act_params"):
        conv2d_int8(x, pw, ws, x_scale=0.1, activation="relu", act_params=1.0)
    with pytest.raises(ValueError, match="out_zero_point needs out_scale"):
        conv2d_int8(x, pw, ws, x_scale=0.1, out_zero_point=np.uint8(1))
    with pytest.raises(TypeError, match="out_zero_point must be np.uint8 or np.int8"):
        conv2d_int8(x, pw, ws, x_scale=0.1, out_scale=0.1, out_zero_point=3)
    with pytest.raises(ValueError, match="out_scale must be a finite number > 0"):
        conv2d_int8(x, pw, ws, x_scale=0.1, out_scale=-1.0)
    with pytest.raises(TypeError, match="out must be uint8"):
        conv2d_int8(x, pw, ws, x_scale=0.1, out_scale=0.1, out_zero_point=np.uint8(0), out=np.empty((1, 5, 5, 8), np.int8))
    with pytest.raises(ValueError, match=r"out must have shape \(1, 5, 5, 8\)"):
        conv2d_int8(x, pw, ws, x_scale=0.1, out=np.empty((1, 5, 5, 9), F32))
    with pytest.raises(ValueError, match="out must be C-contiguous"):
        conv2d_int8(x, pw, ws, x_scale=0.1, out=np.empty((1, 5, 5, 16), F32)[..., ::2])


def test_empty_batch():
    pw = pack_conv_weights(np.ones((4, 3, 3, 3), np.int8), pads=1)
    y = conv2d_int8(np.zeros((0, 5, 5, 3), np.int8), pw, 1.0, x_scale=1.0)
    assert y.shape == (0, 5, 5, 4)


def test_bench_suite_smoke(capsys):
    from edgepack.benchsuite.conv_int8 import main

    assert main(["--layers", "r50 3x3 @7", "dw5x5 s2", "--quick", "--no-ort"]) == 0
    text = capsys.readouterr().out
    assert "r50 3x3 @7" in text and "lcnet dw5x5 s2" in text and "GOP/s" in text and "CPU:" in text
    with pytest.raises(ValueError, match="--threads"):
        main(["--threads", "0", "--quick", "--no-ort"])
