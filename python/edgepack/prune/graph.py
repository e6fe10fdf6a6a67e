"""Pruning of imported graphs (:class:`edgepack.nn.Graph`): structured channel removal across
residuals, concatenations, depthwise convolutions, SE blocks and Flatten -> Gemm
(:mod:`edgepack.graph.passes.channels`), and unstructured / 2:4 pruning of the graph's
Conv/Gemm/MatMul weights onto the sparse kernels (the same :class:`~edgepack.nn.sparse.SparseLinear`
and :class:`~edgepack.nn.sparse.SparseConv2d` layers as for layer models, in ``edgepack.Layer``
nodes).  :func:`edgepack.prune` and :func:`edgepack.sensitivity` dispatch graphs here.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..graph.ir import Graph
from ..graph.passes.channels import (
    IMPORTANCES, PruneReport, _file_bytes, _plan, _skip_groups, analyze_channels, graph_flops, prune_channels,
)
from ..nn.sparse import DENSITY_THRESHOLD, MEASURE_ABOVE, SparseConv2d, SparseLinear, _measure_faster
from .masks import magnitude_masks, nm_mask
from .schedule import cubic_schedule

__all__ = ["prune_graph", "sensitivity_graph", "weight_masks", "quantize_sparse_graph", "flops"]


# -- fine-tuning ------------------------------------------------------------------------------------

def _fine_tune(teacher: Graph, student: Graph, data, epochs: int, train_kw: dict, masks=None) -> None:
    """Recover ``student`` in place: distil from ``teacher`` on inputs ``X`` (no labels), train on
    ``(X, y)``, or call ``data(student, epochs)``."""
    if data is None or epochs <= 0:
        return
    if callable(data):
        data(student, epochs)
        if masks:
            _apply_masks(student, masks)
        return
    import edgepack

    kw = dict(train_kw)
    if masks:
        kw["masks"] = masks
    if isinstance(data, (tuple, list)):
        x, y = data
        train = edgepack.train if callable(edgepack.train) else edgepack.train.train
        train(student, x, y, epochs=epochs, **kw)
    else:
        distill = edgepack.distill if callable(edgepack.distill) else edgepack.distill.distill
        distill(teacher, student, data, epochs=epochs, **kw)
    if masks:
        _apply_masks(student, masks)


def _apply_masks(graph: Graph, masks: dict) -> None:
    for k, m in masks.items():
        graph.params[k] = np.ascontiguousarray(graph.params[k] * m, dtype=graph.params[k].dtype)
    graph.invalidate()


def _check_fine_tune(fine_tune, schedule):
    if schedule == "gradual" and fine_tune is None:
        raise ValueError("schedule='gradual' needs fine_tune= (inputs X to distil on, (X, y) to train on, or a "
                         "callable fine_tune(graph, epochs)): it fine-tunes between steps")
    if fine_tune is not None and not callable(fine_tune) and not isinstance(fine_tune, (np.ndarray, dict)) and (
            not isinstance(fine_tune, (tuple, list)) or len(fine_tune) != 2):
        raise TypeError("fine_tune must be inputs X (distilled from the original graph), a pair (X, y), or a "
                        f"callable fine_tune(graph, epochs); got {type(fine_tune).__name__}")


# -- unstructured / 2:4 ------------------------------------------------------------------------------

def _param_mask(t, node, mask: np.ndarray, param: np.ndarray) -> np.ndarray:
    """A mask in the layer's layout ([out, in] or [out, in/g, kh, kw]) in the node's weight layout."""
    if node.op == "Conv":
        return mask.reshape(param.shape)
    if node.op == "Gemm":
        return mask if node.attrs.get("transB", 0) else mask.T
    return mask.T     # MatMul: W is [in, out]


def _weight_targets(graph: Graph, skip):
    from ..graph.passes.targets import find_targets

    targets = find_targets(graph)
    if isinstance(skip, str):
        skip = (skip,)
    names = {t.name for t in targets}
    out = []
    for s in skip:
        if not isinstance(s, str):
            raise TypeError(f"skip items must be node names or op types (str) for a graph; got {s!r}")
        if s not in names and s not in ("Conv", "Gemm", "MatMul"):
            raise ValueError(f"skip: no Conv/Gemm/MatMul node named {s!r}; weight nodes are {sorted(names)[:30]}")
    for t in targets:
        if t.name in skip or t.op in skip:
            continue
        out.append(t)
    return out


def weight_masks(graph: Graph, amount: float, *, structure: str = "unstructured", scope: str = "global",
                 skip=(), criterion: str = "magnitude") -> dict[str, np.ndarray]:
    """Magnitude masks for the graph's Conv/Gemm/MatMul weight parameters.

    Returns ``{parameter name: float32 mask of its shape (1 = kept)}``; 2:4 keeps the 2 largest of
    every 4 consecutive inputs of each output (layers whose input size is not a multiple of 4 are
    left dense, with a warning).
    """
    targets = _weight_targets(graph, skip)
    if not targets:
        raise ValueError("no Conv/Gemm/MatMul node with constant weights to prune (all skipped?)")
    nodes = graph.nodes
    if structure == "2:4":
        masks = {}
        for t in targets:
            w = t.layer.weight
            if w.reshape(w.shape[0], -1).shape[1] % 4:
                warnings.warn(f"prune: node {t.name!r} has {w[0].size} inputs, not a multiple of 4; left dense",
                              stacklevel=3)
                continue
            masks[t.index] = nm_mask(w)
    else:
        masks = magnitude_masks({t.index: t.layer.weight for t in targets}, amount, scope, criterion)
    out = {}
    for t in targets:
        if t.index not in masks:
            continue
        n = nodes[t.index]
        p = graph.params[n.inputs[1]]
        out[n.inputs[1]] = _param_mask(t, n, np.asarray(masks[t.index]), p).astype(np.float32)
    return out


def _to_sparse_layers(graph: Graph, mode: str, threshold: float = DENSITY_THRESHOLD) -> Graph:
    """Replace pruned weight nodes by ``edgepack.Layer`` nodes running SparseLinear/SparseConv2d
    where the density rule (or timing, ``mode="measure"``) says so; see :func:`edgepack.nn.sparse.sparsify`."""
    from ..graph.passes.quantize import apply_layers
    from ..graph.passes.targets import find_targets

    if mode == "never":
        return graph
    targets = find_targets(graph)
    layers = {}
    for t in targets:
        lay = t.layer
        is_conv = t.op == "Conv"
        if is_conv and lay.groups != 1:
            continue
        w = lay.weight.reshape(lay.weight.shape[0], -1)
        density = np.count_nonzero(w) / w.size
        if density == 1.0 and mode != "always":
            continue
        is24 = w.shape[1] % 4 == 0 and not np.any(np.count_nonzero(w.reshape(w.shape[0], -1, 4), axis=-1) > 2)
        probe = False
        if mode == "auto" and not (density <= threshold or (is24 and density <= 0.5)):
            if density > MEASURE_ABOVE or is_conv:
                continue
            probe = True
        fmt = "2:4" if is24 and density > threshold else "auto"
        if is_conv:
            sl = SparseConv2d.from_conv(lay, format=fmt, activation=t.activation,
                                        run="sparse" if mode == "always" else "dense")
        else:
            sl = SparseLinear.from_weights(w, lay.bias, format=fmt, activation=t.activation)
            if (mode == "measure" or probe) and not _measure_faster(lay, SparseLinear.from_weights(w, lay.bias,
                                                                                                 format=fmt)):
                continue
        layers[t.index] = sl
    return apply_layers(graph, targets, layers) if layers else graph


# -- the graph form of edgepack.prune ---------------------------------------------------------------

def prune_graph(graph: Graph, amount, *, structure: str = "channels", importance: str = "l1",
                scope: str = "global", skip=(), round_to=None, example=None, target: str = "channels",
                schedule: str | None = None, steps: int = 5, fine_tune=None, epochs: int = 2,
                final_epochs: int | None = None, lr: float = 1e-3, batch_size: int = 32, optimizer: str = "adam",
                seed: int | None = 0, progress: bool = False, criterion: str = "magnitude",
                sparse_kernels: str = "auto", train_kwargs: dict | None = None, labels=None) -> Graph:
    """The graph form of :func:`edgepack.prune` (see there); returns a new graph with ``.report``."""
    if structure not in ("channels", "unstructured", "2:4"):
        raise ValueError(f"structure must be 'channels', 'unstructured' or '2:4' for a graph; got {structure!r}")
    if importance not in IMPORTANCES:
        raise ValueError(f"importance must be one of {IMPORTANCES}; got {importance!r}")
    if schedule not in (None, "gradual"):
        raise ValueError(f"schedule must be None or 'gradual'; got {schedule!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer; got {steps!r}")
    if sparse_kernels not in ("auto", "measure", "always", "never"):
        raise ValueError(f"sparse_kernels must be 'auto', 'measure', 'always' or 'never'; got {sparse_kernels!r}")
    _check_fine_tune(fine_tune, schedule)
    final_epochs = epochs if final_epochs is None else final_epochs
    train_kw = {"lr": lr, "batch_size": batch_size, "optimizer": optimizer, "seed": seed, "progress": progress,
                **(train_kwargs or {})}
    if structure == "channels":
        return _prune_channels(graph, amount, importance, scope, skip, round_to, example, target, schedule, steps,
                               fine_tune, epochs, final_epochs, train_kw, labels)
    if structure == "2:4":
        if amount is None:
            amount = 0.5
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or abs(float(amount) - 0.5) > 1e-9:
            raise ValueError(f"amount must be 0.5 for structure '2:4'; got {amount!r}")
    if isinstance(amount, bool) or not isinstance(amount, (int, float, np.floating)) or not 0.0 <= amount < 1.0:
        raise ValueError(f"amount must be a number in [0, 1); got {amount!r}")
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer'; got {scope!r}")
    return _prune_weights(graph, float(amount), structure, scope, skip, criterion, schedule, steps, fine_tune,
                          epochs, final_epochs, train_kw, sparse_kernels, example)


def _prune_weights(graph, amount, structure, scope, skip, criterion, schedule, steps, fine_tune, epochs,
                   final_epochs, train_kw, sparse_kernels, example=None):
    work = graph.copy(params={k: np.array(v, copy=True) for k, v in graph.params.items()})
    fractions = cubic_schedule(amount, steps) if schedule == "gradual" and structure != "2:4" else [amount]
    masks = {}
    for step, s in enumerate(fractions):
        masks = weight_masks(work, s, structure=structure, scope=scope, skip=skip, criterion=criterion)
        _apply_masks(work, masks)
        last = step == len(fractions) - 1
        _fine_tune(graph, work, fine_tune, final_epochs if last else epochs, train_kw, masks)
    out = _to_sparse_layers(work, sparse_kernels)
    owner = {n.inputs[1]: (n.name or n.outputs[0]) for n in work.nodes if len(n.inputs) > 1}
    kinds = {n.name: n.attrs["class"] for n in out.nodes if n.op == "Layer"}
    rows = []
    for k, m in masks.items():
        name = owner.get(k, k)
        rows.append({"name": name, "members": [k], "before": int(m.size),
                     "after": int(np.count_nonzero(work.params[k])),
                     "status": f"runs {kinds[name]}" if name in kinds else "dense, zeros kept"})
    nz = sum(r["after"] for r in rows)
    tot = sum(r["before"] for r in rows)
    f = graph_flops(graph, example)
    report = PruneReport(groups=rows, params=(graph.num_parameters(), graph.num_parameters() - (tot - nz)),
                         flops=(f["total"], f["total"]), conv_flops=(f["conv"], f["conv"]),
                         bytes=(_file_bytes(graph), _file_bytes(out)),
                         settings={"structure": structure, "importance": "magnitude", "scope": scope,
                                   "amount": amount, "density": nz / max(tot, 1),
                                   "sparse_layers": sum(1 for n in out.nodes if n.op == "Layer")})
    object.__setattr__(out, "report", report)
    return out


def quantize_sparse_graph(graph: Graph) -> Graph:
    """A new graph whose float32 SparseLinear/SparseConv2d ``edgepack.Layer`` nodes run int8 values
    (per-row scales; :meth:`~edgepack.nn.sparse.SparseLinear.to_int8`), as
    :func:`edgepack.prune.quantize_sparse` does for layer models."""
    from ..graph.ops.layer import build_layer, layer_node

    params = dict(graph.params)
    nodes = []
    changed = False
    for n in graph.nodes:
        if n.op == "Layer" and n.domain == "edgepack" and n.attrs.get("class") in ("SparseLinear", "SparseConv2d"):
            layer = build_layer(n, [params.get(v) for v in n.inputs])
            if layer.dtype == "float32":
                for v in n.inputs[1:]:
                    params.pop(v, None)
                n = layer_node(layer.to_int8(), n.inputs[0], n.outputs[0], n.name, params,
                               conv1d=bool(n.attrs.get("conv1d", 0)))
                changed = True
        nodes.append(n)
    return graph.copy(nodes=nodes, params=params) if changed else graph


def _prune_channels(graph, amount, importance, scope, skip, round_to, example, target, schedule, steps, fine_tune,
                    epochs, final_epochs, train_kw, labels):
    data = None
    if importance == "taylor":
        data = _inputs_of(fine_tune) if fine_tune is not None and not callable(fine_tune) else example
        if data is None:
            raise ValueError("importance='taylor' needs data: pass example=X (a batch to compute gradients on) "
                             "or fine_tune=")
        if labels is None and isinstance(fine_tune, (tuple, list)):
            labels = fine_tune[1]
    if example is None and fine_tune is not None and not callable(fine_tune):
        example = _inputs_of(fine_tune)
    if schedule != "gradual":
        out = prune_channels(graph, amount, importance=importance, scope=scope, skip=skip, round_to=round_to,
                             example=example, data=data, target=target, labels=labels)
        report = out.report
        _fine_tune(graph, out, fine_tune, final_epochs, train_kw)
        object.__setattr__(out, "report", report)
        return out
    fractions = cubic_schedule(amount, steps) if not isinstance(amount, dict) else None
    cur = graph
    first_report = None
    done = 0.0
    done_g = {k: 0.0 for k in amount} if isinstance(amount, dict) else None
    for step in range(steps):
        # each step removes a fraction of what is left, so the total follows the schedule
        if fractions is not None:
            s = fractions[step]
            step_amount = (s - done) / (1.0 - done) if done < 1.0 else 0.0
            done = s
        else:
            step_amount = {}
            for k, v in amount.items():
                s = cubic_schedule(v, steps)[step]
                step_amount[k] = (s - done_g[k]) / (1.0 - done_g[k]) if done_g[k] < 1.0 else 0.0
                done_g[k] = s
        cur = prune_channels(cur, step_amount, importance=importance, scope=scope, skip=skip, round_to=round_to,
                             example=example, data=data, target=target, labels=labels)
        if first_report is None:
            first_report = cur.report
        last = step == steps - 1
        _fine_tune(graph, cur, fine_tune, final_epochs if last else epochs, train_kw)
    report = _merge_reports(first_report, cur.report, graph, cur, example)
    object.__setattr__(cur, "report", report)
    return cur


def _merge_reports(first, last, g0, g1, example):
    """The gradual schedule's report: widths and sizes from the original to the final graph."""
    import dataclasses

    before = {r["name"]: r["before"] for r in first.groups}
    rows = []
    for r in last.groups:
        r = dict(r)
        r["before"] = before.get(r["name"], r["before"])
        if r["after"] < r["before"] and r["status"] == "kept":
            r["status"] = "pruned"
        rows.append(r)
    return dataclasses.replace(last, groups=rows, params=(first.params[0], last.params[1]),
                               flops=(first.flops[0], last.flops[1]), conv_flops=(first.conv_flops[0],
                                                                                   last.conv_flops[1]),
                               bytes=(first.bytes[0], last.bytes[1]),
                               settings=dict(last.settings, schedule="gradual"))


