"""edgepack.batch: all-MiniLM-L6-v2 int8 over Parquet shards, 1 and 2 workers (pytest-benchmark).

    PYTHONPATH=python python3 -m pytest benchmarks/bench_batch.py --benchmark-only

A small corpus (4,800 sentences in 24 shards) so the view stays quick; ``edgepack bench batch``
runs the full 100,000-sentence comparison (in-process encode, local and Dask, 1 and 2 workers) and
prints the ratios.
"""

from __future__ import annotations

import os
import shutil

import pytest

pytest.importorskip("pyarrow")

from edgepack import batch  # noqa: E402
from edgepack.benchsuite.batch import make_corpus  # noqa: E402
from edgepack.benchsuite.minilm import default_model_dir  # noqa: E402
from edgepack.text import SentenceEncoder  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("batch")
    model = str(d / "minilm_int8.edgepack")
    SentenceEncoder.from_pretrained(default_model_dir(), quantize="int8").save(model)
    make_corpus(str(d / "in"), 4800, 24)
    return d, model


@pytest.mark.parametrize("workers", [1, 2])
def test_local(benchmark, corpus, workers):
    d, model = corpus
    src = batch.ParquetSource(str(d / "in" / "*.parquet"), column="text")
    out = str(d / f"out{workers}")
    benchmark.group = "edgepack.batch MiniLM int8, 4,800 sentences, local backend"

    def once():
        shutil.rmtree(out, ignore_errors=True)
        return batch.run(model, src, out, workers=workers, threads_per_worker=1, batch_size=64, progress=False)

    rep = benchmark.pedantic(once, rounds=3, iterations=1)
    assert rep.rows == 4800 and os.path.exists(os.path.join(out, "_SUCCESS"))
