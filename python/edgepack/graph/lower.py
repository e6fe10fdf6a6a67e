"""Module trees as graphs and back: :func:`from_module` and :func:`to_module`.

A hand-built model (``Sequential``, ``Residual``, the layers of :mod:`edgepack.nn`) is lowered to a
:class:`~edgepack.graph.ir.Graph` of ONNX operators, so the graph passes (folding, quantization,
...) are the only implementation of each compression step and work the same on imported and
hand-built models.  Each node is named after the layer it comes from ("0", "2.1", "0.self_attn.q_proj";
a layer lowered to several nodes names the others ``"<layer>/<Op>"``), so reports keep the layers'
dotted names.  Parameters are named like :meth:`~edgepack.nn.Module.named_tensors` ("0.weight").

The way back: :func:`to_module` rebuilds a ``Sequential``/``Residual`` tree from a chain graph
whose nodes map back to layers (every int8 or pruned layer a pass put in an ``edgepack.Layer``
node included), or writes a transformed graph back into a copy of the model it was lowered from
(``like=``), which keeps every container, class and unchanged layer object.
"""

from __future__ import annotations

import copy

import numpy as np

from ..nn.attention import MultiHeadAttention, TransformerEncoderLayer
from ..nn.base import LAYER_REGISTRY, Module, _skip_init
from ..nn.containers import Residual, Sequential
from ..nn.layers import (
    GELU, AvgPool2d, BatchNorm, Conv2d, Dropout, Embedding, Flatten, GlobalAvgPool2d, Identity, LayerNorm,
    Linear, MaxPool2d, ReLU, Reshape, Sigmoid, SiLU, Softmax, Tanh,
)
from .ir import Graph, Node
from .registry import EDGEPACK_DOMAIN

__all__ = ["from_module", "to_module", "layer_from_nodes", "OPSET", "INPUT"]

OPSET = 20            # the first opset with Gelu
INPUT = "input"       # the graph input's name
META = "edgepack.lowered"   # graph.metadata key: {"containers": {path: [class, [children]]}, "input_rank": r}
_ONNX = ("", "ai.onnx")


def _sub(path: str, what: str) -> str:
    """Name of a helper node of layer ``path`` (the layer's main node carries ``path`` itself)."""
    return f"{path}/{what}"


def _join(path: str, name: str) -> str:
    """A dotted name under ``path``: a child layer's ("0.fc") or a parameter's, as
    :meth:`~edgepack.nn.Module.named_tensors` gives it ("0.weight"; "weight" at the root)."""
    return f"{path}.{name}" if path else name


def _owner(name: str) -> str:
    """The layer path a node belongs to ("0.fc/Add" -> "0.fc")."""
    return name.split("/", 1)[0]


