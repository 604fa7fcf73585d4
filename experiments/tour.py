"""The tour: runs every chapter's experiment and writes one report.

    python -m experiments.tour [--smoke] [--out runs/tour] [--only NAME ...]

Writes ``REPORT.md`` (each chapter's key numbers and figures) and one sub-directory per
chapter holding its ``results.json`` and PNGs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

from experiments import common

# In reading order; each module provides NAME, TITLE and run(out_dir, *, smoke, seed).
CHAPTERS = (
    "experiments.ch2_gaussian",
    "experiments.bench_enumeration",
    "experiments.ch2_ising",
    "experiments.ch2_learning_rate",
    "experiments.ch3_gmm_em",
    "experiments.bench_gmm",
    "experiments.ch4_rbm",
    "experiments.bench_rbm",
    "experiments.ch5_mcmc",
    "experiments.ch6_replica_exchange",
    "experiments.bench_mcmc",
    "experiments.ch7_without_mcmc",
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.tour", description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="seconds per chapter")
    parser.add_argument("--out", type=Path, default=Path("runs") / "tour")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="+", default=None, help="run only these chapter NAMEs")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    env = common.environment()
    sections, failures = [], []
    for module_name in CHAPTERS:
        module = importlib.import_module(module_name)
        if args.only and module.NAME not in args.only:
            continue
        print(f"== {module.TITLE}", flush=True)
        start = time.perf_counter()
        try:
            record = module.run(out / module.NAME, smoke=args.smoke, seed=args.seed)
        except Exception:  # report and continue: one failing chapter must not hide the others
            failures.append(module.NAME)
            trace = traceback.format_exc()
            print(trace, file=sys.stderr)
            sections.append(f"## {module.TITLE}\n\n**FAILED**\n\n```\n{trace}\n```\n")
            continue
        seconds = time.perf_counter() - start
        figures = "\n".join(f"![{f}]({module.NAME}/{f})" for f in record["figures"])
        sections.append(
            f"## {module.TITLE}\n\n{record['summary']}\n\n{figures}\n\n"
            f"_{seconds:.1f} s; details in [`{module.NAME}/results.json`]({module.NAME}/results.json)_\n")
        print(f"   done in {seconds:.1f} s", flush=True)

    header = (
        "# jaxebm tour\n\n"
        f"Mode: {'smoke' if args.smoke else 'full'}; seed {args.seed}; JAX {env['jax']} on {env['backend']} "
        f"({', '.join(env['devices'])}); {env['date']}.\n\n"
    )
    (out / "REPORT.md").write_text(header + "\n".join(sections))
    print(f"wrote {out / 'REPORT.md'}")
    if failures:
        print(f"FAILED chapters: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
