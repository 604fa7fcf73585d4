"""Exact Ising quantities against the float64 brute force."""


import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxebm import graphs, ising
from jaxebm.ising import IsingParams
from tests import reference
from tests._compile import count_compiles as _count_compiles
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
    # Pearson chi-square with 31 degrees of freedom (every expected count >= 5, Cochran's rule for
    # the chi-square law; the smallest here is ~15): its 1 - 1e-3 quantile is 61.1.
    chi2 = np.sum((counts - num * p) ** 2 / (num * p))
    assert (num * p).min() >= 5 and chi2 < 61.1, (chi2, (num * p).min())
    # Each state's frequency within 5 binomial standard errors (normal false alarm 6e-7 each, x 32).
    np.testing.assert_array_less(np.abs(counts / num - p), 5 * np.sqrt(p * (1 - p) / num))


@pytest.mark.slow  # a few seconds: full suites run it (pytest -m slow)
def test_sample_exact_moments_two_stage_n20(rng):
    n, num = 20, 100_000
    params, _, _ = _params(rng, n, scale=0.25)
    samples = np.asarray(ising.sample_exact(jax.random.key(1), params, num))
    mean, corr = ising.moments(params)
    se = np.sqrt(np.clip(1 - np.asarray(mean) ** 2, 1e-3, None) / num)
    np.testing.assert_array_less(np.abs(samples.mean(0) - mean), 5 * se)
    np.testing.assert_array_less(np.abs(samples.T @ samples / num - corr), 5 / np.sqrt(num))


@pytest.mark.slow
def test_sample_exact_n30_moments():
    # 5 standard errors per entry (two-sided normal false alarm 6e-7, x 465 entries < 3e-4):
    # var(x_i) = 1 - m_i^2 (floored at 1e-3 for nearly frozen spins) and var(x_i x_j) <= 1
    params = ising.sherrington_kirkpatrick(jax.random.key(3), 30, beta=0.5, field_std=0.2)
    samples = np.asarray(ising.sample_exact(jax.random.key(4), params, 50_000))
    mean, corr = ising.moments(params)
    num = samples.shape[0]
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


# ----- issue #12: validation at the entry, NumPy and lists accepted, compile once -------------


def test_numpy_and_list_params_work_everywhere(rng):
    params, h, J = _params(rng, 5)
    data = jnp.asarray(reference.all_states(5)[::3])
    key = jax.random.key(3)
    for other in (IsingParams(np.asarray(params.h), np.asarray(params.J)),
                  IsingParams(np.asarray(params.h).tolist(), np.asarray(params.J).tolist())):
        checked = ising.validate_params(other)
        assert isinstance(checked.h, jax.Array) and isinstance(checked.J, jax.Array)
        for fn in (ising.log_partition, ising.moments, ising.fisher, ising.to_flat,
                   lambda p: ising.nll(p, data), lambda p: ising.log_prob(p, data), lambda p: ising.log_weight(p, data),
                   lambda p: ising.kl(p, params), lambda p: ising.kl(params, p),
                   lambda p: ising.sample_exact(key, p, 7), lambda p: ising.moment_residual(p, data),
                   lambda p: ising.fit(optax.sgd(0.1), p, data, 2)[0]):
            chex.assert_trees_all_close(fn(other), fn(params), rtol=1e-6, atol=1e-6)
        # closed over by vmapped and jitted code (as the samplers do): converted at the entry
        np.testing.assert_allclose(jax.vmap(lambda x, p=other: ising.log_weight(p, x))(data),
                                   ising.log_weight(params, data), rtol=1e-6)
        np.testing.assert_allclose(jax.jit(lambda p=other: ising.log_partition(p))(), reference.ising_log_z(h, J),
                                   rtol=2e-6)
    # integer +-1 data and spins
    np.testing.assert_allclose(ising.nll(params, np.asarray(data, np.int8)), ising.nll(params, data), rtol=1e-6)


@pytest.mark.parametrize("bad", [(jnp.zeros(3), jnp.zeros((3, 3))), {"h": 0, "J": 0}, None, "params"])
def test_wrong_params_type_is_a_value_error(bad):
    for fn in (ising.log_partition, ising.moments, ising.fisher, ising.validate_params,
               lambda p: ising.log_weight(p, jnp.ones(3)), lambda p: ising.sample_exact(jax.random.key(0), p, 2)):
        with pytest.raises(ValueError, match="params must be an IsingParams"):
            fn(bad)


