"""Learning without MCMC (ch. 7): closed forms, recovery, objectives, degenerate data."""

import itertools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxebm import inverse, ising
from jaxebm._validation import ConvergenceWarning
from tests import reference
from tests._compile import compile_counter as _count_compiles


@pytest.fixture(scope="module")
def sk8():
    truth = ising.sherrington_kirkpatrick(jax.random.key(0), 8, beta=0.7, field_std=0.2)
    data = ising.sample_exact(jax.random.key(1), truth, 200_000)
    return truth, data


def _rmse(a, b):
    iu = np.triu_indices(a.J.shape[0], 1)
    return float(np.sqrt(np.mean((np.asarray(a.J)[iu] - np.asarray(b.J)[iu]) ** 2)))


def _rmse_bound(truth, num, method, alpha=1e-3):
    """RMSE of the couplings that ``method`` exceeds with probability <= ``alpha`` on ``num``
    exact samples of ``truth``, from its asymptotic (sandwich) covariance, float64 brute force.

    Each estimator minimises a mean of per-sample losses l(theta; x) whose expected gradient
    vanishes at the truth, so sqrt(num) (theta_hat - theta) -> N(0, A^-1 B A^-1) with
    A = E[hess l] and B = E[grad l grad l^T] (for maximum likelihood A = B = the Fisher matrix).
    The per-sample losses, written through the local fields f_k = h_k + sum_l J_kl x_l:
    pseudo-likelihood sum_k log 2cosh f_k - x_k f_k, MPF sum_k exp(-x_k f_k). With Sigma the
    covariance of the errors of the m upper-triangle couplings, Laurent & Massart (2000, Lemma 1)
    bound m RMSE^2 = |delta|^2 by tr S + 2 sqrt(tr(S^2) t) + 2 lambda_max t with probability
    >= 1 - e^-t.
    """
    h, J = np.asarray(truth.h, np.float64), np.asarray(truth.J, np.float64)
    n = len(h)
    X, p = reference.all_states(n), reference.ising_probs(h, J)
    pairs = list(itertools.combinations(range(n), 2))
    # D[s, k, :] = d f_k / d theta at state s; L maps theta to the estimated upper-triangle J
    if method == "pseudolikelihood_asym":  # theta = (h, W_kl for k != l); J = (W + W^T) / 2
        cols = [(k, l) for k in range(n) for l in range(n) if k != l]
        D = np.zeros((len(X), n, n + len(cols)))
        for c, (k, l) in enumerate(cols):
            D[:, k, n + c] = X[:, l]
        L = np.zeros((len(pairs), n + len(cols)))
        for e, (i, j) in enumerate(pairs):
            L[e, n + cols.index((i, j))] = L[e, n + cols.index((j, i))] = 0.5
    else:  # theta = (h, J upper triangle)
        D = np.zeros((len(X), n, n + len(pairs)))
        for e, (i, j) in enumerate(pairs):
            D[:, i, n + e], D[:, j, n + e] = X[:, j], X[:, i]
        L = np.eye(n + len(pairs))[n:]
    D[:, np.arange(n), np.arange(n)] = 1.0
    f = X @ J + h
    if method == "exact_ml":
        phi = np.concatenate([X, np.stack([X[:, i] * X[:, j] for i, j in pairs], 1)], 1)
        centred = phi - p @ phi
        A = B = centred.T @ (centred * p[:, None])
    else:
        if method == "mpf":
            d1, d2 = -X * np.exp(-X * f), np.exp(-X * f)
        else:
            d1, d2 = np.tanh(f) - X, 1 - np.tanh(f) ** 2
        g = np.einsum("skp,sk->sp", D, d1)
        A, B = np.einsum("s,skp,sk,skq->pq", p, D, d2, D), g.T @ (g * p[:, None])
    A_inv = np.linalg.inv(A)
    lam = np.linalg.eigvalsh(L @ A_inv @ B @ A_inv @ L.T / num)
    t = np.log(1 / alpha)
    return float(np.sqrt((lam.sum() + 2 * np.sqrt(t * np.sum(lam**2)) + 2 * lam.max() * t) / len(lam)))


@pytest.mark.slow
def test_every_method_returns_symmetric_zero_diagonal_J(sk8):
    _, data = sk8
    for fn in (inverse.mean_field, inverse.tap, inverse.pseudolikelihood, inverse.mpf,
               lambda d: inverse.pseudolikelihood(d, symmetric=False), inverse.exact_ml):
        params = fn(data[:20_000])
        J = np.asarray(params.J)
        np.testing.assert_array_equal(J, J.T)
        np.testing.assert_array_equal(np.diag(J), 0)
        assert np.all(np.isfinite(J)) and np.all(np.isfinite(np.asarray(params.h)))


