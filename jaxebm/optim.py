"""A small optax driver: the optimisation loop as one ``lax.scan``.

It does not wrap or hide optax. The caller builds any ``optax`` optimiser (plain or
``GradientTransformationExtraArgs`` such as :func:`jaxebm.curvature.hessian_bounded_sgd`),
and this runs ``value_and_grad -> update(..., value_fn=...) -> apply_updates`` for
``num_steps`` steps, returning the parameters and a :class:`RunInfo` (the loss history, the
metrics and the final optimiser state).

Every optax loop of the library runs through :func:`run`: :func:`jaxebm.ising.fit` (dense
and graph models) and the inner steps of :func:`jaxebm.rbm.gem_fit` (with ``safeguard``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxebm import _cache
from jaxebm._validation import count, optimizer_state
from jaxebm.types import Array, PyTree

__all__ = ["RunInfo", "run"]


class RunInfo(NamedTuple):
    """What :func:`run` (and :func:`jaxebm.ising.fit`) returns beside the parameters.

    The histories are indexed by step: entry t belongs to the parameters after t updates,
    the ones step t started from.

    Attributes:
      loss: ``(num_steps,)`` loss at the parameters each step started from.
      grad_max_abs: ``(num_steps,)`` largest |gradient| entry at those parameters.
      metrics: whatever ``metrics_fn`` returned, stacked over steps (``None`` without one).
      opt_state: the optimiser state after the last step: pass it back as
        ``run(..., opt_state=info.opt_state)`` to resume where the run stopped.
      accepted: ``(num_steps,)`` bool, whether each step was taken (``safeguard=True``);
        ``None`` otherwise (every step is taken).
    """

    loss: Array
    grad_max_abs: Array
    metrics: PyTree
    opt_state: PyTree
    accepted: Array | None


def run(optimizer: optax.GradientTransformation, loss_fn: Callable[..., Array], params: PyTree,
        num_steps: int, *args, metrics_fn: Callable[[PyTree, Array, PyTree, PyTree], PyTree] | None = None,
        opt_state: PyTree | None = None, safeguard: bool = False) -> tuple[PyTree, RunInfo]:
    r"""Runs ``num_steps`` optax steps on ``loss_fn(params, *args)`` as a ``lax.scan``.

    .. math:: (u_t, s_{t+1}) = \mathrm{update}(\nabla f(\theta_t), s_t, \theta_t), \qquad
              \theta_{t+1} = \theta_t + u_t

    With ``safeguard=True`` a step is taken only if it does not increase the loss
    (:math:`f(\theta_t + u_t) \le f(\theta_t)`, else :math:`\theta_{t+1} = \theta_t`; the
    optimiser state moves on either way), so the loss history never increases whatever the
    optimiser (one extra loss evaluation per step).

    Args:
      optimizer: any optax transformation; extra-args transforms receive
        ``value=..., grad=..., value_fn=...`` (as optax's line searches expect).
      loss_fn: scalar loss.
      params: initial parameters (any pytree).
      num_steps: number of updates (static).
      *args: further arguments of ``loss_fn`` (e.g. data).
      metrics_fn: optional ``(params, loss, grads, opt_state) -> pytree`` recorded each step
        (``params``, ``loss`` and ``grads`` where the step started; ``opt_state`` after the
        update).
      opt_state: state to continue from (default: ``optimizer.init(params)``), e.g. the
        ``opt_state`` of a previous run's :class:`RunInfo`.
      safeguard: accept only steps that do not increase the loss.

    Returns:
      ``(params, RunInfo)``.

    The loop is one ``lax.scan`` of fixed length (no tolerance, hence no convergence
    warning). One step is traced on each call and the compiled scan is cached on the traced
    program, so eager calls with new values of the same shapes (new closures, a new optimiser
    with the same hyperparameters) compile once. It may be called under ``jit``, ``vmap``
    (e.g. over learning rates) and inside another ``lax.scan``.
    """
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise ValueError(f"optimizer must be an optax GradientTransformation; got {type(optimizer).__name__}.")
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable; got {type(loss_fn).__name__}.")
    if metrics_fn is not None and not callable(metrics_fn):
        raise ValueError(f"metrics_fn must be callable or None; got {type(metrics_fn).__name__}.")
    if not isinstance(safeguard, bool):
        raise ValueError(f"safeguard must be True or False; got {safeguard!r}.")
    num_steps = count("num_steps", num_steps)
    optimizer = optax.with_extra_args_support(optimizer)
    state = optimizer_state(optimizer, params, opt_state)

    def value_fn(p):
        return loss_fn(p, *args)

    def step(carry):
        params, state = carry
        value, grads = jax.value_and_grad(value_fn)(params)
        updates, state = optimizer.update(grads, state, params, value=value, grad=grads, value_fn=value_fn)
        gmax = jnp.max(jnp.stack([jnp.max(jnp.abs(g)) for g in jax.tree_util.tree_leaves(grads)]))
        extra = metrics_fn(params, value, grads, state) if metrics_fn is not None else None
        new = optax.apply_updates(params, updates)
        accepted = None
        if safeguard:
            accepted = value_fn(new) <= value
            new = optax.tree_utils.tree_where(accepted, new, params)
        return (new, state), (value, gmax, extra, accepted)

    traced, consts = _cache.trace(step, (params, state))
    (params, state), (losses, gmax, extra, accepted) = _cache.scan(consts, (params, state), traced=traced,
                                                             num_steps=num_steps)
    return params, RunInfo(losses, gmax, extra, state, accepted)
