r"""The split engine for restricted Boltzmann machines: enumerate one layer, sum the other.

For couplings :math:`U` (:math:`m \times n_o`) from the enumerated layer :math:`s \in
\{-1,+1\}^m` to the other layer :math:`o`, and biases :math:`a` (enumerated) and :math:`b`
(other), the other layer sums out analytically:

.. math:: \log Z = \log \sum_s \exp\Big(a^\top s + \sum_j \log 2\cosh\big((U^\top s + b)_j\big)\Big)
          \qquad \text{Eq. (4.80)-(4.82)}

The enumerated layer is cut by a :class:`~jaxebm._enum.split.SplitPlan` exactly as a pairwise
model is: the inner block's pre-activations :math:`S_B U_B + b` are a precomputed table, and a
chunk of outer states adds its own :math:`X_A U_A` to every row, so each state costs one add
and one ``log 2cosh`` per unit of the other layer. The same configuration
(:func:`~jaxebm._enum.split.configure`: options, budget check, plan) and fold serve both.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxebm._enum.budget import (
    BIPARTITE_INNER_BITS,
    BIPARTITE_PALLAS_CHUNK_BITS,
    BIPARTITE_TILE_BITS,
    per_backend,
)
from jaxebm._enum.fold import blocked_matmul, blocked_sum_last, blocks, fold_update, run_fold
from jaxebm._enum.split import SplitConfig, configure, inner_states, outer_states
from jaxebm._numerics import HIGHEST, log2cosh


def bipartite_config(m: int, other: int, *, max_seconds=None, engine=None, chunk_size=None, devices=None,
                     inner_bits=None, what: str = "m") -> SplitConfig:
    """The split configuration for enumerating ``m`` units with ``other`` units summed out
    (refused over budget with the state count, the ``other`` units per state and the time)."""
    other_bits = math.ceil(math.log2(max(other, 1)))

    def config(engine):
        return configure(m, max_seconds=max_seconds, engine=engine, chunk_size=chunk_size, devices=devices,
                         inner_bits=inner_bits, what=what, default_inner_bits=BIPARTITE_INNER_BITS,
                         tile_bits=per_backend(BIPARTITE_TILE_BITS) - other_bits,
                         pallas_chunk_bits=BIPARTITE_PALLAS_CHUNK_BITS, elements_per_state=float(other),
                         detail=f", each summing {other} units")

    out = config(engine)
    if out.engine == "pallas":  # the fused kernel is log Z only: moments run the XLA plan
        out = out._replace(moments_plan=config("xla").plan)
    return out


def _sum_log2cosh(a):
    """sum_k log 2cosh(a_k) over the last axis (one fused elementwise pass + reduction;
    measured faster on XLA CPU than a log-of-products over blocks)."""
    return jnp.sum(log2cosh(a), axis=-1)


def _fold(U, a_bias, b_bias, config: SplitConfig, with_moments: bool):
    plan, devices, engine = config.plan, config.devices, config.engine
    dtype = jnp.result_type(U, jnp.float32)
    U, a_bias, b_bias = U.astype(dtype), a_bias.astype(dtype), b_bias.astype(dtype)  # U: (m, other)
    m, inner = plan.n, plan.inner_bits
    outer = plan.outer_bits
    inner_s = inner_states(plan, dtype)
    table = jnp.dot(inner_s, U[:inner], precision=HIGHEST) + b_bias  # (2^in, other)
    f_inner = jnp.dot(inner_s, a_bias[:inner], precision=HIGHEST)
    other = U.shape[1]
    ops = (table, f_inner, U[inner:], a_bias[inner:])
    if engine == "pallas" and not with_moments:
        log_z, _ = _fold_pallas(ops, plan, devices, dtype)
        return log_z, None, inner_s
    if with_moments:
        # accs: p_inner (2^in,), rows @ out_states (outer,), R (other, 1 + m): sum_s P_s tanh(A_s) [1, s]
        init = (jnp.zeros((2**inner,), dtype), jnp.zeros((outer,), dtype), jnp.zeros((other, 1 + m), dtype))
    else:
        init = ()
    a, bb = blocks(inner)

    def chunk_step(i, fold, ops):
        table, f_inner, U_out, a_out = ops
        out_states = outer_states(i, plan, dtype)  # (C, outer)
        out_field = jnp.dot(out_states, U_out, precision=HIGHEST)  # (C, other)
        A = out_field[:, None, :] + table[None, :, :]  # (C, 2^in, other)
        L = _sum_log2cosh(A) + f_inner[None, :] + jnp.dot(out_states, a_out, precision=HIGHEST)[:, None]
        if not with_moments:
            return fold_update(fold, L, lambda P: ())
        C = out_states.shape[0]

        def contributions(P):
            # One batched matmul with short contractions (blocks of bb inner states):
            # R = sum_s tanh(A_s)^T (P_s [1, s_in, s_out]).
            feats = jnp.concatenate([
                jnp.ones((C, 2**inner, 1), dtype),
                jnp.broadcast_to(inner_s[None], (C, 2**inner, inner)),
                jnp.broadcast_to(out_states[:, None, :], (C, 2**inner, outer))], axis=-1) * P[..., None]
            T = jnp.tanh(A).reshape(C * a, bb, other)
            R = jnp.einsum("kbn,kbj->knj", T, feats.reshape(C * a, bb, 1 + m), precision=HIGHEST)
            rows = blocked_sum_last(P, inner)
            return (jnp.sum(P, axis=0), jnp.dot(rows, out_states, precision=HIGHEST), jnp.sum(R, axis=0))

        return fold_update(fold, L, contributions)

    log_z, accs = run_fold(chunk_step, init, plan.num_chunks, dtype, ops, devices)
    return log_z, accs, inner_s


def _fold_pallas(ops, plan, devices, dtype):
    """log Z with each chunk's rows reduced by the fused kernel (:func:`jaxebm.kernels.rbm_rows`):
    the ``(C, 2^inner, other)`` pre-activations never reach memory."""
    from jaxebm import kernels

    table, f_inner, U_out, a_out = ops
    other = table.shape[1]
    tile_units = kernels.RBM_TILE_UNITS
    pad = -other % tile_units
    table = jnp.pad(table, ((0, 0), (0, pad)))
    U_out = jnp.pad(U_out, ((0, 0), (0, pad)))
    pad_constant = pad * np.log(2.0)  # each zero-padded unit adds log 2cosh(0) = log 2

    def chunk_step(i, fold, ops):
        table, f_inner, U_out, a_out = ops
        out_states = outer_states(i, plan, dtype)
        out_field = jnp.dot(out_states, U_out, precision=HIGHEST)
        f_out = jnp.dot(out_states, a_out, precision=HIGHEST) - pad_constant
        rows = kernels.rbm_rows(out_field, f_out, table, f_inner, tile_units=tile_units)
        return fold_update(fold, rows, lambda P: ())

    return run_fold(chunk_step, (), plan.num_chunks, dtype, (table, f_inner, U_out, a_out), devices)


def _assemble(plan, accs, inner_s):
    """``(mean of the enumerated layer (m,), mean of the other (other,), cross (other, m))``."""
    p_inner, m_out, R = accs
    # renormalise the inner marginal by its own sum (self-consistent weighted averages)
    total = blocked_sum_last(p_inner, plan.inner_bits)
    m_in = blocked_matmul(p_inner, inner_s, plan.inner_bits) / total
    return jnp.concatenate([m_in, m_out]), R[:, 0], R[:, 1:]


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def log_z(U, a_bias, b_bias, config: SplitConfig):
    """log Z of the bipartite model, enumerating the layer of ``a_bias`` (traceable; the JVP
    is the exact moments, always from the XLA pass: the fused kernel computes log Z only)."""
    return _fold(U, a_bias, b_bias, config, with_moments=False)[0]


@log_z.defjvp
def _log_z_jvp(config, primals, tangents):
    U, a_bias, b_bias = primals
    dU, da, db = tangents
    value, mean_s, mean_o, cross = moments(U, a_bias, b_bias, config)
    return value, jnp.sum(cross.T * dU) + jnp.dot(mean_s, da) + jnp.dot(mean_o, db)


def moments(U, a_bias, b_bias, config: SplitConfig):
    """``(log Z, <s> (m,), <o> (other,), <o s^T> (other, m))`` in one XLA pass (traceable)."""
    config = config._replace(plan=config.moments_plan or config.plan, engine="xla", moments_plan=None)
    value, accs, inner_s = _fold(U, a_bias, b_bias, config, with_moments=True)
    return (value, *_assemble(config.plan, accs, inner_s))
