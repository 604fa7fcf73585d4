"""EM for Gaussian mixtures: scikit-learn parity, monotonicity, ELBO identity, bad inputs."""

import functools
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import datasets
from sklearn.mixture import GaussianMixture

from jaxebm import gmm
from tests import reference
from tests._compile import compile_counter as _count_compiles


def _standardised(name):
    X = getattr(datasets, f"load_{name}")().data.astype(np.float64)
    return (X - X.mean(0)) / X.std(0)


def _precisions(params):
    covs = np.asarray(params.covs)
    if params.covariance_type in ("full", "tied"):
        return np.linalg.inv(covs)
    return 1.0 / covs


@pytest.mark.parametrize("dataset,K", [("iris", 3), pytest.param("wine", 3, marks=pytest.mark.slow),
                                       pytest.param("breast_cancer", 2, marks=pytest.mark.slow)])
@pytest.mark.parametrize("covariance_type", gmm.COVARIANCE_TYPES)
@pytest.mark.slow  # a few seconds: full suites run it (pytest -m slow)
def test_scikit_learn_parity_x64(x64, dataset, K, covariance_type):
    X = _standardised(dataset)
    start = gmm.initialize(jax.random.key(0), jnp.asarray(X), K, covariance_type, "kmeans++")
    sk = GaussianMixture(K, covariance_type=covariance_type, max_iter=25, tol=0.0,
                         weights_init=np.asarray(start.weights), means_init=np.asarray(start.means),
                         precisions_init=_precisions(start))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk.fit(X)
        params, info = gmm.fit(jax.random.key(1), X, K, covariance_type=covariance_type, init=start,
                               max_iter=25, tol=0.0)
    assert info.n_iter == sk.n_iter_ == 25 and not info.converged
    rtol = 1e-7
    np.testing.assert_allclose(float(jnp.mean(gmm.log_prob(params, X))), sk.score(X), rtol=rtol)
    np.testing.assert_allclose(info.lower_bound, sk.lower_bound_, rtol=rtol)
    # Parameters agree to 1e-7 relative to their scale (max norm). Entry-wise relative error
    # is not meaningful for near-zero entries: breast_cancer's covariances have condition
    # number ~1e5, so handing scikit-learn precisions = inv(cov) already perturbs its start at
    # kappa * eps ~ 1e-11, which 25 EM steps amplify on the smallest entries.
    for ours, theirs in [(params.weights, sk.weights_), (params.means, sk.means_), (params.covs, sk.covariances_)]:
        np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=rtol * np.abs(theirs).max())
    # Responsibilities of boundary points amplify the same ~1e-9 parameter differences.
    np.testing.assert_allclose(gmm.predict_proba(params, X), sk.predict_proba(X), atol=1e-6)
    np.testing.assert_allclose(float(gmm.bic(params, X)), sk.bic(X), rtol=rtol)
    np.testing.assert_allclose(float(gmm.aic(params, X)), sk.aic(X), rtol=rtol)


def test_log_prob_against_reference(x64, rng):
    params = gmm.GMMParams(jnp.array([0.3, 0.7]), jnp.asarray(rng.normal(size=(2, 3))),
                           jnp.asarray(np.stack([np.eye(3) * 0.5 + 0.1, np.eye(3) * 2.0])), "full")
    x = rng.normal(size=(20, 3)) * 2 + 5.0  # far from the origin: exercises the centring
    parts = zip(np.asarray(params.weights), np.asarray(params.means), np.asarray(params.covs))
    comps = np.stack([np.log(w) + reference.gaussian_log_pdf(x, m, c) for w, m, c in parts], 1)
    np.testing.assert_allclose(gmm.log_prob_components(params, x), comps, rtol=1e-12)
    np.testing.assert_allclose(gmm.log_prob(params, x), np.logaddexp(comps[:, 0], comps[:, 1]), rtol=1e-12)


def test_float32_with_offset_data_does_not_cancel(rng):
    # Data centred at 1e4 with unit spread: naive second moments would lose every digit.
    x = (1e4 + rng.normal(size=(4000, 2)) * np.array([1.0, 0.5])).astype(np.float32)
    params, info = gmm.fit(jax.random.key(0), x, 1, max_iter=5)
    # Uncentred float32 moments err by eps * 1e8 ~ 12 against variances of 1 and 0.25 (every
    # digit); centred ones by the rounding of the mean (second order, ~1e-6) and of the sum of
    # 4000 squares (<= 4000 eps = 4.8e-4 relative even summed in order): 1e-3 tells them apart.
    np.testing.assert_allclose(params.covs[0], np.cov(x.astype(np.float64).T, bias=True), rtol=1e-3, atol=1e-3)
    # the mean log-likelihood is stationary in the covariance at its maximum (a 1e-3 relative
    # error moves it by ~1e-6); 1e-4 leaves room for the float32 sum of 4000 log densities
    want = reference.gaussian_log_pdf(x, x.astype(np.float64).mean(0), np.cov(x.astype(np.float64).T, bias=True))
    np.testing.assert_allclose(float(jnp.mean(gmm.log_prob(params, x))), want.mean(), rtol=1e-4)


@pytest.mark.parametrize("covariance_type", gmm.COVARIANCE_TYPES)
def test_log_likelihood_is_monotone_and_warm_start_continues(x64, covariance_type):
    X = _standardised("wine")
    params, info = gmm.fit(jax.random.key(3), X, 4, covariance_type=covariance_type, max_iter=40, tol=0.0,
                           init="random")
    assert np.all(np.diff(info.log_likelihood) >= -1e-12)
    # 20 + 20 iterations equal 40 iterations
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gmm.ConvergenceWarning)
        first, info1 = gmm.fit(jax.random.key(3), X, 4, covariance_type=covariance_type, max_iter=20, tol=0.0,
                               init="random")
        second, info2 = gmm.fit(jax.random.key(9), X, 4, covariance_type=covariance_type, max_iter=20, tol=0.0,
                                init=first)
    np.testing.assert_allclose(np.concatenate([info1.log_likelihood, info2.log_likelihood]), info.log_likelihood,
                               rtol=1e-12)
    for a, b in zip(jax.tree_util.tree_leaves(second), jax.tree_util.tree_leaves(params)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_convergence_rule_and_warning():
    X = _standardised("iris")
    with pytest.warns(gmm.ConvergenceWarning, match="did not converge"):
        _, info = gmm.fit(jax.random.key(0), X, 3, max_iter=2, tol=1e-12)
    assert info.n_iter == 2 and not info.converged
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, info = gmm.fit(jax.random.key(0), X, 3, max_iter=500, tol=1e-3)
    assert info.converged and info.n_iter < 500
    ll = info.log_likelihood
    assert abs(ll[-1] - ll[-2]) < 1e-3 and abs(ll[-2] - ll[-3]) >= 1e-3


def test_n_init_keeps_best_restart():
    X = _standardised("wine")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gmm.ConvergenceWarning)
        # reg_covar 1e-3: with 1e-6 a component of 13 features fits to a covariance of condition
        # number 5e6, whose float32 densities err by 3% (fit refuses it)
        _, info = gmm.fit(jax.random.key(0), X, 5, n_init=6, init="random", max_iter=30, reg_covar=1e-3)
    assert info.restart_lower_bounds.shape == (6,)
    assert info.lower_bound == info.restart_lower_bounds.max()
    assert len(set(np.round(info.restart_lower_bounds, 6))) > 1  # restarts really differ


