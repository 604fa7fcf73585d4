"""Discrete KL, entropy, empirical distributions (Eq. (1.1), (2.6)-(2.10), (2.17))."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxebm import divergence, ising
from tests import reference


def test_kl_properties(rng):
    for _ in range(20):
        p, q = rng.dirichlet(np.ones(6)), rng.dirichlet(np.ones(6))
        k = float(divergence.kl(p, q))
        assert k >= 0  # Eq. (2.8)
        np.testing.assert_allclose(k, np.sum(p * np.log(p / q)), rtol=1e-5)
        np.testing.assert_allclose(float(divergence.kl_from_log_probs(np.log(p), np.log(q))), k, rtol=1e-5)
    assert float(divergence.kl(p, p)) == 0
    zero = np.array([0.5, 0.5, 0.0])
    np.testing.assert_allclose(float(divergence.kl(zero, np.array([0.25, 0.25, 0.5]))), np.log(2), rtol=1e-6)
    assert np.isinf(float(divergence.kl(np.array([0.5, 0.5]), np.array([1.0, 0.0]))))


def test_entropy():
    np.testing.assert_allclose(float(divergence.entropy(np.full(8, 1 / 8))), np.log(8), rtol=1e-6)
    assert float(divergence.entropy(np.array([1.0, 0.0]))) == 0


def test_empirical_distribution_and_log_likelihood(rng):
    n = 4
    X = reference.all_states(n)
    data = X[[1, 1, 5, 15]]
    p0 = np.asarray(divergence.empirical_distribution(data))
    assert p0[1] == 0.5 and p0[5] == 0.25 and p0[15] == 0.25 and p0.sum() == 1
    np.testing.assert_array_equal(divergence.states_to_codes(X), np.arange(2**n))
    h, J = rng.normal(size=n), np.zeros((n, n))
    params = ising.IsingParams(jnp.asarray(h, jnp.float32), jnp.asarray(J, jnp.float32))
    ll = float(divergence.empirical_log_likelihood(lambda x: ising.log_prob(params, x), data))
    # Eq. (2.17): KL(p0 || q) = -ll - H(p0)
    q = reference.ising_probs(h, J)
    kl = np.sum(p0[p0 > 0] * np.log(p0[p0 > 0] / q[p0 > 0]))
    np.testing.assert_allclose(kl, -ll - float(divergence.entropy(p0)), rtol=1e-5)


def test_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        divergence.kl(np.ones(3) / 3, np.ones(2) / 2)
    with pytest.raises(ValueError, match="spins"):
        divergence.empirical_distribution(np.array([[0.0, 1.0]]))
