r"""Learning Ising Boltzmann machines beyond enumeration: persistent contrastive divergence
whose negative phase comes from replica-exchange chains.

The gradient of the nll is :math:`\langle\phi\rangle_\theta - \langle\phi\rangle_{data}`
(Eq. (2.31)-(2.32)); here :math:`\langle\phi\rangle_\theta` is estimated from persistent
replica-exchange chains (their beta = 1 slot), advanced a few steps per update, so the
estimate stays unbiased at low temperature where single chains get stuck.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxebm import ising, optim
from jaxebm._validation import array, count, ladder, prng_key, spins
from jaxebm.ising import IsingParams
from jaxebm.mcmc.colour import is_graph_params
from jaxebm.mcmc.gibbs import heat_bath
from jaxebm.mcmc.tempering import replica_exchange
from jaxebm.types import Array, PRNGKey, PyTree

__all__ = ["PCDInfo", "pcd_fit_ising"]


class PCDInfo(NamedTuple):
    """What :func:`pcd_fit_ising` returns beside the parameters.

    Attributes:
      residual: ``(num_steps,)`` largest |data moment - chain moment| at each update, an
        MCMC estimate of the moment residual (Eq. (2.31)-(2.32)) at the parameters the
        update started from (noisy: no monotonicity is guaranteed).
      opt_state: the optimiser state after the last update.
      chains: ``(num_chains, len(betas), n)`` final positions of the replica-exchange
        chains, one per temperature slot (the last slot at beta = 1). Pass
        ``opt_state=info.opt_state, chains=info.chains`` to resume.
    """

    residual: Array
    opt_state: PyTree
    chains: Array


def pcd_fit_ising(key: PRNGKey, params: IsingParams, data, optimizer: optax.GradientTransformation,
                  num_steps: int, *, betas, num_chains: int = 64, steps_per_update: int = 2,
                  opt_state: PyTree | None = None, chains=None) -> tuple[IsingParams, PCDInfo]:
    r"""Learns an Ising model by PCD with persistent replica-exchange chains.

    Each update advances the chains ``steps_per_update`` replica-exchange steps and descends
    the nll along the estimated moment difference (Eq. (2.31)-(2.32); erratum (2.33): the
    printed sign is wrong)

    .. math:: \nabla_h \mathcal L \approx \hat{\langle x\rangle} - \bar x, \qquad
              \nabla_J \mathcal L \approx \big(\hat{\langle xx^\top\rangle} - \overline{xx^\top}\big)/2

    with :math:`\hat{\langle\cdot\rangle}` the mean over the chains' beta = 1 replicas.

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
      opt_state: optimiser state to resume from (default ``optimizer.init(params)``).
      chains: ``(num_chains, len(betas), n)`` +-1 positions to resume the chains from
        (default: uniformly random); the swap bookkeeping restarts.

    ``betas`` must be a ladder (finite, > 0, strictly monotone) whose last entry is exactly 1:
    another last entry would fit the model at that temperature, not the data's model.

    Returns:
      ``(params, PCDInfo)``.
    """
    key = prng_key("key", key)
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
    if chains is None:
        x0 = jax.random.rademacher(key_init, (num_chains, R, n), params.h.dtype)
    else:
        x0 = array("chains", chains, dtype=params.h.dtype)
        if x0.shape != (num_chains, R, n):
            raise ValueError(f"chains must have shape (num_chains, len(betas), n) = ({num_chains}, {R}, {n}); "
                             f"got {x0.shape}.")
        x0 = spins("chains", x0, n=n, ndim=3)

    def algorithm(p):
        return replica_exchange(lambda b: heat_bath(p, b), betas)

    states = jax.vmap(algorithm(params).init)(x0)

    def loss(params, states, key, mean_d, corr_d):
        """The PCD gradient estimate as a stochastic objective of :func:`jaxebm.optim.run`."""
        p = lax.stop_gradient(params)
        algo = algorithm(p)
        # the chains' fields depend on params: re-initialise them from the positions
        states = jax.vmap(lambda s: s._replace(states=jax.vmap(lambda b, x: heat_bath(p, b).init(x))(
            betas, s.states.x)))(states)

        def advance(s, k):
            return jax.vmap(algo.step)(jax.random.split(k, num_chains), s)[0], None

        states, _ = lax.scan(advance, states, jax.random.split(key, steps_per_update))
        x = states.states.x[:, -1]  # the beta = 1 replicas
        if graph:  # d nll / d J_e = <x_i x_j>_model - <x_i x_j>_data for each edge e = (i, j)
            mean_m, corr_m = _edge_moments(p.graph, x)
            grads = p._replace(h=mean_m - mean_d, J=corr_m - corr_d)
        else:
            mean_m = jnp.mean(x, axis=0)
            corr_m = (x.T @ x) / num_chains
            grads = IsingParams(mean_m - mean_d, 0.5 * (corr_m - corr_d) * (1.0 - jnp.eye(n, dtype=x.dtype)))
        return optim.estimated_gradient_loss(params, grads), states

    def residual(params, value, grads, opt_state):
        scale_J = 1.0 if graph else 2.0  # IsingParams' J gradient is half the moment difference
        return jnp.maximum(jnp.max(jnp.abs(grads.h)), scale_J * jnp.max(jnp.abs(grads.J), initial=0.0))

    params, info = optim.run(optimizer, loss, params, num_steps, mean_d, corr_d, metrics_fn=residual,
                             opt_state=opt_state, key=key_run, aux=states)
    return params, PCDInfo(info.metrics, info.opt_state, info.aux.states.x)


def _edge_moments(graph, x):
    """Means ``(n,)`` and edge correlations ``(num_edges,)`` (in the order of ``graph.edges``)
    of samples ``x (M, n)``: the sufficient statistics of a graph model."""
    edges = graph.edges
    return jnp.mean(x, axis=0), jnp.mean(x[:, edges[:, 0]] * x[:, edges[:, 1]], axis=0)
