"""``edgepack bench quantize``: quantize / dequantize / quantize_rows against the plain NumPy
reference, both measured in this run, on one thread and on all threads, as GB/s of float32
(read by quantize, written by dequantize) and as ratios; plus a one-thread memory copy
(``np.copyto`` of 64 MB into a preallocated array, counted as read + write bytes) timed in
alternation with each kernel's one-thread run, and that rate as a percentage of it.
"""

from __future__ import annotations

import argparse

import numpy as np

from . import best_time

DEFAULT_SHAPES = ("4096x4096", "128x4096")
F32 = np.float32


# ---- the NumPy references (ONNX formulas, float32) ----------------------------------------------

def np_quantize(x, scale, zp, lo=-128, hi=127, dtype=np.int8):
    return np.clip(np.rint(x / scale) + zp, lo, hi).astype(dtype)


def np_dequantize(q, scale, zp):
    return (q.astype(np.int32) - zp).astype(F32) * scale


def np_quantize_rows(x):
    amax = np.abs(x).max(axis=1)
    s = amax / F32(127)
    s = np.where(s > 0, s, F32(1)).astype(F32)
    return np.clip(np.rint(x / s[:, None]), -127, 127).astype(np.int8), s


def cases(m: int, k: int, rng):
    """(name, edgepack call, NumPy call, float32 bytes per call) for one shape."""
    from edgepack import kernels as K

    x = rng.standard_normal((m, k), dtype=F32)
    s_t, z_t = F32(0.02), np.int8(3)
    s_c = (np.abs(x).max(axis=1) / F32(127)).astype(F32)
    z_c = np.zeros(m, np.int8)
    q = K.quantize(x, s_t, z_t)
    nb = x.nbytes
    out_f = np.empty_like(x)
    tmp_i = np.empty(x.shape, np.int32)

    def np_dequantize_out():
        np.subtract(q, np.int32(z_t), out=tmp_i)
        np.multiply(tmp_i, s_t, out=out_f, casting="unsafe")  # int32 -> float32, then * scale
    return [
        ("quantize per-tensor", lambda: K.quantize(x, s_t, z_t),
         lambda: np_quantize(x, s_t, np.int32(z_t)), nb),
        ("quantize per-channel", lambda: K.quantize(x, s_c, z_c, axis=0),
         lambda: np_quantize(x, s_c[:, None], z_c.astype(np.int32)[:, None]), nb),
        ("dequantize per-tensor", lambda: K.dequantize(q, s_t, z_t),
         lambda: np_dequantize(q, s_t, np.int32(z_t)), nb),
        ("dequantize out=", lambda: K.dequantize(q, s_t, z_t, out=out_f), np_dequantize_out, nb),
        ("quantize_rows", lambda: K.quantize_rows(x), lambda: np_quantize_rows(x), nb),
    ]


def _time_pair(fa, fb, min_time: float, repeats: int) -> tuple[float, float]:
    """Best seconds per call of two functions timed in alternation (a shared machine's load then
    affects both alike)."""
    ta, tb = float("inf"), float("inf")
    for _ in range(repeats):
        ta = min(ta, best_time(fa, min_time / 2, 1))
        tb = min(tb, best_time(fb, min_time / 2, 1))
    return ta, tb


_COPY = {}


def copy_call():
    """One-thread memory copy of 64 MB float32 (np.copyto into a preallocated array) and the bytes
    it moves, read + write."""
    if not _COPY:
        src = np.random.default_rng(1).standard_normal((4096, 4096), dtype=F32)
        dst = np.empty_like(src)
        _COPY["fn"] = lambda: np.copyto(dst, src)
        _COPY["bytes"] = 2 * src.nbytes
    return _COPY["fn"], _COPY["bytes"]


def run(shapes, threads_all: int, min_time: float, repeats: int) -> list[dict]:
    import edgepack

    rng = np.random.default_rng(0)
    prev = edgepack.get_num_threads()
    rows = []
    copy, copy_bytes = copy_call()
    try:
        for shape in shapes:
            m, k = (int(v) for v in shape.lower().split("x"))
            for name, ours, ref, nbytes in cases(m, k, rng):
                t_np = best_time(ref, min_time, repeats)
                # one thread, in alternation with the copy yardstick
                edgepack.set_num_threads(1)
                t1, tc = _time_pair(ours, copy, 2 * min_time, repeats)
                edgepack.set_num_threads(threads_all)
                tn = best_time(ours, min_time, repeats)
                rows.append(dict(case=name, shape=f"{m}x{k}", numpy=nbytes / t_np / 1e9,
                                 one=nbytes / t1 / 1e9, all=nbytes / tn / 1e9,
                                 copy=copy_bytes / tc / 1e9))
    finally:
        edgepack.set_num_threads(prev)
    return rows


def _shape(text: str) -> str:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"shape must look like 4096x4096 (M x K, both > 0); got {text!r}")
    return text


def _positive(kind):
    def parse(text: str):
        v = kind(text)
        if not v > 0:
            raise argparse.ArgumentTypeError(f"must be > 0; got {text}")
        return v
    return parse


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="edgepack bench quantize", description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", nargs="+", type=_shape, default=list(DEFAULT_SHAPES),
                   help="MxK shapes (default: %(default)s)")
    p.add_argument("--threads", type=_positive(int), default=None,
                   help="'all threads' count (default: edgepack's default, the affinity CPU count)")
    p.add_argument("--min-time", type=_positive(float), default=0.25, help="seconds per timing repeat")
    p.add_argument("--repeats", type=_positive(int), default=3, help="timing repeats (best is kept)")
    a = p.parse_args(argv)

    import edgepack

    info = edgepack.cpu_info()
    n_all = a.threads or info["default_num_threads"]
    rows = run(a.shapes, n_all, a.min_time, a.repeats)
    print(f"edgepack bench quantize  (path {info['isa']}; GB/s of float32; best of {a.repeats})")
    print("copy = one-thread np.copyto of 64 MB into a preallocated array, read + write GB/s, timed in")
    print("alternation with the 1-thread kernel on that row; % copy = 1-thread rate / copy rate")
    hdr = (f"{'kernel':<22} {'shape':>9} {'numpy':>7} {'1 thread':>9} {'x numpy':>8} {'copy':>6} {'% copy':>7}"
           f" {f'{n_all} threads':>10} {'x numpy':>8}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['case']:<22} {r['shape']:>9} {r['numpy']:7.2f} {r['one']:9.2f} {r['one'] / r['numpy']:7.1f}x"
              f" {r['copy']:6.1f} {100 * r['one'] / r['copy']:6.0f}% {r['all']:10.2f} {r['all'] / r['numpy']:7.1f}x")
    goals = []
    for r in rows:
        if r["case"] == "quantize per-channel":
            goals.append((f"per-channel quantize {r['shape']} >= 12x numpy (1 thread)", r["one"] / r["numpy"] >= 12))
            goals.append((f"per-channel quantize {r['shape']} >= 60% of copy (1 thread)", r["one"] >= 0.6 * r["copy"]))
        if r["case"] == "quantize_rows":
            goals.append((f"quantize_rows {r['shape']} >= 8x numpy (1 thread)", r["one"] / r["numpy"] >= 8))
    if goals:
        print()
        for text, ok in goals:
            print(f"  [{'met' if ok else 'MISSED'}] {text}")
    return 0
