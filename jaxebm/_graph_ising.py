r"""Ising models on sparse graphs: :class:`GraphIsingParams` and its exact quantities.

Re-exported by :mod:`jaxebm.ising`, whose public functions dispatch here for
``GraphIsingParams``. The log weight has one coupling per edge of a
:class:`~jaxebm.graphs.Graph`:

.. math:: \log w(x) = \sum_{e=(i,j)} J_e x_i x_j + \sum_k h_k x_k

(the same model as the dense ``IsingParams`` with :math:`J_{ij} = J_{ji} = J_e`, Eq. (2.28)).
Exact quantities sum spins out along the graph's elimination order (:mod:`jaxebm.elimination`,
cost about ``n * 2^width``) or enumerate the dense model, whichever is estimated cheaper.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxebm import elimination, enumeration
from jaxebm._enum import split
from jaxebm._enum.budget import time_limit
from jaxebm._enum.codes import float_dtype
from jaxebm._numerics import HIGHEST
from jaxebm._validation import array, check_finite, choice, count, finite_scalar, graph_fields, prng_key, spins
from jaxebm.graphs import Graph
from jaxebm.types import Array, ArrayLike, PRNGKey

__all__ = ["GraphIsingParams", "edwards_anderson", "to_dense"]


@functools.partial(jax.tree_util.register_dataclass, data_fields=["h", "J"], meta_fields=["graph"])
@dataclasses.dataclass(frozen=True, eq=False)
class GraphIsingParams:
    """Parameters of an Ising model on a sparse graph (a registered pytree; ``graph`` is static).

    Attributes:
      h: ``Float[Array, "n"]`` fields.
      J: ``Float[Array, "E"]`` couplings, one per edge in the order of ``graph.edges``.
      graph: the :class:`~jaxebm.graphs.Graph` (hashable; a static field under ``jit``).
    """

    h: Array
    J: Array
    graph: Graph

    def _replace(self, **changes) -> GraphIsingParams:
        """A copy with fields replaced (as ``NamedTuple._replace`` for ``IsingParams``)."""
        return dataclasses.replace(self, **changes)


GraphIsingParams.__module__ = "jaxebm.ising"  # its public home


def validate(params: GraphIsingParams, name: str = "params") -> GraphIsingParams:
    """Checks shapes (always) and finiteness (when concrete); returns JAX float arrays."""
    if not isinstance(params, GraphIsingParams):
        raise ValueError(f"{name} must be a GraphIsingParams(h, J, graph); got {type(params).__name__}.")
    graph = params.graph
    if not isinstance(graph, Graph):
        raise ValueError(f"{name}.graph must be a jaxebm.graphs.Graph; got {type(graph).__name__}.")
    h, J = graph_fields(f"{name}.", params.h, params.J, graph)
    return GraphIsingParams(h, J, graph)


def to_dense(params: GraphIsingParams):
    r"""The same model as a dense ``IsingParams``: :math:`J_{ij} = J_{ji} = J_e` for each edge
    :math:`e = (i, j)`, zero elsewhere. Differentiable in ``params``."""
    from jaxebm.ising import IsingParams

    params = validate(params)
    return IsingParams(params.h, _dense_J(params.J, params.graph))


def _dense_J(J, graph: Graph):
    i, j = graph.edges[:, 0], graph.edges[:, 1]
    return jnp.zeros((graph.n, graph.n), J.dtype).at[i, j].set(J).at[j, i].set(J)


def edwards_anderson(key: PRNGKey, graph: Graph, *, beta: float = 1.0, couplings: str = "gaussian",
                     field: float = 0.0, dtype=jnp.float32) -> GraphIsingParams:
    r"""An Edwards-Anderson spin glass on ``graph`` at inverse temperature ``beta``.

    .. math:: J_e = \beta\, g_e, \quad g_e \sim N(0, 1) \ (\text{"gaussian"}) \text{ or }
              \pm 1 \text{ with probability } 1/2 \ (\text{"pm1"}); \qquad
              h_k = \beta\, \text{field}\; \xi_k, \quad \xi_k \sim N(0, 1)

    (S. F. Edwards and P. W. Anderson, J. Phys. F 5, 965 (1975)).

    Args:
      key: PRNG key.
      graph: the :class:`~jaxebm.graphs.Graph` (e.g. ``graphs.square_lattice(16, 16)``).
      beta: inverse temperature, >= 0.
      couplings: "gaussian" or "pm1".
      field: standard deviation of the random fields (before ``beta``), >= 0.
      dtype: float dtype of the parameters.
    """
    key = prng_key("key", key)
    if not isinstance(graph, Graph):
        raise ValueError(f"graph must be a jaxebm.graphs.Graph; got {type(graph).__name__}.")
    beta = finite_scalar("beta", beta, minimum=0.0)
    field = finite_scalar("field", field, minimum=0.0)
    choice("couplings", couplings, ("gaussian", "pm1"))
    dtype = float_dtype(dtype)
    key_J, key_h = jax.random.split(key)
    if couplings == "gaussian":
        g = jax.random.normal(key_J, (graph.num_edges,), dtype)
    else:
        g = jnp.where(jax.random.bernoulli(key_J, 0.5, (graph.num_edges,)), 1.0, -1.0).astype(dtype)
    h = field * jax.random.normal(key_h, (graph.n,), dtype)
    return GraphIsingParams(beta * h, beta * g, graph)


# ----------------------------------------------------------------------------- log weights




def _log_weight(h, J, graph: Graph, x):
    x = x.astype(h.dtype)
    pairs = x[..., graph.edges[:, 0]] * x[..., graph.edges[:, 1]]
    return jnp.matmul(pairs, J, precision=HIGHEST) + jnp.matmul(x, h, precision=HIGHEST)


def log_weight(params: GraphIsingParams, x: ArrayLike) -> Array:
    r"""Unnormalised log probability :math:`\sum_e J_e x_i x_j + h^\top x` of ``x`` ((n,) or (batch, n))."""
    params = validate(params)
    x = spins("x", x, n=params.graph.n)
    return _log_weight(params.h, params.J, params.graph, x)


# ----------------------------------------------------------------------------- exact quantities


def use_elimination(graph: Graph, max_seconds: float | None = None, what: str = "params.graph") -> bool:
    """Whether elimination is estimated cheaper than dense enumeration (of ``2^n`` states).
    Raises (elimination's message: width, table size, state count, time) when the cheaper
    one is over ``max_seconds``."""
    elim = elimination.estimate_seconds(graph)
    dense = enumeration.estimate_seconds(graph.n) if graph.n <= 63 else math.inf
    if dense < elim:
        limit = time_limit(max_seconds)
        if dense <= limit:
            return False
    elimination.check_budget(graph, max_seconds=max_seconds, what=what)
    return True


def _eliminate(graph: Graph, max_seconds, mode, engine, chunk_size, devices, inner_bits) -> bool:
    """Elimination or dense enumeration: ``mode`` asks for elimination, an option of the split
    engine for enumeration (both at once is refused), else whichever is estimated cheaper."""
    given = [name for name, value in zip(split.ENGINE_OPTIONS, (engine, chunk_size, devices, inner_bits))
             if value is not None]
    if mode is not None and given:
        raise ValueError(f"mode={mode!r} asks for elimination but {given[0]} is an option of dense enumeration; "
                         "pass one or the other.")
    if mode is not None:
        return True
    return not given and use_elimination(graph, max_seconds)


def _dense(params: GraphIsingParams, max_seconds, engine, chunk_size, devices, inner_bits):
    """The dense ``(h, J (n, n))`` (float32 or wider) and the split configuration."""
    config = split.pairwise_config(params.graph.n, max_seconds=max_seconds, engine=engine, chunk_size=chunk_size,
                                   devices=devices, inner_bits=inner_bits)
    dtype = jnp.result_type(params.h, params.J, jnp.float32)
    return params.h.astype(dtype), _dense_J(params.J.astype(dtype), params.graph), config


def log_partition(params: GraphIsingParams, *, max_seconds: float | None = None, engine: str | None = None,
                  chunk_size: int | None = None, devices=None, inner_bits: int | None = None,
                  mode: str | None = None) -> Array:
    """Exact log Z by elimination or dense enumeration (options: :func:`jaxebm.ising.log_partition`)."""
    params = validate(params)
    if _eliminate(params.graph, max_seconds, mode, engine, chunk_size, devices, inner_bits):
        return elimination.log_partition(params.h, params.J, params.graph, max_seconds=max_seconds,
                                         mode="auto" if mode is None else mode)
    h, J, config = _dense(params, max_seconds, engine, chunk_size, devices, inner_bits)
    return split.log_z_jit(h, J, config)


def moments_with_log_z(params: GraphIsingParams, *, max_seconds: float | None = None, engine: str | None = None,
                       chunk_size: int | None = None, devices=None, inner_bits: int | None = None,
                       mode: str | None = None) -> tuple[Array, Array, Array]:
    """(log Z, mean (n,), edge_corr (E,))."""
    params = validate(params)
    graph = params.graph
    if _eliminate(graph, max_seconds, mode, engine, chunk_size, devices, inner_bits):
        return elimination.moments(params.h, params.J, graph, max_seconds=max_seconds,
                                   mode="auto" if mode is None else mode)
    h, J, config = _dense(params, max_seconds, engine, chunk_size, devices, inner_bits)
    log_z, mean, corr = split.moments_jit(h, J, config)
    return log_z, mean, corr[graph.edges[:, 0], graph.edges[:, 1]]


def moments(params: GraphIsingParams, *, max_seconds: float | None = None, engine: str | None = None,
            chunk_size: int | None = None, devices=None, inner_bits: int | None = None,
            mode: str | None = None) -> tuple[Array, Array]:
    _, mean, edge_corr = moments_with_log_z(params, max_seconds=max_seconds, engine=engine, chunk_size=chunk_size,
                                            devices=devices, inner_bits=inner_bits, mode=mode)
    return mean, edge_corr


def data_moments(data: ArrayLike, graph: Graph) -> tuple[Array, Array]:
    r"""Empirical sufficient statistics on a graph: :math:`\bar x` (n,) and
    :math:`\overline{x_i x_j}` for each edge (E,)."""
    from jaxebm import ising

    if not isinstance(graph, Graph):
        raise ValueError(f"graph must be a jaxebm.graphs.Graph; got {type(graph).__name__}.")
    data = ising.validate_data(data, graph.n)
    return _data_moments(data, graph)


@functools.partial(jax.jit, static_argnums=1)
def _data_moments(data, graph: Graph):
    pairs = data[:, graph.edges[:, 0]] * data[:, graph.edges[:, 1]]
    return jnp.mean(data, axis=0), jnp.mean(pairs, axis=0)


def neighbour_couplings(J, graph: Graph) -> Array:
    """``(n, D)``: the coupling of each spin's neighbour slot (``graph.neighbour_edges``), zero in
    padding slots. Padding reads an appended zero, so a graph without edges (``J`` empty) works."""
    edge = np.where(np.asarray(graph.neighbour_mask), np.asarray(graph.neighbour_edges), graph.num_edges)
    return jnp.concatenate([J, jnp.zeros((1,), J.dtype)])[edge]


def _moment_arg(name, value, size):
    value = array(name, value, allow_empty=size == 0)  # an edge-less graph has no edge_corr
    if value.shape != (size,):
        raise ValueError(f"{name} must have shape ({size},); got {value.shape}.")
    check_finite(name, value)
    values = np.asarray(value) if not isinstance(value, jax.core.Tracer) else None
    if values is not None and np.any(np.abs(values) > 1 + 1e-5):
        raise ValueError(f"{name} must hold moments of +-1 spins, in [-1, 1]; got max |{name}| = "
                         f"{float(np.max(np.abs(values))):.6g}.")
    return value


def nll_from_moments(params: GraphIsingParams, mean: ArrayLike, edge_corr: ArrayLike, *,
                     max_seconds: float | None = None, engine: str | None = None, chunk_size: int | None = None,
                     devices=None, inner_bits: int | None = None, mode: str | None = None) -> Array:
    r""":math:`\log Z - h^\top \bar x - \sum_e J_e \overline{x_i x_j}` from the data's sufficient
    statistics (:func:`data_moments`)."""
    params = validate(params)
    graph = params.graph
    mean = _moment_arg("mean", mean, graph.n).astype(params.h.dtype)
    edge_corr = _moment_arg("edge_corr", edge_corr, graph.num_edges).astype(params.h.dtype)
    data_term = jnp.dot(params.h, mean, precision=HIGHEST) + jnp.dot(params.J, edge_corr, precision=HIGHEST)
    return log_partition(params, max_seconds=max_seconds, engine=engine, chunk_size=chunk_size, devices=devices,
                         inner_bits=inner_bits, mode=mode) - data_term


def log_prob(params: GraphIsingParams, x: ArrayLike, *, max_seconds: float | None = None, engine: str | None = None,
             chunk_size: int | None = None, devices=None, inner_bits: int | None = None,
             mode: str | None = None) -> Array:
    params = validate(params)
    x = spins("x", x, n=params.graph.n)
    return _log_weight(params.h, params.J, params.graph, x) - log_partition(
        params, max_seconds=max_seconds, engine=engine, chunk_size=chunk_size, devices=devices,
        inner_bits=inner_bits, mode=mode)


def nll(params: GraphIsingParams, data: ArrayLike, *, max_seconds: float | None = None, engine: str | None = None,
        chunk_size: int | None = None, devices=None, inner_bits: int | None = None,
        mode: str | None = None) -> Array:
    params = validate(params)
    mean, edge_corr = data_moments(data, params.graph)
    return nll_from_moments(params, mean, edge_corr, max_seconds=max_seconds, engine=engine, chunk_size=chunk_size,
                            devices=devices, inner_bits=inner_bits, mode=mode)


def moment_residual(params: GraphIsingParams, data: ArrayLike, *, max_seconds: float | None = None,
                    engine: str | None = None, chunk_size: int | None = None, devices=None,
                    inner_bits: int | None = None, mode: str | None = None) -> Array:
    r""":math:`\max(\max_k |\bar x_k - \langle x_k\rangle|, \max_e |\overline{x_i x_j} - \langle x_i x_j\rangle|)`."""
    params = validate(params)
    mean_d, corr_d = data_moments(data, params.graph)
    mean_m, corr_m = moments(params, max_seconds=max_seconds, engine=engine, chunk_size=chunk_size, devices=devices,
                             inner_bits=inner_bits, mode=mode)
    return jnp.maximum(jnp.max(jnp.abs(mean_d - mean_m)), jnp.max(jnp.abs(corr_d - corr_m), initial=0.0))


def kl(params_p: GraphIsingParams, params_q: GraphIsingParams, *, max_seconds: float | None = None,
       engine: str | None = None, chunk_size: int | None = None, devices=None, inner_bits: int | None = None,
       mode: str | None = None) -> Array:
    r""":math:`D_{KL}(p\|q) = (h_p - h_q)^\top \langle x\rangle_p + \sum_e (J_p - J_q)_e
    \langle x_i x_j\rangle_p - \log Z_p + \log Z_q` (Eq. (2.6)) for two models on one graph."""
    params_p, params_q = validate(params_p, "params_p"), validate(params_q, "params_q")
    if params_p.graph != params_q.graph:
        raise ValueError("params_p and params_q must be on the same graph (equal edges); got graphs with "
                         f"{params_p.graph.n} and {params_q.graph.n} nodes, {params_p.graph.num_edges} and "
                         f"{params_q.graph.num_edges} edges.")
    options = dict(max_seconds=max_seconds, engine=engine, chunk_size=chunk_size, devices=devices,
                   inner_bits=inner_bits, mode=mode)
    log_zp, mean_p, corr_p = moments_with_log_z(params_p, **options)
    log_zq = log_partition(params_q, **options)
    dtype = jnp.result_type(mean_p, log_zq)
    dh = (params_p.h - params_q.h).astype(dtype)
    dJ = (params_p.J - params_q.J).astype(dtype)
    return jnp.dot(dh, mean_p, precision=HIGHEST) + jnp.dot(dJ, corr_p, precision=HIGHEST) - log_zp + log_zq


def sample_exact(key: PRNGKey, params: GraphIsingParams, num_samples: int, *,
                 max_seconds: float | None = None) -> Array:
    params = validate(params)  # key: checked by ising.sample_exact, the public entry
    num_samples = count("num_samples", num_samples)
    if use_elimination(params.graph, max_seconds) or params.graph.n > 34:
        return elimination.sample_exact(key, params.h, params.J, params.graph, num_samples, max_seconds=max_seconds)
    from jaxebm import ising

    return ising.sample_exact(key, ising.IsingParams(params.h, _dense_J(params.J, params.graph)), num_samples,
                              max_seconds=max_seconds)


def fit(optimizer, params: GraphIsingParams, data: ArrayLike, num_steps: int, *, metrics_fn=None, opt_state=None,
        max_seconds: float | None = None, engine: str | None = None, chunk_size: int | None = None,
        devices=None, inner_bits: int | None = None, mode: str | None = None):
    r"""Exact maximum likelihood on a graph: descent on :math:`\log Z - h^\top \bar x -
    \sum_e J_e \overline{x_i x_j}`, whose gradient is the moment difference
    :math:`(\langle x\rangle - \bar x,\ \langle x_i x_j\rangle - \overline{x_i x_j})`.
    Returns ``(params, jaxebm.optim.RunInfo)`` (see :func:`jaxebm.ising.fit`)."""
    from jaxebm import optim

    num_steps = count("num_steps", num_steps)
    if metrics_fn is not None and not callable(metrics_fn):
        raise ValueError(f"metrics_fn must be callable or None; got {type(metrics_fn).__name__}.")
    params = validate(params)
    graph = params.graph
    # refuse an over-budget graph (or clashing options) before tracing
    _eliminate(graph, max_seconds, mode, engine, chunk_size, devices, inner_bits)
    mean, edge_corr = data_moments(data, graph)
    mean, edge_corr = mean.astype(params.h.dtype), edge_corr.astype(params.h.dtype)

    def metrics(p, value, grads, opt_state):
        out = {"residual": jnp.maximum(jnp.max(jnp.abs(grads.h)), jnp.max(jnp.abs(grads.J), initial=0.0))}
        if metrics_fn is not None:
            out["extra"] = metrics_fn(p, value, grads, opt_state)
        return out

    def loss(p, m, c):
        return nll_from_moments(p, m, c, max_seconds=max_seconds, engine=engine, chunk_size=chunk_size,
                                devices=devices, inner_bits=inner_bits, mode=mode)

    return optim.run(optimizer, loss, params, num_steps, mean, edge_corr, metrics_fn=metrics, opt_state=opt_state)
