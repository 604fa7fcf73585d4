r"""Chapter 3: EM for Gaussian mixtures, with the Q function and the ELBO.

.. math:: p(x) = \sum_{k=1}^K C_k\, N(x \mid \mu_k, \Sigma_k) \qquad \text{Eq. (3.48)}

EM alternates the E-step (responsibilities, Eq. (3.51)/(3.69))

.. math:: r_{ik} = \frac{C_k N(x_i\mid\mu_k,\Sigma_k)}{\sum_l C_l N(x_i\mid\mu_l,\Sigma_l)}

and the M-step (Eq. (3.53), (3.55), (3.57)): :math:`N_k = \sum_i r_{ik}`,
:math:`\mu_k = \frac1{N_k}\sum_i r_{ik} x_i`,
:math:`\Sigma_k = \frac1{N_k}\sum_i r_{ik}(x_i-\mu_k)(x_i-\mu_k)^\top`, :math:`C_k = N_k/N`.
Seen as lower-bound maximisation (Eq. (3.58)-(3.77)), the E-step sets the variational
distribution to the posterior, closing the gap :math:`\log p(x) - \mathrm{ELBO}(r) =
\mathrm{KL}(r\,\|\,p(z\mid x))`, and the M-step maximises the Q function.

The parameterisation and conventions follow scikit-learn's ``GaussianMixture`` (covariance
shapes, ``reg_covar``, the ``10 eps`` added to :math:`N_k`, convergence on the change of the
mean log-likelihood), so that results agree to ~1e-7 in float64.

**Numerics, and the matmul form.** Data are shifted by a centre :math:`c` (the data mean in
:func:`fit`), :math:`z = x - c`. With the :math:`d(d+1)/2` quadratic features
:math:`u(z) = (z_a z_b)_{a \le b}`, both steps are single large matmuls over all components:
the Mahalanobis term is
:math:`(z-m_k)^\top P_k (z-m_k) = u(z)\cdot w(P_k) - 2 z^\top P_k m_k + m_k^\top P_k m_k`
(:math:`P_k = L_k^{-\top}L_k^{-1}` from the Cholesky factor :math:`\Sigma_k = L_k L_k^\top`,
:math:`\log\det\Sigma_k = 2\sum\log\mathrm{diag}\,L_k`), and the M-step's second moments are
:math:`r^\top u(z)`, from which :math:`\Sigma_k = \overline{zz^\top}_k - m_k m_k^\top`. Because
the data are centred, float32 rounding stays at the level of
:math:`\epsilon\,\lVert m_k\rVert^2/\lambda_{\min}(\Sigma_k)`, never that of the raw data's
offset. Erratum (3.70): the term :math:`\tfrac12\det(\Sigma^{-1})` should read
:math:`\tfrac12\ln\det(\Sigma^{-1})`.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.linalg import solve_triangular

from jaxebm._validation import ConvergenceWarning, check_finite, check_ndim, is_concrete
from jaxebm.types import Array, ArrayLike, PRNGKey

HIGHEST = lax.Precision.HIGHEST
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")

__all__ = [
    "COVARIANCE_TYPES",
    "ConvergenceWarning",
    "EStepStats",
    "FitInfo",
    "GMMParams",
    "aic",
    "bic",
    "e_step",
    "elbo",
    "em",
    "em_step",
    "fit",
    "initialize",
    "log_prob",
    "log_prob_components",
    "m_step",
    "n_parameters",
    "predict",
    "predict_proba",
    "q_function",
    "responsibilities",
    "sample",
    "validate_params",
]


@dataclasses.dataclass(frozen=True)
class GMMParams:
    """Parameters of a Gaussian mixture (shapes as scikit-learn's).

    Attributes:
      weights: ``Float[Array, "K"]`` mixing proportions :math:`C_k`, summing to 1.
      means: ``Float[Array, "K d"]``.
      covs: full ``(K, d, d)``, tied ``(d, d)``, diag ``(K, d)``, spherical ``(K,)``.
      covariance_type: static field, one of :data:`COVARIANCE_TYPES`.
    """

    weights: Array
    means: Array
    covs: Array
    covariance_type: str = "full"

    def _replace(self, **changes) -> GMMParams:
        return dataclasses.replace(self, **changes)

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def n_features(self) -> int:
        return self.means.shape[1]


jax.tree_util.register_dataclass(GMMParams, data_fields=["weights", "means", "covs"],
                                 meta_fields=["covariance_type"])


class EStepStats(NamedTuple):
    """Sufficient statistics of the E-step (weighted sums over samples, dynamax style)."""

    nk: Array  # (K,) sum_i w_i r_ik
    sum_z: Array  # (K, d) sum_i w_i r_ik z_i
    sum_zz: Array  # (K, d, d) for full / (d, d) for tied / (K, d) for diag and spherical
    total_weight: Array  # scalar sum_i w_i


class FitInfo(NamedTuple):
    """What :func:`fit` returns beside the parameters.

    Attributes:
      log_likelihood: ``(n_iter,)`` mean log-likelihood at each E-step of the best restart
        (non-decreasing).
      n_iter: EM iterations run by the best restart.
      converged: whether the change fell below ``tol``.
      lower_bound: final mean log-likelihood of the best restart (scikit-learn's ``lower_bound_``).
      restart_lower_bounds: ``(n_init,)`` final lower bound of each restart.
    """

    log_likelihood: np.ndarray
    n_iter: int
    converged: bool
    lower_bound: float
    restart_lower_bounds: np.ndarray


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


def _cov_shape(covariance_type: str, K: int, d: int) -> tuple:
    return {"full": (K, d, d), "tied": (d, d), "diag": (K, d), "spherical": (K,)}[covariance_type]


def validate_params(params: GMMParams, n_features: int | None = None, name: str = "params") -> None:
    """Raises ValueError on bad shapes (always) and on non-finite or invalid values (when
    concrete): weights must be non-negative and sum to 1; covariances positive definite."""
    if not isinstance(params, GMMParams):
        raise ValueError(f"{name} must be a GMMParams; got {type(params).__name__}.")
    if params.covariance_type not in COVARIANCE_TYPES:
        raise ValueError(f"{name}.covariance_type must be one of {COVARIANCE_TYPES}; got {params.covariance_type!r}.")
    check_ndim(f"{name}.means", params.means, 2, "an array of shape (n_components, n_features)")
    K, d = np.shape(params.means)
    if n_features is not None and d != n_features:
        raise ValueError(f"{name}.means must have {n_features} features (columns); got shape {np.shape(params.means)}.")
    if np.shape(params.weights) != (K,):
        raise ValueError(f"{name}.weights must have shape ({K},); got {np.shape(params.weights)}.")
    want = _cov_shape(params.covariance_type, K, d)
    if np.shape(params.covs) != want:
        raise ValueError(f"{name}.covs must have shape {want} for covariance_type="
                         f"{params.covariance_type!r}; got {np.shape(params.covs)}.")
    for field in ("weights", "means", "covs"):
        check_finite(f"{name}.{field}", getattr(params, field))
    if is_concrete(params.weights) and is_concrete(params.covs):
        w = np.asarray(params.weights, np.float64)
        if np.any(w < 0) or abs(w.sum() - 1) > 1e-4:
            raise ValueError(f"{name}.weights must be non-negative and sum to 1; got sum {w.sum():.6g}.")
        c = np.asarray(params.covs, np.float64)
        if params.covariance_type in ("full", "tied"):
            mats = c.reshape((-1, d, d))
            if not np.allclose(mats, np.swapaxes(mats, -1, -2), rtol=1e-5, atol=1e-8):
                raise ValueError(f"{name}.covs must be symmetric.")
            smallest = np.linalg.eigvalsh(mats).min()
        else:
            smallest = c.min()
        if smallest <= 0:
            raise ValueError(f"{name}.covs must be positive definite; smallest eigenvalue {smallest:.3g}.")


def _validate_data(x, n_components: int | None = None) -> Array:
    check_ndim("x", x, 2, "a data matrix of shape (n_samples, n_features)")
    n = np.shape(x)[0]
    if n < 1:
        raise ValueError("x must hold at least one sample.")
    if n_components is not None and n < n_components:
        raise ValueError(f"n_samples = {n} must be at least n_components = {n_components}.")
    check_finite("x", x)
    x = jnp.asarray(x)
    return x.astype(jnp.result_type(x, jnp.float32))


# --------------------------------------------------------------------------------------
# Quadratic features and Cholesky pieces
# --------------------------------------------------------------------------------------


def _triu(d: int):
    return np.triu_indices(d)


def _quadratic_features(z: Array) -> Array:
    """u(z) = (z_a z_b)_{a <= b}: ``(n, d(d+1)/2)``."""
    iu = _triu(z.shape[-1])
    return z[..., iu[0]] * z[..., iu[1]]


def _unpack_symmetric(u: Array, d: int) -> Array:
    """Inverse of the upper-triangle packing for a batch ``(..., d(d+1)/2) -> (..., d, d)``."""
    iu = _triu(d)
    upper = jnp.zeros(u.shape[:-1] + (d, d), u.dtype).at[..., iu[0], iu[1]].set(u)
    return upper + jnp.swapaxes(upper, -1, -2) - upper * jnp.eye(d, dtype=u.dtype)


def _precision_pieces(params: GMMParams):
    """Per-component precision and log-determinant from the Cholesky factor.

    Returns (precision, log_det_cov) with precision ``(K, d, d)`` (full/tied, tied broadcast)
    or ``(K, d)`` (diag/spherical, diagonal), and ``log_det_cov`` ``(K,)``.
    """
    K, d = params.means.shape
    ct = params.covariance_type
    if ct in ("full", "tied"):
        covs = params.covs if ct == "full" else params.covs[None]
        L = jnp.linalg.cholesky(covs)
        eye = jnp.broadcast_to(jnp.eye(d, dtype=covs.dtype), covs.shape)
        L_inv = solve_triangular(L, eye, lower=True)  # L^{-1}
        precision = jnp.einsum("kab,kac->kbc", L_inv, L_inv, precision=HIGHEST)  # L^-T L^-1
        log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)), axis=-1)
        return jnp.broadcast_to(precision, (K, d, d)), jnp.broadcast_to(log_det, (K,))
    var = params.covs if ct == "diag" else jnp.broadcast_to(params.covs[:, None], (K, d))
    return 1.0 / var, jnp.sum(jnp.log(var), axis=-1)


def _log_gauss(params: GMMParams, z: Array, u: Array | None, centre: Array) -> Array:
    """``(n, K)`` log N(x_i | mu_k, Sigma_k) from centred data z = x - centre (matmul form)."""
    K, d = params.means.shape
    m = params.means - centre  # (K, d)
    precision, log_det = _precision_pieces(params)
    if params.covariance_type in ("full", "tied"):
        iu = _triu(d)
        off = (iu[0] != iu[1]).astype(z.dtype)
        w = precision[:, iu[0], iu[1]] * (1.0 + off)  # (K, p): quadratic-form weights
        Pm = jnp.einsum("kab,kb->ka", precision, m, precision=HIGHEST)  # (K, d)
        quad = jnp.dot(u, w.T, precision=HIGHEST)
    else:
        Pm = precision * m
        quad = jnp.dot(z * z, precision.T, precision=HIGHEST)
    maha = quad - 2.0 * jnp.dot(z, Pm.T, precision=HIGHEST) + jnp.sum(m * Pm, axis=-1)
    return -0.5 * (d * math.log(2 * math.pi) + log_det + maha)


def _prepare(params: GMMParams, x: Array, centre: Array | None = None):
    x = jnp.asarray(x)
    if centre is None:
        centre = jnp.mean(x, axis=0)
    z = x - centre
    u = _quadratic_features(z) if params.covariance_type in ("full", "tied") else None
    return z, u, centre


# --------------------------------------------------------------------------------------
# Densities, E-step, M-step
# --------------------------------------------------------------------------------------


def log_prob_components(params: GMMParams, x: ArrayLike) -> Array:
    r"""``(n, K)`` array of :math:`\ln C_k + \ln N(x_i\mid\mu_k,\Sigma_k)` (Eq. (3.48))."""
    x = jnp.asarray(x)
    validate_params(params, x.shape[-1])
    z, u, centre = _prepare(params, x)
    return _log_gauss(params, z, u, centre) + jnp.log(params.weights)


def log_prob(params: GMMParams, x: ArrayLike) -> Array:
    r"""Log density :math:`\ln p(x_i) = \ln\sum_k C_k N(x_i\mid\mu_k,\Sigma_k)` for each row of
    ``x`` ``(n, d)``; returns ``(n,)`` (Eq. (3.48))."""
    return jax.nn.logsumexp(log_prob_components(params, x), axis=-1)


def responsibilities(params: GMMParams, x: ArrayLike) -> Array:
    r"""The posterior :math:`r_{ik} = p(z_i = k \mid x_i)` (Eq. (3.51), (3.65), (3.69)); ``(n, K)``."""
    return jax.nn.softmax(log_prob_components(params, x), axis=-1)


def _e_step(params, z, u, centre, sample_weight):
    weighted = _log_gauss(params, z, u, centre) + jnp.log(params.weights)
    log_norm = jax.nn.logsumexp(weighted, axis=-1)
    resp = jnp.exp(weighted - log_norm[:, None])
    w = jnp.ones_like(log_norm) if sample_weight is None else sample_weight
    loglik = jnp.sum(w * log_norm) / jnp.sum(w)
    return _stats(resp, z, u, w, params.covariance_type), loglik


def _stats(resp, z, u, w, covariance_type) -> EStepStats:
    """Weighted sufficient statistics of responsibilities ``resp`` for centred data ``z``
    (``u`` its quadratic features, used by full and tied covariances)."""
    rw = resp * w[:, None]
    if covariance_type == "full":
        sum_zz = _unpack_symmetric(jnp.dot(rw.T, u, precision=HIGHEST), z.shape[1])
    elif covariance_type == "tied":
        sum_zz = _unpack_symmetric(jnp.dot(w, u, precision=HIGHEST), z.shape[1])
    else:
        sum_zz = jnp.dot(rw.T, z * z, precision=HIGHEST)
    return EStepStats(jnp.sum(rw, axis=0), jnp.dot(rw.T, z, precision=HIGHEST), sum_zz, jnp.sum(w))


def _m_step(stats: EStepStats, covariance_type: str, reg_covar: float, centre: Array) -> GMMParams:
    dtype = stats.sum_z.dtype
    nk = stats.nk + 10 * jnp.finfo(dtype).eps  # as scikit-learn, so empty components stay finite
    m = stats.sum_z / nk[:, None]
    d = m.shape[1]
    if covariance_type == "full":
        covs = stats.sum_zz / nk[:, None, None] - m[:, :, None] * m[:, None, :]
        covs = covs + reg_covar * jnp.eye(d, dtype=dtype)
    elif covariance_type == "tied":
        between = jnp.einsum("k,ka,kb->ab", nk, m, m, precision=HIGHEST)
        covs = (stats.sum_zz - between) / jnp.sum(nk) + reg_covar * jnp.eye(d, dtype=dtype)
    else:
        var = stats.sum_zz / nk[:, None] - m * m + reg_covar
        covs = var if covariance_type == "diag" else jnp.mean(var, axis=1)
    return GMMParams(nk / jnp.sum(nk), m + centre, covs, covariance_type)


def e_step(params: GMMParams, x: ArrayLike, sample_weight: ArrayLike | None = None) -> tuple[EStepStats, Array]:
    r"""E-step: responsibilities (Eq. (3.51)) reduced to sufficient statistics, and the mean
    log-likelihood :math:`\frac1N\sum_i w_i \ln p(x_i)` of ``params``.

    The statistics are centred at the data mean (``sum_z`` and ``sum_zz`` are of
    :math:`z = x - \bar x`); :func:`m_step` takes the same ``x`` to undo the shift.
    """
    x = jnp.asarray(x)
    validate_params(params, x.shape[-1])
    z, u, centre = _prepare(params, x)
    return _e_step(params, z, u, centre, sample_weight)


def m_step(stats: EStepStats, x: ArrayLike, covariance_type: str = "full", reg_covar: float = 1e-6) -> GMMParams:
    r"""M-step (Eq. (3.53), (3.55), (3.57)) from :func:`e_step` statistics of the same ``x``:

    .. math:: C_k = \frac{N_k}{N},\quad \mu_k = \frac{1}{N_k}\sum_i r_{ik}x_i,\quad
              \Sigma_k = \frac1{N_k}\sum_i r_{ik}(x_i-\mu_k)(x_i-\mu_k)^\top + \text{reg\_covar}\, I

    (diag: the diagonal; spherical: its mean; tied: one pooled covariance).
    """
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(f"covariance_type must be one of {COVARIANCE_TYPES}; got {covariance_type!r}.")
    return _m_step(stats, covariance_type, reg_covar, jnp.mean(jnp.asarray(x), axis=0))


def em_step(params: GMMParams, x: ArrayLike, reg_covar: float = 1e-6,
            sample_weight: ArrayLike | None = None) -> tuple[GMMParams, Array]:
    """One EM iteration. Returns ``(new_params, loglik)`` with ``loglik`` the mean
    log-likelihood of the *input* ``params`` (scikit-learn's lower bound)."""
    x = jnp.asarray(x)
    validate_params(params, x.shape[-1])
    z, u, centre = _prepare(params, x)
    stats, loglik = _e_step(params, z, u, centre, sample_weight)
    return _m_step(stats, params.covariance_type, reg_covar, centre), loglik


def em(params: GMMParams, x: Array, *, max_iter: int = 100, tol: float = 1e-3, reg_covar: float = 1e-6,
       sample_weight: Array | None = None):
    """EM to convergence as one ``lax.while_loop``: jittable and vmappable over restarts,
    seeds or datasets of equal shape.

    Stops when ``|loglik_t - loglik_{t-1}| < tol`` (scikit-learn's rule; ``tol=0`` runs all
    ``max_iter`` iterations).

    Returns:
      ``(params, history, n_iter, converged)`` with ``history`` ``(max_iter,)`` holding the
      mean log-likelihood at each E-step (NaN after ``n_iter``).
    """
    z, u, centre = _prepare(params, x)
    dtype = z.dtype
    history = jnp.full((max_iter,), jnp.nan, dtype)

    def cond(carry):
        _, _, it, prev, cur, _ = carry
        return (it < max_iter) & ~(jnp.abs(cur - prev) < tol)

    def body(carry):
        params, history, it, _, cur, _ = carry
        stats, loglik = _e_step(params, z, u, centre, sample_weight)
        new = _m_step(stats, params.covariance_type, reg_covar, centre)
        return new, history.at[it].set(loglik), it + 1, cur, loglik, jnp.bool_(False)

    inf = jnp.array(jnp.inf, dtype)
    init = (params, history, jnp.int32(0), -inf, -inf, jnp.bool_(False))
    # prev = cur = -inf at the start: |cur - prev| is NaN, so the first iteration runs.
    params, history, n_iter, prev, cur, _ = lax.while_loop(cond, body, init)
    converged = jnp.abs(cur - prev) < tol
    return params, history, n_iter, converged


# --------------------------------------------------------------------------------------
# Q function and ELBO (Eq. (3.58)-(3.77))
# --------------------------------------------------------------------------------------


def q_function(params: GMMParams, params_old: GMMParams, x: ArrayLike) -> Array:
    r"""The Q function (Eq. (3.68), (3.70)-(3.77)), per sample:

    .. math:: Q(\theta, \theta_{old}) = \frac1N \sum_i \sum_k r^{old}_{ik}
              \big(\ln C_k + \ln N(x_i \mid \mu_k, \Sigma_k)\big),\qquad
              r^{old} = p(z \mid x, \theta_{old})

    The M-step maximises it over :math:`\theta`. Erratum (3.70): the printed
    :math:`\tfrac12\det(\Sigma^{-1})` should read :math:`\tfrac12\ln\det(\Sigma^{-1})`.
    """
    resp = responsibilities(params_old, x)
    return jnp.mean(jnp.sum(resp * log_prob_components(params, x), axis=-1))


def elbo(params: GMMParams, resp: ArrayLike, x: ArrayLike) -> Array:
    r"""The evidence lower bound for a variational distribution ``resp`` ``(n, K)``
    (Eq. (3.63)-(3.64)), per sample:

    .. math:: \mathcal{L}(r, \theta) = \frac1N\sum_i \sum_k r_{ik}
              \ln\frac{C_k N(x_i\mid\mu_k,\Sigma_k)}{r_{ik}}
              = \frac1N\sum_i \ln p(x_i) - \frac1N\sum_i \mathrm{KL}(r_i \,\|\, p(z\mid x_i))

    so the gap to the log-likelihood is the KL divergence, zero exactly at the posterior
    (Eq. (3.65)-(3.66)).
    """
    resp = jnp.asarray(resp)
    joint = log_prob_components(params, x)
    if resp.shape != joint.shape:
        raise ValueError(f"resp must have shape {joint.shape}; got {resp.shape}.")
    safe = jnp.where(resp > 0, resp, 1.0)
    return jnp.mean(jnp.sum(jnp.where(resp > 0, resp * (joint - jnp.log(safe)), 0.0), axis=-1))


# --------------------------------------------------------------------------------------
# Prediction, sampling, model selection
# --------------------------------------------------------------------------------------


def predict_proba(params: GMMParams, x: ArrayLike) -> Array:
    """Posterior component probabilities, ``(n, K)`` (as scikit-learn's ``predict_proba``)."""
    return responsibilities(params, x)


def predict(params: GMMParams, x: ArrayLike) -> Array:
    """Most probable component of each sample, ``(n,)``."""
    return jnp.argmax(log_prob_components(params, x), axis=-1)


def _cholesky_full(params: GMMParams) -> Array:
    K, d = params.means.shape
    ct = params.covariance_type
    if ct == "full":
        return jnp.linalg.cholesky(params.covs)
    if ct == "tied":
        return jnp.broadcast_to(jnp.linalg.cholesky(params.covs), (K, d, d))
    var = params.covs if ct == "diag" else jnp.broadcast_to(params.covs[:, None], (K, d))
    return jax.vmap(jnp.diag)(jnp.sqrt(var))


def sample(key: PRNGKey, params: GMMParams, n: int) -> tuple[Array, Array]:
    r"""Draws ``n`` samples: :math:`k \sim C`, :math:`x = \mu_k + L_k \epsilon`.

    Returns:
      ``(x (n, d), components (n,))``.
    """
    validate_params(params)
    if int(n) < 1:
        raise ValueError(f"n must be a positive integer; got {n}.")
    key_k, key_x = jax.random.split(key)
    comps = jax.random.categorical(key_k, jnp.log(params.weights), shape=(int(n),))
    eps = jax.random.normal(key_x, (int(n), params.means.shape[1]), params.means.dtype)
    L = _cholesky_full(params)
    x = params.means[comps] + jnp.einsum("nab,nb->na", L[comps], eps, precision=HIGHEST)
    return x, comps


def n_parameters(params: GMMParams) -> int:
    """Number of free parameters (as scikit-learn's ``_n_parameters``)."""
    K, d = params.means.shape
    cov = {"full": K * d * (d + 1) // 2, "tied": d * (d + 1) // 2, "diag": K * d, "spherical": K}
    return cov[params.covariance_type] + K * d + K - 1


def bic(params: GMMParams, x: ArrayLike) -> Array:
    r"""Bayesian information criterion :math:`-2\sum_i \ln p(x_i) + p \ln N` (lower is better)."""
    x = jnp.asarray(x)
    n = x.shape[0]
    return -2.0 * jnp.sum(log_prob(params, x)) + n_parameters(params) * math.log(n)


def aic(params: GMMParams, x: ArrayLike) -> Array:
    r"""Akaike information criterion :math:`-2\sum_i \ln p(x_i) + 2p` (lower is better)."""
    return -2.0 * jnp.sum(log_prob(params, x)) + 2 * n_parameters(params)


# --------------------------------------------------------------------------------------
# Initialisation and the fit driver
# --------------------------------------------------------------------------------------


def _kmeans_plus_plus(key, x, n_components, sample_weight):
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007, with 2 + ln K local trials as
    scikit-learn). Returns the indices of the chosen centres ``(K,)``."""
    n = x.shape[0]
    trials = 2 + int(math.log(n_components))
    w = jnp.ones((n,), x.dtype) if sample_weight is None else sample_weight
    sq = jnp.sum(x * x, axis=1)

    def dist2(c):  # squared distances of all points to centre c
        return jnp.maximum(sq - 2.0 * jnp.dot(x, c, precision=HIGHEST) + jnp.dot(c, c), 0.0)

    key0, key = jax.random.split(key)
    first = jax.random.categorical(key0, jnp.log(w)).astype(jnp.int32)
    closest = dist2(x[first])
    idx = jnp.zeros((n_components,), jnp.int32).at[0].set(first)

    def body(j, carry):
        idx, closest, key = carry
        key, sub = jax.random.split(key)
        pot = closest * w
        candidates = jax.random.categorical(sub, jnp.log(jnp.maximum(pot, 1e-30)), shape=(trials,)).astype(jnp.int32)
        cand_d = jax.vmap(lambda c: jnp.minimum(closest, dist2(x[c])))(candidates)  # (trials, n)
        best = jnp.argmin(jnp.sum(cand_d * w, axis=1))
        return idx.at[j].set(candidates[best]), cand_d[best], key

    idx, _, _ = lax.fori_loop(1, n_components, body, (idx, closest, key))
    return idx


def initialize(key: PRNGKey, x: Array, n_components: int, covariance_type: str = "full", init: str = "kmeans++",
               reg_covar: float = 1e-6, sample_weight: Array | None = None) -> GMMParams:
    """Initial parameters as scikit-learn builds them: initial responsibilities from
    ``init``, then one M-step.

    * ``"kmeans++"``: hard assignment to k-means++ seeds (JAX-native);
    * ``"random"``: uniform random responsibilities, normalised;
    * ``"random_from_data"``: K distinct data points, each the only member of its component.
    """
    n = x.shape[0]
    if init == "kmeans++":
        centres = x[_kmeans_plus_plus(key, x, n_components, sample_weight)]
        d2 = (jnp.sum(x * x, 1)[:, None] - 2 * jnp.dot(x, centres.T, precision=HIGHEST)
              + jnp.sum(centres * centres, 1)[None, :])
        resp = jax.nn.one_hot(jnp.argmin(d2, axis=1), n_components, dtype=x.dtype)
    elif init == "random":
        resp = jax.random.uniform(key, (n, n_components), x.dtype)
        resp = resp / jnp.sum(resp, axis=1, keepdims=True)
    elif init == "random_from_data":
        chosen = jax.random.choice(key, n, (n_components,), replace=False)
        resp = jnp.zeros((n, n_components), x.dtype).at[chosen, jnp.arange(n_components)].set(1.0)
    else:
        raise ValueError(f"init must be 'kmeans++', 'random', 'random_from_data' or a GMMParams; got {init!r}.")
    centre = jnp.mean(x, axis=0)
    z = x - centre
    u = _quadratic_features(z) if covariance_type in ("full", "tied") else None
    w = jnp.ones((n,), x.dtype) if sample_weight is None else sample_weight
    return _m_step(_stats(resp, z, u, w, covariance_type), covariance_type, reg_covar, centre)


def fit(key: PRNGKey, x: ArrayLike, n_components: int, *, covariance_type: str = "full",
        init: str | GMMParams = "kmeans++", n_init: int = 1, max_iter: int = 100, tol: float = 1e-3,
        reg_covar: float = 1e-6, sample_weight: ArrayLike | None = None) -> tuple[GMMParams, FitInfo]:
    r"""Fits a Gaussian mixture by EM (Eq. (3.51)-(3.57), algorithm A-D of ch. 3.1).

    The thin, non-jitted driver: validates inputs, initialises ``n_init`` restarts (a
    ``vmap`` over keys), runs :func:`em` on all of them in one compiled call, keeps the
    restart with the best final lower bound, and warns when it did not converge.

    Args:
      key: PRNG key for initialisation.
      x: ``(n_samples, n_features)`` data, finite.
      n_components: K, at most ``n_samples``.
      covariance_type: ``"full"``, ``"tied"``, ``"diag"`` or ``"spherical"``.
      init: ``"kmeans++"``, ``"random"``, ``"random_from_data"``, or a ``GMMParams`` to start
        from (warm start; ``n_init`` must then be 1).
      n_init: number of restarts.
      max_iter: maximum EM iterations (>= 1).
      tol: stop when the change in mean log-likelihood is below ``tol`` (>= 0; 0 runs all
        ``max_iter`` iterations), as scikit-learn.
      reg_covar: added to the covariance diagonals (>= 0).
      sample_weight: optional non-negative ``(n_samples,)`` weights.

    Returns:
      ``(params, FitInfo)``.

    Raises:
      ValueError: on bad input, or when a component collapses (non-finite parameters),
        naming ``reg_covar``.
    """
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(f"covariance_type must be one of {COVARIANCE_TYPES}; got {covariance_type!r}.")
    if not isinstance(n_components, (int, np.integer)) or n_components < 1:
        raise ValueError(f"n_components must be a positive integer; got {n_components!r}.")
    x = _validate_data(x, int(n_components))
    n, d = x.shape
    if not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer; got {max_iter!r}.")
    if not (isinstance(tol, (int, float, np.floating)) and tol >= 0 and math.isfinite(tol)):
        raise ValueError(f"tol must be a finite number >= 0; got {tol!r}.")
    if not (isinstance(reg_covar, (int, float, np.floating)) and reg_covar >= 0 and math.isfinite(reg_covar)):
        raise ValueError(f"reg_covar must be a finite number >= 0; got {reg_covar!r}.")
    if not isinstance(n_init, (int, np.integer)) or n_init < 1:
        raise ValueError(f"n_init must be a positive integer; got {n_init!r}.")
    if sample_weight is not None:
        check_ndim("sample_weight", sample_weight, 1, f"a vector of shape ({n},)")
        if np.shape(sample_weight)[0] != n:
            raise ValueError(f"sample_weight must have shape ({n},); got {np.shape(sample_weight)}.")
        check_finite("sample_weight", sample_weight)
        sw = np.asarray(sample_weight)
        if np.any(sw < 0) or sw.sum() <= 0:
            raise ValueError("sample_weight must be non-negative with a positive sum.")
        sample_weight = jnp.asarray(sample_weight, x.dtype)

    if isinstance(init, GMMParams):
        if n_init != 1:
            raise ValueError("n_init must be 1 when init is a GMMParams (warm start).")
        if init.covariance_type != covariance_type:
            raise ValueError(f"init.covariance_type is {init.covariance_type!r} but covariance_type is "
                             f"{covariance_type!r}.")
        if init.means.shape[0] != n_components:
            raise ValueError(f"init must have {n_components} components; got {init.means.shape[0]}.")
        validate_params(init, d, name="init")
        starts = jax.tree_util.tree_map(lambda a: jnp.asarray(a, x.dtype)[None], init)
    else:
        if init not in ("kmeans++", "random", "random_from_data"):
            raise ValueError(f"init must be 'kmeans++', 'random', 'random_from_data' or a GMMParams; got {init!r}.")
        keys = jax.random.split(key, n_init)
        starts = _jit_initialize(keys, x, int(n_components), covariance_type, init, float(reg_covar),
                                 sample_weight)

    params, history, n_iter, converged = _jit_em(starts, x, int(max_iter), float(tol), float(reg_covar),
                                                 sample_weight)
    history = np.asarray(history)
    n_iter = np.asarray(n_iter)
    finals = np.array([history[r, n_iter[r] - 1] for r in range(history.shape[0])])
    leaves_ok = np.all([np.all(np.isfinite(np.asarray(leaf)), axis=tuple(range(1, np.ndim(leaf))))
                        for leaf in jax.tree_util.tree_leaves(params)], axis=0)
    if not np.any(leaves_ok & np.isfinite(finals)):
        raise ValueError(
            "EM produced non-finite parameters: a component collapsed onto too few points (singular "
            f"covariance). Increase reg_covar (now {reg_covar:g}), or use fewer components.")
    if reg_covar == 0:
        collapsed = _numerically_singular(params, x)
        if np.all(collapsed | ~leaves_ok):
            raise ValueError(
                "EM collapsed a component onto too few points: its covariance is singular to working "
                f"precision ({x.dtype}). Use reg_covar > 0 (scikit-learn's default is 1e-6), or fewer components.")
        leaves_ok = leaves_ok & ~collapsed
    finals = np.where(leaves_ok & np.isfinite(finals), finals, -np.inf)
    best = int(np.argmax(finals))
    best_params = jax.tree_util.tree_map(lambda a: a[best], params)
    info = FitInfo(log_likelihood=history[best, : n_iter[best]], n_iter=int(n_iter[best]),
                   converged=bool(np.asarray(converged)[best]), lower_bound=float(finals[best]),
                   restart_lower_bounds=finals)
    if not info.converged:
        warnings.warn(f"EM did not converge in max_iter={max_iter} iterations (tol={tol:g}); the last change in "
                      "mean log-likelihood was "
                      f"{float(np.diff(info.log_likelihood[-2:])[0]) if info.n_iter > 1 else float('nan'):.3g}. "
                      "Increase max_iter or tol, or check the data.", ConvergenceWarning, stacklevel=2)
    return best_params, info


def _numerically_singular(params: GMMParams, x: Array) -> np.ndarray:
    """Per restart: does some component's covariance have its smallest eigenvalue at the
    rounding level of the quantities it is computed from (``eps * (|mu_k - c|^2 + s)``, with
    ``s`` the mean data variance)?"""
    xs = np.asarray(x, np.float64)
    centre, scale = xs.mean(0), xs.var(0).mean()
    eps = float(jnp.finfo(x.dtype).eps)
    means = np.asarray(params.means, np.float64)  # (R, K, d)
    covs = np.asarray(params.covs, np.float64)
    R, K, d = means.shape
    if params.covariance_type in ("full", "tied"):
        mats = covs if params.covariance_type == "full" else np.broadcast_to(covs[:, None], (R, K, d, d))
        smallest = np.linalg.eigvalsh(np.nan_to_num(mats)).min(axis=-1)
    elif params.covariance_type == "diag":
        smallest = covs.min(axis=-1)
    else:
        smallest = covs
    level = 10 * eps * (np.sum((means - centre) ** 2, axis=-1) + scale)
    return np.any(smallest <= level, axis=-1)


def _initialize_many(keys, x, n_components, covariance_type, init, reg_covar, sample_weight):
    return jax.vmap(lambda k: initialize(k, x, n_components, covariance_type, init, reg_covar, sample_weight))(keys)


_jit_initialize = jax.jit(_initialize_many, static_argnums=(2, 3, 4))


def _em_many(starts, x, max_iter, tol, reg_covar, sample_weight):
    return jax.vmap(lambda p: em(p, x, max_iter=max_iter, tol=tol, reg_covar=reg_covar,
                                 sample_weight=sample_weight))(starts)


_jit_em = jax.jit(_em_many, static_argnums=(2,))
