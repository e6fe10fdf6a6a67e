"""A local worker process: ``python -m edgepack.batch._worker TASK_FD RESULT_FD``.

Started by :mod:`edgepack.batch._local` as a fresh interpreter (not fork: the parent's kernel and
tokenizer threads do not survive a fork; not multiprocessing's spawn: that re-imports the
user's ``__main__``, which needs the ``if __name__ == "__main__"`` guard).  Messages are JSON
lines over two pipes; the first task line is ``{"init": {"model": ..., "threads": n}}``.  The
process loads the model once, then runs tasks until the task pipe closes.
"""

from __future__ import annotations

import json
import os
import sys
import traceback


def _die_with_parent() -> None:
    """SIGKILL this worker when the driver dies (Linux), so no orphan keeps writing shards."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _send(fd: int, msg: dict) -> None:
    data = (json.dumps(msg) + "\n").encode()
    while data:  # one message = one line; the driver splits on newlines
        n = os.write(fd, data)
        data = data[n:]


def main(argv: list[str]) -> int:
    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:  # the driver died before prctl took effect
        return 1
    task_fd, result_fd = int(argv[0]), int(argv[1])
    tasks = os.fdopen(task_fd, "rb")
    first = tasks.readline()
    if not first:
        return 0
    init = json.loads(first)["init"]
    from ._model import ModelRef, load_runner
    from ._shard import ShardError, process_shard, set_threads

    try:
        set_threads(int(init["threads"]))
        load_runner(ModelRef.from_dict(init["model"]))
    except Exception as e:  # noqa: BLE001 - reported to the driver, which stops the run
        _send(result_fd, {"fatal": f"{type(e).__name__}: {e}", "type": type(e).__name__})
        return 1
    _send(result_fd, {"ready": os.getpid()})
    for line in tasks:
        task = json.loads(line)
        try:
            _send(result_fd, {"ok": process_shard(task)})
        except ShardError as e:
            _send(result_fd, {"shard_error": e.to_dict()})
        except Exception as e:  # noqa: BLE001 - the driver decides: fatal or retry
            _send(result_fd, {"error": f"{e}", "type": type(e).__name__, "traceback": traceback.format_exc()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
