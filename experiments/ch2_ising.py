"""Chapter 2.5-2.6: learning an Ising Boltzmann machine by exact gradient descent.

* Exact samples from a known SK-type model (``ising.sample_exact``).
* Exact gradient descent on the nll (Eq. (2.30)) with the Hessian learning-rate rule
  (``curvature.hessian_bounded_sgd``, Eq. (2.47)); descent uses the corrected sign of (2.33).
* The moment-matching residual (Eq. (2.31)-(2.32)) falls to ~1e-6.
* The parameter error falls with the sample size M (like 1/sqrt(M)).
* The exact KL(truth || learned) by enumeration.

Checks: the residual is below 1e-5 (order 1e-6) at every M; the slope of log J-RMSE
against log M is -1/2 within four standard deviations of its sampling error (an RMSE over K
couplings has relative error about 1/sqrt(2K)); 2M KL(truth || learned) is at the scale of a
chi^2 with one degree of freedom per parameter, as for the maximum-likelihood estimate.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jax
import numpy as np

from experiments import common
from jaxebm import curvature, ising
from jaxebm import data as datasets

RESIDUAL_BOUND = 1e-5  # "falls to ~1e-6": within an order of magnitude

NAME = "ch2_ising"
TITLE = "Chapter 2.5-2.6: learning an Ising Boltzmann machine exactly"


def run(out_dir: Path, *, smoke: bool = False, seed: int = 0) -> dict:
    n = 10 if smoke else 16
    beta, field_std = 0.7, 0.2
    sample_sizes = (1_000, 10_000) if smoke else (1_000, 10_000, 100_000)
    num_steps = 300 if smoke else 2500
    key_model, key_data, key_init = jax.random.split(jax.random.key(seed), 3)
    truth = ising.sherrington_kirkpatrick(key_model, n, beta=beta, field_std=field_std)
    optimizer = curvature.hessian_bounded_sgd(safety=1.0, every=1)

    @jax.jit
    def learn(data):
        start = ising.init(key_init, n, scale=0.01)
        return ising.fit(optimizer, start, data, num_steps,
                         metrics_fn=lambda p, v, g, s: s[0].eigenvalue)

    iu = np.triu_indices(n, 1)
    runs, curves = [], {}
    for num in sample_sizes:
        data = datasets.exact_ising_samples(jax.random.fold_in(key_data, num), truth, num)
        start_time = time.perf_counter()
        learned, info = jax.block_until_ready(learn(data))
        seconds = time.perf_counter() - start_time
        residual = np.asarray(info.metrics["residual"])
        final_residual = float(ising.moment_residual(learned, data))
        J_rmse = float(np.sqrt(np.mean((np.asarray(learned.J)[iu] - np.asarray(truth.J)[iu]) ** 2)))
        h_rmse = float(np.sqrt(np.mean((np.asarray(learned.h) - np.asarray(truth.h)) ** 2)))
        runs.append({
            "num_samples": num,
            "final_moment_residual": final_residual,
            "J_rmse": J_rmse,
            "h_rmse": h_rmse,
            "kl_truth_to_learned": float(ising.kl(truth, learned)),
            "kl_truth_to_empirical_ml_limit": None,
            "final_nll": float(info.loss[-1]),
            "lambda_max_final": float(np.asarray(info.metrics["extra"])[-1]),
            "seconds_incl_compile": seconds,
        })
        curves[num] = residual
        print(f"  M={num}: residual {final_residual:.2e}, J rmse {J_rmse:.4f}, "
              f"KL {runs[-1]['kl_truth_to_learned']:.2e}", flush=True)
    for r in runs:
        del r["kl_truth_to_empirical_ml_limit"]

    figures = common.Figures(out_dir)
    plt = figures.plt
    if plt is not None:
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        for num, res in curves.items():
            axes[0].semilogy(res, label=f"M = {num:,}")
        axes[0].axhline(1e-6, color="k", ls=":", lw=0.8)
        axes[0].set_xlabel("step (eta = 1 / lambda_max each step)")
        axes[0].set_ylabel("max moment residual (2.31)-(2.32)")
        axes[0].legend()
        Ms = np.array([r["num_samples"] for r in runs], float)
        axes[1].loglog(Ms, [r["J_rmse"] for r in runs], "o-", label="J RMSE")
        axes[1].loglog(Ms, [r["h_rmse"] for r in runs], "s-", label="h RMSE")
        axes[1].loglog(Ms, runs[0]["J_rmse"] * np.sqrt(Ms[0] / Ms), "k:", label="1/sqrt(M)")
        axes[1].set_xlabel("samples M")
        axes[1].legend()
        axes[2].loglog(Ms, [r["kl_truth_to_learned"] for r in runs], "o-")
        axes[2].set_xlabel("samples M")
        axes[2].set_ylabel("exact KL(truth || learned), nats")
        fig.suptitle(f"SK model n={n}, beta={beta}: exact learning with the Hessian rule")
        figures.save(fig, "ising_learning.png")

    table = common.markdown_table(
        ["M", "moment residual", "J RMSE", "h RMSE", "exact KL(truth to learned)"],
        [[f"{r['num_samples']:,}", f"{r['final_moment_residual']:.1e}", r["J_rmse"], r["h_rmse"],
          f"{r['kl_truth_to_learned']:.2e}"] for r in runs])
    summary = (f"SK model, n = {n} (2^{n} states enumerated exactly), beta = {beta}; {num_steps} steps of "
               f"gradient descent with eta = 1/lambda_max re-estimated each step.\n\n{table}")
    config = {"n": n, "beta": beta, "field_std": field_std, "sample_sizes": list(sample_sizes),
              "num_steps": num_steps, "optimizer": "hessian_bounded_sgd(safety=1, every=1)"}
    return common.write_results(out_dir, NAME, seed=seed, smoke=smoke, config=config, metrics={"runs": runs},
                                figures=figures.names, summary=summary, title=TITLE, checks=_checks(runs, n))


def _checks(runs, n):
    residual = max(r["final_moment_residual"] for r in runs)
    checks = [common.check(f"the moment residual (2.31)-(2.32) falls to ~1e-6 (<= {RESIDUAL_BOUND:g}) at every M",
                           residual, residual <= RESIDUAL_BOUND, smoke=False)]  # smoke: 300 steps, not converged
    # least-squares slope of log10 J-RMSE on log10 M; each log10 RMSE over K couplings has
    # standard deviation about 1 / (sqrt(2K) ln 10)
    log_m = np.log10([r["num_samples"] for r in runs])
    log_rmse = np.log10([r["J_rmse"] for r in runs])
    slope = float(np.polyfit(log_m, log_rmse, 1)[0])
    couplings = n * (n - 1) // 2
    slope_sd = 1.0 / (np.sqrt(2 * couplings) * np.log(10) * np.sqrt(np.sum((log_m - log_m.mean()) ** 2)))
    checks.append(common.check(f"the J error falls like 1/sqrt(M): slope of log J-RMSE vs log M is -0.5 "
                               f"+- {4 * slope_sd:.2f} (4 sd)", slope, abs(slope + 0.5) <= 4 * slope_sd))
    dof = n * (n + 1) // 2
    bound = common.chi_square_bound(dof)
    scaled = [2 * r["num_samples"] * r["kl_truth_to_learned"] for r in runs]
    checks.append(common.check(f"exact KL(truth || learned) at the sampling scale of the MLE at every M "
                               f"(2M KL <= {bound:.0f}: chi^2 with {dof} dof + 5 sd)", scaled, max(scaled) <= bound))
    return checks


def main(argv=None):
    return common.run_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(common.exit_status(main()))
