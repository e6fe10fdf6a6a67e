"""NumPy float32 operations behind the layers (no per-element Python loops).

Convolution is im2col via ``np.lib.stride_tricks.sliding_window_view`` plus a batched matmul
per group, in bands of output rows; depthwise convolution and pooling loop only over the kernel
taps (e.g. 9 for 3x3), each tap being one whole-array operation.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "as_float32", "linear", "conv2d", "max_pool2d", "avg_pool2d", "relu", "gelu", "silu",
    "sigmoid", "tanh", "softmax", "layer_norm", "erf", "conv_output_size", "pair", "pads4",
]

_sliding = np.lib.stride_tricks.sliding_window_view


def as_float32(x, name: str = "x") -> np.ndarray:
    """Return ``x`` as a float32 ndarray.

    float32 passes through without a copy; other floating dtypes (float16, float64) are cast;
    integer, bool, complex and object inputs raise ``TypeError`` (a silent cast there usually hides
    a bug, e.g. token ids sent to a float layer).
    """
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    if x.dtype == np.float32:
        return x
    if x.dtype.kind == "f":
        return x.astype(np.float32)
    raise TypeError(f"{name} must be a float32 array (other float dtypes are cast); got {x.dtype}")


def pair(v, name: str) -> tuple[int, int]:
    """An int or a pair of ints -> (h, w); validates non-negative ints."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        t = (int(v), int(v))
    else:
        try:
            t = tuple(int(a) for a in v)
        except TypeError:
            raise TypeError(f"{name} must be an int or a pair of ints; got {v!r}") from None
        if len(t) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints; got {v!r}")
    if min(t) < 0:
        raise ValueError(f"{name} must be non-negative; got {v!r}")
    return t