def _inputs_of(data):
    if isinstance(data, (tuple, list)):
        return data[0]
    return data


# -- sensitivity ---------------------------------------------------------------------------------------

def _agreement(out, ref) -> float:
    """Share of positions where the argmax over the last axis matches (class, or per time step)."""
    return float(np.mean(np.asarray(out).argmax(-1) == np.asarray(ref).argmax(-1)))


def sensitivity_graph(graph: Graph, X, y=None, amounts=(0.25, 0.5, 0.75, 0.9), *, structure: str = "channels",
                      importance: str = "l1", skip=(), batch_size: int = 64, metric=None, example=None,
                      plot: str | None = None):
    """The graph form of :func:`edgepack.sensitivity`: the score drop (in points) when each channel
    group alone loses each fraction of its channels (no fine-tuning).

    The score is ``metric(outputs, y)`` when given, else the accuracy (argmax of the last axis
    against integer labels ``y``), else without labels the agreement with the original graph's
    argmax (per row, or per time step of a sequence output).  One analysis is shared by every
    trial, so each costs a rewrite and an evaluation.
    """
    from .prune import SensitivityResult

    if structure != "channels":
        raise ValueError(f"sensitivity of a graph measures channel groups: structure must be 'channels'; "
                         f"got {structure!r}")
    if importance == "taylor":
        raise ValueError("sensitivity ranks channels without gradients: importance must be 'l1', 'l2' or 'bn_scale'")
    amounts = [float(a) for a in amounts]
    if not amounts or any(not 0.0 <= a < 1.0 for a in amounts):
        raise ValueError(f"amounts must be numbers in [0, 1); got {amounts!r}")
    an = analyze_channels(graph, example if example is not None else X)
    skipped = _skip_groups(skip, an.groups, graph)

    def outputs(g):
        o = g.predict(X, batch_size=batch_size)
        return o[0] if isinstance(o, tuple) else o

    ref = outputs(graph)
    if metric is not None:
        if not callable(metric):
            raise TypeError(f"metric must be callable(outputs, y) -> float; got {type(metric).__name__}")
        score = (lambda o: float(metric(o, y))) if y is not None else (lambda o: float(metric(o, ref)))
    elif y is not None:
        yy = np.asarray(y)
        score = lambda o: float(np.mean(np.asarray(o).argmax(-1) == yy))  # noqa: E731
    else:
        score = lambda o: _agreement(o, ref)  # noqa: E731
    base = score(ref)
    drops = {}
    for k, g in enumerate(an.groups):
        if not g.prunable or k in skipped:
            continue
        row = []
        for a in amounts:
            removed, _ = _plan(an, {g.name: a}, importance, "layer", set(), None, "channels", None)
            row.append(100.0 * (base - score(outputs(an.rewrite(removed)))))
        drops[g.name] = row
    if not drops:
        raise ValueError("no prunable channel group to analyse")
    res = SensitivityResult(base, amounts, drops, "channels")
    if plot is not None:
        res.plot(plot)
    return res


def flops(graph: Graph, example=None) -> dict:
    """Multiply-adds per input row of the graph's weight layers (see
    :func:`edgepack.graph.passes.channels.graph_flops`)."""
    return graph_flops(graph, example)
