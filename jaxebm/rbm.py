r"""Chapter 4: restricted Boltzmann machines with :math:`\pm1` units.

.. math:: -E(x, z) = x^\top W z + b^\top x + c^\top z, \qquad
          x \in \{-1,+1\}^{n_v},\; z \in \{-1,+1\}^{n_h} \qquad \text{Eq. (4.78)-(4.80)}

The conditionals factorise (Eq. (4.83)-(4.85)): :math:`\langle z\mid x\rangle = \tanh(W^\top x +
c)`, :math:`\langle x\mid z\rangle = \tanh(Wz + b)`, and the marginals are products of
:math:`2\cosh` (Eq. (4.81)-(4.82)):

.. math:: \log \tilde p(x) = b^\top x + \sum_l \log 2\cosh\big((W^\top x + c)_l\big), \qquad
          \log \tilde p(z) = c^\top z + \sum_k \log 2\cosh\big((W z + b)_k\big)

Erratum (4.81)/(4.82): :math:`v_l` is the l-th *column* of W (the notes say row).
Erratum (4.86): the empirical distribution has no minus sign.

The exact :math:`\log Z` enumerates the smaller layer and sums the other layer analytically, on
the split engine of :func:`jaxebm.enumeration.pairwise_log_partition` (the same plan, options,
budget check and streamed fold: an inner table and outer chunks); its custom JVP returns the
exact moments from the same pass.
"""

from __future__ import annotations

import functools
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.scipy.special import entr

from jaxebm import _cache, optim
from jaxebm._enum import bipartite
from jaxebm._gibbs import rbm_gibbs_step, spins_given_field
from jaxebm._numerics import HIGHEST, log2cosh
from jaxebm._validation import (
    ConvergenceWarning,
    array,
    check_finite,
    check_ndim,
    check_shape,
    check_spins,
    count,
    finite_scalar,
    is_concrete,
    optimizer_state,
    positive_scalar,
    prng_key,
)
from jaxebm.types import Array, ArrayLike, PRNGKey, PyTree

__all__ = [
    "GEMInfo",
    "RBMParams",
    "cd_grad",
    "elbo",
    "energy",
    "exact_grad",
    "from_binary",
    "gem_fit",
    "gibbs_step",
    "hidden_log_weight",
    "hidden_mean",
    "init",
    "log2cosh",
    "log_partition",
    "log_prob",
    "moments",
    "nll",
    "pcd_grad",
    "q_function",
    "sample_hidden",
    "sample_visible",
    "smoothness_bound",
    "to_binary",
    "validate_data",
    "validate_params",
    "visible_log_weight",
    "visible_mean",
]

class RBMParams(NamedTuple):
    """Parameters of a +-1 RBM.

    Attributes:
      W: ``Float[Array, "n_visible n_hidden"]`` couplings.
      b: ``Float[Array, "n_visible"]`` visible fields.
      c: ``Float[Array, "n_hidden"]`` hidden fields.
    """

    W: Array
    b: Array
    c: Array


def validate_params(params: RBMParams, name: str = "params") -> RBMParams:
    """Checks an :class:`RBMParams` and returns it with JAX arrays (NumPy arrays and lists are
    accepted): the type, ``W`` of shape ``(n_visible, n_hidden)``, ``b`` ``(n_visible,)``,
    ``c`` ``(n_hidden,)``, and (for concrete values) finite entries. Every public function
    calls it; call it eagerly yourself before a ``jax.jit`` of your own, where values cannot
    raise."""
    if not isinstance(params, RBMParams):
        raise ValueError(f"{name} must be an RBMParams(W, b, c); got {type(params).__name__}.")
    W, b, c = (array(f"{name}.{k}", getattr(params, k), allow_empty=True) for k in ("W", "b", "c"))
    check_ndim(f"{name}.W", W, 2, "a coupling matrix of shape (n_visible, n_hidden)")
    nv, nh = np.shape(W)
    if nv < 1 or nh < 1:
        raise ValueError(f"{name}.W must have at least one visible and one hidden unit; got shape {np.shape(W)}.")
    if np.shape(b) != (nv,):
        raise ValueError(f"{name}.b must have shape ({nv},) to match W; got {np.shape(b)}.")
    if np.shape(c) != (nh,):
        raise ValueError(f"{name}.c must have shape ({nh},) to match W; got {np.shape(c)}.")
    for key, value in (("W", W), ("b", b), ("c", c)):
        check_finite(f"{name}.{key}", value)
    # one dtype for all three (float32 W with float64 b under x64 ran log Z in float32 and
    # crashed the gradient's custom JVP)
    dtype = jnp.result_type(W, b, c)
    return RBMParams(W.astype(dtype), b.astype(dtype), c.astype(dtype))


