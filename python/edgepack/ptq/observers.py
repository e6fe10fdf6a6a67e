"""Activation range observers for static int8 calibration.

An observer sees calibration batches one at a time (``update(x)``) and then picks the float range
``[lo, hi]`` (always containing 0) that static quantization maps onto uint8:
``scale = (hi - lo) / 255``, ``zero_point = round(-lo / scale)``, so float 0 (padding, ReLU
zeros) is exact.

Memory is bounded whatever the amount of calibration data: the histogram observers keep two
2048-bin histograms (of the positive values and of the magnitudes of the negative ones), both
anchored at 0.  When a batch exceeds the covered range, the range doubles as often as needed and
adjacent bins are merged pairwise, which is exact (no re-binning error) and keeps 0 on a bin
edge.

Methods
-------
minmax
    The observed [min, max].
percentile
    The (100 - p)-th and p-th percentiles of the values (p = 99.99 by default): each tail loses
    (100 - p) % of the values, so rare outliers do not stretch the scale.
entropy
    TensorRT style (Migacz 2017): on the 2048-bin histogram of |x|, for every cut i = 128..2048
    let P be the first i bins with the mass beyond the cut added to bin i - 1, and Q the first i
    bins merged into 128 levels and spread back evenly over the non-empty bins; amax is the edge
    minimising KL(P || Q), among the cuts clipping at most 0.1 % of the values (a guard for data
    with few distinct values, where KL cannot see clipping).  Exact zeros (e.g. half of a ReLU's outputs) are left out of
    the histogram: they are exact at any scale, and their spike in bin 0 would otherwise pull the
    cut far down.  Non-negative data gets [0, amax], otherwise [-amax, amax].
mse
    The range that minimises the expected squared quantization error (rounding inside the range
    plus clipping outside it) of the histogram, computed exactly for a density that is uniform
    within each bin.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "Observer", "MinMaxObserver", "HistogramObserver", "PercentileObserver", "EntropyObserver",
    "MSEObserver", "make_observer", "qparams_from_range", "quantize_affine", "dequantize_affine",
    "fake_quantize", "sqnr_db", "METHODS",
]

METHODS = ("minmax", "percentile", "entropy", "mse")
QMAX = 255  # uint8 activations: levels 0..255


def qparams_from_range(lo: float, hi: float) -> tuple[float, int]:
    """uint8 affine parameters for the float range ``[lo, hi]`` (widened to contain 0).

    Returns
    -------
    (scale, zero_point) : (float, int)
        ``scale > 0`` (float32-representable), ``zero_point`` in [0, 255].  An all-zero range
        gives scale 1 (as ONNX Runtime does).
    """
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"range must be finite; got [{lo}, {hi}]")
    if hi - lo <= 0.0:
        return 1.0, 0
    scale = float(np.float32((hi - lo) / QMAX))
    if scale <= 0.0:  # a range below float32's smallest step
        return float(np.finfo(np.float32).tiny), 0
    zp = int(np.clip(np.round(-lo / scale), 0, QMAX))
    return scale, zp


def quantize_affine(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """uint8 ``clip(round_half_even(x / scale) + zero_point, 0, 255)`` (ONNX QuantizeLinear)."""
    q = np.rint(np.asarray(x, np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, 0, QMAX).astype(np.uint8)


def dequantize_affine(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """float32 ``(q - zero_point) * scale``."""
    return ((q.astype(np.int32) - zero_point) * np.float32(scale)).astype(np.float32)


def fake_quantize(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """``dequantize_affine(quantize_affine(x))``: what static quantization does to ``x``."""
    return dequantize_affine(quantize_affine(x, scale, zero_point), scale, zero_point)


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio ``10 log10(sum(ref^2) / sum((ref - test)^2))`` in dB.

    ``inf`` when the two are identical; computed in float64.
    """
    r = np.asarray(reference, np.float64)
    t = np.asarray(test, np.float64)
    if r.shape != t.shape:
        raise ValueError(f"reference and test must have the same shape; got {r.shape} and {t.shape}")
    noise = float(np.sum((r - t) ** 2))
    signal = float(np.sum(r * r))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return 10.0 * np.log10(signal / noise)


def _as_batch(x) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"calibration activations must be floating point; got {x.dtype}")
    x = x.astype(np.float32, copy=False)
    if x.size and not np.isfinite(x).all():
        raise ValueError("calibration activations contain NaN or Inf")
    return x.ravel()


