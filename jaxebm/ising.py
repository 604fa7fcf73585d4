r"""The fully-visible Ising Boltzmann machine of chapter 2.5, with exact quantities.

.. math::
   q_\theta(x) = \frac{1}{Z_\theta} \exp\Big(\sum_{k<l} J_{kl} x_k x_l + \sum_k h_k x_k\Big),
   \qquad x \in \{-1,+1\}^n \qquad \text{Eq. (2.28)-(2.29)}

``J`` is stored as a symmetric matrix with zero diagonal, so the log weight is
:math:`\tfrac12 x^\top J x + h^\top x`: each pair is counted once, as the notes'
:math:`\sum_{k \ne l}` means. Every quantity here is exact (enumeration over all
:math:`2^n` states by :mod:`jaxebm.enumeration`), and works in float32 or float64.

Every public function validates its inputs at the entry (:func:`validate_params`,
:func:`validate_data`): shapes at trace time, values (finite, +-1, symmetric ``J`` with zero
diagonal) whenever they are concrete. Under a caller's ``jit`` values cannot raise: call
``validate_params`` / ``validate_data`` eagerly first. NumPy arrays and Python lists are
accepted and converted. The compiled work is cached on its static configuration, so eager
calls with new values of the same shapes compile once.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxebm import _graph_ising, enumeration
from jaxebm._enum import split
from jaxebm._enum.codes import float_dtype
from jaxebm._graph_ising import GraphIsingParams, edwards_anderson, to_dense
from jaxebm._numerics import HIGHEST
from jaxebm._validation import (
    array,
    check_finite,
    check_ndim,
    check_spins,
    check_symmetric_zero_diagonal,
    choice,
    count,
    device_tuple,
    finite_scalar,
    is_concrete,
    power_of_two,
    prng_key,
    spins,
)
from jaxebm.types import Array, ArrayLike, PRNGKey

__all__ = [
    "GraphIsingParams",
    "IsingParams",
    "edwards_anderson",
    "to_dense",
    "fisher",
    "fit",
    "from_flat",
    "sufficient_statistics",
    "to_flat",
    "data_moments",
    "energy",
    "init",
    "kl",
    "log_partition",
    "log_prob",
    "log_weight",
    "moment_residual",
    "moments",
    "nll",
    "nll_from_moments",
    "sample_exact",
    "sherrington_kirkpatrick",
    "validate_data",
    "validate_params",
]


class IsingParams(NamedTuple):
    """Parameters of an Ising Boltzmann machine.

    Attributes:
      h: ``Float[Array, "n"]`` fields.
      J: ``Float[Array, "n n"]`` couplings, symmetric with zero diagonal.
    """

    h: Array
    J: Array


def validate_params(params: IsingParams, name: str = "params") -> IsingParams:
    """Checks an Ising model and returns it with JAX float arrays (NumPy arrays and Python
    lists accepted), ready to close over or ``vmap``.

    Raises ValueError naming the field on: a wrong type, empty or mismatched shapes
    (always, also at trace time), and, whenever the arrays are concrete, on NaN/inf,
    an asymmetric ``J`` or a non-zero diagonal. Under ``jit`` values are not checked (they
    are tracers): call this eagerly on the inputs first to check a jitted computation.
    Every public function of this module calls it at its entry. A
    :class:`GraphIsingParams` is checked for shapes ``h (n,)``, ``J (E,)`` and finiteness.
    """
    if isinstance(params, GraphIsingParams):
        return _graph_ising.validate(params, name)
    if not isinstance(params, IsingParams):
        raise ValueError(f"{name} must be an IsingParams(h, J) or a GraphIsingParams(h, J, graph); got "
                         f"{type(params).__name__}.")
    h = array(f"{name}.h", params.h, allow_empty=True)
    J = array(f"{name}.J", params.J, allow_empty=True)
    check_ndim(f"{name}.h", h, 1, "a vector of fields of shape (n,)")
    check_ndim(f"{name}.J", J, 2, "a coupling matrix of shape (n, n)")
    n = h.shape[0]
    if n < 1:
        raise ValueError(f"{name}.h must hold at least one spin; got shape {h.shape}.")
    if J.shape != (n, n):
        raise ValueError(f"{name}.J must have shape ({n}, {n}) to match {name}.h; got {J.shape}.")
    check_finite(f"{name}.h", h)
    check_finite(f"{name}.J", J)
    check_symmetric_zero_diagonal(f"{name}.J", J)
    return IsingParams(h, J)


def validate_data(data: ArrayLike, n: int | None = None, name: str = "data") -> Array:
    """Checks a ``(num_samples, n)`` batch of +-1 spins and returns it as a float array
    (NumPy, lists and integer +-1 data accepted). Values are checked when concrete."""
    data = array(name, data, allow_empty=True)
    check_ndim(name, data, 2, "a batch of spin configurations of shape (num_samples, n)")
    if n is not None and data.shape[1] != n:
        raise ValueError(f"{name} must have {n} columns (spins); got shape {data.shape}.")
    if data.shape[0] < 1 or data.shape[1] < 1:
        raise ValueError(f"{name} must hold at least one sample of at least one spin; got shape {data.shape}.")
    check_finite(name, data)
    check_spins(name, data)
    return data




def log_weight(params: IsingParams, x: ArrayLike) -> Array:
    r"""Unnormalised log probability :math:`\tfrac12 x^\top J x + h^\top x` (Eq. (2.28)).

    Args:
      params: the model.
      x: ``Float[Array, "n"]`` or ``Float[Array, "batch n"]`` spins in {-1, +1} (``vmap``
        for more batch axes).

    Returns:
      ``Float[Array, ""]`` or ``Float[Array, "batch"]``. For :class:`GraphIsingParams`,
      :math:`\sum_e J_e x_i x_j + h^\top x`.
    """
    if isinstance(params, GraphIsingParams):
        return _graph_ising.log_weight(params, x)
    params = validate_params(params)
    x = spins("x", x, n=params.h.shape[0])
    return _log_weight(params.h, params.J, x)


@jax.jit
def _log_weight(h, J, x):
    Jx = jnp.matmul(x, J, precision=HIGHEST)  # J is symmetric
    return 0.5 * jnp.sum(Jx * x, axis=-1) + jnp.matmul(x, h, precision=HIGHEST)


def energy(params: IsingParams, x: ArrayLike) -> Array:
    r"""Energy :math:`E(x) = -\tfrac12 x^\top J x - h^\top x` (Eq. (2.4), (2.28))."""
    return -log_weight(params, x)


def init(key: PRNGKey, n: int, scale: float = 0.01, dtype=jnp.float32) -> IsingParams:
    """Small random initial parameters: ``h, J_kl ~ N(0, scale^2)``, ``J`` symmetric with zero
    diagonal."""
    key = prng_key("key", key)
    n = count("n", n)
    scale = finite_scalar("scale", scale, minimum=0.0)
    dtype = float_dtype(dtype)
    key_h, key_J = jax.random.split(key)
    h = scale * jax.random.normal(key_h, (n,), dtype)
    upper = jnp.triu(scale * jax.random.normal(key_J, (n, n), dtype), 1)
    return IsingParams(h, upper + upper.T)


def sherrington_kirkpatrick(key: PRNGKey, n: int, beta: float = 1.0, field_std: float = 0.0,
                            dtype=jnp.float32) -> IsingParams:
    r"""An SK spin glass at inverse temperature ``beta``: :math:`J_{kl} \sim N(0, \beta^2/n)`,
    :math:`h_k \sim N(0, \text{field\_std}^2)`. The spin-glass transition is at beta = 1."""
    key = prng_key("key", key)
    n = count("n", n)
    beta = finite_scalar("beta", beta, minimum=0.0)
    field_std = finite_scalar("field_std", field_std, minimum=0.0)
    dtype = float_dtype(dtype)
    key_h, key_J = jax.random.split(key)
    upper = jnp.triu(jax.random.normal(key_J, (n, n), dtype) * (beta / np.sqrt(n)), 1)
    h = field_std * jax.random.normal(key_h, (n,), dtype)
    return IsingParams(h, upper + upper.T)


def log_partition(params: IsingParams, *, max_seconds: float | None = None, engine: str | None = None,
                  chunk_size: int | None = None, devices=None, inner_bits: int | None = None,
                  mode: str | None = None) -> Array:
    r"""Exact :math:`\log Z_\theta` by split enumeration (Eq. (2.29)).

    .. math:: \log Z = \log \sum_{x \in \{-1,+1\}^n} \exp\big(\tfrac12 x^\top J x + h^\top x\big)

    Differentiable with a custom JVP: ``jax.grad`` gives :math:`\langle x_k \rangle` for
    ``h`` and :math:`\tfrac12 \langle x_k x_l \rangle` for ``J_kl``, exactly what autodiff of
    the brute-force ``logsumexp`` gives, from one streamed pass without storing states.

    Args:
      params: the model (``IsingParams`` or ``GraphIsingParams``).
      max_seconds: refuse (ValueError, with the state count and the estimated time) beyond
        this estimated time (default :data:`jaxebm.enumeration.DEFAULT_MAX_SECONDS`).
      engine: ``"auto"`` (default), ``"xla"`` or ``"pallas"`` (the fused kernel of
        :mod:`jaxebm.kernels`; interpreted, hence slow, off GPU).
      chunk_size: outer states per chunk, a power of two (default: from a memory budget).
      devices: devices to shard the state range across (default: all local devices; pass
        ``jax.devices()`` to span the processes of a ``jax.distributed`` run).
      inner_bits: advanced: spins in the split engine's precomputed inner block (default: by
        backend).
      mode: ``GraphIsingParams`` only: the arithmetic of the elimination, ``"auto"``,
        ``"linear"`` or ``"log"`` (:func:`jaxebm.elimination.log_partition`).

    These options are taken, the same way, by every exact function of this module
    (:func:`moments`, :func:`log_prob`, :func:`nll`, :func:`nll_from_moments`,
    :func:`moment_residual`, :func:`kl`; :func:`fisher` all but ``inner_bits`` and ``mode``)
    and of :mod:`jaxebm.rbm`. An option that cannot apply is refused (ValueError), never
    ignored: ``mode`` for a dense ``IsingParams``, ``engine="pallas"`` for :func:`fisher`.

    Like every function here it validates its inputs at the entry (:func:`validate_params`;
    values only when concrete, so not under a caller's ``jit``) and runs cached compiled
    work: eager calls with new values of the same shapes compile once.

    For :class:`GraphIsingParams` the spins are summed out along the graph's elimination
    order (:func:`jaxebm.elimination.log_partition`, cost about ``n * 2^width``) when that is
    estimated cheaper than enumerating the dense model. Passing ``mode`` asks for elimination,
    passing ``engine``, ``chunk_size``, ``devices`` or ``inner_bits`` for dense enumeration
    (both at once is a ValueError). A width over budget is refused with the width, the state
    count and the estimated time.
    """
    options = _options(max_seconds, engine, chunk_size, devices, inner_bits, mode)
    if isinstance(params, GraphIsingParams):
        return _graph_ising.log_partition(params, **options)
    h, J, config = _dense(params, **options)
    return split.log_z_jit(h, J, config)


def _options(max_seconds, engine, chunk_size, devices, inner_bits, mode) -> dict:
    """The exact functions' keyword options, to pass on."""
    return dict(max_seconds=max_seconds, engine=engine, chunk_size=chunk_size, devices=devices,
                inner_bits=inner_bits, mode=mode)


def _dense(params, *, max_seconds=None, engine=None, chunk_size=None, devices=None, inner_bits=None, mode=None,
           name: str = "params"):
    """Validated dense ``(h, J)`` (float32 or wider) and the static split configuration on
    which the compiled work is cached; refuses n over budget and options that cannot apply."""
    params = validate_params(params, name)
    if mode is not None:
        raise ValueError(f"mode={mode!r} is the elimination's arithmetic, for GraphIsingParams; {name} is a dense "
                         "IsingParams (enumerated by the split engine). Drop mode.")
    config = split.pairwise_config(params.h.shape[0], max_seconds=max_seconds, engine=engine,
                                   chunk_size=chunk_size, devices=devices, inner_bits=inner_bits)
    dtype = jnp.result_type(params.h, params.J, jnp.float32)
    return params.h.astype(dtype), params.J.astype(dtype), config


def moments(params: IsingParams, *, max_seconds: float | None = None, engine: str | None = None,
            chunk_size: int | None = None, devices=None, inner_bits: int | None = None,
            mode: str | None = None) -> tuple[Array, Array]:
    r"""Exact model moments :math:`(\langle x_k\rangle, \langle x_k x_l\rangle)` (Eq. (2.31)-(2.32)).

    Options as :func:`log_partition`.

    Returns:
      ``(mean (n,), corr (n, n))`` with ``corr`` having a unit diagonal; for
      :class:`GraphIsingParams`, ``(mean (n,), edge_corr (E,))``, the sufficient statistics
      :math:`\langle x_i x_j \rangle` per edge, exact by elimination or enumeration.
    """
    options = _options(max_seconds, engine, chunk_size, devices, inner_bits, mode)
    if isinstance(params, GraphIsingParams):
        return _graph_ising.moments(params, **options)
    h, J, config = _dense(params, **options)
    _, mean, corr = split.moments_jit(h, J, config)
    return mean, corr


def log_prob(params: IsingParams, x: ArrayLike, *, max_seconds: float | None = None, engine: str | None = None,
             chunk_size: int | None = None, devices=None, inner_bits: int | None = None,
             mode: str | None = None) -> Array:
    r"""Exact :math:`\log q_\theta(x) = \tfrac12 x^\top J x + h^\top x - \log Z` (Eq. (2.28)).

    ``x``: spins of shape ``(n,)`` or ``(batch, n)``. Options as :func:`log_partition`."""
    options = _options(max_seconds, engine, chunk_size, devices, inner_bits, mode)
    if isinstance(params, GraphIsingParams):
        return _graph_ising.log_prob(params, x, **options)
    h, J, config = _dense(params, **options)
    x = spins("x", x, n=h.shape[0])
    return _log_prob(h, J, x, config)


@functools.partial(jax.jit, static_argnums=(3,))
def _log_prob(h, J, x, config):
    return _log_weight(h, J, x.astype(h.dtype)) - split.log_z(h, J, config)


def data_moments(data: ArrayLike, graph=None) -> tuple[Array, Array]:
    r"""Empirical moments :math:`\frac1M \sum_i x^{(i)}` and :math:`\frac1M \sum_i x^{(i)} x^{(i)\top}`,
    the data side of Eq. (2.31)-(2.32). The diagonal of the second moment is exactly 1
    (:math:`x_k^2 = 1`), not a float32 mean of ones. With a ``graph``
    (:class:`jaxebm.graphs.Graph`), the sufficient statistics of :class:`GraphIsingParams`:
    ``(mean (n,), edge_corr (E,))`` with :math:`\overline{x_i x_j}` per edge."""
    if graph is not None:
        return _graph_ising.data_moments(data, graph)
    return _data_moments(validate_data(data))


@jax.jit
def _data_moments(data):
    m = data.shape[0]
    mean = jnp.mean(data, axis=0)
    corr = jnp.matmul(data.T, data, precision=HIGHEST) / m
    return mean, corr.at[jnp.diag_indices(data.shape[1])].set(1.0)


def nll_from_moments(params: IsingParams, mean: ArrayLike, corr: ArrayLike, *, max_seconds: float | None = None,
                     engine: str | None = None, chunk_size: int | None = None, devices=None,
                     inner_bits: int | None = None, mode: str | None = None) -> Array:
    r"""The nll of Eq. (2.30) from the data moments :math:`(\bar x, \overline{xx^\top})`:

    .. math:: \mathcal{L}(\theta) = \log Z_\theta - h^\top \bar x - \tfrac12 \sum_{kl} J_{kl}
              \overline{x_k x_l}

    The exponential family depends on the data only through these moments, so training
    loops compute them once (:func:`data_moments`). ``mean`` and ``corr`` must be finite
    with entries in [-1, 1] (checked when concrete). For :class:`GraphIsingParams`, ``corr``
    is the ``(E,)`` vector of per-edge correlations (``data_moments(data, graph)``) and the
    data term is :math:`h^\top \bar x + \sum_e J_e \overline{x_i x_j}`. Options as
    :func:`log_partition`."""
    options = _options(max_seconds, engine, chunk_size, devices, inner_bits, mode)
    if isinstance(params, GraphIsingParams):
        return _graph_ising.nll_from_moments(params, mean, corr, **options)
    h, J, config = _dense(params, **options)
    n = h.shape[0]
    mean, corr = _moment_arg("mean", mean, (n,)), _moment_arg("corr", corr, (n, n))
    return _nll_from_moments(h, J, mean.astype(h.dtype), corr.astype(h.dtype), config)


def _moment_arg(name, value, shape):
    value = array(name, value)
    if value.shape != shape:
        raise ValueError(f"{name} must have shape {shape} for n = {shape[0]} spins; got {value.shape}.")
    check_finite(name, value)
    if is_concrete(value) and np.any(np.abs(np.asarray(value)) > 1 + 1e-5):
        raise ValueError(f"{name} must hold moments of +-1 spins, in [-1, 1]; got max |{name}| = "
                         f"{float(np.max(np.abs(np.asarray(value)))):.6g}.")
    if len(shape) == 2 and is_concrete(value):  # a triangle of <x x^T> would halve the coupling term
        v = np.asarray(value)
        asym = float(np.max(np.abs(v - v.T), initial=0.0))
        if asym > 1e-5:
            raise ValueError(f"{name} must be symmetric (the full matrix <x x^T>, as data_moments returns); "
                             f"max |{name} - {name}.T| = {asym:.3g}.")
        off = float(np.max(np.abs(np.diagonal(v) - 1.0), initial=0.0))
        if off > 1e-5:  # a zeroed diagonal or a covariance: the J diagonal's gradient would not vanish
            raise ValueError(f"{name} must be the second moment <x x^T> of +-1 spins, whose diagonal is 1 (not a "
                             f"covariance, nor a zeroed diagonal); max |diag({name}) - 1| = {off:.3g}.")
    return value


def _data_term(h, J, mean, corr):
    return jnp.dot(h, mean, precision=HIGHEST) + 0.5 * jnp.sum(J * corr)


@functools.partial(jax.jit, static_argnums=(4,))
def _nll_from_moments(h, J, mean, corr, config):
    return split.log_z(h, J, config) - _data_term(h, J, mean, corr)


def nll(params: IsingParams, data: ArrayLike, *, max_seconds: float | None = None, engine: str | None = None,
        chunk_size: int | None = None, devices=None, inner_bits: int | None = None,
        mode: str | None = None) -> Array:
    r"""Mean negative log-likelihood of ``data``: the KL divergence of Eq. (2.30) up to the
    data-entropy constant.

    .. math:: \mathcal{L}(\theta) = -\frac1M \sum_i \Big(\tfrac12 x^{(i)\top} J x^{(i)}
              + h^\top x^{(i)}\Big) + \log Z_\theta
              = D_{KL}(p_0 \,\|\, q_\theta) - H(p_0)

    Its gradient is the moment difference :math:`\langle\phi\rangle_\theta - \langle\phi\rangle_{data}`,
    exactly zero on the diagonal of ``J``. For :class:`GraphIsingParams` the data enter
    through their means and per-edge correlations. Options as :func:`log_partition`.
    """
    options = _options(max_seconds, engine, chunk_size, devices, inner_bits, mode)
    if isinstance(params, GraphIsingParams):
        return _graph_ising.nll(params, data, **options)
    h, J, config = _dense(params, **options)
    data = validate_data(data, h.shape[0])
    return _nll(h, J, data.astype(h.dtype), config)


@functools.partial(jax.jit, static_argnums=(3,))
def _nll(h, J, data, config):
    mean, corr = _data_moments(data)
    return split.log_z(h, J, config) - _data_term(h, J, mean, corr)


def moment_residual(params: IsingParams, data: ArrayLike, *, max_seconds: float | None = None,
                    engine: str | None = None, chunk_size: int | None = None, devices=None,
                    inner_bits: int | None = None, mode: str | None = None) -> Array:
    r"""Largest violation of the moment-matching conditions (2.31)-(2.32):
    :math:`\max(\max_k |m_k - \langle x_k\rangle|, \max_{k<l} |C_{kl} - \langle x_k x_l\rangle|)`.

    For :class:`GraphIsingParams` the pairs are the graph's edges. Options as
    :func:`log_partition`."""
    options = _options(max_seconds, engine, chunk_size, devices, inner_bits, mode)
    if isinstance(params, GraphIsingParams):
        return _graph_ising.moment_residual(params, data, **options)
    h, J, config = _dense(params, **options)
    data = validate_data(data, h.shape[0])
    return _moment_residual(h, J, data.astype(h.dtype), config)


@functools.partial(jax.jit, static_argnums=(3,))
def _moment_residual(h, J, data, config):
    mean_d, corr_d = _data_moments(data)
    _, mean_m, corr_m = split.moments(h, J, config)
    return jnp.maximum(jnp.max(jnp.abs(mean_d - mean_m)), jnp.max(jnp.abs(corr_d - corr_m)))


def kl(params_p: IsingParams, params_q: IsingParams, *, max_seconds: float | None = None,
       engine: str | None = None, chunk_size: int | None = None, devices=None, inner_bits: int | None = None,
       mode: str | None = None) -> Array:
    r"""Exact :math:`D_{KL}(p \,\|\, q)` between two Ising models on the same spins (Eq. (2.6)).

    .. math:: D_{KL}(p\|q) = (h_p - h_q)^\top \langle x\rangle_p
              + \tfrac12 \sum_{kl} (J_p - J_q)_{kl} \langle x_k x_l\rangle_p
              - \log Z_p + \log Z_q

    Two :class:`GraphIsingParams` on the same graph use their sufficient statistics (and
    elimination where it is cheaper); a ``GraphIsingParams`` paired with a dense model is
    compared as :func:`to_dense`. Options as :func:`log_partition`.
    """
    options = _options(max_seconds, engine, chunk_size, devices, inner_bits, mode)
    if isinstance(params_p, GraphIsingParams) and isinstance(params_q, GraphIsingParams):
        return _graph_ising.kl(params_p, params_q, **options)
    params_p, params_q = (to_dense(p) if isinstance(p, GraphIsingParams) else p for p in (params_p, params_q))
    hp, Jp, config = _dense(params_p, name="params_p", **options)
    hq, Jq, _ = _dense(params_q, name="params_q", **options)
    if hq.shape != hp.shape:
        raise ValueError(f"params_p and params_q must have the same number of spins; got {hp.shape[0]} and "
                         f"{hq.shape[0]}.")
    dtype = jnp.result_type(hp, hq)
    return _kl(hp.astype(dtype), Jp.astype(dtype), hq.astype(dtype), Jq.astype(dtype), config)


@functools.partial(jax.jit, static_argnums=(4,))
def _kl(hp, Jp, hq, Jq, config):
    log_zp, mean_p, corr_p = split.moments(hp, Jp, config)
    log_zq = split.log_z(hq, Jq, config)
    return _data_term(hp - hq, Jp - Jq, mean_p, corr_p) - log_zp + log_zq


def _inverse_cdf(key: PRNGKey, logits: Array, num_samples: int) -> Array:
    """Indices drawn from ``softmax(logits)`` by inverse CDF. The cumulative sum runs in two
    levels (blocks of 4096, then block totals) so float32 rounding stays ~4096 eps."""
    size = logits.shape[0]
    block = min(size, 4096)
    weights = jnp.exp(logits - jnp.max(logits))
    weights = jnp.pad(weights, (0, (-size) % block)).reshape(-1, block)
    within = jnp.cumsum(weights, axis=1)
    totals = jnp.cumsum(within[:, -1])
    u = jax.random.uniform(key, (num_samples,), logits.dtype) * totals[-1]
    blk = jnp.minimum(jnp.searchsorted(totals, u, side="right"), totals.shape[0] - 1)
    offset = u - jnp.where(blk > 0, totals[jnp.maximum(blk - 1, 0)], 0.0)
    idx = jax.vmap(lambda b, o: jnp.searchsorted(within[b], o, side="right"))(blk, offset)
    return jnp.minimum(blk * block + idx, size - 1)


def to_flat(params: IsingParams) -> Array:
    """Flat coordinates ``theta = (h, J[np.triu_indices(n, 1)])`` of Eq. (2.31)-(2.32) of a
    dense model (a :class:`GraphIsingParams` is already flat: ``h`` and one ``J`` per edge)."""
    if isinstance(params, GraphIsingParams):
        raise ValueError("params must be a dense IsingParams for to_flat; a GraphIsingParams is already flat "
                         "(jnp.concatenate([params.h, params.J])), or use to_dense(params) first.")
    params = validate_params(params)
    return _to_flat(params.h, params.J)


def _to_flat(h, J):
    iu = np.triu_indices(h.shape[0], 1)
    return jnp.concatenate([h, J[iu]])


def from_flat(theta: ArrayLike, n: int) -> IsingParams:
    """Inverse of :func:`to_flat`: a symmetric, zero-diagonal ``J`` from its upper triangle."""
    n = count("n", n)
    theta = array("theta", theta)
    check_finite("theta", theta)
    if theta.shape != (n + n * (n - 1) // 2,):
        raise ValueError(f"theta must have shape ({n + n * (n - 1) // 2},) for n = {n}; got {theta.shape}.")
    iu = np.triu_indices(n, 1)
    upper = jnp.zeros((n, n), theta.dtype).at[iu].set(theta[n:])
    return IsingParams(theta[:n], upper + upper.T)


def sufficient_statistics(x: ArrayLike) -> Array:
    r"""The sufficient statistics :math:`\phi(x) = (x_k;\ x_k x_l,\ k<l)` in the order of
    :func:`to_flat`, so that :math:`\log w(x) = \theta^\top \phi(x)`. ``x``: spins of shape
    ``(n,)`` or ``(batch, n)``."""
    x = array("x", x, allow_empty=True)
    check_ndim("x", x, (1, 2), "spins of shape (n,) or (batch, n)")
    return _phi(spins("x", x))


def _phi(x):
    iu = np.triu_indices(x.shape[-1], 1)
    return jnp.concatenate([x, x[..., iu[0]] * x[..., iu[1]]], axis=-1)


def fisher(params: IsingParams, *, max_seconds: float | None = None, engine: str | None = None,
           chunk_size: int | None = None, devices=None) -> Array:
    r"""Exact Fisher information = Hessian of :func:`nll` in flat coordinates (:func:`to_flat`).

    .. math:: F(\theta) = \nabla_\theta^2 \,\mathrm{nll}(\theta)
              = \mathrm{Cov}_{q_\theta}[\phi(x)]
              = \langle \phi\phi^\top\rangle - \langle\phi\rangle\langle\phi\rangle^\top

    the derivative of the moment conditions (2.31)-(2.32). Computed by one streamed pass of
    the generic engine (:func:`jaxebm.enumeration.covariance_states`) whose per-chunk
    contribution is the matmul :math:`\Phi^\top \mathrm{diag}(p) \Phi`.

    Its cost is :math:`2^n` states times :math:`2p^2` flops for the second moment: the
    time estimate counts both, and refuses (ValueError, with the state count and the
    estimated time) beyond ``max_seconds`` (default
    :data:`jaxebm.enumeration.DEFAULT_MAX_SECONDS`; e.g. n = 28 on a CPU).

    Options as :func:`log_partition`, except that the generic engine has no inner block
    (no ``inner_bits``) and no fused kernel (``engine`` is ``"auto"`` or ``"xla"``);
    ``chunk_size`` counts states per chunk. For :class:`GraphIsingParams` the statistics are
    :math:`\phi = (x_k;\ x_i x_j \text{ per edge})` in the order ``(h, J)``, enumerated
    densely (no elimination, so no ``mode``).

    Returns:
      ``Float[Array, "p p"]`` with ``p = n + n(n-1)/2`` (``p = n + E`` on a graph).
    """
    graph = params.graph if isinstance(params, GraphIsingParams) else None
    params = validate_params(params)
    if engine == "pallas":
        raise ValueError("engine='pallas': fisher runs the generic engine, which has no fused kernel; pass "
                         "engine='auto' or 'xla'.")
    if engine is not None:
        choice("engine", engine, ("auto", "xla"))
    chunk_size = None if chunk_size is None else power_of_two("chunk_size", chunk_size)
    devices = device_tuple("devices", devices)
    n = params.h.shape[0]
    p = n + (n * (n - 1) // 2 if graph is None else graph.num_edges)
    enumeration.check_enumerable(n, max_seconds=max_seconds, pairwise=False, num_devices=len(devices),
                                 what="n (spins)", flops_per_state=2.0 * p * p,
                                 detail=f" with p^2 = {p * p:,} products of the p = {p} sufficient statistics each")
    dtype = jnp.result_type(params.h, params.J, jnp.float32)
    return _fisher(params.h.astype(dtype), params.J.astype(dtype), graph, chunk_size, devices)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _fisher(h, J, graph, chunk_size, devices):
    if graph is None:
        theta, phi = _to_flat(h, J), _phi
    else:
        theta = jnp.concatenate([h, J])
        i, j = graph.edges[:, 0], graph.edges[:, 1]

        def phi(x):
            return jnp.concatenate([x, x[..., i] * x[..., j]], axis=-1)

    _, mean, second = enumeration.covariance_states(
        lambda x: jnp.dot(phi(x), theta, precision=HIGHEST), phi, h.shape[0], max_seconds=math.inf,
        chunk_size=chunk_size, devices=devices)
    cov = second - jnp.outer(mean, mean)
    return (0.5 * (cov + cov.T)).astype(h.dtype)  # the dtype of the params (the sums may be wider under x64)


def fit(optimizer, params: IsingParams, data: ArrayLike, num_steps: int, *, metrics_fn=None, opt_state=None,
        max_seconds: float | None = None, engine: str | None = None, chunk_size: int | None = None,
        devices=None, inner_bits: int | None = None, mode: str | None = None):
    r"""Learns an Ising model by exact gradient descent on :func:`nll` with any optax optimiser.

    The gradient is the moment difference, so descent is (erratum (2.33): the printed sign is
    wrong)

    .. math:: h \leftarrow h + \eta(\bar x - \langle x\rangle_\theta), \qquad
              J \leftarrow J + \eta(\overline{x x^\top} - \langle x x^\top\rangle_\theta)/2

    in ``IsingParams`` coordinates. A thin wrapper of :func:`jaxebm.optim.run` (one
    ``lax.scan``; jit it at the call site). The nll is convex and ``L``-smooth with
    ``L = ising_smoothness_bound(n)`` (:mod:`jaxebm.curvature`), so ``optax.sgd(eta)`` with
    ``eta <= 1/L`` never increases the loss history.

    Args:
      optimizer: any optax optimiser (extra-args transforms receive ``value_fn = nll``).
      params: initial ``IsingParams`` or ``GraphIsingParams``.
      data: ``(M, n)`` +-1 data (used through its moments).
      num_steps: number of updates (static).
      metrics_fn: optional ``(params, loss, grads, opt_state) -> pytree`` recorded each step.
      opt_state: optimiser state to resume from (``info.opt_state`` of an earlier fit).
      max_seconds, engine, chunk_size, devices, inner_bits, mode: the options of
        :func:`nll` / :func:`log_partition` (``mode`` for graphs only: elimination).

    Returns:
      ``(params, info)`` with ``info`` a :class:`jaxebm.optim.RunInfo`: ``info.loss`` the
      nll before each step, ``info.opt_state`` the final optimiser state, and
      ``info.metrics`` a dict with the moment residual (Eq. (2.31)-(2.32)) before each step
      under ``"residual"``, plus whatever ``metrics_fn`` returns under ``"extra"``.

    For :class:`GraphIsingParams` the loss is :math:`\log Z - h^\top \bar x - \sum_e J_e
    \overline{x_i x_j}` (data means and per-edge correlations), with exact gradients through
    the elimination (or enumeration) of :func:`log_partition`.
    """
    options = dict(max_seconds=max_seconds, engine=engine, chunk_size=chunk_size, devices=devices,
                   inner_bits=inner_bits)
    if isinstance(params, GraphIsingParams):
        return _graph_ising.fit(optimizer, params, data, num_steps, metrics_fn=metrics_fn, opt_state=opt_state,
                                mode=mode, **options)
    if mode is not None:
        raise ValueError(f"mode={mode!r} is the elimination's arithmetic, for GraphIsingParams; params is a dense "
                         "IsingParams (enumerated by the split engine). Drop mode.")
    from jaxebm import optim

    num_steps = count("num_steps", num_steps)
    if metrics_fn is not None and not callable(metrics_fn):
        raise ValueError(f"metrics_fn must be callable or None; got {type(metrics_fn).__name__}.")
    params = validate_params(params)
    dtype = jnp.result_type(params.h, params.J, jnp.float32)
    params = IsingParams(params.h.astype(dtype), params.J.astype(dtype))
    data = validate_data(data, params.h.shape[0])
    mean, corr = _data_moments(data.astype(dtype))

    def metrics(params, value, grads, opt_state):
        # grad_h = <x> - mean, grad_J = (<xx> - corr)/2: the largest moment violation.
        out = {"residual": jnp.maximum(jnp.max(jnp.abs(grads.h)), 2.0 * jnp.max(jnp.abs(grads.J)))}
        if metrics_fn is not None:
            out["extra"] = metrics_fn(params, value, grads, opt_state)
        return out

    # The enumeration options are checked (and n refused over budget) when the loss is traced.
    return optim.run(optimizer, lambda p, m, c: nll_from_moments(p, m, c, **options), params, num_steps, mean, corr,
                     metrics_fn=metrics, opt_state=opt_state)


def sample_exact(key: PRNGKey, params: IsingParams, num_samples: int, *,
                 max_seconds: float | None = None) -> Array:
    r"""Independent exact samples :math:`x \sim q_\theta` (Eq. (2.28)).

    Two stages on the split enumerator: the outer spins are drawn by inverse CDF from their
    exact marginal (a log-sum-exp over the inner block for each of the :math:`2^{|A|}` outer
    states), then the inner spins (at most 10) from their exact conditional given the outer
    ones. Memory is :math:`O(2^{|A|})` plus one batch of samples, so this works to n of
    about 34.

    For :class:`GraphIsingParams` (any n whose elimination width fits the budget), backward
    sampling through the elimination tables (:func:`jaxebm.elimination.sample_exact`).

    Returns:
      ``Float[Array, "num_samples n"]`` spins in {-1, +1}.
    """
    key = prng_key("key", key)
    if isinstance(params, GraphIsingParams):
        return _graph_ising.sample_exact(key, params, num_samples, max_seconds=max_seconds)
    params = validate_params(params)
    num_samples = count("num_samples", num_samples)
    h, J = params
    n = h.shape[0]
    enumeration.check_enumerable(n, max_seconds=max_seconds, what="n (spins)")
    nb = min(n, 10)
    if n - nb > 24:
        raise ValueError(f"sample_exact holds 2^{n - nb} outer marginals for n = {n} (at most "
                         "n = 34); use jaxebm.mcmc for models this large.")
    return _sample_exact(key, h, J, num_samples, nb)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _sample_exact(key, h, J, num_samples, nb):
    n = h.shape[0]
    plan = enumeration.split_plan(n, inner_bits=nb)
    dtype = jnp.result_type(h, J, jnp.float32)
    h, J = h.astype(dtype), J.astype(dtype)
    key_outer, key_inner = jax.random.split(key)
    outer_logits = enumeration.pairwise_row_log_weights(h, J, plan)
    outer_codes = _inverse_cdf(key_outer, outer_logits, num_samples)
    outer = enumeration.spins(outer_codes.astype(jnp.uint32), n - nb, dtype)
    inner_states = enumeration.spins(jnp.arange(2**nb, dtype=jnp.uint32), nb, dtype)
    # log w(x_B | x_A) = x_B^T J_BA x_A + 1/2 x_B^T J_BB x_B + h_B.x_B + const
    f_inner = log_weight(IsingParams(h[:nb], J[:nb, :nb]), inner_states)
    u = jax.random.uniform(key_inner, (num_samples,), dtype)

    def draw_inner(args):
        u_i, x_a = args
        logits = f_inner + jnp.matmul(inner_states, jnp.matmul(J[:nb, nb:], x_a, precision=HIGHEST),
                                      precision=HIGHEST)
        cdf = jnp.cumsum(jnp.exp(logits - jnp.max(logits)))
        return jnp.minimum(jnp.searchsorted(cdf, u_i * cdf[-1], side="right"), 2**nb - 1)

    inner_codes = lax.map(draw_inner, (u, outer), batch_size=min(num_samples, 4096))
    return jnp.concatenate([inner_states[inner_codes], outer], axis=1)
