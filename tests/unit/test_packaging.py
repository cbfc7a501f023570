"""The reviewers' path: the ``plots`` extra installs no torch, and the figures and the claims report run without it;
``results/README.md`` documents exactly the columns the aggregation writes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest
import yaml
from packaging.requirements import Requirement

from tests.run_rows import DIGESTS, STUDY, TINY, make_curves, make_record, make_runs
from vlpeft import aggregate, grid
from vlpeft.plots import tables

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[2]
#: What the table-only path must never need: the training stack and the workflow engine.
HEAVY = {
    "torch",
    "torchvision",
    "timm",
    "tokenizers",
    "safetensors",
    "pycocoevalcap",
    "transformers",
    "peft",
    "snakemake",
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _extra_requirements(*extras: str) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return reqs


def _closure(reqs: list[Requirement]) -> set[str]:
    """Every distribution the requirements pull in, following the installed distributions' own requirements."""
    seen: set[str] = set()
    todo = list(reqs)
    while todo:
        req = todo.pop()
        name = _norm(req.name)
        if name in seen or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        if name == "vlpeft":
            todo += _extra_requirements(*req.extras)
            continue
        try:
            todo += [Requirement(r) for r in metadata.requires(req.name) or []]
        except metadata.PackageNotFoundError:
            pass
    return seen


def test_plots_extra_pulls_in_no_torch() -> None:
    closure = _closure(_extra_requirements("plots"))
    assert {"pandas", "matplotlib", "numpy"} <= closure
    assert not closure & HEAVY, closure & HEAVY
    # ...while the workflow install still brings the whole training stack.
    assert {"torch", "timm", "snakemake", "pycocoevalcap"} <= _closure(_extra_requirements("workflow"))


# Runs a module as `python -m` would, with the heavy packages unimportable, and writes the top-level modules it
# loaded after start-up. A finder first on sys.meta_path sees every import before the real finders do.
_BLOCKED_RUN = """
import importlib.abc, json, runpy, sys
at_start = {m.split(".")[0] for m in sys.modules}  # the interpreter's own (site hooks such as _distutils_hack)
BLOCKED = set(json.loads(sys.argv[1]))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: the table-only path must not import it")
        return None
sys.meta_path.insert(0, Block())
out, module = sys.argv[2], sys.argv[3]
sys.argv = [module] + sys.argv[4:]
code = 0
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code
with open(out, "w") as f:
    json.dump(sorted({m.split(".")[0] for m in sys.modules} - at_start), f)
sys.exit(code)
"""


def _run_blocked(tmp_path: Path, module: str, *args: str) -> set[str]:
    loaded = tmp_path / f"{module}.modules.json"
    proc = subprocess.run(
        [sys.executable, "-c", _BLOCKED_RUN, json.dumps(sorted(HEAVY)), str(loaded), module, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return set(json.loads(loaded.read_text()))


def test_figures_and_report_run_without_torch_on_the_plots_install(tmp_path: Path) -> None:
    runs = make_runs()
    runs.to_csv(tmp_path / "runs.csv", index=False)
    make_curves(runs).to_csv(tmp_path / "curves.csv", index=False)
    pd.DataFrame([{"task": "coco", "metric": "CIDEr", "split": "test", "value": 90.0}]).to_csv(
        tmp_path / "baseline.csv", index=False
    )
    tabs = ["--runs", "runs.csv", "--baseline", "baseline.csv"]
    loaded = _run_blocked(tmp_path, "vlpeft.plots.figures", *tabs, "--curves", "curves.csv", "--out", "figs")
    assert (tmp_path / "figs" / "fig3.pdf").is_file() and (tmp_path / "figs" / "fig8_lora.png").is_file()
    loaded |= _run_blocked(tmp_path, "vlpeft.report", *tabs, "--n-boot", "50", "--out", "report.md")
    assert "paper_metric" in (tmp_path / "report.md").read_text()
    assert not loaded & HEAVY
    # Every third-party module they loaded comes with the plots install (not merely with this full environment).
    owners = metadata.packages_distributions()
    used = {_norm(d) for m in loaded - set(sys.stdlib_module_names) for d in owners.get(m, [])}
    assert used - _closure(_extra_requirements("plots")) - {"vlpeft"} == set()


# ----------------------------------------------------------------------------------------------------------------
# results/README.md: every column of every table
# ----------------------------------------------------------------------------------------------------------------


def _documented(table: str) -> dict[str, str]:
    """Column -> description, from the column table under the ``### `<table>``` heading of results/README.md."""
    text = (REPO / "results" / "README.md").read_text()
    m = re.search(rf"^### `{re.escape(table)}`\n(.*?)(?=^#|\Z)", text, re.S | re.M)
    assert m, f"results/README.md has no '### `{table}`' section"
    return dict(re.findall(r"^\| `([a-z_]+)` \|(.*)\|\s*$", m.group(1), re.M))


def _documented_columns(table: str) -> list[str]:
    return list(_documented(table))


def test_results_readme_lists_exactly_the_columns_the_tables_have(tmp_path: Path) -> None:
    runs = grid.expand(yaml.safe_load(TINY.read_text()))
    for i, run in enumerate(runs):
        (tmp_path / run.dir).mkdir(parents=True)
        (tmp_path / run.dir / "record.json").write_text(json.dumps(make_record(run, i)))
    base = tmp_path / "coco.json"
    base.write_text(json.dumps({"task": "coco", "scores": {"val": {"CIDEr": 5.0}, "test": {"CIDEr": 4.0}}}))
    out = tmp_path / "tables"
    aggregate.write_tables(
        runs,
        [base],
        out / "runs.csv",
        out / "curves.csv",
        out / "baseline.csv",
        root=tmp_path,
        study=STUDY,
        digests=DIGESTS,
    )
    for name in ("runs.csv", "curves.csv", "baseline.csv"):
        written = list(pd.read_csv(out / name, nrows=0).columns)
        assert _documented_columns(name) == written, name
    # The loaders' schemas are what the documentation promises too (no column the figures need is undocumented).
    assert set(tables.RUN_COLUMNS) <= set(_documented_columns("runs.csv"))
    assert list(tables.CURVE_COLUMNS) == _documented_columns("curves.csv")
    assert list(tables.BASELINE_COLUMNS) == _documented_columns("baseline.csv")


@pytest.mark.parametrize("table", ["runs.csv", "curves.csv", "baseline.csv"])
def test_every_documented_column_says_what_it_is(table: str) -> None:
    for column, description in _documented(table).items():
        assert len(description.strip()) > 10, f"{table}: {column} has no description"


@pytest.mark.parametrize("metric", [None, "test_at_best_val"])
def test_make_figures_draws_the_metric_it_is_given(metric: str | None, tmp_path: Path) -> None:
    args = ["make", "-n", "figures", f"VENV={tmp_path / 'venv'}"] + ([f"METRIC={metric}"] if metric else [])
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, check=True)
    commands = proc.stdout.replace("\\\n", " ")
    drawn = [line for line in commands.splitlines() if "-m vlpeft.plots.figures" in line or "-m vlpeft.report" in line]
    assert len(drawn) == 2
    assert all(f"--metric {metric or 'paper_metric'}" in line for line in drawn), drawn
    # The reviewers' install is the plots extra, not the training stack.
    assert "'.[plots]'" in commands and "requirements/cpu.txt" not in commands
