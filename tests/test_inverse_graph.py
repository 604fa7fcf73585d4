"""Learning on graphs (ch. 7 restricted to a graph's edges): pseudo-likelihood and MPF with one
coupling per edge, against the dense objectives, hand-written gradients, and the sampling
distribution of the estimator."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxebm import graphs, inverse, ising
from jaxebm._validation import ConvergenceWarning


def _graphs():
    rng = np.random.default_rng(7)
    pairs = np.array([(i, j) for i in range(10) for j in range(i + 1, 10)])
    random_edges = pairs[rng.choice(len(pairs), 18, replace=False)]
    return {
        "open 3x4": graphs.square_lattice(3, 4, periodic=False),
        "torus 3x3": graphs.square_lattice(3, 3, periodic=True),
        "cylinder 3x4": graphs.square_lattice(3, 4, periodic=(False, True)),
        "random n=10": graphs.from_edges(10, random_edges),
    }


GRAPHS = _graphs()


def _random_point(rng, graph, scale=0.7):
    h = rng.normal(scale=0.3, size=graph.n)
    J = rng.normal(scale=scale, size=graph.num_edges)
    return h, J


def _random_spins(rng, m, n):
    return rng.choice([-1.0, 1.0], size=(m, n))


@pytest.mark.parametrize("name", list(GRAPHS))
@pytest.mark.parametrize("l2", [0.0, 0.3])
@pytest.mark.slow  # a few seconds: full suites run it (pytest -m slow)
def test_graph_objectives_equal_dense_objectives_with_J_zero_off_the_graph(name, l2, rng, x64):
    graph = GRAPHS[name]
    h, J = _random_point(rng, graph)
    data = jnp.asarray(_random_spins(rng, 64, graph.n))
    dense = ising.to_dense(ising.GraphIsingParams(jnp.asarray(h), jnp.asarray(J), graph))
    theta_graph = jnp.concatenate([jnp.asarray(h), jnp.asarray(J)])
    theta_dense = ising.to_flat(dense)
    for objective in (inverse.pseudolikelihood_objective, inverse.mpf_objective):
        on_graph = objective(theta_graph, data, l2=l2, graph=graph)
        np.testing.assert_allclose(on_graph, objective(theta_dense, data, l2=l2), rtol=1e-12)
        # batching rows does not change the value
        np.testing.assert_allclose(objective(theta_graph, data, l2=l2, graph=graph, batch_size=10), on_graph,
                                   rtol=1e-12)
    # one free coupling per (spin, neighbour slot): the dense asymmetric objective with the same W
    W = rng.normal(size=np.shape(graph.neighbours)) * np.asarray(graph.neighbour_mask)
    W_dense = np.zeros((graph.n, graph.n))
    rows, slots = np.nonzero(np.asarray(graph.neighbour_mask))
    W_dense[rows, np.asarray(graph.neighbours)[rows, slots]] = W[rows, slots]
    np.testing.assert_allclose(
        inverse.pseudolikelihood_objective(jnp.concatenate([jnp.asarray(h), jnp.asarray(W.ravel())]), data,
                                           symmetric=False, l2=l2, graph=graph),
        inverse.pseudolikelihood_objective(jnp.concatenate([jnp.asarray(h), jnp.asarray(W_dense.ravel())]), data,
                                           symmetric=False, l2=l2),
        rtol=1e-12)


def test_graph_objective_float32_matches_float64(rng):
    graph = GRAPHS["open 3x4"]
    h, J = _random_point(rng, graph)
    data = _random_spins(rng, 64, graph.n)
    theta = np.concatenate([h, J])
    value32 = inverse.pseudolikelihood_objective(jnp.asarray(theta, jnp.float32), jnp.asarray(data, jnp.float32),
                                                 graph=graph)
    assert value32.dtype == jnp.float32
    # float64 NumPy: log 2cosh f - x f summed over spins, averaged over samples
    f = h + _fields_numpy(data, J, graph)
    expected = np.mean(np.sum(np.logaddexp(f, -f) - data * f, axis=1))
    np.testing.assert_allclose(value32, expected, rtol=1e-6)


def _fields_numpy(x, J, graph):
    """sum_{l ~ k} J_kl x_l from the edge list (no neighbour table)."""
    f = np.zeros_like(x)
    for e, (i, j) in enumerate(np.asarray(graph.edges)):
        f[:, i] += J[e] * x[:, j]
        f[:, j] += J[e] * x[:, i]
    return f


@pytest.mark.parametrize("name", list(GRAPHS))
@pytest.mark.slow  # a few seconds: full suites run it (pytest -m slow)
def test_graph_pl_gradient_matches_hand_derivation_and_dense_autodiff(name, rng, x64):
    r"""d/dh_k = mean(tanh f_k - x_k); d/dJ_e = mean((tanh f_i - x_i) x_j + (tanh f_j - x_j) x_i) + 2 l2 J_e."""
    graph = GRAPHS[name]
    l2 = 0.2
    h, J = _random_point(rng, graph)
    data = _random_spins(rng, 128, graph.n)
    theta = jnp.concatenate([jnp.asarray(h), jnp.asarray(J)])
    grad = np.asarray(jax.grad(inverse.pseudolikelihood_objective)(theta, jnp.asarray(data), l2=l2, graph=graph))
    r = np.tanh(h + _fields_numpy(data, J, graph)) - data
    i, j = np.asarray(graph.edges).T
    expected = np.concatenate([r.mean(0), np.mean(r[:, i] * data[:, j] + r[:, j] * data[:, i], 0) + 2 * l2 * J])
    np.testing.assert_allclose(grad, expected, rtol=1e-10, atol=1e-12)
    # the dense objective's gradient at the same point, read off on the graph's edges
    dense = ising.to_dense(ising.GraphIsingParams(jnp.asarray(h), jnp.asarray(J), graph))
    grad_dense = jax.grad(inverse.pseudolikelihood_objective)(ising.to_flat(dense), jnp.asarray(data), l2=l2)
    grad_dense = ising.from_flat(grad_dense, graph.n)
    np.testing.assert_allclose(grad[:graph.n], grad_dense.h, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grad[graph.n:], np.asarray(grad_dense.J)[i, j], rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_graph_pl_on_the_complete_graph_is_dense_pl(rng):
    n = 6
    truth = ising.sherrington_kirkpatrick(jax.random.key(2), n, beta=0.8, field_std=0.3)
    data = ising.sample_exact(jax.random.key(3), truth, 5000)
    graph = graphs.from_edges(n, np.array([(i, j) for i in range(n) for j in range(i + 1, n)]))
    asymmetric = functools.partial(inverse.pseudolikelihood, symmetric=False)
    for method in (inverse.pseudolikelihood, asymmetric, inverse.mpf):
        fitted = method(data, 0.01, graph=graph)
        assert isinstance(fitted, ising.GraphIsingParams) and fitted.J.shape == (graph.num_edges,)
        dense = method(data, 0.01)
        np.testing.assert_allclose(ising.to_dense(fitted).J, dense.J, atol=2e-5)
        np.testing.assert_allclose(fitted.h, dense.h, atol=2e-5)


def _wald_statistic(objective, theta_hat, theta_true, data, graph):
    r"""Wald statistic of an M-estimator against the truth, with the sandwich covariance.

    For :math:`\hat\theta = \arg\min \frac1M\sum_i \ell(\theta; x_i)` (consistent, as PL and MPF
    are for the model class), :math:`\sqrt M(\hat\theta - \theta) \to N(0, H^{-1} V H^{-1})`
    with :math:`H` the Hessian of the mean objective and :math:`V` the covariance of the
    per-sample gradients, so
    :math:`T = M\,\delta^\top H V^{-1} H \delta \to \chi^2_p` (:math:`\delta = \hat\theta - \theta`).
    H and V are estimated from the data at :math:`\hat\theta` (float64); the inverse of the
    sample covariance of M gradients in p dimensions is biased up by (M-1)/(M-p-2) (the Wishart
    mean of the inverse, as in Hotelling's T^2), so T is scaled by the reciprocal.
    """
    M = data.shape[0]
    H = np.asarray(jax.hessian(lambda t: objective(t, data, graph=graph))(theta_hat), np.float64)
    per_sample = jax.vmap(jax.grad(lambda t, x: objective(t, x[None], graph=graph)), (None, 0))
    G = np.asarray(per_sample(theta_hat, data), np.float64)
    V = np.cov(G, rowvar=False)
    delta = np.asarray(theta_hat, np.float64) - np.asarray(theta_true, np.float64)
    u = H @ delta
    p = u.shape[0]
    return M * u @ np.linalg.solve(V, u) * (M - p - 2) / (M - 1)


@pytest.fixture(scope="module")
def lattice_samples():
    """A 4x4 open EA spin glass and 20000 exact samples of it (float32 sampling is exact up to
    rounding of probabilities at 1e-7, far below the 1/sqrt(M) sampling noise)."""
    graph = graphs.square_lattice(4, 4, periodic=False)
    truth = ising.edwards_anderson(jax.random.key(11), graph, beta=0.8, field=0.2)
    data = ising.sample_exact(jax.random.key(12), truth, 20_000)
    return graph, np.asarray(truth.h), np.asarray(truth.J), np.asarray(data)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["pseudolikelihood", "mpf"])
def test_graph_estimators_recover_a_lattice_from_exact_samples(method, lattice_samples, x64):
    graph, h, J, data = lattice_samples
    truth = ising.GraphIsingParams(jnp.asarray(h, jnp.float64), jnp.asarray(J, jnp.float64), graph)
    data = jnp.asarray(data, jnp.float64)
    fitted = getattr(inverse, method)(data, graph=graph, tol=1e-9)
    objective = inverse.pseudolikelihood_objective if method == "pseudolikelihood" else inverse.mpf_objective
    theta_hat = jnp.concatenate([fitted.h, fitted.J])
    theta_true = jnp.concatenate([truth.h, truth.J])
    p = theta_hat.shape[0]
    # a one-in-a-thousand tail of chi^2_p (p = n + E = 40): the estimator's own sampling noise
    threshold = stats.chi2.ppf(1 - 1e-3, p)
    T = _wald_statistic(objective, theta_hat, theta_true, data, graph)
    assert T < threshold, (T, threshold)
    # power: couplings 10% too strong are far outside the same region
    scaled = jnp.concatenate([truth.h, 1.1 * truth.J])
    assert _wald_statistic(objective, theta_hat, scaled, data, graph) > 3 * threshold
    # and the fit sits at the stationary point of its objective
    assert float(jnp.max(jnp.abs(jax.grad(objective)(theta_hat, data, graph=graph)))) < 1e-7


def test_graph_pl_scales_to_a_1024_spin_torus_and_compiles_once():
    graph = graphs.square_lattice(32, 32, periodic=True)
    rng = np.random.default_rng(0)
    data = _random_spins(rng, 256, graph.n).astype(np.float32)
    params = inverse.pseudolikelihood(data, 0.1, graph=graph, batch_size=64)
    assert isinstance(params, ising.GraphIsingParams)
    assert params.h.shape == (1024,) and params.J.shape == (2048,) and params.graph == graph
    assert np.all(np.isfinite(np.asarray(params.J)))
    # independent spins: the couplings are noise of size about 1/sqrt(M), shrunk by l2
    assert float(np.max(np.abs(np.asarray(params.J)))) < 8 / np.sqrt(256)
    before = inverse._fit_graph_jit._cache_size()
    inverse.pseudolikelihood(_random_spins(rng, 256, graph.n).astype(np.float32), 0.1, graph=graph, batch_size=64)
    assert inverse._fit_graph_jit._cache_size() == before


def test_graph_pl_warns_at_max_iter():
    graph = GRAPHS["open 3x4"]
    data = _random_spins(np.random.default_rng(1), 200, graph.n)
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        inverse.pseudolikelihood(data, 0.1, graph=graph, max_iter=2, tol=1e-12)


def test_graph_learning_bad_input():
    graph = GRAPHS["open 3x4"]
    rng = np.random.default_rng(2)
    data = _random_spins(rng, 100, graph.n)
    for method in (inverse.pseudolikelihood, inverse.mpf):
        with pytest.raises(ValueError, match="12 columns"):
            method(data[:, :10], graph=graph)
        with pytest.raises(ValueError, match="graph must be"):
            method(data, graph=np.ones((12, 12)))
        with pytest.raises(ValueError, match="l2"):
            method(data, -1.0, graph=graph)
        with pytest.raises(ValueError, match="never flips"):
            method(np.concatenate([data[:, :11], np.ones((100, 1))], axis=1), graph=graph)
        # spins 0 and 1 share an edge and are always equal: infinite ML coupling unless l2 > 0
        tied = data.copy()
        tied[:, 1] = tied[:, 0]
        with pytest.raises(ValueError, match="spins 0 and 1"):
            method(tied, graph=graph)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert np.isfinite(np.asarray(method(tied, 0.1, graph=graph).J)).all()
    # always-equal spins that share no edge do not matter on the graph (spins 0 and 11)
    apart = data.copy()
    apart[:, 11] = apart[:, 0]
    assert np.isfinite(np.asarray(inverse.pseudolikelihood(apart, graph=graph).J)).all()


# ----------------------------------------------------------------- edge-less graphs (independent spins)


def _independent_data(m=400, n=9, seed=3):
    """+-1 data with varied means and no constant column."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random((m, n)) < np.linspace(0.2, 0.8, n), 1.0, -1.0)


@pytest.mark.parametrize("graph", [graphs.from_edges(9, []),
                                   pytest.param(graphs.square_lattice(1, 1), marks=pytest.mark.slow)],
                         ids=["n=9", "1x1"])
@pytest.mark.parametrize("l2", [0.0, pytest.param(0.3, marks=pytest.mark.slow)])
def test_graph_learning_on_an_edgeless_graph_is_independent_spins(graph, l2, x64):
    """No edges, no couplings: pseudo-likelihood sum_k log 2cosh h_k - mean(x_k) h_k and MPF
    sum_k mean(exp(-h_k x_k)) are both minimised (the l2 penalty has nothing to act on) at the
    closed form h_k = atanh(mean_k). They used to fail gathering from the empty coupling vector."""
    data = _independent_data(n=graph.n)
    mean = data.mean(0)
    h_star = np.arctanh(mean)
    theta = np.linspace(-0.5, 0.5, graph.n)
    np.testing.assert_allclose(inverse.pseudolikelihood_objective(theta, data, l2=l2, graph=graph),
                               np.sum(np.log(2 * np.cosh(theta)) - mean * theta), rtol=1e-12)
    np.testing.assert_allclose(inverse.mpf_objective(theta, data, l2=l2, graph=graph),
                               np.mean(np.exp(-data * theta), 0).sum(), rtol=1e-12)
    fits = [inverse.pseudolikelihood(data, l2, graph=graph, tol=1e-10),
            inverse.pseudolikelihood(data, l2, graph=graph, symmetric=False, tol=1e-10),
            inverse.mpf(data, l2, graph=graph, tol=1e-10)]
    for fit in fits:
        assert isinstance(fit, ising.GraphIsingParams) and fit.graph == graph
        assert fit.J.shape == (0,)
        np.testing.assert_allclose(fit.h, h_star, atol=1e-8)


@pytest.mark.parametrize("graph", [pytest.param(graphs.from_edges(6, []), marks=pytest.mark.slow),
                                   graphs.square_lattice(1, 1)], ids=["n=6", "1x1"])
def test_exact_likelihood_on_an_edgeless_graph(graph, x64):
    """nll, nll_from_moments and fit on a graph with no edges (they refused the empty edge
    correlations they computed themselves): log Z = sum_k log 2cosh h_k, against brute force;
    exact ML is h = atanh(mean)."""
    import optax

    from tests import reference

    data = _independent_data(m=300, n=graph.n, seed=5)
    h = np.linspace(-0.8, 1.1, graph.n)
    params = ising.GraphIsingParams(jnp.asarray(h), jnp.zeros((0,)), graph)
    want = reference.ising_nll(h, np.zeros((graph.n, graph.n)), data)
    np.testing.assert_allclose(want, reference.independent_log_z(h) - data.mean(0) @ h, rtol=1e-12)
    np.testing.assert_allclose(ising.nll(params, data), want, rtol=1e-10)
    mean, edge_corr = ising.data_moments(data, graph)
    assert np.shape(edge_corr) == (0,)
    np.testing.assert_allclose(ising.nll_from_moments(params, mean, edge_corr), want, rtol=1e-10)
    np.testing.assert_allclose(ising.nll_from_moments(params, mean, []), want, rtol=1e-10)
    with pytest.raises(ValueError, match="edge_corr"):  # still one correlation per edge: none here
        ising.nll_from_moments(params, mean, np.zeros(1))
    # exact ML: the fit reaches atanh(mean), returns the empty J, and resumes from its optimiser state
    for optimizer in (optax.sgd(0.5), optax.lbfgs()):
        fitted, info = ising.fit(optimizer, params, data, 200, metrics_fn=lambda p, v, g, s: g.J.shape[0])
        assert fitted.J.shape == (0,) and fitted.graph == graph
        np.testing.assert_allclose(fitted.h, np.arctanh(data.mean(0)), atol=1e-6)
        assert np.all(np.asarray(info.metrics["extra"]) == 0)
        again, _ = ising.fit(optimizer, fitted, data, 2, opt_state=info.opt_state)
        np.testing.assert_allclose(again.h, fitted.h, atol=1e-6)
        ising.fit(optimizer, params, data, 2, opt_state=optimizer.init(params))  # a state made by the user
