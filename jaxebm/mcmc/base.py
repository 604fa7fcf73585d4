"""The sampler interface (blackjax style) and the chain driver.

A sampler is ``SamplingAlgorithm(init, step)``: ``init(position, key=None) -> state`` and
``step(key, state) -> (state, info)``, both pure and not jitted (the caller jits). Every
sampler module exports its state and info NamedTuples, the factory returning the
``SamplingAlgorithm`` and the factory's init as a function (``metropolis_init``,
``heat_bath_init``, ``rbm_gibbs_init``, ``replica_exchange_init``: blackjax's module-level
``init``, named after the sampler since :mod:`jaxebm.mcmc.metropolis` is shadowed by the
function of that name); every state has the spins ``x`` and the log weight at beta = 1,
``log_weight``. ``init`` takes the key second, as blackjax's ``init(position,
rng_key=None)``, and needs it only where the state holds a random draw (``rbm_gibbs``: the
hidden units; a ``ValueError`` naming ``key`` otherwise); the other samplers ignore it.
Chains are a ``vmap`` over keys and states; steps are a ``lax.scan`` over split keys.
"""

from __future__ import annotations

import contextlib
import functools
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
from jax import lax

from jaxebm._validation import count, device_tuple, prng_key
from jaxebm.mcmc._checks import check_positions
from jaxebm.types import PRNGKey

__all__ = ["SamplingAlgorithm", "run_chain", "run_chains", "trace_positions"]


class SamplingAlgorithm(NamedTuple):
    """``init(position, key=None) -> state``; ``step(key, state) -> (state, info)``.

    ``init`` needs ``key`` only when the state holds a random draw (``rbm_gibbs``); replica
    exchange and AIS always pass one, so a sampler written for them accepts it."""

    init: Callable[..., Any]
    step: Callable[[PRNGKey, Any], tuple[Any, Any]]


def trace_positions(state, info):
    """The default ``trace_fn`` of :func:`run_chain` and :func:`run_chains`: the spins ``state.x``
    (``(n,)``; for replica exchange ``state.states.x``, ``(R, n)`` over the temperature slots).
    A state without ``x`` needs its own ``trace_fn``."""
    del info
    inner = getattr(state, "states", None)
    if inner is not None and hasattr(inner, "x"):  # ReplicaExchangeState
        return inner.x
    if not hasattr(state, "x"):
        raise ValueError(f"the default trace_fn records state.x, which a {type(state).__name__} lacks; pass "
                         "trace_fn=lambda state, info: ... to say what to record.")
    return state.x


def run_chain(key: PRNGKey, algorithm: SamplingAlgorithm, state, num_steps: int, thin: int = 1, *,
              trace_fn: Callable[[Any, Any], Any] | None = None, num_chunks: int = 1, progress: bool = False):
    """Runs ``num_steps`` steps of one chain as a ``lax.scan``, recording the spins of every
    ``thin``-th state (by default; ``trace_fn`` records anything else).

    Args:
      key: PRNG key.
      algorithm: the sampler.
      state: initial state (from ``algorithm.init``).
      num_steps: number of steps; a multiple of ``thin * num_chunks``.
      thin: record one of every ``thin`` steps.
      trace_fn: ``(state, info) -> pytree`` to record after every ``thin``-th step (the info
        of that step). Default :func:`trace_positions`: the spins ``state.x`` only, since a
        whole state can be several times larger (a :class:`~jaxebm.mcmc.SpinState` also
        holds the local fields). To record more, e.g. the whole state and info, pass
        ``trace_fn=lambda state, info: (state, info)``; to record nothing (only the final
        state), ``lambda state, info: ()``.
      num_chunks: split the run into this many compiled chunks; with ``progress=True`` a line
        is printed between chunks (never inside jit).
      progress: print progress between chunks.

    Returns:
      ``(final_state, trace)`` with ``trace`` stacked over ``num_steps // thin`` records, by
      default of shape ``(num_steps // thin, n)`` (``(num_steps // thin, R, n)`` for replica
      exchange). For many chains, ``jax.vmap`` this over keys and states.

    ``num_steps``, ``thin`` and ``num_chunks`` are positive integer counts and ``trace_fn`` a
    function or None (``ValueError`` otherwise). ``state`` must be a state of ``algorithm``:
    a bare array of spins (a position, not a state) gives a ``ValueError`` naming ``state``
    that says to call ``algorithm.init(position)``. The spins of a jaxebm sampler state
    (``SpinState``, ``MetropolisState``, ``RBMState``, ``ReplicaExchangeState``) must be finite
    and +-1: checked here when concrete, since a start built by ``jax.vmap(algorithm.init)``
    was traced inside ``init``.
    """
    key = prng_key("key", key)
    num_steps, thin, num_chunks = _check_steps(algorithm, num_steps, thin, num_chunks)
    trace_fn = _check_trace_fn(trace_fn)
    check_positions("state", state)
    with _state_hint("state", state):
        return _run_chain(key, algorithm, state, num_steps, thin, trace_fn, num_chunks, progress)


