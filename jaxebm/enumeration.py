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

The implementation lives in package-internal modules split by concept (:mod:`jaxebm._enum`):
integer codes -> spins (``codes``), time budgets and refusal (``budget``), the streaming fold
and its sharding (``fold``), the generic engine (``generic``), and the split engine
(``split``), which also computes the RBM's exact log Z (``bipartite``). This module is their
public face.
"""

from __future__ import annotations

from jaxebm._enum.budget import DEFAULT_MAX_SECONDS, check_enumerable, estimate_seconds
from jaxebm._enum.codes import MAX_HELD_BYTES, all_spins, spins
from jaxebm._enum.generic import covariance_states, expectation_states, log_sum_exp_states
from jaxebm._enum.split import (
    SplitPlan,
    pairwise_log_partition,
    pairwise_moments,
    pairwise_row_log_weights,
    split_plan,
)

__all__ = [
    "DEFAULT_MAX_SECONDS",
    "MAX_HELD_BYTES",
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
