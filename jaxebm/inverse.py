r"""Chapter 7: learning Ising Boltzmann machines without MCMC (the inverse Ising problem).

Every method returns ``IsingParams`` with a symmetric, zero-diagonal ``J``:

* :func:`exact_ml` - moment matching (Eq. (2.31)-(2.32)) by damped Newton steps whose
  Hessian-vector products are exact (enumeration);
* :func:`pseudolikelihood` - Besag's conditional likelihood, convex, fitted with optax L-BFGS;
* :func:`mean_field` - naive mean-field inversion :math:`J = -(C^{-1})_{\mathrm{off}}`;
* :func:`tap` - the TAP (second-order) correction (Kappen & Rodriguez 1998; Tanaka 1998);
* :func:`mpf` - minimum probability flow with single-spin-flip connectivity
  (Sohl-Dickstein, Battaglino & DeWeese 2011).

Degenerate data: a spin that never flips has an infinite maximum-likelihood field, so every
method raises a ValueError naming it. Two spins that are always equal (or always opposite)
have an infinite maximum-likelihood coupling: :func:`exact_ml`, :func:`pseudolikelihood` and
:func:`mpf` raise a ValueError naming them unless ``l2 > 0``; :func:`mean_field` and
:func:`tap` regularise the singular correlation matrix with a ridge (documented default).
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jaxebm import ising
from jaxebm._validation import is_concrete
from jaxebm.ising import IsingParams

HIGHEST = lax.Precision.HIGHEST

__all__ = ["exact_ml", "mean_field", "mpf", "mpf_objective", "pseudolikelihood", "pseudolikelihood_objective", "tap"]


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


def _check_data(data, l2: float | None = None, method: str = "") -> jax.Array:
    data = ising.validate_data(data)
    if not is_concrete(data):  # inside jit/vmap: shape checks only
        return data.astype(jnp.result_type(data, jnp.float32))
    x = np.asarray(data)
    mean = x.mean(0)
    constant = np.flatnonzero(np.abs(mean) == 1.0)
    if constant.size:
        k = int(constant[0])
        raise ValueError(f"spin {k} never flips in data (always {int(x[0, k]):+d}): its maximum-likelihood field "
                         "is infinite. Remove constant spins before fitting.")
    if l2 is not None and l2 == 0:
        corr = x.T @ x / x.shape[0]
        np.fill_diagonal(corr, 0.0)
        k, l = np.unravel_index(np.argmax(np.abs(corr)), corr.shape)
        if np.abs(corr[k, l]) == 1.0:
            relation = "equal" if corr[k, l] > 0 else "opposite"
            raise ValueError(f"spins {k} and {l} are always {relation} in data: their maximum-likelihood coupling is "
                             f"infinite. Use l2 > 0 with {method}, or remove one of them.")
    return data.astype(jnp.result_type(data, jnp.float32))


def _symmetrise(J):
    J = 0.5 * (J + J.T)
    return J * (1.0 - jnp.eye(J.shape[0], dtype=J.dtype))


# --------------------------------------------------------------------------------------
# Mean field and TAP
# --------------------------------------------------------------------------------------


def _connected(data, ridge):
    mean, corr = ising.data_moments(data)
    C = corr - jnp.outer(mean, mean)
    n = C.shape[0]
    scale = jnp.mean(jnp.diag(C))
    eigmin = jnp.linalg.eigvalsh(C)[0]
    if ridge is None:
        # documented default: a ridge of 1e-3 * mean variance when C is numerically singular
        ridge = jnp.where(eigmin < 1e-6 * scale, 1e-3 * scale, 0.0)
        if not isinstance(eigmin, jax.core.Tracer) and float(eigmin) < 1e-6 * float(scale):
            warnings.warn(f"the connected correlation matrix is singular (smallest eigenvalue {float(eigmin):.2e}); "
                          f"adding a ridge of {float(ridge):.2e} (pass ridge= to choose).", stacklevel=3)
    return mean, C + ridge * jnp.eye(n, dtype=C.dtype)


def mean_field(data, *, ridge: float | None = None) -> IsingParams:
    r"""Naive mean-field inversion.

    .. math:: J_{ij} = -(C^{-1})_{ij}\ (i \ne j), \qquad h_i = \operatorname{atanh} m_i - \sum_j J_{ij} m_j,

    with :math:`C = \langle xx^\top\rangle - mm^\top` the connected correlation of the data.
    When C is singular (e.g. duplicated spins) a ridge ``ridge * I`` is added; the default
    is ``1e-3 * mean(diag C)`` when the smallest eigenvalue is below ``1e-6 * mean(diag C)``
    (with a warning), else 0.
    """
    data = _check_data(data)
    m, C = _connected(data, ridge)
    J = _symmetrise(-jnp.linalg.inv(C))
    return IsingParams(jnp.arctanh(m) - J @ m, J)


def tap(data, *, ridge: float | None = None) -> IsingParams:
    r"""TAP (Thouless-Anderson-Palmer) inversion (Kappen & Rodriguez 1998; Tanaka 1998).

    The TAP equations give :math:`(C^{-1})_{ij} = -J_{ij} - 2J_{ij}^2 m_i m_j` for
    :math:`i \ne j`; the root that reduces to mean field as :math:`m \to 0` is

    .. math:: J_{ij} = \frac{-1 + \sqrt{1 - 8 (C^{-1})_{ij} m_i m_j}}{4 m_i m_j},
              \qquad h_i = \operatorname{atanh} m_i - \sum_j J_{ij} m_j + m_i \sum_j J_{ij}^2 (1 - m_j^2).

    Where the discriminant is negative (no real TAP solution) the mean-field value
    :math:`-(C^{-1})_{ij}` is used. Ridge as in :func:`mean_field`.
    """
    data = _check_data(data)
    m, C = _connected(data, ridge)
    inv = jnp.linalg.inv(C)
    mm = jnp.outer(m, m)
    disc = 1.0 - 8.0 * inv * mm
    small = jnp.abs(mm) < 1e-8
    safe_mm = jnp.where(small, 1.0, mm)
    root = (-1.0 + jnp.sqrt(jnp.maximum(disc, 0.0))) / (4.0 * safe_mm)
    J = jnp.where(small | (disc < 0), -inv, root)
    J = _symmetrise(J)
    h = jnp.arctanh(m) - J @ m + m * ((J * J) @ (1.0 - m * m))
    return IsingParams(h, J)


# --------------------------------------------------------------------------------------
# Pseudo-likelihood and MPF (convex objectives, L-BFGS)
# --------------------------------------------------------------------------------------


def _unpack(theta, n, symmetric):
    h = theta[:n]
    if symmetric:
        return ising.from_flat(theta, n).J, h
    W = theta[n:].reshape(n, n)
    return W * (1.0 - jnp.eye(n, dtype=W.dtype)), h


def _batched_mean(fn, data, batch_size):
    """Mean over rows of ``fn(batch) -> (B,)``, summed over batches of ``batch_size`` rows (the
    result does not depend on the batching)."""
    M = data.shape[0]
    if batch_size is None or batch_size >= M:
        return jnp.mean(fn(data))
    pad = (-M) % batch_size
    padded = jnp.concatenate([data, jnp.zeros((pad, data.shape[1]), data.dtype)])
    mask = jnp.concatenate([jnp.ones(M, data.dtype), jnp.zeros(pad, data.dtype)])
    batches = padded.reshape(-1, batch_size, data.shape[1])
    masks = mask.reshape(-1, batch_size)
    sums = lax.map(lambda bm: jnp.sum(fn(bm[0]) * bm[1]), (batches, masks))
    return jnp.sum(sums) / M


def pseudolikelihood_objective(theta, data, *, symmetric: bool = True, l2: float = 0.0,
                               batch_size: int | None = None):
    r"""Negative log pseudo-likelihood per sample (Besag 1975), plus ``l2`` on the couplings:

    .. math:: -\frac1M\sum_i\sum_k \log p(x_{ik}\mid x_{i,-k})
              = \frac1M\sum_i\sum_k \big(\log 2\cosh f_{ik} - x_{ik} f_{ik}\big),\qquad
              f_{ik} = h_k + \sum_{l\ne k} J_{kl} x_{il}

    ``theta`` is flat: ``(h, J[triu])`` when ``symmetric`` (see :func:`jaxebm.ising.to_flat`),
    or ``(h, W.ravel())`` with one free row of couplings per spin (diagonal ignored).
    """
    n = data.shape[1]
    J, h = _unpack(theta, n, symmetric)

    def per_sample(x):
        f = h + jnp.matmul(x, J.T, precision=HIGHEST)
        a = jnp.abs(f)
        return jnp.sum(a + jnp.log1p(jnp.exp(-2.0 * a)) - x * f, axis=1)

    penalty = 0.5 * l2 * jnp.sum(J * J)
    return _batched_mean(per_sample, data, batch_size) + penalty


def mpf_objective(theta, data, *, l2: float = 0.0, batch_size: int | None = None):
    r"""Minimum-probability-flow objective with single-spin-flip connectivity:

    .. math:: K(\theta) = \frac1M\sum_i\sum_k \exp\Big(\tfrac12\big(\log w(x_i^{(k)}) - \log w(x_i)\big)\Big)
              = \frac1M\sum_i\sum_k e^{-x_{ik} f_{ik}}

    (:math:`x^{(k)}` is x with spin k flipped), plus ``l2`` on the couplings. Convex.
    """
    n = data.shape[1]
    J, h = _unpack(theta, n, True)

    def per_sample(x):
        f = h + jnp.matmul(x, J.T, precision=HIGHEST)
        return jnp.sum(jnp.exp(-x * f), axis=1)

    return _batched_mean(per_sample, data, batch_size) + 0.5 * l2 * jnp.sum(J * J)


def _lbfgs(objective, theta0, max_iter, tol):
    """Minimises ``objective`` with optax L-BFGS (zoom line search) as one while_loop, until
    the gradient's max-norm falls below ``tol``."""
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(objective)

    def cond(carry):
        _, state, k = carry
        grad = optax.tree_utils.tree_get(state, "grad")
        return (k < max_iter) & ((k == 0) | (jnp.max(jnp.abs(grad)) > tol))

    def body(carry):
        theta, state, k = carry
        value, grad = value_and_grad(theta, state=state)
        updates, state = opt.update(grad, state, theta, value=value, grad=grad, value_fn=objective)
        return optax.apply_updates(theta, updates), state, k + 1

    theta, _, iters = lax.while_loop(cond, body, (theta0, opt.init(theta0), jnp.zeros((), jnp.int32)))
    return theta, iters


