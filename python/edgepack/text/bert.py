"""A BERT encoder (Hugging Face ``BertModel`` layout) built from edgepack.nn layers.

Sequences run *packed*: the hidden states of a batch are one float32 array [total_tokens, D]
holding only real tokens, with ``offsets`` marking where each sequence starts.  Linear layers
and LayerNorm work on that 2-D array, and attention runs per sequence over its own tokens.  So
padding is never computed and can never change a result, and a batch of short sentences costs
only its real tokens.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..kernels import attention as _attention, attention_is_vectorized as _attention_vectorized
from ..kernels import layer_norm as _layer_norm
from ..nn import GELU, Embedding, LayerNorm, Linear, Module, register_layer

__all__ = ["BertConfig", "BertModel", "BertEmbeddings", "BertSelfAttention", "BertLayer",
           "load_bert_weights", "layer_norm_", "pack_ids"]


# ------------------------------------------------------------------------------------------------
# config


@dataclass(frozen=True)
class BertConfig:
    """The subset of a Hugging Face BERT ``config.json`` the encoder needs."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"

    @classmethod
    def from_json_file(cls, path) -> "BertConfig":
        """Read and check ``config.json``; anything that is not a BERT encoder -> ValueError."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"BERT config file not found: {path}")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path} must hold a JSON object; got {type(raw).__name__}")
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config") -> "BertConfig":
        mt = raw.get("model_type")
        archs = raw.get("architectures") or []
        if mt != "bert":
            raise ValueError(f"{source}: model_type must be 'bert' (a BERT encoder); got {mt!r}"
                             + (f" (architectures {archs})" if archs else ""))
        act = raw.get("hidden_act", "gelu")
        if act not in ("gelu", "gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"{source}: hidden_act must be 'gelu' (or a tanh GELU); got {act!r}")
        pet = raw.get("position_embedding_type", "absolute")
        if pet != "absolute":
            raise ValueError(f"{source}: position_embedding_type must be 'absolute'; got {pet!r}")
        if raw.get("is_decoder") or raw.get("add_cross_attention"):
            raise ValueError(f"{source}: a BERT decoder is not supported (is_decoder/add_cross_attention set)")
        need = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size", "max_position_embeddings")
        vals = {}
        for k in need:
            v = raw.get(k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{source}: {k} must be a positive integer; got {v!r}")
            vals[k] = v
        if vals["hidden_size"] % vals["num_attention_heads"]:
            raise ValueError(f"{source}: hidden_size ({vals['hidden_size']}) must be divisible by "
                             f"num_attention_heads ({vals['num_attention_heads']})")
        return cls(**vals, type_vocab_size=int(raw.get("type_vocab_size", 2)),
                   layer_norm_eps=float(raw.get("layer_norm_eps", 1e-12)), hidden_act=act)


def load_bert_weights(path, config: BertConfig) -> dict[str, np.ndarray]:
    """Read ``model.safetensors`` (numpy API) -> {name without any ``bert.`` prefix: float32 array}.

    Checks that every tensor the encoder needs is there with the shape the config implies.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"BERT weights file not found: {path}")
    try:
        from safetensors.numpy import load_file
    except ImportError:  # pragma: no cover
        raise ImportError("reading model.safetensors needs the 'safetensors' package: "
                          "pip install 'edgepack[text]'") from None
    try:
        raw = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{path} is not a readable safetensors file: {e}") from None
    t = {}
    for k, v in raw.items():
        k = k[5:] if k.startswith("bert.") else k
        t[k] = v
    D, I, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    want = {
        "embeddings.word_embeddings.weight": (config.vocab_size, D),
        "embeddings.position_embeddings.weight": (config.max_position_embeddings, D),
        "embeddings.token_type_embeddings.weight": (config.type_vocab_size, D),
        "embeddings.LayerNorm.weight": (D,), "embeddings.LayerNorm.bias": (D,),
    }
    for i in range(L):
        p = f"encoder.layer.{i}."
        for n in ("query", "key", "value"):
            want[p + f"attention.self.{n}.weight"] = (D, D)
            want[p + f"attention.self.{n}.bias"] = (D,)
        want.update({
            p + "attention.output.dense.weight": (D, D), p + "attention.output.dense.bias": (D,),
            p + "attention.output.LayerNorm.weight": (D,), p + "attention.output.LayerNorm.bias": (D,),
            p + "intermediate.dense.weight": (I, D), p + "intermediate.dense.bias": (I,),
            p + "output.dense.weight": (D, I), p + "output.dense.bias": (D,),
            p + "output.LayerNorm.weight": (D,), p + "output.LayerNorm.bias": (D,),
        })
    missing = [k for k in want if k not in t]
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise ValueError(f"{path} lacks BERT tensors {missing[:3]}{more}")
    out = {}
    for k, shape in want.items():
        a = t[k]
        if a.shape != shape or a.dtype.kind != "f":
            raise ValueError(f"{path}: tensor {k} must be float of shape {shape}; got {a.dtype} {a.shape}")
        out[k] = np.ascontiguousarray(a, dtype=np.float32)
    return out


