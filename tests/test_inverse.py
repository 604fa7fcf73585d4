"""Learning without MCMC (ch. 7): closed forms, recovery, objectives, degenerate data."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxebm import inverse, ising
from tests import reference


@pytest.fixture(scope="module")
def sk8():
    truth = ising.sherrington_kirkpatrick(jax.random.key(0), 8, beta=0.7, field_std=0.2)
    data = ising.sample_exact(jax.random.key(1), truth, 200_000)
    return truth, data


def _rmse(a, b):
    iu = np.triu_indices(a.J.shape[0], 1)
    return float(np.sqrt(np.mean((np.asarray(a.J)[iu] - np.asarray(b.J)[iu]) ** 2)))


def test_every_method_returns_symmetric_zero_diagonal_J(sk8):
    _, data = sk8
    for fn in (inverse.mean_field, inverse.tap, inverse.pseudolikelihood, inverse.mpf,
               lambda d: inverse.pseudolikelihood(d, symmetric=False), inverse.exact_ml):
        params = fn(data[:20_000])
        J = np.asarray(params.J)
        np.testing.assert_array_equal(J, J.T)
        np.testing.assert_array_equal(np.diag(J), 0)
        assert np.all(np.isfinite(J)) and np.all(np.isfinite(np.asarray(params.h)))


def test_mean_field_closed_form(sk8):
    _, data = sk8
    x = np.asarray(data, np.float64)
    m = x.mean(0)
    C = x.T @ x / len(x) - np.outer(m, m)
    J = -np.linalg.inv(C)
    np.fill_diagonal(J, 0)
    h = np.arctanh(m) - J @ m
    params = inverse.mean_field(data)
    np.testing.assert_allclose(params.J, J, atol=2e-4)
    np.testing.assert_allclose(params.h, h, atol=2e-4)


def test_tap_reduces_to_mean_field_for_weak_couplings():
    truth = ising.sherrington_kirkpatrick(jax.random.key(3), 8, beta=0.05, field_std=0.5)
    data = ising.sample_exact(jax.random.key(4), truth, 50_000)
    mf, tp = inverse.mean_field(data), inverse.tap(data)
    # J_tap = J_mf - 2 J^2 m_i m_j + O(J^3): the difference is second order in J
    J_mf, m = np.asarray(mf.J, np.float64), np.asarray(data, np.float64).mean(0)
    diff = np.asarray(tp.J, np.float64) - J_mf
    expansion = -2.0 * J_mf**2 * np.outer(m, m)
    assert np.abs(diff).max() < 0.1 * np.abs(J_mf).max()
    np.testing.assert_allclose(diff, expansion, atol=0.2 * np.abs(expansion).max() + 1e-6)
    # with zero magnetisations the two coincide exactly in J
    sym = jnp.concatenate([data, -data])
    np.testing.assert_allclose(inverse.tap(sym).J, inverse.mean_field(sym).J, atol=1e-6)


def test_pseudolikelihood_recovers_J(sk8):
    truth, data = sk8
    params = inverse.pseudolikelihood(data)
    assert _rmse(params, truth) < 0.03
    asym = inverse.pseudolikelihood(data, symmetric=False)
    assert _rmse(asym, truth) < 0.03
    batched = inverse.pseudolikelihood(data, batch_size=30_000)
    np.testing.assert_allclose(batched.J, params.J, atol=1e-5)
    assert _rmse(inverse.mpf(data), truth) < 0.03


def test_exact_ml_reaches_moment_residual_1e_6(sk8):
    truth, data = sk8
    params = inverse.exact_ml(data, tol=1e-6)
    assert float(ising.moment_residual(params, data)) < 1e-6
    assert _rmse(params, truth) < 0.03


@pytest.mark.parametrize("symmetric", [True, False])
def test_objective_gradients_match_finite_differences(x64, symmetric):
    rng = np.random.default_rng(0)
    data = jnp.asarray(reference.all_states(5)[rng.integers(0, 32, 300)])
    size = 5 + 10 if symmetric else 5 + 25
    theta = jnp.asarray(rng.normal(size=size) * 0.3)
    for fn in (lambda t: inverse.pseudolikelihood_objective(t, data, symmetric=symmetric, l2=0.1),
               lambda t: inverse.mpf_objective(t, data, l2=0.1) if symmetric else 0.0 * jnp.sum(t)):
        grad = np.asarray(jax.grad(fn)(theta))
        eps = 1e-6
        fd = np.array([(float(fn(theta.at[i].add(eps))) - float(fn(theta.at[i].add(-eps)))) / (2 * eps)
                       for i in range(size)])
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


def test_pseudolikelihood_matches_brute_force_definition(x64):
    rng = np.random.default_rng(1)
    n = 4
    data = reference.all_states(n)[rng.integers(0, 16, 50)]
    theta = rng.normal(size=n + 6) * 0.5
    params = ising.from_flat(jnp.asarray(theta), n)
    J, h = np.asarray(params.J), np.asarray(params.h)
    want = 0.0
    for x in data:
        for k in range(n):
            f = h[k] + J[k] @ x
            want -= x[k] * f - np.log(2 * np.cosh(f))
    np.testing.assert_allclose(float(inverse.pseudolikelihood_objective(jnp.asarray(theta), jnp.asarray(data))),
                               want / len(data), rtol=1e-12)


def test_degenerate_data():
    rng = np.random.default_rng(2)
    data = np.where(rng.random((500, 5)) < 0.5, 1.0, -1.0)
    constant = data.copy()
    constant[:, 2] = 1.0
    for fn in (inverse.mean_field, inverse.tap, inverse.pseudolikelihood, inverse.mpf, inverse.exact_ml):
        with pytest.raises(ValueError, match="spin 2 never flips"):
            fn(constant)
    duplicated = data.copy()
    duplicated[:, 4] = -duplicated[:, 1]
    for fn in (inverse.pseudolikelihood, inverse.mpf, inverse.exact_ml):
        with pytest.raises(ValueError, match="spins 1 and 4 are always opposite.*l2 > 0"):
            fn(duplicated)
    # with l2 > 0 they fit, finite
    for fn in (inverse.pseudolikelihood, inverse.mpf):
        assert np.all(np.isfinite(np.asarray(fn(duplicated, l2=0.01).J)))
    assert np.all(np.isfinite(np.asarray(inverse.exact_ml(duplicated, l2=0.01, tol=1e-5).J)))
    # mean field and TAP regularise the singular correlation matrix, with a warning
    for fn in (inverse.mean_field, inverse.tap):
        with pytest.warns(UserWarning, match="singular"):
            params = fn(duplicated)
        assert np.all(np.isfinite(np.asarray(params.J)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inverse.mean_field(duplicated, ridge=0.01)


def test_vmap_over_datasets():
    keys = jax.random.split(jax.random.key(5), 3)
    truths = [ising.sherrington_kirkpatrick(k, 6, beta=b) for k, b in zip(keys, (0.3, 0.7, 1.2))]
    datas = jnp.stack([ising.sample_exact(jax.random.fold_in(k, 1), t, 2000) for k, t in zip(keys, truths)])
    mf = jax.vmap(lambda d: inverse.mean_field(d, ridge=0.0))(datas)
    assert mf.J.shape == (3, 6, 6)
    np.testing.assert_allclose(mf.J[1], inverse.mean_field(datas[1], ridge=0.0).J, atol=1e-5)