_validate = validate_params


def _check_layer(name: str, x, size: int, ndim: tuple[int, ...] | None = (1, 2)) -> Array:
    """+-1 units of one layer: finite, exactly +-1 (when concrete), last axis ``size``; integer
    or boolean input becomes float. ``ndim=None`` allows any batch rank."""
    x = array(name, x)
    if ndim is not None:
        what = {(1, 2): f"spins of shape ({size},) or (batch, {size})",
                (2,): f"a batch of spins of shape (batch, {size})", (1,): f"spins of shape ({size},)"}[tuple(ndim)]
        check_ndim(name, x, ndim, what)
    elif x.ndim < 1:
        raise ValueError(f"{name} must be spins of shape (..., {size}); got a scalar.")
    if x.shape[-1] != size:
        raise ValueError(f"{name} must have {size} units in its last axis; got shape {x.shape}.")
    check_finite(name, x)
    try:
        check_spins(name, x)
    except ValueError as err:
        if "2 * x - 1" not in str(err):
            raise
        raise ValueError(f"{err} For the parameters of a {{0, 1}}-unit RBM (e.g. scikit-learn's BernoulliRBM), "
                         "use rbm.from_binary.") from None
    return x


def validate_data(params: RBMParams, data: ArrayLike, name: str = "data") -> Array:
    """Checks a ``(num_samples, n_visible)`` batch of +-1 visible configurations for ``params``
    and returns it as a float array (integer +-1 data is accepted)."""
    params = validate_params(params)
    return _check_layer(name, data, np.shape(params.W)[0], ndim=(2,))


def init(key: PRNGKey, n_visible: int, n_hidden: int, scale: float = 0.01, dtype=jnp.float32) -> RBMParams:
    """Small random couplings ``W ~ N(0, scale^2)`` and zero fields."""
    key = prng_key("key", key)
    n_visible, n_hidden = count("n_visible", n_visible), count("n_hidden", n_hidden)
    scale = finite_scalar("scale", scale, minimum=0.0)
    W = scale * jax.random.normal(key, (n_visible, n_hidden), dtype)
    return RBMParams(W, jnp.zeros((n_visible,), dtype), jnp.zeros((n_hidden,), dtype))


def energy(params: RBMParams, x: ArrayLike, z: ArrayLike) -> Array:
    r"""Energy :math:`E(x,z) = -x^\top W z - b^\top x - c^\top z` (Eq. (4.78)); broadcasts over
    leading batch axes."""
    params = _validate(params)
    x = _check_layer("x", x, params.W.shape[0], ndim=None)
    z = _check_layer("z", z, params.W.shape[1], ndim=None)
    try:
        np.broadcast_shapes(x.shape[:-1], z.shape[:-1])
    except ValueError:
        raise ValueError(f"x and z must have broadcastable batch axes; got x of shape {x.shape} and z of shape "
                         f"{z.shape}.") from None
    Wz = jnp.matmul(z, params.W.T, precision=HIGHEST)
    return -(jnp.sum(x * Wz, -1) + jnp.matmul(x, params.b, precision=HIGHEST)
             + jnp.matmul(z, params.c, precision=HIGHEST))


def visible_log_weight(params: RBMParams, x: ArrayLike) -> Array:
    r"""Unnormalised log marginal :math:`b^\top x + \sum_l \log 2\cosh(v_l^\top x + c_l)`, with
    :math:`v_l` the l-th column of W (Eq. (4.82); erratum: the notes say row)."""
    params = _validate(params)
    return _visible_log_weight(params, _check_layer("x", x, params.W.shape[0], ndim=None))


def _visible_log_weight(params: RBMParams, x: Array) -> Array:
    a = jnp.matmul(x, params.W, precision=HIGHEST) + params.c
    return jnp.matmul(x, params.b, precision=HIGHEST) + jnp.sum(log2cosh(a), axis=-1)


def hidden_log_weight(params: RBMParams, z: ArrayLike) -> Array:
    r"""Unnormalised log marginal :math:`c^\top z + \sum_k \log 2\cosh((Wz)_k + b_k)` (Eq. (4.81))."""
    params = _validate(params)
    z = _check_layer("z", z, params.W.shape[1], ndim=None)
    a = jnp.matmul(z, params.W.T, precision=HIGHEST) + params.b
    return jnp.matmul(z, params.c, precision=HIGHEST) + jnp.sum(log2cosh(a), axis=-1)


