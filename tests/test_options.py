"""The exact functions of ising (dense and graph models) and rbm take one set of keyword
options, ``max_seconds, engine, chunk_size, devices, inner_bits`` (plus ``mode`` for graph
models), accepted the same way everywhere (issue #14): each option gives the default's value,
an unknown option is a TypeError, and an option that cannot apply is a ValueError."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxebm import graphs, ising, rbm
from tests._compile import assert_compiles_once

N = 6
GRAPH = graphs.square_lattice(2, 3, periodic=False)  # 6 spins, 7 edges
NV, NH = 5, 3


def _dense(seed=0):
    rng = np.random.default_rng(seed)
    J = np.triu(rng.normal(scale=0.4, size=(N, N)), 1)
    return ising.IsingParams(jnp.asarray(rng.normal(scale=0.3, size=N), jnp.float32), jnp.asarray(J + J.T, jnp.float32))


def _graph(seed=0):
    return ising.edwards_anderson(jax.random.key(seed), GRAPH, beta=0.6, field=0.5)


def _rbm(seed=0):
    rng = np.random.default_rng(seed)
    return rbm.RBMParams(*(jnp.asarray(rng.normal(scale=s, size=shape), jnp.float32)
                           for s, shape in ((0.5, (NV, NH)), (0.2, (NV,)), (0.2, (NH,)))))


def _spins(n, seed=1):
    return np.where(np.random.default_rng(seed).random((9, n)) < 0.5, -1.0, 1.0).astype(np.float32)


X, XV = _spins(N), _spins(NV)
DENSE, GRAPH_PARAMS, RBM = _dense(), _graph(), _rbm()
DENSE_MOMENTS, GRAPH_MOMENTS = ising.data_moments(X), ising.data_moments(X, GRAPH)
MU = np.tanh(XV @ np.asarray(RBM.W) + np.asarray(RBM.c))

# name -> call taking the options as keywords
FUNCTIONS = {
    "ising.log_partition": lambda **o: ising.log_partition(DENSE, **o),
    "ising.moments": lambda **o: ising.moments(DENSE, **o),
    "ising.log_prob": lambda **o: ising.log_prob(DENSE, X, **o),
    "ising.nll": lambda **o: ising.nll(DENSE, X, **o),
    "ising.nll_from_moments": lambda **o: ising.nll_from_moments(DENSE, *DENSE_MOMENTS, **o),
    "ising.moment_residual": lambda **o: ising.moment_residual(DENSE, X, **o),
    "ising.kl": lambda **o: ising.kl(DENSE, _dense(1), **o),
    "ising.fisher": lambda **o: ising.fisher(DENSE, **o),
    "graph.log_partition": lambda **o: ising.log_partition(GRAPH_PARAMS, **o),
    "graph.moments": lambda **o: ising.moments(GRAPH_PARAMS, **o),
    "graph.log_prob": lambda **o: ising.log_prob(GRAPH_PARAMS, X, **o),
    "graph.nll": lambda **o: ising.nll(GRAPH_PARAMS, X, **o),
    "graph.nll_from_moments": lambda **o: ising.nll_from_moments(GRAPH_PARAMS, *GRAPH_MOMENTS, **o),
    "graph.moment_residual": lambda **o: ising.moment_residual(GRAPH_PARAMS, X, **o),
    "graph.kl": lambda **o: ising.kl(GRAPH_PARAMS, _graph(1), **o),
    "graph.fisher": lambda **o: ising.fisher(GRAPH_PARAMS, **o),
    "rbm.log_partition": lambda **o: rbm.log_partition(RBM, **o),
    "rbm.moments": lambda **o: rbm.moments(RBM, **o),
    "rbm.log_prob": lambda **o: rbm.log_prob(RBM, XV, **o),
    "rbm.nll": lambda **o: rbm.nll(RBM, XV, **o),
    "rbm.exact_grad": lambda **o: rbm.exact_grad(RBM, XV, **o),
    "rbm.q_function": lambda **o: rbm.q_function(RBM, _rbm(1), XV, **o),
    "rbm.elbo": lambda **o: rbm.elbo(RBM, MU, XV, **o),
}

OPTIONS = {
    "max_seconds": lambda: 1e4,
    "engine": lambda: "xla",
    "chunk_size": lambda: 2,
    "devices": lambda: jax.local_devices(),
    "inner_bits": lambda: 2,
    "mode": lambda: "log",
}


def _takes(name: str, option: str) -> bool:
    if option == "mode":  # the elimination's arithmetic: graph models only
        return name.startswith("graph.") and name != "graph.fisher"
    if option == "inner_bits":  # the Fisher information runs the generic engine (no inner block)
        return not name.endswith(".fisher")
    return True


def _close(got, want):
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-5)


_DEFAULTS: dict = {}


def _default(name):
    if name not in _DEFAULTS:
        _DEFAULTS[name] = FUNCTIONS[name]()
    return _DEFAULTS[name]


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_every_exact_function_takes_each_option_the_same_way(name, option):
    fn, value = FUNCTIONS[name], OPTIONS[option]()
    if _takes(name, option):
        _close(fn(**{option: value}), _default(name))
    elif option == "mode" and name.startswith("ising.") and name != "ising.fisher":
        with pytest.raises(ValueError, match="mode"):  # a dense model: the option cannot apply
            fn(**{option: value})
    else:
        with pytest.raises(TypeError, match=option):  # not in the signature
            fn(**{option: value})


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_unknown_option_is_a_type_error(name):
    with pytest.raises(TypeError, match="inner_bit"):
        FUNCTIONS[name](inner_bit=2)  # a misspelling: no **kwargs swallows it


def test_all_options_at_once_and_the_fused_kernel():
    all_options = dict(max_seconds=1e4, chunk_size=2, devices=jax.local_devices(), inner_bits=2)
    for name, fn in FUNCTIONS.items():
        options = {k: v for k, v in all_options.items() if _takes(name, k)}
        _close(fn(engine="xla", **options), _default(name))
    # the fused kernel (interpreted on CPU) where it applies: dense log Z and moments, RBM log Z
    for name in ("ising.log_partition", "ising.moments", "rbm.log_partition", "rbm.nll"):
        _close(FUNCTIONS[name](engine="pallas", inner_bits=2, chunk_size=2), _default(name))


def test_rbm_moments_take_the_engine_options():
    want = rbm.moments(RBM)
    for options in (dict(engine="xla"), dict(engine="auto"), dict(engine=None, chunk_size=1, inner_bits=0),
                    dict(inner_bits=3, chunk_size=1, devices=jax.local_devices()), dict(max_seconds=1.0)):
        _close(rbm.moments(RBM, **options), want)
    # the moments are the gradient of log Z, whichever engine computed log Z
    grad = jax.grad(lambda p: rbm.log_partition(p, engine="pallas", inner_bits=1))(RBM)
    _close((grad.b, grad.c, grad.W), want)
    with pytest.raises(ValueError, match="engine='pallas' cannot compute moments"):
        rbm.moments(RBM, engine="pallas")
    big = rbm.init(jax.random.key(0), 40, 36)
    with pytest.raises(ValueError, match=r"n_hidden \(the smaller layer of params\) = 36 means enumerating "
                                         r"2\^36 = .* states, each summing 40 units, estimated at .* the limit is "
                                         r"max_seconds=1e-06"):
        rbm.moments(big, max_seconds=1e-6)


def test_options_that_cannot_apply_are_refused():
    with pytest.raises(ValueError, match="mode='linear' is the elimination's arithmetic"):
        ising.log_partition(DENSE, mode="linear")
    with pytest.raises(ValueError, match="mode='log' asks for elimination but chunk_size is an option of dense"):
        ising.moments(GRAPH_PARAMS, mode="log", chunk_size=2)
    with pytest.raises(ValueError, match="fisher runs the generic engine"):
        ising.fisher(DENSE, engine="pallas")


def test_graph_options_choose_the_method():
    # mode asks for elimination, an option of the split engine for dense enumeration; both
    # are exact, and the dense route refuses a graph too large to enumerate
    for mode in ("auto", "linear", "log"):
        _close(ising.moments(GRAPH_PARAMS, mode=mode), _default("graph.moments"))
    torus = graphs.square_lattice(8, 8)
    big = ising.edwards_anderson(jax.random.key(0), torus, beta=0.3)
    ising.log_partition(big)  # elimination
    with pytest.raises(ValueError, match=r"n \(spins\) = 64"):
        ising.log_partition(big, chunk_size=2)


def test_calls_with_options_compile_once():
    options = dict(chunk_size=2, inner_bits=2, devices=jax.local_devices(), engine="xla", max_seconds=100.0)

    def calls(seed):
        dense, graph, params = _dense(seed), _graph(seed), _rbm(seed)
        return {
            "ising.nll": lambda: ising.nll(dense, X, **options),
            "ising.fisher": lambda: ising.fisher(dense, chunk_size=4, devices=jax.local_devices()),
            "graph.moments": lambda: ising.moments(graph, **options),
            "rbm.moments": lambda: rbm.moments(params, **options),
            "rbm.exact_grad": lambda: rbm.exact_grad(params, XV, **options),
        }

    assert_compiles_once(calls(2), calls(3))
