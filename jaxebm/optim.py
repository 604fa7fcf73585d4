"""A small optax driver: the optimisation loop as one ``lax.scan``.

It does not wrap or hide optax. The caller builds any ``optax`` optimiser (plain or
``GradientTransformationExtraArgs`` such as :func:`jaxebm.curvature.hessian_bounded_sgd`),
and this runs ``value_and_grad -> update(..., value_fn=...) -> apply_updates`` for
``num_steps`` steps, returning the parameters and a :class:`RunInfo` (the loss history, the
metrics and the final optimiser state).

Every optax loop of the library runs through :func:`run`: :func:`jaxebm.ising.fit` (dense
and graph models), the inner steps of :func:`jaxebm.rbm.gem_fit` (with ``safeguard``),
the L-BFGS of :mod:`jaxebm.inverse` (with ``tol``) and :func:`jaxebm.mcmc.pcd_fit_ising`
(a stochastic objective, with ``key`` and ``aux``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxebm import _cache
from jaxebm._validation import count, optimizer_state, prng_key, regulariser
from jaxebm.types import Array, PRNGKey, PyTree

__all__ = ["RunInfo", "estimated_gradient_loss", "run"]


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
      aux: for a stochastic objective (``key`` given), the auxiliary state after the last
        step (e.g. persistent chains), to resume from; ``None`` otherwise.
      num_updates: with ``tol``, the number of updates taken; the histories' entry
        ``num_updates`` is where the loop stopped (when it converged) and later entries are
        NaN. ``None`` otherwise.
      converged: with ``tol``, whether the gradient's max-norm fell to ``tol``; ``None``
        otherwise.
    """

    loss: Array
    grad_max_abs: Array
    metrics: PyTree
    opt_state: PyTree
    accepted: Array | None
    aux: PyTree = None
    num_updates: Array | None = None
    converged: Array | None = None


def estimated_gradient_loss(params: PyTree, grads: PyTree) -> Array:
    r"""A scalar whose gradient with respect to ``params`` is ``grads`` (held constant):
    :math:`\sum_i 	heta_i\, \mathrm{sg}(g_i)`. It feeds a gradient *estimate* (CD, PCD, any
    Monte Carlo gradient) to :func:`run` as a stochastic objective; its value means nothing."""
    if jax.tree_util.tree_structure(grads) != jax.tree_util.tree_structure(params) or any(
            jnp.shape(g) != jnp.shape(p) for g, p in zip(jax.tree_util.tree_leaves(grads),
                                                         jax.tree_util.tree_leaves(params))):
        raise ValueError(f"grads must be a pytree like params (same structure and shapes); got "
                         f"{jax.tree_util.tree_map(jnp.shape, grads)} for params "
                         f"{jax.tree_util.tree_map(jnp.shape, params)}.")
    return optax.tree_utils.tree_vdot(params, jax.lax.stop_gradient(grads))


