"""Benchmark suites shared by ``edgepack bench <suite>`` and ``benchmarks/``.

Each suite module exposes ``main(argv) -> int``; it measures edgepack and its peers in one run
and prints ratios against a baseline measured in the same run.
"""

SUITES = ("quantize", "gemm", "sparse", "minilm")
