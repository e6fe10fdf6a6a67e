"""Pruned layers that run on the sparse kernels (:func:`edgepack.kernels.spmm`).

A :class:`SparseLinear` holds its weight packed as :class:`~edgepack.kernels.SparseWeights`
(compressed rows or 2:4, float32 or int8 values) and saves it packed: the file stores the
nonzeros and their indices, not the dense matrix, so a 90% pruned layer's file is ~6.7x (float32)
smaller than the dense one.
"""

from __future__ import annotations

import copy

import numpy as np

from . import functional as F
from .base import Module, register_layer
from .layers import Linear

__all__ = ["SparseLinear", "SparseConv2d", "DENSITY_THRESHOLD", "sparsify", "quantize_sparse"]

# Compressed rows beat NumPy's dense float32 matmul below roughly this density: measured on an
# AVX-512 machine for 1024x64, 1024x1024 and 128x64 layers, spmm at 40% density ran 1.4-2.4x
# faster at batch 1 and 1.9-2.4x at batch 32 (at 60% still ~1.6x for small layers, but large
# layers approach break-even).  "measure" decides per layer by timing instead.
DENSITY_THRESHOLD = 0.4

# Under "auto", layers with density between DENSITY_THRESHOLD and this are timed both ways.
MEASURE_ABOVE = 0.7

_ACTIVATIONS = (None, "relu", "gelu", "gelu_tanh", "silu")
_ARRAY_KEYS = ("values", "row_ptr", "col", "meta", "scale")


def _kernels():
    from .. import kernels

    return kernels


def _SPMM(x, w, bias, activation):
    from ..kernels import spmm

    global _SPMM
    _SPMM = spmm  # bind once: the import statement costs ~0.3 us per call
    return spmm(x, w, bias, activation)