@pytest.mark.parametrize("init", ["kmeans++", "random", "random_from_data"])
@pytest.mark.slow  # a few seconds: full suites run it (pytest -m slow)
def test_init_methods_give_valid_parameters(init):
    X = jnp.asarray(_standardised("iris"), jnp.float32)
    n, K = X.shape[0], 3
    Xn = np.asarray(X, np.float64)
    for ct in gmm.COVARIANCE_TYPES:
        params = gmm.initialize(jax.random.key(0), X, K, ct, init)
        gmm.validate_params(params, 4)
        weights, means = np.asarray(params.weights, np.float64), np.asarray(params.means, np.float64)
        np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-6)
        assert len(np.unique(np.round(means, 4), axis=0)) == K  # K different components
        if init == "random_from_data":
            # K distinct data points, each alone in its component: equal weights, means on the
            # points (float32 rounding of re-centred data, |x| < 5: ~1e-6), no spread but reg_covar
            np.testing.assert_allclose(weights, 1.0 / K, rtol=1e-6)
            nearest = np.abs(Xn[None] - means[:, None]).max(-1)
            assert np.all(nearest.min(1) < 1e-5) and len(set(nearest.argmin(1))) == K
            if ct != "tied":  # the tied covariance pools all points (as scikit-learn's)
                # E[z z^T] - mu mu^T of one point cancels in float32 to a few eps |x|^2
                covs = np.asarray(params.covs)
                want = np.broadcast_to(1e-6 * (np.eye(4) if ct == "full" else 1.0), covs.shape)
                np.testing.assert_allclose(covs, want, atol=8 * np.finfo(np.float32).eps * np.max(Xn**2))
        elif init == "kmeans++":  # hard assignments: each weight is a count over n
            counts = weights * n
            np.testing.assert_allclose(counts, np.round(counts), atol=1e-4)
        else:  # uniform responsibilities u_k / sum(u): each weight is their mean over n rows,
            # within 5 standard errors (normal false alarm 6e-7) of 1/K; var(r) by Monte Carlo
            u = np.random.default_rng(0).random((1_000_000, K))
            se = (u / u.sum(1, keepdims=True))[:, 0].std() / np.sqrt(n)
            np.testing.assert_array_less(np.abs(weights - 1.0 / K), 5 * se)


def test_kmeans_plus_plus_finds_separated_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0], [20.0, 20.0]])
    X = np.concatenate([c + rng.normal(size=(100, 2)) for c in centres]).astype(np.float32)
    params, _ = gmm.fit(jax.random.key(1), X, 4)
    found = np.sort(np.round(np.asarray(params.means) / 20).astype(int), axis=0)
    np.testing.assert_array_equal(found, np.sort(np.round(centres / 20).astype(int), axis=0))


def test_elbo_identity_and_q_function(x64):
    X = jnp.asarray(_standardised("iris"))
    params = gmm.initialize(jax.random.key(0), X, 3, "full", "random")
    loglik = float(jnp.mean(gmm.log_prob(params, X)))
    posterior = gmm.responsibilities(params, X)
    # At the posterior the bound is tight (Eq. (3.65)-(3.66)).
    np.testing.assert_allclose(float(gmm.elbo(params, posterior, X)), loglik, rtol=1e-12)
    # For any other r: log p = ELBO(r) + KL(r || posterior), KL > 0.
    rng = np.random.default_rng(0)
    r = rng.dirichlet(np.ones(3), size=X.shape[0])
    kl = np.mean(np.sum(r * (np.log(r) - np.log(np.asarray(posterior))), axis=1))
    assert kl > 0
    np.testing.assert_allclose(float(gmm.elbo(params, r, X)) + kl, loglik, rtol=1e-12)
    # Q(theta, theta_old) = ELBO(r_old, theta) + H(r_old); the M-step maximises Q.
    new, _ = gmm.em_step(params, X, reg_covar=0.0)
    entropy = -np.mean(np.sum(np.asarray(posterior) * np.log(np.asarray(posterior)), axis=1))
    np.testing.assert_allclose(float(gmm.q_function(new, params, X)),
                               float(gmm.elbo(new, posterior, X)) - entropy, rtol=1e-12)
    assert float(gmm.q_function(new, params, X)) >= float(gmm.q_function(params, params, X))
    for scale in (0.9, 1.1):
        moved = new._replace(covs=new.covs * scale)
        assert float(gmm.q_function(moved, params, X)) < float(gmm.q_function(new, params, X))


def test_e_step_m_step_equal_em_step(x64):
    X = jnp.asarray(_standardised("wine"))
    params = gmm.initialize(jax.random.key(0), X, 3, "diag", "kmeans++")
    stats, ll = gmm.e_step(params, X)
    a = gmm.m_step(stats, X, "diag")
    b, ll2 = gmm.em_step(params, X)
    assert float(ll) == float(ll2)
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(u, v, rtol=1e-14)


