"""The quantization report's measurements: each layer's own SQNR (its int8 layer on the float
model's input to it), the cumulative SQNR inside the quantized graph, the model output's SQNR,
and the report rows (:class:`~edgepack.ptq.report.LayerReport`)."""

from __future__ import annotations

import numpy as np

from ...ptq.observers import sqnr_db
from ...ptq.report import LayerReport
from ..ir import Graph
from .targets import Target

__all__ = ["float_values", "own_sqnr", "cumulative_sqnr", "layer_rows", "run_layer"]


def run_layer(layer, x: np.ndarray, conv1d: bool) -> np.ndarray:
    """``layer(x)``; a 1-D convolution's (N, C, L) input runs as (N, C, 1, L), as its node does."""
    if conv1d:
        y = layer(x[:, :, None, :])
        return y.reshape(y.shape[0], y.shape[1], y.shape[3])
    return layer(x)


def float_values(graph: Graph, feeds: dict, targets: list[Target]) -> dict[str, np.ndarray]:
    """Every target's input and output and the graph outputs, from one run of the float graph."""
    names = sorted({t.x for t in targets} | {t.out for t in targets} | set(graph.outputs))
    return graph.run(feeds, outputs=names)


def own_sqnr(f_vals: dict, targets: list[Target], layers: dict[int, object]) -> dict[int, float]:
    """``{target index: dB}``: each converted layer alone, on the float graph's input to it,
    against the float group's output (after its fused activation)."""
    return {t.index: sqnr_db(f_vals[t.out], run_layer(layers[t.index], f_vals[t.x], t.conv1d))
            for t in targets if t.index in layers}


def cumulative_sqnr(qgraph: Graph, feeds: dict, targets: list[Target], f_vals: dict,
                    outputs: list[str]) -> tuple[dict[int, float], float | None]:
    """(``{target index: dB}``, model output dB): each group's output inside the quantized graph
    (every earlier layer quantized too) against the float graph's, and the first graph output's
    (None when it is not a float tensor)."""
    names = sorted({t.out for t in targets} | set(qgraph.outputs))
    q_vals = qgraph.run(feeds, outputs=names)
    cum = {t.index: sqnr_db(f_vals[t.out], q_vals[t.out]) for t in targets}
    o = outputs[0]
    out = sqnr_db(f_vals[o], q_vals[o]) if np.asarray(f_vals[o]).dtype.kind == "f" else None
    return cum, out


def layer_rows(targets: list[Target], status: dict[int, str], layers: dict[int, object],
               own: dict[int, float], cum: dict[int, float]) -> list[LayerReport]:
    """One report row per target, in graph order.  ``layer`` is the node's op (the front end for
    module trees puts the class name there); ``kernel`` is the int8 layer's, or "float graph op"."""
    rows = []
    for t in targets:
        st = status[t.index]
        ql = layers.get(t.index)
        before = t.layer.nbytes()
        done = st.startswith("int8") and ql is not None
        rows.append(LayerReport(t.name, t.op, st, own.get(t.index), cum.get(t.index), before,
                                ql.nbytes() if done else before,
                                ql.kernel_path() if done else "float graph op",
                                getattr(ql, "x_scale", None), getattr(ql, "x_zero_point", None)))
    return rows
