"""Benchmark: exact RBM log Z and block-Gibbs throughput, with scikit-learn's BernoulliRBM
Gibbs sampler in the same run.

* exact log Z: 64x24 and 784x20 (and, with --large, 784x28 / 784x32 on a GPU);
* block Gibbs 784x500 with 1000 chains: spin flips/s counted as (n_visible + n_hidden)
  updated units per chain per sweep, at HIGHEST and DEFAULT matmul precision;
* scikit-learn BernoulliRBM.gibbs on the same shapes.

    python -m experiments.bench_rbm [--smoke] [--large] [--out DIR]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from experiments import common
from jaxebm import kernels, rbm

NAME = "bench_rbm"
TITLE = "Benchmark: exact RBM log Z and block-Gibbs throughput"


def gibbs_throughput(nv, nh, chains, sweeps, precision, repeats):
    params = rbm.init(jax.random.key(0), nv, nh, scale=0.05)

    @jax.jit
    def run(key, x):
        def body(x, k):
            return rbm.gibbs_step(k, params, x, precision=precision)[0], None

        return lax.scan(body, x, jax.random.split(key, sweeps))[0]

    x0 = jax.random.rademacher(jax.random.key(1), (chains, nv), jnp.float32)
    _, seconds = common.timed(lambda: run(jax.random.key(2), x0), repeats)
    return chains * sweeps * (nv + nh) / seconds, seconds


def gibbs_bounds(nv, nh, chains, sweeps, repeats):
    """The two parts of a block-Gibbs sweep timed apart: the matmuls + tanh with the random
    draws replaced by a threshold, and the exact threefry uniforms alone."""
    params = rbm.init(jax.random.key(0), nv, nh, scale=0.05)

    @jax.jit
    def no_randoms(key, x):
        def body(x, k):
            z = jnp.where(rbm.hidden_mean(params, x) > 0, 1.0, -1.0)
            return jnp.where(rbm.visible_mean(params, z) > 0, 1.0, -1.0), None

        return lax.scan(body, x, jax.random.split(key, sweeps))[0]

    @jax.jit
    def randoms_only(key, x):
        def body(x, k):
            k1, k2 = jax.random.split(k)
            return x + jnp.sum(jax.random.uniform(k1, (chains, nh))) + jax.random.uniform(k2, (chains, nv)), None

        return lax.scan(body, x, jax.random.split(key, sweeps))[0]

    x0 = jax.random.rademacher(jax.random.key(1), (chains, nv), jnp.float32)
    flips = chains * sweeps * (nv + nh)
    out = {}
    for name, fn in (("matmuls_and_tanh_only", no_randoms), ("uniforms_only", randoms_only)):
        _, seconds = common.timed(lambda fn=fn: fn(jax.random.key(2), x0), repeats)
        out[name] = {"ms_per_sweep": 1e3 * seconds / sweeps, "flips_per_s": flips / seconds}
    return out


def sklearn_gibbs(nv, nh, chains, sweeps, repeats):
    from sklearn.neural_network import BernoulliRBM

    sk = BernoulliRBM(n_components=nh, random_state=0)
    rng = np.random.default_rng(0)
    sk.components_ = rng.normal(scale=0.05, size=(nh, nv))
    sk.intercept_hidden_ = np.zeros(nh)
    sk.intercept_visible_ = np.zeros(nv)
    sk.random_state_ = np.random.RandomState(0)
    v = (rng.random((chains, nv)) < 0.5).astype(np.float64)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        w = v
        for _ in range(sweeps):
            w = sk.gibbs(w)
        best = min(best, time.perf_counter() - start)
    return chains * sweeps * (nv + nh) / best, best


def run(out_dir: Path, *, smoke: bool = False, seed: int = 0, large: bool = False) -> dict:
    repeats = 1 if smoke else 3
    shapes = [(64, 12), (200, 14)] if smoke else [(64, 24), (784, 20)]
    if large:
        shapes += [(784, 28), (784, 32)]
    rows, records = [], {"log_z": [], "gibbs": []}
    for nv, nh in shapes:
        params = rbm.init(jax.random.key(seed), nv, nh, scale=0.05)
        fn = jax.jit(lambda p: rbm.log_partition(p, max_seconds=3600))
        _, seconds = common.timed(lambda p=params, fn=fn: fn(p), repeats)
        engine = kernels.resolve(None)
        record = {"n_visible": nv, "n_hidden": nh, "seconds": seconds, "engine": engine}
        rows.append([f"exact log Z {nv}x{nh} ({engine})", f"{seconds:.3f} s", ""])
        if engine == "pallas":  # GPU: the unfused XLA path side by side
            xla = jax.jit(lambda p: rbm.log_partition(p, max_seconds=3600, engine="xla"))
            _, t_xla = common.timed(lambda p=params, fn=xla: fn(p), repeats)
            record.update(xla_seconds=t_xla, pallas_speedup_vs_xla=t_xla / seconds)
            rows.append([f"exact log Z {nv}x{nh} (xla)", f"{t_xla:.3f} s", ""])
        records["log_z"].append(record)
    nv, nh = (784, 500)
    chains, sweeps = (100, 5) if smoke else (1000, 20)
    for name, precision in [("HIGHEST", lax.Precision.HIGHEST), ("DEFAULT", lax.Precision.DEFAULT)]:
        rate, seconds = gibbs_throughput(nv, nh, chains, sweeps, precision, repeats)
        records["gibbs"].append({"impl": f"jaxebm ({name})", "flips_per_s": rate, "seconds": seconds,
                                 "chains": chains, "sweeps": sweeps})
        rows.append([f"block Gibbs {nv}x{nh}, {chains} chains, jaxebm precision={name}", f"{seconds:.3f} s",
                     f"{rate:.3g} flips/s"])
    bounds = gibbs_bounds(nv, nh, chains, sweeps, repeats)
    records["gibbs_parts"] = bounds
    for name, b in bounds.items():
        rows.append([f"block Gibbs {nv}x{nh}, {chains} chains: {name.replace('_', ' ')}",
                     f"{b['ms_per_sweep']:.2f} ms/sweep", f"{b['flips_per_s']:.3g} flips/s"])
    rate, seconds = sklearn_gibbs(nv, nh, chains, sweeps, repeats)
    records["gibbs"].append({"impl": "scikit-learn BernoulliRBM.gibbs (float64)", "flips_per_s": rate,
                             "seconds": seconds, "chains": chains, "sweeps": sweeps})
    rows.append([f"block Gibbs {nv}x{nh}, {chains} chains, scikit-learn", f"{seconds:.3f} s", f"{rate:.3g} flips/s"])
    summary = (common.markdown_table(["what", "time", "throughput"], rows)
               + f"\n\nBackend {jax.default_backend()} ({jax.devices()[0].device_kind}); flips = (n_visible + n_hidden)"
               " units per chain per sweep.")
    return common.write_results(out_dir, NAME, seed=seed, smoke=smoke, config={"shapes": shapes, "large": large},
                                metrics=records, figures=[], summary=summary, title=TITLE)


def main(argv=None):
    return common.run_main(sys.modules[__name__], argv,
                           large={"action": "store_true", "help": "also 784x28 and 784x32 (GPU sizes)"})


if __name__ == "__main__":
    sys.exit(common.exit_status(main()))
