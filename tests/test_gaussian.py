"""Gaussian chapter: densities, MLE, derivative formulas, KL."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxebm import gaussian
from tests import reference
from tests._compile import assert_compiles_once as _assert_compiles_once


def _spd(rng, d):
    A = rng.normal(size=(d, d))
    return A @ A.T + d * np.eye(d) * 0.3


def test_log_pdf_multivariate_and_univariate(rng, x64):
    d = 4
    mean, cov = rng.normal(size=d), _spd(rng, d)
    x = rng.normal(size=(7, d))
    np.testing.assert_allclose(gaussian.log_pdf(x, mean, cov), reference.gaussian_log_pdf(x, mean, cov),
                               rtol=1e-12)
    np.testing.assert_allclose(gaussian.pdf(x[0], mean, cov), np.exp(reference.gaussian_log_pdf(x[0], mean, cov)),
                               rtol=1e-12)
    xs = rng.normal(size=5)
    want = -0.5 * (xs - 0.3) ** 2 / 2.0 - 0.5 * np.log(2 * np.pi * 2.0)  # Eq. (2.13)
    np.testing.assert_allclose(gaussian.log_pdf(xs, 0.3, 2.0), want, rtol=1e-12)


def test_log_pdf_float32(rng):
    d = 3
    mean, cov = rng.normal(size=d), _spd(rng, d)
    x = rng.normal(size=(5, d))
    got = gaussian.log_pdf(x.astype(np.float32), mean.astype(np.float32), cov.astype(np.float32))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, reference.gaussian_log_pdf(x, mean, cov), rtol=2e-6)


def test_mle_is_biased_sample_moments_and_minimises_kl(rng, x64):
    x = rng.normal(size=(200, 3)) @ rng.normal(size=(3, 3)) + 5.0
    mean, cov = gaussian.mle(x)
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x.T, bias=True), rtol=1e-10)
    grads = jax.grad(gaussian.kl_to_data, argnums=(1, 2))(jnp.asarray(x), mean, cov)
    np.testing.assert_allclose(grads[0], 0, atol=1e-10)  # Eq. (2.26)
    np.testing.assert_allclose(grads[1], 0, atol=1e-10)  # Eq. (2.27)
    m1, v1 = gaussian.mle(x[:, 0])  # Eq. (2.15)-(2.16)
    np.testing.assert_allclose([m1, v1], [x[:, 0].mean(), x[:, 0].var()], rtol=1e-12)


def test_mle_float32_does_not_cancel(rng):
    x = (1e4 + rng.normal(size=(10_000, 2))).astype(np.float32)
    _, cov = gaussian.mle(x)
    # Uncentred float32 moments err by eps * 1e8 ~ 12 against a variance of 1 (every digit);
    # centred ones by the mean's rounding (second order, ~1e-6) and the summation of 10,000
    # squares (log2(N) eps ~ 2e-6 pairwise): 1e-3 separates the two by orders of magnitude.
    np.testing.assert_allclose(cov, np.cov(x.astype(np.float64).T, bias=True), rtol=1e-3)


def test_kl_to_data_is_mean_nll(rng, x64):
    x = rng.normal(size=(50, 2))
    mean, cov = np.array([0.1, -0.2]), _spd(rng, 2)
    want = -reference.gaussian_log_pdf(x, mean, cov).mean()
    np.testing.assert_allclose(float(gaussian.kl_to_data(x, mean, cov)), want, rtol=1e-12)
    # Eq. (2.14), univariate: (1/2 s2) mean (x-mu)^2 + 1/2 ln s2 + const
    xs = x[:, 0]
    want1 = np.mean((xs - 0.4) ** 2) / (2 * 1.7) + 0.5 * np.log(1.7) + 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(float(gaussian.kl_to_data(xs, 0.4, 1.7)), want1, rtol=1e-12)


@pytest.mark.parametrize("d", [1, 2, 5])
def test_pdf_grad_mean_equals_autodiff(rng, x64, d):
    mean, cov = rng.normal(size=d), _spd(rng, d)
    x = rng.normal(size=(4, d))
    auto = jax.vmap(jax.grad(lambda xi, m: gaussian.pdf(xi, m, cov), argnums=1), (0, None))(x, mean)
    np.testing.assert_allclose(gaussian.pdf_grad_mean(x, mean, cov), auto, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("d", [1, 2, 5])
def test_pdf_grad_cov_equals_symmetrised_autodiff(rng, x64, d):
    mean, cov = rng.normal(size=d), _spd(rng, d)
    x = rng.normal(size=(4, d))
    auto = jax.vmap(jax.grad(lambda xi, S: gaussian.pdf(xi, mean, S), argnums=1), (0, None))(x, cov)
    sym = 0.5 * (auto + jnp.swapaxes(auto, -1, -2))
    closed = gaussian.pdf_grad_cov(x, mean, cov)
    np.testing.assert_allclose(closed, sym, rtol=1e-9, atol=1e-14)
    # The closed form is the gradient treating entries independently: finite differences
    # of the density along a symmetric perturbation agree with <closed, E>.
    E = rng.normal(size=(d, d))
    E = E + E.T
    eps = 1e-6
    upper = reference.gaussian_log_pdf(x, mean, cov + eps * E)
    lower = reference.gaussian_log_pdf(x, mean, cov - eps * E)
    fd = (upper - lower) / (2 * eps)
    fd = fd * np.exp(reference.gaussian_log_pdf(x, mean, cov))
    np.testing.assert_allclose(np.einsum("bij,ij->b", closed, E), fd, rtol=1e-6)


def test_univariate_derivatives(x64):
    x, m, v = jnp.array([0.3, -1.0]), 0.2, 1.5
    np.testing.assert_allclose(gaussian.pdf_grad_mean(x, m, v),
                               jax.vmap(jax.grad(lambda xi, mu: gaussian.pdf(xi, mu, v), 1), (0, None))(x, m))
    np.testing.assert_allclose(gaussian.pdf_grad_cov(x, m, v),
                               jax.vmap(jax.grad(lambda xi, s: gaussian.pdf(xi, m, s), 1), (0, None))(x, v))


def test_kl_closed_form(rng, x64):
    d = 3
    m0, m1 = rng.normal(size=d), rng.normal(size=d)
    S0, S1 = _spd(rng, d), _spd(rng, d)
    np.testing.assert_allclose(float(gaussian.kl(m0, S0, m1, S1)), reference.gaussian_kl(m0, S0, m1, S1),
                               rtol=1e-11)
    assert abs(float(gaussian.kl(m0, S0, m0, S0))) < 1e-12
    # univariate
    want = 0.5 * (2.0 / 3.0 + (1.0 - 0.5) ** 2 / 3.0 - 1 + np.log(3.0 / 2.0))
    np.testing.assert_allclose(float(gaussian.kl(0.5, 2.0, 1.0, 3.0)), want, rtol=1e-12)


def test_bad_inputs():
    with pytest.raises(ValueError, match="positive definite"):
        gaussian.log_pdf(np.zeros((2, 2)), np.zeros(2), np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="cov must have shape"):
        gaussian.log_pdf(np.zeros((2, 2)), np.zeros(2), np.eye(3))
    with pytest.raises(ValueError, match="last axis"):
        gaussian.log_pdf(np.zeros((2, 3)), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="x contains 1 NaN"):
        gaussian.mle(np.array([[0.0, 1.0], [np.nan, 2.0]]))
    with pytest.raises(ValueError, match="symmetric"):
        gaussian.log_pdf(np.zeros(2), np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="x must be"):
        gaussian.mle(np.zeros((2, 2, 2)))


# ----- issue #12: validation at the entry, compile once ----------------------------------------


def test_lists_are_accepted_and_every_argument_is_checked(rng):
    x, mean, cov = rng.normal(size=(5, 2)), np.zeros(2), np.eye(2)
    np.testing.assert_allclose(gaussian.log_pdf(x.tolist(), mean.tolist(), cov.tolist()),
                               gaussian.log_pdf(x, mean, cov), rtol=1e-7)
    with pytest.raises(ValueError, match="mean contains 1 NaN"):
        gaussian.log_pdf(x, np.array([0.0, np.nan]), cov)
    with pytest.raises(ValueError, match="mean must not be empty"):
        gaussian.log_pdf(x, np.zeros(0), cov)
    with pytest.raises(ValueError, match=r"mean must have shape \(2,\) to match cov of shape \(2, 2\) and x"):
        gaussian.log_pdf(x, np.zeros(1), cov)  # x and cov agree on d = 2: the mean is wrong
    with pytest.raises(ValueError, match=r"cov must have shape \(1, 1\) to match mean"):
        gaussian.log_pdf(x[:, :1], np.zeros(1), cov)  # x and mean agree on d = 1: the cov is wrong
    with pytest.raises(ValueError, match="x must hold at least one point"):
        gaussian.log_pdf(x[:0], mean, cov)
    with pytest.raises(ValueError, match="x must be a point of shape"):
        gaussian.log_pdf(x[None, None], mean, cov)  # extra axes: vmap instead
    with pytest.raises(ValueError, match="x must be a numeric array"):
        gaussian.pdf_grad_mean(x.astype(str), mean, cov)
    with pytest.raises(ValueError, match="cov must be positive definite"):
        gaussian.log_pdf(x[:, 0], 0.0, -1.0)  # univariate: a positive variance
    with pytest.raises(ValueError, match="cov1 must be positive definite"):
        gaussian.kl(mean, cov, mean, -cov)
    with pytest.raises(ValueError, match="mean0 contains"):
        gaussian.kl(np.array([np.inf, 0.0]), cov, mean, cov)
    with pytest.raises(ValueError, match="x must hold at least one sample"):
        gaussian.mle(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="x must be samples"):
        gaussian.kl_to_data(x[0], mean, cov)
    with pytest.raises(ValueError, match="x contains 1 NaN"):
        gaussian.kl_to_data(np.where(np.arange(10).reshape(5, 2) == 3, np.nan, x), mean, cov)


def test_eager_calls_compile_once():
    def calls(seed):
        rng = np.random.default_rng(seed)
        x = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
        mean = jnp.asarray(rng.normal(size=3), jnp.float32)
        cov = jnp.asarray(_spd(rng, 3), jnp.float32)
        return {
            "log_pdf": lambda: gaussian.log_pdf(x, mean, cov),
            "pdf": lambda: gaussian.pdf(x, mean, cov),
            "pdf_grad_mean": lambda: gaussian.pdf_grad_mean(x, mean, cov),
            "pdf_grad_cov": lambda: gaussian.pdf_grad_cov(x, mean, cov),
            "mle": lambda: gaussian.mle(x),
            "kl_to_data": lambda: gaussian.kl_to_data(x, mean, cov),
            "kl": lambda: gaussian.kl(mean, cov, mean + 1, 2 * cov),
        }

    _assert_compiles_once(calls(1), calls(2))


def test_covariance_too_ill_conditioned_for_its_dtype_is_refused(x64):
    """Cholesky-based densities err by up to kappa * eps, kappa the condition number of the
    correlation matrix: float32 refuses kappa * eps > 1e-3 (a probe found NaN and relative
    errors up to 30 for positive-definite float32 covariances); float64 answers."""
    nan_before = np.array([[1.0, 0.8648277521133423], [0.8648277521133423, 0.7479270696640015]], np.float32)
    zero = np.zeros(2, np.float32)
    for fn in (gaussian.log_pdf, gaussian.pdf_grad_mean, gaussian.pdf_grad_cov):
        with pytest.raises(ValueError, match="cov is too ill-conditioned for float32"):
            fn(zero, zero, nan_before)
    with pytest.raises(ValueError, match="cov0 is too ill-conditioned"):
        gaussian.kl(zero, nan_before, zero, np.eye(2, dtype=np.float32))
    with pytest.raises(ValueError, match="cov1 is too ill-conditioned"):
        gaussian.kl(zero, np.eye(2, dtype=np.float32), zero, nan_before)
    with pytest.raises(ValueError, match="cov is too ill-conditioned"):
        gaussian.kl_to_data(np.zeros((3, 2), np.float32), zero, nan_before)
    # float64 (the same float32 matrix, promoted) is well within its limit
    want = reference.gaussian_log_pdf(np.zeros(2), np.zeros(2), nan_before.astype(np.float64))
    np.testing.assert_allclose(gaussian.log_pdf(np.zeros(2), np.zeros(2), nan_before.astype(np.float64)), want,
                               rtol=1e-9)
    # badly scaled but well conditioned (variances 1e6 and 1e-3, correlation 0.5): answered in float32
    s = np.sqrt([1e6, 1e-3])
    cov = (np.array([[1.0, 0.5], [0.5, 1.0]]) * np.outer(s, s))
    x = np.array([[300.0, 0.01], [-1000.0, 0.05]])
    np.testing.assert_allclose(gaussian.log_pdf(x.astype(np.float32), zero, cov.astype(np.float32)),
                               gaussian.log_pdf(x, np.zeros(2), cov.astype(np.float32).astype(np.float64)), rtol=1e-6)
