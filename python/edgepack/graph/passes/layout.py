"""Inference lowering: one channels-last (NHWC) layout for the convolutions of a graph, with the
epilogues fused into edgepack's C++ convolution kernels.

The stored graph stays in ONNX's NCHW form (what import, quantization, pruning and files work
on); :func:`lower_for_inference` derives the graph that actually runs, once per graph:

1. every 2-D Conv with constant weights becomes ``edgepack.ConvNHWC`` (float) and every static
   int8 ``QConv2d`` layer ``edgepack.QConvNHWC``, wrapped in Transposes to and from NCHW;
2. Transposes are pushed through elementwise operators (constants re-laid out), Concat and
   global average pooling, and inverse pairs cancel, so the layout changes only at the graph's
   edges (a tf2onnx model's NHWC input feeds the first convolution directly);
3. the activation after a convolution (Relu, Clip/Relu6, HardSigmoid, HardSwish in its exporter
   forms, Sigmoid, SiLU as x*Sigmoid(x), LeakyRelu, Tanh) and a residual Add go into its epilogue;
4. an int8 convolution feeding another int8 convolution, directly or through scale-preserving
   operators (Transpose, MaxPool, Reshape, Flatten, (Un)Squeeze, Slice, and Concats of such
   inputs, which then share the consumer's scale), writes that layer's quantized input
   (uint8/int8): those operators run on the int8 tensor, and the activations between int8 layers
   never go through float32.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..ir import Graph, Node
from ..registry import EDGEPACK_DOMAIN

__all__ = ["lower_for_inference", "available"]

TO_NHWC = [0, 2, 3, 1]
TO_NCHW = [0, 3, 1, 2]

_UNARY = {"Relu", "LeakyRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Softplus",
          "Softsign", "Neg", "Abs", "Sqrt", "Exp", "Log", "Erf", "Reciprocal", "Floor", "Ceil", "Round", "Sign",
          "Identity", "Gelu", "Mish", "Clip", "Cast", "ThresholdedRelu"}
_BINARY = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu", "Equal", "Less", "Greater",
           "Where"}
_ONNX = ("", "ai.onnx")


def available() -> bool:
    """True when this build has the C++ convolution kernels the lowering targets."""
    from ... import kernels

    return hasattr(kernels, "conv2d_f32") and hasattr(kernels, "conv2d_int8")


class _Names:
    def __init__(self, graph):
        self.used = {i["name"] for i in graph.inputs} | set(graph.params) | {
            v for n in graph.nodes for v in list(n.outputs) + list(n.inputs) if v}

    def new(self, base: str) -> str:
        name, k = base, 0
        while name in self.used:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name


def _conv_geometry(n, w) -> dict | None:
    a = n.attrs
    if str(a.get("auto_pad", "NOTSET")) not in ("NOTSET", "VALID") or w.ndim != 4:
        return None
    pads = list(a.get("pads") or [0, 0, 0, 0])
    if str(a.get("auto_pad", "NOTSET")) == "VALID":
        pads = [0, 0, 0, 0]
    ks = a.get("kernel_shape")
    if ks is not None and list(ks) != list(w.shape[2:]):
        return None
    return {"strides": list(a.get("strides") or [1, 1]), "pads": [pads[0], pads[1], pads[2], pads[3]],
            "dilations": list(a.get("dilations") or [1, 1]), "group": int(a.get("group", 1))}


def _layer_conv(n, params):
    """(op, inputs, attrs) of the NHWC node for a static QConv2d Layer node, or None."""
    import json

    if n.op != "Layer" or n.domain != EDGEPACK_DOMAIN or n.attrs.get("class") != "QConv2d" or n.attrs.get("conv1d"):
        return None
    cfg = json.loads(n.attrs["config"])
    tens = dict(zip(n.attrs["tensors"], n.inputs[1:]))
    act = cfg.get("activation") or ""
    if cfg.get("activations") not in ("static", "weights_only") or act not in ("", "relu", "silu"):
        return None
    geom = {"strides": list(cfg["stride"]), "pads": list(cfg["padding"]), "dilations": list(cfg["dilation"]),
            "group": int(cfg["groups"]), "activation": act, "act_params": []}
    wq = params[tens["weight_q"]]
    depthwise = cfg["groups"] > 1 and cfg["groups"] == cfg["in_channels"]
    bias = [tens["bias"]] if "bias" in tens else []
    if (depthwise and not cfg.get("int8_depthwise")) or cfg.get("activations") == "weights_only":
        # QConv2d computes these (float depthwise, weights-only) in float32 with its dequantized int8
        # weights: so does this
        wf = (wq.astype(np.float32) * params[tens["w_scale"]].reshape(-1, 1, 1, 1)).astype(np.float32)
        return "ConvNHWC", [n.inputs[0], ("param", wf)] + bias, geom
    zp = int(cfg["x_zero_point"])
    return "QConvNHWC", [n.inputs[0], tens["weight_q"], tens["w_scale"]] + bias, dict(
        geom, x_scale=float(cfg["x_scale"]), x_zero_point=zp, x_dtype="uint8")


def _to_nhwc(graph: Graph) -> Graph:
    params = dict(graph.params)
    names = _Names(graph)
    nodes = []
    for n in graph.nodes:
        spec = None
        if n.op == "Conv" and n.domain in _ONNX and len(n.inputs) >= 2 and n.inputs[1] in params and (
                len(n.inputs) < 3 or not n.inputs[2] or n.inputs[2] in params) and params[n.inputs[1]].dtype == np.float32:
            geom = _conv_geometry(n, params[n.inputs[1]])
            if geom is not None:
                spec = ("ConvNHWC", [v for v in n.inputs[:3] if v], dict(geom, activation="", act_params=[]))
        elif n.op == "Layer":
            spec = _layer_conv(n, params)
        if spec is None:
            nodes.append(n)
            continue
        op, ins, attrs = spec
        for i, v in enumerate(ins):
            if isinstance(v, tuple):
                pname = names.new(f"{n.name}.nhwc_weight")
                params[pname] = v[1]
                ins[i] = pname
        xt = names.new(f"{ins[0]}.nhwc")
        yt = names.new(f"{n.outputs[0]}.nhwc")
        nodes.append(Node("Transpose", [ins[0]], [xt], {"perm": TO_NHWC}, names.new(f"{n.name}.to_nhwc")))
        nodes.append(Node(op, [xt] + ins[1:], [yt], attrs, n.name, EDGEPACK_DOMAIN))
        nodes.append(Node("Transpose", [yt], [n.outputs[0]], {"perm": TO_NCHW}, names.new(f"{n.name}.to_nchw")))
    return graph.copy(nodes=nodes, params=params)


def _inverse(p):
    inv = [0] * len(p)
    for i, v in enumerate(p):
        inv[v] = i
    return inv


def _const_for(c: np.ndarray, perm) -> np.ndarray | None:
    """The constant ``c'`` with ``transpose(c', perm)`` broadcasting like ``c`` (rank <= 4)."""
    if c.ndim == 0 or c.size == 1:
        return c
    if c.ndim > len(perm):
        return None
    c4 = c.reshape((1,) * (len(perm) - c.ndim) + c.shape)
    return np.ascontiguousarray(np.transpose(c4, _inverse(perm)))


def _optimize_transposes(graph: Graph, max_rounds: int = 200) -> Graph:
    g = graph
    for _ in range(max_rounds):
        changed, g = _transpose_round(g)
        if not changed:
            break
        from .cleanup import eliminate_dead

        g = eliminate_dead(g)
    return g


def _perm_of(n):
    return list(n.attrs.get("perm") or []) if n.op == "Transpose" and n.domain in _ONNX else None


def _transpose_round(g: Graph):
    prod = {v: n for n in g.nodes for v in n.outputs if v}
    params = dict(g.params)
    names = _Names(g)
    outputs = set(g.outputs)
    nodes = list(g.nodes)
    for idx, n in enumerate(nodes):
        # 1. Transpose of a Transpose: compose; the identity disappears
        p2 = _perm_of(n)
        if p2 is not None and n.inputs[0] in prod and _perm_of(prod[n.inputs[0]]) is not None:
            t1 = prod[n.inputs[0]]
            p1 = _perm_of(t1)
            if len(p1) == len(p2):
                p = [p1[i] for i in p2]
                if p == list(range(len(p))) and n.outputs[0] not in outputs:
                    src, dst = t1.inputs[0], n.outputs[0]
                    new = [dataclasses.replace(m, inputs=[src if v == dst else v for v in m.inputs])
                           for m in nodes if m is not n]
                    return True, g.copy(nodes=new)
                if p == list(range(len(p))):     # a graph output: it still needs a producer
                    nodes[idx] = Node("Identity", [t1.inputs[0]], list(n.outputs), {}, n.name)
                    return True, g.copy(nodes=nodes)
                if p != list(range(len(p))):
                    nodes[idx] = dataclasses.replace(n, inputs=[t1.inputs[0]], attrs={"perm": p})
                    return True, g.copy(nodes=nodes)
        # (a graph output may be moved too: the Transpose after it writes the output's name)
        if n.domain not in _ONNX or not n.outputs or len(n.outputs) != 1:
            continue
        data = [(k, v) for k, v in enumerate(n.inputs) if v and v not in params]
        if not data:
            continue
        ts = [prod.get(v) for _, v in data]
        perms = [_perm_of(t) if t is not None else None for t in ts]
        if any(p is None for p in perms) or any(p != perms[0] for p in perms):
            continue
        perm = perms[0]
        # 2. elementwise ops (constants re-laid out), Concat, GlobalAveragePool
        new_inputs = list(n.inputs)
        attrs = dict(n.attrs)
        if n.op in _UNARY or n.op in _BINARY:
            ok = True
            for k, v in enumerate(n.inputs):
                if v and v in params:
                    c = params[v]
                    if n.op == "Clip" or (n.op == "Where" and k == 0 and c.ndim == 0):
                        if c.size != 1:
                            ok = False
                        continue
                    c2 = _const_for(c, perm)
                    if c2 is None:
                        ok = False
                        break
                    if c2 is not c:
                        pn = names.new(f"{v}.nhwc")
                        params[pn] = c2
                        new_inputs[k] = pn
            if not ok:
                continue
        elif n.op == "Concat":
            attrs["axis"] = perm[int(n.attrs.get("axis", 0)) % len(perm)]
        elif n.op == "GlobalAveragePool" and perm == TO_NCHW:
            pass
        else:
            continue
        for k, v in data:
            new_inputs[k] = prod[v].inputs[0]
        mid = names.new(f"{n.outputs[0]}.nhwc")
        op, dom = n.op, n.domain
        if n.op == "GlobalAveragePool":
            op, dom = "GlobalAveragePoolNHWC", EDGEPACK_DOMAIN
        moved = Node(op, new_inputs, [mid], attrs, n.name, dom)
        back = Node("Transpose", [mid], [n.outputs[0]], {"perm": perm}, names.new(f"{n.name}.transpose"))
        nodes[idx:idx + 1] = [moved, back]
        return True, g.copy(nodes=nodes, params=params)
    return False, g


# -- epilogue fusion ------------------------------------------------------------------------------------
def _scalar(params, v):
    if v in params and params[v].size == 1:
        return float(params[v].reshape(-1)[0])
    return None


def _fuse(g: Graph) -> Graph:
    changed = True
    while changed:
        changed, g = _fuse_round(g)
    return g


def _uses(g):
    u: dict[str, list] = {}
    for i, n in enumerate(g.nodes):
        for v in n.inputs:
            if v:
                u.setdefault(v, []).append(i)
    for o in g.outputs:
        u.setdefault(o, []).append(-1)
    return u


def _fuse_round(g: Graph):
    params = g.params
    uses = _uses(g)
    nodes = list(g.nodes)
    for i, c in enumerate(nodes):
        if c.domain != EDGEPACK_DOMAIN or c.op not in ("ConvNHWC", "QConvNHWC") or c.attrs.get("activation"):
            continue
        if c.op == "QConvNHWC" and float(c.attrs.get("out_scale", 0.0)):
            continue
        y = c.outputs[0]
        us = [j for j in uses.get(y, []) if j >= 0]
        if -1 in uses.get(y, []):
            continue
        fused = None
        if len(us) == 1:
            m = nodes[us[0]]
            if m.domain in _ONNX:
                fused = _single_act(m, params, c.op)
                if fused is not None:
                    fused = (fused[0], fused[1], [us[0]], m.outputs[0])
                elif m.op == "Add" and len(m.inputs) == 2 and _bias_const(m, y, params, c) is not None:
                    # a per-channel constant added after the conv is part of its bias
                    add = _bias_const(m, y, params, c)
                    nb = 2 if c.op == "ConvNHWC" else 3
                    old = params[c.inputs[nb]] if len(c.inputs) > nb and c.inputs[nb] else 0.0
                    pn = _Names(g).new(f"{c.name}.bias")
                    new_params = dict(params)
                    new_params[pn] = (np.asarray(old, np.float32) + add).astype(np.float32)
                    ins = list(c.inputs) + [""] * max(0, nb + 1 - len(c.inputs))
                    ins[nb] = pn
                    new = dataclasses.replace(c, inputs=ins, outputs=[m.outputs[0]])
                    return True, g.copy(nodes=_place(nodes, i, [us[0]], new), params=new_params)
                elif m.op == "Add" and len(m.inputs) == 2 and not _has_residual(c):
                    other = m.inputs[1] if m.inputs[0] == y else m.inputs[0]
                    if other != y and other not in params:
                        ins = list(c.inputs)
                        nb = 3 if c.op == "ConvNHWC" else 4     # inputs before the residual slot
                        while len(ins) < nb:
                            ins.append("")
                        new = dataclasses.replace(c, inputs=ins[:nb] + [other], outputs=[m.outputs[0]])
                        return True, g.copy(nodes=_place(nodes, i, [us[0]], new))
        elif len(us) == 2:
            fused = _two_use_act(y, [nodes[j] for j in us], us, uses, nodes, params, c.op)
        if fused is None:
            continue
        act, act_params, drop, out = fused
        new = dataclasses.replace(c, outputs=[out], attrs=dict(c.attrs, activation=act, act_params=act_params))
        return True, g.copy(nodes=_place(nodes, i, drop, new))
    return False, g


def _place(nodes, i, drop, new):
    """``nodes`` with node ``i`` and the fused nodes ``drop`` replaced by ``new``, placed where the
    last of them was: every input of the group (a residual computed after the conv, say) is
    defined by then, and the group's output is not used before it."""
    last = max([i, *drop])
    gone = set(drop) | {i}
    return [new if k == last else n for k, n in enumerate(nodes) if k == last or k not in gone]


