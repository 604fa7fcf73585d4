"""Generated bad-input suite (issue #12): every public entry point, every argument, every way
an argument can be wrong.

Each case takes one valid call, corrupts one argument with one *mutation* (hypothesis draws
where the corruption goes and the sizes involved), and classifies what happened:

* ``refused``: a ``ValueError`` whose message names the argument;
* ``warned``: a documented warning (only for mutations marked as warn-worthy);
* ``right``: for *benign* mutations (a Python list, a NumPy array, integer +-1 data, a NumPy
  integer count) the same answer as the valid call;
* anything else fails the test: a silent answer to a bad input, a NaN, or an unclear
  exception type (AttributeError, IndexError, ZeroDivisionError, ...).

``python -m tests.test_bad_inputs`` runs every case once and prints the outcome counts quoted
in the README's reliability section.
"""

from __future__ import annotations

import collections
import math
import sys
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxebm import divergence, enumeration, gaussian, gmm, inverse, ising, mcmc, rbm
from jaxebm._validation import ConvergenceWarning

N, M = 5, 40  # spins, samples
NV, NH = 4, 3  # RBM layers
D, K = 2, 2  # GMM features, components


# ----------------------------------------------------------------------------- valid values


def _spins(shape, seed=0):
    return np.where(np.random.default_rng(seed).random(shape) < 0.5, -1.0, 1.0).astype(np.float32)


def _ising():
    rng = np.random.default_rng(1)
    J = np.triu(rng.normal(scale=0.3, size=(N, N)), 1)
    return ising.IsingParams(jnp.asarray(rng.normal(scale=0.2, size=N), jnp.float32),
                             jnp.asarray(J + J.T, jnp.float32))


def _rbm():
    rng = np.random.default_rng(2)
    return rbm.RBMParams(jnp.asarray(rng.normal(scale=0.3, size=(NV, NH)), jnp.float32),
                         jnp.asarray(rng.normal(scale=0.1, size=NV), jnp.float32),
                         jnp.asarray(rng.normal(scale=0.1, size=NH), jnp.float32))


def _gmm():
    return gmm.GMMParams(jnp.asarray([0.4, 0.6], jnp.float32), jnp.asarray([[-1.0, 0.0], [1.0, 0.5]], jnp.float32),
                         jnp.asarray(np.stack([np.eye(D), 0.5 * np.eye(D)]), jnp.float32))


