"""edgepack.train: gradients against finite differences (float64) for every layer type, the
training loop (determinism, masks, optimizers, losses, validation, errors) and a digits run."""

import numpy as np
import pytest

import edgepack
from edgepack import nn
from edgepack.train import autograd
from edgepack.train.losses import cross_entropy, mse


def _to64(model):
    for m in model.modules():
        for name in ("weight", "bias", "running_mean", "running_var"):
            v = getattr(m, name, None)
            if isinstance(v, np.ndarray):
                object.__setattr__(m, name, v.astype(np.float64))
    return model


def _objective(model, x, r, training):
    ctx = autograd.Context(np.random.default_rng(0))
    model.train(training)
    y, back = autograd.forward(model, x, ctx)
    return float((y * r).sum()), y, back, ctx


def _check_grads(model, x, training=False, n_checks=6, atol=1e-6, rtol=1e-5, check_input=True):
    """Analytic gradients of sum(model(x) * r) w.r.t. parameters and x, vs central differences."""
    _to64(model)
    rng = np.random.default_rng(1)
    _, y, back, ctx = _objective(model, x, 0.0, training)
    r = rng.standard_normal(y.shape)
    _, y, back, ctx = _objective(model, x, r, training)
    gx = back(r.copy())
    eps = 1e-6
    targets = [(m, n) for m, n in autograd.parameters(model)]
    assert targets or check_input
    for m, n in targets:
        w = getattr(m, n)
        g = ctx.grads[(id(m), n)]
        assert g.shape == w.shape
        for flat in rng.choice(w.size, size=min(n_checks, w.size), replace=False):
            i = np.unravel_index(flat, w.shape)
            old = w[i]
            w[i] = old + eps
            fp = _objective(model, x, r, training)[0]
            w[i] = old - eps
            fm = _objective(model, x, r, training)[0]
            w[i] = old
            num = (fp - fm) / (2 * eps)
            assert abs(g[i] - num) <= atol + rtol * abs(num), (type(m).__name__, n, i, g[i], num)
    if check_input and x.dtype.kind == "f":
        assert gx.shape == x.shape
        for flat in rng.choice(x.size, size=min(n_checks, x.size), replace=False):
            i = np.unravel_index(flat, x.shape)
            xp, xm = x.copy(), x.copy()
            xp[i] += eps
            xm[i] -= eps
            num = (_objective(model, xp, r, training)[0] - _objective(model, xm, r, training)[0]) / (2 * eps)
            assert abs(gx[i] - num) <= atol + rtol * abs(num), ("input", i, gx[i], num)


RNG = np.random.default_rng(0)


def _x(*shape):
    return RNG.standard_normal(shape)


LAYER_CASES = {
    "linear": (lambda: nn.Linear(5, 4), (3, 5)),
    "linear_3d_nobias": (lambda: nn.Linear(5, 4, bias=False), (2, 3, 5)),
    "conv": (lambda: nn.Conv2d(2, 3, 3), (2, 2, 5, 5)),
    "conv_stride_pad_dilation": (lambda: nn.Conv2d(2, 4, 3, stride=2, padding=(1, 2), dilation=2), (2, 2, 7, 6)),
    "conv_groups": (lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2), (1, 4, 4, 4)),
    "conv_depthwise": (lambda: nn.Conv2d(3, 3, 3, padding=1, groups=3, bias=False), (1, 3, 4, 5)),
    "maxpool": (lambda: nn.MaxPool2d(2), (2, 3, 4, 4)),
    "maxpool_overlap_pad": (lambda: nn.MaxPool2d(3, stride=2, padding=1), (1, 2, 5, 5)),
    "avgpool": (lambda: nn.AvgPool2d(2), (2, 2, 4, 6)),
    "avgpool_pad_exclude": (lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), (1, 2, 5, 5)),
    "global_avgpool": (lambda: nn.GlobalAvgPool2d(), (2, 3, 3, 4)),
    "flatten": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), (2, 3, 2, 2)),
    "layernorm": (lambda: nn.LayerNorm(6), (3, 6)),
    "batchnorm_eval": (lambda: nn.BatchNorm(3), (4, 3, 2, 2)),
    "relu": (lambda: nn.ReLU(), (4, 5)),
    "gelu": (lambda: nn.GELU(), (4, 5)),
    "gelu_tanh": (lambda: nn.GELU(approximate="tanh"), (4, 5)),
    "silu": (lambda: nn.SiLU(), (4, 5)),
    "tanh": (lambda: nn.Tanh(), (4, 5)),
    "sigmoid": (lambda: nn.Sigmoid(), (4, 5)),
    "softmax": (lambda: nn.Softmax(), (4, 5)),
    "dropout_eval": (lambda: nn.Dropout(0.3), (4, 5)),
    "identity": (lambda: nn.Identity(), (4, 5)),
    "residual": (lambda: nn.Residual(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4)), (3, 4)),
    "sequential_cnn": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                             nn.Flatten(), nn.Linear(8, 3)), (2, 1, 4, 4)),
}


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_gradients_match_finite_differences(case):
    make, shape = LAYER_CASES[case]
    model = make()
    if case == "batchnorm_eval":
        model.running_mean = RNG.standard_normal(3).astype(np.float32)
        model.running_var = (RNG.random(3) + 0.5).astype(np.float32)
        model.weight = RNG.standard_normal(3).astype(np.float32)
    if case == "layernorm":
        model.weight = RNG.standard_normal(6).astype(np.float32)
        model.bias = RNG.standard_normal(6).astype(np.float32)
    x = _x(*shape)
    if case.startswith("maxpool"):
        x = x + np.arange(x.size).reshape(x.shape) * 1e-3   # no ties within 2 eps
    _check_grads(model, x)


