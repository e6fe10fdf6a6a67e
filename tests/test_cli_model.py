"""`edgepack info` and `edgepack eval`: output and exit codes (2 + one line for every expected error)."""

import os
import subprocess
import sys

import numpy as np
import pytest

import edgepack
from edgepack import nn
from edgepack.cli import main

# The directory the imported package lives in (the source tree after a dev build, site-packages
# after `pip install .`), so the child process runs the same build as this one.
PYTHON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(edgepack.__file__)))


@pytest.fixture
def files(tmp_path):
    # Linear(eye) on one-hot rows predicts the row's hot index, so accuracy is known exactly.
    model = nn.Sequential(nn.Linear.from_weights(np.eye(4, dtype=np.float32), np.zeros(4, np.float32)),
                          nn.ReLU())
    ids = np.array([0, 1, 2, 3, 2, 1, 0, 3])
    x = np.eye(4, dtype=np.float32)[ids]
    y = ids.copy()
    y[:2] = (y[:2] + 1) % 4  # two wrong labels -> 6/8
    p = {k: tmp_path / k for k in ("m.edgepack", "x.npy", "y.npy")}
    edgepack.save(model, p["m.edgepack"], metadata={"input_shape": [2, 4]})
    np.save(p["x.npy"], x)
    np.save(p["y.npy"], y)
    return {k: str(v) for k, v in p.items()} | {"dir": tmp_path}


def test_eval_prints_accuracy(files, capsys):
    rc = main(["eval", files["m.edgepack"], "--data", files["x.npy"], "--labels", files["y.npy"],
               "--batch-size", "3"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "top-1 accuracy: 0.7500 (6/8)" in out


def test_eval_one_hot_labels_and_float64_data(files, capsys):
    d = files["dir"]
    np.save(d / "x64.npy", np.load(files["x.npy"]).astype(np.float64))
    np.save(d / "yoh.npy", np.eye(4)[np.load(files["y.npy"])])
    assert main(["eval", files["m.edgepack"], "--data", str(d / "x64.npy"), "--labels", str(d / "yoh.npy")]) == 0
    assert "(6/8)" in capsys.readouterr().out


def test_info_prints_summary(files, capsys):
    assert main(["info", files["m.edgepack"]]) == 0
    out = capsys.readouterr().out
    assert "format version 1" in out and "20 parameters" in out
    assert "Linear" in out and "(2, 4)" in out and "numpy f32" in out
    assert main(["info", files["m.edgepack"], "--input-shape", "5,4"]) == 0
    assert "(5, 4)" in capsys.readouterr().out


def _bad_cases(files):
    d = files["dir"]
    (d / "corrupt.edgepack").write_bytes(open(files["m.edgepack"], "rb").read()[:-7])
    (d / "junk.npy").write_bytes(b"not numpy at all")
    np.save(d / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(d / "short.npy", np.zeros(3, np.int64))
    np.save(d / "wide.npy", np.zeros((8, 5), np.float32))
    m, x, y = files["m.edgepack"], files["x.npy"], files["y.npy"]
    return [
        (["info", str(d / "missing.edgepack")], "no such file|No such file"),
        (["info", str(d / "corrupt.edgepack")], "truncated"),
        (["info", m, "--input-shape", "a,b"], "--input-shape"),
        (["info", m, "--input-shape", "2,7"], "cannot run the model"),
        (["info"], "required: model"),
        (["info", m, "--bogus"], "unrecognized arguments"),
        (["eval", m, "--data", x], "--labels"),
        (["eval", m, "--data", str(d / "nope.npy"), "--labels", y], "--data .*no such file"),
        (["eval", m, "--data", str(d / "junk.npy"), "--labels", y], "not a readable .npy"),
        (["eval", m, "--data", str(d / "obj.npy"), "--labels", y], "not a readable .npy"),
        (["eval", m, "--data", x, "--labels", str(d / "short.npy")], "8 rows but --labels has 3"),
        (["eval", m, "--data", str(d / "wide.npy"), "--labels", y], "cannot run on --data"),
        (["eval", m, "--data", x, "--labels", y, "--batch-size", "0"], "--batch-size"),
        (["eval", m, "--data", x, "--labels", y, "--batch-size", "x"], "invalid int value"),
        (["eval", str(d / "corrupt.edgepack"), "--data", x, "--labels", y], "truncated"),
    ]


def test_expected_errors_exit_2_one_line(files, capsys):
    for argv, msg in _bad_cases(files):
        rc = main(argv)
        cap = capsys.readouterr()
        err = cap.err.strip()
        assert rc == 2, (argv, cap)
        assert len(err.splitlines()) == 1 and err.startswith(f"edgepack {argv[0]}: error:"), (argv, err)
        assert "Traceback" not in err
        import re
        assert re.search(msg, err), (argv, err)


def test_help_exits_0(capsys):
    assert main(["eval", "--help"]) == 0
    assert "--labels" in capsys.readouterr().out


def test_subprocess_exit_code(files):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(PYTHON_DIR))
    r = subprocess.run([sys.executable, "-m", "edgepack", "info", str(files["dir"] / "missing.edgepack")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "edgepack", "eval", files["m.edgepack"], "--data",
                        files["x.npy"], "--labels", files["y.npy"]], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0 and "0.7500" in r.stdout
