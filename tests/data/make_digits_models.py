"""Train the float digits models the PTQ tests and benchmarks quantize; writes .npz weights here.

    python3 tests/data/make_digits_models.py

Data: scikit-learn's 8x8 digits, pixels / 16, a stratified 30% held-out split with
random_state=0 (tests/data/digits_models.py rebuilds the same split).  Both models are trained in float32
with NumPy only (no framework), fixed seeds:

- MLP 64-256-256-10 (ReLU): sklearn MLPClassifier (adam, 200 epochs), weights copied out.
- CNN (NCHW, 1x8x8): conv3x3(1->16) relu, conv3x3(16->32) relu, maxpool2, conv3x3(32->64) relu,
  maxpool2, flatten(256), linear(256->64) relu, linear(64->10); a hand-written NumPy
  backprop (im2col convolutions) with Adam, 40 epochs of batch 64.

The tests never retrain: they load the .npz files (float32 weights in edgepack's layouts:
Linear [out, in], Conv2d [out, in, kh, kw]).
"""

from __future__ import annotations

import os

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

HERE = os.path.dirname(os.path.abspath(__file__))


def split():
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    return train_test_split(x, d.target, test_size=0.3, random_state=0, stratify=d.target)


def train_mlp(xtr, ytr):
    clf = MLPClassifier(hidden_layer_sizes=(256, 256), activation="relu", solver="adam", alpha=1e-4,
                        max_iter=200, random_state=0)
    clf.fit(xtr, ytr)
    out = {}
    for i, (w, b) in enumerate(zip(clf.coefs_, clf.intercepts_)):
        out[f"fc{i}.weight"] = np.ascontiguousarray(w.T, np.float32)  # sklearn stores [in, out]
        out[f"fc{i}.bias"] = b.astype(np.float32)
    return out


# -- a minimal NumPy CNN trainer ----------------------------------------------------------------

def im2col(x, k, pad):
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = np.empty((n, c, k, k, h, w), x.dtype)
    for i in range(k):
        for j in range(k):
            cols[:, :, i, j] = xp[:, :, i:i + h, j:j + w]
    return cols.transpose(0, 4, 5, 1, 2, 3).reshape(n * h * w, c * k * k)


def col2im(dcols, shape, k, pad):
    n, c, h, w = shape
    d = dcols.reshape(n, h, w, c, k, k).transpose(0, 3, 4, 5, 1, 2)
    dxp = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dcols.dtype)
    for i in range(k):
        for j in range(k):
            dxp[:, :, i:i + h, j:j + w] += d[:, :, i, j]
    return dxp[:, :, pad:pad + h, pad:pad + w]


def conv_fwd(x, w, b):
    n, c, h, wd = x.shape
    o = w.shape[0]
    cols = im2col(x, 3, 1)
    y = cols @ w.reshape(o, -1).T + b
    return y.reshape(n, h, wd, o).transpose(0, 3, 1, 2), cols


def conv_bwd(dy, cols, x_shape, w):
    o = w.shape[0]
    dy2 = dy.transpose(0, 2, 3, 1).reshape(-1, o)
    dw = (dy2.T @ cols).reshape(w.shape)
    db = dy2.sum(0)
    dx = col2im(dy2 @ w.reshape(o, -1), x_shape, 3, 1)
    return dx, dw, db


