"""edgepack: int8 quantization, sparse pruning and knowledge distillation for NumPy models,
run by fast C++ kernels on small CPUs (x86-64 with AVX2/AVX-512/VNNI, ARM64 NEON)."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

from . import _core  # noqa: F401  (the native kernels)
from . import kernels  # noqa: E402
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

_apply_env()

# The model-level API is imported on first use: `import edgepack` stays fast, and each area
# lives in its own module.  name -> (module, attribute or None for the module itself)
_LAZY = {
    "nn": ("edgepack.nn", None),
    "save": ("edgepack.io", "save"),
    "load": ("edgepack.io", "load"),
    "from_onnx": ("edgepack.io.onnx", "from_onnx"),
    "quantize": ("edgepack.ptq", "quantize"),
    "train": ("edgepack.train", "train"),
    "distill": ("edgepack.distill", "distill"),
    "prune": ("edgepack.prune", "prune"),
    "sensitivity": ("edgepack.prune", "sensitivity"),
    "compare": ("edgepack.compare", "compare"),
    "SentenceEncoder": ("edgepack.text", "SentenceEncoder"),
    "batch": ("edgepack.batch", None),
}


def __getattr__(name: str):
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'edgepack' has no attribute {name!r}") from None
    mod = importlib.import_module(module)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


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
    *_LAZY,
]
