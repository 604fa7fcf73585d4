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


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Frees every compiled program after each test module.

    One pytest process compiles thousands of XLA programs (the generated bad-input suite
    alone compiles hundreds); XLA:CPU keeps each executable's code mapped until its cache
    entry goes, and a long run can crash in the compiler once memory mappings run out.
    Compile-once tests are unaffected: they count compilations within one module.
    """
    yield
    jax.clear_caches()
