"""Chapter 3: EM for Gaussian mixtures, the Q function and the ELBO.

* The notes' Figure 4 situation: a 3-component 2-D mixture. EM iterations as covariance
  ellipses over the data, the log-likelihood curve, and the ELBO whose gap to log p closes at
  every E-step (Eq. (3.63)-(3.66)).
* Model selection by BIC over K.
* A real bundled data set: wine on its first two principal components.

Checks: the log-likelihood never decreases; the gap log p - ELBO is >= 0 after each M-step
and closed (to float round-off) after each E-step; EM run to convergence (K = 3) reaches at
least the likelihood of the true parameters (the MLE does, on its own sample); BIC picks the
true K = 3.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from jaxebm import data as datasets
from jaxebm import gmm

NAME = "ch3_gmm_em"
TITLE = "Chapter 3: EM for Gaussian mixtures, Q function and ELBO"

ROUNDOFF = 1e-5  # float32 round-off of mean log-likelihoods of order 1-10


def _ellipse(ax, mean, cov, **kw):
    vals, vecs = np.linalg.eigh(np.asarray(cov))
    t = np.linspace(0, 2 * np.pi, 100)
    circle = np.stack([np.cos(t), np.sin(t)])
    pts = np.asarray(mean)[:, None] + vecs @ (2.0 * np.sqrt(vals)[:, None] * circle)
    ax.plot(pts[0], pts[1], **kw)


def _elbo_trace(params, x, iterations):
    """Sawtooth of Eq. (3.63)-(3.66): after each M-step the bound ELBO(r_old, theta_new) lies
    below log p(theta_new); the E-step closes the gap (``after_e``: the ELBO right after it)."""
    step = jax.jit(lambda p: gmm.em_step(p, x, reg_covar=1e-6))
    loglik, after_m, after_e, snapshots = [], [], [], [params]
    for _ in range(iterations):
        resp = gmm.responsibilities(params, x)
        loglik.append(float(jnp.mean(gmm.log_prob(params, x))))
        after_e.append(float(gmm.elbo(params, resp, x)))
        params, _ = step(params)
        after_m.append(float(gmm.elbo(params, resp, x)))  # before the next E-step
        snapshots.append(params)
    loglik.append(float(jnp.mean(gmm.log_prob(params, x))))
    return np.array(loglik), np.array(after_m), np.array(after_e), snapshots


def run(out_dir: Path, *, smoke: bool = False, seed: int = 0) -> dict:
    key = jax.random.key(seed)
    k_data, k_init, k_bic, k_wine = jax.random.split(key, 4)
    num = 300 if smoke else 900
    iterations = 15 if smoke else 40
    truth = datasets.two_d_mixture_params()
    x, labels = datasets.two_d_mixture(k_data, num)
    x = jnp.asarray(x, jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)

    start = gmm.initialize(k_init, x, 3, "full", "random")
    loglik, after_m, after_e, snapshots = _elbo_trace(start, x, iterations)
    gaps = loglik[1:] - after_m  # KL(r_old || new posterior) >= 0
    metrics = {
        "figure4": {
            "num_samples": num,
            "iterations": iterations,
            "final_mean_loglik": float(loglik[-1]),
            "true_params_mean_loglik": float(jnp.mean(gmm.log_prob(truth, x))),
            "loglik_non_decreasing": bool(np.all(np.diff(loglik) >= -1e-5)),
            "loglik_smallest_step_change": float(np.min(np.diff(loglik))),
            "elbo_gap_after_e_step_max_abs": float(np.max(np.abs(loglik[:-1] - after_e))),
            "elbo_gap_after_m_step_min": float(gaps.min()),
            "elbo_gap_after_m_step_first": float(gaps[0]),
            "elbo_gap_after_m_step_last": float(gaps[-1]),
        }
    }

    # BIC over K
    ks = list(range(1, 5 if smoke else 7))
    bics = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gmm.ConvergenceWarning)
        for k in ks:
            params, _ = gmm.fit(jax.random.fold_in(k_bic, k), x, k, n_init=2 if smoke else 5, max_iter=200)
            bics.append(float(gmm.bic(params, x)))
            if k == 3:
                converged_loglik = float(jnp.mean(gmm.log_prob(params, x)))
    metrics["bic"] = {"K": ks, "bic": bics, "best_K": ks[int(np.argmin(bics))]}
    metrics["figure4"]["converged_K3_mean_loglik"] = converged_loglik

    # wine, first two principal components
    from sklearn.metrics import adjusted_rand_score

    wine_pcs, cultivars = datasets.wine(principal_components=2)
    pcs = jnp.asarray(wine_pcs, x.dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gmm.ConvergenceWarning)
        wine_params, wine_info = gmm.fit(k_wine, pcs, 3, n_init=5, max_iter=300)
    wine_pred = np.asarray(gmm.predict(wine_params, pcs))
    metrics["wine_pca"] = {
        "mean_loglik": float(wine_info.lower_bound),
        "n_iter": wine_info.n_iter,
        "adjusted_rand_index_vs_cultivar": float(adjusted_rand_score(cultivars, wine_pred)),
    }

    figures = common.Figures(out_dir)
    plt = figures.plt
    if plt is not None:
        fig, axes = plt.subplots(1, 4, figsize=(20, 4.5))
        xs = np.asarray(x)
        axes[0].scatter(xs[:, 0], xs[:, 1], s=4, c=np.asarray(labels), cmap="tab10", alpha=0.4)
        shown = sorted({t for t in (0, 5, 12, 20) if t < iterations} | {iterations})
        for i, t in enumerate(shown):
            p = snapshots[t]
            for k in range(3):
                _ellipse(axes[0], p.means[k], p.covs[k], color=plt.cm.viridis(i / max(1, len(shown) - 1)), lw=1.5,
                         label=f"iteration {t}" if k == 0 else None)
        axes[0].set_title("EM iterations (2-sigma ellipses)")
        axes[0].legend(fontsize=7)
        t = np.arange(len(loglik))
        axes[1].plot(t, loglik, "k.-", label="log p(x | theta_t) (= ELBO after E-step)")
        axes[1].plot(t[1:], after_m, "r.", label="ELBO(r_{t-1}, theta_t) after M-step")
        axes[1].set_xlabel("iteration")
        axes[1].set_ylabel("mean per sample")
        axes[1].set_title("log-likelihood and ELBO (3.63)")
        axes[1].legend(fontsize=7)
        axes[2].semilogy(t[1:], np.maximum(gaps, 1e-12), "b.-")
        axes[2].set_xlabel("iteration")
        axes[2].set_title("gap log p - ELBO after M-step = KL(r || posterior); 0 after E-step")
        axes[2].title.set_fontsize(8)
        axes[3].scatter(np.asarray(pcs)[:, 0], np.asarray(pcs)[:, 1], c=wine_pred, s=10, cmap="tab10")
        for k in range(3):
            _ellipse(axes[3], wine_params.means[k], wine_params.covs[k], color="k", lw=1)
        axes[3].set_title(f"wine, first two PCs (ARI {metrics['wine_pca']['adjusted_rand_index_vs_cultivar']:.2f})")
        figures.save(fig, "gmm_em.png")
        fig, ax = plt.subplots(figsize=(4.5, 3.5))
        ax.plot(ks, bics, "o-")
        ax.set_xlabel("K")
        ax.set_ylabel("BIC")
        ax.set_title("model selection (true K = 3)")
        figures.save(fig, "gmm_bic.png")

    f4 = metrics["figure4"]
    summary = (
        f"3-component 2-D mixture, {num} samples, {iterations} EM iterations from random responsibilities: "
        f"mean log-likelihood {f4['final_mean_loglik']:.4f} (true parameters: {f4['true_params_mean_loglik']:.4f}); "
        f"non-decreasing: {f4['loglik_non_decreasing']}. The ELBO gap after each M-step is KL >= 0 "
        f"(min {f4['elbo_gap_after_m_step_min']:.2e}, first {f4['elbo_gap_after_m_step_first']:.2e}, "
        f"last {f4['elbo_gap_after_m_step_last']:.2e}) and the E-step closes it.\n\n"
        + common.markdown_table(["K", *map(str, ks)], [["BIC", *[f"{b:.1f}" for b in bics]]])
        + f"\n\nBIC picks K = {metrics['bic']['best_K']}. Wine (first two PCs), K = 3: adjusted Rand index against "
        f"the cultivars {metrics['wine_pca']['adjusted_rand_index_vs_cultivar']:.3f}."
    )
    config = {"num_samples": num, "iterations": iterations, "bic_K": ks}
    return common.write_results(out_dir, NAME, seed=seed, smoke=smoke, config=config, metrics=metrics,
                                figures=figures.names, summary=summary, title=TITLE, checks=_checks(metrics))


def _checks(metrics):
    f4 = metrics["figure4"]
    scale = 1.0 + abs(f4["final_mean_loglik"])
    shortfall = f4["true_params_mean_loglik"] - f4["converged_K3_mean_loglik"]
    return [
        common.check("EM never decreases the log-likelihood (smallest change per iteration)",
                     f4["loglik_smallest_step_change"], f4["loglik_smallest_step_change"] >= -ROUNDOFF * scale),
        common.check("after each M-step the gap log p - ELBO = KL(r || posterior) is >= 0 (smallest gap)",
                     f4["elbo_gap_after_m_step_min"], f4["elbo_gap_after_m_step_min"] >= -ROUNDOFF * scale),
        common.check("the E-step closes the gap: ELBO = log p after each E-step (largest |gap|)",
                     f4["elbo_gap_after_e_step_max_abs"], f4["elbo_gap_after_e_step_max_abs"] <= ROUNDOFF * scale),
        common.check("EM run to convergence (K = 3) reaches at least the true parameters' mean log-likelihood "
                     "on the sample (shortfall)",
                     shortfall, shortfall <= ROUNDOFF * scale),
        common.check("BIC picks the true number of components, K = 3", metrics["bic"]["best_K"],
                     metrics["bic"]["best_K"] == 3),
    ]


def main(argv=None):
    return common.run_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(common.exit_status(main()))
