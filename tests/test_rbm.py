"""+-1 RBMs against brute force over both layers."""

import statistics
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxebm import rbm
from jaxebm._validation import ConvergenceWarning
from jaxebm.rbm import RBMParams
from tests import reference
from tests._compile import compile_counter as _count_compiles


def brute(W, b, c):
    """float64 brute force over both layers: (log Z, <x>, <z>, <x z^T>, log p(x) for all x)."""
    W, b, c = (np.asarray(a, np.float64) for a in (W, b, c))
    X, Z = reference.all_states(W.shape[0]), reference.all_states(W.shape[1])
    lw = X @ W @ Z.T + (X @ b)[:, None] + (Z @ c)[None, :]
    log_z = reference.logsumexp(lw.ravel())
    P = np.exp(lw - log_z)
    log_px = np.array([reference.logsumexp(row) for row in lw]) - log_z
    return log_z, P.sum(1) @ X, P.sum(0) @ Z, X.T @ P @ Z, log_px


def _params(rng, nv, nh, scale=0.7, dtype=jnp.float32):
    return RBMParams(*(jnp.asarray(a, dtype) for a in (rng.normal(size=(nv, nh)) * scale, rng.normal(size=nv) * 0.4,
                                                      rng.normal(size=nh) * 0.4)))


@pytest.mark.parametrize("nv,nh", [(1, 1), (4, 3), (3, 5), (9, 9), (12, 10), (10, 13)])
def test_log_z_moments_and_gradient_float32(rng, nv, nh):
    params = _params(rng, nv, nh)
    log_z, mx, mz, xz, log_px = brute(*params)
    assert abs(float(rbm.log_partition(params)) - log_z) <= 2e-6 * abs(log_z)
    got_x, got_z, got_xz = rbm.moments(params)
    np.testing.assert_allclose(got_x, mx, atol=2e-6)
    np.testing.assert_allclose(got_z, mz, atol=2e-6)
    np.testing.assert_allclose(got_xz, xz, atol=2e-6)
    g = jax.grad(rbm.log_partition)(params)
    np.testing.assert_allclose(g.W, xz, atol=2e-6)
    np.testing.assert_allclose(g.b, mx, atol=2e-6)
    np.testing.assert_allclose(g.c, mz, atol=2e-6)
    if nv <= 10:
        X = reference.all_states(nv)
        # log p = log w - log Z: float32 error scales with the magnitudes of both terms
        scale = np.abs(log_px + log_z) + abs(log_z)
        np.testing.assert_array_less(np.abs(np.asarray(rbm.log_prob(params, X)) - log_px), 2e-6 * scale)


@pytest.mark.parametrize("nv,nh", [(5, 4), (4, 11)])
def test_float64(x64, rng, nv, nh):
    params = _params(rng, nv, nh, dtype=jnp.float64)
    log_z, mx, mz, xz, _ = brute(*params)
    assert rbm.log_partition(params).dtype == jnp.float64
    np.testing.assert_allclose(float(rbm.log_partition(params)), log_z, rtol=1e-12)
    for got, want in zip(rbm.moments(params), (mx, mz, xz)):
        np.testing.assert_allclose(got, want, atol=1e-12)


def test_marginals_and_energy_match_brute_force(x64, rng):
    params = _params(rng, 4, 3, dtype=jnp.float64)
    X, Z = reference.all_states(4), reference.all_states(3)
    W, b, c = (np.asarray(a) for a in params)
    joint = X @ W @ Z.T + (X @ b)[:, None] + (Z @ c)[None, :]
    np.testing.assert_allclose(rbm.visible_log_weight(params, X), np.log(np.exp(joint).sum(1)), rtol=1e-12)
    np.testing.assert_allclose(rbm.hidden_log_weight(params, Z), np.log(np.exp(joint).sum(0)), rtol=1e-12)
    np.testing.assert_allclose(rbm.energy(params, X[:, None, :], Z[None, :, :]), -joint, rtol=1e-12)
    np.testing.assert_allclose(rbm.log2cosh(np.array([-800.0, 0.0, 3.0])),
                               [800.0, np.log(2.0), np.log(2 * np.cosh(3.0))], rtol=1e-12)


