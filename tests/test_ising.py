"""Exact Ising quantities against the float64 brute force."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxebm import ising
from jaxebm.ising import IsingParams
from tests import reference
from tests.conftest import random_couplings


def _params(rng, n, dtype=jnp.float32, **kw):
    h, J = random_couplings(rng, n, **kw)
    return IsingParams(jnp.asarray(h, dtype), jnp.asarray(J, dtype)), h, J


def test_log_weight_is_the_pair_sum_of_eq_2_28(rng):
    params, h, J = _params(rng, 6)
    X = reference.all_states(6)
    np.testing.assert_allclose(ising.log_weight(params, X), reference.ising_log_weights(h, J, X),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ising.energy(params, X[3]), -reference.ising_log_weights(h, J, X[3:4])[0],
                               rtol=1e-6)


@pytest.mark.parametrize("n", [4, 10, 16])
def test_log_partition_log_prob_and_moments(rng, n):
    params, h, J = _params(rng, n)
    want = reference.ising_log_z(h, J)
    assert abs(float(ising.log_partition(params)) - want) <= 2e-6 * abs(want)
    mean, corr = ising.moments(params)
    want_mean, want_corr = reference.ising_moments(h, J)
    np.testing.assert_allclose(mean, want_mean, atol=2e-6)
    np.testing.assert_allclose(corr, want_corr, atol=2e-6)
    X = reference.all_states(n)[:50]
    np.testing.assert_allclose(ising.log_prob(params, X),
                               reference.ising_log_weights(h, J, X) - want, rtol=2e-6, atol=2e-5)


def test_float64_end_to_end(x64, rng):
    params, h, J = _params(rng, 12, dtype=jnp.float64)
    assert ising.log_partition(params).dtype == jnp.float64
    np.testing.assert_allclose(float(ising.log_partition(params)), reference.ising_log_z(h, J), rtol=1e-11)
    data = reference.all_states(12)[::7]
    np.testing.assert_allclose(float(ising.nll(params, data)), reference.ising_nll(h, J, data), rtol=1e-11)


def test_gradient_of_log_partition_is_the_moments(rng):
    params, h, J = _params(rng, 9)
    grads = jax.grad(ising.log_partition)(params)
    mean, corr = reference.ising_moments(h, J)
    np.testing.assert_allclose(grads.h, mean, atol=2e-6)
    np.testing.assert_allclose(grads.J, 0.5 * corr, atol=2e-6)


def test_nll_gradient_is_moment_difference(rng, x64):
    params, h, J = _params(rng, 7, dtype=jnp.float64)
    data = np.asarray(ising.sample_exact(jax.random.key(0), params, 500))
    g = jax.grad(ising.nll)(params, data)
    mean_m, corr_m = reference.ising_moments(h, J)
    mean_d, corr_d = data.mean(0), data.T @ data / len(data)
    np.testing.assert_allclose(g.h, mean_m - mean_d, atol=1e-12)
    np.testing.assert_allclose(g.J, 0.5 * (corr_m - corr_d), atol=1e-12)
    np.testing.assert_allclose(float(ising.nll(params, data)), reference.ising_nll(h, J, data), rtol=1e-12)


def test_data_moments_and_residual(rng):
    params, h, J = _params(rng, 5)
    data = reference.all_states(5)[[0, 3, 3, 7, 30]]
    mean, corr = ising.data_moments(data)
    np.testing.assert_allclose(mean, data.mean(0))
    np.testing.assert_allclose(corr, data.T @ data / 5)
    mean_m, corr_m = reference.ising_moments(h, J)
    want = max(np.abs(mean_m - data.mean(0)).max(), np.abs(corr_m - data.T @ data / 5).max())
    np.testing.assert_allclose(float(ising.moment_residual(params, data)), want, atol=2e-6)


def test_exact_kl(rng, x64):
    p, hp, Jp = _params(rng, 8, dtype=jnp.float64)
    q, hq, Jq = _params(rng, 8, dtype=jnp.float64)
    np.testing.assert_allclose(float(ising.kl(p, q)), reference.ising_kl(hp, Jp, hq, Jq), rtol=1e-10)
    assert abs(float(ising.kl(p, p))) < 1e-12


def test_sample_exact_histogram_matches_probabilities(rng):
    n, num = 5, 200_000
    params, h, J = _params(rng, n, scale=0.7)
    samples = np.asarray(ising.sample_exact(jax.random.key(42), params, num))
    assert set(np.unique(samples)) <= {-1.0, 1.0}
    codes = (samples > 0).astype(int) @ (2 ** np.arange(n))
    counts = np.bincount(codes, minlength=2**n)
    p = reference.ising_probs(h, J)
    # Pearson chi-square with 31 degrees of freedom: mean 31, sd ~7.9; 80 is > 6 sd.
    chi2 = np.sum((counts - num * p) ** 2 / (num * p))
    assert chi2 < 80, chi2
    # Each state's frequency within 5 binomial standard errors.
    np.testing.assert_array_less(np.abs(counts / num - p), 5 * np.sqrt(p * (1 - p) / num))


def test_sample_exact_moments_two_stage_n20(rng):
    n, num = 20, 100_000
    params, _, _ = _params(rng, n, scale=0.25)
    samples = np.asarray(ising.sample_exact(jax.random.key(1), params, num))
    mean, corr = ising.moments(params)
    se = np.sqrt(np.clip(1 - np.asarray(mean) ** 2, 1e-3, None) / num)
    np.testing.assert_array_less(np.abs(samples.mean(0) - mean), 5 * se)
    np.testing.assert_array_less(np.abs(samples.T @ samples / num - corr), 5 / np.sqrt(num))


def test_sherrington_kirkpatrick_and_init_are_valid():
    for params in (ising.sherrington_kirkpatrick(jax.random.key(0), 12, beta=1.3, field_std=0.1),
                   ising.init(jax.random.key(1), 12, scale=0.1)):
        ising.validate_params(params)
        np.testing.assert_array_equal(params.J, params.J.T)
        np.testing.assert_array_equal(np.diag(params.J), 0)
    J = np.asarray(ising.sherrington_kirkpatrick(jax.random.key(0), 400, beta=2.0).J)
    assert abs(J[np.triu_indices(400, 1)].std() - 2.0 / np.sqrt(400)) < 0.003


def test_bad_inputs_raise_value_errors(rng):
    params, _, _ = _params(rng, 4)
    asym = params._replace(J=params.J.at[0, 1].add(1.0))
    with pytest.raises(ValueError, match="params.J must be symmetric"):
        ising.log_partition(asym)
    with pytest.raises(ValueError, match="zero diagonal"):
        ising.log_partition(params._replace(J=params.J + jnp.eye(4)))
    with pytest.raises(ValueError, match="params.h contains 1 NaN"):
        ising.moments(params._replace(h=params.h.at[2].set(jnp.nan)))
    with pytest.raises(ValueError, match=r"params.J must have shape \(4, 4\)"):
        ising.log_partition(IsingParams(params.h, jnp.zeros((3, 3))))
    with pytest.raises(ValueError, match="data must hold spins in"):
        ising.nll(params, np.array([[0.0, 1.0, 1.0, -1.0]]))
    with pytest.raises(ValueError, match="data must have 4 columns"):
        ising.nll(params, np.ones((3, 5)))
    with pytest.raises(ValueError, match="data must be a batch"):
        ising.nll(params, np.ones(4))
    with pytest.raises(ValueError, match="NaN"):
        ising.nll(params, np.array([[np.nan, 1.0, 1.0, -1.0]]))
    with pytest.raises(ValueError, match="x must hold spins"):
        ising.log_prob(params, np.array([1.0, 2.0, 1.0, -1.0]))
    with pytest.raises(ValueError, match="num_samples"):
        ising.sample_exact(jax.random.key(0), params, 0)
    big = IsingParams(jnp.zeros(50), jnp.zeros((50, 50)))
    with pytest.raises(ValueError, match=r"2\^50 = .* states, estimated at"):
        ising.log_partition(big)


def test_jitted_training_step_compiles_once(rng):
    data = jnp.asarray(reference.all_states(8)[::5])

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params):
        loss, g = jax.value_and_grad(ising.nll)(params, data)
        return jax.tree_util.tree_map(lambda p, gi: p - 0.1 * gi, params, g), loss

    params = ising.init(jax.random.key(0), 8)
    losses = []
    for _ in range(5):
        params, loss = step(params)
        losses.append(float(loss))
    assert losses[-1] < losses[0]