class Observer:
    """Collects statistics over batches and picks a quantization range.

    Subclasses implement ``_update(flat float32 array)`` and ``range()``.
    """

    method = ""

    def __init__(self) -> None:
        self.count = 0
        self.min = np.inf
        self.max = -np.inf

    def update(self, x) -> "Observer":
        """Add a batch of activations (any shape, floating point). Returns self."""
        flat = _as_batch(x)
        if flat.size == 0:
            return self
        self.count += flat.size
        self.min = min(self.min, float(flat.min()))
        self.max = max(self.max, float(flat.max()))
        self._update(flat)
        return self

    def _update(self, flat: np.ndarray) -> None:
        pass

    def _check(self) -> None:
        if self.count == 0:
            raise ValueError(f"{type(self).__name__} has seen no data; call update() with calibration batches first")

    def range(self) -> tuple[float, float]:
        """The chosen float range ``(lo, hi)``, ``lo <= 0 <= hi``."""
        raise NotImplementedError

    def qparams(self) -> tuple[float, int]:
        """``(scale, zero_point)`` of uint8 activations for :meth:`range`."""
        return qparams_from_range(*self.range())


class MinMaxObserver(Observer):
    """The observed minimum and maximum (widened to contain 0)."""

    method = "minmax"

    def range(self):
        self._check()
        return min(self.min, 0.0), max(self.max, 0.0)


