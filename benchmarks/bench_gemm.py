"""pytest-benchmark view of the gemm suite:

    PYTHONPATH=python python3 -m pytest benchmarks/bench_gemm.py --benchmark-only

Each shape x thread count is one group holding edgepack's gemm_int8 and linear_int8 next to
NumPy float32 matmul and (when installed) onnxruntime MatMulInteger and its dynamically
quantized MatMul, so the report shows the ratios directly. ``edgepack bench gemm`` prints the
same comparison as one table with GOP/s and % of the measured int8 peak.
"""

import numpy as np
import pytest

import edgepack
from edgepack.benchsuite.gemm import (SHAPES, blas_threads, make_operands, ort_dynamic_quant,
                                      ort_matmulinteger, parse_shape)
from edgepack.kernels import gemm_int8, linear_int8, pack_weights

THREADS = sorted({1, edgepack.cpu_info()["default_num_threads"]})
IMPLS = ["gemm_int8", "linear_int8", "numpy_f32", "ort_matmulinteger", "ort_dynamic_quant"]


@pytest.fixture(scope="module")
def operands():
    cache = {}

    def get(shape):
        if shape not in cache:
            m, k, n = parse_shape(shape)
            ops = make_operands(m, k, n)
            ops["pw"] = pack_weights(ops["wq"])
            cache[shape] = ops
        return cache[shape]

    return get


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("impl", IMPLS)
def test_gemm(benchmark, operands, shape, threads, impl):
    ops = operands(shape)
    benchmark.group = f"{shape} threads={threads}"
    m, k, n = parse_shape(shape)
    benchmark.extra_info["gop"] = 2.0 * m * n * k * 1e-9
    prev = edgepack.get_num_threads()
    edgepack.set_num_threads(threads)
    try:
        if impl == "gemm_int8":
            c = np.empty((m, n), np.int32)
            benchmark(gemm_int8, ops["a"], ops["pw"], out=c)
        elif impl == "linear_int8":
            y = np.empty((m, n), np.float32)
            benchmark(linear_int8, ops["x"], ops["pw"], ops["w_scale"], out=y)
        elif impl == "numpy_f32":
            wt = np.ascontiguousarray(ops["wf"].T)
            with blas_threads(threads):
                benchmark(np.matmul, ops["x"], wt)
        else:
            pytest.importorskip("onnxruntime")
            if impl == "ort_matmulinteger":
                s = ort_matmulinteger(ops["wq"], threads)
                feed = {"A": ops["a"].view(np.uint8) ^ 0x80}
            else:
                s = ort_dynamic_quant(ops["wf"], threads)
                feed = {"X": ops["x"]}
            benchmark(s.run, None, feed)
    finally:
        edgepack.set_num_threads(prev)
