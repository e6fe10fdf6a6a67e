"""One shard, in a worker: read it, run the model over it in batches, commit its output.

``process_shard(task)`` is the whole contract every backend executes; a task is a small dict
(paths, the model reference, options), never data or a model.
"""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np

from . import _io
from ._model import ModelRef, load_runner

__all__ = ["ShardError", "process_shard", "task_size"]


class ShardError(ValueError):
    """A row that cannot be run (``on_error="raise"``), named by shard and row.

    Attributes ``shard`` (index), ``path`` (input file), ``row`` (row in that file), ``id`` and
    ``reason``.  Never retried: the same data fails the same way.
    """

    def __init__(self, shard: int, path: str, row: int, id, reason: str):
        super().__init__(f"shard {shard} ({path}), row {row} (id {id!r}): {reason}")
        self.shard, self.path, self.row, self.id, self.reason = shard, path, row, id, reason

    def __reduce__(self):  # engines pickle exceptions back to the driver
        return (ShardError, (self.shard, self.path, self.row, self.id, self.reason))

    def to_dict(self) -> dict:
        return {"shard": self.shard, "path": self.path, "row": self.row, "id": _json_id(self.id),
                "reason": self.reason}


def _json_id(v):
    return v.item() if isinstance(v, np.generic) else v


# ------------------------------------------------------------------------------------------------
# fault injection for the tests: a worker SIGKILLs itself at a named point of a named shard once


FAULT_ENV = "EDGEPACK_BATCH_FAULT_FILE"


def fault_point(task: dict):
    """A function ``hit(point)`` for this task, or None when no fault file is configured.

    The file named by ``$EDGEPACK_BATCH_FAULT_FILE`` holds ``{"shard": i, "point": "start" |
    "mid" | "write" | "done", "marker": path}``; the first worker to reach that point of that
    shard creates ``marker`` and kills itself with SIGKILL (so the retry runs through).  It lets
    the fault tests kill mid-shard and between writing and renaming, which a timer rarely hits.
    """
    path = os.environ.get(FAULT_ENV)
    if not path:
        return None

    def hit(point: str) -> None:
        try:
            with open(path, encoding="utf-8") as f:
                spec = json.load(f)
        except (OSError, ValueError):
            return
        if spec.get("shard") != task["index"] or spec.get("point") != point:
            return
        try:
            fd = os.open(spec["marker"], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except OSError:
            return  # already fired once
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)

    return hit


# ------------------------------------------------------------------------------------------------
# the task


def task_size(task: dict) -> int:
    """Bytes of the task as an engine ships it (pickled)."""
    import pickle

    return len(pickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL))


def set_threads(n: int) -> None:
    """This process's kernel threads (the worker's share of the CPUs)."""
    from .. import get_num_threads, set_num_threads

    if get_num_threads() != n:
        set_num_threads(n)


def process_shard(task: dict) -> dict:
    """Run one shard end to end and commit its output; returns a small result dict.

    Parameters
    ----------
    task : dict
        ``index``, ``path``, ``rows``, ``first_row``, ``shard_id``, ``output`` (final file),
        ``model`` (ModelRef dict), ``source`` and ``sink`` (specs), ``batch_size``,
        ``on_error`` ("raise" | "skip"), ``threads`` (kernel threads, or None to leave them).

    Returns
    -------
    dict: ``index``, ``rows`` (written), ``errors`` (rows skipped), ``seconds``, ``pid``,
    ``threads`` (this worker's kernel threads), ``model_loads`` (models this process loaded).

    Raises
    ------
    ShardError
        ``on_error="raise"`` and a row cannot be run (the first bad row of the shard).
    """
    t0 = time.perf_counter()
    if task.get("threads"):
        set_threads(int(task["threads"]))
    hit = fault_point(task)
    if hit:
        hit("start")
    runner = load_runner(ModelRef.from_dict(task["model"]))
    rows = _io.source_from_spec(task["source"])(task["path"], task["source"], task["first_row"])
    n = len(rows.ids)
    if n != task["rows"]:
        raise ValueError(f"shard {task['index']} ({task['path']}) has {n} rows, {task['rows']} when the run "
                         "was planned: the input changed during the run")
    bad = dict(rows.bad)
    if rows.is_text != runner.text:
        want = "a text column" if runner.text else "a numeric column"
        raise TypeError(f"shard {task['index']} ({task['path']}): model {task['model']['path']} needs "
                        f"{want}; the source gives {'text' if rows.is_text else 'numbers'}")

    def fail(row: int, reason: str):
        if task["on_error"] == "raise":
            raise ShardError(task["index"], task["path"], row, _json_id(rows.ids[row]), reason)
        bad[row] = reason

    for row in sorted(bad):
        fail(row, bad[row])
    if runner.text:
        out = _run_text(runner, rows.data, bad, fail, task["batch_size"], hit)
    else:
        out = _run_arrays(runner, rows.data, bad, fail, task["batch_size"], hit)
    keep = np.array([i not in bad for i in range(n)], bool)
    values = out[keep] if bad else out
    ids = rows.ids[keep] if bad else rows.ids
    output = task["output"]
    if bad:
        _io.write_errors(output, [{"shard": task["index"], "row": r, "id": _json_id(rows.ids[r]),
                                   "error": bad[r]} for r in sorted(bad)])
    info = {"shard_id": task["shard_id"], "input": task["path"], "input_rows": n, "errors": len(bad)}
    _io.write_output(task["sink"], output, ids, values, info, hit)
    if hit:
        hit("done")
    from .. import get_num_threads
    from ._model import LOADS

    return {"index": task["index"], "rows": int(len(ids)), "errors": len(bad),
            "seconds": time.perf_counter() - t0, "pid": os.getpid(), "threads": get_num_threads(),
            "model_loads": LOADS["count"]}


