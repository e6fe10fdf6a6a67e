"""The table behind :meth:`Graph.summary`."""

from __future__ import annotations

import numpy as np

from ..nn.summary import _fmt_bytes

__all__ = ["graph_summary", "example_feeds"]


def example_feeds(graph, input_shape=None) -> dict[str, np.ndarray]:
    """Zero inputs for every graph input: ``input_shape`` for a one-input graph (or a dict of
    shapes), else the declared shapes with symbolic or unknown dimensions set to 1."""
    feeds = {}
    shapes = input_shape if isinstance(input_shape, dict) else (
        {graph.inputs[0]["name"]: input_shape} if input_shape is not None and len(graph.inputs) == 1 else {})
    for spec in graph.inputs:
        shape = shapes.get(spec["name"])
        if shape is None:
            if spec["shape"] is None:
                raise ValueError(f"input {spec['name']!r} has no declared shape: pass input_shape")
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec["shape"]]
        feeds[spec["name"]] = np.zeros(tuple(shape), dtype=spec["dtype"] or "float32")
    return feeds


def graph_summary(graph, input_shape=None, *, feeds: dict | None = None, max_rows: int = 400) -> str:
    """One row per node: name, op, first output's shape (when inputs are given), parameter count
    and bytes of the parameters it reads."""
    shapes: dict[str, tuple] = {}
    if feeds is None and input_shape is not None:
        feeds = example_feeds(graph, input_shape)
    if feeds is not None:
        names = [n.outputs[0] for n in graph.nodes if n.outputs and n.outputs[0]]
        res = graph.run(feeds, outputs=names)
        shapes = {k: getattr(v, "shape", None) for k, v in res.items()}
    rows = []
    for n in graph.nodes[:max_rows]:
        ps = [graph.params[v] for v in n.inputs if v in graph.params]
        op = n.op if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op}"
        shp = shapes.get(n.outputs[0]) if n.outputs else None
        rows.append((n.name, op, "" if shp is None else str(tuple(shp)),
                     f"{sum(int(p.size) for p in ps):,}", _fmt_bytes(sum(int(p.nbytes) for p in ps))))
    hdr = ("node", "op", "output shape", "params", "bytes")
    widths = [max(len(r[i]) for r in rows + [hdr]) for i in range(5)]

    def line(r):
        return "  ".join(r[i].ljust(widths[i]) if i < 3 else r[i].rjust(widths[i]) for i in range(5)).rstrip()

    out = [line(hdr), "-" * (sum(widths) + 8)] + [line(r) for r in rows]
    if len(graph.nodes) > max_rows:
        out.append(f"... {len(graph.nodes) - max_rows} more nodes")
    out.append("-" * (sum(widths) + 8))
    ops = ", ".join(f"{k} {v}" for k, v in graph.op_counts().items())
    out.append(f"total: {len(graph.nodes)} nodes, {graph.num_parameters():,} parameters, "
               f"{_fmt_bytes(graph.nbytes())}; inputs {[(i['name'], i['shape']) for i in graph.inputs]}")
    out.append(f"ops: {ops}")
    return "\n".join(out)
