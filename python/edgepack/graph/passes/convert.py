"""Conversion: each target's int8 layer, and the graph with those layers in place.

A dense target (Conv/Gemm/MatMul with its bias and activation) becomes a
:class:`~edgepack.nn.quantized.QConv2d` or :class:`~edgepack.nn.quantized.QLinear`; a float pruned
layer (SparseLinear/SparseConv2d in an ``edgepack.Layer`` node) gets int8 values with per-row
scales (``to_int8``: dynamic activations, the int8 sparse kernel, whatever ``activations`` says).
The graph then runs each one in an ``edgepack.Layer`` node: the same layers and kernels as a
hand-built model.
"""

from __future__ import annotations

from typing import Iterable

from ...nn.quantized import QConv2d, QLinear
from ..ir import Graph
from ..ops.layer import layer_node
from .cleanup import eliminate_dead
from .targets import Target

__all__ = ["int8_layers", "apply_layers", "is_sparse"]


def is_sparse(t: Target) -> bool:
    """The target is a pruned layer (an ``edgepack.Layer`` node), not a Conv/Gemm/MatMul group."""
    return t.op not in ("Conv", "Gemm", "MatMul")


def int8_layers(targets: Iterable[Target], *, weights: str, activations: str,
                qparams: dict[int, tuple[float, int]] | None = None,
                int8_depthwise: bool = False, weights_only: frozenset = frozenset()) -> dict[int, object]:
    """``{target index: int8 layer}`` for every target given.

    Parameters
    ----------
    targets : iterable of Target
    weights : "per_channel" or "per_tensor"
        Symmetric int8 weights, one scale per output channel or one per layer (dense targets).
    activations : "dynamic" or "static"
        Dense targets only; static needs ``qparams[index] = (x_scale, x_zero_point)``.
    qparams : dict, optional
        From :func:`edgepack.graph.passes.calibrate.calibrate`.
    weights_only : set of int
        Conv targets that keep int8 weights but compute in float (``QConv2d(activations=
        "weights_only")``): the ones too small for int8 arithmetic to pay.
    int8_depthwise : bool
        Static depthwise convolutions quantize their input and run the int8 depthwise kernel
        (``QConv2d(int8_depthwise=True)``) instead of float on dequantized weights.
    """
    out = {}
    for t in targets:
        if is_sparse(t):
            out[t.index] = t.layer.to_int8()
            continue
        if t.index in weights_only and t.op == "Conv":
            out[t.index] = QConv2d.from_float(t.layer, weights=weights, activations="weights_only",
                                              activation=t.activation)
            continue
        kw = {"weights": weights, "activations": activations, "activation": t.activation}
        if activations == "static":
            s, z = qparams[t.index]
            kw.update(x_scale=s, x_zero_point=z)
        if t.op in ("Gemm", "MatMul"):
            out[t.index] = QLinear.from_float(t.layer, **kw)
            continue
        dw = t.layer.groups > 1 and t.layer.groups == t.layer.in_channels
        if int8_depthwise and dw and activations == "static" and t.activation in (None, "relu", "silu"):
            kw["int8_depthwise"] = True
        out[t.index] = QConv2d.from_float(t.layer, **kw)
    return out


def apply_layers(graph: Graph, targets: list[Target], layers: dict[int, object]) -> Graph:
    """A new graph where each target in ``layers`` (by target node index) is replaced by one
    ``edgepack.Layer`` node running that layer, its fused nodes removed.  The node keeps the
    target's name (``layer<index>`` when it had none: its tensors are named after it); tensors
    nothing uses any more are dropped."""
    params = dict(graph.params)
    drop = set()
    repl = {}
    for t in targets:
        if t.index in layers:
            drop.update(t.fused)
            repl[t.index] = layer_node(layers[t.index], t.x, t.out, t.name or f"layer{t.index}", params,
                                       conv1d=t.conv1d)
    nodes = [repl.get(i, n) for i, n in enumerate(graph.nodes) if i not in drop]
    return eliminate_dead(graph.copy(nodes=nodes, params=params))
