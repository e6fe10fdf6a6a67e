"""``edgepack bench gemm``: int8 GEMM and the fused int8 linear layer against their peers.

For each shape M x K x N and thread count, in one run:

* ``gemm_int8`` (int8 x packed int8 -> int32) as GOP/s (2*M*N*K per second) and as % of this
  CPU's int8 peak for the unit that ran it, measured here by register-only loops: the best
  vector path's dot product and, on AMX CPUs, TDPBSSD on fixed tiles (the ``kernel`` column
  says which one ran: avx512_amx hands M = 1 and tiny K to avx512_vnni);
* NumPy float32 ``a @ b`` (OpenBLAS/MKL, threads limited with threadpoolctl when present);
* onnxruntime ``MatMulInteger`` (uint8 A, int8 constant B, as ORT prefers), one-node model;
* ``linear_int8`` (float in, float out, per-row dynamic quantization included) against
  onnxruntime's dynamically quantized MatMul (``quantize_dynamic`` of a one-node float model).

Ratios compare timings taken in the same run. Timing: best of ``--repeats`` batches, each long
enough to last ``--min-time`` seconds.

``--crossover`` instead times the AMX kernel against avx512_vnni at small M and small K, to set
the small-shape route (``EDGEPACK_AMX_MIN_M`` / ``EDGEPACK_AMX_MIN_K``) from measurements.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile

import numpy as np

from . import best_time

SHAPES = ("1x768x768", "1x4096x4096", "16x768x3072", "128x384x1536", "128x1536x384", "1024x1024x1024")


def blas_threads(n: int):
    """Limit numpy's BLAS to n threads when threadpoolctl is available."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(n)


def parse_shape(s: str) -> tuple[int, int, int]:
    try:
        m, k, n = (int(v) for v in s.lower().split("x"))
    except ValueError:
        raise ValueError(f"shape must look like MxKxN (e.g. 16x768x3072); got {s!r}") from None
    if min(m, k, n) < 1:
        raise ValueError(f"shape dimensions must be >= 1; got {s!r}")
    return m, k, n


