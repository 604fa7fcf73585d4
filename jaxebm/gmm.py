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
shapes, ``reg_covar``, convergence on the change of the mean log-likelihood), so that results
agree to ~1e-7 in float64. One deliberate difference: :math:`N_k` is not padded by
scikit-learn's ``10 eps`` (with ``sample_weight`` that bias grew as the weights' overall scale
shrank; the result must not depend on it); an empty component keeps weight 0.

**Numerics, and the matmul form.** Data are shifted by a centre :math:`c` (the data mean in
:func:`fit`; in :func:`e_step` the mixture mean :math:`\sum_k C_k\mu_k`, which depends on the
parameters only, so that the statistics of minibatches add up: see :class:`EStepStats`),
:math:`z = x - c`. With the :math:`d(d+1)/2` quadratic features
:math:`u(z) = (z_a z_b)_{a \le b}`, both steps are single large matmuls over all components:
the Mahalanobis term is
:math:`(z-m_k)^\top P_k (z-m_k) = u(z)\cdot w(P_k) - 2 z^\top P_k m_k + m_k^\top P_k m_k`
(:math:`P_k = L_k^{-\top}L_k^{-1}` from the Cholesky factor :math:`\Sigma_k = L_k L_k^\top`,
:math:`\log\det\Sigma_k = 2\sum\log\mathrm{diag}\,L_k`), and the M-step's second moments are
:math:`r^\top u(z)`, from which :math:`\Sigma_k = \overline{zz^\top}_k - m_k m_k^\top`. Because
the data are centred, float32 rounding stays at the level of
:math:`\epsilon\,\lVert m_k\rVert^2/\lambda_{\min}(\Sigma_k)`, never that of the raw data's
offset. Where that bound exceeds :math:`10^{-3}` (a component mean more than
:math:`\sqrt{10^{-3}/\epsilon}` of its narrowest standard deviations from :math:`c`: 92 in
float32, as with tight, well-separated clusters or a singleton component), :func:`em_step`,
:func:`em`, :func:`initialize` and :func:`fit` run EM in scikit-learn's two-pass form instead
(the means first, then each covariance and density from its own differences
:math:`x_i - \mu_k`: K small matmuls, a second compiled program), and :func:`e_step` and
:func:`m_step`, whose additive statistics need the one centre, refuse. :func:`log_prob` and
the other densities always use the two-pass form, exact however far apart the components lie.
Erratum (3.70): the term :math:`\tfrac12\det(\Sigma^{-1})` should read
:math:`\tfrac12\ln\det(\Sigma^{-1})`.

**Validation and compilation** (issue #12). Every public function checks its inputs and raises
a ``ValueError`` naming the argument: ``params`` (a :class:`GMMParams` of consistent shapes,
finite, weights a distribution, covariances symmetric positive definite and, for full and
tied covariances, conditioned well enough for the working dtype: the condition number
:math:`\kappa` of each correlation matrix must have :math:`\kappa\,\epsilon \le 10^{-3}`,
beyond which log-densities would err by up to :math:`\kappa\,\epsilon`), ``x`` (a finite
``(n_samples, n_features)`` matrix whose squares fit the dtype: rescale it or use float64
otherwise; where parameters are estimated, at least ``n_components`` distinct samples),
counts (positive integers, never truncated), ``tol`` and ``reg_covar`` (finite, >= 0) and
``sample_weight`` (finite, >= 0, positive sum; where parameters are estimated, at least
``n_components`` positive entries), ``stats`` (an :class:`EStepStats` of consistent shapes).
Value checks need concrete arrays: under a caller's ``jit`` only shapes are checked (and
:func:`em` keeps the one-matmul form), so call :func:`validate_params` eagerly first. The
work runs in module-level jitted functions keyed on shapes, dtypes and the covariance type,
so a second eager call with new values of the same shapes compiles nothing.
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
from jax.scipy.special import entr

from jaxebm._numerics import HIGHEST
from jaxebm._validation import (
    CONDITION_TOLERANCE,
    ConvergenceWarning,
    array,
    check_conditioning,
    check_finite,
    check_ndim,
    check_shape,
    choice,
    count,
    distribution,
    finite_scalar,
    is_concrete,
    prng_key,
    regulariser,
)
from jaxebm.types import Array, ArrayLike, PRNGKey

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
    r"""Sufficient statistics of the E-step: weighted sums over samples (dynamax style),
    additive over minibatches.

    The sums are of the data shifted by a centre :math:`c`, :math:`z_i = x_i - c` (for
    float32 accuracy far from the origin); :func:`e_step` takes :math:`c = \sum_k C_k \mu_k`,
    the mean of the mixture, which depends on the parameters only. The centre is stored as
    ``weighted_centre`` :math:`= c \sum_i w_i`, so every field is a sum over samples: the
    statistics of minibatches computed with the *same* parameters add up field by field
    (``jax.tree.map(jnp.add, a, b)``) to those of the whole data, and :func:`m_step` recovers
    :math:`c` as ``weighted_centre / total_weight``. Statistics computed with different
    parameters have different centres and must not be summed.

    Attributes:
      nk: ``(K,)`` :math:`\sum_i w_i r_{ik}`.
      sum_z: ``(K, d)`` :math:`\sum_i w_i r_{ik} z_i`.
      sum_zz: :math:`\sum_i w_i r_{ik} z_i z_i^\top`, ``(K, d, d)`` for full; tied
        ``(d, d)`` :math:`\sum_i w_i z_i z_i^\top`; diag and spherical ``(K, d)``, the diagonal
        :math:`\sum_i w_i r_{ik} z_i^2`.
      total_weight: scalar :math:`\sum_i w_i` (the number of samples when unweighted).
      weighted_centre: ``(d,)`` :math:`c \sum_i w_i`.
    """

    nk: Array
    sum_z: Array
    sum_zz: Array
    total_weight: Array
    weighted_centre: Array


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


