"""Float32 layers."""

from __future__ import annotations

import numpy as np

from . import functional as F
from .base import Module, _init_array, _rng, register_layer

__all__ = [
    "Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "Flatten", "Reshape",
    "Embedding", "LayerNorm", "BatchNorm", "BatchNorm1d", "BatchNorm2d", "ReLU", "GELU", "SiLU",
    "Tanh", "Sigmoid", "Softmax", "Dropout", "Identity",
]


def _pos_int(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer; got {v!r}")
    return int(v)


def _f32_tensor(a, name: str, shape: tuple | None = None) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind != "f":
        raise TypeError(f"{name} must be a float array; got {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if shape is not None and a.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}; got {a.shape}")
    return a


def _uniform(shape, bound: float) -> np.ndarray:
    return _init_array(shape, lambda g: g.uniform(-bound, bound, size=shape))


@register_layer
class Linear(Module):
    """y = x @ weight.T + bias.

    ``weight`` float32 [out_features, in_features] (C-contiguous), ``bias`` float32 [out] or None.
    Input x [..., in_features] -> [..., out_features].  Initialised uniform(+-1/sqrt(in)).
    """

    _tensor_names = ("weight", "bias")

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        self.in_features = _pos_int(in_features, "in_features")
        self.out_features = _pos_int(out_features, "out_features")
        bound = 1.0 / np.sqrt(self.in_features)
        self.weight = _uniform((self.out_features, self.in_features), bound)
        self.bias = _uniform((self.out_features,), bound) if bias else None

    @classmethod
    def from_weights(cls, weight, bias=None) -> "Linear":
        """Build from arrays: weight [out, in], bias [out] or None (cast to float32)."""
        w = _f32_tensor(weight, "weight")
        if w.ndim != 2:
            raise ValueError(f"weight must have shape (out_features, in_features); got {w.shape}")
        obj = cls.__new__(cls)
        obj.in_features, obj.out_features = w.shape[1], w.shape[0]
        obj.weight = w
        obj.bias = None if bias is None else _f32_tensor(bias, "bias", (w.shape[0],))
        return obj

    def get_config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None}

    @classmethod
    def from_config(cls, config, tensors):
        if tensors.get("weight") is not None:
            w = np.asarray(tensors["weight"])
            want = (config.get("out_features"), config.get("in_features"))
            if w.shape != want or w.dtype != np.float32:
                raise ValueError(f"Linear.weight must be float32 of shape {want}; got {w.dtype} {w.shape}")
            if bool(config.get("bias", True)) != ("bias" in tensors):
                raise ValueError("Linear bias tensor does not match config['bias']")
            if set(tensors) - {"weight", "bias"}:
                raise ValueError(f"Linear has unexpected tensors {sorted(set(tensors) - {'weight', 'bias'})}")
            b = tensors.get("bias")
            if b is not None and (b.shape != (w.shape[0],) or b.dtype != np.float32):
                raise ValueError(f"Linear.bias must be float32 of shape ({w.shape[0]},); got {b.dtype} {b.shape}")
            return cls.from_weights(w, b)
        return super().from_config(config, tensors)

    def forward(self, x, **kw):
        return F.linear(F.as_float32(x), self.weight, self.bias)


@register_layer
class Conv2d(Module):
    """2-D convolution, NCHW.  ``weight`` float32 [out, in/groups, kh, kw], ``bias`` [out] or None.

    ``padding``: int, (ph, pw) or (top, left, bottom, right).  ``groups == in_channels`` is
    depthwise and takes a per-tap fast path; other cases use im2col and one matmul per group.
    """

    _tensor_names = ("weight", "bias")

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True):
        self.in_channels = _pos_int(in_channels, "in_channels")
        self.out_channels = _pos_int(out_channels, "out_channels")
        self.groups = _pos_int(groups, "groups")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) "
                             f"must be divisible by groups ({groups})")
        self.kernel_size = F.pair(kernel_size, "kernel_size")
        self.stride = F.pair(stride, "stride")
        self.dilation = F.pair(dilation, "dilation")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.dilation) < 1:
            raise ValueError("kernel_size, stride and dilation must be positive")
        self.padding = F.pads4(padding)
        fan_in = self.in_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]
        bound = 1.0 / np.sqrt(fan_in)
        self.weight = _uniform((self.out_channels, self.in_channels // self.groups) + self.kernel_size, bound)
        self.bias = _uniform((self.out_channels,), bound) if bias else None

    @classmethod
    def from_weights(cls, weight, bias=None, stride=1, padding=0, dilation=1, groups: int = 1) -> "Conv2d":
        """Build from arrays: weight [out, in/groups, kh, kw], bias [out] or None."""
        w = _f32_tensor(weight, "weight")
        if w.ndim != 4:
            raise ValueError(f"weight must have shape (out, in/groups, kh, kw); got {w.shape}")
        obj = cls(w.shape[1] * groups, w.shape[0], w.shape[2:], stride, padding, dilation, groups,
                  bias=False)
        obj.weight = w
        obj.bias = None if bias is None else _f32_tensor(bias, "bias", (w.shape[0],))
        return obj

    def get_config(self):
        p = self.padding
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(p), "dilation": list(self.dilation), "groups": self.groups,
                "bias": self.bias is not None}

    def forward(self, x, **kw):
        return F.conv2d(F.as_float32(x), self.weight, self.bias, self.stride, self.padding,
                        self.dilation, self.groups)


@register_layer
class MaxPool2d(Module):
    """Max pooling, NCHW. ``stride`` defaults to ``kernel_size``."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1):
        self.kernel_size = F.pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else F.pair(stride, "stride")
        self.padding = F.pads4(padding)
        self.dilation = F.pair(dilation, "dilation")

    def get_config(self):
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding), "dilation": list(self.dilation)}

    def forward(self, x, **kw):
        return F.max_pool2d(F.as_float32(x), self.kernel_size, self.stride, self.padding, self.dilation)


@register_layer
class AvgPool2d(Module):
    """Average pooling, NCHW. ``count_include_pad`` as in PyTorch (ONNX's default is False)."""

    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad: bool = True):
        self.kernel_size = F.pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else F.pair(stride, "stride")
        self.padding = F.pads4(padding)
        self.count_include_pad = bool(count_include_pad)

    def get_config(self):
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding), "count_include_pad": self.count_include_pad}

    def forward(self, x, **kw):
        return F.avg_pool2d(F.as_float32(x), self.kernel_size, self.stride, self.padding,
                            self.count_include_pad)