def hidden_mean(params: RBMParams, x: ArrayLike, precision=HIGHEST) -> Array:
    r""":math:`\langle z \mid x\rangle = \tanh(W^\top x + c)` (Eq. (4.84)-(4.85))."""
    params = _validate(params)
    x = _check_layer("x", x, params.W.shape[0], ndim=None)
    return jnp.tanh(jnp.matmul(x, params.W, precision=precision) + params.c)


def visible_mean(params: RBMParams, z: ArrayLike, precision=HIGHEST) -> Array:
    r""":math:`\langle x \mid z\rangle = \tanh(W z + b)` (Eq. (4.83))."""
    params = _validate(params)
    z = _check_layer("z", z, params.W.shape[1], ndim=None)
    return jnp.tanh(jnp.matmul(z, params.W.T, precision=precision) + params.b)


def sample_hidden(key: PRNGKey, params: RBMParams, x: ArrayLike, precision=HIGHEST) -> Array:
    r"""Draws :math:`z \sim p(z \mid x)`, independent units with :math:`P(z_l=+1) =
    \sigma(2(W^\top x + c)_l)` (Eq. (4.84))."""
    key = prng_key("key", key)
    params = _validate(params)
    x = _check_layer("x", x, params.W.shape[0])
    return spins_given_field(key, jnp.matmul(x, params.W, precision=precision) + params.c)


def sample_visible(key: PRNGKey, params: RBMParams, z: ArrayLike, precision=HIGHEST) -> Array:
    r"""Draws :math:`x \sim p(x \mid z)`, :math:`P(x_k=+1) = \sigma(2(Wz + b)_k)` (Eq. (4.83))."""
    key = prng_key("key", key)
    params = _validate(params)
    z = _check_layer("z", z, params.W.shape[1])
    return spins_given_field(key, jnp.matmul(z, params.W.T, precision=precision) + params.b)


def gibbs_step(key: PRNGKey, params: RBMParams, x: ArrayLike, precision=HIGHEST) -> tuple[Array, Array]:
    """One block-Gibbs sweep: ``z ~ p(z|x)``, then ``x ~ p(x|z)``. Returns ``(x, z)``.

    ``precision`` is the matmul precision (``HIGHEST`` by default; on GPU,
    ``lax.Precision.DEFAULT`` uses TF32 and is faster, at ~1e-3 relative error in the fields).
    """
    key = prng_key("key", key)
    params = _validate(params)
    x = _check_layer("x", x, params.W.shape[0])
    return rbm_gibbs_step(key, params, x, precision)


# --------------------------------------------------------------------------------------
# Exact log Z and moments
# --------------------------------------------------------------------------------------

# The split engine of jaxebm._enum.bipartite enumerates the smaller layer (the hidden one on a
# tie) and sums the other analytically.


def _enumerates_hidden(params: RBMParams) -> bool:
    nv, nh = np.shape(params.W)
    return nh <= nv


def _oriented(params: RBMParams):
    """(couplings from the enumerated layer to the other (m, other), enumerated bias, other bias)."""
    if _enumerates_hidden(params):
        return params.W.T, params.c, params.b
    return params.W, params.b, params.c


def _exact_setup(params, *, max_seconds=None, engine=None, chunk_size=None, devices=None, inner_bits=None):
    """Validated params and the static split configuration that keys the compiled exact passes;
    refuses (ValueError, naming the smaller layer, with the state count and the estimated time)
    an enumeration over ``max_seconds``."""
    params = _validate(params)
    nv, nh = np.shape(params.W)
    layer = "n_hidden" if nh <= nv else "n_visible"
    config = bipartite.bipartite_config(min(nv, nh), max(nv, nh), max_seconds=max_seconds, engine=engine,
                                        chunk_size=chunk_size, devices=devices, inner_bits=inner_bits,
                                        what=f"{layer} (the smaller layer of params)")
    return params, config


def _log_z(params: RBMParams, config) -> Array:
    return bipartite.log_z(*_oriented(params), config)


def _moments(params: RBMParams, config):
    """(log Z, <x>, <z>, <x z^T>) in one pass."""
    log_z, mean_s, mean_o, cross = bipartite.moments(*_oriented(params), config)
    if _enumerates_hidden(params):  # the other layer is the visible one: cross is (n_visible, n_hidden)
        return log_z, mean_o, mean_s, cross
    return log_z, mean_s, mean_o, cross.T


# Module-level jitted work, keyed on the static configuration: an eager call with new values of
# the same shapes compiles nothing (a closure built per call would defeat the cache).
_log_z_jit = jax.jit(_log_z, static_argnums=(1,))
_moments_jit = jax.jit(lambda params, config: _moments(params, config)[1:], static_argnums=(1,))


