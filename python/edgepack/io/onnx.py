"""Import an ONNX model as an :class:`edgepack.nn.Graph` (needs the optional ``onnx`` package).

Any graph of the supported operators imports: residual branches, several inputs and outputs,
weights in initializers or ``Constant`` nodes, external-data files, shape subgraphs, symbolic
dimensions.  The supported operators and attribute values are those registered in
:mod:`edgepack.graph.ops` (``edgepack.graph.registered_ops()``); anything else fails at import
with one ValueError listing every unsupported (operator, attribute) with its node's name, never
with a wrong answer at run time.  Only this module imports ``onnx``: an imported and saved graph
runs with NumPy alone.
"""

from __future__ import annotations

import functools
import os

import numpy as np

__all__ = ["from_onnx"]


def _import_onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise ModuleNotFoundError(
            "edgepack.from_onnx needs the 'onnx' package: pip install 'edgepack[onnx]'") from None
    return onnx, numpy_helper


def _malformed_is_value_error(fn):
    """A hostile or corrupt graph (missing node inputs, dangling names, undefined tensor types,
    non-UTF-8 names) must end in the documented ValueError, not in whatever KeyError or IndexError
    the conversion trips over first (found by tests/test_fuzz.py)."""

    @functools.wraps(fn)
    def wrapper(path, *args, **kwargs):
        try:
            return fn(path, *args, **kwargs)
        except RecursionError:
            raise ValueError(f"{_where(path)}: malformed ONNX graph (nested too deeply)") from None
        except (KeyError, IndexError, TypeError, AttributeError, UnicodeError, OverflowError) as e:
            raise ValueError(f"{_where(path)}: malformed ONNX graph ({type(e).__name__}: {e})") from None
    return wrapper


def _where(path) -> str:
    return os.fspath(path) if isinstance(path, (str, bytes, os.PathLike)) else "model"


def _attr_value(a, onnx, numpy_helper, label):
    T = onnx.AttributeProto
    t = a.type
    if t == T.FLOAT:
        return float(a.f)
    if t == T.INT:
        return int(a.i)
    if t == T.STRING:
        return a.s.decode("utf-8")
    if t == T.FLOATS:
        return [float(v) for v in a.floats]
    if t == T.INTS:
        return [int(v) for v in a.ints]
    if t == T.STRINGS:
        return [s.decode("utf-8") for s in a.strings]
    if t == T.TENSOR:
        return numpy_helper.to_array(a.t)
    raise ValueError(f"{label}: attribute {a.name!r} of type {T.AttributeType.Name(t)} is not supported")


def _value_spec(vi, dtypes):
    tt = vi.type.tensor_type
    dt = dtypes.get(tt.elem_type)
    shape = None
    if tt.HasField("shape"):
        shape = []
        for d in tt.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                shape.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param:
                shape.append(d.dim_param)
            else:
                shape.append(None)
    return {"name": vi.name, "dtype": None if dt is None else dt.name, "shape": shape}


def _toposort(nodes, available: set, where: str):
    """ONNX requires topological order; some exporters break it.  Kahn's algorithm, and a clear
    error for cycles and names nothing defines."""
    produced = {o: i for i, n in enumerate(nodes) for o in n.outputs if o}
    if all(all((not v) or v in available or produced.get(v, 1 << 60) < i for v in n.inputs)
           for i, n in enumerate(nodes)):
        return nodes
    deps = []
    for i, n in enumerate(nodes):
        d = set()
        for v in n.inputs:
            if not v or v in available:
                continue
            if v not in produced:
                raise ValueError(f"{where}: {n.label()}: input {v!r} is not a graph input, initializer or "
                                 "node output")
            d.add(produced[v])
        deps.append(d)
    users: dict[int, list[int]] = {}
    for i, d in enumerate(deps):
        for j in d:
            users.setdefault(j, []).append(i)
    ready = [i for i, d in enumerate(deps) if not d]
    order = []
    remaining = [len(d) for d in deps]
    while ready:
        i = ready.pop(0)
        order.append(i)
        for u in users.get(i, ()):
            remaining[u] -= 1
            if remaining[u] == 0:
                ready.append(u)
    if len(order) != len(nodes):
        stuck = [nodes[i].label() for i in range(len(nodes)) if remaining[i] > 0][:5]
        raise ValueError(f"{where}: the graph has a cycle through {', '.join(stuck)}")
    return [nodes[i] for i in order]


