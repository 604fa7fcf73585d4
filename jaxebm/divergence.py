r"""Empirical distributions, KL divergence and entropy (chapters 1 and 2.1).

.. math:: D_{KL}(p \,\|\, q) = \sum_x p(x) \ln \frac{p(x)}{q(x)} \ge 0 \qquad \text{Eq. (2.6)}

Distributions over a finite set are given as probability vectors or as log-probability
vectors; :math:`0 \ln 0 = 0` is handled exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

from jaxebm._validation import check_finite, check_ndim, check_spins
from jaxebm.types import Array, ArrayLike

__all__ = [
    "empirical_distribution",
    "empirical_log_likelihood",
    "entropy",
    "kl",
    "kl_from_log_probs",
    "states_to_codes",
]


def entropy(p: ArrayLike, axis: int = -1) -> Array:
    r"""Shannon entropy :math:`H(p) = -\sum_x p(x) \ln p(x)` with :math:`0 \ln 0 = 0`."""
    p = jnp.asarray(p)
    safe = jnp.where(p > 0, p, 1.0)
    return -jnp.sum(jnp.where(p > 0, p * jnp.log(safe), 0.0), axis=axis)


def kl(p: ArrayLike, q: ArrayLike, axis: int = -1) -> Array:
    r"""Discrete :math:`D_{KL}(p\|q) = \sum_x p(x) \ln(p(x)/q(x))` (Eq. (2.6)).

    Terms with :math:`p(x) = 0` contribute 0; :math:`q(x) = 0 < p(x)` gives ``inf``.
    Non-negative, zero iff p = q (Eq. (2.8), (2.10)).
    """
    p, q = jnp.asarray(p), jnp.asarray(q)
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape; got {p.shape} and {q.shape}.")
    safe_p = jnp.where(p > 0, p, 1.0)
    terms = jnp.where(p > 0, p * (jnp.log(safe_p) - jnp.log(q)), 0.0)
    return jnp.sum(terms, axis=axis)


def kl_from_log_probs(log_p: ArrayLike, log_q: ArrayLike, axis: int = -1) -> Array:
    r""":math:`D_{KL}(p\|q) = \sum_x e^{\ln p(x)} (\ln p(x) - \ln q(x))` from log probabilities,
    stable when probabilities underflow."""
    log_p, log_q = jnp.asarray(log_p), jnp.asarray(log_q)
    p = jnp.exp(log_p)
    terms = jnp.where(p > 0, p * (log_p - log_q), 0.0)
    return jnp.sum(terms, axis=axis)


def states_to_codes(x: ArrayLike) -> Array:
    """Integer codes of +-1 states ``(..., n)``, bit ``k`` set when spin ``k`` is +1
    (the inverse of :func:`jaxebm.enumeration.spins`, for ``n <= 31``)."""
    x = jnp.asarray(x)
    n = x.shape[-1]
    if n > 31:
        raise ValueError(f"states_to_codes supports n <= 31 spins; got {n}.")
    check_spins("x", x)
    weights = (2 ** jnp.arange(n)).astype(jnp.int32)
    return jnp.sum((x > 0).astype(jnp.int32) * weights, axis=-1)


def empirical_distribution(data: ArrayLike) -> Array:
    r"""The empirical distribution :math:`p_0(x) = \frac1M \sum_i \delta_{x, x^{(i)}}` of +-1 data
    (Eq. (1.1)), as a probability vector over all ``2^n`` codes (``n <= 24``)."""
    check_ndim("data", data, 2, "a batch of spin configurations of shape (num_samples, n)")
    n = np.shape(data)[1]
    if n > 24:
        raise ValueError(f"empirical_distribution holds 2^n probabilities; n = {n} exceeds 24.")
    codes = states_to_codes(data)
    counts = jnp.zeros(2**n, jnp.result_type(jnp.asarray(data), jnp.float32)).at[codes].add(1.0)
    return counts / codes.shape[0]


def empirical_log_likelihood(log_prob_fn: Callable[[Array], Array], data: ArrayLike) -> Array:
    r"""Mean log-likelihood :math:`\frac1M \sum_i \ln q_\theta(x^{(i)})` (Eq. (2.17)).

    Maximising it is minimising :math:`D_{KL}(p_0 \| q_\theta)`, which equals
    :math:`-\text{(this)} - H(p_0)`.

    Args:
      log_prob_fn: maps a batch ``(M, ...)`` of data to ``(M,)`` normalised log probabilities.
      data: ``(M, ...)`` samples.
    """
    data = jnp.asarray(data)
    check_finite("data", data)
    values = log_prob_fn(data)
    if values.shape != data.shape[:1]:
        raise ValueError(f"log_prob_fn must return shape ({data.shape[0]},); got {values.shape}.")
    return jnp.mean(values)
