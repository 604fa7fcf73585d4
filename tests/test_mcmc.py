"""Samplers against exact enumeration, with tolerances from the effective sample size."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from jaxebm import ising, mcmc, rbm
from jaxebm.ising import IsingParams
from tests import reference
from tests._compile import compile_counter as _count_compiles
from tests.conftest import random_couplings

# 5 standard errors: a two-sided normal false alarm of 6e-7 per entry, < 5e-5 over the <= 55 means
# and pair correlations of a test, with room for the ~5% error of the ESS the SE is built from.
K_SIGMA = 5.0


def _ising(rng, n, scale=0.4, field=0.3):
    h, J = random_couplings(rng, n, scale=scale, field=field)
    return IsingParams(jnp.asarray(h, jnp.float32), jnp.asarray(J, jnp.float32)), h, J


def _run_many(algo, x0, num_steps, burn, key=1, trace_fn=mcmc.trace_positions):
    states = jax.vmap(algo.init)(x0, jax.random.split(jax.random.key(key + 1000), x0.shape[0]))  # only rbm_gibbs draws
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
    np.testing.assert_allclose(state.local_field, params.h + params.J @ state.x, atol=1e-5)
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


@pytest.mark.slow  # a few seconds: full suites run it (pytest -m slow)
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


def _assert_ais_within_its_stderr(res, exact, num_chains):
    """log Z-hat = log Z0 + log mean(w) with w the importance weights: the delta method gives the
    standard error sd(w) / (sqrt(N) mean(w)), and Jensen a downward bias of about stderr^2 / 2.
    Four standard errors: a two-sided normal false-alarm probability of 6e-5."""
    # the stderr the bound rests on is the delta-method one, recomputed from the weights in float64
    w = np.exp(np.asarray(res.log_weights, np.float64) - np.max(np.asarray(res.log_weights, np.float64)))
    stderr = w.std() / (w.mean() * np.sqrt(num_chains))
    np.testing.assert_allclose(float(res.stderr), stderr, rtol=1e-4)  # float32 sums of 512 terms
    err = float(res.log_z) - exact
    assert abs(err + stderr**2 / 2) < 4 * stderr, (err, stderr)


@pytest.mark.parametrize("n", [10, 14])
def test_ais_log_partition_ising(rng, n):
    params, h, J = _ising(rng, n, scale=0.5)
    res = mcmc.ais_log_partition(jax.random.key(0), params, num_chains=512, num_temps=300)
    _assert_ais_within_its_stderr(res, reference.ising_log_z(h, J), 512)


def test_ais_log_partition_rbm(rng):
    params = rbm.RBMParams(jnp.asarray(rng.normal(size=(8, 5)) * 0.5, jnp.float32), jnp.zeros(8), jnp.zeros(5))
    res = mcmc.ais_log_partition(jax.random.key(1), params, num_chains=512, num_temps=300)
    # float64 brute force over the hidden layer: log Z = logsumexp_z (c.z + sum_k log 2cosh((Wz)_k + b_k))
    W, b, c = (np.asarray(a, np.float64) for a in params)
    Z = reference.all_states(5)
    a = Z @ W.T + b
    exact = reference.logsumexp(Z @ c + np.sum(np.logaddexp(a, -a), axis=1))
    _assert_ais_within_its_stderr(res, float(exact), 512)


def test_float32_rbm_chains_stay_float32_under_x64(rng, x64):
    """With x64 on, a Python beta (and AIS's float64 schedule) must not promote float32 chains
    (the scan carry's dtype changed and AIS raised a TypeError)."""
    params = rbm.RBMParams(jnp.asarray(rng.normal(size=(8, 5)) * 0.5, jnp.float32), jnp.zeros(8, jnp.float32),
                           jnp.zeros(5, jnp.float32))
    algo = mcmc.rbm_gibbs(params, 0.7)
    state = algo.init(jnp.ones(8, jnp.float32), jax.random.key(0))
    state2, info = algo.step(jax.random.key(1), state)
    assert {a.dtype for a in (*state, *state2, info.flip_rate)} == {jnp.dtype(jnp.float32)}
    res = mcmc.ais_log_partition(jax.random.key(1), params, num_chains=256, num_temps=100)
    W, b, c = (np.asarray(a, np.float64) for a in params)
    Z = reference.all_states(5)
    a = Z @ W.T + b
    _assert_ais_within_its_stderr(res, float(reference.logsumexp(Z @ c + np.sum(np.logaddexp(a, -a), axis=1))), 256)


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
    # Stationary AR(1): tau = (1 + rho) / (1 - rho) = 19. z = 3.29: two-sided normal false alarm 1e-3.
    true_tau, z = (1 + rho) / (1 - rho), 3.29
    # Sokal's window W = 5 tau gives var(tau-hat) ~ 2 (2W + 1) tau^2 / T per chain (Madras & Sokal
    # 1988), averaged over the chains: relative SE 4.9% (60 replicate runs measured 4.1%).
    rel_se = np.sqrt(2 * (2 * 5 * true_tau + 1) / (chains * T))
    tau = float(jnp.mean(jax.vmap(mcmc.integrated_autocorr_time)(x)))
    assert abs(tau - true_tau) < z * rel_se * true_tau, (tau, rel_se)
    # ESS = draws / tau-hat pools all chains' draws: the same relative SE at most (measured 3.3%),
    # Geyer's initial monotone window stopping within Sokal's here
    ess = float(mcmc.effective_sample_size(x))
    assert abs(ess - chains * T / true_tau) < z * rel_se * chains * T / true_tau, ess
    # Bartlett: var(r_1) ~ (1 - rho^2) / T for an AR(1); four SEs (two-sided 6e-5): 0.012
    rho1 = np.asarray(mcmc.autocorrelation(x[0]))[1]
    assert abs(rho1 - rho) < 4 * np.sqrt((1 - rho**2) / T), rho1
    # split-R-hat over m = 2 * chains halves of n = T / 2 draws: the half-chain means have variance
    # ~ tau sigma^2 / n, so R-hat^2 ~ 1 - 1/n + (tau / n) chi2_{m-1} / (m - 1) (W estimates sigma^2
    # well): R-hat - 1 ~ 9e-4, between the chi-square quantiles at 1e-3 and 1 - 1e-3 below.
    m, n = 2 * chains, T // 2
    lo, hi = (np.sqrt(1 - 1 / n + true_tau / n * q / (m - 1)) for q in (3.483, 37.697))  # chi2_15 quantiles
    assert lo < float(mcmc.r_hat(x)) < hi, (float(mcmc.r_hat(x)), lo, hi)
    # one chain moved by 3 sd puts two of the 16 half-chain means 3 away: their variance is
    # 9 (2/16)(14/16)(16/15) ~ 1.05 against W ~ 1, so R-hat ~ sqrt(2.05) ~ 1.43
    shifted = x.at[0].add(3.0)
    assert float(mcmc.r_hat(shifted)) > 1.3


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
    with pytest.raises(ValueError, match="^devices .*repeat"):  # one device listed 4 times is not 4 devices
        mcmc.run_chains(jax.random.key(0), algo, states, 4, devices=[jax.devices()[0]] * 4)
    with pytest.raises(ValueError, match="leading chain axis"):
        mcmc.run_chains(jax.random.key(0), algo, algo.init(jnp.ones(8))._replace(log_weight=1.0), 4)


@pytest.mark.parametrize("rule, block_size", [("metropolis", None), ("heat_bath", 3),
                                              pytest.param("metropolis", 5, marks=pytest.mark.slow)])
@pytest.mark.slow  # a few seconds: full suites run it (pytest -m slow)
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
        return mcmc.run_chain(key, algo, algo.init(x), 20, trace_fn=lambda s, i: (s.x, i[0]))  # the flip rate

    for beta_axis in (None, 0):  # one temperature, or one per chain (as in replica exchange)
        beta = 1.0 if beta_axis is None else betas
        batched = jax.jit(jax.vmap(run, in_axes=(0, 0, beta_axis)))(keys, x0, beta)
        # lax.map runs the chains one after another, each through the unbatched code path
        per_chain_beta = jnp.broadcast_to(jnp.asarray(beta, jnp.float32), (chains,))
        single = jax.jit(lambda *a: lax.map(lambda b: run(*b), a))(keys, x0, per_chain_beta)
        np.testing.assert_array_equal(batched[1][0], single[1][0])
        np.testing.assert_array_equal(batched[1][1], single[1][1])
        for c in range(chains):
            np.testing.assert_allclose(batched[0].local_field[c], params.h + params.J @ batched[0].x[c], atol=1e-6)
    # one model per chain falls back to a plain vmap, with the same result
    hs = jnp.stack([params.h] * chains)
    per_model = jax.vmap(lambda k, x, h: run_model(k, x, IsingParams(h, params.J), make, block_size))(keys, x0, hs)
    np.testing.assert_array_equal(per_model, jax.vmap(run, in_axes=(0, 0, None))(keys, x0, 1.0)[1][0])


def run_model(key, x, params, make, block_size):
    algo = make(params, block_size=block_size)
    return mcmc.run_chain(key, algo, algo.init(x), 20, trace_fn=lambda s, i: s.x)[1]


# --------------------------------------------------------------------------------------
# Issue 12: validation at every entry point, diagnostics that cannot mislead, compile once
# --------------------------------------------------------------------------------------


def _numpy_ising(rng, n=5):
    h, J = random_couplings(rng, n, scale=0.3)
    return IsingParams(h, J)


@pytest.mark.parametrize("make", [mcmc.heat_bath, mcmc.metropolis])
def test_ising_samplers_refuse_bad_params(rng, make):
    params = _numpy_ising(rng)
    name = "target" if make is mcmc.metropolis else "params"
    n = params.h.shape[0]
    with pytest.raises(ValueError, match=rf"{name}\.J must have a zero diagonal"):  # changes what heat bath samples
        make(params._replace(J=params.J + 0.5 * np.eye(n)))
    with pytest.raises(ValueError, match=rf"{name}\.J must be symmetric"):
        make(params._replace(J=params.J + np.triu(np.ones((n, n)), 1)))
    with pytest.raises(ValueError, match=rf"{name}\.h contains 1 NaN"):
        make(params._replace(h=np.where(np.arange(n) == 2, np.nan, params.h)))
    J = params.J.copy()
    J[0, 1] = J[1, 0] = np.nan
    with pytest.raises(ValueError, match=rf"{name}\.J contains 2 NaN"):
        make(params._replace(J=J))
    with pytest.raises(ValueError, match=rf"{name}\.J must have shape"):
        make(params._replace(J=params.J[:, :-1]))
    with pytest.raises(ValueError, match="beta must be finite"):
        make(params, np.nan)
    with pytest.raises(ValueError, match="beta must be >= 0"):
        make(params, -0.5)
    for huge in (1e39, 10**40):  # inf in float32: heat bath returned all -1 on zero couplings
        with pytest.raises(ValueError, match="beta must be at most 3.403e"):
            make(params, huge)
    with pytest.raises(ValueError, match="block_size must be an integer"):
        make(params, block_size=0)
    with pytest.raises(ValueError, match=name):
        make({"h": params.h, "J": params.J})


@pytest.mark.parametrize("bad", ["binary", "half", "nan", "shape"])
def test_sampler_starts_must_be_spins(rng, bad):
    params = _numpy_ising(rng)
    rbm_params = rbm.init(jax.random.key(0), 5, 3, scale=0.3)
    x = np.array([1.0, -1.0, 1.0, 1.0, -1.0])
    value = {"binary": (x + 1) / 2, "half": np.full(5, 0.5), "nan": np.where(x > 0, np.nan, x), "shape": x[:4]}[bad]
    generic = [] if bad == "shape" else [mcmc.metropolis(lambda s: jnp.sum(s))]  # any n is right for it
    for algo in [mcmc.metropolis(params), mcmc.heat_bath(params), mcmc.rbm_gibbs(rbm_params), *generic]:
        with pytest.raises(ValueError, match="^position"):
            algo.init(value, jax.random.key(0))  # only rbm_gibbs uses the key
    # starts built by a vmapped init are traced there: run_chains checks their values
    algo = mcmc.heat_bath(params)
    if bad != "shape":
        states = jax.vmap(algo.init)(np.stack([x, value]))
        with pytest.raises(ValueError, match="^states"):
            mcmc.run_chains(jax.random.key(0), algo, states, 2)
        with pytest.raises(ValueError, match="^state"):
            mcmc.run_chain(jax.random.key(0), algo, jax.tree_util.tree_map(lambda a: a[1], states), 2)
    ladder = mcmc.replica_exchange(lambda b: mcmc.heat_bath(params, b), [0.5, 1.0])
    with pytest.raises(ValueError, match="^position"):  # the slot's shape, or the values of "positions"
        ladder.init(np.stack([x, value]) if bad != "shape" else np.stack([x[:4], value]))


@pytest.mark.slow  # a few seconds: full suites run it (pytest -m slow)
def test_numpy_params_work_under_vmap(rng):
    params = _numpy_ising(rng, 6)  # NumPy arrays: converted when the sampler is built
    x0 = _random_spins(1, (3, 6))
    keys = jax.random.split(jax.random.key(0), 3)
    for make in (mcmc.metropolis, mcmc.heat_bath):
        algo = make(params)
        final = jax.jit(jax.vmap(lambda k, x, algo=algo: mcmc.run_chain(k, algo, algo.init(x), 3)[0].x))(keys, x0)
        want = make(IsingParams(jnp.asarray(params.h, jnp.float32), jnp.asarray(params.J, jnp.float32)))
        np.testing.assert_array_equal(final, jax.vmap(lambda k, x, want=want: mcmc.run_chain(
            k, want, want.init(x), 3)[0].x)(keys, x0))


def test_pcd_fit_ising_returns_info_and_resumes(rng):
    """pcd_fit_ising(key, ...) -> (params, PCDInfo): the residual per update, and the optimiser
    state and chain positions that resume the run."""
    params, _, _ = _ising(rng, 5)
    data = _random_spins(3, (40, 5))
    betas = jnp.asarray([0.5, 1.0])
    fit = jax.jit(lambda k, p, s, c: mcmc.pcd_fit_ising(k, p, data, optax.adam(0.05), 4, betas=betas, num_chains=8,
                                                        opt_state=s, chains=c))
    fitted, info = mcmc.pcd_fit_ising(jax.random.key(0), params, data, optax.adam(0.05), 4, betas=betas,
                                      num_chains=8)
    assert isinstance(info, mcmc.PCDInfo) and info.residual.shape == (4,) and info.chains.shape == (8, 2, 5)
    assert set(np.unique(np.asarray(info.chains)).tolist()) <= {-1.0, 1.0}
    assert np.all(np.isfinite(np.asarray(info.residual)))
    resumed, info2 = fit(jax.random.key(1), fitted, info.opt_state, info.chains)
    assert int(info2.opt_state[0].count) == 8  # Adam's step count carried over
    assert not np.allclose(resumed.J, fitted.J)
    with pytest.raises(ValueError, match="^opt_state must be a state of this optimizer"):
        fit(jax.random.key(1), fitted, optax.sgd(0.1).init(fitted), info.chains)


def test_counts_ladders_and_schedules_are_validated(rng):
    params = _numpy_ising(rng)
    algo = mcmc.metropolis(params)
    state = algo.init(np.ones(5))
    states = jax.vmap(algo.init)(jnp.ones((2, 5)))
    for kw, name in (({"thin": 0}, "thin"), ({"num_chunks": 0}, "num_chunks"), ({"thin": 1.5}, "thin")):
        with pytest.raises(ValueError, match=f"^{name} must be an integer"):
            mcmc.run_chain(jax.random.key(0), algo, state, 4, **kw)
        with pytest.raises(ValueError, match=f"^{name} must be an integer"):
            mcmc.run_chains(jax.random.key(0), algo, states, 4, **kw)
    with pytest.raises(ValueError, match="^num_steps must be an integer"):
        mcmc.run_chain(jax.random.key(0), algo, state, 2.5)
    with pytest.raises(ValueError, match="^algorithm must be a SamplingAlgorithm"):
        mcmc.run_chain(jax.random.key(0), params, state, 2)
    with pytest.raises(ValueError, match="^num must be an integer >= 2"):
        mcmc.geometric_ladder(0.1, 1.0, 2.5)
    with pytest.raises(ValueError, match="^beta_min must be < beta_max"):
        mcmc.geometric_ladder(1.0, 0.5, 4)
    ladder = mcmc.geometric_ladder(0.3, 1.0, 4)
    assert float(ladder[0]) == np.float32(0.3) and float(ladder[-1]) == 1.0
    make = lambda b: mcmc.heat_bath(params, b)  # noqa: E731
    for betas, match in (([1.0], "at least 2"), ([0.0, 1.0], "> 0"), ([0.5, np.nan], "NaN"),
                         ([0.5, 0.5, 1.0], "strictly monotone")):
        with pytest.raises(ValueError, match=f"^betas .*{match}"):
            mcmc.replica_exchange(make, betas)
    with pytest.raises(ValueError, match="^acceptance must"):
        mcmc.adapt_ladder([0.5, 1.0], [1.5])
    with pytest.raises(ValueError, match="^acceptance must have shape"):
        mcmc.adapt_ladder([0.5, 0.7, 1.0], [0.5])
    with pytest.raises(ValueError, match="^num_rounds"):
        mcmc.tune_ladder(jax.random.key(0), make, [0.5, 1.0], np.ones((2, 5)), num_rounds=0)
    data = _random_spins(2, (20, 5))
    for betas, match in (([0.5, 0.9], "must end at beta = 1"), ([0.5, 0.5, 1.0], "strictly monotone")):
        with pytest.raises(ValueError, match=f"^betas .*{match}"):  # it would fit the wrong model
            mcmc.pcd_fit_ising(jax.random.key(0), params, data, optax.sgd(0.1), 2, betas=betas)
    with pytest.raises(ValueError, match="^num_chains"):
        mcmc.pcd_fit_ising(jax.random.key(0), params, data, optax.sgd(0.1), 2, betas=[0.5, 1.0], num_chains=0)
    for chains, match in ((np.ones((4, 2, 5)), "must have shape"), (np.zeros((8, 2, 5)), "must hold"),
                          (np.ones((8, 5)), r"must have shape \(num_chains, len\(betas\), n\) = \(8, 2, 5\)")):
        with pytest.raises(ValueError, match=f"^chains .*{match}"):
            mcmc.pcd_fit_ising(jax.random.key(0), params, data, optax.sgd(0.1), 2, betas=[0.5, 1.0], num_chains=8,
                               chains=chains)
    for kw, match in (({"betas": [0.1, 1.0]}, "betas must start at 0"), ({"betas": [0.0, 0.9]}, "betas must end at 1"),
                      ({"betas": [0.0, 0.6, 0.5, 1.0]}, "betas must be non-decreasing"),
                      ({"num_chains": 1}, "num_chains must be an integer >= 2"),
                      ({"num_temps": 2.5}, "num_temps must be an integer"),
                      ({"sweeps_per_temp": 0}, "sweeps_per_temp must be an integer")):
        with pytest.raises(ValueError, match=f"^{match}"):
            mcmc.ais_log_partition(jax.random.key(0), params, **{"num_chains": 4, "num_temps": 5, **kw})
    with pytest.raises(ValueError, match=r"^target\.J must have a zero diagonal"):
        mcmc.ais_log_partition(jax.random.key(0), params._replace(J=params.J + np.eye(5)), num_chains=4, num_temps=5)
    with pytest.raises(ValueError, match=r"^target\.W contains"):
        mcmc.ais_log_partition(jax.random.key(0), rbm.RBMParams(np.full((3, 2), np.nan), np.zeros(3), np.zeros(2)),
                               num_chains=4, num_temps=5)


def test_ess_never_exceeds_the_draws_and_undefined_cases_warn():
    rng = np.random.default_rng(0)
    with pytest.warns(RuntimeWarning, match="all draws equal"):  # a stuck chain: ESS undefined, not 4e5
        assert np.isnan(float(mcmc.effective_sample_size(np.ones(400))))
    with pytest.warns(RuntimeWarning, match="all draws equal"):
        tau = mcmc.integrated_autocorr_time(np.ones(400))
    assert np.isnan(float(tau))
    with pytest.warns(RuntimeWarning, match="all draws equal"):
        assert np.all(np.isnan(np.asarray(mcmc.autocorrelation(np.ones((50, 2)), axis=0))))
    # independent and antithetic draws: ESS at most the number of draws
    for x in (rng.normal(size=400), rng.normal(size=(4, 400)), np.tile([1.0, -1.0], 200), rng.normal(size=(4, 400, 3))):
        ess = np.asarray(mcmc.effective_sample_size(x))
        assert np.all(ess <= x.shape[0] * (x.shape[1] if x.ndim > 1 else 1)) and np.all(ess > 0), ess
    assert float(mcmc.effective_sample_size(np.tile([1.0, -1.0], 200))) == 400.0  # tau clamped at 1
    # chains stuck in different states look mixed one by one; the multi-chain ESS is tiny
    stuck = np.concatenate([np.ones((2, 100)), -np.ones((2, 100))]) + 0.01 * rng.normal(size=(4, 100))
    assert float(mcmc.effective_sample_size(stuck)) < 10
    # one constant entry among others: NaN only there
    x = rng.normal(size=(3, 50, 2))
    x[..., 1] = 2.0
    with pytest.warns(RuntimeWarning, match="1 of 2 quantities"):
        ess = np.asarray(mcmc.effective_sample_size(x))
    assert np.isnan(ess[1]) and 0 < ess[0] <= 150
    with pytest.raises(ValueError, match="x contains 1 NaN"):
        mcmc.effective_sample_size(np.where(np.arange(10) == 3, np.nan, 1.0 * np.arange(10)))
    with pytest.raises(ValueError, match="at least 4 draws"):
        mcmc.effective_sample_size(np.arange(3.0))


def test_r_hat_needs_chains_and_draws_and_flags_constant_chains():
    rng = np.random.default_rng(1)
    with pytest.raises(ValueError, match="at least 4 draws per chain"):
        mcmc.r_hat(rng.normal(size=(3, 1)))  # was a ZeroDivisionError
    with pytest.raises(ValueError, match="at least 4 draws per chain"):
        mcmc.r_hat(rng.normal(size=(3, 3)))
    with pytest.raises(ValueError, match="at least 2 chains"):
        mcmc.r_hat(rng.normal(size=(1, 10)))
    with pytest.raises(ValueError, match="x contains 1 NaN"):
        mcmc.r_hat(np.where(np.arange(20).reshape(2, 10) == 5, np.nan, rng.normal(size=(2, 10))))
    assert abs(float(mcmc.r_hat(rng.normal(size=(4, 4)))) - 1.0) < 1.0  # 4 draws are enough
    with pytest.warns(RuntimeWarning, match="all draws equal"):
        assert np.isnan(float(mcmc.r_hat(np.ones((3, 10)))))
    with pytest.warns(RuntimeWarning, match="R-hat is \\+inf"):
        assert float(mcmc.r_hat(np.concatenate([np.ones((2, 10)), -np.ones((2, 10))]))) == np.inf
    # under jit no warning can be issued, and the undefined value is still NaN
    assert np.isnan(float(jax.jit(mcmc.r_hat)(jnp.ones((3, 10)))))


def test_ais_compiles_once_eagerly(rng):
    ising_targets = [_ising(rng, 6)[0] for _ in range(2)]
    rbm_targets = [rbm.init(jax.random.key(i), 5, 3, scale=0.5) for i in range(2)]
    make = functools.partial(_heat_bath_at, ising_targets[0])

    def init_fn(key):
        return jnp.where(jax.random.bernoulli(key, 0.5, (6,)), 1.0, -1.0)

    schedules = [jnp.linspace(0.0, 1.0, 6), jnp.linspace(0.0, 1.0, 6) ** 2]  # the shapes of num_temps=6
    calls = [
        ("ising", lambda i: mcmc.ais_log_partition(jax.random.key(i), ising_targets[i], num_chains=8, num_temps=6)),
        ("rbm", lambda i: mcmc.ais_log_partition(jax.random.key(i), rbm_targets[i], num_chains=8, num_temps=6)),
        ("betas", lambda i: mcmc.ais_log_partition(jax.random.key(i), ising_targets[i], num_chains=8,
                                                   betas=schedules[i])),
        ("user", lambda i: mcmc.ais_log_partition(jax.random.key(i), None, num_chains=8, num_temps=6,
                                                  make_algorithm=make, init_fn=init_fn, log_z0=6 * np.log(2.0) + i)),
    ]
    for name, call in calls:
        first = call(0)
        with _count_compiles() as compiles:
            second = call(1)
            jax.block_until_ready(second)
        assert compiles[0] == 0, (name, compiles[0])
        assert np.isfinite(float(first.log_z)) and np.isfinite(float(second.stderr))
    # same key, same result as before the cache: the Ising target equals a user make_algorithm on it
    a = mcmc.ais_log_partition(jax.random.key(5), ising_targets[0], num_chains=8, num_temps=6)
    b = mcmc.ais_log_partition(jax.random.key(5), None, num_chains=8, num_temps=6, make_algorithm=make,
                               init_fn=init_fn, log_z0=6 * np.log(2.0))
    np.testing.assert_allclose(a.log_weights, b.log_weights, rtol=1e-6)  # same draws; fusion may round apart


def _heat_bath_at(params, beta):
    return mcmc.heat_bath(params, beta)



# --------------------------------------------------------------------------------------
# Issue 14: one sampler shape (state, info, init(position, key=None), factory)
# --------------------------------------------------------------------------------------


def _rbm_params(rng, nv=6, nh=4, scale=0.5):
    return rbm.RBMParams(jnp.asarray(rng.normal(size=(nv, nh)) * scale, jnp.float32),
                         jnp.asarray(rng.normal(size=nv) * 0.3, jnp.float32),
                         jnp.asarray(rng.normal(size=nh) * 0.3, jnp.float32))


def test_every_sampler_has_its_state_and_info(rng):
    from jaxebm import graphs

    params, _, _ = _ising(rng, 8)
    graph = graphs.square_lattice(4, 4)
    graph_params = ising.GraphIsingParams(jnp.asarray(rng.normal(size=16) * 0.3, jnp.float32),
                                          jnp.asarray(rng.normal(size=graph.num_edges) * 0.5, jnp.float32), graph)
    rbm_params = _rbm_params(rng)
    lw = functools.partial(ising.log_weight, params)
    cases = [  # (algorithm, its init as a function, n, state type, info type, the info's rate)
        (mcmc.metropolis(params), functools.partial(mcmc.metropolis_init, params), 8, mcmc.SpinState,
         mcmc.MetropolisInfo, "acceptance_rate"),
        (mcmc.metropolis(graph_params), functools.partial(mcmc.metropolis_init, graph_params), 16, mcmc.SpinState,
         mcmc.MetropolisInfo, "acceptance_rate"),
        (mcmc.metropolis(lw), functools.partial(mcmc.metropolis_init, lw), 8, mcmc.MetropolisState,
         mcmc.MetropolisInfo, "acceptance_rate"),
        (mcmc.heat_bath(params), functools.partial(mcmc.heat_bath_init, params), 8, mcmc.SpinState,
         mcmc.HeatBathInfo, "flip_rate"),
        (mcmc.heat_bath(graph_params), functools.partial(mcmc.heat_bath_init, graph_params), 16, mcmc.SpinState,
         mcmc.HeatBathInfo, "flip_rate"),
        (mcmc.rbm_gibbs(rbm_params), functools.partial(mcmc.rbm_gibbs_init, jax.random.key(1), rbm_params), 6,
         mcmc.RBMState, mcmc.RBMInfo, "flip_rate"),
    ]
    for algo, init_fn, n, state_type, info_type, rate in cases:
        x0 = _random_spins(7, (n,))
        state = algo.init(x0, jax.random.key(1))  # the key is used by rbm_gibbs only
        chex.assert_trees_all_close(init_fn(x0), state)  # the function is the algorithm's init
        assert type(state) is state_type
        new, info = jax.jit(algo.step)(jax.random.key(2), state)
        assert type(new) is state_type and type(info) is info_type, (type(new), type(info))
        assert info._fields == (rate,)
        # single-spin Metropolis: accepted proposals = flipped spins; heat bath / RBM: flipped
        np.testing.assert_allclose(getattr(info, rate), np.mean(np.asarray(new.x) != np.asarray(x0)), rtol=1e-6)
    pt = mcmc.replica_exchange(lambda b: mcmc.heat_bath(params, b), jnp.asarray([0.5, 1.0]))
    state = pt.init(_random_spins(3, (2, 8)))
    assert type(state) is mcmc.ReplicaExchangeState
    chex.assert_trees_all_close(state, mcmc.replica_exchange_init(lambda b: mcmc.heat_bath(params, b),
                                                                  jnp.asarray([0.5, 1.0]), _random_spins(3, (2, 8))))
    _, info = pt.step(jax.random.key(0), state)
    assert type(info) is mcmc.ReplicaExchangeInfo and type(info.inner) is mcmc.HeatBathInfo
    assert info.inner.flip_rate.shape == (2,)


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_rbm_gibbs_init_draws_z_from_the_exact_conditional(rng, beta):
    params = _rbm_params(rng, nv=6, nh=4, scale=0.8)
    x = _random_spins(8, (6,))
    num = 20_000
    keys = jax.random.split(jax.random.key(3), num)
    algo = mcmc.rbm_gibbs(params, beta)
    z = np.asarray(jax.jit(jax.vmap(algo.init, in_axes=(None, 0)))(x, keys).z, np.float64)
    np.testing.assert_array_equal(np.asarray(mcmc.rbm_gibbs_init(keys[0], params, x, beta).z), z[0])
    W, c = np.asarray(params.W, np.float64), np.asarray(params.c, np.float64)
    mean = np.tanh(beta * (np.asarray(x, np.float64) @ W + c))
    # independent draws: each unit's mean within K_SIGMA binomial SEs sqrt((1 - m^2) / N)
    assert np.all(np.abs(z.mean(0) - mean) < K_SIGMA * np.sqrt((1 - mean**2) / num)), (z.mean(0), mean)
    # and the units are independent given x: pair products average to the product of the means
    iu = np.triu_indices(4, 1)
    pair, want = (z[:, :, None] * z[:, None, :])[:, iu[0], iu[1]].mean(0), np.outer(mean, mean)[iu]
    assert np.all(np.abs(pair - want) < K_SIGMA * np.sqrt((1 - want**2) / num)), (pair, want)
    with pytest.raises(ValueError, match="^key is required"):
        algo.init(x)
    with pytest.raises(ValueError, match="^key is required"):
        mcmc.replica_exchange(lambda b: mcmc.rbm_gibbs(params, b), [0.5, 1.0]).init(jnp.stack([x, x]))


@pytest.mark.parametrize("beta", [1.0, 0.6, 0.0])
@pytest.mark.slow  # a few seconds: full suites run it (pytest -m slow)
def test_rbm_gibbs_log_weight_is_minus_the_energy(rng, beta):
    params = _rbm_params(rng, nv=7, nh=5)
    algo = mcmc.rbm_gibbs(params, beta)
    states = jax.vmap(algo.init)(_random_spins(9, (16, 7)), jax.random.split(jax.random.key(0), 16))
    for t in range(3):
        np.testing.assert_allclose(states.log_weight, rbm.energy(params, states.x, states.z) * -1, rtol=1e-5,
                                   atol=1e-5)
        states, _ = jax.jit(jax.vmap(algo.step))(jax.random.split(jax.random.key(t + 1), 16), states)
    # the sweep is the one rbm.gibbs_step makes at beta = 1 (same draws)
    if beta == 1.0:
        s = algo.init(_random_spins(9, (7,)), jax.random.key(5))
        new, _ = algo.step(jax.random.key(6), s)
        x, z = rbm.gibbs_step(jax.random.key(6), params, s.x)
        np.testing.assert_array_equal(new.x, x)
        np.testing.assert_array_equal(new.z, z)


@pytest.mark.slow  # a few seconds: full suites run it (pytest -m slow)
def test_replica_exchange_and_tune_ladder_over_rbm_gibbs(rng):
    """A sampler whose init draws composes with replica exchange and tune_ladder, which pass keys."""
    params = _rbm_params(rng, nv=5, nh=3)
    make = functools.partial(_rbm_gibbs_at, params)
    algo = mcmc.replica_exchange(make, jnp.asarray([0.5, 1.0]))
    state = algo.init(_random_spins(1, (2, 5)), jax.random.key(0))
    np.testing.assert_allclose(state.states.log_weight, -rbm.energy(params, state.states.x, state.states.z),
                               rtol=1e-5, atol=1e-5)
    final, trace = mcmc.run_chain(jax.random.key(1), algo, state, 10)
    assert trace.shape == (10, 2, 5)
    betas, history, positions = mcmc.tune_ladder(jax.random.key(2), make, [0.5, 0.75, 1.0], _random_spins(2, (3, 5)),
                                                 num_rounds=2, steps_per_round=10)
    assert history.shape == (2, 2) and positions.shape == (3, 5)


def _rbm_gibbs_at(params, beta):
    return mcmc.rbm_gibbs(params, beta)


@pytest.mark.slow  # a few seconds: full suites run it (pytest -m slow)
def test_run_chains_records_the_positions_by_default(rng):
    params, _, _ = _ising(rng, 8)
    algo = mcmc.heat_bath(params)
    states = jax.vmap(algo.init)(_random_spins(4, (6, 8)))
    final, trace = mcmc.run_chains(jax.random.key(7), algo, states, 12, thin=3)
    assert trace.shape == (6, 4, 8)  # (chains, num_steps // thin, n): the spins only
    np.testing.assert_array_equal(trace[:, -1], final.x)
    _, want = mcmc.run_chains(jax.random.key(7), algo, states, 12, thin=3, trace_fn=lambda s, i: s.x)
    np.testing.assert_array_equal(trace, want)
    # recording more is a trace_fn away
    _, (xs, info) = mcmc.run_chains(jax.random.key(7), algo, states, 12, thin=3, trace_fn=lambda s, i: (s, i))
    assert type(xs) is mcmc.SpinState and xs.local_field.shape == (6, 4, 8) and info.flip_rate.shape == (6, 4)
    # replica exchange: every slot's spins; a state without x needs a trace_fn
    pt = mcmc.replica_exchange(lambda b: mcmc.heat_bath(params, b), jnp.asarray([0.5, 0.8, 1.0]))
    _, trace = mcmc.run_chain(jax.random.key(0), pt, pt.init(_random_spins(5, (3, 8))), 4)
    assert trace.shape == (4, 3, 8)
    with pytest.raises(ValueError, match="default trace_fn records state.x"):
        mcmc.trace_positions((jnp.ones(3),), None)


# --------------------------------------------------------------------------------------
# Bad input in mcmc: clear ValueErrors naming the argument, never a silent wrong answer
# --------------------------------------------------------------------------------------


def _binary_init(key):  # {0, 1}, not +-1: a wrong start
    return jax.random.bernoulli(key, 0.5, (4,)).astype(jnp.float32)


def _spin_init(key):
    return jax.random.rademacher(key, (4,), jnp.float32)


def test_ais_checks_what_a_user_init_fn_returns(rng):
    params, h, J = _ising(rng, 4, scale=0.5)
    make = functools.partial(_heat_bath_at, params)
    kw = {"num_chains": 512, "num_temps": 50, "make_algorithm": make, "log_z0": 4 * np.log(2.0)}
    # traced under jit, the {0, 1} start would be annealed from silently, to a wrong log Z
    with pytest.raises(ValueError, match=r"^init_fn must return a valid start.*position must hold spins"):
        mcmc.ais_log_partition(jax.random.key(0), None, init_fn=_binary_init, **kw)
    for bad, match in ((lambda k: jnp.ones(5), "^init_fn must return a valid start.*5"),
                       (lambda k: jnp.full((4,), jnp.nan), r"^init_fn\(key\) contains 4 NaN"),
                       (lambda k: 1 / 0, "^init_fn must be a function key -> position.*ZeroDivisionError")):
        with pytest.raises(ValueError, match=match):
            mcmc.ais_log_partition(jax.random.key(0), None, init_fn=bad, **kw)
    with pytest.raises(ValueError, match="^make_algorithm must return a SamplingAlgorithm"):
        mcmc.ais_log_partition(jax.random.key(0), None, **{**kw, "make_algorithm": lambda b: 3}, init_fn=_spin_init)
    # a good init_fn still works, eagerly and under the caller's jit (the check draws on its own key)
    res = mcmc.ais_log_partition(jax.random.key(0), None, init_fn=_spin_init, **kw)
    _assert_ais_within_its_stderr(res, reference.ising_log_z(h, J), 512)
    jitted = jax.jit(lambda k: mcmc.ais_log_partition(k, None, init_fn=_spin_init, **kw).log_z)(jax.random.key(0))
    np.testing.assert_allclose(jitted, res.log_z, rtol=1e-5)
    with pytest.raises(ValueError, match="^init_fn must return a valid start"):  # shapes are checked under jit too
        jax.jit(lambda k: mcmc.ais_log_partition(k, None, init_fn=lambda k: jnp.ones(5), **kw).log_z)(
            jax.random.key(0))


def test_ais_num_temps_and_betas_must_agree(rng):
    params = _numpy_ising(rng, 4)
    betas = jnp.array([0.0, 0.5, 1.0])
    for num_temps, match in ((-3, "^num_temps must be an integer >= 2"), (5, r"^num_temps \(5\) disagrees with betas")):
        with pytest.raises(ValueError, match=match):
            mcmc.ais_log_partition(jax.random.key(0), params, num_chains=4, betas=betas, num_temps=num_temps)
    a = mcmc.ais_log_partition(jax.random.key(0), params, num_chains=4, betas=betas, num_temps=3)
    b = mcmc.ais_log_partition(jax.random.key(0), params, num_chains=4, betas=betas)
    np.testing.assert_array_equal(a.log_weights, b.log_weights)


def test_autocorrelation_axis_is_validated():
    x = np.random.default_rng(0).normal(size=(5, 10))
    for axis, match in ((2, r"in \[-2, 2\)"), (-3, r"in \[-2, 2\)"), (True, "integer axis"), (1.5, "integer axis")):
        with pytest.raises(ValueError, match=f"^axis must be .*{match}"):
            mcmc.autocorrelation(x, axis=axis)
    np.testing.assert_array_equal(mcmc.autocorrelation(x, axis=np.int64(-1)), mcmc.autocorrelation(x, axis=1))


def test_generic_metropolis_refuses_bad_block_size_and_log_weights():
    with pytest.raises(ValueError, match="^block_size must be an integer >= 1"):
        mcmc.metropolis(lambda x: -jnp.sum(x), block_size=-5)
    mcmc.metropolis(lambda x: -jnp.sum(x), block_size=4)  # a valid one is accepted (and unused)
    with pytest.raises(ValueError, match=r"^log_weight_fn\(position\) must be finite"):
        mcmc.metropolis(lambda x: jnp.nan * jnp.sum(x)).init(jnp.ones(4))
    with pytest.raises(ValueError, match=r"^log_weight_fn must return a scalar.*\(1,\)"):
        mcmc.metropolis(lambda x: jnp.sum(x, keepdims=True)).init(jnp.ones(4))
    algo = mcmc.metropolis(lambda x: -jnp.sum(x))
    states = jax.vmap(algo.init)(jnp.ones((2, 4)))  # traced: the values are not checked, shapes are
    assert states.log_weight.shape == (2,)


def test_run_chain_and_run_chains_refuse_bad_states_devices_and_trace_fn(rng):
    params = _numpy_ising(rng, 4)
    algo = mcmc.heat_bath(params)
    states = jax.vmap(algo.init)(jnp.ones((2, 4)))
    cpu = jax.devices()[0]
    for devices, match in ((["a", "b"], "jax devices"), ([cpu, cpu], "repeat"), ([], "at least one device"),
                           (3, "sequence")):
        with pytest.raises(ValueError, match=f"^devices .*{match}"):
            mcmc.run_chains(jax.random.key(0), algo, states, 2, devices=devices)
    with pytest.raises(ValueError, match=r"^state must be a state of the algorithm, from algorithm\.init\(position\)"):
        mcmc.run_chain(jax.random.key(0), algo, jnp.ones(4), 2)
    with pytest.raises(ValueError, match=r"^states must be a state of the algorithm, from algorithm\.init"):
        mcmc.run_chains(jax.random.key(0), algo, jnp.ones((2, 4)), 2)
    with pytest.raises(ValueError, match="^trace_fn must be a function"):
        mcmc.run_chain(jax.random.key(0), algo, algo.init(jnp.ones(4)), 2, trace_fn=3)
    with pytest.raises(ValueError, match="^trace_fn must be a function"):
        mcmc.run_chains(jax.random.key(0), algo, states, 2, trace_fn=3)


def test_rbm_gibbs_precision_is_validated_when_built(rng):
    params = _rbm_params(rng)
    for bad in ("foo", 3, ["high", "high"]):
        with pytest.raises(ValueError, match="^precision must be a matmul precision"):
            mcmc.rbm_gibbs(params, precision=bad)
    with pytest.raises(ValueError, match="^precision must be a matmul precision"):
        mcmc.rbm_gibbs_init(jax.random.key(0), params, jnp.ones(6), precision="foo")
    for good in (None, lax.Precision.HIGH, "highest", "float32", "tensorfloat32", "bfloat16", ("high", "highest")):
        algo = mcmc.rbm_gibbs(params, precision=good)
        algo.step(jax.random.key(1), algo.init(jnp.ones(6), jax.random.key(0)))


def test_replica_exchange_checks_what_make_algorithm_returns(rng):
    with pytest.raises(ValueError, match=r"^make_algorithm must return a SamplingAlgorithm.*type int"):
        mcmc.replica_exchange(lambda b: 3, jnp.array([0.5, 1.0])).init(jnp.ones((2, 4)))


def test_step_refuses_a_state_of_another_model_or_a_batch():
    """A state of 5 spins given to a 4-spin sampler, or a batch of states given to step, was a
    TypeError from inside a matmul or a scan."""
    from jaxebm import graphs

    p4, p5 = ising.init(jax.random.key(0), 4, 0.3), ising.init(jax.random.key(0), 5, 0.3)
    other = mcmc.heat_bath(p5).init(jnp.ones(5))
    lattice = graphs.square_lattice(3, 3)
    samplers = [mcmc.heat_bath(p4), mcmc.metropolis(p4), mcmc.heat_bath(ising.edwards_anderson(jax.random.key(0),
                                                                                             lattice)),
                mcmc.rbm_gibbs(rbm.init(jax.random.key(0), 4, 3))]
    for algo in samplers:
        with pytest.raises(ValueError, match=r"state\.x must have shape \((4|9),\)"):
            algo.step(jax.random.key(1), other)
    batch = jax.vmap(samplers[0].init)(jnp.ones((3, 4)))
    with pytest.raises(ValueError, match=r"got \(3, 4\) \(for many chains"):
        samplers[0].step(jax.random.key(1), batch)
    assert mcmc.run_chains(jax.random.key(0), samplers[0], batch, 2)[0].x.shape == (3, 4)


def test_replica_exchange_needs_states_with_a_log_weight():
    """An inner sampler whose state has no log_weight was an AttributeError at the first swap."""
    from typing import NamedTuple

    class Position(NamedTuple):
        x: jax.Array

    algo = mcmc.SamplingAlgorithm(lambda position, key=None: Position(position), lambda k, s: (s, ()))
    tempered = mcmc.replica_exchange(lambda b: algo, jnp.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="make_algorithm\\(beta\\) must build samplers whose states carry a scalar "
                                         "log_weight"):
        tempered.step(jax.random.key(0), tempered.init(jnp.ones((2, 3))))


def test_diagnostics_take_float16_draws_as_float32():
    x = np.random.default_rng(0).normal(size=(4, 200)).astype(np.float16)  # the FFT refused float16
    wide = x.astype(np.float32)
    np.testing.assert_allclose(mcmc.effective_sample_size(x), mcmc.effective_sample_size(wide))
    np.testing.assert_allclose(mcmc.r_hat(x), mcmc.r_hat(wide))
    np.testing.assert_allclose(mcmc.autocorrelation(x[0]), mcmc.autocorrelation(wide[0]))
