"""State coding: bit ``k`` of a state's code gives spin ``k`` (bit 1 -> +1, bit 0 -> -1)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxebm._validation import array, is_concrete
from jaxebm.types import Array

#: all_spins refuses to materialise more than this many bytes.
MAX_HELD_BYTES = 2**31


def bits_to_spins(words: Array, n: int, dtype) -> Array:
    """Spins ``(..., n)`` from the low ``n`` bits of uint32 ``words`` (traceable)."""
    shifts = jnp.arange(n, dtype=jnp.uint32)
    bits = (words[..., None] >> shifts) & jnp.uint32(1)
    return (2 * bits.astype(jnp.int32) - 1).astype(dtype)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _bits_to_spins_jit(words: Array, n: int, dtype) -> Array:
    return bits_to_spins(words, n, dtype)


def chunk_states(i: Array, n: int, c: int, dtype) -> Array:
    """States of chunk ``i``: the low ``c`` bits run over the chunk, the high ``n - c`` bits
    are the chunk index ``i``. Shape ``(2^c, n)``."""
    low = bits_to_spins(jnp.arange(2**c, dtype=jnp.uint32), c, dtype)
    high = bits_to_spins(jnp.asarray(i).astype(jnp.uint32), n - c, dtype)
    return jnp.concatenate([low, jnp.broadcast_to(high, (2**c, n - c))], axis=1)


def float_dtype(dtype, name: str = "dtype"):
    """``dtype`` as a floating ``jnp.dtype``; ValueError naming ``name`` otherwise."""
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
    dtype = float_dtype(dtype)
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
    return bits_to_spins(jnp.arange(2**n, dtype=jnp.uint32), n, dtype)


def all_spins(n: int, dtype=jnp.float32) -> Array:
    """All ``2^n`` states as a ``Float[Array, "2^n n"]``, row ``i`` being code ``i``.

    Only for small ``n``: refuses (ValueError) when the result would exceed 2 GiB. Use
    :func:`log_sum_exp_states` / :func:`expectation_states` to stream over larger spaces.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer (the number of spins); got {n!r}.")
    n = int(n)
    dtype = float_dtype(dtype)
    nbytes = (2**n) * n * dtype.itemsize
    if n > 32 or nbytes > MAX_HELD_BYTES:
        raise ValueError(
            f"all_spins(n={n}) would hold 2^{n} = {2**n:,} states ({nbytes / 2**30:.3g} GiB); "
            f"the limit is {MAX_HELD_BYTES / 2**30:.0f} GiB. Stream with log_sum_exp_states or "
            "expectation_states instead."
        )
    return _all_spins(n, dtype)