def test_sample_reproduces_moments():
    params = gmm.GMMParams(jnp.array([0.2, 0.8]), jnp.array([[-3.0, 0.0], [2.0, 1.0]]),
                           jnp.array([[[1.0, 0.5], [0.5, 1.0]], [[0.3, 0.0], [0.0, 2.0]]]), "full")
    num = 200_000
    x, comps = gmm.sample(jax.random.key(0), params, num)
    x, comps = np.asarray(x), np.asarray(comps)
    # 5 standard errors everywhere: a two-sided normal false alarm of 6e-7 per entry
    assert abs(comps.mean() - 0.8) < 5 * np.sqrt(0.16 / num)
    for k in range(2):
        xs = x[comps == k]
        cov = np.asarray(params.covs[k], np.float64)
        se = np.sqrt(np.diag(cov) / len(xs))
        np.testing.assert_array_less(np.abs(xs.mean(0) - np.asarray(params.means[k])), 5 * se)
        np.testing.assert_array_less(np.abs(np.cov(xs.T) - cov), 5 * _cov_se(cov, len(xs)))
    for ct, covs in [("diag", jnp.array([[1.0, 4.0], [0.25, 1.0]])), ("spherical", jnp.array([1.0, 4.0])),
                     ("tied", jnp.array([[2.0, 0.3], [0.3, 1.0]]))]:
        p = gmm.GMMParams(params.weights, params.means, covs, ct)
        xs, cs = gmm.sample(jax.random.key(1), p, 50_000)
        sel = np.asarray(xs)[np.asarray(cs) == 1]
        want = {"diag": np.diag([0.25, 1.0]), "spherical": np.eye(2) * 4.0, "tied": np.asarray(covs)}[ct]
        np.testing.assert_array_less(np.abs(np.cov(sel.T) - want), 5 * _cov_se(want, len(sel)))


def _cov_se(cov, num):
    """Standard errors of a Gaussian sample covariance: var(S_ij) = (C_ij^2 + C_ii C_jj) / num."""
    d = np.diag(cov)
    return np.sqrt((cov**2 + np.outer(d, d)) / num)


def test_sample_weight_equals_repeated_rows(x64):
    X = _standardised("iris")
    counts = np.random.default_rng(0).integers(1, 4, size=X.shape[0])
    start = gmm.initialize(jax.random.key(0), jnp.asarray(X), 3, "full", "kmeans++")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gmm.ConvergenceWarning)
        a, info_a = gmm.fit(jax.random.key(0), X, 3, init=start, sample_weight=counts.astype(float), max_iter=10,
                            tol=0)
        b, info_b = gmm.fit(jax.random.key(0), np.repeat(X, counts, axis=0), 3, init=start, max_iter=10, tol=0)
    np.testing.assert_allclose(info_a.log_likelihood, info_b.log_likelihood, rtol=1e-10)
    np.testing.assert_allclose(a.covs, b.covs, rtol=1e-9)


def test_vmap_over_datasets_and_compile_once():
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.normal(size=(4, 300, 2)) + rng.normal(size=(4, 1, 2)) * 3, jnp.float32)
    starts = jax.vmap(lambda k, x: gmm.initialize(k, x, 2, "full", "kmeans++"))(jax.random.split(jax.random.key(0), 4),
                                                                              xs)
    fitted, hist, n_iter, _ = jax.jit(jax.vmap(lambda p, x: gmm.em(p, x, max_iter=20, tol=1e-4)))(starts, xs)
    assert fitted.means.shape == (4, 2, 2) and hist.shape == (4, 20)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, x):
        return gmm.em_step(params, x)

    p = jax.tree_util.tree_map(lambda a: a[0], starts)
    for i in range(3):
        p, _ = step(p, xs[i])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_collapsed_component_with_zero_reg_covar_names_reg_covar(dtype, x64):
    X = np.concatenate([np.random.default_rng(0).normal(size=(50, 2)), np.ones((3, 2)) * 10.0]).astype(dtype)
    with pytest.raises(ValueError, match="reg_covar"):
        start = gmm.GMMParams(jnp.array([0.5, 0.5]), jnp.array([[0.0, 0.0], [10.0, 10.0]]),
                              jnp.stack([jnp.eye(2), jnp.eye(2)]), "full")
        gmm.fit(jax.random.key(0), X, 2, init=start, reg_covar=0.0, max_iter=5)
    # with the default reg_covar the same fit is fine
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gmm.ConvergenceWarning)
        params, _ = gmm.fit(jax.random.key(0), X, 2, max_iter=5)
    assert np.all(np.isfinite(np.asarray(params.covs)))


def test_bad_inputs():
    X = np.random.default_rng(0).normal(size=(10, 2))
    with pytest.raises(ValueError, match="n_samples = 10 must be at least n_components = 11"):
        gmm.fit(jax.random.key(0), X, 11)
    with pytest.raises(ValueError, match="x contains 1 NaN"):
        gmm.fit(jax.random.key(0), np.where(np.arange(20).reshape(10, 2) == 3, np.nan, X), 2)
    with pytest.raises(ValueError, match="x must be a data matrix"):
        gmm.fit(jax.random.key(0), X[:, 0], 2)
    with pytest.raises(ValueError, match="tol must be"):
        gmm.fit(jax.random.key(0), X, 2, tol=-1.0)
    with pytest.raises(ValueError, match="max_iter must be an integer >= 1"):
        gmm.fit(jax.random.key(0), X, 2, max_iter=0)
    with pytest.raises(ValueError, match="covariance_type must be"):
        gmm.fit(jax.random.key(0), X, 2, covariance_type="banded")
    with pytest.raises(ValueError, match="init must be"):
        gmm.fit(jax.random.key(0), X, 2, init="kmeans")
    bad = gmm.GMMParams(jnp.array([0.5, 0.5]), jnp.zeros((2, 2)), jnp.ones((2, 2)), "full")
    with pytest.raises(ValueError, match=r"init.covs must have shape \(2, 2, 2\)"):
        gmm.fit(jax.random.key(0), X, 2, init=bad)
    with pytest.raises(ValueError, match="params.weights must sum to 1"):
        gmm.log_prob(gmm.GMMParams(jnp.array([0.5, 0.6]), jnp.zeros((2, 2)), jnp.ones((2, 2)), "diag"), X)
    with pytest.raises(ValueError, match="positive definite"):
        gmm.log_prob(gmm.GMMParams(jnp.array([0.5, 0.5]), jnp.zeros((2, 2)), jnp.array([1.0, -1.0]), "spherical"), X)
    with pytest.raises(ValueError, match="sample_weight must have shape"):
        gmm.fit(jax.random.key(0), X, 2, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="n_init must be 1 when init is a GMMParams"):
        gmm.fit(jax.random.key(0), X, 2, n_init=2, init=gmm.initialize(jax.random.key(0), jnp.asarray(X), 2))


# ----------------------------------------------------------------------------- issue #12


