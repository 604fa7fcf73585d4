r"""Chain diagnostics: FFT autocorrelation, integrated autocorrelation time, effective sample
size and split-R-hat.

.. math:: \tau = 1 + 2\sum_{t=1}^{W}\rho_t, \qquad \mathrm{ESS} = \frac{N}{\tau}

with Sokal's automatic window: the smallest :math:`W \ge c\,\tau(W)` (c = 5).
"""

from __future__ import annotations

import jax.numpy as jnp

__all__ = ["autocorrelation", "effective_sample_size", "integrated_autocorr_time", "r_hat"]


def autocorrelation(x, axis: int = 0):
    """Normalised autocorrelation :math:`\\rho_t` along ``axis`` by FFT (zero-padded, O(N log N))."""
    x = jnp.moveaxis(jnp.asarray(x), axis, 0)
    n = x.shape[0]
    centred = x - jnp.mean(x, axis=0)
    size = 1 << (2 * n - 1).bit_length()
    f = jnp.fft.rfft(centred, n=size, axis=0)
    acov = jnp.fft.irfft(f * jnp.conj(f), n=size, axis=0)[:n]
    rho = acov / jnp.where(acov[:1] > 0, acov[:1], 1.0)
    return jnp.moveaxis(rho, 0, axis)


def integrated_autocorr_time(x, c: float = 5.0):
    """Integrated autocorrelation time of a chain ``(N, ...)`` along axis 0, for each trailing
    entry, with Sokal's window (c = 5)."""
    rho = autocorrelation(x, axis=0)
    return _tau_from_rho(rho, c)


def _tau_from_rho(rho, c):
    taus = 2.0 * jnp.cumsum(rho, axis=0) - 1.0  # tau(W) = 1 + 2 sum_{t=1}^W rho_t
    window = jnp.arange(rho.shape[0]).reshape((-1,) + (1,) * (rho.ndim - 1))
    ok = window >= c * taus
    first = jnp.where(jnp.any(ok, axis=0), jnp.argmax(ok, axis=0), rho.shape[0] - 1)
    return jnp.maximum(jnp.take_along_axis(taus, first[None], axis=0)[0], 1e-3)


def effective_sample_size(x, c: float = 5.0):
    """ESS of one chain ``(N,)`` or of several chains ``(chains, N, ...)``: total draws divided by
    tau, with the autocorrelation averaged over chains."""
    x = jnp.asarray(x)
    if x.ndim == 1:
        return x.shape[0] / integrated_autocorr_time(x, c)
    rho = jnp.mean(autocorrelation(x, axis=1), axis=0)  # average over chains
    return x.shape[0] * x.shape[1] / _tau_from_rho(rho, c)


def r_hat(x):
    """Split-R-hat (Gelman et al., BDA3) for chains ``(chains, N, ...)``: each chain is split
    in halves; values near 1 indicate the chains agree."""
    x = jnp.asarray(x)
    n = x.shape[1] // 2
    halves = jnp.concatenate([x[:, :n], x[:, n:2 * n]], axis=0)
    means = jnp.mean(halves, axis=1)
    within = jnp.mean(jnp.var(halves, axis=1, ddof=1), axis=0)
    between = n * jnp.var(means, axis=0, ddof=1)
    var_plus = (n - 1) / n * within + between / n
    return jnp.sqrt(var_plus / within)
