"""Structural clean-up: Identity and inference-mode Dropout removed, dead nodes dropped."""

from __future__ import annotations

from ..ir import Graph


def _rename_inputs(nodes, mapping):
    for n in nodes:
        n.inputs = [mapping.get(v, v) for v in n.inputs]


def remove_identity(graph: Graph) -> Graph:
    """Bypass Identity and single-output Dropout nodes (kept where their output is a graph output
    fed directly by a graph input or parameter, which the graph needs as a node)."""
    g = graph.copy()
    outputs = set(g.outputs)
    mapping: dict[str, str] = {}
    kept = []
    for n in g.nodes:
        n.inputs = [mapping.get(v, v) for v in n.inputs]
        drop = (n.op == "Identity" or (n.op == "Dropout" and (len(n.outputs) == 1 or not n.outputs[1])
                                      and len([i for i in n.inputs if i]) == 1)) and n.domain in ("", "ai.onnx")
        if drop and n.outputs[0] not in outputs:
            mapping[n.outputs[0]] = n.inputs[0]
            continue
        kept.append(n)
    return g.copy(nodes=kept)


def eliminate_dead(graph: Graph) -> Graph:
    """Drop nodes none of whose outputs reach a graph output, and parameters nothing uses."""
    needed = set(graph.outputs)
    kept = []
    for n in reversed(graph.nodes):
        if any(o in needed for o in n.outputs if o):
            kept.append(n)
            needed.update(v for v in n.inputs if v)
    kept.reverse()
    params = {k: v for k, v in graph.params.items() if k in needed}
    return graph.copy(nodes=kept, params=params)
