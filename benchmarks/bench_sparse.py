"""pytest-benchmark view of the sparse suite (one thread):

    PYTHONPATH=python python3 -m pytest benchmarks/bench_sparse.py --benchmark-only

Each case times spmm and its dense NumPy float32 baseline under the same name group, so the
report shows the ratio directly. ``edgepack bench sparse`` prints the full table with scipy and
linear_int8 columns.
"""

import numpy as np
import pytest

import edgepack
from edgepack.benchsuite.sparse import _one_thread, _quantize_weights, _random_pruned, _two_four
from edgepack.kernels import pack_sparse, spmm

SHAPES = [(4096, 4096), (3072, 768)]
MS = [1, 32, 128]
PATTERNS = ["75%", "90%", "2:4", "90% int8"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    prev = edgepack.get_num_threads()
    edgepack.set_num_threads(1)
    with _one_thread():
        yield
    edgepack.set_num_threads(prev)


def _weights(n, k, pattern):
    rng = np.random.default_rng(0)
    if pattern == "2:4":
        return pack_sparse(_two_four(rng, n, k), format="2:4")
    w = _random_pruned(rng, n, k, 0.75 if pattern == "75%" else 0.9)
    if pattern.endswith("int8"):
        q, s = _quantize_weights(w)
        return pack_sparse(q, format="unstructured", scale=s)
    return pack_sparse(w, format="unstructured")


@pytest.mark.parametrize("m", MS)
@pytest.mark.parametrize("n,k", SHAPES)
def test_dense_numpy(benchmark, n, k, m):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((n, k), dtype=np.float32)
    x = rng.standard_normal((m, k), dtype=np.float32)
    benchmark.group = f"{n}x{k} M={m}"
    benchmark(lambda: x @ w.T)


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("m", MS)
@pytest.mark.parametrize("n,k", SHAPES)
def test_spmm(benchmark, n, k, m, pattern):
    sw = _weights(n, k, pattern)
    x = np.random.default_rng(1).standard_normal((m, k), dtype=np.float32)
    benchmark.group = f"{n}x{k} M={m}"
    benchmark(lambda: spmm(x, sw))