class _Lowering:
    """Builds the node list; every value and parameter name is unique."""

    def __init__(self, input_rank: int | None):
        self.nodes: list[Node] = []
        self.params: dict[str, np.ndarray] = {}
        self.used = {INPUT}
        self.containers: dict[str, list] = {}
        self.input_dtype = "float32"
        self.input_rank = input_rank

    def unique(self, base: str) -> str:
        name, k = base, 1
        while name in self.used or not name:
            name = f"{base or 'v'}_{k}"
            k += 1
        self.used.add(name)
        return name

    def param(self, name: str, arr) -> str:
        n = self.unique(name)
        self.params[n] = np.asarray(arr, order="C")
        return n

    def node(self, op: str, inputs: list, name: str, attrs: dict | None = None) -> str:
        out = self.unique(name or op)
        self.nodes.append(Node(op, list(inputs), [out], dict(attrs or {}), name))
        return out

    # -- dispatch ---------------------------------------------------------------------------------
    def lower(self, path: str, m: Module, x: str, rank: int | None) -> tuple[str, int | None]:
        """Append the nodes computing ``m(x)``; returns (output value, its rank or None)."""
        t = type(m)
        leaf = _LEAVES.get(t)
        if leaf is not None:
            return leaf(self, path, m, x, rank)
        if isinstance(m, Sequential) and t.forward is Sequential.forward:
            return self.chain(path, m, x, rank, "Sequential")
        if isinstance(m, Residual) and t.forward is Residual.forward:
            y, _ = self.chain(path, m, x, rank, "Residual")
            return self.node("Add", [x, y], path), rank
        if t is MultiHeadAttention:
            return _attention(self, path, m, x), 3
        if t is TransformerEncoderLayer:
            return _encoder_layer(self, path, m, x), 3
        return self.layer(path, m, x, rank)

    def chain(self, path: str, m: Sequential, x: str, rank, kind: str):
        kids = m.children()
        self.containers[path] = [kind, [k for k, _ in kids]]
        for k, child in kids:
            x, rank = self.lower(_join(path, k), child, x, rank)
        return x, rank

    def layer(self, path: str, m: Module, x: str, rank):
        """A layer without an ONNX equivalent: one ``edgepack.Layer`` node running it."""
        from .ops.layer import layer_node

        where = f"layer {path or '(root)'!r} ({type(m).__name__})"
        if m.children():
            raise ValueError(f"from_module: {where} is a container whose forward edgepack cannot lower "
                             "(known containers: Sequential, Residual, MultiHeadAttention, "
                             "TransformerEncoderLayer)")
        if LAYER_REGISTRY.get(m._layer_name) is not type(m):
            raise ValueError(f"from_module: {where} has no ONNX equivalent and is not a registered layer "
                             "(decorate its class with edgepack.nn.register_layer)")
        out = self.unique(path or type(m).__name__)
        before = set(self.params)
        n = layer_node(m, x, out, path or type(m).__name__, self.params)   # its tensors: "<name>.<tensor>"
        n.name = path
        for k in set(self.params) - before:
            if k in self.used:
                raise ValueError(f"from_module: {where}: tensor name {k!r} is taken")
            self.used.add(k)
        self.nodes.append(n)
        kind = type(m).__name__
        out_rank = 4 if kind in ("QConv2d", "SparseConv2d") else rank if kind in ("QLinear", "SparseLinear") else None
        return out, out_rank


# -- leaves -------------------------------------------------------------------------------------------

def _linear(lw: _Lowering, path: str, m: Linear, x: str, rank):
    # Gemm needs a 2-D input; MatMul + Add works at any rank (the form the graph passes fuse back).
    if rank == 2:
        ins = [x, lw.param(_join(path, "weight"), m.weight)]
        if m.bias is not None:
            ins.append(lw.param(_join(path, "bias"), m.bias))
        return lw.node("Gemm", ins, path, {"transB": 1}), 2
    y = lw.node("MatMul", [x, lw.param(_join(path, "weight"), np.ascontiguousarray(m.weight.T))], path)
    if m.bias is not None:
        y = lw.node("Add", [y, lw.param(_join(path, "bias"), m.bias)], _sub(path, "Add"))
    return y, rank


def _conv(lw: _Lowering, path: str, m: Conv2d, x: str, rank):
    ins = [x, lw.param(_join(path, "weight"), m.weight)]
    if m.bias is not None:
        ins.append(lw.param(_join(path, "bias"), m.bias))
    return lw.node("Conv", ins, path, {"kernel_shape": list(m.weight.shape[2:]), "strides": list(m.stride),
                                       "pads": list(m.padding), "dilations": list(m.dilation),
                                       "group": m.groups}), 4


def _maxpool(lw, path, m: MaxPool2d, x, rank):
    return lw.node("MaxPool", [x], path, {"kernel_shape": list(m.kernel_size), "strides": list(m.stride),
                                          "pads": list(m.padding), "dilations": list(m.dilation)}), 4


