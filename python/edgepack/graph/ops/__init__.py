"""Operator families.  Importing this package registers every operator; each module holds one
family and registers its ops with :func:`edgepack.graph.registry.register_op`."""

from . import (  # noqa: F401
    activation,
    basic,
    conv,
    elementwise,
    layer,
    linalg,
    nhwc,
    norm,
    pool,
    quant,
    reduce,
    resize,
    rnn,
    shape,
)
