"""The per-layer report that comes with a quantized model (``qmodel.report``)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

__all__ = ["LayerReport", "QuantizationReport"]


@dataclass
class LayerReport:
    """One Linear/Conv2d layer of the model.

    Attributes
    ----------
    name : str
        Dotted module name ("0", "encoder.2.fc1", ...).
    layer : str
        Float class name ("Linear", "Conv2d").
    status : str
        "int8", "int8 sparse" (a pruned layer given int8 values), "float (skip)" (excluded by
        ``skip``) or "float (sqnr)" (kept float because its SQNR fell below ``keep_float_below_db``).
    sqnr_db : float or None
        This layer alone: its int8 output on the float model's input to it, against the float
        layer's output (after the fused activation, if any).  None without a report batch.
    cumulative_sqnr_db : float or None
        The layer's output inside the quantized model (all earlier layers quantized too) against
        the float model's.
    bytes_before, bytes_after : int
        Tensor bytes of the float layer and of what replaced it.
    kernel : str
        ``kernel_path()`` of the layer in the returned model.
    """

    name: str
    layer: str
    status: str
    sqnr_db: float | None
    cumulative_sqnr_db: float | None
    bytes_before: int
    bytes_after: int
    kernel: str
    x_scale: float | None = None
    x_zero_point: int | None = None


def _db(v) -> str:
    if v is None:
        return "-"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.1f}"


def _kib(n: int) -> str:
    return f"{n / 1024:.1f}"


@dataclass
class QuantizationReport:
    """What :func:`edgepack.quantize` did, layer by layer.

    ``str(report)`` is a table; :meth:`to_dict` gives JSON-able data.

    Attributes
    ----------
    layers : list of LayerReport
    settings : dict
        The quantize() arguments (weights, activations, method, percentile, keep_float_below_db).
    output_sqnr_db : float or None
        The whole model's output, int8 against float, on the report batch.
    batch_rows : int
        Rows of the batch the SQNRs were measured on (0: none given).
    """

    layers: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    output_sqnr_db: float | None = None
    batch_rows: int = 0

    @property
    def kept_float(self) -> list[str]:
        """Names of the layers kept float because their SQNR was below the threshold."""
        return [r.name for r in self.layers if r.status == "float (sqnr)"]

    @property
    def skipped(self) -> list[str]:
        """Names of the layers excluded by ``skip``."""
        return [r.name for r in self.layers if r.status == "float (skip)"]

    @property
    def quantized(self) -> list[str]:
        """Names of the layers now running int8 (dense, or pruned ones: status "int8 sparse")."""
        return [r.name for r in self.layers if r.status.startswith("int8")]

    @property
    def bytes_before(self) -> int:
        return sum(r.bytes_before for r in self.layers)

    @property
    def bytes_after(self) -> int:
        return sum(r.bytes_after for r in self.layers)

    def __getitem__(self, name: str) -> LayerReport:
        for r in self.layers:
            if r.name == name:
                return r
        raise KeyError(f"no layer {name!r} in the report; layers: {[r.name for r in self.layers]}")

    def to_dict(self) -> dict:
        return {"settings": dict(self.settings), "output_sqnr_db": self.output_sqnr_db,
                "batch_rows": self.batch_rows, "layers": [asdict(r) for r in self.layers],
                "kept_float": self.kept_float, "skipped": self.skipped,
                "bytes_before": self.bytes_before, "bytes_after": self.bytes_after}

    def __str__(self) -> str:
        s = self.settings
        head = (f"int8 quantization: weights {s.get('weights')}, activations {s.get('activations')}"
                + (f" ({s.get('method')})" if s.get("activations") == "static" else ""))
        hdr = ("layer", "type", "status", "SQNR dB", "cum. dB", "KiB before", "KiB after", "kernel")
        rows = [(r.name or "(root)", r.layer, r.status, _db(r.sqnr_db), _db(r.cumulative_sqnr_db),
                 _kib(r.bytes_before), _kib(r.bytes_after), r.kernel) for r in self.layers]
        w = [max(len(x[i]) for x in rows + [hdr]) for i in range(len(hdr))]
        right = {3, 4, 5, 6}
        fmt = lambda r: "  ".join(r[i].rjust(w[i]) if i in right else r[i].ljust(w[i])  # noqa: E731
                                  for i in range(len(hdr))).rstrip()
        lines = [head, fmt(hdr), "-" * (sum(w) + 2 * (len(w) - 1))]
        lines += [fmt(r) for r in rows]
        lines.append("-" * (sum(w) + 2 * (len(w) - 1)))
        ratio = self.bytes_before / self.bytes_after if self.bytes_after else float("nan")
        thr = s.get("keep_float_below_db")
        kept = f"{len(self.kept_float)} kept float (SQNR < {thr} dB), " if thr is not None else ""
        lines.append(f"{len(self.quantized)} int8, {kept}{len(self.skipped)} skipped; "
                     f"{_kib(self.bytes_before)} -> {_kib(self.bytes_after)} KiB ({ratio:.2f}x)")
        if self.batch_rows:
            lines.append(f"model output SQNR: {_db(self.output_sqnr_db)} dB on {self.batch_rows} rows")
        else:
            lines.append("no report batch given: SQNR not measured (pass calibration= or report_batch=)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"QuantizationReport({len(self.layers)} layers, {len(self.quantized)} int8, "
                f"output_sqnr_db={_db(self.output_sqnr_db)})")