@register_layer
class GlobalAvgPool2d(Module):
    """Mean over H and W: (N, C, H, W) -> (N, C) (``keepdims=True``: (N, C, 1, 1))."""

    def __init__(self, keepdims: bool = False):
        self.keepdims = bool(keepdims)

    def get_config(self):
        return {"keepdims": self.keepdims}

    def forward(self, x, **kw):
        x = F.as_float32(x)
        if x.ndim != 4:
            raise ValueError(f"GlobalAvgPool2d expects x of shape (N, C, H, W); got shape {x.shape}")
        return x.mean(axis=(2, 3), keepdims=self.keepdims, dtype=np.float32)


@register_layer
class Flatten(Module):
    """Flatten axes ``start_dim``.. into one: (N, C, H, W) -> (N, C*H*W) by default."""

    def __init__(self, start_dim: int = 1):
        self.start_dim = int(start_dim)

    def get_config(self):
        return {"start_dim": self.start_dim}

    def forward(self, x, **kw):
        x = np.asarray(x)
        s = self.start_dim % x.ndim if x.ndim else 0
        return x.reshape(x.shape[:s] + (-1,))


@register_layer
class Reshape(Module):
    """Reshape to ``shape`` with ONNX semantics: 0 copies the input's dimension, -1 is inferred.

    ``shape`` includes the batch axis (write 0 or -1 there to keep any batch size).
    """

    def __init__(self, shape):
        self.shape = [int(s) for s in shape]
        if sum(1 for s in self.shape if s == -1) > 1:
            raise ValueError(f"shape may contain at most one -1; got {self.shape}")

    def get_config(self):
        return {"shape": list(self.shape)}

    def forward(self, x, **kw):
        x = np.asarray(x)
        tgt = [x.shape[i] if s == 0 and i < x.ndim else s for i, s in enumerate(self.shape)]
        try:
            return x.reshape(tgt)
        except ValueError:
            raise ValueError(f"Reshape: cannot reshape x of shape {x.shape} to {self.shape}") from None


@register_layer
class Embedding(Module):
    """Lookup table: integer ids [...] -> weight[ids] [..., embedding_dim] (float32)."""

    _tensor_names = ("weight",)

    def __init__(self, num_embeddings: int, embedding_dim: int):
        self.num_embeddings = _pos_int(num_embeddings, "num_embeddings")
        self.embedding_dim = _pos_int(embedding_dim, "embedding_dim")
        shape = (self.num_embeddings, self.embedding_dim)
        self.weight = _init_array(shape, lambda g: g.standard_normal(shape))

    @classmethod
    def from_weights(cls, weight) -> "Embedding":
        w = _f32_tensor(weight, "weight")
        if w.ndim != 2:
            raise ValueError(f"weight must have shape (num_embeddings, embedding_dim); got {w.shape}")
        obj = cls.__new__(cls)
        obj.num_embeddings, obj.embedding_dim = w.shape
        obj.weight = w
        return obj

    def get_config(self):
        return {"num_embeddings": self.num_embeddings, "embedding_dim": self.embedding_dim}

    def forward(self, x, **kw):
        ids = np.asarray(x)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"Embedding expects integer ids; got {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_embeddings):
            raise ValueError(f"Embedding ids must be in [0, {self.num_embeddings}); "
                             f"got values in [{ids.min()}, {ids.max()}]")
        return self.weight[ids]


