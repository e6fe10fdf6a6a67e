"""Benchmark suites shared by ``edgepack bench <suite>`` and ``benchmarks/``.

Each suite module exposes ``main(argv) -> int``; it measures edgepack and its peers in one run
and prints ratios against a baseline measured in the same run.
"""

SUITES = ("quantize", "gemm", "sparse", "minilm", "graph", "conv_int8", "conv_f32", "batch")


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


def time_interleaved(fns: dict, min_time: float, min_reps: int = 3, block: float = 0.3,
                     settle: float = 0.1, clock=None) -> dict:
    """Median seconds per call of each function, measured round-robin in blocks of about `block`
    seconds, so that load from other processes hits every runtime alike.

    Calls that start within `settle` seconds of a block's start are not counted: onnxruntime's
    workers keep spinning for about 50 ms after its last call returns (measured here: a 2-thread
    edgepack call right after one takes 8-10 ms instead of 4), and that would time the next
    runtime against a core busy with another runtime's spin-wait.  edgepack's workers sleep
    within microseconds, so the rule can only help onnxruntime's neighbour.  One warm-up each.

    `clock` (default time.perf_counter) measures the calls; time.thread_time counts only the CPU
    time of the calling thread, which other processes cannot inflate, for contenders that
    compute on the calling thread alone."""
    import statistics
    import time

    now = clock or time.perf_counter

    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    start = now()
    while (min(len(v) for v in times.values()) < min_reps
           or now() - start < min_time * len(fns)):
        for k, fn in fns.items():
            t_block = now()
            while True:
                t0 = now()
                fn()
                t1 = now()
                if t0 - t_block >= settle:
                    times[k].append(t1 - t0)
                if t1 - t_block >= block and t0 - t_block >= settle:
                    break
    return {k: statistics.median(v) for k, v in times.items()}
