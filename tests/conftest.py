import contextlib

import jax
import numpy as np
import pytest


@contextlib.contextmanager
def _x64():
    if hasattr(jax, "enable_x64"):
        with jax.enable_x64(True):
            yield
    else:  # older JAX
        from jax.experimental import enable_x64

        with enable_x64():
            yield


@pytest.fixture
def x64():
    """Runs the test body with float64 enabled (restored afterwards)."""
    with _x64():
        yield


@pytest.fixture
def rng():
    return np.random.default_rng(20261125)


def random_couplings(rng, n, scale=0.5, field=0.3):
    J = np.triu(rng.normal(scale=scale, size=(n, n)), 1)
    return rng.normal(scale=field, size=n), J + J.T