def _run_chain(key, algorithm, state, num_steps, thin, trace_fn, num_chunks=1, progress=False):
    """The body of :func:`run_chain`, on checked arguments."""

    def one_record(state, key):
        def inner(state, key):
            state, info = algorithm.step(key, state)
            return state, info

        state, infos = lax.scan(inner, state, jax.random.split(key, thin))
        last_info = jax.tree_util.tree_map(lambda a: a[-1], infos)
        return state, trace_fn(state, last_info)

    per_chunk = num_steps // (thin * num_chunks)

    def chunk(state, key):
        return lax.scan(one_record, state, jax.random.split(key, per_chunk))

    if num_chunks == 1:
        return chunk(state, key)
    traces = []
    for i, k in enumerate(jax.random.split(key, num_chunks)):
        state, trace = chunk(state, k)
        traces.append(trace)
        if progress:
            print(f"  run_chain: chunk {i + 1}/{num_chunks} ({(i + 1) * num_steps // num_chunks} steps)", flush=True)
    return state, jax.tree_util.tree_map(lambda *a: jax.numpy.concatenate(a), *traces)


def run_chains(key: PRNGKey, algorithm: SamplingAlgorithm, states, num_steps: int, thin: int = 1, *,
               trace_fn: Callable[[Any, Any], Any] | None = None, num_chunks: int = 1, progress: bool = False,
               devices=None):
    """Runs many independent chains (a ``vmap`` of :func:`run_chain`), jitted, with the chain
    axis sharded across ``devices``.

    Chain ``c`` uses the ``c``-th key of ``jax.random.split(key, num_chains)`` whatever the
    device count, so results do not depend on the sharding. On ``D > 1`` devices the chains
    are split into ``D`` contiguous blocks by ``jax.shard_map``; nothing is communicated.

    Args:
      key: PRNG key.
      algorithm: the sampler.
      states: initial states with a leading chain axis, e.g. ``jax.vmap(algorithm.init)(x0)``,
        or ``jax.vmap(algorithm.init)(x0, jax.random.split(key_init, num_chains))`` for a
        sampler whose ``init`` draws (``rbm_gibbs``).
      num_steps, thin, trace_fn: as :func:`run_chain`; by default the trace is the spins
        (:func:`trace_positions`).
      num_chunks, progress: run as this many compiled chunks, printing progress between them.
      devices: devices to shard the chains across (default: all local devices): a non-empty
        sequence of distinct ``jax.Device``s (``ValueError`` naming ``devices`` otherwise); the
        number of chains must be a multiple of their count.

    Returns:
      ``(final_states, traces)``, traces of shape ``(num_chains, num_steps // thin, ...)``:
      by default ``(num_chains, num_steps // thin, n)``, e.g. 0.4 GB in float32 for 1000
      chains of a 32 x 32 lattice over 100 sweeps, half of what the whole states would take.

    Several processes or hosts: after ``jax.distributed.initialize(...)`` on every process (on
    CPU with ``jax.config.update("jax_cpu_collectives_implementation", "gloo")`` first), every
    process calls ``run_chains`` with the same ``key`` and arguments and
    ``devices=jax.devices()``. ``states`` is either the same full value on every process (host
    arrays, or jax arrays not committed to a device), or a global array sharded over the chain
    axis (each process builds its own chains' states and calls
    ``jax.make_array_from_process_local_data(NamedSharding(Mesh(devices, ("chains",)),
    PartitionSpec("chains")), local_states)``). The outputs are global arrays, each process
    holding its own chains (``addressable_shards``); to read all chains on every process, use
    ``jax.experimental.multihost_utils.process_allgather(traces, tiled=True)``. The chains equal
    those of a single-process run bit for bit. Arrays committed to one local device (e.g. by
    ``jax.device_put``) are refused by JAX; pass host arrays instead.

    The compiled program is cached on ``(algorithm, trace_fn, num_steps, thin, devices)``:
    pass the same objects (not a fresh ``lambda``) to reuse it across calls.
    """
    key = prng_key("key", key)
    leaves = jax.tree_util.tree_leaves(states)
    if not leaves or any(np.ndim(a) < 1 for a in leaves):
        raise ValueError("states must carry a leading chain axis (e.g. jax.vmap(algorithm.init)(x0)).")
    trace_fn = _check_trace_fn(trace_fn)  # one object: the compile cache below is keyed on it
    num_chains = leaves[0].shape[0]
    devices = device_tuple("devices", devices)
    if num_chains % len(devices):
        raise ValueError(f"the number of chains ({num_chains}) must be a positive multiple of the number of "
                         f"devices ({len(devices)}); pass devices= to use fewer.")
    num_steps, thin, num_chunks = _check_steps(algorithm, num_steps, thin, num_chunks)
    check_positions("states", states)
    steps = num_steps // num_chunks
    many = functools.partial(_many_chains, algorithm=algorithm, num_steps=steps, thin=thin, trace_fn=trace_fn,
                             devices=devices)
    traces = []
    for i, k in enumerate(jax.random.split(key, num_chunks)):
        with _state_hint("states", states):
            states, trace = many(jax.random.split(k, num_chains), states)
        traces.append(trace)
        if progress and num_chunks > 1:
            print(f"  run_chains: chunk {i + 1}/{num_chunks} ({(i + 1) * steps} steps)", flush=True)
    if num_chunks == 1:
        return states, traces[0]
    return states, jax.tree_util.tree_map(lambda *a: jax.numpy.concatenate(a, axis=1), *traces)


