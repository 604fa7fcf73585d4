r"""The split (matmul) engine: its plan, and the enumerator for pairwise models.

With :math:`x = (x_B, x_A)` the :math:`2^{|B|}` inner states are precomputed once and the
outer states are enumerated in chunks of :math:`2^c`. For a pairwise model
:math:`\log w(x) = \tfrac12 x^\top J x + h^\top x` the cross term of a chunk is the matmul
:math:`(C \times |A|)(|A| \times |B|)(|B| \times 2^{|B|})`. The RBM engine
(:mod:`jaxebm._enum.bipartite`) uses the same plan, configuration and budget check.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxebm._enum.budget import INNER_BITS, PALLAS_CHUNK_BITS, SPLIT_TILE_BITS, check_enumerable, per_backend
from jaxebm._enum.codes import bits_to_spins, chunk_states
from jaxebm._enum.fold import blocked_matmul, blocked_sum_last, fold_update, run_fold, safe_shift
from jaxebm._numerics import HIGHEST
from jaxebm._validation import array, check_finite, check_ndim, count, device_tuple, power_of_two
from jaxebm.types import Array, ArrayLike

#: The options of the split engine besides ``max_seconds`` (they choose how, not what, to sum).
ENGINE_OPTIONS = ("engine", "chunk_size", "devices", "inner_bits")


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


class SplitConfig(NamedTuple):
    """The static configuration on which a compiled split pass is cached (hashable)."""

    plan: SplitPlan
    devices: tuple  # jax devices sharing the chunk range
    engine: str  # "xla" or "pallas" (resolved)
    # The plan of an XLA moments pass when the fused kernel computes log Z only (RBMs).
    moments_plan: SplitPlan | None = None


def split_plan(n: int, *, inner_bits: int | None = None, chunk_size: int | None = None,
               budget_bits: int | None = None, num_devices: int = 1) -> SplitPlan:
    """Chooses inner block and chunk sizes for :func:`pairwise_log_partition` from a memory
    budget of ``2^budget_bits`` elements for a chunk's ``(C, 2^inner_bits)`` log-weight tile."""
    n = count("n", n)
    num_devices = count("num_devices", num_devices)
    chunk_size = None if chunk_size is None else power_of_two("chunk_size", chunk_size)
    budget = per_backend(SPLIT_TILE_BITS) if budget_bits is None else count("budget_bits", budget_bits, minimum=0)
    if inner_bits is not None:
        inner_bits = count("inner_bits", inner_bits, minimum=0)
    if inner_bits is None:
        inner_bits = min(n, per_backend(INNER_BITS), budget)
        # Leave enough outer chunks to feed every device.
        while num_devices > 1 and inner_bits > 0 and 2 ** (n - inner_bits) < num_devices:
            inner_bits -= 1
    if not 0 <= inner_bits <= min(n, 24):
        raise ValueError(f"inner_bits must be in [0, min(n, 24)]; got {inner_bits}.")
    outer = n - inner_bits
    if chunk_size is not None:
        chunk_bits = min(outer, chunk_size.bit_length() - 1)
    else:
        chunk_bits = min(outer, max(0, budget - inner_bits))
        while num_devices > 1 and chunk_bits > 0 and 2 ** (outer - chunk_bits) < num_devices:
            chunk_bits -= 1
    if outer - chunk_bits > 31:
        raise ValueError(f"n = {n} needs 2^{outer - chunk_bits} chunks; at most 2^31 are supported.")
    return SplitPlan(int(n), int(inner_bits), int(chunk_bits))


def inner_states(plan: SplitPlan, dtype) -> Array:
    """The ``2^inner_bits`` inner states, ``(2^inner_bits, inner_bits)``: spins ``0 .. |B|-1``."""
    return bits_to_spins(jnp.arange(2**plan.inner_bits, dtype=jnp.uint32), plan.inner_bits, dtype)


