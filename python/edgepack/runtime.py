"""Runtime control: which instruction-set path the kernels use, and how many threads."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from . import _core

__all__ = [
    "cpu_info",
    "set_isa",
    "get_isa",
    "available_isas",
    "use_isa",
    "set_num_threads",
    "get_num_threads",
]


def cpu_info() -> dict:
    """Describe this CPU and the kernel paths edgepack will use.

    Returns
    -------
    dict
        ``features``: dict of detected CPU features (bool), with OS support folded in;
        ``built``: paths compiled into this build; ``available``: paths this CPU can run
        (built and supported), weakest first; ``best``: the fastest available path;
        ``isa``: the active path; ``num_threads``: threads kernels may use;
        ``default_num_threads``: ``EDGEPACK_NUM_THREADS``, else ``OMP_NUM_THREADS``, else the
        CPUs in this process's affinity mask; ``amx_reason``: ``None`` when the
        ``avx512_amx`` path is available, else why not (not built, no CPUID bit, the OS's tile
        state, the tile palette, the Linux permission request); ``amx_emulated``: ``True`` only in the test
        build whose AMX path runs on a scalar model of the tiles; ``gemm_small_route``:
        ``(min_m, min_k)``: int8 GEMMs with ``M < min_m`` or ``K < min_k`` run on the path below
        the active one (``avx512_amx`` hands M = 1 and tiny K to ``avx512_vnni``; ``(0, 0)``
        when the active path has no such route; ``EDGEPACK_AMX_MIN_M`` / ``EDGEPACK_AMX_MIN_K``
        override it).
    """
    return {
        "features": dict(_core.cpu_features()),
        "built": list(_core.built_isas()),
        "available": list(_core.available_isas()),
        "best": _core.best_isa(),
        "isa": _core.get_isa(),
        "num_threads": _core.get_num_threads(),
        "default_num_threads": _omp_num_threads() or _core.default_num_threads(),
        "amx_reason": _core.amx_reason(),
        "amx_emulated": bool(_core.amx_emulated()),
        "gemm_small_route": tuple(_core.gemm_get_route()),
    }


def available_isas() -> list[str]:
    """Paths this build and CPU can run, weakest first (``"scalar"`` always included)."""
    return list(_core.available_isas())


def set_isa(name: str) -> None:
    """Make every kernel use path ``name`` (one of ``available_isas()``).

    This is the mechanism ``EDGEPACK_ISA`` uses at import. Raises ``ValueError`` naming the
    available paths when ``name`` is unknown, not compiled in, or not supported by this CPU.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str such as 'avx2'; got {type(name).__name__}")
    _core.set_isa(name)


def get_isa() -> str:
    """The active path's name."""
    return _core.get_isa()


@contextmanager
def use_isa(name: str) -> Iterator[None]:
    """Context manager: run the body on path ``name``, then restore the previous path.

    The path is process-wide: do not switch it while other threads run kernels.
    """
    prev = get_isa()
    set_isa(name)
    try:
        yield
    finally:
        set_isa(prev)


def set_num_threads(n: int) -> None:
    """Use up to ``n`` (>= 1) threads in the kernels. Safe to call from any thread."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int >= 1; got {type(n).__name__}")
    _core.set_num_threads(n)


def get_num_threads() -> int:
    """Threads the kernels may use (default: ``EDGEPACK_NUM_THREADS``, else ``OMP_NUM_THREADS``,
    else the CPUs this process may run on)."""
    return _core.get_num_threads()


def _omp_num_threads() -> int | None:
    """``OMP_NUM_THREADS`` as a thread count when ``EDGEPACK_NUM_THREADS`` is unset, else None.

    Dask's nanny, Ray and job schedulers tell a process its share of the CPUs through
    ``OMP_NUM_THREADS``; without honouring it, each of N worker processes would start one kernel
    thread per CPU of the machine (N x CPUs threads fighting for CPUs).  A nested list ("4,2")
    gives its first level; a value that is not a positive integer is another library's business
    and is ignored.
    """
    if os.environ.get("EDGEPACK_NUM_THREADS", "").strip():
        return None
    raw = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    try:
        n = int(raw)
    except ValueError:
        return None
    return n if n >= 1 else None


def _env_route(var: str) -> int:
    v = os.environ.get(var, "").strip()
    if not v:
        return -1
    try:
        n = int(v)
    except ValueError:
        n = -2
    if n < 0:
        raise RuntimeError(f"{var}={v!r}: expected an int >= 0 (0 sends every shape to the AMX kernel)")
    return n


def _apply_env() -> None:
    omp = _omp_num_threads()
    if omp is not None:
        set_num_threads(omp)
    # Small-shape route of the AMX path (tests and crossover measurements force either side).
    min_m, min_k = _env_route("EDGEPACK_AMX_MIN_M"), _env_route("EDGEPACK_AMX_MIN_K")
    if min_m >= 0 or min_k >= 0:
        _core.gemm_set_route(min_m, min_k)
    name = os.environ.get("EDGEPACK_ISA", "").strip()
    if name:
        try:
            set_isa(name)
        except ValueError as e:
            raise RuntimeError(f"EDGEPACK_ISA={name!r}: {e}") from None
