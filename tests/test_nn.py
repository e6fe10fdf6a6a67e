"""edgepack.nn layers against independent NumPy (float64, loop-based) computations.

Tolerance: layers compute in float32, references in float64; sums here have at most a few
hundred terms of O(1) values, so atol=rtol=1e-5 bounds float32 rounding with margin.
"""

import math

import numpy as np
import pytest

from edgepack import nn
from edgepack.nn import functional as F

TOL = dict(rtol=1e-5, atol=1e-5)


def f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# -- references ---------------------------------------------------------------------------------

def ref_conv(x, w, b, stride, pads, dil, groups):
    """Naive loop: (top, left, bottom, right) zero padding, groups, dilation."""
    x = x.astype(np.float64)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    t, l, bo, r = pads
    xp = np.zeros((n, c, h + t + bo, wd + l + r))
    xp[:, :, t:t + h, l:l + wd] = x
    sh, sw = stride
    dh, dw = dil
    oh = (h + t + bo - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + l + r - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n, o, oh, ow))
    og = o // groups
    for ni in range(n):
        for oc in range(o):
            g = oc // og
            for i in range(oh):
                for j in range(ow):
                    s = 0.0
                    for ci in range(cg):
                        for a in range(kh):
                            for bb in range(kw):
                                s += xp[ni, g * cg + ci, i * sh + a * dh, j * sw + bb * dw] * w[oc, ci, a, bb]
                    y[ni, oc, i, j] = s + (0.0 if b is None else b[oc])
    return y


def ref_pool(x, k, s, pads, op, dil=(1, 1), count_include_pad=True):
    n, c, h, w = x.shape
    t, l, bo, r = pads
    oh = (h + t + bo - dil[0] * (k[0] - 1) - 1) // s[0] + 1
    ow = (w + l + r - dil[1] * (k[1] - 1) - 1) // s[1] + 1
    y = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            vals, real = [], 0
            for a in range(k[0]):
                for b in range(k[1]):
                    hi, wi = i * s[0] + a * dil[0] - t, j * s[1] + b * dil[1] - l
                    if 0 <= hi < h and 0 <= wi < w:
                        vals.append(x[:, :, hi, wi].astype(np.float64))
                        real += 1
                    elif op == "avg":
                        vals.append(np.zeros((n, c)))
            st = np.stack(vals)
            if op == "max":
                y[:, :, i, j] = st.max(0)
            else:
                y[:, :, i, j] = st.sum(0) / (k[0] * k[1] if count_include_pad else real)
    return y


# -- Linear ---------------------------------------------------------------------------------------

def test_linear_matches_reference(rng):
    lin = nn.Linear(7, 5)
    x = f32(rng, 3, 4, 7)
    ref = np.einsum("bti,oi->bto", x.astype(np.float64), lin.weight.astype(np.float64)) + lin.bias
    np.testing.assert_allclose(lin(x), ref, **TOL)
    assert lin(x).dtype == np.float32
    assert lin.weight.flags.c_contiguous and lin.weight.dtype == np.float32 and lin.weight.shape == (5, 7)


def test_linear_from_weights_and_no_bias(rng):
    w = rng.standard_normal((4, 3))  # float64: cast to float32
    lin = nn.Linear.from_weights(w)
    assert lin.weight.dtype == np.float32 and lin.bias is None
    x = f32(rng, 2, 3)
    np.testing.assert_allclose(lin(x), x.astype(np.float64) @ w.T, **TOL)
    assert nn.Linear(3, 4, bias=False).bias is None
    with pytest.raises(ValueError, match="bias must have shape"):
        nn.Linear.from_weights(w, np.zeros(3))
    with pytest.raises(ValueError, match="last dimension 3"):
        lin(f32(rng, 2, 5))


def test_dtype_policy(rng):
    lin = nn.Linear(3, 2)
    x64 = rng.standard_normal((2, 3))
    y = lin(x64)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, lin(x64.astype(np.float32)))
    with pytest.raises(TypeError, match="float32"):
        lin(np.ones((2, 3), dtype=np.int64))
    with pytest.raises(TypeError):
        nn.ReLU()(np.ones(3, dtype=bool))


# -- Conv2d ---------------------------------------------------------------------------------------