def _toy(covariance_type="full", shift=0.0):
    covs = {"full": np.stack([np.eye(2), [[0.5, 0.1], [0.1, 0.4]]]), "tied": np.array([[1.0, 0.2], [0.2, 0.5]]),
            "diag": np.array([[1.0, 0.5], [0.3, 0.7]]), "spherical": np.array([1.0, 0.5])}[covariance_type]
    return gmm.GMMParams(jnp.asarray([0.4 + shift, 0.6 - shift], jnp.float32),
                         jnp.asarray([[-1.0 + shift, 0.0], [1.0, 0.5]], jnp.float32),
                         jnp.asarray(covs + shift, jnp.float32), covariance_type)


def _toy_x(seed=0, n=40):
    return np.random.default_rng(seed).normal(size=(n, 2)).astype(np.float32)


_PUBLIC = {  # public entry points of (params, x)
    "log_prob": gmm.log_prob,
    "log_prob_components": gmm.log_prob_components,
    "responsibilities": gmm.responsibilities,
    "predict": gmm.predict,
    "predict_proba": gmm.predict_proba,
    "e_step": gmm.e_step,
    "em_step": gmm.em_step,
    "em": lambda p, x: gmm.em(p, x, max_iter=3),
    "q_function": lambda p, x: gmm.q_function(p, _toy(), x),
    "elbo": lambda p, x: gmm.elbo(p, np.full((np.shape(x)[0], 2), 0.5, np.float32), x),
    "bic": gmm.bic,
    "aic": gmm.aic,
}


@pytest.mark.parametrize("name", list(_PUBLIC) + ["sample", "n_parameters", "validate_params"])
def test_params_of_wrong_type_or_shape_raise_naming_params(name):
    fn = {"sample": lambda p, x: gmm.sample(jax.random.key(0), p, 5), "n_parameters": lambda p, x: gmm.n_parameters(p),
          "validate_params": lambda p, x: gmm.validate_params(p)}.get(name, _PUBLIC.get(name))
    p, x = _toy(), _toy_x()
    with pytest.raises(ValueError, match="params must be a GMMParams"):
        fn((p.weights, p.means, p.covs), x)
    with pytest.raises(ValueError, match=r"params.covs must have shape \(2, 2, 2\)"):
        fn(p._replace(covs=p.covs[:, :, :1]), x)
    with pytest.raises(ValueError, match=r"params.weights must have shape \(2,\)"):
        fn(p._replace(weights=jnp.ones(3) / 3), x)
    with pytest.raises(ValueError, match="params.covariance_type must be one of"):
        fn(gmm.GMMParams(p.weights, p.means, p.covs, "banded"), x)


@pytest.mark.parametrize("name", _PUBLIC)
def test_params_with_bad_values_raise(name):
    fn, p, x = _PUBLIC[name], _toy(), _toy_x()
    with pytest.raises(ValueError, match="params.means contains 1 NaN"):
        fn(p._replace(means=p.means.at[0, 1].set(jnp.nan)), x)
    with pytest.raises(ValueError, match="params.weights must sum to 1"):
        fn(p._replace(weights=p.weights * 2), x)
    with pytest.raises(ValueError, match="params.weights must be a probability distribution; it has negative"):
        fn(p._replace(weights=jnp.asarray([-0.2, 1.2])), x)
    with pytest.raises(ValueError, match="params.covs must be positive definite"):
        fn(p._replace(covs=p.covs.at[1].set(-jnp.eye(2))), x)
    with pytest.raises(ValueError, match="params.covs must be symmetric"):
        fn(p._replace(covs=p.covs.at[0, 0, 1].set(0.7)), x)


@pytest.mark.parametrize("name", _PUBLIC)
def test_data_that_is_not_finite_or_not_a_matrix_raises_naming_x(name):
    fn, p, x = _PUBLIC[name], _toy(), _toy_x()
    for bad in (np.nan, np.inf):
        with pytest.raises(ValueError, match="x contains 1 NaN or infinite"):
            fn(p, np.where(np.arange(80).reshape(40, 2) == 7, bad, x))  # never a silent NaN or a label
    with pytest.raises(ValueError, match="x must be a data matrix"):
        fn(p, x[0])
    with pytest.raises(ValueError, match="x must have 2 features"):
        fn(p, x[:, :1])
    with pytest.raises(ValueError, match="x must not be empty"):
        fn(p, x[:0])
    with pytest.raises(ValueError, match="x must be a numeric array"):
        fn(p, x.astype(str))


def test_lists_numpy_and_integer_data_give_the_same_answer():
    p, x = _toy(), np.round(_toy_x() * 3)
    want = np.asarray(gmm.log_prob(p, x))
    np.testing.assert_array_equal(gmm.log_prob(p, x.tolist()), want)
    np.testing.assert_array_equal(gmm.log_prob(p, x.astype(np.int32)), want)
    listy = gmm.GMMParams(np.asarray(p.weights).tolist(), np.asarray(p.means), np.asarray(p.covs).tolist())
    np.testing.assert_array_equal(gmm.log_prob(listy, x), want)


def test_float32_data_whose_squares_overflow_names_the_data_not_reg_covar():
    x = (_toy_x() * 1e19).astype(np.float32)
    for fn in (lambda: gmm.fit(jax.random.key(0), x, 2), lambda: gmm.log_prob(_toy(), x),
               lambda: gmm.initialize(jax.random.key(0), x, 2)):
        with pytest.raises(ValueError, match="x is too large for float32.*Rescale the data.*float64") as err:
            fn()
        assert "reg_covar" not in str(err.value)
    # a large but safe scale still fits (the check is not a blanket refusal)
    params, _ = gmm.fit(jax.random.key(0), (_toy_x() * 1e15).astype(np.float32), 2, max_iter=200)
    assert np.all(np.isfinite(np.asarray(params.covs)))


def test_fewer_samples_than_components_raises():
    p, x = _toy(), _toy_x()[:1]
    for fn in (lambda: gmm.em_step(p, x), lambda: gmm.em(p, x), lambda: gmm.fit(jax.random.key(0), x, 2),
               lambda: gmm.initialize(jax.random.key(0), x, 2)):
        with pytest.raises(ValueError, match="n_samples = 1 must be at least n_components = 2"):
            fn()
    assert gmm.log_prob(p, x).shape == (1,)  # evaluating a density at one point is fine


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "3", np.nan])
def test_counts_are_positive_integers_never_truncated(bad):
    p, x, key = _toy(), _toy_x(), jax.random.key(0)
    for name, fn in [("n", lambda v: gmm.sample(key, p, v)),
                     ("n_components", lambda v: gmm.fit(key, x, v)),
                     ("n_components", lambda v: gmm.initialize(key, x, v)),
                     ("max_iter", lambda v: gmm.fit(key, x, 2, max_iter=v)),
                     ("max_iter", lambda v: gmm.em(p, x, max_iter=v)),
                     ("n_init", lambda v: gmm.fit(key, x, 2, n_init=v))]:
        with pytest.raises(ValueError, match=f"{name} must be (an|a Python) integer >= 1"):
            fn(bad)
    assert gmm.sample(key, p, np.int64(3))[0].shape == (3, 2)  # NumPy integers are counts
    assert gmm.sample(key, p, 3.0)[0].shape == (3, 2)  # so are integer-valued floats


