"""Whole-model float vs int8 inference: the digits MLP and CNN of tests/data, and a wider MLP.

    PYTHONPATH=python python3 -m pytest benchmarks/bench_models.py --benchmark-only
    PYTHONPATH=python python3 benchmarks/bench_models.py [--threads 1] [--rounds 7]

The pytest-benchmark view puts float, int8 dynamic and int8 static of one model, batch size and
thread count in one group.  The script prints the same comparison as a table of latencies and
int8 speedups, timed in interleaved rounds (float, dynamic, static, repeated; median shown) so
all three see the same load on a shared machine.  NumPy's BLAS (the float baseline) is held to
edgepack's thread count when threadpoolctl is installed: unlimited OpenBLAS threads next to
edgepack's pool oversubscribe the cores and make float look far slower than it is.

Models (float32 weights; int8 = edgepack.quantize with per-channel weights; static calibrated
with minmax on the training split):

- ``mlp``: digits MLP 64-256-256-10 (ReLU), input (N, 64);
- ``cnn``: digits CNN conv3x3 16/32/64 + 2 Linear, input (N, 1, 8, 8);
- ``wide_mlp``: 784-2048-2048-10 (ReLU), random weights, an MNIST-sized MLP whose layers are
  large enough for the int8 GEMM to dominate the Python and quantization overheads.
"""

import os
import statistics
import sys

import numpy as np
import pytest

import edgepack

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "data"))
import digits_models as dm  # noqa: E402

from edgepack.cli.ptq import _time, blas_threads  # noqa: E402

BATCHES = (1, 256)
THREADS = sorted({1, edgepack.cpu_info()["default_num_threads"]})
VARIANTS = ("float", "int8_dynamic", "int8_static")


def wide_mlp():
    from edgepack import nn

    nn.seed(0)
    return nn.Sequential(nn.Linear(784, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 10))


def build(name: str) -> tuple[dict, np.ndarray]:
    """{"float": model, "int8_dynamic": ..., "int8_static": ...} and input rows (>= 256)."""
    if name == "wide_mlp":
        m = wide_mlp()
        x = np.random.default_rng(0).random((512, 784), np.float32)  # pixel-like, non-negative
    else:
        xtr = dm.split()[0]
        m = dm.mlp() if name == "mlp" else dm.cnn()
        x = xtr if name == "mlp" else dm.image(xtr)
    return {"float": m, "int8_dynamic": edgepack.quantize(m),
            "int8_static": edgepack.quantize(m, x, activations="static")}, np.ascontiguousarray(x[:256])


_CACHE: dict = {}


def models(name):
    if name not in _CACHE:
        _CACHE[name] = build(name)
    return _CACHE[name]


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("name", ["mlp", "cnn", "wide_mlp"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_model(benchmark, name, batch, threads, variant):
    ms, x = models(name)
    xb = np.ascontiguousarray(x[:batch])
    benchmark.group = f"{name} batch={batch} threads={threads}"
    prev = edgepack.get_num_threads()
    edgepack.set_num_threads(threads)
    limit, _ = blas_threads(threads)
    try:
        with limit:
            benchmark(ms[variant], xb)
    finally:
        edgepack.set_num_threads(prev)


def table(names=("mlp", "cnn", "wide_mlp"), threads=None, rounds=7, min_time=0.05) -> str:
    """Median latency of each variant over interleaved rounds, and int8 speedups over float."""
    threads = threads or THREADS
    lines = [f"isa {edgepack.get_isa()}; median of {rounds} interleaved rounds, {min_time}s per variant per round",
             f"{'model':<9} {'thr':>3} {'batch':>5} {'float':>10} {'int8 dyn':>10} {'int8 stat':>10} "
             f"{'dyn x':>6} {'stat x':>6}"]
    for name in names:
        ms, x = models(name)
        for t in threads:
            edgepack.set_num_threads(t)
            limit, _ = blas_threads(t)
            with limit:
                for b in BATCHES:
                    xb = np.ascontiguousarray(x[:b])
                    for v in VARIANTS:
                        ms[v](xb)  # warm-up
                    ts = {v: [] for v in VARIANTS}
                    for _ in range(rounds):
                        for v in VARIANTS:
                            ts[v].append(_time(lambda: ms[v](xb), min_time))
                    med = {v: statistics.median(ts[v]) for v in VARIANTS}
                    f = lambda s: f"{s * 1e6:.0f} us" if s < 1e-3 else f"{s * 1e3:.2f} ms"  # noqa: E731
                    lines.append(f"{name:<9} {t:>3} {b:>5} {f(med['float']):>10} {f(med['int8_dynamic']):>10} "
                                 f"{f(med['int8_static']):>10} {med['float'] / med['int8_dynamic']:>5.2f}x "
                                 f"{med['float'] / med['int8_static']:>5.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, action="append", help="thread count(s) (default: 1 and all)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--min-time", type=float, default=0.05)
    p.add_argument("--models", default="mlp,cnn,wide_mlp")
    a = p.parse_args()
    print(table(tuple(a.models.split(",")), a.threads, a.rounds, a.min_time))
