"""Data, models and fault helpers shared by the edgepack.batch tests."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time

import numpy as np

import edgepack
from edgepack import batch, nn

WORDS = ("the quick brown fox jumps over a lazy dog while small models run fast on low power devices "
         "with integer arithmetic and careful memory layouts for every layer").split()


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 30)))).capitalize() + "." for _ in range(n)]


def write_text_shards(directory, texts: list[str], shards: int, start_id: int = 1000) -> list[np.ndarray]:
    """Parquet shards with columns id (int64) and text; returns the ids per shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(directory, exist_ok=True)
    out = []
    for i, part in enumerate(np.array_split(np.arange(len(texts)), shards)):
        ids = start_id + part.astype(np.int64)
        pq.write_table(pa.table({"id": ids, "text": [texts[j] for j in part]}),
                       os.path.join(directory, f"shard-{i:03d}.parquet"))
        out.append(ids)
    return out


def write_vector_shards(directory, x: np.ndarray, shards: int, fmt: str = "parquet") -> list[np.ndarray]:
    """x [n, k] float32 as Parquet fixed-size-list shards (id, x) or .npy shards; ids = 10 * row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(directory, exist_ok=True)
    out = []
    for i, part in enumerate(np.array_split(np.arange(len(x)), shards)):
        ids = 10 * part.astype(np.int64)
        if fmt == "parquet":
            col = pa.FixedSizeListArray.from_arrays(pa.array(x[part].reshape(-1)), x.shape[1])
            pq.write_table(pa.table({"id": ids, "x": col}), os.path.join(directory, f"shard-{i:03d}.parquet"))
        else:
            np.save(os.path.join(directory, f"shard-{i:03d}.npy"), x[part])
        out.append(ids)
    return out


def tiny_int8_mlp(path, k: int = 8, seed: int = 0):
    """A small int8 MLP (k -> 16 -> 4), saved; int8 layers give the same bits for any batch split."""
    nn.seed(seed)
    model = edgepack.quantize(nn.Sequential(nn.Linear(k, 16), nn.ReLU(), nn.Linear(16, 4)))
    edgepack.save(model, path)
    return model


def read_outputs(sink) -> tuple[np.ndarray, np.ndarray]:
    """(ids, values) of every part file of a sink, in shard order."""
    ids, vals = [], []
    for name in sorted(os.listdir(sink.directory)):
        if name.startswith("part-") and name.endswith(sink.ext) and not name.endswith(".ids.npy"):
            p = os.path.join(sink.directory, name)
            ids.append(sink.read_ids(p))
            vals.append(sink.read_values(p))
    return np.concatenate(ids), np.concatenate(vals)


def leftovers(directory) -> list[str]:
    return [n for n in os.listdir(directory) if n.startswith(".tmp-")]


# -- faults ---------------------------------------------------------------------------------------

POINTS = ("start", "mid", "write", "done")


def arm_fault(fault_file, marker_dir, shard: int, point: str) -> str:
    """Make the first worker reaching ``point`` of ``shard`` SIGKILL itself (see _shard.fault_point)."""
    marker = os.path.join(marker_dir, f"fired-{time.monotonic_ns()}")
    tmp = f"{fault_file}.tmp"
    with open(tmp, "w") as f:
        json.dump({"shard": shard, "point": point, "marker": marker}, f)
    os.replace(tmp, fault_file)
    return marker


def disarm(fault_file) -> None:
    try:
        os.unlink(fault_file)
    except FileNotFoundError:
        pass


def worker_pids(pattern: str) -> list[int]:
    """Processes whose command line contains ``pattern`` (children of this test run)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if pattern in cmd:
            out.append(int(d))
    return out


def kill_later(pids_fn, delay: float) -> threading.Thread:
    """SIGKILL one random worker after ``delay`` seconds (if any is alive then)."""
    def go():
        time.sleep(delay)
        pids = pids_fn()
        if pids:
            try:
                os.kill(random.choice(pids), signal.SIGKILL)
            except ProcessLookupError:
                pass

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


def check_exactly_once(source, sink, expect_ids: np.ndarray) -> None:
    v = batch.verify(source, sink)
    assert v.ok, str(v)
    ids, _ = read_outputs(sink)
    assert len(ids) == len(expect_ids) and set(ids.tolist()) == set(expect_ids.tolist())
    assert not leftovers(sink.directory)
