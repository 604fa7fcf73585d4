"""One validation vocabulary for every public entry point: clear ``ValueError``s that name
the argument and say what was expected.

Shapes and dtypes are checked at trace time. Value checks (finite, +-1, symmetric, sums to
one, monotone schedules) need concrete arrays: they run whenever the values are concrete
(eager calls, NumPy arrays, Python lists) and are skipped for tracers, so jitted code pays
nothing for them. Under a caller's ``jax.jit`` values therefore cannot raise; call the
module's ``validate_*`` function eagerly on the inputs first (see the README's reliability
section).

Every checker returns the (converted) value, so entry points read
``x = spins("x", x, n=n)``. NumPy arrays and Python lists are accepted wherever arrays are.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxebm.types import PyTree

__all__ = [
    "ConvergenceWarning",
    "array",
    "check_finite",
    "check_ndim",
    "check_shape",
    "check_spins",
    "check_symmetric_zero_diagonal",
    "choice",
    "count",
    "device_tuple",
    "distribution",
    "finite_scalar",
    "graph_fields",
    "is_concrete",
    "ladder",
    "optimizer_state",
    "positive_scalar",
    "power_of_two",
    "probability",
    "regulariser",
    "schedule",
    "spins",
]


class ConvergenceWarning(UserWarning):
    """An iterative method stopped at ``max_iter`` before meeting its tolerance."""


def is_concrete(x) -> bool:
    """True when ``x`` holds concrete values (not a tracer inside jit/vmap/grad)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(x))


def _values(x) -> np.ndarray | None:
    """Concrete values as NumPy, or None for tracers."""
    return np.asarray(x) if is_concrete(x) else None


def array(name: str, x, *, dtype=None, floating: bool = True, allow_empty: bool = False):
    """``x`` as a JAX array (lists and NumPy accepted). Refuses non-numeric input and, unless
    ``allow_empty``, empty arrays. Integer or boolean input becomes the default float dtype
    when ``floating`` (so +-1 integer data works everywhere)."""
    if isinstance(x, jax.core.Tracer):
        out = x
    else:
        try:
            host = np.asarray(x)
        except (ValueError, TypeError) as err:  # ragged lists and the like
            raise ValueError(f"{name} must be a numeric array; could not convert it ({err}).") from None
        if host.dtype == object or not (np.issubdtype(host.dtype, np.number) or host.dtype == np.bool_):
            raise ValueError(f"{name} must be a numeric array; got dtype {host.dtype}.")
        if np.iscomplexobj(host):
            raise ValueError(f"{name} must be real; got a complex array.")
        if floating and not np.issubdtype(host.dtype, np.floating):
            # integers become floats in NumPy: jnp.asarray would first wrap int64 beyond int32
            # around (with x64 off), and the checks would see the wrapped values
            out = jnp.asarray(host.astype(jnp.result_type(float) if dtype is None else dtype))
        else:
            if np.issubdtype(host.dtype, np.integer) and host.size and jax.dtypes.canonicalize_dtype(
                    host.dtype).itemsize < host.dtype.itemsize:
                info = np.iinfo(jax.dtypes.canonicalize_dtype(host.dtype))
                if host.min() < info.min or host.max() > info.max:
                    raise ValueError(f"{name} holds integers beyond the {info.dtype} range ({int(host.min())} to "
                                     f"{int(host.max())}), which JAX would wrap around with x64 disabled.")
            out = jnp.asarray(x)
    if floating and not jnp.issubdtype(out.dtype, jnp.floating):
        out = out.astype(jnp.result_type(float) if dtype is None else dtype)
    elif dtype is not None:
        out = out.astype(dtype)
    if not allow_empty and out.size == 0:
        raise ValueError(f"{name} must not be empty; got an array of shape {out.shape}.")
    return out


def check_ndim(name: str, x, ndim: int | tuple[int, ...], what: str) -> None:
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if np.ndim(x) not in allowed:
        raise ValueError(f"{name} must be {what}; got an array of shape {np.shape(x)}.")


