r"""Gibbs samplers: heat-bath sweeps for Ising models and block Gibbs for RBMs (chapter 5).

Heat bath draws each spin from its exact conditional,
:math:`P(x_i = +1 \mid x_{-i}) = \sigma(2\beta f_i)` with :math:`f = h + Jx`, sequentially
(blocked local-field updates, as :mod:`jaxebm.mcmc.metropolis`). Block Gibbs for an RBM draws
all hidden units given the visible ones, then all visible given hidden (Eq. (4.83)-(4.85)).

Two samplers: :func:`heat_bath` (state :class:`SpinState` from :func:`heat_bath_init`, info
:class:`HeatBathInfo`) and :func:`rbm_gibbs` (state :class:`RBMState` from
:func:`rbm_gibbs_init`, info :class:`RBMInfo`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxebm import ising
from jaxebm import rbm as rbm_module
from jaxebm._gibbs import rbm_gibbs_sweep, spins_given_field
from jaxebm.ising import IsingParams
from jaxebm.mcmc._checks import check_beta, check_precision, check_state, spin_position
from jaxebm.mcmc._single_site import HeatBathInfo, SpinState, ising_algorithm, ising_init
from jaxebm.mcmc.base import SamplingAlgorithm
from jaxebm.mcmc.colour import colour_sampler, graph_init, is_graph_params
from jaxebm.rbm import RBMParams

__all__ = ["HeatBathInfo", "RBMInfo", "RBMState", "SpinState", "heat_bath", "heat_bath_init", "rbm_gibbs",
           "rbm_gibbs_init"]


def heat_bath_init(params, position) -> SpinState:
    """The heat-bath state of spins ``position`` (shape ``(n,)``, +-1): local fields and log
    weight at beta = 1, for ``IsingParams`` or ``GraphIsingParams``. The same as
    ``heat_bath(params).init(position)``; deterministic, so it takes no key."""
    if not (is_graph_params(params) or isinstance(params, IsingParams)):
        raise ValueError(f"params must be IsingParams; got {type(params).__name__}.")
    params = ising.validate_params(params)
    return graph_init(params, position) if is_graph_params(params) else ising_init(params, position)


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
      ``SamplingAlgorithm``: ``init(position (n,), key=None) -> SpinState`` (no randomness;
      the key is ignored), ``step(key, state) -> (SpinState, HeatBathInfo)``, whose
      ``flip_rate`` is the fraction of spins that changed value in the sweep.
    """
    if is_graph_params(params):  # sparse: colour classes, neighbour gathers (jaxebm.mcmc.colour)
        return colour_sampler(params, beta, "heat_bath", block_size)
    if not isinstance(params, IsingParams):
        raise ValueError(f"params must be IsingParams; got {type(params).__name__}.")
    return ising_algorithm(params, beta, "heat_bath", block_size)


class RBMState(NamedTuple):
    r"""Block-Gibbs state of an RBM.

    Attributes:
      x: ``(n_visible,)`` visible spins.
      z: ``(n_hidden,)`` hidden spins: a draw from :math:`p_\beta(z \mid x)` at init, and
        after a step the draw that ``x`` was drawn from; either way ``(x, z)`` is a draw from
        the joint :math:`p_\beta(x, z)` whenever ``x`` is one from the marginal.
      log_weight: scalar joint log weight :math:`x^\top W z + b^\top x + c^\top z`
        (= ``-rbm.energy(params, x, z)``) at beta = 1.
    """

    x: jax.Array
    z: jax.Array
    log_weight: jax.Array


class RBMInfo(NamedTuple):
    """Attributes:
      flip_rate: scalar, the fraction of visible units whose value changed in the sweep.
    """

    flip_rate: jax.Array


def _rbm_init(key, params, position, beta, precision) -> RBMState:
    x = spin_position(position, params.W.shape[0], params.W.dtype)
    a = jnp.matmul(x, params.W, precision=precision) + params.c  # hidden field at beta = 1
    z = spins_given_field(key, jnp.asarray(beta, a.dtype) * a)
    # x^T W z + b.x + c.z = (W^T x + c).z + b.x: no second matmul
    return RBMState(x, z, jnp.sum(a * z, axis=-1) + jnp.sum(params.b * x, axis=-1))


def _require_key(key):
    if key is None:
        raise ValueError("key is required: rbm_gibbs(params).init(position, key) draws the hidden units "
                         "z ~ p(z | x); pass a PRNG key (for many chains, jax.vmap(algorithm.init)(positions, "
                         "jax.random.split(key, num_chains))).")
    return key


def rbm_gibbs_init(key, params: RBMParams, position, beta: float = 1.0, precision=lax.Precision.HIGHEST) -> RBMState:
    r"""The block-Gibbs state of visible spins ``position`` (shape ``(n_visible,)``, +-1), with
    the hidden units drawn exactly from :math:`p_\beta(z \mid x)`,
    :math:`P(z_l = +1) = \sigma(2\beta(W^\top x + c)_l)` (Eq. (4.84)). The same as
    ``rbm_gibbs(params, beta, precision).init(position, key)``."""
    params = rbm_module.validate_params(params)
    return _rbm_init(_require_key(key), params, position, check_beta(beta), check_precision(precision))


def rbm_gibbs(params: RBMParams, beta: float = 1.0, precision=lax.Precision.HIGHEST) -> SamplingAlgorithm:
    r"""Block Gibbs for an RBM at inverse temperature ``beta``: :math:`z \sim p_\beta(z\mid x)`,
    then :math:`x \sim p_\beta(x\mid z)` (Eq. (4.83)-(4.85), fields scaled by beta).

    The state's joint log weight (at beta = 1) comes from the visible field
    :math:`f = Wz + b` already computed for the draw of :math:`x'`, so a sweep costs two
    matmuls:

    .. math:: \log w(x', z) = x'^\top W z + b^\top x' + c^\top z = x'^\top f + c^\top z .

    ``precision`` is the matmul precision (``HIGHEST`` by default; ``DEFAULT`` is TF32 on GPU,
    and then the log weight, taken from the same fields, carries its ~1e-3 relative error).
    ``params`` are validated when the sampler is built (type, shapes, finite), ``beta``
    must be finite and >= 0 and ``precision`` one that ``jax.lax`` accepts (``None``, a
    ``lax.Precision``, a name such as ``'highest'``, ``'float32'`` or ``'tensorfloat32'``, or a
    ``lax.DotAlgorithmPreset``; ``ValueError`` naming ``precision`` otherwise).

    Returns:
      ``SamplingAlgorithm``: ``init(position (n_visible,), key) -> RBMState`` draws ``z``
      exactly from :math:`p_\beta(z \mid x)`, so it needs ``key`` (``ValueError`` naming
      ``key`` without one) and checks the start is +-1 spins of shape ``(n_visible,)``;
      ``step(key, state) -> (RBMState, RBMInfo)``.
    """
    params = rbm_module.validate_params(params)
    beta = check_beta(beta)
    precision = check_precision(precision)

    def init(position, key=None):
        return _rbm_init(_require_key(key), params, position, beta, precision)

    def step(key, state):
        check_state(state, params.W.shape[0])
        x, z, log_weight = rbm_gibbs_sweep(key, params, state.x, beta, precision)
        return RBMState(x, z, log_weight), RBMInfo(jnp.mean(x != state.x, dtype=x.dtype))

    return SamplingAlgorithm(init, step)
