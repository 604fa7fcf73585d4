r"""Learning Ising Boltzmann machines beyond enumeration: persistent contrastive divergence
whose negative phase comes from replica-exchange chains.

The gradient of the nll is :math:`\langle\phi\rangle_\theta - \langle\phi\rangle_{data}`
(Eq. (2.31)-(2.32)); here :math:`\langle\phi\rangle_\theta` is estimated from persistent
replica-exchange chains (their beta = 1 slot), advanced a few steps per update, so the
estimate stays unbiased at low temperature where single chains get stuck.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxebm import ising
from jaxebm._validation import count, ladder
from jaxebm.ising import IsingParams
from jaxebm.mcmc.colour import is_graph_params
from jaxebm.mcmc.gibbs import heat_bath
from jaxebm.mcmc.tempering import replica_exchange

__all__ = ["pcd_fit_ising"]


def pcd_fit_ising(key, params: IsingParams, data, optimizer: optax.GradientTransformation, num_steps: int, *,
                  betas, num_chains: int = 64, steps_per_update: int = 2):
    r"""Learns an Ising model by PCD with persistent replica-exchange chains.

    Args:
      key: PRNG key.
      params: initial parameters, ``IsingParams`` or ``GraphIsingParams`` (then the chains
        are colour-class heat baths and the gradients are per edge, from the chains' edge
        correlations).
      data: ``(M, n)`` +-1 data.
      optimizer: optax optimiser.
      num_steps: parameter updates (one ``lax.scan``; jit at the call site).
      betas: ladder for replica exchange; its *last* entry must be 1 (the model itself).
      num_chains: independent replica-exchange chains (vmapped).
      steps_per_update: replica-exchange steps between updates.

    ``betas`` must be a ladder (finite, > 0, strictly monotone) whose last entry is exactly 1:
    another last entry would fit the model at that temperature, not the data's model.

    Returns:
      ``(params, moment_residual_history (num_steps,))``, the residual being the largest
      |data moment - chain moment| at each update (an MCMC estimate).
    """
    graph = is_graph_params(params)
    params = ising.validate_params(params)  # JAX arrays (the scan carries them)
    num_steps, num_chains = count("num_steps", num_steps), count("num_chains", num_chains)
    steps_per_update = count("steps_per_update", steps_per_update)
    if not hasattr(optimizer, "init") or not hasattr(optimizer, "update"):
        raise ValueError(f"optimizer must be an optax GradientTransformation; got {type(optimizer).__name__}.")
    ladder("betas", betas, last=1.0)
    data = ising.validate_data(data, params.h.shape[0]).astype(params.h.dtype)
    mean_d, corr_d = _edge_moments(params.graph, data) if graph else ising.data_moments(data)
    betas = jnp.asarray(betas, params.h.dtype)
    R, n = betas.shape[0], params.h.shape[0]
    key_init, key_run = jax.random.split(key)
    x0 = jax.random.rademacher(key_init, (num_chains, R, n), params.h.dtype)

    def algorithm(p):
        return replica_exchange(lambda b: heat_bath(p, b), betas)

    states = jax.vmap(algorithm(params).init)(x0)

    def update(carry, key):
        params, opt_state, states = carry
        algo = algorithm(params)
        # the chains' fields depend on params: re-initialise them from the positions
        states = jax.vmap(lambda s: s._replace(states=jax.vmap(lambda b, x: heat_bath(params, b).init(x))(
            betas, s.states.x)))(states)

        def advance(s, k):
            return jax.vmap(algo.step)(jax.random.split(k, num_chains), s)[0], None

        states, _ = lax.scan(advance, states, jax.random.split(key, steps_per_update))
        x = states.states.x[:, -1]  # the beta = 1 replicas
        if graph:  # d nll / d J_e = <x_i x_j>_model - <x_i x_j>_data for each edge e = (i, j)
            mean_m, corr_m = _edge_moments(params.graph, x)
            grads = params._replace(h=mean_m - mean_d, J=corr_m - corr_d)
            residual = jnp.maximum(jnp.max(jnp.abs(grads.h)), jnp.max(jnp.abs(grads.J)))
        else:
            mean_m = jnp.mean(x, axis=0)
            corr_m = (x.T @ x) / num_chains
            grads = IsingParams(mean_m - mean_d, 0.5 * (corr_m - corr_d) * (1.0 - jnp.eye(n, dtype=x.dtype)))
            residual = jnp.maximum(jnp.max(jnp.abs(grads.h)), 2.0 * jnp.max(jnp.abs(grads.J)))
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, states), residual

    (params, _, _), residuals = lax.scan(update, (params, optimizer.init(params), states),
                                         jax.random.split(key_run, num_steps))
    return params, residuals


def _edge_moments(graph, x):
    """Means ``(n,)`` and edge correlations ``(num_edges,)`` (in the order of ``graph.edges``)
    of samples ``x (M, n)``: the sufficient statistics of a graph model."""
    edges = graph.edges
    return jnp.mean(x, axis=0), jnp.mean(x[:, edges[:, 0]] * x[:, edges[:, 1]], axis=0)