def check_shape(name: str, x, shape: tuple, what: str | None = None) -> None:
    """Exact shape; ``None`` entries match any size."""
    got = np.shape(x)
    if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got)):
        want = "(" + ", ".join("?" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        raise ValueError(f"{name} must have shape {want}{' (' + what + ')' if what else ''}; got {got}.")


def check_finite(name: str, x) -> None:
    values = _values(x)
    if values is not None and values.size and np.issubdtype(values.dtype, np.inexact):
        finite = np.isfinite(values)
        if not finite.all():
            bad = int(values.size - np.count_nonzero(finite))
            raise ValueError(f"{name} contains {bad} NaN or infinite value(s); expected finite numbers.")


# Covariances are refused where kappa * eps exceeds this, kappa the condition number of their
# correlation matrix: Cholesky-based log-densities in that dtype then err by up to about
# kappa * eps relative (measured on random float32 covariances: <= 5e-4 for kappa < 1e4,
# up to 5e-2 for kappa ~ 1e5); scaling the variances changes nothing (van der Sluis).
CONDITION_TOLERANCE = 1e-3


def check_conditioning(name: str, cov, dtype) -> None:
    """Refuses (``ValueError`` naming ``name``) covariance matrices ``(..., d, d)`` too
    ill-conditioned for ``dtype``: ``kappa * eps(dtype) > CONDITION_TOLERANCE`` with ``kappa``
    the condition number of the correlation matrix. Eager only (a no-op on tracers)."""
    if not is_concrete(cov):
        return
    c = np.asarray(cov, np.float64)
    c = c.reshape((-1,) + c.shape[-2:])
    scale = np.sqrt(np.diagonal(c, axis1=-2, axis2=-1))
    eig = np.linalg.eigvalsh(c / (scale[:, :, None] * scale[:, None, :]))
    kappa = eig[:, -1] / np.maximum(eig[:, 0], np.finfo(np.float64).tiny)
    eps = float(np.finfo(np.dtype(dtype)).eps)
    k = int(np.argmax(kappa))
    if kappa[k] * eps > CONDITION_TOLERANCE:
        which = f" (matrix {k})" if c.shape[0] > 1 else ""
        raise ValueError(
            f"{name} is too ill-conditioned for {np.dtype(dtype).name}{which}: its correlation matrix has condition "
            f"number {kappa[k]:.3g}, so log-densities in {np.dtype(dtype).name} would carry relative errors up to "
            f"about {kappa[k] * eps:.1g} (the limit is {CONDITION_TOLERANCE:g}, condition number "
            f"{CONDITION_TOLERANCE / eps:.2g}). Use float64 (jax.config.update('jax_enable_x64', True)) or "
            "regularise the covariance.")


def check_spins(name: str, x) -> None:
    """Raise unless every entry of ``x`` is exactly -1 or +1 (when ``x`` is concrete)."""
    values = _values(x)
    if values is not None:
        ok = (values == 1) | (values == -1)
        if not np.all(ok):
            idx = np.argwhere(~ok)[0]
            hint = " Convert {0, 1} data with 2 * x - 1." if np.all((values == 0) | (values == 1)) else ""
            raise ValueError(
                f"{name} must hold spins in {{-1, +1}}; entry {tuple(int(i) for i in idx)} is "
                f"{values[tuple(idx)]!r}.{hint}"
            )


def spins(name: str, x, *, n: int | None = None, ndim: int | tuple[int, ...] = (1, 2), dtype=None):
    """Validated +-1 spins as a float array: ``ndim`` allowed ranks, last axis of size ``n``."""
    x = array(name, x, dtype=dtype)
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if x.ndim not in allowed:
        shapes = {1: "(n,)", 2: "(batch, n)", 3: "(..., n)"}
        want = " or ".join(shapes.get(d, f"{d}-d") for d in allowed)
        raise ValueError(f"{name} must be spins of shape {want}; got an array of shape {x.shape}.")
    if n is not None and x.shape[-1] != n:
        raise ValueError(f"{name} must have {n} spins in its last axis; got shape {x.shape}.")
    check_finite(name, x)
    check_spins(name, x)
    return x


def check_symmetric_zero_diagonal(name: str, J, atol: float = 0.0) -> None:
    values = _values(J)
    if values is not None and values.size:
        values = values.astype(np.float64)
        scale = max(1.0, float(np.max(np.abs(values))))
        tol = atol if atol > 0 else 1e-6 * scale
        asym = float(np.max(np.abs(values - values.T)))
        if asym > tol:
            raise ValueError(f"{name} must be symmetric; max |J - J^T| = {asym:.3g}.")
        diag = float(np.max(np.abs(np.diag(values))))
        if diag > tol:
            raise ValueError(f"{name} must have a zero diagonal; max |diag(J)| = {diag:.3g}.")


def count(name: str, value, *, minimum: int = 1) -> int:
    """A count as a Python int: an integer (or integer-valued float such as ``1e4``) of at
    least ``minimum``. Never truncates: ``2.5`` is refused."""
    if isinstance(value, bool) or isinstance(value, jax.core.Tracer):
        raise ValueError(f"{name} must be a Python integer >= {minimum}; got {value!r}.")
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, numbers.Integral):
        out = int(value)
    elif isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        out = int(value)
    else:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    if out < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {out}.")
    return out


