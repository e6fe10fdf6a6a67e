"""Post-training int8 quantization of a :class:`~edgepack.graph.ir.Graph`.

The pipeline, one small step each:

1. fold (constants, BatchNorm into the Conv/Gemm before it: done at import, repeated here);
2. find targets (:mod:`.targets`): Conv (1-D and 2-D), Gemm and MatMul with constant weights, with
   the bias Add and the activation fused into them;
3. calibrate: run the float graph on the calibration data once, observing every target's input
   (static activations only);
4. convert: each target becomes an ``edgepack.Layer`` node running a
   :class:`~edgepack.nn.quantized.QLinear` or :class:`~edgepack.nn.quantized.QConv2d` (per-channel
   int8 weights; dynamic per-row or calibrated static uint8 activations; the activation in the
   int8 epilogue) — the same layers and kernels as a hand-built model;
5. report: per-node SQNR (the node alone on the float input) and cumulative SQNR, the
   ``keep_float_below_db`` rule, and the accuracy-aware mode that keeps the fewest nodes float
   needed to hold a metric within ``max_drop``.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from ...nn.quantized import QConv2d, QLinear
from ...ptq.observers import make_observer, sqnr_db
from ...ptq.report import LayerReport, QuantizationReport
from ..ir import Graph
from ..ops.layer import layer_node
from .targets import Target, find_targets

__all__ = ["quantize_graph", "feed_batches", "apply_layers"]

_CHUNK = 64        # rows per calibration forward pass of an array calibration set
_REPORT_ROWS = 256


def feed_batches(graph: Graph, data, chunk: int = _CHUNK) -> Iterable[dict]:
    """Calibration/report data as feed dicts: an array (one-input graph; split into chunks of
    rows), a dict of arrays (split the same way), or an iterable of arrays or dicts."""
    names = graph.input_names
    if data is None:
        return
    if isinstance(data, np.ndarray) or isinstance(data, dict):
        d = {names[0]: data} if isinstance(data, np.ndarray) else dict(data)
        if isinstance(data, np.ndarray) and len(names) != 1:
            raise ValueError(f"the graph has inputs {names}: calibration must be dicts of arrays")
        n = {np.shape(v)[0] for v in d.values() if np.ndim(v)}
        if len(n) != 1 or 0 in n:
            raise ValueError(f"calibration arrays must share a non-empty batch axis; got {sorted(n)}")
        rows = n.pop()
        for s in range(0, rows, chunk):
            yield {k: np.asarray(v)[s:s + chunk] for k, v in d.items()}
        return
    if isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise TypeError(f"calibration must be an array, a dict of arrays or an iterable of them; "
                        f"got {type(data).__name__}")
    for i, b in enumerate(data):
        if isinstance(b, dict):
            yield b
        elif len(names) == 1:
            yield {names[0]: np.asarray(b)}
        else:
            raise TypeError(f"calibration batch {i}: the graph has inputs {names}; give dicts")


def _first(graph, data):
    for f in feed_batches(graph, data, _REPORT_ROWS):
        return f
    return None


def _apply(layer, x, conv1d: bool):
    if conv1d:
        y = layer(x[:, :, None, :])
        return y.reshape(y.shape[0], y.shape[1], y.shape[3])
    return layer(x)


def apply_layers(graph: Graph, targets: list[Target], layers: dict[int, object]) -> Graph:
    """A new graph where each target in ``layers`` (by target node index) is replaced by one
    ``edgepack.Layer`` node running that layer, its fused nodes removed."""
    params = dict(graph.params)
    drop = set()
    repl = {}
    for t in targets:
        if t.index in layers:
            drop.update(t.fused)
            repl[t.index] = layer_node(layers[t.index], t.x, t.out, t.name or f"layer{t.index}", params,
                                       conv1d=t.conv1d)
    nodes = [repl.get(i, n) for i, n in enumerate(graph.nodes) if i not in drop]
    from .cleanup import eliminate_dead

    return eliminate_dead(graph.copy(nodes=nodes, params=params))


def _skip_set(skip, targets: list[Target]) -> set[int]:
    if isinstance(skip, str):
        skip = (skip,)
    names = {t.name: t for t in targets}
    ops = {t.op for t in targets}
    out = set()
    for s in skip:
        if not isinstance(s, str):
            raise TypeError(f"skip items must be node names or op types (str) for a graph; got {s!r}")
        if s in names:
            out.add(names[s].index)
        elif s in ops or s in ("Conv", "Gemm", "MatMul"):
            out.update(t.index for t in targets if t.op == s)
        else:
            raise ValueError(f"skip: no Conv/Gemm/MatMul node named {s!r}; "
                             f"weight nodes are {sorted(names)[:30]}")
    return out


def quantize_graph(graph: Graph, calibration=None, *, weights: str = "per_channel",
                   activations: str = "dynamic", method: str = "minmax", percentile: float = 99.99,
                   skip=(), keep_float_below_db: float | None = None, report_batch=None,
                   accuracy=None, max_drop: float = 0.01) -> Graph:
    """The graph form of :func:`edgepack.quantize` (see there for the parameters).

    ``accuracy`` is ``(metric, X, y)`` — ``metric(outputs, y) -> float``, higher is better, with
    ``outputs`` the graph's (first) output on ``X`` — or a callable ``score(graph) -> float``.
    With it, the nodes whose own SQNR is lowest are put back to float one by one until the score
    is within ``max_drop`` of the float graph's; ``report`` says which were kept and why.
    """
    from . import simplify

    g = simplify(graph)
    targets = find_targets(g)
    skipped = _skip_set(skip, targets)
    active = [t for t in targets if t.index not in skipped]
    if activations == "static" and calibration is None:
        raise ValueError("activations='static' needs calibration data (an array, a dict of arrays or an "
                         "iterable of them); use activations='dynamic' to quantize without it")

    # -- calibrate ----------------------------------------------------------------------------------
    observers = {}
    if activations == "static":
        observers = {t.index: make_observer(method, percentile) for t in active}
        xs = sorted({t.x for t in active})
        by_x: dict[str, list[int]] = {}
        for t in active:
            by_x.setdefault(t.x, []).append(t.index)
        seen = 0
        for feeds in feed_batches(g, calibration):
            vals = g.run(feeds, outputs=xs)
            for x, idxs in by_x.items():
                for i in idxs:
                    observers[i].update(vals[x])
            seen += 1
        if seen == 0:
            raise ValueError("calibration is empty: static activations need at least one batch")

    # -- convert ------------------------------------------------------------------------------------
    qlayers = {}
    for t in active:
        kw = {"weights": weights, "activations": activations, "activation": t.activation}
        if activations == "static":
            s, z = observers[t.index].qparams()
            kw.update(x_scale=s, x_zero_point=z)
        cls = QLinear if t.op in ("Gemm", "MatMul") else QConv2d
        qlayers[t.index] = cls.from_float(t.layer, **kw)

    # -- per-node SQNR on the report batch ----------------------------------------------------------
    feeds_r = _first(g, report_batch if report_batch is not None else calibration)
    own_sqnr: dict[int, float] = {}
    f_out: dict[str, np.ndarray] = {}
    if feeds_r is not None:
        names = sorted({t.x for t in targets} | {t.out for t in targets} | set(g.outputs))
        f_vals = g.run(feeds_r, outputs=names)
        f_out = f_vals
        for t in active:
            own_sqnr[t.index] = sqnr_db(f_vals[t.out], _apply(qlayers[t.index], f_vals[t.x], t.conv1d))
    if keep_float_below_db is not None and feeds_r is None:
        raise ValueError("keep_float_below_db needs data to measure SQNR: pass calibration= or report_batch=")

    status = {t.index: ("float (skip)" if t.index in skipped else "int8") for t in targets}
    if keep_float_below_db is not None:
        for i, s in own_sqnr.items():
            if s < keep_float_below_db:
                status[i] = "float (sqnr)"

    def build(st):
        return apply_layers(g, targets, {i: qlayers[i] for i, s in st.items() if s == "int8"})

    qg = build(status)
    notes = {}
    if accuracy is not None:
        score = _scorer(accuracy)
        base = score(g)
        cur = score(qg)
        notes["float_score"] = base
        notes["int8_score"] = cur
        order = sorted((i for i, s in status.items() if s == "int8"), key=lambda i: own_sqnr.get(i, 0.0))
        kept = []
        for i in order:
            if base - cur <= max_drop:
                break
            status[i] = "float (accuracy)"
            qg = build(status)
            cur = score(qg)
            kept.append((i, cur))
        notes["final_score"] = cur
        notes["kept_float"] = [(g.nodes[i].name, own_sqnr.get(i), s) for i, s in kept]
        if base - cur > max_drop:
            notes["warning"] = (f"even with {len(kept)} nodes float the score is {cur:.4f}, "
                                f"{base - cur:.4f} below float ({base:.4f}); max_drop {max_drop}")

    # -- report ---------------------------------------------------------------------------------------
    cum: dict[int, float] = {}
    out_sqnr = None
    if feeds_r is not None:
        outs = sorted({t.out for t in targets} | set(qg.outputs))
        q_vals = qg.run(feeds_r, outputs=outs)
        for t in targets:
            cum[t.index] = sqnr_db(f_out[t.out], q_vals[t.out])
        o = g.outputs[0]
        if np.asarray(f_out[o]).dtype.kind == "f":
            out_sqnr = sqnr_db(f_out[o], q_vals[o])
    rows = []
    for t in targets:
        st = status[t.index]
        ql = qlayers.get(t.index)
        before = t.layer.nbytes()
        rows.append(LayerReport(t.name, t.op, st, own_sqnr.get(t.index), cum.get(t.index), before,
                                ql.nbytes() if st == "int8" and ql is not None else before,
                                ql.kernel_path() if st == "int8" and ql is not None else "float graph op",
                                getattr(ql, "x_scale", None), getattr(ql, "x_zero_point", None)))
    report = QuantizationReport(
        layers=rows,
        settings={"weights": weights, "activations": activations, "method": method, "percentile": percentile,
                  "keep_float_below_db": keep_float_below_db, "skip": list((skip,) if isinstance(skip, str) else skip),
                  "accuracy": notes or None, "max_drop": max_drop if accuracy is not None else None},
        output_sqnr_db=out_sqnr,
        batch_rows=0 if feeds_r is None else int(next(iter(feeds_r.values())).shape[0]),
    )
    object.__setattr__(qg, "report", report)
    return qg


def _scorer(accuracy) -> Callable[[Graph], float]:
    if callable(accuracy):
        return lambda gr: float(accuracy(gr))
    try:
        metric, x, y = accuracy
    except (TypeError, ValueError):
        raise TypeError("accuracy must be (metric, X, y) or a callable(graph) -> score") from None
    if not callable(metric):
        raise TypeError(f"accuracy[0] must be a callable metric(outputs, y); got {type(metric).__name__}")

    def score(gr):
        out = gr.predict(x, batch_size=64)
        out = out[0] if isinstance(out, tuple) else out
        return float(metric(out, y))

    return score
