"""The float digits models (weights from make_digits_models.py) as edgepack models, and the split.

Used by tests/test_ptq.py, tests/test_cli_ptq.py and benchmarks/bench_models.py (loaded by path,
so it needs no package).  Needs scikit-learn for the data.
"""

from __future__ import annotations

import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def split():
    """(x_train, x_test, y_train, y_test): digits pixels / 16 (float32), stratified 30% test, seed 0."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    return train_test_split(x, d.target, test_size=0.3, random_state=0, stratify=d.target)


def mlp():
    """MLP 64-256-256-10 (ReLU); input (N, 64)."""
    from edgepack import nn

    w = np.load(os.path.join(HERE, "digits_mlp.npz"))
    return nn.Sequential(
        nn.Linear.from_weights(w["fc0.weight"], w["fc0.bias"]), nn.ReLU(),
        nn.Linear.from_weights(w["fc1.weight"], w["fc1.bias"]), nn.ReLU(),
        nn.Linear.from_weights(w["fc2.weight"], w["fc2.bias"]),
    )


def cnn():
    """Small CNN; input (N, 1, 8, 8)."""
    from edgepack import nn

    w = np.load(os.path.join(HERE, "digits_cnn.npz"))
    conv = lambda k: nn.Conv2d.from_weights(w[f"{k}.weight"], w[f"{k}.bias"], padding=1)  # noqa: E731
    return nn.Sequential(
        conv("conv0"), nn.ReLU(), conv("conv1"), nn.ReLU(), nn.MaxPool2d(2),
        conv("conv2"), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear.from_weights(w["fc0.weight"], w["fc0.bias"]), nn.ReLU(),
        nn.Linear.from_weights(w["fc1.weight"], w["fc1.bias"]),
    )


def image(x):
    """(N, 64) pixels -> (N, 1, 8, 8) images."""
    return np.ascontiguousarray(np.asarray(x, np.float32).reshape(-1, 1, 8, 8))
