"""The benchmark suite in one command: every benchmark, each running its peers side by side in
this process, and one table of ratios.

    python -m experiments.benchmarks [--smoke] [--out runs/benchmarks] [--large]

Runs ``bench_enumeration`` (jaxebm vs a NumPy float64 brute force; on GPU, fused Pallas kernel
vs XLA), ``bench_gmm`` (vs scikit-learn GaussianMixture and gmmx when installed), ``bench_rbm``
(exact log Z; block Gibbs vs scikit-learn BernoulliRBM), ``bench_mcmc`` (Metropolis vs a
vectorised NumPy sweep) and ``bench_graphs`` (lattice heat bath: colour classes vs the dense
sampler and thrml when installed; exact log Z by elimination). Writes ``results.json`` (all
records, with the machine) and ``BENCHMARKS.md`` (the table below followed by each
benchmark's own table), under a subdirectory per benchmark as well. Paste the table into
the README's performance section; it names the backend and device, so CPU and GPU runs stay
apart.
"""

from __future__ import annotations

import datetime
import importlib
import json
import sys
from pathlib import Path

import jax

from experiments import common

NAME = "benchmarks"
TITLE = "Benchmark suite: jaxebm against its peers"
SUITE = ("bench_enumeration", "bench_gmm", "bench_rbm", "bench_mcmc", "bench_graphs")


def _headlines(name: str, metrics: dict) -> list[list]:
    """Rows ``[benchmark, case, jaxebm, peer, ratio]`` for the combined table."""
    rows = []
    if name == "bench_enumeration":
        for r in metrics["runs"]:
            if "numpy_f64_seconds" in r:
                rows.append([name, f"log Z, dense N={r['n']} ({r['engine']})", f"{r['log_z_seconds']:.4f} s",
                             f"NumPy f64 {r['numpy_f64_seconds']:.3f} s", f"{r['speedup_vs_numpy']:.0f}x faster"])
            else:
                rows.append([name, f"log Z, dense N={r['n']} ({r['engine']})", f"{r['log_z_seconds']:.4f} s",
                             "-", f"{r['log_z_states_per_s']:.3g} states/s"])
            if "pallas_speedup_vs_xla" in r:
                rows.append([name, f"log Z N={r['n']}: fused kernel vs XLA", f"{r['log_z_seconds']:.4f} s",
                             f"XLA {r['xla_log_z_seconds']:.4f} s", f"{r['pallas_speedup_vs_xla']:.2f}x"])
    elif name == "bench_gmm":
        case = f"EM n={metrics['n']}, d={metrics['d']}, K={metrics['K']}, {metrics['iterations']} iters"
        ours = f"{metrics['jaxebm_seconds']:.3f} s"
        rows.append([name, case, ours, f"scikit-learn {metrics['sklearn_seconds']:.3f} s",
                     f"{metrics['speedup_vs_sklearn']:.1f}x faster"])
        if metrics.get("gmmx") == "benchmarked":
            rows.append([name, case, ours, f"gmmx {metrics['gmmx_seconds']:.3f} s",
                         f"{metrics['speedup_vs_gmmx']:.1f}x faster"])
    elif name == "bench_rbm":
        for r in metrics["log_z"]:
            rows.append([name, f"exact log Z {r['n_visible']}x{r['n_hidden']} ({r['engine']})", f"{r['seconds']:.3f} s",
                         f"XLA {r['xla_seconds']:.3f} s" if "xla_seconds" in r else "-",
                         f"{r['pallas_speedup_vs_xla']:.2f}x" if "xla_seconds" in r else "-"])
        ours = [g for g in metrics["gibbs"] if g["impl"].startswith("jaxebm")]
        peer = [g for g in metrics["gibbs"] if not g["impl"].startswith("jaxebm")][0]
        for g in ours:
            rows.append([name, f"block Gibbs 784x500, {g['chains']} chains, {g['impl']}",
                         f"{g['flips_per_s']:.3g} flips/s", f"scikit-learn {peer['flips_per_s']:.3g} flips/s",
                         f"{g['flips_per_s'] / peer['flips_per_s']:.1f}x"])
    elif name == "bench_mcmc":
        for r in metrics["throughput"]:
            rows.append([name, f"Metropolis n={r['n']}, {r['chains']} chains", f"{r['jaxebm_updates_per_s']:.3g} /s",
                         f"NumPy {r['numpy_updates_per_s']:.3g} /s", f"{r['speedup']:.2f}x"])
    elif name == "bench_graphs":
        s = metrics["sampling"]
        case = f"heat bath {s['lattice']}, {s['chains']} chains, {s['sweeps']} sweeps"
        ours = s["runs"][0]
        for peer in s["runs"][1:]:
            rows.append([name, case, f"{ours['updates_per_s']:.3g} /s",
                         f"{peer['impl']} {peer['updates_per_s']:.3g} /s",
                         f"{ours['updates_per_s'] / peer['updates_per_s']:.1f}x"])
        for r in metrics["exact"]:
            first = r["first_call_seconds"]
            rows.append([name, f"exact log Z / moments, {r['case']} (width {r['width']})",
                         f"{r['log_z_seconds']:.4f} s / {r['moments_seconds']:.4f} s "
                         f"(first calls {first['log_z']:.2f} s / {first['moments']:.2f} s)",
                         f"target {r['target_seconds']:g} s" if "target_seconds" in r else "-",
                         f"{r['moments_over_log_z']:.1f}x"])
    return rows


def run(out_dir: Path, *, smoke: bool = False, seed: int = 0, large: bool = False) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records, rows, sections = {}, [], []
    for name in SUITE:
        module = importlib.import_module(f"experiments.{name}")
        print(f"== {name}", flush=True)
        kwargs = {"large": large} if name in ("bench_rbm", "bench_graphs") else {}
        record = module.run(out_dir / name, smoke=smoke, seed=seed, **kwargs)
        records[name] = record
        rows += _headlines(name, record["metrics"])
        sections.append(f"### {record['title']}\n\n{record['summary']}")
    env = common.environment()
    device = f"{jax.default_backend()} ({jax.devices()[0].device_kind}, {jax.device_count()} device(s))"
    header = (f"Measured {datetime.date.today().isoformat()} on {device}, jax {jax.__version__}, "
              f"command `python -m experiments.benchmarks{' --smoke' if smoke else ''}{' --large' if large else ''}`.")
    table = common.markdown_table(["benchmark", "case", "jaxebm", "peer", "ratio"], rows)
    markdown = f"# {TITLE}\n\n{header}\n\n{table}\n\n" + "\n\n".join(sections) + "\n"
    (out_dir / "BENCHMARKS.md").write_text(markdown)
    result = {"name": NAME, "title": TITLE, "smoke": smoke, "seed": seed, "environment": env, "device": device,
              "headlines": rows, "benchmarks": records, "summary": f"{header}\n\n{table}"}
    (out_dir / "results.json").write_text(json.dumps(common.to_jsonable(result), indent=2))
    return result


def main(argv=None):
    parser = common.make_parser(NAME, TITLE)
    parser.add_argument("--large", action="store_true",
                        help="also the GPU-sized RBMs (784x28, 784x32) and the 24x24 lattice's exact log Z")
    args = parser.parse_args(argv)
    result = run(args.out, smoke=args.smoke, seed=args.seed, large=args.large)
    print(result["summary"])
    print(f"\nwrote {Path(args.out) / 'results.json'} and {Path(args.out) / 'BENCHMARKS.md'}")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