@pytest.mark.parametrize("bad", [-1e-3, np.nan, np.inf])
def test_reg_covar_and_tol_must_be_finite_and_non_negative(bad):
    p, x, key = _toy(), _toy_x(), jax.random.key(0)
    stats, _ = gmm.e_step(p, x)
    for fn in (lambda v: gmm.fit(key, x, 2, reg_covar=v), lambda v: gmm.em_step(p, x, reg_covar=v),
               lambda v: gmm.em(p, x, reg_covar=v), lambda v: gmm.m_step(stats, x, reg_covar=v),
               lambda v: gmm.initialize(key, x, 2, reg_covar=v)):
        with pytest.raises(ValueError, match="reg_covar must be"):
            fn(bad)
    for fn in (lambda v: gmm.fit(key, x, 2, tol=v), lambda v: gmm.em(p, x, tol=v)):
        with pytest.raises(ValueError, match="tol must be"):
            fn(bad)


def test_sample_weight_must_be_finite_non_negative_with_positive_sum():
    p, x, key = _toy(), _toy_x(), jax.random.key(0)
    fns = [lambda w: gmm.fit(key, x, 2, sample_weight=w), lambda w: gmm.e_step(p, x, sample_weight=w),
           lambda w: gmm.em_step(p, x, sample_weight=w), lambda w: gmm.em(p, x, sample_weight=w),
           lambda w: gmm.initialize(key, x, 2, sample_weight=w)]
    ones = np.ones(40, np.float32)
    cases = [(np.where(np.arange(40) == 3, -1.0, ones), "sample_weight must be non-negative"),
             (np.zeros(40), "sample_weight must have a positive sum"),
             (np.where(np.arange(40) == 3, np.nan, ones), "sample_weight contains 1 NaN"),
             (ones[:39], r"sample_weight must have shape \(40,\)"),
             (ones[None], r"sample_weight must have shape \(40,\)")]
    for fn in fns:
        for w, match in cases:
            with pytest.raises(ValueError, match=match):
                fn(w)


def test_choices_stats_and_resp_are_checked():
    p, x, key = _toy(), _toy_x(), jax.random.key(0)
    for fn in (lambda: gmm.fit(key, x, 2, covariance_type="banded"),
               lambda: gmm.initialize(key, x, 2, covariance_type="banded"),
               lambda: gmm.m_step(gmm.e_step(p, x)[0], x, "banded")):
        with pytest.raises(ValueError, match="covariance_type must be one of"):
            fn()
    with pytest.raises(ValueError, match="init must be one of"):
        gmm.initialize(key, x, 2, init="kmeans")
    stats, _ = gmm.e_step(p, x)
    with pytest.raises(ValueError, match="stats must be an EStepStats"):
        gmm.m_step(tuple(stats), x)
    with pytest.raises(ValueError, match=r"stats.sum_zz must have shape \(2, 2\)"):
        gmm.m_step(stats, x, "diag")
    with pytest.raises(ValueError, match="stats.sum_z contains"):
        gmm.m_step(stats._replace(sum_z=stats.sum_z.at[0, 0].set(jnp.nan)), x)
    with pytest.raises(ValueError, match="resp must sum to 1"):
        gmm.elbo(p, np.ones((40, 2)), x)
    with pytest.raises(ValueError, match=r"resp must have shape \(40, 2\)"):
        gmm.elbo(p, np.full((40, 3), 1 / 3), x)
    with pytest.raises(ValueError, match="params_old must have 2 components"):
        gmm.q_function(p, gmm.GMMParams(jnp.ones(3) / 3, jnp.zeros((3, 2)), jnp.ones(3), "spherical"), x)


def test_covariance_singular_in_float32_is_refused_not_nan(x64):
    p, x = _toy(), _toy_x()
    singular = np.array([[1.0, 1.0], [1.0, 1.0 + 1e-8]], np.float32)  # PD in exact arithmetic, not in float32
    with pytest.raises(ValueError, match="params.covs must be positive definite|params.covs is too ill-conditioned"):
        gmm.log_prob(p._replace(covs=p.covs.at[0].set(singular)), x)
    # factorable, but its correlation matrix has condition number 4e5: float32 densities
    # would err by up to ~kappa eps = 5e-2 (a random covariance the probe found gave NaN)
    poor = np.array([[1.0, 1.0], [1.0, 1.0 + 1e-5]], np.float32)
    with pytest.raises(ValueError, match=r"too ill-conditioned for float32.*condition number (4|3.99)e\+05"):
        gmm.log_prob(p._replace(covs=p.covs.at[0].set(poor)), x)
    nan_before = np.array([[1.0, 0.8648277521133423], [0.8648277521133423, 0.7479270696640015]], np.float32)
    with pytest.raises(ValueError, match="params.covs is too ill-conditioned"):
        gmm.log_prob(gmm.GMMParams(np.ones(1, np.float32), np.zeros((1, 2), np.float32), nan_before[None], "full"),
                     np.zeros((3, 2), np.float32))
    # the same matrices are fine in float64; a condition number of 400 is fine in float32
    wide = p._replace(covs=jnp.asarray(p.covs, jnp.float64).at[0].set(poor.astype(np.float64)))
    assert np.all(np.isfinite(np.asarray(gmm.log_prob(wide, np.asarray(x, np.float64)))))
    ok = np.array([[1.0, 1.0], [1.0, 1.01]], np.float32)
    want = gmm.log_prob(p._replace(covs=jnp.asarray(p.covs, jnp.float64).at[0].set(ok.astype(np.float64))),
                        np.asarray(x, np.float64))
    np.testing.assert_allclose(gmm.log_prob(p._replace(covs=p.covs.at[0].set(ok)), x), want, rtol=1e-5)


