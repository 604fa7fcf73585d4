r"""Conditional draws of +-1 units, shared by :mod:`jaxebm.rbm` and :mod:`jaxebm.mcmc.gibbs`
(package-internal: no validation, for inner loops).

A unit with field :math:`a` has :math:`P(s = +1) = e^a / (e^a + e^{-a}) = \sigma(2a)`. Here
"field" always means the field of the distribution being drawn from, any inverse temperature
already applied (:math:`a = \beta(W^\top x + c)` for the hidden units of a tempered RBM).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxebm._numerics import HIGHEST


def spins_given_field(key, field):
    r"""Independent +-1 units with :math:`P(s_i = +1) = \sigma(2 a_i)`, ``a = field``, in its dtype."""
    return jnp.where(jax.random.bernoulli(key, jax.nn.sigmoid(2.0 * field)), 1.0, -1.0).astype(field.dtype)


def rbm_gibbs_sweep(key, params, x, beta=1.0, precision=HIGHEST):
    r"""One block-Gibbs sweep of an RBM (``params`` with ``W``, ``b``, ``c``) at inverse
    temperature ``beta``: :math:`z \sim p_\beta(z \mid x)`, then :math:`x' \sim p_\beta(x \mid z)`.

    Returns ``(x', z, log_weight)`` with the joint log weight at beta = 1 taken from the
    untempered visible field :math:`f = Wz + b` already computed for the draw of ``x'``, so
    it costs no third matmul:

    .. math:: \log w(x', z) = x'^\top W z + b^\top x' + c^\top z = x'^\top f + c^\top z .
    """
    key_z, key_x = jax.random.split(key)
    beta = jnp.asarray(beta, params.W.dtype)  # a float64 beta (x64) must not promote float32 chains
    z = spins_given_field(key_z, beta * (jnp.matmul(x, params.W, precision=precision) + params.c))
    f = jnp.matmul(z, params.W.T, precision=precision) + params.b
    x = spins_given_field(key_x, beta * f)
    return x, z, jnp.sum(x * f, axis=-1) + jnp.sum(params.c * z, axis=-1)


def rbm_gibbs_step(key, params, x, precision=HIGHEST):
    """One block-Gibbs sweep at beta = 1: ``z ~ p(z|x)``, then ``x ~ p(x|z)``. Returns ``(x, z)``."""
    x, z, _ = rbm_gibbs_sweep(key, params, x, 1.0, precision)
    return x, z
