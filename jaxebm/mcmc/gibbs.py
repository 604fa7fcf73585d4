r"""Gibbs samplers: heat-bath sweeps for Ising models and block Gibbs for RBMs (chapter 5).

Heat bath draws each spin from its exact conditional,
:math:`P(x_i = +1 \mid x_{-i}) = \sigma(2\beta f_i)` with :math:`f = h + Jx`, sequentially
(blocked local-field updates, as :mod:`jaxebm.mcmc.metropolis`). Block Gibbs for an RBM draws
all hidden units given the visible ones, then all visible given hidden (Eq. (4.83)-(4.85)).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxebm import rbm as rbm_module
from jaxebm._gibbs import rbm_gibbs_step
from jaxebm.ising import IsingParams
from jaxebm.mcmc._checks import check_beta, spin_position
from jaxebm.mcmc._single_site import ising_algorithm
from jaxebm.mcmc.base import SamplingAlgorithm
from jaxebm.mcmc.colour import colour_sampler, is_graph_params
from jaxebm.rbm import RBMParams

__all__ = ["RBMState", "heat_bath", "rbm_gibbs"]


def heat_bath(params: IsingParams, beta: float = 1.0, block_size: int | None = None) -> SamplingAlgorithm:
    r"""Sequential heat-bath (Gibbs) sweeps of an Ising model at inverse temperature ``beta``:
    :math:`x_i \leftarrow +1` with probability :math:`\sigma(2\beta(h_i + \sum_j J_{ij}x_j))`.

    ``params`` are validated when the sampler is built (shapes, finite, ``J`` symmetric with a
    zero diagonal: a diagonal term would enter the field and change the distribution sampled)
    and converted to JAX arrays; ``beta`` must be finite and >= 0; ``init`` checks the start
    is +-1 spins of shape ``(n,)``.

    For :class:`~jaxebm.ising.GraphIsingParams` the sweep updates one colour class at a time
    from neighbour gathers, O(degree) per spin (:func:`jaxebm.mcmc.colour.colour_sampler`);
    the state and info are the same, so it composes with the rest of :mod:`jaxebm.mcmc`.

    Returns:
      ``SamplingAlgorithm`` over :class:`jaxebm.mcmc.metropolis.SpinState`.
    """
    if is_graph_params(params):  # sparse: colour classes, neighbour gathers (jaxebm.mcmc.colour)
        return colour_sampler(params, beta, "heat_bath", block_size)
    if not isinstance(params, IsingParams):
        raise ValueError(f"params must be IsingParams; got {type(params).__name__}.")
    return ising_algorithm(params, beta, "heat_bath", block_size)


class RBMState(NamedTuple):
    """Block-Gibbs state: visible ``x``, hidden ``z``, and the joint log weight
    ``x^T W z + b.x + c.z`` at beta = 1."""

    x: jax.Array
    z: jax.Array
    log_weight: jax.Array


def _joint_log_weight(params, x, z):
    return -rbm_module.energy(params, x, z)


def rbm_gibbs(params: RBMParams, beta: float = 1.0, precision=lax.Precision.HIGHEST) -> SamplingAlgorithm:
    r"""Block Gibbs for an RBM at inverse temperature ``beta``: :math:`z \sim p_\beta(z\mid x)`,
    then :math:`x \sim p_\beta(x\mid z)` (Eq. (4.83)-(4.85), fields scaled by beta).

    ``precision`` is the matmul precision (``HIGHEST`` by default; ``DEFAULT`` is TF32 on GPU).
    ``params`` are validated when the sampler is built (type, shapes, finite) and ``beta``
    must be finite and >= 0; ``init`` checks the start is +-1 spins of shape ``(n_visible,)``.
    """
    params = rbm_module.validate_params(params)
    beta = check_beta(beta)
    tempered = RBMParams(beta * params.W, beta * params.b, beta * params.c)
    nv = params.W.shape[0]

    def init(position):
        x = spin_position(position, nv, params.W.dtype)
        z = rbm_module.hidden_mean(params, x)  # a placeholder; the first step draws z
        z = jnp.where(z >= 0, 1.0, -1.0).astype(x.dtype)
        return RBMState(x, z, _joint_log_weight(params, x, z))

    def step(key, state):
        x, z = rbm_gibbs_step(key, tempered, state.x, precision)
        return RBMState(x, z, _joint_log_weight(params, x, z)), None

    return SamplingAlgorithm(init, step)
