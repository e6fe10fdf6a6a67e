"""Multi-head self-attention and the transformer encoder layer."""

from __future__ import annotations

import numpy as np

from . import functional as F
from .base import Module, register_layer
from .layers import GELU, Dropout, LayerNorm, Linear, ReLU

__all__ = ["MultiHeadAttention", "TransformerEncoderLayer"]

# Added to the scores of padded keys: exp() of it underflows to exactly 0 after the max shift,
# and unlike -inf it never makes NaN when a whole row is padding.
_MASKED = np.float32(-1e30)


def _check_mask(mask, b: int, t: int) -> np.ndarray | None:
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.shape != (b, t):
        raise ValueError(f"mask must have shape (batch, seq_len) = {(b, t)}; got {m.shape}")
    if m.dtype.kind not in "biuf":
        raise TypeError(f"mask must be bool or numeric (1 = real token, 0 = padding); got {m.dtype}")
    return m != 0


@register_layer
class MultiHeadAttention(Module):
    """Self-attention: x [B, T, D] -> [B, T, D].

    Children ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj`` are Linear(D, D) (replaceable by
    int8/sparse layers).  ``mask`` [B, T] is 1 for real tokens and 0 for padding: padded keys get
    zero attention weight, so padding never changes the real tokens' outputs.
    """

    def __init__(self, embed_dim: int, num_heads: int, bias: bool = True):
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.embed_dim = int(embed_dim)
        self.num_heads = int(num_heads)
        self.q_proj = Linear(embed_dim, embed_dim, bias)
        self.k_proj = Linear(embed_dim, embed_dim, bias)
        self.v_proj = Linear(embed_dim, embed_dim, bias)
        self.out_proj = Linear(embed_dim, embed_dim, bias)

    def get_config(self):
        return {"embed_dim": self.embed_dim, "num_heads": self.num_heads,
                "bias": getattr(self.q_proj, "bias", None) is not None}

    def kernel_path(self) -> str:
        return "numpy f32 (softmax)"

    def forward(self, x, mask=None, **kw):
        x = F.as_float32(x)
        if x.ndim != 3 or x.shape[2] != self.embed_dim:
            raise ValueError(f"MultiHeadAttention expects x of shape (B, T, {self.embed_dim}); got {x.shape}")
        b, t, d = x.shape
        h, dh = self.num_heads, d // self.num_heads
        m = _check_mask(mask, b, t)

        def heads(y):  # [B, T, D] -> [B, H, T, dh]
            return y.reshape(b, t, h, dh).transpose(0, 2, 1, 3)

        q = heads(self.q_proj(x))
        k = heads(self.k_proj(x))
        v = heads(self.v_proj(x))
        scores = (q @ k.transpose(0, 1, 3, 2)) * np.float32(1.0 / np.sqrt(dh))
        if m is not None:
            scores = np.where(m[:, None, None, :], scores, _MASKED)
        attn = F.softmax(scores, -1)
        ctx = (attn @ v).transpose(0, 2, 1, 3).reshape(b, t, d)
        return self.out_proj(ctx)


@register_layer
class TransformerEncoderLayer(Module):
    """One encoder block: self-attention and a feed-forward net, each with a residual and LayerNorm.

    ``norm_first=False`` (default) is post-LN as in BERT: ``x = norm1(x + attn(x));
    x = norm2(x + ff(x))``.  ``norm_first=True`` is pre-LN: ``x = x + attn(norm1(x));
    x = x + ff(norm2(x))``.  ff = linear2(dropout(act(linear1(x)))).  Children: self_attn,
    norm1, linear1, act, dropout, linear2, norm2.
    """

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int = 2048,
                 dropout: float = 0.0, activation: str = "gelu", norm_first: bool = False,
                 layer_norm_eps: float = 1e-5):
        if activation not in ("gelu", "gelu_tanh", "relu"):
            raise ValueError(f"activation must be 'gelu', 'gelu_tanh' or 'relu'; got {activation!r}")
        self.d_model = int(d_model)
        self.num_heads = int(num_heads)
        self.dim_feedforward = int(dim_feedforward)
        self.activation = activation
        self.norm_first = bool(norm_first)
        self.layer_norm_eps = float(layer_norm_eps)
        self.p_dropout = float(dropout)
        # assigned in (post-LN) call order, which is the children() order
        self.self_attn = MultiHeadAttention(d_model, num_heads)
        self.norm1 = LayerNorm(d_model, layer_norm_eps)
        self.linear1 = Linear(d_model, dim_feedforward)
        self.act = ReLU() if activation == "relu" else GELU("tanh" if activation == "gelu_tanh" else "none")
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model)
        self.norm2 = LayerNorm(d_model, layer_norm_eps)

    def get_config(self):
        return {"d_model": self.d_model, "num_heads": self.num_heads,
                "dim_feedforward": self.dim_feedforward, "dropout": self.p_dropout,
                "activation": self.activation, "norm_first": self.norm_first,
                "layer_norm_eps": self.layer_norm_eps}

    def kernel_path(self) -> str:
        return ""

    def _ff(self, x):
        return self.linear2(self.dropout(self.act(self.linear1(x))))

    def forward(self, x, mask=None, **kw):
        x = F.as_float32(x)
        if self.norm_first:
            x = x + self.dropout(self.self_attn(self.norm1(x), mask=mask))
            return x + self.dropout(self._ff(self.norm2(x)))
        x = self.norm1(x + self.dropout(self.self_attn(x, mask=mask)))
        return self.norm2(x + self.dropout(self._ff(x)))