def _nll(params: RBMParams, data: Array, config) -> Array:
    return _log_z(params, config) - jnp.mean(_visible_log_weight(params, data.astype(params.W.dtype)))


_nll_jit = jax.jit(_nll, static_argnums=(2,))
_exact_grad_jit = jax.jit(jax.grad(_nll), static_argnums=(2,))


@functools.partial(jax.jit, static_argnums=(2,))
def _log_prob_jit(params: RBMParams, x: Array, config) -> Array:
    return _visible_log_weight(params, x) - _log_z(params, config)


def log_partition(params: RBMParams, *, max_seconds: float | None = None, engine: str | None = None,
                  chunk_size: int | None = None, devices=None, inner_bits: int | None = None) -> Array:
    r"""Exact :math:`\log Z` (Eq. (4.80)) by enumerating the smaller layer.

    .. math:: \log Z = \log \sum_{z} \exp\Big(c^\top z + \sum_k \log 2\cosh((Wz)_k + b_k)\Big)

    (or the same over :math:`x` when the visible layer is smaller). Streamed in chunks; the
    enumerated layer is split into a precomputed inner table and outer chunks (the split
    engine of :func:`jaxebm.enumeration.pairwise_log_partition`), so each state costs one add
    per unit of the other layer plus one stable ``log2cosh``. Matmuls at
    ``Precision.HIGHEST``. Differentiable: the custom JVP gives the exact
    :math:`\langle x z^\top\rangle, \langle x\rangle, \langle z\rangle` from one pass.

    Args:
      params: the RBM.
      max_seconds: refuse (ValueError, naming the smaller layer, with the state count and the
        estimated time) beyond this estimated time (default
        :data:`jaxebm.enumeration.DEFAULT_MAX_SECONDS`).
      engine: ``"auto"`` (default), ``"xla"`` or ``"pallas"`` (the fused kernel
        :func:`jaxebm.kernels.rbm_rows`; interpreted, hence slow, off GPU). The kernel computes
        log Z only: gradients and moments always come from the XLA pass.
      chunk_size: outer states of the enumerated layer per chunk, a power of two (default:
        from a memory budget).
      devices: devices to shard the enumeration across (default: all local devices).
      inner_bits: advanced: units of the enumerated layer in the precomputed inner table
        (default: by backend and memory budget).

    The same options, accepted the same way, are taken by :func:`moments`, :func:`log_prob`,
    :func:`nll`, :func:`exact_grad`, :func:`q_function` and :func:`elbo` (and by the exact
    functions of :mod:`jaxebm.ising`).

    Compiled once per shape, dtype and configuration: eager calls with new values reuse the
    program.
    """
    params, config = _exact_setup(params, max_seconds=max_seconds, engine=engine, chunk_size=chunk_size,
                                  devices=devices, inner_bits=inner_bits)
    return _log_z_jit(params, config)


def moments(params: RBMParams, *, max_seconds: float | None = None, engine: str | None = None,
            chunk_size: int | None = None, devices=None, inner_bits: int | None = None
            ) -> tuple[Array, Array, Array]:
    r"""Exact model moments :math:`(\langle x\rangle, \langle z\rangle, \langle x z^\top\rangle)`,
    the negative phase of Eq. (4.87).

    .. math:: \langle x z^\top\rangle = \frac1Z \sum_{z} e^{c^\top z}
              \prod_k 2\cosh\big((Wz)_k + b_k\big)\; \tanh(Wz + b)\, z^\top

    (enumerating the hidden layer; symmetrically when the visible layer is smaller). Options
    as :func:`log_partition`; ``engine="pallas"`` is refused, since the fused kernel computes
    log Z only.

    Returns:
      ``(mean_x (n_visible,), mean_z (n_hidden,), xz (n_visible, n_hidden))``.
    """
    if engine == "pallas":
        raise ValueError("engine='pallas' cannot compute moments: the fused RBM kernel computes log Z only. "
                         "Use engine='auto' or 'xla'.")
    params, config = _exact_setup(params, max_seconds=max_seconds, engine=engine, chunk_size=chunk_size,
                                  devices=devices, inner_bits=inner_bits)
    return _moments_jit(params, config)


