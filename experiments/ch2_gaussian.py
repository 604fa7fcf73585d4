"""Chapter 2.2-2.4: Gaussian maximum likelihood = KL minimisation.

* 1-D and multivariate: the closed-form MLE (Eq. (2.15)-(2.16), (2.26)-(2.27)) against
  gradient descent on the KL to the data (Eq. (2.14), (2.25)) with optax;
* the exact KL from the true Gaussian to each fit;
* the derivative formulas of ``notes/gaussian-derivatives.md`` against autodiff.

Checks: gradient descent reaches the MLE (within a tenth of the MLE's own standard error);
the KL from the truth to the MLE is at the sampling scale (2N KL ~ chi^2 with one degree of
freedom per parameter); the derivative formulas agree with autodiff to float32 round-off.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import common
from jaxebm import gaussian, optim

DERIVATIVE_RTOL = 1e-4  # float32 round-off (eps 1.2e-7) amplified by at most ~1e3

NAME = "ch2_gaussian"
TITLE = "Chapter 2.2-2.4: Gaussian MLE as KL minimisation"


def _fit_by_gradient(x, mean0, chol0, steps, learning_rate):
    """Minimises kl_to_data over (mean, Cholesky factor) with Adam: one lax.scan (optim.run)."""

    def loss(params, x):
        mean, chol = params
        L = jnp.tril(chol)
        return gaussian.kl_to_data(x, mean, L @ L.T)

    (mean, chol), info = optim.run(optax.adam(learning_rate), loss, (mean0, chol0), steps, x)
    L = jnp.tril(chol)
    return mean, L @ L.T, info.loss


def run(out_dir: Path, *, smoke: bool = False, seed: int = 0) -> dict:
    key = jax.random.key(seed)
    k1, k2, k3 = jax.random.split(key, 3)
    num = 500 if smoke else 5000
    steps = 150 if smoke else 3000
    metrics: dict = {}

    # ---- 1-D (Eq. (2.11)-(2.16)) ----
    true_mean1, true_var1 = 1.5, 0.49
    x1 = true_mean1 + np.sqrt(true_var1) * jax.random.normal(k1, (num,))
    mle_mean1, mle_var1 = gaussian.mle(x1)
    gd_mean1, gd_cov1, hist1 = jax.jit(_fit_by_gradient, static_argnums=(3,))(
        x1[:, None], jnp.zeros(1), jnp.eye(1), steps, 0.05)
    metrics["1d"] = {
        "mle_mean": float(mle_mean1), "mle_var": float(mle_var1),
        "gd_mean": float(gd_mean1[0]), "gd_var": float(gd_cov1[0, 0]),
        "gd_minus_mle_max_abs": float(max(abs(gd_mean1[0] - mle_mean1), abs(gd_cov1[0, 0] - mle_var1))),
        # standard errors of the MLE: sqrt(var / N) for the mean, var sqrt(2 / N) for the variance
        "gd_minus_mle_max_in_standard_errors": float(max(
            abs(gd_mean1[0] - mle_mean1) / np.sqrt(mle_var1 / num),
            abs(gd_cov1[0, 0] - mle_var1) / (mle_var1 * np.sqrt(2.0 / num)))),
        "kl_true_to_mle": float(gaussian.kl(true_mean1, true_var1, mle_mean1, mle_var1)),
        "kl_to_data_at_mle": float(gaussian.kl_to_data(x1, mle_mean1, mle_var1)),
        "kl_to_data_at_gd": float(hist1[-1]),
    }

    # ---- multivariate (Eq. (2.18)-(2.27)) ----
    d = 3
    true_mean = jnp.array([1.0, -2.0, 0.5])
    A = jnp.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [-0.3, 0.4, 0.5]])
    true_cov = A @ A.T
    x = true_mean + jax.random.normal(k2, (num, d)) @ A.T
    mle_mean, mle_cov = gaussian.mle(x)
    gd_mean, gd_cov, hist = jax.jit(_fit_by_gradient, static_argnums=(3,))(x, jnp.zeros(d), jnp.eye(d),
                                                                            steps, 0.05)
    metrics["multivariate"] = {
        "d": d,
        "mle_mean_error": float(jnp.max(jnp.abs(mle_mean - true_mean))),
        "mle_cov_error": float(jnp.max(jnp.abs(mle_cov - true_cov))),
        "gd_minus_mle_max_abs": float(max(jnp.max(jnp.abs(gd_mean - mle_mean)),
                                          jnp.max(jnp.abs(gd_cov - mle_cov)))),
        # standard errors sqrt(S_ii / N) of the means, sqrt((S_ii S_jj + S_ij^2) / N) of the covariances
        "gd_minus_mle_max_in_standard_errors": float(max(
            jnp.max(jnp.abs(gd_mean - mle_mean) / jnp.sqrt(jnp.diag(mle_cov) / num)),
            jnp.max(jnp.abs(gd_cov - mle_cov) / jnp.sqrt((jnp.outer(jnp.diag(mle_cov), jnp.diag(mle_cov))
                                                            + mle_cov**2) / num)))),
        "kl_true_to_mle": float(gaussian.kl(true_mean, true_cov, mle_mean, mle_cov)),
        "kl_true_to_gd": float(gaussian.kl(true_mean, true_cov, gd_mean, gd_cov)),
    }

    # ---- derivative formulas vs autodiff ----
    points = jax.random.normal(k3, (8, d)) + true_mean
    closed_mean = gaussian.pdf_grad_mean(points, true_mean, true_cov)
    auto_mean = jax.vmap(jax.grad(lambda p, m: gaussian.pdf(p, m, true_cov), 1), (0, None))(points, true_mean)
    closed_cov = gaussian.pdf_grad_cov(points, true_mean, true_cov)
    auto_cov = jax.vmap(jax.grad(lambda p, S: gaussian.pdf(p, true_mean, S), 1), (0, None))(points, true_cov)
    auto_cov = 0.5 * (auto_cov + jnp.swapaxes(auto_cov, -1, -2))

    def rel(a, b):
        return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))

    metrics["derivatives"] = {
        "dN/dmu closed vs autodiff (max rel)": rel(closed_mean, auto_mean),
        "dN/dSigma closed vs symmetrised autodiff (max rel)": rel(closed_cov, auto_cov),
    }

    figures = common.Figures(out_dir)
    plt = figures.plt
    if plt is not None:
        fig, axes = plt.subplots(1, 3, figsize=(14, 4))
        grid = np.linspace(float(x1.min()) - 0.5, float(x1.max()) + 0.5, 400)
        axes[0].hist(np.asarray(x1), bins=50, density=True, alpha=0.4, label="data")
        axes[0].plot(grid, gaussian.pdf(grid, mle_mean1, mle_var1), label="MLE (2.15)-(2.16)")
        axes[0].plot(grid, gaussian.pdf(grid, gd_mean1[0], gd_cov1[0, 0]), "--", label="gradient descent")
        axes[0].set_title("1-D Gaussian fitted to data")
        axes[0].legend()
        gap1 = np.asarray(hist1) - float(gaussian.kl_to_data(x1, mle_mean1, mle_var1))
        gap = np.asarray(hist) - float(gaussian.kl_to_data(x, mle_mean, mle_cov))
        axes[1].semilogy(np.maximum(gap1, 1e-7), label="1-D")
        axes[1].semilogy(np.maximum(gap, 1e-7), label=f"{d}-D")
        axes[1].set_xlabel("Adam step")
        axes[1].set_ylabel("KL(p0 || q) - KL at the closed-form MLE")
        axes[1].set_title("gradient descent reaches the MLE")
        axes[1].legend()
        xs = np.asarray(x)
        axes[2].scatter(xs[:, 0], xs[:, 1], s=3, alpha=0.3)
        gx, gy = np.meshgrid(np.linspace(xs[:, 0].min(), xs[:, 0].max(), 120),
                             np.linspace(xs[:, 1].min(), xs[:, 1].max(), 120))
        pts = np.stack([gx.ravel(), gy.ravel()], 1)
        dens = gaussian.pdf(pts, mle_mean[:2], mle_cov[:2, :2]).reshape(gx.shape)
        axes[2].contour(gx, gy, np.asarray(dens), levels=6)
        axes[2].set_title("multivariate MLE (2.26)-(2.27), first two axes")
        figures.save(fig, "gaussian_fits.png")

    rows = [
        ["1-D", metrics["1d"]["gd_minus_mle_max_abs"], metrics["1d"]["kl_true_to_mle"]],
        [f"{d}-D", metrics["multivariate"]["gd_minus_mle_max_abs"], metrics["multivariate"]["kl_true_to_mle"]],
    ]
    summary = (
        f"Gradient descent on the KL reaches the closed-form MLE ({num} samples, {steps} Adam steps).\n\n"
        + common.markdown_table(["model", "max abs(GD - MLE)", "KL(true to MLE)"], rows)
        + "\n\nDerivative formulas vs autodiff (max relative difference): "
        + ", ".join(f"{k}: {v:.2e}" for k, v in metrics["derivatives"].items())
    )
    config = {"num_samples": num, "adam_steps": steps, "learning_rate": 0.05}
    return common.write_results(out_dir, NAME, seed=seed, smoke=smoke, config=config, metrics=metrics,
                                figures=figures.names, summary=summary, title=TITLE,
                                checks=_checks(metrics, num))


def _checks(metrics, num):
    checks = []
    d = metrics["multivariate"]["d"]
    # degrees of freedom = parameters: mean and variance in 1-D; d means and d(d+1)/2 covariances
    for label, m, dof in (("1-D", metrics["1d"], 2), (f"{d}-D", metrics["multivariate"], d * (d + 3) // 2)):
        gap = m["gd_minus_mle_max_in_standard_errors"]
        checks.append(common.check(f"{label}: gradient descent on the KL reaches the closed-form MLE "
                                   "(max |GD - MLE| <= 0.1 standard errors of the MLE)", gap, gap <= 0.1))
        scaled = 2 * num * m["kl_true_to_mle"]
        bound = common.chi_square_bound(dof)
        checks.append(common.check(f"{label}: KL(truth || MLE) at the sampling scale (2N KL <= {bound:.1f}, "
                                   f"chi^2 with {dof} dof + 5 sd)", scaled, scaled <= bound))
    for name, rel in metrics["derivatives"].items():
        checks.append(common.check(f"derivative formula {name} <= {DERIVATIVE_RTOL:g}", rel, rel <= DERIVATIVE_RTOL))
    return checks


def main(argv=None):
    return common.run_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(common.exit_status(main()))
