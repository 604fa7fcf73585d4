"""The streaming fold: a running max-shifted, Kahan-compensated log-sum-exp over chunks of
states, with weighted statistics carried along, and its sharding across devices.

Every engine (generic, split, bipartite) supplies a ``chunk_step(i, fold, operands) -> fold``
that builds chunk ``i``'s log weights and calls :func:`fold_update`; :func:`run_fold` loops it
over the chunks on one device or shards the chunk range across several.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxebm._numerics import HIGHEST
from jaxebm.types import Array, PyTree


class Fold(NamedTuple):
    m: Array  # running max, scalar
    s: Array  # running sum of exp(L - m), scalar
    comp: Array  # Kahan compensation of s, scalar
    accs: PyTree  # running sums of exp(L - m) * statistic


def fold_init(dtype, accs) -> Fold:
    zero = jnp.zeros((), dtype)
    return Fold(jnp.full((), -jnp.inf, dtype), zero, zero, accs)


def safe_shift(m):
    """The shift ``m``, or 0 where ``m`` is not finite (an empty or all -inf fold)."""
    return jnp.where(jnp.isfinite(m), m, jnp.zeros_like(m))


def fold_update(state: Fold, L: Array, contributions: Callable[[Array], PyTree]) -> Fold:
    """Adds one chunk of log weights ``L`` (any shape) to the running fold;
    ``contributions(P)`` maps the chunk's shifted weights ``P = exp(L - shift)`` to the
    statistics' sums (the shift is :func:`safe_shift` of the new running max)."""
    mn = jnp.maximum(state.m, jnp.max(L))
    shift = safe_shift(mn)
    scale = jnp.exp(state.m - shift)
    P = jnp.exp(L - shift)
    # Kahan: (s, comp) <- (s, comp) * scale, then add sum(P).
    s, comp = state.s * scale, state.comp * scale
    y = jnp.sum(P) - comp
    t = s + y
    comp = (t - s) - y
    accs = jax.tree_util.tree_map(lambda a, d: a * scale + d, state.accs, contributions(P))
    return Fold(mn, t, comp, accs)


def fold_finish(state: Fold, axis_name: str | None = None):
    """Returns (log Z, accs / Z) from a fold, combining across ``axis_name`` if given."""
    m, s, accs = state.m, state.s - state.comp, state.accs
    if axis_name is not None:
        M = lax.pmax(m, axis_name)
        factor = jnp.exp(m - safe_shift(M))
        s = lax.psum(s * factor, axis_name)
        accs = jax.tree_util.tree_map(lambda a: lax.psum(a * factor, axis_name), accs)
        m = M
    log_z = m + jnp.log(s)
    return log_z, jax.tree_util.tree_map(lambda a: a / s, accs)


def run_fold(chunk_step: Callable, init_accs: PyTree, num_chunks: int, dtype,
             operands: PyTree, devices: tuple):
    """Runs ``chunk_step(i, fold, operands) -> fold`` over chunk indices ``0..num_chunks-1``
    and returns ``(log Z, accs / Z)``.

    On one device this is a ``fori_loop``. On ``D > 1`` devices it is a ``shard_map``:
    device ``d`` handles chunks ``d, d + D, ...`` and the folds combine with pmax/psum.
    """
    num_devices = len(devices)
    if num_devices == 1 or num_chunks == 1:
        def body(i, fold):
            return chunk_step(i, fold, operands)

        fold = lax.fori_loop(0, num_chunks, body, fold_init(dtype, init_accs))
        return fold_finish(fold)

    from jax.sharding import Mesh, PartitionSpec

    mesh = Mesh(np.asarray(devices), ("states",))
    trips = -(-num_chunks // num_devices)

    def per_device(ops):
        first = lax.axis_index("states")

        def body(k, fold):
            i = first + k * num_devices
            return lax.cond(i < num_chunks, lambda f: chunk_step(i, f, ops), lambda f: f, fold)

        fold = lax.fori_loop(0, trips, body, fold_init(dtype, init_accs))
        return fold_finish(fold, axis_name="states")

    specs = jax.tree_util.tree_map(lambda _: PartitionSpec(), operands)
    sharded = jax.shard_map(per_device, mesh=mesh, in_specs=(specs,), out_specs=PartitionSpec(),
                            check_vma=False)
    return sharded(operands)


# Blocked sums: float32 rounding then grows with ~2 * 2^(k/2) terms instead of 2^k (a plain
# reduction over 2^12 inner states drifts ~1e-5).


def blocks(k: int) -> tuple[int, int]:
    """Splits a power-of-two length ``2^k`` into two levels for blocked summation."""
    return 2 ** (k // 2), 2 ** (k - k // 2)


def blocked_sum_last(P: Array, k: int) -> Array:
    """Sum over the last axis (length ``2^k``) in two levels."""
    a, b = blocks(k)
    return jnp.sum(jnp.sum(P.reshape(P.shape[:-1] + (a, b)), axis=-1), axis=-1)


def blocked_matmul(P: Array, X: Array, k: int) -> Array:
    """``P @ X`` contracting a length-``2^k`` axis in two levels (see :func:`blocked_sum_last`)."""
    a, b = blocks(k)
    partial = jnp.einsum("...ab,abn->...an", P.reshape(P.shape[:-1] + (a, b)),
                         X.reshape(a, b, -1), precision=HIGHEST)
    return jnp.sum(partial, axis=-2).reshape(P.shape[:-1] + X.shape[1:])