def _params(params, n_features: int | None = None, name: str = "params",
            n_components: int | None = None, data_features: int | None = None) -> GMMParams:
    """Validated parameters with array leaves (lists and NumPy converted): shapes always;
    finite values, weights a distribution and positive-definite covariances when concrete.

    ``n_features`` is enforced on ``means``; ``data_features`` (the data's column count, not
    enforced) only decides which leaf to blame when ``means`` and ``covs`` disagree."""
    if not isinstance(params, GMMParams):
        raise ValueError(f"{name} must be a GMMParams(weights, means, covs, covariance_type); got "
                         f"{type(params).__name__}.")
    ct = choice(f"{name}.covariance_type", params.covariance_type, COVARIANCE_TYPES)
    means = array(f"{name}.means", params.means)
    check_ndim(f"{name}.means", means, 2, "an array of shape (n_components, n_features)")
    K, d = means.shape
    if n_features is not None and d != n_features:
        raise ValueError(f"{name}.means must have {n_features} features (columns) to match the data; got shape "
                         f"{means.shape}.")
    if n_components is not None and K != n_components:
        raise ValueError(f"{name} must have {n_components} components; got {K}.")
    weights = array(f"{name}.weights", params.weights)
    if weights.shape != (K,):
        raise ValueError(f"{name}.weights must have shape ({K},); got {weights.shape}.")
    covs = array(f"{name}.covs", params.covs)
    want = _cov_shape(ct, K, d)
    if covs.shape != want:
        if data_features not in (None, d) and covs.shape == _cov_shape(ct, K, data_features):
            raise ValueError(f"{name}.means must have {data_features} features (columns) to match the data and "
                             f"{name}.covs (shape {covs.shape}); got shape {means.shape}.")
        raise ValueError(f"{name}.covs must have shape {want} for covariance_type={ct!r} (from {name}.means, shape "
                         f"{means.shape}); got {covs.shape}.")
    check_finite(f"{name}.means", means)
    check_finite(f"{name}.covs", covs)
    weights = distribution(f"{name}.weights", weights)
    if is_concrete(covs):
        _check_positive_definite(f"{name}.covs", np.asarray(covs), ct, d)
    return GMMParams(weights, means, covs, ct)


def _check_positive_definite(name: str, covs: np.ndarray, covariance_type: str, d: int) -> None:
    c = covs.astype(np.float64)
    if covariance_type in ("full", "tied"):
        mats = c.reshape((-1, d, d))
        if not np.allclose(mats, np.swapaxes(mats, -1, -2), rtol=1e-5, atol=1e-8):
            raise ValueError(f"{name} must be symmetric; max |S - S^T| = "
                             f"{np.max(np.abs(mats - np.swapaxes(mats, -1, -2))):.3g}.")
        eig = np.linalg.eigvalsh(mats)
        smallest = eig[:, 0]
    else:
        smallest = c.reshape(-1)
    k = int(np.argmin(smallest))
    if smallest[k] <= 0:
        raise ValueError(f"{name} must be positive definite; smallest eigenvalue {smallest[k]:.3g}.")
    if covariance_type in ("full", "tied"):
        # positive definite in exact arithmetic, but accurate enough in the working dtype? (A
        # NumPy Cholesky succeeding was not enough: XLA's could fail, and where both succeed the
        # densities still erred by up to kappa * eps.)
        check_conditioning(name, covs.reshape((-1, d, d)), covs.dtype)


def _separation(params: GMMParams, centre) -> tuple[float, int]:
    """``(loss, k)``: the relative accuracy EM's one-matmul form loses on ``params`` with the
    data centred at ``centre``, about ``eps * |mu_k - centre|^2 / lambda_min(Sigma_k)`` (the
    squared distance of component k's mean in its narrowest standard deviations), at its worst
    component ``k``; ``(0, 0)`` for traced values."""
    leaves = (params.means, params.covs, centre)
    if not all(is_concrete(a) for a in leaves):
        return 0.0, 0
    means, covs, c = (np.asarray(a, np.float64) for a in leaves)
    K, d = means.shape
    if params.covariance_type in ("full", "tied"):
        smallest = np.linalg.eigvalsh(np.nan_to_num(covs.reshape((-1, d, d))))[:, 0]
    else:
        smallest = covs.reshape((K, -1)).min(axis=1)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # not positive definite: infinite
        ratio = np.sum((means - c) ** 2, axis=1) / np.maximum(smallest, np.finfo(np.float64).tiny)
    ratio = np.nan_to_num(ratio, nan=0.0)
    k = int(np.argmax(ratio))
    return float(ratio[k] * np.finfo(np.dtype(params.means.dtype)).eps), k


def _separated(params: GMMParams, centre) -> bool:
    """Would EM's one-matmul form lose more than ``CONDITION_TOLERANCE`` relative accuracy
    (about 92 standard deviations between a mean and the centre in float32)? Then the EM
    functions run the two-pass form (each component from its own differences) instead."""
    return _separation(params, centre)[0] > CONDITION_TOLERANCE


def _check_separation(params: GMMParams, centre, name: str, what: str) -> None:
    """Refuses (naming ``name``) statistics that :func:`_separated` flags: :func:`e_step`'s
    additive statistics centre the data once, so they cannot use the two-pass form."""
    loss, k = _separation(params, centre)
    if loss > CONDITION_TOLERANCE:
        dtype = np.dtype(params.means.dtype).name
        distance = np.sqrt(loss / float(np.finfo(dtype).eps))
        raise ValueError(
            f"{name}: {what} component {k} has its mean {distance:.3g} of its narrowest "
            "standard deviations from the centre of the statistics, so these statistics (the data centred once, "
            f"one matmul for all components) would lose about {loss:.1g} relative accuracy in {dtype} (the limit "
            f"is {CONDITION_TOLERANCE:g}). Use float64 (jax.config.update('jax_enable_x64', True)), or em_step / "
            "em / fit, which switch to a two-pass form there.")


def validate_params(params: GMMParams, n_features: int | None = None, name: str = "params") -> GMMParams:
    """Checks a :class:`GMMParams` and returns it with array leaves.

    Raises ValueError on a wrong type or bad shapes (always) and on non-finite or invalid
    values (when concrete): weights must be non-negative and sum to 1; covariances symmetric
    and positive definite, full and tied ones conditioned well enough for the working dtype
    (see the module docstring). Under a caller's ``jax.jit`` only shapes are checked: call
    this eagerly on the inputs first.
    """
    return _params(params, n_features, name)


def _check_scale(name: str, x) -> None:
    """Refuses data whose squares would overflow the working dtype (EM sums the squares of
    the centred data over samples and features)."""
    if not is_concrete(x):
        return
    values = np.asarray(x)
    n, d = values.shape
    big = float(np.max(np.abs(values)))
    top = float(np.finfo(values.dtype).max)
    if (2.0 * big) ** 2 * n * d > top:
        raise ValueError(
            f"{name} is too large for {values.dtype}: it has entries up to {big:.3g}, and their squares summed over "
            f"{n} samples and {d} features overflow {values.dtype} (max {top:.3g}). Rescale the data (for example "
            "standardise each feature) or use float64 (jax.config.update('jax_enable_x64', True)).")


