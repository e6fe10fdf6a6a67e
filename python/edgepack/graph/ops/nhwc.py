"""Channels-last operators that the inference lowering (:mod:`edgepack.graph.passes.layout`)
puts in place of NCHW convolutions: they run edgepack's C++ convolution kernels with the whole
epilogue fused.

``edgepack.ConvNHWC``
    float32 convolution, inputs ``(x NHWC, W [Cout, Cin/g, KH, KW], B?, residual?)``; attributes
    ``strides``, ``pads`` (top, left, bottom, right), ``dilations``, ``group``, ``activation``
    ("" or a name :func:`edgepack.kernels.conv2d_f32` takes) and ``act_params``.
``edgepack.QConvNHWC``
    int8 convolution, inputs ``(x NHWC float32 or already quantized uint8/int8, W_q int8,
    w_scale float32 [Cout], B?, residual?)``; the static activation ``x_scale``/``x_zero_point``
    (``x_dtype`` "uint8" or "int8"), and ``out_scale``/``out_zero_point``/``out_dtype`` when the
    output goes to the next int8 layer as int8 (``out_scale`` 0: float32 output).

A residual whose shape differs from the output (a broadcasting Add) is added after the kernel
instead of inside it, so the lowering never changes a result's meaning.
"""

from __future__ import annotations

import numpy as np

from ..registry import EDGEPACK_DOMAIN, REQUIRED, register_op

_GEOM = {"strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 1,
         "activation": "", "act_params": []}


def _kernels():
    from ... import kernels

    return kernels


def _act_params(p):
    if not p:
        return None
    return float(p[0]) if len(p) == 1 else tuple(float(v) for v in p)


# NumPy forms of the activations, for the rare broadcasting-residual fallback
def _np_act(name, params):
    lo_hi = params if isinstance(params, tuple) else None
    table = {
        "": lambda y: y,
        "relu": lambda y: np.maximum(y, np.float32(0)),
        "relu6": lambda y: np.clip(y, np.float32(0), np.float32(6)),
        "clip": lambda y: np.clip(y, np.float32(lo_hi[0]), np.float32(lo_hi[1])),
        "hardsigmoid": lambda y: np.clip(y * np.float32((lo_hi or (0.2, 0.5))[0]) + np.float32((lo_hi or (0.2, 0.5))[1]),
                                         np.float32(0), np.float32(1)),
        "hardswish": lambda y: y * np.clip(y / np.float32(6) + np.float32(0.5), np.float32(0), np.float32(1)),
        "sigmoid": lambda y: (np.float32(1) / (np.float32(1) + np.exp(-y))).astype(np.float32),
        "silu": lambda y: (y / (np.float32(1) + np.exp(-y))).astype(np.float32),
        "tanh": np.tanh,
        "leakyrelu": lambda y: np.where(y < 0, y * np.float32(params if params is not None else 0.01), y),
    }
    return table[name]


def _with_residual(conv, act, params):
    """``conv(x, residual)`` for the kernel, with a NumPy fallback when the residual broadcasts."""

    def run(x, r, out_shape_fn):
        if r is None:
            return conv(x, None, act)
        if r.dtype == np.float32 and r.shape == out_shape_fn(x.shape):
            return conv(x, r, act)
        y = conv(x, None, "") + r
        return _np_act(act, params)(y).astype(np.float32, copy=False)
    return run


@register_op("ConvNHWC", 1, domain=EDGEPACK_DOMAIN, attrs=dict(_GEOM))
def _conv_nhwc(node, consts):
    k = _kernels()
    a = node.attrs
    w = consts[1]
    if w is None:
        raise ValueError("the weight must be a constant")
    b = consts[2] if len(consts) > 2 else None
    b = None if b is None else np.ascontiguousarray(b, np.float32)
    packed = k.pack_conv_weights_f32(np.ascontiguousarray(w, np.float32), stride=tuple(a["strides"]),
                                     pads=tuple(a["pads"]), dilation=tuple(a["dilations"]), groups=int(a["group"]))
    params = _act_params(a["act_params"])

    def conv(x, r, act):
        return k.conv2d_f32(x, packed, b, activation=act or None, act_params=params if act else None, residual=r)

    body = _with_residual(conv, a["activation"], params)
    out_shape = packed.output_shape

    def run(x, w_=None, b_=None, r=None):
        if x.dtype != np.float32:
            x = x.astype(np.float32)
        return body(x, r, out_shape)
    return run


