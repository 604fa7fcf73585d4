r"""Chapter 6 on a lattice: a 2-D Edwards-Anderson spin glass, exact far beyond enumeration.

A 16 x 16 open lattice (6 x 6 in ``--smoke``) with Gaussian couplings and small random fields
has :math:`2^{256}` states, but summing its spins out row by row (:mod:`jaxebm.elimination`,
cost about :math:`n\,2^{\mathrm{width}}`) gives every quantity exactly:

* thermodynamics over inverse temperature: :math:`\log Z(\beta)`, the free energy
  :math:`F = -\log Z/\beta`, the energy :math:`U = -\partial_\beta \log Z` and the specific
  heat :math:`C = \beta^2 \partial_\beta^2 \log Z = \beta^2 \mathrm{Var}(E)` by differentiating
  the exact log Z twice (autodiff through the elimination);
* at low temperature, one heat-bath chain against replica exchange: the error of their
  edge-correlation estimates against the exact ones, as the sweeps grow, at equal work;
* learning the lattice from exact samples: pseudo-likelihood on the graph against exact
  maximum likelihood, each checked against the truth with a Wald test whose covariance is
  the estimator's own asymptotic one (chi-squared with one degree of freedom per parameter);
* exact samples shown as images;
* the 10 x 10 torus (6 x 6 in smoke) at zero field against Kaufman's closed form (B. Kaufman,
  Phys. Rev. 76, 1232 (1949)), which is written out here (and checked against enumeration on
  a small torus) so that it does not depend on the library.

Every claim is recorded as a check in ``results.json``.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import common
from jaxebm import graphs, inverse, ising, mcmc

NAME = "ch6_lattice"
TITLE = "Chapter 6: an Edwards-Anderson spin glass on a lattice, exactly"


# --------------------------------------------------------------------------------------
# Kaufman's closed form
# --------------------------------------------------------------------------------------


def _log_2cosh(x):
    x = np.abs(x)
    return x + np.log1p(np.exp(-2.0 * x))


def _log_abs_2sinh(x):
    a = np.abs(x)
    with np.errstate(divide="ignore"):
        return a + np.log(-np.expm1(-2.0 * a))


def kaufman_log_partition(K: float, rows: int, cols: int) -> float:
    r"""Exact log Z of the zero-field ferromagnet with coupling K on the ``rows x cols`` torus
    (Kaufman 1949), in float64:

    .. math::
       Z = \tfrac12 (2\sinh 2K)^{mn/2} \Big[\prod_{r=0}^{n-1} 2\cosh\tfrac{m\gamma_{2r+1}}{2}
           + \prod_{r=0}^{n-1} 2\sinh\tfrac{m\gamma_{2r+1}}{2}
           + \prod_{r=0}^{n-1} 2\cosh\tfrac{m\gamma_{2r}}{2}
           + \prod_{r=0}^{n-1} 2\sinh\tfrac{m\gamma_{2r}}{2}\Big],

    with m = rows, n = cols, :math:`\cosh\gamma_k = \cosh 2K \coth 2K - \cos(\pi k/n)`
    (:math:`\gamma_k > 0`) for :math:`k \ge 1` and :math:`\gamma_0 = 2K + \log\tanh K`, which
    is negative above the critical temperature (then the last product is negative). The four
    products are summed in log space with their signs.
    """
    m, n = rows, cols
    k = np.arange(2 * n)
    gamma = np.arccosh(np.cosh(2 * K) / np.tanh(2 * K) - np.cos(np.pi * k / n))
    gamma[0] = 2 * K + np.log(np.tanh(K))
    odd, even = gamma[1::2], gamma[0::2]
    logs = np.array([_log_2cosh(m * odd / 2).sum(), _log_abs_2sinh(m * odd / 2).sum(),
                     _log_2cosh(m * even / 2).sum(), _log_abs_2sinh(m * even / 2).sum()])
    signs = np.array([1.0, np.prod(np.sign(odd)), 1.0, np.prod(np.sign(even))])
    top = logs.max()
    return float(np.log(0.5) + 0.5 * m * n * np.log(2 * np.sinh(2 * K)) + top
                 + np.log(np.sum(signs * np.exp(logs - top))))


def _uniform(graph, coupling, dtype=jnp.float32):
    return ising.GraphIsingParams(jnp.zeros(graph.n, dtype), jnp.full((graph.num_edges,), coupling, dtype), graph)


def kaufman_checks(smoke: bool) -> tuple[dict, list]:
    """Kaufman's formula against enumeration on a small torus (is the formula right?), then
    the elimination's log Z of the larger torus against it in float32 and float64."""
    small = (3, 4) if smoke else (4, 5)
    size = 6 if smoke else 10
    betas = [0.3, 0.5 * math.log(1 + math.sqrt(2)), 0.6]  # below, at and above the critical point
    out, checks = {"small_torus": list(small), "torus": [size, size], "betas": betas}, []

    g_small = graphs.square_lattice(*small, periodic=True)
    with jax.enable_x64(True):
        enum = [float(ising.log_partition(ising.to_dense(_uniform(g_small, b, jnp.float64)))) for b in betas]
    formula = [kaufman_log_partition(b, *small) for b in betas]
    err_small = max(abs(a - b) / abs(b) for a, b in zip(enum, formula))
    out["small_rel_error_formula_vs_enumeration"] = err_small
    checks.append(common.check(
        f"Kaufman's formula (written here) equals enumeration of all 2^{small[0] * small[1]} states of the "
        f"{small[0]}x{small[1]} torus to 1e-12 relative (float64)", err_small, err_small < 1e-12))

    torus = graphs.square_lattice(size, size, periodic=True)
    exact = [kaufman_log_partition(b, size, size) for b in betas]
    f32 = [float(ising.log_partition(_uniform(torus, b))) for b in betas]
    with jax.enable_x64(True):
        f64 = [float(ising.log_partition(_uniform(torus, b, jnp.float64))) for b in betas]
    err32 = max(abs(a - b) / abs(b) for a, b in zip(f32, exact))
    err64 = max(abs(a - b) / abs(b) for a, b in zip(f64, exact))
    out.update(width=int(torus.width), kaufman=exact, elimination_float32=f32, elimination_float64=f64,
               rel_error_float32=err32, rel_error_float64=err64)
    checks.append(common.check(
        f"elimination log Z of the {size}x{size} torus (width {torus.width}) equals Kaufman's closed form "
        "to 1e-6 relative in float32", err32, err32 < 1e-6))
    checks.append(common.check(
        f"elimination log Z of the {size}x{size} torus equals Kaufman to 1e-12 relative in float64", err64,
        err64 < 1e-12))
    return out, checks


