"""Training in NumPy: :func:`train`, a small reverse-mode autograd over edgepack.nn layers."""

from .losses import cross_entropy, kd_loss, mse
from .optim import SGD, Adam
from .trainer import train

__all__ = ["train", "cross_entropy", "mse", "kd_loss", "SGD", "Adam"]


def _callable_module() -> None:
    # `import edgepack.train` (or `from edgepack.train import ...`) rebinds the attribute
    # edgepack.train to this module instead of the function the lazy table promises; a module
    # whose call is train() keeps `edgepack.train(model, ...)` working either way.
    import sys
    import types

    class _TrainModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return train(*args, **kwargs)

    sys.modules[__name__].__class__ = _TrainModule


_callable_module()
