r"""Conditional draws of +-1 units, shared by :mod:`jaxebm.rbm` and :mod:`jaxebm.mcmc.gibbs`
(package-internal: no validation, for inner loops).

A unit with field :math:`a` has :math:`P(s = +1) = e^a / (e^a + e^{-a}) = \sigma(2a)`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxebm._numerics import HIGHEST


def spins_given_field(key, field):
    r"""Independent +-1 units with :math:`P(s_i = +1) = \sigma(2 a_i)`, ``a = field``, in its dtype."""
    return jnp.where(jax.random.bernoulli(key, jax.nn.sigmoid(2.0 * field)), 1.0, -1.0).astype(field.dtype)


def rbm_gibbs_step(key, params, x, precision=HIGHEST):
    """One block-Gibbs sweep of an RBM (``params`` with ``W``, ``b``, ``c``): ``z ~ p(z|x)``,
    then ``x ~ p(x|z)``. Returns ``(x, z)``."""
    key_z, key_x = jax.random.split(key)
    z = spins_given_field(key_z, jnp.matmul(x, params.W, precision=precision) + params.c)
    return spins_given_field(key_x, jnp.matmul(z, params.W.T, precision=precision) + params.b), z