def test_batchnorm_training_gradients_and_running_stats():
    bn = nn.BatchNorm(3)
    bn.weight = RNG.standard_normal(3).astype(np.float32)
    x = _x(5, 3, 2, 2)
    _check_grads(bn, x, training=True)
    bn2 = nn.BatchNorm(3, momentum=0.5)
    ctx = autograd.Context()
    bn2.train()
    autograd.forward(bn2, x.astype(np.float32), ctx)
    np.testing.assert_allclose(bn2.running_mean, 0.5 * x.mean(axis=(0, 2, 3)), rtol=1e-5, atol=1e-6)


def test_embedding_gradient():
    emb = nn.Embedding(7, 3)
    ids = np.array([[0, 3, 3], [6, 0, 1]])
    _check_grads(emb, ids, check_input=False)
    # a repeated id accumulates: the gradient row of 3 is the sum of its two output gradients
    ctx = autograd.Context()
    y, back = autograd.forward(emb, ids, ctx)
    g = np.ones_like(y)
    assert back(g) is None
    np.testing.assert_array_equal(ctx.grads[(id(emb), "weight")][3], 2 * np.ones(3))


def test_losses_gradients():
    rng = np.random.default_rng(3)
    z = rng.standard_normal((4, 5))
    y = np.array([0, 4, 2, 2])
    for fn, t in ((cross_entropy, y), (cross_entropy, np.eye(5)[y] * 0.7 + 0.06), (mse, rng.standard_normal((4, 5)))):
        v, g = fn(z.copy(), t)
        for i in np.ndindex(z.shape):
            zp, zm = z.copy(), z.copy()
            zp[i] += 1e-6
            zm[i] -= 1e-6
            num = (fn(zp, t)[0] - fn(zm, t)[0]) / 2e-6
            assert abs(g[i] - num) < 1e-6
    assert cross_entropy(np.zeros((2, 4)), np.array([1, 2]))[0] == pytest.approx(np.log(4))


@pytest.mark.parametrize("case", ["relu", "gelu", "conv_stride_pad_dilation", "maxpool_overlap_pad",
                                  "avgpool_pad_exclude", "layernorm", "batchnorm_eval", "sequential_cnn"])
def test_training_forward_equals_layer_forward(case):
    make, shape = LAYER_CASES[case]
    model = make().eval()
    x = _x(*shape).astype(np.float32)
    y, _ = autograd.forward(model, x, autograd.Context())
    np.testing.assert_allclose(y, model(x), rtol=1e-5, atol=1e-5)


def _digits():
    from edgepack.data import load_digits, train_test_split
    x, y = load_digits()
    return train_test_split(x, y, 0.3, 0)


def _mlp(seed=0, sizes=(64, 64, 10)):
    from edgepack.cli.demo import mlp
    return mlp(sizes, seed)


def test_digits_mlp_learns_and_history():
    xtr, xte, ytr, yte = _digits()
    m = _mlp()
    h = edgepack.train(m, xtr, ytr, epochs=8, batch_size=32, lr=3e-3, seed=0, progress=False,
                       validation=(xte, yte))
    assert set(h) >= {"loss", "accuracy", "val_loss", "val_accuracy", "time"}
    assert len(h["loss"]) == 8 and h["loss"][-1] < h["loss"][0] / 4
    assert h["val_accuracy"][-1] >= 0.93
    assert not m.training
    assert (m.predict(xte).argmax(1) == yte).mean() == pytest.approx(h["val_accuracy"][-1])


def test_small_cnn_trains_on_digits():
    xtr, xte, ytr, yte = _digits()
    nn.seed(0)
    m = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm(8), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Flatten(), nn.Dropout(0.1), nn.Linear(8 * 4 * 4, 10))
    h = edgepack.train(m, xtr.reshape(-1, 1, 8, 8), ytr, epochs=4, lr=3e-3, seed=0, progress=False)
    assert h["accuracy"][-1] > 0.9
    assert (m.predict(xte.reshape(-1, 1, 8, 8)).argmax(1) == yte).mean() > 0.9


