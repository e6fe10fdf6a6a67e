"""pytest-benchmark view of the quantize suite:

    PYTHONPATH=python python3 -m pytest benchmarks/bench_quantize.py --benchmark-only

Each case times edgepack (one thread and all threads) and the plain NumPy reference under the same
group, so the report shows the ratio directly; the one-thread copy (np.copyto) is timed in the
same run as the memory-rate yardstick. ``edgepack bench quantize`` prints the GB/s table.
"""

import numpy as np
import pytest

import edgepack
from edgepack.benchsuite.quantize import cases

SHAPES = [(4096, 4096), (128, 4096)]
NAMES = ["quantize per-tensor", "quantize per-channel", "dequantize per-tensor", "dequantize out=", "quantize_rows"]


@pytest.fixture(scope="module")
def prepared():
    rng = np.random.default_rng(0)
    return {(m, k): {c[0]: c for c in cases(m, k, rng)} for m, k in SHAPES}


@pytest.fixture
def threads(request):
    prev = edgepack.get_num_threads()
    yield
    edgepack.set_num_threads(prev)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("who", ["edgepack-1t", "edgepack-all", "numpy"])
def test_quantize(benchmark, prepared, threads, shape, name, who):
    _, ours, ref, nbytes = prepared[shape][name]
    benchmark.group = f"{name} {shape[0]}x{shape[1]}"
    benchmark.extra_info["float32_bytes"] = nbytes
    if who == "numpy":
        benchmark(ref)
        return
    edgepack.set_num_threads(1 if who == "edgepack-1t" else edgepack.cpu_info()["default_num_threads"])
    benchmark(ours)


def test_copy_one_thread(benchmark):
    src = np.random.default_rng(1).standard_normal((4096, 4096), dtype=np.float32)
    dst = np.empty_like(src)
    benchmark.group = "memory copy 4096x4096 (np.copyto)"
    benchmark.extra_info["bytes_read_plus_written"] = 2 * src.nbytes
    benchmark(np.copyto, dst, src)
