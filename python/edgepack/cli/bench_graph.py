"""``edgepack bench MODEL.onnx``: edgepack float and int8 against onnxruntime float and its best
working int8, in one run, one table.

Every runner is timed in interleaved rounds (each round times every runner for ``--min-time``
seconds, the median round is shown) so all see the same machine load; onnxruntime runs with
``intra_op_num_threads`` equal to edgepack's thread count.  onnxruntime's int8 candidates are its
own quantizer's outputs (dynamic QOperator, static QDQ and static QOperator, MinMax calibration on
the same calibration inputs as edgepack's): the fastest one that loads and whose output stays
within ``--int8-tolerance`` (relative L2) of onnxruntime float is "ORT best int8".
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np

from .model import _parse, _Parser

__all__ = ["bench_onnx_main", "example_feeds_for", "cpu_model"]


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; platform.processor() elsewhere), with the x86
    family and model numbers when the name alone does not tell the core ("AMD EPYC" is Zen 2 to
    Zen 5)."""
    name = fam = mod = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = (p.strip() for p in line.partition(":"))
                if k == "model name" and name is None:
                    name = v
                elif k == "cpu family" and fam is None:
                    fam = v
                elif k == "model" and mod is None and v.isdigit():
                    mod = v
                elif not k and name:
                    break  # end of the first processor's block
    except OSError:
        pass
    if not name:
        import platform

        return platform.processor() or "unknown CPU"
    return name + (f" (family {fam}, model {mod})" if fam and mod else "")


def _dims(text: str | None) -> dict:
    out = {}
    for part in (text or "").split(","):
        if part.strip():
            k, _, v = part.partition("=")
            try:
                out[k.strip()] = int(v)
            except ValueError:
                raise ValueError(f"--dim takes name=value pairs like batch=1,seq=128; got {part!r}") from None
    return out


def example_feeds_for(graph, batch: int, dims: dict, seed: int = 0, shapes: dict | None = None) -> dict:
    """Inputs for every graph input: symbolic dims from ``dims`` (the first dim of each input
    defaults to ``batch``, other unknown dims to 16); floats standard normal, int64 token ids in
    [0, 1000) (a name containing "mask" gets ones); ``shapes`` gives whole shapes by input name
    (their first axis is replaced by ``batch``)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in graph.inputs:
        shape = []
        given = (shapes or {}).get(spec["name"])
        if given is not None:
            shape = [batch] + list(given[1:])
        for ax, d in enumerate([] if given is not None else (spec["shape"] or [])):
            if isinstance(d, int) and d > 0:
                shape.append(d)
            elif isinstance(d, str) and d in dims:
                shape.append(dims[d])
            else:
                shape.append(batch if ax == 0 else dims.get("*", 16))
        dt = np.dtype(spec["dtype"] or "float32")
        if dt.kind == "f":
            feeds[spec["name"]] = rng.standard_normal(shape).astype(dt)
        elif "mask" in spec["name"].lower():
            feeds[spec["name"]] = np.ones(shape, dt)
        else:
            feeds[spec["name"]] = rng.integers(0, 1000, shape).astype(dt)
    return feeds


def _ort_session(path_or_bytes, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(path_or_bytes, so, providers=["CPUExecutionProvider"])


def _rel(a, b) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def ort_int8_candidates(model_path: str, calib: list[dict], tmpdir: str) -> dict[str, str]:
    """onnxruntime's own int8 models of ``model_path``: {name: path or 'failed: reason'}."""
    out = {}
    try:
        from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                              quantize_dynamic, quantize_static)
    except ImportError as e:
        return {"ort int8": f"failed: {e}"}

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            return next(self.it, None)

    jobs = {
        "ort dynamic (QOperator)": lambda p: quantize_dynamic(model_path, p, weight_type=QuantType.QInt8),
        "ort static QDQ": lambda p: quantize_static(model_path, p, Reader(), quant_format=QuantFormat.QDQ,
                                                    per_channel=True, activation_type=QuantType.QUInt8,
                                                    weight_type=QuantType.QInt8),
        "ort static QOperator": lambda p: quantize_static(model_path, p, Reader(),
                                                          quant_format=QuantFormat.QOperator, per_channel=True,
                                                          activation_type=QuantType.QUInt8,
                                                          weight_type=QuantType.QInt8),
    }
    for name, job in jobs.items():
        p = os.path.join(tmpdir, name.replace(" ", "_").replace("(", "").replace(")", "") + ".onnx")
        try:
            job(p)
            out[name] = p
        except Exception as e:  # noqa: BLE001 - any quantizer failure is a row of the table
            out[name] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''}"
    return out