def _check_trace_fn(trace_fn):
    if trace_fn is None:
        return trace_positions
    if not callable(trace_fn):
        raise ValueError(f"trace_fn must be a function (state, info) -> pytree to record, or None for the spins; "
                         f"got {type(trace_fn).__name__}.")
    return trace_fn


def _is_bare_array(x) -> bool:
    """An array (or a list of numbers): a position, not a sampler state."""
    return isinstance(x, (jax.Array, np.ndarray)) or (isinstance(x, list) and all(isinstance(v, numbers.Number)
                                                                                   for v in x))


@contextlib.contextmanager
def _state_hint(name: str, state):
    """Turns the error a sampler's ``step`` raises on a bare array (a position passed where a
    state is expected: an ``AttributeError``, or the built-in samplers' ``ValueError`` about
    ``state``) into a ``ValueError`` naming ``name``. Costs nothing when the chain runs."""
    try:
        yield
    except (AttributeError, ValueError) as err:
        if not _is_bare_array(state):
            raise
        raise ValueError(f"{name} must be a state of the algorithm, from algorithm.init(position) "
                         f"(jax.vmap(algorithm.init)(positions) for many chains); got a bare array of shape "
                         f"{np.shape(state)}, which the sampler's step cannot read ({err}).") from err


def _check_steps(algorithm, num_steps, thin, num_chunks) -> tuple[int, int, int]:
    if not (hasattr(algorithm, "init") and callable(getattr(algorithm, "step", None))):
        raise ValueError(f"algorithm must be a SamplingAlgorithm(init, step); got {type(algorithm).__name__}.")
    num_steps, thin, num_chunks = count("num_steps", num_steps), count("thin", thin), count("num_chunks", num_chunks)
    if num_steps % (thin * num_chunks):
        raise ValueError(f"num_steps ({num_steps}) must be a positive multiple of thin * num_chunks "
                         f"({thin} * {num_chunks}).")
    return num_steps, thin, num_chunks


@functools.partial(jax.jit, static_argnames=("algorithm", "num_steps", "thin", "trace_fn", "devices"))
def _many_chains(keys, states, *, algorithm, num_steps, thin, trace_fn, devices):
    """Jitted body of :func:`run_chains`; static arguments key the compilation cache, so calls
    with the same algorithm object compile once."""

    def many(keys, states):
        return jax.vmap(lambda k, s: _run_chain(k, algorithm, s, num_steps, thin, trace_fn))(keys, states)

    if len(devices) > 1:
        from jax.sharding import Mesh, PartitionSpec

        mesh = Mesh(np.asarray(devices), ("chains",))
        spec = PartitionSpec("chains")
        many = jax.shard_map(many, mesh=mesh, in_specs=(spec, spec), out_specs=spec, check_vma=False)
    return many(keys, states)