def log_prob(params: RBMParams, x: ArrayLike, *, max_seconds: float | None = None, engine: str | None = None,
             chunk_size: int | None = None, devices=None, inner_bits: int | None = None) -> Array:
    r"""Exact :math:`\log p(x) = \log\tilde p(x) - \log Z` (Eq. (4.82)); options as
    :func:`log_partition`."""
    params, config = _exact_setup(params, max_seconds=max_seconds, engine=engine, chunk_size=chunk_size,
                                  devices=devices, inner_bits=inner_bits)
    x = _check_layer("x", x, np.shape(params.W)[0])
    return _log_prob_jit(params, x, config)


def nll(params: RBMParams, data: ArrayLike, *, max_seconds: float | None = None, engine: str | None = None,
        chunk_size: int | None = None, devices=None, inner_bits: int | None = None) -> Array:
    r"""Exact mean negative log-likelihood, :math:`D_{KL}(p_0\|p) - H(p_0)` (Eq. (4.86)-(4.87);
    erratum (4.86): no minus sign in the empirical distribution); options as
    :func:`log_partition`."""
    params, config = _exact_setup(params, max_seconds=max_seconds, engine=engine, chunk_size=chunk_size,
                                  devices=devices, inner_bits=inner_bits)
    data = _check_layer("data", data, np.shape(params.W)[0], ndim=(2,))
    return _nll_jit(params, data, config)


def exact_grad(params: RBMParams, data: ArrayLike, *, max_seconds: float | None = None, engine: str | None = None,
               chunk_size: int | None = None, devices=None, inner_bits: int | None = None) -> RBMParams:
    r"""Exact gradient of :func:`nll`: model minus data moments (Eq. (4.87)); options as
    :func:`log_partition`."""
    params, config = _exact_setup(params, max_seconds=max_seconds, engine=engine, chunk_size=chunk_size,
                                  devices=devices, inner_bits=inner_bits)
    data = _check_layer("data", data, np.shape(params.W)[0], ndim=(2,))
    return _exact_grad_jit(params, data, config)



# --------------------------------------------------------------------------------------
# CD / PCD
# --------------------------------------------------------------------------------------


def _phase(params: RBMParams, x: Array) -> RBMParams:
    """Sufficient statistics with the hidden layer Rao-Blackwellised: (<x h^T>, <x>, <h>)."""
    h = jnp.tanh(jnp.matmul(x, params.W, precision=HIGHEST) + params.c)
    return RBMParams(jnp.matmul(x.T, h, precision=HIGHEST) / x.shape[0], jnp.mean(x, 0), jnp.mean(h, 0))


def _gibbs_chain(key, params, x, k):
    def body(x, key):
        return rbm_gibbs_step(key, params, x)[0], None

    x, _ = lax.scan(body, x, jax.random.split(key, k))
    return x


def _gibbs_steps(k) -> int:
    try:
        return count("k", k)
    except ValueError:
        raise ValueError(f"k must be a positive integer (Gibbs steps); got {k!r}.") from None


def _as_chain_dtype(params: RBMParams, x: Array) -> Array:
    # the Gibbs scan carries x at the dtype of its fields (x @ W + c)
    return x.astype(jnp.result_type(x.dtype, params.W.dtype))


@functools.partial(jax.jit, static_argnums=(3,))
def _cd_grad_jit(key, params, data, k):
    negative = _gibbs_chain(key, params, data, k)
    return optax.tree_utils.tree_sub(_phase(params, negative), _phase(params, data))


@functools.partial(jax.jit, static_argnums=(4,))
def _pcd_grad_jit(key, params, data, chains, k):
    chains = _gibbs_chain(key, params, chains, k)
    grads = optax.tree_utils.tree_sub(_phase(params, chains), _phase(params, data))
    return grads, chains


def cd_grad(key: PRNGKey, params: RBMParams, data: ArrayLike, k: int = 1) -> RBMParams:
    r"""Contrastive-divergence estimate of the :func:`nll` gradient (a pytree for optax).

    .. math:: \nabla \approx \langle \phi\rangle_{k\text{ Gibbs steps from data}}
              - \langle\phi\rangle_{data}, \qquad \phi = (x z^\top, x, z)

    with :math:`z` replaced by :math:`\tanh(W^\top x + c)` (Rao-Blackwellised). ``data`` is
    ``(num_samples, n_visible)`` +-1 spins (convert {0, 1} data with ``2 * x - 1``); ``k`` a
    positive count. Compiled once per shape and ``k``.
    """
    key = prng_key("key", key)
    k = _gibbs_steps(k)
    params = _validate(params)
    data = _as_chain_dtype(params, _check_layer("data", data, np.shape(params.W)[0], ndim=(2,)))
    return _cd_grad_jit(key, params, data, k)


