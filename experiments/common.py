"""Shared conventions for experiment scripts.

Each experiment module defines ``NAME``, ``TITLE``, ``run(out_dir, *, smoke, seed) -> dict``
and ``main(argv=None)``. ``run`` writes ``results.json`` (config, seed, versions, devices,
metrics) and PNG figures (when matplotlib is installed) into ``out_dir`` and returns the
same record plus a short markdown summary for the tour's REPORT.md.
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


def write_results(out_dir: Path, name: str, *, seed: int, smoke: bool, config: dict, metrics: dict,
                  figures: list[str], summary: str, title: str) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "name": name,
        "title": title,
        "seed": seed,
        "smoke": smoke,
        "config": config,
        "environment": environment(),
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


def run_main(module, argv=None) -> dict:
    parser = make_parser(module.NAME, module.TITLE)
    args = parser.parse_args(argv)
    record = module.run(args.out, smoke=args.smoke, seed=args.seed)
    print(record["summary"])
    print(f"\nwrote {Path(args.out) / 'results.json'}")
    return record
