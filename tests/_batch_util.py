"""Data, models and fault helpers shared by the edgepack.batch tests."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
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


def _age(pid: str) -> float:
    """Seconds since process ``pid`` started."""
    with open(f"/proc/{pid}/stat") as f:
        start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def worker_pids(pattern: str, parent: int | None = None, min_age: float = 0.0) -> list[int]:
    """Processes whose command line contains ``pattern`` (and whose parent is ``parent``), running
    for at least ``min_age`` seconds."""
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
            if parent is not None:
                try:
                    with open(f"/proc/{d}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                if ppid != parent:
                    continue
            try:
                if min_age and _age(d) < min_age:
                    continue
            except (OSError, ValueError, IndexError):
                continue
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


def driver_cmd(model, src_glob, out, backend, extra=()):
    return [sys.executable, "-m", "edgepack", "batch", model, "--input", src_glob, "--column", "x",
            "--output", out, "--backend", backend, "--workers", "2", "--batch-size", "4", "--no-progress", *extra]


def kill_driver_at_half_and_rerun(cmd, src, sink, total_shards, total_rows, run_kwargs):
    """Start the driver (a CLI process), SIGKILL it once half the shards are committed, rerun
    in-process: the committed shards must be skipped and the row count come out exact."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if os.path.isdir(sink.directory):
            done = sum(n.startswith("part-") and n.endswith(".parquet") for n in os.listdir(sink.directory))
            if done >= total_shards // 2:
                break
        time.sleep(0.005)
    proc.kill()
    _, err = proc.communicate()
    assert done >= total_shards // 2, f"driver ended before half the shards were done: {err.decode()[-2000:]}"
    kw = dict(run_kwargs)
    rep = batch.run(kw.pop("model"), src, sink, progress=False, **kw)
    assert rep.skipped >= done and rep.done + rep.skipped == total_shards
    assert rep.total_rows == total_rows
    return rep


def wait_until(cond, seconds: float) -> bool:
    """Poll ``cond()`` every 50 ms for up to ``seconds``; its last value."""
    end = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > end:
            return cond()
        time.sleep(0.05)
    return True
