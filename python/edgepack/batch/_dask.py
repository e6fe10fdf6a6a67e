"""The Dask backend: shards as ``dask.distributed`` tasks, the model loaded by a worker plugin.

A worker killed mid-shard is restarted by its nanny and the scheduler reruns the task (up to
its ``distributed.scheduler.allowed-failures``, then ``KilledWorker`` reaches us and we resubmit
up to ``max_retries``).  Other exceptions come back here and are resubmitted (transient) or
raised (bad rows, wrong options): Dask's own ``retries=`` would retry bad rows too.
"""

from __future__ import annotations

import os
import uuid

from ._io import require

require("distributed", "dask", "backend='dask'")

from distributed import Client, WorkerPlugin, wait  # noqa: E402

from ._model import ModelRef, load_runner  # noqa: E402
from ._shard import process_shard, set_threads  # noqa: E402

__all__ = ["ModelPlugin", "run_dask"]

_POLL = 5.0  # seconds between checks that the cluster still has workers
_NO_WORKERS_TIMEOUT = 120.0


class ModelPlugin(WorkerPlugin):
    """Loads the model once per worker process and sets its kernel threads.

    Registered under a name derived from the model's hash, so registering it again (a second run
    on the same cluster) replaces rather than stacks it.
    """

    def __init__(self, ref: dict, threads: int):
        self.ref, self.threads = ref, threads

    def setup(self, worker):
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        set_threads(self.threads)
        load_runner(ModelRef.from_dict(self.ref))


def _suspicious(keys, dask_scheduler=None) -> int:
    """Scheduler side: how many times the tasks ``keys`` were rerun because a worker died."""
    return sum(dask_scheduler.tasks[k].suspicious for k in keys if k in dask_scheduler.tasks)


def _register(client, plugin, name: str) -> None:
    """Register the plugin; a worker dying during the broadcast fails it (CommClosedError, an
    OSError), so try again: the scheduler keeps the plugin for workers that join later, and
    without it each worker would still load the model lazily on its first shard."""
    import time

    for attempt in range(5):
        try:
            client.register_plugin(plugin, name=name)
            return
        except OSError:
            time.sleep(0.2 * (attempt + 1))


def run_dask(tasks, ref: ModelRef, client, address, workers, threads, max_retries, on_result, stats) -> None:
    from ._run import FATAL, raise_failed

    own = None
    if isinstance(client, str):  # backend="dask"
        if address is None:
            raise ValueError("backend='dask' needs scheduler='tcp://host:8786' (the scheduler address), "
                             "or pass a dask.distributed.Client as backend")
        own = client = Client(address)
    try:
        _register(client, ModelPlugin(ref.to_dict(), threads), f"edgepack-model-{ref.sha256[:16]}")
        if not client.nthreads():
            client.wait_for_workers(1, timeout=120)
        nthreads = sum(client.nthreads().values())
        stats["workers"] = min(workers or nthreads, nthreads)
        attempts: dict[int, int] = {}
        by_key: dict[str, dict] = {}
        live = []

        # Keys unique to this run: the scheduler keeps a key's result (or error) while any client
        # holds it, and the same shard in another run (another output directory, on_error) must
        # not get that result instead of running.
        run_id = uuid.uuid4().hex[:12]

        def submit(t):
            key = f"edgepack-shard-{t['shard_id']}-{run_id}-{attempts.get(t['index'], 0)}"
            f = client.submit(process_shard, t, key=key, pure=False, retries=0)
            by_key[f.key] = t
            live.append(f)
            return f

        # At most `workers` shards in flight when asked for fewer than the cluster has; else all
        # are submitted and the scheduler spreads them.
        limit = workers or len(tasks)
        queue = list(tasks)
        for t in queue[:limit]:
            submit(t)
        queue = queue[limit:]
        starved = 0.0
        while live:
            try:
                finished = wait(live, timeout=_POLL, return_when="FIRST_COMPLETED").done
            except TimeoutError:
                # a cluster that lost every worker would leave us waiting forever
                starved = starved + _POLL if not client.nthreads() else 0.0
                if starved >= _NO_WORKERS_TIMEOUT:
                    client.cancel(live)
                    raise RuntimeError(f"the Dask cluster at {client.scheduler.address} has had no workers for "
                                       f"{starved:.0f} s; {len(live) + len(queue)} shards are not done") from None
                continue
            for f in finished:
                t = by_key.pop(f.key)
                live.remove(f)
                if f.status == "finished":
                    try:
                        res = f.result(timeout=_NO_WORKERS_TIMEOUT)
                    except TimeoutError:
                        # the worker holding the result died and the cluster did not recompute
                        # it in time (no workers left): run the shard again, same bits
                        res = None
                    if res is None:
                        k = attempts.get(t["index"], 0)
                        if k >= max_retries:
                            raise RuntimeError(f"shard {t['index']} ({t['path']}): its result was lost with its "
                                               f"worker {k + 1} times (max_retries={max_retries})")
                        attempts[t["index"]] = k + 1
                        stats["retried"] += 1
                        f.release()
                        submit(t)
                        continue
                    on_result(res)
                    # Released at once: a finished task's result held on a worker that then dies
                    # is recomputed by the scheduler (its side effects run again, maybe after we
                    # return).  First ask how often a dead worker made the scheduler rerun it.
                    stats["retried"] += client.run_on_scheduler(_suspicious, [f.key])
                    f.release()
                else:
                    exc = f.exception()
                    k = attempts.get(t["index"], 0)
                    if isinstance(exc, FATAL) or k >= max_retries:
                        client.cancel(live)
                        raise_failed(t, exc, k)
                    attempts[t["index"]] = k + 1
                    stats["retried"] += 1
                    submit(t)
                if queue:
                    submit(queue.pop(0))
    finally:
        if own is not None:
            own.close()