def _avgpool(lw, path, m: AvgPool2d, x, rank):
    return lw.node("AveragePool", [x], path, {"kernel_shape": list(m.kernel_size), "strides": list(m.stride),
                                              "pads": list(m.padding),
                                              "count_include_pad": int(m.count_include_pad)}), 4


def _gap(lw, path, m: GlobalAvgPool2d, x, rank):
    y = lw.node("GlobalAveragePool", [x], path)
    if m.keepdims:
        return y, 4
    return lw.node("Flatten", [y], _sub(path, "Flatten"), {"axis": 1}), 2


def _flatten(lw, path, m: Flatten, x, rank):
    s = m.start_dim
    if s < 0:
        if rank is None:
            raise ValueError(f"from_module: layer {path!r} Flatten(start_dim={s}) needs the input's rank; "
                             "pass input_rank=")
        s %= rank
    if s == 1:
        return lw.node("Flatten", [x], path, {"axis": 1}), 2
    # ONNX Flatten always makes 2-D; edgepack's keeps the leading axes: Reshape(0, .., 0, -1)
    shape = lw.param(_join(path, "shape"), np.array([0] * s + [-1], np.int64))
    return lw.node("Reshape", [x, shape], path), s + 1


def _reshape(lw, path, m: Reshape, x, rank):
    shape = lw.param(_join(path, "shape"), np.array(m.shape, np.int64))
    return lw.node("Reshape", [x, shape], path), len(m.shape)


def _embedding(lw, path, m: Embedding, x, rank):
    if x == INPUT:
        lw.input_dtype = "int64"
    y = lw.node("Gather", [lw.param(_join(path, "weight"), m.weight), x], path, {"axis": 0})
    return y, None if rank is None else rank + 1


def _layer_norm(lw, path, m: LayerNorm, x, rank):
    return lw.node("LayerNormalization", [x, lw.param(_join(path, "weight"), m.weight),
                                          lw.param(_join(path, "bias"), m.bias)], path,
                   {"axis": -1, "epsilon": m.eps}), rank


def _batch_norm(lw, path, m: BatchNorm, x, rank):
    ins = [x] + [lw.param(_join(path, k), getattr(m, k)) for k in ("weight", "bias", "running_mean", "running_var")]
    # ONNX's momentum weighs the running statistic, edgepack's the batch one
    return lw.node("BatchNormalization", ins, path, {"epsilon": m.eps, "momentum": 1.0 - m.momentum}), rank


def _unary(op):
    def lower(lw, path, m, x, rank):
        return lw.node(op, [x], path), rank
    return lower


def _silu(lw, path, m, x, rank):
    s = lw.node("Sigmoid", [x], _sub(path, "Sigmoid"))
    return lw.node("Mul", [x, s], path), rank       # x * Sigmoid(x): the form exporters write


def _nothing(lw, path, m, x, rank):
    return x, rank                                    # inference Dropout, Identity


_LEAVES = {
    Linear: _linear, Conv2d: _conv, MaxPool2d: _maxpool, AvgPool2d: _avgpool, GlobalAvgPool2d: _gap,
    Flatten: _flatten, Reshape: _reshape, Embedding: _embedding, LayerNorm: _layer_norm, BatchNorm: _batch_norm,
    ReLU: _unary("Relu"), Tanh: _unary("Tanh"), Sigmoid: _unary("Sigmoid"), SiLU: _silu,
    GELU: lambda lw, path, m, x, rank: (lw.node("Gelu", [x], path, {"approximate": m.approximate}), rank),
    Softmax: lambda lw, path, m, x, rank: (lw.node("Softmax", [x], path, {"axis": m.axis}), rank),
    Dropout: _nothing, Identity: _nothing,
}


# -- attention ----------------------------------------------------------------------------------------