@register_layer
class LayerNorm(Module):
    """Normalise over the last axis (size ``normalized_shape``), then scale and shift."""

    _tensor_names = ("weight", "bias")

    def __init__(self, normalized_shape: int, eps: float = 1e-5):
        self.normalized_shape = _pos_int(normalized_shape, "normalized_shape")
        self.eps = float(eps)
        self.weight = np.ones(self.normalized_shape, np.float32)
        self.bias = np.zeros(self.normalized_shape, np.float32)

    def get_config(self):
        return {"normalized_shape": self.normalized_shape, "eps": self.eps}

    def forward(self, x, **kw):
        x = F.as_float32(x)
        if x.shape[-1:] != (self.normalized_shape,):
            raise ValueError(f"LayerNorm expects last dimension {self.normalized_shape}; got shape {x.shape}")
        return F.layer_norm(x, self.weight, self.bias, self.eps)


@register_layer
class BatchNorm(Module):
    """Batch normalisation over axis 1 of (N, C) or (N, C, H, W) (BatchNorm1d and 2d in one).

    In eval mode uses ``running_mean``/``running_var``; in training mode uses the batch statistics
    and updates the running ones with ``momentum``.  ``prepare_for_inference()`` folds it into the
    preceding Conv2d/Linear.
    """

    _tensor_names = ("weight", "bias", "running_mean", "running_var")

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        self.num_features = _pos_int(num_features, "num_features")
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.weight = np.ones(self.num_features, np.float32)
        self.bias = np.zeros(self.num_features, np.float32)
        self.running_mean = np.zeros(self.num_features, np.float32)
        self.running_var = np.ones(self.num_features, np.float32)

    def get_config(self):
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum}

    def scale_shift(self) -> tuple[np.ndarray, np.ndarray]:
        """(scale, shift) with y = x * scale + shift per channel, from the running statistics."""
        scale = (self.weight.astype(np.float64) / np.sqrt(self.running_var.astype(np.float64) + self.eps))
        shift = self.bias.astype(np.float64) - self.running_mean.astype(np.float64) * scale
        return scale, shift

    def forward(self, x, **kw):
        x = F.as_float32(x)
        if x.ndim < 2 or x.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm expects x of shape (N, {self.num_features}, ...); got shape {x.shape}")
        bshape = (1, -1) + (1,) * (x.ndim - 2)
        if self.training:
            axes = (0,) + tuple(range(2, x.ndim))
            mean = x.mean(axis=axes)
            var = x.var(axis=axes)
            n = x.size // self.num_features
            m = self.momentum
            self.running_mean = ((1 - m) * self.running_mean + m * mean).astype(np.float32)
            self.running_var = ((1 - m) * self.running_var + m * var * (n / max(n - 1, 1))).astype(np.float32)
            scale = self.weight / np.sqrt(var + np.float32(self.eps))
            shift = self.bias - mean * scale
        else:
            scale, shift = (a.astype(np.float32) for a in self.scale_shift())
        return x * scale.reshape(bshape) + shift.reshape(bshape)


BatchNorm1d = BatchNorm
BatchNorm2d = BatchNorm


class _Elementwise(Module):
    fn = None

    def forward(self, x, **kw):
        return type(self).fn(F.as_float32(x))


@register_layer
class ReLU(_Elementwise):
    """max(x, 0)."""
    fn = staticmethod(F.relu)


@register_layer
class SiLU(_Elementwise):
    """x * sigmoid(x)."""
    fn = staticmethod(F.silu)


@register_layer
class Tanh(_Elementwise):
    fn = staticmethod(F.tanh)


@register_layer
class Sigmoid(_Elementwise):
    fn = staticmethod(F.sigmoid)


@register_layer
class GELU(Module):
    """GELU; ``approximate="none"`` (erf, default) or ``"tanh"``."""

    def __init__(self, approximate: str = "none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate must be 'none' or 'tanh'; got {approximate!r}")
        self.approximate = approximate

    def get_config(self):
        return {"approximate": self.approximate}

    def forward(self, x, **kw):
        return F.gelu(F.as_float32(x), self.approximate)


@register_layer
class Softmax(Module):
    """Softmax along ``axis`` (max-subtracted, so large logits do not overflow)."""

    def __init__(self, axis: int = -1):
        self.axis = int(axis)

    def get_config(self):
        return {"axis": self.axis}

    def forward(self, x, **kw):
        return F.softmax(F.as_float32(x), self.axis)


@register_layer
class Dropout(Module):
    """Identity in eval mode; in training mode zeroes with probability ``p`` and scales by 1/(1-p)."""

    def __init__(self, p: float = 0.5):
        if not 0.0 <= float(p) < 1.0:
            raise ValueError(f"p must be in [0, 1); got {p!r}")
        self.p = float(p)

    def get_config(self):
        return {"p": self.p}

    def forward(self, x, **kw):
        x = F.as_float32(x)
        if not self.training or self.p == 0.0:
            return x
        keep = _rng().random(x.shape) >= self.p
        return np.where(keep, x * np.float32(1.0 / (1.0 - self.p)), np.float32(0))


@register_layer
class Identity(Module):
    """Returns its input (stands in for a folded BatchNorm inside a named container)."""

    def forward(self, x, **kw):
        return x
