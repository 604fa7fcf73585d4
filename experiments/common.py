"""Shared conventions for experiment scripts.

Each experiment module defines ``NAME``, ``TITLE``, ``run(out_dir, *, smoke, seed) -> dict``
and ``main(argv=None)``. ``run`` writes ``results.json`` (config, seed, versions, devices,
metrics, and ``checks``: each claim of the module docstring with its measured figure and
whether it held, see :func:`check`) and PNG figures (when matplotlib is installed, see
:class:`Figures`) into ``out_dir`` and returns the same record plus a short markdown
summary for the tour's REPORT.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def make_parser(name: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m experiments.{name}", description=description)
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run (used by the tests)")
    parser.add_argument("--out", type=Path, default=Path("runs") / name, help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed")
    return parser


def environment() -> dict[str, Any]:
    """Versions and devices, recorded in every results.json."""
    import jax
    import jaxlib
    import optax

    devices = jax.devices()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in devices],
        "device_kind": devices[0].device_kind if devices else None,
        "x64": bool(jax.config.jax_enable_x64),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def to_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy / jax arrays and scalars
        return to_jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def check(claim: str, measured: Any, passed: bool, *, smoke: bool = True) -> dict:
    """One claim of a chapter with its measured figure and whether it held.

    ``smoke=False`` marks a claim that only the full run can support (too few samples or
    steps in smoke mode): the smoke tests then record it without asserting it.
    """
    return {"claim": claim, "measured": measured, "passed": bool(passed), "asserted_in_smoke": bool(smoke)}


def failed_checks(record: dict, *, smoke: bool) -> list[dict]:
    """The checks that failed and that this mode asserts (all of them in a full run)."""
    return [c for c in record.get("checks", []) if not c["passed"] and (not smoke or c["asserted_in_smoke"])]


def checks_table(checks: list[dict], *, smoke: bool = False) -> str:
    """Markdown table of claims, their measured figures and whether they held; with an
    ``experiment`` column when the checks carry one (the tour's table). In ``smoke`` mode a
    failed claim that smoke mode does not assert reads "no (not asserted in smoke)"."""

    def held(c):
        if c["passed"]:
            return "yes"
        return "no (not asserted in smoke)" if smoke and not c["asserted_in_smoke"] else "**NO**"

    named = any("experiment" in c for c in checks)
    rows = [([c.get("experiment", "")] if named else []) + [c["claim"].replace("|", "\\|"),
                                                          _fmt_measured(c["measured"]), held(c)] for c in checks]
    return markdown_table((["experiment"] if named else []) + ["claim", "measured", "held"], rows)


def chi_square_bound(dof: int, sds: float = 5.0) -> float:
    """``dof + sds * sqrt(2 dof)``: the mean of chi^2_dof plus ``sds`` standard deviations.

    Used for ``2 N KL(truth || fit)``, which is asymptotically chi^2 with as many degrees of
    freedom as the model has parameters when the fit is the maximum-likelihood estimate
    from N samples. Five standard deviations: P(chi^2_2 > 12) = e^-6, and the tail is
    lighter relative to the spread for larger dof."""
    return dof + sds * math.sqrt(2 * dof)


def failure_report(record: dict) -> str:
    """Loud text naming every failed claim that this record's mode asserts ('' if none)."""
    failed = failed_checks(record, smoke=record.get("smoke", False))
    if not failed:
        return ""
    lines = [f"!!! {record['name']}: {len(failed)} CLAIM(S) FAILED"]
    lines += [f"!!!   {c['claim']}: measured {_fmt_measured(c['measured'])}" for c in failed]
    return "\n".join(lines)


def exit_status(record: dict) -> int:
    """1 when a claim that the record's mode asserts failed, else 0 (for ``sys.exit``)."""
    return 1 if failed_checks(record, smoke=record.get("smoke", False)) else 0


def _fmt_measured(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt_measured(x) for x in v)
    return str(v)


def write_results(out_dir: Path, name: str, *, seed: int, smoke: bool, config: dict, metrics: dict,
                  figures: list[str], summary: str, title: str, checks: list[dict] | None = None) -> dict:
    """Writes ``results.json`` and returns the record. ``checks`` (from :func:`check`) list
    each claim of the chapter with its measured figure and whether it held."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "name": name,
        "title": title,
        "seed": seed,
        "smoke": smoke,
        "config": config,
        "environment": environment(),
        "checks": list(checks or []),
        "metrics": metrics,
        "figures": figures,
        "summary": summary,
    }
    record = to_jsonable(record)
    (out_dir / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def pyplot():
    """matplotlib.pyplot with the Agg backend, or None when matplotlib is absent."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


class Figures:
    """A script's output folder and the figures saved in it.

    ``Figures(out_dir)`` creates the folder. ``plt`` is matplotlib.pyplot (Agg backend), or
    None when matplotlib is absent, so that plotting reads
    ``if figures.plt is not None: fig, ax = figures.plt.subplots(...); ...; figures.save(fig, "a.png")``;
    ``names`` lists the files saved, for ``write_results(figures=...)``.
    """

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.plt = pyplot()
        self.names: list[str] = []

    def save(self, fig, filename: str) -> str:
        self.names.append(save_figure(fig, self.out_dir, filename))
        return filename


def save_figure(fig, out_dir: Path, filename: str) -> str:
    path = Path(out_dir) / filename
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return filename


def timed(fn: Callable[[], Any], repeats: int = 3) -> tuple[Any, float]:
    """Runs ``fn`` once to compile, then returns (result, best wall time of ``repeats``)."""
    import jax

    result = jax.block_until_ready(fn())
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        result = jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return result, best


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def run_main(module, argv=None, **options) -> dict:
    """Parses ``--smoke --out --seed`` (and ``options``: flag name -> ``add_argument``
    keywords, each passed to ``module.run`` under its name), runs, prints the summary, the
    claims table and, loudly on stderr, any failed claim. Scripts end with
    ``sys.exit(common.exit_status(main()))``."""
    parser = make_parser(module.NAME, module.TITLE)
    for name, kwargs in options.items():
        parser.add_argument(f"--{name}", dest=name, **kwargs)
    args = parser.parse_args(argv)
    record = module.run(args.out, smoke=args.smoke, seed=args.seed, **{name: getattr(args, name) for name in options})
    print(record["summary"])
    if record.get("checks"):
        print("\n" + checks_table(record["checks"], smoke=args.smoke))
    report = failure_report(record)
    if report:
        print(report, file=sys.stderr)
    print(f"\nwrote {Path(args.out) / 'results.json'}")
    return record
