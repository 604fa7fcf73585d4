r"""Annealed importance sampling for log partition functions (Neal 2001).

Anneal from :math:`\beta_0 = 0` (uniform over spins, :math:`\log Z_0 = n\log 2`) to
:math:`\beta_T = 1` through :math:`p_\beta \propto e^{\beta\log w}`, with one transition
leaving :math:`p_{\beta_t}` invariant per temperature. Each chain's log weight is

.. math:: \log\omega = \sum_{t=1}^T (\beta_t - \beta_{t-1}) \log w(x_{t-1}),\qquad
          \hat Z = Z_0\, \frac1N\sum_i \omega_i ,

unbiased for :math:`Z`; the standard error of :math:`\log\hat Z` is the delta-method
:math:`\mathrm{sd}(\omega)/(\sqrt N\,\bar\omega)`. Chains are a vmap.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxebm import ising
from jaxebm import rbm as rbm_module
from jaxebm._validation import check_finite, count, finite_scalar, is_concrete, prng_key, schedule
from jaxebm.ising import IsingParams
from jaxebm.mcmc._checks import check_algorithm
from jaxebm.mcmc.colour import is_graph_params
from jaxebm.mcmc.gibbs import heat_bath, rbm_gibbs
from jaxebm.rbm import RBMParams

__all__ = ["AISResult", "ais_log_partition"]


class AISResult(NamedTuple):
    log_z: jax.Array  # scalar estimate of log Z
    stderr: jax.Array  # scalar standard error of log_z
    log_weights: jax.Array  # (num_chains,) log importance weights (without log Z0)
    ess: jax.Array  # scalar effective sample size of the weights


def ais_log_partition(key, target, *, num_chains: int = 1000, num_temps: int | None = None, betas=None,
                      sweeps_per_temp: int = 1, make_algorithm: Callable | None = None,
                      init_fn: Callable | None = None, log_z0: float | None = None) -> AISResult:
    """AIS estimate of log Z with its standard error.

    Args:
      key: PRNG key.
      target: ``IsingParams`` (heat-bath transitions), ``GraphIsingParams`` (colour-class
        heat bath), ``RBMParams`` (block Gibbs on (x, z)), or None with ``make_algorithm``,
        ``init_fn`` and ``log_z0`` given.
      num_chains: independent annealing runs (vmapped).
      num_temps: number of temperatures (default 1000; a schedule linear in beta**4 puts more
        of them near beta = 0, where the distribution changes fastest), unless ``betas``.
      betas: explicit increasing schedule from 0 to 1. Given with ``num_temps``, the two must
        agree (``num_temps == len(betas)``; ``ValueError`` otherwise): neither is ignored.
      sweeps_per_temp: transitions per temperature.
      make_algorithm: ``beta -> SamplingAlgorithm`` whose states carry ``log_weight``.
      init_fn: ``key -> position`` drawn exactly from the beta = 0 distribution. Each chain
        starts at ``make_algorithm(0.0).init(init_fn(k0), k1)`` with its own keys, so a
        state holding more than the position (the hidden units of an RBM) is completed by a
        draw from the beta = 0 conditional: every target is treated alike. When ``init_fn`` or
        ``make_algorithm`` is given, one such start is built eagerly before the compiled work
        (one draw, outside jit), so that the sampler's ``init`` checks the position (e.g. +-1
        spins of the right shape) and the state's ``log_weight`` is checked to be a finite
        scalar: a ``ValueError`` naming ``init_fn`` (or ``make_algorithm``) otherwise, instead of
        a silently wrong estimate from starts the jitted ``init`` could not check.
      log_z0: log partition function at beta = 0.

    Validation: ``num_chains >= 2`` (the standard error needs two chains), ``num_temps >= 2``
    and ``sweeps_per_temp >= 1`` are counts; ``betas`` must be finite, non-decreasing, start
    at 0 and end at 1; the target's parameters are checked as by the samplers.

    Compiled once per configuration: the work is a module-level jitted function of the
    target's arrays and the schedule, keyed on ``(num_chains, num_temps, sweeps_per_temp)`` and
    on the ``make_algorithm`` / ``init_fn`` function objects (pass the same objects, not fresh
    lambdas, to reuse the program). Same key, same result.
    """
    key = prng_key("key", key)
    num_chains = count("num_chains", num_chains, minimum=2)
    sweeps_per_temp = count("sweeps_per_temp", sweeps_per_temp)
    if make_algorithm is not None and not callable(make_algorithm):
        raise ValueError(f"make_algorithm must be a function beta -> SamplingAlgorithm; got "
                         f"{type(make_algorithm).__name__}.")
    if init_fn is not None and not callable(init_fn):
        raise ValueError(f"init_fn must be a function key -> position; got {type(init_fn).__name__}.")
    target, default_log_z0 = _validate_target(target)
    if target is None and (make_algorithm is None or init_fn is None or log_z0 is None):
        raise ValueError("target must be IsingParams or RBMParams, or give make_algorithm, init_fn and log_z0.")
    log_z0 = default_log_z0 if log_z0 is None else finite_scalar("log_z0", log_z0)
    if num_temps is not None:
        num_temps = count("num_temps", num_temps, minimum=2)
    if betas is None:
        betas = jnp.linspace(0.0, 1.0, 1000 if num_temps is None else num_temps) ** 4
    else:
        betas = schedule("betas", betas, start=0.0, end=1.0)
        if num_temps is not None and num_temps != betas.shape[0]:
            raise ValueError(f"num_temps ({num_temps}) disagrees with betas ({betas.shape[0]} temperatures); give "
                             "only betas, or a num_temps equal to len(betas).")
    if make_algorithm is not None or init_fn is not None:
        _check_start(key, target, make_algorithm, init_fn)
    return _ais(key, target, betas, log_z0, make_algorithm=make_algorithm, init_fn=init_fn, num_chains=num_chains,
                sweeps_per_temp=sweeps_per_temp)


def _check_start(key, target, make_algorithm, init_fn) -> None:
    """Builds one beta = 0 start eagerly, as every chain of :func:`_ais` does under jit, so that
    the sampler's ``init`` checks the values ``init_fn`` draws (under jit it sees tracers and
    cannot): one draw on concrete keys, no compilation of the annealing."""
    default_make, default_init = _default_model(target)
    make_algorithm, init_fn = make_algorithm or default_make, init_fn or default_init
    with jax.ensure_compile_time_eval():  # concrete even when this call is traced (an outer jit)
        if not is_concrete(key):  # a key of the same kind: the values of one check draw do not matter
            typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
            key = jax.random.key(0) if typed else jax.random.PRNGKey(0)
        k0, _ = jax.random.split(key)
        algorithm = check_algorithm("make_algorithm", make_algorithm(0.0), "make_algorithm(0.0)")
        try:
            position = init_fn(k0)
        except Exception as err:
            raise ValueError(f"init_fn must be a function key -> position; init_fn(key) raised "
                             f"{type(err).__name__}: {err}") from err
        for leaf in jax.tree_util.tree_leaves(position):  # NaN starts, whatever init then does with them
            if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
                check_finite("init_fn(key)", leaf)
        try:
            state = algorithm.init(position, jax.random.fold_in(k0, 1))
        except ValueError as err:
            raise ValueError(f"init_fn must return a valid start of make_algorithm(0.0).init; the position it "
                             f"returned was refused: {err}") from err
    log_weight = getattr(state, "log_weight", None)
    if log_weight is None:
        raise ValueError(f"make_algorithm must build samplers whose states carry log_weight (the log weight at "
                         f"beta = 1); a {type(state).__name__} has none.")
    if jnp.shape(log_weight) != ():
        raise ValueError(f"make_algorithm must build samplers whose state.log_weight is a scalar; got shape "
                         f"{jnp.shape(log_weight)}.")
    if is_concrete(log_weight) and not np.isfinite(np.asarray(log_weight)):  # numpy: no staging under jit
        raise ValueError(f"init_fn must return starts of finite log weight; make_algorithm(0.0).init(init_fn(key)) "
                         f"has log_weight {float(log_weight)}.")


def _validate_target(target):
    """(validated target as JAX arrays or None, default log Z0 at beta = 0 or None)."""
    if isinstance(target, IsingParams):
        target = ising.validate_params(target, "target")
        return target, target.h.shape[0] * math.log(2.0)
    if is_graph_params(target):  # colour-class heat bath
        return ising.validate_params(target, "target"), target.graph.n * math.log(2.0)
    if isinstance(target, RBMParams):
        target = rbm_module.validate_params(target, "target")
        nv, nh = target.W.shape
        # at beta = 0 block Gibbs draws z uniformly too: Z0 counts both layers
        return target, (nv + nh) * math.log(2.0)
    if target is not None:
        raise ValueError(f"target must be IsingParams, GraphIsingParams, RBMParams or None; got "
                         f"{type(target).__name__}.")
    return None, None


def _default_model(target):
    """(make_algorithm, init_fn) for a model target, built inside the jitted work from the
    target's (traced) arrays."""
    if isinstance(target, IsingParams) or is_graph_params(target):
        n, dtype = target.h.shape[0], target.h.dtype
        return (lambda b: heat_bath(target, b)), (lambda k: jax.random.rademacher(k, (n,), dtype))
    if isinstance(target, RBMParams):
        nv, dtype = target.W.shape[0], target.W.dtype
        return (lambda b: rbm_gibbs(target, b)), (lambda k: jax.random.rademacher(k, (nv,), dtype))
    return None, None


