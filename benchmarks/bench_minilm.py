"""all-MiniLM-L6-v2: edgepack int8/fp32 vs onnxruntime int8/fp32 (pytest-benchmark).

    PYTHONPATH=python python3 -m pytest benchmarks/bench_minilm.py --benchmark-only

Batch 1 and batch 32 at sequence length 128, at 1 and 2 threads; onnxruntime is skipped when it
is not installed.  ``edgepack bench minilm`` prints the same comparison as one table with ratios.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgepack.benchsuite.minilm import OrtEncoder, _Threads, default_model_dir, export_onnx, fixed_ids
from edgepack.text import SentenceEncoder


@pytest.fixture(scope="module")
def model_dir():
    return default_model_dir()


@pytest.fixture(scope="module")
def encoders(model_dir):
    return {"int8": SentenceEncoder.from_pretrained(model_dir, quantize="int8"),
            "fp32": SentenceEncoder.from_pretrained(model_dir)}


@pytest.fixture(scope="module")
def onnx_paths(model_dir):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    fp32, int8 = export_onnx(model_dir)
    return {"fp32": fp32, "int8": int8}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch", [1, 32])
@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_edgepack(benchmark, encoders, precision, batch, threads):
    enc = encoders[precision]
    ids = fixed_ids(enc.tokenizer, batch, 128)
    benchmark.group = f"minilm batch {batch} seq 128, {threads} thread(s)"
    with _Threads(threads):
        out = benchmark(enc.encode_ids, ids)
    assert out.shape == (batch, 384)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch", [1, 32])
@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_onnxruntime(benchmark, encoders, onnx_paths, precision, batch, threads):
    sess = OrtEncoder(onnx_paths[precision], threads)
    ids = fixed_ids(encoders["int8"].tokenizer, batch, 128)
    benchmark.group = f"minilm batch {batch} seq 128, {threads} thread(s)"
    out = benchmark(sess.run_ids, ids)
    assert out.shape == (batch, 384) and np.isfinite(out).all()
