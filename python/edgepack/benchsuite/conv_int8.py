"""``edgepack bench conv_int8``: int8 convolution layers against onnxruntime, one layer at a time.

For each real layer shape (ResNet-50 3x3 / 1x1 at 56/28/14/7 and its 7x7 stride-2 first layer,
MobileNetV2 / PP-LCNet depthwise 3x3 / 5x5 at stride 1 and 2 and their 1x1 convolutions), batch 1:

* edgepack ``conv2d_int8``: uint8 NHWC in, uint8 NHWC out (requantized, as consecutive int8
  layers run), per-channel weight scales and bias fused;
* onnxruntime float ``Conv`` (NCHW float32), a one-node model;
* onnxruntime ``QLinearConv`` (uint8 activations, int8 per-channel weights), a one-node model:
  ORT's own best int8 convolution.

ORT runs with intra_op_num_threads = edgepack's thread count. The three contenders are
interleaved (one timed batch of each in turn, best of ``--repeats``), because ORT's workers spin
after a call and would steal the core from whoever runs next (KERNELS.md). Reported: GOP/s
(2 * MACs / time), % of the int8 dot-product peak measured here (``edgepack bench gemm``'s probe,
per thread), GB/s of activations moved (input + output bytes) for depthwise layers, and speed
ratios (> 1: edgepack faster).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

# name, cin, cout, kernel, stride, pad, groups, input size (square)
LAYERS = [
    ("r50 conv1 7x7 s2", 3, 64, 7, 2, 3, 1, 224),
    ("r50 3x3 @56", 64, 64, 3, 1, 1, 1, 56),
    ("r50 1x1 64>256 @56", 64, 256, 1, 1, 0, 1, 56),
    ("r50 1x1 256>64 @56", 256, 64, 1, 1, 0, 1, 56),
    ("r50 3x3 @28", 128, 128, 3, 1, 1, 1, 28),
    ("r50 1x1 128>512 @28", 128, 512, 1, 1, 0, 1, 28),
    ("r50 3x3 @14", 256, 256, 3, 1, 1, 1, 14),
    ("r50 1x1 256>1024 @14", 256, 1024, 1, 1, 0, 1, 14),
    ("r50 3x3 @7", 512, 512, 3, 1, 1, 1, 7),
    ("r50 1x1 512>2048 @7", 512, 2048, 1, 1, 0, 1, 7),
    ("mbv2 dw3x3 s1 c32 @112", 32, 32, 3, 1, 1, 32, 112),
    ("mbv2 dw3x3 s2 c96 @112", 96, 96, 3, 2, 1, 96, 112),
    ("mbv2 dw3x3 s1 c144 @56", 144, 144, 3, 1, 1, 144, 56),
    ("mbv2 dw3x3 s2 c144 @56", 144, 144, 3, 2, 1, 144, 56),
    ("mbv2 dw3x3 s1 c576 @14", 576, 576, 3, 1, 1, 576, 14),
    ("mbv2 dw3x3 s1 c960 @7", 960, 960, 3, 1, 1, 960, 7),
    ("lcnet dw5x5 s1 c256 @14", 256, 256, 5, 1, 2, 256, 14),
    ("lcnet dw5x5 s2 c256 @14", 256, 256, 5, 2, 2, 256, 14),
    ("lcnet dw5x5 s1 c512 @7", 512, 512, 5, 1, 2, 512, 7),
    ("mbv2 1x1 24>144 @56", 24, 144, 1, 1, 0, 1, 56),
    ("mbv2 1x1 144>24 @56", 144, 24, 1, 1, 0, 1, 56),
    ("mbv2 1x1 96>576 @14", 96, 576, 1, 1, 0, 1, 14),
    ("mbv2 1x1 960>320 @7", 960, 320, 1, 1, 0, 1, 7),
]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover
        pass
    import platform

    return platform.processor() or platform.machine()


def make_layer(cin, cout, k, groups, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    wf = rng.standard_normal((cout, cin // groups, k, k)).astype(np.float32) * 0.05
    w_scale = (np.abs(wf).reshape(cout, -1).max(axis=1) / 127).astype(np.float32)
    wq = np.clip(np.rint(wf / w_scale[:, None, None, None]), -127, 127).astype(np.int8)
    bias = rng.standard_normal(cout).astype(np.float32) * 0.1
    return {"wf": wf, "wq": wq, "w_scale": w_scale, "bias": bias}


def _session(model, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def ort_models(layer: dict, cin, k, stride, pad, groups, hw, threads, x_scale, x_zp, y_scale, y_zp):
    """(float Conv session, QLinearConv session) for one layer (NCHW, batch 1)."""
    from onnx import TensorProto, helper, numpy_helper

    cout = layer["wq"].shape[0]
    attrs = {"kernel_shape": [k, k], "strides": [stride, stride], "pads": [pad] * 4, "group": groups}
    out_hw = (hw + 2 * pad - k) // stride + 1

    def model(nodes, inits, in_type, out_type, name):
        g = helper.make_graph(nodes, name, [helper.make_tensor_value_info("X", in_type, [1, cin, hw, hw])],
                              [helper.make_tensor_value_info("Y", out_type, [1, cout, out_hw, out_hw])],
                              initializer=inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        m.ir_version = 8
        return m

    wdq = layer["wq"].astype(np.float32) * layer["w_scale"][:, None, None, None]
    f = model([helper.make_node("Conv", ["X", "W", "B"], ["Y"], **attrs)],
              [numpy_helper.from_array(wdq, "W"), numpy_helper.from_array(layer["bias"], "B")],
              TensorProto.FLOAT, TensorProto.FLOAT, "conv_f32")
    bias_q = np.rint(layer["bias"] / (x_scale * layer["w_scale"])).astype(np.int32)
    inits = [numpy_helper.from_array(np.array(x_scale, np.float32), "xs"),
             numpy_helper.from_array(np.array(x_zp, np.uint8), "xz"),
             numpy_helper.from_array(layer["wq"], "W"),
             numpy_helper.from_array(layer["w_scale"], "ws"),
             numpy_helper.from_array(np.zeros(cout, np.int8), "wz"),
             numpy_helper.from_array(np.array(y_scale, np.float32), "ys"),
             numpy_helper.from_array(np.array(y_zp, np.uint8), "yz"),
             numpy_helper.from_array(bias_q, "B")]
    q = model([helper.make_node("QLinearConv", ["X", "xs", "xz", "W", "ws", "wz", "ys", "yz", "B"], ["Y"], **attrs)],
              inits, TensorProto.UINT8, TensorProto.UINT8, "qlinearconv")
    return _session(f, threads), _session(q, threads)


def _timed(fn, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def interleaved(fns: list, min_time: float, repeats: int) -> list:
    """Best seconds per call of each fn; the fns take turns batch by batch (after warm-up)."""
    calls = []
    for fn in fns:
        fn()
        fn()
        calls.append(max(1, int(min_time / max(_timed(fn, 1), 1e-7))))
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            best[i] = min(best[i], _timed(fn, calls[i]))
    return best


def run(names=None, threads=1, min_time=0.05, repeats=5, isa=None, ort=True, out=print) -> list[dict]:
    import edgepack
    from edgepack.kernels import conv2d_int8, pack_conv_weights

    from .gemm import measure_peak

    have_ort = False
    if ort:
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401

            have_ort = True
        except ImportError:
            out("(onnx / onnxruntime not installed: their columns are left out)")
    layers = [l for l in LAYERS if names is None or any(n in l[0] for n in names)]
    prev_isa, prev_threads = edgepack.get_isa(), edgepack.get_num_threads()
    peak_isa, peak = measure_peak()
    if isa:
        edgepack.set_isa(isa)
    path = edgepack.get_isa()
    out(f"CPU: {cpu_model()}; path: {path}; threads: {threads}; int8 peak ({peak_isa} dot-product loop, "
        f"one core): {peak:.0f} GOP/s")
    hdr = (f"{'layer':<25} {'MMAC':>7} | {'us':>8} {'GOP/s':>7} {'%peak':>6} {'GB/s':>6} | {'ORT f32':>8} "
           f"{'ORT QLC':>8} | {'x f32':>6} {'x QLC':>6}")
    out(hdr)
    out("-" * len(hdr))
    rows = []
    xs, xz, ys, yz = 0.02, 128, 0.05, 100
    try:
        edgepack.set_num_threads(threads)
        for name, cin, cout, k, s, p, g, hw in layers:
            layer = make_layer(cin, cout, k, g)
            packed = pack_conv_weights(layer["wq"], stride=s, pads=p, groups=g)
            rng = np.random.default_rng(1)
            x = rng.integers(0, 256, (1, hw, hw, cin), dtype=np.int16).astype(np.uint8)
            oshape = packed.output_shape(x.shape)
            y = np.empty(oshape, np.uint8)
            ws, b = layer["w_scale"], layer["bias"]

            def ep():
                conv2d_int8(x, packed, ws, b, x_scale=xs, x_zero_point=np.uint8(xz), out_scale=ys,
                            out_zero_point=np.uint8(yz), out=y)

            fns = [ep]
            if have_ort:
                sf, sq = ort_models(layer, cin, k, s, p, g, hw, threads, xs, xz, ys, yz)
                xf = {"X": ((x.astype(np.float32) - xz) * xs).transpose(0, 3, 1, 2).copy()}
                xq = {"X": x.transpose(0, 3, 1, 2).copy()}
                fns += [lambda: sf.run(None, xf), lambda: sq.run(None, xq)]
            t = interleaved(fns, min_time, repeats) + [float("nan")] * (3 - len(fns))
            macs = oshape[1] * oshape[2] * cout * (cin // g) * k * k
            gops = 2 * macs / t[0] * 1e-9
            moved = x.nbytes + y.nbytes
            r = {"layer": name, "path": path, "threads": threads, "mmac": macs / 1e6, "us": t[0] * 1e6, "gops": gops,
                 "pct_peak": 100 * gops / (peak * threads), "gbs": moved / t[0] * 1e-9,
                 "ort_f32_us": t[1] * 1e6, "ort_qlc_us": t[2] * 1e6, "x_f32": t[1] / t[0], "x_qlc": t[2] / t[0]}
            rows.append(r)
            gbs = f"{r['gbs']:6.1f}" if g == cin and g > 1 else f"{'':>6}"
            out(f"{name:<25} {r['mmac']:7.1f} | {r['us']:8.1f} {gops:7.1f} {r['pct_peak']:5.1f}% {gbs} | "
                f"{r['ort_f32_us']:8.1f} {r['ort_qlc_us']:8.1f} | {r['x_f32']:5.2f}x {r['x_qlc']:5.2f}x")
    finally:
        edgepack.set_isa(prev_isa)
        edgepack.set_num_threads(prev_threads)
    out("us per call (best of the interleaved batches); edgepack: uint8 NHWC in -> uint8 out, bias and requantization "
        "fused; ORT f32 = float Conv (NCHW), ORT QLC = QLinearConv (uint8, per-channel int8 weights), both one-node "
        "models; x = speed ratio (> 1: edgepack faster); GB/s (depthwise) = (input + output bytes) / time.")
    return rows


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``edgepack bench conv_int8``; returns the exit status."""
    p = argparse.ArgumentParser(prog="edgepack bench conv_int8", description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", nargs="+", default=None, metavar="SUBSTRING",
                   help="only layers whose name contains one of these (e.g. dw3x3 r50)")
    p.add_argument("--threads", type=int, default=1, help="edgepack and ORT threads (default 1)")
    p.add_argument("--isa", default=None, help="force a path (default: the best one)")
    p.add_argument("--min-time", type=float, default=0.05, help="seconds per timed batch")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-ort", action="store_true", help="skip onnxruntime")
    p.add_argument("--quick", action="store_true", help="short timings (smoke test)")
    args = p.parse_args(argv)
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1; got {args.threads}")
    mt, rep = (0.005, 2) if args.quick else (args.min_time, args.repeats)
    run(args.layers, args.threads, min_time=mt, repeats=rep, isa=args.isa, ort=not args.no_ort)
    return 0
