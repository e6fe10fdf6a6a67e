"""Sparse weights (pruned matrices) and the matmul that skips their zeros."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from .. import _core

__all__ = ["SparseWeights", "pack_sparse", "spmm"]

_FORMATS = ("auto", "unstructured", "2:4")
# "auto" picks 2:4 for a 2:4-shaped matrix down to this density: its vector kernel (no index loads,
# 4.5 bytes per value) beats compressed rows (6 bytes per value and gathers); below it the matrix is
# sparse enough that compressed rows store and read less.
_NM24_MIN_DENSITY = 0.25


def _describe(a) -> str:
    if isinstance(a, np.ndarray):
        return f"{a.dtype} {a.shape}"
    return type(a).__name__


class SparseWeights:
    """A pruned weight matrix [N, K] (out_features x in_features) packed for :func:`spmm`.

    Build it with :func:`pack_sparse` (or :meth:`from_arrays` to reload a saved one). The packed
    arrays live in native memory, copied and validated once; the object is immutable.

    Attributes
    ----------
    shape : tuple[int, int]
        (N, K) of the dense matrix.
    format : str
        ``"unstructured"`` (compressed rows: int64 row pointers, uint16 column indices, values) or
        ``"2:4"`` (per group of 4 along K at most 2 nonzeros: N x K/2 values plus two 2-bit
        positions per group, two groups per byte).
    dtype : numpy.dtype
        float32, or int8 (then ``scale`` holds the float32 per-row scale, dense = values * scale).
    nnz : int
        Nonzero values in the dense matrix (2:4 may store a few explicit zeros beyond these).
    density : float
        nnz / (N * K) (0.0 for an empty shape).
    nbytes : int
        Bytes of packed storage (indices, values, positions and scales). Not included: on paths
        with a sliced-windows kernel (AVX2, AVX-512), the first :func:`spmm` call that benefits
        derives a copy in the kernel's layout and keeps it. On AVX-512: unstructured float32, 16
        rows x 32 columns per block, ~5 bytes per slot (about 2x the nonzeros at 90% sparsity,
        padding); 2:4 float32, values plus 2-bit positions (~1x the stored bytes); int8 with VBMI,
        16 rows x 4 values in 64-column sliding windows, 2 bytes per slot (~0.9x the stored bytes
        at 90% sparsity).
    """

    __slots__ = ("_mat", "_nnz")

    def __init__(self, _mat, _nnz: int | None = None):
        if not isinstance(_mat, _core._SparseMatrix):
            raise TypeError("SparseWeights is built by pack_sparse() or SparseWeights.from_arrays()")
        self._mat = _mat
        if _nnz is None:
            _nnz = int(np.count_nonzero(_mat.arrays()["values"]))
        self._nnz = _nnz

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self._mat.n), int(self._mat.k))

    @property
    def format(self) -> str:
        return "2:4" if self._mat.format == "2:4" else "unstructured"

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.int8 if self._mat.int8 else np.float32)

    @property
    def nnz(self) -> int:
        return self._nnz

    @property
    def density(self) -> float:
        n, k = self.shape
        return self._nnz / (n * k) if n * k else 0.0

    @property
    def nbytes(self) -> int:
        """Bytes of the stored format (what `to_arrays` saves)."""
        return int(self._mat.nbytes)

    @property
    def derived_nbytes(self) -> int:
        """Bytes of the layouts `spmm` derived from the stored format on first use (small-batch
        copies; 0 before the first call, not saved). Memory in use is nbytes + derived_nbytes."""
        return int(self._mat.derived_nbytes)

    @property
    def scale(self) -> np.ndarray | None:
        """Per-row float32 scale [N] of int8 values (a copy), or None for float32 values."""
        return self._mat.arrays()["scale"] if self._mat.int8 else None

    def __repr__(self) -> str:
        n, k = self.shape
        return (f"SparseWeights(shape=({n}, {k}), format={self.format!r}, dtype={self.dtype.name}, "
                f"nnz={self.nnz}, density={self.density:.3f}, nbytes={self.nbytes})")

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain NumPy arrays for saving (``np.savez`` / safetensors-friendly, no pickle).

        Returns
        -------
        dict
            ``format`` (0-d str array), ``shape`` (int64 [2]), ``values`` (float32 or int8;
            [nnz] unstructured, [N, K/2] 2:4), and ``row_ptr`` (int64 [N+1]) + ``col`` (uint16
            [nnz]) for unstructured, ``meta`` (uint8 [N, (K/4+1)//2]) for 2:4, ``scale``
            (float32 [N]) for int8. :meth:`from_arrays` restores the object.
        """
        d = dict(self._mat.arrays())
        d["format"] = np.array(self.format)
        d["shape"] = np.array(self.shape, dtype=np.int64)
        return d

    @classmethod
    def from_arrays(cls, d: Mapping[str, np.ndarray]) -> "SparseWeights":
        """Rebuild from :meth:`to_arrays` output (a dict or an ``np.load`` npz file).

        Every array is validated (ranges, monotone row pointers, 2-bit positions): a corrupt file
        raises ``ValueError``/``TypeError`` naming the array, never crashes.
        """
        try:
            fmt = str(np.asarray(d["format"]))
            shape = np.asarray(d["shape"])
            values = d["values"]
        except KeyError as e:
            raise ValueError(f"d is missing the array {e.args[0]!r}") from None
        if shape.shape != (2,) or shape.dtype.kind not in "iu":
            raise ValueError(f"d['shape'] must be 2 integers (N, K); got {_describe(shape)}")
        n, k = int(shape[0]), int(shape[1])
        get = d.get if hasattr(d, "get") else (lambda key, default=None: d[key] if key in d else default)
        if fmt == "unstructured":
            mat = _core._SparseMatrix("csr", n, k, values, row_ptr=get("row_ptr"), col=get("col"),
                                      scale=get("scale"))
        elif fmt == "2:4":
            mat = _core._SparseMatrix("2:4", n, k, values, meta=get("meta"), scale=get("scale"))
        else:
            raise ValueError(f"d['format'] must be 'unstructured' or '2:4'; got {fmt!r}")
        return cls(mat)

    def to_dense(self) -> np.ndarray:
        """The dense matrix [N, K], exactly as packed (float32 values, or int8 values for int8).

        For int8 weights this returns the int8 matrix; multiply by ``scale[:, None]`` for floats.
        Negative zeros come back as +0.0 (zeros are not stored).
        """
        n, k = self.shape
        a = self._mat.arrays()
        out = np.zeros((n, k), dtype=self.dtype)
        vals = a["values"]
        if self._mat.format == "csr":
            rows = np.repeat(np.arange(n), np.diff(a["row_ptr"]))
            out[rows, a["col"].astype(np.int64)] = vals
            return out
        g = k // 4
        meta = a["meta"]
        nib = np.empty((n, 2 * meta.shape[1]), dtype=np.uint8)
        nib[:, 0::2] = meta & 15
        nib[:, 1::2] = meta >> 4
        nib = nib[:, :g]
        pos = np.stack([nib & 3, nib >> 2], axis=-1).astype(np.int64)  # [n, g, 2]
        cols = pos + 4 * np.arange(g, dtype=np.int64)[None, :, None]
        rows = np.broadcast_to(np.arange(n)[:, None, None], cols.shape)
        out[rows.ravel(), cols.ravel()] = vals.reshape(-1)
        return out


