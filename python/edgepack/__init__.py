"""edgepack: int8 quantization, sparse pruning and knowledge distillation for NumPy models,
run by fast C++ kernels on small CPUs (x86-64 with AVX2/AVX-512/VNNI, ARM64 NEON)."""

from __future__ import annotations

__version__ = "0.1.0"

from . import _core  # noqa: F401  (the native kernels)
from .runtime import (
    _apply_env,
    available_isas,
    cpu_info,
    get_isa,
    get_num_threads,
    set_isa,
    set_num_threads,
    use_isa,
)
from . import kernels  # noqa: E402

_apply_env()

__all__ = [
    "__version__",
    "available_isas",
    "cpu_info",
    "get_isa",
    "get_num_threads",
    "kernels",
    "set_isa",
    "set_num_threads",
    "use_isa",
]
