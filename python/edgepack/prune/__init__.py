"""edgepack.prune: magnitude pruning (unstructured, 2:4, neurons, channels), gradual schedules and
per-layer sensitivity.  Pruned Linear layers run on the sparse kernels (``edgepack.nn.sparse``)."""

from .masks import magnitude_masks, nm_mask, unit_scores
from .prune import STRUCTURES, SensitivityResult, prune, sensitivity
from .schedule import cubic_schedule
from ..nn.sparse import SparseLinear, quantize_sparse, sparsify

__all__ = ["prune", "sensitivity", "SensitivityResult", "cubic_schedule", "magnitude_masks", "nm_mask",
           "unit_scores", "STRUCTURES", "SparseLinear", "sparsify", "quantize_sparse"]


def _callable_module() -> None:
    # `import edgepack.prune` (or `from edgepack.prune import ...`) makes the attribute
    # edgepack.prune this module rather than the function the lazy table promises; a module whose
    # call is prune() keeps `edgepack.prune(model, ...)` working either way.
    import sys
    import types

    class _PruneModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return prune(*args, **kwargs)

    sys.modules[__name__].__class__ = _PruneModule


_callable_module()
