"""Argument checks shared by the samplers of :mod:`jaxebm.mcmc` (package-internal): inverse
temperatures, block sizes, starting spins, the values of states built under ``vmap``, matmul
precisions, axes and the samplers that user functions return."""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np

from jaxebm._validation import check_finite, check_spins, count, finite_scalar, is_concrete, spins

_BETA_MAX = float(np.finfo(np.float32).max)


def check_beta(beta):
    """An inverse temperature: a finite scalar >= 0 that float32 holds (checked when concrete;
    may be traced). A larger one became inf in float32 arithmetic: heat bath then returned all
    -1 on zero couplings, whose exact mean is 0."""
    value = finite_scalar("beta", beta, minimum=0.0)
    if is_concrete(beta) and value > _BETA_MAX:
        raise ValueError(f"beta must be at most {_BETA_MAX:.4g} (the largest float32: the samplers scale the "
                         f"energy by it); got {value:.3g}.")
    return beta


def check_block_size(block_size):
    return None if block_size is None else count("block_size", block_size)


def spin_position(position, n: int | None, dtype=None):
    """A start: +-1 spins of shape (n,), finite (values checked when concrete)."""
    x = spins("position", position, n=n, ndim=1)
    return x if dtype is None else x.astype(dtype)


def check_positions(name: str, state) -> None:
    """Value checks (when concrete and held by this process) on the spins of jaxebm sampler
    states: a start built by ``jax.vmap(algorithm.init)`` was traced, so its values are checked
    here instead. Other state types pass through."""
    from jaxebm.mcmc._single_site import SpinState  # these import this module
    from jaxebm.mcmc.gibbs import RBMState
    from jaxebm.mcmc.metropolis import MetropolisState
    from jaxebm.mcmc.tempering import ReplicaExchangeState

    if isinstance(state, ReplicaExchangeState):
        state = state.states
    if not isinstance(state, (SpinState, MetropolisState, RBMState)):
        return
    for label, x in ((name, state.x), (f"{name} (hidden z)", getattr(state, "z", None))):
        if x is None or not is_concrete(x) or not getattr(x, "is_fully_addressable", True):
            continue
        check_finite(label, x)
        check_spins(label, x)


def check_algorithm(name: str, algorithm, what: str):
    """``algorithm`` must be a ``SamplingAlgorithm(init, step)`` (duck-typed: callable ``init``
    and ``step``); ``what`` says where it came from (e.g. ``"make_algorithm(beta)"``)."""
    if not (callable(getattr(algorithm, "init", None)) and callable(getattr(algorithm, "step", None))):
        raise ValueError(f"{name} must return a SamplingAlgorithm(init, step); {what} returned a value of "
                         f"type {type(algorithm).__name__}.")
    return algorithm


def check_axis(name: str, axis, ndim: int) -> int:
    """An axis of an array of rank ``ndim``: a Python or NumPy integer (not a bool) in
    ``[-ndim, ndim)``, returned non-negative."""
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise ValueError(f"{name} must be an integer axis; got {axis!r}.")
    axis = int(axis)
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name} must be in [-{ndim}, {ndim}) for an array of {ndim} dimension(s); got {axis}.")
    return axis % ndim


def check_precision(precision):
    """A matmul precision that ``jax.lax`` accepts (None, a ``lax.Precision``, its names such as
    ``'highest'``, ``'float32'``, ``'tensorfloat32'``, ``'bfloat16'``, a pair of those, or a
    ``lax.DotAlgorithmPreset``): checked by tracing a 1 x 1 product (no compilation)."""
    try:
        jax.eval_shape(lambda: jnp.matmul(jnp.ones((1, 1), jnp.float32), jnp.ones((1, 1), jnp.float32),
                                          precision=precision))
    except (TypeError, ValueError) as err:
        raise ValueError(f"precision must be a matmul precision accepted by jax.lax (None, a lax.Precision such as "
                         f"lax.Precision.HIGHEST, a name such as 'highest', 'high', 'default', 'float32', "
                         f"'tensorfloat32' or 'bfloat16', or a lax.DotAlgorithmPreset); got {precision!r}.") from err
    return precision


def check_state(state, n: int):
    """A sampler's state for one chain of ``n`` spins (checked on shapes, so also when traced):
    a state of another model or a batch of states passed to ``step`` is a ValueError naming
    ``state`` (it was a TypeError from inside a matmul or a scan)."""
    x = getattr(state, "x", None)
    if x is None:
        raise ValueError(f"state must be a state of this algorithm, from algorithm.init(position); got "
                         f"{type(state).__name__}.")
    if np.shape(x) != (n,):
        raise ValueError(f"state.x must have shape ({n},): one chain of this model; got {np.shape(x)} (for many "
                         "chains, jax.vmap(algorithm.step) or mcmc.run_chains).")
    return state