def _data(x, *, name: str = "x", n_features: int | None = None, n_components: int | None = None,
          match: str = "params") -> Array:
    """A validated ``(n_samples, n_features)`` data matrix: finite, of a scale whose squares
    fit the dtype, with at least ``n_components`` rows; returned as a float array. ``match``
    names what ``n_features`` comes from (for the message)."""
    x = array(name, x)
    check_ndim(name, x, 2, "a data matrix of shape (n_samples, n_features); for one sample use x[None]")
    n, d = x.shape
    if n_features is not None and d != n_features:
        raise ValueError(f"{name} must have {n_features} features (columns) to match {match}; got shape {x.shape}.")
    if n_components is not None and n < n_components:
        raise ValueError(f"n_samples = {n} must be at least n_components = {n_components} ({name} has shape "
                         f"{x.shape}).")
    check_finite(name, x)
    x = x.astype(jnp.result_type(x, jnp.float32))
    _check_scale(name, x)
    return x


def _sample_weight(sample_weight, n: int, dtype, n_components: int | None = None) -> Array | None:
    """Validated ``(n,)`` sample weights: finite, >= 0, with a positive sum and, where
    parameters are estimated (``n_components`` given), at least ``n_components`` positive
    entries (a zero weight removes a sample)."""
    if sample_weight is None:
        return None
    w = array("sample_weight", sample_weight)
    check_shape("sample_weight", w, (n,), "one weight per sample")
    check_finite("sample_weight", w)
    if is_concrete(w):
        v = np.asarray(w, np.float64)
        if np.any(v < 0):
            raise ValueError(f"sample_weight must be non-negative; got min {v.min():.3g}.")
        if not v.sum() > 0:
            raise ValueError(f"sample_weight must have a positive sum; got {v.sum():.3g}.")
        positive = int(np.count_nonzero(v > 0))
        if n_components is not None and positive < n_components:
            raise ValueError(f"sample_weight has {positive} positive entries, but the number of positively weighted "
                             f"samples must be at least n_components = {n_components} (a zero weight removes a "
                             "sample).")
    return w.astype(dtype)


def _check_distinct(x, sample_weight, n_components: int) -> None:
    """Refuses data with fewer distinct (positively weighted) samples than components: every
    maximum-likelihood mixture of such data has components collapsed onto single points,
    their covariances held up only by ``reg_covar``. Eager only (under ``jit`` a no-op)."""
    if n_components < 2 or not is_concrete(x) or (sample_weight is not None and not is_concrete(sample_weight)):
        return
    values = np.asarray(x)
    if sample_weight is not None:
        values = values[np.asarray(sample_weight) > 0]
    head = values[: max(8 * n_components, 1024)]  # distinct data show it in the first rows
    if len(np.unique(head, axis=0)) >= n_components:
        return
    distinct = len(np.unique(values, axis=0))
    if distinct < n_components:
        weighted = " positively weighted" if sample_weight is not None else ""
        raise ValueError(
            f"x has only {distinct} distinct{weighted} samples, fewer than n_components = {n_components}: a "
            "mixture with more components than distinct points is degenerate (components collapse onto single "
            f"points, their covariances held up only by reg_covar). Use n_components <= {distinct}.")


def _stats_checked(stats, covariance_type: str, data_features: int | None = None) -> EStepStats:
    """Validated :class:`EStepStats` for ``covariance_type``, its shapes consistent among
    themselves (``n_features`` from ``sum_z``). ``data_features`` (the column count of the data,
    not enforced here) only decides whether to blame ``sum_z`` when it alone disagrees."""
    if not isinstance(stats, EStepStats):
        raise ValueError(f"stats must be an EStepStats (from e_step); got {type(stats).__name__}.")
    nk = array("stats.nk", stats.nk)
    check_ndim("stats.nk", nk, 1, "a vector of shape (n_components,)")
    K = nk.shape[0]
    sum_z = array("stats.sum_z", stats.sum_z)
    check_ndim("stats.sum_z", sum_z, 2, "an array of shape (n_components, n_features)")
    d = sum_z.shape[1]
    sum_zz = array("stats.sum_zz", stats.sum_zz)
    centre = array("stats.weighted_centre", stats.weighted_centre)

    def zz_shape(n_features):
        return {"full": (K, n_features, n_features), "tied": (n_features, n_features)}.get(covariance_type,
                                                                                             (K, n_features))

    if (data_features not in (None, d) and sum_zz.shape == zz_shape(data_features)
            and centre.shape == (data_features,)):
        raise ValueError(f"stats.sum_z must have shape {(K, data_features)} to match x, stats.sum_zz and "
                         f"stats.weighted_centre; got {sum_z.shape}.")
    check_shape("stats.sum_z", sum_z, (K, d))
    check_shape("stats.sum_zz", sum_zz, zz_shape(d), f"for covariance_type={covariance_type!r}")
    total = array("stats.total_weight", stats.total_weight)
    check_shape("stats.total_weight", total, ())
    check_shape("stats.weighted_centre", centre, (d,), "total_weight times the centre")
    for field, value in (("nk", nk), ("sum_z", sum_z), ("sum_zz", sum_zz), ("total_weight", total),
                         ("weighted_centre", centre)):
        check_finite(f"stats.{field}", value)
    if is_concrete(nk) and np.any(np.asarray(nk) < 0):
        raise ValueError("stats.nk must be non-negative (it sums responsibilities).")
    if is_concrete(total) and not float(total) > 0:
        raise ValueError(f"stats.total_weight must be positive (it sums sample weights); got {float(total):.3g}.")
    return EStepStats(nk, sum_z, sum_zz, total, centre)


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


def _n_columns(x) -> int | None:
    """The column count of a would-be data matrix, or None (a hint for blaming the right argument)."""
    try:
        shape = np.shape(x)
    except (ValueError, TypeError):
        return None
    return shape[1] if len(shape) == 2 else None


def _inputs(params, x, *, n_components: bool = False) -> tuple[GMMParams, Array]:
    """Validated ``(params, x)``; with ``n_components`` also ``n_samples >= n_components``."""
    params = _params(params, data_features=_n_columns(x))
    x = _data(x, n_features=params.n_features, n_components=params.n_components if n_components else None)
    return params, x


def _log_gauss_exact(params: GMMParams, x: Array) -> Array:
    r"""``(n, K)`` log N(x_i | mu_k, Sigma_k) from each component's own differences
    :math:`x_i - \mu_k` (a triangular solve per component): no cancellation however far the
    components lie from one another, at K small matmuls instead of one."""
    K, d = params.means.shape
    diff = x[None, :, :] - params.means[:, None, :]  # (K, n, d)
    if params.covariance_type in ("full", "tied"):
        covs = params.covs if params.covariance_type == "full" else jnp.broadcast_to(params.covs, (K, d, d))
        L = jnp.linalg.cholesky(covs)
        y = solve_triangular(L, jnp.swapaxes(diff, 1, 2), lower=True)  # (K, d, n)
        maha = jnp.sum(y * y, axis=1)
        log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)), axis=-1)
    else:
        var = params.covs if params.covariance_type == "diag" else jnp.broadcast_to(params.covs[:, None], (K, d))
        maha = jnp.sum(diff * diff / var[:, None, :], axis=-1)
        log_det = jnp.sum(jnp.log(var), axis=-1)
    return -0.5 * (d * math.log(2 * math.pi) + log_det[:, None] + maha).T


