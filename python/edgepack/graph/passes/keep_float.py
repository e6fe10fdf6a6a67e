"""Which converted layers stay float: the ``keep_float_below_db`` rule and the accuracy-aware
search (GRAPHS.md section 7.9, after NNCF's accuracy control)."""

from __future__ import annotations

from typing import Callable

from ..ir import Graph

__all__ = ["below_db", "accuracy_search", "scorer"]


def below_db(status: dict[int, str], own: dict[int, float], threshold: float | None) -> None:
    """Mark (in place) every dense int8 layer whose own SQNR is below ``threshold`` dB as
    "float (sqnr)"; pruned layers ("int8 sparse") are not judged."""
    if threshold is None:
        return
    for i, s in own.items():
        if status.get(i) == "int8" and s < threshold:
            status[i] = "float (sqnr)"


def accuracy_search(float_graph: Graph, build: Callable[[dict], Graph], status: dict[int, str],
                    own: dict[int, float], score: Callable[[Graph], float], max_drop: float,
                    names: dict[int, str]) -> tuple[Graph, dict]:
    """Put the most harmful int8 layers back to float until the score is within ``max_drop``.

    When the all-int8 graph (``build(status)``) loses more than ``max_drop`` against
    ``score(float_graph)``, each int8 layer's sensitivity is measured (the score of the int8 graph
    with only that layer float: the gain it would bring), and layers are put back to float
    ("float (accuracy)", in ``status``, in place) largest gain first, own SQNR breaking ties.

    Returns
    -------
    (Graph, dict)
        The final graph and notes for ``report.settings["accuracy"]``: float_score, int8_score,
        sensitivity ({name: gain}), final_score, kept_float (node, sqnr_db, gain, score_after)
        and a warning when even then the score is not within ``max_drop``.
    """
    qg = build(status)
    base = score(float_graph)
    cur = score(qg)
    notes: dict = {"float_score": base, "int8_score": cur}
    order: list[int] = []
    if base - cur > max_drop:
        gain = {}
        for i in [i for i, s in status.items() if s == "int8"]:
            trial = dict(status)
            trial[i] = "float (accuracy)"
            gain[i] = score(build(trial)) - cur
        order = sorted(gain, key=lambda i: (-gain[i], own.get(i, 0.0)))
        notes["sensitivity"] = {names[i]: gain[i] for i in order}
    kept = []
    for i in order:
        if base - cur <= max_drop:
            break
        status[i] = "float (accuracy)"
        qg = build(status)
        cur = score(qg)
        kept.append((i, cur))
    notes["final_score"] = cur
    notes["kept_float"] = [{"node": names[i], "sqnr_db": own.get(i), "gain": notes["sensitivity"][names[i]],
                            "score_after": s} for i, s in kept]
    if base - cur > max_drop:
        notes["warning"] = (f"even with {len(kept)} nodes float the score is {cur:.4f}, "
                            f"{base - cur:.4f} below float ({base:.4f}); max_drop {max_drop}")
    return qg, notes


def scorer(accuracy, wrap: Callable | None = None) -> Callable[[Graph], float]:
    """``score(graph) -> float`` from ``accuracy``: ``(metric, X, y)`` with ``metric(outputs, y)``
    on the graph's (first) output for ``X``, or a callable ``score(model)``; ``wrap(graph)`` turns
    the graph into the model the callable expects (a module tree for a lowered one)."""
    if callable(accuracy):
        return lambda gr: float(accuracy(gr if wrap is None else wrap(gr)))
    try:
        metric, x, y = accuracy
    except (TypeError, ValueError):
        raise TypeError("accuracy must be (metric, X, y) or a callable(model) -> score; "
                        f"got {type(accuracy).__name__}") from None
    if not callable(metric):
        raise TypeError(f"accuracy[0] must be a callable metric(outputs, y); got {type(metric).__name__}")

    def score(gr):
        out = gr.predict(x, batch_size=64)
        out = out[0] if isinstance(out, tuple) else out
        return float(metric(out, y))

    return score