def pseudolikelihood(data, l2: float = 0.0, *, symmetric: bool = True, max_iter: int = 500, tol: float = 1e-6,
                     batch_size: int | None = None) -> IsingParams:
    r"""Maximum pseudo-likelihood (:func:`pseudolikelihood_objective`), fitted with optax L-BFGS.

    ``symmetric=True`` shares :math:`J_{kl} = J_{lk}`; ``symmetric=False`` fits each spin's
    conditional independently (n logistic regressions) and returns :math:`(J + J^\top)/2`.
    ``batch_size`` evaluates the objective in batches of rows (same result, less memory).
    """
    data = _check_data(data, l2, "pseudolikelihood")
    return _fit_pl(data, l2, tol, symmetric, batch_size, max_iter)


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _fit_pl(data, l2, tol, symmetric, batch_size, max_iter):
    n = data.shape[1]
    size = n + n * (n - 1) // 2 if symmetric else n + n * n
    objective = functools.partial(pseudolikelihood_objective, data=data, symmetric=symmetric, l2=l2,
                                  batch_size=batch_size)
    theta, _ = _lbfgs(objective, jnp.zeros((size,), data.dtype), max_iter, tol)
    J, h = _unpack(theta, n, symmetric)
    return IsingParams(h, _symmetrise(J))


