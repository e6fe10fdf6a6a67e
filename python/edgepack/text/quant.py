"""int8 for the BERT encoder.

Every Linear becomes a :class:`SmoothInt8Linear`: int8 weights with one scale per output channel,
activations quantized per row at run time, run by ``edgepack.kernels.linear_int8`` (the FFN's
GELU fused into its GEMM).

Plain per-row int8 loses too much on BERT: a few hidden channels (e.g. 99, 63, 223 in
all-MiniLM-L6-v2) carry LayerNorm outputs 10-20x larger than the rest, so one scale per row
leaves ~4 bits for every other channel (worst sentence cosine 0.984 against float).  The inputs
of the QKV and FFN-up GEMMs are therefore smoothed (SmoothQuant, alpha 0.7): the weights'
input columns are multiplied by s_j = max|x_j|^a / max|w_j|^(1-a) and the activations by 1/s_j,
an exact rewrite of x @ W.T that moves the outliers' range into the per-channel weight scales.
max|x_j| comes from a short built-in calibration text run through the float model once.
"""

from __future__ import annotations

import numpy as np

from ..nn import Linear, Module, register_layer

__all__ = ["SmoothInt8Linear", "quantize_bert", "CALIBRATION_TEXT"]

# Varied, generic text for the activation ranges (not the test sentences).
CALIBRATION_TEXT = [
    "The train to the airport leaves every twenty minutes.",
    "She finished the report late on Friday evening.",
    "What time does the museum open on Sundays?",
    "Prices rose by 3.2% in March, the fastest rise since 2019.",
    "Please send the invoice to accounts@company.example before the 15th.",
    "He plays guitar in a small band with his brothers.",
    "The recipe needs two cups of flour, one egg and a pinch of salt.",
    "Scientists discovered a new species of frog in the rainforest.",
    "Can you recommend a good book about the history of Rome?",
    "Our servers were down for 45 minutes because of a network fault.",
    "I think the meeting went well, don't you?",
    "The children built a sandcastle on the beach.",
    "Turn left at the second traffic light, then continue straight for 500 m.",
    "A dog is running through the snow.",
    "Quarterly revenue was $4.7 million, up from $3.9 million a year earlier.",
    "Wow!!! That was amazing...",
    "The Eiffel Tower is one of the most visited monuments in the world.",
    "Install the package, restart the terminal, and run the command again.",
    "My grandmother grows tomatoes, beans and zucchini in her garden.",
    "Is it going to rain tomorrow?",
    "The court ruled that the contract was valid and binding on both parties.",
    "Heavy traffic delayed the ambulance by several minutes.",
    "Thanks a lot :)",
    "Machine learning models can be compressed with quantization and pruning.",
    "Der Zug kommt heute etwas später an.",
    "La réunion est reportée à jeudi prochain.",
    "The quick brown fox jumps over the lazy dog.",
    "Error 404: the page you requested could not be found.",
    "Two women are sitting on a bench and talking.",
    "The river flooded the valley after a week of storms.",
    "Which programming language should I learn first?",
    "He apologised for the confusion and offered a full refund.",
]

ALPHA = 0.7


def _kernels():
    from .. import kernels

    return kernels if hasattr(kernels, "linear_int8") else None


