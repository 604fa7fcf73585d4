"""Every experiment runs in smoke mode; the tour writes its report; the README's commands are
the ones CI runs."""

import importlib
import json
import re
import sys
import types
from pathlib import Path

import pytest

from experiments import common, tour

ROOT = Path(__file__).resolve().parent.parent


# The quickest scripts run in the default suite; the rest are `slow` (CI runs them too).
FAST = {"experiments.ch2_gaussian"}


@pytest.mark.parametrize("module_name", [m if m in FAST else pytest.param(m, marks=pytest.mark.slow)
                                         for m in tour.CHAPTERS + tour.BENCHMARKS])
def test_experiment_smoke(module_name, tmp_path):
    module = importlib.import_module(module_name)
    record = module.run(tmp_path, smoke=True, seed=0)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["name"] == module.NAME and saved["smoke"] is True
    assert saved["environment"]["jax"] and saved["environment"]["devices"]
    assert saved["checks"] == record["checks"]
    assert record["summary"]
    for figure in record["figures"]:
        assert (tmp_path / figure).stat().st_size > 1000
    if module_name in tour.CHAPTERS:
        assert record["checks"], f"{module.NAME} asserts none of its claims"
    # every claim that smoke mode's sizes support holds
    assert common.failed_checks(record, smoke=True) == [], common.checks_table(record["checks"], smoke=True)


def test_tour_writes_report(tmp_path):
    assert tour.main(["--smoke", "--out", str(tmp_path), "--only", "bench_enumeration"]) == 0
    report = (tmp_path / "REPORT.md").read_text()
    assert "Exact enumeration engine" in report and "bench_enumeration/results.json" in report
    assert (tmp_path / "bench_enumeration" / "results.json").exists()
    # the report opens with the table of claims, before any experiment's section
    sections = re.findall(r"^## (.+)$", report, flags=re.M)
    assert sections == ["Claims", "Benchmarks"]
    claims = report[report.index("## Claims"):report.index("## Benchmarks")]
    assert "| experiment | claim | measured | held |" in claims
    assert "| bench_enumeration | log Z agrees with the NumPy float64 brute force" in claims


def test_tour_lists_chapters_then_benchmarks():
    assert all(".ch" in m for m in tour.CHAPTERS) and all(".bench_" in m for m in tour.BENCHMARKS)
    assert not set(tour.CHAPTERS) & set(tour.BENCHMARKS)


def _fake_experiment(name, checks):
    def run(out_dir, *, smoke=False, seed=0):
        return common.write_results(out_dir, name, seed=seed, smoke=smoke, config={}, metrics={}, figures=[],
                                    summary=f"summary of {name}", title=f"Fake {name}", checks=checks)

    return types.SimpleNamespace(NAME=name, TITLE=f"Fake {name}", run=run)


def test_tour_fails_loudly_when_a_claim_fails(tmp_path, monkeypatch, capsys):
    chapter = _fake_experiment("fake_chapter", [
        common.check("a claim smoke mode supports", 1.0, True),
        common.check("a claim only the full run supports", 0.5, False, smoke=False)])
    bench = _fake_experiment("fake_bench", [common.check("agrees with its peer", 1e-9, True)])
    monkeypatch.setitem(sys.modules, "experiments.fake_chapter", chapter)
    monkeypatch.setitem(sys.modules, "experiments.fake_bench", bench)
    monkeypatch.setattr(tour, "CHAPTERS", ("experiments.fake_chapter",))
    monkeypatch.setattr(tour, "BENCHMARKS", ("experiments.fake_bench",))

    # smoke mode counts only the claims it asserts
    assert tour.main(["--smoke", "--out", str(tmp_path / "smoke")]) == 0
    report = (tmp_path / "smoke" / "REPORT.md").read_text()
    assert report.index("## Claims") < report.index("## Chapters") < report.index("## Benchmarks")
    assert "| fake_chapter | a claim only the full run supports | 0.5 | no (not asserted in smoke) |" in report
    capsys.readouterr()

    # a full run fails, naming the claim
    assert tour.main(["--out", str(tmp_path / "full")]) == 1
    assert "fake_chapter: a claim only the full run supports" in capsys.readouterr().err
    report = (tmp_path / "full" / "REPORT.md").read_text()
    assert "1 FAILED" in report and "| fake_chapter | a claim only the full run supports | 0.5 | **NO** |" in report


def test_tour_reports_a_crashed_experiment_as_a_failed_claim(tmp_path, monkeypatch, capsys):
    def run(out_dir, *, smoke=False, seed=0):
        raise RuntimeError("boom")

    crashing = types.SimpleNamespace(NAME="fake_crash", TITLE="Fake crash", run=run)
    monkeypatch.setitem(sys.modules, "experiments.fake_crash", crashing)
    monkeypatch.setattr(tour, "CHAPTERS", ("experiments.fake_crash",))
    monkeypatch.setattr(tour, "BENCHMARKS", ())
    assert tour.main(["--smoke", "--out", str(tmp_path)]) == 1
    assert "fake_crash: runs to completion" in capsys.readouterr().err
    report = (tmp_path / "REPORT.md").read_text()
    assert "| fake_crash | runs to completion |" in report and "RuntimeError: boom" in report


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


@pytest.mark.slow
def test_ch6_lattice_main_asserts_every_claim(tmp_path):
    """The lattice chapter from its command line: every claim is recorded and holds in smoke mode,
    one per part (thermodynamics, samplers, learning, Kaufman), and the three figures exist."""
    from experiments import ch6_lattice

    record = ch6_lattice.main(["--smoke", "--out", str(tmp_path), "--seed", "0"])
    assert common.exit_status(record) == 0
    claims = [c["claim"] for c in record["checks"]]
    for part in ("specific heat", "replica exchange", "pseudo-likelihood", "maximum likelihood", "Kaufman"):
        assert any(part in claim for claim in claims), part
    assert all(c["passed"] for c in record["checks"]), common.checks_table(record["checks"])
    if common.pyplot() is not None:  # figures need the optional matplotlib (the experiments extra)
        assert sorted(record["figures"]) == ["exact_samples.png", "sampling_and_learning.png", "thermodynamics.png"]
    else:
        assert record["figures"] == []
    for figure in record["figures"]:
        assert (tmp_path / figure).stat().st_size > 1000