def outer_states(i, plan: SplitPlan, dtype) -> Array:
    """Outer states of chunk ``i``: ``(2^chunk_bits, outer_bits)``, spins ``|B| .. n-1``."""
    return chunk_states(i, plan.outer_bits, plan.chunk_bits, dtype)


def configure(n: int, *, max_seconds=None, engine=None, chunk_size=None, devices=None, inner_bits=None,
              what: str = "n", default_inner_bits: int | None = None, tile_bits: int | None = None,
              pallas_chunk_bits: int = PALLAS_CHUNK_BITS, elements_per_state: float = 0.0,
              detail: str = "") -> SplitConfig:
    """Validates the enumeration options, refuses a request over the time budget (naming
    ``what``), and chooses the plan: the one configuration step of every split enumerator.

    ``tile_bits`` (bits of the element count a chunk's tile may hold; default: the pairwise
    budget of :func:`split_plan`) and ``default_inner_bits`` (default: :func:`split_plan`'s
    choice by backend, which also leaves an outer chunk for every device) set the plan when
    ``inner_bits`` / ``chunk_size`` are not given. With the fused kernel the tile never
    reaches memory, so chunks are bounded by ``pallas_chunk_bits`` outer states per launch.
    """
    from jaxebm import kernels

    devices = device_tuple("devices", devices)
    engine = kernels.resolve(engine)
    if inner_bits is not None:
        inner_bits = count("inner_bits", inner_bits, minimum=0)
    check_enumerable(n, max_seconds=max_seconds, num_devices=len(devices), what=what,
                     elements_per_state=elements_per_state, detail=detail)
    budget = None if tile_bits is None else max(0, tile_bits)
    if engine == "pallas":
        first = per_backend(INNER_BITS) if default_inner_bits is None else default_inner_bits
        budget = min(n, first if inner_bits is None else inner_bits) + pallas_chunk_bits
    if inner_bits is None and default_inner_bits is not None:
        inner_bits = min(n, default_inner_bits, per_backend(SPLIT_TILE_BITS) if budget is None else budget)
        while len(devices) > 1 and inner_bits > 0 and 2 ** (n - inner_bits) < len(devices):
            inner_bits -= 1  # leave an outer chunk for every device, as split_plan does
    plan = split_plan(n, inner_bits=inner_bits, chunk_size=chunk_size, budget_bits=budget,
                      num_devices=len(devices))
    return SplitConfig(plan, devices, engine)


# --------------------------------------------------------------------------------------
# Pairwise models
# --------------------------------------------------------------------------------------


def check_pairwise(h, J):
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


def pairwise_config(n: int, *, max_seconds=None, engine=None, chunk_size=None, devices=None, inner_bits=None,
                    what: str = "n (spins)") -> SplitConfig:
    """:func:`configure` for a pairwise model of ``n`` spins."""
    return configure(n, max_seconds=max_seconds, engine=engine, chunk_size=chunk_size, devices=devices,
                     inner_bits=inner_bits, what=what)


def _pieces(h, J, plan: SplitPlan):
    """Inner-state tables shared by every chunk."""
    dtype = jnp.result_type(h, J)
    Js = 0.5 * (J + J.T)
    nb = plan.inner_bits
    inner = inner_states(plan, dtype)  # (2^nb, nb)
    J_bb, J_ab, J_aa = Js[:nb, :nb], Js[nb:, :nb], Js[nb:, nb:]
    f_inner = 0.5 * jnp.sum(jnp.dot(inner, J_bb, precision=HIGHEST) * inner, axis=1) + jnp.dot(
        inner, h[:nb], precision=HIGHEST)
    return dtype, inner, f_inner, J_ab, J_aa, h[nb:]


def _outer_self_terms(outer, J_aa, h_a):
    r""":math:`\tfrac12 x_A^\top J_{AA} x_A + h_A^\top x_A` for each outer state (row)."""
    return 0.5 * jnp.sum(jnp.dot(outer, J_aa, precision=HIGHEST) * outer, axis=1) + jnp.dot(
        outer, h_a, precision=HIGHEST)


