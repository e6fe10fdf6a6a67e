"""Shared fixtures: every available instruction-set path, forced the way a user would force it."""

import os

import numpy as np
import pytest

import edgepack
from edgepack import _core

ISAS = edgepack.available_isas()
_INFO = edgepack.cpu_info()

# The AMX path joins `isa` by itself where it is available. Where it is built but this machine
# cannot run it, its cases are still listed and skip with the detector's reason, so a missing AMX
# shows in every run instead of passing silently.
AMX_AVAILABLE = "avx512_amx" in ISAS
if _INFO["features"].get("amx_int8"):
    AMX_SKIP_REASON = f"AMX-INT8 is present but not usable here (cpu_info()['amx_reason'] = {_INFO['amx_reason']!r})"
else:
    AMX_SKIP_REASON = f"this CPU has no AMX-INT8 (cpu_info()['amx_reason'] = {_INFO['amx_reason']!r})"
_PARAMS = ISAS + (["avx512_amx"] if "avx512_amx" in _INFO["built"] and not AMX_AVAILABLE else [])


def _use_amx():
    """avx512_amx with every shape on its own kernel (the small-shape route to avx512_vnni is
    tested on its own in test_amx.py; VNNI has its own `isa` cases)."""
    prev_isa = edgepack.get_isa()
    edgepack.set_isa("avx512_amx")
    _core.gemm_set_route(0, 0)
    try:
        yield "avx512_amx"
    finally:
        _core.gemm_set_route(-1, -1)
        edgepack.set_isa(prev_isa)


@pytest.fixture(params=_PARAMS)
def isa(request):
    """Runs the test once per path this machine can run (edgepack.set_isa, as EDGEPACK_ISA does)."""
    if request.param not in ISAS:
        pytest.skip(AMX_SKIP_REASON)
    if request.param == "avx512_amx":
        yield from _use_amx()
        return
    with edgepack.use_isa(request.param):
        yield request.param


@pytest.fixture
def amx():
    """The avx512_amx path forced, every shape on the AMX kernel; skips with the reason elsewhere."""
    if not AMX_AVAILABLE:
        pytest.skip(AMX_SKIP_REASON)
    yield from _use_amx()


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)


# -- edgepack.batch engines: one Dask cluster per test module, Ray once per session -------------


def _engine_env(tmp_path_factory) -> str:
    """Environment the engines' worker processes inherit: an absolute path to this edgepack (the
    test run may import it from the source tree) and the fault-injection file of the batch tests."""
    import os

    from edgepack.batch._shard import FAULT_ENV

    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(edgepack.__file__)))
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join([pkg_parent] + [os.path.abspath(p) for p in paths])
    if FAULT_ENV not in os.environ:
        os.environ[FAULT_ENV] = str(tmp_path_factory.getbasetemp() / "batch-fault.json")
    return os.environ[FAULT_ENV]


@pytest.fixture(scope="session")
def batch_fault_file(tmp_path_factory):
    """The file a test writes to make one worker kill itself (edgepack.batch._shard.fault_point)."""
    return _engine_env(tmp_path_factory)


class _DaskCluster:
    """A dask.distributed LocalCluster (2 worker processes x 1 thread) standing in for a cluster.

    ``ready()`` returns a client whose cluster has both workers: a nanny restarts a SIGKILLed
    worker, but here a restart sometimes never registers (seen after some kills, with no error
    logged); a fresh cluster then stands in, as an operator would replace a lost node.
    """

    def __init__(self):
        self.cluster = self.client = None

    def ready(self):
        import distributed

        if self.client is not None:
            try:
                self.client.wait_for_workers(2, timeout=30)
                return self.client
            except (TimeoutError, OSError):
                self.close()
        # LocalCluster writes its workers' pre-spawn environment (OMP_NUM_THREADS=1, ...) into
        # this process's os.environ too; later tests must see the environment they started with
        saved = dict(os.environ)
        try:
            self.cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                                    dashboard_address=None)
        finally:
            for k in set(os.environ) - set(saved):
                del os.environ[k]
            os.environ.update(saved)
        self.client = distributed.Client(self.cluster)
        return self.client

    def close(self):
        if self.client is not None:
            self.client.close()
            self.cluster.close()
        self.cluster = self.client = None


@pytest.fixture(scope="module")
def dask_cluster(batch_fault_file):
    pytest.importorskip("distributed")
    holder = _DaskCluster()
    yield holder
    holder.close()


@pytest.fixture(scope="session")
def ray_cluster(batch_fault_file):
    """A local Ray with 2 CPUs, started once per session; yields its address."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="session")
def batch_encoder_file(tmp_path_factory):
    """The int8 all-MiniLM-L6-v2 saved as one edgepack file (tokenizer included), once per session."""
    from edgepack.benchsuite.minilm import default_model_dir

    path = tmp_path_factory.mktemp("batch-model") / "minilm_int8.edgepack"
    edgepack.SentenceEncoder.from_pretrained(default_model_dir(), quantize="int8").save(path)
    return str(path)


@pytest.fixture(scope="session")
def batch_mlp_file(tmp_path_factory):
    """A small int8 MLP (8 -> 16 -> 4) saved with edgepack.save."""
    from _batch_util import tiny_int8_mlp

    path = tmp_path_factory.mktemp("batch-mlp") / "mlp_int8.edgepack"
    tiny_int8_mlp(path)
    return str(path)
