"""edgepack.prune, edgepack.sensitivity and the sparse layers they produce."""

import os
import sys

import numpy as np
import pytest

import edgepack as ep
from edgepack import nn
from edgepack.nn.sparse import SparseConv2d, SparseLinear, quantize_sparse, sparsify
from edgepack.prune import cubic_schedule, magnitude_masks, nm_mask
from edgepack.prune.masks import lamp_scores



def mlp(sizes, seed=0):
    nn.seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def dense_of(layer):
    return layer.dense_weight() if hasattr(layer, "dense_weight") else layer.weight


def weights(model):
    kinds = (nn.Linear, SparseLinear, nn.Conv2d, SparseConv2d)
    return {n: dense_of(m) for n, m in model.named_modules() if isinstance(m, kinds)}


@pytest.fixture(scope="module")
def digits():
    from edgepack.data import load_digits, train_test_split

    x, y = load_digits()
    return train_test_split(x, y, 0.3, 0)


def acc(model, x, y):
    return float(np.mean(model.predict(x).argmax(-1) == y))


# -- schedule and masks -------------------------------------------------------------------------

def test_cubic_schedule_follows_zhu_gupta():
    s = cubic_schedule(0.9, 5)
    assert len(s) == 5 and s[-1] == pytest.approx(0.9)
    assert all(b >= a for a, b in zip(s, s[1:]))
    assert s[0] == pytest.approx(0.9 * (1 - 0.8 ** 3))
    # Larger steps first: the first increment exceeds the last.
    assert s[0] > s[-1] - s[-2]
    assert cubic_schedule(0.5, 1) == [0.5]
    with pytest.raises(ValueError, match="steps"):
        cubic_schedule(0.5, 0)
    with pytest.raises(ValueError):
        cubic_schedule(1.0, 3)


def test_magnitude_masks_global_and_layer(rng):
    a = rng.standard_normal((30, 20)).astype(np.float32)
    b = 0.1 * rng.standard_normal((10, 50)).astype(np.float32)
    g = magnitude_masks({"a": a, "b": b}, 0.7)
    assert sum((~m).sum() for m in g.values()) == round(0.7 * (a.size + b.size))
    # Global: one threshold, so every kept weight is at least as large as every dropped one.
    kept = np.concatenate([np.abs(a[g["a"]]), np.abs(b[g["b"]])])
    dropped = np.concatenate([np.abs(a[~g["a"]]), np.abs(b[~g["b"]])])
    assert kept.min() >= dropped.max()
    assert g["b"].mean() < g["a"].mean()  # the small-weight layer loses more
    lay = magnitude_masks({"a": a, "b": b}, 0.7, scope="layer")
    for n, w in (("a", a), ("b", b)):
        assert (~lay[n]).sum() == round(0.7 * w.size)
    # LAMP keeps every layer alive even when one layer's weights are all tiny.
    tiny = 1e-4 * rng.standard_normal((8, 8)).astype(np.float32)
    lm = magnitude_masks({"a": a, "t": tiny}, 0.9, criterion="lamp")
    assert lm["t"].sum() >= 1
    assert magnitude_masks({"a": a, "t": tiny}, 0.9)["t"].sum() == 0
    with pytest.warns(UserWarning, match="lamp"):
        small_last = nn.Linear.from_weights(1e-4 * a[:, :30].T.copy())
        ep.prune(nn.Sequential(nn.Linear.from_weights(a), nn.ReLU(), small_last), 0.5)
    s = lamp_scores(a)
    assert s.max() == pytest.approx(1.0)
    assert np.array_equal(np.argsort(s.ravel(), kind="stable"), np.argsort(np.abs(a).ravel(), kind="stable"))


