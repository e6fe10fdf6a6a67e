"""Small bundled data sets for the demo and examples.

``digits.npz`` is the 8x8 handwritten digits set (1797 images, 10 classes, pixels 0..16): the UCI
"Optical Recognition of Handwritten Digits" test set by E. Alpaydin and C. Kaynak (1998), as
shipped by scikit-learn (BSD-3-Clause) in ``sklearn/datasets/data/digits.csv.gz``; the UCI
repository distributes it under CC BY 4.0 (attribution: Alpaydin, E. & Kaynak, C. (1998).
Optical Recognition of Handwritten Digits. UCI Machine Learning Repository.
https://doi.org/10.24432/C50P49).  Bundled (45 KB) so ``edgepack demo`` needs numpy only.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["load_digits", "train_test_split"]


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 digits: ``X`` float32 (1797, 64) scaled to [0, 1], ``y`` int64 (1797,) in 0..9."""
    path = os.path.join(os.path.dirname(__file__), "digits.npz")
    with np.load(path, allow_pickle=False) as f:
        x = f["images"].astype(np.float32) / np.float32(16.0)
        y = f["target"].astype(np.int64)
    return x, y


def train_test_split(x: np.ndarray, y: np.ndarray, test_size: float = 0.3, seed: int = 0):
    """Stratified random split: ``(x_train, x_test, y_train, y_test)``; ``test_size`` of each
    class (rounded) goes to the test part, so class balance matches across seeds."""
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        test.append(idx[: int(round(test_size * idx.size))])
    test_idx = np.sort(np.concatenate(test))
    mask = np.ones(y.shape[0], bool)
    mask[test_idx] = False
    train_idx = rng.permutation(np.flatnonzero(mask))
    return x[train_idx], x[test_idx], y[train_idx], y[test_idx]
