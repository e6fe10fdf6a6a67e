"""Finding the layers the compression passes work on: Conv, Gemm and MatMul nodes with constant
weights, with the bias Add and the activation that follow them (the "fuse" step of quantization:
the activation runs in the int8 layer's epilogue, so the output quantizer sits after the whole
group, GRAPHS.md section 7.2), and ``edgepack.Layer`` nodes running a float pruned layer.

A :class:`Target` describes one such group as an equivalent float edgepack layer
(:class:`edgepack.nn.Linear` or :class:`edgepack.nn.Conv2d`), so quantization and pruning reuse the
layer code (QLinear/QConv2d, SparseLinear/SparseConv2d and their kernels) instead of a second
implementation for graphs.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ...nn.base import _skip_init
from ...nn.layers import Conv2d, Linear
from ..ir import Graph

__all__ = ["Target", "find_targets", "find_sparse_targets"]

# The fused-activation name the int8/sparse layers implement for an activation node, or None.
# Gelu: edgepack's int8 and sparse epilogues have both the erf form and the tanh form.
_FUSABLE = {"Relu": lambda n: "relu",
            "Gelu": lambda n: {"none": "gelu", "tanh": "gelu_tanh"}.get(str(n.attrs.get("approximate", "none")))}


@dataclasses.dataclass
class Target:
    """One weight layer of a graph.

    Attributes
    ----------
    index : int
        Index of the Conv/Gemm/MatMul node.
    name : str
        That node's name (used in reports and ``skip``).
    op : str
        "Conv", "Gemm" or "MatMul"; for a Layer node, the class it runs ("SparseLinear", ...).
    x : str
        The value the layer reads.
    out : str
        The value the fused group writes (after the bias Add / activation, if fused).
    fused : list of int
        Indices of the nodes folded into the group (bias Add, activation).
    layer : Linear or Conv2d (or the float layer a Layer node runs)
        The float layer computing the group without its activation.
    activation : str or None
        Fused activation name ("relu", "silu"), applied after ``layer``.
    conv1d : bool
        A 1-D convolution run as 2-D with height 1.
    """

    index: int
    name: str
    op: str
    x: str
    out: str
    fused: list
    layer: object
    activation: str | None = None
    conv1d: bool = False


def _single_use(graph: Graph) -> dict[str, int]:
    uses: dict[str, int] = {}
    for n in graph.nodes:
        for v in n.inputs:
            if v:
                uses[v] = uses.get(v, 0) + 1
    for o in graph.outputs:
        uses[o] = uses.get(o, 0) + 2   # a graph output is never fused away
    return uses


def _conv_layer(n, params):
    a = n.attrs
    if len(n.inputs) < 2 or n.inputs[1] not in params or (len(n.inputs) > 2 and n.inputs[2]
                                                          and n.inputs[2] not in params):
        return None
    if str(a.get("auto_pad", "NOTSET")) not in ("NOTSET", "VALID"):
        return None
    w = params[n.inputs[1]]
    if w.dtype.kind != "f" or w.ndim not in (3, 4):
        return None
    b = params[n.inputs[2]] if len(n.inputs) > 2 and n.inputs[2] else None
    k = w.ndim - 2
    strides = list(a.get("strides") or [1] * k)
    dil = list(a.get("dilations") or [1] * k)
    pads = list(a.get("pads") or [0] * (2 * k))
    if str(a.get("auto_pad", "NOTSET")) == "VALID":
        pads = [0] * (2 * k)
    if len(strides) != k or len(dil) != k or len(pads) != 2 * k:
        return None
    ks = a.get("kernel_shape")
    if ks is not None and list(ks) != list(w.shape[2:]):
        return None
    conv1d = k == 1
    if conv1d:
        w = w[:, :, None, :]
        strides, dil, pads = [1] + strides, [1] + dil, [0, pads[0], 0, pads[1]]
    groups = int(a.get("group", 1))
    with _skip_init():   # from_weights builds through __init__: no random draws (they move nn.seed's stream)
        layer = Conv2d.from_weights(w, b, tuple(strides), (pads[0], pads[1], pads[2], pads[3]), tuple(dil), groups)
    return layer, conv1d


def _gemm_layer(n, params):
    a = n.attrs
    if len(n.inputs) < 2 or n.inputs[1] not in params or a.get("transA", 0):
        return None
    w = params[n.inputs[1]].astype(np.float64)
    if w.ndim != 2 or params[n.inputs[1]].dtype.kind != "f":
        return None
    w = (w if a.get("transB", 0) else w.T) * float(a.get("alpha", 1.0))
    bias = None
    if len(n.inputs) > 2 and n.inputs[2]:
        if n.inputs[2] not in params:
            return None
        c = params[n.inputs[2]].astype(np.float64) * float(a.get("beta", 1.0))
        if c.size == 1:
            c = np.full(w.shape[0], float(c.reshape(-1)[0]))
        elif c.shape[-1:] != (w.shape[0],) or c.size != w.shape[0]:
            return None
        bias = c.reshape(-1)
    return Linear.from_weights(w, bias)


def _matmul_layer(n, params):
    if len(n.inputs) != 2 or n.inputs[1] not in params or n.inputs[0] in params:
        return None
    w = params[n.inputs[1]]
    if w.ndim != 2 or w.dtype.kind != "f":
        return None
    return Linear.from_weights(w.T.astype(np.float64))


def _activation_after(cur, uses, cons, taken):
    """(name, fused node indices, output value) of a fusable activation reading ``cur``, or None."""
    users = cons.get(cur, [])
    if uses.get(cur) == 1:
        j, m = users[0]
        act = _FUSABLE[m.op](m) if m.op in _FUSABLE and m.domain in ("", "ai.onnx") else None
        if act is not None and j not in taken:
            return act, [j], m.outputs[0]
    if uses.get(cur) == 2 and len(users) == 2:
        # SiLU as exporters write it: x * Sigmoid(x)
        (j1, m1), (j2, m2) = sorted(users, key=lambda u: u[1].op != "Sigmoid")
        if m1.op == "Sigmoid" and m2.op == "Mul" and uses.get(m1.outputs[0]) == 1 and \
                sorted(m2.inputs) == sorted([cur, m1.outputs[0]]) and not {j1, j2} & taken:
            return "silu", [j1, j2], m2.outputs[0]
    return None


def find_targets(graph: Graph, *, fuse_activation: bool = True) -> list[Target]:
    """Every Conv/Gemm/MatMul with constant float weights, as :class:`Target` groups."""
    params = graph.params
    uses = _single_use(graph)
    cons = graph.consumers()
    out = []
    taken: set[int] = set()
    for i, n in enumerate(graph.nodes):
        if n.domain not in ("", "ai.onnx") or i in taken:
            continue
        conv1d = False
        if n.op == "Conv":
            r = _conv_layer(n, params)
            if r is None:
                continue
            layer, conv1d = r
        elif n.op == "Gemm":
            layer = _gemm_layer(n, params)
        elif n.op == "MatMul":
            layer = _matmul_layer(n, params)
        else:
            continue
        if layer is None:
            continue
        t = Target(i, n.name, n.op, n.inputs[0], n.outputs[0], [], layer, None, conv1d)
        cur = n.outputs[0]
        # MatMul + Add(constant bias over the last axis) -> Linear with bias
        if n.op == "MatMul" and uses.get(cur) == 1:
            j, m = cons[cur][0]
            other = [v for v in m.inputs if v != cur]
            if m.op == "Add" and len(other) == 1 and other[0] in params and j not in taken:
                c = params[other[0]]
                if c.dtype.kind == "f" and c.size == layer.out_features and c.shape[-1:] == (layer.out_features,):
                    layer.bias = c.reshape(-1).astype(np.float32)
                    t.fused.append(j)
                    t.out = cur = m.outputs[0]
        if fuse_activation:
            act = _activation_after(cur, uses, cons, taken)
            if act is not None:
                t.activation, nodes_, t.out = act
                t.fused += nodes_
        taken.update(t.fused)
        taken.add(i)
        out.append(t)
    return out


_SPARSE = ("SparseLinear", "SparseConv2d")


def find_sparse_targets(graph: Graph) -> list[Target]:
    """Every ``edgepack.Layer`` node running a float32 SparseLinear/SparseConv2d (a pruned layer,
    from :func:`edgepack.prune` or a lowered module tree), as :class:`Target` groups of one node
    whose ``layer`` is that sparse layer (its activation is already inside it)."""
    from ..ops.layer import build_layer
    from ..registry import EDGEPACK_DOMAIN

    out = []
    for i, n in enumerate(graph.nodes):
        if n.op != "Layer" or n.domain != EDGEPACK_DOMAIN or n.attrs.get("class") not in _SPARSE:
            continue
        layer = build_layer(n, [graph.params.get(v) for v in n.inputs])
        if layer.dtype != "float32":
            continue
        out.append(Target(i, n.name, n.attrs["class"], n.inputs[0], n.outputs[0], [], layer, None,
                          bool(n.attrs.get("conv1d", 0))))
    return out