def _attention(lw: _Lowering, path: str, m: MultiHeadAttention, x: str) -> str:
    """MultiHeadAttention.forward without a mask, op for op (the projections are Linear layers the
    passes find as MatMul + Add)."""
    h, d = m.num_heads, m.embed_dim
    dh = d // h
    split = lw.param(_join(path, "heads_shape"), np.array([0, 0, h, dh], np.int64))

    def heads(name, perm):          # [B, T, D] -> [B, H, T, dh] (keys: [B, H, dh, T])
        y, _ = lw.lower(_join(path, name), getattr(m, name), x, 3)
        y = lw.node("Reshape", [y, split], _sub(path, f"{name}_heads"))
        return lw.node("Transpose", [y], _sub(path, f"{name}_transpose"), {"perm": perm})

    q = heads("q_proj", [0, 2, 1, 3])
    k = heads("k_proj", [0, 2, 3, 1])
    v = heads("v_proj", [0, 2, 1, 3])
    s = lw.node("MatMul", [q, k], _sub(path, "scores"))
    s = lw.node("Mul", [s, lw.param(_join(path, "scale"), np.array(1.0 / np.sqrt(dh), np.float32))],
                _sub(path, "scale"))
    a = lw.node("Softmax", [s], _sub(path, "Softmax"), {"axis": -1})
    c = lw.node("MatMul", [a, v], _sub(path, "context"))
    c = lw.node("Transpose", [c], _sub(path, "context_transpose"), {"perm": [0, 2, 1, 3]})
    c = lw.node("Reshape", [c, lw.param(_join(path, "merge_shape"), np.array([0, 0, d], np.int64))],
                _sub(path, "merge_heads"))
    y, _ = lw.lower(_join(path, "out_proj"), m.out_proj, c, 3)
    return y


def _encoder_layer(lw: _Lowering, path: str, m: TransformerEncoderLayer, x: str) -> str:
    """TransformerEncoderLayer.forward without a mask (inference: dropout is the identity)."""
    run = lambda k, v: lw.lower(_join(path, k), getattr(m, k), v, 3)[0]  # noqa: E731

    def ff(v):
        return run("linear2", run("act", run("linear1", v)))

    if m.norm_first:
        x = lw.node("Add", [x, run("self_attn", run("norm1", x))], _sub(path, "attn_residual"))
        return lw.node("Add", [x, ff(run("norm2", x))], _sub(path, "ff_residual"))
    x = run("norm1", lw.node("Add", [x, run("self_attn", x)], _sub(path, "attn_residual")))
    return run("norm2", lw.node("Add", [x, ff(x)], _sub(path, "ff_residual")))


