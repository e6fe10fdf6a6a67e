"""``edgepack quantize MODEL -o OUT`` and ``edgepack bench MODEL --batch 1,32,256``.

Expected failures raise ``ValueError``/``FileNotFoundError``; ``edgepack.cli`` prints them as one
line and exits with status 2 (option errors too, not argparse's usage dump).

bench compares a model with its counterpart on the same inputs, interleaved round by round so
both see the same machine load: a float model against ``edgepack.quantize(model)`` (dynamic, or
static with ``--calibration``); an int8 model against ``--float FLOAT_MODEL`` when given, else
against its dequantized float twin (``edgepack.ptq.to_float``: same architecture, float
kernels).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import numpy as np

from .model import _guess_input_shape, _load_array, _parse, _Parser, _shape

__all__ = ["quantize_main", "bench_main"]

_METHODS = ("minmax", "percentile", "entropy", "mse")


def _is_quantized(model) -> bool:
    from ..nn.quantized import QConv2d, QLinear

    return any(isinstance(m, (QLinear, QConv2d)) for _, m in model.named_modules())


def _input_shape(model, header, given):
    if given is not None:
        return given
    meta = header.get("metadata") or {}
    if isinstance(meta, dict) and isinstance(meta.get("input_shape"), list):
        return tuple(int(s) for s in meta["input_shape"])
    return _guess_input_shape(model)


def quantize_main(argv) -> int:
    """``edgepack quantize MODEL -o OUT [--calibration X.npy] [--method M] [--activations A] [--weights W]``."""
    p = _Parser(prog="edgepack quantize", description="Post-training int8 quantization of a saved model.")
    p.add_argument("model", help="float model file written by edgepack.save, or an .onnx file")
    p.add_argument("-o", "--output", required=True, help="where to write the int8 model")
    p.add_argument("--calibration", default=None,
                   help="representative inputs, a .npy array with a batch axis (e.g. N,64 or N,1,8,8)")
    p.add_argument("--activations", choices=("dynamic", "static"), default=None,
                   help="dynamic: per-row scales at run time; static: calibrated scale and zero point "
                        "(default: static when --calibration is given, else dynamic)")
    p.add_argument("--method", choices=_METHODS, default="minmax", help="static range observer (default minmax)")
    p.add_argument("--percentile", type=float, default=99.99, help="for --method percentile (default 99.99)")
    p.add_argument("--weights", choices=("per_channel", "per_tensor"), default="per_channel",
                   help="weight scales (default per_channel)")
    p.add_argument("--skip", default="", help="comma-separated layer names to keep float, e.g. 0,4")
    p.add_argument("--keep-float-below-db", type=float, default=None,
                   help="keep a layer float when its int8 SQNR is below this (needs --calibration)")
    args = _parse(p, argv)
    if isinstance(args, int):
        return args
    from .. import quantize
    from ..io import read_model, save

    model, header = read_model(args.model)
    calib = None if args.calibration is None else _load_array(args.calibration, "--calibration")
    if calib is not None:
        # Integer arrays are allowed: token ids for a model that starts with an Embedding.
        if calib.dtype.kind not in "fiu" or calib.ndim < 2 or calib.shape[0] == 0:
            raise ValueError(f"--calibration must be a numeric array (N, ...) with N >= 1; "
                             f"got {calib.dtype} {calib.shape}")
        if calib.dtype.kind == "f":
            calib = calib.astype(np.float32, copy=False)
    activations = args.activations or ("static" if calib is not None else "dynamic")
    if activations == "static" and calib is None:
        raise ValueError("--activations static needs --calibration X.npy (representative inputs)")
    if args.keep_float_below_db is not None and calib is None:
        raise ValueError("--keep-float-below-db needs --calibration X.npy to measure SQNR")
    skip = [s for s in args.skip.split(",") if s]
    try:
        qmodel = quantize(model, calib, weights=args.weights, activations=activations, method=args.method,
                          percentile=args.percentile, skip=skip, keep_float_below_db=args.keep_float_below_db)
    except (ValueError, TypeError) as e:
        with_data = "" if calib is None else f" with --calibration of shape {calib.shape}"
        raise ValueError(f"cannot quantize {args.model}{with_data}: {e}") from None
    meta = header.get("metadata") if isinstance(header.get("metadata"), dict) else {}
    meta = dict(meta)
    rep = qmodel.report
    meta["quantization"] = {k: v for k, v in rep.settings.items() if not (activations == "dynamic" and k in
                                                                           ("method", "percentile"))}
    save(qmodel, args.output, metadata=meta)
    print(rep)
    import os

    a, b = os.path.getsize(args.model), os.path.getsize(args.output)
    print(f"wrote {args.output}: {b:,} bytes ({a / b:.2f}x smaller than {a:,})")
    return 0


def _batches(text: str) -> list[int]:
    msg = f"must be comma-separated positive integers like 1,32,256; got {text!r}"
    try:
        out = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(msg) from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(msg)
    return out


def blas_threads(n: int):
    """Limit NumPy's BLAS (the float baseline) to ``n`` threads while timing, when threadpoolctl
    is installed.  Unlimited OpenBLAS threads next to edgepack's pool oversubscribe the cores and
    make float look many times slower than it is; equal thread counts keep the ratio honest.

    Returns
    -------
    (context manager, str) : the limit and a description for the printout.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext(), "BLAS threads not limited (no threadpoolctl)"
    return threadpool_limits(n), f"BLAS limited to {n}"


def _time(fn, min_time: float) -> float:
    """Seconds per call: calls repeated until ``min_time`` has passed, then the mean of that run."""
    t0 = time.perf_counter()
    n = 0
    while True:
        fn()
        n += 1
        t = time.perf_counter() - t0
        if t >= min_time:
            return t / n