def pool_fwd(x):
    n, c, h, w = x.shape
    xr = x.reshape(n, c, h // 2, 2, w // 2, 2)
    y = xr.max(axis=(3, 5))
    mask = xr == y[:, :, :, None, :, None]
    return y, mask


def pool_bwd(dy, mask):
    d = mask * dy[:, :, :, None, :, None]
    d = d / np.maximum(mask.sum(axis=(3, 5), keepdims=True), 1)
    n, c, h2, _, w2, _ = d.shape
    return d.reshape(n, c, h2 * 2, w2 * 2)


def cnn_forward(p, x, keep=False):
    a1, c1 = conv_fwd(x, p["conv0.weight"], p["conv0.bias"]); r1 = np.maximum(a1, 0)
    a2, c2 = conv_fwd(r1, p["conv1.weight"], p["conv1.bias"]); r2 = np.maximum(a2, 0)
    p2, m2 = pool_fwd(r2)
    a3, c3 = conv_fwd(p2, p["conv2.weight"], p["conv2.bias"]); r3 = np.maximum(a3, 0)
    p3, m3 = pool_fwd(r3)
    f = p3.reshape(len(x), -1)
    a4 = f @ p["fc0.weight"].T + p["fc0.bias"]; r4 = np.maximum(a4, 0)
    z = r4 @ p["fc1.weight"].T + p["fc1.bias"]
    if not keep:
        return z
    return z, (x, a1, c1, r1, a2, c2, r2, m2, p2, a3, c3, r3, m3, p3, f, a4, r4)


def cnn_grads(p, x, y):
    z, (x, a1, c1, r1, a2, c2, r2, m2, p2, a3, c3, r3, m3, p3, f, a4, r4) = cnn_forward(p, x, True)
    z = z - z.max(1, keepdims=True)
    pr = np.exp(z); pr /= pr.sum(1, keepdims=True)
    loss = -np.log(pr[np.arange(len(y)), y] + 1e-12).mean()
    dz = pr; dz[np.arange(len(y)), y] -= 1; dz /= len(y)
    g = {"fc1.weight": dz.T @ r4, "fc1.bias": dz.sum(0)}
    da4 = (dz @ p["fc1.weight"]) * (a4 > 0)
    g["fc0.weight"], g["fc0.bias"] = da4.T @ f, da4.sum(0)
    dp3 = (da4 @ p["fc0.weight"]).reshape(p3.shape)
    da3 = pool_bwd(dp3, m3) * (a3 > 0)
    dp2, g["conv2.weight"], g["conv2.bias"] = conv_bwd(da3, c3, p2.shape, p["conv2.weight"])
    da2 = pool_bwd(dp2, m2) * (a2 > 0)
    dr1, g["conv1.weight"], g["conv1.bias"] = conv_bwd(da2, c2, r1.shape, p["conv1.weight"])
    da1 = dr1 * (a1 > 0)
    _, g["conv0.weight"], g["conv0.bias"] = conv_bwd(da1, c1, x.shape, p["conv0.weight"])
    return loss, g


def train_cnn(xtr, ytr, epochs=40, batch=64, lr=2e-3, seed=0):
    rng = np.random.default_rng(seed)

    def he(shape, fan_in):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    p = {"conv0.weight": he((16, 1, 3, 3), 9), "conv0.bias": np.zeros(16, np.float32),
         "conv1.weight": he((32, 16, 3, 3), 144), "conv1.bias": np.zeros(32, np.float32),
         "conv2.weight": he((64, 32, 3, 3), 288), "conv2.bias": np.zeros(64, np.float32),
         "fc0.weight": he((64, 256), 256), "fc0.bias": np.zeros(64, np.float32),
         "fc1.weight": he((10, 64), 64), "fc1.bias": np.zeros(10, np.float32)}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(v) for k, v in p.items()}
    x = xtr.reshape(-1, 1, 8, 8)
    t = 0
    for ep in range(epochs):
        order = rng.permutation(len(x))
        tot = 0.0
        for s in range(0, len(x), batch):
            idx = order[s:s + batch]
            loss, g = cnn_grads(p, x[idx], ytr[idx])
            tot += loss * len(idx)
            t += 1
            for k in p:
                m[k] = 0.9 * m[k] + 0.1 * g[k]
                v[k] = 0.999 * v[k] + 0.001 * g[k] ** 2
                mh, vh = m[k] / (1 - 0.9 ** t), v[k] / (1 - 0.999 ** t)
                p[k] = (p[k] - lr * mh / (np.sqrt(vh) + 1e-8)).astype(np.float32)
        if ep % 10 == 9:
            print(f"  cnn epoch {ep + 1}: loss {tot / len(x):.4f}")
    return p


def main():
    xtr, xte, ytr, yte = split()
    mlp = train_mlp(xtr, ytr)
    np.savez(os.path.join(HERE, "digits_mlp.npz"), **mlp)
    cnn = train_cnn(xtr, ytr)
    np.savez(os.path.join(HERE, "digits_cnn.npz"), **cnn)
    z = cnn_forward(cnn, xte.reshape(-1, 1, 8, 8))
    print(f"cnn test accuracy (trainer's own forward): {(z.argmax(1) == yte).mean():.4f}")


if __name__ == "__main__":
    main()
