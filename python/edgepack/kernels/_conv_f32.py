"""float32 2-D convolution on NHWC activations: weights packed once with their geometry, one call
per layer with bias, residual add and activation fused."""

from __future__ import annotations

import numpy as np

from .. import _core

__all__ = ["ConvWeightsF32", "pack_conv_weights_f32", "conv2d_f32"]

ACTIVATIONS = (None, "relu", "relu6", "clip", "hardswish", "hardsigmoid", "silu", "leakyrelu", "sigmoid", "tanh")


class ConvWeightsF32(_core.ConvWeightsF32):
    """Convolution weights packed once, with the layer's geometry. Build it with
    :func:`pack_conv_weights_f32`; pass it to :func:`conv2d_f32`.

    The packed layout is the same on every instruction-set path (switching paths never repacks):
    panels of 16 output channels with the kernel taps and input channels in NHWC order, or,
    for a depthwise layer, the taps x channels with channels innermost. The object also keeps the
    indirection plan of the last few input shapes (which input row each output pixel reads for
    each tap), built on the first call with a new (H, W) and reused afterwards.

    Attributes
    ----------
    shape : tuple[int, int, int, int]
        ``(C_out, C_in // groups, KH, KW)``, the shape of the weights as given.
    in_channels, out_channels, groups : int
    kernel_shape, stride, dilation : tuple[int, int]
    pads : tuple[int, int, int, int]
        ``(top, left, bottom, right)``.
    route : str
        ``"gemm"`` (1x1, stride 1, no padding: a plain GEMM over N*H*W rows), ``"depthwise"``
        (groups == C_in == C_out), ``"rows"`` (implicit GEMM reading each kernel row of a
        receptive field as one contiguous run: groups == 1, column dilation 1) or ``"igemm"``
        (implicit GEMM tap by tap: every other grouped or dilated convolution).
    nbytes : int
        Bytes of the packed weights; ``plan_nbytes`` those of the cached plans.
    """

    def output_shape(self, x_shape) -> tuple[int, int, int, int]:
        """``(N, OH, OW, C_out)`` for an NHWC input of shape ``x_shape``; ValueError when the
        dilated kernel does not fit the padded input."""
        n, h, w, c = (int(v) for v in x_shape)
        if c != self.in_channels:
            raise ValueError(f"x_shape must end with C = {self.in_channels}; got {tuple(x_shape)}")
        oh, ow = self.output_hw(h, w)
        if oh < 1 or ow < 1:
            raise ValueError(f"an input of {h}x{w} is too small for kernel {self.kernel_shape}, stride "
                             f"{self.stride}, dilation {self.dilation}, pads {self.pads}")
        return n, oh, ow, self.out_channels

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays for saving: ``{"weight": float32 (C_out, C_in // groups, KH, KW),
        "geometry": int64 [stride_h, stride_w, pad_t, pad_l, pad_b, pad_r, dil_h, dil_w, groups]}``.
        :meth:`from_arrays` packs them again (the packed layout is an implementation detail)."""
        sh, sw = self.stride
        dh, dw = self.dilation
        geo = np.array([sh, sw, *self.pads, dh, dw, self.groups], np.int64)
        return {"weight": self.unpack(), "geometry": geo}

    @classmethod
    def from_arrays(cls, arrays) -> "ConvWeightsF32":
        """Inverse of :meth:`to_arrays`."""
        if not hasattr(arrays, "__getitem__") or "weight" not in arrays or "geometry" not in arrays:
            raise ValueError("arrays must be a mapping with keys 'weight' and 'geometry' as written by "
                             "ConvWeightsF32.to_arrays()")
        geo = np.asarray(arrays["geometry"])
        if geo.shape != (9,) or geo.dtype.kind not in "iu":
            raise ValueError(f"arrays['geometry'] must be 9 integers; got {geo.dtype} {geo.shape}")
        sh, sw, pt, pl, pb, pr, dh, dw, g = (int(v) for v in geo)
        return cls(arrays["weight"], (sh, sw), (pt, pl, pb, pr), (dh, dw), g)

    def __repr__(self) -> str:
        return (f"ConvWeightsF32(shape={self.shape}, stride={self.stride}, pads={self.pads}, "
                f"dilation={self.dilation}, groups={self.groups}, route={self.route!r})")

    def __reduce__(self):
        # copy/deepcopy and multiprocessing go through the plain weights and geometry.
        a = self.to_arrays()
        return (ConvWeightsF32.from_arrays, (a,))


def pack_conv_weights_f32(w: np.ndarray, *, stride=1, pads=0, dilation=1, groups: int = 1) -> ConvWeightsF32:
    """Pack float32 convolution weights once per layer, with the layer's geometry.

    Parameters
    ----------
    w : numpy.ndarray, float32, shape (C_out, C_in // groups, KH, KW)
        ONNX / PyTorch (OIHW) order. Must be finite. ``C_out`` must be divisible by ``groups``;
        ``C_in = w.shape[1] * groups``.
    stride : int or (int, int)
        ``(sh, sw)``, each >= 1.
    pads : int, (int, int) or (int, int, int, int)
        One value for every side, ``(ph, pw)``, or ``(top, left, bottom, right)`` (the ONNX
        ``pads`` order, so TF "SAME" asymmetric padding is ``(t, l, t + 1, l + 1)``), each >= 0.
        Padding reads as zeros.
    dilation : int or (int, int)
        ``(dh, dw)``, each >= 1.
    groups : int
        ``groups == C_in == C_out`` is a depthwise convolution and runs on the depthwise kernels
        (channels in vector lanes); other groupings run one implicit GEMM per group.

    Returns
    -------
    ConvWeightsF32

    Raises
    ------
    TypeError
        ``w`` not a float32 ndarray; a non-int stride/pads/dilation/groups.
    ValueError
        ``w`` not 4-D or with a zero dimension, ``C_out`` not divisible by ``groups``,
        non-finite weights, geometry values out of range (sizes above 2**20 are refused).
    """
    return ConvWeightsF32(w, stride, pads, dilation, groups)


def conv2d_f32(x: np.ndarray, weights: ConvWeightsF32, bias: np.ndarray | None = None, *,
               activation: str | None = None, act_params=None, residual: np.ndarray | None = None,
               out: np.ndarray | None = None) -> np.ndarray:
    """float32 2-D convolution of NHWC activations with fused bias, residual add and activation.

    ``y = act(conv(x, w) + bias + residual)``, computed in one pass: each output starts at its
    bias, adds the products tap by tap (FMA on SIMD paths), then the residual, then the
    activation, and is written once.

    Parameters
    ----------
    x : numpy.ndarray, float32, shape (N, H, W, C_in)
        NHWC (channels last); a strided view is copied once to C order. H, W >= 1. Values are
        not scanned: NaN/Inf propagate through the arithmetic (a NaN may reach neighbouring
        outputs of the same window, never other memory). Inputs starting on a 64-byte boundary
        run faster (outputs of this function always do).
    weights : ConvWeightsF32
        From :func:`pack_conv_weights_f32` (it carries stride, pads, dilation and groups).
    bias : numpy.ndarray, float32, shape (C_out,), optional
    activation : str, optional
        ``None``, ``"relu"``, ``"relu6"``, ``"clip"`` (``act_params=(lo, hi)``, required; +-inf
        allowed), ``"hardswish"`` (``y * clip(y / 6 + 1/2, 0, 1)``, ONNX HardSwish),
        ``"hardsigmoid"`` (``clip(alpha * y + beta, 0, 1)``, ``act_params=(alpha, beta)``, default
        ``(0.2, 0.5)`` as in ONNX), ``"silu"`` (``y * sigmoid(y)``), ``"leakyrelu"``
        (``act_params=alpha``, default 0.01), ``"sigmoid"``, ``"tanh"``.
    act_params : float or tuple of floats, optional
        The activation's parameters (see above); None for its defaults.
    residual : numpy.ndarray, float32, shape (N, OH, OW, C_out), optional
        Added before the activation (a ResNet block's identity). It may be ``out`` itself
        (the sum is written in place), but must not partly overlap it.
    out : numpy.ndarray, float32, shape (N, OH, OW, C_out), optional
        C-contiguous, writeable destination; must not overlap ``x``.

    Returns
    -------
    numpy.ndarray, float32, shape (N, OH, OW, C_out)
        ``OH = (H + pad_t + pad_b - dh * (KH - 1) - 1) // sh + 1``, likewise OW. A new array is
        64-byte aligned. Results do not depend on the thread count; paths differ by float
        rounding only (summation order and FMA): within ``1e-5 * (sum |x w| + |bias| +
        |residual|)`` of a float64 reference, plus ~1e-6 for the exp-based activations.

    Raises
    ------
    TypeError
        A wrong dtype or a non-array; ``weights`` not a ConvWeightsF32; a non-str activation.
    ValueError
        Shapes that do not fit (``C`` vs ``weights.in_channels``, the kernel larger than the
        padded input, bias/residual/out shapes), an unknown activation, bad ``act_params``, ``out``
        overlapping ``x`` or not C-contiguous/writeable.
    """
    return _core.conv2d_f32(x, weights, bias, activation, act_params, residual, out)