# --------------------------------------------------------------------------------------
# Thermodynamics by differentiating the exact log Z
# --------------------------------------------------------------------------------------


def scaled(params, beta):
    """The model at inverse temperature beta: :math:`p_\\beta \\propto e^{\\beta \\log w}`."""
    return ising.GraphIsingParams(beta * params.h, beta * params.J, params.graph)


def thermodynamics(params, betas) -> dict:
    r"""Per spin: :math:`f = -\log Z/(\beta n)`, :math:`u = -\partial_\beta\log Z/n`,
    :math:`c = \beta^2\partial^2_\beta\log Z/n`, :math:`s = \beta(u - f)`, each exact."""
    n = params.graph.n

    def log_z(beta):
        return ising.log_partition(scaled(params, beta))

    @jax.jit
    def derivatives(beta):
        # forward-over-reverse: (log Z, d log Z) and its derivative (., d^2 log Z) in one pass
        (value, d1), (_, d2) = jax.jvp(jax.value_and_grad(log_z), (beta,), (jnp.ones_like(beta),))
        return value, d1, d2

    rows = [tuple(float(v) for v in derivatives(jnp.asarray(b, params.h.dtype))) for b in betas]
    lz, g1, g2 = (np.array(c) for c in zip(*rows))
    betas = np.asarray(betas, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        free = np.where(betas > 0, -lz / (betas * n), np.nan)
    return {"beta": betas, "log_z": lz, "free_energy": free, "energy": -g1 / n, "specific_heat": betas**2 * g2 / n,
            "entropy": (lz - betas * g1) / n}


def energy_from_moments(params) -> float:
    """Exact mean energy :math:`-(\\sum_e J_e\\langle x_ix_j\\rangle + h\\cdot\\langle x\\rangle)`
    at beta = 1, from :func:`jaxebm.ising.moments`."""
    mean, edge_corr = ising.moments(params)
    return -float(jnp.dot(params.J, edge_corr) + jnp.dot(params.h, mean))


def energies(params, x):
    """Energy :math:`E(x) = -\\sum_e J_e x_i x_j - h\\cdot x` of a batch of configurations."""
    i, j = np.asarray(params.graph.edges).T
    return -(x[:, i] * x[:, j]) @ params.J - x @ params.h


# --------------------------------------------------------------------------------------
# Heat bath against replica exchange
# --------------------------------------------------------------------------------------


def _edge_products(x, edges):
    return x[..., edges[:, 0]] * x[..., edges[:, 1]]


def sampler_errors(key, params, exact_edge_corr, *, replicas, chunk, num_chunks, chains):
    r"""RMS error over edges (and independent runs) of the running edge-correlation estimate.

    Replica exchange runs ``replicas`` heat-bath chains on a geometric ladder ending at the
    target and records the target replica; one heat-bath chain at the target runs
    ``replicas`` times as many sweeps, so that both do the same number of spin updates. The
    runs go in ``num_chunks + 1`` compiled chunks of ``chunk`` replica-exchange steps (the
    first discarded as burn-in); the error is recorded after 1, 2, 4, ... chunks.
    """
    edges = np.asarray(params.graph.edges)
    n = params.graph.n
    ladder = mcmc.geometric_ladder(0.2, 1.0, replicas)
    single = mcmc.heat_bath(params)
    pt = mcmc.replica_exchange(lambda b: mcmc.heat_bath(params, b), ladder)
    k_x, k_single, k_pt = jax.random.split(key, 3)
    x0 = jnp.where(jax.random.bernoulli(k_x, 0.5, (chains, replicas, n)), 1.0, -1.0).astype(params.h.dtype)

    def advance(algorithm, target_x, num_steps):
        def one(key, state, acc, record):
            def body(carry, k):
                s, a = carry
                s, _ = algorithm.step(k, s)
                return (s, a + record * _edge_products(target_x(s), edges)), None

            (state, acc), _ = jax.lax.scan(body, (state, acc), jax.random.split(key, num_steps))
            return state, acc

        return jax.jit(jax.vmap(one, (0, 0, 0, None)))

    record_after = {2**k for k in range(num_chunks.bit_length()) if 2**k <= num_chunks}
    results = {}
    for label, algorithm, init, target_x, steps, work, key in (
            ("single heat-bath chain", single, jax.vmap(single.init)(x0[:, -1]), lambda s: s.x, replicas * chunk, 1,
             k_single),
            ("replica exchange", pt, jax.vmap(pt.init)(x0), lambda s: s.states.x[-1], chunk, replicas, k_pt)):
        step_fn = advance(algorithm, target_x, steps)
        state, acc = init, jnp.zeros((chains, len(edges)), params.h.dtype)
        sweeps, errors, seconds = [], [], 0.0
        for c in range(num_chunks + 1):
            t0 = time.perf_counter()
            state, acc = jax.block_until_ready(step_fn(jax.random.split(jax.random.fold_in(key, c), chains), state,
                                                       acc, jnp.asarray(float(c > 0), acc.dtype)))
            seconds += time.perf_counter() - t0
            if c in record_after:
                estimate = np.asarray(acc) / (c * steps)
                sweeps.append(c * steps * work)
                errors.append(float(np.sqrt(np.mean((estimate - exact_edge_corr) ** 2))))
                print(f"  {label}: {c}/{num_chunks} chunks, edge-corr RMS error {errors[-1]:.4f}", flush=True)
        results[label] = {"sweeps": sweeps, "rms_error": errors, "seconds": seconds}
    results["ladder"] = np.asarray(ladder)
    return results


# --------------------------------------------------------------------------------------
# Learning: pseudo-likelihood on the graph against exact maximum likelihood
# --------------------------------------------------------------------------------------


def _flat(params):
    return jnp.concatenate([params.h, params.J])


def _unflat(theta, graph):
    return ising.GraphIsingParams(theta[:graph.n], theta[graph.n:], graph)


def wald_ml(theta_hat, truth, num_samples) -> float:
    r"""Wald statistic of the maximum-likelihood estimate: :math:`T = M\,\delta^\top F\delta`
    with :math:`F` the exact Fisher information at the truth (the Hessian of log Z, applied to
    :math:`\delta` as one Hessian-vector product). Asymptotically :math:`\chi^2_p`."""
    graph = truth.graph
    delta = theta_hat - _flat(truth)

    def log_z(theta):
        return ising.log_partition(_unflat(theta, graph))

    f_delta = jax.jvp(jax.grad(log_z), (_flat(truth),), (delta,))[1]
    return float(num_samples * jnp.dot(delta, f_delta))


def wald_pl(theta_hat, truth, data) -> float:
    r"""Wald statistic of the pseudo-likelihood estimate with its sandwich covariance
    :math:`H^{-1}VH^{-1}/M` (H the Hessian of the PL objective, V the covariance of the
    per-sample PL gradients, both at the estimate): :math:`T = M\,u^\top \hat V^{-1}u`,
    :math:`u = H\delta` (one Hessian-vector product). Asymptotically :math:`\chi^2_p`. The
    inverse of the sample covariance :math:`\hat V` of M gradients in p dimensions is biased up
    by :math:`(M-1)/(M-p-2)` (the Wishart mean of the inverse, as in Hotelling's
    :math:`T^2`), so T is scaled by the reciprocal."""
    graph = truth.graph
    M = data.shape[0]
    delta = theta_hat - _flat(truth)

    def objective(theta, x):
        return inverse.pseudolikelihood_objective(theta, x, graph=graph)

    u = jax.jvp(jax.grad(lambda t: objective(t, data)), (theta_hat,), (delta,))[1]
    per_sample = jax.jit(jax.vmap(jax.grad(lambda t, x: objective(t, x[None])), (None, 0)))
    G = np.concatenate([np.asarray(per_sample(theta_hat, data[s:s + 4096]), np.float64)
                        for s in range(0, M, 4096)])
    V = np.cov(G, rowvar=False)
    u = np.asarray(u, np.float64)
    p = u.shape[0]
    return float(M * u @ np.linalg.solve(V, u) * (M - p - 2) / (M - 1))


def moment_residual(params, data) -> float:
    r"""Largest violation of the moment conditions on the graph (Eq. (2.31)-(2.32)):
    :math:`\max(|\langle x\rangle - \bar x|, |\langle x_ix_j\rangle - \overline{x_ix_j}|)` over
    spins and edges; zero at the maximum-likelihood estimate."""
    mean, edge_corr = ising.moments(params)
    x = np.asarray(data, np.float64)
    data_edge = _edge_products(x, np.asarray(params.graph.edges)).mean(0)
    return float(max(np.abs(np.asarray(mean) - x.mean(0)).max(), np.abs(np.asarray(edge_corr) - data_edge).max()))


def learning(key, graph, *, beta, field, num_samples, ml_steps) -> tuple[dict, list]:
    k_truth, k_data = jax.random.split(key)
    truth = ising.edwards_anderson(k_truth, graph, beta=beta, field=field)
    t0 = time.perf_counter()
    data = ising.sample_exact(k_data, truth, num_samples)
    t_sample = time.perf_counter() - t0

    t0 = time.perf_counter()
    pl = inverse.pseudolikelihood(data, graph=graph)
    t_pl = time.perf_counter() - t0
    # exact maximum likelihood: L-BFGS on the exact nll (gradients are exact moments), from PL
    t0 = time.perf_counter()
    ml, _ = jax.jit(lambda p, x: ising.fit(optax.lbfgs(), p, x, ml_steps))(pl, data)  # data not a constant
    ml = jax.block_until_ready(ml)
    t_ml = time.perf_counter() - t0
    residual = moment_residual(ml, data)

    p = graph.n + graph.num_edges
    threshold = common.chi_square_bound(p)
    T_pl = wald_pl(_flat(pl), truth, data)
    T_ml = wald_ml(_flat(ml), truth, num_samples)

    def rmse(a, b):
        return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))

    out = {"beta": beta, "field": field, "num_samples": num_samples, "parameters": p,
           "seconds": {"sample_exact": t_sample, "pseudolikelihood": t_pl, "exact_ml": t_ml},
           "ml_moment_residual": residual, "ml_steps": ml_steps,
           "J_rmse": {"pseudolikelihood": rmse(pl.J, truth.J), "exact_ml": rmse(ml.J, truth.J),
                      "pl_vs_ml": rmse(pl.J, ml.J)},
           "h_rmse": {"pseudolikelihood": rmse(pl.h, truth.h), "exact_ml": rmse(ml.h, truth.h)},
           "wald": {"pseudolikelihood": T_pl, "exact_ml": T_ml, "chi2_bound": threshold},
           "truth_J": np.asarray(truth.J), "pl_J": np.asarray(pl.J), "ml_J": np.asarray(ml.J)}
    # the statistical scale of the ML coupling error: 1/sqrt(M) per unit Fisher information
    sd = 1.0 / math.sqrt(num_samples)
    checks = [
        common.check(f"exact ML converged: moment residual below 0.01/sqrt(M) = {0.01 * sd:.1e}", residual,
                     residual < 0.01 * sd),
        common.check(f"pseudo-likelihood on the graph recovers the truth: Wald statistic (sandwich covariance) "
                     f"below the chi^2_{p} mean + 5 sd ({threshold:.1f})", T_pl, T_pl < threshold),
        common.check(f"exact maximum likelihood recovers the truth: Wald statistic M d^T F d below the chi^2_{p} "
                     f"mean + 5 sd ({threshold:.1f})", T_ml, T_ml < threshold),
    ]
    return out, checks


