"""Chapter 6: replica-exchange Monte Carlo, validated against exact enumeration.

* An SK model at low temperature (zero fields, so p(x) = p(-x) and the magnetisation is
  bimodal): a single Metropolis chain stays in one mode; replica exchange recovers the exact
  magnetisation histogram and correlations.
* Swap rates per pair for a geometric ladder and after adaptive tuning; round trips.
* Learning beyond enumeration: PCD with replica-exchange chains agrees with exact maximum
  likelihood at n = 20, and learns an n = 64 model (where nothing can be enumerated).

Checks: the single chain spends at most 1% of its sweeps outside its starting mode (exact:
50%); for each ladder, P(q > 0), the histograms of M and q and the correlations of the
beta = 1 replica agree with the exact ones within tolerances that count each round trip as
one independent draw (every arrival from the hot end brings a fresh mode): 4 binomial
standard errors for P(q > 0), 4.5 / sqrt(round trips) for the correlations (Bonferroni over
the pairs), and for the total variation E[TV] <= sqrt(bins / N) / 2 plus a McDiarmid margin
sqrt(ln(1000) / (2 N)); tuning raises the smallest swap rate; PCD agrees with exact ML
better than exact ML agrees with the truth (its departure is below the statistical error);
at n = 64 PCD at least halves the J error.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import common
from jaxebm import curvature, enumeration, ising, mcmc
from jaxebm import data as datasets

NAME = "ch6_replica_exchange"
TITLE = "Chapter 6: replica-exchange Monte Carlo"


def exact_histogram(params, direction):
    """Exact distribution of x . direction over the n + 1 values -n, -n+2, ..., n."""
    n = params.h.shape[0]

    def lw(x):
        return ising.log_weight(params, x)

    def stat(x):
        return jax.nn.one_hot(((x @ direction + n) / 2).astype(int), n + 1)

    return np.asarray(enumeration.expectation_states(lw, stat, n)[1])


def ground_state(params):
    states = enumeration.all_spins(params.h.shape[0])
    return states[jnp.argmax(ising.log_weight(params, states))]


def run(out_dir: Path, *, smoke: bool = False, seed: int = 0) -> dict:
    n = 12 if smoke else 18
    beta_model = 4.0  # cold enough that a single Metropolis chain never changes mode (measured)
    R = 8 if smoke else 12
    steps = 2000 if smoke else 20000
    key = jax.random.key(seed)
    k_model, k_single, k_pt, k_tune, k_learn = jax.random.split(key, 5)
    params = ising.sherrington_kirkpatrick(k_model, n, beta=beta_model)
    ones = jnp.ones(n)
    x_star = ground_state(params)  # the two modes of a spin glass are +-x_star, not +-magnetisation
    exact_hist = exact_histogram(params, ones)
    exact_overlap = exact_histogram(params, x_star)
    _, exact_corr = (np.asarray(a) for a in ising.moments(params))
    iu = np.triu_indices(n, 1)
    x0 = jax.random.rademacher(k_single, (n,), jnp.float32)

    # a single Metropolis chain
    single = mcmc.metropolis(params)
    _, trace = jax.jit(lambda k, s: mcmc.run_chain(k, single, s, steps))(
        k_single, single.init(x0))
    single_x = np.asarray(trace)[steps // 10:]

    # replica exchange: geometric ladder, then an adaptively tuned one
    geometric = mcmc.geometric_ladder(0.1, 1.0, R)
    make = lambda b: mcmc.metropolis(params, b)  # noqa: E731
    positions = jnp.tile(x0, (R, 1))
    tuned, tune_history, positions = mcmc.tune_ladder(k_tune, make, geometric, positions,
                                                      num_rounds=4 if smoke else 10,
                                                      steps_per_round=500 if smoke else 2000)
    results = {}
    for label, ladder in (("geometric", geometric), ("tuned", jnp.asarray(tuned, jnp.float32))):
        algo = mcmc.replica_exchange(make, ladder)
        start = time.perf_counter()
        state, (xs, acc, att) = jax.jit(lambda k, s, algo=algo: mcmc.run_chain(
            k, algo, s, steps, trace_fn=lambda s, i: (s.states.x[-1], i.swap_accepted, i.swap_attempted)))(
            k_pt, algo.init(jnp.tile(x0, (R, 1))))
        xs = np.asarray(xs)[steps // 10:]
        rates = np.asarray(acc).sum(0) / np.maximum(np.asarray(att).sum(0), 1)
        results[label] = {"x": xs, "rates": rates, "round_trips": int(np.asarray(state.round_trips).sum()),
                          "seconds": time.perf_counter() - start, "betas": np.asarray(ladder)}

    def histogram(x, direction=ones):
        return np.bincount(((x @ np.asarray(direction) + n) / 2).astype(int), minlength=n + 1) / len(x)

    def tv(x):
        return float(0.5 * np.abs(histogram(x) - exact_hist).sum())

    def tv_overlap(x):
        return float(0.5 * np.abs(histogram(x, x_star) - exact_overlap).sum())

    def corr_err(x):
        return float(np.abs((x.T @ x / len(x)) - exact_corr)[iu].max())

    metrics = {
        "n": n, "beta_model": beta_model, "replicas": R, "steps": steps,
        "single_chain": {"magnetisation_tv": tv(single_x), "overlap_tv": tv_overlap(single_x),
                         "max_corr_error": corr_err(single_x),
                         "fraction_positive_overlap": float(np.mean(single_x @ np.asarray(x_star) > 0))},
    }
    for label, r in results.items():
        metrics[f"replica_exchange_{label}"] = {
            "magnetisation_tv": tv(r["x"]), "overlap_tv": tv_overlap(r["x"]), "max_corr_error": corr_err(r["x"]),
            "fraction_positive_overlap": float(np.mean(r["x"] @ np.asarray(x_star) > 0)),
            "swap_rates": r["rates"].tolist(), "min_swap_rate": float(r["rates"].min()),
            "round_trips": r["round_trips"], "betas": r["betas"].tolist()}

    # learning beyond enumeration
    metrics["learning"] = _learning(k_learn, smoke)

    figures = common.Figures(out_dir)
    plt = figures.plt
    if plt is not None:
        fig, axes = plt.subplots(1, 5, figsize=(25, 4))
        ms = 2 * np.arange(n + 1) - n
        for ax, exact, direction, name in ((axes[0], exact_hist, ones, "magnetisation M = sum x"),
                                           (axes[1], exact_overlap, x_star, "overlap q = x . x* (ground state x*)")):
            ax.bar(ms, exact, width=1.6, color="lightgray", label="exact (enumeration)")
            ax.step(ms, histogram(single_x, direction), where="mid", label="single Metropolis chain")
            ax.step(ms, histogram(results["tuned"]["x"], direction), where="mid", label="replica exchange")
            ax.set_xlabel(name)
            ax.set_title(f"SK n={n}, beta={beta_model}")
            ax.legend(fontsize=7)
        # traces of the overlap: the single chain never changes mode, the beta = 1 replica does
        shown = min(3000, len(single_x))
        axes[2].plot(single_x[:shown] @ np.asarray(x_star) / n, lw=0.6, label="single Metropolis chain")
        axes[2].plot(results["tuned"]["x"][:shown] @ np.asarray(x_star) / n, lw=0.6, alpha=0.7,
                     label="replica exchange (beta = 1 replica)")
        axes[2].set_xlabel("sweep (after burn-in)")
        axes[2].set_ylabel("overlap q / n")
        axes[2].set_title("trace of the overlap with x*")
        axes[2].legend(fontsize=7)
        axes = axes[1:]
        for label, r in results.items():
            axes[2].plot(r["rates"], "o-", label=f"{label} ladder ({r['round_trips']} round trips)")
        axes[2].set_xlabel("pair (i, i+1)")
        axes[2].set_ylabel("swap acceptance")
        axes[2].set_ylim(0, 1)
        axes[2].legend(fontsize=7)
        axes[2].set_title("swap rates per pair")
        lr = metrics["learning"]
        axes[3].plot(lr["n64_residual_history"], lw=0.6)
        axes[3].set_yscale("log")
        axes[3].set_title(f"PCD + replica exchange, n={lr['n64']}: residual (J rmse {lr['n64_J_rmse']:.3f})")
        axes[3].set_xlabel("update")
        figures.save(fig, "replica_exchange.png")

    s = metrics["single_chain"]
    t = metrics["replica_exchange_tuned"]
    g = metrics["replica_exchange_geometric"]
    lr = metrics["learning"]
    rows = [[name, f"{m['magnetisation_tv']:.3f}", f"{m['overlap_tv']:.3f}", f"{m['max_corr_error']:.3f}",
             f"{m['fraction_positive_overlap']:.2f}", f"{m['min_swap_rate']:.2f}" if "min_swap_rate" in m else "-",
             m.get("round_trips", "-")]
            for name, m in (("single Metropolis chain", s), ("replica exchange, geometric ladder", g),
                            ("replica exchange, tuned ladder", t))]
    summary = (f"SK model, n = {n}, beta = {beta_model}, zero fields, so p(x) = p(-x): the modes are +-x* (q = x.x*/n "
               f"= +-1) and exact P(q > 0) = 1/2. {steps} sweeps, "
               f"{R} replicas.\n\n"
               + common.markdown_table(["sampler", "TV of P(M)", "TV of P(q)", "max corr error",
                                        "P(q > 0) (exact 0.5)", "min swap rate", "round trips"], rows)
               + f"\n\nLearning beyond enumeration: at n = {lr['n_compare']}, PCD with replica-exchange chains vs "
               f"exact maximum likelihood: J RMSE between them {lr['pcd_vs_exact_J_rmse']:.4f} (exact ML vs truth "
               f"{lr['exact_vs_truth_J_rmse']:.4f}); exact KL(exact ML || PCD) = {lr['kl_exact_to_pcd']:.2e}. At n = "
               f"{lr['n64']} (2^{lr['n64']} states) PCD + replica exchange reaches J RMSE {lr['n64_J_rmse']:.4f} "
               "against the truth "
               f"(start {lr['n64_J_rmse_start']:.4f}).")
    return common.write_results(out_dir, NAME, seed=seed, smoke=smoke,
                                config={"n": n, "beta_model": beta_model, "replicas": R, "steps": steps},
                                metrics=metrics, figures=figures.names, summary=summary, title=TITLE,
                                checks=_checks(metrics))


def _checks(metrics):
    n = metrics["n"]
    s = metrics["single_chain"]
    away = min(s["fraction_positive_overlap"], 1 - s["fraction_positive_overlap"])
    checks = [common.check("a single Metropolis chain stays in one mode (fraction of sweeps in the other mode "
                           "<= 0.01; exact 0.5)", away, away <= 0.01)]
    for label in ("geometric", "tuned"):
        m = metrics[f"replica_exchange_{label}"]
        draws = m["round_trips"]  # independent draws of the mode at beta = 1
        root = np.sqrt(max(draws, 1)) if draws else np.inf
        p_tol = 4 * 0.5 / root
        checks.append(common.check(f"{label} ladder: P(q > 0) = 1/2 within 4 binomial SE over {draws} round trips "
                                   f"(+- {p_tol:.3f})", m["fraction_positive_overlap"],
                                   abs(m["fraction_positive_overlap"] - 0.5) <= p_tol))
        tv_tol = (0.5 * np.sqrt(n + 1) + np.sqrt(np.log(1000) / 2)) / root
        for key, what in (("magnetisation_tv", "P(M)"), ("overlap_tv", "P(q)")):
            checks.append(common.check(f"{label} ladder: recovers the exact {what} (total variation <= {tv_tol:.3f})",
                                       m[key], m[key] <= tv_tol))
        corr_tol = 4.5 / root
        checks.append(common.check(f"{label} ladder: recovers the exact correlations (largest error <= "
                                   f"{corr_tol:.3f})", m["max_corr_error"], m["max_corr_error"] <= corr_tol))
    geometric, tuned = (metrics[f"replica_exchange_{k}"]["min_swap_rate"] for k in ("geometric", "tuned"))
    checks.append(common.check("adaptive tuning raises the smallest swap rate of the ladder (geometric, tuned)",
                               [geometric, tuned], tuned > geometric))
    lr = metrics["learning"]
    # smoke: 300 PCD steps leave PCD short of ML
    checks.append(common.check(f"n = {lr['n_compare']}: PCD + replica exchange agrees with exact ML within the "
                               "statistical error of ML (J RMSE PCD vs ML, vs ML vs truth)",
                               [lr["pcd_vs_exact_J_rmse"], lr["exact_vs_truth_J_rmse"]],
                               lr["pcd_vs_exact_J_rmse"] <= lr["exact_vs_truth_J_rmse"], smoke=False))
    checks.append(common.check(f"n = {lr['n64']}: PCD + replica exchange learns beyond enumeration (J RMSE "
                               "start, learned; at least halved)", [lr["n64_J_rmse_start"], lr["n64_J_rmse"]],
                               lr["n64_J_rmse"] <= 0.5 * lr["n64_J_rmse_start"]))
    return checks


def _learning(key, smoke):
    k1, k2, k3, k4, k5 = jax.random.split(key, 5)
    n = 12 if smoke else 20
    truth = ising.sherrington_kirkpatrick(k1, n, beta=0.8, field_std=0.2)
    data = datasets.exact_ising_samples(k2, truth, 20_000)
    start = ising.init(k3, n)
    steps = 300 if smoke else 1500
    betas = jnp.array([0.4, 0.6, 0.8, 1.0])
    pcd, _ = jax.jit(lambda p: mcmc.pcd_fit_ising(k4, p, data, optax.sgd(0.1), steps, betas=betas,
                                                   num_chains=256))(start)
    exact, _ = jax.jit(lambda p: ising.fit(curvature.hessian_bounded_sgd(1.0), p, data, steps))(start)
    iu = np.triu_indices(n, 1)

    def rmse(a, b):
        return float(np.sqrt(np.mean((np.asarray(a.J)[iu] - np.asarray(b.J)[iu]) ** 2)))

    out = {"n_compare": n, "pcd_vs_exact_J_rmse": rmse(pcd, exact), "exact_vs_truth_J_rmse": rmse(exact, truth),
           "kl_exact_to_pcd": float(ising.kl(exact, pcd))}
    # n = 64: data from a long replica-exchange run of the truth (no exact sampler exists)
    n64 = 24 if smoke else 64
    truth64 = ising.sherrington_kirkpatrick(k5, n64, beta=0.6, field_std=0.2)
    betas64 = mcmc.geometric_ladder(0.3, 1.0, 6)
    algo = mcmc.replica_exchange(lambda b: mcmc.heat_bath(truth64, b), betas64)
    chains, sweeps = (64, 200) if smoke else (256, 1000)
    x0 = jax.random.rademacher(k5, (chains, 6, n64), jnp.float32)
    _, samples = jax.jit(jax.vmap(lambda k, s: mcmc.run_chain(k, algo, s, sweeps, thin=10,
                                                              trace_fn=lambda s, i: s.states.x[-1])))(
        jax.random.split(k5, chains), jax.vmap(algo.init)(x0))
    data64 = np.asarray(samples)[:, sweeps // 40:].reshape(-1, n64)
    start64 = ising.init(k3, n64)
    learned, info = jax.jit(lambda p: mcmc.pcd_fit_ising(k4, p, data64, optax.sgd(0.05), 400 if smoke else 2000,
                                                         betas=betas64, num_chains=128))(start64)
    iu64 = np.triu_indices(n64, 1)
    out.update(n64=n64, n64_samples=int(data64.shape[0]),
               n64_J_rmse=float(np.sqrt(np.mean((np.asarray(learned.J)[iu64] - np.asarray(truth64.J)[iu64]) ** 2))),
               n64_J_rmse_start=float(np.sqrt(np.mean((np.asarray(start64.J)[iu64]
                                                       - np.asarray(truth64.J)[iu64]) ** 2))),
               n64_residual_history=np.asarray(info.residual).tolist())
    return out


def main(argv=None):
    return common.run_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(common.exit_status(main()))
