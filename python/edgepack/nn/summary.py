"""Model summary table."""

from __future__ import annotations

import numpy as np

from .base import Module, _trace

__all__ = ["summary", "example_input"]


def example_input(model: Module, input_shape) -> np.ndarray:
    """A zero batch of ``input_shape``: int64 ids when the first leaf is an Embedding."""
    first = next((m for _, m in model.named_modules() if not m.children()), model)
    if type(first).__name__ == "Embedding":
        return np.zeros(tuple(input_shape), dtype=np.int64)
    return np.zeros(tuple(input_shape), dtype=np.float32)


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def summary(model: Module, input_shape=None, **kw) -> str:
    """The table behind :meth:`Module.summary` (returned, not printed)."""
    shapes: dict[int, tuple] = {}
    if input_shape is not None:
        x = example_input(model, input_shape)
        with _trace() as rec:
            model(x, **kw)
        for mid, shape in rec:
            shapes[mid] = shape  # last call wins: a layer used twice shows its last output
    rows = []
    for name, m in model.named_modules():
        depth = name.count(".") + (1 if name else 0)
        own = m.get_tensors()
        leaf = not m.children()
        params = sum(int(t.size) for t in own.values()) if leaf else m.num_parameters()
        nbytes = sum(int(t.nbytes) for t in own.values()) if leaf else m.nbytes()
        label = ("  " * depth) + (f"{name.rsplit('.', 1)[-1]}: " if name else "") + type(m).__name__
        shp = shapes.get(id(m))
        rows.append((label, "" if shp is None else str(tuple(shp)), f"{params:,}",
                     _fmt_bytes(nbytes), m.kernel_path()))
    hdr = ("layer", "output shape", "params", "bytes", "kernel")
    widths = [max(len(r[i]) for r in rows + [hdr]) for i in range(5)]
    line = lambda r: "  ".join(  # noqa: E731
        (r[i].ljust(widths[i]) if i in (0, 1, 4) else r[i].rjust(widths[i])) for i in range(5)).rstrip()
    out = [line(hdr), "-" * (sum(widths) + 8)]
    out += [line(r) for r in rows]
    out.append("-" * (sum(widths) + 8))
    out.append(f"total: {model.num_parameters():,} parameters, {_fmt_bytes(model.nbytes())}"
               + ("" if input_shape is None else f", input {tuple(input_shape)}"))
    return "\n".join(out)
