"""Training in NumPy: :func:`train`, a small reverse-mode autograd over edgepack.nn layers."""

from .._callable import make_module_callable
from .losses import cross_entropy, kd_loss, mse
from .optim import SGD, Adam
from .trainer import train

__all__ = ["train", "cross_entropy", "mse", "kd_loss", "SGD", "Adam"]


make_module_callable(__name__, "train")
