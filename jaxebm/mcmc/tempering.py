r"""Replica-exchange Monte Carlo (parallel tempering, chapter 6) as a meta-kernel.

``replica_exchange(make_algorithm, betas)`` runs one replica per inverse temperature (a
``vmap``), then proposes swaps between neighbouring temperatures, alternating even pairs
(0,1), (2,3), ... and odd pairs (1,2), (3,4), ... With :math:`\log w` the untempered log
weight, the swap of states at :math:`\beta_i, \beta_{i+1}` is accepted with probability

.. math:: \min\Big(1, \exp\big((\beta_i - \beta_{i+1})(\log w(x_{i+1}) - \log w(x_i))\big)\Big),

which keeps the product :math:`\prod_i p_{\beta_i}` invariant. States must not depend on beta
and must carry ``log_weight`` (the log weight at beta = 1), as every jaxebm sampler state does.
Walker labels follow the states, so round trips between the two ends can be counted.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxebm._validation import count, finite_scalar, ladder, positive_scalar, prng_key, probability
from jaxebm.mcmc._checks import check_algorithm, check_positions
from jaxebm.mcmc.base import SamplingAlgorithm, run_chain

__all__ = ["ReplicaExchangeInfo", "ReplicaExchangeState", "adapt_ladder", "geometric_ladder", "replica_exchange",
           "replica_exchange_init", "tune_ladder"]


class ReplicaExchangeState(NamedTuple):
    """Attributes:
      states: inner states stacked over temperature slots (leading axis R).
      walker: ``(R,)`` int32: the walker occupying each slot.
      last_end: ``(R,)`` int32 per walker: 0 none yet, 1 last visited slot 0, 2 last visited slot R-1.
      round_trips: ``(R,)`` int32 per walker: completed trips slot 0 -> R-1 -> 0.
      count: int32 scalar: steps taken (its parity picks even or odd pairs).
    """

    states: Any
    walker: jax.Array
    last_end: jax.Array
    round_trips: jax.Array
    count: jax.Array


class ReplicaExchangeInfo(NamedTuple):
    """Swap statistics of one step, and the inner samplers' infos (e.g. ``inner.flip_rate``
    of heat-bath replicas, ``inner.acceptance_rate`` of Metropolis ones, each ``(R,)``)."""

    swap_attempted: jax.Array  # (R-1,) bool: pairs proposed this step
    swap_accepted: jax.Array  # (R-1,) bool
    swap_probability: jax.Array  # (R-1,) acceptance probability of each pair (computed for all pairs)
    inner: Any  # the inner kernels' infos, stacked over slots


def geometric_ladder(beta_min: float, beta_max: float, num: int) -> jax.Array:
    r"""``num`` inverse temperatures :math:`\beta_i = \beta_{\min}(\beta_{\max}/\beta_{\min})^{i/(num-1)}`
    (float32), with the end points exactly ``beta_min`` and ``beta_max``."""
    beta_min, beta_max = positive_scalar("beta_min", beta_min), positive_scalar("beta_max", beta_max)
    num = count("num", num, minimum=2)
    if not beta_min < beta_max:
        raise ValueError(f"beta_min must be < beta_max; got beta_min={beta_min}, beta_max={beta_max}.")
    return jnp.asarray(np.geomspace(beta_min, beta_max, num), jnp.float32)  # end points exact


def _update_ends(walker, last_end, round_trips):
    R = walker.shape[0]
    bottom, top = walker[0], walker[R - 1]
    completes = last_end[bottom] == 2
    round_trips = round_trips.at[bottom].add(completes.astype(jnp.int32))
    last_end = last_end.at[bottom].set(1).at[top].set(2)
    return last_end, round_trips


def _check_make_algorithm(make_algorithm):
    if not callable(make_algorithm):
        raise ValueError(f"make_algorithm must be a function beta -> SamplingAlgorithm; got "
                         f"{type(make_algorithm).__name__}.")


def _make(make_algorithm, beta) -> SamplingAlgorithm:
    """``make_algorithm(beta)``, checked to be a sampler (at trace time)."""
    return check_algorithm("make_algorithm", make_algorithm(beta), "make_algorithm(beta)")


def _init(make_algorithm, betas, positions, key):
    R = betas.shape[0]
    leaves = jax.tree_util.tree_leaves(positions)
    if not leaves or any(np.ndim(a) < 1 or np.shape(a)[0] != R for a in leaves):
        raise ValueError(f"positions must be stacked over the {R} temperature slots (leading axis {R}); got "
                         f"shape(s) {[np.shape(a) for a in leaves]}.")
    if key is None:  # samplers whose init draws nothing (the inner init says so if it needs a key)
        states = jax.vmap(lambda b, p: _make(make_algorithm, b).init(p))(betas, positions)
    else:
        states = jax.vmap(lambda b, p, k: _make(make_algorithm, b).init(p, k))(betas, positions,
                                                                                jax.random.split(key, R))
    check_positions("positions", states)  # values of the (vmapped, hence traced) inner inits
    walker = jnp.arange(R, dtype=jnp.int32)
    last_end, trips = _update_ends(walker, jnp.zeros(R, jnp.int32), jnp.zeros(R, jnp.int32))
    return ReplicaExchangeState(states, walker, last_end, trips, jnp.zeros((), jnp.int32))


def replica_exchange_init(make_algorithm: Callable[[Any], SamplingAlgorithm], betas, positions,
                          key=None) -> ReplicaExchangeState:
    """The replica-exchange state of ``positions`` stacked over the ``R`` slots of ``betas``:
    slot ``r`` holds ``make_algorithm(betas[r]).init(positions[r], key_r)``, with ``key_r`` the
    ``r``-th of ``jax.random.split(key, R)`` (no key is passed when ``key`` is None, for
    samplers whose init draws nothing). The same as ``replica_exchange(make_algorithm,
    betas).init(positions, key)``."""
    _check_make_algorithm(make_algorithm)
    return _init(make_algorithm, ladder("betas", betas), positions, key)


def replica_exchange(make_algorithm: Callable[[Any], SamplingAlgorithm], betas) -> SamplingAlgorithm:
    """Meta-kernel: ``make_algorithm(beta)`` builds the sampler at one inverse temperature
    (beta may be traced); it must return a ``SamplingAlgorithm`` (``ValueError`` naming
    ``make_algorithm`` otherwise, from ``init`` or ``step``).

    ``betas`` is a ladder: at least 2 finite inverse temperatures > 0, strictly monotone.

    Returns:
      ``SamplingAlgorithm`` over :class:`ReplicaExchangeState`, info
      :class:`ReplicaExchangeInfo`. ``init(positions, key=None)`` takes positions stacked
      over the R slots and gives slot ``r`` the ``r``-th of ``jax.random.split(key, R)``
      (see :func:`replica_exchange_init`); the key is needed when the inner sampler's init draws
      (``rbm_gibbs``).
    """
    _check_make_algorithm(make_algorithm)
    betas = ladder("betas", betas)
    R = betas.shape[0]

    def init(positions, key=None):
        return _init(make_algorithm, betas, positions, key)

    def step(key, state):
        k_inner, k_swap = jax.random.split(key)
        states, infos = jax.vmap(lambda b, k, s: _make(make_algorithm, b).step(k, s))(
            betas, jax.random.split(k_inner, R), state.states)
        lw = getattr(states, "log_weight", None)
        if lw is None or np.shape(lw) != (R,):
            raise ValueError("make_algorithm(beta) must build samplers whose states carry a scalar log_weight (the "
                             "log weight at beta = 1, which the swaps compare); got a state of type "
                             f"{type(states).__name__}" + ("" if lw is None else f" with log_weight of shape "
                                                         f"{np.shape(lw)[1:]}") + ".")
        log_prob = (betas[:-1] - betas[1:]) * (lw[1:] - lw[:-1])
        attempted = (jnp.arange(R - 1) % 2) == (state.count % 2)
        u = jax.random.uniform(k_swap, (R - 1,), lw.dtype)
        accepted = attempted & (jnp.log(u) < log_prob)
        acc = accepted.astype(jnp.int32)
        # disjoint pairs: slot i takes i+1's state if pair i swaps, i+1 takes i's
        perm = jnp.arange(R) + jnp.pad(acc, (0, 1)) - jnp.pad(acc, (1, 0))
        states = jax.tree_util.tree_map(lambda a: a[perm], states)
        walker = state.walker[perm]
        last_end, trips = _update_ends(walker, state.last_end, state.round_trips)
        info = ReplicaExchangeInfo(attempted, accepted, jnp.minimum(1.0, jnp.exp(log_prob)), infos)
        return ReplicaExchangeState(states, walker, last_end, trips, state.count + 1), info

    return SamplingAlgorithm(init, step)


def adapt_ladder(betas, acceptance, damping: float = 0.5, floor: float = 1e-3) -> np.ndarray:
    """Moves the interior inverse temperatures so that neighbouring swap rates become equal.

    Each interval is weighted by its rejection mass ``max(1 - acceptance_i, floor)``; the new
    ladder puts equal mass in every interval (inverting the piecewise-linear cumulative mass),
    then moves a fraction ``damping`` of the way there. The end points stay fixed.

    ``betas``: a ladder (at least 2 finite inverse temperatures > 0, strictly monotone);
    ``acceptance``: ``(R - 1,)`` swap rates in [0, 1]; ``damping`` in [0, 1]; ``floor`` in (0, 1].
    """
    ladder("betas", betas)
    probability("acceptance", acceptance)
    betas, acceptance = np.asarray(betas, np.float64), np.asarray(acceptance, np.float64)
    if np.shape(acceptance) != (betas.shape[0] - 1,):
        raise ValueError(f"acceptance must have shape ({betas.shape[0] - 1},) (one swap rate per neighbouring pair "
                         f"of betas); got {np.shape(acceptance)}.")
    damping = finite_scalar("damping", damping, minimum=0.0, maximum=1.0)
    floor = positive_scalar("floor", floor)
    if floor > 1:
        raise ValueError(f"floor must be <= 1; got {floor}.")
    mass = np.maximum(1.0 - acceptance, floor)
    cumulative = np.concatenate([[0.0], np.cumsum(mass)])
    targets = np.linspace(0.0, cumulative[-1], len(betas))
    proposal = np.interp(targets, cumulative, betas)
    new = (1 - damping) * betas + damping * proposal
    new[0], new[-1] = betas[0], betas[-1]
    return new


def tune_ladder(key, make_algorithm, betas, positions, *, num_rounds: int = 10, steps_per_round: int = 200,
                damping: float = 0.5):
    """Adaptive ladder: alternates replica-exchange runs and :func:`adapt_ladder` until the
    swap rates are equal. Returns ``(betas, acceptance_history (num_rounds, R-1), positions)``.

    Each round starts from the positions (``(R, n)``) the last one ended at, initialising the
    states with a key folded from the round's key (so samplers whose init draws, such as
    ``rbm_gibbs``, work too). Each round runs one compiled program (cached on
    ``make_algorithm`` and ``steps_per_round``; the ladder is an argument, so the rounds
    share it)."""
    key = prng_key("key", key)
    ladder("betas", betas)
    betas = np.asarray(betas, np.float64)
    num_rounds, steps_per_round = count("num_rounds", num_rounds), count("steps_per_round", steps_per_round)
    damping = finite_scalar("damping", damping, minimum=0.0, maximum=1.0)
    replica_exchange(make_algorithm, jnp.asarray(betas, jnp.float32)).init(positions, key)  # validates positions
    history = []
    for k in jax.random.split(key, num_rounds):
        positions, accepted, attempted = _tune_round(k, jnp.asarray(betas, jnp.float32), positions,
                                                     make_algorithm=make_algorithm, num_steps=steps_per_round)
        accepted, attempted = np.asarray(accepted), np.asarray(attempted)
        acceptance = accepted.sum(0) / np.maximum(attempted.sum(0), 1)
        history.append(acceptance)
        betas = adapt_ladder(betas, acceptance, damping)
    return betas, np.array(history), positions


def _swaps(state, info):
    return info.swap_accepted, info.swap_attempted


@functools.partial(jax.jit, static_argnames=("make_algorithm", "num_steps"))
def _tune_round(key, betas, positions, *, make_algorithm, num_steps):
    algo = replica_exchange(make_algorithm, betas)
    state = algo.init(positions, jax.random.fold_in(key, 1))
    state, (accepted, attempted) = run_chain(key, algo, state, num_steps, trace_fn=_swaps)
    return state.states.x, accepted, attempted
