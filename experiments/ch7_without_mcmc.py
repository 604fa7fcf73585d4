"""Chapter 7: Boltzmann-machine learning without MCMC, scored against the exact oracle.

SK-type models with n in {10, 16, 20} and beta in {0.3, 0.7, 1.2}; data drawn exactly with
M in {1e3, 1e4, 1e5}. For each method (exact ML, pseudo-likelihood, mean field, TAP, MPF,
and PCD with replica-exchange chains) we record the reconstruction error of J, the exact
KL(truth || learned) by enumeration, the exact moment residual, and the wall time. Mean
field and TAP run vmapped over the three temperatures of each (n, M).

Checks: exact ML matches the data moments to its tolerance (residual <= 1e-6) in every fit;
the consistent estimators (exact ML, pseudo-likelihood, MPF) reduce their J error at each
tenfold increase of M, for every n and beta (full run only: smoke has one M).
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import common
from jaxebm import data as datasets
from jaxebm import inverse, ising, mcmc

NAME = "ch7_without_mcmc"
TITLE = "Chapter 7: learning without MCMC, scored by the exact oracle"

METHODS = ("exact ML", "pseudo-likelihood", "mean field", "TAP", "MPF", "PCD + replica exchange")
CONSISTENT = ("exact ML", "pseudo-likelihood", "MPF")
EXACT_ML_TOL = 1e-6


def _score(truth, learned, data):
    iu = np.triu_indices(truth.J.shape[0], 1)
    return {
        "J_rmse": float(np.sqrt(np.mean((np.asarray(learned.J)[iu] - np.asarray(truth.J)[iu]) ** 2))),
        "kl_truth_to_learned": float(ising.kl(truth, learned)),
        "moment_residual": float(ising.moment_residual(learned, data)),
    }


def run(out_dir: Path, *, smoke: bool = False, seed: int = 0) -> dict:
    sizes = (10,) if smoke else (10, 16, 20)
    betas = (0.3, 1.2) if smoke else (0.3, 0.7, 1.2)
    sample_sizes = (1_000,) if smoke else (1_000, 10_000, 100_000)
    pcd_steps = 200 if smoke else 1000
    key = jax.random.key(seed)
    rows, records = [], []
    for n in sizes:
        truths = [ising.sherrington_kirkpatrick(jax.random.fold_in(key, 100 * n + i), n, beta=b, field_std=0.2)
                  for i, b in enumerate(betas)]
        for M in sample_sizes:
            datas = jnp.stack([datasets.exact_ising_samples(jax.random.fold_in(key, 7 * M + i), t, M)
                               for i, t in enumerate(truths)])
            fitted = {m: [None] * len(betas) for m in METHODS}
            seconds = {}
            # vmapped over the temperatures (equal shapes)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for name, fn in (("mean field", inverse.mean_field), ("TAP", inverse.tap)):
                    batched = jax.jit(jax.vmap(lambda d, fn=fn: fn(d, ridge=0.0)))
                    jax.block_until_ready(batched(datas))
                    start = time.perf_counter()
                    out = jax.block_until_ready(batched(datas))
                    seconds[name] = (time.perf_counter() - start) / len(betas)
                    fitted[name] = [jax.tree_util.tree_map(lambda a, i=i: a[i], out) for i in range(len(betas))]
                for name, fn in (("pseudo-likelihood", inverse.pseudolikelihood), ("MPF", inverse.mpf),
                                 ("exact ML", lambda d: inverse.exact_ml(d, tol=EXACT_ML_TOL, max_iter=100))):
                    start = time.perf_counter()
                    fitted[name] = [fn(d) for d in datas]
                    seconds[name] = (time.perf_counter() - start) / len(betas)
                start = time.perf_counter()
                ladder = jnp.array([0.4, 0.6, 0.8, 1.0])
                pcd = jax.jit(lambda k, d, n=n, ladder=ladder: mcmc.pcd_fit_ising(
                    k, ising.init(k, n), d, optax.sgd(0.1), pcd_steps, betas=ladder, num_chains=256)[0])
                fitted["PCD + replica exchange"] = [pcd(jax.random.fold_in(key, i), d) for i, d in enumerate(datas)]
                seconds["PCD + replica exchange"] = (time.perf_counter() - start) / len(betas)
            for method in METHODS:
                for i, b in enumerate(betas):
                    score = _score(truths[i], fitted[method][i], datas[i])
                    record = {"n": n, "beta": b, "M": M, "method": method, "seconds": seconds[method], **score}
                    records.append(record)
                    rows.append([n, b, f"{M:,}", method, f"{score['J_rmse']:.4f}",
                                 f"{score['kl_truth_to_learned']:.2e}", f"{score['moment_residual']:.1e}",
                                 f"{seconds[method]:.2f}"])
            print(f"  n={n} M={M}: done", flush=True)

    pl20 = [r["seconds"] for r in records if r["n"] == max(sizes) and r["M"] == max(sample_sizes)
            and r["method"] == "pseudo-likelihood"]
    figures = common.Figures(out_dir)
    plt = figures.plt
    if plt is not None:
        fig, axes = plt.subplots(1, len(betas), figsize=(5.5 * len(betas), 4), squeeze=False)
        n_show = max(sizes)
        for ax, b in zip(axes[0], betas):
            for j, method in enumerate(METHODS):
                pts = [(r["M"], r["kl_truth_to_learned"]) for r in records
                       if r["n"] == n_show and r["beta"] == b and r["method"] == method]
                if pts:
                    Ms, kls = zip(*pts)
                    ax.loglog(Ms, np.maximum(kls, 1e-7), "o-", color=f"C{j}", label=method)
            ax.set_title(f"n={n_show}, beta={b}: exact KL(truth || learned)")
            ax.set_xlabel("samples M")
            ax.legend(fontsize=7)
        figures.save(fig, "oracle_kl.png")
    table = common.markdown_table(["n", "beta", "M", "method", "J RMSE", "exact KL", "moment residual", "s / dataset"],
                                  rows)
    summary = (f"{len(records)} fits scored by exact enumeration. Pseudo-likelihood at n = {max(sizes)}, "
               f"M = {max(sample_sizes):,}: {max(pl20):.2f} s per dataset (target <= 10 s on 2 CPU cores).\n\n" + table)
    config = {"sizes": list(sizes), "betas": list(betas), "sample_sizes": list(sample_sizes), "pcd_steps": pcd_steps}
    return common.write_results(out_dir, NAME, seed=seed, smoke=smoke, config=config,
                                metrics={"fits": records, "pseudolikelihood_seconds_largest": max(pl20)},
                                figures=figures.names, summary=summary, title=TITLE, checks=_checks(records))


def _checks(records):
    residual = max(r["moment_residual"] for r in records if r["method"] == "exact ML")
    checks = [common.check(f"exact ML matches the data moments in every fit (largest residual <= {EXACT_ML_TOL:g})",
                           residual, residual <= EXACT_ML_TOL)]
    for method in CONSISTENT:
        curves = {}
        for r in records:
            if r["method"] == method:
                curves.setdefault((r["n"], r["beta"]), []).append((r["M"], r["J_rmse"]))
        rises = [f"n={n} beta={b}" for (n, b), pts in curves.items()
                 if any(e1 >= e0 for (_, e0), (_, e1) in zip(sorted(pts), sorted(pts)[1:]))]
        one_m = any(len(pts) < 2 for pts in curves.values())
        checks.append(common.check(f"{method} is consistent: its J error falls at each tenfold M for every n and beta "
                                   "(cases where it did not)", "one M only" if one_m else ", ".join(rises) or "none",
                                   not rises and not one_m, smoke=False))
    return checks


def main(argv=None):
    return common.run_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(common.exit_status(main()))