def test_exact_grad_equals_autodiff_of_brute_force(x64, rng):
    params = _params(rng, 5, 4, dtype=jnp.float64)
    data = reference.all_states(5)[[0, 3, 3, 9, 17, 30]]
    X, Z = jnp.asarray(reference.all_states(5)), jnp.asarray(reference.all_states(4))

    def brute_nll(p):
        lw = X @ p.W @ Z.T + (X @ p.b)[:, None] + (Z @ p.c)[None, :]
        lx = jax.nn.logsumexp(lw, axis=1) - jax.nn.logsumexp(lw)
        codes = (data > 0).astype(int) @ (2 ** np.arange(5))
        return -jnp.mean(lx[codes])

    want = jax.grad(brute_nll)(params)
    got = rbm.exact_grad(params, data)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=1e-12)


def test_conditional_means_against_monte_carlo(rng):
    params = _params(rng, 6, 4)
    x = jnp.asarray(reference.all_states(6)[[5, 40]])
    num = 100_000
    keys = jax.random.split(jax.random.key(0), num)
    zs = jax.vmap(lambda k: rbm.sample_hidden(k, params, x))(keys)  # (num, 2, 4)
    mean = np.asarray(rbm.hidden_mean(params, x))
    np.testing.assert_array_less(np.abs(np.asarray(zs).mean(0) - mean), 5 * np.sqrt((1 - mean**2) / num) + 1e-9)
    z = jnp.asarray(reference.all_states(4)[[2, 11]])
    xs = jax.vmap(lambda k: rbm.sample_visible(k, params, z))(keys)
    vmean = np.asarray(rbm.visible_mean(params, z))
    np.testing.assert_array_less(np.abs(np.asarray(xs).mean(0) - vmean), 5 * np.sqrt((1 - vmean**2) / num) + 1e-9)


def test_block_gibbs_reaches_the_exact_distribution():
    rng = np.random.default_rng(3)
    params = _params(rng, 4, 3, scale=0.8)
    *_, log_px = brute(*params)
    p = np.exp(log_px)
    # |W| up to ~2.4 makes some conditionals nearly deterministic: mixing between modes needs
    # a few hundred sweeps (30 are visibly not enough).
    chains, steps = 20_000, 300
    start = jnp.asarray(np.where(rng.random((chains, 4)) < 0.5, 1.0, -1.0), jnp.float32)

    def run(key, x):
        def body(x, k):
            return rbm.gibbs_step(k, params, x)[0], None

        return jax.lax.scan(body, x, jax.random.split(key, steps))[0]

    final = np.asarray(jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(1), chains), start))
    codes = (final > 0).astype(int) @ (2 ** np.arange(4))
    freq = np.bincount(codes, minlength=16) / chains
    tv = 0.5 * np.abs(freq - p).sum()
    # For N exact draws, E|freq_x - p_x| <= sqrt(p_x (1 - p_x) / N) (Jensen), so E[TV] <= half
    # their sum; TV changes by at most 1/N when one draw changes, so McDiarmid's inequality gives
    # P(TV > E[TV] + t) <= exp(-2 N t^2): t = sqrt(log(1/alpha) / (2N)) at false-alarm alpha = 1e-3.
    bound = 0.5 * np.sum(np.sqrt(p * (1 - p) / chains)) + np.sqrt(np.log(1e3) / (2 * chains))
    assert tv < bound, (tv, bound)


def _flat(grads):
    return np.concatenate([np.ravel(np.asarray(a, np.float64)) for a in grads])


def _chain_phase(params, starts, k):
    """float64 brute force of the negative phase of CD/PCD after ``k`` block-Gibbs steps.

    The visible chain has the 2^nv x 2^nv transition matrix T = P(z|x) P(x'|z); a chain started
    at x_j is at row j of T^k after k steps. Returns the expectation of the average over the
    chains of phi(x) = (x tanh(W^T x + c)^T, x, tanh(W^T x + c)) (flattened as ``_flat``), and
    its standard error sqrt(sum_j Var_j[phi]) / M (the M chains are independent).
    """
    W, b, c = (np.asarray(a, np.float64) for a in params)
    nv, nh = W.shape
    X, Z = reference.all_states(nv), reference.all_states(nh)
    p_z = np.prod((1 + Z[None] * np.tanh(X @ W + c)[:, None]) / 2, -1)  # (2^nv, 2^nh)
    p_x = np.prod((1 + X[None] * np.tanh(Z @ W.T + b)[:, None]) / 2, -1)  # (2^nh, 2^nv)
    rows = np.linalg.matrix_power(p_z @ p_x, k)[(np.asarray(starts) > 0).astype(int) @ (2 ** np.arange(nv))]
    t = np.tanh(X @ W + c)
    phi = np.concatenate([(X[:, :, None] * t[:, None, :]).reshape(len(X), -1), X, t], 1)
    mean = rows @ phi
    return mean.mean(0), np.sqrt(np.sum(rows @ phi**2 - mean**2, 0)) / len(rows)


