"""The avx512_amx path.

Run everywhere: the detector's reasons for every failure mode (on injected CPUID / XCR0 / palette
facts and permission-call outcomes), the reason reported by cpu_info() on this machine, and the
errors of forcing the path where it is unavailable.

Run where the path is available (an AMX CPU, or the test build EDGEPACK_AMX_EMULATE whose tiles
are a scalar model of the hardware; elsewhere they skip with the detector's reason): the AMX kernel
bit for bit against NumPy and against the avx512_vnni path over its blocking's edge cases, the
small-shape route to avx512_vnni, linear_int8 (dynamic and static, every activation), and threads.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import edgepack
from edgepack import _core
from edgepack.kernels import gemm_int8, linear_int8, pack_weights

from conftest import AMX_AVAILABLE, AMX_SKIP_REASON

F32 = np.float32
INFO = edgepack.cpu_info()
X86 = "avx2" in INFO["features"]


def _run(code, **env):
    e = dict(os.environ)
    e.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e)


def ref_gemm(a, w):
    """int64 reference, wrapped to int32 the way the kernels' sums wrap."""
    return (a.astype(np.int64) @ w.astype(np.int64).T).astype(np.int32)


def rand(rng, shape, lo):
    return rng.integers(lo, 128, shape, dtype=np.int16).astype(np.int8)


# ---- detection (any machine) -----------------------------------------------------------------


def test_reason_matches_availability():
    avail = "avx512_amx" in INFO["available"]
    assert (INFO["amx_reason"] is None) == avail
    if not avail:
        assert isinstance(INFO["amx_reason"], str) and INFO["amx_reason"]
    assert INFO["amx_emulated"] in (True, False)
    assert edgepack.cpu_info()["gemm_small_route"] == ((2, 17) if INFO["isa"] == "avx512_amx" else (0, 0))


@pytest.mark.skipif(not X86, reason="x86-64 only")
def test_reason_names_the_missing_cpuid_bits():
    if INFO["features"]["amx_int8"] or INFO["amx_emulated"] or "avx512_amx" not in INFO["built"]:
        pytest.skip("this machine has AMX-INT8 (or runs the emulated / an AMX-less build)")
    assert "CPUID reports neither AMX-TILE nor AMX-INT8" in INFO["amx_reason"]


SPR = {}  # the defaults of _core._amx_check: the facts of the SPR VM in AMX.md


@pytest.mark.parametrize("facts,perm,expect", [
    (SPR, "ok", None),                       # the first request grants XTILEDATA
    (SPR, "granted", None),                  # already permitted: no request made
    (SPR, "none", None),                     # CPUID/XCR0 checks only
    ({"x86": 0}, "ok", "not an x86-64 CPU"),
    ({"tile": 0, "int8": 0}, "ok", "neither AMX-TILE nor AMX-INT8"),
    ({"int8": 0}, "ok", "AMX-TILE but not AMX-INT8"),
    ({"tile": 0}, "ok", "AMX-INT8 but not AMX-TILE"),
    ({"avx512_vnni": 0}, "ok", "no AVX-512 VNNI"),
    ({"xcr0": 0x200E7}, "ok", "XCR0 = 0x200e7"),                       # no XTILEDATA
    ({"xcr0": 0xE7}, "ok", "does not enable the tile state"),
    ({"max_palette": 0}, "ok", "no tile palette"),                      # VMs advertising AMX
    ({"max_names": 4}, "ok", "4 tiles of 16 rows x 64 bytes"),
    ({"bytes_per_row": 32}, "ok", "16 rows x 32 bytes"),
    (SPR, "denied", "ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) failed: errno 1"),  # seccomp, policy
    (SPR, "old-kernel", "errno 22"),                                    # Linux < 5.16
    (SPR, "ignored", "shows no XTILEDATA"),
    (SPR, "no-os", "no way to request the tile state"),
])
def test_detector_failure_modes(facts, perm, expect):
    reason = _core._amx_check(facts, perm)
    if expect is None:
        assert reason is None
    else:
        assert reason is not None and expect in reason, reason