def _run_text(runner, texts: list, bad: dict, fail, batch_size: int, hit) -> np.ndarray:
    """Embed a shard's texts like ``SentenceEncoder.encode``: tokenize, sort by length, batch.

    Rows are independent in the int8 and float encoders (packed sequences, per-row activation
    scales, exact integer GEMMs), so any batch split gives the same bits as ``encode``.
    """
    n = len(texts)
    idx = [i for i in range(n) if i not in bad]
    try:
        toks = runner.tokenize([texts[i] for i in idx])
    except Exception:  # noqa: BLE001 - the tokenizer raises bare Exceptions; find the row(s)
        toks = []
        keep = []
        for i in idx:
            try:
                toks.append(runner.tokenize([texts[i]])[0])
                keep.append(i)
            except Exception as e:  # noqa: BLE001
                fail(i, f"the tokenizer rejects this text ({type(e).__name__}: {e})")
        idx = keep
    out = np.zeros((n, runner.model.dim), np.float32)
    order = sorted(range(len(idx)), key=lambda k: -len(toks[k]))
    for b, s in enumerate(range(0, len(order), batch_size)):
        sel = order[s:s + batch_size]
        if hit and b == 1:
            hit("mid")
        rows = [idx[k] for k in sel]
        try:
            out[rows] = runner.embed_ids([toks[k] for k in sel])
        except Exception:  # noqa: BLE001 - isolate the row(s), then redo the batch without them
            good = []
            for k, r in zip(sel, rows):
                try:
                    runner.embed_ids([toks[k]])
                    good.append((k, r))
                except Exception as e:  # noqa: BLE001
                    fail(r, f"{type(e).__name__}: {e}")
            if good:
                out[[r for _, r in good]] = runner.embed_ids([toks[k] for k, _ in good])
    return out


def _run_arrays(runner, x: np.ndarray, bad: dict, fail, batch_size: int, hit) -> np.ndarray:
    """Run a shard of samples [n, ...] in batches of ``batch_size`` rows, in order."""
    n = x.shape[0]
    out = None
    for b, s in enumerate(range(0, n, batch_size)):
        if hit and b == 1:
            hit("mid")
        rows = [i for i in range(s, min(n, s + batch_size)) if i not in bad]
        if not rows:
            continue
        xb = x[s:s + batch_size] if len(rows) == min(n, s + batch_size) - s else x[rows]
        try:
            y = runner.run(xb)
        except Exception:  # noqa: BLE001 - isolate the row(s), then redo the batch without them
            good = []
            for r in rows:
                try:
                    runner.run(x[r:r + 1])
                    good.append(r)
                except Exception as e:  # noqa: BLE001
                    fail(r, f"{type(e).__name__}: {e}")
            if not good:
                continue
            rows, y = good, runner.run(x[good])
        if out is None:
            out = np.zeros((n, *y.shape[1:]), np.float32)
        out[rows] = y
    if out is None:  # every row bad (skipped): the output still needs its row shape
        out = np.zeros((n, 0), np.float32)
    return out
