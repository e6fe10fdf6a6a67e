"""Gradual pruning schedule (Zhu & Gupta, 2017, "To prune, or not to prune")."""

from __future__ import annotations

__all__ = ["cubic_schedule"]


def cubic_schedule(final: float, steps: int, initial: float = 0.0) -> list[float]:
    """Sparsity after each of ``steps`` pruning steps.

    ``s_t = s_f + (s_i - s_f) * (1 - t / n) ** 3`` for t = 1..n: large steps first, while many
    redundant weights remain, and small ones near the end, so fine-tuning can recover.

    Parameters
    ----------
    final : float
        Target sparsity s_f in [0, 1).
    steps : int
        Number of pruning steps n >= 1 (the last one reaches ``final`` exactly).
    initial : float
        Sparsity s_i before the first step.

    Returns
    -------
    list of float, length ``steps``, non-decreasing, ending at ``final``.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer; got {steps!r}")
    if not 0.0 <= initial <= final < 1.0:
        raise ValueError(f"need 0 <= initial <= final < 1; got initial={initial!r}, final={final!r}")
    return [final + (initial - final) * (1.0 - t / steps) ** 3 for t in range(1, steps + 1)]