def _components(params: GMMParams, x: Array) -> Array:
    r"""``(n, K)`` :math:`\ln C_k + \ln N(x_i\mid\mu_k,\Sigma_k)`, exactly as each component
    sees it (the densities a user asks for; EM's inner loop uses the one-matmul form)."""
    return _log_gauss_exact(params, jnp.asarray(x)) + jnp.log(params.weights)


# Module-level jitted work, cached on the shapes, dtypes and covariance type (a static
# field of GMMParams): a second eager call with new values of the same shapes compiles nothing.
_jit_components = jax.jit(_components)
_jit_log_prob = jax.jit(lambda params, x: jax.nn.logsumexp(_components(params, x), axis=-1))
_jit_responsibilities = jax.jit(lambda params, x: jax.nn.softmax(_components(params, x), axis=-1))
_jit_predict = jax.jit(lambda params, x: jnp.argmax(_components(params, x), axis=-1))


def log_prob_components(params: GMMParams, x: ArrayLike) -> Array:
    r"""``(n, K)`` array of :math:`\ln C_k + \ln N(x_i\mid\mu_k,\Sigma_k)` (Eq. (3.48)).

    Raises:
      ValueError: on invalid ``params`` (see :func:`validate_params`) or ``x`` (not
        ``(n, d)``, non-finite, or so large that its squares overflow the dtype).
    """
    return _jit_components(*_inputs(params, x))


def log_prob(params: GMMParams, x: ArrayLike) -> Array:
    r"""Log density :math:`\ln p(x_i) = \ln\sum_k C_k N(x_i\mid\mu_k,\Sigma_k)` for each row of
    ``x`` ``(n, d)``; returns ``(n,)`` (Eq. (3.48)). Validates as :func:`log_prob_components`."""
    return _jit_log_prob(*_inputs(params, x))


def responsibilities(params: GMMParams, x: ArrayLike) -> Array:
    r"""The posterior :math:`r_{ik} = p(z_i = k \mid x_i)` (Eq. (3.51), (3.65), (3.69)); ``(n, K)``."""
    return _jit_responsibilities(*_inputs(params, x))


def _posterior(weighted, sample_weight):
    """``(resp, w, loglik)`` from the joint log densities ``(n, K)``: the responsibilities, the
    sample weights (ones by default) and the weighted mean log-likelihood."""
    log_norm = jax.nn.logsumexp(weighted, axis=-1)
    resp = jnp.exp(weighted - log_norm[:, None])
    w = jnp.ones_like(log_norm) if sample_weight is None else sample_weight
    return resp, w, jnp.sum(w * log_norm) / jnp.sum(w)


def _e_step(params, z, u, centre, sample_weight):
    resp, w, loglik = _posterior(_log_gauss(params, z, u, centre) + jnp.log(params.weights), sample_weight)
    return _stats(resp, z, u, w, params.covariance_type, centre), loglik


def _stats(resp, z, u, w, covariance_type, centre) -> EStepStats:
    """Weighted sufficient statistics of responsibilities ``resp`` for data centred at
    ``centre``, ``z = x - centre`` (``u`` its quadratic features, used by full and tied
    covariances)."""
    rw = resp * w[:, None]
    total = jnp.sum(w)
    if covariance_type == "full":
        sum_zz = _unpack_symmetric(jnp.dot(rw.T, u, precision=HIGHEST), z.shape[1])
    elif covariance_type == "tied":
        sum_zz = _unpack_symmetric(jnp.dot(w, u, precision=HIGHEST), z.shape[1])
    else:
        sum_zz = jnp.dot(rw.T, z * z, precision=HIGHEST)
    return EStepStats(jnp.sum(rw, axis=0), jnp.dot(rw.T, z, precision=HIGHEST), sum_zz, total,
                      (total * centre).astype(z.dtype))


def _m_step(stats: EStepStats, covariance_type: str, reg_covar: float, centre: Array | None = None) -> GMMParams:
    """The M-step from ``stats``; ``centre`` (when the caller holds it exactly) overrides the
    one the statistics carry, ``weighted_centre / total_weight``."""
    dtype = stats.sum_z.dtype
    if centre is None:
        centre = (stats.weighted_centre / stats.total_weight).astype(dtype)
    # Exact N_k, not scikit-learn's N_k + 10 eps, whose bias grew as sample_weight shrank (the
    # result must not depend on the weights' overall scale); an empty component (N_k = 0) keeps
    # weight 0, mean c and covariance reg_covar I.
    nk = stats.nk
    safe = jnp.where(nk > 0, nk, 1.0)
    m = stats.sum_z / safe[:, None]
    d = m.shape[1]
    if covariance_type == "full":
        covs = stats.sum_zz / safe[:, None, None] - m[:, :, None] * m[:, None, :]
        covs = covs + reg_covar * jnp.eye(d, dtype=dtype)
    elif covariance_type == "tied":
        between = jnp.einsum("k,ka,kb->ab", nk, m, m, precision=HIGHEST)
        covs = (stats.sum_zz - between) / jnp.sum(nk) + reg_covar * jnp.eye(d, dtype=dtype)
    else:
        var = stats.sum_zz / safe[:, None] - m * m + reg_covar
        covs = var if covariance_type == "diag" else jnp.mean(var, axis=1)
    return GMMParams(nk / jnp.sum(nk), m + centre, covs, covariance_type)


def _mixture_mean(params: GMMParams) -> Array:
    r""":math:`\sum_k C_k \mu_k`: the centre of :func:`e_step`'s statistics, a function of the
    parameters only, so that minibatches evaluated with the same parameters share it."""
    return jnp.dot(params.weights, params.means, precision=HIGHEST)


def _e_step_x(params, x, sample_weight):
    z, u, centre = _prepare(params, x, _mixture_mean(params))
    return _e_step(params, z, u, centre, sample_weight)


def _em_step_x(params, x, reg_covar, sample_weight):
    stats, loglik = _e_step_x(params, x, sample_weight)
    return _m_step(stats, params.covariance_type, reg_covar), loglik


