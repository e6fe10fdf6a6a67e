"""Linear algebra operators (NumPy/BLAS; see edgepack.graph.registry for the maker contract).

Gemm 7 (C required) / 11 (C optional; 9 and 13 only widened types):
    ``alpha * A' @ B' + beta * C`` with transA/transB and C broadcast to (M, N).  A constant B is
    stored once in the layout the product reads (alpha folded in); a constant C once as
    ``beta * C``.
MatMul (since 1; 9 and 13 only widened types): NumPy matmul semantics (1-D operands promoted
    and squeezed, batch dimensions broadcast), any real dtype (integers are exact, without BLAS).
    An N-D @ 2-D product runs as one 2-D GEMM over the flattened leading dimensions.
Einsum 12: ``np.einsum`` with the contraction order (BLAS pairwise products) planned once per
    input-shape signature; implicit output (no ``->``) sorts the free labels, as ONNX says.
"""

from __future__ import annotations

import numpy as np

from ..registry import REQUIRED, register_op
from .conv import _check_check


def _real(x, what):
    if x.dtype.kind not in "fiu":
        raise ValueError(f"{what} must be a numeric tensor; got {x.dtype}")


# -- Gemm -----------------------------------------------------------------------------------------

def _gemm_maker(node, consts):
    a = node.attrs
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    ta, tb = bool(int(a.get("transA", 0))), bool(int(a.get("transB", 0)))
    b_const = consts[1] if len(consts) > 1 else None
    c_const = consts[2] if len(consts) > 2 else None
    if b_const is not None:
        if b_const.ndim != 2:
            raise ValueError(f"B must be 2-D; got shape {b_const.shape}")
        bt = b_const.T if tb else b_const
        if b_const.dtype.kind == "f":
            # fold alpha into the stored weight: one pass less per call
            bt = bt * bt.dtype.type(alpha) if alpha != 1.0 else bt
            b_alpha = 1.0
        else:
            b_alpha = alpha
        b_const = np.ascontiguousarray(bt)
    if c_const is not None and beta != 1.0:
        c_const = c_const * c_const.dtype.type(beta) if c_const.dtype.kind == "f" else c_const * beta

    def run(A, B, C=None):
        _real(A, "A")
        if A.ndim != 2:
            raise ValueError(f"A must be 2-D; got shape {A.shape}")
        A2 = A.T if ta else A
        if b_const is not None:
            B2, al = b_const, b_alpha
        else:
            _real(B, "B")
            if B.ndim != 2:
                raise ValueError(f"B must be 2-D; got shape {B.shape}")
            B2, al = (B.T if tb else B), alpha
        if A2.shape[1] != B2.shape[0]:
            raise ValueError(f"A' {A2.shape} and B' {B2.shape} (after transA={int(ta)}, transB={int(tb)}) "
                             "do not agree on K")
        y = A2 @ B2
        if al != 1.0:
            y = y * y.dtype.type(al) if y.dtype.kind == "f" else (y * al).astype(y.dtype)
        c = c_const if c_const is not None else C
        if c is not None and beta != 0.0:       # beta = 0 ignores C (even inf/NaN in it)
            if c_const is None and beta != 1.0:
                c = c * c.dtype.type(beta) if c.dtype.kind == "f" else (c * beta).astype(c.dtype)
            if c.ndim > 2 or not all(s in (1, t) for s, t in zip(c.shape[::-1], y.shape[::-1])):
                raise ValueError(f"C of shape {c.shape} does not broadcast to the output {y.shape}")
            y += c.astype(y.dtype, copy=False)
        return y

    return run


register_op("Gemm", 7, attrs={"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0})(_gemm_maker)
register_op("Gemm", 11, attrs={"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0})(_gemm_maker)


# -- MatMul ---------------------------------------------------------------------------------------

@register_op("MatMul", 1)
def _matmul(node, consts):
    b_const = consts[1] if len(consts) > 1 else None
    if b_const is not None:
        b_const = np.ascontiguousarray(b_const)

    def run(A, B):
        if b_const is not None:
            B = b_const
        _real(A, "A")
        _real(B, "B")
        if A.ndim == 0 or B.ndim == 0:
            raise ValueError(f"MatMul operands must have rank >= 1; got shapes {A.shape} and {B.shape}")
        if A.shape[-1] != B.shape[-2 if B.ndim > 1 else 0]:
            raise ValueError(f"MatMul shapes {A.shape} and {B.shape} do not agree on the contracted axis")
        if A.ndim > 2 and B.ndim == 2:
            # one (rows, K) @ (K, N) GEMM instead of one per batch entry
            y = A.reshape(-1, A.shape[-1]) @ B
            return y.reshape(A.shape[:-1] + (B.shape[1],))
        y = np.matmul(A, B)
        return y if isinstance(y, np.ndarray) else np.asarray(y)

    return run


# -- Einsum ---------------------------------------------------------------------------------------

def _einsum_eq(node) -> str:
    eq = node.attrs["equation"]
    if not isinstance(eq, str):
        raise ValueError(f"equation must be a string; got {type(eq).__name__}")
    eq = "".join(eq.split())
    if not eq or any(not (ch.isalpha() or ch in ",.->") for ch in eq):
        raise ValueError(f"equation {node.attrs['equation']!r} has characters other than letters, ',', '->' "
                         "and '...'")
    return eq


@register_op("Einsum", 12, attrs={"equation": REQUIRED}, check=_check_check(_einsum_eq))
def _einsum(node, consts):
    eq = _einsum_eq(node)
    paths: dict = {}

    def run(*ops):
        if not ops or any(o is None for o in ops):
            raise ValueError("Einsum needs at least one input and no absent ones")
        for o in ops:
            _real(o, "Inputs")
        if len(ops) == 1:
            y = np.einsum(eq, ops[0])
        else:
            key = tuple(o.shape for o in ops)
            path = paths.get(key)
            if path is None:
                path = np.einsum_path(eq, *ops, optimize="greedy")[0]
                if len(paths) > 64:
                    paths.clear()
                paths[key] = path
            y = np.einsum(eq, *ops, optimize=path)
        y = np.asarray(y)
        dt = np.result_type(*ops)
        return y if y.dtype == dt else y.astype(dt)

    return run