def test_nm_mask_keeps_two_largest_of_four(rng):
    w = rng.standard_normal((6, 16)).astype(np.float32)
    m = nm_mask(w)
    g = m.reshape(6, 4, 4)
    assert np.all(g.sum(-1) == 2)
    aw = np.abs(w).reshape(6, 4, 4)
    assert np.all(np.where(g, aw, np.inf).min(-1) >= np.where(~g, aw, -np.inf).max(-1))
    with pytest.raises(ValueError, match="multiple of 4"):
        nm_mask(np.ones((2, 6), np.float32))


# -- SparseLinear ---------------------------------------------------------------------------------

def _pruned_linear(rng, n=40, k=70, density=0.1):
    w = rng.standard_normal((n, k)).astype(np.float32)
    w[rng.random(w.shape) > density] = 0
    return nn.Linear.from_weights(w, rng.standard_normal(n).astype(np.float32))


def test_sparse_linear_matches_dense_and_saves_packed(rng, tmp_path, isa):
    lin = _pruned_linear(rng)
    sl = SparseLinear.from_linear(lin)
    x = rng.standard_normal((5, 3, 70)).astype(np.float32)
    ref = lin(x)
    # float32 sums in another order: within 1e-5 of the sum of |products| (spmm's documented bound)
    bound = 1e-5 * (np.abs(x) @ np.abs(lin.weight).T + np.abs(lin.bias)) + 1e-7
    assert np.all(np.abs(sl(x) - ref) <= bound)
    assert sl.kernel_path().startswith("sparse csr f32")
    assert sl.num_parameters() == np.count_nonzero(lin.weight) + 40
    dense_path, sparse_path = tmp_path / "d.ep", tmp_path / "s.ep"
    ep.save(nn.Sequential(lin), dense_path)
    ep.save(nn.Sequential(sl), sparse_path)
    assert os.path.getsize(sparse_path) < 0.3 * os.path.getsize(dense_path)
    back = ep.load(sparse_path)[0]
    assert isinstance(back, SparseLinear)
    assert np.array_equal(back(x), sl(x))
    assert np.array_equal(back.dense_weight(), lin.weight)
    q = sl.to_int8()
    assert q.kernel_path().startswith("sparse csr int8")
    ep.save(nn.Sequential(q), sparse_path)
    qb = ep.load(sparse_path)[0]
    assert np.array_equal(qb(x), q(x))
    # int8 weights: per-row scale max|w|/127, so each weight is off by <= scale/2
    assert np.all(np.abs(q.dense_weight() - lin.weight) <= q.sparse.scale[:, None] / 2 + 1e-7)


def test_sparse_linear_2_4_and_bad_files(rng):
    w = rng.standard_normal((8, 16)).astype(np.float32) * nm_mask(rng.standard_normal((8, 16)))
    sl = SparseLinear.from_weights(w, None, format="2:4")
    assert sl.kernel_path().startswith("sparse 2:4 f32")
    cfg, t = sl.get_config(), sl.get_tensors()
    again = SparseLinear.from_config(cfg, t)
    x = rng.standard_normal((3, 16)).astype(np.float32)
    assert np.array_equal(again(x), sl(x))
    with pytest.raises(ValueError):
        SparseLinear.from_config({**cfg, "out_features": 9}, t)
    with pytest.raises(ValueError, match="unexpected"):
        SparseLinear.from_config(cfg, {**t, "junk": np.zeros(2, np.float32)})
    with pytest.raises(ValueError, match="values"):
        SparseLinear.from_config(cfg, {**t, "values": t["values"].astype(np.float64)})
    with pytest.raises(ValueError, match="in_features"):
        sl(np.zeros((2, 15), np.float32))


