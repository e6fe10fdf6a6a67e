"""Post-training int8 quantization: :func:`quantize`, calibration observers and the report."""

from .observers import (  # noqa: F401
    METHODS, EntropyObserver, MinMaxObserver, MSEObserver, Observer, PercentileObserver,
    make_observer, qparams_from_range, sqnr_db,
)
from .quantize import quantize, to_float
from .report import LayerReport, QuantizationReport

__all__ = [
    "quantize", "to_float", "QuantizationReport", "LayerReport", "Observer", "MinMaxObserver",
    "PercentileObserver", "EntropyObserver", "MSEObserver", "make_observer", "qparams_from_range",
    "sqnr_db", "METHODS",
]
