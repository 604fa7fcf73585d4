r"""Gaussian models of chapters 2.2-2.4 and the derivative formulas of
``notes/gaussian-derivatives.md``.

.. math:: N(x \mid \mu, \Sigma) = \frac{1}{\sqrt{(2\pi)^d \det \Sigma}}
          \exp\!\Big(-\tfrac12 (x-\mu)^\top \Sigma^{-1} (x-\mu)\Big) \qquad \text{Eq. (2.24)}

Every function accepts the multivariate form (``x: (..., d)``, ``mean: (d,)``,
``cov: (d, d)``) and the univariate form of Eq. (2.13) (``x: (...)``, scalar ``mean`` and
scalar variance ``cov``). Densities are Cholesky-based; dtypes follow the inputs. A covariance
too ill-conditioned for the working dtype is refused (a ``ValueError`` naming it): where the
condition number :math:`\kappa` of its correlation matrix has :math:`\kappa\,\epsilon > 10^{-3}`
(:math:`\kappa > 8.4 \times 10^3` in float32), since the log-density would then carry relative
errors up to about :math:`\kappa\,\epsilon` (use float64).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_solve, solve_triangular

from jaxebm._numerics import HIGHEST
from jaxebm._validation import array, check_conditioning, check_finite, check_ndim, is_concrete
from jaxebm.types import Array, ArrayLike

__all__ = [
    "kl",
    "kl_to_data",
    "log_pdf",
    "mle",
    "pdf",
    "pdf_grad_cov",
    "pdf_grad_mean",
]


def _mean_cov(mean, cov, mean_name: str = "mean", cov_name: str = "cov"):
    """Validated ``(mean (d,), cov (d, d), univariate)``: the univariate form (scalar mean and
    variance) becomes ``d = 1``. Values (finite, symmetric, positive definite) are checked
    when concrete."""
    mean, cov = array(mean_name, mean), array(cov_name, cov)
    if mean.ndim == 0:
        if cov.ndim != 0:
            raise ValueError(f"{cov_name} must be a scalar variance when {mean_name} is a scalar; got shape "
                             f"{cov.shape}.")
        mean, cov, univariate = mean[None], cov[None, None], True
    else:
        check_ndim(mean_name, mean, 1, "a vector of shape (d,) or a scalar")
        d = mean.shape[0]
        if cov.shape != (d, d):
            raise ValueError(f"{cov_name} must have shape ({d}, {d}) to match {mean_name} of shape ({d},); got "
                             f"{cov.shape}.")
        univariate = False
    check_finite(mean_name, mean)
    _check_cov(cov_name, cov)
    return mean, cov, univariate


def _check_cov(name, cov):
    if is_concrete(cov):
        check_finite(name, cov)
        c = np.asarray(cov, dtype=np.float64)
        if not np.allclose(c, c.T, rtol=1e-5, atol=1e-8 * max(1.0, np.abs(c).max())):
            raise ValueError(f"{name} must be symmetric.")
        smallest = np.linalg.eigvalsh(c).min()
        if smallest <= 0:
            raise ValueError(f"{name} must be positive definite; its smallest eigenvalue is {smallest:.3g}.")


def _points(x, d: int, univariate: bool, name: str = "x"):
    """Validated points: (batch, d) or (d,) (univariate: (batch,) or a scalar), finite, not empty."""
    x = array(name, x, allow_empty=True)
    if univariate:
        check_ndim(name, x, (0, 1), "a scalar or a vector of points for a univariate Gaussian")
        x = x[..., None]
    else:
        check_ndim(name, x, (1, 2), f"a point of shape ({d},) or points of shape (batch, {d})")
        if x.shape[-1] != d:
            raise ValueError(f"{name} must have last axis of size d = {d}; got shape {x.shape}.")
    if x.size == 0:
        raise ValueError(f"{name} must hold at least one point; got shape {x.shape}.")
    check_finite(name, x)
    return x


def _dtype(*arrays):
    """The common floating dtype. Python scalars count as the default float dtype (float64
    under x64), not as weakly typed values."""
    return jnp.result_type(*(a.dtype for a in arrays), jnp.float32)


def _as_multivariate(x, mean, cov):
    """Returns (x (..., d), mean (d,), cov (d, d), univariate flag) after validation, in one
    floating dtype."""
    try:
        x_shape, mean_shape, cov_shape = np.shape(x), np.shape(mean), np.shape(cov)
    except ValueError:  # ragged input: the checks below name it
        x_shape = mean_shape = cov_shape = ()
    if (len(mean_shape) == 1 and len(cov_shape) == 2 and 0 < mean_shape[0] != cov_shape[0] == cov_shape[1]
            and x_shape[-1:] == cov_shape[:1]):  # x and cov agree: the mean is the odd one out
        raise ValueError(f"mean must have shape ({cov_shape[0]},) to match cov of shape {cov_shape} and x of shape "
                         f"{x_shape}; got {mean_shape}.")
    mean, cov, univariate = _mean_cov(mean, cov)
    x = _points(x, mean.shape[0], univariate)
    dtype = _dtype(x, mean, cov)
    check_conditioning("cov", cov, dtype)
    return x.astype(dtype), mean.astype(dtype), cov.astype(dtype), univariate


def _log_pdf_core(x, mean, cov):
    L = jnp.linalg.cholesky(cov)
    d = mean.shape[0]
    diff = (x - mean).reshape(-1, d)
    z = solve_triangular(L, diff.T, lower=True)  # (d, batch)
    maha = jnp.sum(z * z, axis=0).reshape(x.shape[:-1])
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diag(L)))
    return -0.5 * (maha + log_det + d * jnp.log(2.0 * jnp.pi).astype(x.dtype))


_log_pdf = jax.jit(_log_pdf_core)


def log_pdf(x: ArrayLike, mean: ArrayLike, cov: ArrayLike) -> Array:
    r"""Log density :math:`\ln N(x \mid \mu, \Sigma)` (Eq. (2.13), (2.24)).

    .. math:: \ln N = -\tfrac12 \lVert L^{-1}(x-\mu) \rVert^2 - \sum_i \ln L_{ii}
              - \tfrac d2 \ln 2\pi, \qquad \Sigma = L L^\top

    Args:
      x: ``Float[Array, "d"]`` or ``Float[Array, "batch d"]`` points (a scalar or
        ``Float[Array, "batch"]`` in the univariate form; ``vmap`` for more batch axes).
      mean: ``Float[Array, "d"]`` (or scalar).
      cov: ``Float[Array, "d d"]`` symmetric positive definite (or a positive scalar variance).

    Inputs are validated at the entry (shapes always; finite values, symmetry, positive
    definiteness and conditioning in the working dtype when concrete, so not under a
    caller's ``jit``).

    Returns:
      ``Float[Array, ""]`` or ``Float[Array, "batch"]``.
    """
    x, mean, cov, univariate = _as_multivariate(x, mean, cov)
    return _log_pdf(x, mean, cov)


def pdf(x: ArrayLike, mean: ArrayLike, cov: ArrayLike) -> Array:
    r"""Density :math:`N(x \mid \mu, \Sigma)` (Eq. (2.13), (2.24))."""
    return jnp.exp(log_pdf(x, mean, cov))


def _precision(cov):
    L = jnp.linalg.cholesky(cov)
    eye = jnp.eye(cov.shape[0], dtype=cov.dtype)
    precision = cho_solve((L, True), eye)
    return 0.5 * (precision + precision.T)


@functools.partial(jax.jit, static_argnums=(3,))
def _pdf_grad_mean(x, mean, cov, univariate):
    density = jnp.exp(_log_pdf_core(x, mean, cov))
    grad = density[..., None] * jnp.matmul(x - mean, _precision(cov), precision=HIGHEST)
    return grad[..., 0] if univariate else grad


def pdf_grad_mean(x: ArrayLike, mean: ArrayLike, cov: ArrayLike) -> Array:
    r"""Closed-form :math:`\partial N(x\mid\mu,\Sigma) / \partial \mu`
    (``notes/gaussian-derivatives.md``).

    .. math:: \frac{\partial N}{\partial \mu} = N(x \mid \mu, \Sigma)\, \Sigma^{-1} (x - \mu)

    Returns:
      ``Float[Array, "... d"]`` (``"..."`` in the univariate form).
    """
    x, mean, cov, univariate = _as_multivariate(x, mean, cov)
    return _pdf_grad_mean(x, mean, cov, univariate)


@functools.partial(jax.jit, static_argnums=(3,))
def _pdf_grad_cov(x, mean, cov, univariate):
    precision = _precision(cov)
    density = jnp.exp(_log_pdf_core(x, mean, cov))
    u = jnp.matmul(x - mean, precision, precision=HIGHEST)  # Sigma^-1 (x - mu)
    grad = -0.5 * (precision - u[..., :, None] * u[..., None, :]) * density[..., None, None]
    return grad[..., 0, 0] if univariate else grad


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
    x, mean, cov, univariate = _as_multivariate(x, mean, cov)
    return _pdf_grad_cov(x, mean, cov, univariate)


def _check_samples(x) -> Array:
    x = array("x", x, allow_empty=True)
    check_ndim("x", x, (1, 2), "samples of shape (n,) (univariate) or (n, d)")
    if x.shape[0] < 1 or x.size == 0:
        raise ValueError(f"x must hold at least one sample; got shape {x.shape}.")
    check_finite("x", x)
    return x.astype(jnp.result_type(x, jnp.float32))


@jax.jit
def _mle(x):
    mean = jnp.mean(x, axis=0)
    centred = x - mean
    if x.ndim == 1:
        return mean, jnp.mean(centred * centred)
    cov = jnp.matmul(centred.T, centred, precision=HIGHEST) / x.shape[0]
    return mean, cov


def mle(x: ArrayLike) -> tuple[Array, Array]:
    r"""Maximum-likelihood mean and (biased) covariance (Eq. (2.15)-(2.16), (2.26)-(2.27)).

    .. math:: \mu = \frac1n \sum_i x_i, \qquad
              \Sigma = \frac1n \sum_i (x_i - \mu)(x_i - \mu)^\top

    Computed from centred data, so float32 does not cancel catastrophically.

    Args:
      x: ``Float[Array, "n d"]`` samples, or ``Float[Array, "n"]`` for the univariate case;
        finite, at least one.

    Returns:
      ``(mean (d,), cov (d, d))``, or scalars ``(mean, variance)`` for 1-D input.
    """
    return _mle(_check_samples(x))


def kl_to_data(x: ArrayLike, mean: ArrayLike, cov: ArrayLike) -> Array:
    r"""KL divergence from the empirical distribution of ``x`` to :math:`N(\mu, \Sigma)`, up to
    the data-entropy constant (Eq. (2.14), (2.25)).

    .. math:: D_{KL}(p_0 \| q_\theta) + H(p_0) = \frac{1}{2n}\sum_i (x_i-\mu)^\top
              \Sigma^{-1}(x_i-\mu) + \tfrac12 \ln\det\Sigma + \tfrac d2 \ln 2\pi

    This is the mean negative log-likelihood. The notes drop the constant
    :math:`\tfrac d2 \ln 2\pi`; it is kept here so that ``kl_to_data == -mean(log_pdf)``.
    Erratum: the first line of (2.25) should read :math:`\ln p_0 - \ln q`, not
    :math:`\ln p_0 - q`.

    Args:
      x: samples ``(n, d)``, or ``(n,)`` with a scalar mean and variance.
    """
    x = _check_samples(x)
    mean, cov, univariate = _mean_cov(mean, cov)
    if not univariate and x.ndim != 2:
        raise ValueError(f"x must be samples of shape (n, {mean.shape[0]}); got shape {x.shape}.")
    x = _points(x, mean.shape[0], univariate)
    dtype = _dtype(x, mean, cov)
    check_conditioning("cov", cov, dtype)
    return _kl_to_data(x.astype(dtype), mean.astype(dtype), cov.astype(dtype))


@jax.jit
def _kl_to_data(x, mean, cov):
    return -jnp.mean(_log_pdf_core(x, mean, cov))


@jax.jit
def _kl(mean0, cov0, mean1, cov1):
    L0, L1 = jnp.linalg.cholesky(cov0), jnp.linalg.cholesky(cov1)
    d = mean0.shape[0]
    M = solve_triangular(L1, L0, lower=True)  # L1^-1 L0, so tr(S1^-1 S0) = ||M||_F^2
    z = solve_triangular(L1, mean1 - mean0, lower=True)
    log_det = 2.0 * (jnp.sum(jnp.log(jnp.diag(L1))) - jnp.sum(jnp.log(jnp.diag(L0))))
    return 0.5 * (jnp.sum(M * M) + jnp.sum(z * z) - d + log_det)


def kl(mean0: ArrayLike, cov0: ArrayLike, mean1: ArrayLike, cov1: ArrayLike) -> Array:
    r"""Closed-form :math:`D_{KL}(N(\mu_0,\Sigma_0) \,\|\, N(\mu_1,\Sigma_1))` (Eq. (2.6)).

    .. math:: \tfrac12\Big(\mathrm{tr}(\Sigma_1^{-1}\Sigma_0) + (\mu_1-\mu_0)^\top
              \Sigma_1^{-1}(\mu_1-\mu_0) - d + \ln\frac{\det\Sigma_1}{\det\Sigma_0}\Big)
    """
    mean0, cov0, _ = _mean_cov(mean0, cov0, "mean0", "cov0")
    mean1, cov1, _ = _mean_cov(mean1, cov1, "mean1", "cov1")
    if mean0.shape != mean1.shape:
        raise ValueError(f"mean0 and mean1 must have the same shape; got {mean0.shape} and {mean1.shape}.")
    dtype = _dtype(mean0, cov0, mean1, cov1)
    check_conditioning("cov0", cov0, dtype)
    check_conditioning("cov1", cov1, dtype)
    return _kl(*(a.astype(dtype) for a in (mean0, cov0, mean1, cov1)))
