"""Fuzzing the Python boundary: edgepack.load, edgepack.from_onnx and every edgepack.kernels function.

Each target (tests/_fuzz_targets.py) runs in a child process with a 4 GiB address-space limit, so a
crash, a hang or a runaway allocation fails this test instead of killing pytest. Only the
documented exceptions (ValueError for corrupt files; TypeError/ValueError for bad kernel
arguments) are allowed. The engine is atheris when it is installed, hypothesis otherwise.

Budget: EDGEPACK_FUZZ_SECONDS per target (default 5 s for a local run; CI sets 60).
A finding is saved under tests/fuzz_regressions/<target>/ (commit it); every saved input is
replayed by test_regressions on every run.
"""

import glob
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
DRIVER = os.path.join(HERE, "_fuzz_targets.py")
SECONDS = float(os.environ.get("EDGEPACK_FUZZ_SECONDS", "5"))
TARGETS = ["load", "onnx", "kernels"]


def _env():
    env = dict(os.environ)
    pkg = os.path.join(os.path.dirname(HERE), "python")
    if os.path.isdir(os.path.join(pkg, "edgepack")) and glob.glob(os.path.join(pkg, "edgepack", "_core*")):
        env["PYTHONPATH"] = pkg + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("EDGEPACK_NUM_THREADS", "2")
    return env


def _run(args, timeout):
    try:
        p = subprocess.run([sys.executable, DRIVER, *args], capture_output=True, text=True, env=_env(),
                           timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"fuzz driver {args} hung (no exit after {timeout} s)\n{e.stdout}\n{e.stderr}")
    return p


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz(target):
    if target == "onnx":
        pytest.importorskip("onnx")
    p = _run([target, "--seconds", str(SECONDS)], timeout=SECONDS * 3 + 120)
    out = p.stdout[-6000:] + p.stderr[-6000:]
    assert p.returncode == 0, f"fuzz target {target} failed (exit {p.returncode}); the input is saved under " \
                              f"tests/fuzz_regressions/{target}/ or, after a hard crash, in the tmp " \
                              f"directory's last-input.bin\n{out}"


REGRESSIONS = sorted(glob.glob(os.path.join(HERE, "fuzz_regressions", "*", "*.bin")))


@pytest.mark.parametrize("path", REGRESSIONS, ids=[os.path.relpath(p, HERE) for p in REGRESSIONS])
def test_regressions(path):
    target = os.path.basename(os.path.dirname(path))
    if target == "onnx":
        pytest.importorskip("onnx")
    p = _run([target, "--replay", path], timeout=120)
    assert p.returncode == 0, p.stdout[-6000:] + p.stderr[-3000:]