@pytest.mark.parametrize("covariance_type", gmm.COVARIANCE_TYPES)
def test_eager_public_functions_compile_once(covariance_type):
    stats, _ = gmm.e_step(_toy(covariance_type), _toy_x(0))
    resp = np.full((40, 2), 0.5, np.float32)
    calls = {
        **{name: _PUBLIC[name] for name in ("log_prob", "log_prob_components", "responsibilities", "predict",
                                            "e_step", "em_step", "bic", "aic")},
        "em": lambda p, x: gmm.em(p, x, max_iter=4, tol=0.0),
        "m_step": lambda p, x: gmm.m_step(stats, x, covariance_type),
        "q_function": lambda p, x: gmm.q_function(p, p, x),
        "elbo": lambda p, x: gmm.elbo(p, resp, x),
        "sample": lambda p, x: gmm.sample(jax.random.key(int(x[0, 0] * 1e3) % 7), p, 9),
        "initialize": lambda p, x: gmm.initialize(jax.random.key(1), x, 2, covariance_type),
    }
    if covariance_type != "full":  # the covariance type only changes the traced body: a few suffice
        calls = {name: calls[name] for name in ("log_prob", "em_step", "m_step")}
    for name, fn in calls.items():
        # the first calls compile: on _toy_x(1) initialize's k-means++ seeds a singleton
        # component (covariance reg_covar), which the two-pass form computes (a second program)
        for seed in (0, 1):
            jax.block_until_ready(fn(_toy(covariance_type), _toy_x(seed)))
        with _count_compiles() as compiles:
            jax.block_until_ready(fn(_toy(covariance_type, shift=0.05), _toy_x(2)))  # new values, same shapes
        assert compiles[0] == 0, f"{name} recompiled {compiles[0]} time(s) for new values of the same shapes"
    # the counter does count: a new shape compiles
    with _count_compiles() as compiles:
        gmm.log_prob(_toy(covariance_type), _toy_x(0, n=41))
    assert compiles[0] >= 1


# ------------------------------------------------------- additive (minibatch) statistics


def _sum_stats(stats):
    return functools.reduce(lambda a, b: jax.tree.map(jnp.add, a, b), stats)


def _reference_m_step(params, x, w, reg_covar=1e-6):
    """The textbook M-step (Eq. (3.53), (3.55), (3.57)) in float64 NumPy, uncentred, from the
    responsibilities of ``params`` (exact N_k: no ``10 eps`` as in scikit-learn)."""
    x = np.asarray(x, np.float64)
    rw = np.asarray(gmm.responsibilities(params, x), np.float64) * w[:, None]
    nk = rw.sum(0)
    means = rw.T @ x / nk[:, None]
    diff = x[None] - means[:, None]  # (K, n, d)
    full = np.einsum("kn,kna,knb->kab", rw.T, diff, diff) / nk[:, None, None]
    d = x.shape[1]
    covs = {"full": full + reg_covar * np.eye(d),
            "tied": np.einsum("k,kab->ab", nk, full) / nk.sum() + reg_covar * np.eye(d),
            "diag": np.diagonal(full, axis1=1, axis2=2) + reg_covar,
            "spherical": np.diagonal(full, axis1=1, axis2=2).mean(1) + reg_covar}[params.covariance_type]
    return nk / nk.sum(), means, covs


@pytest.mark.parametrize("dtype,offset", [(np.float32, 0.0), (np.float32, 1e4), (np.float64, 1e4)])
@pytest.mark.parametrize("covariance_type", gmm.COVARIANCE_TYPES)
def test_minibatch_statistics_add_up_to_the_full_batch(x64, covariance_type, dtype, offset):
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(size=(150, 2)), rng.normal(size=(150, 2)) * 0.5 + [3.0, 1.0]])
    x = rng.permutation(x + offset).astype(dtype)
    w = rng.uniform(0.5, 2.0, size=len(x)).astype(dtype)
    params = gmm.GMMParams(jnp.asarray([0.45, 0.55], dtype), jnp.asarray([[0.2, -0.1], [2.8, 1.1]], dtype) + offset,
                           jnp.asarray(_toy(covariance_type).covs, dtype), covariance_type)
    full, _ = gmm.e_step(params, x, sample_weight=w)
    parts = [gmm.e_step(params, x[a:b], sample_weight=w[a:b])[0] for a, b in [(0, 70), (70, 200), (200, 300)]]
    summed = _sum_stats(parts)
    from_full = gmm.m_step(full, x, covariance_type)
    from_parts = gmm.m_step(summed, x[200:], covariance_type)  # x only supplies the feature count
    # Relative to each leaf's scale. The sums differ only in summation order: in float32 a few
    # eps (measured <= 3e-7 for weights and means, whose float32 spacing at |x| ~ 1e4 is 1e-7
    # relative) and, for the covariances, sums of 300 centred squares whose rounding is
    # sqrt(n) eps ~ 2e-6 typically, n eps ~ 2e-5 at worst (measured <= 3e-6).
    rtols = [1e-12] * 3 if dtype == np.float64 else [1e-6, 1e-6, 1e-5]
    for name, rtol, a, b in zip(["weights", "means", "covs"], rtols, jax.tree_util.tree_leaves(from_parts),
                                jax.tree_util.tree_leaves(from_full)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(np.asarray(b)).max(), err_msg=name)
    # and both are the M-step: float32 centred sums keep the covariances to ~1e-6 relative
    # (measured <= 2e-6; uncentred float32 moments at offset 1e4 would err by eps * 1e8 ~ 12)
    want = _reference_m_step(params, x, np.asarray(w, np.float64))
    rtols = [1e-10] * 3 if dtype == np.float64 else [1e-6, 1e-6, 1e-5]
    for name, rtol, got, ref in zip(["weights", "means", "covs"], rtols, jax.tree_util.tree_leaves(from_parts), want):
        np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * np.abs(ref).max(), err_msg=name)


def test_summed_statistics_of_two_clusters_give_both_means():
    # the report: statistics of two halves, re-centred on the mean of all of x, gave both
    # means at the overall mean
    x = np.random.default_rng(0).standard_normal((40, 2)).astype(np.float32)
    x[20:] += 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gmm.ConvergenceWarning)
        p0, _ = gmm.fit(jax.random.key(0), x, 2, max_iter=3)
    sa, _ = gmm.e_step(p0, x[:20])
    sb, _ = gmm.e_step(p0, x[20:])
    summed = jax.tree.map(jnp.add, sa, sb)
    want, _ = gmm.em_step(p0, x)
    got = gmm.m_step(summed, x)
    np.testing.assert_allclose(np.sort(np.asarray(got.means)[:, 0]), [-0.27, 5.40], atol=0.01)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # the result depends on the statistics only, not on which rows of x are passed
    for a, b in zip(jax.tree_util.tree_leaves(gmm.m_step(summed, x[:5])), jax.tree_util.tree_leaves(got)):
        np.testing.assert_array_equal(a, b)
    # em_step is e_step followed by m_step
    full, _ = gmm.e_step(p0, x)
    for a, b in zip(jax.tree_util.tree_leaves(gmm.m_step(full, x)), jax.tree_util.tree_leaves(want)):
        np.testing.assert_array_equal(a, b)