def from_module(model: Module, *, input_rank: int | None = None) -> Graph:
    """Lower an edgepack module tree to a graph computing ``model(x)`` (inference mode).

    Linear -> Gemm (transB=1) when its input is known to be 2-D, else MatMul + Add; Conv2d -> Conv;
    BatchNorm -> BatchNormalization; LayerNorm -> LayerNormalization; ReLU/Tanh/Sigmoid/GELU/Softmax
    -> Relu/Tanh/Sigmoid/Gelu/Softmax; SiLU -> x * Sigmoid(x); MaxPool2d/AvgPool2d/GlobalAvgPool2d
    -> MaxPool/AveragePool/GlobalAveragePool; Flatten -> Flatten or Reshape; Embedding -> Gather;
    Dropout and Identity -> nothing; Sequential -> its children in order; Residual -> its body
    and an Add; MultiHeadAttention and TransformerEncoderLayer -> their operators (no mask).  Any
    other registered layer without children (QLinear, QConv2d, SparseLinear, ...) runs in one
    ``edgepack.Layer`` node.

    Parameters
    ----------
    model : edgepack.nn.Module
        The model (not modified; the graph shares its weight arrays).
    input_rank : int, optional
        Dimensions of the input (2 for (N, features), 4 for (N, C, H, W)); lets Linear layers on a
        2-D input become Gemm nodes (which BatchNorm folds into) and resolves a negative
        ``Flatten(start_dim)``.

    Returns
    -------
    Graph
        One input ``"input"`` (float32; int64 when an Embedding reads it), one output, opset 20.
        ``graph.metadata["edgepack.lowered"]`` records the containers and the input rank, for
        :func:`to_module`.

    Raises
    ------
    TypeError
        ``model`` is not a Module.
    ValueError
        A container whose forward is not one of the known ones, an unregistered layer without an
        ONNX equivalent, or a negative Flatten start_dim without ``input_rank``; the message names
        the layer.
    """
    if not isinstance(model, Module) or isinstance(model, Graph):
        raise TypeError(f"model must be an edgepack.nn module tree (not a Graph); got {type(model).__name__}")
    if input_rank is not None and (isinstance(input_rank, bool) or not isinstance(input_rank, (int, np.integer))
                                   or input_rank < 1):
        raise ValueError(f"input_rank must be a positive integer or None; got {input_rank!r}")
    rank = None if input_rank is None else int(input_rank)
    lw = _Lowering(rank)
    y, _ = lw.lower("", model, INPUT, rank)
    if y == INPUT:      # nothing but identities: a graph output must come from a node
        y = lw.node("Identity", [INPUT], "")
    g = Graph(lw.nodes, [{"name": INPUT, "dtype": lw.input_dtype, "shape": None if rank is None else [None] * rank}],
              [y], lw.params, OPSET, type(model).__name__,
              {META: {"containers": lw.containers, "input_rank": rank}})
    g.check_ops()
    return g


# -- the way back -------------------------------------------------------------------------------------

def _data_input(n: Node) -> str:
    return n.inputs[1] if n.op == "Gather" else n.inputs[0]


def _param(params: dict, v: str, what: str) -> np.ndarray:
    if v not in params:
        raise ValueError(f"{what}: input {v!r} must be a graph parameter")
    return params[v]