def test_sparsify_modes_and_fused_relu(rng):
    lin = _pruned_linear(rng, 32, 24, 0.2)
    model = nn.Sequential(lin, nn.ReLU(), nn.Linear(32, 5))
    x = rng.standard_normal((4, 24)).astype(np.float32)
    ref = model(x)
    import copy

    assert type(sparsify(copy.deepcopy(model), mode="never")[0]) is nn.Linear
    s = sparsify(copy.deepcopy(model))
    assert type(s[0]) is SparseLinear and s[0].activation == "relu" and type(s[1]) is nn.Identity
    assert type(s[2]) is nn.Linear  # fully dense: stays on the dense kernel
    np.testing.assert_allclose(s(x), ref, rtol=1e-5, atol=1e-5)
    a = sparsify(copy.deepcopy(model), mode="always")
    assert type(a[2]) is SparseLinear
    assert "sparse csr f32" in s.summary((1, 24), print_fn=None)
    q = quantize_sparse(copy.deepcopy(s))
    assert q[0].dtype == "int8"
    meas = sparsify(copy.deepcopy(model), mode="measure")  # machine-dependent choice, same result
    assert type(meas[0]) in (nn.Linear, SparseLinear)
    np.testing.assert_allclose(meas(x), ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="mode"):
        sparsify(model, mode="fast")


@pytest.mark.parametrize("geom", [dict(kernel_size=3, padding=1), dict(kernel_size=1),
                                  dict(kernel_size=(2, 3), stride=2, padding=(0, 1, 2, 1), dilation=2)])
def test_sparse_conv2d_both_runs_match_dense(rng, tmp_path, geom):
    conv = nn.Conv2d(5, 7, **geom)
    conv.weight[rng.random(conv.weight.shape) < 0.85] = 0
    x = rng.standard_normal((2, 5, 9, 8)).astype(np.float32)
    ref = np.maximum(conv(x), 0)
    for run in ("sparse", "dense"):
        sc = SparseConv2d.from_conv(conv, run=run, activation="relu")
        np.testing.assert_allclose(sc(x), ref, rtol=1e-5, atol=1e-5)
        ep.save(nn.Sequential(sc), tmp_path / "c.ep")
        back = ep.load(tmp_path / "c.ep")[0]
        assert type(back) is SparseConv2d and back.run == run
        assert np.array_equal(back(x), sc(x))
        assert np.array_equal(back.dense_weight(), conv.weight)
    assert sc.kernel_path().startswith("numpy f32 (stored csr f32")
    q = SparseConv2d.from_conv(conv).to_int8()
    np.testing.assert_allclose(q(x), conv(x), atol=0.05 * np.abs(conv(x)).max())
    with pytest.raises(ValueError, match="groups"):
        SparseConv2d.from_conv(nn.Conv2d(4, 4, 3, groups=2))


def test_prune_cnn_stores_convs_sparse(rng, tmp_path):
    nn.seed(1)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                          nn.GlobalAvgPool2d(), nn.Linear(16, 4))
    p = ep.prune(model, 0.9, scope="layer", skip=("5",))
    assert type(p[0]) is SparseConv2d and type(p[2]) is SparseConv2d and p[2].run == "dense"
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    masked = ep.prune(model, 0.9, scope="layer", skip=("5",), sparse_kernels="never")
    np.testing.assert_allclose(p(x), masked(x), rtol=1e-5, atol=1e-6)
    ep.save(p, tmp_path / "p.ep")
    ep.save(model, tmp_path / "m.ep")
    assert os.path.getsize(tmp_path / "p.ep") < 0.4 * os.path.getsize(tmp_path / "m.ep")
    assert "stored csr f32" in p.summary((1, 3, 6, 6), print_fn=None)


# -- prune ----------------------------------------------------------------------------------------

def test_prune_unstructured_global_exact_and_copy(rng):
    model = mlp((20, 64, 48, 6))
    before = {n: w.copy() for n, w in weights(model).items()}
    p = ep.prune(model, 0.8)
    for n, w in weights(model).items():  # original untouched
        assert np.array_equal(w, before[n])
    ws = weights(p)
    total = sum(w.size for w in ws.values())
    assert sum(np.count_nonzero(w) for w in ws.values()) == total - round(0.8 * total)
    # The kept weights are the original values.
    for n, w in ws.items():
        nz = w != 0
        assert np.array_equal(w[nz], before[n][nz])
    assert not any("weight_mask" in m.__dict__ for _, m in p.named_modules())
    per_layer = ep.prune(model, 0.5, scope="layer", skip=("4",))
    wl = weights(per_layer)
    assert np.count_nonzero(wl["4"]) == wl["4"].size
    for n in ("0", "2"):
        assert np.count_nonzero(wl[n]) == wl[n].size - round(0.5 * wl[n].size)