# --------------------------------------------------------------------------------------
# The experiment
# --------------------------------------------------------------------------------------


def run(out_dir: Path, *, smoke: bool = False, seed: int = 0) -> dict:
    side = 6 if smoke else 16
    field = 0.1
    beta_low = 2.0
    config = {"lattice": [side, side], "periodic": False, "couplings": "gaussian", "field": field,
              "beta_low": beta_low,
              "betas": [0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0] if smoke else np.linspace(0.0, 3.0, 31).round(6).tolist(),
              "replicas": 6 if smoke else 10, "chunk": 25 if smoke else 125, "num_chunks": 16 if smoke else 32,
              "chains": 8, "learning_beta": 0.6, "learning_samples": 5000 if smoke else 20000,
              "ml_steps": 30 if smoke else 50}
    key = jax.random.key(seed)
    k_model, k_samples, k_mcmc, k_learn = jax.random.split(key, 4)
    graph = graphs.square_lattice(side, side, periodic=False)
    params = ising.edwards_anderson(k_model, graph, beta=1.0, couplings="gaussian", field=field)
    metrics: dict = {"n": graph.n, "edges": graph.num_edges, "width": int(graph.width)}
    checks: list = []
    seconds = metrics["seconds"] = {}
    clock = time.perf_counter()

    def lap(section):
        nonlocal clock
        now = time.perf_counter()
        seconds[section] = now - clock
        clock = now

    # 1. thermodynamics
    print(f"[{NAME}] thermodynamics of the {side}x{side} EA spin glass (width {graph.width})", flush=True)
    betas = np.array(config["betas"])
    t0 = time.perf_counter()
    thermo = thermodynamics(params, betas)
    metrics["thermodynamics"] = thermo
    metrics["seconds_thermodynamics"] = time.perf_counter() - t0  # log Z and two derivatives at every beta
    c = thermo["specific_heat"]
    s = thermo["entropy"]
    log2 = math.log(2.0)
    err_lz0 = abs(thermo["log_z"][0] - graph.n * log2) / (graph.n * log2)
    checks.append(common.check("log Z(beta = 0) = n log 2 (relative error below 1e-6)", err_lz0, err_lz0 < 1e-6))
    checks.append(common.check("specific heat beta^2 d^2 log Z/d beta^2 is positive at every beta",
                               float(c[1:].min()), bool(np.all(c[1:] > 0))))
    ds = np.diff(s)
    checks.append(common.check("entropy per spin lies in [0, log 2] and never increases with beta "
                               "(ds/dbeta = -beta Var(E)/n)", [float(s.min()), float(s.max()), float(ds.max())],
                               bool(s.min() >= -1e-6 and s.max() <= log2 + 1e-6 and ds.max() <= 1e-5)))
    # energy by autodiff against the exact moments, at three temperatures
    probe = [1, len(betas) // 2, len(betas) - 1]  # beta > 0
    rel = []
    for i in probe:
        u_moments = energy_from_moments(scaled(params, float(betas[i]))) / float(betas[i]) / graph.n
        rel.append(abs(u_moments - thermo["energy"][i]) / abs(u_moments))
    checks.append(common.check("energy per spin -d log Z/d beta (autodiff) equals -(J.<x_i x_j> + h.<x>) from "
                               "ising.moments to 1e-5 relative", max(rel), max(rel) < 1e-5))
    # specific heat against the variance of the energy over exact samples (an independent route);
    # one sample size throughout, so that sample_exact compiles once
    num_samples = config["learning_samples"]
    sample_betas = [0.3, 1.0, 3.0]
    samples = {b: ising.sample_exact(jax.random.fold_in(k_samples, i), scaled(params, b), num_samples)
               for i, b in enumerate(sample_betas)}
    b_var, num_var = 1.0, num_samples
    e = np.asarray(energies(params, samples[b_var]), np.float64)
    var_e = e.var(ddof=1)
    se_var = math.sqrt((np.mean((e - e.mean()) ** 4) - var_e**2) / num_var)  # delta method
    c_autodiff = float(c[np.flatnonzero(np.isclose(betas, b_var))[0]]) * graph.n
    z = abs(b_var**2 * var_e - c_autodiff) / (b_var**2 * se_var)
    metrics["specific_heat_vs_samples"] = {"beta": b_var, "autodiff": c_autodiff, "samples": b_var**2 * var_e,
                                           "standard_error": b_var**2 * se_var, "z": z, "num_samples": num_var}
    checks.append(common.check(f"C(beta=1) by autodiff equals beta^2 Var(E) over {num_var} exact samples "
                               "within 4 standard errors", z, z < 4.0))

    # 2. heat bath against replica exchange at low temperature
    lap("thermodynamics and exact samples")
    print(f"[{NAME}] heat bath vs replica exchange at beta = {beta_low}", flush=True)
    cold = scaled(params, beta_low)
    _, exact_edge_corr = ising.moments(cold)
    sampling = sampler_errors(k_mcmc, cold, np.asarray(exact_edge_corr), replicas=config["replicas"],
                              chunk=config["chunk"], num_chunks=config["num_chunks"], chains=config["chains"])
    metrics["sampling"] = sampling
    e_single = sampling["single heat-bath chain"]["rms_error"][-1]
    e_pt = sampling["replica exchange"]["rms_error"][-1]
    checks.append(common.check(
        f"at beta = {beta_low} and equal work ({sampling['replica exchange']['sweeps'][-1]} sweeps), replica "
        "exchange's edge-correlation RMS error is lower than a single heat-bath chain's (measured: RE, single)",
        [e_pt, e_single], e_pt < e_single))

    # 3. learning
    lap("heat bath vs replica exchange")
    print(f"[{NAME}] pseudo-likelihood vs exact maximum likelihood", flush=True)
    learned, learn_checks = learning(k_learn, graph, beta=config["learning_beta"], field=field,
                                     num_samples=config["learning_samples"], ml_steps=config["ml_steps"])
    metrics["learning"] = learned
    checks += learn_checks

    # 4. exact samples as images
    images = np.stack([np.asarray(samples[b][:4]) for b in sample_betas]).reshape(len(sample_betas), 4, side, side)

    # 5. Kaufman
    lap("learning")
    print(f"[{NAME}] torus against Kaufman's formula", flush=True)
    metrics["kaufman"], kaufman = kaufman_checks(smoke)
    checks += kaufman

    lap("Kaufman")
    figures = _figures(Path(out_dir), thermo, sampling, learned, images, sample_betas, side, beta_low)
    lap("figures")

    lr = learned
    torus = metrics["kaufman"]["torus"]
    summary = (
        f"{side}x{side} open Edwards-Anderson spin glass (Gaussian J, fields N(0, {field}^2)): 2^{graph.n} states, "
        f"elimination width {graph.width}. Thermodynamics exact over {len(betas)} temperatures in "
        f"{metrics['seconds_thermodynamics']:.1f} s. At beta = {beta_low}, equal work: edge-correlation RMS error "
        f"{e_single:.4f} (single heat-bath chain) vs {e_pt:.4f} (replica exchange, {config['replicas']} replicas). "
        f"Learning from {lr['num_samples']} exact samples: J RMSE vs truth {lr['J_rmse']['pseudolikelihood']:.4f} "
        f"(pseudo-likelihood, {lr['seconds']['pseudolikelihood']:.1f} s) and {lr['J_rmse']['exact_ml']:.4f} "
        f"(exact ML, {lr['seconds']['exact_ml']:.1f} s). The {torus[0]}x{torus[1]} torus against Kaufman's closed "
        f"form: log Z relative error {metrics['kaufman']['rel_error_float32']:.1e} (float32), "
        f"{metrics['kaufman']['rel_error_float64']:.1e} (float64).")
    return common.write_results(out_dir, NAME, seed=seed, smoke=smoke, config=config, metrics=metrics,
                                figures=figures, summary=summary, title=TITLE, checks=checks)


def _figures(out_dir, thermo, sampling, learned, images, sample_betas, side, beta_low) -> list[str]:
    figures = common.Figures(out_dir)
    plt = figures.plt
    if plt is None:
        return figures.names
    fig, axes = plt.subplots(1, 4, figsize=(18, 3.8))
    b = thermo["beta"]
    for ax, key, label in ((axes[0], "free_energy", "free energy per spin  -log Z / (beta n)"),
                           (axes[1], "energy", "energy per spin  -d log Z / d beta / n"),
                           (axes[2], "specific_heat", "specific heat per spin  beta^2 d^2 log Z / d beta^2 / n"),
                           (axes[3], "entropy", "entropy per spin  (log Z - beta d log Z / d beta) / n")):
        ax.plot(b, thermo[key], "o-", ms=3)
        ax.set_xlabel("inverse temperature beta")
        ax.set_title(label, fontsize=9)
    axes[3].axhline(math.log(2), color="gray", lw=0.6, ls="--")
    fig.suptitle(f"{side}x{side} Edwards-Anderson spin glass: exact thermodynamics by elimination")
    figures.save(fig, "thermodynamics.png")

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for label in ("single heat-bath chain", "replica exchange"):
        r = sampling[label]
        axes[0].loglog(r["sweeps"], r["rms_error"], "o-", label=label)
    axes[0].set_xlabel("sweeps (all replicas counted)")
    axes[0].set_ylabel("RMS error of edge correlations")
    axes[0].set_title(f"beta = {beta_low}: estimates against the exact <x_i x_j>")
    axes[0].legend()
    lim = float(np.abs(learned["truth_J"]).max()) * 1.1
    axes[1].plot([-lim, lim], [-lim, lim], color="gray", lw=0.6)
    axes[1].scatter(learned["truth_J"], learned["pl_J"], s=4, label="pseudo-likelihood on the graph")
    axes[1].scatter(learned["truth_J"], learned["ml_J"], s=4, label="exact maximum likelihood")
    axes[1].set_xlabel("true coupling J_e")
    axes[1].set_ylabel("estimate")
    axes[1].set_title(f"learning from {learned['num_samples']} exact samples")
    axes[1].legend(fontsize=8)
    figures.save(fig, "sampling_and_learning.png")

    rows, cols = images.shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2 * rows))
    for r in range(rows):
        for c in range(cols):
            axes[r, c].imshow(images[r, c], cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(f"beta = {sample_betas[r]}")
    fig.suptitle("exact samples (backward sampling through the elimination)")
    figures.save(fig, "exact_samples.png")
    return figures.names


def main(argv=None):
    return common.run_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(common.exit_status(main()))
