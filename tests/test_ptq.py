"""Post-training int8 quantization: observers, edgepack.quantize, QLinear/QConv2d, the report,
save/load, and the issue's Must show on scikit-learn digits (accuracy and file size)."""

import os
import sys

import numpy as np
import pytest

import edgepack
from edgepack import nn
from edgepack.nn import functional as F
from edgepack.nn.quantized import QConv2d, QLinear, quantize_u8, quantize_weight
from edgepack.ptq import observers as ob

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))
import digits_models as dm  # noqa: E402


# -- NumPy references (the linear_int8 contract: exact int products, float32 epilogue
#    (acc * x_scale) * w_scale + bias in that order) --------------------------------------------

def ref_dynamic(x, wq, ws, b=None, act=None):
    x = np.asarray(x, np.float32)
    amax = np.abs(x).max(axis=1)
    s = (amax / np.float32(127)).astype(np.float32)
    s[amax == 0] = 1
    q = np.rint(x / s[:, None]).astype(np.int64)
    acc = (q @ wq.astype(np.int64).T).astype(np.float32)
    y = (acc * s[:, None]) * ws[None, :]
    if b is not None:
        y = y + b
    return np.maximum(y, 0) if act == "relu" else y


def ref_static(x, wq, ws, xs, zp, b=None, act=None):
    q = ob.quantize_affine(x, xs, zp).astype(np.int64) - zp
    acc = (q @ wq.astype(np.int64).T).astype(np.float32)
    y = (acc * np.float32(xs)) * ws[None, :]
    if b is not None:
        y = y + b
    return np.maximum(y, 0) if act == "relu" else y


def quant_err(x, lo, hi):
    s, z = ob.qparams_from_range(lo, hi)
    return float(np.mean((ob.fake_quantize(x, s, z) - x) ** 2))


@pytest.fixture(scope="module")
def digits():
    return dm.split()


@pytest.fixture(scope="module")
def mlp():
    return dm.mlp()


@pytest.fixture(scope="module")
def cnn():
    return dm.cnn()


def acc(model, x, y):
    return float((np.asarray(model.predict(x)).argmax(axis=1) == y).mean() * 100)


# -- observers -------------------------------------------------------------------------------------

def test_minmax_exact_and_streaming(rng):
    x = rng.normal(1.0, 2.0, 10_000).astype(np.float32)
    o = ob.MinMaxObserver()
    for part in np.array_split(x, 7):
        o.update(part)
    assert o.range() == (float(x.min()), float(x.max()))
    s, z = o.qparams()
    assert s == pytest.approx((x.max() - x.min()) / 255, rel=1e-6)
    assert z == round(-float(x.min()) / s)
    # zero is exact whatever the range: padding and ReLU zeros stay 0
    assert ob.fake_quantize(np.zeros(3, np.float32), s, z).tolist() == [0, 0, 0]
    # non-negative data: range starts at 0, zero point 0
    p = ob.MinMaxObserver().update(np.abs(x))
    assert p.range()[0] == 0.0 and p.qparams()[1] == 0


def test_percentile_on_normal(rng):
    x = rng.standard_normal(400_000).astype(np.float32)
    o = ob.PercentileObserver(99.9)
    for part in np.array_split(x, 4):  # later chunks widen the range: histogram merges bins
        o.update(part)
    lo, hi = o.range()
    assert hi == pytest.approx(np.percentile(x, 99.9), rel=0.02)
    assert lo == pytest.approx(np.percentile(x, 0.1), rel=0.02)
    assert hi < x.max()


@pytest.mark.parametrize("method", ["entropy", "mse", "percentile"])
def test_heavy_tail_is_clipped(rng, method):
    # Student-t with 4 degrees of freedom: the max is ~40x the bulk's spread, so the min-max
    # scale wastes most levels.  (With 2 degrees of freedom the variance is infinite and keeping
    # the outliers IS the least-squares choice.)
    x = rng.standard_t(4, 200_000).astype(np.float32)
    lo, hi = ob.make_observer(method, percentile=99.9).update(x).range()
    assert hi > np.percentile(x, 99) and lo < np.percentile(x, 1)  # the bulk stays inside
    if method == "mse":
        # Least squares clips less than KL or a percentile (an outlier's clipping error grows
        # with its square), but it clips, and its error is lower than min-max's.
        assert hi < 0.9 * x.max() and lo > 0.9 * x.min(), (lo, hi)
        assert quant_err(x, lo, hi) < 0.9 * quant_err(x, float(x.min()), float(x.max()))
    else:
        assert max(hi, -lo) < 0.5 * float(np.abs(x).max()), (lo, hi)