def _m_step_exact(rw: Array, x: Array, covariance_type: str, reg_covar) -> GMMParams:
    r"""The M-step from weighted responsibilities ``rw`` ``(n, K)`` in two passes, as
    scikit-learn: the means first, then each covariance from its own differences
    :math:`x_i - \mu_k` (no cancellation however far apart the components lie)."""
    d = x.shape[1]
    nk = jnp.sum(rw, axis=0)
    safe = jnp.where(nk > 0, nk, 1.0)  # an empty component: mean c, covariance reg_covar I, weight 0
    centre = jnp.mean(x, axis=0)
    means = centre + jnp.dot(rw.T, x - centre, precision=HIGHEST) / safe[:, None]
    diff = x[None, :, :] - means[:, None, :]  # (K, n, d)
    if covariance_type in ("full", "tied"):
        scatter = jnp.einsum("nk,kna,knb->kab", rw, diff, diff, precision=HIGHEST)
        eye = jnp.eye(d, dtype=x.dtype)
        covs = (scatter / safe[:, None, None] if covariance_type == "full" else jnp.sum(scatter, 0) / jnp.sum(nk))
        covs = covs + reg_covar * eye
    else:
        var = jnp.einsum("nk,kna->ka", rw, diff * diff, precision=HIGHEST) / safe[:, None] + reg_covar
        covs = var if covariance_type == "diag" else jnp.mean(var, axis=1)
    return GMMParams(nk / jnp.sum(nk), means, covs, covariance_type)


def _em_step_exact(params, x, reg_covar, sample_weight):
    """One EM iteration from each component's own differences (:func:`_log_gauss_exact`,
    :func:`_m_step_exact`): what EM runs where its one-matmul form would lose accuracy."""
    resp, w, loglik = _posterior(_components(params, x), sample_weight)
    return _m_step_exact(resp * w[:, None], x, params.covariance_type, reg_covar), loglik


_jit_e_step = jax.jit(_e_step_x)
_jit_m_step = jax.jit(_m_step, static_argnums=(1,))
_jit_em_step = jax.jit(_em_step_x)
_jit_em_step_exact = jax.jit(_em_step_exact)


def e_step(params: GMMParams, x: ArrayLike, sample_weight: ArrayLike | None = None) -> tuple[EStepStats, Array]:
    r"""E-step: responsibilities (Eq. (3.51)) reduced to sufficient statistics, and the mean
    log-likelihood :math:`\frac1N\sum_i w_i \ln p(x_i)` of ``params``.

    The statistics (see :class:`EStepStats`) are sums over the samples of
    :math:`z = x - c`, centred at the mixture mean :math:`c = \sum_k C_k \mu_k` of
    ``params`` and carrying it as ``weighted_centre`` :math:`= c\sum_i w_i`. They are
    additive: for minibatches ``x_1, x_2, ...`` of the data, each passed through ``e_step``
    with the same ``params``, ``jax.tree.map(jnp.add, s_1, s_2, ...)`` equals (up to float
    rounding) the statistics of the whole data, and :func:`m_step` gives the same parameters
    from either. (The mean log-likelihoods are per batch: combine them weighted by
    ``total_weight``.) Float32 sums stay accurate for data far from the origin as long as the
    parameters are near the data, :math:`\lVert x - c\rVert` of the order of the spread.
    ``sample_weight``: optional ``(n,)`` weights, finite and >= 0 with a positive sum.
    """
    params, x = _inputs(params, x)
    _check_separation(params, _mixture_mean(params), "params", "the mixture's")
    return _jit_e_step(params, x, _sample_weight(sample_weight, x.shape[0], x.dtype))


def m_step(stats: EStepStats, x: ArrayLike, covariance_type: str = "full", reg_covar: float = 1e-6) -> GMMParams:
    r"""M-step (Eq. (3.53), (3.55), (3.57)) from :func:`e_step` statistics, possibly summed
    over minibatches (see :class:`EStepStats`): with :math:`c` = ``weighted_centre /
    total_weight`` and :math:`m_k` = ``sum_z[k] / N_k``,

    .. math:: C_k = \frac{N_k}{\sum_l N_l},\quad \mu_k = c + m_k = \frac{1}{N_k}\sum_i r_{ik}x_i,\quad
              \Sigma_k = \frac{\texttt{sum\_zz}_k}{N_k} - m_k m_k^\top + \text{reg\_covar}\, I
              = \frac1{N_k}\sum_i r_{ik}(x_i-\mu_k)(x_i-\mu_k)^\top + \text{reg\_covar}\, I

    (diag: the diagonal; spherical: its mean; tied: one pooled covariance). The result
    depends on ``stats`` only: ``x`` is kept for compatibility and checked, not used. It must
    be a finite ``(n, d)`` data matrix with the statistics' ``d`` features (any part of the
    data, e.g. the last minibatch). ``reg_covar`` must be finite and >= 0.

    Raises:
      ValueError: naming ``stats`` (not an :class:`EStepStats`, shapes inconsistent among
        themselves or with ``covariance_type``, non-finite values, ``total_weight`` not
        positive), ``x`` (wrong number of features, not finite), ``covariance_type`` or
        ``reg_covar``.
    """
    covariance_type = choice("covariance_type", covariance_type, COVARIANCE_TYPES)
    stats = _stats_checked(stats, covariance_type, data_features=_n_columns(x))
    d = stats.sum_z.shape[1]
    _data(x, n_features=d, match=f"stats (stats.sum_z has shape {tuple(stats.sum_z.shape)})")  # checked, not used
    params = _jit_m_step(stats, covariance_type, regulariser("reg_covar", reg_covar))
    centre = stats.weighted_centre / stats.total_weight
    _check_separation(params, centre, "stats", "the new mixture's")
    return params


def em_step(params: GMMParams, x: ArrayLike, reg_covar: float = 1e-6,
            sample_weight: ArrayLike | None = None) -> tuple[GMMParams, Array]:
    """One EM iteration. Returns ``(new_params, loglik)`` with ``loglik`` the mean
    log-likelihood of the *input* ``params`` (scikit-learn's lower bound).

    Needs at least ``n_components`` distinct, positively weighted samples; ``reg_covar``
    finite and >= 0; ``sample_weight`` as in :func:`e_step`. Equals
    ``m_step(e_step(params, x)[0], x, ...)``.
    """
    params, x = _inputs(params, x, n_components=True)
    reg_covar = regulariser("reg_covar", reg_covar)
    sample_weight = _sample_weight(sample_weight, x.shape[0], x.dtype, params.n_components)
    _check_distinct(x, sample_weight, params.n_components)
    if _separated(params, _mixture_mean(params)):
        return _jit_em_step_exact(params, x, reg_covar, sample_weight)
    return _jit_em_step(params, x, reg_covar, sample_weight)


