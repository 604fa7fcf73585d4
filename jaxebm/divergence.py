r"""Empirical distributions, KL divergence and entropy (chapters 1 and 2.1).

.. math:: D_{KL}(p \,\|\, q) = \sum_x p(x) \ln \frac{p(x)}{q(x)} \ge 0 \qquad \text{Eq. (2.6)}

Distributions over a finite set are given as probability vectors or as log-probability
vectors; :math:`0 \ln 0 = 0` is handled exactly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import entr, rel_entr

from jaxebm._validation import array, check_finite, check_ndim, distribution, is_concrete, spins
from jaxebm.types import Array, ArrayLike

__all__ = [
    "empirical_distribution",
    "empirical_log_likelihood",
    "entropy",
    "kl",
    "kl_from_log_probs",
    "states_to_codes",
]


def _axis(axis, ndim: int) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
        raise ValueError(f"axis must be an integer in [{-ndim}, {ndim}) for an array of {ndim} dimension(s); "
                         f"got {axis!r}.")
    return int(axis) % ndim


def entropy(p: ArrayLike, axis: int = -1) -> Array:
    r"""Shannon entropy :math:`H(p) = -\sum_x p(x) \ln p(x)` with :math:`0 \ln 0 = 0`.

    ``p`` must be a probability distribution along ``axis``: finite, non-negative and summing
    to 1 (checked when concrete; a NaN is refused, never dropped). Under ``jit`` values are
    not checked."""
    p = array("p", p)
    if p.ndim == 0:
        raise ValueError(f"p must be a probability distribution (an array with at least one axis); got the scalar "
                         f"{p}.")
    axis = _axis(axis, p.ndim)
    p = distribution("p", p, axis=axis)
    return _entropy(p, axis)


@functools.partial(jax.jit, static_argnums=(1,))
def _entropy(p, axis):
    return jnp.sum(entr(p), axis=axis)


def kl(p: ArrayLike, q: ArrayLike, axis: int = -1) -> Array:
    r"""Discrete :math:`D_{KL}(p\|q) = \sum_x p(x) \ln(p(x)/q(x))` (Eq. (2.6)).

    Terms with :math:`p(x) = 0` contribute 0; :math:`q(x) = 0 < p(x)` gives ``inf``.
    Non-negative, zero iff p = q (Eq. (2.8), (2.10)). Both must be probability
    distributions along ``axis`` (finite, >= 0, summing to 1): a non-normalised ``p`` would
    make the divergence meaningless (it can be negative), so it is refused when concrete.
    """
    p, q = array("p", p), array("q", q)
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape; got {p.shape} and {q.shape}.")
    axis = _axis(axis, p.ndim)
    p, q = distribution("p", p, axis=axis), distribution("q", q, axis=axis)
    dtype = jnp.result_type(p, q)
    return _kl(p.astype(dtype), q.astype(dtype), axis)


@functools.partial(jax.jit, static_argnums=(2,))
def _kl(p, q, axis):
    return jnp.sum(rel_entr(p, q), axis=axis)  # p ln(p/q); 0 where p = 0, inf where q = 0 < p


def _log_distribution(name: str, log_p, axis: int):
    """Log probabilities: no NaN or +inf (-inf is a zero probability), normalised along axis."""
    log_p = array(name, log_p)
    if is_concrete(log_p):
        values = np.asarray(log_p, dtype=np.float64)
        if np.isnan(values).any() or np.isposinf(values).any():
            raise ValueError(f"{name} must be log probabilities (-inf allowed); it contains NaN or +inf.")
        top = values.max(axis=axis, keepdims=True)
        shift = np.where(np.isfinite(top), top, 0.0)  # all -inf: the sum is 0, refused below
        totals = np.exp(values - shift).sum(axis=axis) * np.exp(np.squeeze(shift, axis=axis))
        tol = 1e3 * np.finfo(np.asarray(log_p).dtype).eps * max(1, values.shape[axis]) ** 0.5
        if np.any(np.abs(totals - 1) > tol):
            worst = float(np.ravel(totals)[np.argmax(np.abs(np.ravel(totals) - 1))])
            raise ValueError(f"{name} must be normalised log probabilities: exp({name}) must sum to 1 along "
                             f"axis {axis}; a sum is {worst:.6g}.")
    return log_p


def kl_from_log_probs(log_p: ArrayLike, log_q: ArrayLike, axis: int = -1) -> Array:
    r""":math:`D_{KL}(p\|q) = \sum_x e^{\ln p(x)} (\ln p(x) - \ln q(x))` from log probabilities,
    stable when probabilities underflow. Both must be normalised along ``axis``; ``-inf``
    entries are zero probabilities; NaN and ``+inf`` are refused (when concrete)."""
    log_p, log_q = array("log_p", log_p), array("log_q", log_q)
    if log_p.shape != log_q.shape:
        raise ValueError(f"log_p and log_q must have the same shape; got {log_p.shape} and {log_q.shape}.")
    axis = _axis(axis, log_p.ndim)
    log_p, log_q = _log_distribution("log_p", log_p, axis), _log_distribution("log_q", log_q, axis)
    dtype = jnp.result_type(log_p, log_q)
    return _kl_from_log_probs(log_p.astype(dtype), log_q.astype(dtype), axis)


@functools.partial(jax.jit, static_argnums=(2,))
def _kl_from_log_probs(log_p, log_q, axis):
    p = jnp.exp(log_p)
    diff = log_p - log_q
    # a state of p (log_p > -inf, even where exp underflows) that q rules out makes the KL
    # infinite; states p rules out contribute nothing
    terms = jnp.where(diff == jnp.inf, jnp.inf, p * diff)
    return jnp.sum(jnp.where(log_p > -jnp.inf, terms, 0.0), axis=axis)


def states_to_codes(x: ArrayLike) -> Array:
    """Integer codes of +-1 states ``(..., n)``, bit ``k`` set when spin ``k`` is +1
    (the inverse of :func:`jaxebm.enumeration.spins`, for ``1 <= n <= 31``)."""
    x = array("x", x, allow_empty=True)
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(f"x must be spins of shape (..., n) with n >= 1; got shape {x.shape}.")
    n = x.shape[-1]
    if n > 31:
        raise ValueError(f"x must have at most 31 spins (columns) to fit integer codes; got {n}.")
    check_finite("x", x)
    x = spins("x", x, ndim=x.ndim)
    return _states_to_codes(x)


@jax.jit
def _states_to_codes(x):
    weights = (2 ** jnp.arange(x.shape[-1])).astype(jnp.int32)
    return jnp.sum((x > 0).astype(jnp.int32) * weights, axis=-1)


def empirical_distribution(data: ArrayLike) -> Array:
    r"""The empirical distribution :math:`p_0(x) = \frac1M \sum_i \delta_{x, x^{(i)}}` of +-1 data
    (Eq. (1.1)), as a probability vector over all ``2^n`` codes (``n <= 24``)."""
    data = array("data", data, allow_empty=True)
    check_ndim("data", data, 2, "a batch of spin configurations of shape (num_samples, n)")
    if data.shape[0] < 1 or data.shape[1] < 1:
        raise ValueError(f"data must hold at least one sample of at least one spin; got shape {data.shape}.")
    n = data.shape[1]
    if n > 24:
        raise ValueError(f"data must have at most 24 spins (columns): empirical_distribution holds 2^n "
                         f"probabilities; got n = {n}.")
    data = spins("data", data, ndim=2)
    return _empirical_distribution(data)


@jax.jit
def _empirical_distribution(data):
    n = data.shape[1]
    codes = _states_to_codes(data)
    counts = jnp.zeros(2**n, jnp.result_type(data, jnp.float32)).at[codes].add(1.0)
    return counts / codes.shape[0]


def empirical_log_likelihood(log_prob_fn: Callable[[Array], Array], data: ArrayLike) -> Array:
    r"""Mean log-likelihood :math:`\frac1M \sum_i \ln q_\theta(x^{(i)})` (Eq. (2.17)).

    Maximising it is minimising :math:`D_{KL}(p_0 \| q_\theta)`, which equals
    :math:`-\text{(this)} - H(p_0)`.

    Args:
      log_prob_fn: maps a batch ``(M, ...)`` of data to ``(M,)`` normalised log probabilities.
      data: ``(M, ...)`` samples, finite, at least one.

    A NaN or ``+inf`` log probability is refused (when concrete); ``-inf`` (a sample the
    model cannot produce) gives ``-inf``.
    """
    if not callable(log_prob_fn):
        raise ValueError(f"log_prob_fn must be a callable (M, ...) -> (M,); got {type(log_prob_fn).__name__}.")
    data = array("data", data, floating=False, allow_empty=True)
    if data.ndim < 1 or data.shape[0] < 1:
        raise ValueError(f"data must hold at least one sample along its first axis; got shape {data.shape}.")
    check_finite("data", data)
    values = log_prob_fn(data)
    if not hasattr(values, "shape") or values.shape != data.shape[:1]:
        raise ValueError(f"log_prob_fn must return shape ({data.shape[0]},); got "
                         f"{getattr(values, 'shape', type(values).__name__)}.")
    if is_concrete(values):
        v = np.asarray(values)
        if np.isnan(v).any():
            raise ValueError("log_prob_fn returned NaN for some sample; expected log probabilities.")
        if np.any(v == np.inf):
            raise ValueError("log_prob_fn returned +inf for some sample; a normalised log probability is at most "
                             "0 for a discrete model and finite for a density.")
    return jnp.mean(values)