def test_prune_2_4(rng):
    model = mlp((16, 32, 12))
    with pytest.warns(UserWarning, match="left dense"):
        p = ep.prune(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4)), 0.5, structure="2:4")
    p = ep.prune(model, 0.5, structure="2:4")
    assert all(type(m) is SparseLinear and m.format == "2:4" for m in (p[0], p[2]))
    for w in weights(p).values():
        assert np.all(np.count_nonzero(w.reshape(w.shape[0], -1, 4), axis=-1) == 2)
    with pytest.raises(ValueError, match="0.5"):
        ep.prune(model, 0.75, structure="2:4")


def test_prune_neurons_removes_dead_units_exactly(rng):
    model = mlp((10, 16, 12, 3))
    dead1, dead2 = [1, 4, 5, 9, 11, 14, 0, 7], [2, 3, 8, 10, 6, 0]
    model[0].weight[dead1] = 0
    model[0].bias[dead1] = 0
    model[2].weight[dead2] = 0
    model[2].bias[dead2] = 0
    x = rng.standard_normal((7, 10)).astype(np.float32)
    p = ep.prune(model, 0.5, structure="neurons", scope="layer")
    assert (p[0].out_features, p[2].in_features, p[2].out_features, p[4].in_features) == (8, 8, 6, 6)
    assert p[0].weight.shape == (8, 10) and p[4].weight.shape == (3, 6)
    np.testing.assert_allclose(p(x), model(x), rtol=1e-5, atol=1e-6)
    assert p.num_parameters() < 0.6 * model.num_parameters()
    g = ep.prune(model, 0.5, structure="neurons")  # global: 14 of 28 units
    assert g[0].out_features + g[2].out_features == 14
    np.testing.assert_allclose(g(x), model(x), rtol=1e-5, atol=1e-6)