def test_mean_field_closed_form(sk8):
    _, data = sk8
    x = np.asarray(data, np.float64)
    m = x.mean(0)
    C = x.T @ x / len(x) - np.outer(m, m)
    J = -np.linalg.inv(C)
    np.fill_diagonal(J, 0)
    h = np.arctanh(m) - J @ m
    params = inverse.mean_field(data)
    np.testing.assert_allclose(params.J, J, atol=2e-4)
    np.testing.assert_allclose(params.h, h, atol=2e-4)


def test_tap_reduces_to_mean_field_for_weak_couplings():
    truth = ising.sherrington_kirkpatrick(jax.random.key(3), 8, beta=0.05, field_std=0.5)
    data = ising.sample_exact(jax.random.key(4), truth, 50_000)
    mf, tp = inverse.mean_field(data), inverse.tap(data)
    # TAP solves J_mf = J + 2 J^2 u (u = m_i m_j) for J on the same data, so with t = 8 u J_mf
    # J_tap = (sqrt(1 + t) - 1) / (4u) = J_mf - 2 u J_mf^2 + R, and Taylor's remainder of
    # sqrt(1 + t) after t^2 bounds |R| <= 8 u^2 |J_mf|^3 (1 - |t|)^(-5/2) (|t| < 1): a
    # deterministic O(J^3) bound, no sampling error. Float32 adds about one ulp of 1 in
    # sqrt(1 + t) - 1, divided by 4|u| (allowed twice), and a few ulps of J_mf.
    J_mf, m = np.asarray(mf.J, np.float64), np.asarray(data, np.float64).mean(0)
    u = np.outer(m, m)
    off = ~np.eye(len(m), dtype=bool)
    diff = (np.asarray(tp.J, np.float64) - J_mf)[off]
    expansion = (-2.0 * J_mf**2 * u)[off]
    t = np.abs(8 * u * J_mf)[off]
    assert t.max() < 0.5, t.max()
    eps = np.finfo(np.float32).eps
    bound = 8 * u[off] ** 2 * np.abs(J_mf[off]) ** 3 * (1 - t) ** -2.5 + eps / (2 * np.abs(u[off])) + 4 * eps * np.abs(
        J_mf[off])
    np.testing.assert_array_less(np.abs(diff - expansion), bound)
    assert np.max(np.abs(expansion) / bound) > 10  # the second-order term is resolved: TAP != mean field here
    # with zero magnetisations (exactly 0 in float32: sums of +-1) both are -C^{-1}; 1e-6 leaves
    # room only for float32 rounding differences between the two compiled programs
    sym = jnp.concatenate([data, -data])
    np.testing.assert_allclose(inverse.tap(sym).J, inverse.mean_field(sym).J, atol=1e-6)


def test_pseudolikelihood_recovers_J(sk8):
    # each RMSE within its asymptotic bound at false-alarm 1e-3 (about 0.0063 at 200,000 samples;
    # the expected RMSE is about 0.0034 for all three)
    truth, data = sk8
    num = data.shape[0]
    params = inverse.pseudolikelihood(data)
    assert _rmse(params, truth) < _rmse_bound(truth, num, "pseudolikelihood")
    asym = inverse.pseudolikelihood(data, symmetric=False)
    assert _rmse(asym, truth) < _rmse_bound(truth, num, "pseudolikelihood_asym")
    # both fits stop at a gradient max-norm <= tol = 1e-6; the objective's curvature at the
    # optimum is >= 0.43 (smallest eigenvalue of A in _rmse_bound), so each is within
    # sqrt(36) * 1e-6 / 0.43 = 1.4e-5 of the optimum: 3e-5 apart at most
    batched = inverse.pseudolikelihood(data, batch_size=30_000)
    np.testing.assert_allclose(batched.J, params.J, atol=3e-5)
    assert _rmse(inverse.mpf(data), truth) < _rmse_bound(truth, num, "mpf")


def test_exact_ml_reaches_moment_residual_1e_6(sk8):
    truth, data = sk8
    params = inverse.exact_ml(data, tol=1e-6)
    assert float(ising.moment_residual(params, data)) < 1e-6
    assert _rmse(params, truth) < _rmse_bound(truth, data.shape[0], "exact_ml")  # Fisher: A = B