@functools.partial(jax.jit, static_argnums=(3, 4))
def _fit_mpf(data, l2, tol, batch_size, max_iter):
    n = data.shape[1]
    objective = functools.partial(mpf_objective, data=data, l2=l2, batch_size=batch_size)
    theta, _ = _lbfgs(objective, jnp.zeros((n + n * (n - 1) // 2,), data.dtype), max_iter, tol)
    return ising.from_flat(theta, n)


def mpf(data, l2: float = 0.0, *, max_iter: int = 500, tol: float = 1e-6, batch_size: int | None = None) -> IsingParams:
    """Minimum probability flow (:func:`mpf_objective`), fitted with optax L-BFGS."""
    data = _check_data(data, l2, "mpf")
    return _fit_mpf(data, l2, tol, batch_size, max_iter)


# --------------------------------------------------------------------------------------
# Exact maximum likelihood
# --------------------------------------------------------------------------------------


def exact_ml(data, l2: float = 0.0, *, tol: float = 1e-6, max_iter: int = 50, init: IsingParams | None = None,
             cg_iters: int = 50, verbose: bool = False) -> IsingParams:
    r"""Exact maximum likelihood by moment matching (Eq. (2.31)-(2.32)).

    Damped Newton in the flat coordinates :math:`\theta = (h, J_{k<l})`: each step solves
    :math:`F(\theta)\,\Delta = \nabla\mathcal L` by conjugate gradients with exact Fisher-vector
    products (``jax.jvp`` of the exact gradient, by enumeration), then backtracks until the
    exact nll decreases. Stops when the moment residual
    :math:`\max(|\langle x\rangle - \bar x|, |\langle x_kx_l\rangle - \overline{x_kx_l}|)` is
    below ``tol``. ``l2`` adds :math:`\tfrac{l2}{2}\lVert J\rVert^2` (then the stopping test is
    on the gradient of the penalised nll).

    Returns:
      ``IsingParams``; warns if ``max_iter`` steps did not reach ``tol``.
    """
    data = _check_data(data, l2, "exact_ml")
    n = data.shape[1]
    mean, corr = ising.data_moments(data)
    theta = ising.to_flat(init) if init is not None else jnp.zeros((n + n * (n - 1) // 2,), data.dtype)
    step_fn = jax.jit(lambda t: _newton_direction(t, mean, corr, n, l2, cg_iters))
    loss_fn = jax.jit(lambda t: _penalised_nll(t, mean, corr, n, l2))
    residual = np.inf
    for it in range(max_iter):
        value, residual, direction = step_fn(theta)
        residual = float(residual)
        if verbose:
            print(f"  exact_ml {it}: nll {float(value):.10f} residual {residual:.2e}")
        if residual < tol:
            break
        t = 1.0
        while t > 1e-6:
            candidate = theta - t * direction
            if float(loss_fn(candidate)) <= float(value):
                break
            t *= 0.5
        theta = candidate
    else:
        warnings.warn(f"exact_ml stopped after max_iter={max_iter} Newton steps with moment residual {residual:.2e} "
                      f"(tol {tol:g}).", stacklevel=2)
    return ising.from_flat(theta, n)


def _penalised_nll(theta, mean, corr, n, l2):
    params = ising.from_flat(theta, n)
    return ising.nll_from_moments(params, mean, corr) + 0.5 * l2 * jnp.sum(theta[n:] ** 2)


def _newton_direction(theta, mean, corr, n, l2, cg_iters):
    def loss(t):
        return _penalised_nll(t, mean, corr, n, l2)

    value, grad = jax.value_and_grad(loss)(theta)
    # grad = <phi> - phi_data + l2 J: the moment residual when l2 = 0, the stationarity
    # residual of the penalised problem otherwise
    residual = jnp.max(jnp.abs(grad))

    def hvp(v):
        return jax.jvp(jax.grad(loss), (theta,), (v,))[1]

    # inexact Newton: a modest CG tolerance suffices, the line search guarantees descent
    direction, _ = jax.scipy.sparse.linalg.cg(hvp, grad, maxiter=cg_iters, tol=1e-4)
    return value, residual, direction