def _chunk_log_weights(i, ops, plan: SplitPlan, dtype):
    inner, f_inner, J_ab, J_aa, h_a = ops
    outer = outer_states(i, plan, dtype)  # (C, na)
    f_outer = _outer_self_terms(outer, J_aa, h_a)
    cross = jnp.dot(jnp.dot(outer, J_ab, precision=HIGHEST), inner.T, precision=HIGHEST)
    return outer, cross + f_outer[:, None] + f_inner[None, :]  # (C, 2^nb)


def _fold(h, J, config: SplitConfig, with_moments: bool):
    plan, devices, engine = config.plan, config.devices, config.engine
    dtype, inner, f_inner, J_ab, J_aa, h_a = _pieces(h, J, plan)
    nb, na = plan.inner_bits, plan.outer_bits
    ops = (inner, f_inner, J_ab, J_aa, h_a)
    if with_moments:
        init = (jnp.zeros((2**nb,), dtype), jnp.zeros((na,), dtype), jnp.zeros((na, na), dtype),
                jnp.zeros((na, nb), dtype))
    else:
        init = ()
    if engine == "pallas":
        return _fold_pallas(ops, plan, devices, with_moments, dtype, init), inner

    def chunk_step(i, fold, ops):
        outer, L = _chunk_log_weights(i, ops, plan, dtype)
        if not with_moments:
            return fold_update(fold, L, lambda P: ())
        inner = ops[0]

        def contributions(P):
            rows = blocked_sum_last(P, nb)  # weight of each outer state
            return (
                jnp.sum(P, axis=0),  # weight of each inner state
                jnp.dot(rows, outer, precision=HIGHEST),
                jnp.dot(outer.T * rows, outer, precision=HIGHEST),
                jnp.dot(outer.T, blocked_matmul(P, inner, nb), precision=HIGHEST),
            )

        return fold_update(fold, L, contributions)

    return run_fold(chunk_step, init, plan.num_chunks, dtype, ops, devices), inner


def _fold_pallas(ops, plan: SplitPlan, devices: tuple, with_moments: bool, dtype, init):
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
        outer = outer_states(i, plan, dtype)  # (C, na)
        f_outer = _outer_self_terms(outer, J_aa, h_a)
        u = jnp.dot(outer, J_ab, precision=HIGHEST)  # (C, K)
        if not with_moments:
            return fold_update(fold, kernels.pairwise_rows(u, f_outer, inner_t, f_inner, tile_inner=tb),
                               lambda P: ())
        log_rows, inner_mean, cols, shifts = kernels.pairwise_rows(u, f_outer, inner_t, f_inner,
                                                                   with_moments=True, tile_inner=tb)
        shift = safe_shift(jnp.maximum(fold.m, jnp.max(log_rows)))  # as in fold_update

        def contributions(rows):
            col_scale = jnp.repeat(jnp.exp(shifts - shift), tb, axis=1)  # (G, 2^nb)
            return (
                jnp.sum(cols * col_scale, axis=0),
                jnp.dot(rows, outer, precision=HIGHEST),
                jnp.dot(outer.T * rows, outer, precision=HIGHEST),
                jnp.dot(outer.T * rows, inner_mean[:, :nb], precision=HIGHEST),
            )

        return fold_update(fold, log_rows, contributions)

    ops = (inner_t, f_inner, J_ab, J_aa, h_a)
    return run_fold(chunk_step, init, plan.num_chunks, dtype, ops, devices)


