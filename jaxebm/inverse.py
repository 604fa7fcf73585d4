r"""Chapter 7: learning Ising Boltzmann machines without MCMC (the inverse Ising problem).

Every method returns ``IsingParams`` with a symmetric, zero-diagonal ``J``:

* :func:`exact_ml` - moment matching (Eq. (2.31)-(2.32)) by damped Newton steps whose
  Hessian-vector products are exact (enumeration);
* :func:`pseudolikelihood` - Besag's conditional likelihood, convex, fitted with optax L-BFGS;
* :func:`mean_field` - naive mean-field inversion :math:`J = -(C^{-1})_{\mathrm{off}}`;
* :func:`tap` - the TAP (second-order) correction (Kappen & Rodriguez 1998; Tanaka 1998);
* :func:`mpf` - minimum probability flow with single-spin-flip connectivity
  (Sohl-Dickstein, Battaglino & DeWeese 2011).

On a sparse graph (``graph=`` a :class:`~jaxebm.graphs.Graph`), :func:`pseudolikelihood` and
:func:`mpf` fit one coupling per edge and return :class:`~jaxebm.ising.GraphIsingParams`: the
local fields :math:`f_k = h_k + \sum_{l \sim k} J_{kl} x_l` gather neighbours, O(n * degree)
per sample, so lattices of thousands of spins are learnt without an n x n matrix. For
always-equal spins only edges matter there.

Degenerate data: a spin that never flips has an infinite maximum-likelihood field, so every
method raises a ValueError naming it. Two spins that are always equal (or always opposite)
have an infinite maximum-likelihood coupling: :func:`exact_ml`, :func:`pseudolikelihood` and
:func:`mpf` raise a ValueError naming them unless ``l2 > 0``; :func:`mean_field` and
:func:`tap` regularise the singular correlation matrix with a ridge (documented default).

Validation (issue #12): data must be finite +-1 spins of shape ``(num_samples, n)`` (integer
data and lists accepted); ``l2``, ``ridge`` and ``tol`` finite and >= 0; ``max_iter``,
``batch_size`` and ``cg_iters`` positive integers. Value checks need concrete inputs, so under
a caller's ``jit`` only shapes are checked. The iterative fits warn
(:class:`~jaxebm._validation.ConvergenceWarning`) when they stop at ``max_iter`` short of
``tol``. Their work is in module-level jitted functions keyed on shapes, dtypes and static
options, so a second eager call with new data of the same shape compiles nothing.
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jaxebm import curvature, ising, optim
from jaxebm._enum.budget import time_limit
from jaxebm._graph_ising import neighbour_couplings
from jaxebm._numerics import HIGHEST, log2cosh
from jaxebm._validation import (
    ConvergenceWarning,
    array,
    check_finite,
    check_shape,
    check_symmetric_zero_diagonal,
    count,
    finite_scalar,
    is_concrete,
    regulariser,
    spins,
)
from jaxebm.ising import IsingParams

__all__ = ["exact_ml", "mean_field", "mpf", "mpf_objective", "pseudolikelihood", "pseudolikelihood_objective", "tap"]


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


def _check_data(data, l2: float | None = None, method: str = "") -> jax.Array:
    """``(num_samples, n)`` +-1 spins (integer data accepted), finite; when concrete, no
    constant spin and, with ``l2 == 0``, no two spins always equal or opposite."""
    data = spins("data", data, ndim=2)
    if not is_concrete(data):  # inside jit/vmap: shape checks only
        return data.astype(jnp.result_type(data, jnp.float32))
    x = np.asarray(data)
    mean = x.mean(0)
    constant = np.flatnonzero(np.abs(mean) == 1.0)
    if constant.size:
        k = int(constant[0])
        raise ValueError(f"spin {k} never flips in data (always {int(x[0, k]):+d}): its maximum-likelihood field "
                         "is infinite. Remove constant spins before fitting.")
    if l2 is not None and is_concrete(l2) and l2 == 0:
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


def _data_moments(data):
    """Empirical moments of validated data (inside jit); the diagonal of the second moment is
    exactly 1, as :func:`jaxebm.ising.data_moments`."""
    mean = jnp.mean(data, axis=0)
    corr = jnp.matmul(data.T, data, precision=HIGHEST) / data.shape[0]
    return mean, corr.at[jnp.diag_indices(data.shape[1])].set(1.0)


def _connected(data, ridge, auto):
    """``(mean, C + ridge I, eigmin(C), ridge used)``; with ``auto`` the documented default ridge
    of ``1e-3 * mean variance`` when C is numerically singular, else 0."""
    mean, corr = _data_moments(data)
    C = corr - jnp.outer(mean, mean)
    n = C.shape[0]
    scale = jnp.mean(jnp.diag(C))
    eigmin = jnp.linalg.eigvalsh(C)[0]
    if auto:
        ridge = jnp.where(eigmin < 1e-6 * scale, 1e-3 * scale, jnp.zeros((), C.dtype))
    return mean, C + ridge * jnp.eye(n, dtype=C.dtype), eigmin, ridge


def _ridge(ridge):
    """``(ridge value, auto)``: ``None`` selects the documented default (static ``auto``)."""
    return (0.0, True) if ridge is None else (regulariser("ridge", ridge), False)


def _report(method, params, eigmin, ridge, auto):
    """Eager-only follow-up of :func:`mean_field` / :func:`tap`: warn when the default ridge was
    added; refuse a non-finite result (an explicit ridge too small for a singular C)."""
    if not is_concrete((params, eigmin, ridge)):
        return params
    if auto and float(ridge) > 0:
        warnings.warn(f"the connected correlation matrix is singular (smallest eigenvalue {float(eigmin):.2e}); "
                      f"adding a ridge of {float(ridge):.2e} (pass ridge= to choose).", stacklevel=3)
    if not all(np.all(np.isfinite(np.asarray(leaf))) for leaf in params):
        raise ValueError(f"{method}: the connected correlation matrix is singular (smallest eigenvalue "
                         f"{float(eigmin):.2e}) and ridge={float(ridge):g} does not regularise it; pass ridge > 0 "
                         "(or ridge=None for the default).")
    return params


@functools.partial(jax.jit, static_argnums=(2,))
def _mean_field(data, ridge, auto):
    m, C, eigmin, ridge = _connected(data, ridge, auto)
    J = _symmetrise(-jnp.linalg.inv(C))
    return IsingParams(jnp.arctanh(m) - J @ m, J), eigmin, ridge


@functools.partial(jax.jit, static_argnums=(2,))
def _tap(data, ridge, auto):
    m, C, eigmin, ridge = _connected(data, ridge, auto)
    inv = jnp.linalg.inv(C)
    mm = jnp.outer(m, m)
    disc = 1.0 - 8.0 * inv * mm
    # the root in the form without cancellation (the printed one lost every digit in float32
    # for small m_i m_j: couplings 25% off on 400000 samples of a zero-field model)
    root = -2.0 * inv / (1.0 + jnp.sqrt(jnp.maximum(disc, 0.0)))
    J = jnp.where(disc < 0, -inv, root)
    J = _symmetrise(J)
    h = jnp.arctanh(m) - J @ m + m * ((J * J) @ (1.0 - m * m))
    return IsingParams(h, J), eigmin, ridge


def mean_field(data, *, ridge: float | None = None) -> IsingParams:
    r"""Naive mean-field inversion.

    .. math:: J_{ij} = -(C^{-1})_{ij}\ (i \ne j), \qquad h_i = \operatorname{atanh} m_i - \sum_j J_{ij} m_j,

    with :math:`C = \langle xx^\top\rangle - mm^\top` the connected correlation of the data.
    When C is singular (e.g. duplicated spins) a ridge ``ridge * I`` is added; the default
    is ``1e-3 * mean(diag C)`` when the smallest eigenvalue is below ``1e-6 * mean(diag C)``
    (with a warning), else 0. An explicit ``ridge`` must be finite and >= 0; one that leaves C
    singular raises (eagerly).
    """
    data = _check_data(data)
    ridge, auto = _ridge(ridge)
    return _report("mean_field", *_mean_field(data, ridge, auto), auto)


def tap(data, *, ridge: float | None = None) -> IsingParams:
    r"""TAP (Thouless-Anderson-Palmer) inversion (Kappen & Rodriguez 1998; Tanaka 1998).

    The TAP equations give :math:`(C^{-1})_{ij} = -J_{ij} - 2J_{ij}^2 m_i m_j` for
    :math:`i \ne j`; the root that reduces to mean field as :math:`m \to 0` is

    .. math:: J_{ij} = \frac{-1 + \sqrt{1 - 8 (C^{-1})_{ij} m_i m_j}}{4 m_i m_j}
              = \frac{-2 (C^{-1})_{ij}}{1 + \sqrt{1 - 8 (C^{-1})_{ij} m_i m_j}},
              \qquad h_i = \operatorname{atanh} m_i - \sum_j J_{ij} m_j + m_i \sum_j J_{ij}^2 (1 - m_j^2),

    computed in the second form, which does not cancel when :math:`m_i m_j` is small.

    Where the discriminant is negative (no real TAP solution) the mean-field value
    :math:`-(C^{-1})_{ij}` is used. Ridge as in :func:`mean_field`.
    """
    data = _check_data(data)
    ridge, auto = _ridge(ridge)
    return _report("tap", *_tap(data, ridge, auto), auto)


# --------------------------------------------------------------------------------------
# Pseudo-likelihood and MPF (convex objectives, L-BFGS)
# --------------------------------------------------------------------------------------


def _unpack(theta, n, symmetric):
    h = theta[:n]
    if symmetric:
        return ising.from_flat(theta, n).J, h
    W = theta[n:].reshape(n, n)
    return W * (1.0 - jnp.eye(n, dtype=W.dtype)), h


def _graph_size(graph, symmetric):
    """Length of the flat parameters on a graph: ``(h, J_e)`` or ``(h, W[k, slot])``."""
    return graph.n + (graph.num_edges if symmetric else graph.n * np.shape(graph.neighbours)[1])


def _graph_slots(theta, graph, symmetric):
    """``(h, couplings per neighbour slot (n, D))`` from flat graph parameters; padded slots
    are zero. Symmetric: slot d of spin k holds the coupling of edge ``neighbour_edges[k, d]``."""
    n = graph.n
    h = theta[:n]
    if symmetric:
        return h, neighbour_couplings(theta[n:], graph)
    slots = theta[n:].reshape(np.shape(graph.neighbours))
    return h, jnp.where(jnp.asarray(graph.neighbour_mask), slots, jnp.zeros((), theta.dtype))


def _graph_couplings(theta, graph, symmetric):
    """One coupling per edge (E,): the shared one, or the mean of the two directed ones."""
    if symmetric or graph.num_edges == 0:
        return theta[graph.n:graph.n + graph.num_edges]
    _, slots = _graph_slots(theta, graph, False)
    return 0.5 * jax.ops.segment_sum(slots.ravel(), jnp.asarray(graph.neighbour_edges).ravel() % graph.num_edges,
                                     num_segments=graph.num_edges)


def _local_fields(x, h, J, slots, graph):
    r"""Local fields :math:`f = h + Jx` for a batch ``x`` (B, n): a dense matmul, or on a graph a
    gather of each spin's neighbours, :math:`f_k = h_k + \sum_d W_{kd}\, x_{\mathrm{nb}(k, d)}`
    (O(n * degree) per sample)."""
    if graph is None:
        return h + jnp.matmul(x, J.T, precision=HIGHEST)
    return h + jnp.sum(x[:, jnp.asarray(graph.neighbours)] * slots, axis=-1)


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


def _objective_args(theta, data, l2, batch_size, graph, symmetric):
    """Validated ``(theta, data, l2, batch_size)`` of the objectives: data +-1 spins (on
    ``graph.n`` spins with a graph), ``theta`` flat of the matching length and finite, ``l2``
    finite >= 0, ``batch_size`` None or a positive integer. Shapes at trace time, values when
    concrete."""
    if graph is not None:
        from jaxebm.graphs import Graph

        if not isinstance(graph, Graph):
            raise ValueError(f"graph must be a jaxebm.graphs.Graph; got {type(graph).__name__}.")
    data = spins("data", data, ndim=2, n=None if graph is None else graph.n)
    data = data.astype(jnp.result_type(data, jnp.float32))
    n = data.shape[1]
    if graph is not None:
        size = _graph_size(graph, symmetric)
    else:
        size = n + n * (n - 1) // 2 if symmetric else n + n * n
    theta = array("theta", theta)
    check_shape("theta", theta, (size,), f"flat parameters for n = {n}, symmetric={symmetric}")
    check_finite("theta", theta)
    return theta, data, regulariser("l2", l2), None if batch_size is None else count("batch_size", batch_size)


def pseudolikelihood_objective(theta, data, *, symmetric: bool = True, l2: float = 0.0,
                               batch_size: int | None = None, graph=None):
    r"""Negative log pseudo-likelihood per sample (Besag 1975), plus ``l2`` on the couplings:

    .. math:: -\frac1M\sum_i\sum_k \log p(x_{ik}\mid x_{i,-k})
              = \frac1M\sum_i\sum_k \big(\log 2\cosh f_{ik} - x_{ik} f_{ik}\big),\qquad
              f_{ik} = h_k + \sum_{l\ne k} J_{kl} x_{il}

    ``theta`` is flat: ``(h, J[triu])`` when ``symmetric`` (see :func:`jaxebm.ising.to_flat`),
    or ``(h, W.ravel())`` with one free row of couplings per spin (diagonal ignored).

    With a :class:`jaxebm.graphs.Graph`, the couplings live on its edges only: ``theta`` is
    ``(h, J_e)`` with one coupling per edge in the order of ``graph.edges`` when
    ``symmetric``, or ``(h, W.ravel())`` with ``W`` of the shape of ``graph.neighbours`` (one
    coupling per spin and neighbour slot). The sum over l runs over the neighbours of k,
    gathered (O(n * degree) per sample), and the value equals the dense objective at the
    dense couplings that are zero off the graph (penalty included: ``l2`` counts each edge
    twice, as the dense ``J`` does).
    """
    theta, data, l2, batch_size = _objective_args(theta, data, l2, batch_size, graph, symmetric)
    n = data.shape[1]
    if graph is None:
        J, h = _unpack(theta, n, symmetric)
        slots = J
    else:
        J, (h, slots) = None, _graph_slots(theta, graph, symmetric)

    def per_sample(x):
        f = _local_fields(x, h, J, slots, graph)
        return jnp.sum(log2cosh(f) - x * f, axis=1)

    penalty = 0.5 * l2 * jnp.sum(slots * slots)
    return _batched_mean(per_sample, data, batch_size) + penalty


def mpf_objective(theta, data, *, l2: float = 0.0, batch_size: int | None = None, graph=None):
    r"""Minimum-probability-flow objective with single-spin-flip connectivity:

    .. math:: K(\theta) = \frac1M\sum_i\sum_k \exp\Big(\tfrac12\big(\log w(x_i^{(k)}) - \log w(x_i)\big)\Big)
              = \frac1M\sum_i\sum_k e^{-x_{ik} f_{ik}}

    (:math:`x^{(k)}` is x with spin k flipped), plus ``l2`` on the couplings. Convex. With a
    ``graph``, ``theta`` is ``(h, J_e)`` (one coupling per edge) and the local fields gather
    neighbours, as in :func:`pseudolikelihood_objective`.
    """
    theta, data, l2, batch_size = _objective_args(theta, data, l2, batch_size, graph, True)
    n = data.shape[1]
    if graph is None:
        J, h = _unpack(theta, n, True)
        slots = J
    else:
        J, (h, slots) = None, _graph_slots(theta, graph, True)

    def per_sample(x):
        f = _local_fields(x, h, J, slots, graph)
        return jnp.sum(jnp.exp(-x * f), axis=1)

    return _batched_mean(per_sample, data, batch_size) + 0.5 * l2 * jnp.sum(slots * slots)


def _lbfgs(objective, theta0, max_iter, tol):
    """Minimises ``objective`` with optax L-BFGS (zoom line search) through
    :func:`jaxebm.optim.run` until the gradient's max-norm falls to ``tol``; returns
    ``(theta, number of updates)``."""
    theta, info = optim.run(optax.lbfgs(), objective, theta0, max_iter, tol=tol)
    return theta, info.num_updates


def pseudolikelihood(data, l2: float = 0.0, *, symmetric: bool = True, max_iter: int = 500, tol: float = 1e-6,
                     batch_size: int | None = None, graph=None):
    r"""Maximum pseudo-likelihood (:func:`pseudolikelihood_objective`), fitted with optax L-BFGS.

    ``symmetric=True`` shares :math:`J_{kl} = J_{lk}`; ``symmetric=False`` fits each spin's
    conditional independently (n logistic regressions) and returns :math:`(J + J^\top)/2`.
    ``batch_size`` evaluates the objective in batches of rows (same result, less memory).
    ``l2`` and ``tol`` must be finite and >= 0, ``max_iter`` and ``batch_size`` positive
    integers. Stopping at ``max_iter`` with the gradient's max-norm above ``tol`` gives a
    :class:`~jaxebm._validation.ConvergenceWarning` (eager calls; under a caller's ``jit``
    nothing can warn). The fit is a module-level jitted function, so further calls with new
    data of the same shape compile nothing.

    With ``graph`` (a :class:`jaxebm.graphs.Graph` on ``data.shape[1]`` spins) only the
    graph's edges carry couplings: the objective gathers neighbours, O(n * degree) per
    sample instead of O(n^2), so lattices of thousands of spins fit, and the result is a
    :class:`jaxebm.ising.GraphIsingParams` with one coupling per edge. Pseudo-likelihood is
    consistent for the model restricted to the graph (Besag 1975).

    Returns:
      ``IsingParams``, or ``GraphIsingParams(h, J, graph)`` when ``graph`` is given.
    """
    l2, max_iter, tol, batch_size = _fit_options(l2, max_iter, tol, batch_size)
    if not isinstance(symmetric, (bool, np.bool_)):
        raise ValueError(f"symmetric must be True or False; got {symmetric!r}.")
    symmetric = bool(symmetric)
    if graph is not None:
        data = _check_graph_data(data, graph, l2, "pseudolikelihood")
        return _fit_on_graph(data, l2, tol, graph, "pseudolikelihood", symmetric, batch_size, max_iter)
    data = _check_data(data, l2, "pseudolikelihood")
    return _warn_unconverged("pseudolikelihood", *_fit_pl(data, l2, tol, symmetric, batch_size, max_iter), max_iter,
                             tol)


def _fit_options(l2, max_iter, tol, batch_size):
    """Validated ``(l2, max_iter, tol, batch_size)`` of the L-BFGS fits: ``l2`` finite >= 0,
    ``max_iter`` a positive integer, ``tol`` finite >= 0, ``batch_size`` None or a positive
    integer."""
    return (regulariser("l2", l2), count("max_iter", max_iter), finite_scalar("tol", tol, minimum=0.0),
            None if batch_size is None else count("batch_size", batch_size))


def _warn_unconverged(method, params, iters, grad_max, max_iter, tol):
    """Eagerly: a ConvergenceWarning when L-BFGS stopped at ``max_iter`` with the gradient's
    max-norm still above ``tol`` (under a caller's jit nothing can be reported)."""
    if is_concrete((iters, grad_max)) and int(iters) >= max_iter and not float(grad_max) <= tol:
        warnings.warn(f"{method} stopped after max_iter={max_iter} L-BFGS steps without meeting tol: the final "
                      f"gradient max-norm is {float(grad_max):.2e} (tol {tol:g}). Increase max_iter or tol.",
                      ConvergenceWarning, stacklevel=3)
    return params


def _check_graph_data(data, graph, l2, method):
    """Validates ``graph``, ``l2`` and ``data`` (n = graph.n columns of +-1 spins, no constant
    spin, and with ``l2 == 0`` no edge whose two spins are always equal or opposite)."""
    from jaxebm.graphs import Graph

    if not isinstance(graph, Graph):
        raise ValueError(f"graph must be a jaxebm.graphs.Graph; got {type(graph).__name__}.")
    if np.ndim(data) == 2 and np.shape(data)[1] != graph.n:
        raise ValueError(f"data must have {graph.n} columns (spins), one per node of graph; got shape "
                         f"{np.shape(data)}.")
    data = _check_data(data, None, method)
    if is_concrete(data) and is_concrete(l2) and l2 == 0 and graph.num_edges:
        x = np.asarray(data)
        edges = np.asarray(graph.edges)
        edge_corr = np.mean(x[:, edges[:, 0]] * x[:, edges[:, 1]], axis=0)
        e = int(np.argmax(np.abs(edge_corr)))
        if np.abs(edge_corr[e]) == 1.0:
            k, l = (int(v) for v in edges[e])
            relation = "equal" if edge_corr[e] > 0 else "opposite"
            raise ValueError(f"spins {k} and {l} (edge {e}) are always {relation} in data: their maximum-likelihood "
                             f"coupling is infinite. Use l2 > 0 with {method}, or remove the edge.")
    return data


def _fit_on_graph(data, l2, tol, graph, method, symmetric, batch_size, max_iter):
    h, J, iters, grad_max = _fit_graph_jit(data, l2, tol, graph, method, symmetric, batch_size, max_iter)
    return _warn_unconverged(f"{method} on the graph", ising.GraphIsingParams(h, J, graph), iters, grad_max,
                             max_iter, tol)


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6, 7))
def _fit_graph_jit(data, l2, tol, graph, method, symmetric, batch_size, max_iter):
    if method == "mpf":
        objective = functools.partial(mpf_objective, data=data, l2=l2, batch_size=batch_size, graph=graph)
    else:
        objective = functools.partial(pseudolikelihood_objective, data=data, symmetric=symmetric, l2=l2,
                                      batch_size=batch_size, graph=graph)
    theta, iters = _lbfgs(objective, jnp.zeros((_graph_size(graph, symmetric),), data.dtype), max_iter, tol)
    grad_max = jnp.max(jnp.abs(jax.grad(objective)(theta)))
    return theta[:graph.n], _graph_couplings(theta, graph, symmetric), iters, grad_max


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _fit_pl(data, l2, tol, symmetric, batch_size, max_iter):
    n = data.shape[1]
    size = n + n * (n - 1) // 2 if symmetric else n + n * n
    objective = functools.partial(pseudolikelihood_objective, data=data, symmetric=symmetric, l2=l2,
                                  batch_size=batch_size)
    theta, iters = _lbfgs(objective, jnp.zeros((size,), data.dtype), max_iter, tol)
    J, h = _unpack(theta, n, symmetric)
    return IsingParams(h, _symmetrise(J)), iters, jnp.max(jnp.abs(jax.grad(objective)(theta)))