def _data_phase(params, data):
    W, _, c = (np.asarray(a, np.float64) for a in params)
    data = np.asarray(data, np.float64)
    t = np.tanh(data @ W + c)
    return np.concatenate([(data.T @ t).ravel() / len(data), data.mean(0), t.mean(0)])


def _z_bonferroni(num, alpha=1e-3):
    """Two-sided normal quantile for ``num`` simultaneous comparisons at total false-alarm ``alpha``."""
    return statistics.NormalDist().inv_cdf(1 - alpha / (2 * num))


def test_cd_k_matches_its_exact_expectation_and_large_k_the_exact_gradient(rng):
    # Each of the M chains starts at a data row and runs k block-Gibbs steps; the estimate is an
    # average over M independent chains, so it is within z standard errors of its expectation
    # E[CD_k] (computed exactly from T^k), z the Bonferroni normal quantile for the 34 entries at
    # a total false-alarm probability of 1e-3 (z = 4.18; SE ~ 0.007 here, so the band is ~0.03).
    params = _params(rng, 6, 4, scale=0.5)
    data = reference.all_states(6)[rng.integers(0, 64, 300)]
    chains = np.tile(data, (64, 1))  # 19,200 independent chains; the data phase is unchanged
    exact = _flat(rbm.exact_grad(params, jnp.asarray(data)))
    z = _z_bonferroni(exact.size)
    positive = _data_phase(params, data)
    for k, key in ((1, 2), (50, 3)):
        negative, se = _chain_phase(params, chains, k)
        expected = negative - positive
        got = _flat(rbm.cd_grad(jax.random.key(key), params, jnp.asarray(chains, jnp.float32), k=k))
        np.testing.assert_array_less(np.abs(got - expected), z * se)
        bias = np.abs(expected - exact)  # CD_k's bias; includes float32 rounding of exact_grad (~1e-6)
        if k == 1:
            # CD-1 is visibly biased here: the comparison below would catch a k that is ignored
            assert np.max(bias / se) > 10, np.max(bias / se)
        else:
            # the chain has mixed (bias ~1e-6, 1e-4 SE): CD-50 estimates the exact gradient
            assert np.max(bias / se) < 0.01, np.max(bias / se)
            np.testing.assert_array_less(np.abs(got - exact), z * se + bias)


def test_pcd_with_long_chains_approaches_the_exact_gradient(rng):
    params = _params(rng, 6, 4, scale=0.5)
    data = jnp.asarray(reference.all_states(6)[rng.integers(0, 64, 300)])
    exact = _flat(rbm.exact_grad(params, data))
    start = np.where(rng.random((20_000, 6)) < 0.5, 1.0, -1.0)
    chains = jnp.asarray(start, jnp.float32)
    _, chains = jax.jit(lambda k, c: rbm.pcd_grad(k, params, data, c, k=50))(jax.random.key(0), chains)
    grads, _ = jax.jit(lambda k, c: rbm.pcd_grad(k, params, data, c, k=5))(jax.random.key(1), chains)
    # 55 steps in all from the random starts: the average over 20,000 independent chains is within
    # z standard errors (Bonferroni over the 34 entries at false-alarm 1e-3) of its exact
    # expectation, which differs from the exact gradient by the computed (mixing) bias.
    negative, se = _chain_phase(params, start, 55)
    bias = np.abs(negative - _data_phase(params, data) - exact)
    assert np.max(bias / se) < 0.01, np.max(bias / se)
    np.testing.assert_array_less(np.abs(_flat(grads) - exact), _z_bonferroni(exact.size) * se + bias)