class HistogramObserver(Observer):
    """Streaming histograms of the positive values and of |negative values|, ``bins`` each.

    Both cover ``[0, R)`` with the same power-of-two-grown ``R``; memory is ``2 * bins`` int64
    counts whatever the data size.
    """

    def __init__(self, bins: int = 2048) -> None:
        super().__init__()
        if bins < 128 or bins % 2:
            raise ValueError(f"bins must be an even integer >= 128; got {bins}")
        self.bins = int(bins)
        self.pos = np.zeros(self.bins, np.int64)
        self.neg = np.zeros(self.bins, np.int64)
        self.zeros = 0  # exact zeros are counted apart: they always quantize exactly
        self.R = 0.0

    def _grow(self, amax: float) -> None:
        if self.R == 0.0:
            self.R = float(amax) if amax > 0 else 0.0
            return
        while amax > self.R:
            # Doubling the range merges bin pairs exactly: bin j of the new histogram is old bins
            # 2j and 2j + 1, and the upper half starts empty.
            for h in (self.pos, self.neg):
                merged = h.reshape(-1, 2).sum(axis=1)
                h[: self.bins // 2] = merged
                h[self.bins // 2:] = 0
            self.R *= 2.0

    def _update(self, flat):
        amax = float(max(abs(self.min), abs(self.max)))
        self._grow(amax)
        if self.R == 0.0:
            self.zeros += flat.size  # all zeros so far
            return
        k = self.bins / self.R
        p = flat[flat > 0]
        n = -flat[flat < 0]
        zeros = flat.size - p.size - n.size
        for vals, h in ((p, self.pos), (n, self.neg)):
            if vals.size:
                idx = np.minimum((vals.astype(np.float64) * k).astype(np.int64), self.bins - 1)
                h += np.bincount(idx, minlength=self.bins)
        self.zeros += zeros

    def bin_width(self) -> float:
        return self.R / self.bins

    def signed_histogram(self) -> tuple[np.ndarray, np.ndarray]:
        """``(counts [2*bins], edges [2*bins + 1])`` over ``[-R, R]``."""
        counts = np.concatenate([self.neg[::-1], self.pos]).astype(np.float64)
        counts[self.bins] += self.zeros
        edges = np.linspace(-self.R, self.R, 2 * self.bins + 1)
        return counts, edges

    def abs_histogram(self) -> np.ndarray:
        """Counts of nonzero |x| over ``[0, R)`` in ``bins`` bins (exact zeros left out)."""
        return (self.pos + self.neg).astype(np.float64)


class PercentileObserver(HistogramObserver):
    """Range between the (100 - p)-th and the p-th percentile (clipped to the observed min/max)."""

    method = "percentile"

    def __init__(self, percentile: float = 99.99, bins: int = 2048) -> None:
        super().__init__(bins)
        p = float(percentile)
        if not 50.0 < p <= 100.0:
            raise ValueError(f"percentile must be in (50, 100]; got {percentile!r}")
        self.percentile = p

    def range(self):
        self._check()
        if self.R == 0.0:
            return 0.0, 0.0
        counts, edges = self.signed_histogram()
        cdf = np.concatenate([[0.0], np.cumsum(counts)]) / counts.sum()

        def at(q: float) -> float:
            # Linear interpolation inside the bin where the cdf crosses q.
            j = int(np.searchsorted(cdf, q, side="left"))
            j = min(max(j, 1), len(cdf) - 1)
            c0, c1 = cdf[j - 1], cdf[j]
            t = 0.0 if c1 == c0 else (q - c0) / (c1 - c0)
            return float(edges[j - 1] + t * (edges[j] - edges[j - 1]))

        tail = (100.0 - self.percentile) / 100.0
        lo = max(at(tail), self.min)
        hi = min(at(1.0 - tail), self.max)
        return min(lo, 0.0), max(hi, 0.0)


def _smooth(d: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """Move a little mass onto empty bins so KL stays finite (TensorRT's smoothing)."""
    zero = d == 0
    nz = d.size - int(zero.sum())
    if nz == 0:
        return d
    out = d.copy()
    out[zero] = eps
    out[~zero] -= eps * zero.sum() / nz
    return out


def entropy_amax(hist: np.ndarray, bin_width: float, levels: int = 128, stride: int = 1,
                 max_clip: float = 1e-3) -> float:
    """TensorRT-style KL threshold on a histogram of |x| (see the module docstring).

    Parameters
    ----------
    hist : float64 (B,)
        Counts of |x| in B bins of ``bin_width`` starting at 0.
    levels : int
        Quantized levels (128 for int8 magnitudes).
    stride : int
        Evaluate every ``stride``-th cut (1 = all, as TensorRT).
    max_clip : float
        Cuts that would clip more than this fraction of the values are not considered.  KL cannot
        see clipping when the clipped mass lands on an occupied bin and P and Q stay proportional:
        on data with few distinct values (e.g. 17 pixel levels) the unguarded search returns the
        first occupied bin and clips almost everything.

    Returns
    -------
    float
        amax = the upper edge of the best cut.
    """
    hist = np.asarray(hist, np.float64)
    nb = hist.size
    last = int(np.nonzero(hist)[0].max()) + 1 if hist.any() else 0
    if last <= levels:
        return last * bin_width  # the data already fits in `levels` bins: nothing to clip
    best_i, best_kl = nb, np.inf
    tail = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]])  # tail[i] = sum(hist[i:])
    start = max(levels, int(np.argmax(tail <= max_clip * tail[0])))
    for i in range(start, nb + 1, stride):
        p = hist[:i].copy()
        p[i - 1] += hist[i:].sum()
        if p.sum() == 0:
            continue
        # Merge bins [0, i) into `levels` chunks, then spread each chunk's mass evenly over its
        # non-empty bins.
        chunk = (np.arange(i) * levels) // i
        src = hist[:i]
        nonzero = src > 0
        csum = np.bincount(chunk, weights=src, minlength=levels)
        cnt = np.bincount(chunk, weights=nonzero, minlength=levels)
        q = np.where(nonzero, csum[chunk] / np.maximum(cnt[chunk], 1), 0.0)
        ps, qs = p / p.sum(), q / max(q.sum(), 1e-300)
        ps, qs = _smooth(ps), _smooth(qs)
        m = ps > 0
        kl = float(np.sum(ps[m] * np.log(ps[m] / np.maximum(qs[m], 1e-300))))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return best_i * bin_width


class EntropyObserver(HistogramObserver):
    """KL-divergence threshold on |x|, TensorRT style: 2048 bins merged into 128 levels."""

    method = "entropy"

    def __init__(self, bins: int = 2048, levels: int = 128) -> None:
        super().__init__(bins)
        self.levels = int(levels)

    def range(self):
        self._check()
        if self.R == 0.0:
            return 0.0, 0.0
        amax = entropy_amax(self.abs_histogram(), self.bin_width(), self.levels)
        amax = min(amax, max(abs(self.min), abs(self.max)))
        if self.min >= 0.0:
            return 0.0, amax
        return -amax, amax


