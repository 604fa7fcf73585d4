"""Every experiment runs in smoke mode; the tour writes its report; the README's commands are
the ones CI runs."""

import importlib
import json
import re
from pathlib import Path

import pytest

from experiments import tour

ROOT = Path(__file__).resolve().parent.parent


# The quickest scripts run in the default suite; the rest are `slow` (CI runs them too).
FAST = {"experiments.bench_enumeration"}


@pytest.mark.parametrize("module_name", [m if m in FAST else pytest.param(m, marks=pytest.mark.slow)
                                         for m in tour.CHAPTERS])
def test_experiment_smoke(module_name, tmp_path):
    module = importlib.import_module(module_name)
    record = module.run(tmp_path, smoke=True, seed=0)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["name"] == module.NAME and saved["smoke"] is True
    assert saved["environment"]["jax"] and saved["environment"]["devices"]
    assert record["summary"]
    for figure in record["figures"]:
        assert (tmp_path / figure).stat().st_size > 1000


def test_tour_writes_report(tmp_path):
    assert tour.main(["--smoke", "--out", str(tmp_path), "--only", "bench_enumeration"]) == 0
    report = (tmp_path / "REPORT.md").read_text()
    assert "Exact enumeration engine" in report and "bench_enumeration/results.json" in report
    assert (tmp_path / "bench_enumeration" / "results.json").exists()


def _readme_commands():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```(?:bash|sh)\n(.*?)\n```", text, flags=re.S)[:2]


def test_readme_opens_with_the_two_commands():
    tour_cmd, test_cmd = _readme_commands()
    assert "python -m experiments.tour" in tour_cmd
    assert "pytest" in test_cmd
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1].strip() == test_cmd.strip(), "the last line of .ci/run must be the README's test command"


@pytest.mark.slow
def test_benchmark_suite_writes_one_table_with_peers(tmp_path):
    from experiments import benchmarks

    result = benchmarks.run(tmp_path, smoke=True)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["benchmarks"]) == set(benchmarks.SUITE)
    peers = " ".join(row[3] for row in saved["headlines"])
    for peer in ("NumPy f64", "scikit-learn", "NumPy"):
        assert peer in peers
    table = (tmp_path / "BENCHMARKS.md").read_text()
    assert result["device"] in table and "| benchmark | case | jaxebm | peer | ratio |" in table