def test_bad_params_values_and_shapes(rng):
    params, _, _ = _params(rng, 4)
    with pytest.raises(ValueError, match="params.h must not be empty|params.h must hold at least one spin"):
        ising.log_partition(IsingParams(jnp.zeros(0), jnp.zeros((0, 0))))
    with pytest.raises(ValueError, match="params.J contains 1 NaN or infinite"):
        ising.log_weight(params._replace(J=params.J.at[1, 2].set(jnp.inf)), jnp.ones(4))
    with pytest.raises(ValueError, match="params.h must be a numeric array"):
        ising.log_partition(IsingParams(["a"] * 4, params.J))
    with pytest.raises(ValueError, match="params.J must be a coupling matrix"):
        ising.nll(IsingParams(params.h, params.J[0]), np.ones((2, 4)))
    with pytest.raises(ValueError, match="params_p.J must be symmetric"):
        ising.kl(params._replace(J=params.J.at[0, 1].add(1.0)), params)
    with pytest.raises(ValueError, match="params_q.h contains"):
        ising.kl(params, params._replace(h=params.h.at[0].set(jnp.nan)))
    with pytest.raises(ValueError, match="same number of spins"):
        ising.kl(params, _params(rng, 5)[0])
    with pytest.raises(ValueError, match="params.J must have a zero diagonal"):
        ising.to_flat(params._replace(J=params.J + jnp.eye(4)))
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        ising.log_partition(params, inner_bit=2)


def test_bad_spins_and_data(rng):
    params, _, _ = _params(rng, 4)
    for name, fn in (("x", lambda v: ising.log_weight(params, v)), ("x", lambda v: ising.log_prob(params, v)),
                     ("x", lambda v: ising.energy(params, v)), ("x", ising.sufficient_statistics),
                     ("data", lambda v: ising.nll(params, v)), ("data", ising.data_moments),
                     ("data", lambda v: ising.moment_residual(params, v))):
        good = np.where(np.arange(12).reshape(3, 4) % 3, 1.0, -1.0).astype(np.float32)
        with pytest.raises(ValueError, match=f"{name} must hold spins"):
            fn((good + 1) / 2)  # {0, 1} data
        with pytest.raises(ValueError, match=f"{name} contains 1 NaN"):
            fn(np.where(np.arange(12).reshape(3, 4) == 5, np.nan, good))
        with pytest.raises(ValueError, match=name):
            fn(good[:0])  # empty
        with pytest.raises(ValueError, match=name):
            fn(good[None, None])  # extra axes: vmap instead
        with pytest.raises(ValueError, match=name):
            fn(good.astype(str))
    with pytest.raises(ValueError, match="x must have 4 spins"):
        ising.log_weight(params, np.ones(3))
    with pytest.raises(ValueError, match="mean must hold moments"):
        ising.nll_from_moments(params, np.full(4, 2.0), np.eye(4))
    with pytest.raises(ValueError, match="corr contains 4 NaN"):
        ising.nll_from_moments(params, np.zeros(4), np.where(np.eye(4) > 0, np.nan, 0.0))
    with pytest.raises(ValueError, match=r"corr must have shape \(4, 4\)"):
        ising.nll_from_moments(params, np.zeros(4), np.eye(3))
    # a triangle of <x x^T> would halve the coupling term of the nll
    with pytest.raises(ValueError, match="corr must be symmetric"):
        ising.nll_from_moments(params, np.zeros(4), np.triu(np.full((4, 4), 0.3)))


def test_counts_and_scalars_are_never_truncated(rng):
    params, _, _ = _params(rng, 4)
    key = jax.random.key(0)
    for bad in (2.5, 0, -1, True, np.nan, "3"):
        with pytest.raises(ValueError, match="num_samples must be .*integer"):
            ising.sample_exact(key, params, bad)
        with pytest.raises(ValueError, match="num_steps must be .*integer"):
            ising.fit(optax.sgd(0.1), params, np.ones((2, 4)), bad)
        with pytest.raises(ValueError, match="n must be .*integer"):
            ising.init(key, bad)  # the message names n
    assert ising.sample_exact(key, params, np.int64(3)).shape == (3, 4)
    assert ising.sample_exact(key, params, 3.0).shape == (3, 4)  # integer-valued: no truncation
    with pytest.raises(ValueError, match="n must be an integer"):
        ising.from_flat(np.zeros(3), 2.5)
    with pytest.raises(ValueError, match="theta contains 1 NaN"):
        ising.from_flat(np.array([0.0, np.nan, 0.0]), 2)
    for name, kw in (("scale", dict(scale=-1.0)), ("scale", dict(scale=np.nan))):
        with pytest.raises(ValueError, match=name):
            ising.init(key, 4, **kw)
    for name, kw in (("beta", dict(beta=np.nan)), ("beta", dict(beta=-1.0)), ("field_std", dict(field_std=-0.1))):
        with pytest.raises(ValueError, match=name):
            ising.sherrington_kirkpatrick(key, 4, **kw)
    with pytest.raises(ValueError, match="max_seconds must be"):
        ising.log_partition(params, max_seconds=-1.0)