def _sawtooth_integral(u: np.ndarray) -> np.ndarray:
    """H(u) = integral from -1/2 to u of (v - round(v))^2 dv (each unit period adds 1/12)."""
    k = np.floor(u + 0.5)
    f = u - k
    return k / 12.0 + (f ** 3 + 0.125) / 3.0


def expected_sq_error(counts: np.ndarray, edges: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Total squared error of uint8 affine quantization with ranges ``[lo, hi]`` (vectorised).

    The density is taken as uniform inside each histogram bin; the error integral over each bin
    is exact for that density (clipping below/above the grid plus rounding inside it).

    Parameters
    ----------
    counts : (B,) ; edges : (B + 1,)
    lo, hi : (C,) candidate ranges (lo <= 0 <= hi, hi > lo)

    Returns
    -------
    (C,) float64 total squared error (count-weighted).
    """
    lo = np.minimum(np.asarray(lo, np.float64), 0.0)[:, None]
    hi = np.maximum(np.asarray(hi, np.float64), 0.0)[:, None]
    s = (hi - lo) / QMAX
    zp = np.clip(np.round(-lo / s), 0, QMAX)
    L, U = -zp * s, (QMAX - zp) * s  # grid ends (multiples of s)
    a, b = edges[None, :-1], edges[None, 1:]
    keep = counts > 0
    a, b, c = a[:, keep], b[:, keep], counts[keep][None, :]
    dens = c / (b - a)
    # below the grid: x -> L
    b1 = np.minimum(b, L)
    below = np.where(b1 > a, ((b1 - L) ** 3 - (a - L) ** 3) / 3.0, 0.0)
    # above the grid: x -> U
    a3 = np.maximum(a, U)
    above = np.where(b > a3, ((b - U) ** 3 - (a3 - U) ** 3) / 3.0, 0.0)
    # inside: rounding to multiples of s
    a2, b2 = np.maximum(a, L), np.minimum(b, U)
    inside = np.where(b2 > a2, s ** 3 * (_sawtooth_integral(b2 / s) - _sawtooth_integral(a2 / s)), 0.0)
    return np.sum(dens * (below + above + inside), axis=1)


class MSEObserver(HistogramObserver):
    """The range minimising the expected squared quantization error of the histogram."""

    method = "mse"

    def __init__(self, bins: int = 2048, candidates: int = 160) -> None:
        super().__init__(bins)
        self.candidates = int(candidates)

    def _grid(self, top: float) -> np.ndarray:
        # Geometric (for heavy tails, where the best cut is far below the max) plus linear
        # (fine steps near the max for compact data).
        n = self.candidates // 2
        g = top * np.geomspace(2.0 ** -12, 1.0, n)
        lin = top * np.linspace(1.0 / n, 1.0, n)
        return np.unique(np.concatenate([g, lin]))

    def range(self):
        self._check()
        if self.R == 0.0:
            return 0.0, 0.0
        counts, edges = self.signed_histogram()
        # Only the occupied span matters: trim empty bins for speed.
        nz = np.nonzero(counts)[0]
        counts, edges = counts[nz[0]: nz[-1] + 1], edges[nz[0]: nz[-1] + 2]
        lo0, hi0 = min(self.min, 0.0), max(self.max, 0.0)
        lo, hi = lo0, hi0
        his = self._grid(hi0) if hi0 > 0 else np.zeros(1)
        los = -self._grid(-lo0) if lo0 < 0 else np.zeros(1)
        # Coordinate descent: the zero point couples lo and hi only weakly.
        for _ in range(3):
            if hi0 > 0:
                err = expected_sq_error(counts, edges, np.full(his.size, lo), his)
                hi = float(his[int(np.argmin(err))])
            if lo0 < 0:
                err = expected_sq_error(counts, edges, los, np.full(los.size, hi))
                lo = float(los[int(np.argmin(err))])
        return lo, hi


def make_observer(method: str, percentile: float = 99.99) -> Observer:
    """A new observer for ``method`` ("minmax", "percentile", "entropy" or "mse")."""
    if method == "minmax":
        return MinMaxObserver()
    if method == "percentile":
        return PercentileObserver(percentile)
    if method == "entropy":
        return EntropyObserver()
    if method == "mse":
        return MSEObserver()
    raise ValueError(f"method must be one of {', '.join(repr(m) for m in METHODS)}; got {method!r}")