def test_detector_checks_cpuid_before_any_system_call():
    # A CPU without AMX never reaches the permission request (whose outcome here would say 'denied').
    assert "neither AMX-TILE" in _core._amx_check({"tile": 0, "int8": 0}, "denied")
    with pytest.raises(ValueError, match="perm must be one of"):
        _core._amx_check({}, "maybe")


@pytest.mark.skipif(AMX_AVAILABLE, reason="the path is available here")
def test_forcing_unavailable_amx_raises_with_reason_and_paths():
    r = _run("import edgepack", EDGEPACK_ISA="avx512_amx")
    assert r.returncode != 0
    assert "EDGEPACK_ISA='avx512_amx'" in r.stderr and "available here: scalar" in r.stderr
    if "avx512_amx" in INFO["built"]:
        assert INFO["amx_reason"] in r.stderr
    with pytest.raises(ValueError, match=r"avx512_amx.*available here: scalar"):
        edgepack.set_isa("avx512_amx")
    assert edgepack.get_isa() == INFO["isa"]


@pytest.mark.skipif(not AMX_AVAILABLE, reason=AMX_SKIP_REASON)
def test_env_forces_amx():
    r = _run("import edgepack; print(edgepack.get_isa())", EDGEPACK_ISA="avx512_amx")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "avx512_amx"


def test_route_env_override_and_errors():
    code = "import edgepack, edgepack._core as c; edgepack.set_isa(edgepack.cpu_info()['best']); print(c.gemm_get_route())"
    r = _run(code, EDGEPACK_AMX_MIN_M="0", EDGEPACK_AMX_MIN_K="5")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ("(0, 5)" if AMX_AVAILABLE else "(0, 0)")
    for bad in ("-3", "two"):
        r = _run("import edgepack", EDGEPACK_AMX_MIN_M=bad)
        assert r.returncode != 0 and f"EDGEPACK_AMX_MIN_M={bad!r}" in r.stderr and "int >= 0" in r.stderr
    with pytest.raises(ValueError, match="min_m and min_k must be -1"):
        _core.gemm_set_route(-2, 0)


# ---- the kernel (AMX machines, or the emulated test build) ------------------------------------


def test_small_route_default(amx):
    _core.gemm_set_route(-1, -1)  # the path's defaults (the fixture sends every shape to AMX)
    assert _core.gemm_get_route() == (2, 17)
    assert _core.gemm_routes_small(1, 4096) and _core.gemm_routes_small(64, 16)
    assert not _core.gemm_routes_small(2, 4096) and not _core.gemm_routes_small(64, 17)
    rng = np.random.default_rng(1)
    for m, k in [(1, 300), (40, 16), (2, 300)]:  # routed or not, the same exact result
        a, w = rand(rng, (m, k), -128), rand(rng, (33, k), -127)
        np.testing.assert_array_equal(gemm_int8(a, pack_weights(w)), ref_gemm(a, w))
    _core.gemm_set_route(0, 0)
    assert not _core.gemm_routes_small(1, 1)


def _emu_tdps():
    return _core._amx_emu_counters()["tdps"] if INFO["amx_emulated"] else None


@pytest.mark.parametrize("k", [1, 3, 4, 63, 64, 65, 129, 1000])
def test_gemm_grid_equals_numpy_and_vnni(amx, k):
    rng = np.random.default_rng(k)
    before = _emu_tdps()
    for n in (1, 15, 16, 17, 33, 100):
        w = rand(rng, (n, k), -127)
        pw = pack_weights(w)
        for m in list(range(1, 18)) + [31, 32, 33, 40, 69]:
            a = rand(rng, (m, k), -128)
            c = gemm_int8(a, pw)
            np.testing.assert_array_equal(c, ref_gemm(a, w), err_msg=f"M={m} K={k} N={n}")
            with edgepack.use_isa("avx512_vnni"):
                np.testing.assert_array_equal(c, gemm_int8(a, pw), err_msg=f"vs VNNI, M={m} K={k} N={n}")
    if before is not None:
        assert _emu_tdps() > before, "the AMX kernel did not run"
        assert _core._amx_emu_counters()["live"] == 0, "a thread kept its tile configuration"