def test_fisher_estimate_counts_its_p_squared_statistics(rng):
    # n = 28: enumerating 2^28 states alone is estimated at seconds, but the Fisher matrix
    # also accumulates p^2 = 164,836 products per state (about an hour): refused, saying so.
    from jaxebm import enumeration

    assert enumeration.estimate_seconds(28, pairwise=False) < enumeration.DEFAULT_MAX_SECONDS
    big = IsingParams(jnp.zeros(28), jnp.zeros((28, 28)))
    with pytest.raises(ValueError, match=r"n \(spins\) = 28 means enumerating 2\^28 = 268,435,456 states with "
                                         r"p\^2 = 164,836 products of the p = 406 sufficient statistics each, "
                                         r"estimated at [\d,]+ s"):
        ising.fisher(big)
    # small n still works, and matches the brute force
    params, h, J = _params(rng, 5)
    np.testing.assert_allclose(ising.fisher(params), reference.ising_fisher(h, J), atol=2e-6)
    with pytest.raises(ValueError, match="chunk_size must be a positive power of two"):
        ising.fisher(params, chunk_size=3)
    with jax.enable_x64(True):  # float32 params give a float32 matrix (the sums were float64 under x64)
        f32 = IsingParams(jnp.asarray(h, jnp.float32), jnp.asarray(J, jnp.float32))
        assert ising.fisher(f32).dtype == jnp.float32
        np.testing.assert_allclose(ising.fisher(f32), reference.ising_fisher(h, J), atol=2e-6)


def test_eager_calls_compile_once():
    """Each public function, called eagerly a second time with new values of the same shapes,
    compiles nothing (issue #12: ten eager log_partition calls took 1.5 s, 3 ms under jit)."""

    def calls(seed):
        rng = np.random.default_rng(seed)
        params, _, _ = _params(rng, 6)
        other, _, _ = _params(rng, 6)
        data = jnp.asarray(np.where(rng.random((20, 6)) < 0.5, -1.0, 1.0), jnp.float32)
        mean, corr = ising.data_moments(data)
        key = jax.random.key(seed)
        return {
            "log_partition": lambda: ising.log_partition(params),
            "grad log_partition": lambda: jax.grad(ising.log_partition)(params),
            "moments": lambda: ising.moments(params),
            "log_weight": lambda: ising.log_weight(params, data),
            "log_prob": lambda: ising.log_prob(params, data),
            "nll": lambda: ising.nll(params, data),
            "grad nll": lambda: jax.grad(ising.nll)(params, data),
            "nll_from_moments": lambda: ising.nll_from_moments(params, mean, corr),
            "data_moments": lambda: ising.data_moments(data),
            "moment_residual": lambda: ising.moment_residual(params, data),
            "kl": lambda: ising.kl(params, other),
            "fisher": lambda: ising.fisher(params),
            "sample_exact": lambda: ising.sample_exact(key, params, 5),
            "fit": lambda: ising.fit(optax.sgd(0.1), params, data, 3),
        }

    with _count_compiles() as compiled:  # the counter sees a compilation
        jax.jit(lambda x: x * 3)(1.0)
    assert len(compiled) == 1
    first, second = calls(1), calls(2)
    for name in first:
        jax.block_until_ready(first[name]())
        with _count_compiles() as compiled:
            jax.block_until_ready(second[name]())
        assert compiled == [], f"{name} recompiled: {compiled}"