@functools.partial(jax.jit, static_argnums=(3, 4))
def _fit_mpf(data, l2, tol, batch_size, max_iter):
    n = data.shape[1]
    objective = functools.partial(mpf_objective, data=data, l2=l2, batch_size=batch_size)
    theta, iters = _lbfgs(objective, jnp.zeros((n + n * (n - 1) // 2,), data.dtype), max_iter, tol)
    return ising.from_flat(theta, n), iters, jnp.max(jnp.abs(jax.grad(objective)(theta)))


def mpf(data, l2: float = 0.0, *, max_iter: int = 500, tol: float = 1e-6, batch_size: int | None = None,
        graph=None):
    """Minimum probability flow (:func:`mpf_objective`), fitted with optax L-BFGS.

    Arguments, validation, the ConvergenceWarning and compile-once as in
    :func:`pseudolikelihood`.

    With ``graph`` the couplings live on its edges only (neighbour gathers, O(n * degree) per
    sample) and the result is a :class:`jaxebm.ising.GraphIsingParams`, as in
    :func:`pseudolikelihood`.
    """
    l2, max_iter, tol, batch_size = _fit_options(l2, max_iter, tol, batch_size)
    if graph is not None:
        data = _check_graph_data(data, graph, l2, "mpf")
        return _fit_on_graph(data, l2, tol, graph, "mpf", True, batch_size, max_iter)
    data = _check_data(data, l2, "mpf")
    return _warn_unconverged("mpf", *_fit_mpf(data, l2, tol, batch_size, max_iter), max_iter, tol)


# --------------------------------------------------------------------------------------
# Exact maximum likelihood
# --------------------------------------------------------------------------------------


def exact_ml(data, l2: float = 0.0, *, tol: float = 1e-6, max_iter: int = 50, init: IsingParams | None = None,
             cg_iters: int = 50, verbose: bool = False, max_seconds: float | None = None) -> IsingParams:
    r"""Exact maximum likelihood by moment matching (Eq. (2.31)-(2.32)).

    Damped Newton in the flat coordinates :math:`\theta = (h, J_{k<l})`: each step solves
    :math:`F(\theta)\,\Delta = \nabla\mathcal L` by conjugate gradients with exact Fisher-vector
    products (``jax.jvp`` of the exact gradient, by enumeration), then backtracks until the
    exact nll decreases. Near the optimum the decrease of a Newton step (about
    :math:`\tfrac12 g^\top F^{-1} g`) falls below the rounding error of the nll (in float32
    about 1e-6 of :math:`\log Z`, reached at residuals of about 1e-4 to 1e-5), where
    comparing two rounded nll values accepts or rejects steps at random; a trial whose nll
    change is within that rounding error is accepted when it decreases the gradient norm
    instead (:math:`-\Delta` is a descent direction of :math:`\lVert g\rVert^2`, whose
    directional derivative is :math:`-2 g^\top F \Delta = -2\lVert g\rVert^2`). Stops when the
    moment residual
    :math:`\max(|\langle x\rangle - \bar x|, |\langle x_kx_l\rangle - \overline{x_kx_l}|)` is
    below ``tol``. ``l2`` adds :math:`\tfrac{l2}{2}\sum_{k<l} J_{kl}^2` (each pair once: half the
    :math:`\tfrac{l2}{2}\lVert J\rVert_F^2` that :func:`pseudolikelihood` and :func:`mpf`
    add, so the same ``l2`` regularises half as strongly here; then the stopping test is on
    the gradient of the penalised nll).

    The Newton step and the line-search trial are module-level jitted functions of
    ``(theta, moments, l2)`` (``cg_iters`` static), so further calls with new data of the
    same shape compile nothing. Eager only (the loop is in Python).

    Args:
      data: ``(num_samples, n)`` +-1 spins (integer data accepted).
      l2: finite, >= 0.
      tol: finite, >= 0.
      max_iter, cg_iters: positive integers.
      init: optional ``IsingParams`` on ``n`` spins to start from.
      max_seconds: the time budget of one exact :math:`\log Z` by enumeration (as
        :func:`jaxebm.ising.log_partition`; a fit runs many).

    Returns:
      ``IsingParams``; a :class:`~jaxebm._validation.ConvergenceWarning` if ``max_iter``
      steps did not reach ``tol``.
    """
    l2 = regulariser("l2", l2)
    tol = finite_scalar("tol", tol, minimum=0.0)
    max_iter = count("max_iter", max_iter)
    cg_iters = count("cg_iters", cg_iters)
    max_seconds = None if max_seconds is None else time_limit(max_seconds)  # validated; hashable for jit
    data = _check_data(data, l2, "exact_ml")
    n = data.shape[1]
    if init is not None:
        if not isinstance(init, IsingParams):
            raise ValueError(f"init must be an IsingParams(h, J) or None; got {type(init).__name__}.")
        h0, J0 = array("init.h", init.h, dtype=data.dtype), array("init.J", init.J, dtype=data.dtype)
        check_shape("init.h", h0, (n,), "one field per spin of data")
        check_shape("init.J", J0, (n, n))
        check_finite("init.h", h0)
        check_finite("init.J", J0)
        check_symmetric_zero_diagonal("init.J", J0)
        theta = ising.to_flat(IsingParams(h0, J0))
    else:
        theta = jnp.zeros((n + n * (n - 1) // 2,), data.dtype)
    mean, corr = _jit_moments(data)
    residual = np.inf
    for it in range(max_iter):
        value, residual, direction, grad_norm, slack = _newton_step(theta, mean, corr, l2, cg_iters, max_seconds)
        value, residual, grad_norm, slack = float(value), float(residual), float(grad_norm), float(slack)
        if verbose:
            print(f"  exact_ml {it}: nll {value:.10f} residual {residual:.2e}")
        if residual < tol:
            break
        t = 1.0
        while t > 1e-6:
            candidate, loss, candidate_grad_norm = _line_trial(theta, direction, t, mean, corr, l2, max_seconds)
            loss = float(loss)
            # a decrease beyond the rounding error of the nll; within it, the gradient norm decides
            if loss < value - slack or (loss <= value + slack and float(candidate_grad_norm) < grad_norm):
                break
            t *= 0.5
        theta = candidate
    else:  # the residual after the last step (the loop measured the one before it)
        residual = float(_residual(theta, mean, corr, l2, max_seconds))
        if not residual < tol:
            warnings.warn(f"exact_ml stopped after max_iter={max_iter} Newton steps without meeting tol: the "
                          f"moment residual is {residual:.2e} (tol {tol:g}). Increase max_iter or tol.",
                          ConvergenceWarning, stacklevel=2)
    return ising.from_flat(theta, n)


_jit_moments = jax.jit(_data_moments)


@functools.partial(jax.jit, static_argnums=(4, 5))
def _newton_step(theta, mean, corr, l2, cg_iters, max_seconds=None):
    return _newton_direction(theta, mean, corr, mean.shape[0], l2, cg_iters, max_seconds)


@functools.partial(jax.jit, static_argnums=(4,))
def _residual(theta, mean, corr, l2, max_seconds=None):
    """max |gradient| of the penalised nll: the moment residual when l2 = 0."""
    grad = jax.grad(_penalised_nll)(theta, mean, corr, mean.shape[0], l2, max_seconds)
    return jnp.max(jnp.abs(grad))


@functools.partial(jax.jit, static_argnums=(6,))
def _line_trial(theta, direction, t, mean, corr, l2, max_seconds=None):
    candidate = theta - t * direction
    loss, grad = jax.value_and_grad(_penalised_nll)(candidate, mean, corr, mean.shape[0], l2, max_seconds)
    return candidate, loss, jnp.linalg.norm(grad)


def _penalised_nll(theta, mean, corr, n, l2, max_seconds=None):
    params = ising.from_flat(theta, n)
    return ising.nll_from_moments(params, mean, corr, max_seconds=max_seconds) + 0.5 * l2 * jnp.sum(theta[n:] ** 2)


def _newton_direction(theta, mean, corr, n, l2, cg_iters, max_seconds=None):
    def loss(t):
        return _penalised_nll(t, mean, corr, n, l2, max_seconds)

    value, grad = jax.value_and_grad(loss)(theta)
    # grad = <phi> - phi_data + l2 J: the moment residual when l2 = 0, the stationarity
    # residual of the penalised problem otherwise
    residual = jnp.max(jnp.abs(grad))

    # inexact Newton: a modest CG tolerance suffices, the line search guarantees descent
    direction, _ = jax.scipy.sparse.linalg.cg(lambda v: curvature.hvp(loss, theta, v), grad, maxiter=cg_iters, tol=1e-4)
    # rounding error of the nll = log Z - theta.phi_data (+ penalty): a few ulps of the terms'
    # magnitudes (measured: up to 2 eps (|nll| + sum |theta_i phi_i|) at n = 10 and 20)
    phi = jnp.concatenate([mean, corr[np.triu_indices(n, 1)]])
    slack = 16 * jnp.finfo(theta.dtype).eps * (jnp.abs(value) + jnp.sum(jnp.abs(theta * phi)))
    return value, residual, direction, jnp.linalg.norm(grad), slack