CONV_CASES = [
    # cin, cout, k, stride, padding, dilation, groups, h, w
    (3, 4, 3, 1, 0, 1, 1, 6, 7),
    (3, 4, 3, 2, 1, 1, 1, 7, 6),
    (2, 3, (3, 2), (2, 1), (1, 0), 1, 1, 6, 5),
    (2, 4, 3, 1, 2, 2, 1, 7, 7),
    (4, 6, 3, 1, 1, 1, 2, 5, 5),
    (4, 4, 3, 1, 1, 1, 4, 6, 6),      # depthwise
    (3, 6, 3, 2, 1, 1, 3, 7, 7),      # depthwise, multiplier 2
    (4, 4, 3, 1, 2, 2, 4, 6, 6),      # depthwise dilated
    (5, 3, 1, 1, 0, 1, 1, 4, 4),      # 1x1 fast path
    (5, 3, 1, 2, 0, 1, 1, 5, 5),      # 1x1 strided
    (3, 2, 3, 1, (0, 1, 2, 1), 1, 1, 5, 5),  # asymmetric (top, left, bottom, right)
]


@pytest.mark.parametrize("cin,cout,k,stride,padding,dilation,groups,h,w", CONV_CASES)
def test_conv2d_matches_naive_loop(rng, cin, cout, k, stride, padding, dilation, groups, h, w):
    conv = nn.Conv2d(cin, cout, k, stride, padding, dilation, groups)
    x = f32(rng, 2, cin, h, w)
    ref = ref_conv(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, groups)
    y = conv(x)
    assert y.dtype == np.float32 and y.shape == ref.shape
    np.testing.assert_allclose(y, ref, **TOL)


def test_conv2d_from_weights_and_errors(rng):
    w = f32(rng, 4, 1, 3, 3)
    conv = nn.Conv2d.from_weights(w, None, padding=1, groups=4)
    assert conv.in_channels == 4 and conv.bias is None
    x = f32(rng, 1, 4, 5, 5)
    np.testing.assert_allclose(conv(x), ref_conv(x, w, None, (1, 1), (1, 1, 1, 1), (1, 1), 4), **TOL)
    with pytest.raises(ValueError, match="input channels"):
        conv(f32(rng, 1, 3, 5, 5))
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="smaller than"):
        nn.Conv2d(1, 1, 5)(f32(rng, 1, 1, 3, 3))


# -- pooling, reshape -----------------------------------------------------------------------------

@pytest.mark.parametrize("k,s,p,d", [(2, None, 0, 1), (3, 2, 1, 1), ((3, 2), (1, 2), (1, 0), 1), (2, 1, 0, 2)])
def test_max_pool(rng, k, s, p, d):
    layer = nn.MaxPool2d(k, s, p, d)
    x = f32(rng, 2, 3, 7, 6)
    ref = ref_pool(x, layer.kernel_size, layer.stride, layer.padding, "max", layer.dilation)
    np.testing.assert_array_equal(layer(x), ref.astype(np.float32))


@pytest.mark.parametrize("cip", [True, False])
@pytest.mark.parametrize("k,s,p", [(2, None, 0), (3, 2, 1), ((3, 2), (1, 2), (1, 0))])
def test_avg_pool(rng, k, s, p, cip):
    layer = nn.AvgPool2d(k, s, p, count_include_pad=cip)
    x = f32(rng, 2, 3, 7, 6)
    ref = ref_pool(x, layer.kernel_size, layer.stride, layer.padding, "avg", count_include_pad=cip)
    np.testing.assert_allclose(layer(x), ref, **TOL)


def test_global_pool_flatten_reshape(rng):
    x = f32(rng, 2, 3, 4, 5)
    np.testing.assert_allclose(nn.GlobalAvgPool2d()(x), x.astype(np.float64).mean(axis=(2, 3)), **TOL)
    assert nn.GlobalAvgPool2d(keepdims=True)(x).shape == (2, 3, 1, 1)
    np.testing.assert_array_equal(nn.Flatten()(x), x.reshape(2, 60))
    np.testing.assert_array_equal(nn.Flatten(2)(x), x.reshape(2, 3, 20))
    np.testing.assert_array_equal(nn.Reshape([0, -1, 5])(x), x.reshape(2, 12, 5))
    with pytest.raises(ValueError, match="cannot reshape"):
        nn.Reshape([0, 7])(x)


# -- elementwise ----------------------------------------------------------------------------------