def finite_scalar(name: str, value, *, minimum: float | None = None, maximum: float | None = None,
                  strict: bool = False):
    """A real scalar, finite and within ``[minimum, maximum]`` (open at ``minimum`` when
    ``strict``) when concrete. Returns a Python float when concrete, else the tracer."""
    if isinstance(value, (str, bytes)):  # float("1e3") would succeed: text is not a number
        raise ValueError(f"{name} must be a real number; got {value!r}.")
    if isinstance(value, (bool, np.bool_)) or getattr(value, "dtype", None) == np.bool_:  # True is not 1.0
        raise ValueError(f"{name} must be a real number, not a bool; got {value!r}.")
    if np.ndim(value) != 0:
        raise ValueError(f"{name} must be a scalar; got an array of shape {np.shape(value)}.")
    if not is_concrete(value):
        return value
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number; got {value!r}.") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite; got {v}.")
    if minimum is not None and (v < minimum or (strict and v == minimum)):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}; got {v}.")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be <= {maximum}; got {v}.")
    return v


def prng_key(name: str, key):
    """A single JAX PRNG key: a typed key (``jax.random.key(seed)``) of shape ``()`` or raw key
    data (``jax.random.PRNGKey(seed)``, a uint32 vector); a batch of keys, an integer seed or
    anything else is a ValueError naming ``name`` (checked on shapes and dtypes, so also under
    ``jit``; under ``vmap`` each key is single)."""
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if np.ndim(key) != 0:
            raise ValueError(f"{name} must be a single PRNG key; got a batch of shape {np.shape(key)} "
                             "(map over keys with jax.vmap).")
        return key
    if dtype is not None and dtype == np.uint32 and np.ndim(key) == 1:
        return key
    what = f"{type(key).__name__} of dtype {dtype} and shape {np.shape(key)}" if dtype is not None else repr(key)
    raise ValueError(f"{name} must be a JAX PRNG key, e.g. jax.random.key(0); got {what}.")


def regulariser(name: str, value):
    """A regularisation strength: finite and >= 0."""
    return finite_scalar(name, value, minimum=0.0)


def positive_scalar(name: str, value):
    """A finite scalar > 0 (a tolerance, a step size, an inverse temperature)."""
    return finite_scalar(name, value, minimum=0.0, strict=True)


def choice(name: str, value, options: Sequence):
    if value not in tuple(options):
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}; got {value!r}.")
    return value


def probability(name: str, p):
    """An array of probabilities in [0, 1]."""
    p = array(name, p)
    check_finite(name, p)
    values = _values(p)
    if values is not None and (np.any(values < 0) or np.any(values > 1)):
        raise ValueError(f"{name} must hold probabilities in [0, 1]; got values in "
                         f"[{values.min():.3g}, {values.max():.3g}].")
    return p


def distribution(name: str, p, *, axis: int = -1, rtol: float | None = None):
    """A probability vector (or a batch along ``axis``): entries >= 0 summing to 1."""
    p = array(name, p)
    check_finite(name, p)
    values = _values(p)
    if values is not None:
        if np.any(values < 0):
            raise ValueError(f"{name} must be a probability distribution; it has negative entries "
                             f"(min {values.min():.3g}).")
        tol = rtol if rtol is not None else 1e3 * np.finfo(values.dtype).eps * max(1, values.shape[axis]) ** 0.5
        totals = values.sum(axis=axis)
        if np.any(np.abs(totals - 1) > tol):
            worst = float(np.ravel(totals)[np.argmax(np.abs(np.ravel(totals) - 1))])
            raise ValueError(f"{name} must sum to 1 along axis {axis}; a sum is {worst:.6g}. Normalise it "
                             "first (p / p.sum()).")
    return p


def schedule(name: str, betas, *, start: float | None = 0.0, end: float | None = 1.0, strictly: bool = False):
    """An annealing schedule: 1-D, at least 2 entries, finite, non-decreasing (increasing when
    ``strictly``), starting at ``start`` and ending at ``end`` (when given)."""
    betas = array(name, betas)
    if betas.ndim != 1 or betas.shape[0] < 2:
        raise ValueError(f"{name} must be a vector of at least 2 inverse temperatures; got shape {betas.shape}.")
    check_finite(name, betas)
    values = _values(betas)
    if values is not None:
        steps = np.diff(values)
        if np.any(steps < 0) or (strictly and np.any(steps == 0)):
            raise ValueError(f"{name} must be {'strictly increasing' if strictly else 'non-decreasing'}; "
                             f"entry {int(np.argmax(steps <= 0 if strictly else steps < 0)) + 1} goes backwards.")
        if start is not None and values[0] != start:
            raise ValueError(f"{name} must start at {start}; got {values[0]!r}.")
        if end is not None and values[-1] != end:
            raise ValueError(f"{name} must end at {end}; got {values[-1]!r}.")
    return betas


