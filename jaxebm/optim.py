"""A small optax driver: the optimisation loop as one ``lax.scan``.

It does not wrap or hide optax. The caller builds any ``optax`` optimiser (plain or
``GradientTransformationExtraArgs`` such as :func:`jaxebm.curvature.hessian_bounded_sgd`),
and this runs ``value_and_grad -> update(..., value_fn=...) -> apply_updates`` for
``num_steps`` steps, returning the parameters and the loss history.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxebm import _cache
from jaxebm._validation import count
from jaxebm.types import Array, PyTree

__all__ = ["History", "run"]


class History(NamedTuple):
    """Per-step records of :func:`run` (index t: before the t-th update)."""

    loss: Array  # (num_steps,) loss at the parameters the step started from
    grad_max_abs: Array  # (num_steps,) largest |gradient| entry at those parameters
    metrics: PyTree  # whatever metrics_fn returned, stacked over steps (or None)


def run(optimizer: optax.GradientTransformation, loss_fn: Callable[..., Array], params: PyTree,
        num_steps: int, *args, metrics_fn: Callable[[PyTree, Array, PyTree, PyTree], PyTree] | None = None,
        opt_state: PyTree | None = None) -> tuple[PyTree, PyTree, History]:
    """Runs ``num_steps`` optax steps on ``loss_fn(params, *args)`` as a ``lax.scan``.

    Args:
      optimizer: any optax transformation; extra-args transforms receive
        ``value=..., grad=..., value_fn=...`` (as optax's line searches expect).
      loss_fn: scalar loss.
      params: initial parameters (any pytree).
      num_steps: number of updates (static).
      *args: further arguments of ``loss_fn`` (e.g. data).
      metrics_fn: optional ``(params, loss, grads, opt_state) -> pytree`` recorded each step
        (``opt_state`` after the update).
      opt_state: state to continue from (default: ``optimizer.init(params)``).

    Returns:
      ``(params, opt_state, History)``.

    The loop is one ``lax.scan`` of fixed length (no tolerance, hence no convergence
    warning). One step is traced on each call and the compiled scan is cached on the traced
    program, so eager calls with new values of the same shapes (new closures, a new optimiser
    with the same hyperparameters) compile once.
    """
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise ValueError(f"optimizer must be an optax GradientTransformation; got {type(optimizer).__name__}.")
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable; got {type(loss_fn).__name__}.")
    if metrics_fn is not None and not callable(metrics_fn):
        raise ValueError(f"metrics_fn must be callable or None; got {type(metrics_fn).__name__}.")
    num_steps = count("num_steps", num_steps)
    optimizer = optax.with_extra_args_support(optimizer)
    state = optimizer.init(params) if opt_state is None else opt_state

    def value_fn(p):
        return loss_fn(p, *args)

    def step(carry, _):
        params, state = carry
        value, grads = jax.value_and_grad(value_fn)(params)
        updates, state = optimizer.update(grads, state, params, value=value, grad=grads, value_fn=value_fn)
        gmax = jnp.max(jnp.stack([jnp.max(jnp.abs(g)) for g in jax.tree_util.tree_leaves(grads)]))
        extra = metrics_fn(params, value, grads, state) if metrics_fn is not None else None
        return (optax.apply_updates(params, updates), state), (value, gmax, extra)

    traced, consts = _cache.trace(lambda carry: step(carry, None), (params, state))
    (params, state), (losses, gmax, extra) = _scan(consts, (params, state), traced=traced, num_steps=num_steps)
    return params, state, History(losses, gmax, extra)


@functools.partial(jax.jit, static_argnames=("traced", "num_steps"))
def _scan(consts, carry, *, traced, num_steps):
    return jax.lax.scan(lambda c, _: traced(consts, c), carry, None, length=num_steps)