def test_mismatched_shapes_blame_the_argument_that_is_wrong():
    p, x = _toy(), _toy_x()
    stats, _ = gmm.e_step(p, x)
    # means disagree with covs and the data: the means are wrong, not the covariances
    with pytest.raises(ValueError, match=r"params.means must have 2 features .*got shape \(2, 1\)"):
        gmm.log_prob(p._replace(means=p.means[:, :1]), x)
    # without data to arbitrate, the message says where the expected shape comes from
    with pytest.raises(ValueError, match=r"params.covs must have shape \(2, 1, 1\) .*from params.means"):
        gmm.validate_params(p._replace(means=p.means[:, :1]))
    # data of the wrong width for the statistics: x is wrong
    with pytest.raises(ValueError, match=r"x must have 2 features \(columns\) to match stats"):
        gmm.m_step(stats, np.zeros((30, 3)))
    with pytest.raises(ValueError, match=r"stats.sum_z must have shape \(2, 2\)"):
        gmm.m_step(stats._replace(sum_z=stats.sum_z[:, :1]), x)
    with pytest.raises(ValueError, match=r"stats.weighted_centre must have shape \(2,\)"):
        gmm.m_step(stats._replace(weighted_centre=stats.weighted_centre[:1]), x)
    with pytest.raises(ValueError, match="stats.total_weight must be positive"):
        gmm.m_step(stats._replace(total_weight=jnp.zeros_like(stats.total_weight)), x)


def test_too_few_positively_weighted_samples_names_sample_weight():
    x = np.random.default_rng(0).normal(size=(30, 2))
    with pytest.raises(ValueError, match="sample_weight has 2 positive entries.*n_components = 3"):
        gmm.fit(jax.random.key(0), x, 3, sample_weight=np.r_[np.ones(2), np.zeros(28)])
    p, w = _toy(), np.r_[1.0, np.zeros(39)]
    for fn in (lambda: gmm.initialize(jax.random.key(0), _toy_x(), 2, sample_weight=w),
               lambda: gmm.em_step(p, _toy_x(), sample_weight=w), lambda: gmm.em(p, _toy_x(), sample_weight=w)):
        with pytest.raises(ValueError, match="sample_weight has 1 positive entries.*n_components = 2"):
            fn()
    assert gmm.e_step(p, _toy_x(), sample_weight=w)[0].total_weight == 1.0  # statistics of one sample are fine


def test_fewer_distinct_samples_than_components_is_refused():
    # 2000 rows but only 2 distinct points: any 3-component maximum-likelihood fit is degenerate
    x = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0]]), 1000, axis=0)
    for init in gmm.INIT_METHODS:
        with pytest.raises(ValueError, match="x has only 2 distinct samples, fewer than n_components = 3"):
            gmm.fit(jax.random.key(0), x, 3, init=init)
    p = gmm.fit(jax.random.key(0), x, 2)[0]  # as many components as points: fine
    with pytest.raises(ValueError, match="x has only 1 distinct samples"):
        gmm.em_step(_toy(), np.ones((40, 2)))
    with pytest.raises(ValueError, match="x has only 1 distinct samples"):
        gmm.em(_toy(), np.ones((40, 2)))
    with pytest.raises(ValueError, match="x has only 1 distinct samples"):
        gmm.initialize(jax.random.key(0), np.ones((40, 2)), 2)
    # zero weights remove samples: 3 distinct rows, but only 2 positively weighted
    x3 = np.r_[np.zeros((5, 2)), np.ones((5, 2)), 2 * np.ones((1, 2))]
    w = np.r_[np.ones(10), 0.0]
    with pytest.raises(ValueError, match="only 2 distinct positively weighted samples"):
        gmm.fit(jax.random.key(0), x3, 3, sample_weight=w)
    assert np.all(np.isfinite(p.means))


# ------------------------------------------------------- what a probe found (2026-11-30)


def _far_apart(spread=0.01, half=100.0, n=50, seed=0):
    """Two tight clusters far apart: component means 1e4 of their standard deviations from
    the data's centre, where EM's one-matmul form loses about eps * 1e8 in float32."""
    rng = np.random.default_rng(seed)
    mu = np.array([[-half, 0.0], [half, 0.0]])
    return mu, np.concatenate([mu[0] + spread * rng.normal(size=(n, 2)), mu[1] + spread * rng.normal(size=(n, 2))])


def _far_params(mu, spread, covariance_type, dtype):
    covs = {"full": np.stack([np.eye(2) * spread**2] * 2), "tied": np.eye(2) * spread**2,
            "diag": np.full((2, 2), spread**2), "spherical": np.full((2,), spread**2)}[covariance_type]
    return gmm.GMMParams(np.array([0.5, 0.5], dtype), mu.astype(dtype), covs.astype(dtype), covariance_type)


@pytest.mark.parametrize("covariance_type", gmm.COVARIANCE_TYPES)
def test_far_apart_components_float32_densities_are_exact(x64, covariance_type):
    """log_prob computes each component from its own differences x - mu_k: in float32 it
    agrees with float64 (it exceeded the mixture's largest possible density by 4 nats)."""
    mu, x = _far_apart()
    x32 = x.astype(np.float32)
    got = gmm.log_prob(_far_params(mu, 0.01, covariance_type, np.float32), x32)
    want = gmm.log_prob(_far_params(mu, 0.01, covariance_type, np.float64), x32.astype(np.float64))
    np.testing.assert_allclose(got, want, atol=1e-5)  # |log p| ~ 7: float32 rounding of the result
    assert float(jnp.max(got)) <= np.log(0.5) - np.log(2 * np.pi * 0.01**2) + 1e-5


@pytest.mark.parametrize("covariance_type", ["full"] + [pytest.param(c, marks=pytest.mark.slow)
                                                       for c in ("tied", "diag", "spherical")])
