"""``edgepack.Layer``: a node that runs one registered edgepack layer (QLinear, QConv2d,
SparseLinear, SparseConv2d, ...).

The compression passes replace a Conv/Gemm/MatMul by such a node, so an imported graph runs the
same int8 and sparse layers (and kernels) as a hand-built model, with one implementation of each.
Attributes: ``class`` (a name in :data:`edgepack.nn.LAYER_REGISTRY`: nothing in a file can name
anything else), ``config`` (the layer's ``get_config()`` as a JSON string) and ``tensors`` (the
layer's tensor names, bound to the node's inputs 1..n, which are graph parameters).  ``conv1d=1``
runs a 2-D convolution layer on ``(N, C, L)`` inputs as ``(N, C, 1, L)``.
"""

from __future__ import annotations

import json

import numpy as np

from ..registry import EDGEPACK_DOMAIN, REQUIRED, register_op


def build_layer(node, consts):
    """The layer object a Layer node describes (validated like a model file's layer)."""
    from ...io.format import _lookup

    name = node.attrs["class"]
    cls = _lookup(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"class {name!r} is not a registered edgepack layer")
    try:
        config = json.loads(node.attrs["config"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"config is not valid JSON ({e})") from None
    names = node.attrs["tensors"]
    if not isinstance(config, dict) or not isinstance(names, list) or len(names) != len(node.inputs) - 1:
        raise ValueError("config must be an object and 'tensors' must name inputs 1..n")
    tensors = {}
    for k, v in zip(names, consts[1:]):
        if v is None:
            raise ValueError(f"tensor {k!r} must be a graph parameter")
        tensors[k] = v
    layer = cls.from_config(config, tensors)
    if layer.children():
        raise ValueError(f"class {name!r} is a container; a Layer node runs one layer")
    return layer.eval()


@register_op("Layer", 1, domain=EDGEPACK_DOMAIN, attrs={"class": REQUIRED, "config": REQUIRED,
                                                          "tensors": REQUIRED, "conv1d": 0})
def _layer(node, consts):
    layer = build_layer(node, consts)
    if node.attrs["conv1d"]:
        def run1d(x, *_):
            if x.ndim != 3:
                raise ValueError(f"expected (N, C, L) input; got shape {x.shape}")
            y = layer(x[:, :, None, :])
            return y.reshape(y.shape[0], y.shape[1], y.shape[3])
        return run1d
    return lambda x, *_: layer(x)


def layer_node(layer, x: str, out: str, name: str, params: dict, *, conv1d: bool = False):
    """A Layer node running ``layer`` on value ``x`` into ``out``; its tensors are added to
    ``params`` as ``{name}.{tensor}``."""
    from ..ir import Node

    ins = [x]
    tnames = []
    for k, v in layer.get_tensors().items():
        pname = f"{name}.{k}"
        params[pname] = np.asarray(v, order="C")
        ins.append(pname)
        tnames.append(k)
    return Node("Layer", ins, [out], {"class": layer._layer_name or type(layer).__name__,
                                      "config": json.dumps(layer.get_config()), "tensors": tnames,
                                      "conv1d": int(conv1d)}, name, EDGEPACK_DOMAIN)