@pytest.mark.parametrize("aval,wval", [(-128, -127), (-128, 127), (127, 127)])
def test_gemm_wraps_like_vnni(amx, aval, wval):
    # 128 * 127 * 140000 > 2^31: the int32 sums wrap, identically on every path.
    m, k, n = 3, 140000, 17
    a, w = np.full((m, k), aval, np.int8), np.full((n, k), wval, np.int8)
    pw = pack_weights(w)
    c = gemm_int8(a, pw)
    np.testing.assert_array_equal(c, ref_gemm(a, w))
    with edgepack.use_isa("avx512_vnni"):
        np.testing.assert_array_equal(c, gemm_int8(a, pw))


@pytest.mark.parametrize("act", [None, "relu", "gelu", "gelu_tanh", "silu"])
@pytest.mark.parametrize("m", [1, 5, 16, 17, 32, 45])
def test_linear_equals_vnni(amx, act, m):
    rng = np.random.default_rng(m)
    k, n = 100, 70
    x = (rng.standard_normal((m, k)) * 3).astype(F32)
    w = pack_weights(rand(rng, (n, k), -127))
    ws = (rng.random(n) * 0.02 + 0.001).astype(F32)
    b = np.linspace(-6, 6, n).astype(F32)
    for kw in ({}, {"x_scale": 0.05, "x_zero_point": np.uint8(131)}, {"x_scale": 0.05, "x_zero_point": np.int8(-3)}):
        y = linear_int8(x, w, ws, bias=b, activation=act, **kw)
        with edgepack.use_isa("avx512_vnni"):
            yv = linear_int8(x, w, ws, bias=b, activation=act, **kw)
        with edgepack.use_isa("scalar"):
            ys = linear_int8(x, w, ws, bias=b, activation=act, **kw)
        # The same AVX-512 epilogue as VNNI: identical bits for every activation.
        np.testing.assert_array_equal(y, yv)
        if act in (None, "relu"):
            np.testing.assert_array_equal(y, ys)
        else:
            np.testing.assert_allclose(y, ys, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_threads_split_over_m_and_n(amx, threads):
    rng = np.random.default_rng(threads)
    prev = edgepack.get_num_threads()
    try:
        edgepack.set_num_threads(threads)
        for m, k, n in [(300, 256, 96), (40, 192, 1000), (129, 320, 513)]:
            a, w = rand(rng, (m, k), -128), rand(rng, (n, k), -127)
            np.testing.assert_array_equal(gemm_int8(a, pack_weights(w)), ref_gemm(a, w))
    finally:
        edgepack.set_num_threads(prev)


# ---- benchmarks ------------------------------------------------------------------------------


def test_bench_gemm_reports_amx_peak_or_why_not(capsys):
    from edgepack.benchsuite.gemm import main

    assert main(["--shapes", "4x64x40", "40x128x48", "--threads", "1", "--quick", "--no-ort"]) == 0
    text = capsys.readouterr().out
    if AMX_AVAILABLE:
        assert "avx512_amx TDPBSSD loop" in text
    elif X86:
        assert f"AMX not available: {INFO['amx_reason']}" in text


def test_bench_crossover(capsys, monkeypatch):
    import edgepack.benchsuite.gemm as g

    # Small shapes: under the emulated test build the tiles are a slow scalar model.
    monkeypatch.setattr(g, "CROSS_KN", ((128, 64),))
    monkeypatch.setattr(g, "CROSS_M", (1, 2, 16))
    monkeypatch.setattr(g, "CROSS_K", (16, 64))
    assert g.main(["--crossover", "--quick"]) == 0
    text = capsys.readouterr().out
    if AMX_AVAILABLE:
        assert "EDGEPACK_AMX_MIN_M=" in text and _core.gemm_get_route() in ((0, 0), (2, 17))
    elif X86:
        assert "AMX not available" in text
