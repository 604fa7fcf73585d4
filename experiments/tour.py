"""The tour: runs every chapter's experiment, then the benchmarks, and writes one report.

    python -m experiments.tour [--smoke] [--out runs/tour] [--only NAME ...]

Writes ``REPORT.md`` and one sub-directory per experiment holding its ``results.json`` and
PNGs. The report opens with a table of every claim of every experiment, its measured figure
and whether it held; then each chapter's key numbers and figures; then the benchmarks in a
section of their own. The tour exits with status 1, naming the failed claims loudly, when an
experiment crashes or a claim fails (in ``--smoke`` mode only the claims that smoke mode
asserts count).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

from experiments import benchmarks, common

# In reading order; each module provides NAME, TITLE and run(out_dir, *, smoke, seed).
CHAPTERS = (
    "experiments.ch2_gaussian",
    "experiments.ch2_ising",
    "experiments.ch2_learning_rate",
    "experiments.ch3_gmm_em",
    "experiments.ch4_rbm",
    "experiments.ch5_mcmc",
    "experiments.ch6_replica_exchange",
    "experiments.ch6_lattice",
    "experiments.ch7_without_mcmc",
)
# After the chapters, in a section of their own: the benchmark suite's scripts (jaxebm
# against its peers; ``python -m experiments.benchmarks`` runs them alone with one table).
BENCHMARKS = tuple(f"experiments.{name}" for name in benchmarks.SUITE)


def _run(module, out: Path, args) -> tuple[str, list[dict]]:
    """Runs one experiment: its report section and its checks (a failed check when it crashes)."""
    print(f"== {module.TITLE}", flush=True)
    start = time.perf_counter()
    try:
        record = module.run(out / module.NAME, smoke=args.smoke, seed=args.seed)
    except Exception:  # report and continue: one failing experiment must not hide the others
        trace = traceback.format_exc()
        print(trace, file=sys.stderr)
        crash = common.check("runs to completion", "raised an exception (see its section)", False)
        return f"### {module.TITLE}\n\n**FAILED**\n\n```\n{trace}\n```\n", [{**crash, "experiment": module.NAME}]
    seconds = time.perf_counter() - start
    report = common.failure_report(record)
    if report:
        print(report, file=sys.stderr, flush=True)
    figures = "\n".join(f"![{f}]({module.NAME}/{f})" for f in record["figures"])
    section = (f"### {module.TITLE}\n\n{record['summary']}\n\n{figures}\n\n"
               f"_{seconds:.1f} s; details in [`{module.NAME}/results.json`]({module.NAME}/results.json)_\n")
    print(f"   done in {seconds:.1f} s", flush=True)
    return section, [{**c, "experiment": module.NAME} for c in record["checks"]]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.tour", description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="seconds per experiment")
    parser.add_argument("--out", type=Path, default=Path("runs") / "tour")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="+", default=None, help="run only these experiment NAMEs")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    env = common.environment()
    checks, parts = [], []
    for heading, module_names in (("Chapters", CHAPTERS), ("Benchmarks", BENCHMARKS)):
        sections = []
        for module_name in module_names:
            module = importlib.import_module(module_name)
            if args.only and module.NAME not in args.only:
                continue
            section, module_checks = _run(module, out, args)
            sections.append(section)
            checks += module_checks
        if sections:
            parts.append(f"## {heading}\n\n" + "\n".join(sections))

    failed = common.failed_checks({"checks": checks}, smoke=args.smoke)
    held = sum(c["passed"] for c in checks)
    mode = "smoke" if args.smoke else "full"
    header = (
        "# jaxebm tour\n\n"
        f"Mode: {mode}; seed {args.seed}; JAX {env['jax']} on {env['backend']} "
        f"({', '.join(env['devices'])}); {env['date']}.\n\n"
    )
    claims = (f"## Claims\n\n{held} of {len(checks)} claims held"
              + (" (smoke mode asserts only those its sizes support)" if args.smoke else "")
              + (f"; **{len(failed)} FAILED**" if failed else "") + ".\n\n"
              + common.checks_table(checks, smoke=args.smoke) + "\n\n")
    (out / "REPORT.md").write_text(header + claims + "\n".join(parts))
    print(f"wrote {out / 'REPORT.md'}")
    if failed:
        lines = [f"!!! {len(failed)} CLAIM(S) FAILED ({mode} run):"]
        lines += [f"!!!   {c['experiment']}: {c['claim']}: measured {c['measured']}" for c in failed]
        print("\n".join(lines), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