def _real_data():
    rng = np.random.default_rng(3)
    return np.concatenate([rng.normal(-1, 0.5, (M // 2, D)), rng.normal(1, 0.5, (M // 2, D))]).astype(np.float32)


def _pl_data():
    # exact samples of a small model: every spin flips, no two spins always equal
    return np.asarray(ising.sample_exact(jax.random.key(7), _ising(), 400))


KEY = jax.random.key(0)

VALID: dict[str, Callable[[], Any]] = {
    "spins_batch": lambda: _spins((M, N)),
    "spins_vec": lambda: _spins((N,)),
    "rbm_batch": lambda: _spins((M, NV), 4),
    "rbm_vec": lambda: _spins((NV,), 4),
    "pl_data": _pl_data,
    "real_batch": _real_data,
    "ising": _ising,
    "rbm": _rbm,
    "gmm": _gmm,
    "distribution": lambda: np.asarray([0.1, 0.2, 0.3, 0.4], np.float32),
    "schedule": lambda: np.linspace(0.0, 1.0, 30) ** 2,
    "ladder": lambda: np.geomspace(0.3, 1.0, 4),
    "chain_draws": lambda: np.random.default_rng(5).normal(size=(4, 50)),
    "mean": lambda: np.zeros(D, np.float32),
    "cov": lambda: np.eye(D, dtype=np.float32),
    "devices": lambda: tuple(jax.local_devices()),
}

# ----------------------------------------------------------------------------- mutations


class Mutation(NamedTuple):
    name: str
    apply: Callable[[Any, Any], Any]  # (valid value, hypothesis data) -> bad value
    benign: bool = False  # the right answer is the valid call's
    warn_ok: bool = False  # a documented warning is an acceptable outcome


def _at(draw, shape):
    return tuple(draw(st.integers(0, s - 1)) for s in shape)


def _set(value, draw, new):
    out = np.array(value, dtype=np.float64)
    out[_at(draw, out.shape)] = new
    return out.astype(np.asarray(value).dtype)


def _array_mutations(spins: bool) -> list[Mutation]:
    muts = [
        Mutation("nan", lambda v, d: _set(v, d.draw, np.nan)),
        Mutation("inf", lambda v, d: _set(v, d.draw, d.draw(st.sampled_from([np.inf, -np.inf])))),
        Mutation("empty", lambda v, d: np.asarray(v)[:0]),
        Mutation("extra_axis", lambda v, d: np.asarray(v)[None, None]),
        Mutation("wrong_width", lambda v, d: np.asarray(v)[..., : np.shape(v)[-1] - d.draw(st.integers(1, 2))]),
        Mutation("strings", lambda v, d: np.asarray(v).astype(str)),
        Mutation("list", lambda v, d: np.asarray(v).tolist(), benign=True),
        Mutation("numpy_float64", lambda v, d: np.asarray(v, np.float64), benign=True),
    ]
    if spins:
        muts += [
            Mutation("zero_one", lambda v, d: (np.asarray(v) + 1) / 2),
            Mutation("half", lambda v, d: _set(v, d.draw, 0.5)),
            Mutation("two", lambda v, d: _set(v, d.draw, 2.0)),
            Mutation("int8", lambda v, d: np.asarray(v).astype(np.int8), benign=True),
        ]
    return muts


def _replace(params, **kw):
    return params._replace(**kw)


def _perturb(params, field, draw, value):
    arr = np.asarray(getattr(params, field))
    return _replace(params, **{field: jnp.asarray(_set(arr, draw, value))})


MUTATIONS: dict[str, list[Mutation]] = {
    "spins_batch": _array_mutations(True),
    "spins_vec": _array_mutations(True),
    "rbm_batch": _array_mutations(True),
    "rbm_vec": _array_mutations(True),
    "pl_data": [m for m in _array_mutations(True) if m.name != "empty"] + [
        Mutation("empty", lambda v, d: np.asarray(v)[:0])],
    "real_batch": _array_mutations(False),
    "ising": [
        Mutation("h_nan", lambda p, d: _perturb(p, "h", d.draw, np.nan)),
        Mutation("J_nan", lambda p, d: _perturb(p, "J", d.draw, np.nan)),
        Mutation("J_inf", lambda p, d: _perturb(p, "J", d.draw, np.inf)),
        Mutation("J_asymmetric", lambda p, d: _replace(p, J=p.J.at[0, 1].add(d.draw(st.floats(0.1, 2.0))))),
        Mutation("J_diagonal", lambda p, d: _replace(p, J=p.J.at[(d.draw(st.integers(0, N - 1)),) * 2].set(
            d.draw(st.floats(0.1, 2.0))))),
        Mutation("J_shape", lambda p, d: _replace(p, J=p.J[:-1])),
        Mutation("h_shape", lambda p, d: _replace(p, h=p.h[:-1])),
        Mutation("plain_tuple", lambda p, d: (p.h, p.J)),
        Mutation("dict", lambda p, d: {"h": p.h, "J": p.J}),
        Mutation("numpy_params", lambda p, d: ising.IsingParams(np.asarray(p.h), np.asarray(p.J)), benign=True),
        Mutation("list_params", lambda p, d: ising.IsingParams(np.asarray(p.h).tolist(), np.asarray(p.J).tolist()),
                 benign=True),
    ],
    "rbm": [
        Mutation("W_nan", lambda p, d: _perturb(p, "W", d.draw, np.nan)),
        Mutation("b_inf", lambda p, d: _perturb(p, "b", d.draw, np.inf)),
        Mutation("c_nan", lambda p, d: _perturb(p, "c", d.draw, np.nan)),
        Mutation("b_shape", lambda p, d: _replace(p, b=p.b[:-1])),
        Mutation("c_shape", lambda p, d: _replace(p, c=jnp.concatenate([p.c, p.c]))),
        Mutation("plain_tuple", lambda p, d: (p.W, p.b, p.c)),
        Mutation("numpy_params", lambda p, d: rbm.RBMParams(*(np.asarray(a) for a in p)), benign=True),
    ],
    "gmm": [
        Mutation("weights_unnormalised", lambda p, d: p._replace(weights=p.weights * d.draw(st.floats(1.5, 3.0)))),
        Mutation("weights_negative", lambda p, d: p._replace(weights=jnp.asarray([-0.2, 1.2], jnp.float32))),
        Mutation("means_nan", lambda p, d: p._replace(means=jnp.asarray(_set(np.asarray(p.means), d.draw, np.nan)))),
        Mutation("covs_not_pd", lambda p, d: p._replace(covs=p.covs.at[d.draw(st.integers(0, K - 1))].set(
            -jnp.eye(D)))),
        Mutation("covs_shape", lambda p, d: p._replace(covs=p.covs[:, :, :1])),
        Mutation("plain_tuple", lambda p, d: (p.weights, p.means, p.covs)),
    ],
    "count": [
        Mutation("zero", lambda v, d: 0),
        Mutation("negative", lambda v, d: -d.draw(st.integers(1, 10))),
        Mutation("fraction", lambda v, d: v + d.draw(st.sampled_from([0.5, 0.25]))),
        Mutation("bool", lambda v, d: True),
        Mutation("nan", lambda v, d: math.nan),
        Mutation("string", lambda v, d: str(v)),
        Mutation("numpy_int", lambda v, d: np.int64(v), benign=True),
    ],
    "regulariser": [
        Mutation("negative", lambda v, d: -d.draw(st.floats(0.01, 10.0))),
        Mutation("nan", lambda v, d: math.nan),
        Mutation("inf", lambda v, d: math.inf),
        Mutation("bool", lambda v, d: True),  # True is not 1.0: a bool for a real number is a mistake
    ],
    "scalar_positive": [
        Mutation("negative", lambda v, d: -d.draw(st.floats(0.01, 10.0))),
        Mutation("nan", lambda v, d: math.nan),
        Mutation("inf", lambda v, d: math.inf),
        Mutation("bool", lambda v, d: True),  # True is not 1.0: a bool for a real number is a mistake
    ],
    "beta": [
        Mutation("negative", lambda v, d: -d.draw(st.floats(0.01, 10.0))),
        Mutation("nan", lambda v, d: math.nan),
        Mutation("inf", lambda v, d: math.inf),
        Mutation("bool", lambda v, d: True),  # True is not 1.0: a bool for a real number is a mistake
    ],
    "distribution": [
        Mutation("unnormalised", lambda v, d: np.asarray(v) * d.draw(st.floats(1.5, 3.0))),
        Mutation("negative", lambda v, d: np.asarray(v) * np.asarray([-1, 1, 1, 1]) / 0.8),
        Mutation("nan", lambda v, d: _set(v, d.draw, np.nan)),
        Mutation("list", lambda v, d: np.asarray(v).tolist(), benign=True),
    ],
    "schedule": [
        Mutation("late_start", lambda v, d: np.asarray(v) * 0.9 + 0.1),
        Mutation("early_end", lambda v, d: np.asarray(v) * d.draw(st.floats(0.3, 0.95))),
        Mutation("decreasing", lambda v, d: np.concatenate([[0.0], np.asarray(v)[1:-1][::-1], [1.0]])),
        Mutation("nan", lambda v, d: _set(v, d.draw, np.nan)),
        Mutation("single", lambda v, d: np.asarray([1.0])),
    ],
    "ladder": [
        Mutation("non_positive", lambda v, d: np.concatenate([[0.0 - d.draw(st.floats(0, 1))], np.asarray(v)[1:]])),
        Mutation("nan", lambda v, d: _set(v, d.draw, np.nan)),
        Mutation("repeated", lambda v, d: np.asarray([0.5, 0.5, 1.0])),
        Mutation("single", lambda v, d: np.asarray([1.0])),
    ],
    "chain_draws": [
        Mutation("nan", lambda v, d: _set(v, d.draw, np.nan)),
        Mutation("too_short", lambda v, d: np.asarray(v)[:, : d.draw(st.integers(1, 3))]),
        Mutation("one_chain", lambda v, d: np.asarray(v)[:1]),
    ],
    # the enumeration options (max_seconds, engine, chunk_size, devices, inner_bits)
    "max_seconds": [
        Mutation("negative", lambda v, d: -d.draw(st.floats(0.01, 10.0))),
        Mutation("zero", lambda v, d: 0.0),
        Mutation("nan", lambda v, d: math.nan),
        Mutation("string", lambda v, d: str(v)),
        Mutation("too_small", lambda v, d: 1e-12),  # refused over budget, naming max_seconds
        Mutation("bool", lambda v, d: True),
        Mutation("inf", lambda v, d: math.inf, benign=True),  # no limit
    ],
    "chunk_size": [
        Mutation("zero", lambda v, d: 0),
        Mutation("negative", lambda v, d: -d.draw(st.integers(1, 10))),
        Mutation("fraction", lambda v, d: v + 0.5),
        Mutation("not_power_of_two", lambda v, d: d.draw(st.sampled_from([3, 6, 12]))),
        Mutation("bool", lambda v, d: True),
        Mutation("string", lambda v, d: str(v)),
        Mutation("numpy_int", lambda v, d: np.int64(v), benign=True),
    ],
    "inner_bits": [
        Mutation("negative", lambda v, d: -d.draw(st.integers(1, 10))),
        Mutation("fraction", lambda v, d: v + 0.5),
        Mutation("too_many", lambda v, d: d.draw(st.integers(30, 99))),
        Mutation("nan", lambda v, d: math.nan),
        Mutation("string", lambda v, d: str(v)),
        Mutation("numpy_int", lambda v, d: np.int64(v), benign=True),
    ],
    "devices": [
        Mutation("empty", lambda v, d: []),
        Mutation("strings", lambda v, d: ["cpu"]),
        Mutation("repeated", lambda v, d: [v[0], v[0]]),
        Mutation("not_a_sequence", lambda v, d: 3),
        Mutation("list", lambda v, d: list(v), benign=True),
    ],
    "engine": [
        Mutation("unknown", lambda v, d: d.draw(st.sampled_from(["cuda", "XLA", "fast"]))),
        Mutation("number", lambda v, d: 3),
    ],
    "mean": [m for m in _array_mutations(False) if m.name not in ("extra_axis",)],
    "cov": [
        Mutation("nan", lambda v, d: _set(v, d.draw, np.nan)),
        Mutation("not_pd", lambda v, d: -np.asarray(v)),
        Mutation("asymmetric", lambda v, d: np.asarray(v) + np.triu(np.ones_like(v), 1)),
        Mutation("wrong_shape", lambda v, d: np.asarray(v)[:, :1]),
        Mutation("list", lambda v, d: np.asarray(v).tolist(), benign=True),
    ],
}

# ----------------------------------------------------------------------------- entry points


class Arg(NamedTuple):
    name: str  # the argument name the error message must contain
    kind: str
    value: Any = None  # for scalars (count, regulariser, ...): the valid value
    aliases: tuple = ()


class Case(NamedTuple):
    name: str
    fn: Callable[..., Any]  # called with keyword arguments named as in ``args``
    args: tuple[Arg, ...]
    broadcasts: bool = False  # documented to broadcast over leading axes: extra axes are valid
    any_width: bool = False  # nothing fixes the number of columns: a narrower batch is valid
    valid_mutations: tuple = ()  # mutations that give valid input for this entry point


def _heat_bath_init(params, x0):
    return mcmc.heat_bath(params).init(x0)


def _metropolis_step(params, x0, beta):
    algo = mcmc.metropolis(params, beta)
    return algo.step(KEY, algo.init(x0))[0].x


def _rbm_gibbs_init(params, x0):
    return mcmc.rbm_gibbs(params).init(x0, KEY).x


def _replica_exchange(params, betas):
    algo = mcmc.replica_exchange(lambda b: mcmc.heat_bath(params, b), betas)
    x0 = jnp.ones((np.shape(betas)[0], N))
    return algo.step(KEY, algo.init(x0))[0].states.x


def _run_chain(num_steps, thin):
    algo = mcmc.heat_bath(_ising())
    return mcmc.run_chain(KEY, algo, algo.init(jnp.ones(N)), num_steps, thin)[0].x


def _ais(params, num_chains, betas):
    return mcmc.ais_log_partition(KEY, params, num_chains=num_chains, betas=betas).log_z


def _pcd(params, data, betas, num_steps):
    return mcmc.pcd_fit_ising(KEY, params, data, optax.sgd(0.05), num_steps, betas=betas, num_chains=4)[0]


# The enumeration options, each corrupted in turn on a valid call that passes all of them.
_OPTIONS = (Arg("max_seconds", "max_seconds", 100.0), Arg("engine", "engine", "xla"),
            Arg("chunk_size", "chunk_size", 2), Arg("devices", "devices"), Arg("inner_bits", "inner_bits", 2))


def _ising_fit(params, data, num_steps):
    return ising.fit(optax.sgd(0.1), params, data, num_steps)[0]


def _gmm_fit(x, n_components, max_iter, reg_covar):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return gmm.fit(KEY, x, n_components, max_iter=max_iter, reg_covar=reg_covar)[0].means


def _spins_from_codes(n):
    return enumeration.spins(jnp.arange(4, dtype=jnp.uint32), n)


CASES: list[Case] = [
    # enumeration
    Case("enumeration.spins", _spins_from_codes, (Arg("n", "count", 4),)),
    Case("enumeration.all_spins", enumeration.all_spins, (Arg("n", "count", 4),)),
    # ising
    Case("ising.log_partition", ising.log_partition, (Arg("params", "ising"),)),
    Case("ising.moments", ising.moments, (Arg("params", "ising"),)),
    Case("ising.fisher", ising.fisher, (Arg("params", "ising"),)),
    Case("ising.log_weight", ising.log_weight, (Arg("params", "ising"), Arg("x", "spins_batch")), broadcasts=True),
    Case("ising.log_prob", ising.log_prob, (Arg("params", "ising"), Arg("x", "spins_batch"))),
    Case("ising.nll", ising.nll, (Arg("params", "ising"), Arg("data", "spins_batch"))),
    Case("ising.data_moments", ising.data_moments, (Arg("data", "spins_batch"),), any_width=True),
    Case("ising.sample_exact", ising.sample_exact,
         (Arg("key", "key"), Arg("params", "ising"), Arg("num_samples", "count", 3))),
    Case("ising.fit", _ising_fit, (Arg("params", "ising"), Arg("data", "spins_batch"), Arg("num_steps", "count", 2))),
    Case("ising.fit options", lambda **options: ising.fit(optax.sgd(0.1), _ising(), VALID["spins_batch"](), 2,
                                                          **options)[0], _OPTIONS),
    Case("ising.log_partition options", lambda **options: ising.log_partition(_ising(), **options), _OPTIONS),
    Case("ising.moments options", lambda **options: ising.moments(_ising(), **options), _OPTIONS),
    Case("ising.fisher options", lambda **options: ising.fisher(_ising(), **options),
         tuple(a for a in _OPTIONS if a.name != "inner_bits")),
    # gaussian and divergence
    Case("gaussian.log_pdf", gaussian.log_pdf, (Arg("x", "real_batch"), Arg("mean", "mean"), Arg("cov", "cov"))),
    Case("gaussian.mle", gaussian.mle, (Arg("x", "real_batch"),), any_width=True),
    Case("gaussian.kl_to_data", gaussian.kl_to_data, (Arg("x", "real_batch"), Arg("mean", "mean"),
                                                       Arg("cov", "cov"))),
    Case("divergence.kl", lambda p, q: divergence.kl(p, q), (Arg("p", "distribution"), Arg("q", "distribution"))),
    Case("divergence.entropy", divergence.entropy, (Arg("p", "distribution"),)),
    Case("divergence.empirical_distribution", divergence.empirical_distribution, (Arg("data", "spins_batch"),),
         any_width=True),
    # gmm
    Case("gmm.log_prob", gmm.log_prob, (Arg("params", "gmm"), Arg("x", "real_batch"))),
    Case("gmm.predict", gmm.predict, (Arg("params", "gmm"), Arg("x", "real_batch"))),
    Case("gmm.e_step", lambda params, x: gmm.e_step(params, x)[1], (Arg("params", "gmm"), Arg("x", "real_batch"))),
    Case("gmm.em_step", lambda params, x, reg_covar: gmm.em_step(params, x, reg_covar)[1],
         (Arg("params", "gmm"), Arg("x", "real_batch"), Arg("reg_covar", "regulariser", 1e-6))),
    Case("gmm.bic", gmm.bic, (Arg("params", "gmm"), Arg("x", "real_batch"))),
    Case("gmm.sample", lambda key, params, n: gmm.sample(key, params, n)[0],
         (Arg("key", "key"), Arg("params", "gmm"), Arg("n", "count", 5))),
    Case("gmm.fit", _gmm_fit, (Arg("x", "real_batch"), Arg("n_components", "count", 2),
                               Arg("max_iter", "count", 5), Arg("reg_covar", "regulariser", 1e-6)), any_width=True),
    # rbm
    Case("rbm.log_partition", rbm.log_partition, (Arg("params", "rbm"),)),
    Case("rbm.nll", rbm.nll, (Arg("params", "rbm"), Arg("data", "rbm_batch"))),
    Case("rbm.log_prob", rbm.log_prob, (Arg("params", "rbm"), Arg("x", "rbm_batch"))),
    Case("rbm.hidden_mean", rbm.hidden_mean, (Arg("params", "rbm"), Arg("x", "rbm_batch")), broadcasts=True),
    Case("rbm.visible_log_weight", rbm.visible_log_weight, (Arg("params", "rbm"), Arg("x", "rbm_batch")),
         broadcasts=True),
    Case("rbm.gibbs_step", lambda key, params, x: rbm.gibbs_step(key, params, x)[0],
         (Arg("key", "key"), Arg("params", "rbm"), Arg("x", "rbm_batch"))),
    Case("rbm.cd_grad", rbm.cd_grad, (Arg("key", "key"), Arg("params", "rbm"), Arg("data", "rbm_batch"),
                                      Arg("k", "count", 1))),
    Case("rbm.log_partition options", lambda **options: rbm.log_partition(_rbm(), **options), _OPTIONS),
    Case("rbm.moments options", lambda **options: rbm.moments(_rbm(), **options), _OPTIONS),
    Case("rbm.gem_fit", lambda params, data, num_outer: rbm.gem_fit(params, data, num_outer, 1)[0],
         (Arg("params", "rbm"), Arg("data", "rbm_batch"), Arg("num_outer", "count", 2))),
    # mcmc
    Case("mcmc.heat_bath.init", _heat_bath_init, (Arg("params", "ising"), Arg("x0", "spins_vec", aliases=(
        "position",)))),
    Case("mcmc.metropolis.step", _metropolis_step, (Arg("params", "ising", aliases=("target",)),
                                                    Arg("x0", "spins_vec", aliases=("position",)),
                                                    Arg("beta", "beta", 1.0))),
    Case("mcmc.rbm_gibbs.init", _rbm_gibbs_init, (Arg("params", "rbm"), Arg("x0", "rbm_vec", aliases=(
        "position",)))),
    Case("mcmc.replica_exchange", _replica_exchange, (Arg("params", "ising"), Arg("betas", "ladder"))),
    Case("mcmc.run_chain", _run_chain, (Arg("num_steps", "count", 4), Arg("thin", "count", 2))),
    Case("mcmc.ais_log_partition", _ais, (Arg("params", "ising", aliases=("target",)),
                                          Arg("num_chains", "count", 8), Arg("betas", "schedule"))),
    Case("mcmc.pcd_fit_ising", _pcd, (Arg("params", "ising"), Arg("data", "spins_batch"),
                                      Arg("betas", "ladder"), Arg("num_steps", "count", 2))),
    Case("mcmc.geometric_ladder", lambda num: mcmc.geometric_ladder(0.1, 1.0, num), (Arg("num", "count", 4),)),
    Case("mcmc.effective_sample_size", mcmc.effective_sample_size, (Arg("x", "chain_draws"),),
         valid_mutations=("one_chain",)),  # the ESS of a single chain is defined
    Case("mcmc.r_hat", mcmc.r_hat, (Arg("x", "chain_draws"),)),
    # inverse
    Case("inverse.pseudolikelihood", lambda data, l2: inverse.pseudolikelihood(data, l2),
         (Arg("data", "pl_data"), Arg("l2", "regulariser", 1e-3)), any_width=True),
    Case("inverse.mpf", lambda data, l2: inverse.mpf(data, l2), (Arg("data", "pl_data"),
                                                                 Arg("l2", "regulariser", 1e-3)), any_width=True),
    Case("inverse.mean_field", lambda data: inverse.mean_field(data), (Arg("data", "pl_data"),), any_width=True),
    Case("inverse.tap", lambda data: inverse.tap(data), (Arg("data", "pl_data"),), any_width=True),
    Case("inverse.exact_ml", lambda data, l2: inverse.exact_ml(data, l2),
         (Arg("data", "pl_data"), Arg("l2", "regulariser", 1e-3)), any_width=True),
]

# Arguments whose kind has no mutations (keys) are left valid.
_PARAMS = [(case, arg.name, mut) for case in CASES for arg in case.args for mut in MUTATIONS.get(arg.kind, [])
           if not (case.broadcasts and mut.name == "extra_axis") and not (case.any_width and mut.name == "wrong_width")
           and mut.name not in case.valid_mutations]


def _valid_args(case: Case) -> dict:
    out = {}
    for arg in case.args:
        if arg.kind == "key":
            out[arg.name] = KEY
        elif arg.kind in VALID:
            out[arg.name] = VALID[arg.kind]()
        else:
            out[arg.name] = arg.value
    return out


def _leaves(tree):
    return [np.asarray(a, np.float64) for a in jax.tree_util.tree_leaves(tree)]


def _same(a, b) -> bool:
    la, lb = _leaves(a), _leaves(b)
    return len(la) == len(lb) and all(x.shape == y.shape and np.allclose(x, y, rtol=1e-5, atol=1e-6, equal_nan=False)
                                      for x, y in zip(la, lb))


def _has_nan(tree) -> bool:
    return any(np.isnan(x).any() for x in _leaves(tree) if x.dtype.kind == "f")


_REFERENCE: dict[str, Any] = {}


def _reference(case: Case):
    if case.name not in _REFERENCE:
        _REFERENCE[case.name] = case.fn(**_valid_args(case))
    return _REFERENCE[case.name]


def classify(case: Case, arg_name: str, mutation: Mutation, data) -> tuple[str, str]:
    """Runs one case; returns (outcome, detail) with outcome in refused/warned/right/FAIL-*."""
    arg = next(a for a in case.args if a.name == arg_name)
    kwargs = _valid_args(case)
    kwargs[arg_name] = mutation.apply(kwargs[arg_name], data)
    names = (arg.name, *arg.aliases)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = case.fn(**kwargs)
            jax.block_until_ready(out)
        except ValueError as err:
            msg = str(err)
            if mutation.benign:
                return "FAIL-refused-valid", msg
            if any(name in msg for name in names):
                return "refused", msg
            return "FAIL-unnamed", msg
        except Exception as err:  # noqa: BLE001 - classifying is the point
            return "FAIL-unclear", f"{type(err).__name__}: {err}"
    if mutation.benign:
        ref = _reference(case)
        return ("right", "") if _same(out, ref) else ("FAIL-wrong", "benign input changed the answer")
    if mutation.warn_ok and any(issubclass(w.category, (ConvergenceWarning, RuntimeWarning)) for w in caught):
        return "warned", str(caught[0].message)
    return ("FAIL-nan" if _has_nan(out) else "FAIL-silent"), "bad input accepted"


@pytest.mark.parametrize(("case", "arg_name", "mutation"), _PARAMS,
                         ids=[f"{c.name}-{a}-{m.name}" for c, a, m in _PARAMS])
@settings(max_examples=1, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_bad_input(case, arg_name, mutation, data):
    outcome, detail = classify(case, arg_name, mutation, data)
    assert not outcome.startswith("FAIL"), f"{case.name}({arg_name}={mutation.name}): {outcome}: {detail}"


def main() -> int:
    """Runs every case once and prints the outcome counts (for the README)."""
    counts: collections.Counter = collections.Counter()
    failures = []

    class _Data:  # a deterministic stand-in for hypothesis' st.data(): the first example
        def draw(self, strategy):
            return strategy.example()

    warnings.filterwarnings("ignore", category=Warning)
    for case, arg_name, mutation in _PARAMS:
        outcome, detail = classify(case, arg_name, mutation, _Data())
        counts[outcome] += 1
        if outcome.startswith("FAIL"):
            failures.append(f"{case.name}({arg_name}={mutation.name}): {outcome}: {detail[:160]}")
    print(f"{len(_PARAMS)} cases over {len(CASES)} entry points")
    for outcome, c in sorted(counts.items()):
        print(f"  {outcome}: {c}")
    for f in failures:
        print("  " + f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())


def _key_calls():
    """Every public function that takes a PRNG key, as ``key -> call``."""
    from jaxebm import curvature, data, elimination, graphs, optim

    params, rbm_params = _ising(), _rbm()
    x = _spins((M, N))
    g = graphs.square_lattice(2, 3)
    gp = ising.GraphIsingParams(np.zeros(g.n, np.float32), np.full(g.num_edges, 0.2, np.float32), g)
    gmm_x = np.random.default_rng(0).normal(size=(M, D)).astype(np.float32)
    gmm_params = gmm.fit(jax.random.key(0), gmm_x, K, max_iter=2, tol=10.0)[0]
    heat = mcmc.heat_bath(params)
    state = heat.init(x[0])
    return {
        "ising.init": lambda k: ising.init(k, N),
        "ising.sherrington_kirkpatrick": lambda k: ising.sherrington_kirkpatrick(k, N),
        "ising.sample_exact": lambda k: ising.sample_exact(k, params, 3),
        "ising.sample_exact (graph)": lambda k: ising.sample_exact(k, gp, 3),
        "ising.edwards_anderson": lambda k: ising.edwards_anderson(k, g),
        "elimination.sample_exact": lambda k: elimination.sample_exact(k, gp.h, gp.J, g, 3),
        "rbm.init": lambda k: rbm.init(k, NV, NH),
        "rbm.sample_hidden": lambda k: rbm.sample_hidden(k, rbm_params, _spins((NV,))),
        "rbm.sample_visible": lambda k: rbm.sample_visible(k, rbm_params, _spins((NH,))),
        "rbm.gibbs_step": lambda k: rbm.gibbs_step(k, rbm_params, _spins((NV,))),
        "rbm.cd_grad": lambda k: rbm.cd_grad(k, rbm_params, _spins((M, NV))),
        "rbm.pcd_grad": lambda k: rbm.pcd_grad(k, rbm_params, _spins((M, NV)), _spins((8, NV))),
        "gmm.fit": lambda k: gmm.fit(k, gmm_x, K, max_iter=2, tol=10.0),
        "gmm.initialize": lambda k: gmm.initialize(k, jnp.asarray(gmm_x), K),
        "gmm.sample": lambda k: gmm.sample(k, gmm_params, 5),
        "data.two_d_mixture": lambda k: data.two_d_mixture(k, 5),
        "data.exact_ising_samples": lambda k: data.exact_ising_samples(k, params, 3),
        "mcmc.run_chain": lambda k: mcmc.run_chain(k, heat, state, 2),
        "mcmc.run_chains": lambda k: mcmc.run_chains(k, heat, jax.vmap(heat.init)(jnp.asarray(x[:2])), 2),
        "mcmc.ais_log_partition": lambda k: mcmc.ais_log_partition(k, params, num_chains=4, num_temps=3),
        "mcmc.pcd_fit_ising": lambda k: mcmc.pcd_fit_ising(k, params, x, optax.sgd(0.1), 2, num_chains=4,
                                                           betas=np.array([0.5, 1.0])),
        "mcmc.tune_ladder": lambda k: mcmc.tune_ladder(k, lambda b: mcmc.heat_bath(params, b), np.array([0.5, 1.0]),
                                                       np.stack([x[:2]] * 1, 0)[0], num_rounds=1,
                                                       steps_per_round=2),
        "optim.run": lambda k: optim.run(optax.sgd(0.1), lambda p, a, kk: (jnp.sum(p ** 2), a), jnp.ones(2), 2,
                                         key=k, aux=jnp.zeros(())),
        "curvature.max_eigenvalue": lambda k: curvature.max_eigenvalue(lambda t: jnp.sum(t ** 2), jnp.ones(3), key=k),
    }


_KEY_CASES = sorted(_key_calls())


@pytest.mark.parametrize("name", _KEY_CASES)
def test_keys_are_checked(name):
    """An integer seed, a string, a batch of keys or a float array where one PRNG key belongs is
    a ValueError naming ``key`` (JAX raised a TypeError about "key data" or nothing at all); a
    typed key and raw key data both work."""
    call = _key_calls()[name]
    # a typed key for every other case, raw key data for the rest (deterministic: not hash())
    call(jax.random.key(1) if _KEY_CASES.index(name) % 2 else jax.random.PRNGKey(1))
    for bad in (5, "key", jax.random.split(jax.random.key(0), 3), np.zeros(2, np.float32)):
        with pytest.raises(ValueError, match="key must be"):
            call(bad)
