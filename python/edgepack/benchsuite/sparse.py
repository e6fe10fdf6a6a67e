"""``edgepack bench sparse``: spmm against dense NumPy float32, scipy.sparse CSR and (when present)
our dense int8 ``linear_int8``, all measured in this run on one thread.

Random (unstructured) pruning at 50/75/90/95% and 2:4, float32 values, plus int8 values at 90%.
Shapes are N x K (out x in features); M is the number of activation rows.
"""

from __future__ import annotations

import argparse
import contextlib

import numpy as np

from . import best_time

DEFAULT_SHAPES = ("4096x4096", "3072x768")
DEFAULT_MS = (1, 32, 128)
SPARSITIES = (0.5, 0.75, 0.9, 0.95)


def _one_thread():
    """Limit numpy's BLAS to one thread when threadpoolctl is available."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(1)


def _random_pruned(rng, n, k, sparsity):
    w = rng.standard_normal((n, k), dtype=np.float32)
    w[rng.random((n, k), dtype=np.float32) < sparsity] = 0
    return w


def _two_four(rng, n, k):
    w = rng.standard_normal((n, k), dtype=np.float32)
    order = np.argsort(rng.random((n, k // 4, 4), dtype=np.float32), axis=-1)[..., 2:]
    w4 = w.reshape(n, k // 4, 4)
    np.put_along_axis(w4, order, 0.0, axis=-1)
    return w


def _quantize_weights(w):
    scale = (np.max(np.abs(w), axis=1) / 127).astype(np.float32)
    scale[scale == 0] = 1
    return np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8), scale


def run(shapes, ms, min_time=0.05, repeats=5, seed=0, out=print) -> list[dict]:
    import edgepack
    from edgepack.kernels import pack_sparse, spmm

    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover
        sp = None
    linear_int8 = getattr(edgepack.kernels, "linear_int8", None)
    pack_weights = getattr(edgepack.kernels, "pack_weights", None)

    rng = np.random.default_rng(seed)
    rows = []
    prev_threads = edgepack.get_num_threads()
    edgepack.set_num_threads(1)
    try:
        with _one_thread():
            for shape in shapes:
                n, k = (int(v) for v in shape.lower().split("x"))
                cases = [(f"{int(s * 100)}%", _random_pruned(rng, n, k, s)) for s in SPARSITIES]
                cases.append(("2:4", _two_four(rng, n, k)))
                dense_w = rng.standard_normal((n, k), dtype=np.float32)
                packed = {}
                for name, w in cases:
                    fmt = "2:4" if name == "2:4" else "unstructured"
                    packed[name] = (w, pack_sparse(w, format=fmt), sp.csr_matrix(w) if sp else None)
                wq90, s90 = _quantize_weights(packed["90%"][0])
                sw_q90 = pack_sparse(wq90, format="unstructured", scale=s90)
                dense_q, dense_s = _quantize_weights(dense_w)
                pw = pack_weights(dense_q) if (linear_int8 and pack_weights) else None
                for m in ms:
                    x = rng.standard_normal((m, k), dtype=np.float32)
                    xt = np.ascontiguousarray(x.T)
                    t_np = best_time(lambda: x @ dense_w.T, min_time, repeats)
                    t_lin = None
                    if pw is not None:
                        t_lin = best_time(lambda: linear_int8(x, pw, dense_s), min_time, repeats)
                    base = dict(shape=f"{n}x{k}", m=m, numpy_ms=t_np * 1e3,
                                linear_int8_ms=None if t_lin is None else t_lin * 1e3)
                    for name, (w, sw, csr) in packed.items():
                        t_ours = best_time(lambda: spmm(x, sw), min_time, repeats)
                        t_sp = best_time(lambda: csr @ xt, min_time, repeats) if csr is not None else None
                        rows.append(dict(base, pattern=name, values="float32", ours_ms=t_ours * 1e3,
                                         scipy_ms=None if t_sp is None else t_sp * 1e3))
                    t_q = best_time(lambda: spmm(x, sw_q90), min_time, repeats)
                    rows.append(dict(base, pattern="90%", values="int8", ours_ms=t_q * 1e3, scipy_ms=None))
    finally:
        edgepack.set_num_threads(prev_threads)
    return rows


def format_table(rows) -> str:
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    lines = ["| N x K | M | pattern | values | spmm ms | numpy f32 ms | vs numpy | scipy CSR ms | vs scipy "
             "| vs linear_int8 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        vs_np = r["numpy_ms"] / r["ours_ms"]
        vs_sp = r["scipy_ms"] / r["ours_ms"] if r["scipy_ms"] else None
        vs_q = (r["linear_int8_ms"] / r["ours_ms"]) if (r["values"] == "int8" and r["linear_int8_ms"]) else None
        lines.append(f"| {r['shape']} | {r['m']} | {r['pattern']} | {r['values']} | {r['ours_ms']:.3f} | "
                     f"{r['numpy_ms']:.3f} | {vs_np:.2f}x | {f(r['scipy_ms'], '.3f')} | "
                     f"{f(vs_sp, '.2f')}{'x' if vs_sp else ''} | {f(vs_q, '.2f')}{'x' if vs_q else ''} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the sparse benchmark and print a markdown table. Returns the exit status."""
    p = argparse.ArgumentParser(prog="edgepack bench sparse", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=list(DEFAULT_SHAPES), help="N x K shapes, e.g. 4096x4096")
    p.add_argument("--m", nargs="+", type=int, default=list(DEFAULT_MS), help="activation rows")
    p.add_argument("--min-time", type=float, default=0.05, help="seconds per timed repeat")
    p.add_argument("--repeats", type=int, default=5, help="repeats; the best is reported")
    args = p.parse_args(argv)
    import edgepack

    rows = run(args.shapes, args.m, args.min_time, args.repeats)
    print(f"edgepack spmm, one thread, path {edgepack.get_isa()}; ratios are speedups (higher is better)")
    print(format_table(rows))
    if not hasattr(edgepack.kernels, "linear_int8"):
        print("(linear_int8 is not in this build: the int8 comparison column is empty)")
    return 0
