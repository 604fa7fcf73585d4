"""Input checks shared by the modules: clear ``ValueError``s that name the argument.

Shape checks run at trace time. Value checks (finite, +-1, symmetric) need concrete
arrays and are skipped for tracers, so jitted code pays nothing for them.
"""

from __future__ import annotations

import jax
import numpy as np


def is_concrete(x) -> bool:
    """True when ``x`` holds concrete values (not a tracer inside jit/vmap/grad)."""
    return not isinstance(x, jax.core.Tracer)


def check_ndim(name: str, x, ndim: int | tuple[int, ...], what: str) -> None:
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if np.ndim(x) not in allowed:
        raise ValueError(f"{name} must be {what}; got an array of shape {np.shape(x)}.")


def check_finite(name: str, x) -> None:
    if is_concrete(x):
        values = np.asarray(x)
        if not np.all(np.isfinite(values)):
            bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
            raise ValueError(f"{name} contains {bad} NaN or infinite value(s); expected finite numbers.")


def check_spins(name: str, x) -> None:
    """Raise unless every entry of ``x`` is exactly -1 or +1 (when ``x`` is concrete)."""
    if is_concrete(x):
        values = np.asarray(x)
        ok = (values == 1) | (values == -1)
        if not np.all(ok):
            idx = np.argwhere(~ok)[0]
            raise ValueError(
                f"{name} must hold spins in {{-1, +1}}; entry {tuple(int(i) for i in idx)} is "
                f"{values[tuple(idx)]!r}. Convert {{0, 1}} data with 2 * x - 1."
            )


def check_symmetric_zero_diagonal(name: str, J, atol: float = 0.0) -> None:
    if is_concrete(J):
        values = np.asarray(J, dtype=np.float64)
        scale = max(1.0, float(np.max(np.abs(values)))) if values.size else 1.0
        tol = atol if atol > 0 else 1e-6 * scale
        asym = float(np.max(np.abs(values - values.T))) if values.size else 0.0
        if asym > tol:
            raise ValueError(f"{name} must be symmetric; max |J - J^T| = {asym:.3g}.")
        diag = float(np.max(np.abs(np.diag(values)))) if values.size else 0.0
        if diag > tol:
            raise ValueError(f"{name} must have a zero diagonal; max |diag(J)| = {diag:.3g}.")