def layer_from_nodes(nodes: list[Node], params: dict, opset: int = OPSET) -> Module:
    """The edgepack layer computing a group of nodes (one layer's lowering, or an ``edgepack.Layer``).

    Parameters
    ----------
    nodes : list of Node
        In order; the first reads the group's input, the last writes its output.
    params : dict of str -> ndarray
        The graph's parameters (weights must be among them).
    opset : int
        The graph's opset (Softmax's axis default changed at 13).

    Raises
    ------
    ValueError
        The nodes do not form a pattern with an edgepack layer; the message names them.
    """
    from .ops.layer import build_layer
    from .passes.targets import _conv_layer, _gemm_layer, _matmul_layer

    ops = tuple(n.op if n.domain in _ONNX else f"{n.domain}.{n.op}" for n in nodes)
    a = nodes[0].attrs
    where = "nodes " + ", ".join(n.label() for n in nodes)
    chained = all(_data_input(b) == p.outputs[0] or p.outputs[0] in b.inputs for p, b in zip(nodes, nodes[1:]))
    if not chained:
        raise ValueError(f"{where} do not form a chain")
    with _skip_init():     # layers built through __init__ make no random draws (nn.seed's stream)
        if ops == (f"{EDGEPACK_DOMAIN}.Layer",):
            if a.get("conv1d", 0):
                raise ValueError(f"{where}: a 1-D convolution has no edgepack layer")
            return build_layer(nodes[0], [params.get(v) for v in nodes[0].inputs])
        if ops == ("Gemm",):
            layer = _gemm_layer(nodes[0], params)
        elif ops in (("MatMul",), ("MatMul", "Add")):
            layer = _matmul_layer(nodes[0], params)
            if layer is not None and len(nodes) == 2:
                b = [v for v in nodes[1].inputs if v != nodes[0].outputs[0]]
                c = params.get(b[0]) if len(b) == 1 else None
                if c is None or c.shape[-1:] != (layer.out_features,) or c.size != layer.out_features:
                    layer = None
                else:
                    layer.bias = np.asarray(c, np.float32).reshape(-1)
        elif ops == ("Conv",):
            r = _conv_layer(nodes[0], params)
            layer = r[0] if r is not None and not r[1] else None
        elif ops in (("Relu",), ("Tanh",), ("Sigmoid",)):
            layer = {"Relu": ReLU, "Tanh": Tanh, "Sigmoid": Sigmoid}[ops[0]]()
        elif ops == ("Sigmoid", "Mul"):
            layer = SiLU() if sorted(nodes[1].inputs) == sorted([nodes[0].inputs[0], nodes[0].outputs[0]]) else None
        elif ops == ("Gelu",):
            layer = GELU(str(a.get("approximate", "none")))
        elif ops == ("Softmax",):
            layer = Softmax(int(a.get("axis", -1))) if opset >= 13 else None
        elif ops in (("MaxPool",), ("AveragePool",)):
            layer = _pool(nodes[0])
        elif ops == ("GlobalAveragePool",):
            layer = GlobalAvgPool2d(keepdims=True)
        elif ops == ("GlobalAveragePool", "Flatten"):
            layer = GlobalAvgPool2d() if int(nodes[1].attrs.get("axis", 1)) == 1 else None
        elif ops == ("Flatten",):
            layer = Flatten(1) if int(a.get("axis", 1)) == 1 else None
        elif ops == ("Reshape",):
            shape = _param(params, nodes[0].inputs[1], where)
            layer = Reshape(shape.reshape(-1).tolist()) if not a.get("allowzero", 0) else None
        elif ops == ("Gather",):
            w = _param(params, nodes[0].inputs[0], where)
            layer = Embedding.from_weights(w) if int(a.get("axis", 0)) == 0 and w.ndim == 2 else None
        elif ops == ("LayerNormalization",):
            layer = _layer_norm_from(nodes[0], params, where)
        elif ops == ("BatchNormalization",):
            t = [_param(params, v, where) for v in nodes[0].inputs[1:5]]
            layer = BatchNorm(t[0].size, float(a.get("epsilon", 1e-5)), 1.0 - float(a.get("momentum", 0.9)))
            for k, v in zip(("weight", "bias", "running_mean", "running_var"), t):
                setattr(layer, k, np.asarray(v, np.float32).reshape(-1))
        elif ops in (("Identity",), ("Dropout",)):
            layer = Identity()
        else:
            layer = None
    if layer is None:
        raise ValueError(f"{where} ({' -> '.join(ops)}) do not map to an edgepack layer")
    return layer


def _pool(n: Node):
    a = n.attrs
    if a.get("ceil_mode", 0) or str(a.get("auto_pad", "NOTSET")) != "NOTSET" or len(a.get("kernel_shape") or []) != 2:
        return None
    k = tuple(int(v) for v in a["kernel_shape"])
    strides = tuple(int(v) for v in (a.get("strides") or (1, 1)))     # ONNX's default stride is 1
    pads = tuple(int(v) for v in (a.get("pads") or (0, 0, 0, 0)))
    if n.op == "MaxPool":
        if a.get("storage_order", 0):
            return None
        return MaxPool2d(k, strides, pads, tuple(int(v) for v in (a.get("dilations") or (1, 1))))
    if any(int(v) != 1 for v in (a.get("dilations") or (1, 1))):
        return None
    return AvgPool2d(k, strides, pads, bool(a.get("count_include_pad", 0)))


def _layer_norm_from(n: Node, params: dict, where: str):
    w = _param(params, n.inputs[1], where)
    b = _param(params, n.inputs[2], where) if len(n.inputs) > 2 and n.inputs[2] else np.zeros(w.shape, np.float32)
    if int(n.attrs.get("axis", -1)) != -1 or w.ndim != 1 or b.shape != w.shape:
        return None
    layer = LayerNorm(w.size, float(n.attrs.get("epsilon", 1e-5)))
    layer.weight, layer.bias = np.asarray(w, np.float32), np.asarray(b, np.float32)
    return layer


