"""Thread stress: 8 Python threads share packed weights and call the kernels at once while another
thread keeps changing the pool size; every result must equal the single-threaded one bit for bit.

Kernels split work over N or M (never K), so a result cannot depend on the thread count, on
which calls find the pool busy (they run on their own thread) or on a concurrent
set_num_threads. A deadlock fails the test (every join has a timeout); a crash kills pytest.

Covered: gemm_int8 and linear_int8 on shared PackedWeights, spmm on shared SparseWeights,
conv2d_f32 on shared ConvWeightsF32 (dense and depthwise, changing input sizes), and a quantized
model's forward (edgepack.quantize), each as soon as it exists in edgepack; once on the best path,
once with the avx512_amx path forced (where it is available).
Budget: EDGEPACK_STRESS_SECONDS (default 3 s; CI sets more).
"""

import os
import threading
import time

import numpy as np

import edgepack
from edgepack import kernels as K

SECONDS = float(os.environ.get("EDGEPACK_STRESS_SECONDS", "3"))


def _workloads(rng):
    """(name, fn) pairs over shared read-only weights; fn(i) computes case i of that workload."""
    work = []
    n, k = 96, 200
    w = rng.integers(-127, 128, size=(n, k), dtype=np.int8)
    pw = K.pack_weights(w)
    w_scale = rng.uniform(0.001, 0.01, n).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    # M = 1, 3 take the small-M kernel; 64 and 130 are large enough to use the pool.
    xs = [rng.standard_normal((m, k)).astype(np.float32) for m in (1, 3, 64, 130)]
    acts = [None, "relu", "gelu", "silu"]
    work.append(("linear_int8", lambda i: K.linear_int8(xs[i % 4], pw, w_scale, bias, activation=acts[i % 4])))
    a8 = [rng.integers(-128, 128, size=(m, k), dtype=np.int8) for m in (1, 5, 70)]
    work.append(("gemm_int8", lambda i: K.gemm_int8(a8[i % 3], pw)))
    ws = rng.standard_normal((n, k)).astype(np.float32)
    ws[rng.random((n, k)) < 0.85] = 0.0
    sw = K.pack_sparse(ws)
    work.append(("spmm", lambda i: K.spmm(xs[i % 4], sw, bias=bias, activation=acts[i % 4])))
    w24 = rng.standard_normal((n, k)).astype(np.float32).reshape(n, k // 4, 4)
    w24[:, :, rng.permutation(4)[:2]] = 0.0  # 2 of every 4 along K
    s24 = K.pack_sparse(w24.reshape(n, k), format="2:4")
    work.append(("spmm 2:4", lambda i: K.spmm(xs[i % 4], s24, activation=acts[(i + 1) % 4])))
    wi = rng.integers(-127, 128, size=(n, k), dtype=np.int8)
    wi[rng.random((n, k)) < 0.9] = 0
    si = K.pack_sparse(wi, scale=w_scale)
    work.append(("spmm int8", lambda i: K.spmm(xs[i % 4], si, bias=bias)))
    if hasattr(K, "conv2d_f32"):
        # One weights object, input shapes changing between calls (its plan cache is shared).
        cw = K.pack_conv_weights_f32((rng.standard_normal((48, 32, 3, 3)) * 0.1).astype(np.float32), pads=1)
        dw = K.pack_conv_weights_f32(rng.standard_normal((64, 1, 3, 3)).astype(np.float32), stride=2, pads=1,
                                     groups=64)
        xc = [rng.standard_normal((1, h, h, 32)).astype(np.float32) for h in (7, 20, 33)]
        xd = [rng.standard_normal((1, h, h, 64)).astype(np.float32) for h in (9, 40)]
        conv_acts = [None, "relu", "hardswish", "silu"]
        work.append(("conv2d_f32", lambda i: K.conv2d_f32(xc[i % 3], cw, activation=conv_acts[i % 4])))
        work.append(("conv2d_f32 depthwise", lambda i: K.conv2d_f32(xd[i % 2], dw, activation="relu6")))
    from edgepack import nn

    nn.seed(1)
    model = nn.Sequential(nn.Linear(k, 64), nn.GELU(), nn.Linear(64, 10))
    qmodel = edgepack.quantize(model)
    work.append(("quantized forward", lambda i: qmodel(xs[i % 4])))
    smodel = edgepack.quantize(model, calibration=[xs[2]], activations="static")
    work.append(("static quantized forward", lambda i: smodel(xs[i % 4])))
    return work


def test_threads_share_weights_and_resize_pool(rng):
    _stress(rng)


def test_threads_share_weights_and_resize_pool_amx(amx, rng):
    # The same with the avx512_amx path forced and every shape on its kernel: each task configures
    # and releases its tiles on whichever pool thread runs it (skips with the reason without AMX).
    _stress(rng)


def _stress(rng):
    work = _workloads(rng)
    saved = edgepack.get_num_threads()
    edgepack.set_num_threads(1)
    expected = {(name, i): fn(i).copy() for name, fn in work for i in range(12)}
    edgepack.set_num_threads(max(2, saved))

    stop = threading.Event()
    errors: list[str] = []
    counts = [0] * 8

    def caller(t):
        j = t
        try:
            while not stop.is_set():
                name, fn = work[j % len(work)]
                i = (j * 7 + t) % 12
                got = fn(i)
                if not np.array_equal(got, expected[(name, i)], equal_nan=True):
                    errors.append(f"thread {t}: {name} case {i} differs from the single-threaded result")
                    return
                counts[t] += 1
                j += 1
        except Exception as e:  # noqa: BLE001 - reported below with the thread's name
            errors.append(f"thread {t}: {type(e).__name__}: {e}")

    def resizer():
        n = 0
        while not stop.is_set():
            edgepack.set_num_threads(1 + n % 4)
            n += 1
            time.sleep(0.0005)

    threads = [threading.Thread(target=caller, args=(t,), daemon=True) for t in range(8)]
    threads.append(threading.Thread(target=resizer, daemon=True))
    for th in threads:
        th.start()
    time.sleep(SECONDS)
    stop.set()
    for th in threads:
        th.join(timeout=60)
    alive = [th.name for th in threads if th.is_alive()]
    edgepack.set_num_threads(saved)
    assert not alive, f"threads still running 60 s after stop (deadlock?): {alive}"
    assert not errors, "\n".join(errors[:10])
    assert all(c > 0 for c in counts), f"some threads made no call: {counts}"
    # Afterwards the pool still works and still gives the same bits.
    for name, fn in work:
        assert np.array_equal(fn(2), expected[(name, 2)]), name