def test_elbo_identity_and_gem_monotone(rng, x64):
    params = _params(rng, 6, 4, scale=0.3, dtype=jnp.float64)
    data = jnp.asarray(reference.all_states(6)[rng.integers(0, 64, 200)])
    loglik = -float(rbm.nll(params, data))
    posterior = rbm.hidden_mean(params, data)
    np.testing.assert_allclose(float(rbm.elbo(params, posterior, data)), loglik, rtol=1e-12)
    other = jnp.asarray(np.tanh(rng.normal(size=posterior.shape)))
    assert float(rbm.elbo(params, other, data)) < loglik
    # Q(theta_old, theta_old) = loglik - H(r)
    start = rbm.init(jax.random.key(0), 6, 4, scale=0.1, dtype=jnp.float64)
    _, info = jax.jit(lambda p: rbm.gem_fit(p, data, num_outer=30, num_inner=3))(start)
    assert isinstance(info, rbm.GEMInfo) and info.converged is None
    history = np.asarray(info.log_likelihood)
    assert history.shape == (31,) and info.accepted.shape == (30, 3)
    # GEM: the exact log-likelihood never decreases (Eq. (4.87)); with sgd(1/L) every step is taken
    assert np.all(np.diff(history) >= -1e-12), np.diff(history).min()
    assert history[-1] > history[0]
    assert bool(np.all(info.accepted))


def test_from_binary_round_trip_and_likelihoods(rng, x64):
    nv, nh = 5, 3
    W, b, c = rng.normal(size=(nv, nh)), rng.normal(size=nv), rng.normal(size=nh)
    params, shift = rbm.from_binary(W, b, c)
    for a, want in zip(rbm.to_binary(params), (W, b, c)):
        np.testing.assert_allclose(a, want, rtol=1e-12)
    V, H = (reference.all_states(nv) + 1) / 2, (reference.all_states(nh) + 1) / 2
    lw = V @ W @ H.T + (V @ b)[:, None] + (H @ c)[None, :]
    log_z01 = reference.logsumexp(lw.ravel())
    np.testing.assert_allclose(float(rbm.log_partition(params)) + float(shift), log_z01, rtol=1e-12)
    log_p01 = np.array([reference.logsumexp(row) for row in lw]) - log_z01
    np.testing.assert_allclose(rbm.log_prob(params, 2 * V - 1), log_p01, atol=1e-12)


def test_scores_a_scikit_learn_bernoulli_rbm_exactly(x64):
    from sklearn.datasets import load_digits
    from sklearn.neural_network import BernoulliRBM

    V = (load_digits().data[:400] > 7).astype(np.float64)
    sk = BernoulliRBM(n_components=8, n_iter=5, learning_rate=0.05, random_state=0).fit(V)
    W, b, c = sk.components_.T, sk.intercept_visible_, sk.intercept_hidden_
    params, shift = rbm.from_binary(W, b, c)
    # direct {0,1} brute force over the hidden layer
    H = (reference.all_states(8) + 1) / 2
    log_unnorm = V @ b + np.logaddexp(0, V @ W + c).sum(1)  # sum over h analytically
    log_z01 = reference.logsumexp(H @ c + np.logaddexp(0, H @ W.T + b).sum(1))
    want = log_unnorm - log_z01
    np.testing.assert_allclose(rbm.log_prob(params, 2 * V - 1), want, rtol=1e-11)
    # scikit-learn's own free energy agrees up to the constant log Z
    np.testing.assert_allclose(-sk._free_energy(V) - log_z01, want, rtol=1e-10)


def test_gibbs_step_compiles_once_and_vmaps():
    params = rbm.init(jax.random.key(0), 8, 5, scale=0.5)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def sweep(keys, x):
        return jax.vmap(lambda k, xi: rbm.gibbs_step(k, params, xi))(keys, x)

    x = jnp.ones((16, 8))
    for i in range(3):
        x, z = sweep(jax.random.split(jax.random.key(i), 16), x)
    assert set(np.unique(np.asarray(x))) <= {-1.0, 1.0} and z.shape == (16, 5)


def test_optax_training_with_exact_gradient(rng):
    # four patterns: far from uniform, so the exact nll has room to fall
    data = jnp.asarray(reference.all_states(6)[rng.choice([0, 63, 21, 42], 200)])
    params = rbm.init(jax.random.key(0), 6, 3, scale=0.1)
    opt = optax.adam(0.05)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        loss, g = jax.value_and_grad(rbm.nll)(params, data)
        updates, state = opt.update(g, state)
        return optax.apply_updates(params, updates), state, loss

    losses = []
    for _ in range(30):
        params, state, loss = step(params, state)
        losses.append(float(loss))
    assert losses[-1] < losses[0] - 0.05