def _float64_moment_residual(params, data):
    """The moment residual of float32 ``params`` measured in float64 (tests/reference.py)."""
    x = np.asarray(data, np.float64)
    mean, corr = reference.ising_moments(np.asarray(params.h, np.float64), np.asarray(params.J, np.float64))
    upper = np.triu_indices(x.shape[1], 1)
    return max(np.max(np.abs(mean - x.mean(0))), np.max(np.abs(corr - x.T @ x / x.shape[0])[upper]))


def test_exact_ml_float32_converges_below_nll_resolution():
    # near the optimum a Newton step lowers the nll by about g^T F^-1 g / 2, below the float32
    # rounding of the nll (~1e-6) already at residuals of 1e-4: comparing two rounded nll
    # values rejected good full steps at random and exact_ml stalled (at 1.5e-4 on the first
    # data set, at 2e-4 from the first perturbed start) until max_iter
    key = jax.random.key(0)
    truth = ising.sherrington_kirkpatrick(jax.random.fold_in(key, 1001), 10, beta=0.7, field_std=0.2)
    data = ising.sample_exact(jax.random.fold_in(key, 7001), truth, 1000)
    starts = [(data, None)]
    for k in range(4):  # perturbed optima: residual ~1e-4, nll within a few float32 ulps of its minimum
        truth = ising.sherrington_kirkpatrick(jax.random.key(k), 10, beta=0.7, field_std=0.2)
        data = ising.sample_exact(jax.random.key(1000 + k), truth, 1000)
        theta = ising.to_flat(inverse.exact_ml(data, tol=1e-6))
        theta = theta + 3e-4 / np.sqrt(theta.size) * jax.random.normal(jax.random.key(2000 + k), theta.shape)
        starts.append((data, ising.from_flat(theta, 10)))
    for data, init in starts:
        assert data.dtype == jnp.float32
        with warnings.catch_warnings():
            warnings.simplefilter("error", ConvergenceWarning)
            params = inverse.exact_ml(data, tol=1e-6, max_iter=20, init=init)
        assert _float64_moment_residual(params, data) < 1e-6


def _independent_pl(theta, data, symmetric, l2):
    """Negative log pseudo-likelihood from its definition, spin by spin:
    -log p(x_k | x_-k) = log(1 + exp(-2 x_k f_k)), with f_k from row k of the couplings."""
    n = data.shape[1]
    if symmetric:
        params = ising.from_flat(theta, n)
        h, W = params.h, params.J
    else:
        h, W = theta[:n], theta[n:].reshape(n, n) * (1.0 - jnp.eye(n))
    total = 0.0
    for k in range(n):
        f = h[k] + sum(W[k, l] * data[:, l] for l in range(n) if l != k)
        total = total + jnp.mean(jnp.logaddexp(0.0, -2.0 * data[:, k] * f))
    return total + 0.5 * l2 * jnp.sum(W * W)


def _independent_mpf(theta, data, l2):
    """MPF from its definition: sum over single-spin flips of exp((log w(x') - log w(x)) / 2)."""
    params = ising.from_flat(theta, data.shape[1])
    base = ising.log_weight(params, data)
    total = 0.0
    for k in range(data.shape[1]):
        flipped = data.at[:, k].multiply(-1.0)
        total = total + jnp.mean(jnp.exp(0.5 * (ising.log_weight(params, flipped) - base)))
    return total + 0.5 * l2 * jnp.sum(params.J**2)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.slow  # a few seconds: full suites run it (pytest -m slow)
def test_objective_gradients_match_finite_differences(x64, symmetric):
    rng = np.random.default_rng(0)
    data = jnp.asarray(reference.all_states(5)[rng.integers(0, 32, 300)])
    size = 5 + 10 if symmetric else 5 + 25
    theta = jnp.asarray(rng.normal(size=size) * 0.3)
    pairs = [(lambda t: inverse.pseudolikelihood_objective(t, data, symmetric=symmetric, l2=0.1),
              lambda t: _independent_pl(t, data, symmetric, 0.1))]
    if symmetric:  # MPF has no per-spin (asymmetric) form
        pairs.append((lambda t: inverse.mpf_objective(t, data, l2=0.1), lambda t: _independent_mpf(t, data, 0.1)))
    for fn, independent in pairs:
        grad = np.asarray(jax.grad(fn)(theta))
        assert np.abs(grad).max() > 1e-2  # a real gradient, not zero against zero
        # autodiff of an objective written independently from its definition
        np.testing.assert_allclose(float(fn(theta)), float(independent(theta)), rtol=1e-12)
        np.testing.assert_allclose(grad, np.asarray(jax.grad(independent)(theta)), rtol=1e-10, atol=1e-12)
        eps = 1e-6
        fd = np.array([(float(fn(theta.at[i].add(eps))) - float(fn(theta.at[i].add(-eps)))) / (2 * eps)
                       for i in range(size)])
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