@_malformed_is_value_error
def from_onnx(path, *, fold_batchnorm: bool = True, simplify: bool = True):
    """Convert an ONNX model file (or ``onnx.ModelProto``) to an edgepack :class:`~edgepack.nn.Graph`.

    Parameters
    ----------
    path : str, os.PathLike or onnx.ModelProto
        The model; external-data tensors are read from files beside it.
    fold_batchnorm : bool
        Fold BatchNormalization into the preceding Conv/ConvTranspose/Gemm (default).
    simplify : bool
        Run the import passes (Identity removal, constant folding, dead-node removal).

    Returns
    -------
    edgepack.nn.Graph
        float32 graph; ``graph(x)`` for one input, ``graph.run({name: x})`` for several.

    Raises
    ------
    ModuleNotFoundError
        ``onnx`` is not installed.
    ValueError
        The file is not valid ONNX, uses an opset outside 7-28, or uses operators or attribute
        values edgepack does not run (every one is listed with its node), or is malformed
        (dangling names, cycles, bad tensors): the message names the node.
    """
    onnx, numpy_helper = _import_onnx()
    from ..graph.ir import Graph, Node
    from ..graph.ops._util import ONNX_DTYPES
    from ..graph.registry import MAX_OPSET, MIN_OPSET

    if isinstance(path, onnx.ModelProto):
        model = path
        where = "model"
    else:
        where = os.fspath(path)
        if not os.path.exists(where):
            raise FileNotFoundError(f"{where}: no such file")
        try:
            model = onnx.load(where, load_external_data=True)
        except Exception as e:  # protobuf raises its own DecodeError types
            raise ValueError(f"{where}: not a valid ONNX model ({type(e).__name__}: {e})") from None
    g = model.graph
    opset = None
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            opset = int(o.version)
    if opset is None:
        opset = 13 if not model.opset_import else MIN_OPSET - 1
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"{where}: ai.onnx opset {opset} is not supported (edgepack imports opsets "
                         f"{MIN_OPSET}-{MAX_OPSET}); convert it with onnx.version_converter")

    params: dict[str, np.ndarray] = {}
    for init in g.initializer:
        try:
            params[init.name] = numpy_helper.to_array(init)
        except Exception as e:  # noqa: BLE001 - malformed tensor protos raise many types
            raise ValueError(f"{where}: initializer {init.name!r} cannot be read ({type(e).__name__}: {e})") from None
    for sp in g.sparse_initializer:
        raise ValueError(f"{where}: sparse initializer {sp.values.name!r} is not supported")
    inputs = [_value_spec(vi, ONNX_DTYPES) for vi in g.input if vi.name not in params]

    nodes = []
    problems = []
    seen_names: set[str] = set()
    for i, n in enumerate(g.node):
        name = n.name or f"{n.op_type}_{i}"
        if name in seen_names:
            name = f"{name}_{i}"
        seen_names.add(name)
        label = f"node {name!r} ({n.op_type})"
        attrs = {}
        for a in n.attribute:
            try:
                attrs[a.name] = _attr_value(a, onnx, numpy_helper, label)
            except ValueError as e:
                problems.append(str(e))
            except Exception as e:  # noqa: BLE001
                problems.append(f"{label}: attribute {a.name!r} cannot be read ({type(e).__name__})")
        domain = "" if n.domain in ("", "ai.onnx") else n.domain
        if n.op_type == "Constant" and not domain:
            outs = [o for o in n.output if o]
            try:
                params[outs[0]] = _constant(attrs)
                continue
            except (ValueError, IndexError) as e:
                problems.append(f"{label}: {e}")
        nodes.append(Node(n.op_type, list(n.input), list(n.output), attrs, name, domain))
    if problems:
        raise ValueError(f"{where}: {len(problems)} unsupported operator(s)/attribute(s):\n  " + "\n  ".join(problems))
    available = set(params) | {i["name"] for i in inputs}
    nodes = _toposort(nodes, available, where)
    try:
        graph = Graph(nodes, inputs, [o.name for o in g.output], params, opset, g.name or "graph",
                      {"producer": f"{model.producer_name} {model.producer_version}".strip()})
        graph.check_ops()
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    if simplify:
        from ..graph import passes

        try:
            graph = passes.simplify(graph, batchnorm=fold_batchnorm)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    return graph


def _constant(attrs) -> np.ndarray:
    given = [k for k in ("value", "value_float", "value_floats", "value_int", "value_ints") if k in attrs]
    if len(given) != 1:
        raise ValueError(f"Constant needs one of value/value_float(s)/value_int(s); got {sorted(attrs)}")
    k = given[0]
    v = attrs[k]
    if k == "value":
        return np.asarray(v)
    if k.startswith("value_float"):
        return np.asarray(v, np.float32)
    return np.asarray(v, np.int64)
