"""Folding at import: constant subgraphs evaluated once, BatchNorm merged into the layer before it.

Constant folding follows onnx-simplifier and onnxruntime: a node whose inputs are all constants
(parameters) is run once and its outputs become parameters, except for operators marked
``fold=False`` (QuantizeLinear/DequantizeLinear, whose pattern the int8 passes map onto edgepack's
kernels) and results larger than ``max_elements`` (an Expand or Tile that would blow a small
constant up into a large one is cheaper to keep as a node).  Every operator's allocation guard
applies, so a hostile graph asking for a huge constant ends in a ValueError naming the node.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..ir import Graph
from ..registry import fill_attrs, get_op

_FOLD_MAX = 1 << 24


def fold_constants(graph: Graph, max_elements: int = _FOLD_MAX) -> Graph:
    """Evaluate every node whose inputs are all parameters; return the simplified graph."""
    params = dict(graph.params)
    kept = []
    for n in graph.nodes:
        d = get_op(n.op, n.domain, graph.opset)
        ins = [v for v in n.inputs if v]
        if d is None or not d.fold or not all(v in params for v in ins) or (not ins and n.op != "Constant"):
            kept.append(n)
            continue
        attrs, _ = fill_attrs(d, n.attrs)
        node = dataclasses.replace(n, attrs=attrs)
        consts = [params.get(v) if v else None for v in n.inputs]
        try:
            fn = d.make(node, consts)
            res = fn(*consts)
        except MemoryError:
            raise ValueError(f"{n.label()}: folding this constant needs more memory than is available "
                             "(or a hostile attribute value)") from None
        except (ValueError, TypeError, IndexError, KeyError, ZeroDivisionError, OverflowError, AttributeError) as e:
            raise ValueError(f"{n.label()}: {e}") from None
        if len(n.outputs) == 1 and isinstance(res, (tuple, list)):
            res = res[0] if res else None      # a multi-output op naming only its first output
        res = (res,) if len(n.outputs) == 1 else tuple(res)
        if any(isinstance(r, np.ndarray) and r.size > max_elements for r in res) or any(
                not isinstance(r, np.ndarray) for o, r in zip(n.outputs, res) if o):
            kept.append(n)
            continue
        for o, r in zip(n.outputs, res):
            if o:
                params[o] = r
    # Graph outputs that became constants still need a producer: keep them as parameters, which
    # the graph returns directly.
    return graph.copy(nodes=kept, params=params)


def _single_consumer(graph: Graph):
    uses: dict[str, int] = {}
    for n in graph.nodes:
        for v in n.inputs:
            if v:
                uses[v] = uses.get(v, 0) + 1
    for o in graph.outputs:
        uses[o] = uses.get(o, 0) + 1
    return uses


def fold_batchnorm(graph: Graph) -> Graph:
    """Merge inference BatchNormalization into a preceding Conv / ConvTranspose / Gemm whose
    output feeds only the BatchNorm and whose weights are constants:
    ``W' = W * g / sqrt(v + eps)``, ``b' = (b - m) * g / sqrt(v + eps) + beta`` (in float64)."""
    params = dict(graph.params)
    uses = _single_consumer(graph)
    prod = graph.producers()
    drop: set[int] = set()
    replace: dict[int, object] = {}
    rename: dict[str, str] = {}
    for i, n in enumerate(graph.nodes):
        if n.op != "BatchNormalization" or n.domain not in ("", "ai.onnx"):
            continue
        if len([o for o in n.outputs if o]) != 1 or n.attrs.get("training_mode", 0):
            continue
        if not all(v in params for v in n.inputs[1:5]) or len(n.inputs) < 5:
            continue
        src = prod.get(n.inputs[0])
        if src is None or uses.get(n.inputs[0], 0) != 1:
            continue
        j, p = src
        if j in replace:
            p = replace[j]
        if p.op not in ("Conv", "ConvTranspose", "Gemm") or p.domain not in ("", "ai.onnx"):
            continue
        if len(p.inputs) < 2 or p.inputs[1] not in params or (len(p.inputs) > 2 and p.inputs[2]
                                                             and p.inputs[2] not in params):
            continue
        w = params[p.inputs[1]].astype(np.float64)
        gamma, beta, mean, var = (params[v].astype(np.float64).reshape(-1) for v in n.inputs[1:5])
        eps = float(n.attrs.get("epsilon", 1e-5))
        k = gamma / np.sqrt(var + eps)
        cout = k.size
        if p.op == "Conv":
            if w.shape[0] != cout:
                continue
            w2 = w * k.reshape((-1,) + (1,) * (w.ndim - 1))
        elif p.op == "ConvTranspose":
            grp = int(p.attrs.get("group", 1))
            if w.shape[1] * grp != cout:
                continue
            wg = w.reshape((grp, w.shape[0] // grp, w.shape[1]) + w.shape[2:])
            w2 = (wg * k.reshape((grp, 1, -1) + (1,) * (w.ndim - 2))).reshape(w.shape)
        else:  # Gemm: y = alpha * A @ B' + beta * C; needs transA=0 and a plain layout
            if p.attrs.get("transA", 0) or w.ndim != 2:
                continue
            alpha = float(p.attrs.get("alpha", 1.0))
            wt = w if p.attrs.get("transB", 0) else w.T      # [out, in]
            if wt.shape[0] != cout:
                continue
            w2 = (wt * (alpha * k)[:, None])
            w2 = w2 if p.attrs.get("transB", 0) else w2.T
        b = np.zeros(cout)
        if len(p.inputs) > 2 and p.inputs[2]:
            bb = params[p.inputs[2]].astype(np.float64)
            if p.op == "Gemm":
                bb = bb * float(p.attrs.get("beta", 1.0))
            if bb.size not in (1, cout):
                continue
            b = b + np.broadcast_to(bb.reshape(-1), (cout,))
        b2 = (b - mean) * k + beta
        wname = f"{p.name or p.outputs[0]}.bn_weight"
        bname = f"{p.name or p.outputs[0]}.bn_bias"
        while wname in params or bname in params:
            wname += "_"
            bname += "_"
        params[wname] = w2.astype(np.float32)
        params[bname] = b2.astype(np.float32)
        attrs = dict(p.attrs)
        if p.op == "Gemm":
            attrs["alpha"] = 1.0
            attrs["beta"] = 1.0
        replace[j] = dataclasses.replace(p, inputs=[p.inputs[0], wname, bname], attrs=attrs)
        drop.add(i)
        rename[n.outputs[0]] = p.outputs[0]
    if not drop:
        return graph
    nodes = []
    for i, n in enumerate(graph.nodes):
        if i in drop:
            continue
        n = replace.get(i, n)
        nodes.append(dataclasses.replace(n, inputs=[rename.get(v, v) for v in n.inputs]))
    outputs = list(graph.outputs)
    # A folded BatchNorm whose output was a graph output: the producer now writes that name.
    for idx, n in enumerate(nodes):
        for k, o in enumerate(n.outputs):
            for bn_out, src in rename.items():
                if o == src and bn_out in outputs:
                    n.outputs[k] = bn_out
                    for m in nodes[idx + 1:]:
                        m.inputs = [bn_out if v == src else v for v in m.inputs]
    from .cleanup import eliminate_dead

    return eliminate_dead(graph.copy(nodes=nodes, params=params, outputs=outputs))
