"""Import an ONNX MLP/CNN as an edgepack Sequential (needs the optional ``onnx`` package).

Supported graphs: one data input, one output, and nodes forming a linear chain (each node takes
the previous node's output as its only non-constant input).  Weights must be initializers (or
Constant nodes).  Residual branches, multiple inputs and dynamic weights are not supported.

Operators: Gemm (transA=0; transB, alpha, beta), MatMul with a constant 2-D right operand, Add of
a constant (folded into the bias of the preceding Gemm/MatMul/Conv), Relu, Gelu, Sigmoid, Tanh,
Softmax, Conv (2-D, explicit pads), MaxPool, AveragePool (ceil_mode=0), GlobalAveragePool,
Flatten (axis 0 or 1), Reshape (constant shape), BatchNormalization (inference; folded into the
preceding Conv/Gemm), plus Identity and Dropout (dropped).
"""

from __future__ import annotations

import os

import numpy as np

from .. import nn

__all__ = ["from_onnx", "SUPPORTED_OPS"]

SUPPORTED_OPS = (
    "Gemm", "MatMul", "Add", "Relu", "Gelu", "Sigmoid", "Tanh", "Softmax", "Conv", "MaxPool",
    "AveragePool", "GlobalAveragePool", "Flatten", "Reshape", "BatchNormalization",
    "Identity", "Dropout", "Constant",
)


def _import_onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise ModuleNotFoundError(
            "edgepack.from_onnx needs the 'onnx' package: pip install 'edgepack[onnx]'") from None
    return onnx, numpy_helper


def _attrs(node, onnx) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _s(v):
    return v.decode() if isinstance(v, bytes) else v


def _malformed_is_value_error(fn):
    """A hostile or corrupt graph (missing node inputs, dangling names, undefined tensor types,
    non-UTF-8 names) must end in the documented ValueError, not in whatever KeyError or IndexError
    the conversion trips over first (found by tests/test_fuzz.py)."""
    import functools

    @functools.wraps(fn)
    def wrapper(path, *args, **kwargs):
        try:
            return fn(path, *args, **kwargs)
        except (KeyError, IndexError, TypeError, AttributeError, UnicodeError, OverflowError) as e:
            where = path if isinstance(path, (str, bytes, os.PathLike)) else "model"
            raise ValueError(f"{os.fspath(where) if not isinstance(where, str) else where}: malformed ONNX "
                             f"graph ({type(e).__name__}: {e})") from None
    return wrapper


