"""The Ray backend: one actor per worker (the model loaded once in its constructor), shards sent
to idle actors, outputs committed through edgepack's sink.

Why not Ray Data's ``write_parquet``: it writes straight to final names and appends on a rerun
(a rerun doubles the rows), while the shard contract here commits each shard once.  Actors ask
for a fraction of a CPU (0.5 per kernel thread): with whole CPUs, ``workers`` actors on a
2-CPU machine take every CPU and anything else Ray must schedule waits forever.  A killed actor
is restarted by Ray (``max_restarts=-1``) and its shard resubmitted here, up to ``max_retries``.
"""

from __future__ import annotations

import os
from collections import deque

from ._io import require

ray = require("ray", "ray", "backend='ray'")

from ._model import ModelRef, load_runner  # noqa: E402
from ._shard import ShardError, process_shard, set_threads  # noqa: E402

__all__ = ["ShardActor", "run_ray"]


class ShardActor:
    """Holds the model for its process; ``run(task)`` processes one shard."""

    def __init__(self, ref: dict, threads: int):
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        set_threads(threads)
        load_runner(ModelRef.from_dict(ref))

    def run(self, task: dict) -> dict:
        return process_shard(task)

    def pid(self) -> int:
        return os.getpid()


def run_ray(tasks, ref: ModelRef, address, workers, threads, max_retries, on_result, stats) -> None:
    from ray.exceptions import RayActorError, RayTaskError

    from ._run import FATAL, raise_failed

    own = not ray.is_initialized()
    if own:
        ray.init(address=address, include_dashboard=False, configure_logging=False, log_to_driver=False)
    actors = []
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        if workers is not None and workers * threads > cpus:
            raise ValueError(f"workers ({workers}) x threads_per_worker ({threads}) = {workers * threads} exceeds "
                             f"the Ray cluster's {cpus} CPUs; lower one of them")
        n = min(workers or max(1, cpus // threads), len(tasks))
        stats["workers"] = n
        cls = ray.remote(ShardActor).options(num_cpus=0.5 * threads, max_restarts=-1, max_task_retries=0)
        actors = [cls.remote(ref.to_dict(), threads) for _ in range(n)]
        idle, inflight, pending = list(actors), {}, deque(tasks)
        attempts: dict[int, int] = {}
        while pending or inflight:
            while idle and pending:
                a, t = idle.pop(), pending.popleft()
                inflight[a.run.remote(t)] = (a, t)
            ready, _ = ray.wait(list(inflight), num_returns=1)
            for r in ready:
                a, t = inflight.pop(r)
                idle.append(a)
                try:
                    on_result(ray.get(r))
                    continue
                except ShardError as e:  # a RayTaskError that is also the worker's ShardError
                    raise ShardError(e.shard, e.path, e.row, e.id, e.reason) from None
                except RayTaskError as e:
                    exc = e.cause if isinstance(e.cause, BaseException) else e
                except RayActorError as e:  # the actor's process died; Ray is restarting it
                    exc = e
                k = attempts.get(t["index"], 0)
                if isinstance(exc, FATAL) or k >= max_retries:
                    raise_failed(t, exc, k)
                attempts[t["index"]] = k + 1
                stats["retried"] += 1
                pending.appendleft(t)
    finally:
        for a in actors:
            ray.kill(a)
        if own:
            ray.shutdown()