def _batches(text: str) -> list[int]:
    try:
        v = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--batch takes comma-separated integers like 1,8; got {text!r}") from None
    if not v or min(v) < 1:
        raise ValueError(f"--batch sizes must be positive; got {text!r}")
    return v


def bench_onnx_main(argv) -> int:
    """``edgepack bench MODEL.onnx [--batch 1,8] [--threads 1] [--dim name=value] [--profile]``."""
    p = _Parser(prog="edgepack bench", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="an .onnx file")
    p.add_argument("--batch", type=_batches, default=[1], help="batch sizes (default 1)")
    p.add_argument("--threads", type=int, default=1, help="threads for edgepack and onnxruntime (default 1)")
    p.add_argument("--dim", default=None, help="symbolic dimensions, e.g. sequence=128,height=48")
    p.add_argument("--shape", action="append", default=[],
                   help="an input's whole shape at batch 1, e.g. x=1,3,48,192 (repeatable; the batch axis "
                        "is set by --batch)")
    p.add_argument("--calibration", default=None,
                   help="a .npy array of calibration inputs for a one-input model (default: 16 random inputs)")
    p.add_argument("--calibration-count", type=int, default=16, help="random calibration inputs (default 16)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--min-time", type=float, default=0.2, help="seconds per runner per round (default 0.2)")
    p.add_argument("--int8-tolerance", type=float, default=0.05,
                   help="relative L2 error vs ORT float under which an ORT int8 model counts as working")
    p.add_argument("--no-ort", action="store_true", help="edgepack only")
    p.add_argument("--profile", action="store_true", help="per-node time of the edgepack graphs")
    args = _parse(p, argv)
    if isinstance(args, int):
        return args
    import edgepack

    if args.threads < 1 or args.rounds < 1 or not args.min_time > 0:
        raise ValueError("--threads and --rounds must be >= 1 and --min-time > 0")
    edgepack.set_num_threads(args.threads)
    from .ptq import blas_threads

    # NumPy's BLAS (the float graph's matmuls) held to the same thread count: unlimited OpenBLAS
    # threads next to onnxruntime's and edgepack's oversubscribe the cores
    limit, blas_note = blas_threads(args.threads)
    with limit:
        return _bench(args, blas_note)