def _bias_const(add, y, params, conv):
    """The float32 (Cout,) vector a constant Add operand contributes to the conv's bias, or None."""
    other = add.inputs[1] if add.inputs[0] == y else add.inputs[0]
    if other not in params or _has_residual(conv):
        return None
    c = params[other]
    cout = params[conv.inputs[1]].shape[0]
    if c.dtype.kind != "f" or c.ndim > 4:
        return None
    if c.size == 1:
        return np.full(cout, float(c.reshape(-1)[0]), np.float32)
    if c.size == cout and c.shape[-1] == cout:    # (..., 1, 1, Cout): channels last after relayout
        return c.reshape(-1).astype(np.float32)
    return None


def _has_residual(c):
    return len(c.inputs) > (3 if c.op == "ConvNHWC" else 4)


def _single_act(m, params, conv_op):
    a = m.attrs
    if m.op == "Relu":
        return "relu", []
    if m.op == "Clip":
        if len(m.inputs) > 1:
            lo = _scalar(params, m.inputs[1]) if len(m.inputs) > 1 and m.inputs[1] else float("-inf")
            hi = _scalar(params, m.inputs[2]) if len(m.inputs) > 2 and m.inputs[2] else float("inf")
            if lo is None or hi is None:
                return None
        else:
            lo, hi = float(a.get("min", -3.4028234663852886e38)), float(a.get("max", 3.4028234663852886e38))
        if (lo, hi) == (0.0, 6.0):
            return "relu6", []
        return "clip", [lo, hi]
    if m.op == "HardSigmoid":
        return "hardsigmoid", [float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))]
    if m.op == "HardSwish":
        return "hardswish", []
    if m.op == "LeakyRelu":
        return "leakyrelu", [float(a.get("alpha", 0.01))]
    if m.op == "Sigmoid":
        return "sigmoid", []
    if m.op == "Tanh" and conv_op == "ConvNHWC":
        return "tanh", []
    return None


