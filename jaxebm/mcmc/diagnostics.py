r"""Chain diagnostics: FFT autocorrelation, integrated autocorrelation time, effective sample
size and split-R-hat.

**Effective sample size** (:func:`effective_sample_size`) is the estimator of Stan and ArviZ
(Vehtari, Gelman, Simpson, Carpenter & Bürkner 2021, "Rank-normalization, folding, and
localization: an improved R-hat", *Bayesian Analysis* 16(2), Sec. 3.2; Stan Reference Manual,
"Effective sample size"), without rank normalisation: the ``M`` chains of ``N`` draws are
split in halves, the autocorrelations combine the chains through the within-chain variance
:math:`W` and the pooled variance :math:`\widehat{\mathrm{var}}^+`,

.. math:: \hat\rho_t = 1 - \frac{W - \frac1M\sum_m \hat\gamma_{m,t}}{\widehat{\mathrm{var}}^+},

so that chains stuck in different modes give a small ESS even if each looks well mixed, and
they are summed by Geyer's (1992, *Statistical Science* 7, 473) initial monotone sequence:
the pair sums :math:`P_k = \hat\rho_{2k} + \hat\rho_{2k+1}` are kept while positive and made
non-increasing, :math:`\hat\tau = -1 + 2\sum_k P_k`, :math:`\mathrm{ESS} = MN/\hat\tau`.
Unlike Stan and ArviZ (which allow :math:`\hat\tau` down to :math:`1/\log_{10}(MN)` for
antithetic chains), :math:`\hat\tau` is clamped at 1: **the ESS never exceeds the number of
draws**.

**Undefined cases** (as stan-dev/posterior's ``should_return_NA``: a quantity constant by
construction cannot be told apart from a stuck chain): a quantity whose draws are all equal
has no autocorrelation, autocorrelation time, ESS or R-hat; these are NaN, with a
``RuntimeWarning`` when the input is concrete (under ``jit``/``vmap`` the NaN comes without
a warning). Non-finite draws and too few draws raise ``ValueError``.
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxebm._validation import array, check_finite, is_concrete, positive_scalar
from jaxebm.mcmc._checks import check_axis

__all__ = ["autocorrelation", "effective_sample_size", "integrated_autocorr_time", "r_hat"]

_MIN_DRAWS = 4


def _draws(name: str, x, *, min_ndim: int, what: str):
    x = array(name, x)
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must be {what}; got an array of shape {x.shape}.")
    check_finite(name, x)
    return x.astype(jnp.result_type(x, jnp.float32))  # float16 draws: the FFT needs float32 at least


def _warn_where(mask, what: str, message: str, stacklevel: int = 3) -> None:
    """Warns when any entry of the boolean ``mask`` is set (concrete input only)."""
    if is_concrete(mask):
        k = int(np.count_nonzero(np.asarray(mask)))
        if k:
            warnings.warn(f"{what}: {k} of {int(np.size(mask))} quantities {message}", RuntimeWarning,
                          stacklevel=stacklevel)


def _warn_constant(constant, what: str) -> None:
    _warn_where(constant, what, "have all draws equal: the result is undefined there and set to NaN (a constant "
                "quantity cannot be told apart from a stuck chain).", stacklevel=4)


def _autocovariance(x, axis: int):
    """Biased autocovariance :math:`\\hat\\gamma_t = \\frac1N\\sum_i (x_i - \\bar x)(x_{i+t} - \\bar x)`
    along ``axis``, by FFT (zero-padded, O(N log N))."""
    x = jnp.moveaxis(x, axis, 0)
    n = x.shape[0]
    centred = x - jnp.mean(x, axis=0)
    size = 1 << (2 * n - 1).bit_length()
    f = jnp.fft.rfft(centred, n=size, axis=0)
    acov = jnp.fft.irfft(f * jnp.conj(f), n=size, axis=0)[:n] / n
    return jnp.moveaxis(acov, 0, axis)


def _is_constant(x, axis):
    return jnp.max(x, axis=axis) == jnp.min(x, axis=axis)


def autocorrelation(x, axis: int = 0):
    """Normalised autocorrelation :math:`\\rho_t = \\hat\\gamma_t / \\hat\\gamma_0` along
    ``axis`` by FFT (zero-padded, O(N log N)).

    ``axis`` is an integer in ``[-x.ndim, x.ndim)`` (``ValueError`` naming ``axis`` otherwise:
    it is never wrapped around or read from a bool).

    A series whose draws are all equal has no autocorrelation (0/0): its entries are NaN,
    with a ``RuntimeWarning`` when ``x`` is concrete.
    """
    x = _draws("x", x, min_ndim=1, what="draws along an axis")
    axis = check_axis("axis", axis, x.ndim)
    if x.shape[axis] < 2:
        raise ValueError(f"x must hold at least 2 draws along axis {axis}; got shape {x.shape}.")
    rho, constant = _autocorrelation(x, axis)
    _warn_constant(constant, "autocorrelation")
    return rho


# The numerical work of each diagnostic is one jitted function (compiled once per shape, so eager
# calls are cheap); validation and warnings stay in the Python wrappers.
@functools.partial(jax.jit, static_argnums=(1,))
def _autocorrelation(x, axis):
    constant = _is_constant(x, axis)
    acov = _autocovariance(x, axis)
    var = jnp.take(acov, jnp.array([0]), axis=axis)
    rho = acov / jnp.where(var > 0, var, 1.0)
    return jnp.where(jnp.expand_dims(constant, axis), jnp.nan, rho), constant


def integrated_autocorr_time(x, c: float = 5.0):
    """Integrated autocorrelation time of one chain ``(N, ...)`` along axis 0, for each trailing
    entry, with Sokal's automatic window: the smallest :math:`W \\ge c\\,\\tau(W)`,
    :math:`\\tau(W) = 1 + 2\\sum_{t=1}^{W}\\rho_t` (Sokal 1997, "Monte Carlo methods in
    statistical mechanics", c = 5).

    Clamped at :math:`\\tau \\ge 1` (no super-efficiency is reported, so ``N / tau`` never
    exceeds N). A constant chain gives NaN with a ``RuntimeWarning`` (when concrete). Needs
    at least 4 draws.
    """
    x = _draws("x", x, min_ndim=1, what="a chain of draws (N, ...)")
    if x.shape[0] < _MIN_DRAWS:
        raise ValueError(f"x must hold at least {_MIN_DRAWS} draws along axis 0; got shape {x.shape}.")
    c = positive_scalar("c", c)
    tau, constant = _integrated_autocorr_time(x, c)
    _warn_constant(constant, "integrated_autocorr_time")
    return tau


@jax.jit
def _integrated_autocorr_time(x, c):
    constant = _is_constant(x, 0)
    acov = _autocovariance(x, 0)
    rho = acov / jnp.where(acov[:1] > 0, acov[:1], 1.0)
    return jnp.where(constant, jnp.nan, _sokal_tau(rho, c)), constant


def _sokal_tau(rho, c):
    taus = 2.0 * jnp.cumsum(rho, axis=0) - 1.0  # tau(W) = 1 + 2 sum_{t=1}^W rho_t
    window = jnp.arange(rho.shape[0]).reshape((-1,) + (1,) * (rho.ndim - 1))
    ok = window >= c * taus
    first = jnp.where(jnp.any(ok, axis=0), jnp.argmax(ok, axis=0), rho.shape[0] - 1)
    return jnp.maximum(jnp.take_along_axis(taus, first[None], axis=0)[0], 1.0)


def _split(x):
    """(M, N, ...) -> (2M, N // 2, ...): first and last halves (the middle draw of an odd N is
    dropped, as in Stan)."""
    half = x.shape[1] // 2
    return jnp.concatenate([x[:, :half], x[:, x.shape[1] - half:]], axis=0)


def effective_sample_size(x):
    """Effective sample size of one chain ``(N,)`` or of several chains ``(chains, N, ...)``
    (one ESS per trailing entry): split chains, multi-chain autocorrelation and Geyer's initial
    monotone sequence, as Stan and ArviZ (see the module docstring for the formula and the
    references), with :math:`\\hat\\tau \\ge 1` so that the ESS never exceeds the number of
    draws.

    Needs at least 4 draws per chain. A quantity whose draws are all equal gives NaN with a
    ``RuntimeWarning`` (when concrete). Each chain stuck at its own value gives a small ESS
    (about one draw per two half-chains), not NaN.
    """
    x = _draws("x", x, min_ndim=1, what="draws of shape (N,) or (chains, N, ...)")
    if x.ndim == 1:
        x = x[None]
    if x.shape[1] < _MIN_DRAWS:
        raise ValueError(f"x must hold at least {_MIN_DRAWS} draws per chain; got {x.shape[1]} (shape "
                         f"{x.shape}).")
    ess, constant = _effective_sample_size(x)
    _warn_constant(constant, "effective_sample_size")
    return ess


@jax.jit
def _effective_sample_size(x):
    constant = _is_constant(x, (0, 1))
    x = _split(x)
    m, n = x.shape[:2]
    acov = _autocovariance(x, 1)  # (M, N, ...)
    within = jnp.mean(acov[:, 0], axis=0) * n / (n - 1)
    var_plus = within * (n - 1) / n + jnp.var(jnp.mean(x, axis=1), axis=0, ddof=1)
    var_plus = jnp.where(constant, 1.0, var_plus)
    rho = 1.0 - (within - jnp.mean(acov, axis=0)) / var_plus  # (N, ...)
    rho = rho.at[0].set(1.0)
    pairs = n // 2
    P = rho[0:2 * pairs:2] + rho[1:2 * pairs:2]  # (K, ...)
    kept = jnp.cumprod(P > 0, axis=0).astype(bool)  # the initial positive sequence
    P = lax.cummin(P, axis=0)  # ... made monotone
    tau = jnp.maximum(-1.0 + 2.0 * jnp.sum(jnp.where(kept, P, 0.0), axis=0), 1.0)
    return jnp.where(constant, jnp.nan, m * n / tau), constant


def r_hat(x):
    """Split-R-hat (Gelman et al., BDA3, Sec. 11.4; the basic version of Vehtari et al. 2021,
    Eq. (3)-(4), without rank normalisation) for chains ``(chains, N, ...)``: each chain is
    split in halves; values near 1 indicate the chains agree.

    Needs at least 2 chains and 4 draws per chain (``ValueError`` otherwise). Where all draws
    are equal R-hat is undefined (0/0): NaN, as stan-dev/posterior's ``rhat_basic``. Where
    each chain is constant but the chains differ, the within-chain variance is 0 and R-hat is
    ``+inf`` (the chains do not mix at all). Both come with a ``RuntimeWarning`` when ``x`` is
    concrete.
    """
    x = _draws("x", x, min_ndim=2, what="chains of draws of shape (chains, N, ...)")
    if x.shape[0] < 2:
        raise ValueError(f"x must hold at least 2 chains (axis 0); got shape {x.shape}.")
    if x.shape[1] < _MIN_DRAWS:
        raise ValueError(f"x must hold at least {_MIN_DRAWS} draws per chain (axis 1) for split-R-hat; got "
                         f"{x.shape[1]} (shape {x.shape}).")
    value, constant, stuck = _r_hat(x)
    _warn_constant(constant, "r_hat")
    _warn_where(stuck, "r_hat", "have every half-chain constant while the chains differ: the within-chain "
                "variance is 0 and R-hat is +inf (the chains do not mix).")
    return value


@jax.jit
def _r_hat(x):
    constant = _is_constant(x, (0, 1))
    halves = _split(x)
    n = halves.shape[1]
    means = jnp.mean(halves, axis=1)
    within = jnp.mean(jnp.var(halves, axis=1, ddof=1), axis=0)
    between = n * jnp.var(means, axis=0, ddof=1)
    stuck = (within == 0) & ~constant
    var_plus = (n - 1) / n * within + between / n
    safe = jnp.where(within > 0, within, 1.0)
    value = jnp.where(stuck, jnp.inf, jnp.sqrt(var_plus / safe))
    return jnp.where(constant, jnp.nan, value), constant, stuck