def pads4(v) -> tuple[int, int, int, int]:
    """Padding as (top, left, bottom, right), from an int, (ph, pw) or a 4-tuple in ONNX order
    (top, left, bottom, right)."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        p = (int(v),) * 4
    else:
        t = tuple(int(a) for a in v)
        if len(t) == 2:
            p = (t[0], t[1], t[0], t[1])
        elif len(t) == 4:
            p = t
        else:
            raise ValueError(f"padding must be an int, (ph, pw) or (top, left, bottom, right); got {v!r}")
    if min(p) < 0:
        raise ValueError(f"padding must be non-negative; got {v!r}")
    return p


def conv_output_size(size: int, k: int, stride: int, pad_total: int, dilation: int) -> int:
    return (size + pad_total - dilation * (k - 1) - 1) // stride + 1


def conv_output_hw(h: int, w: int, kernel, stride, padding4, dilation, what: str) -> tuple[int, int]:
    """(OH, OW) of a 2-D convolution of an h x w input: kernel, stride, dilation are (h, w) pairs,
    padding4 is (top, left, bottom, right). ValueError naming ``what`` when the dilated kernel
    does not fit in the padded input."""
    kh, kw = kernel
    pt, pl, pb, pr = padding4
    oh = conv_output_size(h, kh, stride[0], pt + pb, dilation[0])
    ow = conv_output_size(w, kw, stride[1], pl + pr, dilation[1])
    if oh < 1 or ow < 1:
        raise ValueError(f"{what}: input {h}x{w} is smaller than the (dilated) kernel {kh}x{kw} plus padding")
    return oh, ow


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """x [..., in] @ weight[out, in].T + bias[out] -> [..., out] (float32)."""
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(f"x must have last dimension {weight.shape[1]} (in_features); got shape {x.shape}")
    lead = x.shape[:-1]
    y = x.reshape(-1, x.shape[-1]) @ weight.T
    if bias is not None:
        y += bias
    return y.reshape(*lead, weight.shape[0])


def _pad(x: np.ndarray, p: tuple[int, int, int, int], value: float = 0.0) -> np.ndarray:
    t, l, b, r = p
    if t == l == b == r == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), mode="constant", constant_values=value)


def _check_nchw(x: np.ndarray, c: int | None, what: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{what} expects x of shape (N, C, H, W); got shape {x.shape}")
    if c is not None and x.shape[1] != c:
        raise ValueError(f"{what} expects {c} input channels; got x of shape {x.shape}")


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> np.ndarray:
    """2-D convolution (cross-correlation), NCHW.

    Parameters
    ----------
    x : float32 (N, C, H, W)
    weight : float32 (O, C // groups, kh, kw)
    bias : float32 (O,) or None
    stride, dilation : int or (h, w)
    padding : int, (ph, pw) or (top, left, bottom, right); zero padding
    groups : int; ``groups == C`` with ``O == m * C`` is depthwise (fast path)

    Returns
    -------
    float32 (N, O, OH, OW)
    """
    o, cg, kh, kw = weight.shape
    _check_nchw(x, cg * groups, "conv2d")
    sh, sw = pair(stride, "stride")
    dh, dw = pair(dilation, "dilation")
    p = pads4(padding)
    n, c, h, w = x.shape
    oh, ow = conv_output_hw(h, w, (kh, kw), (sh, sw), p, (dh, dw), "conv2d")
    xp = _pad(x, p)
    if cg == 1 and groups == c and groups > 1:
        y = _depthwise(xp, weight, oh, ow, sh, sw, dh, dw)
    elif kh == kw == 1 and groups == 1:
        # 1x1: no im2col, one (O, C) @ (C, H*W) matmul per image
        xs = xp[:, :, : sh * (oh - 1) + 1 : sh, : sw * (ow - 1) + 1 : sw]
        y = (weight.reshape(o, c) @ xs.reshape(n, c, oh * ow)).reshape(n, o, oh, ow)
    else:
        win = _receptive_fields(xp, kh, kw, sh, sw, dh, dw, oh, ow)
        k = cg * kh * kw
        wm = weight.reshape(groups, o // groups, k)
        y = np.empty((n, groups, o // groups, oh * ow), dtype=np.result_type(xp.dtype, weight.dtype))
        # im2col one band of output rows at a time (~2 MB of columns): the copy stays in cache, and
        # OpenBLAS runs a small-M product over a huge N (e.g. 24 x 864 x 6400) up to 2x slower in
        # one piece.  Each output element is the same dot product either way.
        rows = max(1, min(oh, (1 << 19) // max(1, groups * k * ow)))
        for b in range(n):
            for r0 in range(0, oh, rows):
                r1 = min(oh, r0 + rows)
                # (C, rows, OW, kh, kw) -> (G, Cg*kh*kw, rows*OW): columns ordered like weight's rows
                cols = win[b, :, r0:r1].reshape(groups, cg, r1 - r0, ow, kh, kw).transpose(0, 1, 4, 5, 2, 3)
                np.matmul(wm, cols.reshape(groups, k, (r1 - r0) * ow), out=y[b, :, :, r0 * ow:r1 * ow])
        y = y.reshape(n, o, oh, ow)
    if bias is not None:
        y += bias.reshape(1, o, 1, 1)
    return y


def _receptive_fields(xp, kh, kw, sh, sw, dh, dw, oh, ow):
    """View (no copy) [N, C, OH, OW, kh, kw] of a padded NCHW input's receptive fields for a
    kh x kw kernel with stride (sh, sw) and dilation (dh, dw); output size (oh, ow)."""
    v = _sliding(xp, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    return v[:, :, : sh * (oh - 1) + 1 : sh, : sw * (ow - 1) + 1 : sw, ::dh, ::dw]


def _depthwise(xp, weight, oh, ow, sh, sw, dh, dw):
    """Depthwise conv of a padded NCHW input: one multiply-add per kernel tap over long
    contiguous runs, results bit-identical to summing the taps in order.

    The padded image read from tap offset (i*dh)*wp + j*dw lines up with the output rows if
    every output row is computed wp wide (the extra wp - ow columns are discarded); strides first
    split the input into sh*sw phase planes (one copy) in which every tap reads with stride 1.
    With many channels (and no depth multiplier) the runs are pixel rows of channel vectors
    (NHWC), so each pass broadcasts the tap's weights along the innermost axis; with few
    channels they are the channel planes themselves (NCHW).  Both work in chunks of ~256 KiB
    of output so the accumulator stays in cache across the kh*kw passes.
    """
    n, c, hp, wp = xp.shape
    o, _, kh, kw = weight.shape
    m = o // c  # depth multiplier: output channel c*m + k reads input channel c
    nhwc = m == 1 and c >= 128
    hq, wq = -(-hp // sh), -(-wp // sw)
    if nhwc:
        xt = xp.transpose(0, 2, 3, 1)
        if sh == sw == 1:
            planes = np.ascontiguousarray(xt).reshape(1, 1, n, hp * wp, c)
        else:
            planes = np.zeros((sh, sw, n, hq, wq, c), dtype=xp.dtype)
            for a in range(sh):
                for b in range(sw):
                    src = xt[:, a::sh, b::sw]
                    planes[a, b, :, :src.shape[1], :src.shape[2]] = src
            planes = planes.reshape(sh, sw, n, hq * wq, c)
    elif sh == sw == 1:
        planes = xp.reshape(1, 1, n, c, hp * wp)
    else:
        planes = np.zeros((sh, sw, n, c, hq, wq), dtype=xp.dtype)
        for a in range(sh):
            for b in range(sw):
                src = xp[:, :, a::sh, b::sw]
                planes[a, b, :, :, :src.shape[2], :src.shape[3]] = src
        planes = planes.reshape(sh, sw, n, c, hq * wq)
    length = (oh - 1) * wq + ow     # the last output row needs only ow columns
    taps = [(i * kw + j, (i * dh) % sh, (j * dw) % sw, ((i * dh) // sh) * wq + (j * dw) // sw)
            for i in range(kh) for j in range(kw)]
    if nhwc:
        wt = np.ascontiguousarray(weight.reshape(c, kh * kw).T)    # (taps, c): rows contiguous
        return _depthwise_nhwc(planes, wt, taps, oh, ow, wq, length)
    wr = weight.reshape(c, m, kh * kw)
    y = np.empty((n, c, m, oh, ow), dtype=xp.dtype)  # the input's float dtype (float32 for the layers)
    cc = max(1, min(c, (1 << 16) // max(1, m * oh * wq)))
    acc = np.empty((cc, m, oh * wq), dtype=xp.dtype)
    tmp = np.empty((cc, m, length), dtype=xp.dtype)
    for b in range(n):
        for c0 in range(0, c, cc):
            k = min(c, c0 + cc) - c0
            acc_k, tmp_k = acc[:k, :, :length], tmp[:k]
            for t, (tap, pa, pb, off) in enumerate(taps):
                src = planes[pa, pb, b, c0:c0 + k, None, off:off + length]
                wt = wr[c0:c0 + k, :, tap, None]
                if t == 0:
                    np.multiply(src, wt, out=acc_k)
                else:
                    np.multiply(src, wt, out=tmp_k)
                    acc_k += tmp_k
            y[b, c0:c0 + k] = acc[:k].reshape(k, m, oh, wq)[..., :ow]
    return y.reshape(n, o, oh, ow)


def _depthwise_nhwc(planes, wt, taps, oh, ow, wq, length):
    # planes: (sh, sw, n, hq * wq, c); wt: (taps, c)
    n, c = planes.shape[2], planes.shape[4]
    y = np.empty((n, oh * wq, c), dtype=planes.dtype)
    rows = max(1, (1 << 16) // c)
    tmp = np.empty((rows, c), dtype=planes.dtype)
    for b in range(n):
        for r0 in range(0, length, rows):
            r1 = min(length, r0 + rows)
            acc, tmp_k = y[b, r0:r1], tmp[:r1 - r0]
            for t, (tap, pa, pb, off) in enumerate(taps):
                src = planes[pa, pb, b, off + r0:off + r1]
                if t == 0:
                    np.multiply(src, wt[tap], out=acc)
                else:
                    np.multiply(src, wt[tap], out=tmp_k)
                    acc += tmp_k
    y = y.reshape(n, oh, wq, c)[:, :, :ow].transpose(0, 3, 1, 2)
    return np.ascontiguousarray(y)


def _pool_geometry(x, kernel_size, stride, padding, dilation, what):
    _check_nchw(x, None, what)
    kh, kw = pair(kernel_size, "kernel_size")
    if kh < 1 or kw < 1:
        raise ValueError(f"kernel_size must be positive; got {kernel_size!r}")
    sh, sw = pair(kernel_size if stride is None else stride, "stride")
    if sh < 1 or sw < 1:
        raise ValueError(f"stride must be positive; got {stride!r}")
    dh, dw = pair(dilation, "dilation")
    p = pads4(padding)
    h, w = x.shape[2:]
    oh = conv_output_size(h, kh, sh, p[0] + p[2], dh)
    ow = conv_output_size(w, kw, sw, p[1] + p[3], dw)
    if oh < 1 or ow < 1:
        raise ValueError(f"{what}: input {h}x{w} is smaller than the window {kh}x{kw} plus padding")
    return kh, kw, sh, sw, dh, dw, p, oh, ow


def _taps(xp, kh, kw, sh, sw, dh, dw, oh, ow):
    for i in range(kh):
        for j in range(kw):
            yield xp[:, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh, j * dw : j * dw + sw * (ow - 1) + 1 : sw]


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1) -> np.ndarray:
    """Max pooling, NCHW; padding never wins (padded with -inf). ``stride`` defaults to the window."""
    kh, kw, sh, sw, dh, dw, p, oh, ow = _pool_geometry(x, kernel_size, stride, padding, dilation, "max_pool2d")
    xp = _pad(x, p, -np.inf)
    y = None
    for sl in _taps(xp, kh, kw, sh, sw, dh, dw, oh, ow):
        y = sl.copy() if y is None else np.maximum(y, sl, out=y)
    return y


def avg_pool2d(x, kernel_size, stride=None, padding=0, count_include_pad: bool = True) -> np.ndarray:
    """Average pooling, NCHW; ``count_include_pad=False`` divides by the real (unpadded) count."""
    kh, kw, sh, sw, dh, dw, p, oh, ow = _pool_geometry(x, kernel_size, stride, padding, 1, "avg_pool2d")
    xp = _pad(x, p)
    y = np.zeros(x.shape[:2] + (oh, ow), dtype=np.float32)
    for sl in _taps(xp, kh, kw, sh, sw, dh, dw, oh, ow):
        y += sl
    if count_include_pad or not any(p):
        y *= np.float32(1.0 / (kh * kw))
    else:
        ones = _pad(np.ones((1, 1) + x.shape[2:], dtype=np.float32), p)
        cnt = np.zeros((1, 1, oh, ow), dtype=np.float32)
        for sl in _taps(ones, kh, kw, sh, sw, dh, dw, oh, ow):
            cnt += sl
        y /= cnt
    return y


def relu(x):
    return np.maximum(x, np.float32(0))


def sigmoid(x):
    # tanh form: no overflow warnings for large |x| and accurate in both tails
    return (np.float32(0.5) * (np.float32(1) + np.tanh(np.float32(0.5) * x))).astype(np.float32, copy=False)


def tanh(x):
    return np.tanh(x)


def silu(x):
    return x * sigmoid(x)


_ERFC_COEF = (0.17087277, -0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806,
              0.09678418, 0.37409196, 1.00002368, -1.26551223)


def _erfc(z: np.ndarray) -> np.ndarray:
    # Chebyshev-fitted erfc (Numerical Recipes "erfcc"), fractional error < 1.2e-7 everywhere,
    # evaluated in z's dtype with in-place Horner steps.  In float32 the total error stays a few
    # ulps, and the relative accuracy holds in the far tails GELU needs.
    dt = z.dtype.type
    a = np.abs(z)
    t = dt(1) / (dt(1) + dt(0.5) * a)
    p = t * dt(_ERFC_COEF[0])
    p += dt(_ERFC_COEF[1])
    for c in _ERFC_COEF[2:]:
        p *= t
        p += dt(c)
    np.multiply(a, a, out=a)
    p -= a
    np.exp(p, out=p)
    p *= t
    # erfc(z) = p for z >= 0 (exactly, keeping the tail's relative accuracy), 2 - p below
    q = dt(2) - dt(2) * p
    q *= z < 0
    p += q
    return p


def erf(x) -> np.ndarray:
    """Error function in float32 (NumPy has none); absolute error < 2e-7."""
    x64 = np.asarray(x, dtype=np.float64)
    return (1.0 - _erfc(x64)).astype(np.float32)


def gelu(x, approximate: str = "none"):
    """GELU: ``x * Phi(x)`` (exact, via erfc; error a few float32 ulps) or the tanh approximation."""
    if approximate == "tanh":
        c = np.float32(np.sqrt(2.0 / np.pi))
        return np.float32(0.5) * x * (np.float32(1) + np.tanh(c * (x + np.float32(0.044715) * x * x * x)))
    # Chunks of 32K elements keep the ~25 temporaries of the erfc evaluation in L2 cache
    # (about 3x faster than whole-array passes on a [8, 128, 1536] activation).
    xf = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(xf)
    step = 1 << 15
    for s in range(0, xf.size, step):
        xs = xf[s:s + step]
        y = _erfc(xs * np.float32(-1.0 / np.sqrt(2.0)))
        y *= xs
        np.multiply(y, np.float32(0.5), out=out[s:s + step])
    return out.reshape(x.shape)


def softmax(x, axis: int = -1):
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    e /= np.sum(e, axis=axis, keepdims=True)
    return e


def layer_norm(x, weight, bias, eps: float):
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    var = np.mean(xc * xc, axis=-1, keepdims=True)
    y = xc / np.sqrt(var + np.float32(eps))
    if weight is not None:
        y *= weight
    if bias is not None:
        y += bias
    return y
