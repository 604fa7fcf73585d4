r"""Gaussian models of chapters 2.2-2.4 and the derivative formulas of
``notes/gaussian-derivatives.md``.

.. math:: N(x \mid \mu, \Sigma) = \frac{1}{\sqrt{(2\pi)^d \det \Sigma}}
          \exp\!\Big(-\tfrac12 (x-\mu)^\top \Sigma^{-1} (x-\mu)\Big) \qquad \text{Eq. (2.24)}

Every function accepts the multivariate form (``x: (..., d)``, ``mean: (d,)``,
``cov: (d, d)``) and the univariate form of Eq. (2.13) (``x: (...)``, scalar ``mean`` and
scalar variance ``cov``). Densities are Cholesky-based; dtypes follow the inputs.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.linalg import cho_solve, solve_triangular

from jaxebm._validation import check_finite, check_ndim, is_concrete
from jaxebm.types import Array, ArrayLike

HIGHEST = lax.Precision.HIGHEST

__all__ = [
    "kl",
    "kl_to_data",
    "log_pdf",
    "mle",
    "pdf",
    "pdf_grad_cov",
    "pdf_grad_mean",
]


def _as_multivariate(x, mean, cov):
    """Returns (x (..., d), mean (d,), cov (d, d), univariate flag) after shape checks."""
    x, mean, cov = jnp.asarray(x), jnp.asarray(mean), jnp.asarray(cov)
    dtype = jnp.result_type(x, mean, cov, jnp.float32)
    x, mean, cov = x.astype(dtype), mean.astype(dtype), cov.astype(dtype)
    if mean.ndim == 0:
        if cov.ndim != 0:
            raise ValueError(f"cov must be a scalar variance when mean is a scalar; got shape {cov.shape}.")
        return x[..., None], mean[None], cov[None, None], True
    check_ndim("mean", mean, 1, "a vector of shape (d,) or a scalar")
    d = mean.shape[0]
    if cov.shape != (d, d):
        raise ValueError(f"cov must have shape ({d}, {d}) to match mean; got {cov.shape}.")
    if x.ndim < 1 or x.shape[-1] != d:
        raise ValueError(f"x must have last axis of size d = {d}; got shape {x.shape}.")
    return x, mean, cov, False


def _cholesky(cov):
    if is_concrete(cov):
        check_finite("cov", cov)
        c = np.asarray(cov, dtype=np.float64)
        if not np.allclose(c, c.T, rtol=1e-5, atol=1e-8 * max(1.0, np.abs(c).max())):
            raise ValueError("cov must be symmetric.")
        if np.linalg.eigvalsh(c).min() <= 0:
            raise ValueError(
                f"cov must be positive definite; its smallest eigenvalue is {np.linalg.eigvalsh(c).min():.3g}.")
    return jnp.linalg.cholesky(cov)


def log_pdf(x: ArrayLike, mean: ArrayLike, cov: ArrayLike) -> Array:
    r"""Log density :math:`\ln N(x \mid \mu, \Sigma)` (Eq. (2.13), (2.24)).

    .. math:: \ln N = -\tfrac12 \lVert L^{-1}(x-\mu) \rVert^2 - \sum_i \ln L_{ii}
              - \tfrac d2 \ln 2\pi, \qquad \Sigma = L L^\top

    Args:
      x: ``Float[Array, "... d"]`` points (``"..."`` in the univariate form).
      mean: ``Float[Array, "d"]`` (or scalar).
      cov: ``Float[Array, "d d"]`` positive definite (or scalar variance).

    Returns:
      ``Float[Array, "..."]``.
    """
    x, mean, cov, _ = _as_multivariate(x, mean, cov)
    L = _cholesky(cov)
    d = mean.shape[0]
    diff = (x - mean).reshape(-1, d)
    z = solve_triangular(L, diff.T, lower=True)  # (d, batch)
    maha = jnp.sum(z * z, axis=0).reshape(x.shape[:-1])
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diag(L)))
    return -0.5 * (maha + log_det + d * jnp.log(2.0 * jnp.pi).astype(x.dtype))


def pdf(x: ArrayLike, mean: ArrayLike, cov: ArrayLike) -> Array:
    r"""Density :math:`N(x \mid \mu, \Sigma)` (Eq. (2.13), (2.24))."""
    return jnp.exp(log_pdf(x, mean, cov))


def _precision_and_diff(x, mean, cov):
    x, mean, cov, univariate = _as_multivariate(x, mean, cov)
    L = _cholesky(cov)
    eye = jnp.eye(mean.shape[0], dtype=cov.dtype)
    precision = cho_solve((L, True), eye)
    precision = 0.5 * (precision + precision.T)
    return x, mean, cov, precision, univariate


def pdf_grad_mean(x: ArrayLike, mean: ArrayLike, cov: ArrayLike) -> Array:
    r"""Closed-form :math:`\partial N(x\mid\mu,\Sigma) / \partial \mu`
    (``notes/gaussian-derivatives.md``).

    .. math:: \frac{\partial N}{\partial \mu} = N(x \mid \mu, \Sigma)\, \Sigma^{-1} (x - \mu)

    Returns:
      ``Float[Array, "... d"]`` (``"..."`` in the univariate form).
    """
    x, mean, cov, precision, univariate = _precision_and_diff(x, mean, cov)
    density = pdf(x, mean, cov)
    grad = density[..., None] * jnp.matmul(x - mean, precision, precision=HIGHEST)
    return grad[..., 0] if univariate else grad


def pdf_grad_cov(x: ArrayLike, mean: ArrayLike, cov: ArrayLike) -> Array:
    r"""Closed-form :math:`\partial N(x\mid\mu,\Sigma) / \partial \Sigma`
    (``notes/gaussian-derivatives.md``).

    .. math:: \frac{\partial N}{\partial \Sigma} = -\tfrac12 \Big(\Sigma^{-1}
              - \Sigma^{-1}(x-\mu)(x-\mu)^\top \Sigma^{-1}\Big) N(x \mid \mu, \Sigma)

    The entries of :math:`\Sigma` are treated as independent (:math:`\partial \ln\det S /
    \partial S = S^{-\top}`), as in the notes. This is the symmetric gradient; autodiff of
    a Cholesky-based density returns a different but equivalent (triangular) matrix, which
    agrees after symmetrising (see the errata in ``notes/README.md``).

    Returns:
      ``Float[Array, "... d d"]`` (``"..."`` in the univariate form).
    """
    x, mean, cov, precision, univariate = _precision_and_diff(x, mean, cov)
    density = pdf(x, mean, cov)
    u = jnp.matmul(x - mean, precision, precision=HIGHEST)  # Sigma^-1 (x - mu)
    grad = -0.5 * (precision - u[..., :, None] * u[..., None, :]) * density[..., None, None]
    return grad[..., 0, 0] if univariate else grad


def _check_samples(x) -> Array:
    x = jnp.asarray(x)
    check_ndim("x", x, (1, 2), "samples of shape (n,) (univariate) or (n, d)")
    if x.shape[0] < 1:
        raise ValueError("x must hold at least one sample.")
    check_finite("x", x)
    return x.astype(jnp.result_type(x, jnp.float32))


def mle(x: ArrayLike) -> tuple[Array, Array]:
    r"""Maximum-likelihood mean and (biased) covariance (Eq. (2.15)-(2.16), (2.26)-(2.27)).

    .. math:: \mu = \frac1n \sum_i x_i, \qquad
              \Sigma = \frac1n \sum_i (x_i - \mu)(x_i - \mu)^\top

    Computed from centred data, so float32 does not cancel catastrophically.

    Args:
      x: ``Float[Array, "n d"]`` samples, or ``Float[Array, "n"]`` for the univariate case.

    Returns:
      ``(mean (d,), cov (d, d))``, or scalars ``(mean, variance)`` for 1-D input.
    """
    x = _check_samples(x)
    mean = jnp.mean(x, axis=0)
    centred = x - mean
    if x.ndim == 1:
        return mean, jnp.mean(centred * centred)
    cov = jnp.matmul(centred.T, centred, precision=HIGHEST) / x.shape[0]
    return mean, cov


def kl_to_data(x: ArrayLike, mean: ArrayLike, cov: ArrayLike) -> Array:
    r"""KL divergence from the empirical distribution of ``x`` to :math:`N(\mu, \Sigma)`, up to
    the data-entropy constant (Eq. (2.14), (2.25)).

    .. math:: D_{KL}(p_0 \| q_\theta) + H(p_0) = \frac{1}{2n}\sum_i (x_i-\mu)^\top
              \Sigma^{-1}(x_i-\mu) + \tfrac12 \ln\det\Sigma + \tfrac d2 \ln 2\pi

    This is the mean negative log-likelihood. The notes drop the constant
    :math:`\tfrac d2 \ln 2\pi`; it is kept here so that ``kl_to_data == -mean(log_pdf)``.
    Erratum: the first line of (2.25) should read :math:`\ln p_0 - \ln q`, not
    :math:`\ln p_0 - q`.
    """
    x = _check_samples(x)
    return -jnp.mean(log_pdf(x, mean, cov))


def kl(mean0: ArrayLike, cov0: ArrayLike, mean1: ArrayLike, cov1: ArrayLike) -> Array:
    r"""Closed-form :math:`D_{KL}(N(\mu_0,\Sigma_0) \,\|\, N(\mu_1,\Sigma_1))` (Eq. (2.6)).

    .. math:: \tfrac12\Big(\mathrm{tr}(\Sigma_1^{-1}\Sigma_0) + (\mu_1-\mu_0)^\top
              \Sigma_1^{-1}(\mu_1-\mu_0) - d + \ln\frac{\det\Sigma_1}{\det\Sigma_0}\Big)
    """
    _, mean0, cov0, _ = _as_multivariate(jnp.zeros(jnp.shape(mean0)), mean0, cov0)
    _, mean1, cov1, _ = _as_multivariate(jnp.zeros(jnp.shape(mean1)), mean1, cov1)
    if mean0.shape != mean1.shape:
        raise ValueError(f"mean0 and mean1 must have the same shape; got {mean0.shape} and {mean1.shape}.")
    L0, L1 = _cholesky(cov0), _cholesky(cov1)
    d = mean0.shape[0]
    M = solve_triangular(L1, L0, lower=True)  # L1^-1 L0, so tr(S1^-1 S0) = ||M||_F^2
    z = solve_triangular(L1, mean1 - mean0, lower=True)
    log_det = 2.0 * (jnp.sum(jnp.log(jnp.diag(L1))) - jnp.sum(jnp.log(jnp.diag(L0))))
    return 0.5 * (jnp.sum(M * M) + jnp.sum(z * z) - d + log_det)