def test_mse_error_not_above_minmax_on_several_distributions(rng):
    data = {
        "normal": rng.standard_normal(50_000),
        "uniform": rng.uniform(-1, 3, 50_000),
        "relu": np.maximum(rng.standard_normal(50_000), 0),
        "laplace": rng.laplace(0, 1, 50_000),
    }
    for name, x in data.items():
        x = x.astype(np.float32)
        lo, hi = ob.MSEObserver().update(x).range()
        e_mse = quant_err(x, lo, hi)
        e_mm = quant_err(x, float(x.min()), float(x.max()))
        assert e_mse <= e_mm * 1.001, (name, e_mse, e_mm)


def test_entropy_keeps_few_level_data_unclipped():
    # 17 pixel levels (digits / 16): the KL search alone would cut at the first occupied bin.
    x = (np.arange(17, dtype=np.float32) / 16).repeat(100)
    lo, hi = ob.EntropyObserver().update(x).range()
    assert lo == 0 and hi >= 0.999


def test_entropy_drops_exact_zeros():
    # Half exact zeros (like a ReLU's output) must not pull the cut down.
    x = np.concatenate([np.zeros(50_000), np.linspace(0, 1, 50_000)]).astype(np.float32)
    lo, hi = ob.EntropyObserver().update(x).range()
    assert hi > 0.9


def test_observer_errors():
    with pytest.raises(ValueError, match="no data"):
        ob.MinMaxObserver().range()
    with pytest.raises(ValueError, match="NaN or Inf"):
        ob.MinMaxObserver().update(np.array([1.0, np.nan], np.float32))
    with pytest.raises(TypeError, match="floating point"):
        ob.MinMaxObserver().update(np.array([1, 2]))
    with pytest.raises(ValueError, match="percentile"):
        ob.PercentileObserver(10)
    with pytest.raises(ValueError, match="method"):
        ob.make_observer("kl")


def test_all_zero_data():
    for m in ob.METHODS:
        o = ob.make_observer(m).update(np.zeros(10, np.float32))
        assert o.range() == (0.0, 0.0)
        assert o.qparams() == (1.0, 0)


# -- the int8 layers -------------------------------------------------------------------------------

def test_quantize_weight_per_channel_and_tensor(rng):
    w = rng.standard_normal((6, 5)).astype(np.float32) * np.arange(1, 7, dtype=np.float32)[:, None]
    q, s = quantize_weight(w, per_channel=True)
    assert q.dtype == np.int8 and q.min() >= -127
    assert np.array_equal(np.abs(q).max(axis=1), np.full(6, 127))
    qt, st = quantize_weight(w, per_channel=False)
    assert np.all(st == st[0]) and np.abs(qt).max() == 127
    # per channel is more precise on channels of different magnitudes
    err = lambda q, s: np.abs(q * s[:, None] - w).sum()  # noqa: E731
    assert err(q, s) < err(qt, st)
    z, sz = quantize_weight(np.zeros((2, 3), np.float32))
    assert np.all(z == 0) and np.all(sz == 1)


def test_qlinear_bit_exact_vs_numpy(rng, isa):
    lin = nn.Linear.from_weights(rng.standard_normal((19, 37)).astype(np.float32),
                                 rng.standard_normal(19).astype(np.float32))
    x = rng.standard_normal((13, 37)).astype(np.float32) * 3
    x[2] = 0  # an all-zero row: scale 1
    for act in (None, "relu"):
        d = QLinear.from_float(lin, activation=act)
        assert np.array_equal(d(x), ref_dynamic(x, d.weight_q, d.w_scale, d.bias, act))
        s = QLinear.from_float(lin, activations="static", x_scale=0.05, x_zero_point=100, activation=act)
        want = ref_static(x, s.weight_q, s.w_scale, 0.05, 100, s.bias, act)
        assert np.array_equal(s(x), want)
        big = np.tile(x, (40, 1))  # >= 4096 values: NumPy quantizer path, same values
        assert np.array_equal(s(big), np.tile(want, (40, 1)))
    assert "int8 gemm" in d.kernel_path() and isa in d.kernel_path()
    # leading dims are kept
    assert d(x.reshape(13, 1, 37)).shape == (13, 1, 19)


