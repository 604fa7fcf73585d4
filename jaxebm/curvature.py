r"""Chapter 2.6: the gradient method as surrogate minimisation, and the Hessian-eigenvalue
learning-rate rule.

The surrogate (Eq. (2.40)) of a loss :math:`f` at :math:`\theta_0` is

.. math:: f_\eta(\theta, \theta_0) = f(\theta_0) + \nabla f(\theta_0)^\top(\theta-\theta_0)
          + \frac{1}{2\eta}\lVert\theta-\theta_0\rVert^2 ,

and its minimiser is the gradient step :math:`\theta_0 - \eta\nabla f(\theta_0)`. When
:math:`f \le f_\eta` on the segment between old and new parameters, the step cannot increase
:math:`f` (Eq. (2.38)); a sufficient condition is :math:`\eta \le 1/\lambda_{\max}(H)` for
the Hessian along that segment (Eq. (2.43)-(2.47)).

**Global bound vs local estimate.** Erratum (2.47): the notes state the rule at a single
point. It *guarantees* descent only when :math:`\lambda_{\max}` bounds the Hessian on the
whole segment, i.e. with a global smoothness constant :math:`L`
(:func:`ising_smoothness_bound`): then :math:`f(\theta') \le f(\theta) -
\lVert\nabla f\rVert^2/(2L)`. The local estimate :math:`\lambda_{\max}(H(\theta))`
(:func:`max_eigenvalue`, :func:`scale_by_hessian_bound`) gives much larger, faster steps but
is not a guarantee: the curvature may grow along the step.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.flatten_util import ravel_pytree

from jaxebm import _cache
from jaxebm._validation import (
    ConvergenceWarning,
    array,
    check_finite,
    choice,
    count,
    finite_scalar,
    is_concrete,
    positive_scalar,
    prng_key,
)
from jaxebm.types import Array, PyTree

__all__ = [
    "EigenInfo",
    "ScaleByHessianBoundState",
    "hessian_bounded_sgd",
    "hvp",
    "ising_smoothness_bound",
    "max_eigenvalue",
    "scale_by_hessian_bound",
    "surrogate",
]


def _scalar_loss(loss_fn: Callable, params: PyTree, args: tuple) -> Callable[[PyTree], Array]:
    out = jax.eval_shape(lambda p: loss_fn(p, *args), params)
    if not hasattr(out, "shape") or out.shape != ():
        raise ValueError(f"loss_fn must return a scalar; it returned {getattr(out, 'shape', type(out))}.")
    return lambda p: loss_fn(p, *args)


def hvp(loss_fn: Callable, params: PyTree, vector: PyTree, *args) -> PyTree:
    r"""Hessian-vector product :math:`H(\theta) v` as ``jax.jvp`` of ``jax.grad``
    (forward-over-reverse; the Hessian is never formed). ``vector`` is a pytree like ``params``."""
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be a callable loss_fn(params, *args); got {type(loss_fn).__name__}.")
    params, vector = _check_params("params", params), _check_params("vector", vector)
    if jax.tree_util.tree_structure(vector) != jax.tree_util.tree_structure(params) or any(
            jnp.shape(a) != jnp.shape(b) for a, b in zip(jax.tree_util.tree_leaves(vector),
                                                         jax.tree_util.tree_leaves(params))):
        raise ValueError("vector must be a pytree with the structure and shapes of params.")
    f = _scalar_loss(loss_fn, params, args)
    return jax.jvp(jax.value_and_grad(f), (params,), (vector,))[1][1]


class EigenInfo(NamedTuple):
    """Diagnostics of an eigenvalue estimate."""

    num_hvps: Array  # int32 scalar: Hessian-vector products used
    converged: Array  # bool scalar
    smallest: Array  # float scalar: smallest eigenvalue when computed, else NaN


def _power(matvec, v0, num_iters, tol, est0, *, use_norm: bool, shift=0.0):
    """Power iteration ``v <- A v / |A v|`` on the symmetric operator ``matvec`` from unit ``v0``.

    At each iterate ``v`` (with ``w = A v``) the estimate is ``|w|`` (``use_norm``: the spectral
    radius, approached from below, exact at once for a spectrum +-lam) or the Rayleigh quotient
    ``v.w``. It stops when the estimate changes by at most ``tol`` relative (``est0``, a
    previous estimate, counting as iterate 0) and, for the Rayleigh quotient, the residual
    ``|w - (v.w) v|`` is at most ``sqrt(tol)`` of the eigenvalue sought, ``|estimate - shift|``
    (or of ``sqrt(tol) |shift|`` where that is smaller), so that a quotient that merely stalls,
    as between the two ends of a spectrum +-lam, is not taken for convergence. Returns
    ``(estimate, v, rayleigh, residual, iters, converged)``, all of the last iterate ``v``.
    """
    root = jnp.sqrt(tol)

    def cond(carry):
        return (carry[-2] < num_iters) & ~carry[-1]

    def body(carry):
        v, est_prev, *_, k, _ = carry
        w = matvec(v)
        size = jnp.linalg.norm(w)
        rayleigh = jnp.vdot(v, w)
        residual = jnp.linalg.norm(w - rayleigh * v)
        est = size if use_norm else rayleigh
        done = jnp.abs(est - est_prev) <= tol * jnp.abs(est)
        if not use_norm:  # the residual relative to the eigenvalue sought, est - shift (or to
            # sqrt(tol) of the shift, where that eigenvalue is 0 or nearly so)
            done = done & (residual <= root * jnp.maximum(jnp.abs(est - shift), root * jnp.abs(shift)))
        advance = ~done & (size > 0) & (k + 1 < num_iters)  # else keep the iterate the values belong to
        v_next = jnp.where(advance, w / jnp.where(size > 0, size, 1.0), v)
        return v_next, est, rayleigh, residual, k + 1, done

    nan = jnp.full((), jnp.nan, v0.dtype)
    init = (v0, est0, nan, nan, jnp.int32(0), jnp.bool_(False))
    v, est, rayleigh, residual, k, done = lax.while_loop(cond, body, init)
    return est, v, rayleigh, residual, k, done


def _lanczos(matvec, v0, num_iters):
    """``num_iters`` Lanczos steps with full reorthogonalisation. Returns the Ritz values
    (ascending), unit Ritz vectors (columns), which of them are genuine (``valid``) and their
    residual estimates ``|beta_m s_m|`` (``|H y - theta y|`` of the Ritz pair, m the last
    genuine step).

    On breakdown (the Krylov space became invariant: ``beta`` at the rounding level of
    ``H v``) the iteration stops extending the basis; the remaining diagonal entries of T are
    set to distinct values above the spectrum found (so they cannot tie with a genuine Ritz
    value, whose vector would then mix with their zero ones) and marked not valid. (With full
    reorthogonalisation a direction made of rounding noise is harmless, only wasted: its Rayleigh
    quotients lie in the spectrum; the threshold is therefore low, 10 eps of the scale of H, not
    the 1e3 eps that in float32 cut off a cluster 1e6 times below the top of the spectrum.)
    """
    dim = v0.shape[0]
    k = min(num_iters, dim)
    dtype = v0.dtype
    eps = jnp.finfo(dtype).eps
    V = jnp.zeros((k + 1, dim), dtype).at[0].set(v0)
    alphas = jnp.zeros((k,), dtype)
    betas = jnp.zeros((k,), dtype)

    def body(i, carry):
        V, alphas, betas, pads, scale, broken, last = carry
        w = matvec(V[i])
        alpha = jnp.vdot(V[i], w)
        mask = (jnp.arange(k + 1) <= i)[:, None]
        for _ in range(2):  # full reorthogonalisation, twice is enough
            w = w - jnp.dot(V.T, jnp.where(mask, V, 0.0) @ w)
        beta = jnp.linalg.norm(w)
        scale = jnp.where(broken, scale, jnp.maximum(scale, jnp.abs(alpha) + beta))
        beta = jnp.where(broken, 0.0, beta)
        broken_next = broken | (beta <= 10 * eps * scale)
        v_next = jnp.where(broken_next, 0.0, w / jnp.where(beta > 0, beta, 1.0))
        last = jnp.where(broken, last, beta)  # the last step's beta, kept where the breakdown discards it
        beta = jnp.where(broken_next, 0.0, beta)
        return (V.at[i + 1].set(v_next), alphas.at[i].set(alpha), betas.at[i].set(beta), pads.at[i].set(broken),
                scale, broken_next, last)

    init = (V, alphas, betas, jnp.zeros((k,), bool), jnp.zeros((), dtype), jnp.bool_(False), jnp.zeros((), dtype))
    V, alphas, betas, pads, scale, _, last = lax.fori_loop(0, k, body, init)
    top = 2.0 * scale + 1.0  # above every genuine Ritz value (all within [-scale, scale] of the spectrum)
    diagonal = jnp.where(pads, top + jnp.arange(k, dtype=dtype) * (top + 1.0), alphas)
    T = jnp.diag(diagonal) + jnp.diag(betas[:-1], 1) + jnp.diag(betas[:-1], -1)
    ritz, vecs = jnp.linalg.eigh(T)
    valid = ritz < top
    ritz_vectors = V[:k].T @ vecs
    ritz_vectors = ritz_vectors / jnp.maximum(jnp.linalg.norm(ritz_vectors, axis=0, keepdims=True), 1e-30)
    # |H y - theta y| = |beta_m s_m|, m the last genuine step (its beta counted even where the
    # breakdown discarded it as rounding: it bounds what the Ritz pair misses)
    m = k - 1 - jnp.sum(pads)
    residuals = jnp.abs(last * vecs[m])
    return ritz, ritz_vectors, valid, residuals


# Memory a dense Hessian (with eigh's workspace) may take before max_eigenvalue refuses it.
_DENSE_BUDGET_BYTES = 2**32


def max_eigenvalue(loss_fn: Callable, params: PyTree, *args, method: str = "power", which: str = "largest",
                   num_iters: int = 100, tol: float = 1e-6, init_vector: PyTree | None = None,
                   init_eigenvalue: Array | float | None = None, key: Array | None = None,
                   return_info: bool = False):
    r"""Extreme eigenvalue of the Hessian of ``loss_fn`` at ``params``, with its eigenvector.

    .. math:: \lambda_{\max} = \max_{\lVert v\rVert = 1} v^\top H(\theta) v,
              \qquad H = \nabla\nabla^\top f(\theta) \quad \text{Eq. (2.43)-(2.47)}

    Hessian-vector products are ``jax.jvp`` of ``jax.grad``; the Hessian is formed only for
    ``method="dense"``. Parameters may be any pytree (flattened internally).

    Args:
      loss_fn: scalar function ``loss_fn(params, *args)``.
      params: the point :math:`\theta`.
      *args: further arguments of ``loss_fn`` (e.g. data).
      method: ``"power"`` (power iteration for the spectral radius :math:`\rho`; where its
        vector is not an eigenvector at the requested end, a second iteration on
        :math:`\pm H + \rho I` finds that end), ``"lanczos"`` (``num_iters`` steps, full
        reorthogonalisation) or ``"dense"`` (``jax.hessian`` and ``eigh``; small problems only).
      which: ``"largest"`` (algebraically) or ``"smallest"``; the loss of an RBM is not
        convex, so its smallest eigenvalue can be negative.
      num_iters: maximum power iterations, or Lanczos steps.
      tol: power iteration stops when its estimate changes by at most ``tol`` relative and
        the residual :math:`\lVert Hv - \lambda v\rVert` is at most :math:`\sqrt{\text{tol}}\,|\lambda|`
        (a stalled Rayleigh quotient is not convergence); Lanczos reports ``converged`` (and
        otherwise warns) by the same residual test on its Ritz pair.
      init_vector: pytree like ``params`` to warm-start from (e.g. the previous eigenvector).
      init_eigenvalue: the previous estimate, counted as iterate 0 of the stopping rule.
      key: PRNG key for a random start vector (default: a fixed key).
      return_info: also return :class:`EigenInfo`.

    Returns:
      ``(eigenvalue, eigenvector)`` with the eigenvector a unit-norm pytree like ``params``,
      or ``(eigenvalue, eigenvector, info)``.
    """
    method = choice("method", method, ("power", "lanczos", "dense"))
    which = choice("which", which, ("largest", "smallest"))
    num_iters = count("num_iters", num_iters)
    tol = positive_scalar("tol", tol)
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be a callable loss_fn(params, *args); got {type(loss_fn).__name__}.")
    params = _check_params("params", params)
    _scalar_loss(loss_fn, params, args)
    flat, unravel = ravel_pytree(params)
    dtype = flat.dtype
    dense_bytes = 3 * flat.shape[0] ** 2 * jnp.dtype(dtype).itemsize  # the Hessian, eigh's copy and vectors
    if method == "dense" and dense_bytes > _DENSE_BUDGET_BYTES:
        raise ValueError(f'method="dense" needs the full {flat.shape[0]} x {flat.shape[0]} Hessian and its '
                         f"eigendecomposition, about {dense_bytes / 2**30:.1f} GiB (limit "
                         f'{_DENSE_BUDGET_BYTES / 2**30:.0f} GiB); use method="lanczos" or "power" (Hessian-vector '
                         "products only).")
    if init_vector is not None:
        init_vector = _check_params("init_vector", init_vector)
        if jax.tree_util.tree_structure(init_vector) != jax.tree_util.tree_structure(params):
            raise ValueError("init_vector must be a pytree like params; got a different structure.")
        v0 = ravel_pytree(init_vector)[0].astype(dtype)
        if v0.shape != flat.shape:
            raise ValueError(f"init_vector must have the shapes of params ({flat.shape[0]} entries); got "
                             f"{v0.shape[0]}.")
        if is_concrete(v0) and not np.any(np.asarray(v0)):
            raise ValueError("init_vector must be non-zero.")
    else:
        v0 = jax.random.normal(jax.random.key(0) if key is None else prng_key("key", key), flat.shape, dtype)
    lam0 = jnp.asarray(jnp.nan if init_eigenvalue is None else finite_scalar("init_eigenvalue", init_eigenvalue),
                       dtype)
    # The compiled work is cached on the traced loss (a new closure over new values reuses it).
    # Array arguments are operands; anything else (Python numbers, strings) is closed over.
    leaves, treedef = jax.tree_util.tree_flatten(args)
    dynamic = [isinstance(leaf, (jax.Array, np.ndarray)) for leaf in leaves]

    def loss(p, arrays):
        it = iter(arrays)
        full = [next(it) if dyn else leaf for leaf, dyn in zip(leaves, dynamic)]
        return loss_fn(p, *jax.tree_util.tree_unflatten(treedef, full))

    arrays = tuple(leaf for leaf, dyn in zip(leaves, dynamic) if dyn)
    traced, consts = _cache.trace(loss, params, arrays)
    lam, v, info = _max_eigenvalue(consts, params, arrays, v0, lam0, jnp.asarray(tol, dtype), traced=traced,
                                   method=method, which=which, num_iters=num_iters)
    if method == "power" and is_concrete(info.converged) and not bool(info.converged):
        warnings.warn(
            f"max_eigenvalue: power iteration stopped at num_iters={num_iters} before the Rayleigh quotient "
            f"changed by less than tol={tol:g} and its residual |Hv - lam v| fell below sqrt(tol) (relative); the "
            f"estimate {float(lam):.6g} may be inaccurate. Raise num_iters, or use method='lanczos'.",
            ConvergenceWarning, stacklevel=2)
    if method == "lanczos" and is_concrete(info.converged) and not bool(info.converged):
        warnings.warn(
            f"max_eigenvalue: after {int(info.num_hvps)} Lanczos steps the Ritz pair's residual |Hv - lam v| is above "
            f"sqrt(tol) = {np.sqrt(tol):.3g} of |lam|; the estimate {float(lam):.6g} may be inaccurate. Raise "
            "num_iters.", ConvergenceWarning, stacklevel=2)
    v = unravel(v.astype(dtype))
    return (lam, v, info) if return_info else (lam, v)


def _check_params(name: str, params: PyTree) -> PyTree:
    """A pytree of floating arrays with at least one entry, finite when concrete."""
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
        raise ValueError(f"{name} must hold at least one array; got an empty pytree.")
    params = jax.tree_util.tree_map(lambda a: array(name, a, allow_empty=True), params)
    leaves = jax.tree_util.tree_leaves(params)
    if sum(leaf.size for leaf in leaves) == 0:
        raise ValueError(f"{name} must hold at least one entry; all its arrays are empty.")
    for leaf in leaves:
        check_finite(name, leaf)
    return params


@functools.partial(jax.jit, static_argnames=("traced", "method", "which", "num_iters"))
def _max_eigenvalue(consts, params, args, v0, lam0, tol, *, traced, method, which, num_iters):
    def f(p):
        return traced(consts, p, args)

    flat, unravel = ravel_pytree(params)
    dtype = flat.dtype

    def matvec(v):
        return ravel_pytree(hvp(f, params, unravel(v)))[0]

    v0 = v0 / jnp.linalg.norm(v0)
    nan = jnp.array(jnp.nan, dtype)

    if method == "dense":
        H = jax.hessian(lambda x: f(unravel(x)))(flat)
        evals, evecs = jnp.linalg.eigh(0.5 * (H + H.T))
        idx = -1 if which == "largest" else 0
        lam, v = evals[idx], evecs[:, idx]
        info = EigenInfo(jnp.int32(0), jnp.bool_(True), evals[0])
    elif method == "lanczos":
        ritz, vecs, valid, residuals = _lanczos(matvec, v0, num_iters)
        inf = jnp.array(jnp.inf, dtype)
        if which == "largest":
            idx = jnp.argmax(jnp.where(valid, ritz, -inf))
        else:
            idx = jnp.argmin(jnp.where(valid, ritz, inf))
        lam, v = ritz[idx], vecs[:, idx]
        converged = residuals[idx] <= jnp.sqrt(tol) * jnp.abs(lam)
        info = EigenInfo(jnp.int32(min(num_iters, flat.shape[0])), converged, ritz[0])
    else:
        # 1. the spectral radius rho = max |lambda| (|H v| from below: robust even where the two
        # ends of the spectrum have one magnitude, where Rayleigh quotients stall anywhere);
        # its vector's Rayleigh quotient is the answer if it is an eigenpair at the requested end.
        sign = 1.0 if which == "largest" else -1.0
        # (A previous eigenvalue says nothing about rho: it warm-starts the second pass only.)
        rho, v, rayleigh, residual, k, done = _power(matvec, v0, num_iters, tol, nan, use_norm=True)
        found = done & (residual <= jnp.sqrt(tol) * jnp.abs(rayleigh)) & (sign * rayleigh > 0)

        # 2. otherwise the requested end is the dominant eigenvalue of sign * H + rho I (>= 0)
        def pass_at(shift, k):
            mu, v2, _, _, k2, done2 = _power(lambda u: sign * matvec(u) + shift * u, v0, num_iters, tol,
                                             sign * lam0 + shift, use_norm=False, shift=shift)
            return mu, v2, k + k2, done2

        def shifted(_):
            mu, v2, k2, done2 = pass_at(rho, k)

            # a negative dominant eigenvalue: rho fell short of the spectral radius (its pass
            # stopped early), so sign * H + rho I was not positive semi-definite; rho + |mu| is
            def again(_):
                mu3, v3, k3, done3 = pass_at(rho + jnp.abs(mu), k2)
                return sign * (mu3 - rho - jnp.abs(mu)), v3, k3, done3

            return lax.cond(mu < 0, again, lambda _: (sign * (mu - rho), v2, k2, done2), None)

        lam, v, k, done = lax.cond(found, lambda _: (rayleigh, v, k, done), shifted, None)
        info = EigenInfo(k, done, nan)
    return lam, v, info


def ising_smoothness_bound(n: int) -> float:
    r"""A global bound :math:`L` on the Hessian of the Ising negative log-likelihood.

    .. math:: \lambda_{\max}\big(H(\theta)\big) \le L = n + \frac{n(n-1)}{2}
              \quad\text{for every } \theta

    *Proof.* The nll is :math:`\log Z(\theta) - \theta^\top\bar\phi`, so its Hessian is the
    covariance of the sufficient statistics, :math:`H = \mathrm{Cov}_\theta[\phi]` (the Fisher
    information). In the flat coordinates :math:`\theta = (h, J_{k<l})`, :math:`\phi(x) =
    (x_k, x_k x_l)` has :math:`n + n(n-1)/2` entries, each :math:`\pm1`. For a PSD matrix,
    :math:`\lambda_{\max} \le \mathrm{tr}\,H = \mathbb{E}\lVert\phi - \mathbb{E}\phi\rVert^2 \le
    \mathbb{E}\lVert\phi\rVert^2 = n + n(n-1)/2`. In the coordinates of ``IsingParams``
    (``h`` and the full symmetric ``J``, where :math:`J_{kl}` and :math:`J_{lk}` each carry
    :math:`\tfrac12 x_k x_l` and the diagonal carries a constant), the same argument gives
    :math:`n + n(n-1)/4 \le L`. Hence the bound holds for every :math:`\theta` on any segment,
    and a gradient step with :math:`\eta = 1/L` satisfies Eq. (2.38):
    :math:`f(\theta') \le f(\theta) - \lVert\nabla f\rVert^2/(2L)`. The nll never increases.
    """
    n = count("n", n)
    return float(n + n * (n - 1) // 2)


def surrogate(loss_fn: Callable, params0: PyTree, eta: float, *args) -> Callable[[PyTree], Array]:
    r"""The surrogate function of Eq. (2.40) at ``params0``:

    .. math:: f_\eta(\theta, \theta_0) = f(\theta_0) + \nabla f(\theta_0)^\top(\theta-\theta_0)
              + \frac{1}{2\eta}\lVert\theta-\theta_0\rVert^2

    Returns a function of ``params`` (same pytree structure). When :math:`\eta \le 1/L` for a
    bound :math:`L` on the Hessian, :math:`f \le f_\eta` everywhere (Eq. (2.41)).
    """
    eta = positive_scalar("eta", eta)
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be a callable loss_fn(params, *args); got {type(loss_fn).__name__}.")
    params0 = _check_params("params0", params0)
    f = _scalar_loss(loss_fn, params0, args)
    value0, grad0 = jax.value_and_grad(f)(params0)

    def f_eta(params):
        diff = optax.tree_utils.tree_sub(params, params0)
        linear = optax.tree_utils.tree_vdot(grad0, diff)
        quad = optax.tree_utils.tree_vdot(diff, diff)
        return value0 + linear + quad / (2.0 * eta)

    return f_eta


class ScaleByHessianBoundState(NamedTuple):
    """State of :func:`scale_by_hessian_bound`."""

    count: chex.Array  # int32 scalar: update steps taken
    eigenvalue: chex.Array  # float scalar: current estimate of max |lambda| (>= lambda_max)
    eigenvector: Any  # pytree like params: warm start of the next power iteration
    num_hvps: chex.Array  # int32 scalar: Hessian-vector products used at the last re-estimate


def scale_by_hessian_bound(safety: float = 1.0, every: int = 1, *, num_iters: int = 20, tol: float = 1e-3,
                           eigenvalue_floor: float = 1e-8, seed: int = 0) -> optax.GradientTransformationExtraArgs:
    r"""Scales updates by :math:`\text{safety}/\lambda_{\max}(H(\theta))`, the learning-rate rule
    of Eq. (2.47).

    .. math:: u_t = \frac{\text{safety}}{\max(\hat\lambda_t, \epsilon)}\, g_t, \qquad
              \hat\lambda_t \approx \lambda_{\max}\big(\nabla^2 f(\theta_t)\big)

    :math:`\hat\lambda_t` is re-estimated every ``every`` steps by power iteration on
    Hessian-vector products of ``value_fn`` at ``params``, warm-started from the eigenvector
    (and eigenvalue) kept in the state, so on a slowly changing loss a re-estimate costs one or
    two HVPs. It estimates the spectral radius :math:`\max_i |\lambda_i| \ge \lambda_{\max}`
    (as :math:`\lVert Hv\rVert`): the same number where the Hessian is positive semi-definite,
    a more cautious step where it is not. (Estimating the dominant eigenvalue instead gave a
    negative number on a non-convex loss, floored to ``eigenvalue_floor``: a step of 1e8 times
    the gradient.) Following optax's line searches, ``update`` takes ``value_fn`` as a keyword
    argument. This is the *local* rule: fast, not a guarantee (see the module docstring and
    the erratum on (2.47)); for guaranteed descent use ``optax.sgd(1 / L)`` with a global
    bound such as :func:`ising_smoothness_bound`.

    Args:
      safety: multiplier of :math:`1/\lambda_{\max}`, in (0, 2) for stability on a quadratic.
      every: re-estimate every this many steps (1 = each step).
      num_iters: maximum power iterations per re-estimate (the first uses ``4 * num_iters``).
      tol: relative tolerance of the power iteration.
      eigenvalue_floor: :math:`\epsilon`, guarding against a non-positive curvature estimate.
      seed: seed of the random initial eigenvector.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``update(updates, state, params, *,
      value_fn, **extra_args)``.

    Examples:
      >>> opt = optax.chain(scale_by_hessian_bound(safety=1.0), optax.scale(-1.0))
      >>> state = opt.init(params)
      >>> grads = jax.grad(loss)(params)
      >>> updates, state = opt.update(grads, state, params, value_fn=loss)
      >>> params = optax.apply_updates(params, updates)
    """
    safety = positive_scalar("safety", safety)
    every = count("every", every)
    num_iters = count("num_iters", num_iters)
    tol = positive_scalar("tol", tol)
    eigenvalue_floor = positive_scalar("eigenvalue_floor", eigenvalue_floor)
    seed = count("seed", seed, minimum=0)

    def init_fn(params):
        flat, unravel = ravel_pytree(params)
        v = jax.random.normal(jax.random.key(seed), flat.shape, flat.dtype)
        return ScaleByHessianBoundState(
            count=jnp.zeros((), jnp.int32),
            eigenvalue=jnp.full((), jnp.nan, flat.dtype),
            eigenvector=unravel(v / jnp.linalg.norm(v)),
            num_hvps=jnp.zeros((), jnp.int32),
        )

    def update_fn(updates, state, params=None, *, value_fn=None, **extra_args):
        del extra_args
        if params is None or value_fn is None:
            raise ValueError("scale_by_hessian_bound needs params and value_fn: "
                             "opt.update(grads, state, params, value_fn=loss).")

        def estimate(state):
            first = jnp.isnan(state.eigenvalue)
            iters = jnp.where(first, 4 * num_iters, num_iters)
            lam, v, info = _warm_power(value_fn, params, state.eigenvector, state.eigenvalue, iters, tol)
            return lam, v, info

        def keep(state):
            return state.eigenvalue, state.eigenvector, jnp.zeros((), jnp.int32)

        lam, v, hvps = lax.cond(state.count % every == 0, estimate, keep, state)
        scale = safety / jnp.maximum(lam, eigenvalue_floor)
        updates = jax.tree_util.tree_map(lambda u: (scale * u).astype(u.dtype), updates)
        new_state = ScaleByHessianBoundState(
            count=optax.safe_increment(state.count), eigenvalue=lam.astype(state.eigenvalue.dtype),
            eigenvector=v, num_hvps=hvps)
        return updates, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _warm_power(value_fn, params, vector, eigenvalue, max_iters, tol):
    """Power iteration for the Hessian's spectral radius ``max |lambda|`` (``|H v|``, from below)
    with a traced iteration cap."""
    flat, unravel = ravel_pytree(params)
    out = jax.eval_shape(value_fn, params)
    if out.shape != ():
        raise ValueError(f"value_fn must return a scalar; it returned shape {out.shape}.")

    def matvec(u):
        return ravel_pytree(hvp(value_fn, params, unravel(u)))[0]

    v0 = ravel_pytree(vector)[0].astype(flat.dtype)
    v0 = v0 / jnp.linalg.norm(v0)
    rho, v, _, _, k, _ = _power(matvec, v0, max_iters, tol, eigenvalue.astype(flat.dtype), use_norm=True)
    return rho, unravel(v), k


def hessian_bounded_sgd(safety: float = 1.0, every: int = 1, *, num_iters: int = 20, tol: float = 1e-3,
                        eigenvalue_floor: float = 1e-8, seed: int = 0) -> optax.GradientTransformationExtraArgs:
    r"""Gradient descent with the learning rate :math:`\eta_t = \text{safety}/\lambda_{\max}(H_t)`
    (Eq. (2.35), (2.47)): :func:`scale_by_hessian_bound` chained with ``optax.scale(-1)``.

    .. math:: \theta_{t+1} = \theta_t - \frac{\text{safety}}{\hat\lambda_{\max}(\theta_t)}
              \nabla f(\theta_t)

    Arguments as :func:`scale_by_hessian_bound`.

    Examples:
      >>> opt = hessian_bounded_sgd(safety=1.0)
      >>> updates, state = opt.update(grads, state, params, value_fn=loss)
    """
    return optax.chain(scale_by_hessian_bound(safety, every, num_iters=num_iters, tol=tol,
                                              eigenvalue_floor=eigenvalue_floor, seed=seed), optax.scale(-1.0))