@_malformed_is_value_error
def from_onnx(path, *, fold_batchnorm: bool = True) -> "nn.Sequential":
    """Convert an ONNX model file (or ``onnx.ModelProto``) to an edgepack ``Sequential``.

    Parameters
    ----------
    path : str, os.PathLike or onnx.ModelProto
    fold_batchnorm : bool
        Fold BatchNormalization into the preceding Conv/Gemm (default; a BatchNormalization with
        nothing to fold into stays as a BatchNorm layer).

    Returns
    -------
    edgepack.nn.Sequential, float32, in eval mode.

    Raises
    ------
    ModuleNotFoundError
        ``onnx`` is not installed.
    ValueError
        The file is not valid ONNX, the graph uses operators outside :data:`SUPPORTED_OPS` (the
        message lists every unsupported op type in the graph), is not a linear chain, or uses
        unsupported attributes.
    """
    onnx, numpy_helper = _import_onnx()
    if isinstance(path, onnx.ModelProto):
        model = path
        where = "model"
    else:
        where = os.fspath(path)
        if not os.path.exists(where):
            raise FileNotFoundError(f"{where}: no such file")
        try:
            model = onnx.load(where)
        except Exception as e:  # protobuf raises its own DecodeError types
            raise ValueError(f"{where}: not a valid ONNX model ({type(e).__name__}: {e})") from None
    g = model.graph
    bad = sorted({n.op_type for n in g.node if n.domain not in ("", "ai.onnx") or n.op_type not in SUPPORTED_OPS})
    if bad:
        raise ValueError(f"{where}: unsupported ONNX operators: {', '.join(bad)} "
                         f"(supported: {', '.join(SUPPORTED_OPS)})")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)

    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    inputs = [i.name for i in g.input if i.name not in consts]
    if len(inputs) != 1 or len(g.output) != 1:
        raise ValueError(f"{where}: only graphs with one data input and one output are supported; "
                         f"got inputs {inputs} and {len(g.output)} outputs")
    cur = inputs[0]
    layers: list[nn.Module] = []
    last_affine = None  # the layer an Add-constant may fold into, if it produced `cur`

    def const(name, node, what):
        if name not in consts:
            raise ValueError(f"{where}: node {node.name or node.op_type!r}: {what} must be a constant "
                             f"(initializer); {name!r} is computed in the graph")
        return consts[name]

    for node in g.node:
        op = node.op_type
        a = _attrs(node, onnx)
        label = f"node {node.name or op!r} ({op})"
        if op == "Constant":
            if "value" not in a:
                raise ValueError(f"{where}: {label}: only Constant with a tensor 'value' is supported")
            consts[node.output[0]] = numpy_helper.to_array(a["value"])
            continue
        data_in = [i for i in node.input if i and i not in consts]
        if data_in != [cur]:
            raise ValueError(f"{where}: graph is not a linear chain at {label}: its data inputs are "
                             f"{data_in}, expected only the previous output {cur!r}")
        if op in ("Identity", "Dropout"):
            if op == "Dropout" and len(node.output) > 1 and node.output[1]:
                raise ValueError(f"{where}: {label}: the Dropout mask output is not supported")
            cur = node.output[0]
            continue
        if len([o for o in node.output if o]) != 1:
            raise ValueError(f"{where}: {label}: only the first output is supported")
        new = None
        if op == "Gemm":
            if node.input[0] != cur or a.get("transA", 0):
                raise ValueError(f"{where}: {label}: only Gemm(X, W, C) with transA=0 and constant W")
            w = const(node.input[1], node, "B").astype(np.float64)
            w = w if a.get("transB", 0) else w.T
            w = w * a.get("alpha", 1.0)
            bias = None
            if len(node.input) > 2 and node.input[2]:
                c = const(node.input[2], node, "C").astype(np.float64) * a.get("beta", 1.0)
                bias = np.broadcast_to(c.reshape(-1) if c.size == w.shape[0] else c, (w.shape[0],))
            new = nn.Linear.from_weights(w, bias)
        elif op == "MatMul":
            if node.input[0] != cur:
                raise ValueError(f"{where}: {label}: only MatMul(X, W) with constant W is supported")
            w = const(node.input[1], node, "the right operand")
            if w.ndim != 2:
                raise ValueError(f"{where}: {label}: the constant operand must be 2-D; got shape {w.shape}")
            new = nn.Linear.from_weights(w.T)
        elif op == "Add":
            other = [i for i in node.input if i != cur]
            if len(other) != 1:
                raise ValueError(f"{where}: {label}: Add of two computed tensors (residual) is not supported")
            c = consts[other[0]]
            if not _fold_add(last_affine, c):
                raise ValueError(f"{where}: {label}: Add of a constant is supported only right after "
                                 f"Gemm/MatMul/Conv with a per-output-channel shape; got shape {c.shape}")
            cur = node.output[0]
            continue
        elif op == "Relu":
            new = nn.ReLU()
        elif op == "Gelu":
            new = nn.GELU(_s(a.get("approximate", "none")))
        elif op == "Sigmoid":
            new = nn.Sigmoid()
        elif op == "Tanh":
            new = nn.Tanh()
        elif op == "Softmax":
            axis = a.get("axis", -1 if opset >= 13 else 1)
            new = nn.Softmax(axis)
        elif op == "Conv":
            _no_autopad(a, where, label)
            w = const(node.input[1], node, "W")
            if w.ndim != 4:
                raise ValueError(f"{where}: {label}: only 2-D convolution is supported; weight shape {w.shape}")
            b = const(node.input[2], node, "B") if len(node.input) > 2 and node.input[2] else None
            new = nn.Conv2d.from_weights(w, b, stride=a.get("strides", 1), padding=_pads(a),
                                         dilation=a.get("dilations", 1), groups=a.get("group", 1))
        elif op in ("MaxPool", "AveragePool"):
            _no_autopad(a, where, label)
            if a.get("ceil_mode", 0):
                raise ValueError(f"{where}: {label}: ceil_mode=1 is not supported")
            k = a.get("kernel_shape")
            if k is None or len(k) != 2:
                raise ValueError(f"{where}: {label}: only 2-D pooling is supported; kernel_shape {k}")
            stride = a.get("strides", 1)  # ONNX default stride is 1, not the window
            if op == "MaxPool":
                new = nn.MaxPool2d(k, stride, _pads(a), a.get("dilations", 1))
            else:
                if any(d != 1 for d in a.get("dilations", [1])):
                    raise ValueError(f"{where}: {label}: dilated AveragePool is not supported")
                new = nn.AvgPool2d(k, stride, _pads(a), bool(a.get("count_include_pad", 0)))
        elif op == "GlobalAveragePool":
            new = nn.GlobalAvgPool2d(keepdims=True)
        elif op == "Flatten":
            axis = a.get("axis", 1)
            if axis == 1:
                new = nn.Flatten(1)
            elif axis == 0:
                new = nn.Reshape([1, -1])
            else:
                raise ValueError(f"{where}: {label}: Flatten axis={axis} is not supported (0 or 1)")
        elif op == "Reshape":
            if a.get("allowzero", 0):
                raise ValueError(f"{where}: {label}: allowzero=1 is not supported")
            new = nn.Reshape(const(node.input[1], node, "shape").astype(np.int64).tolist())
        elif op == "BatchNormalization":
            if a.get("training_mode", 0):
                raise ValueError(f"{where}: {label}: training_mode=1 is not supported")
            s, bb, m, v = (const(node.input[i], node, n) for i, n in
                           ((1, "scale"), (2, "B"), (3, "mean"), (4, "var")))
            new = nn.BatchNorm(s.shape[0], eps=a.get("epsilon", 1e-5))
            new.weight, new.bias = s.astype(np.float32), bb.astype(np.float32)
            new.running_mean, new.running_var = m.astype(np.float32), v.astype(np.float32)
        layers.append(new)
        last_affine = new if isinstance(new, (nn.Linear, nn.Conv2d)) else None
        cur = node.output[0]
    if cur != g.output[0].name:
        raise ValueError(f"{where}: the graph output {g.output[0].name!r} is not the end of the chain ({cur!r})")
    model_out = nn.Sequential(*layers).eval()
    if fold_batchnorm:
        nn.fold_batchnorm(model_out)
    return model_out


def _no_autopad(a, where, label):
    ap = _s(a.get("auto_pad", "NOTSET"))
    if ap not in ("NOTSET", "VALID"):
        raise ValueError(f"{where}: {label}: auto_pad={ap} is not supported; export with explicit pads")


def _pads(a):
    p = a.get("pads", [0, 0, 0, 0])
    if len(p) != 4:
        raise ValueError(f"only 2-D pads are supported; got pads {p}")
    return tuple(int(v) for v in p)  # ONNX order (top, left, bottom, right) is ours


def _fold_add(layer, c) -> bool:
    if layer is None:
        return False
    c = np.asarray(c, dtype=np.float64)
    if isinstance(layer, nn.Linear):
        n = layer.out_features
        ok = c.size == n and c.shape[-1:] == (n,) or c.size == 1
    elif isinstance(layer, nn.Conv2d):
        n = layer.out_channels
        ok = c.size == 1 or (c.size == n and c.ndim >= 3 and c.shape[-3] == n)
    else:
        return False
    if not ok:
        return False
    b = np.zeros(n) if layer.bias is None else layer.bias.astype(np.float64)
    layer.bias = (b + np.broadcast_to(c.reshape(-1), (n,))).astype(np.float32)
    return True
