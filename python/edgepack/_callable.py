"""Submodules that are also their main function (edgepack.train, prune, distill, compare)."""

from __future__ import annotations

import sys
import types


def make_module_callable(module_name: str, function_name: str) -> None:
    """Make the module ``module_name`` callable as its function ``function_name``.

    ``import edgepack.prune`` (or ``from edgepack.prune import ...``) rebinds the attribute
    ``edgepack.prune`` to the module instead of the function that edgepack's lazy table promises;
    a module whose call is that function keeps ``edgepack.prune(model, ...)`` working either way.
    The function is looked up on each call, so the module's current attribute is what runs.
    """

    class _CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return getattr(self, function_name)(*args, **kwargs)

    sys.modules[module_name].__class__ = _CallableModule