def test_quantize_u8_matches_affine_and_rejects_nan(rng):
    x = (rng.standard_normal(5000) * 10).astype(np.float32)
    x[:4] = [0.125, 0.375, -0.125, 1e30]  # ties to even, saturation
    assert np.array_equal(quantize_u8(x, 0.25, 7), ob.quantize_affine(x, 0.25, 7))
    x[10] = np.nan
    with pytest.raises(ValueError, match="index 10"):
        quantize_u8(x, 0.25, 7)


@pytest.mark.parametrize("cfg", [
    dict(in_ch=3, out_ch=8, k=3, stride=1, padding=1, dilation=1, groups=1),
    dict(in_ch=4, out_ch=6, k=3, stride=2, padding=(0, 2), dilation=1, groups=2),
    dict(in_ch=3, out_ch=5, k=(2, 3), stride=1, padding=2, dilation=2, groups=1),
    dict(in_ch=6, out_ch=6, k=3, stride=1, padding=1, dilation=1, groups=6),  # depthwise
    dict(in_ch=5, out_ch=7, k=1, stride=1, padding=0, dilation=1, groups=1),  # 1x1, no im2col
])
def test_qconv2d_matches_float_conv_on_quantized_values(rng, cfg):
    conv = nn.Conv2d(cfg["in_ch"], cfg["out_ch"], cfg["k"], cfg["stride"], cfg["padding"], cfg["dilation"],
                     cfg["groups"])
    conv.bias = rng.standard_normal(cfg["out_ch"]).astype(np.float32)
    x = rng.standard_normal((3, cfg["in_ch"], 9, 10)).astype(np.float32)
    xs, zp = 0.03, 120
    q = QConv2d.from_float(conv, activations="static", x_scale=xs, x_zero_point=zp, activation="relu")
    # Reference: float convolution of the dequantized input and weights.  Tolerance: the int8
    # path sums exact integers, the reference sums floats (float32 rounding, ~1e-5 relative).
    # Depthwise layers keep int8 weights but compute in float on the float input (by design).
    xin = x if q.depthwise else ob.fake_quantize(x, xs, zp)
    want = F.relu(F.conv2d(xin, q.dequantized_weight(), conv.bias, conv.stride,
                           conv.padding, conv.dilation, conv.groups))
    np.testing.assert_allclose(q(x), want, rtol=1e-4, atol=1e-4)
    d = QConv2d.from_float(conv)
    assert ob.sqnr_db(conv(x), d(x)) > 30
    assert "int8" in d.kernel_path()


def test_qconv2d_static_im2col_is_bit_exact(rng):
    conv = nn.Conv2d(3, 5, 3, stride=1, padding=1)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    q = QConv2d.from_float(conv, activations="static", x_scale=0.02, x_zero_point=128)
    # im2col by hand, channels last (kh, kw, c) as the layer packs it
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))  # float 0 padding == the zero point
    cols = np.stack([xp[:, :, i:i + 6, j:j + 6] for i in range(3) for j in range(3)], axis=-1)
    cols = cols.transpose(0, 2, 3, 4, 1).reshape(72, 27)
    wq = q.weight_q.transpose(0, 2, 3, 1).reshape(5, 27)
    want = ref_static(cols, wq, q.w_scale, 0.02, 128, q.bias).reshape(2, 6, 6, 5).transpose(0, 3, 1, 2)
    assert np.array_equal(q(x), want)


def test_layer_errors():
    lin = nn.Linear(4, 3)
    with pytest.raises(ValueError, match="x_scale"):
        QLinear.from_float(lin, activations="static")
    with pytest.raises(ValueError, match="x_zero_point"):
        QLinear.from_float(lin, activations="static", x_scale=0.1, x_zero_point=300)
    with pytest.raises(ValueError, match="activation"):
        QLinear.from_float(lin, activation="tanh")
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        QLinear.from_float(lin)(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"\(N, 2, H, W\)"):
        QConv2d.from_float(nn.Conv2d(2, 3, 3))(np.zeros((1, 3, 5, 5), np.float32))


# -- edgepack.quantize -----------------------------------------------------------------------------

def small_mlp(rng):
    nn.seed(3)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 4))


def test_input_model_untouched_and_layers_replaced(rng):
    m = small_mlp(rng)
    w0 = m.layers[0].weight.copy()
    x = rng.standard_normal((64, 16)).astype(np.float32)
    y0 = m(x)
    q = edgepack.quantize(m)
    assert np.array_equal(m.layers[0].weight, w0) and type(m.layers[0]) is nn.Linear
    assert np.array_equal(m(x), y0)
    kinds = [type(layer).__name__ for layer in q.layers]
    assert kinds == ["QLinear", "Identity", "QLinear", "Identity", "QLinear"]  # ReLU, GELU fused
    assert q.layers[0].activation == "relu" and q.layers[2].activation == "gelu"
    assert ob.sqnr_db(y0, q(x)) > 30