@register_op("QConvNHWC", 1, domain=EDGEPACK_DOMAIN,
             attrs=dict(_GEOM, x_scale=REQUIRED, x_zero_point=0, x_dtype="uint8", out_scale=0.0,
                        out_zero_point=0, out_dtype="float32"))
def _qconv_nhwc(node, consts):
    k = _kernels()
    a = node.attrs
    wq, ws = consts[1], consts[2]
    if wq is None or ws is None:
        raise ValueError("the int8 weight and its scales must be constants")
    b = consts[3] if len(consts) > 3 else None
    b = None if b is None else np.ascontiguousarray(b, np.float32)
    packed = k.pack_conv_weights(np.ascontiguousarray(wq, np.int8), stride=tuple(a["strides"]),
                                 pads=tuple(a["pads"]), dilation=tuple(a["dilations"]), groups=int(a["group"]))
    ws = np.ascontiguousarray(ws, np.float32)
    xdt = np.dtype(a["x_dtype"])
    x_scale = float(a["x_scale"])
    x_zp = xdt.type(a["x_zero_point"])
    out_scale = float(a["out_scale"]) or None
    odt = np.dtype(a["out_dtype"]) if out_scale else None
    out_zp = odt.type(a["out_zero_point"]) if out_scale else None
    params = _act_params(a["act_params"])
    act = a["activation"]

    from ...kernels import _conv as kc

    # Arguments validated once here (the public wrapper checks them per call: a few us that show
    # on the small layers of a mobile network); the binding still checks the arrays.
    kc._x_zero_point(x_zp, np.zeros(0, xdt))
    code, p0, p1 = kc._activation(act or None, params if act else None)
    code0, q0, q1 = kc._activation(None, None)
    if out_scale:
        kind, os_, ozp = (kc._OUT_U8 if odt == np.uint8 else kc._OUT_S8), out_scale, int(out_zp)
    else:
        kind, os_, ozp = kc._OUT_F32, 1.0, 0
    zp_i = int(x_zp)

    def conv(x, r, act_):
        if act_:
            return _core.conv2d_int8(x, packed, ws, b, x_scale, zp_i, code, p0, p1, r, kind, os_, ozp, None)
        return _core.conv2d_int8(x, packed, ws, b, x_scale, zp_i, code0, q0, q1, r, kind, os_, ozp, None)

    def out_shape(shape):
        return packed.output_shape(shape)

    from ... import _core
    from ...kernels import _quantize as kq

    # The scale and zero point validated once: kernels.quantize checks them per call, which costs
    # more than quantizing a small activation
    q_scale, q_zp, q_u8 = kq._scale_arg(x_scale), kq._zp_arg(x_zp, xdt), xdt == np.uint8

    def run(x, w_=None, s_=None, b_=None, r=None):
        if x.dtype != xdt:
            # float activations: quantized here with the layer's static scale (ONNX QuantizeLinear,
            # bit-exact), which reproduces what the NCHW QConv2d computes
            x = _core.quantize(np.ascontiguousarray(x, np.float32), q_scale, q_zp, None, q_u8, None)
        if r is not None and (out_scale or r.shape != out_shape(x.shape) or r.dtype != np.float32):
            y = conv(x, None, "") if not out_scale else None
            if y is None:
                raise ValueError("a broadcasting residual with int8 output is not supported")
            return _np_act(act, params)(y + r).astype(np.float32, copy=False)
        return conv(x, r, act)
    return run


@register_op("GlobalAveragePoolNHWC", 1, domain=EDGEPACK_DOMAIN)
def _gap_nhwc(node, consts):
    def run(x):
        # float32 accumulation as NumPy's mean does for float32 (pairwise sums)
        return x.mean(axis=(1, 2), keepdims=True, dtype=x.dtype) if x.dtype.kind == "f" else \
            x.mean(axis=(1, 2), keepdims=True)
    return run
