"""Identity-like operators: Identity, Dropout (inference), Constant."""

from __future__ import annotations

import numpy as np

from ..registry import register_op


@register_op("Identity")
def _identity(node, consts):
    return lambda x: x


@register_op("Dropout", 1, attrs={"ratio": 0.5, "is_test": 0, "consumed_inputs": None, "seed": None,
                                   "training_mode": None})
@register_op("Dropout", 12, attrs={"seed": 0})
def _dropout(node, consts):
    # Inference: the identity (training_mode given as an input is honoured only when false).
    with_mask = len(node.outputs) > 1 and bool(node.outputs[1])

    def run(x, ratio=None, training_mode=None):
        if training_mode is not None and bool(np.asarray(training_mode)):
            raise ValueError("Dropout with training_mode=True is not supported at inference")
        if with_mask:
            return x, np.ones(x.shape, np.bool_)
        return x if len(node.outputs) == 1 else (x, None)

    return run


def _constant_value(node):
    a = node.attrs
    given = [k for k in ("value", "value_float", "value_floats", "value_int", "value_ints") if a.get(k) is not None]
    if len(given) != 1:
        raise ValueError(f"Constant needs exactly one supported value attribute; got {given}")
    k = given[0]
    v = a[k]
    if k == "value":
        return np.asarray(v)
    if k in ("value_float", "value_floats"):
        return np.asarray(v, np.float32)
    return np.asarray(v, np.int64)


def _check_constant(node):
    try:
        _constant_value(node)
    except ValueError as e:
        return [str(e)]
    return []


@register_op("Constant", 1, attrs={"value": None, "value_float": None, "value_floats": None,
                                    "value_int": None, "value_ints": None}, check=_check_constant)
def _constant(node, consts):
    v = _constant_value(node)
    v.setflags(write=False)
    return lambda: v
