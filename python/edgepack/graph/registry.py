"""The operator registry: every graph operator edgepack can run, by (domain, name, opset).

An operator is registered once per ONNX version range with :func:`register_op`, on a *maker*: a
function ``make(node, consts) -> run`` called once when a graph is compiled.  ``node`` is the
:class:`~edgepack.graph.ir.Node` with every attribute present (the version's defaults filled in,
tensor attributes decoded to ndarrays); ``consts[i]`` is the value of input ``i`` when it is a
constant of the graph (a parameter or a folded value) and ``None`` otherwise.  The returned
``run(*inputs)`` takes the node's inputs positionally (``None`` for an absent optional input;
trailing absent inputs may be left out) and returns one array, or a tuple with one entry per
output when the node has several outputs.  ``run`` must not keep per-call state: one compiled
plan may run in several threads at once.

Nothing here is chosen by a file: a model names an operator, and only registered makers run.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

__all__ = ["OpDef", "register_op", "get_op", "REQUIRED", "registered_ops", "DEFAULT_DOMAIN",
           "EDGEPACK_DOMAIN", "MIN_OPSET", "MAX_OPSET"]

DEFAULT_DOMAIN = ""          # ai.onnx
EDGEPACK_DOMAIN = "edgepack"  # fused and quantized operators made by edgepack's passes
MIN_OPSET = 7
MAX_OPSET = 28  # newer opsets (23+) widened types (float8, int4) of the ops edgepack runs, not their maths


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()  # an attribute default meaning "the node must set it"


@dataclasses.dataclass(frozen=True)
class OpDef:
    """One version range of one operator.

    Attributes
    ----------
    name, domain : str
        ONNX operator type and domain (``""`` for ai.onnx, ``"edgepack"`` for edgepack's own).
    since : int
        First opset this definition applies to; it holds until the next registered ``since``.
    make : callable
        ``make(node, consts) -> run`` (see the module docstring).
    attrs : dict
        Every attribute the operator accepts, with its default (``REQUIRED`` when it has none).
        An attribute not listed here makes the import fail with the node named.
    check : callable or None
        ``check(node) -> list[str]``: attribute values (or input combinations) this
        implementation does not support, each as a short message; checked at import.
    shape_inputs : tuple of int
        Inputs whose *values* (not only shapes) decide the output's shape (Reshape's shape,
        Slice's starts, ...).  Used to tell shape subgraphs that can be evaluated once per input
        shape from data computation.
    reads_shape_only : bool
        The output depends only on the inputs' shapes (Shape, Size).
    fold : bool
        May be evaluated at import when all inputs are constant (False for QuantizeLinear and
        DequantizeLinear, whose pattern the int8 passes need to see).
    """

    name: str
    domain: str
    since: int
    make: Callable
    attrs: dict
    check: Callable | None = None
    shape_inputs: tuple = ()
    reads_shape_only: bool = False
    fold: bool = True


# (domain, name) -> list of OpDef sorted by `since`
_REGISTRY: dict[tuple[str, str], list[OpDef]] = {}


def register_op(name: str, since: int = 1, *, domain: str = DEFAULT_DOMAIN, attrs: dict | None = None,
                check: Callable | None = None, shape_inputs: tuple = (), reads_shape_only: bool = False,
                fold: bool = True):
    """Decorator registering ``make`` as operator ``name`` from opset ``since`` on.

    ``name`` may also be a tuple of names sharing one maker (``node.op`` tells them apart).
    """

    def deco(make: Callable) -> Callable:
        for n in (name,) if isinstance(name, str) else tuple(name):
            d = OpDef(n, domain, int(since), make, dict(attrs or {}), check, tuple(shape_inputs),
                      bool(reads_shape_only), bool(fold))
            lst = _REGISTRY.setdefault((domain, n), [])
            if any(o.since == d.since for o in lst):
                raise ValueError(f"operator {domain or 'ai.onnx'}::{n} since opset {since} is registered twice")
            lst.append(d)
            lst.sort(key=lambda o: o.since)
        return make

    return deco


def get_op(name: str, domain: str = DEFAULT_DOMAIN, opset: int = MAX_OPSET) -> OpDef | None:
    """The definition of ``name`` that applies at ``opset`` (the newest ``since <= opset``)."""
    _load_ops()
    lst = _REGISTRY.get((_norm_domain(domain), name))
    if not lst:
        return None
    best = None
    for d in lst:
        if d.since <= opset:
            best = d
    return best


def registered_ops() -> dict[tuple[str, str], list[int]]:
    """``{(domain, name): [since, ...]}`` of everything registered."""
    _load_ops()
    return {k: [d.since for d in v] for k, v in sorted(_REGISTRY.items())}


def _norm_domain(domain: str) -> str:
    return DEFAULT_DOMAIN if domain in ("", "ai.onnx") else domain


_LOADED = False


def _load_ops() -> None:
    # The op family modules register themselves on import; importing them lazily keeps
    # `import edgepack` fast and breaks the ops -> registry -> ops cycle.
    global _LOADED
    if not _LOADED:
        _LOADED = True
        from . import ops  # noqa: F401


def fill_attrs(d: OpDef, given: dict[str, Any]) -> tuple[dict, list[str]]:
    """The node's attributes with ``d``'s defaults filled in, and the problems found
    (unknown attributes, missing required ones)."""
    problems = [f"attribute {k!r} is not supported" for k in given if k not in d.attrs]
    out = {}
    for k, default in d.attrs.items():
        if k in given:
            out[k] = given[k]
        elif default is REQUIRED:
            problems.append(f"required attribute {k!r} is missing")
        else:
            out[k] = default
    return out, problems
