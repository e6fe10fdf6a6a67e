"""Side-by-side report of models: parameters, file size, accuracy and latency."""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np

from ._callable import make_module_callable

__all__ = ["compare", "Comparison", "file_size", "latency", "stored_parameters"]


def stored_parameters(model) -> int:
    """Weights a model stores: each leaf layer's ``num_parameters()`` (a sparse layer counts its
    nonzeros, not its index arrays)."""
    return sum(int(m.num_parameters()) for _, m in model.named_modules() if not m.children())


def file_size(model) -> int:
    """Bytes of ``edgepack.save(model, ...)`` (written to a temporary file and measured)."""
    from .io import save

    fd, path = tempfile.mkstemp(suffix=".edgepack")
    os.close(fd)
    try:
        save(model, path)
        return os.path.getsize(path)
    finally:
        os.unlink(path)


def latency(model, x: np.ndarray, *, min_time: float = 0.2, max_repeats: int = 1000) -> float:
    """Median seconds of ``model(x)`` over repeated calls (after one warm-up call), running for
    about ``min_time`` seconds (at least 5 calls)."""
    model(x)
    ts = []
    start = time.perf_counter()
    while len(ts) < 5 or (time.perf_counter() - start < min_time and len(ts) < max_repeats):
        t0 = time.perf_counter()
        model(x)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def _interleaved_latency(models: list, x: np.ndarray, min_time: float) -> list[float]:
    """Median seconds per call of each model on ``x``, measured in interleaved rounds (every
    round times each model once, in turn), so a load change on a shared machine hits all
    models alike instead of whichever happened to run then."""
    reps = []
    for m in models:  # warm up, and size each model's burst to about 2 ms
        m(x)
        t0 = time.perf_counter()
        m(x)
        reps.append(max(1, min(200, int(0.002 / max(time.perf_counter() - t0, 1e-7)))))
    samples: list[list[float]] = [[] for _ in models]
    start = time.perf_counter()
    while len(samples[0]) < 7 or (time.perf_counter() - start < min_time * len(models)
                                  and len(samples[0]) < 500):
        for i, m in enumerate(models):
            t0 = time.perf_counter()
            for _ in range(reps[i]):
                m(x)
            samples[i].append((time.perf_counter() - t0) / reps[i])
    return [float(np.median(s)) for s in samples]


