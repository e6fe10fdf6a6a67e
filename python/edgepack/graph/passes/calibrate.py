"""Calibration: turning calibration data into feeds, and one float pass that observes the input
of every layer to be quantized with static activations.

Shared by every model :func:`edgepack.quantize` takes: a module tree is lowered to a graph first
(:func:`edgepack.graph.from_module`), so the data handling and the observers are the same code.
"""

from __future__ import annotations

import itertools
from typing import Iterable, Iterator

import numpy as np

from ...ptq.observers import make_observer
from ..ir import Graph
from .targets import Target

__all__ = ["feed_batches", "peek", "report_feeds", "calibrate"]


def _check_array(a: np.ndarray, what: str) -> np.ndarray:
    if a.dtype.kind not in "fiu" or a.ndim == 0:
        raise TypeError(f"{what} must be a numeric array with a batch axis; got {a.dtype} {a.shape}")
    return a


def _as_feed(graph: Graph, b, i: int) -> dict:
    """One element of an iterable calibration set as a feed dict."""
    names = graph.input_names
    if isinstance(b, dict):
        return {k: np.asarray(v) for k, v in b.items()}
    if len(names) != 1:
        raise TypeError(f"calibration batch {i}: the graph has inputs {names}; give dicts of arrays")
    return {names[0]: _check_array(np.asarray(b), f"calibration batch {i}")}


def feed_batches(graph: Graph, data, chunk: int = 64) -> Iterator[dict]:
    """Calibration data as feed dicts ``{input name: array}``.

    Parameters
    ----------
    graph : Graph
        The graph the feeds are for (its input names).
    data : ndarray, dict of ndarrays, or an iterable of either, or None
        An array (one-input graph) or a dict of arrays sharing a batch axis is split into chunks of
        ``chunk`` rows, so memory stays bounded; an iterable is taken batch by batch.  None gives
        nothing.
    chunk : int
        Rows per feed for array data.

    Raises
    ------
    TypeError
        ``data`` or one of its batches is not numeric / not an array or dict.
    ValueError
        An array without rows, or dict arrays of different batch sizes.
    """
    names = graph.input_names
    if data is None:
        return
    if isinstance(data, (np.ndarray, dict)):
        if isinstance(data, np.ndarray):
            if len(names) != 1:
                raise ValueError(f"the graph has inputs {names}: calibration must be dicts of arrays")
            if data.ndim == 0 or data.shape[0] == 0:
                raise ValueError(f"calibration must have at least one row; got shape {data.shape}")
            d = {names[0]: _check_array(data, "calibration")}
        else:
            d = {k: np.asarray(v) for k, v in data.items()}
        rows = {np.shape(v)[0] for v in d.values() if np.ndim(v)}
        if len(rows) != 1 or 0 in rows:
            raise ValueError(f"calibration arrays must share a non-empty batch axis; got sizes {sorted(rows)}")
        n = rows.pop()
        for s in range(0, n, chunk):
            yield {k: v[s:s + chunk] for k, v in d.items()}
        return
    if isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise TypeError(f"calibration must be an array, a dict of arrays or an iterable of them; "
                        f"got {type(data).__name__}")
    for i, b in enumerate(data):
        yield _as_feed(graph, b, i)


def peek(data) -> tuple[object, object]:
    """(first batch or None, data): the first batch of an iterable calibration set without losing
    it (an iterator is re-chained), e.g. to learn the input's rank before lowering a module."""
    if data is None:
        return None, None
    if isinstance(data, (np.ndarray, dict)):
        return data, data
    if isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        return None, data          # feed_batches raises the TypeError
    it = iter(data)
    first = next(it, None)
    if first is None:
        return None, ()
    return first, itertools.chain([first], it)


def report_feeds(graph: Graph, calibration, report_batch, rows: int, first: dict | None = None) -> dict | None:
    """The feed the report measures SQNR on: ``report_batch`` (whole), else the first ``rows``
    rows of an array calibration set, else ``first`` (the first calibration batch, as seen while
    calibrating), else the first batch of an iterable; None without data."""
    if report_batch is not None:
        rb = report_batch if isinstance(report_batch, dict) else np.asarray(report_batch)
        return next(feed_batches(graph, rb, 1 << 62), None)
    if calibration is None:
        return None
    if isinstance(calibration, (np.ndarray, dict)):
        return next(feed_batches(graph, calibration, rows), None)
    if first is not None:
        return first
    return next(feed_batches(graph, calibration, rows), None)


def calibrate(graph: Graph, targets: Iterable[Target], data, *, method: str, percentile: float,
              chunk: int) -> tuple[dict[int, tuple[float, int]], dict | None]:
    """Run the float graph over the calibration data once, observing every target's input.

    Parameters
    ----------
    graph : Graph
        The float graph (after folding; the targets' value names refer to it).
    targets : iterable of Target
        Layers that get static activations; several may read one value (observed once per layer,
        each with its own observer, so their ranges stay independent of each other's order).
    data : see :func:`feed_batches`
    method, percentile : see :func:`edgepack.ptq.observers.make_observer`
    chunk : int
        Rows per forward pass of array data.

    Returns
    -------
    (dict, dict or None)
        ``{target index: (x_scale, x_zero_point)}`` (uint8 affine parameters) and the first feed
        seen (the report batch for an iterable calibration set).

    Raises
    ------
    ValueError
        The calibration data has no batch.
    """
    targets = list(targets)
    observers = {t.index: make_observer(method, percentile) for t in targets}
    by_x: dict[str, list[int]] = {}
    for t in targets:
        by_x.setdefault(t.x, []).append(t.index)
    first = None
    for feeds in feed_batches(graph, data, chunk):
        if first is None:
            first = feeds
        vals = graph.run(feeds, outputs=sorted(by_x))
        for x, idxs in by_x.items():
            for i in idxs:
                observers[i].update(vals[x])
    if first is None:
        raise ValueError("calibration is empty: static activations need at least one batch")
    return {i: o.qparams() for i, o in observers.items()}, first