def _assemble_moments(inner, accs, n, nb):
    p_inner, m_a, c_aa, c_ab = accs
    # p_inner holds the inner-state marginal; renormalising it by its own sum makes the
    # inner moments self-consistent weighted averages.
    p_inner = p_inner / blocked_sum_last(p_inner, nb)
    m_b = blocked_matmul(p_inner, inner, nb)
    c_bb = blocked_matmul(p_inner, inner[:, :, None] * inner[:, None, :], nb)
    mean = jnp.concatenate([m_b, m_a])
    corr = jnp.block([[c_bb, c_ab.T], [c_ab, c_aa]])
    # Exact: x_k^2 = 1.
    corr = corr.at[jnp.diag_indices(n)].set(1.0)
    return mean, corr


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def log_z(h, J, config: SplitConfig):
    """log Z of the pairwise model ``(h, J)`` (traceable; the JVP is the exact moments)."""
    (value, _), _ = _fold(h, J, config, with_moments=False)
    return value


@log_z.defjvp
def _log_z_jvp(config, primals, tangents):
    h, J = primals
    dh, dJ = tangents
    (value, accs), inner = _fold(h, J, config, with_moments=True)
    mean, corr = _assemble_moments(inner, accs, config.plan.n, config.plan.inner_bits)
    # d log Z = <x> . dh + 1/2 sum_kl <x_k x_l> dJ_kl (exactly autodiff of the brute force).
    return value, jnp.dot(mean, dh) + 0.5 * jnp.sum(corr * dJ)


def moments(h, J, config: SplitConfig):
    """``(log Z, mean (n,), corr (n, n))`` of the pairwise model in one pass (traceable)."""
    (value, accs), inner = _fold(h, J, config, with_moments=True)
    mean, corr = _assemble_moments(inner, accs, config.plan.n, config.plan.inner_bits)
    return value, mean, corr


# The compiled work, cached on the static configuration: eager calls with new values of the
# same shapes compile nothing.
log_z_jit = jax.jit(log_z, static_argnums=(2,))
moments_jit = jax.jit(moments, static_argnums=(2,))


def _resolve(h, J, inner_bits, chunk_size, max_seconds, devices, engine):
    h, J = check_pairwise(h, J)
    config = pairwise_config(h.shape[0], max_seconds=max_seconds, engine=engine, chunk_size=chunk_size,
                             devices=devices, inner_bits=inner_bits)
    dtype = jnp.result_type(h, J, jnp.float32)
    return h.astype(dtype), J.astype(dtype), config


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
        ``jax.devices()`` to span all processes of a ``jax.distributed`` run (see
        :mod:`jaxebm.enumeration`).
      engine: ``"auto"`` (default), ``"xla"`` or ``"pallas"`` (the fused kernel of
        :mod:`jaxebm.kernels`; interpreted, hence slow, off GPU).

    Shapes are checked at trace time and values (finite) whenever they are concrete; under a
    caller's ``jit`` values cannot raise. The compiled pass is cached on the configuration,
    so eager calls with new values of the same shapes compile once.
    """
    h, J, config = _resolve(h, J, inner_bits, chunk_size, max_seconds, devices, engine)
    return log_z_jit(h, J, config)


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
    h, J, config = _resolve(h, J, inner_bits, chunk_size, max_seconds, devices, engine)
    return moments_jit(h, J, config)


def pairwise_row_log_weights(h: ArrayLike, J: ArrayLike, plan: SplitPlan):
    """Per-outer-state log-sum-exp over the inner block: ``Float[Array, "2^outer_bits"]``.

    The log marginal weights of the outer spins, used by exact sampling. Holds
    ``2^outer_bits`` numbers, so only for moderate ``n``. ``plan`` comes from
    :func:`split_plan` for the same ``n``.
    """
    h, J = check_pairwise(h, J)
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
    dtype, inner, f_inner, J_ab, J_aa, h_a = _pieces(h, J, plan)
    ops = (inner, f_inner, J_ab, J_aa, h_a)

    def one_chunk(i):
        _, L = _chunk_log_weights(i, ops, plan, dtype)
        return jax.nn.logsumexp(L, axis=1)

    rows = lax.map(one_chunk, jnp.arange(plan.num_chunks, dtype=jnp.uint32))
    return rows.reshape(-1)
