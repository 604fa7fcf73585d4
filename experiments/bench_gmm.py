"""Benchmark: EM for a Gaussian mixture, jaxebm against scikit-learn side by side.

n = 1e5 samples, d = 16, K = 16, full covariances, 10 EM iterations from identical initial
parameters. jaxebm runs in float32 (JIT, one ``lax.while_loop``), scikit-learn in float64.
scikit-learn is timed on exactly 10 of its own E+M steps (``_e_step`` / ``_m_step``), with
no initialisation and no final extra E-step. gmmx joins the table when it is installed.

Check (no speed claims): from the same start, the same 10 iterations reach the same mean
log-likelihood as scikit-learn (relative difference <= 1e-5, float32 round-off over 10
iterations).

    python -m experiments.bench_gmm [--smoke] [--n 100000] [--out DIR]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from jaxebm import gmm

NAME = "bench_gmm"
TITLE = "Benchmark: Gaussian-mixture EM, jaxebm vs scikit-learn"


def make_data(n, d, K, seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(K, d)) * 3
    return centres[rng.integers(0, K, n)] + rng.normal(size=(n, d))


def run(out_dir: Path, *, smoke: bool = False, seed: int = 0, n: int | None = None) -> dict:
    from sklearn.mixture import GaussianMixture

    n = n or (10_000 if smoke else 100_000)
    d, K, iters = 16, 16, 10
    repeats = 1 if smoke else 3
    X = make_data(n, d, K, seed)
    x32 = jnp.asarray(X, jnp.float32)
    start = gmm.initialize(jax.random.key(seed), x32, K, "full", "kmeans++")

    run_em = jax.jit(lambda p, x: gmm.em(p, x, max_iter=iters, tol=0.0))
    (params, history, _, _), t_jax = common.timed(lambda: run_em(start, x32), repeats)
    jax_ll = float(jnp.mean(gmm.log_prob(params, x32)))

    import warnings

    precisions = np.linalg.inv(np.asarray(start.covs, np.float64))
    weights = np.asarray(start.weights, np.float64)
    weights = weights / weights.sum()  # scikit-learn checks the float64 sum
    sk = GaussianMixture(K, covariance_type="full", max_iter=1, tol=0.0, reg_covar=1e-6, init_params="random",
                         weights_init=weights, means_init=np.asarray(start.means, np.float64),
                         precisions_init=precisions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk.fit(X)  # sets up scikit-learn's internal state; then reset to the shared start
    state0 = (weights, np.asarray(start.means, np.float64),
              np.linalg.cholesky(precisions))
    best = np.inf
    for _ in range(repeats):
        sk.weights_, sk.means_, sk.precisions_cholesky_ = (a.copy() for a in state0)
        t0 = time.perf_counter()
        for _ in range(iters):
            _, log_resp = sk._e_step(X)
            sk._m_step(X, log_resp)
        best = min(best, time.perf_counter() - t0)
    t_sk = best
    sk_ll = float(sk.score(X))

    rows = [["jaxebm (float32, jit)", f"{t_jax:.3f}", f"{1e3 * t_jax / iters:.1f}", f"{jax_ll:.6f}", "1.0"],
            ["scikit-learn (float64)", f"{t_sk:.3f}", f"{1e3 * t_sk / iters:.1f}", f"{sk_ll:.6f}",
             f"{t_sk / t_jax:.1f}x slower"]]
    record = {"n": n, "d": d, "K": K, "iterations": iters, "jaxebm_seconds": t_jax, "sklearn_seconds": t_sk,
              "speedup_vs_sklearn": t_sk / t_jax, "jaxebm_mean_loglik": jax_ll, "sklearn_mean_loglik": sk_ll,
              "loglik_rel_diff": abs(jax_ll - sk_ll) / abs(sk_ll)}
    try:
        import gmmx
    except ImportError:
        record["gmmx"] = "not installed"
    else:
        model = gmmx.GaussianMixtureModelJax.from_squeezed(means=start.means, covariances=start.covs,
                                                           weights=start.weights)
        fitter = gmmx.EMFitter(max_iter=iters, tol=0.0, reg_covar=1e-6)
        result, t_gmmx = common.timed(lambda: fitter.fit(x32, model), repeats)
        fitted = result.gmm
        gparams = gmm.GMMParams(jnp.asarray(fitted.weights_numpy), jnp.asarray(fitted.means_numpy),
                                jnp.asarray(fitted.covariances.values_numpy), "full")
        g_ll = float(jnp.mean(gmm.log_prob(gparams, x32)))
        from importlib.metadata import version

        record.update(gmmx="benchmarked", gmmx_version=version("gmmx"), gmmx_seconds=t_gmmx,
                      gmmx_mean_loglik=g_ll, speedup_vs_gmmx=t_gmmx / t_jax)
        rows.append([f"gmmx {record['gmmx_version']} (float32, jit)", f"{t_gmmx:.3f}", f"{1e3 * t_gmmx / iters:.1f}",
                     f"{g_ll:.6f}", f"{t_gmmx / t_jax:.1f}x slower"])
    summary = (common.markdown_table(["implementation", f"{iters} EM iterations (s)", "ms / iteration",
                                      "final mean log-lik", "ratio"], rows)
               + f"\n\nn = {n:,}, d = {d}, K = {K}, full covariances, identical start; jaxebm is "
               f"{record['speedup_vs_sklearn']:.1f}x faster; log-likelihoods differ by {record['loglik_rel_diff']:.1e} "
               f"(relative). gmmx: {record['gmmx']}. Backend: {jax.default_backend()}.")
    return common.write_results(out_dir, NAME, seed=seed, smoke=smoke,
                                config={"n": n, "d": d, "K": K, "iterations": iters, "repeats": repeats},
                                metrics=record, figures=[], summary=summary, title=TITLE,
                                checks=[common.check("jaxebm's EM reaches scikit-learn's mean log-likelihood from the "
                                                     "same start (relative difference <= 1e-5)",
                                                     record["loglik_rel_diff"], record["loglik_rel_diff"] <= 1e-5)])


def main(argv=None):
    return common.run_main(sys.modules[__name__], argv,
                           n={"type": int, "default": None, "help": "number of samples"})


if __name__ == "__main__":
    sys.exit(common.exit_status(main()))