@functools.partial(jax.jit, static_argnames=("make_algorithm", "init_fn", "num_chains", "sweeps_per_temp"))
def _ais(key, target, betas, log_z0, *, make_algorithm, init_fn, num_chains, sweeps_per_temp) -> AISResult:
    default_make, default_init = _default_model(target)
    make_algorithm = make_algorithm or default_make
    init_fn = init_fn or default_init

    def one_chain(key):
        k0, k_run = jax.random.split(key)
        # an exact beta = 0 draw: the position from init_fn, the rest (an RBM's z) from init
        state = make_algorithm(0.0).init(init_fn(k0), jax.random.fold_in(k0, 1))

        def body(carry, inputs):
            state, log_w = carry
            b_prev, b, k = inputs
            log_w = log_w + (b - b_prev) * state.log_weight
            algo = make_algorithm(b)

            def sweep(s, kk):
                return algo.step(kk, s)[0], None

            state, _ = lax.scan(sweep, state, jax.random.split(k, sweeps_per_temp))
            return (state, log_w), None

        keys = jax.random.split(k_run, betas.shape[0] - 1)
        (_, log_w), _ = lax.scan(body, (state, jnp.zeros((), betas.dtype)), (betas[:-1], betas[1:], keys))
        return log_w

    log_w = jax.vmap(one_chain)(jax.random.split(key, num_chains))
    m = jnp.max(log_w)
    w = jnp.exp(log_w - m)
    mean = jnp.mean(w)
    log_z = log_z0 + m + jnp.log(mean)
    stderr = jnp.std(w) / (mean * np.sqrt(num_chains))
    ess = jnp.sum(w) ** 2 / jnp.sum(w * w)
    return AISResult(log_z, stderr, log_w, ess)