@pytest.mark.parametrize("activations", ["dynamic", "static"])
@pytest.mark.parametrize("weights", ["per_channel", "per_tensor"])
def test_modes(rng, activations, weights):
    m = small_mlp(rng)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    q = edgepack.quantize(m, x, weights=weights, activations=activations)
    assert ob.sqnr_db(m(x), q(x)) > 25
    l0 = q.layers[0]
    assert l0.activations == activations and l0.weights == weights
    if weights == "per_tensor":
        assert np.all(l0.w_scale == l0.w_scale[0])
    if activations == "static":
        s, z = ob.MinMaxObserver().update(x).qparams()
        assert (l0.x_scale, l0.x_zero_point) == (np.float32(s), z)
    rep = q.report
    assert rep.settings["activations"] == activations and rep.settings["weights"] == weights
    assert rep.quantized == ["0", "2", "4"]
    assert all(r.sqnr_db > 25 and r.cumulative_sqnr_db > 25 for r in rep.layers)
    assert rep.bytes_after < rep.bytes_before / 3


@pytest.mark.parametrize("method", ob.METHODS)
def test_static_methods_and_iterable_calibration(rng, method):
    m = small_mlp(rng)
    x = rng.standard_normal((512, 16)).astype(np.float32)
    q = edgepack.quantize(m, x, activations="static", method=method)
    assert ob.sqnr_db(m(x), q(x)) > 20
    # batches from an iterable give the same calibration as the array
    q2 = edgepack.quantize(m, iter(np.array_split(x, 2)), activations="static", method=method,
                           report_batch=x)
    assert q2.layers[2].x_scale == pytest.approx(q.layers[2].x_scale, rel=1e-2)


def test_static_without_calibration_is_a_value_error(rng):
    with pytest.raises(ValueError, match="calibration"):
        edgepack.quantize(small_mlp(rng), activations="static")
    with pytest.raises(ValueError, match="calibration"):
        edgepack.quantize(small_mlp(rng), [], activations="static")


@pytest.mark.parametrize("kw, match", [
    (dict(weights="per_row"), "weights"),
    (dict(activations="int4"), "activations"),
    (dict(method="kl"), "method"),
    (dict(percentile=20), "percentile"),
    (dict(skip=["nope"]), "skip"),
    (dict(skip=[3]), "skip"),
    (dict(keep_float_below_db="high"), "keep_float_below_db"),
    (dict(keep_float_below_db=20.0), "keep_float_below_db"),  # no data to measure with
])
def test_argument_errors_name_the_argument(rng, kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        edgepack.quantize(small_mlp(rng), **kw)


def test_model_type_error():
    with pytest.raises(TypeError, match="model"):
        edgepack.quantize(np.zeros(3))


def test_skip_by_name_and_class(rng):
    m = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2)))
    q = edgepack.quantize(m, skip=["0"])
    assert type(q.layers[0]) is nn.Linear and type(q.layers[1]) is nn.ReLU  # not fused either
    assert type(q.layers[2].layers[0]) is QLinear
    assert q.report.skipped == ["0"]
    q = edgepack.quantize(m, skip=["2"])  # a container covers its children
    assert [type(l) for l in q.layers[2].layers] == [nn.Linear, nn.Linear]
    q = edgepack.quantize(m, skip=(nn.Sequential,))  # the root is a Sequential: everything
    assert not q.report.quantized
    q = edgepack.quantize(m, skip=nn.Linear)
    assert len(q.report.skipped) == 3


def test_keep_float_below_db(rng):
    m = small_mlp(rng)
    x = rng.standard_normal((200, 16)).astype(np.float32)
    q = edgepack.quantize(m, x, keep_float_below_db=500.0)  # nothing reaches 500 dB
    assert q.report.kept_float == ["0", "2", "4"]
    assert np.array_equal(q(x), m(x))
    assert "3 kept float (SQNR < 500.0 dB)" in str(q.report)
    # a threshold between the layers' SQNRs keeps exactly the layers below it
    base = edgepack.quantize(m, x, weights="per_tensor").report
    sq = {r.name: r.sqnr_db for r in base.layers}
    worst = min(sq, key=sq.get)
    thr = (sq[worst] + sorted(sq.values())[1]) / 2
    q = edgepack.quantize(m, x, weights="per_tensor", keep_float_below_db=thr)
    assert q.report.kept_float == [worst] and type(q.layers[int(worst)]) is nn.Linear
    if int(worst) < 4:
        assert type(q.layers[int(worst) + 1]) in (nn.ReLU, nn.GELU)  # its activation stays too
    assert q.report.bytes_after > base.bytes_after
    assert ob.sqnr_db(m(x), q(x)) > ob.sqnr_db(m(x), edgepack.quantize(m, x, weights="per_tensor")(x)) - 1