def _two_use_act(y, users, idx, uses, nodes, params, conv_op):
    """SiLU (y * Sigmoid(y)) and HardSwish (y * HardSigmoid(y) with 1/6, 1/2, or
    Div(Mul(y, Clip(Add(y, 3), 0, 6)), 6))."""
    by = {n.op: (j, n) for j, n in zip(idx, users)}
    if set(by) == {"Sigmoid", "Mul"}:
        (js, s), (jm, m) = by["Sigmoid"], by["Mul"]
        if sorted(m.inputs) == sorted([y, s.outputs[0]]) and len(uses.get(s.outputs[0], [])) == 1:
            return "silu", [], [js, jm], m.outputs[0]
    if set(by) == {"HardSigmoid", "Mul"}:
        (jh, h), (jm, m) = by["HardSigmoid"], by["Mul"]
        if abs(float(h.attrs.get("alpha", 0.2)) - 1 / 6) < 1e-6 and abs(float(h.attrs.get("beta", 0.5)) - 0.5) < 1e-6 \
                and sorted(m.inputs) == sorted([y, h.outputs[0]]) and len(uses.get(h.outputs[0], [])) == 1:
            return "hardswish", [], [jh, jm], m.outputs[0]
    if set(by) == {"Add", "Mul"}:
        (ja, add), (jm, mul) = by["Add"], by["Mul"]
        three = [v for v in add.inputs if v != y]
        if len(three) != 1 or _scalar(params, three[0]) != 3.0 or len(uses.get(add.outputs[0], [])) != 1:
            return None
        jc = uses[add.outputs[0]][0]
        clip = nodes[jc]
        if clip.op != "Clip" or _single_act(clip, params, conv_op) != ("relu6", []) or \
                len(uses.get(clip.outputs[0], [])) != 1 or sorted(mul.inputs) != sorted([y, clip.outputs[0]]):
            return None
        if len(uses.get(mul.outputs[0], [])) != 1:
            return None
        jd = uses[mul.outputs[0]][0]
        div = nodes[jd]
        if jd < 0:
            return None
        if div.op == "Div" and div.inputs[0] == mul.outputs[0] and _scalar(params, div.inputs[1]) == 6.0:
            return "hardswish", [], [ja, jc, jm, jd], div.outputs[0]
        if div.op == "Mul" and _scalar(params, [v for v in div.inputs if v != mul.outputs[0]][0]) is not None and \
                abs(_scalar(params, [v for v in div.inputs if v != mul.outputs[0]][0]) - 1 / 6) < 1e-7:
            return "hardswish", [], [ja, jc, jm, jd], div.outputs[0]
    return None


