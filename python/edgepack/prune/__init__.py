"""edgepack.prune: magnitude pruning (unstructured, 2:4, neurons, channels), gradual schedules and
per-layer sensitivity.  Pruned Linear layers run on the sparse kernels (``edgepack.nn.sparse``)."""

from .._callable import make_module_callable
from .masks import magnitude_masks, nm_mask, unit_scores
from .prune import STRUCTURES, SensitivityResult, prune, sensitivity
from .schedule import cubic_schedule
from ..nn.sparse import SparseLinear, quantize_sparse, sparsify

__all__ = ["prune", "sensitivity", "SensitivityResult", "cubic_schedule", "magnitude_masks", "nm_mask",
           "unit_scores", "STRUCTURES", "SparseLinear", "sparsify", "quantize_sparse"]


make_module_callable(__name__, "prune")
