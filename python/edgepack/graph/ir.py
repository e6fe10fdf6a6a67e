"""The graph model: :class:`Node` and :class:`Graph`.

A :class:`Graph` is an ONNX-like dataflow graph held in plain Python and NumPy: named inputs
(with dtype and a shape whose entries are ints, symbolic names or ``None``), named outputs, nodes
in topological order, and parameters as named arrays.  It is an :class:`edgepack.nn.Module`, so it
saves and loads with :func:`edgepack.save`/:func:`edgepack.load` (JSON + raw tensors) and takes
part in ``summary``/``predict``/``compare`` like any other model.  Running it goes through a plan
compiled once per input-shape signature (:mod:`edgepack.graph.executor`).
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Iterable

import numpy as np

from ..nn.base import Module, register_layer

__all__ = ["Node", "Graph", "encode_attr", "decode_attr"]

_MAX_NODES = 1_000_000
_MAX_NAME = 4096
_ATTR_TENSOR_MAX = 1 << 16   # elements of a tensor kept inline in a node's attributes

_DTYPE_NAMES = ("float32", "float64", "float16", "int8", "uint8", "int16", "uint16", "int32", "uint32",
                "int64", "uint64", "bool")


def encode_attr(v: Any) -> Any:
    """An attribute value as JSON-able data (tensors become ``{"tensor": [dtype, shape, flat]}``)."""
    if isinstance(v, np.ndarray):
        if v.size > _ATTR_TENSOR_MAX:
            raise ValueError(f"a tensor attribute of {v.size} elements is too large to keep inline")
        if v.dtype.name not in _DTYPE_NAMES:
            raise TypeError(f"tensor attribute dtype {v.dtype} is not supported")
        return {"tensor": [v.dtype.name, list(v.shape), v.reshape(-1).tolist()]}
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [encode_attr(x) for x in v]
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    raise TypeError(f"attribute value of type {type(v).__name__} cannot be stored")


def decode_attr(v: Any, where: str = "attribute") -> Any:
    """Inverse of :func:`encode_attr`; validates what a (possibly hostile) file holds."""
    if isinstance(v, dict):
        t = v.get("tensor")
        if len(v) != 1 or not isinstance(t, list) or len(t) != 3:
            raise ValueError(f"{where}: malformed tensor attribute")
        dt, shape, flat = t
        if dt not in _DTYPE_NAMES or not isinstance(shape, list) or not isinstance(flat, list) or not all(
                isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= _ATTR_TENSOR_MAX for s in shape):
            raise ValueError(f"{where}: malformed tensor attribute")
        n = 1
        for s in shape:
            n *= s
        if n != len(flat) or n > _ATTR_TENSOR_MAX:
            raise ValueError(f"{where}: tensor attribute has {len(flat)} values for shape {shape}")
        try:
            return np.array(flat, dtype=dt).reshape(shape)
        except (TypeError, ValueError, OverflowError) as e:
            raise ValueError(f"{where}: bad tensor attribute values ({e})") from None
    if isinstance(v, list):
        return [decode_attr(x, where) for x in v]
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    raise ValueError(f"{where}: unsupported attribute value of type {type(v).__name__}")


@dataclasses.dataclass
class Node:
    """One operator application.

    ``inputs``/``outputs`` are value names (``""`` marks an absent optional input or an unused
    output); ``attrs`` maps attribute names to ints, floats, strings, lists of those or small
    ndarrays, exactly as given (defaults are filled in when the graph is compiled).
    """

    op: str
    inputs: list
    outputs: list
    attrs: dict = dataclasses.field(default_factory=dict)
    name: str = ""
    domain: str = ""

    def to_json(self) -> list:
        return [self.op, self.domain, self.name, list(self.inputs), list(self.outputs),
                {k: encode_attr(v) for k, v in self.attrs.items()}]

    @classmethod
    def from_json(cls, item, index: int) -> "Node":
        where = f"node {index}"
        if not (isinstance(item, list) and len(item) == 6):
            raise ValueError(f"{where}: malformed node entry")
        op, domain, name, ins, outs, attrs = item
        if not all(isinstance(s, str) and len(s) <= _MAX_NAME for s in (op, domain, name)):
            raise ValueError(f"{where}: op, domain and name must be strings")
        where = f"node {name or index!r} ({op})"
        for what, lst in (("inputs", ins), ("outputs", outs)):
            if not isinstance(lst, list) or not all(isinstance(s, str) and len(s) <= _MAX_NAME for s in lst):
                raise ValueError(f"{where}: {what} must be a list of names")
        if not isinstance(attrs, dict) or not all(isinstance(k, str) for k in attrs):
            raise ValueError(f"{where}: attrs must be an object")
        return cls(op, list(ins), list(outs), {k: decode_attr(v, f"{where} attribute {k!r}")
                                               for k, v in attrs.items()}, name, domain)

    def label(self) -> str:
        return f"node {self.name!r} ({self.op})" if self.name else f"node ({self.op})"


def _spec(i, where: str) -> dict:
    if isinstance(i, str):
        return {"name": i, "dtype": None, "shape": None}
    if not isinstance(i, dict) or not isinstance(i.get("name"), str):
        raise ValueError(f"{where}: each input must be a name or {{'name', 'dtype', 'shape'}}")
    dt = i.get("dtype")
    if dt is not None:
        dt = np.dtype(dt).name if not isinstance(dt, str) else dt
        if dt not in _DTYPE_NAMES:
            raise ValueError(f"{where}: input {i['name']!r} has unsupported dtype {dt!r}")
    shape = i.get("shape")
    if shape is not None:
        if not isinstance(shape, (list, tuple)) or not all(
                s is None or isinstance(s, str) or (isinstance(s, int) and not isinstance(s, bool) and s >= 0)
                for s in shape):
            raise ValueError(f"{where}: input {i['name']!r} has a malformed shape {shape!r}")
        shape = list(shape)
    return {"name": i["name"], "dtype": dt, "shape": shape}


@register_layer
class Graph(Module):
    """A dataflow graph of operators (imported from ONNX or built by edgepack's passes).

    Parameters
    ----------
    nodes : list of Node
        In topological order (every input is a graph input, a parameter or an earlier output).
    inputs : list of str or dict
        Graph inputs: names, or ``{"name", "dtype", "shape"}`` with shape entries int (fixed),
        str (symbolic, e.g. ``"batch"``: any size; equal names are not checked, as in onnxruntime) or None.
    outputs : list of str
        Names of the values returned.
    params : dict of str -> ndarray
        Constant tensors (weights, folded constants), by value name.
    opset : int
        The ai.onnx opset the nodes follow (attribute defaults and semantics).

    Running
    -------
    ``graph(x)`` for a graph with one input returns its output (a tuple when it has several);
    ``graph.run({name: array})`` returns ``{output name: array}``.  Inputs of another float dtype
    are cast to the declared one; shapes are checked against the declared ones.
    """

    def __init__(self, nodes: Iterable[Node] = (), inputs=(), outputs=(), params: dict | None = None,
                 opset: int = 17, name: str = "graph", metadata: dict | None = None):
        self.nodes = list(nodes)
        self.inputs = [_spec(i, "Graph") for i in inputs]
        self.outputs = [str(o) for o in outputs]
        # np.asarray(order="C"), not ascontiguousarray: that turns a 0-d scalar into shape (1,)
        self.params = {str(k): np.asarray(v, order="C") for k, v in (params or {}).items()}
        self.opset = int(opset)
        self.name = str(name)
        self.metadata = dict(metadata or {})
        self._lock = threading.Lock()
        self._programs: dict = {}
        self._validate()

    # -- structure ------------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return [i["name"] for i in self.inputs]

    def _validate(self) -> None:
        from .registry import MAX_OPSET, MIN_OPSET

        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise ValueError(f"opset {self.opset} is not supported (edgepack runs opsets {MIN_OPSET}-{MAX_OPSET})")
        if len(self.nodes) > _MAX_NODES:
            raise ValueError(f"graph has {len(self.nodes)} nodes (at most {_MAX_NODES})")
        defined: set[str] = set()
        for i in self.inputs:
            if i["name"] in defined or not i["name"]:
                raise ValueError(f"graph input {i['name']!r} is empty or defined twice")
            defined.add(i["name"])
        for k in self.params:
            if k in defined or not k:
                raise ValueError(f"parameter {k!r} is empty or also a graph input")
            defined.add(k)
        for idx, n in enumerate(self.nodes):
            if not isinstance(n, Node):
                raise TypeError(f"nodes[{idx}] must be a Node; got {type(n).__name__}")
            for v in n.inputs:
                if v and v not in defined:
                    raise ValueError(f"{n.label()}: input {v!r} is not defined before it is used "
                                     "(a dangling name or a cycle)")
            for v in n.outputs:
                if v and v in defined:
                    raise ValueError(f"{n.label()}: output {v!r} is defined twice")
                if v:
                    defined.add(v)
        if not self.outputs:
            raise ValueError("graph has no outputs")
        for o in self.outputs:
            if o not in defined:
                raise ValueError(f"graph output {o!r} is not produced by any node, input or parameter")

    def invalidate(self) -> None:
        """Forget compiled plans (call after editing ``nodes`` or ``params`` in place)."""
        with self._lock:
            self._programs = {}

    def producers(self) -> dict[str, tuple[int, Node]]:
        """``{value name: (node index, node)}`` for every node output."""
        return {v: (i, n) for i, n in enumerate(self.nodes) for v in n.outputs if v}

    def consumers(self) -> dict[str, list[tuple[int, Node]]]:
        """``{value name: [(node index, node), ...]}`` for every value used as a node input."""
        out: dict[str, list] = {}
        for i, n in enumerate(self.nodes):
            for v in n.inputs:
                if v:
                    out.setdefault(v, []).append((i, n))
        return out

    def op_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for n in self.nodes:
            key = n.op if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op}"
            out[key] = out.get(key, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def copy(self, *, nodes=None, params=None, inputs=None, outputs=None) -> "Graph":
        """A new graph sharing (not copying) the parameter arrays unless replaced."""
        return Graph([dataclasses.replace(n, inputs=list(n.inputs), outputs=list(n.outputs),
                                          attrs=dict(n.attrs)) for n in (self.nodes if nodes is None else nodes)],
                     self.inputs if inputs is None else inputs, self.outputs if outputs is None else outputs,
                     dict(self.params) if params is None else params, self.opset, self.name, self.metadata)

    # -- Module protocol --------------------------------------------------------------------------
    def get_tensors(self) -> dict[str, np.ndarray]:
        return dict(self.params)

    def get_config(self) -> dict:
        return {"nodes": [n.to_json() for n in self.nodes], "inputs": self.inputs, "outputs": self.outputs,
                "opset": self.opset, "name": self.name, "metadata": self.metadata}

    @classmethod
    def from_config(cls, config: dict, tensors: dict) -> "Graph":
        if not isinstance(config, dict):
            raise ValueError("Graph config must be an object")
        nodes = config.get("nodes")
        if not isinstance(nodes, list):
            raise ValueError("Graph config: 'nodes' must be a list")
        if len(nodes) > _MAX_NODES:
            raise ValueError(f"graph has {len(nodes)} nodes (at most {_MAX_NODES})")
        ins, outs = config.get("inputs"), config.get("outputs")
        if not isinstance(ins, list) or not isinstance(outs, list) or not all(isinstance(o, str) for o in outs):
            raise ValueError("Graph config: 'inputs' and 'outputs' must be lists")
        opset = config.get("opset")
        if not isinstance(opset, int) or isinstance(opset, bool):
            raise ValueError(f"Graph config: opset must be an integer; got {opset!r}")
        meta = config.get("metadata") or {}
        if not isinstance(meta, dict):
            raise ValueError("Graph config: metadata must be an object")
        g = cls([Node.from_json(n, i) for i, n in enumerate(nodes)], ins, outs, dict(tensors), opset,
                str(config.get("name", "graph")), meta)
        g.check_ops()
        return g

    def check_ops(self) -> None:
        """Raise one ValueError listing every node whose operator or attributes are unsupported."""
        from .registry import fill_attrs, get_op

        problems = []
        for n in self.nodes:
            d = get_op(n.op, n.domain, self.opset)
            if d is None:
                problems.append(f"{n.label()}: operator {(n.domain + '.') if n.domain else ''}{n.op} "
                                f"(opset {self.opset}) is not supported")
                continue
            attrs, bad = fill_attrs(d, n.attrs)
            if not bad and d.check is not None:
                filled = dataclasses.replace(n, attrs=attrs)
                try:
                    bad = list(d.check(filled) or [])
                except (TypeError, ValueError, KeyError, IndexError) as e:
                    bad = [f"malformed attributes ({e})"]
            problems += [f"{n.label()}: {b}" for b in bad]
        if problems:
            raise ValueError(f"{len(problems)} unsupported operator(s)/attribute(s):\n  " + "\n  ".join(problems))

    def num_parameters(self) -> int:
        return sum(int(t.size) for t in self.params.values())

    def kernel_path(self) -> str:
        return "graph"

    # -- running --------------------------------------------------------------------------------
    def program(self, lowered: bool = True):
        """The compiled program (built on first use; thread-safe).

        ``lowered=True`` runs the inference lowering first (:mod:`edgepack.graph.passes.layout`:
        channels-last convolutions on the C++ kernels with fused epilogues); ``False`` runs the
        nodes as they are (every value of the stored graph can then be asked for by name)."""
        p = self._programs.get(lowered)
        if p is None:
            from .executor import Program

            with self._lock:
                p = self._programs.get(lowered)
                if p is None:
                    g = self
                    if lowered:
                        from .passes.layout import lower_for_inference

                        g = lower_for_inference(self)
                    p = Program(g)
                    self._programs[lowered] = p
        return p

    def run(self, feeds: dict, outputs: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Run the graph.

        Parameters
        ----------
        feeds : dict of str -> array
            One array per graph input, by name.
        outputs : list of str, optional
            Value names to return (default: the graph outputs); any intermediate value may be
            asked for (calibration uses this).

        Returns
        -------
        dict of str -> ndarray
        """
        if not isinstance(feeds, dict):
            raise TypeError(f"feeds must be a dict of input name -> array; got {type(feeds).__name__}")
        if outputs is None:
            return self.program().run(feeds, None)
        outputs = tuple(outputs)
        prog = self.program()
        if not all(o in prog.slot for o in outputs):
            prog = self.program(lowered=False)   # intermediate values of the stored graph
        return prog.run(feeds, outputs)

    def forward(self, x, **kw):
        names = self.input_names
        if isinstance(x, dict):
            feeds = dict(x)
        elif len(names) == 1:
            feeds = {names[0]: x}
        else:
            raise ValueError(f"this graph has {len(names)} inputs {names}: call graph.run({{name: array}}) "
                             "or pass a dict")
        for k, v in kw.items():
            if k in names:
                feeds[k] = v
        res = self.run(feeds)
        vals = tuple(res[o] for o in self.outputs)
        return vals[0] if len(vals) == 1 else vals

    def predict(self, x, batch_size: int = 256, **kw):
        """Inference in batches along axis 0 of every input (``x`` an array or a dict of arrays).

        Outputs are concatenated along axis 0 (a tuple for several outputs)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
        feeds = dict(x) if isinstance(x, dict) else {self.input_names[0]: x} if len(self.inputs) == 1 else None
        if feeds is None:
            raise ValueError(f"this graph has inputs {self.input_names}: pass a dict")
        feeds = {k: np.asarray(v) for k, v in feeds.items()}
        sizes = {v.shape[0] for v in feeds.values() if v.ndim}
        if len(sizes) != 1:
            raise ValueError(f"predict needs every input to have the same batch size; got {sorted(sizes)}")
        n = sizes.pop()
        parts = []
        for s in range(0, n, batch_size):
            r = self.forward({k: v[s:s + batch_size] for k, v in feeds.items()})
            parts.append(r if isinstance(r, tuple) else (r,))
        outs = tuple(np.concatenate([p[i] for p in parts], axis=0) for i in range(len(parts[0])))
        return outs[0] if len(outs) == 1 else outs

    def summary(self, input_shape=None, *, print_fn=print, **kw) -> str:
        """A table of the graph's nodes: name, op, output shape (when ``input_shape`` or ``feeds``
        is given), parameters and bytes; then the op counts."""
        from .summary import graph_summary

        text = graph_summary(self, input_shape, **kw)
        if print_fn is not None:
            print_fn(text)
        return text

    def __repr__(self) -> str:
        ops = ", ".join(f"{k} x{v}" for k, v in list(self.op_counts().items())[:8])
        return (f"Graph({self.name!r}, inputs={self.input_names}, outputs={self.outputs}, "
                f"{len(self.nodes)} nodes: {ops}{', ...' if len(self.op_counts()) > 8 else ''}; "
                f"{self.num_parameters():,} parameters)")

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_lock"] = None
        d["_programs"] = {}
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)
        self._lock = threading.Lock()
