"""The local backend: worker processes on this machine, one shard at a time each.

Why not ``concurrent.futures.ProcessPoolExecutor``: one dead child breaks the whole pool, and
every shard in flight on the healthy children fails with it; here each worker has its own pipes,
so a dead worker (its result pipe reaches EOF) costs only its own shard, which is retried on a
replacement process while the others keep going.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import deque
from multiprocessing.connection import wait

from ._model import ModelRef

__all__ = ["run_local", "worker_env"]

_PKG_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def worker_env(threads: int) -> dict:
    """The environment of a worker process: its thread share, for every library in it."""
    env = dict(os.environ)
    for var in ("EDGEPACK_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    # the Rust tokenizer would start its own pool per process (and warns about forks)
    env["TOKENIZERS_PARALLELISM"] = "false"
    # the worker imports this same edgepack, wherever it was imported from
    env["PYTHONPATH"] = os.pathsep.join([_PKG_PARENT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


class _Worker:
    def __init__(self, ref: ModelRef, threads: int, env: dict):
        task_r, task_w = os.pipe()
        res_r, res_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edgepack.batch._worker", str(task_r), str(res_w)],
                pass_fds=(task_r, res_w), env=env, stdin=subprocess.DEVNULL)
        finally:
            os.close(task_r)
            os.close(res_w)
        self.tx, self.rx = task_w, res_r
        self.buf = b""
        self.task = None
        self._send({"init": {"model": ref.to_dict(), "threads": threads}})

    def _send(self, msg: dict) -> None:
        data = (json.dumps(msg) + "\n").encode()
        while data:
            data = data[os.write(self.tx, data):]

    def assign(self, task: dict) -> None:
        self.task = task
        self._send(task)

    def read(self) -> list[dict] | None:
        """Complete messages received so far; None once the worker is gone (EOF)."""
        data = os.read(self.rx, 1 << 16)
        if not data:
            return None
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        return [json.loads(line) for line in lines if line]

    def close(self, kill: bool = False) -> None:
        for fd in (self.tx, self.rx):
            try:
                os.close(fd)
            except OSError:
                pass
        if kill:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_local(tasks, ref: ModelRef, workers: int, threads: int, max_retries: int, on_result, stats) -> None:
    """Run ``tasks`` on ``workers`` processes of ``threads`` kernel threads each."""
    from ._run import FATAL, raise_failed
    from ._shard import ShardError

    env = worker_env(threads)
    pending = deque(tasks)
    attempts: dict[int, int] = {}
    n = min(workers, len(tasks))
    stats["workers"] = n
    pool = [_Worker(ref, threads, env) for _ in range(n)]
    ok = False
    try:
        while pending or any(w.task is not None for w in pool):
            for w in pool:
                if w.task is None and pending:
                    w.assign(pending.popleft())
            by_fd = {w.rx: w for w in pool}
            for fd in wait(list(by_fd)):
                w = by_fd[fd]
                msgs = w.read()
                if msgs is None:  # died: SIGKILL, OOM killer, a crash in native code
                    code = w.proc.wait()
                    t = w.task
                    w.close()
                    if t is None:  # idle: replaced only if work remains
                        pool[pool.index(w)] = _Worker(ref, threads, env) if pending else None
                        pool = [p for p in pool if p is not None]
                        continue
                    pool[pool.index(w)] = _Worker(ref, threads, env)
                    k = attempts.get(t["index"], 0)
                    if k >= max_retries:
                        raise RuntimeError(f"shard {t['index']} ({t['path']}) failed {k + 1} times: its worker "
                                           f"process died (exit status {code}; max_retries={max_retries})")
                    attempts[t["index"]] = k + 1
                    stats["retried"] += 1
                    pending.appendleft(t)
                    continue
                for m in msgs:
                    if "ready" in m:
                        continue
                    if "fatal" in m:
                        raise _rebuild(m["type"], f"worker could not load the model: {m['fatal']}")
                    t, w.task = w.task, None
                    if "ok" in m:
                        on_result(m["ok"])
                    elif "shard_error" in m:
                        e = m["shard_error"]
                        raise ShardError(e["shard"], e["path"], e["row"], e["id"], e["reason"])
                    else:
                        exc = _rebuild(m["type"], m["error"])
                        k = attempts.get(t["index"], 0)
                        if isinstance(exc, FATAL) or k >= max_retries:
                            print(m["traceback"], file=sys.stderr)
                            raise_failed(t, exc, k)
                        attempts[t["index"]] = k + 1
                        stats["retried"] += 1
                        pending.appendleft(t)
        ok = True
    finally:
        # on success the workers exit when their task pipe closes; on failure they are killed, so
        # a stopped run ends within one message round trip, not one shard
        for w in pool:
            w.close(kill=not ok)


def _rebuild(type_name: str, message: str) -> Exception:
    """An exception of the worker's type when it is a builtin one (so FATAL applies), else RuntimeError."""
    import builtins

    cls = getattr(builtins, type_name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except TypeError:
            pass
    return RuntimeError(f"{type_name}: {message}")