def em(params: GMMParams, x: Array, *, max_iter: int = 100, tol: float = 1e-3, reg_covar: float = 1e-6,
       sample_weight: Array | None = None):
    """EM to convergence as one ``lax.while_loop``: jittable and vmappable over restarts,
    seeds or datasets of equal shape. Called eagerly, it runs the two-pass form where the
    one-matmul form would lose accuracy at the start or the end (see the module docstring).

    Stops when ``|loglik_t - loglik_{t-1}| < tol`` (scikit-learn's rule; ``tol=0`` runs all
    ``max_iter`` iterations). It does not warn (it runs under ``jit``): check ``converged``,
    or use :func:`fit`, which warns.

    Args:
      params: the starting point.
      x: ``(n_samples, n_features)`` data, finite, with at least ``n_components`` distinct samples.
      max_iter: a positive integer (static).
      tol: finite, >= 0.
      reg_covar: finite, >= 0.
      sample_weight: as in :func:`e_step`, with at least ``n_components`` positive entries.

    Returns:
      ``(params, history, n_iter, converged)`` with ``history`` ``(max_iter,)`` holding the
      mean log-likelihood at each E-step (NaN after ``n_iter``).
    """
    params, x = _inputs(params, x, n_components=True)
    # one dtype for the loop's carry (as em_step, which promotes params and x alike)
    dtype = jnp.result_type(params.weights, params.means, params.covs, x)
    params, x = jax.tree_util.tree_map(lambda a: a.astype(dtype), params), x.astype(dtype)
    max_iter = count("max_iter", max_iter)
    tol = finite_scalar("tol", tol, minimum=0.0)
    reg_covar = regulariser("reg_covar", reg_covar)
    sample_weight = _sample_weight(sample_weight, x.shape[0], x.dtype, params.n_components)
    _check_distinct(x, sample_weight, params.n_components)
    centre = jnp.mean(x, axis=0)
    exact = _separated(params, centre)
    result = _jit_em_one(params, x, max_iter, tol, reg_covar, sample_weight, exact)
    if not exact and _separated(result[0], centre):  # drifted apart: run again in the two-pass form
        result = _jit_em_one(params, x, max_iter, tol, reg_covar, sample_weight, True)
    return result


def _em(params, x, max_iter, tol, reg_covar, sample_weight, exact=False):
    z, u, centre = _prepare(params, x)
    dtype = z.dtype
    history = jnp.full((max_iter,), jnp.nan, dtype)

    def cond(carry):
        _, _, it, prev, cur, _ = carry
        return (it < max_iter) & ~(jnp.abs(cur - prev) < tol)

    def body(carry):
        params, history, it, _, cur, _ = carry
        if exact:
            new, loglik = _em_step_exact(params, x, reg_covar, sample_weight)
        else:
            stats, loglik = _e_step(params, z, u, centre, sample_weight)
            new = _m_step(stats, params.covariance_type, reg_covar, centre)
        return new, history.at[it].set(loglik), it + 1, cur, loglik, jnp.bool_(False)

    inf = jnp.array(jnp.inf, dtype)
    init = (params, history, jnp.int32(0), -inf, -inf, jnp.bool_(False))
    # prev = cur = -inf at the start: |cur - prev| is NaN, so the first iteration runs.
    params, history, n_iter, prev, cur, _ = lax.while_loop(cond, body, init)
    converged = jnp.abs(cur - prev) < tol
    return params, history, n_iter, converged


_jit_em_one = jax.jit(_em, static_argnums=(2, 6))


# --------------------------------------------------------------------------------------
# Q function and ELBO (Eq. (3.58)-(3.77))
# --------------------------------------------------------------------------------------


def _q(params, params_old, x):
    resp = jax.nn.softmax(_components(params_old, x), axis=-1)
    joint = _components(params, x)  # -inf where a weight is 0: the where keeps 0 * -inf out, as in _elbo
    return jnp.mean(jnp.sum(jnp.where(resp > 0, resp * joint, 0.0), axis=-1))


def _elbo(params, resp, x):
    joint = _components(params, x)  # -inf where a weight is 0, so the where keeps 0 * -inf out
    return jnp.mean(jnp.sum(jnp.where(resp > 0, resp * joint, 0.0) + entr(resp), axis=-1))


_jit_q = jax.jit(_q)
_jit_elbo = jax.jit(_elbo)


def q_function(params: GMMParams, params_old: GMMParams, x: ArrayLike) -> Array:
    r"""The Q function (Eq. (3.68), (3.70)-(3.77)), per sample:

    .. math:: Q(\theta, \theta_{old}) = \frac1N \sum_i \sum_k r^{old}_{ik}
              \big(\ln C_k + \ln N(x_i \mid \mu_k, \Sigma_k)\big),\qquad
              r^{old} = p(z \mid x, \theta_{old})

    The M-step maximises it over :math:`\theta`. Erratum (3.70): the printed
    :math:`\tfrac12\det(\Sigma^{-1})` should read :math:`\tfrac12\ln\det(\Sigma^{-1})`.
    ``params_old`` must have the same number of components and features as ``params``.
    """
    params, x = _inputs(params, x)
    params_old = _params(params_old, params.n_features, "params_old", params.n_components)
    return _jit_q(params, params_old, x)


def elbo(params: GMMParams, resp: ArrayLike, x: ArrayLike) -> Array:
    r"""The evidence lower bound for a variational distribution ``resp`` ``(n, K)``
    (Eq. (3.63)-(3.64)), per sample:

    .. math:: \mathcal{L}(r, \theta) = \frac1N\sum_i \sum_k r_{ik}
              \ln\frac{C_k N(x_i\mid\mu_k,\Sigma_k)}{r_{ik}}
              = \frac1N\sum_i \ln p(x_i) - \frac1N\sum_i \mathrm{KL}(r_i \,\|\, p(z\mid x_i))

    so the gap to the log-likelihood is the KL divergence, zero exactly at the posterior
    (Eq. (3.65)-(3.66)). Each row of ``resp`` must be a distribution (>= 0, summing to 1).
    """
    params, x = _inputs(params, x)
    resp = array("resp", resp)
    check_shape("resp", resp, (x.shape[0], params.n_components), "one distribution over components per sample")
    resp = distribution("resp", resp, axis=-1)
    return _jit_elbo(params, resp, x)


# --------------------------------------------------------------------------------------
# Prediction, sampling, model selection
# --------------------------------------------------------------------------------------


def predict_proba(params: GMMParams, x: ArrayLike) -> Array:
    """Posterior component probabilities, ``(n, K)`` (as scikit-learn's ``predict_proba``)."""
    return responsibilities(params, x)


def predict(params: GMMParams, x: ArrayLike) -> Array:
    """Most probable component of each sample, ``(n,)``. Refuses non-finite rows (it never
    labels a NaN)."""
    return _jit_predict(*_inputs(params, x))


def _cholesky_full(params: GMMParams) -> Array:
    K, d = params.means.shape
    ct = params.covariance_type
    if ct == "full":
        return jnp.linalg.cholesky(params.covs)
    if ct == "tied":
        return jnp.broadcast_to(jnp.linalg.cholesky(params.covs), (K, d, d))
    var = params.covs if ct == "diag" else jnp.broadcast_to(params.covs[:, None], (K, d))
    return jax.vmap(jnp.diag)(jnp.sqrt(var))