@register_layer
class SmoothInt8Linear(Module):
    """y = act(dequant(int8(x * smooth) @ weight_q.T) + bias), x quantized per row at run time.

    Tensors: ``weight_q`` int8 [out, in] (symmetric, in [-127, 127]), ``w_scale`` float32 [out]
    (per output channel), ``bias`` float32 [out] or None, ``smooth`` float32 [in] or None (the
    per-input-channel factor 1/s of SmoothQuant; the weights hold s).
    ``forward_fused(x, activation="gelu")`` applies the activation in the GEMM's output pass.
    """

    _tensor_names = ("weight_q", "w_scale", "bias", "smooth")

    def __init__(self, in_features: int, out_features: int, bias: bool = True, smooth: bool = False):
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight_q = np.zeros((self.out_features, self.in_features), np.int8)
        self.w_scale = np.ones(self.out_features, np.float32)
        self.bias = np.zeros(self.out_features, np.float32) if bias else None
        self.smooth = np.ones(self.in_features, np.float32) if smooth else None
        self._packed = None

    @classmethod
    def from_linear(cls, lin, x_absmax: np.ndarray | None = None, alpha: float = ALPHA) -> "SmoothInt8Linear":
        """Quantize a float Linear; ``x_absmax`` [in] (max |input| per channel) turns on smoothing."""
        w = np.asarray(lin.weight, np.float32)
        smooth = None
        if x_absmax is not None:
            xm = np.maximum(np.asarray(x_absmax, np.float32), 1e-5)
            wm = np.maximum(np.abs(w).max(axis=0), 1e-5)
            s = (xm ** alpha / wm ** (1.0 - alpha)).astype(np.float32)
            w = w * s
            smooth = (1.0 / s).astype(np.float32)
        amax = np.abs(w).max(axis=1)
        scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
        obj = cls(w.shape[1], w.shape[0], lin.bias is not None)
        obj.weight_q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
        obj.w_scale = scale
        obj.bias = None if lin.bias is None else np.ascontiguousarray(lin.bias, np.float32)
        obj.smooth = smooth
        return obj

    def get_config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None, "smooth": self.smooth is not None}

    def kernel_path(self) -> str:
        import edgepack

        return f"int8 gemm {edgepack.get_isa()}" if _kernels() is not None else "int8 numpy (no kernel)"

    def _pack(self):
        if self._packed is None:
            self._packed = _kernels().pack_weights(self.weight_q)
        return self._packed

    def forward_fused(self, x, activation=None):
        if self.smooth is not None:
            x = x * self.smooth
        k = _kernels()
        if k is not None:
            return k.linear_int8(x, self._pack(), self.w_scale, self.bias, activation=activation)
        return _reference(x, self.weight_q, self.w_scale, self.bias, activation)

    def forward(self, x, **kw):
        return self.forward_fused(x)


def _reference(x, wq, w_scale, bias, activation):
    """NumPy statement of what linear_int8 computes (used only without the compiled kernel)."""
    amax = np.abs(x).max(axis=1)
    xs = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    xq = np.clip(np.rint(x / xs[:, None]), -127, 127)
    acc = xq.astype(np.float64) @ wq.T.astype(np.float64)
    y = (acc * xs[:, None] * w_scale[None, :]).astype(np.float32)
    if bias is not None:
        y += bias
    if activation in ("gelu", "gelu_tanh"):
        from . import bert

        y = bert._gelu(y, "none" if activation == "gelu" else "tanh")
    elif activation is not None:
        raise ValueError(f"activation must be None, 'gelu' or 'gelu_tanh'; got {activation!r}")
    return y


def _input_absmax(model, sentences_ids) -> dict:
    """max |x| per input channel of each layer's qkv and intermediate GEMMs, on float data."""
    from .bert import pack_ids

    stats: dict = {}
    saved = []
    for i, layer in enumerate(model.layers):
        for key, lin in ((("qkv", i), layer.attention.qkv), (("intermediate", i), layer.intermediate)):
            orig = lin.forward

            def hook(x, _orig=orig, _key=key, **kw):
                a = np.abs(x).max(axis=0)
                stats[_key] = np.maximum(stats[_key], a) if _key in stats else a
                return _orig(x, **kw)

            lin.forward = hook
            saved.append(lin)
    try:
        model.forward_packed(*pack_ids(sentences_ids))
    finally:
        for lin in saved:
            del lin.forward
    return stats


def quantize_bert(model, calibration_ids) -> "BertModel":  # noqa: F821
    """Replace every Linear of a float BertModel by SmoothInt8Linear (in place); returns it.

    ``calibration_ids``: list of token-id arrays for the smoothing statistics.
    """
    stats = _input_absmax(model, calibration_ids)
    for i, layer in enumerate(model.layers):
        att = layer.attention
        att.set_child("qkv", SmoothInt8Linear.from_linear(att.qkv, stats[("qkv", i)]))
        att.set_child("out_proj", SmoothInt8Linear.from_linear(att.out_proj))
        layer.set_child("intermediate", SmoothInt8Linear.from_linear(layer.intermediate, stats[("intermediate", i)]))
        layer.set_child("output", SmoothInt8Linear.from_linear(layer.output))
    return model
