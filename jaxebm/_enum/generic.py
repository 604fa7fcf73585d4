"""The generic engine: exact sums over all ``2^n`` states for any ``log_weight_fn: (B, n) -> (B,)``.

Chunks of ``2^c`` states are generated from their codes inside the compiled loop and folded
by :mod:`jaxebm._enum.fold`; the user's functions are traced once per call and the compiled
fold is cached on the traced program.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxebm import _cache
from jaxebm._enum.budget import GENERIC_CHUNK_BYTES, check_enumerable, per_backend
from jaxebm._enum.codes import chunk_states, float_dtype
from jaxebm._enum.fold import fold_update, run_fold
from jaxebm._numerics import HIGHEST
from jaxebm._validation import count, device_tuple, is_concrete, power_of_two
from jaxebm.types import Array, PyTree


def _generic_chunk_bits(n: int, chunk_size: int | None, stat_width: int = 0) -> int:
    if chunk_size is not None:
        return min(n, chunk_size.bit_length() - 1)
    budget = per_backend(GENERIC_CHUNK_BYTES)
    per_state = 4 * (2 * n + 2 + stat_width)
    c = int(math.floor(math.log2(max(1, budget // per_state))))
    # Keep the chunk index within 31 bits.
    return max(min(n, c), n - 31, 0)


def _generic(log_weight_fn, stat_fn, n, chunk_size, max_seconds, devices, dtype, second_moment=False):
    """Validates eagerly, traces the user functions, and runs the cached jitted fold."""
    if not callable(log_weight_fn):
        raise ValueError(f"log_weight_fn must be a callable (B, n) -> (B,); got {type(log_weight_fn).__name__}.")
    stat_name = "feature_fn" if second_moment else "stat_fn"
    if stat_fn is not None and not callable(stat_fn):
        raise ValueError(f"{stat_name} must be a callable of a (B, n) batch of states; got {type(stat_fn).__name__}.")
    n = count("n", n)
    devices = device_tuple("devices", devices)
    chunk_size = None if chunk_size is None else power_of_two("chunk_size", chunk_size)
    dtype = float_dtype(dtype) if dtype is not None else jnp.zeros(()).dtype
    check_enumerable(n, max_seconds=max_seconds, pairwise=False, num_devices=len(devices))
    probe = jax.ShapeDtypeStruct((2, n), dtype)
    out = jax.eval_shape(log_weight_fn, probe)
    if not hasattr(out, "shape") or out.shape != (2,):
        raise ValueError(
            f"log_weight_fn must map a (B, n) batch of states to (B,) log weights; for B = 2 "
            f"it returned shape {getattr(out, 'shape', type(out).__name__)}."
        )
    flops = 0.0
    if stat_fn is not None:
        stat_shapes = jax.eval_shape(stat_fn, probe)
        leaves = jax.tree_util.tree_leaves(stat_shapes)
        if not all(hasattr(s, "shape") and s.shape[:1] == (2,) for s in leaves):
            raise ValueError(f"{stat_name} must map a (B, n) batch of states to arrays with leading axis B; for "
                             f"B = 2 it returned {stat_shapes}.")
        stat_width = sum(int(np.prod(s.shape[1:])) for s in leaves)
        if second_moment:
            if not (hasattr(stat_shapes, "shape") and len(stat_shapes.shape) == 2):
                raise ValueError("feature_fn must map (B, n) states to a (B, p) array of features; got "
                                 f"{stat_shapes}.")
            flops = 2.0 * stat_width**2
            stat_width = 2 * stat_width
    else:
        stat_width = 0
    if flops:
        p = stat_width // 2
        check_enumerable(n, max_seconds=max_seconds, pairwise=False, num_devices=len(devices),
                         flops_per_state=flops, detail=f" with a {p} x {p} second moment each")
    dtype = jnp.result_type(dtype, out.dtype)
    c = _generic_chunk_bits(n, chunk_size, stat_width)
    fns = (log_weight_fn,) if stat_fn is None else (log_weight_fn, stat_fn)
    # Closed-over arrays (e.g. parameters being differentiated) become explicit operands, so
    # the same code runs inside shard_map, and the compiled fold is reused by the next call
    # whose functions trace to the same program (new closures over new values included).
    traced, consts = _cache.trace(lambda x: tuple(f(x) for f in fns), jax.ShapeDtypeStruct((2**c, n), dtype))
    return _generic_fold(consts, traced=traced, n=n, c=c, dtype=dtype, devices=devices,
                         has_stat=stat_fn is not None, second_moment=second_moment)


@functools.partial(jax.jit, static_argnames=("traced", "n", "c", "dtype", "devices", "has_stat", "second_moment"))
def _generic_fold(consts, *, traced, n, c, dtype, devices, has_stat, second_moment):
    num_chunks = 2 ** (n - c)
    if not has_stat:
        init_accs = ()
    elif second_moment:
        p = traced.out_shape[1].shape[1]
        init_accs = (jnp.zeros((p,), dtype), jnp.zeros((p, p), dtype))
    else:
        init_accs = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape[1:], dtype), traced.out_shape[1])

    @jax.checkpoint  # reverse mode stores only the fold per chunk, never the states
    def chunk_step(i, fold, ops):
        x = chunk_states(i, n, c, dtype)
        outs = traced(ops, x)
        L = outs[0].astype(dtype)
        if not has_stat:
            return fold_update(fold, L, lambda P: ())
        stats = outs[1]
        if second_moment:
            phi = stats.astype(dtype)

            def moments(P):
                weighted = phi * P[:, None]
                return (jnp.sum(weighted, axis=0), jnp.dot(phi.T, weighted, precision=HIGHEST))

            return fold_update(fold, L, moments)

        def contributions(P):
            return jax.tree_util.tree_map(
                lambda s: jnp.tensordot(P, s.astype(dtype), axes=(0, 0), precision=HIGHEST), stats)

        return fold_update(fold, L, contributions)

    return run_fold(chunk_step, init_accs, num_chunks, dtype, tuple(consts), devices)


def _refuse_nan(value, name: str, what: str) -> None:
    """Raises when a concrete result is NaN: the user's function produced NaN for some state."""
    for leaf in jax.tree_util.tree_leaves(value):
        if is_concrete(leaf) and np.isnan(np.asarray(leaf)).any():
            raise ValueError(f"{name} returned NaN for some state, so {what} is NaN; check it for NaN "
                             "(or 0 * inf) at every +-1 configuration.")


