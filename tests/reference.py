"""Independent float64 NumPy oracles. Never imports jaxebm.

Brute force over all 2^n states for small models, and closed forms for larger ones:
independent spins, open 1-D chains (transfer matrix), and Curie-Weiss (a sum over the
magnetisation).
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def all_states(n: int) -> np.ndarray:
    """(2^n, n) float64 states; row c has spin k = +1 iff bit k of c is set."""
    codes = np.arange(2**n, dtype=np.int64)[:, None]
    return np.where((codes >> np.arange(n)) & 1, 1.0, -1.0)


def ising_log_weights(h, J, X=None):
    h, J = np.asarray(h, np.float64), np.asarray(J, np.float64)
    X = all_states(len(h)) if X is None else np.asarray(X, np.float64)
    # Eq. (2.28): sum over pairs k < l, each once, plus fields.
    n = len(h)
    out = X @ h
    for k, l in itertools.combinations(range(n), 2):
        out = out + J[k, l] * X[:, k] * X[:, l]
    return out


def logsumexp(a):
    a = np.asarray(a, np.float64)
    m = a.max()
    return m + math.log(np.exp(a - m).sum())


def ising_log_z(h, J):
    return logsumexp(ising_log_weights(h, J))


def ising_probs(h, J):
    lw = ising_log_weights(h, J)
    return np.exp(lw - logsumexp(lw))


def ising_moments(h, J):
    X = all_states(len(h))
    p = ising_probs(h, J)
    return p @ X, (X.T * p) @ X


def ising_sufficient_stats(X):
    """phi(x) = (x_k, then x_k x_l for k < l in np.triu_indices order)."""
    X = np.asarray(X, np.float64)
    iu = np.triu_indices(X.shape[1], 1)
    return np.concatenate([X, X[:, iu[0]] * X[:, iu[1]]], axis=1)


def ising_fisher(h, J):
    X = all_states(len(h))
    p = ising_probs(h, J)
    phi = ising_sufficient_stats(X)
    mean = p @ phi
    return (phi.T * p) @ phi - np.outer(mean, mean)


def ising_nll(h, J, data):
    return ising_log_z(h, J) - ising_log_weights(h, J, data).mean()


def ising_kl(hp, Jp, hq, Jq):
    lp = ising_log_weights(hp, Jp)
    lq = ising_log_weights(hq, Jq)
    lp = lp - logsumexp(lp)
    lq = lq - logsumexp(lq)
    return float(np.sum(np.exp(lp) * (lp - lq)))


# ----- closed forms ------------------------------------------------------------------------


def independent_log_z(h):
    """Z = prod_k 2 cosh h_k."""
    h = np.abs(np.asarray(h, np.float64))
    return float(np.sum(h + np.log1p(np.exp(-2 * h))))  # log(2 cosh h) = |h| + log1p(e^{-2|h|})


def chain_log_z_and_moments(h, couplings):
    """Open chain: log w = sum_k h_k x_k + sum_k c_k x_k x_{k+1}. Transfer matrices with
    forward-backward in float64 (log-scaled). Returns (log Z, <x_k>, <x_k x_{k+1}>)."""
    h = np.asarray(h, np.float64)
    c = np.asarray(couplings, np.float64)
    n = len(h)
    s = np.array([-1.0, 1.0])
    unary = np.exp(np.outer(h, s))  # (n, 2)
    T = [np.exp(ck * np.outer(s, s)) for ck in c]
    alpha = np.zeros((n, 2))
    log_scale = 0.0
    a = unary[0].copy()
    norms = []
    for k in range(n):
        if k > 0:
            a = (alpha[k - 1] @ T[k - 1]) * unary[k]
        z = a.sum()
        norms.append(z)
        alpha[k] = a / z
    log_scale = float(np.sum(np.log(norms)))
    beta = np.ones((n, 2))
    for k in range(n - 2, -1, -1):
        b = T[k] @ (unary[k + 1] * beta[k + 1])
        beta[k] = b / b.sum()
    marg = alpha * beta
    marg /= marg.sum(axis=1, keepdims=True)
    mean = marg @ s
    nn = []
    for k in range(n - 1):
        pair = alpha[k][:, None] * T[k] * (unary[k + 1] * beta[k + 1])[None, :]
        pair /= pair.sum()
        nn.append(float(np.sum(pair * np.outer(s, s))))
    return log_scale, mean, np.array(nn)


def curie_weiss(n, coupling, field):
    """J_kl = coupling / n for k != l, h_k = field. Sums over magnetisation M = 2u - n.
    Returns (log Z, <x_k>, <x_k x_l> for k != l)."""
    u = np.arange(n + 1)
    M = 2.0 * u - n
    log_binom = np.array([math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) for k in u])
    # sum_{k<l} x_k x_l = (M^2 - n) / 2
    log_terms = log_binom + coupling / n * (M**2 - n) / 2 + field * M
    log_z = logsumexp(log_terms)
    p = np.exp(log_terms - log_z)
    mean = float(p @ M) / n
    corr = float(p @ ((M**2 - n) / (n * (n - 1)))) if n > 1 else 1.0
    return log_z, mean, corr


# ----- pairwise models on graphs -----------------------------------------------------------


def graph_log_weights(h, J_edges, edges, X=None):
    """log w(x) = sum_e J_e x_i x_j + h.x for an (E, 2) edge list, one coupling per edge."""
    h = np.asarray(h, np.float64)
    J_edges = np.asarray(J_edges, np.float64)
    edges = np.asarray(edges, np.int64).reshape(-1, 2)
    X = all_states(len(h)) if X is None else np.asarray(X, np.float64)
    return X @ h + (X[:, edges[:, 0]] * X[:, edges[:, 1]]) @ J_edges


def graph_exact(h, J_edges, edges):
    """Brute force over all 2^n states: (log Z, <x_k> (n,), <x_i x_j> per edge (E,), probs (2^n,)),
    probabilities in the order of :func:`all_states` (bit k of the row index is spin k)."""
    edges = np.asarray(edges, np.int64).reshape(-1, 2)
    X = all_states(len(h))
    lw = graph_log_weights(h, J_edges, edges, X)
    log_z = logsumexp(lw)
    p = np.exp(lw - log_z)
    return log_z, p @ X, p @ (X[:, edges[:, 0]] * X[:, edges[:, 1]]), p


def lattice_edges(rows, cols, wrap_rows, wrap_cols):
    """Edges of a rows x cols square lattice, node (r, c) = r * cols + c, written independently
    of the library: the set of nearest-neighbour pairs, wrap-around ones for a periodic side of
    length >= 3 (a side of 2 would only repeat an edge). Returned sorted, as (i < j) pairs."""
    pairs = set()
    for r in range(rows):
        for c in range(cols):
            for dr, dc, wrap, size in ((0, 1, wrap_cols, cols), (1, 0, wrap_rows, rows)):
                r2, c2 = r + dr, c + dc
                along = c2 if dc else r2
                if along >= size:
                    if not (wrap and size >= 3):
                        continue
                    r2, c2 = r2 % rows, c2 % cols
                a, b = r * cols + c, r2 * cols + c2
                if a != b:
                    pairs.add((min(a, b), max(a, b)))
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


def _log_2cosh(x):
    x = np.abs(x)
    return x + np.log1p(np.exp(-2 * x))


def _log_abs_2sinh(x):
    """(log |2 sinh x|, sign of sinh x); log 0 = -inf."""
    ax = np.abs(x)
    with np.errstate(divide="ignore"):
        return ax + np.log1p(-np.exp(-2 * ax)), np.sign(x)


def kaufman_log_z(rows, cols, K):
    """Exact log Z of the zero-field isotropic Ising model on a rows x cols torus,
    log w = K sum_<ij> x_i x_j (B. Kaufman, Phys. Rev. 76, 1232 (1949)), in the form of
    P. D. Beale, Phys. Rev. Lett. 76, 78 (1996), Eqs. (2)-(4):

        Z = 1/2 (2 sinh 2K)^{mn/2} (Z1 + Z2 + Z3 + Z4),  m = rows, n = cols,
        Z1 = prod_{r=0}^{n-1} 2 cosh(m g_{2r+1} / 2),  Z2 = prod 2 sinh(m g_{2r+1} / 2),
        Z3 = prod_{r=0}^{n-1} 2 cosh(m g_{2r} / 2),    Z4 = prod 2 sinh(m g_{2r} / 2),
        cosh g_k = cosh 2K coth 2K - cos(pi k / n)  (k != 0, g_k > 0),
        g_0 = 2K + log tanh K  (negative below the critical coupling: Z4 can be negative).

    Valid for sides >= 3 (a side of 2 would double bonds); K > 0. Summed with signs in log
    space."""
    m, n = int(rows), int(cols)
    K = float(K)
    k = np.arange(2 * n)
    with np.errstate(divide="ignore"):
        g = np.arccosh(np.cosh(2 * K) / np.tanh(2 * K) - np.cos(np.pi * k / n))
    g[0] = 2 * K + math.log(math.tanh(K))
    odd, even = g[1::2], g[0::2]
    terms = []  # (log |Z_i|, sign)
    terms.append((np.sum(_log_2cosh(m * odd / 2)), 1.0))
    la, sa = _log_abs_2sinh(m * odd / 2)
    terms.append((np.sum(la), np.prod(sa)))
    terms.append((np.sum(_log_2cosh(m * even / 2)), 1.0))
    la, sa = _log_abs_2sinh(m * even / 2)
    terms.append((np.sum(la), np.prod(sa)))
    top = max(t for t, s in terms if s != 0)
    total = sum(s * math.exp(t - top) for t, s in terms if s != 0)
    assert total > 0
    return -math.log(2) + m * n / 2 * math.log(2 * math.sinh(2 * K)) + top + math.log(total)


def forest_log_z(n, J_edges):
    """Zero-field Ising model on a forest (no cycles): Z = 2^n prod_e cosh J_e."""
    J_edges = np.asarray(J_edges, np.float64)
    return n * math.log(2) + float(np.sum(_log_2cosh(J_edges) - math.log(2)))


# ----- Gaussian ----------------------------------------------------------------------------


def gaussian_log_pdf(x, mean, cov):
    x, mean, cov = (np.asarray(a, np.float64) for a in (x, mean, cov))
    d = mean.shape[0]
    diff = x - mean
    inv = np.linalg.inv(cov)
    maha = np.einsum("...i,ij,...j->...", diff, inv, diff)
    sign, logdet = np.linalg.slogdet(cov)
    assert sign > 0
    return -0.5 * (maha + logdet + d * math.log(2 * math.pi))


def gaussian_kl(m0, S0, m1, S1):
    m0, S0, m1, S1 = (np.asarray(a, np.float64) for a in (m0, S0, m1, S1))
    inv1 = np.linalg.inv(S1)
    d = len(m0)
    dm = m1 - m0
    return 0.5 * (np.trace(inv1 @ S0) + dm @ inv1 @ dm - d
                  + np.linalg.slogdet(S1)[1] - np.linalg.slogdet(S0)[1])
