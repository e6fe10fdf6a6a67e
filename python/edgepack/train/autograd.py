"""Reverse-mode gradients over edgepack.nn layers.

Each supported layer class maps to a function ``rule(module, x, ctx) -> (y, backward)``: it runs the
layer's forward in the dtype of ``x`` (float32 when training, float64 in the gradient checks) and
returns a closure ``backward(gy) -> gx`` that adds the parameter gradients into ``ctx.grads`` and
returns the gradient of the input.  Only what backward needs is kept alive by the closure.

The rules re-implement each forward rather than calling ``module.forward`` so that the cached
intermediates (im2col columns, pooling argmax, normalisation statistics) come for free; the tests
check that every rule's output equals the layer's own forward.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..nn import functional as F
from ..nn.containers import Residual, Sequential
from ..nn.layers import (AvgPool2d, BatchNorm, Conv2d, Dropout, Embedding, Flatten, GELU, GlobalAvgPool2d,
                         Identity, LayerNorm, Linear, MaxPool2d, ReLU, Reshape, Sigmoid, SiLU, Softmax, Tanh)

__all__ = ["Context", "RULES", "forward", "parameters", "supported"]


class Context:
    """State of one training forward/backward: gradients by ``(id(module), name)``, the dropout RNG,
    and optional taps (extra loss gradients injected at a module's output, for hidden-state
    distillation)."""

    def __init__(self, rng: np.random.Generator | None = None, taps: dict | None = None):
        self.grads: dict[tuple[int, str], np.ndarray] = {}
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.taps = taps or {}        # id(module) -> callable(y) -> gy_extra (called at backward)
        self.outputs: dict[int, np.ndarray] = {}

    def add(self, m, name: str, g: np.ndarray) -> None:
        key = (id(m), name)
        if key in self.grads:
            self.grads[key] += g
        else:
            self.grads[key] = g


Rule = Callable[[object, np.ndarray, Context], tuple]
RULES: dict[type, Rule] = {}


def _rule(*classes):
    def deco(fn):
        for c in classes:
            RULES[c] = fn
        return fn
    return deco


def supported(model) -> None:
    """Raise ``TypeError`` naming the first layer the trainer cannot differentiate."""
    for name, m in model.named_modules():
        if type(m) not in RULES:
            raise TypeError(f"edgepack.train cannot differentiate layer {name or '<model>'!r} of class "
                            f"{type(m).__name__}; supported: "
                            f"{', '.join(sorted(c.__name__ for c in RULES))}")


def forward(m, x: np.ndarray, ctx: Context):
    """Training forward of ``m`` on ``x``: returns ``(y, backward)``."""
    rule = RULES.get(type(m))
    if rule is None:
        raise TypeError(f"edgepack.train cannot differentiate a {type(m).__name__} layer")
    y, back = rule(m, x, ctx)
    tap = ctx.taps.get(id(m))
    if tap is not None:
        ctx.outputs[id(m)] = y
        inner = back

        def back(gy, inner=inner, y=y, tap=tap):
            return inner(gy + tap(y))
    return y, back


def parameters(model) -> list[tuple[object, str]]:
    """Trainable tensors as ``(module, attribute)``: weights and biases of Linear, Conv2d, LayerNorm,
    BatchNorm and Embedding (running statistics are not parameters)."""
    out = []
    seen = set()
    for _, m in model.named_modules():
        if id(m) in seen:
            continue
        seen.add(id(m))
        if isinstance(m, (Linear, Conv2d, LayerNorm, BatchNorm, Embedding)):
            for name in ("weight", "bias"):
                if getattr(m, name, None) is not None:
                    out.append((m, name))
    return out


# -- containers ------------------------------------------------------------------------------------

@_rule(Sequential)
def _sequential(m, x, ctx):
    backs = []
    for _, child in m.children():
        x, b = forward(child, x, ctx)
        backs.append(b)

    def back(gy):
        for b in reversed(backs):
            gy = b(gy)
        return gy
    return x, back


@_rule(Residual)
def _residual(m, x, ctx):
    y, inner = _sequential(m, x, ctx)

    def back(gy):
        return gy + inner(gy)
    return x + y, back


@_rule(Identity)
def _identity(m, x, ctx):
    return x, lambda gy: gy


# -- dense layers ----------------------------------------------------------------------------------

@_rule(Linear)
def _linear(m, x, ctx):
    w, b = m.weight, m.bias
    x2 = x.reshape(-1, x.shape[-1])
    y = x2 @ w.T
    if b is not None:
        y += b

    def back(gy):
        g2 = gy.reshape(-1, gy.shape[-1])
        ctx.add(m, "weight", g2.T @ x2)
        if b is not None:
            ctx.add(m, "bias", g2.sum(axis=0))
        return (g2 @ w).reshape(x.shape)
    return y.reshape(x.shape[:-1] + (w.shape[0],)), back


def _scatter_windows(g, shape, kh, kw, sh, sw, dh, dw, oh, ow, dtype):
    """Adjoint of :func:`edgepack.nn.functional._receptive_fields`: add g [N, C, OH, OW, KH, KW]
    back into a padded input."""
    gx = np.zeros(shape, dtype)
    for i in range(kh):
        for j in range(kw):
            gx[:, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh, j * dw : j * dw + sw * (ow - 1) + 1 : sw] += g[..., i, j]
    return gx


def _unpad(gxp, p):
    t, l, b, r = p
    h, w = gxp.shape[2:]
    return gxp[:, :, t : h - b, l : w - r]


@_rule(Conv2d)
def _conv2d(m, x, ctx):
    if x.ndim != 4 or x.shape[1] != m.in_channels:
        raise ValueError(f"Conv2d expects x of shape (N, {m.in_channels}, H, W); got shape {x.shape}")
    w, b = m.weight, m.bias
    kh, kw = m.kernel_size
    sh, sw = m.stride
    dh, dw = m.dilation
    p = m.padding
    g = m.groups
    n, c, h, wd = x.shape
    oh, ow = F.conv_output_hw(h, wd, (kh, kw), (sh, sw), p, (dh, dw), "Conv2d")
    xp = F._pad(x, p)
    win = F._receptive_fields(xp, kh, kw, sh, sw, dh, dw, oh, ow)  # [N, C, OH, OW, KH, KW]
    cg, og = c // g, m.out_channels // g
    cols, outs = [], []
    for gi in range(g):
        # [N*OH*OW, Cg*KH*KW] columns, one matmul per group
        col = win[:, gi * cg:(gi + 1) * cg].transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, cg * kh * kw)
        wf = w[gi * og:(gi + 1) * og].reshape(og, -1)
        outs.append(col @ wf.T)
        cols.append(col)
    y = np.concatenate(outs, axis=1) if g > 1 else outs[0]      # [N*OH*OW, O]
    if b is not None:
        y += b
    y = y.reshape(n, oh, ow, m.out_channels).transpose(0, 3, 1, 2)

    def back(gy):
        gy2 = gy.transpose(0, 2, 3, 1).reshape(n * oh * ow, m.out_channels)
        if b is not None:
            ctx.add(m, "bias", gy2.sum(axis=0))
        gw = np.empty_like(w)
        gwin = np.empty((n, c, oh, ow, kh, kw), dtype=gy.dtype)
        for gi in range(g):
            gyg = gy2[:, gi * og:(gi + 1) * og]
            wf = w[gi * og:(gi + 1) * og].reshape(og, -1)
            gw[gi * og:(gi + 1) * og] = (gyg.T @ cols[gi]).reshape(og, cg, kh, kw)
            gcol = (gyg @ wf).reshape(n, oh, ow, cg, kh, kw)
            gwin[:, gi * cg:(gi + 1) * cg] = gcol.transpose(0, 3, 1, 2, 4, 5)
        ctx.add(m, "weight", gw)
        return _unpad(_scatter_windows(gwin, xp.shape, kh, kw, sh, sw, dh, dw, oh, ow, gy.dtype), p)
    return y, back


@_rule(Embedding)
def _embedding(m, x, ctx):
    ids = np.asarray(x)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"Embedding expects integer ids; got {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= m.num_embeddings):
        raise ValueError(f"Embedding ids must be in [0, {m.num_embeddings}); got values in [{ids.min()}, {ids.max()}]")
    w = m.weight

    def back(gy):
        gw = np.zeros_like(w)
        np.add.at(gw, ids.reshape(-1), gy.reshape(-1, w.shape[1]))
        ctx.add(m, "weight", gw)
        return None    # integer ids have no gradient
    return w[ids], back


# -- pooling and reshaping -------------------------------------------------------------------------

@_rule(MaxPool2d)
def _maxpool(m, x, ctx):
    kh, kw, sh, sw, dh, dw, p, oh, ow = F._pool_geometry(x, m.kernel_size, m.stride, m.padding, m.dilation,
                                                         "max_pool2d")
    xp = F._pad(x, p, -np.inf)
    win = F._receptive_fields(xp, kh, kw, sh, sw, dh, dw, oh, ow).reshape(x.shape[:2] + (oh, ow, kh * kw))
    arg = win.argmax(axis=-1)           # the first maximum takes the gradient (ties: one winner)
    y = np.take_along_axis(win, arg[..., None], axis=-1)[..., 0]

    def back(gy):
        g = np.zeros(x.shape[:2] + (oh, ow, kh * kw), dtype=gy.dtype)
        np.put_along_axis(g, arg[..., None], gy[..., None], axis=-1)
        g = g.reshape(x.shape[:2] + (oh, ow, kh, kw))
        return _unpad(_scatter_windows(g, xp.shape, kh, kw, sh, sw, dh, dw, oh, ow, gy.dtype), p)
    return y, back


@_rule(AvgPool2d)
def _avgpool(m, x, ctx):
    kh, kw, sh, sw, dh, dw, p, oh, ow = F._pool_geometry(x, m.kernel_size, m.stride, m.padding, 1, "avg_pool2d")
    xp = F._pad(x, p)
    win = F._receptive_fields(xp, kh, kw, sh, sw, 1, 1, oh, ow)
    if m.count_include_pad or not any(p):
        inv = np.asarray(1.0 / (kh * kw), dtype=x.dtype)
    else:
        ones = F._pad(np.ones((1, 1) + x.shape[2:], dtype=x.dtype), p)
        inv = 1.0 / F._receptive_fields(ones, kh, kw, sh, sw, 1, 1, oh, ow).sum(axis=(-2, -1))
    y = win.sum(axis=(-2, -1)) * inv

    def back(gy):
        g = np.broadcast_to((gy * inv)[..., None, None], x.shape[:2] + (oh, ow, kh, kw))
        return _unpad(_scatter_windows(g, xp.shape, kh, kw, sh, sw, 1, 1, oh, ow, gy.dtype), p)
    return y, back


@_rule(GlobalAvgPool2d)
def _gap(m, x, ctx):
    if x.ndim != 4:
        raise ValueError(f"GlobalAvgPool2d expects x of shape (N, C, H, W); got shape {x.shape}")
    hw = x.shape[2] * x.shape[3]

    def back(gy):
        g = gy.reshape(x.shape[:2] + (1, 1)) / hw
        return np.broadcast_to(g, x.shape).copy()
    return x.mean(axis=(2, 3), keepdims=m.keepdims), back


@_rule(Flatten, Reshape)
def _reshape(m, x, ctx):
    # The layer itself knows its output shape; np.empty is never touched, so this costs nothing.
    shape = m.forward(np.empty(x.shape, np.float32)).shape
    return x.reshape(shape), lambda gy: gy.reshape(x.shape)


# -- normalisation ---------------------------------------------------------------------------------

@_rule(LayerNorm)
def _layernorm(m, x, ctx):
    w, b = m.weight, m.bias
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    var = np.mean(xc * xc, axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(var + np.asarray(m.eps, x.dtype))
    xh = xc * rstd
    d = x.shape[-1]

    def back(gy):
        lead = tuple(range(gy.ndim - 1))
        ctx.add(m, "weight", (gy * xh).sum(axis=lead))
        ctx.add(m, "bias", gy.sum(axis=lead))
        gxh = gy * w
        return rstd * (gxh - gxh.mean(axis=-1, keepdims=True)
                       - xh * (gxh * xh).sum(axis=-1, keepdims=True) / d)
    return xh * w + b, back


@_rule(BatchNorm)
def _batchnorm(m, x, ctx):
    if x.ndim < 2 or x.shape[1] != m.num_features:
        raise ValueError(f"BatchNorm expects x of shape (N, {m.num_features}, ...); got shape {x.shape}")
    bshape = (1, -1) + (1,) * (x.ndim - 2)
    axes = (0,) + tuple(range(2, x.ndim))
    w, b = m.weight.reshape(bshape), m.bias.reshape(bshape)
    if not m.training:
        scale = 1.0 / np.sqrt(m.running_var.reshape(bshape).astype(x.dtype) + m.eps)
        xh = (x - m.running_mean.reshape(bshape)) * scale

        def back_eval(gy):
            ctx.add(m, "weight", (gy * xh).sum(axis=axes))
            ctx.add(m, "bias", gy.sum(axis=axes))
            return gy * w * scale
        return xh * w + b, back_eval
    mean = x.mean(axis=axes, keepdims=True)
    xc = x - mean
    var = (xc * xc).mean(axis=axes, keepdims=True)
    rstd = 1.0 / np.sqrt(var + np.asarray(m.eps, x.dtype))
    xh = xc * rstd
    n = x.size // m.num_features
    mo = m.momentum
    m.running_mean = ((1 - mo) * m.running_mean + mo * mean.reshape(-1)).astype(np.float32)
    m.running_var = ((1 - mo) * m.running_var + mo * var.reshape(-1) * (n / max(n - 1, 1))).astype(np.float32)

    def back(gy):
        ctx.add(m, "weight", (gy * xh).sum(axis=axes))
        ctx.add(m, "bias", gy.sum(axis=axes))
        gxh = gy * w
        return rstd * (gxh - gxh.mean(axis=axes, keepdims=True) - xh * (gxh * xh).mean(axis=axes, keepdims=True))
    return xh * w + b, back


# -- activations -----------------------------------------------------------------------------------

@_rule(ReLU)
def _relu(m, x, ctx):
    pos = x > 0
    return np.where(pos, x, 0).astype(x.dtype), lambda gy: gy * pos


@_rule(Sigmoid)
def _sigmoid(m, x, ctx):
    s = 1.0 / (1.0 + np.exp(-np.clip(x, -80, 80)))
    s = s.astype(x.dtype, copy=False)
    return s, lambda gy: gy * s * (1 - s)


@_rule(Tanh)
def _tanh(m, x, ctx):
    t = np.tanh(x)
    return t, lambda gy: gy * (1 - t * t)


@_rule(SiLU)
def _silu(m, x, ctx):
    s = (1.0 / (1.0 + np.exp(-np.clip(x, -80, 80)))).astype(x.dtype, copy=False)
    return x * s, lambda gy: gy * (s * (1 + x * (1 - s)))


_SQRT_2_PI = np.sqrt(2.0 / np.pi)


@_rule(GELU)
def _gelu(m, x, ctx):
    if m.approximate == "tanh":
        c = np.asarray(_SQRT_2_PI, x.dtype)
        u = c * (x + 0.044715 * x ** 3)
        t = np.tanh(u)
        y = 0.5 * x * (1 + t)

        def back_tanh(gy):
            du = c * (1 + 3 * 0.044715 * x * x)
            return gy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du)
        return y, back_tanh
    cdf = 0.5 * F._erfc(-x / np.asarray(np.sqrt(2.0), x.dtype))
    pdf = np.exp(-0.5 * x * x) / np.asarray(np.sqrt(2 * np.pi), x.dtype)
    return x * cdf, lambda gy: gy * (cdf + x * pdf)


@_rule(Softmax)
def _softmax(m, x, ctx):
    y = F.softmax(x, axis=m.axis)
    return y, lambda gy: y * (gy - (gy * y).sum(axis=m.axis, keepdims=True))


@_rule(Dropout)
def _dropout(m, x, ctx):
    if not m.training or m.p == 0.0:
        return x, lambda gy: gy
    keep = (ctx.rng.random(x.shape, dtype=np.float32) >= m.p) * np.asarray(1.0 / (1.0 - m.p), x.dtype)
    return x * keep, lambda gy: gy * keep