@register_layer
class SparseLinear(Module):
    """``act(x @ dense(W).T + bias)`` with W packed sparse; x [..., in_features] float32.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    format : {"unstructured", "2:4"}
        Packing of the weight (see :func:`edgepack.kernels.pack_sparse`).
    dtype : {"float32", "int8"}
        Value type; int8 weights carry a float32 per-row scale and the kernel quantizes each input
        row on the fly (like ``linear_int8``).
    activation : {None, "relu", "gelu", "gelu_tanh", "silu"}
        Fused into the kernel (prune fuses a ReLU that follows the layer in a Sequential).

    Build one from a float layer with :meth:`from_linear` (or from a dense pruned matrix with
    :meth:`from_weights`).  Tensors (``get_tensors``): ``values``, ``row_ptr`` + ``col``
    (unstructured) or ``meta`` (2:4), ``scale`` (int8), ``bias``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 format: str = "unstructured", dtype: str = "float32", activation: str | None = None):
        if format not in ("unstructured", "2:4"):
            raise ValueError(f"format must be 'unstructured' or '2:4'; got {format!r}")
        if dtype not in ("float32", "int8"):
            raise ValueError(f"dtype must be 'float32' or 'int8'; got {dtype!r}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {_ACTIVATIONS}; got {activation!r}")
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer; got {v!r}")
        if format == "2:4" and in_features % 4:
            raise ValueError(f"format '2:4' needs in_features divisible by 4; got {in_features}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.format, self.dtype, self.activation = format, dtype, activation
        w = np.zeros((self.out_features, self.in_features), np.float32 if dtype == "float32" else np.int8)
        scale = np.ones(self.out_features, np.float32) if dtype == "int8" else None
        self.sparse = _kernels().pack_sparse(w, format=format, scale=scale)
        self.bias = np.zeros(self.out_features, np.float32) if bias else None

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_weights(cls, weight, bias=None, *, format: str = "auto", activation: str | None = None
                     ) -> "SparseLinear":
        """Pack a dense pruned float32 weight [out, in] (zeros where pruned)."""
        w = np.ascontiguousarray(weight, dtype=np.float32)
        if w.ndim != 2:
            raise ValueError(f"weight must have shape (out_features, in_features); got {w.shape}")
        sw = _kernels().pack_sparse(w, format=format)
        return cls._from_packed(sw, None if bias is None else np.asarray(bias, np.float32), activation)

    @classmethod
    def from_linear(cls, layer: Linear, *, format: str = "auto", activation: str | None = None
                    ) -> "SparseLinear":
        """A SparseLinear computing exactly what the (pruned) ``layer`` computes."""
        if not isinstance(layer, Linear):
            raise TypeError(f"layer must be an edgepack.nn.Linear; got {type(layer).__name__}")
        return cls.from_weights(layer.weight, None if layer.bias is None else layer.bias.copy(),
                                format=format, activation=activation)

    @classmethod
    def _from_packed(cls, sw, bias, activation):
        obj = cls.__new__(cls)
        obj.out_features, obj.in_features = sw.shape
        obj.format = sw.format
        obj.dtype = "int8" if sw.dtype == np.int8 else "float32"
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {_ACTIVATIONS}; got {activation!r}")
        obj.activation = activation
        obj.sparse = sw
        if bias is not None and bias.shape != (sw.shape[0],):
            raise ValueError(f"bias must have shape ({sw.shape[0]},); got {bias.shape}")
        obj.bias = None if bias is None else np.ascontiguousarray(bias, np.float32)
        return obj

    def to_int8(self) -> "SparseLinear":
        """A copy with int8 values (symmetric, one scale per output row, max|row| -> 127)."""
        if self.dtype == "int8":
            return copy.deepcopy(self)
        w = self.sparse.to_dense()
        amax = np.abs(w).max(axis=1)
        scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
        q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
        sw = _kernels().pack_sparse(q, format=self.format, scale=scale)
        return type(self)._from_packed(sw, None if self.bias is None else self.bias.copy(), self.activation)

    def dense_weight(self) -> np.ndarray:
        """The float32 weight [out, in] (dequantized for int8)."""
        w = self.sparse.to_dense()
        if self.dtype == "int8":
            return w.astype(np.float32) * self.sparse.scale[:, None]
        return w

    # -- contract -------------------------------------------------------------------------------
    def get_config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None, "format": self.format, "dtype": self.dtype,
                "activation": self.activation}

    def get_tensors(self):
        a = self.sparse.to_arrays()
        out = {k: a[k] for k in _ARRAY_KEYS if k in a}
        if self.bias is not None:
            out["bias"] = self.bias
        return out

    @classmethod
    def from_config(cls, config, tensors):
        cfg = dict(config)
        try:
            n, k = int(cfg["out_features"]), int(cfg["in_features"])
            fmt, dtype = cfg.get("format", "unstructured"), cfg.get("dtype", "float32")
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"SparseLinear config is incomplete or invalid: {e}") from None
        if fmt not in ("unstructured", "2:4") or dtype not in ("float32", "int8"):
            raise ValueError(f"SparseLinear config has format {fmt!r}, dtype {dtype!r}")
        allowed = {"values", "bias", "scale"} | ({"row_ptr", "col"} if fmt == "unstructured" else {"meta"})
        extra = sorted(set(tensors) - allowed)
        if extra:
            raise ValueError(f"SparseLinear has unexpected tensors {extra}")
        if ("scale" in tensors) != (dtype == "int8"):
            raise ValueError("SparseLinear 'scale' tensor must be present exactly for dtype 'int8'")
        vals = np.asarray(tensors.get("values"))
        if vals.dtype != (np.int8 if dtype == "int8" else np.float32):
            raise ValueError(f"SparseLinear.values must be {dtype}; got {vals.dtype}")
        arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items() if k != "bias"}
        arrays["format"] = np.array(fmt)
        arrays["shape"] = np.array([n, k], np.int64)
        sw = _kernels().SparseWeights.from_arrays(arrays)
        bias = tensors.get("bias")
        if bool(cfg.get("bias", True)) != (bias is not None):
            raise ValueError("SparseLinear bias tensor does not match config['bias']")
        if bias is not None:
            bias = np.asarray(bias)
            if bias.dtype != np.float32 or bias.shape != (n,):
                raise ValueError(f"SparseLinear.bias must be float32 of shape ({n},); got {bias.dtype} {bias.shape}")
        return cls._from_packed(sw, bias, cfg.get("activation"))

    def num_parameters(self) -> int:
        """Stored weights: the nonzeros (plus bias), not the index arrays."""
        return int(self.sparse.nnz) + (0 if self.bias is None else int(self.bias.size))

    def kernel_path(self) -> str:
        fmt = "csr" if self.format == "unstructured" else "2:4"
        dt = "f32" if self.dtype == "float32" else "int8"
        return f"sparse {fmt} {dt} ({self.sparse.density:.0%} dense)"

    def forward(self, x, **kw):
        if type(x) is np.ndarray and x.ndim == 2 and x.dtype == np.float32 and x.flags.c_contiguous:
            # The common case goes straight to the kernel, whose binding checks K: at batch 1 the
            # Python around the call costs more than the 90%-sparse matmul itself.
            if x.shape[1] != self.in_features:
                raise ValueError(f"x must have last dimension {self.in_features} (in_features); got shape {x.shape}")
            return _SPMM(x, self.sparse, self.bias, self.activation)
        x = F.as_float32(x)
        if x.shape[-1] != self.in_features:
            raise ValueError(f"x must have last dimension {self.in_features} (in_features); got shape {x.shape}")
        lead = x.shape[:-1]
        y = _SPMM(np.ascontiguousarray(x.reshape(-1, self.in_features)), self.sparse,
                            self.bias, self.activation)
        return y.reshape(*lead, self.out_features)

    def __deepcopy__(self, memo):
        # SparseWeights is immutable: share it.
        obj = type(self).__new__(type(self))
        for k, v in self.__dict__.items():
            object.__setattr__(obj, k, v if k == "sparse" else copy.deepcopy(v, memo))
        return obj


def _check_run(run):
    if run not in ("sparse", "dense"):
        raise ValueError(f"run must be 'sparse' or 'dense'; got {run!r}")
    return run


def _im2row(x: np.ndarray, kh: int, kw: int, stride, padding, dilation):
    """(N, C, H, W) -> rows (N*OH*OW, C*kh*kw) float32 C-contiguous, columns ordered like a
    Conv2d weight's [C, kh, kw] flattening; also returns (OH, OW)."""
    sh, sw = stride
    dh, dw = dilation
    p = padding
    n, c, h, w = x.shape
    oh, ow = F.conv_output_hw(h, w, (kh, kw), stride, p, dilation, "conv2d")
    xp = F._pad(x, p)
    if kh == kw == 1:
        xs = xp[:, :, : sh * (oh - 1) + 1 : sh, : sw * (ow - 1) + 1 : sw]
        rows = xs.transpose(0, 2, 3, 1).reshape(n * oh * ow, c)
    else:
        win = F._receptive_fields(xp, kh, kw, sh, sw, dh, dw, oh, ow)
        # (N, C, OH, OW, kh, kw) -> (N, OH, OW, C, kh, kw)
        rows = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)
    return np.ascontiguousarray(rows, dtype=np.float32), oh, ow