def make_operands(m: int, k: int, n: int, seed: int = 0) -> dict:
    """Random operands shared by every contender of one shape."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, k), dtype=np.float32)
    wf = rng.standard_normal((n, k), dtype=np.float32) * 0.05
    w_scale = (np.abs(wf).max(axis=1) / 127).astype(np.float32)
    wq = np.clip(np.rint(wf / w_scale[:, None]), -127, 127).astype(np.int8)
    a = rng.integers(-128, 128, (m, k), dtype=np.int16).astype(np.int8)
    return {"x": x, "wf": wf, "wq": wq, "w_scale": w_scale, "a": a}


def _ort_session(model_bytes: bytes, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def _one_node_model(op: str, w: np.ndarray, in_type: int, out_type: int):
    """ONNX model Y = op(X [M, K], W.T) with w [N, K] stored transposed as a constant initializer."""
    from onnx import helper, numpy_helper

    n, k = w.shape
    init = numpy_helper.from_array(np.ascontiguousarray(w.T), name="W")
    node = helper.make_node(op, ["X", "W"], ["Y"])
    graph = helper.make_graph(
        [node], op.lower(), [helper.make_tensor_value_info("X", in_type, ["M", k])],
        [helper.make_tensor_value_info("Y", out_type, ["M", n])], initializer=[init])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def ort_matmulinteger(wq: np.ndarray, threads: int):
    """One-node MatMulInteger(X uint8 [M, K], B int8 [K, N] constant) session, or None."""
    try:
        from onnx import TensorProto
    except ImportError:
        return None
    model = _one_node_model("MatMulInteger", wq, TensorProto.UINT8, TensorProto.INT32)
    return _ort_session(model.SerializeToString(), threads)


def ort_dynamic_quant(wf: np.ndarray, threads: int):
    """quantize_dynamic (QInt8 weights) of a one-node float MatMul(X [M, K], W [K, N]), or None."""
    try:
        import onnx
        from onnx import TensorProto
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        return None
    model = _one_node_model("MatMul", wf, TensorProto.FLOAT, TensorProto.FLOAT)
    import logging

    with tempfile.TemporaryDirectory() as d:
        src, dst = os.path.join(d, "f.onnx"), os.path.join(d, "q.onnx")
        onnx.save(model, src)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # quantize_dynamic's pre-processing advice is noise here
        try:
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
        with open(dst, "rb") as f:
            data = f.read()
    return _ort_session(data, threads)


def _x(v: float) -> str:
    return "-" if v != v else f"{v:.2f}x"


def _f(v: float) -> str:
    return "-" if v != v else f"{v:.1f}"


def measure_peak(seconds: float = 0.35) -> tuple[str, float]:
    """int8 dot-product peak (GOP/s, one core) of the best path, best of seven short probes
    (the best one is the least disturbed by other processes)."""
    import edgepack
    from edgepack import _core

    best = edgepack.cpu_info()["best"]
    with edgepack.use_isa(best):
        return best, max(_core.gemm_peak_gops(seconds / 7) for _ in range(7))


def measure_peaks(seconds: float = 0.35) -> dict:
    """int8 peak (GOP/s, one core) of each multiply unit this CPU runs, as measured by
    measure_peak: the best vector path's dot-product loop and, where the avx512_amx path is
    available, its TDPBSSD loop. Keys are path names."""
    import edgepack
    from edgepack import _core

    avail = edgepack.available_isas()
    vec = [p for p in avail if p != "avx512_amx"][-1]
    peaks = {}
    for p in [vec] + (["avx512_amx"] if "avx512_amx" in avail else []):
        with edgepack.use_isa(p):
            peaks[p] = max(_core.gemm_peak_gops(seconds / 7) for _ in range(7))
    return peaks


def amx_note() -> str | None:
    """'AMX not available: <reason>' on x86 machines where the avx512_amx path cannot run."""
    import edgepack

    info = edgepack.cpu_info()
    if "avx2" not in info["features"] or info["amx_reason"] is None:
        return None
    return f"AMX not available: {info['amx_reason']}"


def kernel_for(path: str, m: int, k: int) -> str:
    """The path whose kernel runs an M x K call on `path` (the small-shape route)."""
    from edgepack import _core

    if path == "avx512_amx" and _core.gemm_routes_small(m, k):
        return "avx512_vnni"
    return path


def run(shapes, threads_list, min_time=0.05, repeats=5, isa=None, ort=True, out=print) -> list[dict]:
    import edgepack
    from edgepack.kernels import gemm_int8, linear_int8, pack_weights

    have_ort = False
    if ort:
        try:
            import onnxruntime  # noqa: F401

            have_ort = True
        except ImportError:
            out("(onnxruntime not installed: its columns are left out)")
    prev_isa, prev_threads = edgepack.get_isa(), edgepack.get_num_threads()
    peaks = measure_peaks()
    vec_peak_isa = next(iter(peaks))
    if isa:
        edgepack.set_isa(isa)
    path = edgepack.get_isa()
    out(f"path: {path}; int8 peak, one core: " +
        ", ".join(f"{p} {'TDPBSSD' if p == 'avx512_amx' else 'dot-product'} loop {v:.0f} GOP/s" for p, v in peaks.items()))
    note = amx_note()
    if note:
        out(note)
    hdr = (f"{'MxKxN':>15} {'thr':>3} {'kernel':>11} | {'gemm_int8':>9} {'%peak':>6} {'x np f32':>8} {'x ORT MMI':>9} | "
           f"{'linear_int8':>11} {'x ORT dynQ':>10} | {'np f32':>7} {'ORT MMI':>7} {'ORT dynQ':>8}")
    out(hdr)
    out("-" * len(hdr))
    rows = []
    try:
        for shape in shapes:
            m, k, n = parse_shape(shape) if isinstance(shape, str) else shape
            ops = make_operands(m, k, n)
            pw = pack_weights(ops["wq"])
            a, x, ws = ops["a"], ops["x"], ops["w_scale"]
            au8 = (a.view(np.uint8) ^ 0x80)
            c = np.empty((m, n), np.int32)
            y = np.empty((m, n), np.float32)
            wt = np.ascontiguousarray(ops["wf"].T)
            gop = 2.0 * m * n * k * 1e-9
            kernel = kernel_for(path, m, k)
            peak = peaks.get(kernel, peaks[vec_peak_isa])
            for t in threads_list:
                edgepack.set_num_threads(t)
                t_gemm = best_time(lambda: gemm_int8(a, pw, out=c), min_time, repeats)
                t_lin = best_time(lambda: linear_int8(x, pw, ws, out=y), min_time, repeats)
                with blas_threads(t):
                    t_np = best_time(lambda: x @ wt, min_time, repeats)
                t_mmi = t_dq = float("nan")
                if have_ort:
                    s = ort_matmulinteger(ops["wq"], t)
                    feed = {"X": au8}
                    t_mmi = best_time(lambda: s.run(None, feed), min_time, repeats)
                    del s
                    s = ort_dynamic_quant(ops["wf"], t)
                    feed = {"X": x}
                    t_dq = best_time(lambda: s.run(None, feed), min_time, repeats)
                    del s
                r = {
                    "shape": f"{m}x{k}x{n}", "threads": t, "path": path, "kernel": kernel, "peak_gops": peak,
                    "gemm_gops": gop / t_gemm, "linear_gops": gop / t_lin, "numpy_gflops": gop / t_np,
                    "ort_mmi_gops": gop / t_mmi, "ort_dynq_gops": gop / t_dq,
                    "pct_peak": 100.0 * gop / t_gemm / (peak * t), "gemm_us": t_gemm * 1e6,
                    "linear_us": t_lin * 1e6,
                }
                r["x_numpy"] = t_np / t_gemm
                r["x_ort_mmi"] = t_mmi / t_gemm
                r["x_ort_dynq"] = t_dq / t_lin
                rows.append(r)
                out(f"{r['shape']:>15} {t:>3} {kernel:>11} | {r['gemm_gops']:9.1f} {r['pct_peak']:5.1f}% {r['x_numpy']:7.2f}x "
                    f"{_x(r['x_ort_mmi']):>9} | {r['linear_gops']:11.1f} {_x(r['x_ort_dynq']):>10} | "
                    f"{r['numpy_gflops']:7.1f} {_f(r['ort_mmi_gops']):>7} {_f(r['ort_dynq_gops']):>8}")
    finally:
        edgepack.set_isa(prev_isa)
        edgepack.set_num_threads(prev_threads)
    out("GOP/s = 2*M*N*K / time; %peak is per thread, of the peak of the kernel's unit; x = speed ratio "
        "(> 1: edgepack faster);")
    out("ORT MMI = onnxruntime MatMulInteger (uint8 A, int8 constant B); ORT dynQ = quantize_dynamic "
        "MatMul, compared with linear_int8 (float in/out).")
    return rows


CROSS_KN = ((768, 768), (384, 1536), (1024, 1024), (4096, 4096))
CROSS_M = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
CROSS_K = (4, 8, 16, 32, 48, 64, 128)  # at M = 64, N = 1024


def _first_win(sizes, ratios) -> int:
    """The smallest size from which AMX is at least as fast at every larger size measured
    (one more than the largest size when it never is)."""
    best = sizes[-1] + 1
    for size, r in zip(reversed(sizes), reversed(ratios)):
        if r < 1.0:
            break
        best = size
    return best


def crossover(threads: int = 1, min_time: float = 0.05, repeats: int = 5, out=print) -> dict:
    """Time the AMX kernel (every shape forced onto it) against avx512_vnni for small M and small K
    (gemm_int8 and linear_int8), and print the small-shape route these timings call for.

    Returns ``{"min_m", "min_k", "rows"}``; ``{}`` (after printing why) where AMX is unavailable.
    """
    import edgepack
    from edgepack import _core
    from edgepack.kernels import gemm_int8, linear_int8, pack_weights

    if "avx512_amx" not in edgepack.available_isas():
        out(amx_note() or "AMX not available: this is not an x86-64 build")
        return {}
    prev_isa, prev_threads = edgepack.get_isa(), edgepack.get_num_threads()
    rows = []

    def pair(m, k, n):
        ops = make_operands(m, k, n)
        pw = pack_weights(ops["wq"])
        a, x, ws = ops["a"], ops["x"], ops["w_scale"]
        c, y = np.empty((m, n), np.int32), np.empty((m, n), np.float32)
        t = {}
        for p in ("avx512_amx", "avx512_vnni"):
            edgepack.set_isa(p)
            t[p] = (best_time(lambda: gemm_int8(a, pw, out=c), min_time, repeats),
                    best_time(lambda: linear_int8(x, pw, ws, out=y), min_time, repeats))
        r = {"m": m, "k": k, "n": n, "x_gemm": t["avx512_vnni"][0] / t["avx512_amx"][0],
             "x_linear": t["avx512_vnni"][1] / t["avx512_amx"][1]}
        rows.append(r)
        out(f"{m:>5} {k:>5} {n:>5} | {r['x_gemm']:13.2f}x {r['x_linear']:15.2f}x")
        return min(r["x_gemm"], r["x_linear"])

    try:
        edgepack.set_isa("avx512_amx")
        _core.gemm_set_route(-1, -1)
        default = _core.gemm_get_route()
        _core.gemm_set_route(0, 0)
        edgepack.set_num_threads(threads)
        out(f"AMX kernel vs avx512_vnni, {threads} thread(s); > 1: AMX faster")
        out(f"{'M':>5} {'K':>5} {'N':>5} | {'gemm_int8 AMX':>14} {'linear_int8 AMX':>16}")
        min_m = 0
        for k, n in CROSS_KN:
            ratios = [pair(m, k, n) for m in CROSS_M]
            min_m = max(min_m, _first_win(CROSS_M, ratios))
        ratios = [pair(64, k, 1024) for k in CROSS_K]
        min_k = _first_win(CROSS_K, ratios)
    finally:
        _core.gemm_set_route(-1, -1)
        edgepack.set_isa(prev_isa)
        edgepack.set_num_threads(prev_threads)
    out(f"route these timings call for: EDGEPACK_AMX_MIN_M={min_m} EDGEPACK_AMX_MIN_K={min_k} "
        f"(built-in default: M < {default[0]} or K < {default[1]} on avx512_vnni; set it in "
        "register_gemm_s8 of cpp/kernels/gemm_s8/avx512_amx.cpp)")
    return {"min_m": min_m, "min_k": min_k, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``edgepack bench gemm``; returns the exit status."""
    import edgepack

    p = argparse.ArgumentParser(prog="edgepack bench gemm", description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), metavar="MxKxN")
    p.add_argument("--threads", nargs="+", type=int, default=None,
                   help="thread counts (default: 1 and all)")
    p.add_argument("--isa", default=None, help="force a path (default: the best one)")
    p.add_argument("--min-time", type=float, default=0.05, help="seconds per timed batch")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-ort", action="store_true", help="skip onnxruntime")
    p.add_argument("--quick", action="store_true", help="short timings (smoke test)")
    p.add_argument("--crossover", action="store_true",
                   help="time the AMX kernel against avx512_vnni at small M and K (the small-shape route)")
    args = p.parse_args(argv)
    threads = args.threads or sorted({1, edgepack.default_num_threads() if hasattr(edgepack, "default_num_threads")
                                      else edgepack.cpu_info()["default_num_threads"]})
    if any(t < 1 for t in threads):
        raise ValueError(f"--threads must be >= 1; got {threads}")
    shapes = [parse_shape(s) for s in args.shapes]
    mt, rep = (0.005, 2) if args.quick else (args.min_time, args.repeats)
    if args.crossover:
        crossover(threads=threads[0], min_time=mt, repeats=rep)
        return 0
    run(shapes, threads, min_time=mt, repeats=rep, isa=args.isa, ort=not args.no_ort)
    return 0