def bench(a, b, x: np.ndarray, batches, *, rounds: int = 5, min_time: float = 0.05) -> list[dict]:
    """Latency of models ``a`` and ``b`` on rows of ``x`` at each batch size.

    Each round times ``a`` then ``b`` (``min_time`` seconds each), so both see the same load;
    the result per model is the median over ``rounds`` rounds.

    Returns
    -------
    list of dict
        ``{"batch", "a_s", "b_s", "speedup"}`` with seconds per batch; ``speedup = a_s / b_s``.
    """
    rows = []
    for bs in batches:
        reps = -(-bs // x.shape[0])
        xb = np.ascontiguousarray(np.concatenate([x] * reps)[:bs]) if reps > 1 else np.ascontiguousarray(x[:bs])
        a(xb), b(xb)  # warm-up (packing, caches)
        ta, tb = [], []
        for _ in range(rounds):
            ta.append(_time(lambda: a(xb), min_time))
            tb.append(_time(lambda: b(xb), min_time))
        sa, sb = statistics.median(ta), statistics.median(tb)
        rows.append({"batch": bs, "a_s": sa, "b_s": sb, "speedup": sa / sb})
    return rows


def _fmt_time(s: float) -> str:
    return f"{s * 1e6:.0f} us" if s < 1e-3 else f"{s * 1e3:.2f} ms"


def bench_main(argv) -> int:
    """``edgepack bench MODEL --batch 1,32,256``: latency and throughput against the float/int8 counterpart."""
    p = _Parser(prog="edgepack bench", description=(
        "Latency and throughput of a saved model against its counterpart: a float model is compared "
        "with its int8 quantization, an int8 model with --float FLOAT_MODEL or, by default, its "
        "dequantized float twin (same layers, float kernels)."))
    p.add_argument("model", help="model file written by edgepack.save (float or int8)")
    p.add_argument("--batch", type=_batches, default=[1, 32, 256], help="batch sizes (default 1,32,256)")
    p.add_argument("--float", dest="float_model", default=None, help="the float model an int8 MODEL came from")
    p.add_argument("--data", default=None, help="inputs (.npy, N rows); default: standard normal of --input-shape")
    p.add_argument("--calibration", default=None,
                   help="for a float MODEL: quantize static with these inputs (default: dynamic)")
    p.add_argument("--input-shape", type=_shape, default=None,
                   help="one input's shape with a batch axis, e.g. 1,1,8,8 (default: file metadata or first layer)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds; the median is shown (default 5)")
    p.add_argument("--min-time", type=float, default=0.05, help="seconds per model per round (default 0.05)")
    p.add_argument("--threads", type=int, default=None, help="edgepack threads (default: as configured)")
    args = _parse(p, argv)
    if isinstance(args, int):
        return args
    if args.rounds < 1 or not args.min_time > 0:
        raise ValueError(f"--rounds must be >= 1 and --min-time > 0; got {args.rounds}, {args.min_time}")
    import edgepack
    from ..io import load, read_header
    from ..ptq import quantize, to_float

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be a positive integer; got {args.threads}")
        edgepack.set_num_threads(args.threads)
    header = read_header(args.model)
    model = load(args.model)
    model.eval()
    if args.data is not None:
        x = _load_array(args.data, "--data")
        if x.ndim < 2 or x.shape[0] == 0:
            raise ValueError(f"--data must have a batch axis and at least one row; got shape {x.shape}")
        x = x.astype(np.float32, copy=False)
    else:
        shape = _input_shape(model, header, args.input_shape)
        if shape is None:
            raise ValueError("cannot tell the model's input shape: give --input-shape (e.g. 1,1,8,8) or --data X.npy")
        x = np.random.default_rng(0).standard_normal((max(args.batch),) + tuple(shape[1:])).astype(np.float32)

    if _is_quantized(model):
        qmodel = model
        if args.float_model is not None:
            fmodel, how = load(args.float_model), f"float: {args.float_model}"
        else:
            fmodel, how = to_float(model), "float: dequantized twin of MODEL"
    else:
        if args.float_model is not None:
            raise ValueError("--float is for an int8 MODEL; this MODEL is float (it is quantized for the comparison)")
        fmodel = model
        if args.calibration is not None:
            calib = _load_array(args.calibration, "--calibration").astype(np.float32, copy=False)
            qmodel, how = quantize(model, calib, activations="static"), "int8: quantize(MODEL, static)"
        else:
            qmodel, how = quantize(model), "int8: quantize(MODEL) (dynamic)"
    try:
        fmodel(x[:1]), qmodel(x[:1])
    except (ValueError, TypeError) as e:
        raise ValueError(f"the models cannot run on input of shape {(1,) + x.shape[1:]}: {e}") from None

    nt = edgepack.get_num_threads()
    limit, blas = blas_threads(nt)
    with limit:
        rows = bench(fmodel, qmodel, x, args.batch, rounds=args.rounds, min_time=args.min_time)
    print(f"model: {args.model}; {how}; isa {edgepack.get_isa()}, {nt} edgepack threads, {blas}; "
          f"median of {args.rounds} interleaved rounds")
    hdr = ("batch", "float latency", "int8 latency", "float rows/s", "int8 rows/s", "int8 speedup")
    table = [hdr] + [(str(r["batch"]), _fmt_time(r["a_s"]), _fmt_time(r["b_s"]), f"{r['batch'] / r['a_s']:,.0f}",
                      f"{r['batch'] / r['b_s']:,.0f}", f"{r['speedup']:.2f}x") for r in rows]
    w = [max(len(t[i]) for t in table) for i in range(len(hdr))]
    for t in table:
        print("  ".join(c.rjust(w[i]) for i, c in enumerate(t)))
    return 0