def test_bad_inputs():
    params = rbm.init(jax.random.key(0), 4, 3)
    with pytest.raises(ValueError, match="params.b must have shape"):
        rbm.log_partition(params._replace(b=jnp.zeros(5)))
    with pytest.raises(ValueError, match="data must hold spins"):
        rbm.nll(params, np.array([[0.0, 1.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match="data must have 4 units"):
        rbm.nll(params, np.ones((2, 5)))
    with pytest.raises(ValueError, match="params.W contains 1 NaN"):
        rbm.log_partition(params._replace(W=params.W.at[0, 0].set(jnp.nan)))
    big = rbm.init(jax.random.key(0), 784, 48)
    with pytest.raises(ValueError, match=r"2\^48 = .* states, each summing 784 units, estimated at"):
        rbm.log_partition(big)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        rbm.cd_grad(jax.random.key(0), params, jnp.ones((2, 4)), k=0)


# --------------------------------------------------------------------------------------
# Issue 12: validation at every entry point, ConvergenceWarning, compile once
# --------------------------------------------------------------------------------------


def _spins(rng, shape):
    return np.where(rng.random(shape) < 0.5, 1.0, -1.0).astype(np.float32)


def _data_entry_points(params, good):
    """(argument name, call with that argument replaced) for every function taking +-1 units."""
    nh = params.W.shape[1]
    z = np.ones((good.shape[0], nh), np.float32)
    mu = np.zeros((good.shape[0], nh), np.float32)
    key = jax.random.key(0)
    return [
        ("x", lambda v: rbm.hidden_mean(params, v)),
        ("z", lambda v: rbm.visible_mean(params, v[:, :nh])),
        ("x", lambda v: rbm.sample_hidden(key, params, v)),
        ("z", lambda v: rbm.sample_visible(key, params, v[:, :nh])),
        ("x", lambda v: rbm.gibbs_step(key, params, v)),
        ("x", lambda v: rbm.energy(params, v, z)),
        ("z", lambda v: rbm.energy(params, good, v[:, :nh])),
        ("x", lambda v: rbm.visible_log_weight(params, v)),
        ("z", lambda v: rbm.hidden_log_weight(params, v[:, :nh])),
        ("x", lambda v: rbm.log_prob(params, v)),
        ("data", lambda v: rbm.nll(params, v)),
        ("data", lambda v: rbm.exact_grad(params, v)),
        ("data", lambda v: rbm.cd_grad(key, params, v)),
        ("data", lambda v: rbm.pcd_grad(key, params, v, good)),
        ("chains", lambda v: rbm.pcd_grad(key, params, good, v)),
        ("data", lambda v: rbm.q_function(params, params, v)),
        ("data", lambda v: rbm.elbo(params, mu, v)),
        ("data", lambda v: rbm.gem_fit(params, v, num_outer=1, num_inner=1)),
    ]


@pytest.mark.parametrize("bad", ["binary", "half", "nan"])
def test_every_data_entry_point_refuses_non_spin_data(rng, bad):
    params = _params(rng, 5, 3)
    good = _spins(rng, (6, 5))
    value = {"binary": (good + 1) / 2, "half": np.full_like(good, 0.5), "nan": np.where(good > 0, np.nan, -1.0)}[bad]
    for name, call in _data_entry_points(params, good):
        with pytest.raises(ValueError, match=rf"^{name} ") as err:
            call(value)
        if bad == "binary":  # the hint: convert the data, or the parameters of a {0,1} RBM
            assert "2 * x - 1" in str(err.value) and "from_binary" in str(err.value)


def test_integer_spin_data_gives_the_float_answer(rng):
    params = _params(rng, 5, 3)
    data = _spins(rng, (8, 5))
    key = jax.random.key(3)
    as_int, as_float = rbm.cd_grad(key, params, data.astype(np.int32)), rbm.cd_grad(key, params, data)
    for a, b in zip(as_int, as_float):
        np.testing.assert_array_equal(a, b)
    grads, chains = rbm.pcd_grad(key, params, data.astype(np.int8), data.astype(np.int8), k=2)
    assert chains.dtype == jnp.float32 and set(np.unique(np.asarray(chains))) <= {-1.0, 1.0}
    np.testing.assert_allclose(rbm.nll(params, data.astype(np.int64)), rbm.nll(params, data), rtol=1e-6)
    np.testing.assert_allclose(rbm.log_prob(params, data.tolist()), rbm.log_prob(params, data), rtol=1e-6)


def test_params_and_counts_are_validated(rng):
    params = _params(rng, 4, 3)
    data = _spins(rng, (5, 4))
    with pytest.raises(ValueError, match="params must be an RBMParams"):
        rbm.hidden_mean((params.W, params.b, params.c), data)
    with pytest.raises(ValueError, match="params.c must have shape"):
        rbm.cd_grad(jax.random.key(0), params._replace(c=jnp.zeros(4)), data)
    with pytest.raises(ValueError, match="params.b contains 1 NaN"):
        rbm.gibbs_step(jax.random.key(0), params._replace(b=params.b.at[1].set(jnp.inf)), data)
    with pytest.raises(ValueError, match="params_old.W contains"):
        rbm.q_function(params, params._replace(W=params.W.at[0, 0].set(jnp.nan)), data)
    for k in (0, 1.5, -1):
        with pytest.raises(ValueError, match="^k must be a positive integer"):
            rbm.pcd_grad(jax.random.key(0), params, data, data, k=k)
    with pytest.raises(ValueError, match="num_outer"):
        rbm.gem_fit(params, data, num_outer=0)
    with pytest.raises(ValueError, match="hidden_means must lie in"):
        rbm.elbo(params, np.full((5, 3), 1.5), data)
    with pytest.raises(ValueError, match="hidden_means must have shape"):
        rbm.elbo(params, np.zeros((4, 3)), data)
    with pytest.raises(ValueError, match="n_hidden must be an integer"):
        rbm.init(jax.random.key(0), 4, 2.5)
    W = np.zeros((4, 3))
    W[0, 0] = np.nan
    with pytest.raises(ValueError, match="^W contains 1 NaN"):
        rbm.from_binary(W, np.zeros(4), np.zeros(3))
    with pytest.raises(ValueError, match=r"^c must have shape \(3,\)"):
        rbm.from_binary(np.zeros((4, 3)), np.zeros(4), np.zeros(4))
    with pytest.raises(ValueError, match="params.W contains"):
        rbm.to_binary(params._replace(W=params.W.at[0, 0].set(jnp.nan)))


def test_gem_fit_warns_when_it_stops_at_num_outer(rng, x64):
    params = rbm.init(jax.random.key(0), 4, 2, scale=0.1, dtype=jnp.float64)
    data = jnp.asarray(reference.all_states(4)[rng.choice([0, 15], 40)])
    with pytest.warns(ConvergenceWarning, match="num_outer=2"):
        _, info = rbm.gem_fit(params, data, num_outer=2, num_inner=1, tol=1e-10)
    assert not bool(info.converged)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        _, info = rbm.gem_fit(params, data, num_outer=2, num_inner=1, tol=10.0)  # met: no warning
    assert bool(info.converged)


def test_gem_fit_takes_a_time_budget(rng):
    """The enumeration's refusal says "pass a larger max_seconds": gem_fit takes one."""
    data = jnp.asarray(reference.all_states(4)[rng.choice([0, 15], 20)])
    big = rbm.init(jax.random.key(0), 40, 41)
    with pytest.raises(ValueError, match=r"n_visible .*2\^40 .*max_seconds=600"):
        rbm.gem_fit(big, jnp.ones((5, 40)), num_outer=1)
    params = rbm.init(jax.random.key(0), 4, 2, scale=0.1)
    with pytest.raises(ValueError, match="max_seconds=1e-09"):
        rbm.gem_fit(params, data, num_outer=1, max_seconds=1e-9)
    fitted, _ = rbm.gem_fit(params, data, num_outer=2, max_seconds=60)
    np.testing.assert_array_equal(fitted.W, rbm.gem_fit(params, data, num_outer=2)[0].W)


def test_gem_fit_safeguard_resume_and_compile_once(rng, x64):
    params = rbm.init(jax.random.key(0), 4, 2, scale=0.1, dtype=jnp.float64)
    data = jnp.asarray(reference.all_states(4)[rng.integers(0, 16, 40)])
    # a step far above 1/L = 1/14: the safeguard rejects some inner steps, the log-likelihood still never
    # decreases
    _, info = rbm.gem_fit(params, data, num_outer=6, num_inner=3, optimizer=optax.sgd(2.0))
    assert not bool(np.all(info.accepted)) and bool(np.any(info.accepted))
    assert np.all(np.diff(np.asarray(info.log_likelihood)) >= -1e-12)
    # resuming from info.opt_state continues the run exactly (Adam's moments carried over)
    whole, info_whole = rbm.gem_fit(params, data, num_outer=4, num_inner=2, optimizer=optax.adam(0.05))
    half, info_half = rbm.gem_fit(params, data, num_outer=2, num_inner=2, optimizer=optax.adam(0.05))
    resumed, info_resumed = rbm.gem_fit(half, data, num_outer=2, num_inner=2, optimizer=optax.adam(0.05),
                                        opt_state=info_half.opt_state)
    for a, b in zip(whole, resumed):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(info_whole.log_likelihood[2:], info_resumed.log_likelihood, rtol=1e-12)
    # eager calls with new values of the same shapes compile nothing
    other = rbm.init(jax.random.key(1), 4, 2, scale=0.1, dtype=jnp.float64)
    new_data = jnp.asarray(reference.all_states(4)[rng.integers(0, 16, 40)])
    jax.block_until_ready(rbm.gem_fit(params, data, num_outer=3, num_inner=2))
    with _count_compiles() as compiles:
        jax.block_until_ready(rbm.gem_fit(other, new_data, num_outer=3, num_inner=2))
    assert compiles[0] == 0, compiles[0]


def test_exact_functions_and_cd_compile_once_eagerly(rng):
    nv, nh = 7, 3
    calls = {
        "log_partition": lambda p, d, c, k: rbm.log_partition(p),
        "moments": lambda p, d, c, k: rbm.moments(p),
        "nll": lambda p, d, c, k: rbm.nll(p, d),
        "log_prob": lambda p, d, c, k: rbm.log_prob(p, d),
        "exact_grad": lambda p, d, c, k: rbm.exact_grad(p, d),
        "cd_grad": lambda p, d, c, k: rbm.cd_grad(k, p, d, k=2),
        "pcd_grad": lambda p, d, c, k: rbm.pcd_grad(k, p, d, c, k=2),
    }
    args = [(_params(rng, nv, nh), _spins(rng, (9, nv)), _spins(rng, (11, nv)), jax.random.key(i)) for i in range(2)]
    with _count_compiles() as sanity:
        jax.jit(lambda a: a * 3.0 + 1.0)(jnp.ones(17))
    assert sanity[0] >= 1  # the counter sees compilations
    for name, call in calls.items():
        jax.block_until_ready(call(*args[0]))
        with _count_compiles() as compiles:
            jax.block_until_ready(call(*args[1]))  # new values, same shapes
        assert compiles[0] == 0, (name, compiles[0])
    # the jitted path gives the same answer as before: the exact moments
    log_z, mx, mz, xz, _ = brute(*args[1][0])
    np.testing.assert_allclose(rbm.log_partition(args[1][0]), log_z, rtol=1e-5)
    np.testing.assert_allclose(rbm.moments(args[1][0])[2], xz, atol=1e-5)


def test_energy_batches_must_broadcast_and_log2cosh_must_be_real():
    params = rbm.init(jax.random.key(0), 4, 3)
    with pytest.raises(ValueError, match="x and z must have broadcastable batch axes"):
        rbm.energy(params, jnp.ones((10, 4)), jnp.ones((3, 3)))
    assert rbm.energy(params, jnp.ones((2, 5, 4)), jnp.ones((5, 3))).shape == (2, 5)
    with pytest.raises(ValueError, match="a must be real"):
        rbm.log2cosh(1 + 1j)
    np.testing.assert_allclose(rbm.log2cosh(np.array([0.0, 30.0])), [np.log(2.0), 30.0], rtol=1e-6)


def test_mixed_dtype_params_promote_to_one_dtype(x64):
    """float32 W with float64 b (x64 on) ran log Z in float32 and crashed exact_grad's custom
    JVP with a TypeError: validate_params now gives all three the common dtype."""
    mixed = rbm.RBMParams(jnp.full((3, 2), 0.3, jnp.float32), jnp.asarray([0.1, -0.2, 0.05]), jnp.zeros(2, jnp.float32))
    wide = rbm.RBMParams(*(jnp.asarray(a, jnp.float64) for a in mixed))
    data = np.array([[1.0, -1.0, 1.0], [1.0, 1.0, -1.0]])
    assert rbm.log_partition(mixed).dtype == jnp.float64
    np.testing.assert_allclose(rbm.log_partition(mixed), rbm.log_partition(wide), rtol=1e-14)
    for a, b in zip(rbm.exact_grad(mixed, data), rbm.exact_grad(wide, data)):
        np.testing.assert_allclose(a, b, rtol=1e-12)