def test_deterministic_for_a_seed_and_dropout_seeded():
    xtr, _, ytr, _ = _digits()
    ws = []
    for _ in range(2):
        nn.seed(5)
        m = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 10))
        edgepack.train(m, xtr[:300], ytr[:300], epochs=2, seed=7, progress=False)
        ws.append([t.copy() for _, t in m.named_tensors()])
    for a, b in zip(*ws):
        np.testing.assert_array_equal(a, b)
    nn.seed(5)
    m = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 10))
    edgepack.train(m, xtr[:300], ytr[:300], epochs=2, seed=8, progress=False)
    assert any(not np.array_equal(a, t) for a, (_, t) in zip(ws[0], m.named_tensors()))


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_masked_weights_stay_zero(optimizer):
    xtr, _, ytr, _ = _digits()
    m = _mlp()
    lin = m.layers[0]
    mask = (np.random.default_rng(0).random(lin.weight.shape) > 0.7).astype(np.float32)
    lin.weight = lin.weight * mask
    lin.weight_mask = mask
    before = m.layers[2].weight.copy()
    edgepack.train(m, xtr[:400], ytr[:400], epochs=2, optimizer=optimizer, lr=1e-2, seed=0, progress=False)
    assert np.all(lin.weight[mask == 0] == 0)
    assert np.count_nonzero(lin.weight) == np.count_nonzero(mask)
    assert not np.array_equal(before, m.layers[2].weight)


def test_sgd_and_weight_decay():
    xtr, _, ytr, _ = _digits()
    norms = []
    for wd in (0.0, 0.05):
        m = _mlp()
        h = edgepack.train(m, xtr, ytr, epochs=5, optimizer="sgd", lr=0.02, weight_decay=wd, seed=0, progress=False)
        assert h["accuracy"][-1] > 0.8
        norms.append(np.linalg.norm(m.layers[0].weight))
    assert norms[1] < 0.8 * norms[0]


def test_mse_regression_and_callable_loss():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 3)).astype(np.float32)
    w = np.array([[1.0, -2.0, 0.5]], np.float32)
    t = x @ w.T + 0.3
    m = nn.Sequential(nn.Linear(3, 1))
    h = edgepack.train(m, x, t, loss="mse", epochs=60, lr=0.05, seed=0, progress=False)
    assert "accuracy" not in h and h["loss"][-1] < 1e-3
    np.testing.assert_allclose(m.layers[0].weight, w, atol=0.02)
    calls = []

    def l1(out, target):
        calls.append(len(out))
        d = out - target
        return float(np.abs(d).mean()), np.sign(d) / d.size
    m2 = nn.Sequential(nn.Linear(3, 1))
    h2 = edgepack.train(m2, x, t, loss=l1, epochs=30, lr=0.05, seed=0, progress=False)
    assert sum(calls) == 30 * 256 and h2["loss"][-1] < h2["loss"][0]
    with pytest.raises(TypeError, match="callable loss"):
        edgepack.train(m2, x, t, loss=lambda o, y: 1.0, epochs=1, progress=False)


def test_progress_bar_runs():
    pytest.importorskip("tqdm")
    xtr, xte, ytr, yte = _digits()
    h = edgepack.train(_mlp(), xtr[:200], ytr[:200], epochs=2, progress=True, validation=(xte[:50], yte[:50]))
    assert len(h["val_accuracy"]) == 2


def test_errors_name_the_argument():
    xtr, _, ytr, _ = _digits()
    m = _mlp()
    with pytest.raises(ValueError, match="y must have one target per row of X"):
        edgepack.train(m, xtr, ytr[:-1], progress=False)
    with pytest.raises(ValueError, match="loss must be"):
        edgepack.train(m, xtr, ytr, loss="hinge", progress=False)
    with pytest.raises(ValueError, match="optimizer must be"):
        edgepack.train(m, xtr, ytr, optimizer="rmsprop", progress=False)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        edgepack.train(m, xtr, ytr, epochs=0, progress=False)
    with pytest.raises(ValueError, match="lr must be"):
        edgepack.train(m, xtr, ytr, lr=float("nan"), progress=False)
    with pytest.raises(TypeError, match="integer class labels"):
        edgepack.train(m, xtr, ytr.astype(np.float32), progress=False)
    with pytest.raises(ValueError, match="class label 12"):
        edgepack.train(m, xtr, np.where(ytr == 0, 12, ytr), epochs=1, progress=False)
    with pytest.raises(TypeError, match="model must be an edgepack.nn Module"):
        edgepack.train(lambda x: x, xtr, ytr, progress=False)
    q = edgepack.quantize(m)
    with pytest.raises(TypeError, match="cannot differentiate layer '0' of class QLinear"):
        edgepack.train(q, xtr, ytr, progress=False)


def test_train_stays_callable_after_submodule_import():
    import edgepack.train as mod
    assert callable(edgepack.train) and callable(mod)
    h = edgepack.train(_mlp(), *_digits()[::2], epochs=1, progress=False)
    assert len(h["loss"]) == 1