def test_activations(rng):
    x = np.concatenate([f32(rng, 200) * 4, np.array([-30, -10, 0, 10, 30], np.float32)])
    xd = x.astype(np.float64)
    sig = np.array([1 / (1 + math.exp(-v)) for v in xd])
    erf = np.array([math.erf(v / math.sqrt(2)) for v in xd])
    np.testing.assert_array_equal(nn.ReLU()(x), np.where(x > 0, x, 0))
    np.testing.assert_allclose(nn.Sigmoid()(x), sig, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(nn.Tanh()(x), np.tanh(xd), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(nn.SiLU()(x), xd * sig, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(nn.GELU()(x), 0.5 * xd * (1 + erf), rtol=1e-5, atol=1e-6)
    tanh_ref = 0.5 * xd * (1 + np.tanh(math.sqrt(2 / math.pi) * (xd + 0.044715 * xd ** 3)))
    np.testing.assert_allclose(nn.GELU("tanh")(x), tanh_ref, rtol=1e-5, atol=1e-6)
    for layer in (nn.ReLU(), nn.Sigmoid(), nn.Tanh(), nn.SiLU(), nn.GELU()):
        y = layer(x)
        assert y.dtype == np.float32 and np.all(np.isfinite(y))
    np.testing.assert_allclose(F.erf(xd), [math.erf(v) for v in xd], atol=2e-7)


def test_softmax(rng):
    x = f32(rng, 3, 5) * 50
    e = np.exp(x.astype(np.float64) - x.max(-1, keepdims=True))
    np.testing.assert_allclose(nn.Softmax()(x), e / e.sum(-1, keepdims=True), **TOL)
    y0 = nn.Softmax(axis=0)(x)
    np.testing.assert_allclose(y0.sum(0), 1, rtol=1e-6)
    assert np.all(np.isfinite(nn.Softmax()(np.array([[1e4, -1e4, 0]], np.float32))))


def test_dropout(rng):
    d = nn.Dropout(0.5)
    x = f32(rng, 1000)
    assert d(x) is x or np.array_equal(d(x), x)  # eval: identity
    d.train()
    y = d(x)
    kept = y != 0
    assert 300 < kept.sum() < 700
    np.testing.assert_allclose(y[kept], 2 * x[kept], rtol=1e-6)
    with pytest.raises(ValueError):
        nn.Dropout(1.0)


# -- norms, embedding -----------------------------------------------------------------------------

def test_layer_norm(rng):
    ln = nn.LayerNorm(6, eps=1e-6)
    ln.weight = f32(rng, 6)
    ln.bias = f32(rng, 6)
    x = f32(rng, 2, 3, 6) * 3 + 1
    xd = x.astype(np.float64)
    ref = (xd - xd.mean(-1, keepdims=True)) / np.sqrt(xd.var(-1, keepdims=True) + 1e-6) * ln.weight + ln.bias
    np.testing.assert_allclose(ln(x), ref, **TOL)


def _random_bn(rng, c):
    bn = nn.BatchNorm(c, eps=1e-3)
    bn.weight = f32(rng, c)
    bn.bias = f32(rng, c)
    bn.running_mean = f32(rng, c)
    bn.running_var = rng.uniform(0.5, 2, c).astype(np.float32)
    return bn


def test_batchnorm_eval_and_train(rng):
    bn = _random_bn(rng, 3)
    x = f32(rng, 4, 3, 2, 2)
    sh = (1, 3, 1, 1)
    ref = (x - bn.running_mean.reshape(sh)) / np.sqrt(bn.running_var.reshape(sh) + 1e-3) \
        * bn.weight.reshape(sh) + bn.bias.reshape(sh)
    np.testing.assert_allclose(bn(x), ref, **TOL)
    x2 = f32(rng, 5, 3)
    np.testing.assert_allclose(bn(x2), (x2 - bn.running_mean) / np.sqrt(bn.running_var + 1e-3)
                               * bn.weight + bn.bias, **TOL)
    bn.train()
    y = bn(x2)
    xd = x2.astype(np.float64)
    np.testing.assert_allclose(y, (xd - xd.mean(0)) / np.sqrt(xd.var(0) + 1e-3) * bn.weight + bn.bias, **TOL)


def test_embedding(rng):
    emb = nn.Embedding(10, 4)
    ids = np.array([[1, 2, 9], [0, 0, 3]])
    np.testing.assert_array_equal(emb(ids), emb.weight[ids])
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        emb(np.array([10]))
    with pytest.raises(TypeError, match="integer"):
        emb(np.array([1.0]))


# -- BatchNorm folding ----------------------------------------------------------------------------

def test_fold_batchnorm_conv_and_linear(rng):
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), _random_bn(rng, 4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, groups=4, bias=False), _random_bn(rng, 4), nn.ReLU(),
        nn.Flatten(), nn.Linear(36, 5), _random_bn(rng, 5),
    )
    x = f32(rng, 3, 2, 5, 5)
    before = model(x)
    out = model.prepare_for_inference()
    assert out is model
    assert not any(isinstance(m, nn.BatchNorm) for m in model.modules())
    assert len(model) == 6
    np.testing.assert_allclose(model(x), before, rtol=1e-5, atol=1e-5)


def test_fold_batchnorm_named_container_and_unfoldable(rng):
    class Block(nn.Module):
        def __init__(self):
            self.conv = nn.Conv2d(1, 2, 3)
            self.bn = _random_bn(rng, 2)

        def forward(self, x, **kw):
            return self.bn(self.conv(x))

    b = Block()
    x = f32(rng, 2, 1, 5, 5)
    before = b(x)
    nn.fold_batchnorm(b)
    assert isinstance(b.bn, nn.Identity)
    np.testing.assert_allclose(b(x), before, **TOL)
    lone = nn.Sequential(_random_bn(rng, 3), nn.ReLU())  # nothing to fold into: stays
    nn.fold_batchnorm(lone)
    assert isinstance(lone[0], nn.BatchNorm)


# -- containers -----------------------------------------------------------------------------------

def test_sequential_api(rng):
    a, b = nn.Linear(3, 4), nn.ReLU()
    s = nn.Sequential(a, b)
    assert len(s) == 2 and s[0] is a and s[-1] is b
    assert [n for n, _ in s.children()] == ["0", "1"]
    s.append(nn.Linear(4, 2))
    assert s(f32(rng, 5, 3)).shape == (5, 2)
    assert isinstance(s[1:], nn.Sequential) and len(s[1:]) == 2
    new = nn.Linear(3, 4)
    s.set_child("0", new)
    assert s[0] is new
    with pytest.raises(ValueError, match="no child"):
        s.set_child("7", new)
    with pytest.raises(TypeError):
        s.set_child("0", object())
    assert [n for n, _ in s.named_modules()] == ["", "0", "1", "2"]
    assert s.num_parameters() == 3 * 4 + 4 + 4 * 2 + 2
    assert s.nbytes() == 4 * s.num_parameters()


def test_residual(rng):
    lin = nn.Linear(4, 4)
    r = nn.Residual(lin, nn.Tanh())
    x = f32(rng, 3, 4)
    np.testing.assert_allclose(r(x), x + np.tanh(lin(x)), **TOL)
    with pytest.raises(ValueError, match="changed the shape"):
        nn.Residual(nn.Linear(4, 2))(x)


def test_predict_batches(rng):
    model = nn.Sequential(nn.Linear(5, 8), nn.GELU(), nn.Linear(8, 3))
    x = f32(rng, 53, 5)
    np.testing.assert_allclose(model.predict(x, batch_size=10), model(x), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="batch_size"):
        model.predict(x, batch_size=0)


def test_train_eval_recursive():
    m = nn.Sequential(nn.Dropout(0.1), nn.Sequential(nn.BatchNorm(2)))
    m.train()
    assert all(x.training for x in m.modules())
    m.eval()
    assert not any(x.training for x in m.modules())


def test_summary_lists_layers(rng):
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))
    text = m.summary((1, 1, 4, 4), print_fn=None)
    assert "(1, 2, 2, 2)" in text and "(1, 3)" in text
    assert "Linear" in text and "27" in text and "numpy f32" in text
    assert "total: 47 parameters" in text
    emb = nn.Sequential(nn.Embedding(5, 4), nn.LayerNorm(4))
    assert "(2, 3, 4)" in emb.summary((2, 3), print_fn=None)