def run(optimizer: optax.GradientTransformation, loss_fn: Callable[..., Array], params: PyTree,
        num_steps: int, *args, metrics_fn: Callable[[PyTree, Array, PyTree, PyTree], PyTree] | None = None,
        opt_state: PyTree | None = None, safeguard: bool = False, key: PRNGKey | None = None,
        aux: PyTree = None, tol: float | None = None) -> tuple[PyTree, RunInfo]:
    r"""Runs ``num_steps`` optax steps on ``loss_fn(params, *args)`` as a ``lax.scan``.

    .. math:: (u_t, s_{t+1}) = \mathrm{update}(\nabla f(\theta_t), s_t, \theta_t), \qquad
              \theta_{t+1} = \theta_t + u_t

    With ``safeguard=True`` a step is taken only if it does not increase the loss
    (:math:`f(\theta_t + u_t) \le f(\theta_t)`, else :math:`\theta_{t+1} = \theta_t`; the
    optimiser state moves on either way), so the loss history never increases whatever the
    optimiser (one extra loss evaluation per step).

    **Stochastic objectives.** With a ``key``, the loss is called as
    ``loss_fn(params, aux, key_t, *args) -> (loss, aux)`` with a fresh ``key_t`` per step
    (``jax.random.split(key, num_steps)``) and an auxiliary state ``aux`` carried from step to
    step (persistent chains, say; ``None`` if there is none); only ``loss`` is differentiated.
    A gradient estimate enters through :func:`estimated_gradient_loss`. This is how
    :func:`jaxebm.mcmc.pcd_fit_ising` and the CD/PCD loops of the experiments run.

    **Stopping at a tolerance.** With ``tol``, the loop is a ``lax.while_loop`` that stops
    before the first step whose gradient max-norm is at most ``tol`` (``num_steps`` is then
    the iteration limit; :func:`jaxebm.inverse.pseudolikelihood` and :func:`~jaxebm.inverse.mpf`
    run their L-BFGS this way). Optimisers that keep the value and gradient in their state
    (``optax.lbfgs``'s line search) have them reused, not recomputed.

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
      safeguard: accept only steps that do not increase the loss (deterministic losses
        only).
      key: PRNG key of a stochastic objective (see above).
      aux: its initial auxiliary state.
      tol: stop once the gradient's max-norm is at most ``tol`` (>= 0; deterministic losses).

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
    if key is not None:
        key = prng_key("key", key)
    if key is None and aux is not None:
        raise ValueError("aux is the carried state of a stochastic objective: pass key too "
                         "(loss_fn(params, aux, key, *args) -> (loss, aux)).")
    if key is not None and safeguard:
        raise ValueError("safeguard compares losses between steps, which a stochastic objective (key given) "
                         "cannot do; drop safeguard or key.")
    if tol is not None:
        tol = regulariser("tol", tol)
        if key is not None or safeguard:
            raise ValueError("tol stops a deterministic loss; it cannot be combined with key or safeguard.")
    num_steps = count("num_steps", num_steps)
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves or sum(jnp.size(leaf) for leaf in leaves) == 0:
        raise ValueError("params must hold at least one entry; got an empty pytree or empty arrays.")
    optimizer = optax.with_extra_args_support(optimizer)
    state = optimizer_state(optimizer, params, opt_state)
    stochastic = key is not None
    # to a tolerance, reuse the value and gradient an optimiser keeps (lbfgs's line search)
    from_state = tol is not None and optax.tree_utils.tree_get(state, "value") is not None

    def step(carry, step_key):
        params, state, aux = carry
        if stochastic:
            def value_fn(p):
                return loss_fn(p, aux, step_key, *args)[0]

            (value, aux), grads = jax.value_and_grad(lambda p: loss_fn(p, aux, step_key, *args), has_aux=True)(params)
        else:
            def value_fn(p):
                return loss_fn(p, *args)

            if from_state:
                value, grads = optax.value_and_grad_from_state(value_fn)(params, state=state)
            else:
                value, grads = jax.value_and_grad(value_fn)(params)
        updates, state = optimizer.update(grads, state, params, value=value, grad=grads, value_fn=value_fn)
        # the largest gradient entry (an empty leaf, such as J of an edge-less graph, counts 0)
        gmax = jnp.max(jnp.stack([jnp.max(jnp.abs(g), initial=0.0) for g in jax.tree_util.tree_leaves(grads)]))
        extra = metrics_fn(params, value, grads, state) if metrics_fn is not None else None
        new = optax.apply_updates(params, updates)
        accepted = None
        if safeguard:
            accepted = value_fn(new) <= value
            new = optax.tree_utils.tree_where(accepted, new, params)
        return (new, state, aux), (value, gmax, extra, accepted)

    keys = jax.random.split(key, num_steps) if stochastic else None
    try:
        traced, consts = _cache.trace(step, (params, state, aux), None if keys is None else keys[0])
    except TypeError:
        _explain_trace_failure(loss_fn, params, args, aux, None if keys is None else keys[0])
        raise
    if tol is not None:
        (params, state, _), (losses, gmax, extra, _), num_updates, converged = _while(
            consts, (params, state, aux), jnp.asarray(tol, jnp.result_type(float)), traced=traced,
            num_steps=num_steps)
        return params, RunInfo(losses, gmax, extra, state, None, None, num_updates, converged)
    (params, state, aux), (losses, gmax, extra, accepted) = _cache.scan(consts, (params, state, aux), keys,
                                                                        traced=traced, num_steps=num_steps)
    return params, RunInfo(losses, gmax, extra, state, accepted, aux)


def _explain_trace_failure(loss_fn, params, args, aux, key) -> None:
    """Turn the usual causes of a TypeError while tracing the step (what ``jax.grad`` refuses)
    into a ValueError naming the argument; returns if none applies."""
    for leaf in jax.tree_util.tree_leaves(params):
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise ValueError(f"params must hold floating arrays (gradients need them); got a leaf of dtype "
                             f"{jnp.result_type(leaf)}. Convert with jnp.asarray(p, jnp.float32).")
    try:
        if key is None:
            out = jax.eval_shape(lambda p: loss_fn(p, *args), params)
        else:
            out = jax.eval_shape(lambda p: loss_fn(p, aux, key, *args), params)
            if not (isinstance(out, tuple) and len(out) == 2):
                raise ValueError("loss_fn of a stochastic objective (key given) must return (loss, aux); got "
                                 f"{type(out).__name__}.")
            out = out[0]
    except TypeError:
        return
    if getattr(out, "shape", None) != () or not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(f"loss_fn must return a real scalar; it returned {getattr(out, 'shape', type(out))} of "
                         f"dtype {getattr(out, 'dtype', None)}.")


@functools.partial(jax.jit, static_argnames=("traced", "num_steps"))
def _while(consts, carry, tol, *, traced, num_steps):
    """Steps until the gradient max-norm at the current parameters is <= tol (that step's
    update discarded) or ``num_steps`` updates; records padded with NaN."""
    records = jax.eval_shape(lambda c: traced(consts, c, None)[1], carry)
    buffers = jax.tree_util.tree_map(lambda r: jnp.full((num_steps,) + r.shape, jnp.nan, r.dtype)
                                     if jnp.issubdtype(r.dtype, jnp.inexact) else jnp.zeros((num_steps,) + r.shape,
                                                                                         r.dtype), records)

    def cond(loop):
        _, _, k, done = loop
        return (k < num_steps) & ~done

    def body(loop):
        carry, buffers, k, _ = loop
        new, record = traced(consts, carry, None)
        done = record[1] <= tol
        buffers = jax.tree_util.tree_map(lambda b, r: b.at[k].set(r), buffers, record)
        carry = jax.tree_util.tree_map(lambda a, b: jnp.where(done, a, b), carry, new)
        return carry, buffers, k + jnp.where(done, 0, 1), done

    carry, buffers, k, done = jax.lax.while_loop(cond, body, (carry, buffers, jnp.zeros((), jnp.int32),
                                                             jnp.zeros((), bool)))
    return carry, buffers, k, done