def _check_w(w, scale):
    if not isinstance(w, np.ndarray) or w.dtype not in (np.float32, np.int8):
        raise TypeError(f"w must be a float32 or int8 numpy.ndarray of shape (N, K); got {_describe(w)}")
    if w.ndim != 2:
        raise ValueError(f"w must be 2-D (N, K); got {w.ndim}-D {w.shape}")
    w = np.ascontiguousarray(w)
    if w.dtype == np.int8:
        if scale is None:
            raise ValueError("int8 w needs scale: float32 of shape (N,) (dense = w * scale[:, None])")
        if not isinstance(scale, np.ndarray) or scale.dtype != np.float32:
            raise TypeError(f"scale must be float32 of shape (N,); got {_describe(scale)}")
        if scale.shape != (w.shape[0],):
            raise ValueError(f"scale must have shape ({w.shape[0]},) (one per row of w); got {scale.shape}")
        if not np.all(np.isfinite(scale)):
            raise ValueError("scale must be finite; found NaN or Inf")
    elif scale is not None:
        raise ValueError("scale is only for int8 w; got float32 w with a scale")
    return w


def _nm24_counts(w: np.ndarray) -> np.ndarray | None:
    """Nonzeros per group of 4 along K, [N, K/4]; None when K is not a multiple of 4."""
    n, k = w.shape
    if k % 4:
        return None
    return np.count_nonzero(w.reshape(n, k // 4, 4), axis=-1)


def _pack_nm24(w: np.ndarray, scale):
    n, k = w.shape
    g = k // 4
    w4 = w.reshape(n, g, 4)
    nz = w4 != 0
    # Nonzero positions first (in k order), then zero slots to fill groups with fewer than 2.
    order = np.argsort(~nz, axis=-1, kind="stable")[..., :2]
    pos = np.sort(order, axis=-1)
    values = np.take_along_axis(w4, pos, axis=-1).reshape(n, 2 * g)
    nib = (pos[..., 0] | (pos[..., 1] << 2)).astype(np.uint8)
    if g % 2:
        nib = np.concatenate([nib, np.zeros((n, 1), np.uint8)], axis=1)
    meta = np.ascontiguousarray(nib[:, 0::2] | (nib[:, 1::2] << 4))
    return _core._SparseMatrix("2:4", n, k, np.ascontiguousarray(values), meta=meta, scale=scale)


def _pack_csr(w: np.ndarray, scale):
    n, k = w.shape
    if k > 65536:
        raise ValueError(f"w: the unstructured format stores uint16 column indices, so K must be <= 65536; "
                         f"got K = {k}")
    rows, cols = np.nonzero(w)
    row_ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=row_ptr[1:])
    return _core._SparseMatrix("csr", n, k, np.ascontiguousarray(w[rows, cols]), row_ptr=row_ptr,
                               col=cols.astype(np.uint16), scale=scale)


def pack_sparse(w: np.ndarray, format: str = "auto", scale: np.ndarray | None = None) -> SparseWeights:
    """Pack a pruned weight matrix for :func:`spmm`.

    Parameters
    ----------
    w : numpy.ndarray, float32 or int8, shape (N, K)
        Weights (out_features x in_features) with zeros where pruned.
    format : {"auto", "unstructured", "2:4"}
        ``"unstructured"``: compressed rows with uint16 column indices (K <= 65536), 6 bytes per
        nonzero (float32) or 3 (int8). ``"2:4"``: at most 2 nonzeros in every group of 4
        consecutive k (K % 4 == 0; groups with fewer store explicit zeros), 4.5 bytes per stored
        value (float32) or 1.5 (int8); a matrix that is not 2:4 raises ``ValueError``.
        ``"auto"``: 2:4 when ``w`` fits it and its density is at least 0.25, else unstructured.
        Any density packs; above ~0.35 (unstructured) a dense kernel is usually faster, and the
        model layer decides between dense and sparse.
    scale : numpy.ndarray, float32, shape (N,), optional
        Required for int8 ``w`` (dense = w * scale[:, None]); not allowed for float32 ``w``.

    Returns
    -------
    SparseWeights
    """
    w = _check_w(w, scale)
    if not isinstance(format, str) or format not in _FORMATS:
        raise ValueError(f"format must be one of {', '.join(map(repr, _FORMATS))}; got {format!r}")
    n, k = w.shape
    nnz = int(np.count_nonzero(w))
    if format == "2:4":
        counts = _nm24_counts(w)
        if counts is None:
            raise ValueError(f"w cannot be 2:4: its K = {k} is not a multiple of 4")
        bad = np.argwhere(counts > 2)
        if bad.size:
            r, g = (int(v) for v in bad[0])
            raise ValueError(f"w is not 2:4: row {r}, columns {4 * g}..{4 * g + 3} hold {int(counts[r, g])} "
                             f"nonzeros (at most 2 per group of 4 allowed; {len(bad)} such groups)")
        return SparseWeights(_pack_nm24(w, scale), nnz)
    if format == "auto" and n * k and nnz >= _NM24_MIN_DENSITY * n * k:
        counts = _nm24_counts(w)
        if counts is not None and not np.any(counts > 2):
            return SparseWeights(_pack_nm24(w, scale), nnz)
    return SparseWeights(_pack_csr(w, scale), nnz)


def spmm(x: np.ndarray, w: SparseWeights, bias: np.ndarray | None = None,
         activation: str | None = None) -> np.ndarray:
    """Dense activations times sparse weights: ``act(x @ dense(w).T + bias)``.

    Parameters
    ----------
    x : numpy.ndarray, float32, shape (M, K)
    w : SparseWeights, shape (N, K)
    bias : numpy.ndarray, float32, shape (N,), optional
    activation : {None, "relu", "gelu", "gelu_tanh", "silu"}
        ``"gelu"`` is the erf form, ``"gelu_tanh"`` the tanh approximation.

    Returns
    -------
    numpy.ndarray, float32, shape (M, N)

    Notes
    -----
    float32 weights: each output is a float32 sum of its row's nonzero products (in a
    path-dependent order), so ``|y - y_exact| <= nnz_row * 2**-24 * sum_k |x[m, k] * w[n, k]|``;
    against NumPy's float32 product the difference stays within ``1e-5 * sum_k |x w|`` for rows
    of up to several thousand nonzeros (what the tests check).

    int8 weights: each row of ``x`` is quantized on the fly (scale ``xs = max|x[m]| / 127``,
    round half to even, like ``linear_int8``), the int8 products are summed exactly in int32, and
    ``y = acc * xs[m] * scale[n] + bias``; ``acc`` equals the dense int8 product exactly. NaN or
    Inf in ``x`` raises ``ValueError`` for int8 weights (the quantizer cannot represent it).
    """
    if not isinstance(w, SparseWeights):
        raise TypeError(f"w must be a SparseWeights (from pack_sparse); got {type(w).__name__}")
    return _core.spmm(x, w._mat, bias, activation)


def _spmm_acc_s8(xq: np.ndarray, w: SparseWeights) -> np.ndarray:
    """Private test hook: exact int32 accumulators xq @ dense(w).T for int8 xq [M, K] and int8 w."""
    return _core._spmm_acc_s8(xq, w._mat)
