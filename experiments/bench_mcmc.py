"""Benchmark: single-spin Metropolis throughput (spin updates per second) for dense SK models,
jaxebm against a vectorised NumPy implementation of the same sequential sweep, in one run;
and how throughput grows with the number of chains. jaxebm and NumPy take turns (best of 5
each), so that both are timed in the same state of a shared machine.

    python -m experiments.bench_mcmc [--smoke] [--out DIR]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from jaxebm import ising, mcmc

NAME = "bench_mcmc"
TITLE = "Benchmark: Metropolis spin updates per second, jaxebm vs NumPy"


def numpy_sweeps(h, J, x, sweeps, rng):
    """The same sequential Metropolis sweep, vectorised over chains in NumPy (float32)."""
    n = x.shape[1]
    for _ in range(sweeps):
        u = 1.0 - rng.random(x.shape, dtype=np.float32)  # in (0, 1]: no log(0)
        for i in range(n):
            field = h[i] + x @ J[:, i]
            flip = np.log(u[:, i]) < -2.0 * x[:, i] * field
            x[:, i] = np.where(flip, -x[:, i], x[:, i])
    return x


def jax_runner(params, chains, sweeps):
    """A compiled ``() -> states`` running ``chains`` Metropolis chains for ``sweeps`` sweeps."""
    algo = mcmc.metropolis(params)
    n = params.h.shape[0]
    x0 = jax.random.rademacher(jax.random.key(0), (chains, n), jnp.float32)
    states = jax.vmap(algo.init)(x0)
    run = jax.jit(jax.vmap(lambda k, s: mcmc.run_chain(k, algo, s, sweeps, trace_fn=lambda s, i: ())[0]))
    keys = jax.random.split(jax.random.key(1), chains)
    jax.block_until_ready(run(keys, states))  # compile
    return lambda: jax.block_until_ready(run(keys, states))


def jax_rate(params, chains, sweeps, repeats):
    run = jax_runner(params, chains, sweeps)
    _, seconds = common.timed(run, repeats)
    return chains * params.h.shape[0] * sweeps / seconds


def run(out_dir: Path, *, smoke: bool = False, seed: int = 0) -> dict:
    sizes = (64,) if smoke else (64, 256)
    chain_counts = (100, 1000) if smoke else (1000, 10000)
    repeats = 1 if smoke else 5
    rows, records = [], []
    for n in sizes:
        params = ising.sherrington_kirkpatrick(jax.random.key(seed), n, beta=1.0, field_std=0.1)
        h, J = np.asarray(params.h), np.asarray(params.J)
        for chains in chain_counts:
            # about 2e7 spin updates (at least 10 sweeps) per timing, so fixed costs do not dominate
            sweeps = max(10, int(2e7 // (chains * n))) if not smoke else 2
            run = jax_runner(params, chains, sweeps)
            rng = np.random.default_rng(seed)
            np_sweeps = max(2, sweeps // 2)
            best, np_best = np.inf, np.inf
            # the two take turns, so that both are timed in the same machine state (shared cores
            # switch between a fast and a slow mode over minutes)
            for _ in range(repeats):
                start = time.perf_counter()
                run()
                best = min(best, time.perf_counter() - start)
                x = np.where(rng.random((chains, n)) < 0.5, 1.0, -1.0).astype(np.float32)
                start = time.perf_counter()
                numpy_sweeps(h, J, x, np_sweeps, rng)
                np_best = min(np_best, time.perf_counter() - start)
            rate = chains * n * sweeps / best
            np_rate = chains * n * np_sweeps / np_best
            records.append({"n": n, "chains": chains, "jaxebm_updates_per_s": rate, "numpy_updates_per_s": np_rate,
                            "speedup": rate / np_rate})
            rows.append([n, chains, f"{rate:.3g}", f"{np_rate:.3g}", f"{rate / np_rate:.1f}x"])
            print(f"  n={n} chains={chains}: jaxebm {rate:.3g}/s, numpy {np_rate:.3g}/s", flush=True)
    # chain-parallel scaling at n = 64
    params = ising.sherrington_kirkpatrick(jax.random.key(seed), 64, beta=1.0, field_std=0.1)
    scaling = []
    for chains in ((1, 10, 100) if smoke else (1, 10, 100, 1000, 10000)):
        sweeps = max(2, int(5e6 // (chains * 64 * 64)) + 1)
        scaling.append({"chains": chains, "updates_per_s": jax_rate(params, chains, sweeps, repeats)})
    figures = common.Figures(out_dir)
    plt = figures.plt
    if plt is not None:
        fig, ax = plt.subplots(figsize=(5, 4))
        c = np.array([s["chains"] for s in scaling])
        r = np.array([s["updates_per_s"] for s in scaling])
        ax.loglog(c, r, "o-", label="jaxebm")
        ax.loglog(c, r[0] * c, "k:", label="linear")
        ax.set_xlabel("chains")
        ax.set_ylabel("spin updates / s")
        ax.set_title(f"Metropolis, dense n=64, {jax.default_backend()}")
        ax.legend()
        figures.save(fig, "mcmc_scaling.png")
    summary = (common.markdown_table(["n", "chains", "jaxebm updates/s", "NumPy updates/s", "speedup"], rows)
               + "\n\nChain-parallel scaling at n = 64: "
               + ", ".join(f"{s['chains']}: {s['updates_per_s']:.3g}/s" for s in scaling)
               + f". Backend {jax.default_backend()} ({jax.devices()[0].device_kind}).")
    return common.write_results(out_dir, NAME, seed=seed, smoke=smoke, config={"sizes": sizes, "chains": chain_counts},
                                metrics={"throughput": records, "scaling": scaling}, figures=figures.names,
                                summary=summary, title=TITLE)


def main(argv=None):
    return common.run_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(common.exit_status(main()))