def ladder(name: str, betas, *, last: float | None = None):
    """A replica-exchange ladder: 1-D, at least 2 entries, finite, > 0, strictly monotone;
    its last entry equal to ``last`` when given (e.g. 1 for the model itself)."""
    betas = array(name, betas)
    if betas.ndim != 1 or betas.shape[0] < 2:
        raise ValueError(f"{name} must be a vector of at least 2 inverse temperatures; got shape {betas.shape}.")
    check_finite(name, betas)
    values = _values(betas)
    if values is not None:
        if np.any(values <= 0):
            raise ValueError(f"{name} must hold inverse temperatures > 0; got min {values.min()!r}.")
        steps = np.diff(values)
        if not (np.all(steps > 0) or np.all(steps < 0)):
            raise ValueError(f"{name} must be strictly monotone (no repeated or out-of-order temperatures); "
                             f"got {values.tolist()}.")
        if last is not None and values[-1] != last:
            raise ValueError(f"{name} must end at beta = {last} (the model itself); got {values[-1]!r}.")
    return betas


def power_of_two(name: str, value) -> int:
    """A positive power of two as a Python int (a chunk size: states per chunk)."""
    out = count(name, value)
    if out & (out - 1):
        raise ValueError(f"{name} must be a positive power of two; got {out}.")
    return out


def device_tuple(name: str, value) -> tuple:
    """Devices to spread work across: ``None`` means ``jax.local_devices()``; otherwise a
    non-empty sequence of distinct ``jax.Device``s (e.g. ``jax.devices()``), as a tuple."""
    if value is None:
        value = jax.local_devices()
    try:
        out = tuple(value)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of jax devices; got {type(value).__name__}.") from None
    if not out:
        raise ValueError(f"{name} must name at least one device.")
    bad = [d for d in out if not isinstance(d, jax.Device)]
    if bad:
        raise ValueError(f"{name} must hold jax devices (jax.devices()); got {bad[0]!r}.")
    if len(set(out)) != len(out):
        raise ValueError(f"{name} must not repeat a device.")
    return out


def optimizer_state(optimizer: optax.GradientTransformation, params: PyTree, opt_state: PyTree | None = None) -> PyTree:
    """``optimizer.init(params)``, or ``opt_state`` (a state to resume from) once checked to
    have its structure and shapes (else a ValueError naming ``opt_state``)."""
    if opt_state is None:
        return optimizer.init(params)
    want = jax.eval_shape(optimizer.init, params)
    got_leaves, got_tree = jax.tree_util.tree_flatten(opt_state)
    want_leaves, want_tree = jax.tree_util.tree_flatten(want)
    if got_tree != want_tree or any(jnp.shape(g) != w.shape for g, w in zip(got_leaves, want_leaves)):
        raise ValueError(f"opt_state must be a state of this optimizer for these params (the structure and shapes "
                         f"of optimizer.init(params): {want_tree}); got {got_tree}.")
    return opt_state


def graph_fields(prefix: str, h, J, graph):
    """Validated fields ``h`` (one per node) and couplings ``J`` (one per edge, in the order of
    ``graph.edges``) of a model on ``graph``, cast to a common float dtype, float32 or wider (as
    dense parameters). ``prefix`` names them in errors (``"params."`` gives ``params.h``)."""
    h = array(f"{prefix}h", h, allow_empty=True)
    J = array(f"{prefix}J", J, allow_empty=True)
    if h.shape != (graph.n,):
        raise ValueError(f"{prefix}h must have shape ({graph.n},) (one field per node of the graph); got {h.shape}.")
    if J.shape != (graph.num_edges,):
        raise ValueError(f"{prefix}J must have shape ({graph.num_edges},) (one coupling per edge, in the order of "
                         f"graph.edges); got {J.shape}.")
    dtype = jnp.result_type(h.dtype, J.dtype, jnp.float32)
    h, J = h.astype(dtype), J.astype(dtype)
    check_finite(f"{prefix}h", h)
    check_finite(f"{prefix}J", J)
    return h, J
