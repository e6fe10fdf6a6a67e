"""``edgepack batch MODEL --input 'data/*.parquet' --column text --output out/``: run a model over
sharded data (see :mod:`edgepack.batch`), locally or on a Dask or Ray cluster."""

from __future__ import annotations

import argparse

__all__ = ["batch_main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 via cli.py, instead of usage + sys.exit
        raise ValueError(f"{message} (see 'edgepack batch --help')")


def batch_main(argv) -> int:
    """Parse ``argv``, run :func:`edgepack.batch.run`, print the report; returns the exit status."""
    p = _Parser(prog="edgepack batch", description=(
        "Run a saved model (edgepack file, SentenceEncoder file or .onnx) over Parquet or .npy shards; "
        "one output file per input file, committed atomically; a rerun skips committed shards."))
    p.add_argument("model", help="model file: edgepack.save / SentenceEncoder.save output, or .onnx")
    p.add_argument("--input", required=True, help="input shards: a glob such as 'data/*.parquet' (quote it) or "
                   "'data/*.npy'")
    p.add_argument("--column", default="text", help="Parquet column to run (text or lists of numbers; default text)")
    p.add_argument("--id-column", default="id", help="Parquet id column (default id; 'none': row numbers)")
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument("--output-format", choices=("parquet", "npy"), default="parquet")
    p.add_argument("--output-column", default="embedding", help="Parquet output column (default embedding)")
    p.add_argument("--backend", choices=("local", "threads", "dask", "ray"), default="local")
    p.add_argument("--scheduler", default=None, help="Dask scheduler address (tcp://host:8786) or Ray address")
    p.add_argument("--workers", type=int, default=None, help="concurrent shards (default: one per CPU)")
    p.add_argument("--threads-per-worker", type=int, default=None, help="kernel threads per worker (default 1)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-retries", type=int, default=3)
    p.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                   help="bad rows: stop naming shard and row (raise), or write them to errors files (skip)")
    p.add_argument("--no-resume", action="store_true", help="recompute shards an earlier run committed")
    p.add_argument("--overwrite", action="store_true", help="delete part files of other runs in --output")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--verify", action="store_true", help="then check every input id is in the output exactly once")
    try:
        args = p.parse_args(argv)
    except SystemExit as e:  # --help
        return int(e.code or 0)
    from .. import batch
    from . import CliError

    id_col = None if args.id_column.lower() == "none" else args.id_column
    if args.input.endswith(".npy"):
        source = batch.NpySource(args.input)
    else:
        source = batch.ParquetSource(args.input, column=args.column, id_column=id_col)
    sink = (batch.NpySink(args.output) if args.output_format == "npy"
            else batch.ParquetSink(args.output, column=args.output_column))
    if args.backend == "dask" and not args.scheduler:
        raise ValueError("--backend dask needs --scheduler tcp://host:8786")
    try:
        report = batch.run(args.model, source, sink, backend=args.backend, workers=args.workers,
                           threads_per_worker=args.threads_per_worker, batch_size=args.batch_size,
                           max_retries=args.max_retries, on_error=args.on_error, resume=not args.no_resume,
                           overwrite=args.overwrite, progress=not args.no_progress, scheduler=args.scheduler)
    except RuntimeError as e:  # a shard failed past max_retries: one line, exit 2
        raise CliError(str(e)) from None
    print(report)
    if args.verify:
        v = batch.verify(source, sink)
        print(v)
        return 0 if v.ok else 1
    return 0
