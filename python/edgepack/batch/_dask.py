"""The Dask backend: shards as ``dask.distributed`` tasks, the model loaded by a worker plugin.

A worker killed mid-shard is restarted by its nanny and the scheduler reruns the task (up to
its ``distributed.scheduler.allowed-failures``, then ``KilledWorker`` reaches us and we resubmit
up to ``max_retries``).  Other exceptions come back here and are resubmitted (transient) or
raised (bad rows, wrong options): Dask's own ``retries=`` would retry bad rows too.
"""

from __future__ import annotations

import os

from ._io import require

require("distributed", "dask", "backend='dask'")

from distributed import Client, WorkerPlugin, as_completed  # noqa: E402

from ._model import ModelRef, load_runner  # noqa: E402
from ._shard import process_shard, set_threads  # noqa: E402

__all__ = ["ModelPlugin", "run_dask"]


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


def run_dask(tasks, ref: ModelRef, client, address, workers, threads, max_retries, on_result, stats) -> None:
    from ._run import FATAL, raise_failed

    own = None
    if isinstance(client, str):  # backend="dask"
        if address is None:
            raise ValueError("backend='dask' needs scheduler='tcp://host:8786' (the scheduler address), "
                             "or pass a dask.distributed.Client as backend")
        own = client = Client(address)
    try:
        client.register_plugin(ModelPlugin(ref.to_dict(), threads), name=f"edgepack-model-{ref.sha256[:16]}")
        if not client.nthreads():
            client.wait_for_workers(1, timeout=120)
        nthreads = sum(client.nthreads().values())
        stats["workers"] = min(workers or nthreads, nthreads)
        attempts: dict[int, int] = {}
        by_key: dict[str, dict] = {}
        live = []

        def submit(t):
            key = f"edgepack-shard-{t['shard_id']}-{attempts.get(t['index'], 0)}"
            f = client.submit(process_shard, t, key=key, pure=False, retries=0)
            by_key[f.key] = t
            live.append(f)
            return f

        # At most `workers` shards in flight when asked for fewer than the cluster has; else all
        # are submitted and the scheduler spreads them.
        limit = workers or len(tasks)
        queue = list(tasks)
        ac = as_completed([submit(t) for t in queue[:limit]])
        queue = queue[limit:]
        for f in ac:
            t = by_key[f.key]
            if f.status == "finished":
                on_result(f.result())
            else:
                exc = f.exception()
                k = attempts.get(t["index"], 0)
                if isinstance(exc, FATAL) or k >= max_retries:
                    client.cancel(live)
                    raise_failed(t, exc, k)
                attempts[t["index"]] = k + 1
                stats["retried"] += 1
                ac.add(submit(t))
            if queue:
                ac.add(submit(queue.pop(0)))
        # the futures are still held, so the scheduler still knows their tasks
        stats["retried"] += client.run_on_scheduler(_suspicious, [f.key for f in live])
        del live
    finally:
        if own is not None:
            own.close()
