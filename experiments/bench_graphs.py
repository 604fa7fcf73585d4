"""Benchmark: Ising models on lattices. Heat-bath throughput (spin updates per second) of
jaxebm's colour-class sampler against jaxebm's dense heat bath on the same lattice and
against thrml's checkerboard block Gibbs, in one process; and the time of exact log Z and
exact moments by elimination.

Sampling: a 32 x 32 periodic Edwards-Anderson lattice (Gaussian couplings, beta = 0.4, small
random fields), 1000 chains, 100 sweeps from the same random start. Every implementation
runs the same model (thrml's ``IsingEBM`` with the lattice's edges, couplings, fields and
beta; its two free blocks are the checkerboard classes), compiled once, timed with
``block_until_ready`` as the best of 3 runs, the three interleaved so that a busy machine
slows them alike. thrml (0.1.4, ``pip install -e .[bench]``) joins when installed.

Exact: ``ising.log_partition`` and ``ising.moments`` of spin glasses (Gaussian couplings and
fields) on a 16 x 16 open lattice, a 10 x 10 torus and a random tree of 5000 nodes (not a
lattice: a scan that switches among its few distinct steps), and with ``--large`` a 24 x 24
open lattice; the first call of each (compile and run) is timed, then the best of 9 rounds in
which log Z and moments take turns (one round for the 24 x 24 lattice).

    python -m experiments.bench_graphs [--smoke] [--large] [--out DIR]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from jaxebm import elimination, graphs, ising, mcmc

NAME = "bench_graphs"
TITLE = "Benchmark: lattice Ising models, colour-class heat bath vs dense and thrml; exact log Z by elimination"

BETA = 0.4
FIELD = 0.1
# The targets on 2 CPU cores (seconds) for exact log Z; moments within 3x log Z.
EXACT_TARGETS = {"16x16 open": 0.5, "10x10 torus": 2.0, "24x24 open": 60.0}


def lattice_model(seed: int, rows: int, cols: int, periodic: bool, *, beta: float = 1.0, field: float = FIELD):
    """Edwards-Anderson spin glass (Gaussian couplings) on a rows x cols lattice."""
    graph = graphs.square_lattice(rows, cols, periodic=periodic)
    return ising.edwards_anderson(jax.random.key(seed), graph, beta=beta, couplings="gaussian", field=field)


def tree_model(seed: int, n: int, *, field: float):
    """Gaussian couplings and fields on a random tree of ``n`` nodes."""
    return ising.edwards_anderson(jax.random.key(seed), graphs.random_tree(seed, n), beta=1.0, couplings="gaussian",
                                  field=field)


def _random_spins(seed, chains, n):
    return jnp.where(jax.random.bernoulli(jax.random.key(seed), 0.5, (chains, n)), 1.0, -1.0).astype(jnp.float32)


def jaxebm_runner(params, chains: int, sweeps: int, seed: int):
    """A compiled ``() -> final spins`` running ``chains`` heat-bath chains for ``sweeps``
    sweeps (``params`` dense or on a graph; the same driver either way)."""
    algo = mcmc.heat_bath(params, 1.0)
    n = params.h.shape[0]
    states = jax.vmap(algo.init)(_random_spins(seed, chains, n))
    keys = jax.random.split(jax.random.key(seed + 1), chains)
    run = jax.jit(jax.vmap(lambda k, s: mcmc.run_chain(k, algo, s, sweeps, trace_fn=_no_trace)[0].x))
    return lambda: run(keys, states)


def _no_trace(state, info):
    return ()


def thrml_runner(params, chains: int, sweeps: int, seed: int):
    """thrml's own many-chain usage (a vmap of ``sample_states`` over keys and initial
    states) on the same model: ``IsingEBM`` with the lattice's nodes, edges, couplings,
    fields and beta = 1 (``params`` already carry the temperature), the two checkerboard
    classes as free blocks, ``sweeps`` warm-up sweeps and one recorded sample. Returns the
    final spins as +-1 floats, or None when thrml is not installed."""
    try:
        from thrml import Block, SamplingSchedule, SpinNode, sample_states
        from thrml.models import IsingEBM, IsingSamplingProgram
    except ImportError:
        return None
    graph = params.graph
    nodes = [SpinNode() for _ in range(graph.n)]
    edges = [(nodes[i], nodes[j]) for i, j in np.asarray(graph.edges)]
    model = IsingEBM(nodes, edges, jnp.asarray(params.h), jnp.asarray(params.J), jnp.asarray(1.0))
    order = [np.asarray(c) for c in graph.colour_classes]
    free = [Block([nodes[i] for i in cls]) for cls in order]
    program = IsingSamplingProgram(model, free, clamped_blocks=[])
    schedule = SamplingSchedule(n_warmup=sweeps, n_samples=1, steps_per_sample=1)
    x0 = np.asarray(_random_spins(seed, chains, graph.n)) > 0
    init = [jnp.asarray(x0[:, cls]) for cls in order]  # the same start as jaxebm's chains
    keys = jax.random.split(jax.random.key(seed + 1), chains)
    everything = [Block(nodes)]
    run = jax.jit(jax.vmap(lambda k, s: sample_states(k, program, schedule, s, [], everything)[0][0]))
    return lambda: jnp.where(run(keys, init), 1.0, -1.0)


def interleaved_best(runners: dict, repeats: int) -> dict:
    """Best wall time of each runner over ``repeats`` rounds, the runners taking turns."""
    for fn in runners.values():
        jax.block_until_ready(fn())  # compile
    best = dict.fromkeys(runners, np.inf)
    for _ in range(repeats):
        for name, fn in runners.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def energy_per_spin(params, x) -> float:
    """Mean energy per spin of a batch of configurations (a check that every implementation
    sampled the same model)."""
    return float(jnp.mean(jax.vmap(lambda s: ising.energy(params, s))(x)) / params.h.shape[0])


def sampling(seed: int, *, smoke: bool) -> tuple[dict, list[list]]:
    L, chains, sweeps = (8, 100, 5) if smoke else (32, 1000, 100)
    repeats = 1 if smoke else 3
    params = lattice_model(seed, L, L, True, beta=BETA)
    dense = ising.to_dense(params)
    runners = {"jaxebm colour classes": jaxebm_runner(params, chains, sweeps, seed),
               "jaxebm dense heat bath": jaxebm_runner(dense, chains, sweeps, seed)}
    peer = thrml_runner(params, chains, sweeps, seed)
    if peer is not None:
        from importlib.metadata import version

        runners[f"thrml {version('thrml')} checkerboard"] = peer
    best = interleaved_best(runners, repeats)
    updates = chains * L * L * sweeps
    record = {"lattice": f"{L}x{L} torus", "chains": chains, "sweeps": sweeps, "beta": BETA, "repeats": repeats,
              "thrml": "benchmarked" if peer is not None else "not installed", "runs": []}
    for name, seconds in best.items():
        e = energy_per_spin(params, runners[name]())
        record["runs"].append({"impl": name, "seconds": seconds, "updates_per_s": updates / seconds,
                               "final_energy_per_spin": e})
    rate = {r["impl"]: r["updates_per_s"] for r in record["runs"]}
    ours = rate["jaxebm colour classes"]
    record["speedup_vs_dense"] = ours / rate["jaxebm dense heat bath"]
    peer_name = next((k for k in rate if k.startswith("thrml")), None)
    if peer_name:
        record["speedup_vs_thrml"] = ours / rate[peer_name]
    rows = [[r["impl"], f"{r['seconds']:.3f}", f"{r['updates_per_s']:.3g}", f"{ours / r['updates_per_s']:.2f}x",
             f"{r['final_energy_per_spin']:.4f}"] for r in record["runs"]]
    return record, rows


def exact(seed: int, *, smoke: bool, large: bool) -> list[dict]:
    def lattice(rows, cols, periodic):
        return lambda: lattice_model(seed, rows, cols, periodic, beta=1.0, field=0.5)

    if smoke:
        cases = [("6x6 open", lattice(6, 6, False)), ("tree n=100", lambda: tree_model(seed, 100, field=0.5))]
    else:
        cases = [("16x16 open", lattice(16, 16, False)), ("10x10 torus", lattice(10, 10, True)),
                 ("tree n=5000", lambda: tree_model(seed, 5000, field=0.5))]
        if large:
            cases.append(("24x24 open", lattice(24, 24, False)))
    repeats = 1 if smoke else 9
    out = []
    for label, make in cases:
        params = make()
        n = params.graph.n
        jax.clear_caches()  # the first calls compile, even where an earlier chapter of the tour ran this graph
        first = {}
        for what, fn in (("log_z", ising.log_partition), ("moments", ising.moments)):
            start = time.perf_counter()
            jax.block_until_ready(fn(params))
            first[what] = time.perf_counter() - start
        reps = 1 if label == "24x24 open" else repeats  # the 24x24 lattice's moments take minutes
        # log Z and moments take turns, so that their ratio is measured in the same machine state
        # (timings on shared cores switch between a fast and a slow mode from run to run)
        best = interleaved_best({"log_z": lambda p=params: ising.log_partition(p),
                                 "moments": lambda p=params: ising.moments(p)}, reps)
        log_z, t_log_z, t_moments = ising.log_partition(params), best["log_z"], best["moments"]
        record = {"case": label, "n": n, "width": int(params.graph.width), "log_z": float(log_z),
                  "log_z_seconds": t_log_z, "moments_seconds": t_moments, "moments_over_log_z": t_moments / t_log_z,
                  "first_call_seconds": first}
        if label in EXACT_TARGETS:
            record["target_seconds"] = EXACT_TARGETS[label]
        out.append(record)
        print(f"  exact {label}: log Z {t_log_z:.4f} s, moments {t_moments:.4f} s (first calls "
              f"{first['log_z']:.2f} s, {first['moments']:.2f} s)", flush=True)
    return out


def run(out_dir: Path, *, smoke: bool = False, seed: int = 0, large: bool = False) -> dict:
    out_dir = Path(out_dir)
    sample_record, sample_rows = sampling(seed, smoke=smoke)
    exact_records = exact(seed, smoke=smoke, large=large)
    # elimination itself (ising.log_partition may pick enumeration for so small a graph) against
    # dense enumeration: a correctness check, not a timing
    small = lattice_model(seed, 4, 4, True, beta=1.0, field=0.5)
    eliminated = float(elimination.log_partition(small.h, small.J, small.graph))
    enum_gap = abs(eliminated - float(ising.log_partition(ising.to_dense(small))))

    # and on a random tree (not a lattice: the scan plan) against its closed form at zero field,
    # log Z = n log 2 + sum_e log cosh J_e
    tree = tree_model(seed, 100 if smoke else 5000, field=0.0)
    tree_exact = tree.graph.n * np.log(2.0) + float(np.sum(np.log(np.cosh(np.asarray(tree.J, np.float64)))))
    tree_gap = abs(float(ising.log_partition(tree)) - tree_exact) / abs(tree_exact)
    checks = [common.check("exact log Z by elimination equals dense enumeration on the 4x4 torus (|diff| <= 1e-4)",
                           enum_gap, enum_gap <= 1e-4),
              common.check(f"exact log Z by elimination on a {tree.graph.n}-node random tree equals the zero-field "
                           "closed form n log 2 + sum log cosh J (relative error <= 1e-5)", tree_gap, tree_gap <= 1e-5)]
    # Speed targets of issue #13 are reported, not asserted: timings depend on the machine and
    # its load, so they never decide whether the benchmark "passed".
    targets = []
    if not smoke:
        targets.append(["colour-class heat bath >= 10x jaxebm's dense heat bath (32x32 torus, 1000 chains)",
                        f"{sample_record['speedup_vs_dense']:.1f}x", sample_record["speedup_vs_dense"] >= 10])
        if "speedup_vs_thrml" in sample_record:
            targets.append(["colour-class heat bath at least as fast as thrml's checkerboard Gibbs",
                            f"{sample_record['speedup_vs_thrml']:.2f}x", sample_record["speedup_vs_thrml"] >= 1])
        for r in exact_records:
            if "target_seconds" in r:
                targets.append([f"exact log Z of the {r['case']} lattice <= {r['target_seconds']:g} s",
                                f"{r['log_z_seconds']:.3g} s", r["log_z_seconds"] <= r["target_seconds"]])
            if r["case"] in EXACT_TARGETS:  # the lattices
                targets.append([f"exact moments of the {r['case']} lattice <= 3x its log Z time",
                                f"{r['moments_over_log_z']:.2f}x", r["moments_over_log_z"] <= 3])
    target_rows = [[t, m, "met" if ok else "**not met**"] for t, m, ok in targets]

    s = sample_record
    exact_rows = [[r["case"], r["n"], r["width"], f"{r['log_z_seconds']:.4f}", f"{r['moments_seconds']:.4f}",
                   f"{r['moments_over_log_z']:.2f}",
                   f"{r['first_call_seconds']['log_z']:.2f} / {r['first_call_seconds']['moments']:.2f}",
                   f"{r.get('target_seconds', '-')}"] for r in exact_records]
    summary = (f"Heat bath on a {s['lattice']} (Edwards-Anderson, beta = {s['beta']}), {s['chains']} chains, "
               f"{s['sweeps']} sweeps, best of {s['repeats']}; thrml: {s['thrml']}.\n\n"
               + common.markdown_table(["implementation", "seconds", "spin updates/s", "colour classes vs this",
                                        "final energy/spin"], sample_rows)
               + "\n\nExact log Z and moments by elimination (spin glass, Gaussian couplings and fields):\n\n"
               + common.markdown_table(["graph", "n", "width", "log Z (s)", "moments (s)", "moments / log Z",
                                        "first calls (s): log Z / moments", "target (s)"], exact_rows)
               + (("\n\nSpeed targets (reported, not asserted):\n\n"
                   + common.markdown_table(["target", "measured", ""], target_rows)) if target_rows else "")
               + f"\n\nBackend {jax.default_backend()} ({jax.devices()[0].device_kind}).")
    return common.write_results(out_dir, NAME, seed=seed, smoke=smoke,
                                config={"beta": BETA, "field": FIELD, "large": large},
                                metrics={"sampling": sample_record, "exact": exact_records,
                                         "elimination_vs_enumeration_4x4": enum_gap,
                                         "tree_vs_closed_form_relative": tree_gap,
                                         "speed_targets": [{"target": t, "measured": m, "met": ok}
                                                           for t, m, ok in targets]},
                                figures=[], summary=summary, title=TITLE, checks=checks)


def main(argv=None):
    return common.run_main(sys.modules[__name__], argv,
                           large={"action": "store_true", "help": "also the 24x24 open lattice (about a minute)"})


if __name__ == "__main__":
    sys.exit(common.exit_status(main()))