# -- attention ------------------------------------------------------------------------------------

def ref_mha(mha, x, mask=None):
    x = x.astype(np.float64)
    b, t, d = x.shape
    h = mha.num_heads
    dh = d // h

    def proj(lin, v):
        return v @ lin.weight.astype(np.float64).T + lin.bias

    q, k, v = proj(mha.q_proj, x), proj(mha.k_proj, x), proj(mha.v_proj, x)
    out = np.zeros_like(x)
    for bi in range(b):
        for hi in range(h):
            sl = slice(hi * dh, (hi + 1) * dh)
            s = q[bi, :, sl] @ k[bi, :, sl].T / math.sqrt(dh)
            if mask is not None:
                s[:, mask[bi] == 0] = -np.inf
            p = np.exp(s - s.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            out[bi, :, sl] = p @ v[bi, :, sl]
    return proj(mha.out_proj, out)


def test_mha_matches_reference(rng):
    mha = nn.MultiHeadAttention(8, 2)
    x = f32(rng, 2, 5, 8)
    np.testing.assert_allclose(mha(x), ref_mha(mha, x), **TOL)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    np.testing.assert_allclose(mha(x, mask=mask)[0, :3], ref_mha(mha, x, mask)[0, :3], **TOL)
    assert [n for n, _ in mha.children()] == ["q_proj", "k_proj", "v_proj", "out_proj"]


def test_padding_never_changes_real_tokens(rng):
    layer = nn.TransformerEncoderLayer(8, 2, 16)
    real = f32(rng, 1, 3, 8)
    alone = layer(real)
    padded = np.concatenate([real, f32(rng, 1, 4, 8) * 100], axis=1)
    out = layer(padded, mask=np.array([[1, 1, 1, 0, 0, 0, 0]]))
    np.testing.assert_allclose(out[:, :3], alone, rtol=1e-5, atol=1e-5)
    model = nn.Sequential(layer, nn.TransformerEncoderLayer(8, 2, 16, norm_first=True))
    np.testing.assert_allclose(model(padded, mask=np.array([[1, 1, 1, 0, 0, 0, 0]]))[:, :3], model(real),
                               rtol=1e-5, atol=1e-5)
    assert np.all(np.isfinite(layer(padded, mask=np.zeros((1, 7)))))
    with pytest.raises(ValueError, match="mask must have shape"):
        layer(padded, mask=np.ones((1, 3)))


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_composition(rng, norm_first):
    layer = nn.TransformerEncoderLayer(8, 2, 12, activation="relu", norm_first=norm_first)
    for ln in (layer.norm1, layer.norm2):
        ln.weight, ln.bias = f32(rng, 8), f32(rng, 8)
    x = f32(rng, 2, 4, 8)
    xd = x.astype(np.float64)

    def ln(m, v):
        return (v - v.mean(-1, keepdims=True)) / np.sqrt(v.var(-1, keepdims=True) + m.eps) * m.weight + m.bias

    def ff(v):
        hdn = np.maximum(v @ layer.linear1.weight.T.astype(np.float64) + layer.linear1.bias, 0)
        return hdn @ layer.linear2.weight.T.astype(np.float64) + layer.linear2.bias

    if norm_first:
        y = xd + ref_mha(layer.self_attn, ln(layer.norm1, xd))
        y = y + ff(ln(layer.norm2, y))
    else:
        y = ln(layer.norm1, xd + ref_mha(layer.self_attn, xd))
        y = ln(layer.norm2, y + ff(y))
    np.testing.assert_allclose(layer(x), y, rtol=1e-4, atol=1e-4)


def test_set_child_replaces_projection(rng):
    mha = nn.MultiHeadAttention(4, 1)
    new = nn.Linear.from_weights(np.eye(4, dtype=np.float32), np.zeros(4, np.float32))
    mha.set_child("v_proj", new)
    assert mha.v_proj is new and dict(mha.children())["v_proj"] is new
    with pytest.raises(ValueError, match="no child"):
        mha.set_child("w_proj", new)


def test_register_layer_rejects_conflicts():
    with pytest.raises(TypeError):
        nn.register_layer(int)
    with pytest.raises(ValueError, match="already registered"):
        @nn.register_layer(name="Linear")
        class Other(nn.Module):
            pass


def test_forward_hook(rng):
    lin = nn.Linear(3, 2)
    model = nn.Sequential(lin, nn.ReLU())
    seen = []
    h = lin.register_forward_hook(lambda m, x, y: seen.append((m, x.shape, y.shape)))
    model(f32(rng, 4, 3))
    assert seen == [(lin, (4, 3), (4, 2))]
    h2 = lin.register_forward_hook(lambda m, x, y: np.zeros_like(y))
    assert np.all(model(f32(rng, 4, 3)) == 0)
    h.remove()
    h2.remove()
    model(f32(rng, 4, 3))
    assert len(seen) == 2


def test_gelu_negative_tail_relative_accuracy():
    # exact GELU keeps relative accuracy where x * Phi(x) is tiny (erfc, not 1 - erf)
    x = np.linspace(-12, -4, 101).astype(np.float32)
    ref = np.array([0.5 * v * math.erfc(-v / math.sqrt(2)) for v in x.astype(np.float64)])
    np.testing.assert_allclose(nn.GELU()(x), ref, rtol=5e-5, atol=0)