def test_prune_channels_through_batchnorm_and_flatten(rng):
    nn.seed(3)
    bn = nn.BatchNorm2d(6)
    bn.running_mean = rng.standard_normal(6).astype(np.float32)
    bn.running_var = rng.random(6).astype(np.float32) + 0.5
    model = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), bn, nn.ReLU(), nn.Conv2d(6, 4, 3), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 3 * 3, 5))
    # Channels 1 and 4 of the first conv, and 0 and 3 of the second, output a constant 0 after
    # their ReLU (zero filters; BatchNorm shift made negative), so removing them is exact.
    model[0].weight[[1, 4]] = 0
    model[0].bias[[1, 4]] = 0
    bn.bias[[1, 4]] = -5.0
    bn.weight[[1, 4]] = 1.0
    bn.running_mean[[1, 4]] = 0.0
    model[3].weight[[0, 3]] = 0
    model[3].bias[[0, 3]] = -1.0
    x = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    p = ep.prune(model, 0.34, structure="channels", scope="layer")
    # 0.34 of 6 channels rounds to 2, of 4 channels to 1 (a dead one: smallest L1 norm).
    assert (p[0].out_channels, p[1].num_features, p[3].in_channels, p[3].out_channels) == (4, 4, 4, 3)
    assert p[6].in_features == 3 * 9
    p2 = ep.prune(model, 0.5, structure="channels", scope="layer", skip=("0",))
    assert p2[3].out_channels == 2 and p2[6].in_features == 2 * 9
    np.testing.assert_allclose(p2(x), model(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(p(x), model(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="no Conv2d"):
        ep.prune(mlp((4, 4, 2)), 0.5, structure="channels")


def test_gradual_masks_held_fixed_during_fine_tuning(rng, monkeypatch):
    seen = []

    def fake_train(model, x, y, *, epochs, **kw):
        for n, m in model.named_modules():
            mk = m.__dict__.get("weight_mask")
            if mk is not None:
                assert mk.shape == m.weight.shape and mk.dtype == np.float32
                assert np.all(m.weight[mk == 0] == 0)
                seen.append((n, 1 - mk.mean()))
                m.weight = m.weight + 0.01  # an optimizer that ignored the mask
        return {}

    monkeypatch.setattr(ep, "train", fake_train)
    model = mlp((12, 40, 5))
    x = rng.standard_normal((30, 12)).astype(np.float32)
    y = rng.integers(0, 5, 30)
    p = ep.prune(model, 0.8, schedule="gradual", steps=4, fine_tune=(x, y), sparse_kernels="never",
                 criterion="lamp")
    total = sum(w.size for w in weights(model).values())
    spars = [sum(s * dict(weights(model))[n].size for n, s in seen[i:i + 2]) / total
             for i in range(0, len(seen), 2)]
    np.testing.assert_allclose(spars, cubic_schedule(0.8, 4), atol=1e-3)
    nz = sum(np.count_nonzero(w) for w in weights(p).values())
    assert nz == total - round(0.8 * total)  # masks re-applied after the last fine-tune
    with pytest.raises(ValueError, match="fine_tune"):
        ep.prune(model, 0.5, schedule="gradual")
    calls = []

    def custom(m, epochs):  # e.g. distillation from a teacher
        calls.append((epochs, all(lay.__dict__.get("weight_mask") is not None for lay in (m[0], m[2]))))
        m[0].weight = m[0].weight + 1.0

    p = ep.prune(model, 0.5, schedule="gradual", steps=2, epochs=3, final_epochs=1, fine_tune=custom,
                 sparse_kernels="never")
    assert calls == [(3, True), (1, True)]
    assert sum(np.count_nonzero(w) for w in weights(p).values()) == total - round(0.5 * total)
    with pytest.raises(TypeError, match="fine_tune"):
        ep.prune(model, 0.5, fine_tune=np.zeros(3))


def test_prune_argument_errors():
    model = mlp((4, 8, 2))
    with pytest.raises(ValueError, match="structure"):
        ep.prune(model, 0.5, structure="blocks")
    with pytest.raises(ValueError, match="sparsity"):
        ep.prune(model, 1.0)
    with pytest.raises(ValueError, match="scope"):
        ep.prune(model, 0.5, scope="model")
    with pytest.raises(ValueError, match="skip"):
        ep.prune(model, 0.5, skip=("7",))
    with pytest.raises(TypeError, match="model"):
        ep.prune(np.zeros(3), 0.5)


# -- accuracy on digits (fast versions of the claims; scripts/must_show_pipeline.py runs
# the full ones over 3 seeds) ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def teacher(digits):
    xtr, xte, ytr, yte = digits
    from edgepack import train

    m = mlp((64, 512, 512, 10))
    train(m, xtr, ytr, epochs=12, batch_size=64, lr=1e-3, seed=0, progress=False)
    m.eval()
    return m


def test_gradual_90_percent_keeps_accuracy(digits, teacher, tmp_path):
    xtr, xte, ytr, yte = digits
    base = acc(teacher, xte, yte)
    assert base > 0.95
    p = ep.prune(teacher, 0.9, schedule="gradual", steps=4, epochs=2, final_epochs=4, fine_tune=(xtr, ytr))
    assert base - acc(p, xte, yte) <= 0.010
    assert any(isinstance(m, SparseLinear) for _, m in p.named_modules())
    ep.save(p, tmp_path / "p.ep")
    ep.save(teacher, tmp_path / "t.ep")
    assert os.path.getsize(tmp_path / "p.ep") < 0.35 * os.path.getsize(tmp_path / "t.ep")
    assert np.array_equal(ep.load(tmp_path / "p.ep")(xte[:50]), p(xte[:50]))


def test_half_the_neurons_keeps_accuracy_and_halves_the_file(digits, teacher, tmp_path):
    xtr, xte, ytr, yte = digits
    base = acc(teacher, xte, yte)
    p = ep.prune(teacher, 0.5, structure="neurons", scope="layer", fine_tune=(xtr, ytr), epochs=3)
    assert (p[0].out_features, p[2].out_features) == (256, 256)
    assert base - acc(p, xte, yte) <= 0.015
    ep.save(p, tmp_path / "p.ep")
    ep.save(teacher, tmp_path / "t.ep")
    assert os.path.getsize(tmp_path / "t.ep") / os.path.getsize(tmp_path / "p.ep") >= 2.0


def test_sensitivity_table_and_plot(digits, teacher, tmp_path):
    xtr, xte, ytr, yte = digits
    s = ep.sensitivity(teacher, xte, yte, sparsities=(0.0, 0.5, 0.99))
    assert list(s.drops) == ["0", "2", "4"]
    assert all(d[0] == 0.0 for d in s.drops.values())
    assert max(d[2] for d in s.drops.values()) > 5.0  # 99% of one layer hurts
    text = str(s)
    assert "baseline" in text and "99%" in text and "\n4 " in text
    s.plot(tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 1000
    ns = ep.sensitivity(teacher, xte[:100], yte[:100], sparsities=(0.5,), structure="neurons")
    assert set(ns.drops) == {"0", "2"}  # the classifier's outputs are never removed
    with pytest.raises(ValueError, match="sparsities"):
        ep.sensitivity(teacher, xte, yte, sparsities=(1.5,))


def test_prune_transformer_layers_round_trip(rng, tmp_path):
    nn.seed(2)
    model = nn.Sequential(nn.TransformerEncoderLayer(32, 4, 64), nn.Linear(32, 3))
    x = rng.standard_normal((2, 5, 32)).astype(np.float32)
    p = ep.prune(model, 0.9, scope="layer")
    kinds = {n: type(m).__name__ for n, m in p.named_modules()}
    assert kinds["0.linear1"] == kinds["0.self_attn.q_proj"] == "SparseLinear"
    masked = ep.prune(model, 0.9, scope="layer", sparse_kernels="never")
    np.testing.assert_allclose(p(x), masked(x), rtol=1e-4, atol=1e-5)
    ep.save(p, tmp_path / "t.ep")
    assert np.array_equal(ep.load(tmp_path / "t.ep")(x), p(x))


def test_quantize_gives_pruned_layers_int8_values(tmp_path):
    """edgepack.quantize on a pruned model: its SparseLinear layers run the int8 sparse kernel and
    the file shrinks, with the accuracy of the pruned float model kept."""
    from edgepack.data import load_digits, train_test_split
    x, y = load_digits()
    xtr, xte, ytr, yte = train_test_split(x, y, 0.3, 0)
    nn.seed(0)
    m = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    ep.train(m, xtr, ytr, epochs=8, lr=3e-3, seed=0, progress=False)
    p = ep.prune(m, 0.8, sparse_kernels="always")
    q = ep.quantize(p)
    kinds = [type(l).__name__ for l in q.layers if type(l).__name__ != "Identity"]
    assert kinds == ["SparseLinear", "SparseLinear"]
    assert all(l.dtype == "int8" for l in q.layers if type(l).__name__ == "SparseLinear")
    assert q.report.quantized == ["0", "2"] and "int8 sparse" in str(q.report)
    ep.save(p, tmp_path / "p.ep")
    ep.save(q, tmp_path / "q.ep")
    assert os.path.getsize(tmp_path / "q.ep") < 0.75 * os.path.getsize(tmp_path / "p.ep")
    acc = lambda mm: (mm.predict(xte).argmax(1) == yte).mean()  # noqa: E731
    assert acc(q) >= acc(p) - 0.01
    assert ep.quantize(p, skip=["0"]).layers[0].dtype == "float32"
