"""edgepack.batch on this machine: the local (worker processes) and threads backends.

Output must be bit-identical to one in-process call over the same data, every input id must
appear exactly once (``verify``), and a killed worker or driver must lose and duplicate nothing.
The Dask and Ray backends are in test_batch_engines.py.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("pyarrow")

import edgepack  # noqa: E402
from edgepack import batch  # noqa: E402
from edgepack.batch import _run  # noqa: E402
from edgepack.batch._shard import FAULT_ENV  # noqa: E402

import _batch_util as U  # noqa: E402

BACKENDS = ("local", "threads")


@pytest.fixture(scope="module")
def text_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("text")
    texts = U.sentences(180, seed=1)
    ids = U.write_text_shards(d / "in", texts, shards=6)
    return d, texts, np.concatenate(ids)


@pytest.fixture(scope="module")
def vec_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("vec")
    x = np.random.default_rng(3).standard_normal((480, 8)).astype(np.float32)
    ids = np.concatenate(U.write_vector_shards(d / "in", x, shards=12))
    return d, x, ids


# ------------------------------------------------------------------------------------------------
# bit-identical to one in-process call


@pytest.mark.parametrize("backend", BACKENDS)
def test_minilm_int8_matches_one_in_process_encode(batch_encoder_file, text_data, backend, tmp_path):
    d, texts, ids = text_data
    ref = edgepack.SentenceEncoder.load(batch_encoder_file).encode(texts, batch_size=32)
    src = batch.ParquetSource(str(d / "in" / "*.parquet"), column="text")
    sink = batch.ParquetSink(str(tmp_path / "out"))
    rep = batch.run(batch_encoder_file, src, sink, backend=backend, workers=2, batch_size=16, progress=False)
    assert (rep.shards, rep.done, rep.skipped, rep.rows, rep.total_rows) == (6, 6, 0, 180, 180)
    got_ids, got = U.read_outputs(sink)
    np.testing.assert_array_equal(got_ids, ids)
    assert got.dtype == np.float32 and got.shape == (180, 384)
    np.testing.assert_array_equal(got, ref)  # bit for bit
    U.check_exactly_once(src, sink, ids)
    # each worker process loaded the model once and ran one kernel thread
    assert {r["threads"] for r in rep.details} == {1}
    if backend == "local":
        assert len({r["pid"] for r in rep.details}) == 2
        assert {r["model_loads"] for r in rep.details} == {1}
    manifest = json.loads(open(rep.manifest).read())
    assert manifest["rows"] == 180 and [s["rows"] for s in manifest["shards"]] == [30] * 6
    assert os.path.exists(os.path.join(sink.directory, "_SUCCESS"))


@pytest.mark.parametrize("fmt", ["parquet", "npy"])
def test_vectors_npy_and_parquet_match_in_process(batch_mlp_file, tmp_path, fmt):
    x = np.random.default_rng(5).standard_normal((100, 8)).astype(np.float32)
    U.write_vector_shards(tmp_path / "in", x, shards=4, fmt=fmt)
    src = (batch.ParquetSource(str(tmp_path / "in" / "*.parquet"), column="x") if fmt == "parquet"
           else batch.NpySource(str(tmp_path / "in" / "*.npy")))
    sink = batch.ParquetSink(str(tmp_path / "out")) if fmt == "npy" else batch.NpySink(str(tmp_path / "out"))
    rep = batch.run(batch_mlp_file, src, sink, workers=2, batch_size=7, progress=False)
    assert rep.rows == 100
    ids, got = U.read_outputs(sink)
    np.testing.assert_array_equal(got, edgepack.load(batch_mlp_file)(x))
    want_ids = 10 * np.arange(100) if fmt == "parquet" else np.arange(100)  # npy: global row numbers
    np.testing.assert_array_equal(ids, want_ids)
    assert batch.verify(src, sink).ok


def test_onnx_model_through_from_onnx(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1, b1 = rng.standard_normal((8, 16)).astype(np.float32), rng.standard_normal(16).astype(np.float32)
    w2, b2 = rng.standard_normal((16, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    from edgepack.graph import registered_ops

    # Relu where the graph runtime has it (the elementwise operators are arriving op family by
    # op family); the model is loaded in each worker through edgepack.from_onnx either way
    act = [helper.make_node("Relu", ["h"], ["r"])] if ("", "Relu") in registered_ops() else \
        [helper.make_node("Identity", ["h"], ["r"])]
    g = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]), *act,
         helper.make_node("Gemm", ["r", "w2", "b2"], ["y"])], "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))])
    path = tmp_path / "mlp.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    x = rng.standard_normal((90, 8)).astype(np.float32)
    U.write_vector_shards(tmp_path / "in", x, shards=3, fmt="npy")
    src, sink = batch.NpySource(str(tmp_path / "in" / "*.npy")), batch.NpySink(str(tmp_path / "out"))
    batch.run(str(path), src, sink, workers=2, batch_size=64, progress=False)
    _, got = U.read_outputs(sink)
    # float32 GEMMs: identical bits for the same batches (BLAS may round a 1-row call differently)
    model = edgepack.from_onnx(str(path))
    want = np.concatenate([model(x[s:s + 30][b:b + 64]) for s in range(0, 90, 30) for b in range(0, 30, 64)])
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got, model(x), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# the contract: tasks, resume, stale files, options


def test_task_carries_at_most_4_kib_whatever_the_model_size(batch_encoder_file, batch_mlp_file, text_data, tmp_path):
    d, _, _ = text_data
    src = batch.ParquetSource(str(d / "in" / "*.parquet"), column="text")
    sink = batch.ParquetSink(str(tmp_path / "out"))
    sizes = {}
    for model in (batch_encoder_file, batch_mlp_file):
        ref = batch.ModelRef.from_path(model)
        tasks = _run.make_tasks(batch.plan(src, sink, ref), ref, src, sink)
        sizes[model] = max(len(pickle.dumps(t, protocol=pickle.HIGHEST_PROTOCOL)) for t in tasks)
        assert len(json.dumps(tasks[0])) <= 4096
    assert os.path.getsize(batch_encoder_file) > 50e6 and max(sizes.values()) <= 4096, sizes
    assert abs(sizes[batch_encoder_file] - sizes[batch_mlp_file]) < 200  # independent of the model's size


def test_resume_skips_committed_shards_and_never_appends(batch_mlp_file, vec_data, tmp_path):
    d, x, ids = vec_data
    src, sink = batch.ParquetSource(str(d / "in" / "*.parquet"), column="x"), batch.ParquetSink(str(tmp_path / "o"))
    first = batch.run(batch_mlp_file, src, sink, workers=2, progress=False)
    assert (first.done, first.skipped) == (12, 0)
    before = {n: os.path.getmtime(os.path.join(sink.directory, n)) for n in os.listdir(sink.directory)
              if n.startswith("part-")}
    # a half-finished state: two outputs lost, the success marker gone
    parts = sorted(before)
    for n in parts[:2]:
        os.unlink(os.path.join(sink.directory, n))
    again = batch.run(batch_mlp_file, src, sink, workers=2, progress=False)
    assert (again.done, again.skipped, again.rows, again.total_rows) == (2, 10, 80, 480)
    for n in parts[2:]:
        assert os.path.getmtime(os.path.join(sink.directory, n)) == before[n]  # not rewritten
    U.check_exactly_once(src, sink, ids)
    # resume=False rewrites every shard under the same names: still no duplicates
    full = batch.run(batch_mlp_file, src, sink, workers=1, resume=False, progress=False)
    assert (full.done, full.skipped) == (12, 0)
    assert sorted(n for n in os.listdir(sink.directory) if n.startswith("part-")) == parts
    U.check_exactly_once(src, sink, ids)


def test_other_runs_part_files_are_refused_or_overwritten(batch_mlp_file, vec_data, tmp_path):
    d, x, ids = vec_data
    src, sink = batch.ParquetSource(str(d / "in" / "*.parquet"), column="x"), batch.ParquetSink(str(tmp_path / "o"))
    batch.run(batch_mlp_file, src, sink, workers=1, progress=False)
    other = tmp_path / "other.edgepack"
    U.tiny_int8_mlp(other, seed=7)  # another model: other shard ids
    with pytest.raises(ValueError, match="part files of another run"):
        batch.run(str(other), src, sink, workers=1, progress=False)
    rep = batch.run(str(other), src, sink, workers=1, overwrite=True, progress=False)
    assert rep.done == 12
    U.check_exactly_once(src, sink, ids)
    _, got = U.read_outputs(sink)
    np.testing.assert_array_equal(got, edgepack.load(str(other))(x))


def test_model_changed_during_run_is_refused(batch_mlp_file, tmp_path):
    path = tmp_path / "m.edgepack"
    U.tiny_int8_mlp(path)
    ref = batch.ModelRef.from_path(path)
    U.tiny_int8_mlp(path, seed=9)
    from edgepack.batch._model import load_runner

    with pytest.raises(ValueError, match="changed since the run started"):
        load_runner(ref)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"backend": "spark"}, ValueError, "backend must be one of"),
    ({"workers": 0}, ValueError, "workers must be a positive integer"),
    ({"on_error": "ignore"}, ValueError, "on_error must be 'raise' or 'skip'"),
    ({"max_retries": -1}, ValueError, "max_retries must be an integer >= 0"),
    ({"workers": 64, "threads_per_worker": 64}, ValueError, "exceeds the .* CPUs"),
    ({"batch_size": 2.5}, ValueError, "batch_size must be a positive integer"),
])
def test_bad_options_name_the_argument(batch_mlp_file, vec_data, tmp_path, kwargs, exc, match):
    d, _, _ = vec_data
    with pytest.raises(exc, match=match):
        batch.run(batch_mlp_file, batch.ParquetSource(str(d / "in" / "*.parquet"), column="x"), str(tmp_path / "o"),
                  progress=False, **kwargs)


def test_bad_model_source_and_column_errors(batch_mlp_file, vec_data, batch_encoder_file, tmp_path):
    d, _, _ = vec_data
    src = batch.ParquetSource(str(d / "in" / "*.parquet"), column="x")
    with pytest.raises(TypeError, match="save it first"):
        batch.run(edgepack.load(batch_mlp_file), src, str(tmp_path / "o"), progress=False)
    with pytest.raises(FileNotFoundError, match="model file not found"):
        batch.run(str(tmp_path / "nope.edgepack"), src, str(tmp_path / "o"), progress=False)
    with pytest.raises(FileNotFoundError, match="no file matches"):
        batch.run(batch_mlp_file, batch.ParquetSource(str(tmp_path / "none-*.parquet")), str(tmp_path / "o"))
    with pytest.raises(ValueError, match=r"column 'text' not found; the file has columns \['id', 'x'\]"):
        batch.run(batch_mlp_file, batch.ParquetSource(str(d / "in" / "*.parquet"), column="text"), str(tmp_path / "o"),
                  progress=False, backend="threads")
    with pytest.raises(TypeError, match="needs a text column; the source gives numbers"):
        batch.run(batch_encoder_file, src, str(tmp_path / "o2"), progress=False, backend="threads")


def test_optional_dependencies_name_their_extra(monkeypatch, batch_mlp_file, vec_data, tmp_path):
    from edgepack.batch import _io

    for mod in ("pyarrow", "pyarrow.parquet", "distributed", "ray"):
        monkeypatch.setitem(sys.modules, mod, None)  # import raises ImportError, as if not installed
    for mod in ("edgepack.batch._dask", "edgepack.batch._ray"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    for mod, extra in (("pyarrow", "batch"), ("distributed", "dask"), ("ray", "ray")):
        with pytest.raises(ModuleNotFoundError, match=rf"pip install 'edgepack\[{extra}\]'"):
            _io.require(mod, extra, "this")
    d, _, _ = vec_data
    with pytest.raises(ModuleNotFoundError, match=r"Parquet shards needs the 'pyarrow' package.*edgepack\[batch\]"):
        batch.run(batch_mlp_file, batch.ParquetSource(str(d / "in" / "*.parquet"), column="x"), str(tmp_path / "o"))
    np.save(tmp_path / "a.npy", np.zeros((3, 8), np.float32))
    src = batch.NpySource(str(tmp_path / "a.npy"))
    for backend, extra in (("ray", "ray"), ("dask", "dask")):
        with pytest.raises(ModuleNotFoundError, match=rf"edgepack\[{extra}\]"):
            batch.run(batch_mlp_file, src, batch.NpySink(str(tmp_path / "o")), backend=backend, progress=False,
                      scheduler="tcp://127.0.0.1:1")


# ------------------------------------------------------------------------------------------------
# bad rows


def _poison_text_shards(directory, texts):
    """Six shards; shard 2 has a null at row 3 and invalid UTF-8 at row 7 (text nothing can tokenize)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = U.write_text_shards(directory, texts, shards=6)
    rows = pq.read_table(os.path.join(directory, "shard-002.parquet")).to_pydict()
    enc = [t.encode() for t in rows["text"]]
    enc[7] = b"caf\xe9 \xff broken"
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in enc])]).astype(np.int32)
    valid = np.ones(len(enc), bool)
    valid[3] = False
    mask = pa.py_buffer(np.packbits(valid, bitorder="little").tobytes())
    col = pa.Array.from_buffers(pa.string(), len(enc), [mask, pa.py_buffer(offsets.tobytes()),
                                                        pa.py_buffer(b"".join(enc))])
    pq.write_table(pa.table({"id": rows["id"], "text": col}), os.path.join(directory, "shard-002.parquet"))
    return np.concatenate(ids), ids[2][[3, 7]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_poison_text_row_raises_naming_shard_and_row(batch_encoder_file, tmp_path, backend):
    texts = U.sentences(120, seed=4)
    _poison_text_shards(tmp_path / "in", texts)
    src = batch.ParquetSource(str(tmp_path / "in" / "*.parquet"), column="text")
    with pytest.raises(batch.ShardError) as ei:
        batch.run(batch_encoder_file, src, str(tmp_path / "out"), backend=backend, workers=2, progress=False)
    e = ei.value
    assert e.shard == 2 and e.path.endswith("shard-002.parquet") and e.row == 3
    assert "shard 2" in str(e) and "row 3" in str(e) and "null text" in str(e)
    assert not os.path.exists(tmp_path / "out" / "_SUCCESS") and not U.leftovers(tmp_path / "out")
    assert not any(n.startswith("part-000002") for n in os.listdir(tmp_path / "out"))


def test_poison_rows_skipped_into_errors_file(batch_encoder_file, tmp_path):
    texts = U.sentences(120, seed=4)
    all_ids, bad_ids = _poison_text_shards(tmp_path / "in", texts)
    src = batch.ParquetSource(str(tmp_path / "in" / "*.parquet"), column="text")
    sink = batch.ParquetSink(str(tmp_path / "out"))
    rep = batch.run(batch_encoder_file, src, sink, workers=2, on_error="skip", progress=False)
    assert (rep.rows, rep.errors, rep.total_rows) == (118, 2, 118)
    errs = [n for n in os.listdir(sink.directory) if n.endswith(".errors.jsonl")]
    assert len(errs) == 1 and errs[0].startswith("part-000002")
    lines = [json.loads(s) for s in open(os.path.join(sink.directory, errs[0]))]
    assert [(r["row"], r["id"]) for r in lines] == [(3, int(bad_ids[0])), (7, int(bad_ids[1]))]
    assert "null text" in lines[0]["error"] and "UTF-8" in lines[1]["error"]
    v = batch.verify(src, sink)
    assert v.ok and v.error_rows == 2 and v.output_rows == 118, str(v)
    # the good rows are exactly what encode gives them
    ids, got = U.read_outputs(sink)
    keep = ~np.isin(all_ids, bad_ids)
    np.testing.assert_array_equal(ids, all_ids[keep])
    ref = edgepack.SentenceEncoder.load(batch_encoder_file).encode([t for t, k in zip(texts, keep) if k])
    np.testing.assert_array_equal(got, ref)
    # a rerun skips everything, errors included
    assert batch.run(batch_encoder_file, src, sink, on_error="skip", progress=False).skipped == 6


def test_text_the_tokenizer_rejects(batch_encoder_file, tmp_path):
    # a lone surrogate: a valid numpy unicode string that no UTF-8 tokenizer accepts
    (tmp_path / "in").mkdir()
    texts = np.array(U.sentences(20, seed=2) + ["bad \ud800 text"] + U.sentences(5, seed=3))
    np.save(tmp_path / "in" / "a.npy", texts)
    src, sink = batch.NpySource(str(tmp_path / "in" / "*.npy")), batch.NpySink(str(tmp_path / "out"))
    with pytest.raises(batch.ShardError, match=r"shard 0 .*row 20 .*tokenizer rejects"):
        batch.run(batch_encoder_file, src, sink, backend="threads", progress=False)
    rep = batch.run(batch_encoder_file, src, sink, backend="threads", on_error="skip", progress=False)
    assert (rep.rows, rep.errors) == (25, 1) and batch.verify(src, sink).ok


def test_poison_vectors_null_wrong_length_nan(batch_mlp_file, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "in").mkdir()
    rows = [list(map(float, r)) for r in np.random.default_rng(1).standard_normal((40, 8)).astype(np.float32)]
    rows[5] = None
    rows[9] = rows[9][:5]
    rows[30][2] = float("nan")
    pq.write_table(pa.table({"id": np.arange(40), "x": pa.array(rows, pa.list_(pa.float32()))}),
                   tmp_path / "in" / "a.parquet")
    src = batch.ParquetSource(str(tmp_path / "in" / "*.parquet"), column="x")
    with pytest.raises(batch.ShardError, match=r"row 5 .*null row"):
        batch.run(batch_mlp_file, src, str(tmp_path / "o1"), workers=1, progress=False)
    rep = batch.run(batch_mlp_file, src, str(tmp_path / "o2"), workers=1, batch_size=16, on_error="skip", progress=False)
    errs = [json.loads(s) for s in open(next((tmp_path / "o2").glob("*.errors.jsonl")))]
    assert [e["row"] for e in errs] == [5, 9, 30] and "expected 8" in errs[1]["error"]
    assert "finite" in errs[2]["error"] and rep.rows == 37


# ------------------------------------------------------------------------------------------------
# faults: a worker SIGKILLed at a random moment, the driver SIGKILLed at ~50%


@pytest.mark.slow
def test_local_worker_killed_10_times_loses_and_duplicates_nothing(batch_mlp_file, vec_data, tmp_path, monkeypatch):
    d, x, ids = vec_data
    fault = str(tmp_path / "fault.json")
    monkeypatch.setenv(FAULT_ENV, fault)
    src = batch.ParquetSource(str(d / "in" / "*.parquet"), column="x")
    want = edgepack.load(batch_mlp_file)(x)
    rng = random.Random(15)
    for i in range(10):
        sink = batch.ParquetSink(str(tmp_path / f"o{i}"))
        if i % 2:  # a timer: any moment of the run
            U.disarm(fault)
            killer = U.kill_later(lambda: U.worker_pids("edgepack.batch._worker"), rng.uniform(0.3, 1.5))
            marker = None
        else:  # a named point of a random shard: mid-shard, between writing and renaming, ...
            marker = U.arm_fault(fault, str(tmp_path), rng.randrange(12), rng.choice(U.POINTS))
        rep = batch.run(batch_mlp_file, src, sink, workers=2, batch_size=8, progress=False)
        if marker is not None:
            assert os.path.exists(marker) and rep.retried == 1
        else:
            killer.join()
        U.check_exactly_once(src, sink, ids)
        np.testing.assert_array_equal(U.read_outputs(sink)[1], want)
    U.disarm(fault)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_driver_killed_at_half_then_rerun_skips_committed(batch_mlp_file, tmp_path, backend):
    x = np.random.default_rng(8).standard_normal((480, 8)).astype(np.float32)
    ids = np.concatenate(U.write_vector_shards(tmp_path / "in", x, shards=24))
    src = batch.ParquetSource(str(tmp_path / "in" / "*.parquet"), column="x")
    want = edgepack.load(batch_mlp_file)(x)
    for i in range(10):
        sink = batch.ParquetSink(str(tmp_path / f"o{i}"))
        U.kill_driver_at_half_and_rerun(U.driver_cmd(batch_mlp_file, src.path, sink.path, backend), src, sink, 24, 480,
                                      {"model": batch_mlp_file, "backend": backend, "workers": 2})
        U.check_exactly_once(src, sink, ids)
        np.testing.assert_array_equal(U.read_outputs(sink)[1], want)
    # no orphan outlives its driver (one still starting when the driver died exits once it runs)
    assert U.wait_until(lambda: not U.worker_pids("edgepack.batch._worker"), 60)


# ------------------------------------------------------------------------------------------------
# CLI


def test_cli_batch_runs_and_verifies(batch_mlp_file, vec_data, tmp_path):
    d, _, ids = vec_data
    out = tmp_path / "cli"
    r = subprocess.run(U.driver_cmd(batch_mlp_file, str(d / "in" / "*.parquet"), str(out), "local", ("--verify",)),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "12 shards done" in r.stdout and "OK: 480 input rows, 480 output rows" in r.stdout
    r = subprocess.run(U.driver_cmd(batch_mlp_file, str(d / "in" / "*.parquet"), str(out), "dask"),
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--backend dask needs --scheduler" in r.stderr and "Traceback" not in r.stderr
