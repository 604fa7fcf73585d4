r"""Exact enumeration over all :math:`2^n` states of :math:`n` spins :math:`x \in \{-1,+1\}^n`.

This module is jaxebm's ground truth. It computes partition functions (Eq. (2.5))

.. math:: \log Z = \log \sum_{x \in \{-1,+1\}^n} \exp(\log w(x))

and exact expectations under :math:`q(x) = w(x) / Z`, streaming over chunks of states
generated from integer codes *inside* the compiled computation, so that no more than one
chunk is ever held in memory. Chunks are combined with a max-shifted running
log-sum-exp whose sum is Kahan-compensated, so float32 stays accurate over ``2^32`` terms.

Two engines:

* a **generic** one for any ``log_weight_fn: (B, n) -> (B,)``
  (:func:`log_sum_exp_states`, :func:`expectation_states`);
* a **split** one for pairwise models :math:`\log w(x) = \tfrac12 x^\top J x + h^\top x`
  (:func:`pairwise_log_partition`, :func:`pairwise_moments`). With
  :math:`x = (x_B, x_A)` it precomputes the :math:`2^{|B|}` inner states once; the cross term
  of a chunk of :math:`C` outer states is the matmul
  :math:`(C \times |A|)(|A| \times |B|)(|B| \times 2^{|B|})`, so each state costs
  :math:`O(|B|)` flops plus one ``exp``. Matmuls use ``Precision.HIGHEST``: GPU float32
  matmuls otherwise run in TF32 (about 3e-4 error in :math:`\log Z` at n = 20).

State coding: bit ``k`` of a state's code gives spin ``k`` (bit 1 -> +1, bit 0 -> -1). The
split engine's inner block holds spins ``0 .. |B|-1`` (the low bits) and the chunk index
supplies the high bits, so codes never need more than 32 bits per word, even beyond
``n = 32``.

With ``engine="pallas"`` (chosen automatically on GPU) each chunk's rows are reduced by the
fused kernel of :mod:`jaxebm.kernels`, so the ``(C, 2^{|B|})`` tile of log weights never
reaches memory; the fold across chunks is the same.

When several devices are visible, the chunk range is sharded across them with
``jax.shard_map``: each device generates its own codes and the partial results combine with
a max-shifted ``psum``.

Several processes or hosts: after ``jax.distributed.initialize(...)`` on every process (on CPU
with ``jax.config.update("jax_cpu_collectives_implementation", "gloo")`` first), pass
``devices=jax.devices()``, which lists every process's devices. Every process must then make
the same call with the same argument values (host arrays, or arrays not committed to a device);
the result is replicated, so each process can read it. The default, ``jax.local_devices()``,
never communicates: each process enumerates everything on its own devices.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxebm import _cache
from jaxebm._numerics import HIGHEST
from jaxebm._validation import (
    array,
    check_finite,
    check_ndim,
    count,
    finite_scalar,
    is_concrete,
    positive_scalar,
)
from jaxebm.types import Array, ArrayLike, PyTree

#: Default limit on the estimated wall time of one enumeration, in seconds.
DEFAULT_MAX_SECONDS = 600.0

#: all_spins refuses to materialise more than this many bytes.
MAX_HELD_BYTES = 2**31

# Rough throughputs (states/s) used only to estimate run time before refusing a request.
# Measured: ~1.4e9 on 2 CPU cores (split engine, README), ~2e11 on one H100.
_PAIRWISE_RATE = {"cpu": 7e8, "gpu": 2e11, "tpu": 1e11}
_GENERIC_SLOWDOWN = 20.0
# Matmul throughput (flop/s) for work that grows with the state count times p^2 (the Fisher
# information's second moment): measured ~5e10 on 2 idle CPU cores at n = 18; halved for a
# shared machine. GPU/TPU: float32 at Precision.HIGHEST.
_MATMUL_FLOPS = {"cpu": 2.5e10, "gpu": 2e13, "tpu": 1e13}

# Memory budgets (elements of the chunk's log-weight matrix) per backend.
_SPLIT_BUDGET_BITS = {"cpu": 20, "gpu": 24, "tpu": 24}
_INNER_BITS = {"cpu": 12, "gpu": 14, "tpu": 14}
_GENERIC_BUDGET_BYTES = {"cpu": 2**24, "gpu": 2**28, "tpu": 2**28}
# Outer states per launch of the fused (Pallas) kernel, as bits.
_PALLAS_CHUNK_BITS = 14

__all__ = [
    "DEFAULT_MAX_SECONDS",
    "SplitPlan",
    "all_spins",
    "check_enumerable",
    "covariance_states",
    "estimate_seconds",
    "expectation_states",
    "log_sum_exp_states",
    "pairwise_log_partition",
    "pairwise_moments",
    "pairwise_row_log_weights",
    "split_plan",
    "spins",
]


# --------------------------------------------------------------------------------------
# Codes -> spins
# --------------------------------------------------------------------------------------


def _bits_to_spins(words: Array, n: int, dtype) -> Array:
    shifts = jnp.arange(n, dtype=jnp.uint32)
    bits = (words[..., None] >> shifts) & jnp.uint32(1)
    return (2 * bits.astype(jnp.int32) - 1).astype(dtype)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _bits_to_spins_jit(words: Array, n: int, dtype) -> Array:
    return _bits_to_spins(words, n, dtype)


def _float_dtype(dtype, name: str = "dtype"):
    try:
        dt = jnp.dtype(dtype)
    except TypeError:
        raise ValueError(f"{name} must be a floating dtype such as jnp.float32; got {dtype!r}.") from None
    if not jnp.issubdtype(dt, jnp.floating):
        raise ValueError(f"{name} must be a floating dtype such as jnp.float32; got {dt}.")
    return dt


def _spin_count(n, maximum: int = 64) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= maximum:
        raise ValueError(f"n must be an integer in [0, {maximum}]; got {n!r}.")
    return int(n)


def _check_codes(name: str, values: np.ndarray, n: int, *, offset: int = 0) -> None:
    """Refuses negative codes and codes with bits set at or above bit ``n`` (``offset``: the
    bit position of this word's bit 0)."""
    if values.size == 0:
        return
    if values.dtype.kind == "i" and values.min() < 0:
        raise ValueError(f"{name} must be non-negative integer codes; got {int(values.min())}.")
    width = n - offset  # bits this word may use
    if width >= 64:
        return
    big = values.astype(np.uint64) >> np.uint64(max(width, 0)) if width > 0 else values.astype(np.uint64)
    if np.any(big):
        bad = int(np.ravel(values)[np.argmax(np.ravel(big) != 0)])
        what = f"a high word {bad} (bits {offset}..{offset + 31})" if offset else f"code {bad}"
        raise ValueError(
            f"{name} must be codes of n = {n} spins, i.e. below 2^{n}; {what} has bits set at or "
            f"above bit {n}. Pass the right n, or mask the codes first."
        )


def spins(codes, n: int, dtype=jnp.float32) -> Array:
    r"""Spin configurations :math:`x \in \{-1,+1\}^n` from integer codes.

    Bit ``k`` of each code gives spin ``k``: 1 -> +1, 0 -> -1.

    Args:
      codes: non-negative integer codes below ``2^n``, of shape ``(...)``. For ``n > 32``
        without x64, pass a pair ``(hi, lo)`` of uint32 arrays (spin ``k < 32`` from ``lo``,
        spin ``k >= 32`` from bit ``k - 32`` of ``hi``), or a NumPy ``uint64`` array, which is
        split on the host. Negative codes and codes with bits set at or above bit ``n`` are
        refused (ValueError) when the codes are concrete; under ``jit`` they cannot be checked
        (the high bits are then ignored).
      n: number of spins, ``0 <= n <= 64``.
      dtype: floating dtype of the result.

    Returns:
      ``Float[Array, "... n"]`` with entries in {-1, +1}.
    """
    n = _spin_count(n)
    dtype = _float_dtype(dtype)
    if isinstance(codes, tuple):
        if len(codes) != 2:
            raise ValueError("codes given as a tuple must be a pair (hi, lo) of uint32 arrays.")
        hi, lo = (array(f"codes[{i}]", c, floating=False, allow_empty=True) for i, c in enumerate(codes))
        for i, word in enumerate((hi, lo)):
            if not jnp.issubdtype(word.dtype, jnp.integer):
                raise ValueError(f"codes[{i}] must be integers; got dtype {word.dtype}.")
            if is_concrete(word):
                host = np.asarray(word)
                _check_codes(f"codes[{i}]", host, 64)
                if np.any(host.astype(np.uint64) >> np.uint64(32)):
                    raise ValueError(f"codes[{i}] must hold 32-bit words (below 2^32).")
        if hi.shape != lo.shape:
            raise ValueError(f"codes (hi, lo) must have the same shape; got {hi.shape} and {lo.shape}.")
        if is_concrete(lo) and n < 32:
            _check_codes("codes", np.asarray(lo), n)
        if is_concrete(hi):
            _check_codes("codes", np.asarray(hi), n, offset=32)
        hi, lo = hi.astype(jnp.uint32), lo.astype(jnp.uint32)
        low = _bits_to_spins_jit(lo, min(n, 32), dtype)
        if n <= 32:
            return low
        return jnp.concatenate([low, _bits_to_spins_jit(hi, n - 32, dtype)], axis=-1)
    if not isinstance(codes, jax.Array):
        try:
            host = np.asarray(codes)
        except (TypeError, ValueError) as err:
            raise ValueError(f"codes must be an array of integers; could not convert it ({err}).") from None
        if host.dtype.kind not in "iu":
            raise ValueError(f"codes must be integers; got dtype {host.dtype}.")
        _check_codes("codes", host, n)
        host = host.astype(np.uint64)
        if n > 32:
            lo = (host & np.uint64(0xFFFFFFFF)).astype(np.uint32)
            hi = (host >> np.uint64(32)).astype(np.uint32)
            return spins((hi, lo), n, dtype)
        return _bits_to_spins_jit(jnp.asarray(host.astype(np.uint32)), n, dtype)
    if not jnp.issubdtype(codes.dtype, jnp.integer):
        raise ValueError(f"codes must be integers; got dtype {codes.dtype}.")
    width = jnp.iinfo(codes.dtype).bits
    if n > width:
        raise ValueError(
            f"codes of dtype {codes.dtype} hold only {width} bits but n = {n}; pass a pair "
            "(hi, lo) of uint32 codes or a NumPy uint64 array."
        )
    if is_concrete(codes):
        _check_codes("codes", np.asarray(codes), n)
    if width == 64:
        lo = (codes & 0xFFFFFFFF).astype(jnp.uint32)
        hi = (codes >> 32).astype(jnp.uint32)
        return spins((hi, lo), n, dtype)
    return _bits_to_spins_jit(codes.astype(jnp.uint32), n, dtype)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _all_spins(n: int, dtype) -> Array:
    return _bits_to_spins(jnp.arange(2**n, dtype=jnp.uint32), n, dtype)


def all_spins(n: int, dtype=jnp.float32) -> Array:
    """All ``2^n`` states as a ``Float[Array, "2^n n"]``, row ``i`` being code ``i``.

    Only for small ``n``: refuses (ValueError) when the result would exceed 2 GiB. Use
    :func:`log_sum_exp_states` / :func:`expectation_states` to stream over larger spaces.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer (the number of spins); got {n!r}.")
    n = int(n)
    dtype = _float_dtype(dtype)
    nbytes = (2**n) * n * dtype.itemsize
    if n > 32 or nbytes > MAX_HELD_BYTES:
        raise ValueError(
            f"all_spins(n={n}) would hold 2^{n} = {2**n:,} states ({nbytes / 2**30:.3g} GiB); "
            f"the limit is {MAX_HELD_BYTES / 2**30:.0f} GiB. Stream with log_sum_exp_states or "
            "expectation_states instead."
        )
    return _all_spins(n, dtype)


# --------------------------------------------------------------------------------------
# Time estimates and refusal
# --------------------------------------------------------------------------------------


def _backend() -> str:
    return jax.default_backend()


def _cpu_scale() -> float:
    import os

    return max(1, os.cpu_count() or 1) / 2


def estimate_seconds(n: int, *, pairwise: bool = True, num_devices: int | None = None,
                     flops_per_state: float = 0.0) -> float:
    """Rough wall time (s) to enumerate ``2^n`` states on the default backend.

    Based on measured throughputs (README performance table); a generic ``log_weight_fn``
    is assumed to be ~20x slower than the split pairwise engine. ``flops_per_state`` adds
    matmul work done for every state (e.g. ``2 p^2`` for the ``p x p`` second moment of
    :func:`covariance_states`), at a measured matmul rate.
    """
    n = count("n", n, minimum=0)
    num_devices = 1 if num_devices is None else count("num_devices", num_devices)
    flops = finite_scalar("flops_per_state", flops_per_state, minimum=0.0)
    backend = _backend()
    rate = _PAIRWISE_RATE.get(backend, _PAIRWISE_RATE["cpu"])
    flop_rate = _MATMUL_FLOPS.get(backend, _MATMUL_FLOPS["cpu"])
    if backend == "cpu":
        rate *= _cpu_scale()
        flop_rate *= _cpu_scale()
    rate *= num_devices
    flop_rate *= num_devices
    if not pairwise:
        rate /= _GENERIC_SLOWDOWN
    return float(2.0**n / rate + 2.0**n * flops / flop_rate)


def _max_seconds(max_seconds) -> float:
    """The time budget: None -> the default; ``math.inf`` means no limit."""
    if max_seconds is None:
        return DEFAULT_MAX_SECONDS
    if isinstance(max_seconds, (int, float, np.integer, np.floating)) and max_seconds == math.inf:
        return math.inf
    return positive_scalar("max_seconds", max_seconds)


def check_enumerable(n: int, *, max_seconds: float | None = None, pairwise: bool = True,
                     num_devices: int | None = None, what: str = "n", flops_per_state: float = 0.0,
                     detail: str = "") -> None:
    """Raise a ValueError, with the state count and an estimated time, if ``2^n`` is too many.

    Args:
      n: number of enumerated spins.
      max_seconds: the time budget (default :data:`DEFAULT_MAX_SECONDS`; ``math.inf``: none).
      pairwise: whether the fast split engine is used (sets the estimated throughput).
      num_devices: devices sharing the work.
      what: the argument name to report.
      flops_per_state: extra matmul work per state (see :func:`estimate_seconds`).
      detail: what that work is, for the message.
    """
    limit = _max_seconds(max_seconds)
    n = count(what, n, minimum=0)
    if n > 63:
        raise ValueError(f"{what} = {n}: 2^{n} states cannot be enumerated (at most 63 spins).")
    seconds = estimate_seconds(n, pairwise=pairwise, num_devices=num_devices, flops_per_state=flops_per_state)
    if seconds > limit:
        raise ValueError(
            f"{what} = {n} means enumerating 2^{n} = {2**n:,} states{detail}, estimated at "
            f"{seconds:,.0f} s on {_backend()} ({num_devices or 1} device(s)); the limit is "
            f"max_seconds={limit:g}. Pass a larger max_seconds to run it anyway, or use a "
            "sampler (jaxebm.mcmc) or AIS."
        )


# --------------------------------------------------------------------------------------
# The streaming fold: running max-shifted, Kahan-compensated log-sum-exp over chunks
# --------------------------------------------------------------------------------------


class _Fold(NamedTuple):
    m: Array  # running max, scalar
    s: Array  # running sum of exp(L - m), scalar
    comp: Array  # Kahan compensation of s, scalar
    accs: PyTree  # running sums of exp(L - m) * statistic


def _fold_init(dtype, accs) -> _Fold:
    zero = jnp.zeros((), dtype)
    return _Fold(jnp.full((), -jnp.inf, dtype), zero, zero, accs)


def _safe_shift(m):
    return jnp.where(jnp.isfinite(m), m, jnp.zeros_like(m))


def _fold_update(state: _Fold, L: Array, contributions: Callable[[Array], PyTree]) -> _Fold:
    """Adds one chunk of log weights ``L`` (any shape) to the running fold."""
    mn = jnp.maximum(state.m, jnp.max(L))
    shift = _safe_shift(mn)
    scale = jnp.exp(state.m - shift)
    P = jnp.exp(L - shift)
    # Kahan: (s, comp) <- (s, comp) * scale, then add sum(P).
    s, comp = state.s * scale, state.comp * scale
    y = jnp.sum(P) - comp
    t = s + y
    comp = (t - s) - y
    accs = jax.tree_util.tree_map(lambda a, d: a * scale + d, state.accs, contributions(P))
    return _Fold(mn, t, comp, accs)


def _fold_finish(state: _Fold, axis_name: str | None = None):
    """Returns (log Z, accs / Z) from a fold, combining across ``axis_name`` if given."""
    m, s, accs = state.m, state.s - state.comp, state.accs
    if axis_name is not None:
        M = lax.pmax(m, axis_name)
        factor = jnp.exp(m - _safe_shift(M))
        s = lax.psum(s * factor, axis_name)
        accs = jax.tree_util.tree_map(lambda a: lax.psum(a * factor, axis_name), accs)
        m = M
    log_z = m + jnp.log(s)
    return log_z, jax.tree_util.tree_map(lambda a: a / s, accs)


def _devices(devices) -> tuple:
    if devices is None:
        devices = jax.local_devices()
    try:
        devices = tuple(devices)
    except TypeError:
        raise ValueError(f"devices must be a sequence of jax devices; got {type(devices).__name__}.") from None
    if not devices:
        raise ValueError("devices must name at least one device.")
    if not all(isinstance(d, jax.Device) for d in devices):
        bad = next(d for d in devices if not isinstance(d, jax.Device))
        raise ValueError(f"devices must hold jax devices (jax.devices()); got {bad!r}.")
    if len(set(devices)) != len(devices):
        raise ValueError("devices must not repeat a device.")
    return devices


def _run_fold(chunk_step: Callable, init_accs: PyTree, num_chunks: int, dtype,
              operands: PyTree, devices: tuple):
    """Runs ``chunk_step(i, fold, operands) -> fold`` over chunk indices ``0..num_chunks-1``.

    On one device this is a ``fori_loop``. On ``D > 1`` devices it is a ``shard_map``:
    device ``d`` handles chunks ``d, d + D, ...`` and the folds combine with pmax/psum.
    """
    num_devices = len(devices)
    if num_devices == 1 or num_chunks == 1:
        def body(i, fold):
            return chunk_step(i, fold, operands)

        fold = lax.fori_loop(0, num_chunks, body, _fold_init(dtype, init_accs))
        return _fold_finish(fold)

    from jax.sharding import Mesh, PartitionSpec

    mesh = Mesh(np.asarray(devices), ("states",))
    trips = -(-num_chunks // num_devices)

    def per_device(ops):
        first = lax.axis_index("states")

        def body(k, fold):
            i = first + k * num_devices
            return lax.cond(i < num_chunks, lambda f: chunk_step(i, f, ops), lambda f: f, fold)

        fold = lax.fori_loop(0, trips, body, _fold_init(dtype, init_accs))
        return _fold_finish(fold, axis_name="states")

    specs = jax.tree_util.tree_map(lambda _: PartitionSpec(), operands)
    sharded = jax.shard_map(per_device, mesh=mesh, in_specs=(specs,), out_specs=PartitionSpec(),
                            check_vma=False)
    return sharded(operands)


# --------------------------------------------------------------------------------------
# Generic engine
# --------------------------------------------------------------------------------------


def _chunk_size(chunk_size) -> int | None:
    if chunk_size is None:
        return None
    chunk_size = count("chunk_size", chunk_size)
    if chunk_size & (chunk_size - 1):
        raise ValueError(f"chunk_size must be a positive power of two; got {chunk_size}.")
    return chunk_size


def _generic_chunk_bits(n: int, chunk_size: int | None, stat_width: int = 0) -> int:
    if chunk_size is not None:
        return min(n, int(_chunk_size(chunk_size)).bit_length() - 1)
    budget = _GENERIC_BUDGET_BYTES.get(_backend(), _GENERIC_BUDGET_BYTES["cpu"])
    per_state = 4 * (2 * n + 2 + stat_width)
    c = int(math.floor(math.log2(max(1, budget // per_state))))
    # Keep the chunk index within 31 bits.
    return max(min(n, c), n - 31, 0)


def _chunk_states(i: Array, n: int, c: int, dtype) -> Array:
    """States of chunk ``i``: low ``c`` bits from the offset, high ``n - c`` bits from ``i``."""
    low = _bits_to_spins(jnp.arange(2**c, dtype=jnp.uint32), c, dtype)
    high = _bits_to_spins(jnp.asarray(i).astype(jnp.uint32), n - c, dtype)
    return jnp.concatenate([low, jnp.broadcast_to(high, (2**c, n - c))], axis=1)


def _generic(log_weight_fn, stat_fn, n, chunk_size, max_seconds, devices, dtype, second_moment=False):
    """Validates eagerly, traces the user functions, and runs the cached jitted fold."""
    if not callable(log_weight_fn):
        raise ValueError(f"log_weight_fn must be a callable (B, n) -> (B,); got {type(log_weight_fn).__name__}.")
    stat_name = "feature_fn" if second_moment else "stat_fn"
    if stat_fn is not None and not callable(stat_fn):
        raise ValueError(f"{stat_name} must be a callable of a (B, n) batch of states; got {type(stat_fn).__name__}.")
    n = count("n", n)
    devices = _devices(devices)
    chunk_size = _chunk_size(chunk_size)
    dtype = _float_dtype(dtype) if dtype is not None else jnp.zeros(()).dtype
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
        x = _chunk_states(i, n, c, dtype)
        outs = traced(ops, x)
        L = outs[0].astype(dtype)
        if not has_stat:
            return _fold_update(fold, L, lambda P: ())
        stats = outs[1]
        if second_moment:
            phi = stats.astype(dtype)

            def moments(P):
                weighted = phi * P[:, None]
                return (jnp.sum(weighted, axis=0), jnp.dot(phi.T, weighted, precision=HIGHEST))

            return _fold_update(fold, L, moments)

        def contributions(P):
            return jax.tree_util.tree_map(
                lambda s: jnp.tensordot(P, s.astype(dtype), axes=(0, 0), precision=HIGHEST), stats)

        return _fold_update(fold, L, contributions)

    return _run_fold(chunk_step, init_accs, num_chunks, dtype, tuple(consts), devices)


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


# --------------------------------------------------------------------------------------
# Split engine for pairwise models
# --------------------------------------------------------------------------------------


class SplitPlan(NamedTuple):
    """How the split engine cuts ``n`` spins: ``inner_bits`` spins are precomputed once,
    and the ``n - inner_bits`` outer spins are enumerated in chunks of ``2^chunk_bits``."""

    n: int
    inner_bits: int
    chunk_bits: int

    @property
    def outer_bits(self) -> int:
        return self.n - self.inner_bits

    @property
    def num_chunks(self) -> int:
        return 2 ** (self.outer_bits - self.chunk_bits)


def split_plan(n: int, *, inner_bits: int | None = None, chunk_size: int | None = None,
               budget_bits: int | None = None, num_devices: int = 1) -> SplitPlan:
    """Chooses inner block and chunk sizes for :func:`pairwise_log_partition` from a memory
    budget of ``2^budget_bits`` elements for a chunk's ``(C, 2^inner_bits)`` log-weight tile."""
    n = count("n", n)
    num_devices = count("num_devices", num_devices)
    chunk_size = _chunk_size(chunk_size)
    backend = _backend()
    budget = _SPLIT_BUDGET_BITS.get(backend, 20) if budget_bits is None else count("budget_bits", budget_bits,
                                                                                    minimum=0)
    if inner_bits is not None:
        inner_bits = count("inner_bits", inner_bits, minimum=0)
    if inner_bits is None:
        inner_bits = min(n, _INNER_BITS.get(backend, 12), budget)
        # Leave enough outer chunks to feed every device.
        while num_devices > 1 and inner_bits > 0 and 2 ** (n - inner_bits) < num_devices:
            inner_bits -= 1
    if not 0 <= inner_bits <= min(n, 24):
        raise ValueError(f"inner_bits must be in [0, min(n, 24)]; got {inner_bits}.")
    outer = n - inner_bits
    if chunk_size is not None:
        chunk_bits = min(outer, int(chunk_size).bit_length() - 1)
    else:
        chunk_bits = min(outer, max(0, budget - inner_bits))
        while num_devices > 1 and chunk_bits > 0 and 2 ** (outer - chunk_bits) < num_devices:
            chunk_bits -= 1
    if outer - chunk_bits > 31:
        raise ValueError(f"n = {n} needs 2^{outer - chunk_bits} chunks; at most 2^31 are supported.")
    return SplitPlan(int(n), int(inner_bits), int(chunk_bits))


def _check_pairwise(h, J):
    """Validated ``(h, J)`` as float arrays (lists and NumPy accepted)."""
    h = array("h", h, allow_empty=True)
    J = array("J", J, allow_empty=True)
    check_ndim("h", h, 1, "a vector of fields of shape (n,)")
    check_ndim("J", J, 2, "a square coupling matrix of shape (n, n)")
    n = h.shape[0]
    if J.shape != (n, n):
        raise ValueError(f"J must have shape (n, n) = ({n}, {n}) to match h; got {J.shape}.")
    if n < 1:
        raise ValueError("h must hold at least one spin.")
    check_finite("h", h)
    check_finite("J", J)
    return h, J


def _pairwise_pieces(h, J, plan: SplitPlan):
    """Inner-state tables shared by every chunk."""
    dtype = jnp.result_type(h, J)
    Js = 0.5 * (J + J.T)
    nb = plan.inner_bits
    inner = _bits_to_spins(jnp.arange(2**nb, dtype=jnp.uint32), nb, dtype)  # (2^nb, nb)
    J_bb, J_ab, J_aa = Js[:nb, :nb], Js[nb:, :nb], Js[nb:, nb:]
    f_inner = 0.5 * jnp.sum(jnp.dot(inner, J_bb, precision=HIGHEST) * inner, axis=1) + jnp.dot(
        inner, h[:nb], precision=HIGHEST)
    return dtype, inner, f_inner, J_ab, J_aa, h[nb:]


def _chunk_outer(i, plan: SplitPlan, dtype):
    """Outer states of chunk ``i``: ``(2^chunk_bits, outer_bits)``."""
    return _chunk_states(i, plan.outer_bits, plan.chunk_bits, dtype)


def _outer_self_terms(outer, J_aa, h_a):
    r""":math:`\tfrac12 x_A^\top J_{AA} x_A + h_A^\top x_A` for each outer state (row)."""
    return 0.5 * jnp.sum(jnp.dot(outer, J_aa, precision=HIGHEST) * outer, axis=1) + jnp.dot(
        outer, h_a, precision=HIGHEST)


def _chunk_log_weights(i, ops, plan: SplitPlan, dtype):
    inner, f_inner, J_ab, J_aa, h_a = ops
    outer = _chunk_outer(i, plan, dtype)  # (C, na)
    f_outer = _outer_self_terms(outer, J_aa, h_a)
    cross = jnp.dot(jnp.dot(outer, J_ab, precision=HIGHEST), inner.T, precision=HIGHEST)
    return outer, cross + f_outer[:, None] + f_inner[None, :]  # (C, 2^nb)


def _pairwise_fold(h, J, plan: SplitPlan, devices: tuple, with_moments: bool, engine: str = "xla"):
    dtype, inner, f_inner, J_ab, J_aa, h_a = _pairwise_pieces(h, J, plan)
    nb, na = plan.inner_bits, plan.outer_bits
    ops = (inner, f_inner, J_ab, J_aa, h_a)
    if with_moments:
        init = (jnp.zeros((2**nb,), dtype), jnp.zeros((na,), dtype), jnp.zeros((na, na), dtype),
                jnp.zeros((na, nb), dtype))
    else:
        init = ()
    if engine == "pallas":
        return _pairwise_fold_pallas(ops, plan, devices, with_moments, dtype, init), inner

    def chunk_step(i, fold, ops):
        outer, L = _chunk_log_weights(i, ops, plan, dtype)
        if not with_moments:
            return _fold_update(fold, L, lambda P: ())
        inner = ops[0]

        def contributions(P):
            rows = _blocked_sum_last(P, nb)  # weight of each outer state
            return (
                jnp.sum(P, axis=0),  # weight of each inner state
                jnp.dot(rows, outer, precision=HIGHEST),
                jnp.dot(outer.T * rows, outer, precision=HIGHEST),
                jnp.dot(outer.T, _blocked_matmul(P, inner, nb), precision=HIGHEST),
            )

        return _fold_update(fold, L, contributions)

    return _run_fold(chunk_step, init, plan.num_chunks, dtype, ops, devices), inner


def _pairwise_fold_pallas(ops, plan: SplitPlan, devices: tuple, with_moments: bool, dtype, init):
    """The split fold with each chunk's rows reduced by the fused kernel
    (:func:`jaxebm.kernels.pairwise_rows`): only per-outer-state results reach memory."""
    from jaxebm import kernels

    inner, f_inner, J_ab, J_aa, h_a = ops
    nb = plan.inner_bits
    K = kernels.padded(nb)
    inner_t = jnp.zeros((K, 2**nb), dtype).at[:nb].set(inner.T)
    J_ab = jnp.zeros((J_ab.shape[0], K), dtype).at[:, :nb].set(J_ab)
    tb = min(kernels.TILE_INNER, 2**nb)

    def chunk_step(i, fold, ops):
        inner_t, f_inner, J_ab, J_aa, h_a = ops
        outer = _chunk_outer(i, plan, dtype)  # (C, na)
        f_outer = _outer_self_terms(outer, J_aa, h_a)
        u = jnp.dot(outer, J_ab, precision=HIGHEST)  # (C, K)
        if not with_moments:
            return _fold_update(fold, kernels.pairwise_rows(u, f_outer, inner_t, f_inner, tile_inner=tb),
                                lambda P: ())
        log_rows, inner_mean, cols, shifts = kernels.pairwise_rows(u, f_outer, inner_t, f_inner,
                                                                   with_moments=True, tile_inner=tb)
        shift = _safe_shift(jnp.maximum(fold.m, jnp.max(log_rows)))  # as in _fold_update

        def contributions(rows):
            col_scale = jnp.repeat(jnp.exp(shifts - shift), tb, axis=1)  # (G, 2^nb)
            return (
                jnp.sum(cols * col_scale, axis=0),
                jnp.dot(rows, outer, precision=HIGHEST),
                jnp.dot(outer.T * rows, outer, precision=HIGHEST),
                jnp.dot(outer.T * rows, inner_mean[:, :nb], precision=HIGHEST),
            )

        return _fold_update(fold, log_rows, contributions)

    ops = (inner_t, f_inner, J_ab, J_aa, h_a)
    return _run_fold(chunk_step, init, plan.num_chunks, dtype, ops, devices)


def _blocks(k: int) -> tuple[int, int]:
    """Splits a power-of-two length ``2^k`` into two levels for blocked summation."""
    return 2 ** (k // 2), 2 ** (k - k // 2)


def _blocked_sum_last(P: Array, k: int) -> Array:
    """Sum over the last axis (length 2^k) in two levels: float32 rounding then grows with
    ~2 * 2^(k/2) terms instead of 2^k (a plain reduction drifts ~1e-5 at k = 12)."""
    a, b = _blocks(k)
    return jnp.sum(jnp.sum(P.reshape(P.shape[:-1] + (a, b)), axis=-1), axis=-1)


def _blocked_matmul(P: Array, X: Array, k: int) -> Array:
    """``P @ X`` contracting a length-2^k axis in two levels (see :func:`_blocked_sum_last`)."""
    a, b = _blocks(k)
    partial = jnp.einsum("...ab,abn->...an", P.reshape(P.shape[:-1] + (a, b)),
                         X.reshape(a, b, -1), precision=HIGHEST)
    return jnp.sum(partial, axis=-2).reshape(P.shape[:-1] + X.shape[1:])


def _assemble_moments(inner, accs, n, nb):
    p_inner, m_a, c_aa, c_ab = accs
    # p_inner holds the inner-state marginal; renormalising it by its own sum makes the
    # inner moments self-consistent weighted averages.
    p_inner = p_inner / _blocked_sum_last(p_inner, nb)
    m_b = _blocked_matmul(p_inner, inner, nb)
    c_bb = _blocked_matmul(p_inner, inner[:, :, None] * inner[:, None, :], nb)
    mean = jnp.concatenate([m_b, m_a])
    corr = jnp.block([[c_bb, c_ab.T], [c_ab, c_aa]])
    # Exact: x_k^2 = 1.
    corr = corr.at[jnp.diag_indices(n)].set(1.0)
    return mean, corr


def _resolve(h, J, inner_bits, chunk_size, max_seconds, devices, engine):
    from jaxebm import kernels

    h, J = _check_pairwise(h, J)
    devices = _devices(devices)
    engine = kernels.resolve(engine)
    if inner_bits is not None:
        inner_bits = count("inner_bits", inner_bits, minimum=0)
    n = h.shape[0]
    check_enumerable(n, max_seconds=max_seconds, num_devices=len(devices), what="n (spins)")
    budget = None
    if engine == "pallas":
        # The fused kernel never holds the (C, 2^inner) tile: chunks are bounded by launch
        # size instead of memory.
        budget = min(n, _INNER_BITS.get(_backend(), 12) if inner_bits is None else inner_bits) + _PALLAS_CHUNK_BITS
    plan = split_plan(n, inner_bits=inner_bits, chunk_size=chunk_size, budget_bits=budget,
                      num_devices=len(devices))
    dtype = jnp.result_type(h, J, jnp.float32)
    return h.astype(dtype), J.astype(dtype), plan, devices, engine


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _pairwise_log_z(h, J, plan, devices, engine):
    (log_z, _), _ = _pairwise_fold(h, J, plan, devices, with_moments=False, engine=engine)
    return log_z


@_pairwise_log_z.defjvp
def _pairwise_log_z_jvp(plan, devices, engine, primals, tangents):
    h, J = primals
    dh, dJ = tangents
    (log_z, accs), inner = _pairwise_fold(h, J, plan, devices, with_moments=True, engine=engine)
    mean, corr = _assemble_moments(inner, accs, plan.n, plan.inner_bits)
    # d log Z = <x> . dh + 1/2 sum_kl <x_k x_l> dJ_kl (exactly autodiff of the brute force).
    return log_z, jnp.dot(mean, dh) + 0.5 * jnp.sum(corr * dJ)


# The compiled work, cached on the static configuration (plan, devices, engine): eager calls
# with new values of the same shapes compile nothing.
@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _pairwise_log_z_jit(h, J, plan, devices, engine):
    return _pairwise_log_z(h, J, plan, devices, engine)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _pairwise_moments_jit(h, J, plan, devices, engine):
    (log_z, accs), inner = _pairwise_fold(h, J, plan, devices, with_moments=True, engine=engine)
    mean, corr = _assemble_moments(inner, accs, plan.n, plan.inner_bits)
    return log_z, mean, corr


def pairwise_log_partition(h: ArrayLike, J: ArrayLike, *, inner_bits: int | None = None,
                           chunk_size: int | None = None, max_seconds: float | None = None,
                           devices: Sequence | None = None, engine: str | None = None) -> Array:
    r"""Exact log partition function of a pairwise model by the split enumerator.

    .. math:: \log Z = \log \sum_{x \in \{-1,+1\}^n}
              \exp\!\big(\tfrac12 x^\top J x + h^\top x\big) \qquad \text{Eq. (2.29)}

    ``J`` is used through its symmetric part, and its diagonal contributes the constant
    :math:`\tfrac12 \mathrm{tr} J`, exactly as the brute-force formula does. Differentiable
    (custom JVP): the derivative is :math:`\langle x \rangle` for ``h`` and
    :math:`\tfrac12 \langle x_k x_l \rangle` for ``J_kl``, computed in one streamed pass.

    Args:
      h: ``Float[Array, "n"]`` fields.
      J: ``Float[Array, "n n"]`` couplings.
      inner_bits: spins in the precomputed inner block (default: by backend).
      chunk_size: outer states per chunk, a power of two (default: from a memory budget).
      max_seconds: refuse (ValueError) if the estimated time exceeds this.
      devices: devices to shard the state range across (default: all local devices); pass
        ``jax.devices()`` to span all processes of a ``jax.distributed`` run (module docstring).
      engine: ``"auto"`` (default), ``"xla"`` or ``"pallas"`` (the fused kernel of
        :mod:`jaxebm.kernels`; interpreted, hence slow, off GPU).

    Shapes are checked at trace time and values (finite) whenever they are concrete; under a
    caller's ``jit`` values cannot raise. The compiled pass is cached on the configuration,
    so eager calls with new values of the same shapes compile once.
    """
    h, J, plan, devices, engine = _resolve(h, J, inner_bits, chunk_size, max_seconds, devices, engine)
    return _pairwise_log_z_jit(h, J, plan, devices, engine)


def pairwise_moments(h: ArrayLike, J: ArrayLike, *, inner_bits: int | None = None,
                     chunk_size: int | None = None, max_seconds: float | None = None,
                     devices: Sequence | None = None, engine: str | None = None) -> tuple[Array, Array, Array]:
    r"""Exact :math:`\log Z`, :math:`\langle x \rangle` and :math:`\langle x x^\top \rangle`
    of a pairwise model in one streamed pass.

    Arguments as :func:`pairwise_log_partition`.

    .. math:: \langle x_k \rangle = \frac1Z \sum_x x_k\, w(x), \quad
              \langle x_k x_l \rangle = \frac1Z \sum_x x_k x_l\, w(x) \qquad
              \text{Eq. (2.31)-(2.32)}

    For each chunk with probability tile :math:`P` (outer states :math:`X_A`, inner
    states :math:`S_B`), the sums are the matmuls :math:`P \mathbf 1`,
    :math:`\mathbf 1^\top P`, :math:`X_A^\top \mathrm{diag}(P\mathbf 1) X_A` and
    :math:`X_A^\top P S_B`.

    Returns:
      ``(log_z, mean (n,), corr (n, n))``, ``corr`` having a unit diagonal.
    """
    h, J, plan, devices, engine = _resolve(h, J, inner_bits, chunk_size, max_seconds, devices, engine)
    return _pairwise_moments_jit(h, J, plan, devices, engine)


def pairwise_row_log_weights(h: ArrayLike, J: ArrayLike, plan: SplitPlan):
    """Per-outer-state log-sum-exp over the inner block: ``Float[Array, "2^outer_bits"]``.

    The log marginal weights of the outer spins, used by exact sampling. Holds
    ``2^outer_bits`` numbers, so only for moderate ``n``. ``plan`` comes from
    :func:`split_plan` for the same ``n``.
    """
    h, J = _check_pairwise(h, J)
    if not isinstance(plan, SplitPlan):
        raise ValueError(f"plan must be a SplitPlan from split_plan(n); got {type(plan).__name__}.")
    if plan.n != h.shape[0]:
        raise ValueError(f"plan must be made for n = {h.shape[0]} spins; it is for n = {plan.n}.")
    if plan.outer_bits > 30:
        raise ValueError(f"plan holds 2^{plan.outer_bits} outer states; at most 2^30 row weights can be held.")
    dtype = jnp.result_type(h, J, jnp.float32)
    return _row_log_weights(h.astype(dtype), J.astype(dtype), plan)


@functools.partial(jax.jit, static_argnums=(2,))
def _row_log_weights(h, J, plan: SplitPlan):
    dtype, inner, f_inner, J_ab, J_aa, h_a = _pairwise_pieces(h, J, plan)
    ops = (inner, f_inner, J_ab, J_aa, h_a)

    def one_chunk(i):
        _, L = _chunk_log_weights(i, ops, plan, dtype)
        return jax.nn.logsumexp(L, axis=1)

    rows = lax.map(one_chunk, jnp.arange(plan.num_chunks, dtype=jnp.uint32))
    return rows.reshape(-1)