def pcd_grad(key: PRNGKey, params: RBMParams, data: ArrayLike, chains: ArrayLike, k: int = 1
             ) -> tuple[RBMParams, Array]:
    r"""Persistent-CD estimate of the :func:`nll` gradient: the negative phase comes from
    persistent ``chains`` ``(num_chains, n_visible)`` (+-1 spins), advanced by ``k`` Gibbs
    steps. Compiled once per shape and ``k``.

    Returns:
      ``(grads, chains)``.
    """
    key = prng_key("key", key)
    k = _gibbs_steps(k)
    params = _validate(params)
    nv = np.shape(params.W)[0]
    data = _as_chain_dtype(params, _check_layer("data", data, nv, ndim=(2,)))
    chains = _as_chain_dtype(params, _check_layer("chains", chains, nv, ndim=(2,)))
    return _pcd_grad_jit(key, params, data, chains, k)


# --------------------------------------------------------------------------------------
# The EM view (Eq. (4.87)-(4.89))
# --------------------------------------------------------------------------------------


def _binary_entropy(mean):
    p = jnp.clip((1.0 + mean) / 2.0, 0.0, 1.0)
    return entr(p) + entr(1.0 - p)


def q_function(params: RBMParams, params_old: RBMParams, data: ArrayLike, *, max_seconds: float | None = None,
               engine: str | None = None, chunk_size: int | None = None, devices=None,
               inner_bits: int | None = None) -> Array:
    r"""Q function of the RBM (Eq. (4.88)-(4.89)), per sample:

    .. math:: Q(\theta,\theta_{old}) = \frac1M\sum_i \mathbb{E}_{p_{old}(z\mid x_i)}
              \big[x_i^\top W z + b^\top x_i + c^\top z\big] - \log Z(\theta)

    linear in :math:`z`, so the expectation uses :math:`\tanh(W_{old}^\top x + c_{old})`.
    The options are those of the exact :math:`\log Z` (:func:`log_partition`).
    """
    params, config = _exact_setup(params, max_seconds=max_seconds, engine=engine, chunk_size=chunk_size,
                                  devices=devices, inner_bits=inner_bits)
    params_old = _validate(params_old, "params_old")
    if np.shape(params_old.W) != np.shape(params.W):
        raise ValueError(f"params_old must have the shapes of params: W {np.shape(params.W)}; got "
                         f"{np.shape(params_old.W)}.")
    data = _check_layer("data", data, np.shape(params.W)[0], ndim=(2,))
    return _q_function(params, params_old, data, config)


def _q_function(params: RBMParams, params_old: RBMParams, data: Array, config=None) -> Array:
    mu = lax.stop_gradient(jnp.tanh(jnp.matmul(data, params_old.W, precision=HIGHEST) + params_old.c))
    return _elbo(params, mu, data, config) - jnp.mean(jnp.sum(_binary_entropy(mu), axis=-1))


def elbo(params: RBMParams, hidden_means: ArrayLike, data: ArrayLike, *, max_seconds: float | None = None,
         engine: str | None = None, chunk_size: int | None = None, devices=None,
         inner_bits: int | None = None) -> Array:
    r"""ELBO for a factorised :math:`r(z\mid x_i)` with means ``hidden_means`` ``(M, n_hidden)``
    (Eq. (3.63), (4.88)):

    .. math:: \mathcal L = \frac1M\sum_i\Big(x_i^\top W\mu_i + b^\top x_i + c^\top\mu_i
              + H(r_i)\Big) - \log Z

    Equal to the mean log-likelihood exactly when :math:`\mu_i = \tanh(W^\top x_i + c)`.
    ``hidden_means`` must be finite and within [-1, 1] (means of +-1 units). The options are
    those of the exact :math:`\log Z` (:func:`log_partition`).
    """
    params, config = _exact_setup(params, max_seconds=max_seconds, engine=engine, chunk_size=chunk_size,
                                  devices=devices, inner_bits=inner_bits)
    nv, nh = np.shape(params.W)
    data = _check_layer("data", data, nv, ndim=(2,))
    mu = array("hidden_means", hidden_means)
    if mu.shape != (data.shape[0], nh):
        raise ValueError(f"hidden_means must have shape ({data.shape[0]}, {nh}) (one row of hidden means per "
                         f"sample of data); got {mu.shape}.")
    check_finite("hidden_means", mu)
    if is_concrete(mu):
        values = np.asarray(mu)
        if np.any(np.abs(values) > 1):
            raise ValueError(f"hidden_means must lie in [-1, 1] (means of +-1 units); got values in "
                             f"[{values.min():.3g}, {values.max():.3g}].")
    return _elbo(params, mu, data, config)