def _bench(args, blas_note: str) -> int:
    import edgepack

    dims = _dims(args.dim)
    shapes = {}
    for item in args.shape:
        k, _, v = item.partition("=")
        try:
            shapes[k.strip()] = [int(d) for d in v.split(",")]
        except ValueError:
            raise ValueError(f"--shape takes name=d0,d1,...; got {item!r}") from None
    fg = edgepack.from_onnx(args.model)
    if args.calibration is not None:
        from .model import _load_array

        xc = _load_array(args.calibration, "--calibration")
        calib = [{fg.input_names[0]: xc[i:i + 1]} for i in range(min(len(xc), 64))]
    else:
        calib = [example_feeds_for(fg, 1, dims, seed=100 + i, shapes=shapes) for i in range(args.calibration_count)]
    t0 = time.perf_counter()
    qg = edgepack.quantize(fg, calib, activations="static")
    tq = time.perf_counter() - t0
    print(f"model: {args.model}; cpu: {cpu_model()}; edgepack path {edgepack.get_isa()}, "
          f"{args.threads} thread(s), {blas_note}; quantized in {tq:.1f} s "
          f"({len(qg.report.quantized)} of {len(qg.report.layers)} weight nodes int8)")
    with tempfile.TemporaryDirectory() as tmp:
        for batch in args.batch:
            feeds = example_feeds_for(fg, batch, dims, seed=1, shapes=shapes)
            runners = {"edgepack float": lambda f=feeds: fg.run(f), "edgepack int8": lambda f=feeds: qg.run(f)}
            ref = None
            notes = {}
            if not args.no_ort:
                sess = _ort_session(args.model, args.threads)
                onames = [o.name for o in sess.get_outputs()]
                runners["ort float"] = lambda s=sess, f=feeds: s.run(None, f)
                ref = sess.run(None, feeds)
                cands = ort_int8_candidates(args.model, calib, tmp) if batch == args.batch[0] else cands
                for name, path in cands.items():
                    if path.startswith("failed"):
                        notes[name] = path
                        continue
                    try:
                        s = _ort_session(path, args.threads)
                        err = _rel(s.run(None, feeds)[0], ref[0])
                    except Exception as e:  # noqa: BLE001
                        notes[name] = f"does not load/run: {type(e).__name__}"
                        continue
                    if err > args.int8_tolerance:
                        notes[name] = f"output off by {err:.1%} (rel. L2)"
                        continue
                    runners[name] = lambda s=s, f=feeds: s.run(None, f)
                    notes[name] = f"error {err:.2%}"
                for name, res in (("edgepack float", fg.run(feeds)), ("edgepack int8", qg.run(feeds))):
                    notes[name] = f"error {_rel(res[onames[0]], ref[0]):.2%}"
            times = {k: [] for k in runners}
            for fn in runners.values():
                fn()
            for _ in range(args.rounds):
                for k, fn in runners.items():
                    n, t = 0, time.perf_counter()
                    while True:
                        fn()
                        n += 1
                        el = time.perf_counter() - t
                        if el >= args.min_time:
                            break
                    times[k].append(el / n)
            med = {k: statistics.median(v) for k, v in times.items()}
            base = med.get("ort float")
            ort_int8 = [k for k in med if k.startswith("ort ") and k != "ort float"]
            best = min(ort_int8, key=lambda k: med[k]) if ort_int8 else None
            print(f"\nbatch {batch}:")
            print(f"  {'runner':28s} {'ms':>9s} {'x ORT float':>12s}  note")
            for k, v in med.items():
                rel = f"{base / v:.2f}x" if base else "-"
                mark = "  <- ORT best int8" if k == best else ""
                print(f"  {k:28s} {v * 1e3:9.3f} {rel:>12s}  {notes.get(k, '')}{mark}")
            for k, v in notes.items():
                if k not in med:
                    print(f"  {k:28s} {'-':>9s} {'-':>12s}  {v}")
            if best:
                print(f"  edgepack int8 vs ORT best int8 ({best}): {med[best] / med['edgepack int8']:.2f}x")
            if args.profile:
                for name, g in (("float", fg), ("int8", qg)):
                    _profile(g, feeds, name)
    return 0


def _profile(graph, feeds, label: str, top: int = 25) -> None:
    prog = graph.program()
    plan = prog.plan_for(feeds)
    arrays = prog._arrays(feeds)
    rows = plan.profile(arrays, repeats=5)
    total = sum(t for _, t in rows)
    by_op: dict[str, float] = {}
    run_graph = prog.graph     # the lowered graph the plan runs
    for i, t in rows:
        n = run_graph.nodes[i]
        key = n.op if n.op != "Layer" else n.attrs.get("class", "Layer")
        by_op[key] = by_op.get(key, 0.0) + t
    print(f"\n  profile ({label}): {len(rows)} steps, {total * 1e3:.3f} ms summed")
    for k, t in sorted(by_op.items(), key=lambda kv: -kv[1])[:12]:
        print(f"    {k:24s} {t * 1e3:8.3f} ms  {t / total:6.1%}")
    print(f"    slowest nodes:")
    for i, t in sorted(rows, key=lambda r: -r[1])[:top]:
        n = run_graph.nodes[i]
        print(f"    {n.name[:40]:40s} {n.op:10s} {t * 1e3:8.3f} ms")
