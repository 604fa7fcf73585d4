"""Discrete KL, entropy, empirical distributions (Eq. (1.1), (2.6)-(2.10), (2.17))."""


import jax.numpy as jnp
import numpy as np
import pytest

from jaxebm import divergence, ising
from tests import reference
from tests._compile import assert_compiles_once as _assert_compiles_once


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


# ----- issue #12: validation at the entry, compile once ----------------------------------------


def test_distributions_are_checked():
    p = np.array([0.1, 0.2, 0.3, 0.4])
    q = np.full(4, 0.25)
    # a non-normalised p gave a negative "divergence"
    with pytest.raises(ValueError, match="p must sum to 1"):
        divergence.kl(2 * p, q)
    with pytest.raises(ValueError, match="q must sum to 1"):
        divergence.kl(p, q * 0.5)
    with pytest.raises(ValueError, match="p must be a probability distribution; it has negative entries"):
        divergence.kl(np.array([-0.2, 0.4, 0.4, 0.4]), q)
    # entropy never drops a NaN
    with pytest.raises(ValueError, match="p contains 1 NaN"):
        divergence.entropy(np.array([0.5, np.nan, 0.5]))
    with pytest.raises(ValueError, match="p must sum to 1"):
        divergence.entropy(np.array([0.5, 0.7]))
    with pytest.raises(ValueError, match="p must not be empty"):
        divergence.entropy(np.zeros(0))
    with pytest.raises(ValueError, match="axis must be an integer"):
        divergence.entropy(p, axis=1)
    with pytest.raises(ValueError, match="log_p contains NaN or \\+inf|log_p must be log probabilities"):
        divergence.kl_from_log_probs(np.array([np.nan, 0.0]), np.log([0.5, 0.5]))
    with pytest.raises(ValueError, match="log_q must be normalised"):
        divergence.kl_from_log_probs(np.log([0.5, 0.5]), np.log([0.5, 0.6]))
    with pytest.raises(ValueError, match="log_p and log_q must have the same shape"):
        divergence.kl_from_log_probs(np.log([0.5, 0.5]), np.log([1.0]))
    # -inf is a zero probability, and batches along another axis are checked per column
    np.testing.assert_allclose(divergence.kl_from_log_probs(np.array([0.0, -np.inf]), np.log([0.5, 0.5])),
                               np.log(2), rtol=1e-6)
    np.testing.assert_allclose(divergence.kl(np.stack([p, q], 1), np.stack([q, q], 1), axis=0),
                               [float(divergence.kl(p, q)), 0.0], rtol=1e-6, atol=1e-7)
    # lists are accepted
    np.testing.assert_allclose(divergence.kl(p.tolist(), q.tolist()), divergence.kl(p, q), rtol=1e-7)
    np.testing.assert_allclose(divergence.entropy(p.tolist()), divergence.entropy(p), rtol=1e-7)


def test_spin_data_and_log_likelihood_are_checked():
    with pytest.raises(ValueError, match="x must hold spins"):
        divergence.states_to_codes(np.array([[0.0, 1.0]]))
    with pytest.raises(ValueError, match="x contains 1 NaN"):
        divergence.states_to_codes(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="data must hold at least one sample"):
        divergence.empirical_distribution(np.ones((0, 3)))
    with pytest.raises(ValueError, match="data must be a batch"):
        divergence.empirical_distribution(np.ones((1, 2, 3)))
    with pytest.raises(ValueError, match="log_prob_fn must be a callable"):
        divergence.empirical_log_likelihood(np.ones(3), np.ones((3, 2)))
    with pytest.raises(ValueError, match="log_prob_fn returned NaN"):
        divergence.empirical_log_likelihood(lambda x: jnp.log(x[:, 0]), -np.ones((3, 2)))
    with pytest.raises(ValueError, match="data contains 1 NaN"):
        divergence.empirical_log_likelihood(lambda x: x[:, 0], np.array([[np.nan, 1.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="data must hold at least one sample"):
        divergence.empirical_log_likelihood(lambda x: x[:, 0], np.ones((0, 2)))
    np.testing.assert_array_equal(divergence.states_to_codes(np.array([[1, -1, 1]], np.int8)), [5])


def test_eager_calls_compile_once():
    def calls(seed):
        rng = np.random.default_rng(seed)
        p, q = (jnp.asarray(rng.dirichlet(np.ones(8)), jnp.float32) for _ in range(2))
        data = jnp.asarray(np.where(rng.random((10, 3)) < 0.5, -1.0, 1.0), jnp.float32)
        return {
            "kl": lambda: divergence.kl(p, q),
            "entropy": lambda: divergence.entropy(p),
            "kl_from_log_probs": lambda: divergence.kl_from_log_probs(jnp.log(p), jnp.log(q)),
            "states_to_codes": lambda: divergence.states_to_codes(data),
            "empirical_distribution": lambda: divergence.empirical_distribution(data),
        }

    _assert_compiles_once(calls(1), calls(2))


def test_size_limits_name_the_argument():
    with pytest.raises(ValueError, match="data must have at most 24 spins"):
        divergence.empirical_distribution(np.ones((2, 40)))
    with pytest.raises(ValueError, match="x must have at most 31 spins"):
        divergence.states_to_codes(np.ones((2, 70)))


def test_kl_is_infinite_where_q_rules_out_a_state_whose_probability_underflows():
    # p = (1, e^-200) in float32 (the second underflows to 0 in exp), q rules the second out
    got = divergence.kl_from_log_probs(np.array([0.0, -200.0], np.float32), np.array([0.0, -np.inf], np.float32))
    assert float(got) == np.inf
    # states that p rules out contribute nothing
    assert float(divergence.kl_from_log_probs(np.array([0.0, -np.inf]), np.array([0.0, -np.inf]))) == 0.0


def test_empirical_log_likelihood_refuses_plus_inf():
    with pytest.raises(ValueError, match=r"log_prob_fn returned \+inf"):
        divergence.empirical_log_likelihood(lambda x: jnp.array([jnp.inf, 0.0]), [[1.0, 2.0], [3.0, 4.0]])


def test_entropy_of_a_scalar_names_p():
    with pytest.raises(ValueError, match="p must be a probability distribution"):
        divergence.entropy(1.0)
