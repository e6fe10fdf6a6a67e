"""`edgepack quantize` and `edgepack bench MODEL`: outputs, files, and exit status 2 + one line for
every expected error."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import edgepack
from edgepack import nn
from edgepack.cli import main
from edgepack.io import read_header
from edgepack.nn.quantized import QConv2d, QLinear
from edgepack.ptq import to_float

# The directory the imported package lives in (the source tree after a dev build, site-packages
# after `pip install .`), so the child process runs the same build as this one.
PYTHON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(edgepack.__file__)))


@pytest.fixture
def files(tmp_path):
    nn.seed(7)
    mlp = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 5))
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 3))
    rng = np.random.default_rng(0)
    names = ("mlp.ep", "cnn.ep", "x.npy", "img.npy", "q.ep", "bad.npy", "int.npy", "str.npy")
    p = {k: str(tmp_path / k) for k in names}
    edgepack.save(mlp, p["mlp.ep"], metadata={"input_shape": [1, 12], "note": "kept"})
    edgepack.save(cnn, p["cnn.ep"])
    np.save(p["x.npy"], rng.standard_normal((64, 12)).astype(np.float32))
    np.save(p["img.npy"], rng.standard_normal((20, 1, 4, 4)).astype(np.float32))
    np.save(p["int.npy"], np.arange(12).reshape(1, 12))
    np.save(p["str.npy"], np.array([["a", "b"]]))
    with open(p["bad.npy"], "wb") as f:
        f.write(b"not an array")
    return p | {"dir": tmp_path, "mlp": mlp, "cnn": cnn}


def test_quantize_dynamic_by_default(files, capsys):
    rc = main(["quantize", files["mlp.ep"], "-o", files["q.ep"]])
    out = capsys.readouterr().out
    assert rc == 0
    assert "activations dynamic" in out and "wrote" in out and "smaller than" in out
    q = edgepack.load(files["q.ep"])
    assert [type(layer) for layer in q.layers] == [QLinear, nn.Identity, QLinear]
    assert q.layers[0].activations == "dynamic"
    meta = read_header(files["q.ep"])["metadata"]
    assert meta["input_shape"] == [1, 12] and meta["note"] == "kept"
    assert meta["quantization"]["activations"] == "dynamic" and "method" not in meta["quantization"]


def test_quantize_static_with_calibration_matches_the_api(files, capsys):
    rc = main(["quantize", files["cnn.ep"], "-o", files["q.ep"], "--calibration", files["img.npy"],
               "--method", "mse", "--weights", "per_tensor"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "activations static (mse)" in out and "model output SQNR" in out
    q = edgepack.load(files["q.ep"])
    want = edgepack.quantize(files["cnn"], np.load(files["img.npy"]), activations="static", method="mse",
                             weights="per_tensor")
    x = np.load(files["img.npy"])
    assert np.array_equal(q(x), want(x))
    assert isinstance(q.layers[0], QConv2d) and q.layers[0].weights == "per_tensor"


def test_quantize_skip_and_keep_float(files, capsys):
    rc = main(["quantize", files["mlp.ep"], "-o", files["q.ep"], "--calibration", files["x.npy"],
               "--activations", "dynamic", "--skip", "2", "--keep-float-below-db", "1000"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "float (skip)" in out and "float (sqnr)" in out
    q = edgepack.load(files["q.ep"])
    assert [type(layer) for layer in q.layers] == [nn.Linear, nn.ReLU, nn.Linear]


@pytest.mark.parametrize("args, match", [
    (["quantize", "{mlp.ep}"], "-o/--output"),
    (["quantize", "{mlp.ep}", "-o", "{q.ep}", "--activations", "static"], "--calibration"),
    (["quantize", "{mlp.ep}", "-o", "{q.ep}", "--method", "kl"], "--method"),
    (["quantize", "{mlp.ep}", "-o", "{q.ep}", "--keep-float-below-db", "20"], "--calibration"),
    (["quantize", "{mlp.ep}", "-o", "{q.ep}", "--calibration", "{bad.npy}"], "--calibration"),
    (["quantize", "{mlp.ep}", "-o", "{q.ep}", "--calibration", "{int.npy}"], "--calibration"),
    (["quantize", "{mlp.ep}", "-o", "{q.ep}", "--calibration", "{img.npy}"], "cannot quantize"),
    (["quantize", "{mlp.ep}", "-o", "{q.ep}", "--calibration", "{str.npy}"], "--calibration"),
    (["quantize", "{mlp.ep}", "-o", "{q.ep}", "--skip", "nope"], "skip"),
    (["quantize", "{dir}/missing.ep", "-o", "{q.ep}"], "missing.ep"),
    (["quantize", "{x.npy}", "-o", "{q.ep}"], ""),
    (["bench", "{mlp.ep}", "--batch", "0"], "--batch"),
    (["bench", "{mlp.ep}", "--batch", "a,b"], "--batch"),
    (["bench", "{cnn.ep}"], "--input-shape"),
    (["bench", "{mlp.ep}", "--float", "{mlp.ep}"], "--float"),
    (["bench", "{mlp.ep}", "--input-shape", "1,13"], "cannot run"),
    (["bench", "{mlp.ep}", "--threads", "0"], "--threads"),
    (["bench", "{dir}/missing.ep"], "missing.ep"),
])
def test_errors_are_one_line_exit_2(files, capsys, args, match):
    argv = []
    for a in args:
        for k, v in files.items():
            a = a.replace("{" + k + "}", str(v))
        argv.append(a)
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith(f"edgepack {argv[0]}: error:"), err
    assert match in err
    assert not os.path.exists(files["q.ep"])


def test_quantize_embedding_model_with_integer_calibration(tmp_path, capsys):
    nn.seed(1)
    m = nn.Sequential(nn.Embedding(20, 8), nn.Linear(8, 4))
    ids = np.random.default_rng(0).integers(0, 20, (16, 5))
    src, dst, cal = (str(tmp_path / n) for n in ("e.ep", "eq.ep", "ids.npy"))
    edgepack.save(m, src)
    np.save(cal, ids)
    assert main(["quantize", src, "-o", dst, "--calibration", cal]) == 0
    q = edgepack.load(dst)
    assert isinstance(q.layers[1], QLinear) and q.layers[1].activations == "static"
    assert np.abs(q(ids) - m(ids)).max() < 0.05 * np.abs(m(ids)).max()


def test_bench_float_model(files, capsys):
    rc = main(["bench", files["mlp.ep"], "--batch", "1,7", "--rounds", "1", "--min-time", "0.001"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "int8: quantize(MODEL) (dynamic)" in out
    lines = out.strip().splitlines()
    assert lines[1].split()[0] == "batch"
    assert [line.split()[0] for line in lines[2:]] == ["1", "7"]
    assert all(line.endswith("x") for line in lines[2:])


def test_bench_int8_model_against_twin_and_given_float(files, capsys):
    assert main(["quantize", files["cnn.ep"], "-o", files["q.ep"], "--calibration", files["img.npy"]]) == 0
    capsys.readouterr()
    rc = main(["bench", files["q.ep"], "--data", files["img.npy"], "--batch", "3", "--rounds", "1",
               "--min-time", "0.001"])
    out = capsys.readouterr().out
    assert rc == 0 and "dequantized twin" in out
    rc = main(["bench", files["q.ep"], "--float", files["cnn.ep"], "--input-shape", "1,1,4,4", "--batch", "2",
               "--rounds", "1", "--min-time", "0.001", "--threads", "1"])
    out = capsys.readouterr().out
    assert rc == 0 and f"float: {files['cnn.ep']}" in out and "1 edgepack threads" in out


def test_to_float_twin_matches_dequantized_weights(files):
    x = np.load(files["img.npy"])
    q = edgepack.quantize(files["cnn"], x, activations="static")
    f = to_float(q)
    assert [type(layer) for layer in f.layers] == [nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Linear]
    assert np.array_equal(f.layers[0].weight, q.layers[0].dequantized_weight())
    # float twin of int8 weights is close to the original float model (weights rounded only)
    ref = files["cnn"](x)
    assert np.abs(f(x) - ref).max() < 0.05 * np.abs(ref).max()
    assert isinstance(q.layers[0], QConv2d)  # input untouched


def test_subprocess_exit_codes(files):
    env = dict(os.environ, PYTHONPATH=PYTHON_DIR)
    r = subprocess.run([sys.executable, "-m", "edgepack", "quantize", files["mlp.ep"], "-o", files["q.ep"],
                        "--calibration", files["x.npy"], "--method", "percentile"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "activations static (percentile)" in r.stdout
    assert json.loads(json.dumps(read_header(files["q.ep"])["metadata"]))["quantization"]["method"] == "percentile"
    r = subprocess.run([sys.executable, "-m", "edgepack", "bench", os.path.join(str(files["dir"]), "nope.ep")],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
