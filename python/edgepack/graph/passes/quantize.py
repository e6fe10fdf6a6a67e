"""Post-training int8 quantization of a :class:`~edgepack.graph.ir.Graph`: the one implementation
behind :func:`edgepack.quantize`, for imported graphs and (lowered with
:func:`edgepack.graph.from_module`) hand-built module trees alike.

The pipeline, one pass module each:

1. fold (:func:`~edgepack.graph.passes.simplify`): constants, BatchNorm into the Conv/Gemm before
   it (done at import, repeated here for lowered module trees);
2. place and fuse (:mod:`.targets`): Conv (1-D and 2-D), Gemm and MatMul with constant weights,
   with the bias Add and the activation fused into them; pruned layers in ``edgepack.Layer`` nodes;
3. calibrate (:mod:`.calibrate`): run the float graph on the calibration data once, observing
   every target's input (static activations only);
4. convert (:mod:`.convert`): each target becomes an ``edgepack.Layer`` node running a
   :class:`~edgepack.nn.quantized.QLinear` or :class:`~edgepack.nn.quantized.QConv2d` (per-channel
   int8 weights; dynamic per-row or calibrated static uint8 activations; the activation in the
   int8 epilogue), a pruned layer its int8 sparse form: the same layers and kernels as a
   hand-built model;
5. keep float (:mod:`.keep_float`): the ``keep_float_below_db`` rule, the accuracy-aware mode;
6. report (:mod:`.report`): per-node SQNR (the node alone on the float input), cumulative SQNR.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ...ptq.report import QuantizationReport
from ..ir import Graph
from .calibrate import calibrate, feed_batches, peek, report_feeds
from .convert import apply_layers, int8_layers, is_sparse
from .keep_float import accuracy_search, below_db, scorer
from .report import cumulative_sqnr, float_values, layer_rows, own_sqnr
from .targets import Target, find_sparse_targets, find_targets

__all__ = ["quantize_graph", "prepare", "run_quantize", "Quantized", "feed_batches", "apply_layers"]

_CHUNK = 64        # rows per calibration forward pass of an array calibration set
_REPORT_ROWS = 256


def prepare(graph: Graph) -> tuple[Graph, list[Target]]:
    """(folded graph, targets in node order): steps 1 and 2 of the pipeline."""
    from . import simplify

    g = simplify(graph)
    targets = sorted(find_targets(g) + find_sparse_targets(g), key=lambda t: t.index)
    return g, targets


@dataclasses.dataclass
class Quantized:
    """What :func:`run_quantize` made: the graph, the report rows and measurements."""

    graph: Graph
    rows: list
    layers: dict
    notes: dict
    output_sqnr_db: float | None
    batch_rows: int


def run_quantize(g: Graph, targets: list[Target], skipped: set[int], *, weights: str, activations: str,
                 method: str, percentile: float, keep_float_below_db: float | None, calibration,
                 report_batch, accuracy=None, max_drop: float = 0.01, chunk: int = _CHUNK,
                 report_rows: int = _REPORT_ROWS, wrap=None, int8_depthwise: bool = False,
                 small: frozenset = frozenset()) -> Quantized:
    """Steps 3 to 6 on a prepared graph (see :func:`prepare`).

    ``skipped`` holds target indices kept float; ``chunk`` is the rows per calibration pass of
    array data and ``report_rows`` the rows of an array calibration set the report measures on;
    ``wrap(graph)`` turns a graph into the model a callable ``accuracy`` scores.  The other
    parameters are :func:`edgepack.quantize`'s.
    """
    if keep_float_below_db is not None and calibration is None and report_batch is None:
        raise ValueError("keep_float_below_db needs data to measure SQNR: pass calibration= or report_batch=")
    active = [t for t in targets if t.index not in skipped]

    # -- calibrate (static activations; pruned layers always run dynamic) --------------------------
    qparams, first = {}, None
    if activations == "static":
        qparams, first = calibrate(g, [t for t in active if not is_sparse(t) and t.index not in small], calibration,
                                   method=method,
                                   percentile=percentile, chunk=chunk)

    # -- convert ------------------------------------------------------------------------------------
    layers = int8_layers(active, weights=weights, activations=activations, qparams=qparams,
                         int8_depthwise=int8_depthwise, weights_only=small)

    # -- per-node SQNR on the report batch; which stay float ----------------------------------------
    feeds = report_feeds(g, calibration, report_batch, report_rows, first)
    own, f_vals = {}, {}
    if feeds is not None:
        f_vals = float_values(g, feeds, targets)
        own = own_sqnr(f_vals, active, layers)
    status = {t.index: "float (skip)" if t.index in skipped else "int8 weights (small)" if t.index in small
              else "int8 sparse" if is_sparse(t) else "int8" for t in targets}
    below_db(status, own, keep_float_below_db)

    def build(st):
        return apply_layers(g, targets, {i: layers[i] for i, s in st.items() if s.startswith("int8")})

    notes = {}
    if accuracy is not None:
        qg, notes = accuracy_search(g, build, status, own, scorer(accuracy, wrap), max_drop,
                                    {t.index: g.nodes[t.index].name for t in targets})
    else:
        qg = build(status)

    # -- report ---------------------------------------------------------------------------------------
    cum, out_sqnr = {}, None
    if feeds is not None:
        cum, out_sqnr = cumulative_sqnr(qg, feeds, targets, f_vals, g.outputs)
    rows = layer_rows(targets, status, layers, own, cum)
    batch = 0 if feeds is None else int(next(iter(feeds.values())).shape[0])
    return Quantized(qg, rows, layers, notes, out_sqnr, batch)


def small_targets(g: Graph, targets: list[Target], batch, min_macs: int) -> set[int]:
    """Indices of dense targets with fewer than ``min_macs`` multiply-adds per sample on ``batch``
    (an array or dict of arrays with a batch axis; nothing when it is None or min_macs <= 0)."""
    if batch is None or min_macs <= 0:
        return set()
    from ...nn import functional as F

    if isinstance(batch, dict):
        feeds = batch      # several inputs need not share a batch axis (a VAD's frames and state)
    else:
        feeds = next(iter(feed_batches(g, batch, 1)), None)
    if feeds is None:
        return set()
    dense = [t for t in targets if t.op == "Conv"]     # small Gemm/MatMul stay int8: linear_int8 is cheap at M = 1
    try:
        shapes = {k: np.shape(v) for k, v in g.run(feeds, outputs=sorted({t.x for t in dense})).items()}
    except (ValueError, TypeError):
        return set()
    out = set()
    for t in dense:
        shp = shapes.get(t.x)
        if not shp:
            continue
        lay = t.layer
        if t.op == "Conv":
            h, w = (1, shp[-1]) if t.conv1d else shp[-2:]
            try:
                oh, ow = F.conv_output_hw(h, w, lay.kernel_size, lay.stride, lay.padding, lay.dilation, "conv")
            except ValueError:
                continue
            macs = oh * ow * lay.out_channels * (lay.in_channels // lay.groups) * lay.kernel_size[0] * lay.kernel_size[1]
        else:
            macs = int(np.prod(shp[1:-1], dtype=np.int64)) * lay.in_features * lay.out_features
        if macs < min_macs:
            out.add(t.index)
    return out


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
                   accuracy=None, max_drop: float = 0.01, min_macs: int = 32768) -> Graph:
    """The graph form of :func:`edgepack.quantize` (see there for the parameters).

    Conv nodes doing fewer than ``min_macs`` multiply-adds per sample (measured on the first
    calibration batch: squeeze-excitation 1x1 convs on a 1x1 map) keep int8 weights but compute
    in float ("int8 weights (small)" in the report): there int8 arithmetic costs more than it
    saves.

    ``skip`` takes node names or op types ("Conv", "Gemm", "MatMul", "SparseLinear", ...).
    Depthwise convolutions keep int8 weights and compute in float, as for module trees: on the
    machines measured so far the float depthwise kernel is faster than the int8 one
    (``QConv2d(int8_depthwise=True)`` runs them int8).
    ``accuracy`` is ``(metric, X, y)`` — ``metric(outputs, y) -> float``, higher is better, with
    ``outputs`` the graph's (first) output on ``X`` — or a callable ``score(graph) -> float``.
    With it, when the all-int8 graph loses more than ``max_drop``, each int8 node's sensitivity is
    measured (the score of the int8 graph with only that node float) and the most sensitive nodes
    are put back to float one by one until the score is within ``max_drop`` of the float graph's;
    ``report.settings["accuracy"]`` says which were kept, their measured gain and the scores.

    Returns
    -------
    Graph
        A new graph (the input is untouched) whose converted nodes are ``edgepack.Layer`` nodes;
        ``.report`` is the :class:`~edgepack.ptq.report.QuantizationReport`.
    """
    g, targets = prepare(graph)
    skipped = _skip_set(skip, targets)
    if activations == "static" and calibration is None:
        raise ValueError("activations='static' needs calibration data (an array, a dict of arrays or an "
                         "iterable of them); use activations='dynamic' to quantize without it")
    first, calibration = peek(calibration)
    small = frozenset(small_targets(g, targets, report_batch if report_batch is not None else first,
                                    min_macs)) - skipped
    r = run_quantize(g, targets, skipped, weights=weights, activations=activations, method=method,
                     percentile=percentile, keep_float_below_db=keep_float_below_db, calibration=calibration,
                     report_batch=report_batch, accuracy=accuracy, max_drop=max_drop,
                     int8_depthwise=False, small=small)
    report = QuantizationReport(
        layers=r.rows,
        settings={"weights": weights, "activations": activations, "method": method, "percentile": percentile,
                  "keep_float_below_db": keep_float_below_db, "skip": list((skip,) if isinstance(skip, str) else skip),
                  "accuracy": r.notes or None, "max_drop": max_drop if accuracy is not None else None},
        output_sqnr_db=r.output_sqnr_db,
        batch_rows=r.batch_rows,
    )
    object.__setattr__(r.graph, "report", report)
    return r.graph
