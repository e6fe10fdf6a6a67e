"""edgepack.batch on Dask (a LocalCluster standing in for a real cluster) and Ray (a local Ray).

Same claims as test_batch.py: output bit-identical to one in-process call, every input id
exactly once, a worker SIGKILLed at a random moment or the driver SIGKILLed at ~50% loses and
duplicates nothing.  One Dask cluster for the module, Ray started once per session (conftest).
"""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

pytest.importorskip("pyarrow")

import edgepack  # noqa: E402
from edgepack import batch  # noqa: E402

import _batch_util as U  # noqa: E402

ENGINES = ("dask", "ray")


@pytest.fixture(scope="module")
def engine(request):
    """Returns a function: name -> (backend argument, scheduler address, pattern of worker processes)."""

    def get(name):
        if name == "dask":
            client = request.getfixturevalue("dask_cluster").ready()
            return client, client.scheduler.address, None
        addr = request.getfixturevalue("ray_cluster")
        return "ray", addr, "ray::ShardActor"

    return get


def _worker_pids(name):
    # workers that are up and running shards, not ones still being started by their nanny/raylet
    if name == "dask":  # the LocalCluster's nannies (in this process) spawn the worker processes
        return U.worker_pids("multiprocessing.spawn", parent=os.getpid(), min_age=3.0)
    return U.worker_pids("ray::ShardActor", min_age=3.0)


@pytest.fixture(scope="module")
def vec_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("vec")
    x = np.random.default_rng(3).standard_normal((480, 8)).astype(np.float32)
    ids = np.concatenate(U.write_vector_shards(d / "in", x, shards=24))
    return d, x, ids


@pytest.mark.parametrize("name", ENGINES)
def test_minilm_int8_bit_identical_to_in_process_encode(engine, name, batch_encoder_file, tmp_path):
    backend, addr, _ = engine(name)
    texts = U.sentences(144, seed=11)
    ids = np.concatenate(U.write_text_shards(tmp_path / "in", texts, shards=6))
    src = batch.ParquetSource(str(tmp_path / "in" / "*.parquet"), column="text")
    sink = batch.ParquetSink(str(tmp_path / "out"))
    rep = batch.run(batch_encoder_file, src, sink, backend=backend, scheduler=addr, batch_size=16, progress=False)
    assert (rep.done, rep.rows, rep.retried) == (6, 144, 0) and rep.workers == 2
    got_ids, got = U.read_outputs(sink)
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_array_equal(got, edgepack.SentenceEncoder.load(batch_encoder_file).encode(texts))
    U.check_exactly_once(src, sink, ids)
    # every worker ran one kernel thread and loaded the model once
    assert {r["threads"] for r in rep.details} == {1}
    assert {r["model_loads"] for r in rep.details} == {1}


@pytest.mark.parametrize("name", ENGINES)
def test_poison_row_fails_fast_naming_shard_or_is_skipped(engine, name, batch_mlp_file, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    backend, addr, _ = engine(name)
    x = np.random.default_rng(2).standard_normal((240, 8)).astype(np.float32)
    U.write_vector_shards(tmp_path / "in", x, shards=12)
    rows = [list(map(float, r)) for r in x[:20]]
    rows[6] = None  # a null row in shard 0
    pq.write_table(pa.table({"id": 10 * np.arange(20), "x": pa.array(rows, pa.list_(pa.float32()))}),
                   tmp_path / "in" / "shard-000.parquet")
    src = batch.ParquetSource(str(tmp_path / "in" / "*.parquet"), column="x")
    with pytest.raises(batch.ShardError, match=r"shard 0 .*shard-000.parquet.*row 6 .*null row"):
        batch.run(batch_mlp_file, src, str(tmp_path / "o1"), backend=backend, scheduler=addr, workers=1,
                  progress=False)
    # it stopped at the bad shard: the run did not go on through the other eleven
    assert sum(n.endswith(".parquet") for n in os.listdir(tmp_path / "o1")) < 11
    rep = batch.run(batch_mlp_file, src, str(tmp_path / "o2"), backend=backend, scheduler=addr, on_error="skip",
                    progress=False)
    assert (rep.rows, rep.errors) == (239, 1)
    assert batch.verify(src, str(tmp_path / "o2")).ok


@pytest.mark.slow
@pytest.mark.parametrize("name", ENGINES)
def test_worker_killed_10_times_loses_and_duplicates_nothing(engine, name, batch_mlp_file, vec_data, tmp_path,
                                                             batch_fault_file):
    backend, addr, _ = engine(name)
    d, x, ids = vec_data
    src = batch.ParquetSource(str(d / "in" / "*.parquet"), column="x")
    want = edgepack.load(batch_mlp_file)(x)
    rng = random.Random(15)
    for i in range(10):
        if name == "dask":  # both workers up (see conftest._DaskCluster)
            backend, addr, _ = engine(name)
        sink = batch.ParquetSink(str(tmp_path / f"o{i}"))
        if i % 2:  # a timer: whatever the worker is doing then
            U.disarm(batch_fault_file)
            killer = U.kill_later(lambda: _worker_pids(name), rng.uniform(0.05, 0.6))
            marker = None
        else:  # a named point of a random shard, mid-shard and between write and rename included
            marker = U.arm_fault(batch_fault_file, str(tmp_path), rng.randrange(24), rng.choice(U.POINTS))
        rep = batch.run(batch_mlp_file, src, sink, backend=backend, scheduler=addr, batch_size=8, progress=False)
        if marker is not None:
            assert os.path.exists(marker) and rep.retried >= 1
        else:
            killer.join()
        U.check_exactly_once(src, sink, ids)
        np.testing.assert_array_equal(U.read_outputs(sink)[1], want)
    U.disarm(batch_fault_file)


@pytest.mark.slow
@pytest.mark.parametrize("name", ENGINES)
def test_driver_killed_at_half_then_rerun_skips_committed(engine, name, batch_mlp_file, vec_data, tmp_path):
    backend, addr, _ = engine(name)
    d, x, ids = vec_data
    src = batch.ParquetSource(str(d / "in" / "*.parquet"), column="x")
    want = edgepack.load(batch_mlp_file)(x)
    for i in range(10):
        sink = batch.ParquetSink(str(tmp_path / f"o{i}"))
        cmd = U.driver_cmd(batch_mlp_file, src.path, sink.path, name, ("--scheduler", addr))
        U.kill_driver_at_half_and_rerun(cmd, src, sink, 24, 480,
                                        {"model": batch_mlp_file, "backend": backend, "scheduler": addr})
        U.check_exactly_once(src, sink, ids)
        np.testing.assert_array_equal(U.read_outputs(sink)[1], want)
