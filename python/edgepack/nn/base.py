"""The Module base class and the layer registry.

Every concrete layer is registered by name with :func:`register_layer`.  The registry is the only
way :func:`edgepack.load` turns a class name read from a file into a class: nothing is imported or
evaluated by name, so an untrusted model file cannot run code.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import numpy as np

__all__ = ["Module", "LAYER_REGISTRY", "register_layer", "seed"]

LAYER_REGISTRY: dict[str, type] = {}

# Deterministic default initialisation: two runs that build the same architecture get the same
# weights, which keeps examples and tests reproducible.  `seed()` resets it.
_RNG = np.random.default_rng(0)


def seed(value: int) -> None:
    """Reset the generator used to initialise new layers' weights (and Dropout masks)."""
    global _RNG
    _RNG = np.random.default_rng(value)


def _rng() -> np.random.Generator:
    return _RNG


# Set while from_config() builds a layer whose tensors are about to be replaced: initialisers
# then allocate zeros instead of drawing random numbers (a 30k x 384 embedding would take ~0.3 s).
_SKIP_INIT = False


def _init_array(shape, sample: Callable[[np.random.Generator], np.ndarray]) -> np.ndarray:
    """float32 ``sample(rng)`` of ``shape``, or zeros while loading from a file."""
    if _SKIP_INIT:
        return np.zeros(shape, np.float32)
    return np.asarray(sample(_RNG), dtype=np.float32).reshape(shape)


@contextlib.contextmanager
def _skip_init():
    global _SKIP_INIT
    old, _SKIP_INIT = _SKIP_INIT, True
    try:
        yield
    finally:
        _SKIP_INIT = old


def register_layer(cls: type | None = None, *, name: str | None = None):
    """Register a Module subclass under its class name (or ``name``) for save/load.

    Use as ``@register_layer`` or ``@register_layer(name="MyLayer")``.  Registering a different
    class under a name that is already taken raises ``ValueError`` (files would become ambiguous).
    """

    def deco(c: type) -> type:
        if not (isinstance(c, type) and issubclass(c, Module)):
            raise TypeError(f"register_layer expects a Module subclass; got {c!r}")
        key = name or c.__name__
        old = LAYER_REGISTRY.get(key)
        if old is not None and old is not c and (old.__module__, old.__qualname__) != (
            c.__module__, c.__qualname__):
            raise ValueError(f"layer name {key!r} is already registered to {old.__module__}.{old.__qualname__}")
        LAYER_REGISTRY[key] = c
        c._layer_name = key
        return c

    return deco(cls) if cls is not None else deco


# Tracing for summary(): when active, every Module.__call__ records its output shape.
_TRACE: list | None = None