# ------------------------------------------------------------------------------------------------
# maths


def layer_norm_(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float,
                residual: np.ndarray | None = None) -> np.ndarray:
    """LayerNorm over the last axis of a C-contiguous float32 [N, D] array, in place; returns x.

    ``residual`` (same shape) is added first.  The C++ kernel (one pass for add and sum, one for
    the centred variance, one to scale; rows in parallel) replaces five numpy passes: it runs
    twice per layer on every token, so it matters next to the int8 GEMMs.  A row's result never
    depends on the other rows of the batch, so outputs are batch-invariant.
    """
    return _layer_norm(x, weight, bias, eps, residual=residual, out=x)


def pack_ids(seqs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """list of 1-D int token-id arrays -> (ids [total] int64, positions [total] int64, offsets [n+1])."""
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    if lengths.size and lengths.min() < 1:
        raise ValueError("every sequence must hold at least one token")
    offsets = np.zeros(len(seqs) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.concatenate(seqs).astype(np.int64, copy=False) if seqs else np.zeros(0, np.int64)
    positions = np.arange(int(offsets[-1]), dtype=np.int64) - np.repeat(offsets[:-1], lengths)
    return ids, positions, offsets


# exp(80) ~ 5.5e34: a row of up to 512 such terms still sums below float32's max (3.4e38)
_EXP_SAFE = 80.0
# a denominator below exp(-57): the row's max sits so far under the block's that its smaller
# terms could have underflowed; the block is recomputed with per-row maxima
_DEN_TINY = np.float32(1e-25)


def _gelu(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    return GELU(approximate).forward(x)


# ------------------------------------------------------------------------------------------------
# modules


def _run_linear(layer, x: np.ndarray, activation: str | None = None) -> np.ndarray:
    """Run a Linear (float or a quantized replacement), fusing the activation when it can."""
    fused = getattr(layer, "forward_fused", None)
    if activation is not None and fused is not None:
        return fused(x, activation=activation)
    y = layer(x)
    return y


@register_layer
class BertEmbeddings(Module):
    """word + position + token-type(0) embeddings, then LayerNorm. Children: word, position,
    token_type (Embedding), norm (LayerNorm)."""

    def __init__(self, vocab_size: int, hidden_size: int, max_position_embeddings: int,
                 type_vocab_size: int = 2, layer_norm_eps: float = 1e-12):
        # zeros (calloc'd, untouched until loaded) rather than a random init of a 30k x D table
        self.word = Embedding.from_weights(np.zeros((vocab_size, hidden_size), np.float32))
        self.position = Embedding.from_weights(np.zeros((max_position_embeddings, hidden_size), np.float32))
        self.token_type = Embedding.from_weights(np.zeros((type_vocab_size, hidden_size), np.float32))
        self.norm = LayerNorm(hidden_size, layer_norm_eps)
        self._pos_type = None

    def get_config(self):
        return {"vocab_size": self.word.weight.shape[0], "hidden_size": self.word.weight.shape[1],
                "max_position_embeddings": self.position.weight.shape[0],
                "type_vocab_size": self.token_type.weight.shape[0],
                "layer_norm_eps": float(self.norm.eps)}

    def kernel_path(self) -> str:
        return "numpy f32 (gather)"

    def forward(self, ids, positions=None, **kw):
        """ids [N] (packed) -> [N, D] float32; positions [N] default 0..N-1."""
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"ids must be integer token ids; got {ids.dtype}")
        vocab = self.word.weight.shape[0]
        if ids.size and (ids.min() < 0 or ids.max() >= vocab):
            raise ValueError(f"token ids must be in [0, {vocab}); got values in [{ids.min()}, {ids.max()}]")
        if positions is None:
            positions = np.arange(ids.shape[0])
        # position and token-type 0 are added once per model, not once per token
        pt = self._pos_type
        if pt is None or pt.shape != self.position.weight.shape:
            pt = self._pos_type = self.position.weight + self.token_type.weight[0]
        x = np.take(self.word.weight, ids, axis=0)
        x += np.take(pt, positions, axis=0)
        return layer_norm_(x, self.norm.weight, self.norm.bias, self.norm.eps)


@register_layer
class BertSelfAttention(Module):
    """Multi-head self-attention over packed sequences: x [N, D] -> [N, D].

    Children ``qkv`` (Linear D -> 3D: query, key, value stacked, the query rows pre-scaled by
    1/sqrt(head_dim)) and ``out_proj`` (Linear D -> D).  One GEMM for Q, K and V reads x once
    (and quantizes it once on the int8 path).
    """

    def __init__(self, hidden_size: int, num_heads: int):
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
        self.hidden_size = int(hidden_size)
        self.num_heads = int(num_heads)
        self.qkv = Linear.from_weights(np.zeros((3 * hidden_size, hidden_size), np.float32),
                                       np.zeros(3 * hidden_size, np.float32))
        self.out_proj = Linear.from_weights(np.zeros((hidden_size, hidden_size), np.float32),
                                            np.zeros(hidden_size, np.float32))

    def get_config(self):
        return {"hidden_size": self.hidden_size, "num_heads": self.num_heads}

    def kernel_path(self) -> str:
        return "numpy f32 (batched matmul, softmax)"

    def attend(self, qkv: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """qkv [N, 3D] -> context [N, D]: softmax(q k^T) v per sequence (q already scaled).

        Per sequence, all heads in two batched matmuls on strided views of qkv (no copies).
        Cheaper than the textbook softmax, with the same result:
        - no per-row max: exp(s) cannot overflow while the block's max is <= 80 (else the block
          max is subtracted); a row whose terms all underflow shows as a tiny denominator and
          the block is redone with per-row maxima (so it is exact, only slower, for wild inputs);
        - the denominators come out of the P @ V matmul as an extra column of ones in V;
        - the division writes straight into the [N, D] context (heads interleaved).
        """
        n = qkv.shape[0]
        d, h = self.hidden_size, self.num_heads
        if _attention_vectorized():
            # the C++ kernel: (sequence, head) tasks on the pool; 0.23 vs 0.36 ms for a 128-token
            # MiniLM layer on one thread (Zen 5, AVX-512), and it runs on every thread
            return _attention(np.ascontiguousarray(qkv, np.float32), np.asarray(offsets, np.int64), h)
        dh = d // h
        ctx = np.empty((n, d), np.float32)
        for i in range(len(offsets) - 1):
            start, end = int(offsets[i]), int(offsets[i + 1])
            L = end - start
            blk = qkv[start:end].reshape(L, 3, h, dh)
            q = blk[:, 0].transpose(1, 0, 2)                 # [H, L, dh] views
            k = blk[:, 1].transpose(1, 2, 0)                 # [H, dh, L]
            vx = np.empty((h, L, dh + 1), np.float32)
            vx[:, :, :dh] = blk[:, 2].transpose(1, 0, 2)
            vx[:, :, dh] = 1.0
            s = np.matmul(q, k)                              # [H, L, L]
            m = s.max()
            if m > _EXP_SAFE:
                s -= m
            np.exp(s, out=s)
            c = np.matmul(s, vx)                             # [H, L, dh + 1]
            if c[:, :, dh].min() < _DEN_TINY:
                s = np.matmul(q, k)
                s -= s.max(axis=-1, keepdims=True)
                np.exp(s, out=s)
                c = np.matmul(s, vx)
            np.divide(c[:, :, :dh], c[:, :, dh:], out=ctx[start:end].reshape(L, h, dh).transpose(1, 0, 2))
        return ctx

    def forward(self, x, offsets=None, **kw):
        if offsets is None:
            offsets = np.array([0, x.shape[0]], np.int64)
        ctx = self.attend(_run_linear(self.qkv, x), offsets)
        return _run_linear(self.out_proj, ctx)


@register_layer
class BertLayer(Module):
    """One post-LN BERT block over packed tokens [N, D].

    ``x = norm1(x + attention(x)); x = norm2(x + output(gelu(intermediate(x))))``.
    Children: attention (BertSelfAttention), norm1, intermediate (Linear D -> I), act (GELU),
    output (Linear I -> D), norm2.  A quantized ``intermediate`` that offers ``forward_fused``
    runs the GELU inside its GEMM.
    """

    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: int,
                 layer_norm_eps: float = 1e-12, approximate: str = "none"):
        self.attention = BertSelfAttention(hidden_size, num_heads)
        self.norm1 = LayerNorm(hidden_size, layer_norm_eps)
        self.intermediate = Linear.from_weights(np.zeros((intermediate_size, hidden_size), np.float32),
                                                np.zeros(intermediate_size, np.float32))
        self.act = GELU(approximate)
        self.output = Linear.from_weights(np.zeros((hidden_size, intermediate_size), np.float32),
                                          np.zeros(hidden_size, np.float32))
        self.norm2 = LayerNorm(hidden_size, layer_norm_eps)

    def get_config(self):
        return {"hidden_size": self.attention.hidden_size, "num_heads": self.attention.num_heads,
                "intermediate_size": self.intermediate.weight.shape[0] if hasattr(self.intermediate, "weight")
                else self.intermediate.out_features,
                "layer_norm_eps": float(self.norm1.eps), "approximate": self.act.approximate}

    def kernel_path(self) -> str:
        return ""

    def forward(self, x, offsets=None, **kw):
        a = self.attention(x, offsets=offsets)
        x = layer_norm_(a, self.norm1.weight, self.norm1.bias, self.norm1.eps, residual=x)
        act = "gelu" if self.act.approximate == "none" else "gelu_tanh"
        fused = getattr(self.intermediate, "forward_fused", None)
        if fused is not None:
            h = fused(x, activation=act)
        else:
            h = self.act(self.intermediate(x))
        y = self.output(h)
        return layer_norm_(y, self.norm2.weight, self.norm2.bias, self.norm2.eps, residual=x)


@register_layer
class BertModel(Module):
    """BERT encoder: embeddings then ``num_layers`` BertLayer children named layer0, layer1, ...

    ``forward(input_ids [B, T], mask=None)`` -> last hidden states [B, T, D] float32 (rows of
    padded positions are zero).  :meth:`forward_packed` is the padding-free path the
    SentenceEncoder uses.
    """

    def __init__(self, vocab_size: int, hidden_size: int, num_layers: int, num_heads: int,
                 intermediate_size: int, max_position_embeddings: int, type_vocab_size: int = 2,
                 layer_norm_eps: float = 1e-12, approximate: str = "none"):
        self.embeddings = BertEmbeddings(vocab_size, hidden_size, max_position_embeddings,
                                         type_vocab_size, layer_norm_eps)
        self.num_layers = int(num_layers)
        for i in range(self.num_layers):
            setattr(self, f"layer{i}", BertLayer(hidden_size, num_heads, intermediate_size,
                                                 layer_norm_eps, approximate))

    @property
    def layers(self) -> list:
        return [getattr(self, f"layer{i}") for i in range(self.num_layers)]

    @property
    def hidden_size(self) -> int:
        return self.embeddings.word.weight.shape[1]

    @property
    def max_positions(self) -> int:
        return self.embeddings.position.weight.shape[0]

    def get_config(self):
        e = self.embeddings.get_config()
        l0 = self.layer0.get_config() if self.num_layers else {}
        return {"vocab_size": e["vocab_size"], "hidden_size": e["hidden_size"],
                "num_layers": self.num_layers, "num_heads": l0.get("num_heads", 1),
                "intermediate_size": l0.get("intermediate_size", 1),
                "max_position_embeddings": e["max_position_embeddings"],
                "type_vocab_size": e["type_vocab_size"], "layer_norm_eps": e["layer_norm_eps"],
                "approximate": l0.get("approximate", "none")}

    def kernel_path(self) -> str:
        return ""

    @classmethod
    def from_hf(cls, config: BertConfig, tensors: dict[str, np.ndarray]) -> "BertModel":
        """Build from a HF ``BertModel`` state dict (names without the ``bert.`` prefix)."""
        approx = "none" if config.hidden_act == "gelu" else "tanh"
        m = cls(config.vocab_size, config.hidden_size, config.num_hidden_layers,
                config.num_attention_heads, config.intermediate_size,
                config.max_position_embeddings, config.type_vocab_size, config.layer_norm_eps, approx)
        t = tensors
        emb = m.embeddings
        emb.word = Embedding.from_weights(t["embeddings.word_embeddings.weight"])
        emb.position = Embedding.from_weights(t["embeddings.position_embeddings.weight"])
        emb.token_type = Embedding.from_weights(t["embeddings.token_type_embeddings.weight"])
        emb.norm.weight = t["embeddings.LayerNorm.weight"]
        emb.norm.bias = t["embeddings.LayerNorm.bias"]
        scale = np.float32(1.0 / math.sqrt(config.hidden_size // config.num_attention_heads))
        for i, layer in enumerate(m.layers):
            p = f"encoder.layer.{i}."
            a = p + "attention.self."
            w = np.concatenate([t[a + "query.weight"] * scale, t[a + "key.weight"], t[a + "value.weight"]])
            b = np.concatenate([t[a + "query.bias"] * scale, t[a + "key.bias"], t[a + "value.bias"]])
            layer.attention.qkv = Linear.from_weights(w, b)
            layer.attention.out_proj = Linear.from_weights(t[p + "attention.output.dense.weight"],
                                                           t[p + "attention.output.dense.bias"])
            layer.norm1.weight = t[p + "attention.output.LayerNorm.weight"]
            layer.norm1.bias = t[p + "attention.output.LayerNorm.bias"]
            layer.intermediate = Linear.from_weights(t[p + "intermediate.dense.weight"],
                                                     t[p + "intermediate.dense.bias"])
            layer.output = Linear.from_weights(t[p + "output.dense.weight"], t[p + "output.dense.bias"])
            layer.norm2.weight = t[p + "output.LayerNorm.weight"]
            layer.norm2.bias = t[p + "output.LayerNorm.bias"]
        return m

    def forward_packed(self, ids: np.ndarray, positions: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Packed tokens: ids/positions [N] int, offsets [n+1] -> hidden states [N, D] float32."""
        if positions.size and positions.max() >= self.max_positions:
            raise ValueError(f"sequences longer than {self.max_positions} tokens (max_position_embeddings) "
                             "are not supported; truncate them")
        x = self.embeddings(ids, positions=positions)
        for layer in self.layers:
            x = layer(x, offsets=offsets)
        return x

    def forward(self, x, mask=None, **kw):
        """input_ids [B, T] int (and mask [B, T], 1 = token, 0 = padding) -> [B, T, D] float32."""
        ids = np.asarray(x)
        if ids.ndim != 2 or ids.dtype.kind not in "iu":
            raise TypeError(f"input_ids must be an integer array of shape (batch, seq_len); got {ids.dtype} {ids.shape}")
        b, t = ids.shape
        m = np.ones((b, t), bool) if mask is None else np.asarray(mask) != 0
        if m.shape != (b, t):
            raise ValueError(f"mask must have shape (batch, seq_len) = {(b, t)}; got {m.shape}")
        keep = m.ravel()
        lengths = m.sum(axis=1)
        if (lengths == 0).any():
            raise ValueError("every sequence needs at least one real token (mask row of zeros)")
        offsets = np.zeros(b + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # positions follow the column index, as in HF BERT, so left padding is handled the same
        pos = np.broadcast_to(np.arange(t), (b, t)).ravel()[keep]
        h = self.forward_packed(ids.ravel()[keep], pos, offsets)
        out = np.zeros((b * t, h.shape[1]), np.float32)
        out[keep] = h
        return out.reshape(b, t, -1)

    def pool(self, h: np.ndarray, offsets: np.ndarray, normalize: bool = True) -> np.ndarray:
        """Mean over each sequence's tokens (then L2-normalize): [N, D] -> [n, D]."""
        lengths = np.diff(offsets).astype(np.float32)
        e = np.add.reduceat(h, offsets[:-1], axis=0) if h.shape[0] else np.zeros((0, h.shape[1]), np.float32)
        e /= lengths[:, None]
        if normalize:
            nrm = np.sqrt(np.einsum("ij,ij->i", e, e))[:, None]
            e /= np.maximum(nrm, np.float32(1e-12))
        return e.astype(np.float32, copy=False)