# Operators that commute with a monotone per-tensor quantization, so running them on the uint8/
# int8 tensor gives exactly the quantization of their float result: data movement and max pooling
# (its padding never wins a max). Relu is not here: in the quantized domain it is max(q, zp).
_SCALE_PRESERVING = {"Transpose", "MaxPool", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Slice"}


def _chain_int8(g: Graph) -> Graph:
    """An int8 conv whose output reaches another int8 conv's input only through scale-preserving
    operators (and Concats whose every input comes that way from an int8 conv) writes that input
    quantized (uint8/int8) with the consumer's scale: those operators then run on the int8 tensor
    — a Concat of tensors sharing one scale is the quantized Concat — and the activations between
    int8 layers never go through float32."""
    uses = _uses(g)
    prod = {v: k for k, n in enumerate(g.nodes) for v in n.outputs if v}
    nodes = list(g.nodes)

    def producers(v, depth=0):
        """Indices of the int8 convs feeding ``v`` through scale-preserving ops, or None."""
        k = prod.get(v)
        if k is None or depth > 32 or len(uses.get(v, [])) != 1:
            return None
        n = nodes[k]
        if n.op == "QConvNHWC" and n.domain == EDGEPACK_DOMAIN:
            ok = not float(n.attrs.get("out_scale", 0.0)) and not _has_residual(n)
            return [k] if ok else None
        if n.domain not in _ONNX or len([o for o in n.outputs if o]) != 1:
            return None
        if n.op in _SCALE_PRESERVING:
            return producers(n.inputs[0], depth + 1)
        if n.op == "Concat":
            found = []
            for x in n.inputs:
                p = producers(x, depth + 1) if x else None
                if p is None:
                    return None
                found += p
            return found
        return None

    for q in g.nodes:
        if q.op != "QConvNHWC" or q.domain != EDGEPACK_DOMAIN:
            continue
        ks = producers(q.inputs[0])
        if not ks:
            continue
        for k in ks:
            nodes[k] = dataclasses.replace(nodes[k], attrs=dict(
                nodes[k].attrs, out_scale=float(q.attrs["x_scale"]), out_zero_point=int(q.attrs["x_zero_point"]),
                out_dtype=str(q.attrs.get("x_dtype", "uint8"))))
    return g.copy(nodes=nodes)


def lower_for_inference(graph: Graph) -> Graph:
    """The graph that runs (see the module docstring); the input graph is not modified.  Without
    the convolution kernels in this build, the graph is returned as it is."""
    if not available() or not any(n.op in ("Conv", "Layer") for n in graph.nodes):
        return graph
    from .cleanup import eliminate_dead

    g = _to_nhwc(graph)
    if g is graph:
        return graph
    g = _optimize_transposes(g)
    g = _fuse(g)
    g = _chain_int8(g)
    return eliminate_dead(g)