def _batch(x: np.ndarray, n: int) -> np.ndarray:
    if x.shape[0] >= n:
        return np.ascontiguousarray(x[:n])
    reps = -(-n // x.shape[0])
    return np.ascontiguousarray(np.concatenate([x] * reps, axis=0)[:n])


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


class Comparison:
    """The result of :func:`compare`.

    Attributes
    ----------
    rows : list of dict
        Per model: ``name``, ``params``, ``file_bytes``, ``accuracy`` (in [0, 1], or None without
        labels), ``latency_ms`` (dict batch size -> milliseconds per call).
    baseline : str
        Name of the first model; ratio columns are relative to it.
    """

    def __init__(self, rows: list[dict], batch_sizes):
        self.rows = rows
        self.batch_sizes = list(batch_sizes)
        self.baseline = rows[0]["name"] if rows else None

    def __getitem__(self, name: str) -> dict:
        for r in self.rows:
            if r["name"] == name:
                return r
        raise KeyError(f"no model named {name!r}; models are {[r['name'] for r in self.rows]}")

    def ratio(self, name: str, key: str, batch_size: int | None = None) -> float:
        """How many times smaller (``"file_bytes"``, ``"params"``) or faster (``"latency"``, at
        ``batch_size``) model ``name`` is than the first model."""
        base, r = self.rows[0], self[name]
        if key == "latency":
            return base["latency_ms"][batch_size] / r["latency_ms"][batch_size]
        return base[key] / r[key]

    def __str__(self) -> str:
        head = ["model", "params", "file", "x smaller", "accuracy"]
        head += [f"ms @ batch {b}" for b in self.batch_sizes]
        head += [f"x faster @{b}" for b in self.batch_sizes[:1]]
        lines = []
        base = self.rows[0] if self.rows else None
        for r in self.rows:
            acc = "-" if r["accuracy"] is None else f"{100 * r['accuracy']:.2f}%"
            row = [r["name"], f"{r['params']:,}", _fmt_bytes(r["file_bytes"]),
                   f"{base['file_bytes'] / r['file_bytes']:.1f}", acc]
            row += [f"{r['latency_ms'][b]:.3f}" for b in self.batch_sizes]
            row += [f"{base['latency_ms'][b] / r['latency_ms'][b]:.1f}" for b in self.batch_sizes[:1]]
            lines.append(row)
        w = [max(len(x[i]) for x in lines + [head]) for i in range(len(head))]
        fmt = lambda x: "  ".join(c.ljust(w[0]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(x))  # noqa: E731
        return "\n".join([fmt(head), "-" * (sum(w) + 2 * (len(w) - 1))] + [fmt(x) for x in lines])

    __repr__ = __str__

    def plot(self, path=None, ax=None):
        """Accuracy against file size (log scale), one labelled point per model.  Needs
        matplotlib (``pip install 'edgepack[plot]'``); writes ``path`` when given; returns the Axes."""
        plt = _pyplot(path is not None and ax is None)
        fig = None
        if ax is None:
            fig, ax = plt.subplots(figsize=(6, 4))
        for r in self.rows:
            if r["accuracy"] is None:
                continue
            kb = r["file_bytes"] / 1000
            ax.scatter([kb], [100 * r["accuracy"]], s=40)
            ax.annotate(r["name"], (kb, 100 * r["accuracy"]), textcoords="offset points", xytext=(5, 4),
                        fontsize="small")
        ax.set_xscale("log")
        ax.margins(x=0.2, y=0.1)
        ax.set_xlabel("file size (KB, log scale)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title("accuracy vs size")
        ax.grid(alpha=0.3, which="both")
        if path is not None:
            (fig or ax.figure).savefig(path, dpi=120, bbox_inches="tight")
            if fig is not None:
                plt.close(fig)
        return ax


def _pyplot(headless: bool):
    try:
        import matplotlib

        if headless:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        raise ModuleNotFoundError("plotting needs matplotlib: pip install 'edgepack[plot]'") from None
    return plt


def compare(models: dict, X, y=None, *, batch_sizes=(1, 256), min_time: float = 0.2) -> Comparison:
    """Compare models on the same data: parameters, bytes on disk, accuracy, latency.

    Parameters
    ----------
    models : dict of name -> edgepack.nn.Module
        In display order; the first is the baseline of the ratio columns.
    X : ndarray (N, ...) float32
        Evaluation inputs; latency batches are its first rows (repeated when N is smaller).
    y : ndarray (N,) of int, optional
        Class labels; accuracy is ``argmax(model(X), -1) == y``.
    batch_sizes : sequence of int
        Batch sizes for the latency columns: median per call over interleaved rounds lasting
        about ``min_time`` s per model.

    Returns
    -------
    Comparison
        ``print()`` it for the table; ``.plot(path)`` draws accuracy against size; ``.rows`` holds
        the numbers.
    """
    if not isinstance(models, dict) or not models:
        raise TypeError("models must be a non-empty dict of name -> edgepack model")
    from .nn.base import Module

    for name, m in models.items():
        if not isinstance(m, Module):
            raise TypeError(f"models[{name!r}] must be an edgepack.nn Module; got {type(m).__name__}")
    X = np.asarray(X)
    if X.ndim < 1 or X.shape[0] == 0:
        raise ValueError(f"X must hold at least one row; got shape {X.shape}")
    if y is not None:
        y = np.asarray(y)
        if y.shape != (X.shape[0],):
            raise ValueError(f"y must have shape ({X.shape[0]},) (one label per row of X); got {y.shape}")
    for b in batch_sizes:
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1:
            raise ValueError(f"batch_sizes must be positive integers; got {b!r}")
    names, mods = list(models), list(models.values())
    lat = {}
    for b in batch_sizes:
        for m in mods:
            m.eval()
        lat[int(b)] = _interleaved_latency(mods, _batch(X, int(b)), min_time)
    rows = []
    for i, (name, m) in enumerate(zip(names, mods)):
        acc = None
        if y is not None:
            acc = float(np.mean(np.asarray(m.predict(X)).argmax(axis=-1) == y))
        rows.append({"name": str(name), "params": stored_parameters(m), "file_bytes": file_size(m),
                     "accuracy": acc, "latency_ms": {b: 1000.0 * v[i] for b, v in lat.items()}})
    return Comparison(rows, [int(b) for b in batch_sizes])


make_module_callable(__name__, "compare")
