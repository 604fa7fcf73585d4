"""Benchmark of the exact enumeration engine: states/s and time against N, for log Z and for
moments, on whatever backend runs it; float32 accuracy against float64 at N <= 24; a NumPy
float64 brute force (chunked, BLAS) side by side up to N = 22. On GPU both engines (fused
Pallas kernel and XLA) are timed.

Checks (no speed claims): log Z agrees with the NumPy float64 peer, and float32 log Z and
moments agree with float64, to about ten float32 ulps (relative 1e-6 for log Z, 1e-5
absolute for moments in [-1, 1]).

    python -m experiments.bench_enumeration [--smoke] [--sizes 20 24 28 30 32] [--out DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from jaxebm import enumeration, kernels

NAME = "bench_enumeration"
TITLE = "Exact enumeration engine: throughput and float32 accuracy"

FULL_SIZES = (16, 20, 24, 26, 28, 30, 32)
SMOKE_SIZES = (12, 16, 20)
MOMENT_MAX_N = 30
NUMPY_MAX_N = 22
LOG_Z_RTOL = 1e-6  # about ten float32 ulps (eps 1.2e-7)
MOMENTS_ATOL = 1e-5


def numpy_log_z(h, J, chunk_bits: int = 16) -> float:
    """The peer: float64 NumPy brute force over all 2^n states, in chunks (BLAS matmuls)."""
    h, J = np.asarray(h, np.float64), np.asarray(J, np.float64)
    n = h.shape[0]
    c = min(n, chunk_bits)
    bits = ((np.arange(2**c)[:, None] >> np.arange(c)) & 1) * 2.0 - 1.0
    m, s = -np.inf, 0.0
    for hi in range(2 ** (n - c)):
        high = ((hi >> np.arange(n - c)) & 1) * 2.0 - 1.0
        X = np.concatenate([bits, np.broadcast_to(high, (2**c, n - c))], axis=1)
        L = 0.5 * np.einsum("bi,bi->b", X @ J, X) + X @ h
        mn = max(m, L.max())
        s = s * np.exp(m - mn) + np.exp(L - mn).sum()
        m = mn
    return float(m + np.log(s))


def dense_model(n: int, seed: int, dtype=np.float32):
    """An SK-type dense model at beta = 1 with small fields."""
    rng = np.random.default_rng(seed)
    J = np.triu(rng.normal(size=(n, n)) / np.sqrt(n), 1)
    J = J + J.T
    h = 0.1 * rng.normal(size=n)
    return jnp.asarray(h, dtype), jnp.asarray(J, dtype)


def run(out_dir: Path, *, smoke: bool = False, seed: int = 0, sizes=None) -> dict:
    sizes = tuple(sizes) if sizes else (SMOKE_SIZES if smoke else FULL_SIZES)
    repeats = 1 if smoke else 3
    log_z_fn = jax.jit(enumeration.pairwise_log_partition)
    moments_fn = jax.jit(enumeration.pairwise_moments)
    on_gpu = jax.default_backend() == "gpu"
    xla_log_z_fn = jax.jit(lambda h, J: enumeration.pairwise_log_partition(h, J, engine="xla"))
    rows, records = [], []
    for n in sizes:
        h, J = dense_model(n, seed)
        log_z, t_z = common.timed(lambda h=h, J=J: log_z_fn(h, J), repeats)
        record = {"n": n, "states": 2**n, "log_z": float(log_z), "log_z_seconds": t_z,
                  "log_z_states_per_s": 2**n / t_z}
        record["engine"] = kernels.resolve(None)
        if on_gpu and record["engine"] == "pallas":
            _, t_x = common.timed(lambda h=h, J=J: xla_log_z_fn(h, J), repeats)
            record.update(xla_log_z_seconds=t_x, pallas_speedup_vs_xla=t_x / t_z)
        if n <= NUMPY_MAX_N:
            ref_np, t_np = common.timed(lambda h=h, J=J: numpy_log_z(h, J), 1)
            record.update(numpy_f64_seconds=t_np, speedup_vs_numpy=t_np / t_z,
                          numpy_vs_jaxebm_log_z_rel_diff=abs(ref_np - float(log_z)) / abs(ref_np))
        if n <= MOMENT_MAX_N:
            _, t_m = common.timed(lambda h=h, J=J: moments_fn(h, J), repeats)
            record.update(moments_seconds=t_m, moments_states_per_s=2**n / t_m, moments_over_log_z=t_m / t_z)
        if n <= 24:
            with jax.enable_x64(True):
                h64, J64 = dense_model(n, seed, np.float64)
                ref = float(enumeration.pairwise_log_partition(h64, J64))
                _, m64, c64 = enumeration.pairwise_moments(h64, J64)
                m64, c64 = np.asarray(m64), np.asarray(c64)
            _, m32, c32 = moments_fn(h, J)
            record["f32_vs_f64_log_z_rel_err"] = abs(float(log_z) - ref) / abs(ref)
            record["f32_vs_f64_moments_max_abs_err"] = float(max(np.abs(np.asarray(m32) - m64).max(),
                                                                 np.abs(np.asarray(c32) - c64).max()))
        records.append(record)
        rows.append([n, f"{t_z:.4f}", f"{2**n / t_z:.3g}", f"{record.get('moments_seconds', float('nan')):.4f}",
                     f"{record.get('moments_over_log_z', float('nan')):.2f}",
                     f"{record.get('f32_vs_f64_log_z_rel_err', float('nan')):.1e}",
                     f"{record.get('numpy_f64_seconds', float('nan')):.3f}",
                     f"{record.get('speedup_vs_numpy', float('nan')):.0f}x"])
        print(f"N={n}: log Z {t_z:.4f}s ({2**n / t_z:.3g} states/s)", flush=True)

    figures = common.Figures(out_dir)
    plt = figures.plt
    if plt is not None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        ns = [r["n"] for r in records]
        axes[0].semilogy(ns, [r["log_z_seconds"] for r in records], "o-", label="log Z")
        mom = [r for r in records if "moments_seconds" in r]
        axes[0].semilogy([r["n"] for r in mom], [r["moments_seconds"] for r in mom], "s-", label="moments")
        axes[0].set_xlabel("N (spins)")
        axes[0].set_ylabel("seconds")
        axes[0].legend()
        axes[1].plot(ns, [r["log_z_states_per_s"] for r in records], "o-")
        axes[1].set_xlabel("N (spins)")
        axes[1].set_ylabel("states / s (log Z)")
        backend = jax.default_backend()
        fig.suptitle(f"split enumeration on {backend} ({jax.devices()[0].device_kind})")
        figures.save(fig, "enumeration_scaling.png")
    summary = common.markdown_table(
        ["N", "log Z s", "states/s", "moments s", "moments / log Z", "f32 vs f64 rel err", "NumPy f64 s",
         "vs NumPy"], rows) + f"\n\nEngine: {kernels.resolve(None)} on {jax.default_backend()}."
    config = {"sizes": list(sizes), "repeats": repeats, "model": "dense SK, beta=1, h~N(0,0.1^2)",
              "precision": "HIGHEST", "dtype": "float32"}
    return common.write_results(out_dir, NAME, seed=seed, smoke=smoke, config=config,
                                metrics={"runs": records}, figures=figures.names, summary=summary, title=TITLE,
                                checks=_checks(records))


def _checks(records):
    checks = []
    for key, what, tol in (("numpy_vs_jaxebm_log_z_rel_diff", "log Z agrees with the NumPy float64 brute force "
                            f"(relative difference <= {LOG_Z_RTOL:g})", LOG_Z_RTOL),
                           ("f32_vs_f64_log_z_rel_err", f"float32 log Z agrees with float64 (relative error <= "
                            f"{LOG_Z_RTOL:g})", LOG_Z_RTOL),
                           ("f32_vs_f64_moments_max_abs_err", f"float32 moments agree with float64 (largest error <= "
                            f"{MOMENTS_ATOL:g})", MOMENTS_ATOL)):
        compared = [r for r in records if key in r]
        if compared:
            worst = max(r[key] for r in compared)
            checks.append(common.check(f"{what}, N = {', '.join(str(r['n']) for r in compared)}", worst, worst <= tol))
    return checks


def main(argv=None):
    return common.run_main(sys.modules[__name__], argv,
                           sizes={"type": int, "nargs": "+", "default": None, "help": "N values to time"})


if __name__ == "__main__":
    sys.exit(common.exit_status(main()))
