"""Argument checks shared by the samplers of :mod:`jaxebm.mcmc` (package-internal): inverse
temperatures, block sizes, starting spins, and the values of states built under ``vmap``."""

from __future__ import annotations

from jaxebm._validation import check_finite, check_spins, count, finite_scalar, is_concrete, spins


def check_beta(beta):
    """An inverse temperature: a finite scalar >= 0 (checked when concrete; may be traced)."""
    finite_scalar("beta", beta, minimum=0.0)
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