def test_pseudolikelihood_matches_brute_force_definition(x64):
    rng = np.random.default_rng(1)
    n = 4
    data = reference.all_states(n)[rng.integers(0, 16, 50)]
    theta = rng.normal(size=n + 6) * 0.5
    params = ising.from_flat(jnp.asarray(theta), n)
    J, h = np.asarray(params.J), np.asarray(params.h)
    want = 0.0
    for x in data:
        for k in range(n):
            f = h[k] + J[k] @ x
            want -= x[k] * f - np.log(2 * np.cosh(f))
    np.testing.assert_allclose(float(inverse.pseudolikelihood_objective(jnp.asarray(theta), jnp.asarray(data))),
                               want / len(data), rtol=1e-12)


@pytest.mark.slow  # a few seconds: full suites run it (pytest -m slow)
def test_degenerate_data():
    rng = np.random.default_rng(2)
    data = np.where(rng.random((500, 5)) < 0.5, 1.0, -1.0)
    constant = data.copy()
    constant[:, 2] = 1.0
    for fn in (inverse.mean_field, inverse.tap, inverse.pseudolikelihood, inverse.mpf, inverse.exact_ml):
        with pytest.raises(ValueError, match="spin 2 never flips"):
            fn(constant)
    duplicated = data.copy()
    duplicated[:, 4] = -duplicated[:, 1]
    for fn in (inverse.pseudolikelihood, inverse.mpf, inverse.exact_ml):
        with pytest.raises(ValueError, match="spins 1 and 4 are always opposite.*l2 > 0"):
            fn(duplicated)
    # with l2 > 0 they fit, finite
    for fn in (inverse.pseudolikelihood, inverse.mpf):
        assert np.all(np.isfinite(np.asarray(fn(duplicated, l2=0.01).J)))
    assert np.all(np.isfinite(np.asarray(inverse.exact_ml(duplicated, l2=0.01, tol=1e-5).J)))
    # mean field and TAP regularise the singular correlation matrix, with a warning
    for fn in (inverse.mean_field, inverse.tap):
        with pytest.warns(UserWarning, match="singular"):
            params = fn(duplicated)
        assert np.all(np.isfinite(np.asarray(params.J)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inverse.mean_field(duplicated, ridge=0.01)


def test_vmap_over_datasets():
    keys = jax.random.split(jax.random.key(5), 3)
    truths = [ising.sherrington_kirkpatrick(k, 6, beta=b) for k, b in zip(keys, (0.3, 0.7, 1.2))]
    datas = jnp.stack([ising.sample_exact(jax.random.fold_in(k, 1), t, 2000) for k, t in zip(keys, truths)])
    mf = jax.vmap(lambda d: inverse.mean_field(d, ridge=0.0))(datas)
    assert mf.J.shape == (3, 6, 6)
    np.testing.assert_allclose(mf.J[1], inverse.mean_field(datas[1], ridge=0.0).J, atol=1e-5)


# ----------------------------------------------------------------------------- issue #12


@pytest.fixture(scope="module")
def small():
    truth = ising.sherrington_kirkpatrick(jax.random.key(11), 5, beta=0.5, field_std=0.2)
    return [np.asarray(ising.sample_exact(jax.random.key(12 + i), truth, 600)) for i in range(2)]


_THETA = np.zeros(5 + 10, np.float32)
_FITS = {
    "pseudolikelihood": inverse.pseudolikelihood,
    "pseudolikelihood_asym": lambda d, **kw: inverse.pseudolikelihood(d, symmetric=False, **kw),
    "mpf": inverse.mpf,
    "exact_ml": inverse.exact_ml,
}
_ALL = {
    **_FITS,
    "mean_field": inverse.mean_field,
    "tap": inverse.tap,
    "pseudolikelihood_objective": lambda d, **kw: inverse.pseudolikelihood_objective(_THETA, d, **kw),
    "mpf_objective": lambda d, **kw: inverse.mpf_objective(_THETA, d, **kw),
}


@pytest.mark.parametrize("name", _ALL)
def test_data_must_be_finite_pm1_spins_in_a_matrix(name, small):
    fn, data = _ALL[name], small[0]
    for bad, match in [((data + 1) / 2, r"data must hold spins in \{-1, \+1\}.*2 \* x - 1"),
                       (np.where(np.arange(data.size).reshape(data.shape) == 7, 0.5, data), "data must hold spins"),
                       (np.where(np.arange(data.size).reshape(data.shape) == 7, np.nan, data), "data contains 1 NaN"),
                       (data[0], r"data must be spins of shape \(batch, n\)"),
                       (data[None], r"data must be spins of shape \(batch, n\)"),
                       (data[:0], "data must not be empty"),
                       (data.astype(str), "data must be a numeric array")]:
        with pytest.raises(ValueError, match=match):
            fn(bad)


@pytest.mark.parametrize("name", ["mean_field", "tap", "pseudolikelihood", "mpf"])
def test_integer_and_list_data_give_the_float_answer(name, small):
    fn, data = _ALL[name], small[0]
    want = fn(data)
    for other in (data.astype(np.int8), data.tolist()):
        got = fn(other)
        np.testing.assert_array_equal(got.J, want.J)
        np.testing.assert_array_equal(got.h, want.h)


@pytest.mark.parametrize("bad", [-1.0, -1e-6, np.nan, np.inf])
def test_regularisers_must_be_finite_and_non_negative(bad, small):
    data = small[0]
    for name in ("pseudolikelihood", "pseudolikelihood_asym", "mpf", "exact_ml", "pseudolikelihood_objective",
                 "mpf_objective"):
        with pytest.raises(ValueError, match="l2 must be"):
            _ALL[name](data, l2=bad)
    for fn in (inverse.mean_field, inverse.tap):
        with pytest.raises(ValueError, match="ridge must be"):
            fn(data, ridge=bad)


def test_pseudolikelihood_with_negative_l2_is_refused_not_a_huge_answer(small):
    # the example: l2 = -1 made the objective unbounded and returned J ~ -2.6e5
    with pytest.raises(ValueError, match=r"l2 must be >= 0"):
        inverse.pseudolikelihood(small[0], l2=-1)


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, np.nan, "10"])
def test_counts_are_positive_integers(bad, small):
    data = small[0]
    for name in ("pseudolikelihood", "pseudolikelihood_asym", "mpf", "exact_ml"):
        with pytest.raises(ValueError, match="max_iter must be (an|a Python) integer >= 1"):
            _ALL[name](data, max_iter=bad)
    for name in ("pseudolikelihood", "mpf", "pseudolikelihood_objective", "mpf_objective"):
        with pytest.raises(ValueError, match="batch_size must be (an|a Python) integer >= 1"):
            _ALL[name](data, batch_size=bad)
    with pytest.raises(ValueError, match="cg_iters must be (an|a Python) integer >= 1"):
        inverse.exact_ml(data, cg_iters=bad)