def test_report_in_summary(rng):
    m = small_mlp(rng)
    x = rng.standard_normal((50, 16)).astype(np.float32)
    q = edgepack.quantize(m, x)
    text = q.summary((1, 16), print_fn=None)
    assert "QLinear" in text and "int8 gemm" in text
    assert "int8 quantization: weights per_channel, activations dynamic" in text
    assert "model output SQNR" in text and "on 50 rows" in text
    d = q.report.to_dict()
    assert d["bytes_before"] == sum(layer.nbytes() for layer in m.layers)
    assert len(d["layers"]) == 3
    # without data there are no SQNR figures, but the bytes are there
    r = edgepack.quantize(m).report
    assert r.layers[0].sqnr_db is None and "SQNR not measured" in str(r)


@pytest.mark.parametrize("activations", ["dynamic", "static"])
def test_save_load_round_trip_bit_identical(tmp_path, rng, activations):
    nn.seed(5)
    m = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=4, padding=1),
                      nn.SiLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    x = rng.standard_normal((5, 2, 8, 8)).astype(np.float32)
    q = edgepack.quantize(m, x, activations=activations, method="mse")
    path = str(tmp_path / "q.edgepack")
    edgepack.save(q, path)
    r = edgepack.load(path)
    assert [type(l).__name__ for l in r.layers] == [type(l).__name__ for l in q.layers]
    assert np.array_equal(r(x), q(x))
    assert r.layers[0].get_config() == q.layers[0].get_config()
    assert r.layers[2].kernel_path().startswith("numpy f32 depthwise (int8 weights)")


# -- Must show: digits -----------------------------------------------------------------------------

@pytest.mark.parametrize("activations, method", [("dynamic", "minmax"), ("static", "minmax"),
                                                 ("static", "percentile"), ("static", "entropy"),
                                                 ("static", "mse")])
@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_digits_int8_accuracy_within_half_a_point(digits, mlp, cnn, which, activations, method):
    xtr, xte, ytr, yte = digits
    model, f = (mlp, lambda x: x) if which == "mlp" else (cnn, dm.image)
    base = acc(model, f(xte), yte)
    assert base > 95  # the shipped float models are trained
    q = edgepack.quantize(model, f(xtr), activations=activations, method=method)
    got = acc(q, f(xte), yte)
    assert abs(got - base) <= 0.5, (which, activations, method, base, got)


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_digits_int8_file_is_3_5x_smaller(tmp_path, digits, mlp, cnn, which):
    xtr, xte, ytr, yte = digits
    model, f = (mlp, lambda x: x) if which == "mlp" else (cnn, dm.image)
    fp, qp = str(tmp_path / "f.edgepack"), str(tmp_path / "q.edgepack")
    edgepack.save(model, fp)
    q = edgepack.quantize(model, f(xtr), activations="static")
    edgepack.save(q, qp)
    ratio = os.path.getsize(fp) / os.path.getsize(qp)
    assert ratio >= 3.5, ratio
    r = edgepack.load(qp)
    assert np.array_equal(r(f(xte)), q(f(xte)))


def test_transformer_layers_quantize_and_round_trip(tmp_path, rng):
    # Linear children outside a Sequential (attention projections, the feed-forward pair) are
    # quantized too, without fusion, and the tree saves and loads.
    nn.seed(2)
    m = nn.Sequential(nn.TransformerEncoderLayer(32, 4), nn.Linear(32, 5))
    x = rng.standard_normal((3, 6, 32)).astype(np.float32)
    q = edgepack.quantize(m, x, activations="static", method="entropy")
    assert len(q.report.quantized) == 7 and isinstance(q.layers[0].self_attn.q_proj, QLinear)
    assert ob.sqnr_db(m(x), q(x)) > 25
    path = str(tmp_path / "t.edgepack")
    edgepack.save(q, path)
    assert np.array_equal(edgepack.load(path)(x), q(x))
    f = edgepack.ptq.to_float(q)
    assert type(f.layers[0].self_attn.q_proj) is nn.Linear
