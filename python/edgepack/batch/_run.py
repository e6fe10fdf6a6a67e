"""The driver: plan the shards, hand them to a backend, commit the manifest, verify."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from . import _io
from ._model import ModelRef

__all__ = ["run", "plan", "verify", "Shard", "RunReport", "VerifyReport"]

BACKENDS = ("local", "threads", "dask", "ray")
MANIFEST = "_MANIFEST.json"
SUCCESS = "_SUCCESS"


@dataclass(frozen=True)
class Shard:
    """One input file and the output file it commits to.

    ``shard_id`` hashes the input (path, size, mtime, rows), the model's SHA-256 and the
    source/sink options: a file named with it can only hold this shard's result for this model.
    """

    index: int
    path: str
    rows: int
    first_row: int
    shard_id: str
    output: str


@dataclass
class RunReport:
    """What :func:`run` did.

    Attributes
    ----------
    shards : int
        Shards in the plan (input files).
    done, skipped : int
        Shards processed by this run; shards already committed by an earlier run (``resume``).
    retried : int
        Shard attempts repeated after a worker died or failed transiently.
    rows : int
        Rows written by this run; ``total_rows``: rows in the whole output (skipped shards too).
    errors : int
        Bad rows written to errors files (``on_error="skip"``), whole output.
    seconds : float
        Wall time of the run (worker start-up included).
    """

    shards: int
    done: int
    skipped: int
    retried: int
    rows: int
    total_rows: int
    errors: int
    seconds: float
    backend: str
    workers: int
    threads_per_worker: int
    output: str
    manifest: str
    details: list = field(default_factory=list, repr=False)  # per shard done: pid, seconds, threads

    @property
    def rows_per_s(self) -> float:
        """Rows written by this run per second of wall time."""
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        return (f"{self.done} shards done, {self.skipped} skipped, {self.retried} retried; {self.rows:,} rows "
                f"in {self.seconds:.1f} s ({self.rows_per_s:,.0f} rows/s, {self.backend} x{self.workers}); "
                f"{self.total_rows:,} rows and {self.errors} bad rows in {self.output}")


@dataclass
class VerifyReport:
    """Whether every input id appears exactly once in the output (see :func:`verify`).

    ``missing``: input ids in no output file and no errors file; ``duplicated``: ids written
    more than once; ``unexpected``: output ids that are not input ids; ``examples``: a few of each.
    ``complete``: the run's ``_SUCCESS`` marker exists; ``tmp_files``: leftover ``.tmp-*`` files.
    """

    ok: bool
    input_rows: int
    output_rows: int
    error_rows: int
    missing: int
    duplicated: int
    unexpected: int
    complete: bool
    tmp_files: int
    examples: dict = field(default_factory=dict)

    def __str__(self) -> str:
        state = "OK" if self.ok else "PROBLEM"
        return (f"{state}: {self.input_rows:,} input rows, {self.output_rows:,} output rows, {self.error_rows} in "
                f"errors files; missing {self.missing}, duplicated {self.duplicated}, unexpected "
                f"{self.unexpected}; _SUCCESS {'present' if self.complete else 'absent'}; "
                f"{self.tmp_files} temporary files" + (f"; e.g. {self.examples}" if self.examples else ""))


# ------------------------------------------------------------------------------------------------
# planning


def _shard_id(path: str, rows: int, model_sha: str, source_spec: dict, sink_spec: dict) -> str:
    st = os.stat(path)
    key = json.dumps({"v": 1, "input": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "rows": rows,
                      "model": model_sha, "source": source_spec,
                      "sink": {k: v for k, v in sink_spec.items() if k != "dir"}}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def plan(source, sink, model) -> list[Shard]:
    """The shards of a run: one per input file, in sorted order, with their output names.

    Parameters
    ----------
    source : ParquetSource or NpySource
    sink : ParquetSink, NpySink or str (an output directory: Parquet)
    model : str, os.PathLike or ModelRef

    Returns
    -------
    list of Shard
    """
    source, sink = _io.make_source(source), _io.make_sink(sink)
    ref = ModelRef.from_path(model)
    out, first = [], 0
    for i, path in enumerate(source.files()):
        rows = source.count_rows(path)
        sid = _shard_id(path, rows, ref.sha256, source.spec(), sink.spec())
        out.append(Shard(i, path, rows, first, sid, sink.output_name(i, sid)))
        first += rows
    return out


def _committed(sink, shard: Shard) -> tuple[int, int] | None:
    """(rows, errors) of a shard whose output an earlier run committed, else None."""
    if not os.path.exists(shard.output):
        return None
    rows = sink.count_rows(shard.output)
    errors = len(_io.read_errors(shard.output))
    if rows < 0 or rows + errors != shard.rows:
        return None  # unreadable or not this shard's rows: redo it
    return rows, errors


def _sweep_tmp(directory: str) -> int:
    n = 0
    for name in os.listdir(directory):
        if name.startswith(_io.TMP_PREFIX):
            try:
                os.unlink(os.path.join(directory, name))
                n += 1
            except FileNotFoundError:
                pass
    return n


def _stale_parts(directory: str, shards: list[Shard]) -> list[str]:
    mine = {os.path.basename(s.output).rsplit(".", 1)[0] for s in shards}
    out = []
    for name in sorted(os.listdir(directory)):
        m = _io.PART_RE.match(name)
        if m and f"part-{m.group(1)}-{m.group(2)}" not in mine:
            out.append(name)
    return out


# ------------------------------------------------------------------------------------------------
# progress


class _Progress:
    """rows/s, shards done and ETA: a tqdm bar when tqdm is installed, else a line every 2 s."""

    def __init__(self, enabled: bool, shards: int, rows: int, desc: str):
        self.enabled, self.rows_total, self.shards_total = enabled, rows, shards
        self.rows = self.shards = 0
        self.t0 = self.last = time.perf_counter()
        self.bar = None
        if enabled and shards:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=rows, unit="row", unit_scale=True, desc=desc, file=sys.stderr)
            except ImportError:
                pass

    def update(self, rows: int, shards: int = 1) -> None:
        self.rows += rows
        self.shards += shards
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(rows)
            self.bar.set_postfix_str(f"shards {self.shards}/{self.shards_total}", refresh=False)
            return
        now = time.perf_counter()
        if now - self.last >= 2.0 or self.shards == self.shards_total:
            self.last = now
            rate = self.rows / max(now - self.t0, 1e-9)
            eta = (self.rows_total - self.rows) / rate if rate > 0 else float("inf")
            print(f"edgepack.batch: {self.shards}/{self.shards_total} shards, {self.rows:,}/{self.rows_total:,} rows, "
                  f"{rate:,.0f} rows/s, ETA {eta:,.0f} s", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ------------------------------------------------------------------------------------------------
# run


def make_tasks(shards, ref: ModelRef, source, sink, *, batch_size: int = 256, on_error: str = "raise",
               threads: int | None = 1) -> list[dict]:
    """The task dicts sent to the workers, one per shard: paths, the model reference and options
    (a few hundred bytes each; no data, no model)."""
    return [{"index": s.index, "path": s.path, "rows": s.rows, "first_row": s.first_row,
             "shard_id": s.shard_id, "output": s.output, "model": ref.to_dict(), "source": source.spec(),
             "sink": sink.spec(), "batch_size": batch_size, "on_error": on_error, "threads": threads}
            for s in shards]


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _pos_int(name: str, v, allow_none: bool = False):
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer{' or None' if allow_none else ''}; got {v!r}")
    return int(v)


def run(model, source, sink, *, backend="local", workers: int | None = None, threads_per_worker: int | None = None,
        batch_size: int = 256, max_retries: int = 3, on_error: str = "raise", resume: bool = True,
        overwrite: bool = False, progress: bool = True, scheduler: str | None = None) -> RunReport:
    """Run a model over every shard of ``source`` and commit one output file per shard to ``sink``.

    Parameters
    ----------
    model : str, os.PathLike or ModelRef
        A saved edgepack model (:func:`edgepack.save`: arrays in, float32 [n, ...] out), a
        :meth:`SentenceEncoder.save` file (text in, float32 [n, dim] embeddings out) or an
        ``.onnx`` file (imported with :func:`edgepack.from_onnx` in each worker).  Only its path and
        SHA-256 go to the workers; each worker process loads it once and checks the hash.
    source : ParquetSource or NpySource
        The input shards (one file each) and the column to run.
    sink : ParquetSink, NpySink or str
        Output directory (a str means Parquet).  One ``part-NNNNNN-<id>`` file per input shard,
        then ``_MANIFEST.json`` and ``_SUCCESS`` once every shard is committed.
    backend : "local", "threads", "dask", "ray", or a ``dask.distributed.Client``
        ``"local"``: worker processes on this machine (one kernel thread each by default), a dead
        one is replaced.  ``"threads"``: threads of this process.  ``"dask"``: a
        ``dask.distributed`` cluster (pass the Client, or its address as ``scheduler``; extra
        ``edgepack[dask]``).  ``"ray"``: Ray actors (``scheduler`` = cluster address, else a
        running or new local Ray; extra ``edgepack[ray]``).
    workers : int, optional
        Concurrent shards.  Default: local/threads ``CPUs // threads_per_worker``; Dask every worker
        thread; Ray ``cluster CPUs // threads_per_worker``.
    threads_per_worker : int, optional
        Kernel threads per worker (default 1; local: ``CPUs // workers`` when ``workers`` is given).
        Local/threads: ``workers * threads_per_worker`` may not exceed this process's CPUs.
    batch_size : int
        Rows per model call (sentences per forward pass for a SentenceEncoder).
    max_retries : int
        Attempts repeated per shard after its worker died or failed transiently (I/O).  Bad rows
        and wrong options are never retried.
    on_error : "raise" or "skip"
        A row that cannot be run (null, wrong length, text the tokenizer rejects, a value the model
        refuses): ``"raise"`` stops the run with :class:`ShardError` naming the shard and row (other
        shards in flight are cancelled); ``"skip"`` writes it to the shard's
        ``part-*.errors.jsonl`` and goes on.
    resume : bool
        Skip shards whose output an earlier run committed (same input, model and options).
        False recomputes every shard (same bits, same names).
    overwrite : bool
        Delete ``part-*`` files of other runs (another model, options or inputs) found in the
        output directory; without it they raise ``ValueError`` (they would mix with this run's).
    progress : bool
        Show rows/s, shards done and ETA (tqdm when installed).
    scheduler : str, optional
        Dask scheduler or Ray cluster address.

    Returns
    -------
    RunReport

    Raises
    ------
    ShardError
        ``on_error="raise"`` and a bad row.
    RuntimeError
        A shard failed ``max_retries + 1`` times (the message names it and the last cause).
    """
    t0 = time.perf_counter()
    engine = backend
    name = backend if isinstance(backend, str) else "dask"
    if isinstance(backend, str) and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or a dask.distributed.Client; got {backend!r}")
    if not isinstance(backend, str) and type(backend).__name__ != "Client":
        raise TypeError(f"backend must be one of {BACKENDS} or a dask.distributed.Client; got {type(backend).__name__}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip'; got {on_error!r}")
    workers = _pos_int("workers", workers, allow_none=True)
    threads_per_worker = _pos_int("threads_per_worker", threads_per_worker, allow_none=True)
    batch_size = _pos_int("batch_size", batch_size)
    if isinstance(max_retries, bool) or not isinstance(max_retries, (int, np.integer)) or max_retries < 0:
        raise ValueError(f"max_retries must be an integer >= 0; got {max_retries!r}")
    if name in ("local", "threads"):
        cpus = _cpus()
        if workers is None:
            threads_per_worker = threads_per_worker or 1
            workers = max(1, cpus // threads_per_worker)
        elif threads_per_worker is None:
            threads_per_worker = max(1, cpus // workers)
        if workers * threads_per_worker > cpus:
            raise ValueError(f"workers ({workers}) x threads_per_worker ({threads_per_worker}) = "
                             f"{workers * threads_per_worker} exceeds the {cpus} CPUs this process may use; "
                             "lower one of them (processes x kernel threads must fit the CPUs)")
    threads_per_worker = threads_per_worker or 1

    source, sink = _io.make_source(source), _io.make_sink(sink)
    ref = ModelRef.from_path(model)
    shards = plan(source, sink, ref)
    os.makedirs(sink.directory, exist_ok=True)
    success = os.path.join(sink.directory, SUCCESS)
    if os.path.exists(success):
        os.unlink(success)  # the output is about to change: no longer a finished run's
    _sweep_tmp(sink.directory)
    stale = _stale_parts(sink.directory, shards)
    if stale:
        if not overwrite:
            more = f" and {len(stale) - 3} more" if len(stale) > 3 else ""
            raise ValueError(f"sink {sink.directory} holds part files of another run ({', '.join(stale[:3])}{more}): "
                             "another model, other options or other input files; use a new directory or "
                             "overwrite=True to delete them")
        for name_ in stale:
            os.unlink(os.path.join(sink.directory, name_))

    committed: dict[int, tuple[int, int]] = {}
    todo = []
    for s in shards:
        c = _committed(sink, s) if resume else None
        if c is not None:
            committed[s.index] = c
        else:
            todo.append(s)
            errs = sink.errors_name(s.output)
            if os.path.exists(errs):
                os.unlink(errs)  # a fresh attempt writes its own

    tasks = make_tasks(todo, ref, source, sink, batch_size=batch_size, on_error=on_error,
                       threads=threads_per_worker)
    prog = _Progress(progress, len(todo), sum(s.rows for s in todo), f"edgepack batch ({name})")
    results: dict[int, dict] = {}

    def on_result(res: dict) -> None:
        results[res["index"]] = res
        prog.update(res["rows"] + res["errors"])

    stats = {"retried": 0, "workers": workers or 0}
    try:
        if tasks:
            if name == "local":
                from ._local import run_local

                run_local(tasks, ref, workers, threads_per_worker, max_retries, on_result, stats)
            elif name == "threads":
                _run_threads(tasks, ref, workers, threads_per_worker, max_retries, on_result, stats)
            elif name == "dask":
                from ._dask import run_dask

                run_dask(tasks, ref, engine, scheduler, workers, threads_per_worker, max_retries, on_result, stats)
            else:
                from ._ray import run_ray

                run_ray(tasks, ref, scheduler, workers, threads_per_worker, max_retries, on_result, stats)
    finally:
        prog.close()
        _sweep_tmp(sink.directory)  # a killed worker's half-written file, or a cancelled run's

    entries, total_rows, total_errors = [], 0, 0
    for s in shards:
        if s.index in results:
            rows, errors = results[s.index]["rows"], results[s.index]["errors"]
        else:
            rows, errors = committed[s.index]
        total_rows += rows
        total_errors += errors
        entries.append({"index": s.index, "input": s.path, "input_rows": s.rows, "first_row": s.first_row,
                        "output": os.path.basename(s.output), "rows": rows, "errors": errors,
                        "shard_id": s.shard_id})
    manifest = os.path.join(sink.directory, MANIFEST)
    _write_json(manifest, {"format": "edgepack.batch", "version": 1, "model": ref.to_dict(),
                           "source": source.spec(), "sink": sink.spec(), "shards": entries,
                           "rows": total_rows, "errors": total_errors})
    _write_json(success, {"rows": total_rows, "shards": len(shards)})
    _io.fsync_dir(sink.directory)
    return RunReport(shards=len(shards), done=len(results), skipped=len(committed), retried=stats["retried"],
                     rows=sum(r["rows"] for r in results.values()), total_rows=total_rows, errors=total_errors,
                     seconds=time.perf_counter() - t0, backend=name, workers=stats["workers"],
                     threads_per_worker=threads_per_worker, output=sink.directory, manifest=manifest,
                     details=[results[i] for i in sorted(results)])


def _write_json(path: str, obj) -> None:
    tmp = _io.tmp_name(os.path.dirname(path), path)
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
    _io.commit(tmp, path)


# errors that the same input would raise again: not worth a retry
FATAL = (TypeError, ValueError, LookupError, FileNotFoundError, ModuleNotFoundError, NotImplementedError)


def _run_threads(tasks, ref, workers, threads, max_retries, on_result, stats) -> None:
    """Threads of this process; the kernels release the GIL, so shards run in parallel."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    from .. import get_num_threads, set_num_threads
    from ._model import load_runner
    from ._shard import process_shard

    load_runner(ref)  # once, before the threads share it
    prev = get_num_threads()
    set_num_threads(threads)
    attempts: dict[int, int] = {}
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edgepack-batch") as ex:
            # the threads share one kernel-thread setting (process-wide): None leaves it alone
            futs = {ex.submit(process_shard, {**t, "threads": None}): t for t in tasks}
            while futs:
                finished, _ = wait(futs, return_when=FIRST_COMPLETED)
                for f in finished:
                    t = futs.pop(f)
                    exc = f.exception()
                    if exc is None:
                        on_result(f.result())
                        continue
                    if isinstance(exc, FATAL) or attempts.get(t["index"], 0) >= max_retries:
                        for g in futs:
                            g.cancel()
                        raise_failed(t, exc, attempts.get(t["index"], 0))
                    attempts[t["index"]] = attempts.get(t["index"], 0) + 1
                    stats["retried"] += 1
                    futs[ex.submit(process_shard, {**t, "threads": None})] = t
    finally:
        set_num_threads(prev)


def raise_failed(task: dict, exc: BaseException, attempts: int):
    """Re-raise a shard's failure: a fatal error as is, else RuntimeError naming the shard."""
    if isinstance(exc, FATAL):
        raise exc
    raise RuntimeError(f"shard {task['index']} ({task['path']}) failed {attempts + 1} times "
                       f"(max_retries={attempts}); last: {type(exc).__name__}: {exc}") from exc


# ------------------------------------------------------------------------------------------------
# verify


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    if not parts:
        return np.zeros(0, np.int64)
    if any(p.dtype.kind == "U" for p in parts):
        return np.concatenate([p.astype(str) for p in parts])
    return np.concatenate(parts)


def verify(source, sink) -> VerifyReport:
    """Check that every input id appears exactly once in the output.

    Reads the id column of every input shard and of every output file in the sink's directory
    (whichever run wrote it) plus the ids in the errors files (skipped rows count as accounted
    for, once).

    Parameters
    ----------
    source : ParquetSource or NpySource
    sink : ParquetSink, NpySink or str

    Returns
    -------
    VerifyReport (``ok`` is True when nothing is missing, duplicated or unexpected, ``_SUCCESS``
    exists and no temporary file is left)
    """
    source, sink = _io.make_source(source), _io.make_sink(sink)
    d = sink.directory
    if not os.path.isdir(d):
        raise FileNotFoundError(f"sink directory not found: {d}")
    ins, first = [], 0
    for path in source.files():
        rows = source.count_rows(path)
        ins.append(source.read_ids(path, first, rows))
        first += rows
    in_ids = _concat(ins)
    outs, errs = [], []
    for name in sorted(os.listdir(d)):
        if not name.endswith(sink.ext) or name.endswith(".ids.npy") or not _io.PART_RE.match(name):
            continue
        path = os.path.join(d, name)
        outs.append(sink.read_ids(path))
        errs += [e["id"] for e in _io.read_errors(path)]
    out_ids = _concat(outs)
    err_ids = np.asarray(errs) if errs else np.zeros(0, in_ids.dtype)
    seen = _concat([out_ids, err_ids.astype(in_ids.dtype) if err_ids.size else err_ids])
    uniq, counts = np.unique(seen, return_counts=True)
    dup = uniq[counts > 1]
    missing = np.setdiff1d(in_ids, uniq)
    unexpected = np.setdiff1d(uniq, in_ids)
    examples = {k: v[:5].tolist() for k, v in (("missing", missing), ("duplicated", dup),
                                               ("unexpected", unexpected)) if v.size}
    in_dups = len(in_ids) - len(np.unique(in_ids))
    if in_dups:
        examples["input_duplicates"] = in_dups
    tmp = sum(1 for n in os.listdir(d) if n.startswith(_io.TMP_PREFIX))
    complete = os.path.exists(os.path.join(d, SUCCESS))
    ok = not (missing.size or dup.size or unexpected.size or in_dups or tmp) and complete
    return VerifyReport(ok=ok, input_rows=len(in_ids), output_rows=len(out_ids), error_rows=len(err_ids),
                        missing=int(missing.size), duplicated=int(dup.size), unexpected=int(unexpected.size),
                        complete=complete, tmp_files=tmp, examples=examples)
