"""Shared fixtures: every available instruction-set path, forced the way a user would force it."""

import numpy as np
import pytest

import edgepack

ISAS = edgepack.available_isas()


@pytest.fixture(params=ISAS)
def isa(request):
    """Runs the test once per path this machine can run (edgepack.set_isa, as EDGEPACK_ISA does)."""
    with edgepack.use_isa(request.param):
        yield request.param


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)
