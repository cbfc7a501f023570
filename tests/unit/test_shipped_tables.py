"""The mini study's tables ship with the repository (``results/shipped/mini``), so that a reviewer's ``make figures``
works on a fresh clone without running anything. They must be the tables of the mini study as configured now: an
edit of ``config/mini.yaml`` (a run's settings) without ``make mini`` and a commit of the new tables fails here."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from vlpeft import grid
from vlpeft.plots import registry as figreg
from vlpeft.plots.tables import load_baseline, load_curves, load_runs

REPO = Path(__file__).resolve().parents[2]
MINI = REPO / "config/mini.yaml"
TABLES = REPO / "results/shipped/mini"
NAMES = ("runs.csv", "curves.csv", "baseline.csv")


@pytest.fixture(scope="module")
def config() -> dict:
    return grid.load_config(MINI)


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="not a git checkout")
def test_the_tables_are_tracked_and_nothing_else_of_the_study():
    tracked = subprocess.run(
        ["git", "ls-files", "results"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    assert sorted(tracked) == sorted(["results/README.md", *(f"results/shipped/mini/{n}" for n in NAMES)])
    for path in (
        "results/mini/runs/x/record.json",
        "results/mini/figures/fig3.pdf",
        "results/mini/tables/runs.csv",
        "results/paper/tables/runs.csv",
    ):
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO, check=False).returncode
        assert ignored == 0, f"{path} would be committed"


def test_the_shipped_tables_are_no_output_of_the_workflow(config):
    """Snakemake does not rerun a job whose outputs exist: shipped in the study's own folder, the tables would make a
    fresh clone's ``make mini`` draw the figures from them and train nothing."""
    study_root = (REPO / grid.study_root(config)).resolve()
    assert not TABLES.resolve().is_relative_to(study_root)
    assert not TABLES.resolve().is_relative_to((REPO / "results/downloads").resolve())


def test_the_tables_are_those_of_the_configured_mini_study(config):
    runs = load_runs(TABLES / "runs.csv")
    assert dict(zip(runs["run_id"], runs["config_digest"])) == grid.run_digests(config)
    info = grid.study_info(config)
    assert set(runs["study"]) == {"mini"} and set(runs["data_source"]) == {"synthetic"}
    assert set(runs["study_digest"]) == {info["study_digest"]}
    assert set(runs["status"]) == {"success"} and runs["paper_metric"].notna().all()
    curves = load_curves(TABLES / "curves.csv")
    assert set(curves["run_id"]) == set(runs["run_id"])
    assert set(load_baseline(TABLES / "baseline.csv")["task"]) == set(config["tasks"])


def test_figures_and_report_from_the_shipped_tables_alone(config, tmp_path):
    """What ``make figures`` runs (the plots install: no torch, no data), into a scratch folder."""
    tables = {n.removesuffix(".csv"): str(TABLES / n) for n in NAMES}
    figs = subprocess.run(
        [
            sys.executable,
            "-m",
            "vlpeft.plots.figures",
            "--runs",
            tables["runs"],
            "--curves",
            tables["curves"],
            "--baseline",
            tables["baseline"],
            "--out",
            str(tmp_path / "figures"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert figs.returncode == 0, figs.stderr[-3000:]
    drawn = sorted(p.stem for p in (tmp_path / "figures").glob("*.pdf"))
    assert drawn == sorted(figreg.study_stems(config))
    report = subprocess.run(
        [
            sys.executable,
            "-m",
            "vlpeft.report",
            "--runs",
            tables["runs"],
            "--baseline",
            tables["baseline"],
            "--out",
            str(tmp_path / "report.md"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    text = (tmp_path / "report.md").read_text()
    assert "synthetic demonstration" in text and "Study `mini`, synthetic data" in text
    assert len(pd.read_csv(tables["runs"])) == len(grid.expand(config))