def _elbo(params: RBMParams, mu: Array, data: Array, config=None) -> Array:
    if config is None:  # the default options (gem_fit's inner loop)
        params, config = _exact_setup(params)
    energy_term = (jnp.sum(jnp.matmul(data, params.W, precision=HIGHEST) * mu, -1)
                   + jnp.matmul(data, params.b, precision=HIGHEST) + jnp.matmul(mu, params.c, precision=HIGHEST))
    return jnp.mean(energy_term + jnp.sum(_binary_entropy(mu), -1)) - _log_z_jit(params, config)


def smoothness_bound(n_visible: int, n_hidden: int) -> float:
    r"""Global bound on the Hessian of :math:`-Q(\cdot,\theta_{old})` and of the log Z term:
    :math:`\mathrm{Cov}[\phi] \preceq \mathbb{E}\lVert\phi\rVert^2 = n_v n_h + n_v + n_h` for
    :math:`\phi = (xz^\top, x, z)` with +-1 entries (the argument of
    :func:`jaxebm.curvature.ising_smoothness_bound`). Gradient ascent on Q with
    :math:`\eta = 1/L` provably increases Q."""
    n_visible, n_hidden = count("n_visible", n_visible), count("n_hidden", n_hidden)
    return float(n_visible * n_hidden + n_visible + n_hidden)


class GEMInfo(NamedTuple):
    """What :func:`gem_fit` returns beside the parameters (the EM record, as
    :class:`jaxebm.gmm.FitInfo` for the Gaussian mixture).

    Attributes:
      log_likelihood: ``(num_outer + 1,)`` exact mean log-likelihood (``-nll``) before each
        outer step and at the end; it never decreases (Eq. (4.87)).
      accepted: ``(num_outer, num_inner)`` bool, whether each safeguarded inner step was
        taken.
      opt_state: the optimiser state after the last inner step; pass it back as
        ``gem_fit(..., opt_state=info.opt_state)`` to resume.
      converged: with ``tol``, whether the last outer step raised the log-likelihood by at
        most ``tol`` (a bool array, so it can be read under ``jit``); ``None`` without ``tol``.
    """

    log_likelihood: Array
    accepted: Array
    opt_state: PyTree
    converged: Array | None


def gem_fit(params: RBMParams, data: ArrayLike, num_outer: int, num_inner: int = 5,
            optimizer: optax.GradientTransformation | None = None, *, tol: float | None = None,
            opt_state: PyTree | None = None, max_seconds: float | None = None) -> tuple[RBMParams, GEMInfo]:
    r"""Generalised EM (Eq. (4.87)-(4.89)): hold :math:`r(z) = p_{old}(z\mid x)` fixed, take
    ``num_inner`` optax steps increasing :math:`Q(\cdot, \theta_{old})` (exact model moments),
    repeat ``num_outer`` times.

    The inner steps are :func:`jaxebm.optim.run` on :math:`-Q(\cdot, \theta_{old})` with
    ``safeguard=True``: a step is accepted only if the exact Q increases (else the
    parameters stay, and the optimiser state moves on). Since
    :math:`\log p(\theta) - \log p(\theta_{old}) \ge Q(\theta) - Q(\theta_{old})`, the exact
    log-likelihood never decreases, whatever the optimiser. With the default
    ``optax.sgd(1/L)`` (:func:`smoothness_bound`) every step is provably accepted; the
    local rule :func:`jaxebm.curvature.hessian_bounded_sgd` (which receives ``value_fn = -Q``)
    takes much larger steps, since :math:`-Q` is convex. An optimiser with momentum (Adam) can
    stall here: a rejected step leaves the parameters, so the same direction is proposed again.
    The optimiser state is carried across outer steps.

    ``num_outer`` is a fixed budget (the method has no stopping rule of its own). With ``tol``
    given, ``info.converged`` says whether the last outer step raised the log-likelihood by at
    most ``tol``, and an eager call warns (:class:`jaxebm._validation.ConvergenceWarning`)
    when it did not, i.e. the run stopped at its iteration limit before converging; under
    ``jax.jit`` no warning can be issued: inspect ``info.converged`` yourself.

    Args:
      params: initial ``RBMParams``.
      data: ``(M, n_visible)`` +-1 data.
      num_outer: outer (E) steps.
      num_inner: optax steps on Q per outer step.
      optimizer: any optax optimiser (default ``optax.sgd(1 / smoothness_bound(...))``).
      tol: optional convergence tolerance on the last outer step's log-likelihood gain (> 0).
      opt_state: optimiser state to resume from (``info.opt_state`` of an earlier fit).
      max_seconds: the time budget of one exact :math:`\log Z` (as :func:`log_partition`).

    Returns:
      ``(params, GEMInfo)``. One ``lax.scan`` over outer steps (deterministic: no key); jit
      it at the call site, or call it eagerly: the compiled work is cached on the traced
      program, so calls with new values of the same shapes compile once.
    """
    params, config = _exact_setup(params, max_seconds=max_seconds)
    nv, nh = np.shape(params.W)
    data = _check_layer("data", data, nv, ndim=(2,))
    num_outer, num_inner = count("num_outer", num_outer), count("num_inner", num_inner)
    if tol is not None:
        tol = positive_scalar("tol", tol)
    if optimizer is None:
        optimizer = optax.sgd(1.0 / smoothness_bound(nv, nh))
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise ValueError(f"optimizer must be an optax GradientTransformation; got {type(optimizer).__name__}.")
    opt_state = optimizer_state(optimizer, params, opt_state)

    def neg_q(p, old, data):
        return -_q_function(p, old, data, config)

    def outer(carry):
        params, opt_state = carry
        log_lik = -nll(params, data, max_seconds=max_seconds)
        params, info = optim.run(optimizer, neg_q, params, num_inner, params, data, opt_state=opt_state,
                                 safeguard=True)
        return (params, info.opt_state), (log_lik, info.accepted)

    traced, consts = _cache.trace(lambda carry, _: outer(carry), (params, opt_state), None)
    (params, opt_state), (history, accepted) = _cache.scan(consts, (params, opt_state), traced=traced,
                                                           num_steps=num_outer)
    history = jnp.concatenate([history, -nll(params, data, max_seconds=max_seconds)[None]])
    converged = None
    if tol is not None:
        converged = history[-1] - history[-2] <= tol
        if is_concrete(converged) and not bool(converged):
            last = float(history[-1] - history[-2])
            warnings.warn(f"gem_fit stopped at num_outer={num_outer} before converging: the last outer step "
                          f"raised the log-likelihood by {last:.3g} > tol={tol:g}. Increase num_outer.",
                          ConvergenceWarning, stacklevel=2)
    return params, GEMInfo(history, accepted, opt_state, converged)


