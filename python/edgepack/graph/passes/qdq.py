"""Models quantized elsewhere, on edgepack's int8 kernels.

A QDQ model (onnxruntime's quantizer, TensorRT-style exports) computes every Conv / MatMul / Gemm
on ``DequantizeLinear`` outputs: the weight is ``DQ(w_q int8, scale, zero_point=0, axis=0)`` and,
for static activations, the input is ``DQ(x_q uint8/int8, s_x, zp_x)``.  This pass gives such a
node the int8 layer that computes the same thing on edgepack's exact kernels: the stored int8
weights are used as they are (no re-quantization), and the activation is re-quantized with the same
``(s_x, zp_x)``, which reproduces ``x_q`` exactly since ``x = (x_q - zp_x) * s_x``.  Weights with
a non-zero zero point or the value -128 (outside the kernels' [-127, 127]) stay on the float path.
"""

from __future__ import annotations

import numpy as np

from ...nn.quantized import QConv2d, QLinear
from ..ir import Graph
from .targets import _conv_layer, _gemm_layer, _matmul_layer


def _dq_consts(node, params):
    """(q, scale, zero_point, axis) of a DequantizeLinear whose inputs are all parameters."""
    if node is None or node.op != "DequantizeLinear" or node.domain not in ("", "ai.onnx"):
        return None
    ins = [v for v in node.inputs]
    if not ins or not all((not v) or v in params for v in ins):
        return None
    q = params[ins[0]]
    s = params[ins[1]] if len(ins) > 1 and ins[1] else None
    z = params[ins[2]] if len(ins) > 2 and ins[2] else np.zeros((), q.dtype)
    if s is None or node.attrs.get("block_size", 0):
        return None
    return q, np.asarray(s, np.float32), np.asarray(z), int(node.attrs.get("axis", 1))


def _dequant(q, s, z, axis):
    shape = [1] * q.ndim
    if s.ndim == 1 and s.size > 1:
        shape[axis % q.ndim] = -1
    return ((q.astype(np.float64) - z.astype(np.float64).reshape(shape if z.ndim else ()))
            * s.astype(np.float64).reshape(shape if s.ndim else ()))


def map_qdq(graph: Graph) -> Graph:
    """Replace DQ-weight Conv/MatMul/Gemm nodes by int8 ``edgepack.Layer`` nodes (see module doc)."""
    from ..ops.layer import layer_node
    from .cleanup import eliminate_dead

    prod = {v: n for n in graph.nodes for v in n.outputs if v}
    params = dict(graph.params)
    nodes = []
    changed = False
    for n in graph.nodes:
        new = None
        if n.op in ("Conv", "MatMul", "Gemm") and n.domain in ("", "ai.onnx") and len(n.inputs) >= 2:
            new = _map_one(n, prod, params, layer_node)
        if new is not None:
            nodes.append(new)
            changed = True
        else:
            nodes.append(n)
    if not changed:
        return graph
    return eliminate_dead(graph.copy(nodes=nodes, params=params))


def _map_one(n, prod, params, layer_node):
    wq = _dq_consts(prod.get(n.inputs[1]), params)
    if wq is None:
        return None
    q, s, z, axis = wq
    if q.dtype != np.int8 or np.any(z != 0) or q.min() < -127:
        return None
    wf = _dequant(q, s, z, axis)
    tmp = dict(params)
    wname = n.inputs[1]
    tmp[wname] = wf.astype(np.float32)
    ins = list(n.inputs)
    # a DQ'd bias (int32 with scale s_x * s_w): dequantize it once here
    if len(ins) > 2 and ins[2]:
        bq = _dq_consts(prod.get(ins[2]), params)
        if bq is not None:
            tmp[ins[2]] = _dequant(*bq).astype(np.float32)
        elif ins[2] not in params:
            return None
    node = type(n)(n.op, ins, list(n.outputs), n.attrs, n.name, n.domain)
    conv1d = False
    if n.op == "Conv":
        r = _conv_layer(node, tmp)
        if r is None:
            return None
        layer, conv1d = r
    elif n.op == "Gemm":
        if n.attrs.get("transB", 0) == 0 or float(n.attrs.get("alpha", 1.0)) != 1.0:
            return None   # the stored int8 rows must be the output channels, unscaled
        layer = _gemm_layer(node, tmp)
    else:
        layer = _matmul_layer(node, tmp)
    if layer is None:
        return None
    # per-output-channel scales, int8 rows per output channel
    if n.op == "Conv":
        if s.size not in (1, q.shape[0]) or (s.size > 1 and axis % q.ndim != 0):
            return None
        w_q = q if q.ndim == 4 else q[:, :, None, :]
    elif n.op == "Gemm":
        if s.size not in (1, q.shape[0]) or (s.size > 1 and axis % 2 != 0):
            return None
        w_q = q
    else:  # MatMul: weight [K, N], channels on axis 1
        if s.size not in (1, q.shape[1]) or (s.size > 1 and axis % 2 != 1):
            return None
        w_q = q.T
    cout = w_q.shape[0]
    w_scale = np.broadcast_to(s.reshape(-1), (cout,)).astype(np.float32)
    kw = {"activations": "dynamic"}
    xnode = prod.get(n.inputs[0])
    if xnode is not None and xnode.op == "DequantizeLinear" and len(xnode.inputs) >= 2 and all(
            (not v) or v in params for v in xnode.inputs[1:]):
        sx = params[xnode.inputs[1]]
        zx = params[xnode.inputs[2]] if len(xnode.inputs) > 2 and xnode.inputs[2] else np.zeros((), np.uint8)
        if sx.size == 1 and zx.size == 1 and zx.dtype in (np.uint8, np.int8):
            kw = {"activations": "static", "x_scale": float(sx.reshape(-1)[0]),
                  "x_zero_point": zx.dtype.type(zx.reshape(-1)[0])}
    if n.op == "Conv":
        ql = QConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                     layer.dilation, layer.groups, layer.bias is not None, **kw)
    else:
        ql = QLinear(layer.in_features, layer.out_features, layer.bias is not None, **kw)
    ql.weight_q = np.ascontiguousarray(w_q.reshape(ql.weight_q.shape))
    ql.w_scale = np.ascontiguousarray(w_scale)
    if layer.bias is not None:
        ql.bias = np.ascontiguousarray(layer.bias, np.float32)
    ql._repack()
    return layer_node(ql, n.inputs[0], n.outputs[0], n.name, params, conv1d=conv1d)