def log_sum_exp_states(log_weight_fn: Callable[[Array], Array], n: int, *,
                       chunk_size: int | None = None, max_seconds: float | None = None,
                       devices: Sequence | None = None, dtype=None) -> Array:
    r"""Exact :math:`\log \sum_{x \in \{-1,+1\}^n} \exp(\log w(x))` by streaming enumeration.

    .. math:: \log Z = \log \sum_x e^{\log w(x)} \qquad \text{Eq. (2.5)}

    States are generated chunk by chunk from their codes inside the compiled loop and
    combined with a running max-shifted, Kahan-compensated log-sum-exp; all ``2^n`` states
    are never held. Differentiable: reverse mode rematerialises each chunk
    (``jax.checkpoint``), so memory stays O(chunk).

    Compiles once: ``log_weight_fn`` is traced (not compiled) on every call and the compiled
    fold is cached on the traced program, so a new closure over new parameter values of the
    same shapes reuses it. Arguments are validated eagerly (a NaN log Z, i.e. a function
    that returns NaN for some state, raises); under a caller's ``jit`` values cannot raise.

    Args:
      log_weight_fn: maps a ``Float[Array, "B n"]`` batch of states to ``Float[Array, "B"]``.
      n: number of spins.
      chunk_size: states per chunk, a power of two (default: from a memory budget).
      max_seconds: refuse (ValueError) if the estimated time exceeds this
        (default :data:`DEFAULT_MAX_SECONDS`).
      devices: devices to shard the state range over (default: all local devices).
      dtype: dtype of the generated states (default: float32, or float64 under x64).

    Returns:
      Scalar :math:`\log Z`.
    """
    log_z, _ = _generic(log_weight_fn, None, n, chunk_size, max_seconds, devices, dtype)
    _refuse_nan(log_z, "log_weight_fn", "log Z")
    return log_z


def expectation_states(log_weight_fn: Callable[[Array], Array], stat_fn: Callable[[Array], PyTree],
                       n: int, *, chunk_size: int | None = None, max_seconds: float | None = None,
                       devices: Sequence | None = None, dtype=None) -> tuple[Array, PyTree]:
    r"""Exact :math:`\log Z` and :math:`\mathbb{E}_q[\phi(x)]` under :math:`q(x) \propto w(x)`.

    .. math:: \mathbb{E}_q[\phi] = \frac{1}{Z} \sum_x w(x)\, \phi(x), \qquad
              q(x) = \frac{w(x)}{Z} \quad \text{Eq. (2.4)-(2.5)}

    Args:
      log_weight_fn: ``(B, n) -> (B,)`` log weights.
      stat_fn: ``(B, n) -> pytree`` of arrays with leading axis ``B`` (the statistic).
      n, chunk_size, max_seconds, devices, dtype: as in :func:`log_sum_exp_states`.

    Returns:
      ``(log_z, expectations)`` where ``expectations`` has ``stat_fn``'s structure without
      the batch axis.
    """
    log_z, expectations = _generic(log_weight_fn, stat_fn, n, chunk_size, max_seconds, devices, dtype)
    _refuse_nan(log_z, "log_weight_fn", "log Z")
    _refuse_nan(expectations, "stat_fn", "its expectation")
    return log_z, expectations


def covariance_states(log_weight_fn: Callable[[Array], Array], feature_fn: Callable[[Array], Array], n: int, *,
                      chunk_size: int | None = None, max_seconds: float | None = None,
                      devices: Sequence | None = None, dtype=None) -> tuple[Array, Array, Array]:
    r"""Exact :math:`\log Z`, :math:`\mathbb{E}_q[f]` and :math:`\mathbb{E}_q[f f^\top]` for a
    vector feature :math:`f: \{-1,+1\}^n \to \mathbb{R}^p`, in one streamed pass.

    Each chunk contributes the matmul :math:`F^\top \mathrm{diag}(P) F` (``F`` the chunk's
    ``(C, p)`` features), so e.g. the Fisher information of an exponential family costs
    :math:`O(2^n p^2)` flops at matmul speed.

    Args:
      feature_fn: ``(B, n) -> (B, p)``.
      other arguments: as in :func:`log_sum_exp_states`.

    Returns:
      ``(log_z, mean (p,), second_moment (p, p))``.
    """
    log_z, (mean, second) = _generic(log_weight_fn, feature_fn, n, chunk_size, max_seconds, devices, dtype,
                                     second_moment=True)
    _refuse_nan(log_z, "log_weight_fn", "log Z")
    _refuse_nan((mean, second), "feature_fn", "its moments")
    return log_z, mean, second

