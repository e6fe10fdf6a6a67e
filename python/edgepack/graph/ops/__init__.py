"""Operator families.  Importing this package registers every operator; each module holds one
family and registers its ops with :func:`edgepack.graph.registry.register_op`."""

from . import basic  # noqa: F401
