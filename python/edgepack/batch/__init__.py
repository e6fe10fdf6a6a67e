"""Run an edgepack model over a large dataset: locally, or on a Dask or Ray cluster.

::

    from edgepack import batch
    report = batch.run("minilm_int8.edgepack", batch.ParquetSource("data/*.parquet", column="text"),
                       "out/", backend="local")          # or "threads", "dask", "ray"
    print(report, batch.verify(batch.ParquetSource("data/*.parquet", column="text"), "out/"))

One input shard (file) gives one output file, written under a temporary name and renamed into
place; ``_MANIFEST.json`` and ``_SUCCESS`` come last.  Workers receive a :class:`ModelRef` (path
and SHA-256), never the model; a rerun skips the shards already committed.  Parquet needs
``pyarrow`` (extra ``edgepack[batch]``); the engines need ``edgepack[dask]`` or ``edgepack[ray]``.
"""

from ._io import NpySink, NpySource, ParquetSink, ParquetSource
from ._model import ModelRef
from ._run import RunReport, Shard, VerifyReport, plan, run, verify
from ._shard import ShardError

__all__ = ["run", "verify", "plan", "RunReport", "VerifyReport", "Shard", "ShardError", "ModelRef",
           "ParquetSource", "NpySource", "ParquetSink", "NpySink"]