def _sample(key, params, n):
    key_k, key_x = jax.random.split(key)
    comps = jax.random.categorical(key_k, jnp.log(params.weights), shape=(n,))
    eps = jax.random.normal(key_x, (n, params.means.shape[1]), params.means.dtype)
    L = _cholesky_full(params)
    x = params.means[comps] + jnp.einsum("nab,nb->na", L[comps], eps, precision=HIGHEST)
    return x, comps


_jit_sample = jax.jit(_sample, static_argnums=(2,))


def sample(key: PRNGKey, params: GMMParams, n: int) -> tuple[Array, Array]:
    r"""Draws ``n`` samples: :math:`k \sim C`, :math:`x = \mu_k + L_k \epsilon`.

    Args:
      key: PRNG key.
      params: the mixture.
      n: a positive integer (static: each new ``n`` compiles once).

    Returns:
      ``(x (n, d), components (n,))``.
    """
    key = prng_key("key", key)
    return _jit_sample(key, _params(params), count("n", n))


def _n_parameters(covariance_type: str, K: int, d: int) -> int:
    cov = {"full": K * d * (d + 1) // 2, "tied": d * (d + 1) // 2, "diag": K * d, "spherical": K}
    return cov[covariance_type] + K * d + K - 1


def n_parameters(params: GMMParams) -> int:
    """Number of free parameters (as scikit-learn's ``_n_parameters``)."""
    params = _params(params)
    return _n_parameters(params.covariance_type, params.n_components, params.n_features)


def _criterion(params, x, per_parameter):
    """``-2 sum_i ln p(x_i) + per_parameter * p``, with ``per_parameter`` static."""
    penalty = _n_parameters(params.covariance_type, params.n_components, params.n_features) * per_parameter
    return -2.0 * jnp.sum(jax.nn.logsumexp(_components(params, x), axis=-1)) + penalty


_jit_criterion = jax.jit(_criterion, static_argnums=(2,))


def bic(params: GMMParams, x: ArrayLike) -> Array:
    r"""Bayesian information criterion :math:`-2\sum_i \ln p(x_i) + p \ln N` (lower is better)."""
    params, x = _inputs(params, x)
    return _jit_criterion(params, x, math.log(x.shape[0]))


def aic(params: GMMParams, x: ArrayLike) -> Array:
    r"""Akaike information criterion :math:`-2\sum_i \ln p(x_i) + 2p` (lower is better)."""
    return _jit_criterion(*_inputs(params, x), 2.0)


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


INIT_METHODS = ("kmeans++", "random", "random_from_data")


def initialize(key: PRNGKey, x: Array, n_components: int, covariance_type: str = "full", init: str = "kmeans++",
               reg_covar: float = 1e-6, sample_weight: Array | None = None) -> GMMParams:
    """Initial parameters as scikit-learn builds them: initial responsibilities from
    ``init``, then one M-step.

    * ``"kmeans++"``: hard assignment to k-means++ seeds (JAX-native);
    * ``"random"``: uniform random responsibilities, normalised;
    * ``"random_from_data"``: K distinct data points (drawn in proportion to ``sample_weight``:
      a zero weight is never drawn), each the only member of its component.

    ``x``, ``n_components``, ``reg_covar`` and ``sample_weight`` are validated as in :func:`fit`.
    """
    key = prng_key("key", key)
    n_components = count("n_components", n_components)
    covariance_type = choice("covariance_type", covariance_type, COVARIANCE_TYPES)
    init = choice("init", init, INIT_METHODS)
    x = _data(x, n_components=n_components)
    reg_covar = regulariser("reg_covar", reg_covar)
    sample_weight = _sample_weight(sample_weight, x.shape[0], x.dtype, n_components)
    _check_distinct(x, sample_weight, n_components)
    params = _jit_initialize_one(key, x, n_components, covariance_type, init, reg_covar, sample_weight)
    if _separated(params, jnp.mean(x, axis=0)):  # the M-step in the two-pass form instead
        params = _jit_initialize_one(key, x, n_components, covariance_type, init, reg_covar, sample_weight, True)
    return params


def _initialize(key, x, n_components, covariance_type, init, reg_covar, sample_weight, exact=False):
    n = x.shape[0]
    if init == "kmeans++":
        centres = x[_kmeans_plus_plus(key, x, n_components, sample_weight)]
        d2 = (jnp.sum(x * x, 1)[:, None] - 2 * jnp.dot(x, centres.T, precision=HIGHEST)
              + jnp.sum(centres * centres, 1)[None, :])
        resp = jax.nn.one_hot(jnp.argmin(d2, axis=1), n_components, dtype=x.dtype)
    elif init == "random":
        resp = jax.random.uniform(key, (n, n_components), x.dtype)
        resp = resp / jnp.sum(resp, axis=1, keepdims=True)
    else:  # "random_from_data"
        # distinct points drawn as from the weighted data (a zero weight removes a sample)
        p = None if sample_weight is None else sample_weight / jnp.sum(sample_weight)
        chosen = jax.random.choice(key, n, (n_components,), replace=False, p=p)
        resp = jnp.zeros((n, n_components), x.dtype).at[chosen, jnp.arange(n_components)].set(1.0)
    w = jnp.ones((n,), x.dtype) if sample_weight is None else sample_weight
    if exact:
        return _m_step_exact(resp * w[:, None], x, covariance_type, reg_covar)
    centre = jnp.mean(x, axis=0)
    z = x - centre
    u = _quadratic_features(z) if covariance_type in ("full", "tied") else None
    return _m_step(_stats(resp, z, u, w, covariance_type, centre), covariance_type, reg_covar, centre)


_jit_initialize_one = jax.jit(_initialize, static_argnums=(2, 3, 4, 7))


def fit(key: PRNGKey, x: ArrayLike, n_components: int, *, covariance_type: str = "full",
        init: str | GMMParams = "kmeans++", n_init: int = 1, max_iter: int = 100, tol: float = 1e-3,
        reg_covar: float = 1e-6, sample_weight: ArrayLike | None = None) -> tuple[GMMParams, FitInfo]:
    r"""Fits a Gaussian mixture by EM (Eq. (3.51)-(3.57), algorithm A-D of ch. 3.1).

    The thin, non-jitted driver: validates inputs, initialises ``n_init`` restarts (a
    ``vmap`` over keys), runs :func:`em` on all of them in one compiled call, keeps the
    restart with the best final lower bound, and warns when it did not converge. Where the
    one-matmul form would lose accuracy (see the module docstring) it runs EM again in the
    two-pass form.

    Args:
      key: PRNG key for initialisation.
      x: ``(n_samples, n_features)`` data, finite.
      n_components: K, at most the number of distinct (positively weighted) samples.
      covariance_type: ``"full"``, ``"tied"``, ``"diag"`` or ``"spherical"``.
      init: ``"kmeans++"``, ``"random"``, ``"random_from_data"``, or a ``GMMParams`` to start
        from (warm start; ``n_init`` must then be 1).
      n_init: number of restarts.
      max_iter: maximum EM iterations (>= 1).
      tol: stop when the change in mean log-likelihood is below ``tol`` (>= 0; 0 runs all
        ``max_iter`` iterations), as scikit-learn.
      reg_covar: added to the covariance diagonals (>= 0).
      sample_weight: optional non-negative ``(n_samples,)`` weights, at least
        ``n_components`` of them positive.

    Returns:
      ``(params, FitInfo)``.

    Raises:
      ValueError: on bad input, or when a component collapses (non-finite parameters),
        naming ``reg_covar``; and when a fitted full or tied covariance is too ill-conditioned
        for the data's dtype (nearly collinear features in float32: see the module docstring),
        which the other functions would refuse to evaluate.
    """
    key = prng_key("key", key)
    covariance_type = choice("covariance_type", covariance_type, COVARIANCE_TYPES)
    n_components = count("n_components", n_components)
    x = _data(x, n_components=n_components)
    n, d = x.shape
    max_iter = count("max_iter", max_iter)
    tol = finite_scalar("tol", tol, minimum=0.0)
    reg_covar = regulariser("reg_covar", reg_covar)
    n_init = count("n_init", n_init)
    sample_weight = _sample_weight(sample_weight, n, x.dtype, n_components)
    _check_distinct(x, sample_weight, n_components)

    if isinstance(init, GMMParams):
        if n_init != 1:
            raise ValueError("n_init must be 1 when init is a GMMParams (warm start).")
        if init.covariance_type != covariance_type:
            raise ValueError(f"init.covariance_type is {init.covariance_type!r} but covariance_type is "
                             f"{covariance_type!r}.")
        init = _params(init, d, name="init", n_components=n_components)
        starts = jax.tree_util.tree_map(lambda a: jnp.asarray(a, x.dtype)[None], init)
    else:
        if not isinstance(init, str) or init not in INIT_METHODS:
            raise ValueError(f"init must be 'kmeans++', 'random', 'random_from_data' or a GMMParams; got {init!r}.")
        keys = jax.random.split(key, n_init)
        starts = _jit_initialize(keys, x, n_components, covariance_type, init, reg_covar, sample_weight)
        if _any_separated(starts, x):  # the initial M-step in the two-pass form too
            starts = _jit_initialize(keys, x, n_components, covariance_type, init, reg_covar, sample_weight, True)

    centre = jnp.mean(x, axis=0)
    exact = _any_separated(starts, x)
    try:
        run = _select_restart(_jit_em(starts, x, max_iter, tol, reg_covar, sample_weight, exact), x, reg_covar, exact)
    except ValueError:
        if exact:
            raise
        run = None  # a collapse can be the one-matmul form's rounding: the two-pass form decides
    if not exact and (run is None or _separated(run[0], centre)):
        run = _select_restart(_jit_em(starts, x, max_iter, tol, reg_covar, sample_weight, True), x, reg_covar, True)
    best_params, history, n_iter, converged, finals, best = run
    if covariance_type in ("full", "tied"):  # what the other functions would refuse to evaluate
        check_conditioning("x (its fitted covariance; raise reg_covar to regularise it)",
                           np.asarray(best_params.covs).reshape((-1, d, d)), x.dtype)
    info = FitInfo(log_likelihood=history[best, : n_iter[best]], n_iter=int(n_iter[best]),
                   converged=bool(np.asarray(converged)[best]), lower_bound=float(finals[best]),
                   restart_lower_bounds=finals)
    if not info.converged:
        warnings.warn(f"EM did not converge in max_iter={max_iter} iterations (tol={tol:g}); the last change in "
                      "mean log-likelihood was "
                      f"{float(np.diff(info.log_likelihood[-2:])[0]) if info.n_iter > 1 else float('nan'):.3g}. "
                      "Increase max_iter or tol, or check the data.", ConvergenceWarning, stacklevel=2)
    return best_params, info


def _any_separated(starts: GMMParams, x) -> bool:
    """Does some restart in ``starts`` (a leading restart axis) need the two-pass form?"""
    centre = jnp.mean(x, axis=0)
    return any(_separated(jax.tree_util.tree_map(lambda a, r=r: a[r], starts), centre)
               for r in range(starts.weights.shape[0]))


def _select_restart(result, x, reg_covar, exact: bool):
    """The restart with the best final lower bound among those with finite, non-collapsed
    parameters: ``(params, history, n_iter, converged, finals, best)``; a ``ValueError`` naming
    ``reg_covar`` when none is left."""
    params, history, n_iter, converged = result
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
        collapsed = _numerically_singular(params, x, exact)
        if np.all(collapsed | ~leaves_ok):
            raise ValueError(
                "EM collapsed a component onto too few points: its covariance is singular to working "
                f"precision ({x.dtype}). Use reg_covar > 0 (scikit-learn's default is 1e-6), or fewer components.")
        leaves_ok = leaves_ok & ~collapsed
    finals = np.where(leaves_ok & np.isfinite(finals), finals, -np.inf)
    best = int(np.argmax(finals))
    return jax.tree_util.tree_map(lambda a: a[best], params), history, n_iter, converged, finals, best


def _numerically_singular(params: GMMParams, x: Array, exact: bool = False) -> np.ndarray:
    """Per restart: does some component's covariance have its smallest eigenvalue at the
    rounding level of the quantities it is computed from (``eps * (|mu_k - c|^2 + s)``, with
    ``s`` the mean data variance; ``eps * s`` for the two-pass form)?"""
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
    level = 10 * eps * ((0.0 if exact else np.sum((means - centre) ** 2, axis=-1)) + scale)
    return np.any(smallest <= level, axis=-1)


def _initialize_many(keys, x, n_components, covariance_type, init, reg_covar, sample_weight, exact=False):
    return jax.vmap(lambda k: _initialize(k, x, n_components, covariance_type, init, reg_covar, sample_weight,
                                          exact))(keys)


_jit_initialize = jax.jit(_initialize_many, static_argnums=(2, 3, 4, 7))


def _em_many(starts, x, max_iter, tol, reg_covar, sample_weight, exact=False):
    return jax.vmap(lambda p: _em(p, x, max_iter, tol, reg_covar, sample_weight, exact))(starts)


_jit_em = jax.jit(_em_many, static_argnums=(2, 6))
