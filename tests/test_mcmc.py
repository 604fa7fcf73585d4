"""Samplers against exact enumeration, with tolerances from the effective sample size."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxebm import ising, mcmc, rbm
from jaxebm.ising import IsingParams
from tests import reference
from tests.conftest import random_couplings

K_SIGMA = 5.0  # all keys are pinned; 5 standard errors leaves room for the max over ~n entries


def _ising(rng, n, scale=0.4, field=0.3):
    h, J = random_couplings(rng, n, scale=scale, field=field)
    return IsingParams(jnp.asarray(h, jnp.float32), jnp.asarray(J, jnp.float32)), h, J


def _run_many(algo, x0, num_steps, burn, key=1, trace_fn=lambda s, i: s.x):
    states = jax.vmap(algo.init)(x0)
    run = jax.jit(jax.vmap(lambda k, s: mcmc.run_chain(k, algo, s, num_steps, trace_fn=trace_fn)))
    _, trace = run(jax.random.split(jax.random.key(key), x0.shape[0]), states)
    return np.asarray(trace)[:, burn:]


def _assert_moments(trace, mean, corr):
    """trace: (chains, steps, n). Means and pair correlations within K_SIGMA ESS-based SEs."""
    m = trace.mean((0, 1))
    ess = np.asarray(mcmc.effective_sample_size(trace))
    se = np.sqrt(np.maximum(1 - mean**2, 1e-6) / ess)
    assert np.all(np.abs(m - mean) < K_SIGMA * se), np.max(np.abs(m - mean) / se)
    pair = trace[..., :, None] * trace[..., None, :]
    iu = np.triu_indices(trace.shape[-1], 1)
    pair = pair[..., iu[0], iu[1]]
    ess_pair = np.asarray(mcmc.effective_sample_size(pair))
    se_pair = np.sqrt(np.maximum(1 - corr[iu] ** 2, 1e-6) / ess_pair)
    assert np.all(np.abs(pair.mean((0, 1)) - corr[iu]) < K_SIGMA * se_pair)


def _random_spins(key, shape):
    return jnp.where(jax.random.bernoulli(jax.random.key(key), 0.5, shape), 1.0, -1.0)


@pytest.mark.parametrize("sampler", ["metropolis", "heat_bath", "generic", "metropolis_block3"])
def test_ising_samplers_match_exact_moments(rng, sampler):
    n = 10
    params, h, J = _ising(rng, n)
    algo = {"metropolis": lambda: mcmc.metropolis(params), "heat_bath": lambda: mcmc.heat_bath(params),
            "generic": lambda: mcmc.metropolis(lambda x: ising.log_weight(params, x)),
            "metropolis_block3": lambda: mcmc.metropolis(params, block_size=3)}[sampler]()
    trace = _run_many(algo, _random_spins(0, (128, n)), 300, 50)
    mean, corr = reference.ising_moments(h, J)
    _assert_moments(trace, mean, corr)


def test_blocked_fast_path_is_the_same_chain_as_the_generic_sweep(rng):
    params, _, _ = _ising(rng, 12)
    x0 = _random_spins(1, (12,))
    fast, generic = mcmc.metropolis(params, block_size=5), mcmc.metropolis(lambda x: ising.log_weight(params, x))
    a = mcmc.run_chain(jax.random.key(3), fast, fast.init(x0), 50, trace_fn=lambda s, i: s.x)[1]
    b = mcmc.run_chain(jax.random.key(3), generic, generic.init(x0), 50, trace_fn=lambda s, i: s.x)[1]
    np.testing.assert_array_equal(a, b)
    state = mcmc.run_chain(jax.random.key(3), fast, fast.init(x0), 50)[0]
    np.testing.assert_allclose(state.field, params.h + params.J @ state.x, atol=1e-5)
    np.testing.assert_allclose(state.log_weight, ising.log_weight(params, state.x), atol=1e-5)


@pytest.mark.slow  # test_rbm checks block Gibbs against the exact distribution by TV
def test_rbm_gibbs_matches_exact_moments(rng):
    params = rbm.RBMParams(jnp.asarray(rng.normal(size=(6, 4)) * 0.5, jnp.float32),
                           jnp.asarray(rng.normal(size=6) * 0.3, jnp.float32),
                           jnp.asarray(rng.normal(size=4) * 0.3, jnp.float32))
    algo = mcmc.rbm_gibbs(params)
    trace = _run_many(algo, _random_spins(2, (128, 6)), 300, 50)
    mx, _, _ = rbm.moments(params)
    X = reference.all_states(6)
    p = np.exp(np.asarray(rbm.log_prob(params, X), np.float64))
    _assert_moments(trace, np.asarray(mx, np.float64), (X.T * p) @ X)


def test_replica_exchange_samples_every_temperature_exactly(rng):
    n = 8
    params, h, J = _ising(rng, n, scale=0.9)
    betas = mcmc.geometric_ladder(0.3, 1.0, 5)
    algo = mcmc.replica_exchange(lambda b: mcmc.heat_bath(params, b), betas)
    chains = 32
    x0 = _random_spins(3, (chains, 5, n))
    trace = _run_many(algo, x0, 400, 50, trace_fn=lambda s, i: s.states.x)  # (chains, steps, R, n)
    for r in (0, 2, 4):
        b = float(betas[r])
        mean, corr = reference.ising_moments(b * h, b * J)
        _assert_moments(trace[:, :, r], mean, corr)


def test_replica_exchange_bookkeeping(rng):
    params, _, _ = _ising(rng, 6)
    betas = jnp.linspace(0.2, 1.0, 6)
    algo = mcmc.replica_exchange(lambda b: mcmc.metropolis(params, b), betas)
    state = algo.init(_random_spins(4, (6, 6)))
    step = jax.jit(algo.step)
    accepted = np.zeros(5)
    for i in range(400):
        state, info = step(jax.random.key(i), state)
        assert np.array_equal(np.asarray(info.swap_attempted), np.arange(5) % 2 == i % 2)
        assert not np.any(np.asarray(info.swap_accepted) & ~np.asarray(info.swap_attempted))
        accepted += np.asarray(info.swap_accepted)
    assert sorted(np.asarray(state.walker).tolist()) == list(range(6))
    assert np.all(accepted > 0)
    assert int(np.asarray(state.round_trips).sum()) > 0
    np.testing.assert_allclose(state.states.log_weight, jax.vmap(lambda x: ising.log_weight(params, x))(state.states.x),
                               atol=1e-5)


@pytest.mark.slow
def test_adaptive_ladder_equalises_swap_rates():
    betas = np.array([0.1, 0.2, 0.3, 0.9, 1.0])
    new = mcmc.adapt_ladder(betas, np.array([0.95, 0.9, 0.1, 0.9]), damping=1.0)
    assert new[0] == 0.1 and new[-1] == 1.0 and np.all(np.diff(new) > 0)
    assert new[3] - new[2] < 0.6  # the hard interval shrinks
    rng = np.random.default_rng(0)
    params, _, _ = _ising(rng, 12, scale=1.0)
    betas = mcmc.geometric_ladder(0.05, 1.0, 6)
    tuned, history, _ = mcmc.tune_ladder(jax.random.key(0), lambda b: mcmc.heat_bath(params, b), betas,
                                         _random_spins(5, (6, 12)), num_rounds=8, steps_per_round=300)
    assert np.ptp(history[-1]) < np.ptp(history[0])


@pytest.mark.parametrize("n", [10, 14])
def test_ais_log_partition_ising(rng, n):
    params, h, J = _ising(rng, n, scale=0.5)
    res = mcmc.ais_log_partition(jax.random.key(0), params, num_chains=512, num_temps=300)
    exact = reference.ising_log_z(h, J)
    assert abs(float(res.log_z) - exact) < max(4 * float(res.stderr), 0.02), (float(res.log_z), exact, res.stderr)
    assert abs(float(res.log_z) - exact) < 0.05


def test_ais_log_partition_rbm(rng):
    params = rbm.RBMParams(jnp.asarray(rng.normal(size=(8, 5)) * 0.5, jnp.float32), jnp.zeros(8), jnp.zeros(5))
    res = mcmc.ais_log_partition(jax.random.key(1), params, num_chains=512, num_temps=300)
    exact = float(rbm.log_partition(params))
    assert abs(float(res.log_z) - exact) < max(4 * float(res.stderr), 0.02)


def test_diagnostics_on_known_processes():
    rho, T, chains = 0.9, 20_000, 8
    key = jax.random.key(0)
    noise = jax.random.normal(key, (chains, T)) * np.sqrt(1 - rho**2)

    def ar1(x0, e):
        def body(x, ei):
            x = rho * x + ei
            return x, x

        return jax.lax.scan(body, x0, e)[1]

    x = jax.vmap(ar1)(jax.random.normal(jax.random.key(1), (chains,)), noise)
    tau = float(jnp.mean(jax.vmap(mcmc.integrated_autocorr_time)(x)))
    assert abs(tau - (1 + rho) / (1 - rho)) < 0.15 * (1 + rho) / (1 - rho)
    ess = float(mcmc.effective_sample_size(x))
    assert abs(ess - chains * T / 19.0) < 0.15 * chains * T / 19.0
    rho1 = np.asarray(mcmc.autocorrelation(x[0]))[1]
    assert abs(rho1 - rho) < 0.02
    assert abs(float(mcmc.r_hat(x)) - 1.0) < 0.02
    shifted = x.at[0].add(3.0)
    assert float(mcmc.r_hat(shifted)) > 1.1


def test_step_compiles_once_and_bad_arguments(rng):
    params, _, _ = _ising(rng, 6)
    algo = mcmc.metropolis(params)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(key, state):
        return algo.step(key, state)

    state = algo.init(_random_spins(6, (6,)))
    for i in range(3):
        state, info = step(jax.random.key(i), state)
    with pytest.raises(ValueError, match="multiple of thin"):
        mcmc.run_chain(jax.random.key(0), algo, state, 10, thin=3)
    with pytest.raises(ValueError, match="target must be IsingParams or a log_weight_fn"):
        mcmc.metropolis(3.0)
    with pytest.raises(ValueError, match="betas must be a vector of at least 2"):
        mcmc.replica_exchange(lambda b: algo, jnp.array([1.0]))
    with pytest.raises(ValueError, match="give make_algorithm"):
        mcmc.ais_log_partition(jax.random.key(0), None)


def test_run_chains_matches_a_vmap_of_run_chain(rng):
    params, _, _ = _ising(rng, 8)
    algo = mcmc.metropolis(params)
    states = jax.vmap(algo.init)(_random_spins(4, (6, 8)))
    final, trace = mcmc.run_chains(jax.random.key(7), algo, states, 12, thin=3, trace_fn=lambda s, i: s.x,
                                   num_chunks=2)
    keys = jax.random.split(jax.random.key(7), 2)
    want_states, want_traces = states, []
    for k in keys:  # the same keys, chunk by chunk
        want_states, t = jax.vmap(lambda kk, s: mcmc.run_chain(kk, algo, s, 6, 3, trace_fn=lambda s, i: s.x))(
            jax.random.split(k, 6), want_states)
        want_traces.append(t)
    np.testing.assert_array_equal(trace, np.concatenate(want_traces, axis=1))
    np.testing.assert_array_equal(final.x, want_states.x)
    assert trace.shape == (6, 4, 8)
    with pytest.raises(ValueError, match="multiple of the number of devices"):
        mcmc.run_chains(jax.random.key(0), algo, states, 4, devices=[jax.devices()[0]] * 4)
    with pytest.raises(ValueError, match="leading chain axis"):
        mcmc.run_chains(jax.random.key(0), algo, algo.init(jnp.ones(8))._replace(log_weight=1.0), 4)


@pytest.mark.parametrize("rule, block_size", [("metropolis", None), ("heat_bath", 3),
                                              pytest.param("metropolis", 5, marks=pytest.mark.slow)])
def test_vmapped_chains_are_the_unbatched_chains(rng, rule, block_size):
    # Couplings on a dyadic grid make every field sum exact, so the batched rows layout (custom
    # vmap rule) must reproduce each single chain bit for bit.
    n, chains = 11, 5
    J = np.triu(rng.integers(-8, 9, size=(n, n)) / 16.0, 1)
    params = IsingParams(jnp.asarray(rng.integers(-4, 5, size=n) / 8.0, jnp.float32), jnp.asarray(J + J.T, jnp.float32))
    make = mcmc.metropolis if rule == "metropolis" else mcmc.heat_bath
    betas = jnp.asarray([0.25, 0.5, 0.75, 1.0, 1.25])
    x0 = _random_spins(5, (chains, n))
    keys = jax.random.split(jax.random.key(9), chains)

    def run(key, x, beta):
        algo = make(params, beta, block_size=block_size)
        return mcmc.run_chain(key, algo, algo.init(x), 20, trace_fn=lambda s, i: (s.x, i.acceptance_rate))

    for beta_axis in (None, 0):  # one temperature, or one per chain (as in replica exchange)
        beta = 1.0 if beta_axis is None else betas
        batched = jax.jit(jax.vmap(run, in_axes=(0, 0, beta_axis)))(keys, x0, beta)
        # lax.map runs the chains one after another, each through the unbatched code path
        per_chain_beta = jnp.broadcast_to(jnp.asarray(beta, jnp.float32), (chains,))
        single = jax.jit(lambda *a: lax.map(lambda b: run(*b), a))(keys, x0, per_chain_beta)
        np.testing.assert_array_equal(batched[1][0], single[1][0])
        np.testing.assert_array_equal(batched[1][1], single[1][1])
        for c in range(chains):
            np.testing.assert_allclose(batched[0].field[c], params.h + params.J @ batched[0].x[c], atol=1e-6)
    # one model per chain falls back to a plain vmap, with the same result
    hs = jnp.stack([params.h] * chains)
    per_model = jax.vmap(lambda k, x, h: run_model(k, x, IsingParams(h, params.J), make, block_size))(keys, x0, hs)
    np.testing.assert_array_equal(per_model, jax.vmap(run, in_axes=(0, 0, None))(keys, x0, 1.0)[1][0])


def run_model(key, x, params, make, block_size):
    algo = make(params, block_size=block_size)
    return mcmc.run_chain(key, algo, algo.init(x), 20, trace_fn=lambda s, i: s.x)[1]
