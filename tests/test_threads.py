"""Thread count control and thread-count independence of the kernels' results."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import edgepack
from edgepack import kernels as K

F32 = np.float32


@pytest.fixture
def restore_threads():
    prev = edgepack.get_num_threads()
    yield
    edgepack.set_num_threads(prev)


def test_set_get_num_threads(restore_threads):
    for n in (1, 2, 3, 7, 1):
        edgepack.set_num_threads(n)
        assert edgepack.get_num_threads() == n
        assert edgepack.cpu_info()["num_threads"] == n
    with pytest.raises(ValueError, match="n"):
        edgepack.set_num_threads(0)
    with pytest.raises(ValueError, match="n"):
        edgepack.set_num_threads(-2)
    with pytest.raises(TypeError, match="n"):
        edgepack.set_num_threads(2.0)
    with pytest.raises(TypeError, match="n"):
        edgepack.set_num_threads(True)
    assert edgepack.get_num_threads() == 1  # failed calls change nothing


def _child_threads(cpus):
    """get_num_threads() in a fresh interpreter pinned to `cpus` (no EDGEPACK_NUM_THREADS)."""
    # (neither EDGEPACK_NUM_THREADS nor OMP_NUM_THREADS, which engines such as Ray set in-process)
    env = {k: v for k, v in os.environ.items() if k not in ("EDGEPACK_NUM_THREADS", "OMP_NUM_THREADS")}
    env["PYTHONPATH"] = str(Path(edgepack.__file__).resolve().parent.parent)
    code = "import edgepack; print(edgepack.get_num_threads(), edgepack.cpu_info()['default_num_threads'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         preexec_fn=lambda: os.sched_setaffinity(0, cpus), timeout=60)
    return tuple(int(v) for v in out.stdout.split())


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity (Linux)")
def test_default_is_the_affinity_cpu_count():
    cpus = sorted(os.sched_getaffinity(0))
    assert _child_threads(set(cpus)) == (len(cpus), len(cpus))
    # one allowed CPU -> one thread, whatever the machine total
    assert _child_threads({cpus[0]}) == (1, 1)
    if "EDGEPACK_NUM_THREADS" not in os.environ:
        # in this process a library may have set OMP_NUM_THREADS (Dask's LocalCluster does), which
        # the default honours on purpose
        omp = edgepack.runtime._omp_num_threads()
        assert edgepack.cpu_info()["default_num_threads"] == (omp or len(cpus))


def _workloads(rng):
    """Calls large enough to be split over the pool, with their inputs."""
    x = rng.standard_normal((512, 1024)).astype(F32)  # 512K elements: above the threading threshold
    sc = rng.uniform(0.005, 0.05, 1024).astype(F32)
    zc = rng.integers(0, 256, 1024).astype(np.uint8)
    sr = rng.uniform(0.005, 0.05, 512).astype(F32)
    q = rng.integers(-128, 128, (512, 1024)).astype(np.int8)
    w = K.pack_weights(rng.integers(-127, 128, (384, 1024)).astype(np.int8))
    ws = rng.uniform(0.001, 0.01, 384).astype(F32)
    return {
        "quantize per-tensor": lambda: K.quantize(x, 0.01, 5),
        "quantize axis 1 uint8": lambda: K.quantize(x, sc, zc, axis=1, dtype=np.uint8),
        "quantize axis 0": lambda: K.quantize(x, sr, axis=0),
        "dequantize axis 1": lambda: K.dequantize(q, sc, axis=1),
        "quantize_rows": lambda: K.quantize_rows(x),
        "choose_qparams": lambda: K.choose_qparams(x, symmetric=False, dtype=np.uint8),
        "choose_qparams axis 1": lambda: K.choose_qparams(x, axis=1),
        "linear_int8": lambda: K.linear_int8(x[:96], w, ws),
    }


def _same(a, b):
    if isinstance(a, tuple):
        return all(_same(u, v) for u, v in zip(a, b))
    return np.array_equal(np.asarray(a), np.asarray(b)) and np.asarray(a).dtype == np.asarray(b).dtype


def test_results_identical_at_any_thread_count(isa, rng, restore_threads):
    work = _workloads(rng)
    edgepack.set_num_threads(1)
    want = {name: fn() for name, fn in work.items()}
    for n in (2, 3, 4):
        edgepack.set_num_threads(n)
        for name, fn in work.items():
            assert _same(fn(), want[name]), f"{name} differs at {n} threads"


def test_several_python_threads_at_once(rng, restore_threads):
    edgepack.set_num_threads(max(2, len(os.sched_getaffinity(0))))
    work = _workloads(rng)
    want = {name: fn() for name, fn in work.items()}
    names = list(work) * 6

    def call(name):
        return name, work[name]()

    with ThreadPoolExecutor(max_workers=4) as ex:
        for name, got in ex.map(call, names):
            assert _same(got, want[name]), f"{name} differs when called from several threads"