@register_layer
class SparseConv2d(Module):
    """A pruned 2-D convolution (NCHW, ``groups == 1``) run as im2row + :func:`spmm`.

    The weight [out, in, kh, kw] is stored packed as a sparse [out, in*kh*kw] matrix (so the file
    holds only the nonzeros).  ``run="sparse"`` computes with :func:`spmm`; ``run="dense"``
    unpacks the weight once (kept in memory, not saved) and uses the dense convolution: on the
    machines measured so far the im2row + spmm path was 1.1-3x slower than the dense im2col
    matmul for 3x3 convolutions at 90% sparsity, so :func:`sparsify` picks ``"dense"`` for
    convolutions and the gain is the file size.  Config as :class:`~edgepack.nn.Conv2d`
    (without groups) plus ``format``, ``dtype``, ``activation`` (like :class:`SparseLinear`)
    and ``run``.  Build it with :meth:`from_conv`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 bias: bool = True, format: str = "unstructured", dtype: str = "float32",
                 activation: str | None = None, run: str = "sparse"):
        kh, kw = F.pair(kernel_size, "kernel_size")
        if min(kh, kw) < 1:
            raise ValueError(f"kernel_size must be positive; got {kernel_size!r}")
        self.lin = SparseLinear(in_channels * kh * kw, out_channels, bias, format, dtype, activation)
        self._geometry(in_channels, out_channels, (kh, kw), stride, padding, dilation)
        self.run = _check_run(run)

    def _geometry(self, in_channels, out_channels, kernel_size, stride, padding, dilation):
        object.__setattr__(self, "in_channels", int(in_channels))
        object.__setattr__(self, "out_channels", int(out_channels))
        self.kernel_size = tuple(int(v) for v in kernel_size)
        self.stride = F.pair(stride, "stride")
        self.dilation = F.pair(dilation, "dilation")
        if min(self.stride) < 1 or min(self.dilation) < 1:
            raise ValueError("stride and dilation must be positive")
        self.padding = F.pads4(padding)

    # The packed matrix lives in a SparseLinear helper; it is not a child (saved as our tensors).
    def children(self):
        return []

    @classmethod
    def from_conv(cls, conv, *, format: str = "auto", activation: str | None = None,
                  run: str = "sparse") -> "SparseConv2d":
        """A SparseConv2d computing what the pruned ``conv`` (an ungrouped Conv2d) computes."""
        from .layers import Conv2d

        if not isinstance(conv, Conv2d):
            raise TypeError(f"conv must be an edgepack.nn.Conv2d; got {type(conv).__name__}")
        if conv.groups != 1:
            raise ValueError(f"SparseConv2d supports groups=1 only; got groups={conv.groups}")
        obj = cls.__new__(cls)
        o = conv.weight.shape[0]
        obj.lin = SparseLinear.from_weights(conv.weight.reshape(o, -1), conv.bias, format=format,
                                            activation=activation)
        obj._geometry(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation)
        obj.run = _check_run(run)
        return obj

    @property
    def activation(self):
        return self.lin.activation

    @activation.setter
    def activation(self, value):
        self.lin.activation = value

    def get_config(self):
        lc = self.lin.get_config()
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding), "dilation": list(self.dilation), "bias": lc["bias"],
                "format": lc["format"], "dtype": lc["dtype"], "activation": lc["activation"], "run": self.run}

    def get_tensors(self):
        return self.lin.get_tensors()

    @classmethod
    def from_config(cls, config, tensors):
        cfg = dict(config)
        try:
            kh, kw = F.pair(cfg["kernel_size"], "kernel_size")
            lin_cfg = {"in_features": int(cfg["in_channels"]) * kh * kw, "out_features": int(cfg["out_channels"]),
                       "bias": cfg.get("bias", True), "format": cfg.get("format", "unstructured"),
                       "dtype": cfg.get("dtype", "float32"), "activation": cfg.get("activation")}
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"SparseConv2d config is incomplete or invalid: {e}") from None
        obj = cls.__new__(cls)
        obj.lin = SparseLinear.from_config(lin_cfg, tensors)
        obj._geometry(cfg["in_channels"], cfg["out_channels"], (kh, kw), cfg.get("stride", 1),
                      cfg.get("padding", 0), cfg.get("dilation", 1))
        obj.run = _check_run(cfg.get("run", "sparse"))
        return obj

    def to_int8(self) -> "SparseConv2d":
        """A copy with int8 values (see :meth:`SparseLinear.to_int8`)."""
        obj = copy.deepcopy(self)
        obj.lin = self.lin.to_int8()
        obj.__dict__.pop("_dense", None)
        return obj

    def dense_weight(self) -> np.ndarray:
        """The float32 weight [out, in, kh, kw]."""
        return self.lin.dense_weight().reshape(self.out_channels, self.in_channels, *self.kernel_size)

    @property
    def dtype(self):
        return self.lin.dtype

    @property
    def sparse(self):
        return self.lin.sparse

    def num_parameters(self) -> int:
        return self.lin.num_parameters()

    def kernel_path(self) -> str:
        if self.run == "dense":
            return f"numpy f32 (stored {self.lin.kernel_path()[7:]})"
        return self.lin.kernel_path()

    def forward(self, x, **kw):
        x = F.as_float32(x)
        F._check_nchw(x, self.in_channels, "SparseConv2d")
        if self.run == "dense":
            w = self.__dict__.get("_dense")
            if w is None:
                w = np.ascontiguousarray(self.dense_weight(), dtype=np.float32)
                object.__setattr__(self, "_dense", w)
            y = F.conv2d(x, w, self.lin.bias, self.stride, self.padding, self.dilation, 1)
            act = self.lin.activation
            if act == "relu":
                np.maximum(y, 0, out=y)
            elif act is not None:
                y = {"gelu": F.gelu, "gelu_tanh": lambda v: F.gelu(v, "tanh"), "silu": F.silu}[act](y)
            return y
        n = x.shape[0]
        rows, oh, ow = _im2row(x, *self.kernel_size, self.stride, self.padding, self.dilation)
        y = _SPMM(rows, self.lin.sparse, self.lin.bias, self.lin.activation)
        return np.ascontiguousarray(y.reshape(n, oh, ow, self.out_channels).transpose(0, 3, 1, 2))


def _measure_faster(layer: Linear, sl: SparseLinear, repeats: int = 30) -> bool:
    """True when ``sl`` beats the dense layer at batch 1 and batch 32 (median of ``repeats``)."""
    import time

    rng = np.random.default_rng(0)
    for m in (1, 32):
        x = rng.standard_normal((m, layer.in_features)).astype(np.float32)
        best = []
        for f in (layer, sl):
            f(x)
            ts = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                f(x)
                ts.append(time.perf_counter() - t0)
            best.append(float(np.median(ts)))
        if best[1] >= best[0]:
            return False
    return True


def sparsify(model: Module, *, mode: str = "auto", threshold: float = DENSITY_THRESHOLD,
             fuse_activation: bool = True) -> Module:
    """Replace pruned Linear layers by :class:`SparseLinear` where that is faster (in place).

    Ungrouped Conv2d layers under the density rule become :class:`SparseConv2d`: stored sparse,
    run dense (``run="dense"``; ``mode="always"`` runs them on spmm).

    Parameters
    ----------
    model : Module
    mode : {"auto", "measure", "always", "never"}
        ``"auto"``: density rule (unstructured density <= ``threshold``, or any 2:4-shaped weight
        with density <= 0.5, whose vector kernel beats the dense matmul; a density between
        ``threshold`` and 0.7 is decided by timing both, as in ``"measure"``; above 0.7 stays
        dense).  ``"measure"``: pack, time both at batch 1 and 32, keep the faster.  ``"always"``: every Linear with zeros.
    threshold : float
        Density below which compressed rows are used under ``"auto"``.
    fuse_activation : bool
        Fuse a ReLU/SiLU/GELU that follows a converted layer in a Sequential into the kernel
        (the activation layer becomes Identity).

    Returns
    -------
    Module
        ``model`` (or the replacement when ``model`` itself is a Linear).
    """
    from .containers import Sequential
    from .layers import GELU, Conv2d, Identity, ReLU, SiLU

    if mode not in ("auto", "measure", "always", "never"):
        raise ValueError(f"mode must be 'auto', 'measure', 'always' or 'never'; got {mode!r}")
    if mode == "never":
        return model
    mods = dict(model.named_modules())
    for name, m in list(mods.items()):
        is_conv = type(m) is Conv2d and m.groups == 1
        if type(m) is not Linear and not is_conv:
            continue
        w = m.weight.reshape(m.weight.shape[0], -1)
        density = np.count_nonzero(w) / w.size
        if density == 1.0 and mode != "always":
            continue
        is24 = w.shape[1] % 4 == 0 and not np.any(
            np.count_nonzero(w.reshape(w.shape[0], -1, 4), axis=-1) > 2)
        probe = False
        if mode == "auto" and not (density <= threshold or (is24 and density <= 0.5)):
            if density > MEASURE_ABOVE or is_conv:  # conv: input size unknown, rule only
                continue
            probe = True  # between the rules: small layers often still gain, large ones may not

        parent_name, _, child = name.rpartition(".")
        parent = mods.get(parent_name) if name else None
        act, act_idx = None, None
        if fuse_activation and isinstance(parent, Sequential) and child.isdigit():
            i = int(child) + 1
            if i < len(parent.layers):
                nxt = parent.layers[i]
                if type(nxt) is ReLU:
                    act = "relu"
                elif type(nxt) is SiLU:
                    act = "silu"
                elif type(nxt) is GELU:
                    act = "gelu" if getattr(nxt, "approximate", "none") == "none" else "gelu_tanh"
                act_idx = i if act else None
        fmt = "2:4" if is24 and density > threshold else "auto"
        if is_conv:
            sl = SparseConv2d.from_conv(m, format=fmt, run="sparse" if mode == "always" else "dense")
        else:
            sl = SparseLinear.from_weights(w, m.bias, format=fmt)
        if (mode == "measure" or probe) and not _measure_faster(m, sl):
            continue
        sl.activation = act
        if not name:
            return sl
        parent.set_child(child, sl)
        if act_idx is not None:
            parent.set_child(str(act_idx), Identity())
    return model


def quantize_sparse(model: Module) -> Module:
    """Give every float32 :class:`SparseLinear` / :class:`SparseConv2d` int8 values (per-row scales), in place.

    ``edgepack.quantize`` converts dense Linear/Conv2d layers; this does the same for pruned
    layers, which then run the int8 sparse kernel.  Returns ``model`` (or the replacement when
    ``model`` itself is a SparseLinear).
    """
    if type(model) in (SparseLinear, SparseConv2d):
        return model.to_int8()
    mods = dict(model.named_modules())
    for name, m in mods.items():
        if type(m) in (SparseLinear, SparseConv2d) and m.dtype == "float32" and name:
            parent_name, _, child = name.rpartition(".")
            mods[parent_name].set_child(child, m.to_int8())
    return model
