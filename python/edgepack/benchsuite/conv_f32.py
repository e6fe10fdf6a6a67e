"""``edgepack bench conv_f32``: float32 convolution layers of real networks, edgepack vs onnxruntime.

For each layer (ResNet-50's 7x7 first layer and its 1x1/3x3 layers at 56/28/14/7, MobileNetV2
and PP-LCNet depthwise 3x3/5x5 at strides 1 and 2 and their 1x1 layers; batch 1), in one run:

* edgepack ``conv2d_f32`` on an NHWC input (64-byte aligned, as edgepack's own outputs are when
  layers are chained), bias fused, written into a preallocated output;
* onnxruntime ``Conv`` (with bias) as a one-node ONNX model on the NCHW input (ORT's layout:
  inside, its NCHWc transformer adds a ReorderInput/ReorderOutput pair around the NCHWc kernel),
  ``intra_op_num_threads`` = the thread count, timed per ``session.run``;
* ORT's Conv kernel alone (``ORT conv``): the run's time times the Conv node's share of a run
  in ORT's profiler (a second session with profiling on), i.e. without the two reorders and
  the call overhead: the strictest comparison.

The contenders are timed round-robin in ~0.3 s blocks (``time_interleaved``: ORT's workers spin
after a call, and load from other processes then hits every contender alike); the figure is the
median per call, in CPU time of the calling thread at one thread (both runtimes compute there;
other processes cannot inflate it), wall time otherwise. GFLOP/s = 2 * multiply-adds / time;
ratios > 1 mean edgepack is faster.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np

from ..cli.bench_graph import cpu_model
from . import time_interleaved

# name, C_in, C_out, kernel, stride, pad, groups, H (= W) of the input
LAYERS = [
    ("r50 conv1 7x7/2 3-64", 3, 64, 7, 2, 3, 1, 224),
    ("r50 1x1 64-64 @56", 64, 64, 1, 1, 0, 1, 56),
    ("r50 3x3 64 @56", 64, 64, 3, 1, 1, 1, 56),
    ("r50 1x1 64-256 @56", 64, 256, 1, 1, 0, 1, 56),
    ("r50 1x1 256-64 @56", 256, 64, 1, 1, 0, 1, 56),
    ("r50 1x1/2 256-512 56>28", 256, 512, 1, 2, 0, 1, 56),
    ("r50 3x3/2 128 56>28", 128, 128, 3, 2, 1, 1, 56),
    ("r50 3x3 128 @28", 128, 128, 3, 1, 1, 1, 28),
    ("r50 1x1 128-512 @28", 128, 512, 1, 1, 0, 1, 28),
    ("r50 1x1 512-128 @28", 512, 128, 1, 1, 0, 1, 28),
    ("r50 3x3 256 @14", 256, 256, 3, 1, 1, 1, 14),
    ("r50 1x1 256-1024 @14", 256, 1024, 1, 1, 0, 1, 14),
    ("r50 1x1 1024-256 @14", 1024, 256, 1, 1, 0, 1, 14),
    ("r50 3x3 512 @7", 512, 512, 3, 1, 1, 1, 7),
    ("r50 1x1 512-2048 @7", 512, 2048, 1, 1, 0, 1, 7),
    ("r50 1x1 2048-512 @7", 2048, 512, 1, 1, 0, 1, 7),
    ("mv2 conv1 3x3/2 3-32", 3, 32, 3, 2, 1, 1, 224),
    ("mv2 dw3x3 32 @112", 32, 32, 3, 1, 1, 32, 112),
    ("mv2 1x1 32-16 @112", 32, 16, 1, 1, 0, 1, 112),
    ("mv2 1x1 16-96 @112", 16, 96, 1, 1, 0, 1, 112),
    ("mv2 dw3x3/2 96 112>56", 96, 96, 3, 2, 1, 96, 112),
    ("mv2 1x1 96-24 @56", 96, 24, 1, 1, 0, 1, 56),
    ("mv2 1x1 24-144 @56", 24, 144, 1, 1, 0, 1, 56),
    ("mv2 dw3x3 144 @56", 144, 144, 3, 1, 1, 144, 56),
    ("mv2 dw3x3/2 144 56>28", 144, 144, 3, 2, 1, 144, 56),
    ("mv2 1x1 144-32 @28", 144, 32, 1, 1, 0, 1, 28),
    ("mv2 dw3x3 384 @14", 384, 384, 3, 1, 1, 384, 14),
    ("mv2 1x1 384-64 @14", 384, 64, 1, 1, 0, 1, 14),
    ("mv2 dw3x3 960 @7", 960, 960, 3, 1, 1, 960, 7),
    ("mv2 1x1 960-320 @7", 960, 320, 1, 1, 0, 1, 7),
    ("mv2 1x1 320-1280 @7", 320, 1280, 1, 1, 0, 1, 7),
    ("lcnet conv1 3x3/2 3-16", 3, 16, 3, 2, 1, 1, 224),
    ("lcnet dw3x3 16 @112", 16, 16, 3, 1, 1, 16, 112),
    ("lcnet 1x1 16-32 @112", 16, 32, 1, 1, 0, 1, 112),
    ("lcnet dw3x3/2 64 56>28", 64, 64, 3, 2, 1, 64, 56),
    ("lcnet 1x1 64-128 @28", 64, 128, 1, 1, 0, 1, 28),
    ("lcnet dw5x5 256 @14", 256, 256, 5, 1, 2, 256, 14),
    ("lcnet 1x1 256-256 @14", 256, 256, 1, 1, 0, 1, 14),
    ("lcnet dw5x5/2 256 14>7", 256, 256, 5, 2, 2, 256, 14),
    ("lcnet dw5x5 512 @7", 512, 512, 5, 1, 2, 512, 7),
    ("lcnet 1x1 512-512 @7", 512, 512, 1, 1, 0, 1, 7),
]


def aligned_empty(shape) -> np.ndarray:
    """A float32 C-contiguous array starting on a 64-byte boundary."""
    n = int(np.prod(shape))
    buf = np.empty(n + 16, np.float32)
    skip = (-buf.ctypes.data // 4) % 16
    return buf[skip:skip + n].reshape(shape)


def ort_conv_session(w: np.ndarray, b: np.ndarray, stride: int, pad: int, groups: int, h: int, threads: int,
                     profile: bool = False):
    """One-node onnxruntime session Y = Conv(X [1, C, h, h] NCHW, W, B)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    k = w.shape[2]
    node = helper.make_node("Conv", ["X", "W", "B"], ["Y"], kernel_shape=[k, k], strides=[stride, stride],
                            pads=[pad] * 4, group=groups)
    graph = helper.make_graph(
        [node], "conv", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, w.shape[1] * groups, h, h])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if profile:
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(_tmpdir(), "edgepack_conv_profile")
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _tmpdir() -> str:
    import tempfile

    return tempfile.gettempdir()