@pytest.mark.parametrize("bad", [-1e-3, np.nan, np.inf])
def test_tol_must_be_finite_and_non_negative(bad, small):
    for name in _FITS:
        with pytest.raises(ValueError, match="tol must be"):
            _FITS[name](small[0], tol=bad)


def test_other_arguments_are_checked(small):
    data = small[0]
    with pytest.raises(ValueError, match=r"theta must have shape \(15,\)"):
        inverse.pseudolikelihood_objective(np.zeros(14), data)
    with pytest.raises(ValueError, match=r"theta must have shape \(30,\)"):
        inverse.pseudolikelihood_objective(np.zeros(15), data, symmetric=False)
    with pytest.raises(ValueError, match="theta contains 1 NaN"):
        inverse.mpf_objective(np.where(np.arange(15) == 2, np.nan, 0.0), data)
    with pytest.raises(ValueError, match="symmetric must be True or False"):
        inverse.pseudolikelihood(data, symmetric="no")
    with pytest.raises(ValueError, match="init must be an IsingParams"):
        inverse.exact_ml(data, init=(np.zeros(5), np.zeros((5, 5))))
    with pytest.raises(ValueError, match=r"init.h must have shape \(5,\)"):
        inverse.exact_ml(data, init=ising.IsingParams(jnp.zeros(4), jnp.zeros((4, 4))))
    with pytest.raises(ValueError, match="init.J must be symmetric"):
        inverse.exact_ml(data, init=ising.IsingParams(jnp.zeros(5), jnp.zeros((5, 5)).at[0, 1].set(1.0)))
    # an explicit ridge that leaves a singular C singular is refused, not inverted into inf/NaN
    duplicated = data.copy()
    duplicated[:, 4] = duplicated[:, 1]
    with pytest.raises(ValueError, match="ridge=0 does not regularise it"):
        inverse.mean_field(duplicated, ridge=0.0)


