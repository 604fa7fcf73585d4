"""Slow checks at larger N (run with `pytest -m slow`; CI runs them)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxebm import enumeration, ising
from tests import reference

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("n", [28, 30])
def test_curie_weiss_large_n(n):
    coupling, field = 1.2, 0.05
    J = np.full((n, n), coupling / n) - np.eye(n) * coupling / n
    want_z, want_mean, want_corr = reference.curie_weiss(n, coupling, field)
    log_z, mean, corr = enumeration.pairwise_moments(np.full(n, field), J)
    assert abs(float(log_z) - want_z) <= 2e-6 * abs(want_z)
    np.testing.assert_allclose(mean, want_mean, atol=3e-6)
    off = ~np.eye(n, dtype=bool)
    np.testing.assert_allclose(np.asarray(corr)[off], want_corr, atol=3e-6)


def test_open_chain_n30(rng):
    n = 30
    h = rng.normal(scale=0.4, size=n)
    c = rng.normal(scale=0.8, size=n - 1)
    want_z, want_mean, _ = reference.chain_log_z_and_moments(h, c)
    log_z, mean, _ = enumeration.pairwise_moments(h, np.diag(c, 1) + np.diag(c, -1))
    assert abs(float(log_z) - want_z) <= 2e-6 * abs(want_z)
    np.testing.assert_allclose(mean, want_mean, atol=3e-6)


def test_generic_engine_past_two_to_the_32_codes():
    # 33 spins with chunks of 2^20: the chunk index supplies bits 20..32.
    n = 33
    h = np.linspace(-1, 1, n)
    got = enumeration.log_sum_exp_states(lambda x: x @ jnp.asarray(h, jnp.float32), n, chunk_size=2**22,
                                         max_seconds=3600)
    assert abs(float(got) - reference.independent_log_z(h)) <= 2e-6 * reference.independent_log_z(h)


def test_sample_exact_n30_moments():
    params = ising.sherrington_kirkpatrick(jax.random.key(3), 30, beta=0.5, field_std=0.2)
    samples = np.asarray(ising.sample_exact(jax.random.key(4), params, 50_000))
    mean, corr = ising.moments(params)
    num = samples.shape[0]
    se = np.sqrt(np.clip(1 - np.asarray(mean) ** 2, 1e-3, None) / num)
    np.testing.assert_array_less(np.abs(samples.mean(0) - mean), 5 * se)
    np.testing.assert_array_less(np.abs(samples.T @ samples / num - corr), 5 / np.sqrt(num))


def test_float64_dense_n20(x64, rng):
    n = 20
    J = np.triu(rng.normal(size=(n, n)) / np.sqrt(n), 1)
    J = J + J.T
    h = rng.normal(size=n) * 0.2
    X = reference.all_states(n)
    lw = 0.5 * np.einsum("si,ij,sj->s", X, J, X) + X @ h
    want = reference.logsumexp(lw)
    p = np.exp(lw - want)
    log_z, mean, corr = enumeration.pairwise_moments(jnp.asarray(h), jnp.asarray(J))
    assert abs(float(log_z) - want) <= 1e-11 * abs(want)
    np.testing.assert_allclose(mean, p @ X, atol=1e-12)


def test_pallas_kernel_float32_matches_float64_at_n24(rng):
    # Issue #8: float32 within 2e-6 relative of float64 at N <= 24 (interpret mode on CPU).
    from tests.conftest import _x64, random_couplings

    n = 24
    h, J = random_couplings(rng, n, scale=0.4)
    log_z, mean, corr = enumeration.pairwise_moments(jnp.asarray(h, jnp.float32), jnp.asarray(J, jnp.float32),
                                                     engine="pallas")
    with _x64():
        want = enumeration.pairwise_moments(np.asarray(h), np.asarray(J), engine="xla")
        want = [np.asarray(a) for a in want]
    assert abs(float(log_z) - want[0]) <= 2e-6 * abs(want[0])
    np.testing.assert_allclose(mean, want[1], atol=3e-6)
    np.testing.assert_allclose(corr, want[2], atol=3e-6)
