"""int8 convolution (NHWC): packed weights with their geometry, and the fused conv call."""

from __future__ import annotations

import math

import numpy as np

from .. import _core

__all__ = ["ConvInt8", "pack_conv_weights", "conv2d_int8", "conv2d_int8_acc", "same_pads"]

# activation name -> (kernel code, number of parameters, default parameters)
_ACTS = {
    None: (0, 0, ()),
    "none": (0, 0, ()),
    "relu": (1, 0, ()),
    "relu6": (2, 0, (0.0, 6.0)),
    "clip": (2, 2, None),
    "hardsigmoid": (3, 2, (0.2, 0.5)),
    "hardswish": (4, 0, ()),
    "leakyrelu": (5, 1, (0.01,)),
    "sigmoid": (6, 0, ()),
    "silu": (7, 0, ()),
}
_ACT_NAMES = "None, 'relu', 'relu6', 'clip', 'hardsigmoid', 'hardswish', 'leakyrelu', 'sigmoid' or 'silu'"
_OUT_I32, _OUT_F32, _OUT_U8, _OUT_S8 = 0, 1, 2, 3


def _ints(v, n: int, name: str) -> tuple:
    """An int or a sequence of ints as an n-tuple of Python ints (TypeError otherwise)."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return (int(v),) * n
    if isinstance(v, (tuple, list)) and all(isinstance(e, (int, np.integer)) and not isinstance(e, bool) for e in v):
        return tuple(int(e) for e in v)
    raise TypeError(f"{name} must be an int or a tuple of ints; got {v!r}")


def _pads4(pads) -> tuple:
    p = _ints(pads, 4, "pads")
    if len(p) == 2:
        p = (p[0], p[1], p[0], p[1])
    if len(p) != 4:
        raise ValueError(f"pads must be an int, (pad_h, pad_w) or (top, left, bottom, right); got {pads!r}")
    return p


def _pair(v, name: str) -> tuple:
    p = _ints(v, 2, name)
    if len(p) != 2:
        raise ValueError(f"{name} must be an int or a (h, w) pair; got {v!r}")
    return p


def same_pads(h: int, w: int, kernel_size, stride=1, dilation=1, *, upper: bool = True) -> tuple:
    """TF / ONNX ``SAME`` padding ``(top, left, bottom, right)`` for an ``h x w`` input.

    ``total = max((ceil(in / s) - 1) * s + (k - 1) * d + 1 - in, 0)`` per axis, split with the odd
    pixel at the bottom/right (``upper=True``: TF "SAME", ONNX SAME_UPPER) or top/left
    (``upper=False``: ONNX SAME_LOWER). Output size is ``ceil(in / s)``.
    """
    (kh, kw), (sh, sw), (dh, dw) = _pair(kernel_size, "kernel_size"), _pair(stride, "stride"), _pair(dilation, "dilation")
    out = []
    for n, k, s, d in ((h, kh, sh, dh), (w, kw, sw, dw)):
        total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
        small = total // 2
        out.append((small, total - small) if upper else (total - small, small))
    return (out[0][0], out[1][0], out[0][1], out[1][1])


class ConvInt8(_core.ConvInt8):
    """An int8 convolution layer's weights, packed once, with its geometry.

    Built by :func:`pack_conv_weights`. The weights are packed into the int8 GEMM panel layout
    shared by every instruction-set path (K ordered ``(kh, kw, c)``, each tap's channels padded to
    a multiple of 4), or for depthwise layers (``groups == Cin == Cout``) into ``[taps][C]`` rows.
    The object also caches, per input height x width, the indirection buffer of the layer (one
    int32 offset per output pixel and tap): built on the first call with that shape, reused after,
    so a warm call allocates nothing but its output (none with ``out=``).

    Attributes
    ----------
    out_channels, in_channels, groups : int
    kernel_size, stride, dilation : tuple[int, int]
        ``(h, w)``.
    pads : tuple[int, int, int, int]
        ``(top, left, bottom, right)``.
    route : str
        ``"depthwise"``, ``"direct"`` (1x1, stride 1, no padding: a plain GEMM over N*H*W rows),
        ``"igemm"`` (implicit GEMM through the indirection buffer) or ``"im2row"`` (at most 4
        input channels per group, e.g. an RGB first layer: each task copies its rows' windows,
        ``KH*KW*Cin/groups`` bytes, into a per-thread buffer instead of padding every tap to 4).
    nbytes : int
        Bytes of packed weights.
    """

    def __init__(self, w: np.ndarray, *, stride=1, pads=0, dilation=1, groups: int = 1) -> None:
        super().__init__(w, _pair(stride, "stride"), _pads4(pads), _pair(dilation, "dilation"), groups)

    def output_shape(self, x_shape) -> tuple:
        """``(N, OH, OW, Cout)`` for an NHWC input of shape ``x_shape`` (ValueError if it cannot fit)."""
        n, h, w, c = x_shape
        if c != self.in_channels:
            raise ValueError(f"x must have {self.in_channels} channels (NHWC); got shape {tuple(x_shape)}")
        oh, ow = self.output_hw(int(h), int(w))
        return (int(n), oh, ow, self.out_channels)

    def __repr__(self) -> str:
        return (f"ConvInt8(out_channels={self.out_channels}, in_channels={self.in_channels}, kernel_size="
                f"{self.kernel_size}, stride={self.stride}, pads={self.pads}, dilation={self.dilation}, "
                f"groups={self.groups}, route={self.route!r})")

    def __reduce__(self):
        # copy / deepcopy / multiprocessing through the plain int8 weights and the geometry.
        return (_rebuild, (self.unpack(), self.stride, self.pads, self.dilation, self.groups))


def _rebuild(w, stride, pads, dilation, groups):
    return ConvInt8(w, stride=stride, pads=pads, dilation=dilation, groups=groups)


def pack_conv_weights(w: np.ndarray, *, stride=1, pads=0, dilation=1, groups: int = 1) -> ConvInt8:
    """Pack int8 convolution weights and the layer's geometry once, for :func:`conv2d_int8`.

    Parameters
    ----------
    w : numpy.ndarray, int8, shape (Cout, Cin / groups, KH, KW)
        The ONNX / PyTorch weight layout, symmetric per-output-channel quantization: values in
        [-127, 127] (-128 raises ``ValueError`` with its position).
    stride, dilation : int or (h, w)
    pads : int, (pad_h, pad_w) or (top, left, bottom, right)
        Zero-point padding; asymmetric padding (TF "SAME", see :func:`same_pads`) is allowed.
    groups : int
        ``Cin`` and ``Cout`` must be multiples of it. ``groups == Cin == Cout`` selects the
        depthwise kernels (channels in vector lanes); other grouped convolutions run one implicit
        GEMM per group.

    Returns
    -------
    ConvInt8
    """
    return ConvInt8(w, stride=stride, pads=pads, dilation=dilation, groups=groups)


def _x_zero_point(zp, x) -> int:
    dt = x.dtype if isinstance(x, np.ndarray) else None
    if isinstance(zp, np.ndarray) and zp.ndim == 0:
        zp = zp[()]
    if zp is None:
        if dt == np.uint8:
            raise ValueError("x is uint8: give its x_zero_point (np.uint8 or an int in [0, 255])")
        return 0
    if isinstance(zp, (np.uint8, np.int8)):
        if dt is not None and dt in (np.uint8, np.int8) and zp.dtype != dt:
            raise TypeError(f"x_zero_point must have x's dtype ({dt}); got {zp.dtype} {int(zp)}")
        return int(zp)
    if isinstance(zp, (int, np.integer)) and not isinstance(zp, bool):
        lo, hi = (0, 255) if dt == np.uint8 else (-128, 127)
        if not lo <= int(zp) <= hi:
            raise ValueError(f"x_zero_point must be in [{lo}, {hi}] for {dt} x; got {int(zp)}")
        return int(zp)
    raise TypeError(f"x_zero_point must be an int, np.uint8 or np.int8; got {type(zp).__name__} {zp!r}")


def _number(v, name: str, *, positive: bool = False) -> float:
    if isinstance(v, np.ndarray) and v.ndim == 0:
        v = v[()]
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number; got {type(v).__name__}")
    f = float(v)
    if not math.isfinite(f) or (positive and not f > 0):
        raise ValueError(f"{name} must be a finite number{' > 0' if positive else ''}; got {f}")
    return f


def _activation(activation, act_params) -> tuple:
    if activation is not None and not isinstance(activation, str):
        raise TypeError(f"activation must be None or a str ({_ACT_NAMES}); got {type(activation).__name__}")
    if activation not in _ACTS:
        raise ValueError(f"activation must be {_ACT_NAMES}; got {activation!r}")
    code, nparams, default = _ACTS[activation]
    if act_params is None:
        if default is None:
            raise ValueError(f"activation {activation!r} needs act_params=(lo, hi)")
        params = default
    else:
        if nparams == 0:
            raise ValueError(f"activation {activation!r} takes no act_params; got {act_params!r}")
        params = (act_params,) if isinstance(act_params, (int, float, np.integer, np.floating)) else act_params
        if not isinstance(params, (tuple, list)) or len(params) != nparams:
            raise ValueError(f"act_params for {activation!r} must be {nparams} number(s); got {act_params!r}")
        params = tuple(_number(p, "act_params") for p in params)
    params = tuple(params) + (0.0,) * (2 - len(params))
    return code, params[0], params[1]


def conv2d_int8(
    x: np.ndarray,
    packed: ConvInt8,
    w_scale,
    bias: np.ndarray | None = None,
    *,
    x_scale: float,
    x_zero_point=None,
    activation: str | None = None,
    act_params=None,
    residual: np.ndarray | None = None,
    out_scale: float | None = None,
    out_zero_point=None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """int8 2-D convolution, NHWC, with the whole epilogue fused: one call per layer.

    ``acc = sum over (kh, kw, c) of (x - x_zero_point) * w`` is exact in int32; then, in float32,
    left to right and without fused multiply-adds::

        y = (acc * x_scale) * w_scale[n] + bias[n] + residual[m, n]
        y = activation(y)
        output = y                                         (float32), or
        q = clip(round_half_even(y * (1 / out_scale)), qmin - zp, qmax - zp) + zp  (uint8 / int8)

    Routes (chosen by the layer): depthwise kernels when ``groups == Cin == Cout``; a plain GEMM over
    N*H*W rows for 1x1 stride 1 without padding; per-task im2row for at most 4 input channels per
    group (first layers); otherwise an implicit GEMM (indirection buffer, zero-point padding, no
    im2col copy). Threads split output pixels and output channels, never
    the reduction, at batch 1 too; the GIL is released.

    Parameters
    ----------
    x : numpy.ndarray, uint8 or int8, shape (N, H, W, Cin)
        Statically quantized activations (one scale and zero point per tensor). Strided views are
        copied once to C order.
    packed : ConvInt8
        From :func:`pack_conv_weights` (weights and geometry).
    w_scale : float or numpy.ndarray float32 (Cout,)
        Per-output-channel (or per-tensor) weight scale.
    bias : numpy.ndarray float32 (Cout,), optional
    x_scale : float
        Activation scale (> 0).
    x_zero_point : int, np.uint8 or np.int8
        In the range of ``x``'s dtype (default 0 for int8 ``x``; required for uint8 ``x``).
    activation : None, "relu", "relu6", "clip", "hardsigmoid", "hardswish", "leakyrelu", "sigmoid" or "silu"
        ``clip``: ``min(max(y, lo), hi)`` with ``act_params=(lo, hi)``; ``relu6`` is clip(0, 6);
        ``hardsigmoid``: ``min(max(y * alpha + beta, 0), 1)``, ``act_params=(alpha, beta)``
        (default ONNX's (0.2, 0.5)); ``hardswish``: ``y * hardsigmoid(y)`` with (1/6, 1/2);
        ``leakyrelu``: ``y * alpha`` for ``y < 0``, ``act_params=alpha`` (default 0.01);
        ``sigmoid``: ``1 / (1 + exp(-y))``; ``silu``: ``y / (1 + exp(-y))``.
    residual : numpy.ndarray float32 (N, OH, OW, Cout), optional
        Added before the activation (a ResNet block's shortcut). Its values should be finite:
        NaN/Inf propagate (float output) or saturate (quantized output).
    out_scale : float, optional
        Quantize the output with this scale (> 0) instead of returning float32.
    out_zero_point : np.uint8 or np.int8, optional
        The output zero point; its dtype selects uint8 or int8 output (default ``np.int8(0)``).
    out : numpy.ndarray, optional
        C-contiguous destination of the output's shape and dtype. For float32 output it may be
        ``residual`` itself (in place).

    Returns
    -------
    numpy.ndarray, shape (N, OH, OW, Cout)
        float32, or uint8/int8 when ``out_scale`` is given.

    Notes
    -----
    Every instruction-set path gives the same bits as the scalar reference, for every activation:
    the epilogue is a fixed sequence of float32 operations and ``exp`` (sigmoid, silu) is the same
    degree-6 polynomial on every path, within ``1e-5 * (1 + |y|)`` of the exact function (like
    ``linear_int8``). Without an activation, or with relu/clip/hardsigmoid/hardswish/leakyrelu,
    float outputs equal a NumPy float32 evaluation of the formula above exactly; quantized outputs
    multiply by the float32 reciprocal of ``out_scale`` (as fp32 requantization does), which can
    differ from a division by one unit at exact ties.

    Raises
    ------
    TypeError
        Wrong dtype of ``x``, ``w_scale``, ``bias``, ``residual``, ``out``, zero points, or a
        ``packed`` that is not a ConvInt8.
    ValueError
        Shape mismatches (the message gives the expected shape), an input smaller than the
        dilated kernel, non-finite or non-positive scales, bad activation parameters.
    """
    code, p0, p1 = _activation(activation, act_params)
    xs = _number(x_scale, "x_scale", positive=True)
    zp = _x_zero_point(x_zero_point, x)
    if out_scale is None:
        if out_zero_point is not None:
            raise ValueError("out_zero_point needs out_scale (quantized output); got out_scale=None")
        return _core.conv2d_int8(x, packed, w_scale, bias, xs, zp, code, p0, p1, residual, _OUT_F32, 1.0, 0, out)
    os_ = _number(out_scale, "out_scale", positive=True)
    ozp = out_zero_point
    if isinstance(ozp, np.ndarray) and ozp.ndim == 0:
        ozp = ozp[()]
    if ozp is None:
        kind, ozp = _OUT_S8, 0
    elif isinstance(ozp, np.uint8):
        kind = _OUT_U8
    elif isinstance(ozp, np.int8):
        kind = _OUT_S8
    else:
        raise TypeError("out_zero_point must be np.uint8 or np.int8 (its dtype selects the output dtype); got "
                        f"{type(ozp).__name__} {ozp!r}")
    return _core.conv2d_int8(x, packed, w_scale, bias, xs, zp, code, p0, p1, residual, kind, os_, int(ozp), out)


def conv2d_int8_acc(x: np.ndarray, packed: ConvInt8, *, x_zero_point=None, out: np.ndarray | None = None) -> np.ndarray:
    """The exact int32 accumulators of :func:`conv2d_int8` (ONNX ConvInteger with weight zero point 0).

    Parameters
    ----------
    x : numpy.ndarray, uint8 or int8, shape (N, H, W, Cin)
    packed : ConvInt8
    x_zero_point : int, np.uint8 or np.int8
        As in :func:`conv2d_int8`.
    out : numpy.ndarray int32 (N, OH, OW, Cout), optional

    Returns
    -------
    numpy.ndarray, int32, shape (N, OH, OW, Cout)
        ``sum (x - x_zero_point) * w`` over each window, bit-identical on every path and at any
        thread count (exact whenever it fits int32: always for KH * KW * Cin / groups <= 66311).
    """
    zp = _x_zero_point(x_zero_point, x)
    return _core.conv2d_int8(x, packed, None, None, 1.0, zp, 0, 0.0, 0.0, None, _OUT_I32, 1.0, 0, out)