def ort_conv_fraction(sess, feed: dict, calls: int) -> float:
    """Median share of ``session.run``'s time spent in its Conv node(s), from ORT's profiler (the
    session must have been created with profiling on; this ends it)."""
    for _ in range(calls):
        sess.run(None, feed)
    path = sess.end_profiling()
    try:
        with open(path) as f:
            events = json.load(f)
    finally:
        os.remove(path)
    runs = sorted((e["ts"], e["dur"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    starts = [r[0] for r in runs]
    conv = [0.0] * len(runs)
    for e in events:
        if e.get("cat") == "Node" and e.get("args", {}).get("op_name") == "Conv" and \
                e["name"].endswith("_kernel_time"):
            i = int(np.searchsorted(starts, e["ts"], side="right")) - 1
            if i >= 0:
                conv[i] += e["dur"]
    shares = [c / d for c, (_, d) in zip(conv, runs) if d > 0 and c > 0][1:]  # the first run warms up
    return statistics.median(shares) if shares else float("nan")


def run(layers=LAYERS, threads: int = 1, min_time: float = 0.5, isa: str | None = None, ort: bool = True,
        out=print) -> list[dict]:
    import edgepack
    from edgepack.kernels import conv2d_f32, pack_conv_weights_f32

    have_ort = False
    if ort:
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401

            have_ort = True
        except ImportError as e:
            out(f"({e.name} not installed: the onnxruntime columns are left out)")
    prev_isa, prev_threads = edgepack.get_isa(), edgepack.get_num_threads()
    rows = []
    try:
        if isa:
            edgepack.set_isa(isa)
        edgepack.set_num_threads(threads)
        path = edgepack.get_isa()
        # At one thread both runtimes compute on the calling thread: its CPU time is what they
        # cost, and other processes on a shared machine cannot inflate it.
        clock = time.thread_time if threads == 1 else time.perf_counter
        out(f"CPU: {cpu_model()}; edgepack path: {path}; threads: {threads} (edgepack and onnxruntime "
            f"intra_op_num_threads); batch 1; clock: {'thread CPU time' if threads == 1 else 'wall'}")
        out("edgepack: NHWC input; onnxruntime: one-node Conv on the NCHW input ('ORT run': session.run, "
            "its NCHWc reorders included; 'ORT conv': its Conv kernel alone = ORT run x the Conv node's "
            "share of the run in ORT's profiler)")
        hdr = (f"{'layer':<26} {'MMAC':>6} {'route':>9} | {'edgepack':>8} {'GF/s':>6} | {'ORT run':>8} "
               f"{'ORT conv':>8} {'GF/s':>6} | {'x run':>6} {'x conv':>6}")
        out(hdr)
        out("-" * len(hdr))
        rng = np.random.default_rng(0)
        for name, cin, cout, k, s, p, g, h in layers:
            w = (rng.standard_normal((cout, cin // g, k, k)) / np.sqrt(k * k * cin / g)).astype(np.float32)
            b = rng.standard_normal(cout).astype(np.float32)
            cw = pack_conv_weights_f32(w, stride=s, pads=p, groups=g)
            x = aligned_empty((1, h, h, cin))
            x[...] = rng.standard_normal(x.shape)
            y = aligned_empty(cw.output_shape(x.shape))
            oh, ow = y.shape[1:3]
            macs = oh * ow * cout * (cin // g) * k * k
            fns = {"ep": lambda: conv2d_f32(x, cw, b, out=y)}
            share = float("nan")
            if have_ort:
                xn = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
                sess = ort_conv_session(w, b, s, p, g, h, threads)
                ref = sess.run(None, {"X": xn})[0].transpose(0, 2, 3, 1)
                got = conv2d_f32(x, cw, b)
                err = float(np.max(np.abs(got - ref)) / (np.max(np.abs(ref)) + 1e-30))
                if err > 1e-4:
                    out(f"{name}: edgepack and onnxruntime disagree (max relative difference {err:.2g})")
                fns["ort"] = lambda: sess.run(None, {"X": xn})
                prof = ort_conv_session(w, b, s, p, g, h, threads, profile=True)
                share = ort_conv_fraction(prof, {"X": xn}, 1 + max(10, min(200, int(0.2 / max(macs * 2e-11, 1e-6)))))
                del prof
            t = time_interleaved(fns, min_time, clock=clock)
            t_run = t.get("ort", float("nan"))
            t_conv = t_run * share
            r = {"layer": name, "macs": macs, "route": cw.route, "path": path, "threads": threads,
                 "ep_us": t["ep"] * 1e6, "ep_gflops": 2 * macs / t["ep"] * 1e-9, "ort_run_us": t_run * 1e6,
                 "ort_conv_us": t_conv * 1e6, "ort_conv_gflops": 2 * macs / t_conv * 1e-9,
                 "x_ort_run": t_run / t["ep"], "x_ort_conv": t_conv / t["ep"]}
            rows.append(r)
            out(f"{name:<26} {macs * 1e-6:6.1f} {r['route']:>9} | {r['ep_us']:8.1f} {r['ep_gflops']:6.1f} | "
                f"{_f(r['ort_run_us'])} {_f(r['ort_conv_us'])} {_f(r['ort_conv_gflops'], 6)} | "
                f"{_x(r['x_ort_run'])} {_x(r['x_ort_conv'])}")
    finally:
        edgepack.set_isa(prev_isa)
        edgepack.set_num_threads(prev_threads)
    if rows and have_ort:
        geo = float(np.exp(np.mean(np.log([r["x_ort_conv"] for r in rows]))))
        tot = sum(r["ort_conv_us"] for r in rows) / sum(r["ep_us"] for r in rows)
        out(f"x conv over all layers: geometric mean {geo:.2f}x, total time {tot:.2f}x; "
            f"layers slower than ORT's kernel: {sum(r['x_ort_conv'] < 1 for r in rows)} of {len(rows)}")
    out("times in microseconds (median per call); x = ORT time / edgepack time (> 1: edgepack faster)")
    return rows


def _f(v: float, width: int = 8) -> str:
    return f"{'-':>{width}}" if v != v else f"{v:{width}.1f}"


def _x(v: float) -> str:
    return f"{'-':>6}" if v != v else f"{v:5.2f}x"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``edgepack bench conv_f32``; returns the exit status."""
    p = argparse.ArgumentParser(prog="edgepack bench conv_f32", description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", nargs="+", default=None, metavar="TEXT",
                   help="only the layers whose name contains one of these strings (e.g. r50 dw5x5)")
    p.add_argument("--threads", type=int, default=1, help="threads for both runtimes (default 1)")
    p.add_argument("--isa", default=None, help="force an edgepack path (default: the best one)")
    p.add_argument("--min-time", type=float, default=0.5, help="seconds per contender and layer (default 0.5)")
    p.add_argument("--no-ort", action="store_true", help="skip onnxruntime")
    p.add_argument("--quick", action="store_true", help="short timings (smoke test)")
    args = p.parse_args(argv)
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1; got {args.threads}")
    layers = LAYERS
    if args.layers:
        layers = [l for l in LAYERS if any(s in l[0] for s in args.layers)]
        if not layers:
            raise ValueError(f"--layers {args.layers} matches no layer; names are: "
                             + ", ".join(l[0] for l in LAYERS))
    run(layers, threads=args.threads, min_time=0.02 if args.quick else args.min_time, isa=args.isa,
        ort=not args.no_ort)
    return 0
