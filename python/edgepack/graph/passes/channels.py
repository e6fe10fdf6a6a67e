"""Channel dependency groups and structured channel pruning of a :class:`~edgepack.graph.ir.Graph`.

Removing output channel ``i`` of a Conv is only correct when every tensor that channel flows
into loses its channel ``i`` too: the BatchNorm after it, the depthwise conv that reads it, the
consumers' input columns, and whatever a residual Add, a Concat or a squeeze-excitation Mul ties
to it.  Torch-Pruning (Fang et al., "DepGraph", CVPR 2023) finds these couplings by walking a
dependency graph from a root layer and mapping indices per edge.  This module reaches the same
groups with a flat data-flow pass written for NumPy graphs:

1. *Atoms.* Every output channel of a producer (Conv, ConvTranspose, Gemm, MatMul with a constant
   weight) is a fresh integer atom.  Each value that carries channels gets a *label array*: the
   atom of each entry along its channel axis.  Pass-through ops (activations, BatchNorm, pools,
   Resize, ...) copy their input's labels; Transpose/Squeeze/Unsqueeze/Reshape move the axis;
   Concat concatenates label arrays (the offsets come for free); a depthwise conv repeats its
   input labels; Flatten (or a Reshape merging the channel axis with the axes after it) repeats
   each label over the merged block, so ``Flatten -> Gemm`` maps channel ``c`` to features
   ``[c*s, (c+1)*s)``.
2. *Coupling.* An elementwise op (Add, Mul, ...) whose operands carry channels on the same
   output axis unions their atoms pairwise (union-find): a residual Add ties its operands'
   channels, an SE gate ties the channels it scales.  An atom class is one removable channel;
   classes connected through unions form a *group* (the layers pruned together).
3. *Blocking.* Whatever cannot follow a channel removal freezes the atoms it sees, with the reason
   kept for the report: graph outputs, ops that mix channels (LayerNormalization or a Reduce over
   the channel axis, Softmax over it, a Reshape splitting it into heads, grouped convs, a
   dynamic MatMul, unknown ops), and elementwise ops with a tensor of the same width that
   cannot be sliced.
4. *Rewrite.* Removing a set of classes slices every recorded parameter along its axis (producer
   rows, consumer columns, BatchNorm statistics, broadcast constants), updates depthwise
   ``group`` attributes and constant Reshape/Resize sizes, and checks the new graph by running it
   on the example input: every value must have the shape predicted from the labels.

Shapes come from one run of the graph on an example input (``example=``), so dynamic shape
subgraphs, Flatten sizes and Reshape targets are known exactly.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..ir import Graph
from ..registry import fill_attrs, get_op

__all__ = ["ChannelAnalysis", "ChannelGroup", "PruneReport", "analyze_channels", "prune_channels",
           "graph_flops", "example_feeds", "IMPORTANCES"]

IMPORTANCES = ("l1", "l2", "bn_scale", "taylor")

_UNARY = {
    "Relu", "LeakyRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Softplus",
    "Softsign", "Gelu", "Erf", "Exp", "Log", "Sqrt", "Reciprocal", "Neg", "Abs", "Mish", "Swish",
    "ThresholdedRelu", "Clip", "Cast", "CastLike", "Identity", "Dropout", "Floor", "Ceil", "Round", "Sign", "Sin",
    "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Not", "IsNaN",
    "IsInf", "Shrink",
}
_BROADCAST = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "Equal", "Less",
              "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor", "PRelu", "Mod", "BitShift"}
_SPATIAL = {"MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"}
_REDUCE = {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
           "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin"}
_SHAPE_ONLY = {"Shape", "Size"}
_KEEP_INT = 256      # integer values up to this size are kept from the example run (shape tensors)


# -- example input ----------------------------------------------------------------------------------

def example_feeds(graph: Graph, example=None, *, rows: int | None = 2) -> dict:
    """Feeds for one run of ``graph``: ``example`` (an array for a one-input graph or a dict), cut
    to ``rows`` rows, or zeros built from the declared input shapes when every dimension after the
    batch axis is fixed.

    Two rows (repeated from one when needed, unless the graph fixes its batch size) keep the
    batch axis distinguishable from size-1 axes when shapes are traced."""
    names = graph.input_names
    if example is not None:
        if isinstance(example, dict):
            feeds = {k: np.asarray(v) for k, v in example.items()}
        elif len(names) == 1:
            feeds = {names[0]: np.asarray(example)}
        else:
            raise ValueError(f"example: the graph has inputs {names}; pass a dict of arrays")
        if rows is not None:
            fixed = {i["name"]: i["shape"] for i in graph.inputs}
            out = {}
            for k, v in feeds.items():
                if v.ndim:
                    v = v[:rows]
                    s0 = (fixed.get(k) or [None])[0]
                    if v.shape[0] < rows and not (isinstance(s0, int) and s0 > 0) and v.shape[0]:
                        v = np.concatenate([v] * -(-rows // v.shape[0]))[:rows]
                out[k] = v
            feeds = out
        return feeds
    feeds = {}
    for spec in graph.inputs:
        shape = spec["shape"]
        if shape is None:
            raise ValueError(f"example: graph input {spec['name']!r} has no declared shape; pass example= "
                             "(an input batch) so shapes can be traced")
        dims = []
        for ax, d in enumerate(shape):
            if isinstance(d, int) and d > 0:
                dims.append(d)
            elif ax == 0:
                dims.append(rows or 1)
            else:
                raise ValueError(f"example: graph input {spec['name']!r} has dimension {ax} = {d!r} (not fixed); "
                                 f"pass example= (an input batch) so shapes can be traced")
        feeds[spec["name"]] = np.zeros(dims, np.dtype(spec["dtype"] or "float32"))
    return feeds


def _trace(graph: Graph, feeds: dict):
    """Shapes of every value and the small integer values (shape tensors) of one run."""
    names = [v for n in graph.nodes for v in n.outputs if v]
    vals = graph.run(feeds, outputs=names) if names else {}
    vals.update({k: np.asarray(v) for k, v in feeds.items()})
    shapes = {k: tuple(np.shape(v)) for k, v in vals.items()}
    small = {k: np.asarray(v) for k, v in vals.items()
             if isinstance(v, np.ndarray) and v.dtype.kind in "iub" and v.size <= _KEEP_INT}
    for k, v in graph.params.items():
        shapes[k] = tuple(v.shape)
    return shapes, small


# -- FLOPs ------------------------------------------------------------------------------------------

def _layer_node_macs(n, shapes) -> tuple[int, bool]:
    import json

    try:
        cfg = json.loads(n.attrs.get("config", "{}"))
    except ValueError:
        return 0, False
    out = shapes.get(n.outputs[0])
    if out is None or not isinstance(cfg, dict):
        return 0, False
    if "in_features" in cfg and "out_features" in cfg:
        return _prod(out[:-1]) * int(cfg["in_features"]) * int(cfg["out_features"]), False
    if "in_channels" in cfg and "kernel_size" in cfg:
        g = int(cfg.get("groups", 1))
        return _prod(out) * (int(cfg["in_channels"]) // g) * _prod(cfg["kernel_size"]), True
    return 0, False


def _node_macs(n, shapes) -> int:
    """Multiply-adds of one Conv/ConvTranspose/Gemm/MatMul/Layer node at the traced shapes."""
    try:
        if n.op == "Conv":
            return _prod(shapes[n.outputs[0]]) * _prod(shapes[n.inputs[1]][1:])
        if n.op == "ConvTranspose":
            return _prod(shapes[n.inputs[0]]) * _prod(shapes[n.inputs[1]][1:])
        if n.op == "Gemm":
            a = shapes[n.inputs[0]]
            return _prod(shapes[n.outputs[0]]) * int(a[0] if n.attrs.get("transA", 0) else a[-1])
        if n.op == "MatMul":
            return _prod(shapes[n.outputs[0]]) * int(shapes[n.inputs[0]][-1])
        if n.op == "Layer":
            return _layer_node_macs(n, shapes)[0]
    except (KeyError, IndexError):
        pass
    return 0


def _batch(graph: Graph, shapes) -> int:
    for spec in graph.inputs:
        s = shapes.get(spec["name"])
        if s:
            return max(1, int(s[0]))
    return 1


def graph_flops(graph: Graph, example=None, shapes=None) -> dict:
    """Multiply-adds of the weight layers for one input row.

    Parameters
    ----------
    graph : edgepack.nn.Graph
    example : ndarray or dict, optional
        An input batch to trace shapes (see :func:`example_feeds`).

    Returns
    -------
    dict
        ``{"conv": MACs of Conv/ConvTranspose, "matmul": MACs of Gemm/MatMul, "total": both}`` per
        input row (FLOPs are twice these).  Layer nodes (int8 or sparse layers made by edgepack's
        passes) count like the dense layer they replace.
    """
    if shapes is None:
        shapes, _ = _trace(graph, example_feeds(graph, example))
    conv = mm = 0
    for n in graph.nodes:
        m = _node_macs(n, shapes)
        if n.op in ("Conv", "ConvTranspose") or (n.op == "Layer" and _layer_node_macs(n, shapes)[1]):
            conv += m
        else:
            mm += m
    b = _batch(graph, shapes)
    return {"conv": conv // b, "matmul": mm // b, "total": (conv + mm) // b}


def _file_bytes(graph: Graph) -> int:
    from ...compare import file_size

    return file_size(graph)


# -- the analysis -----------------------------------------------------------------------------------

@dataclasses.dataclass
class _Lab:
    axis: int
    labels: np.ndarray   # int64 atom per entry along ``axis``


@dataclasses.dataclass
class _Producer:
    index: int          # node index
    out: str            # value written
    atoms: np.ndarray   # its output channels' atoms
    kind: str           # "Conv", "Gemm", ... or "input" (channels entering the graph: never pruned)


@dataclasses.dataclass
class ChannelGroup:
    """Channels that must be removed together.

    Attributes
    ----------
    name : str
        The first producer's node name (or output value): what ``skip`` and per-group amounts use.
    members : list of str
        Every node the group touches, as ``"<op> <name> (<role>)"``: roles are ``out`` (its output
        channels), ``in`` (input channels of a consumer), ``dw`` (depthwise: both), ``param``
        (BatchNorm statistics, broadcast constants), ``shape`` (a Reshape/Resize size rewritten).
    channels : int
        Removable channels (atom classes) in the group.
    prunable : bool
        False when something blocks the removal (``reason`` says what).
    reason : str
        Why the group is left whole ("" when prunable).
    """

    name: str
    members: list
    channels: int
    prunable: bool
    reason: str
    producers: list = dataclasses.field(default_factory=list, repr=False)   # node indices
    classes: np.ndarray = dataclasses.field(default=None, repr=False)      # atom roots
    blocks: list = dataclasses.field(default_factory=list, repr=False)     # lists of class positions


class _UF:
    def __init__(self):
        self.parent: list[int] = []
        self.frozen: dict[int, str] = {}

    def new(self, n: int) -> np.ndarray:
        s = len(self.parent)
        self.parent.extend(range(s, s + n))
        return np.arange(s, s + n, dtype=np.int64)

    def find(self, a: int) -> int:
        p = self.parent
        root = a
        while p[root] != root:
            root = p[root]
        while p[a] != root:
            p[a], a = root, p[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        if rb in self.frozen:
            self.frozen.setdefault(ra, self.frozen.pop(rb))

    def freeze(self, atoms, reason: str) -> None:
        for a in np.unique(atoms):
            r = self.find(int(a))
            self.frozen.setdefault(r, reason)

    def roots(self, atoms: np.ndarray) -> np.ndarray:
        return np.fromiter((self.find(int(a)) for a in atoms), np.int64, count=len(atoms))


def _prod(s) -> int:
    return int(np.prod(s, dtype=np.int64)) if len(s) else 1


def _reshape_axis(src: tuple, dst: tuple, axis: int):
    """Where channel axis ``axis`` of a ``src``-shaped tensor lands after a row-major reshape to
    ``dst``: ``(axis, repeat, tile)`` with out labels ``tile(repeat(labels, repeat), tile)``, or
    None when the channel axis is split or merged with the batch axis."""
    c = src[axis]
    pre = _prod(src[:axis])
    acc = 1
    for j, d in enumerate(dst):
        if acc == pre and d == c:
            return j, 1, 1
        if acc * d > pre:
            break
        acc *= d
    # merged: dst[j] covers src[a0:b] with a0 <= axis < b, a0 >= 1 (never the batch axis)
    acc = 1
    for j, d in enumerate(dst):
        # find a0 with prod(src[:a0]) == acc
        for a0 in range(1, axis + 1):
            if _prod(src[:a0]) == acc:
                for b in range(axis + 1, len(src) + 1):
                    if _prod(src[a0:b]) == d and (b - a0) > 1:
                        return j, _prod(src[axis + 1:b]), _prod(src[a0:axis])
        acc *= d
        if acc > pre:
            break
    return None


class ChannelAnalysis:
    """The channel dependency analysis of a graph (see the module docstring).

    Build it with :func:`analyze_channels`; ``groups`` lists every :class:`ChannelGroup`.
    """

    def __init__(self, graph: Graph, feeds: dict):
        self.graph = graph
        self.feeds = feeds
        self.shapes, self.small = _trace(graph, feeds)
        self.batch = _batch(graph, self.shapes)
        self.uf = _UF()
        self.labels: dict[str, _Lab] = {}
        self.producers: list[_Producer] = []
        self.atom_producer: list[int] = []       # atom -> index in self.producers
        # (node index, input position) -> list of ("slice", axis, labels) / ("set", entry, labels)
        self.edits: dict[tuple[int, int], list] = {}
        self.group_attr: dict[int, np.ndarray] = {}     # depthwise node -> input labels
        self.roles: dict[int, list] = {}                 # atom -> [(node index, role)]
        self.consumers: list[tuple[int, int, int, np.ndarray]] = []   # (node, input pos, weight axis, labels)
        self.bn: list[tuple[int, np.ndarray]] = []       # BatchNormalization node -> labels
        self.depthwise: list[tuple[int, np.ndarray]] = []  # dw conv node -> output labels
        self.dynamic: list[tuple[int, np.ndarray]] = []    # Reshape with a computed shape -> labels
        params = graph.params
        self.params = params
        for i, n in enumerate(graph.nodes):
            d = get_op(n.op, n.domain, graph.opset)
            attrs = fill_attrs(d, n.attrs)[0] if d is not None else dict(n.attrs)
            try:
                self._node(i, n, attrs)
            except (KeyError, IndexError, ValueError, TypeError) as e:  # be safe: an odd node blocks
                self._unknown(i, n, f"{n.label()} could not be analysed ({e})")
        for o in graph.outputs:
            lab = self.labels.get(o)
            if lab is not None:
                self.uf.freeze(lab.labels, f"feeds graph output {o!r}")
        self.groups = self._groups()

    # -- helpers ----------------------------------------------------------------------------------
    def _fresh(self, i: int, value: str, c: int, kind: str) -> np.ndarray:
        atoms = self.uf.new(c)
        self.producers.append(_Producer(i, value, atoms, kind))
        self.atom_producer.extend([len(self.producers) - 1] * c)
        return atoms

    def _role(self, labels, i, role):
        for a in np.unique(labels):
            self.roles.setdefault(int(a), []).append((i, role))

    def _edit(self, i: int, pos: int, kind: str, axis: int, labels: np.ndarray) -> None:
        self.edits.setdefault((i, pos), []).append((kind, axis, labels))

    def _is_param(self, v: str) -> bool:
        return bool(v) and v in self.params

    def _freeze_inputs(self, n, reason: str) -> None:
        for v in n.inputs:
            lab = self.labels.get(v)
            if lab is not None:
                self.uf.freeze(lab.labels, reason)

    def _unknown(self, i, n, reason=None) -> None:
        self._freeze_inputs(n, reason or f"reaches {n.label()}, which edgepack cannot prune through")

    def _set(self, v: str, axis: int, labels: np.ndarray) -> None:
        if v:
            self.labels[v] = _Lab(int(axis), np.asarray(labels, np.int64))

    def _ints(self, v: str):
        if not v:
            return None
        a = self.params.get(v)
        if a is None:
            a = self.small.get(v)
        return None if a is None else [int(t) for t in np.asarray(a).reshape(-1)]

    # -- per node ---------------------------------------------------------------------------------
    def _node(self, i: int, n, a: dict) -> None:
        op = n.op if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op}"
        x = self.labels.get(n.inputs[0]) if n.inputs else None
        if op == "Conv":
            return self._conv(i, n, a, x)
        if op == "ConvTranspose":
            return self._conv_transpose(i, n, a, x)
        if op == "Gemm":
            return self._gemm(i, n, a, x)
        if op == "MatMul":
            return self._matmul(i, n, x)
        if op in _SHAPE_ONLY:
            return
        if op == "BatchNormalization" or op == "InstanceNormalization":
            if x is None:
                return self._unknown(i, n)
            if x.axis != 1:
                return self._unknown(i, n, f"{n.label()} normalizes axis 1 but the channels are on axis {x.axis}")
            k = 5 if op == "BatchNormalization" else 3
            for p in range(1, min(k, len(n.inputs))):
                if not self._is_param(n.inputs[p]):
                    return self._unknown(i, n, f"{n.label()} has non-constant parameters")
                self._edit(i, p, "slice", 0, x.labels)
            self._role(x.labels, i, "param")
            if op == "BatchNormalization":
                self.bn.append((i, x.labels))
            for o in n.outputs[:1]:
                self._set(o, 1, x.labels)
            return
        if op in _UNARY:
            if x is not None:
                for o in n.outputs:
                    self._set(o, x.axis, x.labels)
            return
        if op in _BROADCAST:
            return self._broadcast(i, n)
        if op in _SPATIAL:
            if x is None:
                return
            if x.axis != 1:
                return self._unknown(i, n, f"{n.label()} pools spatial axes but the channels are on axis {x.axis}")
            if len(n.outputs) > 1 and n.outputs[1]:
                return self._unknown(i, n, f"{n.label()} returns indices that count channels")
            self._set(n.outputs[0], 1, x.labels)
            return
        if op in ("Resize", "Upsample"):
            return self._resize(i, n, x)
        if op == "Pad":
            return self._pad(i, n, a, x)
        if op == "Concat":
            return self._concat(i, n, a)
        if op == "Transpose":
            if x is None:
                return
            nd = len(self.shapes[n.inputs[0]])
            perm = list(a.get("perm") or range(nd - 1, -1, -1))
            self._set(n.outputs[0], perm.index(x.axis), x.labels)
            return
        if op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze"):
            return self._reshape(i, n, x)
        if op in ("Slice", "Split"):
            return self._slice_split(i, n, a, x)
        if op == "Gather":
            if x is None:
                self._freeze_inputs(n, f"{n.label()} gathers with channel-dependent indices")
                return
            ax = int(a.get("axis", 0)) % len(self.shapes[n.inputs[0]])
            if ax == x.axis:
                return self._unknown(i, n, f"{n.label()} gathers along the channel axis")
            r = len(self.shapes[n.inputs[1]])
            self._set(n.outputs[0], x.axis if x.axis < ax else x.axis + r - 1, x.labels)
            return
        if op in _REDUCE:
            return self._reduce(i, n, a, x)
        if op in ("Softmax", "LogSoftmax", "Hardmax"):
            if x is None:
                return
            nd = len(self.shapes[n.inputs[0]])
            ax = int(a.get("axis", 1 if self.graph.opset < 13 else -1)) % nd
            if (self.graph.opset < 13 and x.axis >= ax) or x.axis == ax:
                return self._unknown(i, n, f"{n.label()} normalizes over the channel axis")
            self._set(n.outputs[0], x.axis, x.labels)
            return
        if op in ("LayerNormalization", "MeanVarianceNormalization", "LpNormalization"):
            if x is None:
                return
            nd = len(self.shapes[n.inputs[0]])
            if op == "LayerNormalization":
                axes = range(int(a.get("axis", -1)) % nd, nd)
            elif op == "LpNormalization":
                axes = [int(a.get("axis", -1)) % nd]
            else:
                axes = [int(t) % nd for t in (a.get("axes") or [0, 2, 3])]
            if x.axis in axes:
                return self._unknown(i, n, f"{n.label()} normalizes over the channel axis")
            self._set(n.outputs[0], x.axis, x.labels)
            return
        return self._unknown(i, n)

    # -- producers and consumers ----------------------------------------------------------------------
    def _consume(self, i, n, pos_w: int, w_axis: int, x: _Lab | None, x_axis: int) -> bool:
        """Record that input 0's channels are read along ``w_axis`` of weight input ``pos_w``."""
        if x is None:
            return True
        if x.axis != x_axis:
            self.uf.freeze(x.labels, f"{n.label()} reads the channels on axis {x.axis}, not {x_axis}")
            return False
        self._edit(i, pos_w, "slice", w_axis, x.labels)
        self._role(x.labels, i, "in")
        self.consumers.append((i, pos_w, w_axis, x.labels))
        return True

    def _const_weight(self, n):
        """The node's constant weight (input 1), or None after freezing its inputs when the
        weight or the bias is computed."""
        w = n.inputs[1] if len(n.inputs) > 1 else ""
        if not self._is_param(w) or (len(n.inputs) > 2 and n.inputs[2] and not self._is_param(n.inputs[2])):
            self._freeze_inputs(n, f"{n.label()} has a non-constant weight or bias")
            return None
        return self.params[w]

    def _conv(self, i, n, a, x):
        out = n.outputs[0]
        W = self._const_weight(n)
        if W is None:
            return
        cin = self.shapes[n.inputs[0]][1]
        cout = W.shape[0]
        g = int(a.get("group", 1))
        has_b = len(n.inputs) > 2 and bool(n.inputs[2])
        if g == 1:
            self._consume(i, n, 1, 1, x, 1)
            atoms = self._fresh(i, out, cout, "Conv")
            self._edit(i, 1, "slice", 0, atoms)
            if has_b:
                self._edit(i, 2, "slice", 0, atoms)
            self._role(atoms, i, "out")
            self._set(out, 1, atoms)
            return
        if g == cin and W.shape[1] == 1 and cout % cin == 0:
            if x is None or x.axis != 1:
                if x is not None:
                    self.uf.freeze(x.labels, f"{n.label()} (depthwise) reads channels on axis {x.axis}")
                atoms = self._fresh(i, out, cout, "Conv")
                self.uf.freeze(atoms, f"{n.label()} is depthwise over channels that cannot be removed")
                self._set(out, 1, atoms)
                return
            labs = np.repeat(x.labels, cout // cin)
            self._edit(i, 1, "slice", 0, labs)
            if has_b:
                self._edit(i, 2, "slice", 0, labs)
            self.group_attr[i] = x.labels
            self._role(x.labels, i, "dw")
            self.depthwise.append((i, labs))
            self._set(out, 1, labs)
            return
        if x is not None:
            self.uf.freeze(x.labels, f"{n.label()} is a grouped convolution (group={g})")
        atoms = self._fresh(i, out, cout, "Conv")
        self.uf.freeze(atoms, f"{n.label()} is a grouped convolution (group={g})")
        self._set(out, 1, atoms)

    def _conv_transpose(self, i, n, a, x):
        out = n.outputs[0]
        W = self._const_weight(n)
        if W is None:
            return
        g = int(a.get("group", 1))
        cout = W.shape[1] * g
        has_b = len(n.inputs) > 2 and bool(n.inputs[2])
        if g != 1:
            if x is not None:
                self.uf.freeze(x.labels, f"{n.label()} is a grouped transposed convolution")
            atoms = self._fresh(i, out, cout, "ConvTranspose")
            self.uf.freeze(atoms, f"{n.label()} is a grouped transposed convolution")
            self._set(out, 1, atoms)
            return
        self._consume(i, n, 1, 0, x, 1)
        atoms = self._fresh(i, out, cout, "ConvTranspose")
        self._edit(i, 1, "slice", 1, atoms)
        if has_b:
            self._edit(i, 2, "slice", 0, atoms)
        self._role(atoms, i, "out")
        self._set(out, 1, atoms)

    def _gemm(self, i, n, a, x):
        w = n.inputs[1]
        if not self._is_param(w) or a.get("transA", 0) or n.inputs[0] in self.params:
            self._freeze_inputs(n, f"{n.label()} is not a Gemm with a constant weight")
            return
        tb = int(a.get("transB", 0))
        W = self.params[w]
        nout = W.shape[0] if tb else W.shape[1]
        self._consume(i, n, 1, 1 if tb else 0, x, 1)
        atoms = self._fresh(i, n.outputs[0], nout, "Gemm")
        self._edit(i, 1, "slice", 0 if tb else 1, atoms)
        if len(n.inputs) > 2 and n.inputs[2]:
            c = n.inputs[2]
            if self._is_param(c):
                C = self.params[c]
                if C.ndim >= 1 and C.shape[-1] == nout and nout > 1:
                    self._edit(i, 2, "slice", C.ndim - 1, atoms)
            elif c in self.labels or nout > 1:
                self._freeze_inputs(n, f"{n.label()} adds a non-constant C")
                self.uf.freeze(atoms, f"{n.label()} adds a non-constant C")
        self._role(atoms, i, "out")
        self._set(n.outputs[0], 1, atoms)

    def _matmul(self, i, n, x):
        a0, a1 = n.inputs[0], n.inputs[1]
        if self._is_param(a1) and not self._is_param(a0) and self.params[a1].ndim == 2:
            nd = len(self.shapes[a0])
            if x is not None and x.axis != nd - 1:
                self.uf.freeze(x.labels, f"{n.label()} multiplies over axis {nd - 1}, the channels are on "
                                         f"axis {x.axis}")
            else:
                self._consume(i, n, 1, 0, x, nd - 1)
            nout = self.params[a1].shape[1]
            out_nd = len(self.shapes[n.outputs[0]])
            atoms = self._fresh(i, n.outputs[0], nout, "MatMul")
            self._edit(i, 1, "slice", 1, atoms)
            self._role(atoms, i, "out")
            self._set(n.outputs[0], out_nd - 1, atoms)
            return
        self._freeze_inputs(n, f"{n.label()} multiplies two computed tensors")

    # -- elementwise ------------------------------------------------------------------------------------
    def _broadcast(self, i, n):
        out = n.outputs[0]
        oshape = self.shapes[out]
        nd = len(oshape)
        ref, ax = None, None
        for v in n.inputs:
            lab = self.labels.get(v)
            if lab is None:
                continue
            s = self.shapes[v]
            oa = lab.axis + nd - len(s)
            if s[lab.axis] == 1 and oshape[oa] > 1:      # a one-channel tensor broadcast over channels
                self.uf.freeze(lab.labels, f"{n.label()} broadcasts it over other channels")
                continue
            if ax is None:
                ref, ax = lab, oa
            elif oa != ax:
                self._freeze_inputs(n, f"{n.label()} combines tensors whose channels are on different axes")
                return
        if ref is None:
            return
        c = oshape[ax]
        for pos, v in enumerate(n.inputs):
            if not v:
                continue
            s = self.shapes[v]
            ia = ax - (nd - len(s))
            d = s[ia] if ia >= 0 else 1
            lab = self.labels.get(v)
            if lab is not None and lab.axis == ia and d == c:
                if lab is not ref:
                    for p, q in zip(ref.labels, lab.labels):
                        self.uf.union(int(p), int(q))
                    self._role(ref.labels, i, "tie")
                continue
            if d == 1:
                continue
            if self._is_param(v):
                self._edit(i, pos, "slice", ia, ref.labels)
                self._role(ref.labels, i, "param")
            else:
                self.uf.freeze(ref.labels, f"{n.label()} combines it with a computed tensor of the same width "
                                           f"that cannot be sliced")
        self._set(out, ax, ref.labels)

    def _concat(self, i, n, a):
        out = n.outputs[0]
        nd = len(self.shapes[out])
        cax = int(a["axis"]) % nd
        labs = [self.labels.get(v) for v in n.inputs]
        on_axis = [lab is not None and lab.axis == cax for lab in labs]
        if any(on_axis):
            parts = []
            for v, lab in zip(n.inputs, labs):
                if lab is not None and lab.axis == cax:
                    parts.append(lab.labels)
                    continue
                if lab is not None:
                    self.uf.freeze(lab.labels, f"{n.label()} concatenates it along another axis")
                atoms = self._fresh(i, out, self.shapes[v][cax], "input")
                self.uf.freeze(atoms, f"{n.label()} concatenates channels that cannot be removed")
                parts.append(atoms)
            self._set(out, cax, np.concatenate(parts))
            for lab in labs:
                if lab is not None and lab.axis == cax:
                    self._role(lab.labels, i, "concat")
            return
        present = [lab for lab in labs if lab is not None]
        if not present:
            return
        axes = {lab.axis for lab in present}
        sizes = {len(lab.labels) for lab in present}
        if len(axes) != 1 or len(sizes) != 1 or len(present) != len([v for v in n.inputs if v]):
            self._freeze_inputs(n, f"{n.label()} concatenates tensors whose channels cannot be matched")
            return
        ref = present[0]
        for lab in present[1:]:
            for p, q in zip(ref.labels, lab.labels):
                self.uf.union(int(p), int(q))
        self._set(out, ref.axis, ref.labels)

    def _slice_split(self, i, n, a, x):
        if x is None:
            return
        s_in = self.shapes[n.inputs[0]]
        ok = True
        for o in n.outputs:
            if o and self.shapes.get(o, s_in)[x.axis] != s_in[x.axis]:
                ok = False
        if ok and n.op == "Slice":
            # a full-size slice along the channel axis may still reverse it
            steps = self._ints(n.inputs[4]) if len(n.inputs) > 4 else None
            axes = self._ints(n.inputs[3]) if len(n.inputs) > 3 else a.get("axes")
            if axes is None:
                starts = self._ints(n.inputs[1]) if len(n.inputs) > 1 else a.get("starts")
                axes = list(range(len(starts or [])))
            nd = len(s_in)
            axes = [int(t) % nd for t in axes]
            if x.axis in axes and steps is not None and steps[axes.index(x.axis)] != 1:
                ok = False
        elif ok and n.op == "Split":
            nd = len(s_in)
            if int(a.get("axis", 0)) % nd == x.axis:
                ok = False
        if not ok:
            return self._unknown(i, n, f"{n.label()} slices the channel axis")
        for o in n.outputs:
            self._set(o, x.axis, x.labels)

    def _reshape(self, i, n, x):
        if x is None:
            return
        src = self.shapes[n.inputs[0]]
        dst = self.shapes[n.outputs[0]]
        r = _reshape_axis(src, dst, x.axis)
        if r is None:
            return self._unknown(i, n, f"{n.label()} splits the channel axis or merges it with the batch axis "
                                       f"({list(src)} -> {list(dst)})")
        j, rep, tile = r
        labs = np.tile(np.repeat(x.labels, rep), tile)
        if n.op == "Reshape":
            shp = n.inputs[1]
            vals = self._ints(shp)
            if vals is None or j >= len(vals):
                return self._unknown(i, n, f"{n.label()} has a target shape edgepack cannot trace")
            if vals[j] == -1 or (vals[j] == 0 and j < len(src) and src[j] == dst[j] and j == x.axis
                                 and rep == tile == 1):
                pass    # follows the input size by itself
            elif self._is_param(shp):
                self._edit(i, 1, "set", j, labs)
                self._role(x.labels, i, "shape")
            else:
                # A computed target shape usually reads the size from Shape(x) and follows the
                # pruned width; if it does not, the check run after the rewrite catches it and
                # prune_channels freezes these channels and plans again.
                self.dynamic.append((i, x.labels))
        self._set(n.outputs[0], j, labs)

    def _reduce(self, i, n, a, x):
        if x is None:
            return
        s = self.shapes[n.inputs[0]]
        nd = len(s)
        if n.op in ("ArgMax", "ArgMin"):
            axes = [int(a.get("axis", 0)) % nd]
        else:
            axes = a.get("axes")
            if axes is None and len(n.inputs) > 1 and n.inputs[1]:
                axes = self._ints(n.inputs[1])
            if axes is None:
                axes = [] if a.get("noop_with_empty_axes", 0) else list(range(nd))
            axes = [int(t) % nd for t in axes]
        if x.axis in axes:
            return self._unknown(i, n, f"{n.label()} reduces over the channel axis")
        keep = int(a.get("keepdims", 1))
        ax = x.axis if keep else x.axis - sum(1 for t in axes if t < x.axis)
        self._set(n.outputs[0], ax, x.labels)

    def _resize(self, i, n, x):
        if x is None:
            return
        s_in, s_out = self.shapes[n.inputs[0]], self.shapes[n.outputs[0]]
        if s_in[x.axis] != s_out[x.axis]:
            return self._unknown(i, n, f"{n.label()} resizes the channel axis")
        sizes = n.inputs[3] if len(n.inputs) > 3 else ""
        if sizes:
            if not self._is_param(sizes):
                return self._unknown(i, n, f"{n.label()} has computed output sizes")
            self._edit(i, 3, "set", x.axis, x.labels)
            self._role(x.labels, i, "shape")
        self._set(n.outputs[0], x.axis, x.labels)

    def _pad(self, i, n, a, x):
        if x is None:
            return
        pads = a.get("pads") if self.graph.opset < 11 else self._ints(n.inputs[1] if len(n.inputs) > 1 else "")
        nd = len(self.shapes[n.inputs[0]])
        if pads is None:
            return self._unknown(i, n, f"{n.label()} has pads edgepack cannot trace")
        if self.graph.opset >= 18 and len(n.inputs) > 3 and n.inputs[3]:
            axes = [int(t) % nd for t in self._ints(n.inputs[3]) or []]
        else:
            axes = list(range(nd))
        k = len(axes)
        for t, ax in enumerate(axes):
            if ax == x.axis and (pads[t] != 0 or pads[t + k] != 0):
                return self._unknown(i, n, f"{n.label()} pads the channel axis")
        self._set(n.outputs[0], x.axis, x.labels)

    # -- groups -------------------------------------------------------------------------------------------
    def _groups(self) -> list[ChannelGroup]:
        uf = self.uf
        natoms = len(uf.parent)
        roots = np.array([uf.find(a) for a in range(natoms)], np.int64) if natoms else np.zeros(0, np.int64)
        self.root_of = roots
        # producers sharing a class are pruned together: one group
        puf = _UF()
        puf.new(len(self.producers))
        first_prod: dict[int, int] = {}
        for a in range(natoms):
            p = self.atom_producer[a]
            r = int(roots[a])
            if r in first_prod:
                puf.union(first_prod[r], p)
            else:
                first_prod[r] = p
        by_group: dict[int, list[int]] = {}
        for p in range(len(self.producers)):
            by_group.setdefault(puf.find(p), []).append(p)
        roles_by_root: dict[int, dict] = {}
        for a, rl in self.roles.items():
            d = roles_by_root.setdefault(int(roots[a]), {})
            for t in rl:
                d[t] = None
        nodes = self.graph.nodes
        groups = []
        for members in sorted(by_group.values(), key=lambda ps: min(self.producers[p].index for p in ps)):
            real = [self.producers[p] for p in members if self.producers[p].kind != "input"]
            if not real:
                continue
            cls_prods: dict[int, set] = {}
            for p in members:
                for a in self.producers[p].atoms:
                    cls_prods.setdefault(int(roots[a]), set()).add(p)
            classes = np.array(sorted(cls_prods), np.int64)
            reasons = [uf.frozen[int(c)] for c in classes if int(c) in uf.frozen]
            touched: dict = {}
            for c in classes:
                touched.update(roles_by_root.get(int(c), {}))
            mem = [f"{nodes[j].op} {nodes[j].name or nodes[j].outputs[0]} ({role})"
                   for (j, role) in sorted(touched, key=lambda t: (t[0], t[1]))]
            sig: dict[tuple, list[int]] = {}
            for k, c in enumerate(classes):
                sig.setdefault(tuple(sorted(cls_prods[int(c)])), []).append(k)
            first = real[0]
            groups.append(ChannelGroup(
                name=nodes[first.index].name or first.out, members=mem, channels=int(classes.size),
                prunable=not reasons, reason=reasons[0] if reasons else "", producers=[p.index for p in real],
                classes=classes, blocks=list(sig.values())))
        seen: dict[str, int] = {}
        for g in groups:   # unique names
            k = seen.get(g.name, 0)
            seen[g.name] = k + 1
            if k:
                g.name = f"{g.name}#{k}"
        return groups

    # -- importance ----------------------------------------------------------------------------------------
    def _accumulate(self, group: ChannelGroup):
        """(add(labels, per-entry values, normalize), finish()) accumulating means per class."""
        roots = self.root_of
        pos = {int(c): k for k, c in enumerate(group.classes)}
        tot = np.zeros(group.classes.size)
        cnt = np.zeros(group.classes.size)

        def touches(labels) -> bool:
            return any(int(roots[a]) in pos for a in labels)

        def add(labels, per_entry, normalize=True, count=True):
            per_entry = np.asarray(per_entry, np.float64).reshape(-1)
            if normalize:
                m = float(per_entry.mean()) if per_entry.size else 0.0
                per_entry = per_entry / m if m > 0 else per_entry
            ks = np.fromiter((pos.get(int(roots[a]), -1) for a in labels), np.int64, count=len(labels))
            ok = ks >= 0
            np.add.at(tot, ks[ok], per_entry[ok])
            if count:
                np.add.at(cnt, ks[ok], 1.0)

        return touches, add, tot, cnt

    def class_scores(self, group: ChannelGroup, importance: str, taylor: dict | None = None) -> np.ndarray:
        """One score per class of ``group`` (higher = more important); see :func:`prune_channels`."""
        touches, add, tot, cnt = self._accumulate(group)
        nodes = self.graph.nodes
        if importance == "bn_scale":
            for j, labs in self.bn:
                if touches(labs):
                    add(labs, np.abs(self.params[nodes[j].inputs[1]].reshape(-1)), normalize=False)
            if not cnt.any():
                raise ValueError(f"importance='bn_scale': group {group.name!r} has no BatchNormalization; "
                                 "import with edgepack.from_onnx(path, fold_batchnorm=False) to keep BatchNorm "
                                 "nodes, or use importance='l1'")
        elif importance == "taylor":
            if taylor is None:
                raise ValueError("importance='taylor' needs data (data=X) to compute gradients")
            for p in self.producers:
                if p.kind != "input" and p.out in taylor and touches(p.atoms):
                    add(p.atoms, taylor[p.out])
            for j, labs in self.depthwise:
                o = nodes[j].outputs[0]
                if o in taylor and touches(labs):
                    add(labs, taylor[o])
        else:
            def norm(w2):
                w2 = np.asarray(w2, np.float64)
                return np.abs(w2).mean(axis=1) if importance == "l1" else np.sqrt((w2 * w2).mean(axis=1))

            for p in self.producers:
                if p.kind == "input" or not touches(p.atoms):
                    continue
                n = nodes[p.index]
                W = self.params[n.inputs[1]]
                if n.op == "Conv":
                    rows = W.reshape(W.shape[0], -1)
                elif n.op == "ConvTranspose":
                    rows = np.moveaxis(W, 1, 0).reshape(W.shape[1], -1)
                elif n.op == "Gemm":
                    rows = W if n.attrs.get("transB", 0) else W.T
                else:
                    rows = W.T
                add(p.atoms, norm(rows))
            for j, labs in self.depthwise:
                if touches(labs):
                    W = self.params[nodes[j].inputs[1]]
                    add(labs, norm(W.reshape(W.shape[0], -1)))
            for (j, pw, wax, labs) in self.consumers:
                if touches(labs):
                    W = self.params[nodes[j].inputs[pw]]
                    add(labs, norm(np.moveaxis(W, wax, 0).reshape(W.shape[wax], -1)))
        if not cnt.any():
            return np.ones(group.classes.size)
        return np.where(cnt > 0, tot / np.maximum(cnt, 1), 0.0)

    def costs(self, group: ChannelGroup) -> np.ndarray:
        """Multiply-adds per input row each class of ``group`` costs (producer rows, consumer
        columns, depthwise channels; the product of a layer's pruned inputs and outputs is
        counted twice, which only matters for ranking)."""
        touches, add, tot, _ = self._accumulate(group)
        nodes = self.graph.nodes
        batch = self.batch
        for p in self.producers:
            if p.kind != "input" and touches(p.atoms):
                add(p.atoms, np.full(len(p.atoms), _node_macs(nodes[p.index], self.shapes) / batch / len(p.atoms)),
                    normalize=False)
        for (j, _, _, labs) in self.consumers:
            if touches(labs):
                add(labs, np.full(len(labs), _node_macs(nodes[j], self.shapes) / batch / len(labs)),
                    normalize=False)
        for j, labs in self.depthwise:
            if touches(labs):
                add(labs, np.full(len(labs), _node_macs(nodes[j], self.shapes) / batch / len(labs)),
                    normalize=False)
        return tot

    # -- rewrite ------------------------------------------------------------------------------------------
    def rewrite(self, removed_roots) -> Graph:
        """A new graph without the channels whose atom classes are in ``removed_roots``."""
        roots = self.root_of
        gone = np.zeros(len(roots), bool)
        if len(roots):
            gone = np.isin(roots, np.asarray(sorted(removed_roots), np.int64))
        keep_atom = ~gone
        g = self.graph
        params = dict(g.params)
        uses: dict[str, int] = {}
        for n in g.nodes:
            for v in n.inputs:
                if v in params:
                    uses[v] = uses.get(v, 0) + 1
        made: dict[tuple, str] = {}
        nodes = []
        for i, n in enumerate(g.nodes):
            new_inputs = list(n.inputs)
            attrs = dict(n.attrs)
            for pos, v in enumerate(n.inputs):
                eds = self.edits.get((i, pos))
                if not eds:
                    continue
                arr = g.params[v]
                key = [v]
                for kind, axis, labels in eds:
                    m = keep_atom[labels]
                    key.append((kind, axis, m.tobytes()))
                    if kind == "slice":
                        if m.all():
                            continue
                        arr = np.compress(m, arr, axis=axis)
                    else:    # "set": entry ``axis`` of a shape vector becomes the kept count
                        arr = np.array(arr, copy=True)
                        arr.reshape(-1)[axis] = int(m.sum())
                key = tuple(key)
                if key in made:
                    new_inputs[pos] = made[key]
                    continue
                if uses.get(v, 0) <= 1 and not any(k[0] == v for k in made):
                    name = v
                else:
                    k = 1
                    name = f"{v}.pruned{k}"
                    while name in params:
                        k += 1
                        name = f"{v}.pruned{k}"
                params[name] = np.ascontiguousarray(arr)
                made[key] = name
                new_inputs[pos] = name
            if i in self.group_attr:
                attrs["group"] = int(keep_atom[self.group_attr[i]].sum())
            nodes.append(dataclasses.replace(n, inputs=new_inputs, attrs=attrs))
        from .cleanup import eliminate_dead

        return eliminate_dead(g.copy(nodes=nodes, params=params))

    def expected_shapes(self, removed_roots) -> dict[str, tuple]:
        """Every labelled value's shape after removing ``removed_roots`` (for checking a rewrite)."""
        roots = self.root_of
        gone = set(int(r) for r in removed_roots)
        out = {}
        for v, lab in self.labels.items():
            s = list(self.shapes[v])
            s[lab.axis] = int(sum(1 for a in lab.labels if int(roots[a]) not in gone))
            out[v] = tuple(s)
        return out


def analyze_channels(graph: Graph, example=None) -> ChannelAnalysis:
    """The channel dependency groups of ``graph`` (traced on one row of ``example``).

    Parameters
    ----------
    graph : edgepack.nn.Graph
    example : ndarray or dict of str -> ndarray, optional
        An input batch (only its first row is run).  Needed when an input dimension other than
        the batch axis is not fixed in the graph (e.g. a text recognizer's height/width).

    Returns
    -------
    ChannelAnalysis
        ``.groups``: list of :class:`ChannelGroup`, in graph order.
    """
    if not isinstance(graph, Graph):
        raise TypeError(f"graph must be an edgepack.nn.Graph; got {type(graph).__name__}")
    return ChannelAnalysis(graph, example_feeds(graph, example))


# -- the report ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class PruneReport:
    """What :func:`prune_channels` did.

    Attributes
    ----------
    groups : list of dict
        One per channel group: ``name``, ``members``, ``before``, ``after`` (channels), ``status``
        ("pruned", "kept", "skipped" or "kept whole: <reason>").
    params, flops, conv_flops, bytes : (before, after)
        Parameter count, multiply-adds per input row (all weight layers / convolutions only) and
        the saved file size.
    settings : dict
    """

    groups: list
    params: tuple
    flops: tuple
    conv_flops: tuple
    bytes: tuple
    settings: dict

    def group(self, name: str) -> dict:
        for g in self.groups:
            if g["name"] == name:
                return g
        raise KeyError(f"no group named {name!r}; groups are {[g['name'] for g in self.groups][:30]}")

    def __str__(self) -> str:
        def ratio(t):
            return f"{t[0]:,} -> {t[1]:,} ({100.0 * (1 - t[1] / t[0]) if t[0] else 0.0:.1f}% less)"

        st = self.settings.get("structure", "channels")
        what = "structured channel pruning" if st == "channels" else f"{st} weight pruning"
        lines = [f"{what} ({self.settings.get('importance')}, scope "
                 f"{self.settings.get('scope')}, amount {self.settings.get('amount')})",
                 f"  parameters   {ratio(self.params)}",
                 f"  MACs/row     {ratio(self.flops)}",
                 f"  conv MACs    {ratio(self.conv_flops)}",
                 f"  file bytes   {ratio(self.bytes)}",
                 ""]
        w = max([len(g["name"]) for g in self.groups] + [5])
        lines.append(f"  {'group'.ljust(w)}  {'channels' if st == 'channels' else 'weights '}    "
                     "members / status")
        for g in self.groups:
            ch = f"{g['before']:>4} -> {g['after']:<4}"
            mem = ", ".join(g["members"][:6]) + (f", ... (+{len(g['members']) - 6})" if len(g["members"]) > 6 else "")
            lines.append(f"  {g['name'].ljust(w)}  {ch}  {g['status']}: {mem}")
        return "\n".join(lines)

    __repr__ = __str__


# -- pruning --------------------------------------------------------------------------------------------

def _skip_groups(skip, groups: list[ChannelGroup], graph: Graph) -> set[int]:
    if isinstance(skip, str):
        skip = (skip,)
    out = set()
    names = {g.name: k for k, g in enumerate(groups)}
    node_names = {n.name: i for i, n in enumerate(graph.nodes) if n.name}
    ops = {n.op for n in graph.nodes}
    for s in skip:
        if not isinstance(s, str):
            raise TypeError(f"skip items must be group names, node names or op types (str); got {s!r}")
        if s in names:
            out.add(names[s])
            continue
        hit = False
        for k, g in enumerate(groups):
            if any(m.split(" ")[1] == s for m in g.members) or (s in ops and any(
                    m.split(" ")[0] == s for m in g.members)):
                out.add(k)
                hit = True
        if not hit and s not in node_names and s not in ops:
            raise ValueError(f"skip: {s!r} is not a group, node name or op type of this graph; groups are "
                             f"{sorted(names)[:30]}")
    return out


def _plan(an: ChannelAnalysis, amount, importance: str, scope: str, skipped: set, round_to, target: str,
          taylor) -> tuple[set, dict]:
    """The atom classes to remove, and the channels each group keeps.

    Every block (the classes of a group shared by the same producers) keeps at least one channel,
    or ``round_to`` channels when it has that many, and a multiple of ``round_to``."""
    groups = an.groups
    prunable = [k for k, g in enumerate(groups) if g.prunable and k not in skipped]
    per_group = isinstance(amount, dict)
    if per_group:
        unknown = [n for n in amount if n not in {g.name for g in groups}]
        if unknown:
            raise ValueError(f"amount: no channel group named {unknown[:5]}; groups are "
                             f"{[g.name for g in groups][:30]}")
    r = int(round_to) if round_to else 1
    scores = {k: an.class_scores(groups[k], importance, taylor) for k in prunable}

    def floor_keep(n: int) -> int:
        return min(n, r) if r > 1 else 1

    def round_keep(keep: int, n: int) -> int:
        if r > 1:
            keep = int(math.ceil(keep / r) * r)
        return max(floor_keep(n), min(n, keep))

    removed: set[int] = set()
    if per_group or scope == "layer":
        for k in prunable:
            g = groups[k]
            frac = amount.get(g.name, 0.0) if per_group else amount
            if frac <= 0:
                continue
            sc = scores[k]
            for blk in g.blocks:
                n = len(blk)
                keep = round_keep(int(round((1.0 - frac) * n)), n)
                for c in sorted(blk, key=lambda c: (sc[c], c))[: n - keep]:
                    removed.add(int(g.classes[c]))
    else:
        costs = {k: (an.costs(groups[k]) if target == "flops" else np.ones(groups[k].classes.size))
                 for k in prunable}
        if target == "flops":
            budget = amount * float(graph_flops(an.graph, shapes=an.shapes)["total"])
        else:
            budget = amount * float(sum(groups[k].channels for k in prunable))
        cand = []
        block_of = {}
        left, floor = {}, {}
        for k in prunable:
            sc = scores[k]
            m = float(np.mean(sc)) if sc.size else 1.0
            for bi, blk in enumerate(groups[k].blocks):
                left[(k, bi)] = len(blk)
                floor[(k, bi)] = floor_keep(len(blk))
                for c in blk:
                    block_of[(k, c)] = bi
                    cand.append((sc[c] / m if m > 0 else sc[c], k, c))
        cand.sort(key=lambda t: (t[0], t[1], t[2]))
        spent = 0.0
        chosen: dict[tuple, list] = {}
        for _, k, c in cand:
            if spent + 0.5 * float(costs[k][c]) > budget + 1e-9:    # the nearest count to the budget
                break
            bi = block_of[(k, c)]
            if left[(k, bi)] <= floor[(k, bi)]:
                continue
            left[(k, bi)] -= 1
            chosen.setdefault((k, bi), []).append(c)
            spent += float(costs[k][c])
        for (k, bi), cs in chosen.items():
            n = len(groups[k].blocks[bi])
            keep = round_keep(n - len(cs), n)
            # rounding up gives back the best of the channels chosen for removal
            for c in sorted(cs, key=lambda c: (scores[k][c], c))[: n - keep]:
                removed.add(int(groups[k].classes[c]))
    kept = {g.name: int(sum(1 for c in g.classes if int(c) not in removed)) for g in groups}
    return removed, kept


def prune_channels(graph: Graph, amount, *, importance: str = "l1", scope: str = "global", skip=(),
                   round_to=None, example=None, data=None, target: str = "channels", labels=None,
                   _check: bool = True) -> Graph:
    """Remove output channels of the graph's Conv/Gemm/MatMul layers for real (see the module
    docstring); returns a new, smaller dense graph with ``.report`` (a :class:`PruneReport`).

    Parameters
    ----------
    graph : edgepack.nn.Graph
    amount : float in [0, 1) or dict {group name: float}
        Fraction of the prunable channels to remove (``target="channels"``), or of the weight
        layers' multiply-adds (``target="flops"``); a dict gives each named group its own
        fraction (the others are left alone), e.g. chosen with :func:`edgepack.sensitivity`.
    importance : {"l1", "l2", "bn_scale", "taylor"}
        Channel score: mean |w| (or RMS) of the group's producer rows and consumer columns, each
        layer normalised by its mean; ``"bn_scale"``: |gamma| of the group's BatchNorms (import
        with ``from_onnx(path, fold_batchnorm=False)``: folding removes them); ``"taylor"``: the
        first-order Taylor estimate |sum(a * dL/da)| per channel (Molchanov et al., 2017) on
        ``data``, with the cross-entropy against ``labels`` or, without labels, against the
        graph's own predictions.
    scope : {"global", "layer"}
        One ranking over all groups (scores relative to each group's mean), or the same fraction
        in every group.
    skip : sequence of str
        Group names, node names or op types whose groups are left whole.
    round_to : int, optional
        Keep a multiple of this many channels in every group (8 or 16 keep SIMD widths full).
    example : ndarray or dict, optional
        An input batch to trace shapes (first row used); needed when input sizes are not fixed.
    data : ndarray, optional
        Inputs for ``importance="taylor"``.
    target : {"channels", "flops"}
    """
    if not isinstance(graph, Graph):
        raise TypeError(f"graph must be an edgepack.nn.Graph; got {type(graph).__name__}")
    if importance not in IMPORTANCES:
        raise ValueError(f"importance must be one of {IMPORTANCES}; got {importance!r}")
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer'; got {scope!r}")
    if target not in ("channels", "flops"):
        raise ValueError(f"target must be 'channels' or 'flops'; got {target!r}")
    if isinstance(amount, dict):
        for k, v in amount.items():
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not 0.0 <= float(v) < 1.0:
                raise ValueError(f"amount[{k!r}] must be a number in [0, 1); got {v!r}")
        amount = {str(k): float(v) for k, v in amount.items()}
    elif isinstance(amount, bool) or not isinstance(amount, (int, float, np.floating)) or not 0.0 <= float(amount) < 1.0:
        raise ValueError(f"amount must be a number in [0, 1) or a dict of group name -> number; got {amount!r}")
    else:
        amount = float(amount)
    if round_to is not None and (isinstance(round_to, bool) or not isinstance(round_to, (int, np.integer))
                                 or round_to < 1):
        raise ValueError(f"round_to must be a positive integer or None; got {round_to!r}")
    if example is None and data is not None:
        example = data
    an = analyze_channels(graph, example)
    skipped = _skip_groups(skip, an.groups, graph)
    taylor = None
    if importance == "taylor":
        if data is None:
            raise ValueError("importance='taylor' needs data=X (inputs to compute gradients on)")
        from ..autograd import taylor_scores

        outs = sorted({p.out for p in an.producers if p.kind != "input"} |
                      {graph.nodes[j].outputs[0] for j, _ in an.depthwise})
        taylor = taylor_scores(graph, data, outs, labels=labels,
                               axes={v: an.labels[v].axis for v in outs if v in an.labels})
    removed, kept = _plan(an, amount, importance, scope, skipped, round_to, target, taylor)
    new = an.rewrite(removed)
    problem = _verify(an, new, removed) if _check else None
    if problem and an.dynamic:
        # a Reshape with a computed shape kept a fixed channel count: freeze what reaches it
        for j, labs in an.dynamic:
            if np.isin(an.root_of[labs], list(removed)).any():
                an.uf.freeze(labs, f"{graph.nodes[j].label()} computes a target shape with a fixed channel count")
        an.groups = an._groups()
        removed, kept = _plan(an, amount, importance, scope, skipped, round_to, target, taylor)
        new = an.rewrite(removed)
        problem = _verify(an, new, removed)
    if problem:
        raise RuntimeError(f"prune: {problem}; please report this graph")
    f0 = graph_flops(graph, shapes=an.shapes)
    new_shapes, _ = _trace(new, an.feeds)
    f1 = graph_flops(new, shapes=new_shapes)
    rows = []
    for k, g in enumerate(an.groups):
        after = kept[g.name]
        if k in skipped:
            status = "skipped"
        elif not g.prunable:
            status = f"kept whole: {g.reason}"
        else:
            status = "pruned" if after < g.channels else "kept"
        rows.append({"name": g.name, "members": list(g.members), "before": g.channels, "after": after,
                     "status": status})
    report = PruneReport(groups=rows, params=(graph.num_parameters(), new.num_parameters()),
                         flops=(f0["total"], f1["total"]), conv_flops=(f0["conv"], f1["conv"]),
                         bytes=(_file_bytes(graph), _file_bytes(new)),
                         settings={"structure": "channels", "importance": importance, "scope": scope,
                                   "amount": amount, "round_to": round_to, "target": target,
                                   "skip": list((skip,) if isinstance(skip, str) else skip)})
    object.__setattr__(new, "report", report)
    return new


def _verify(an: ChannelAnalysis, new: Graph, removed) -> str | None:
    """Run the pruned graph on the example rows: every labelled value must have the shape the
    labels predict and every output its original shape.  Returns what went wrong, or None."""
    expect = an.expected_shapes(removed)
    names = [v for n in new.nodes for v in n.outputs if v and v in expect]
    try:
        vals = new.run(an.feeds, outputs=names + [o for o in new.outputs if o not in names])
    except ValueError as e:
        return f"the pruned graph does not run ({e})"
    for v in names:
        if tuple(np.shape(vals[v])) != expect[v]:
            return f"value {v!r} has shape {np.shape(vals[v])} after pruning, expected {expect[v]}"
    for o in new.outputs:
        if tuple(np.shape(vals[o])) != an.shapes[o]:
            return f"output {o!r} changed shape {an.shapes[o]} -> {np.shape(vals[o])}"
    return None
