"""Budgets: rough time estimates, per-backend memory budgets, and the refusal of requests
over the time limit (with the state count and the estimated time)."""

from __future__ import annotations

import math
import os

import jax
import numpy as np

from jaxebm._validation import count, finite_scalar, positive_scalar

#: Default limit on the estimated wall time of one enumeration, in seconds.
DEFAULT_MAX_SECONDS = 600.0

# Rough throughputs (states/s) used only to estimate run time before refusing a request.
# Measured: ~1.4e9 on 2 CPU cores (split engine, README), ~2e11 on one H100.
PAIRWISE_RATE = {"cpu": 7e8, "gpu": 2e11, "tpu": 1e11}
GENERIC_SLOWDOWN = 20.0
# Matmul throughput (flop/s) for work that grows with the state count times p^2 (the Fisher
# information's second moment): measured ~5e10 on 2 idle CPU cores at n = 18; halved for a
# shared machine. GPU/TPU: float32 at Precision.HIGHEST.
MATMUL_FLOPS = {"cpu": 2.5e10, "gpu": 2e13, "tpu": 1e13}
# Elementwise throughput (log 2cosh of a state x unit element / s), for the RBM's summed
# layer; README has measurements.
ELEMENT_RATE = {"cpu": 1.0e9, "gpu": 2.0e11, "tpu": 1.0e11}

# Memory budgets, as bits of the element count of one chunk's tile of log weights.
SPLIT_TILE_BITS = {"cpu": 20, "gpu": 24, "tpu": 24}  # (C, 2^inner) for pairwise models
INNER_BITS = {"cpu": 12, "gpu": 14, "tpu": 14}  # default inner block of pairwise models
BIPARTITE_TILE_BITS = {"cpu": 21, "gpu": 25, "tpu": 25}  # (C, 2^inner, other) for RBMs
BIPARTITE_INNER_BITS = 12
GENERIC_CHUNK_BYTES = {"cpu": 2**24, "gpu": 2**28, "tpu": 2**28}
# Outer states per launch of a fused (Pallas) kernel, as bits.
PALLAS_CHUNK_BITS = 14
BIPARTITE_PALLAS_CHUNK_BITS = 12


def backend() -> str:
    return jax.default_backend()


def per_backend(table: dict):
    """The entry of a per-backend ``table`` for the default backend (CPU's if unknown)."""
    return table.get(backend(), table["cpu"])


def _cpu_scale() -> float:
    return max(1, os.cpu_count() or 1) / 2


def estimate_seconds(n: int, *, pairwise: bool = True, num_devices: int | None = None,
                     flops_per_state: float = 0.0, elements_per_state: float = 0.0) -> float:
    """Rough wall time (s) to enumerate ``2^n`` states on the default backend.

    Based on measured throughputs (README performance table); a generic ``log_weight_fn``
    is assumed to be ~20x slower than the split pairwise engine. ``flops_per_state`` adds
    matmul work done for every state (e.g. ``2 p^2`` for the ``p x p`` second moment of
    :func:`covariance_states`), at a measured matmul rate; ``elements_per_state`` adds
    elementwise transcendental work (e.g. the ``log 2cosh`` of each unit of an RBM's summed
    layer), at a measured elementwise rate.
    """
    n = count("n", n, minimum=0)
    num_devices = 1 if num_devices is None else count("num_devices", num_devices)
    flops = finite_scalar("flops_per_state", flops_per_state, minimum=0.0)
    elements = finite_scalar("elements_per_state", elements_per_state, minimum=0.0)
    scale = num_devices * (_cpu_scale() if backend() == "cpu" else 1.0)
    rate = per_backend(PAIRWISE_RATE) * scale
    if not pairwise:
        rate /= GENERIC_SLOWDOWN
    return float(2.0**n / rate + 2.0**n * flops / (per_backend(MATMUL_FLOPS) * scale)
                 + 2.0**n * elements / (per_backend(ELEMENT_RATE) * scale))


def time_limit(max_seconds) -> float:
    """The time budget: None -> the default; ``math.inf`` means no limit."""
    if max_seconds is None:
        return DEFAULT_MAX_SECONDS
    if isinstance(max_seconds, (bool, np.bool_)):
        raise ValueError(f"max_seconds must be a number of seconds (or math.inf, or None for the default); got "
                         f"{max_seconds!r}.")
    if isinstance(max_seconds, (int, float, np.integer, np.floating)) and max_seconds == math.inf:
        return math.inf
    return positive_scalar("max_seconds", max_seconds)


def check_enumerable(n: int, *, max_seconds: float | None = None, pairwise: bool = True,
                     num_devices: int | None = None, what: str = "n", flops_per_state: float = 0.0,
                     elements_per_state: float = 0.0, detail: str = "") -> None:
    """Raise a ValueError, with the state count and an estimated time, if ``2^n`` is too many.

    Args:
      n: number of enumerated spins.
      max_seconds: the time budget (default :data:`DEFAULT_MAX_SECONDS`; ``math.inf``: none).
      pairwise: whether the fast split engine is used (sets the estimated throughput).
      num_devices: devices sharing the work.
      what: the argument name to report.
      flops_per_state, elements_per_state: extra work per state (see :func:`estimate_seconds`).
      detail: what that work is, for the message.
    """
    limit = time_limit(max_seconds)
    n = count(what, n, minimum=0)
    if n > 63:
        raise ValueError(f"{what} = {n}: 2^{n} states cannot be enumerated (at most 63 spins).")
    seconds = estimate_seconds(n, pairwise=pairwise, num_devices=num_devices, flops_per_state=flops_per_state,
                               elements_per_state=elements_per_state)
    if seconds > limit:
        raise ValueError(
            f"{what} = {n} means enumerating 2^{n} = {2**n:,} states{detail}, estimated at "
            f"{seconds:,.0f} s on {backend()} ({num_devices or 1} device(s)); the limit is "
            f"max_seconds={limit:g}. Pass a larger max_seconds to run it anyway, or use a "
            "sampler (jaxebm.mcmc) or AIS."
        )