# --------------------------------------------------------------------------------------
# {0,1} <-> +-1
# --------------------------------------------------------------------------------------


def from_binary(W: ArrayLike, b: ArrayLike, c: ArrayLike) -> tuple[RBMParams, Array]:
    r"""Exact map from a {0,1}-unit RBM :math:`-E_{01}(v,h) = v^\top W h + b^\top v + c^\top h`
    (e.g. scikit-learn's BernoulliRBM: ``W = components_.T``, ``b = intercept_visible_``,
    ``c = intercept_hidden_``) to a +-1 RBM, with :math:`v = (1+x)/2`, :math:`h = (1+z)/2`:

    .. math:: W' = W/4,\quad b' = b/2 + W\mathbf 1/4,\quad c' = c/2 + W^\top\mathbf 1/4,\quad
              \log Z_{01} = \log Z_{\pm} + \underbrace{\mathbf 1^\top W\mathbf 1/4 + \mathbf 1^\top b/2
              + \mathbf 1^\top c/2}_{\text{log\_z\_shift}}

    The likelihoods agree exactly: :math:`p_{01}(v) = p_\pm(2v - 1)`.

    Returns:
      ``(params, log_z_shift)``.
    """
    W, b, c = array("W", W), array("b", b), array("c", c)
    check_ndim("W", W, 2, "a coupling matrix of shape (n_visible, n_hidden)")
    nv, nh = W.shape
    check_shape("b", b, (nv,), "the visible biases, matching W")
    check_shape("c", c, (nh,), "the hidden biases, matching W")
    for name, value in (("W", W), ("b", b), ("c", c)):
        check_finite(name, value)
    params = RBMParams(W / 4.0, b / 2.0 + jnp.sum(W, axis=1) / 4.0, c / 2.0 + jnp.sum(W, axis=0) / 4.0)
    shift = jnp.sum(W) / 4.0 + jnp.sum(b) / 2.0 + jnp.sum(c) / 2.0
    return params, shift


def to_binary(params: RBMParams) -> tuple[Array, Array, Array]:
    """Inverse of :func:`from_binary`: ``(W, b, c)`` of the equivalent {0,1}-unit RBM."""
    params = _validate(params)
    W = 4.0 * params.W
    return W, 2.0 * params.b - jnp.sum(W, axis=1) / 2.0, 2.0 * params.c - jnp.sum(W, axis=0) / 2.0
