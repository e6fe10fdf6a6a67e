"""Benchmark suites shared by ``edgepack bench <suite>`` and ``benchmarks/``.

Each suite module exposes ``main(argv) -> int``; it measures edgepack and its peers in one run
and prints ratios against a baseline measured in the same run.
"""

SUITES = ("quantize", "gemm", "sparse", "minilm", "graph", "batch")


def best_time(fn, min_time: float, repeats: int) -> float:
    """Best-of-``repeats`` seconds per call of ``fn()``; each repeat runs the call enough times to
    last about ``min_time`` seconds (after one warm-up call and one calibration call)."""
    import time

    fn()
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    calls = max(1, int(min_time / once))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best