def test_float32_fit_of_far_apart_clusters_matches_scikit_learn(covariance_type):
    """Where the one-matmul statistics would lose accuracy (here ~1 relative: covariances 5%
    off and a wrong lower bound before), fit runs EM in the two-pass form and agrees with
    scikit-learn in float64."""
    mu, x = _far_apart()
    params, info = gmm.fit(jax.random.key(0), x.astype(np.float32), 2, covariance_type=covariance_type)
    ref = GaussianMixture(2, covariance_type=covariance_type, random_state=0).fit(x)
    order, ref_order = np.argsort(np.asarray(params.means)[:, 0]), np.argsort(ref.means_[:, 0])
    np.testing.assert_allclose(np.asarray(params.means)[order], ref.means_[ref_order], atol=1e-4)
    covs, ref_covs = np.asarray(params.covs), ref.covariances_
    if covariance_type != "tied":
        covs, ref_covs = covs[order], ref_covs[ref_order]
    # float32 data at |x| = 100 are rounded to 7.6e-6 against a spread of 0.01 (measured 1e-4)
    np.testing.assert_allclose(covs, ref_covs, rtol=1e-3, atol=1e-3 * np.abs(ref_covs).max())
    assert abs(info.lower_bound - ref.lower_bound_) <= 1e-3 * abs(ref.lower_bound_)


def test_em_functions_switch_or_refuse_where_the_one_matmul_form_loses_accuracy(x64):
    mu, x = _far_apart()
    p32, x32 = _far_params(mu, 0.01, "full", np.float32), x.astype(np.float32)
    p64 = _far_params(mu, 0.01, "full", np.float64)
    # em_step, em and initialize switch to the two-pass form
    got, loglik = gmm.em_step(p32, x32)
    want, want_loglik = gmm.em_step(p64, x32.astype(np.float64))
    np.testing.assert_allclose(got.covs, want.covs, rtol=1e-3)
    np.testing.assert_allclose(loglik, want_loglik, rtol=1e-5)
    fitted, *_ = gmm.em(p32, x32, max_iter=5)
    np.testing.assert_allclose(fitted.covs, gmm.em(p64, x32.astype(np.float64), max_iter=5)[0].covs, rtol=1e-3)
    init = gmm.initialize(jax.random.key(0), x32, 2)
    assert np.all(np.linalg.eigvalsh(np.asarray(init.covs, np.float64)) > 0)
    # e_step's additive statistics centre the data once: refused, naming params (m_step: stats)
    with pytest.raises(ValueError, match="params: the mixture's component .* standard deviations"):
        gmm.e_step(p32, x32)
    stats, _ = gmm.e_step(p64, x32.astype(np.float64))
    with pytest.raises(ValueError, match="stats: the new mixture's component"):
        gmm.m_step(jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), stats), x32)
    gmm.m_step(stats, x32.astype(np.float64))  # fine in float64


def test_random_from_data_draws_only_positively_weighted_points():
    rng = np.random.default_rng(0)
    x = np.concatenate([[-3.0, 0.0] + rng.normal(size=(5, 2)), [3.0, 0.0] + rng.normal(size=(5, 2)),
                        rng.normal(size=(90, 2)) * 0.1 + [50.0, 50.0]]).astype(np.float32)
    w = np.r_[np.ones(10), np.zeros(90)].astype(np.float32)
    for seed in range(10):  # before: zero-weight points were drawn in 20 of 20 seeds
        init = gmm.initialize(jax.random.key(seed), x, 2, init="random_from_data", sample_weight=w)
        np.testing.assert_allclose(init.weights, [0.5, 0.5])
        # each mean is a weighted point (up to float32 rounding of the centred M-step)
        assert all(np.min(np.abs(x[:10] - m).max(axis=1)) < 1e-5 for m in np.asarray(init.means)), init.means
    _, weighted = gmm.fit(jax.random.key(0), x, 2, init="random_from_data", sample_weight=w)
    _, alone = gmm.fit(jax.random.key(0), x[:10], 2, init="random_from_data")
    assert abs(weighted.lower_bound - alone.lower_bound) <= 1e-4 * abs(alone.lower_bound)


def test_q_function_with_a_zero_weight_is_finite():
    p = gmm.GMMParams(jnp.array([1.0, 0.0]), jnp.array([[0.0, 0.0], [1.0, 1.0]]), jnp.stack([jnp.eye(2)] * 2), "full")
    x = _toy_x()
    resp = np.asarray(gmm.responsibilities(p, x))
    # Q(theta, theta) = ELBO(posterior) - H(posterior) = mean log p(x) here (one live component)
    np.testing.assert_allclose(gmm.q_function(p, p, x), np.mean(np.asarray(gmm.log_prob(p, x))), rtol=1e-6)
    assert np.all(resp[:, 1] == 0.0)


def test_results_do_not_depend_on_the_scale_of_sample_weight():
    """N_k is exact (no 10 eps as in scikit-learn, whose bias grew as the weights shrank: a
    mean moved from -3.08 to -2.77 with weights of 1e-7)."""
    x = np.concatenate([_toy_x(0, 100), _toy_x(1, 100) + 3.0])
    w = np.random.default_rng(2).uniform(0.5, 2.0, 200).astype(np.float32)
    params = gmm.initialize(jax.random.key(1), x, 2)
    want, want_ll = gmm.em_step(params, x, sample_weight=w)
    for scale in (1e-7, 1e7):
        got, ll = gmm.em_step(params, x, sample_weight=w * np.float32(scale))
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):  # float32 rounding
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(np.asarray(b)).max())
        np.testing.assert_allclose(ll, want_ll, rtol=1e-6)


def test_em_promotes_mixed_dtypes_as_em_step(x64):
    params64 = gmm.initialize(jax.random.key(0), _toy_x().astype(np.float64), 2)
    params32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params64)
    got = gmm.em(params32, _toy_x().astype(np.float64), max_iter=3)[0]
    assert got.means.dtype == jnp.float64
    want = gmm.em(jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params32), _toy_x().astype(np.float64),
                  max_iter=3)[0]
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_fit_refuses_a_covariance_the_other_functions_would_refuse():
    """Nearly collinear float32 features (correlation 0.99999) fit to a covariance of
    condition number 1.7e5, which log_prob then refused: fit says so itself, naming x and
    reg_covar, and a larger reg_covar gives parameters the rest accepts."""
    rng = np.random.default_rng(0)
    t = rng.normal(size=500)
    x = np.stack([t, t + 0.005 * rng.normal(size=500)], axis=1).astype(np.float32)
    with pytest.raises(ValueError, match=r"x \(its fitted covariance; raise reg_covar .*too ill-conditioned"):
        gmm.fit(jax.random.key(0), x, 1)
    params, _ = gmm.fit(jax.random.key(0), x, 1, reg_covar=1e-3)
    assert np.all(np.isfinite(np.asarray(gmm.log_prob(params, x))))