def _groups(graph: Graph) -> dict[str, list[Node]]:
    out: dict[str, list[Node]] = {}
    for n in graph.nodes:
        out.setdefault(_owner(n.name), []).append(n)
    return out


def _same(a: list[Node], pa: dict, b: list[Node], pb: dict) -> bool:
    """Two node groups compute the same thing: ops, attributes and parameter values agree (the
    names of runtime inputs may differ: passes rename values)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if (x.op, x.domain, len(x.inputs)) != (y.op, y.domain, len(y.inputs)) or \
                x.to_json()[5] != y.to_json()[5]:
            return False
        for u, v in zip(x.inputs, y.inputs):
            if (u in pa) != (v in pb):
                return False
            if u in pa and not (pa[u].dtype == pb[v].dtype and np.array_equal(pa[u], pb[v])):
                return False
    return True


def _install(root: Module, path: str, new: Module) -> Module:
    if path == "":
        return new
    parent, _, child = path.rpartition(".")
    dict(root.named_modules())[parent].set_child(child, new)
    return root


def _write_back(graph: Graph, like: Module) -> Module:
    meta = graph.metadata.get(META) or {}
    base = from_module(like, input_rank=meta.get("input_rank"))
    out = copy.deepcopy(like)
    mods = dict(out.named_modules())
    if not out.children():      # one layer: every node of the graph is its
        qn = list(graph.nodes)
        if _same(base.nodes, base.params, qn, graph.params):
            return out
        return layer_from_nodes(qn, graph.params, graph.opset)
    b_groups, q_groups = _groups(base), _groups(graph)
    unknown = [n for n in q_groups if n not in b_groups]
    if unknown:
        raise ValueError(f"to_module: nodes {unknown[:5]} do not come from a layer of `like` "
                         f"({type(like).__name__}); it must be the model the graph was lowered from")
    for path, bn in b_groups.items():
        m = mods.get(path)
        qn = q_groups.get(path)
        if m is None or m.children():
            # A container's own operators (Residual's Add, attention's softmax): kept as they are.
            if qn is None or not _same(bn, base.params, qn, graph.params):
                raise ValueError(f"to_module: the operators of container {path or '(root)'!r} "
                                 f"({type(m).__name__}) changed; they cannot be written back")
            continue
        if qn is None:
            new = Identity()       # fused (an activation) or folded (a BatchNorm) into another layer
        elif _same(bn, base.params, qn, graph.params):
            continue
        else:
            new = layer_from_nodes(qn, graph.params, graph.opset)
        out = _install(out, path, new)
        mods = dict(out.named_modules())
    return out


def _rebuild(graph: Graph) -> Module:
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ValueError(f"to_module: a chain graph has one input and one output; this one has inputs "
                         f"{graph.input_names} and outputs {graph.outputs}")
    meta = graph.metadata.get(META) or {}
    containers = meta.get("containers") or {}
    params = graph.params

    def check_input(nodes, cur):
        if _data_input(nodes[0]) != cur:
            raise ValueError(f"to_module: {nodes[0].label()} reads {_data_input(nodes[0])!r}, not the previous "
                             f"layer's output {cur!r}: the graph is not a chain")

    if META in graph.metadata and not containers:
        # Lowered from a single layer: the whole graph is that layer.
        check_input(graph.nodes, graph.input_names[0])
        if graph.nodes[-1].outputs[0] != graph.outputs[0]:
            raise ValueError(f"to_module: the graph's output {graph.outputs[0]!r} is not its last node's")
        return layer_from_nodes(graph.nodes, params, graph.opset)
    if not containers:
        # No record of a module tree (e.g. an imported graph): one layer per node, or per
        # MatMul + Add / x * Sigmoid(x) / GlobalAveragePool + Flatten pair, in a Sequential.
        nodes, cur, layers, i = graph.nodes, graph.input_names[0], [], 0
        while i < len(nodes):
            take = 2 if i + 1 < len(nodes) and (nodes[i].op, nodes[i + 1].op) in (
                ("MatMul", "Add"), ("Sigmoid", "Mul"), ("GlobalAveragePool", "Flatten")) and \
                nodes[i].outputs[0] in nodes[i + 1].inputs else 1
            check_input(nodes[i:i + take], cur)
            layers.append(layer_from_nodes(nodes[i:i + take], params, graph.opset))
            cur = nodes[i + take - 1].outputs[0]
            i += take
        if cur != graph.outputs[0]:
            raise ValueError(f"to_module: the chain ends at {cur!r}, not the graph output {graph.outputs[0]!r}")
        return Sequential(*layers)

    groups = _groups(graph)

    def build(path: str, cur: str):
        spec = containers.get(path)
        if spec is None:
            nodes = groups.pop(path, None)
            if nodes is None:
                return Identity(), cur     # fused or folded away (or an inference identity)
            check_input(nodes, cur)
            return layer_from_nodes(nodes, params, graph.opset), nodes[-1].outputs[0]
        kind, kids = spec
        start, mods = cur, []
        for k in kids:
            m, cur = build(_join(path, k), cur)
            mods.append(m)
        if kind == "Residual":
            add = groups.pop(path, [])
            if len(add) != 1 or add[0].op != "Add" or sorted(add[0].inputs) != sorted([start, cur]):
                raise ValueError(f"to_module: Residual {path or '(root)'!r} needs one Add of its input and "
                                 "its body's output")
            return Residual(*mods), add[0].outputs[0]
        return Sequential(*mods), cur

    model, cur = build("", graph.input_names[0])
    if groups or cur != graph.outputs[0]:
        left = [n.label() for ns in groups.values() for n in ns][:5]
        raise ValueError(f"to_module: the graph is not the chain its layer names describe (left over: {left}; "
                         f"chain ends at {cur!r}, the output is {graph.outputs[0]!r})")
    return model


def to_module(graph: Graph, like: Module | None = None) -> Module:
    """A module tree computing ``graph``: the way back from :func:`from_module`.

    Without ``like``: ``graph`` must be a chain (one input, one output, each layer reading the
    previous one's output).  A graph from :func:`from_module` (or a pass over one, e.g.
    :func:`edgepack.quantize`) gets its Sequential/Residual nesting back from its layer names, a
    layer fused or folded away (an activation in an int8 layer, a folded BatchNorm) becomes
    Identity, as do Dropout layers; any other chain becomes one flat Sequential.  Node groups map
    back as Gemm/MatMul(+Add) -> Linear, Conv -> Conv2d, ``edgepack.Layer`` -> the layer it runs
    (QLinear, QConv2d, SparseLinear, ...), and the other operators :func:`from_module` writes to
    their layers.

    With ``like`` (the model ``graph`` was lowered from): a deep copy of ``like`` in which each
    layer whose nodes changed is replaced by the layer its new nodes map to, and each layer whose
    nodes are gone by Identity; containers of any kind, the classes of unchanged layers and the
    structure are kept.

    Parameters
    ----------
    graph : Graph
    like : edgepack.nn.Module, optional

    Returns
    -------
    edgepack.nn.Module

    Raises
    ------
    ValueError
        The graph is not a chain (without ``like``), a node group has no edgepack layer, or the
        graph has nodes that do not come from ``like``; the message names the nodes.
    """
    if not isinstance(graph, Graph):
        raise TypeError(f"graph must be an edgepack Graph; got {type(graph).__name__}")
    if like is not None:
        if not isinstance(like, Module) or isinstance(like, Graph):
            raise TypeError(f"like must be the module tree the graph was lowered from; got {type(like).__name__}")
        return _write_back(graph, like)
    return _rebuild(graph)
