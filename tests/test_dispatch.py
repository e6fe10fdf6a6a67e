"""Runtime dispatch: detection, forcing a path with EDGEPACK_ISA / set_isa, threads."""

import os
import subprocess
import sys

import pytest

import edgepack


def _run(code, **env):
    e = dict(os.environ)
    e.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e)


def _cpuinfo_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def test_cpu_info_shape():
    info = edgepack.cpu_info()
    assert info["isa"] in info["available"]
    assert info["available"][0] == "scalar"
    assert set(info["available"]) <= set(info["built"])
    assert info["best"] == info["available"][-1]
    assert info["num_threads"] >= 1
    assert info["default_num_threads"] == len(os.sched_getaffinity(0)) or any(
        v in os.environ for v in ("EDGEPACK_NUM_THREADS", "OMP_NUM_THREADS"))


@pytest.mark.skipif(_cpuinfo_flags() is None, reason="needs Linux /proc/cpuinfo")
def test_detection_matches_proc_cpuinfo():
    flags = _cpuinfo_flags()
    feats = edgepack.cpu_info()["features"]
    if "avx2" in feats:  # x86
        assert feats["avx2"] == ("avx2" in flags)
        assert feats["avx512f"] == ("avx512f" in flags)
        assert feats["avx512bw"] == ("avx512bw" in flags)
        assert feats["avx512_vnni"] == ("avx512_vnni" in flags)
        avail = edgepack.available_isas()
        assert ("avx2" in avail) == ("avx2" in flags and "fma" in flags)
        assert ("avx512_vnni" in avail) == ({"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni"} <= flags)
        # CPUID's AMX bits; the kernel lists them only when it supports the tile state, and the path
        # also needs the permission request (test_amx.py), so only these directions are certain.
        if "amx_int8" in flags:
            assert feats["amx_int8"] and feats["amx_tile"]
        if not feats["amx_int8"] and not edgepack.cpu_info()["amx_emulated"]:
            assert "avx512_amx" not in avail


@pytest.mark.parametrize("name", edgepack.available_isas())
def test_env_forces_path(name):
    r = _run("import edgepack; print(edgepack.get_isa())", EDGEPACK_ISA=name)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == name


def test_env_unknown_path_is_a_clear_error():
    r = _run("import edgepack", EDGEPACK_ISA="sse9")
    assert r.returncode != 0
    assert "EDGEPACK_ISA='sse9'" in r.stderr and "scalar" in r.stderr


def test_env_missing_path_is_a_clear_error():
    other = "neon" if "avx2" in edgepack.cpu_info()["features"] else "avx2"
    r = _run("import edgepack", EDGEPACK_ISA=other)
    assert r.returncode != 0
    assert other in r.stderr and "available here" in r.stderr


def test_set_isa_roundtrip_and_errors():
    start = edgepack.get_isa()
    for name in edgepack.available_isas():
        with edgepack.use_isa(name):
            assert edgepack.get_isa() == name
    assert edgepack.get_isa() == start
    with pytest.raises(ValueError, match="unknown instruction-set path"):
        edgepack.set_isa("mmx")
    with pytest.raises(TypeError, match="name must be a str"):
        edgepack.set_isa(3)


def test_threads_set_get():
    n0 = edgepack.get_num_threads()
    try:
        edgepack.set_num_threads(1)
        assert edgepack.get_num_threads() == 1
        edgepack.set_num_threads(3)
        assert edgepack.get_num_threads() == 3
        with pytest.raises(ValueError, match="n must be an int >= 1"):
            edgepack.set_num_threads(0)
        with pytest.raises(TypeError, match="n must be an int"):
            edgepack.set_num_threads(2.5)
    finally:
        edgepack.set_num_threads(n0)


def test_env_num_threads():
    r = _run("import edgepack; print(edgepack.get_num_threads())", EDGEPACK_NUM_THREADS="3")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "3"


def test_env_omp_num_threads_when_edgepack_unset():
    # engines (Dask's nanny, Ray) give each worker process its CPU share through OMP_NUM_THREADS
    code = "import edgepack; print(edgepack.get_num_threads(), edgepack.cpu_info()['default_num_threads'])"
    env = {k: v for k, v in os.environ.items() if k != "EDGEPACK_NUM_THREADS"}
    for omp, want in (("3", "3 3"), ("5,2", "5 5")):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**env, "OMP_NUM_THREADS": omp})
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == want
    # EDGEPACK_NUM_THREADS wins; a value that is not a positive integer is ignored
    r = _run(code, EDGEPACK_NUM_THREADS="2", OMP_NUM_THREADS="7")
    assert r.stdout.split()[0] == "2", r.stderr
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**env, "OMP_NUM_THREADS": "lots"})
    assert r.returncode == 0 and r.stdout.split()[0] == str(len(os.sched_getaffinity(0))), r.stderr


def test_cli_cpu():
    r = subprocess.run([sys.executable, "-m", "edgepack", "cpu"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "active:" in r.stdout


def test_cli_unknown_command_exits_2():
    r = subprocess.run([sys.executable, "-m", "edgepack", "frobnicate"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "unknown command" in r.stderr and "Traceback" not in r.stderr