class Module:
    """Base class of every layer and container.

    Subclasses implement ``forward(x, **kw)`` (float32 in, float32 out), ``get_config()`` (the
    JSON-able constructor kwargs) and list their own tensors in ``_tensor_names``.  Sub-modules
    assigned as attributes become children automatically, in assignment order.

    Floating inputs of another dtype (float64, float16) are cast to float32 by the float layers;
    integer, bool or complex inputs raise ``TypeError``.  Outputs are always float32.
    """

    training: bool = False
    _tensor_names: tuple[str, ...] = ()
    _layer_name: str = ""

    # -- children -------------------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        mods = self.__dict__.get("_modules")
        if isinstance(value, Module):
            if mods is None:
                mods = {}
                object.__setattr__(self, "_modules", mods)
            mods[name] = value
        elif mods is not None and name in mods:
            del mods[name]
        object.__setattr__(self, name, value)

    def children(self) -> list[tuple[str, "Module"]]:
        """Direct sub-modules as ``(name, module)`` in call order."""
        return list(self.__dict__.get("_modules", {}).items())

    def set_child(self, name: str, module: "Module") -> None:
        """Replace the direct child ``name`` by ``module`` (used by quantize and prune)."""
        if not isinstance(module, Module):
            raise TypeError(f"module must be an edgepack Module; got {type(module).__name__}")
        names = [n for n, _ in self.children()]
        if name not in names:
            raise ValueError(f"{type(self).__name__} has no child {name!r}; children are {names}")
        setattr(self, name, module)

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        """Depth-first ``(dotted name, module)`` pairs, this module first with name ``prefix``."""
        yield prefix, self
        for name, child in self.children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator["Module"]:
        for _, m in self.named_modules():
            yield m

    # -- tensors --------------------------------------------------------------------------------
    def get_tensors(self) -> dict[str, np.ndarray]:
        """This module's own tensors by local name (children's are not included)."""
        out = {}
        for n in self._tensor_names:
            v = getattr(self, n, None)
            if v is not None:
                out[n] = v
        return out

    def named_tensors(self) -> Iterator[tuple[str, np.ndarray]]:
        """All tensors of this module and its descendants as ``("path.name", array)``."""
        for path, m in self.named_modules():
            for n, t in m.get_tensors().items():
                yield (f"{path}.{n}" if path else n), t

    def get_config(self) -> dict:
        """JSON-able constructor kwargs (no arrays)."""
        return {}

    @classmethod
    def from_config(cls, config: dict, tensors: dict[str, np.ndarray]) -> "Module":
        """Rebuild from :meth:`get_config` and :meth:`get_tensors` output.

        The default builds ``cls(**config)`` and replaces its tensors by ``tensors``, checking that
        the names, shapes and dtypes are the ones the constructor made (so a corrupt or mismatched
        file raises ``ValueError``).  Children are attached afterwards with :meth:`set_child`.
        """
        with _skip_init():
            obj = cls(**config)
        expected = obj.get_tensors()
        unknown = sorted(set(tensors) - set(expected))
        missing = sorted(set(expected) - set(tensors))
        if unknown or missing:
            raise ValueError(
                f"{cls.__name__} tensors do not match its config: "
                f"missing {missing}, unexpected {unknown}")
        for n, arr in tensors.items():
            ref = expected[n]
            arr = np.asarray(arr)
            if arr.shape != ref.shape or arr.dtype != ref.dtype:
                raise ValueError(
                    f"{cls.__name__}.{n} must be {ref.dtype} of shape {ref.shape}; "
                    f"got {arr.dtype} {arr.shape}")
            setattr(obj, n, np.ascontiguousarray(arr))
        return obj

    def num_parameters(self) -> int:
        """Number of tensor elements, own and children's."""
        return sum(int(t.size) for _, t in self.named_tensors())

    def nbytes(self) -> int:
        """Bytes of tensor data, own and children's."""
        return sum(int(t.nbytes) for _, t in self.named_tensors())

    def kernel_path(self) -> str:
        """What runs this layer, for :meth:`summary` (e.g. ``"numpy f32"``)."""
        return "numpy f32" if self._tensor_names else "numpy"

    # -- running --------------------------------------------------------------------------------
    def forward(self, x: np.ndarray, **kw) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def __call__(self, x, **kw):
        y = self.forward(x, **kw)
        hooks = self.__dict__.get("_hooks")
        if hooks:
            for fn in list(hooks.values()):
                r = fn(self, x, y)
                if r is not None:
                    y = r
        if _TRACE is not None:
            _TRACE.append((id(self), getattr(y, "shape", None)))
        return y

    def register_forward_hook(self, fn: Callable[["Module", Any, Any], Any]) -> "_HookHandle":
        """Call ``fn(module, x, y)`` after every forward of this module (e.g. to collect
        calibration activations); a non-None return value replaces ``y``.  Returns a handle whose
        ``remove()`` unregisters it.  Hooks are not saved by ``edgepack.save``."""
        hooks = self.__dict__.get("_hooks")
        if hooks is None:
            hooks = {}
            object.__setattr__(self, "_hooks", hooks)
        handle = _HookHandle(hooks)
        hooks[handle.key] = fn
        return handle

    def train(self, mode: bool = True) -> "Module":
        """Set ``training`` on this module and all descendants; returns self."""
        for m in self.modules():
            m.training = bool(mode)
        return self

    def eval(self) -> "Module":
        """Inference mode (Dropout is the identity, BatchNorm uses running statistics)."""
        return self.train(False)

    def predict(self, x, batch_size: int = 256, **kw) -> np.ndarray:
        """Run inference in batches along axis 0 and concatenate the outputs.

        Parameters
        ----------
        x : ndarray, shape (N, ...)
            Input; float32 (other float dtypes are cast).
        batch_size : int
            Rows per forward call; bounds peak memory.
        **kw
            Passed to ``forward``; arrays whose first axis has length N (e.g. an attention
            ``mask`` of shape (N, T)) are sliced along with ``x``.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
        x = np.asarray(x)
        if x.ndim == 0:
            raise ValueError("x must have a batch axis; got a scalar")
        n = x.shape[0]
        if n <= batch_size:
            return self(x, **kw)
        outs = []
        for s in range(0, n, batch_size):
            kws = {k: (v[s:s + batch_size] if isinstance(v, np.ndarray) and v.ndim and v.shape[0] == n else v)
                   for k, v in kw.items()}
            outs.append(self(x[s:s + batch_size], **kws))
        return np.concatenate(outs, axis=0)

    def prepare_for_inference(self) -> "Module":
        """Switch to eval mode and fold BatchNorm into the preceding Conv2d/Linear (in place)."""
        from .fold import fold_batchnorm

        self.eval()
        return fold_batchnorm(self)

    def summary(self, input_shape=None, *, print_fn: Callable[[str], None] | None = print, **kw) -> str:
        """Print and return a table: each layer, output shape, params, bytes, kernel path.

        Parameters
        ----------
        input_shape : tuple of int, optional
            Shape of one input batch; when given, a zero batch (int64 zeros for a leading
            Embedding) is run to record every layer's output shape.
        print_fn : callable or None
            Where the table goes (``None``: only return it).
        """
        from .summary import summary

        text = summary(self, input_shape, **kw)
        if print_fn is not None:
            print_fn(text)
        return text

    def __repr__(self) -> str:
        cfg = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        kids = self.children()
        if not kids:
            return f"{type(self).__name__}({cfg})"
        inner = "\n".join(f"  ({n}): " + repr(m).replace("\n", "\n  ") for n, m in kids)
        return f"{type(self).__name__}({cfg})(\n{inner}\n)"


class _HookHandle:
    _next = 0

    def __init__(self, hooks: dict):
        _HookHandle._next += 1
        self.key = _HookHandle._next
        self._hooks = hooks

    def remove(self) -> None:
        self._hooks.pop(self.key, None)


@contextlib.contextmanager
def _trace():
    global _TRACE
    old, _TRACE = _TRACE, []
    try:
        yield _TRACE
    finally:
        _TRACE = old