def test_fit_returns_run_info_descends_and_resumes(rng, x64):
    """ising.fit returns (params, optim.RunInfo); exact-gradient descent with eta = 1/L (L the
    global smoothness bound) never raises the nll; opt_state resumes a run; the enumeration
    options are explicit keywords."""
    from jaxebm import curvature, graphs, optim

    n = 5
    data = reference.all_states(n)[rng.integers(0, 2**n, 300)]
    start = ising.init(jax.random.key(0), n, scale=0.5, dtype=jnp.float64)
    L = curvature.ising_smoothness_bound(n)
    fitted, info = ising.fit(optax.sgd(1.0 / L), start, data, 40)
    assert isinstance(info, optim.RunInfo) and info.accepted is None
    assert info.loss.shape == info.metrics["residual"].shape == (40,)
    loss = np.asarray(info.loss)
    assert np.all(np.diff(loss) <= 0.0), np.diff(loss).max()  # exact gradients, eta = 1/L: monotone
    assert loss[-1] < loss[0]
    np.testing.assert_allclose(loss[0], ising.nll(start, data), rtol=1e-12)  # before the first step
    # resuming from info.opt_state continues the run (Adam's moments carried over)
    whole, info_whole = ising.fit(optax.adam(0.05), start, data, 20)
    half, info_half = ising.fit(optax.adam(0.05), start, data, 10)
    resumed, info_resumed = ising.fit(optax.adam(0.05), half, data, 10, opt_state=info_half.opt_state)
    chex.assert_trees_all_close(resumed, whole, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(info_resumed.loss, info_whole.loss[10:], rtol=1e-10)
    # the enumeration options go to the nll (same answer); there is no **kwargs
    same, _ = ising.fit(optax.sgd(1.0 / L), start, data, 40, engine="xla", chunk_size=4, max_seconds=60.0)
    chex.assert_trees_all_close(same, fitted, rtol=1e-10, atol=1e-12)
    with pytest.raises(TypeError):
        ising.fit(optax.sgd(0.1), start, data, 2, inner_bit=3)
    with pytest.raises(ValueError, match="2\\^40 .*max_seconds"):
        ising.fit(optax.sgd(0.1), ising.init(jax.random.key(0), 40), np.ones((2, 40)), 2, max_seconds=1.0)
    # graph models: the same info; L = number of sufficient statistics (n + E)
    g = graphs.square_lattice(2, 3, periodic=False)
    start_g = ising.GraphIsingParams(jnp.zeros(g.n, jnp.float64), jnp.zeros(g.num_edges, jnp.float64), g)
    data_g = reference.all_states(g.n)[rng.integers(0, 2**g.n, 300)]
    _, info_g = ising.fit(optax.sgd(1.0 / (g.n + g.num_edges)), start_g, data_g, 30)
    assert isinstance(info_g, optim.RunInfo) and info_g.loss.shape == (30,)
    assert np.all(np.diff(np.asarray(info_g.loss)) <= 0.0)


# ------------------------------------------------------- what a probe found (2026-11-30)


def test_nll_from_moments_refuses_a_corr_whose_diagonal_is_not_one():
    """A zeroed diagonal (or a covariance) gave the same value but a gradient 0.5 (1 - corr_kk)
    on J's diagonal: descent under jit drove it to -50 and the mean nll to -97."""
    data = np.where(np.random.default_rng(0).random((50, 4)) < 0.5, -1.0, 1.0)
    mean, corr = ising.data_moments(data)
    params = ising.init(jax.random.key(0), 4)
    for bad in (np.array(corr) - np.diag(np.diag(corr)), np.array(corr) - np.outer(mean, mean)):
        with pytest.raises(ValueError, match=r"corr must be the second moment .* diagonal is 1"):
            ising.nll_from_moments(params, mean, bad)
    np.testing.assert_allclose(ising.nll_from_moments(params, mean, corr), ising.nll(params, data), rtol=1e-6)


def test_int64_inputs_beyond_int32_are_not_wrapped():
    """With x64 off, jnp.asarray wraps int64 around to int32 before any check: h = 2^33 was
    read as 0 and data entries 2^32 + 1 as 1."""
    got = ising.log_partition(ising.IsingParams(np.array([2**33, 0], np.int64), np.zeros((2, 2), np.int64)))
    np.testing.assert_allclose(got, 2.0**33 + np.log(2.0) + np.log1p(np.exp(-2.0**34)), rtol=1e-6)
    params = ising.IsingParams(jnp.array([0.1, 0.2]), jnp.array([[0.0, 0.3], [0.3, 0.0]]))
    with pytest.raises(ValueError, match="data must hold spins"):
        ising.nll(params, np.array([[2**32 + 1, -1]], np.int64))


def test_to_flat_of_a_graph_model_names_params():
    g = graphs.square_lattice(2, 2, periodic=False)
    with pytest.raises(ValueError, match="params must be a dense IsingParams for to_flat"):
        ising.to_flat(ising.edwards_anderson(jax.random.key(0), g))
    with pytest.raises(ValueError, match="key must be a JAX PRNG key or a non-negative integer seed"):
        graphs.erdos_renyi(-1, 3, 0.5)