@pytest.mark.parametrize("name", ["pseudolikelihood", "pseudolikelihood_asym", "mpf"])
def test_lbfgs_fits_warn_at_max_iter_with_the_gradient_norm(name, small):
    fn = _FITS[name]
    method = name.replace("_asym", "")
    with pytest.warns(ConvergenceWarning, match=rf"{method} stopped after max_iter=2 L-BFGS steps.*gradient max-norm "
                                                r"is \d\.\d\de[-+]\d\d"):
        fn(small[0], max_iter=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # converged: no warning
        fn(small[0])


def test_exact_ml_takes_a_time_budget(small):
    """The enumeration's refusal says "pass a larger max_seconds": exact_ml takes one."""
    with pytest.raises(ValueError, match=r"2\^40 .*max_seconds=600"):
        inverse.exact_ml(np.where(np.random.default_rng(0).random((30, 40)) < 0.5, -1.0, 1.0))
    with pytest.raises(ValueError, match="max_seconds=1e-09"):
        inverse.exact_ml(small[0], max_seconds=1e-9)
    with pytest.raises(ValueError, match="max_seconds must be finite"):
        inverse.exact_ml(small[0], max_seconds=float("nan"))
    np.testing.assert_array_equal(inverse.exact_ml(small[0], max_seconds=60).J, inverse.exact_ml(small[0]).J)


def test_exact_ml_warns_at_max_iter(small):
    with pytest.warns(ConvergenceWarning, match=r"exact_ml stopped after max_iter=1 Newton steps.*moment residual"):
        inverse.exact_ml(small[0], max_iter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inverse.exact_ml(small[0], tol=1e-5)


@pytest.mark.parametrize("name", ["pseudolikelihood", "pseudolikelihood_asym", "mpf", "exact_ml", "mean_field",
                                  "tap"])
def test_eager_fits_compile_once(name, small):
    fn = _ALL[name]
    first = fn(small[0])
    with _count_compiles() as compiles:
        second = fn(small[1])  # new data, same shape
    assert compiles[0] == 0, f"{name} compiled {compiles[0]} program(s) on its second eager call"
    assert not np.array_equal(np.asarray(first.J), np.asarray(second.J))  # really new values
    with _count_compiles() as compiles:  # the counter counts: a new shape compiles
        fn(small[1][:-1])
    assert compiles[0] >= 1


def _four_spin_samples(field_std):
    rng = np.random.default_rng(0)
    J = np.triu(rng.normal(size=(4, 4)) * 0.4, 1)
    J, h = J + J.T, rng.normal(size=4) * field_std
    states = reference.all_states(4)
    return states[rng.choice(16, size=2000, p=reference.ising_probs(h, J))]


def test_tap_in_float32_does_not_cancel_at_small_magnetisations():
    """The root (-1 + sqrt(1 - 8 c u)) / (4u), u = m_i m_j, lost every digit in float32 for
    u ~ 1e-7 (a coupling of 0.066 came out 0.239); the form -2c / (1 + sqrt(1 - 8 c u))
    does not cancel."""
    d = _four_spin_samples(0.0)
    data = np.concatenate([d, -d, d[:3]])  # magnetisations ~ 1e-3
    m = data.mean(0)
    C = data.T @ data / len(data) - np.outer(m, m)
    inv = np.linalg.inv(C)
    want = -2.0 * inv / (1.0 + np.sqrt(1.0 - 8.0 * inv * np.outer(m, m)))
    np.fill_diagonal(want, 0.0)
    got = np.asarray(inverse.tap(data.astype(np.float32)).J, np.float64)
    np.testing.assert_allclose(got, want, atol=1e-5)  # float32 rounding of C and its inverse


def test_exact_ml_warns_only_if_its_final_residual_misses_tol(x64):
    """The residual is measured before each step: a fit whose last allowed step met tol used to
    warn, quoting the residual from before that step."""
    data = _four_spin_samples(0.2)
    for k in range(1, 8):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            params = inverse.exact_ml(data, max_iter=k, tol=1e-8)
        residual = float(ising.moment_residual(params, data))
        warned = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
        assert bool(warned) == (residual >= 1e-8), (k, residual, warned)
        if warned:
            assert f"{residual:.2e}" in str(warned[0].message), (residual, str(warned[0].message))
