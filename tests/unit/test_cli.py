"""Command-line manners of every entry point: options described in --help (choices listed), a user error as one line
and exit status 2 (no traceback), and a line on stderr before the slow imports."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.run_rows import make_runs
from vlpeft import console

REPO = Path(__file__).resolve().parents[2]

#: (entry point as run from a shell, module whose main() it calls, argv of one help page, fragments --help must show)
HELP_PAGES = [
    ("vlpeft", "vlpeft.cli", [], ["{grid,params,model,cost,plan,status}"]),
    ("vlpeft cost", "vlpeft.cli", ["cost"], ["--config", "--profile", "--summary"]),
    ("vlpeft plan", "vlpeft.cli", ["plan"], ["--config", "--profile", "-j JOBS, --jobs JOBS", "--json"]),
    ("vlpeft status", "vlpeft.cli", ["status"], ["--config", "--all", "--active"]),
    ("vlpeft grid", "vlpeft.cli", ["grid"], ["--config"]),
    ("vlpeft params", "vlpeft.cli", ["params"], ["{base,tiny}"]),
    ("vlpeft model", "vlpeft.cli", ["model"], ["{base,tiny}"]),
    ("python -m vlpeft.aggregate", "vlpeft.aggregate", [], ["--config", "--out"]),
    (
        "python -m vlpeft.plots.figures",
        "vlpeft.plots.figures",
        [],
        ["{paper_metric,test_at_best_val,best_val,final_val}", "--curves"],
    ),
    ("python -m vlpeft.report", "vlpeft.report", [], ["{paper_metric,test_at_best_val,best_val,final_val}"]),
    ("python -m vlpeft.methods.table", "vlpeft.methods.table", [], ["{base,tiny}", "{md,csv}"]),
    ("python -m vlpeft.model.checkpoint", "vlpeft.model.checkpoint", [], ["{count,check}"]),
    ("python -m vlpeft.model.checkpoint check", "vlpeft.model.checkpoint", ["check"], ["{base,tiny}", "path"]),
    ("python -m vlpeft.model.checkpoint count", "vlpeft.model.checkpoint", ["count"], ["{base,tiny}"]),
    ("python -m vlpeft.train", "vlpeft.train", [], ["--config"]),
]


def _undescribed(help_text: str) -> list[str]:
    """Options and positionals of an argparse help page that have no description."""
    lines = help_text.splitlines()
    out = []
    in_section = False
    for i, line in enumerate(lines):
        if line.endswith(":") and not line.startswith(" "):
            in_section = line in ("options:", "optional arguments:", "positional arguments:")
            continue
        if not in_section or not line.startswith("  ") or line.startswith("   "):
            continue
        entry = line.strip()
        described = "  " in entry  # signature, two spaces, description
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        described = described or (len(nxt) - len(nxt.lstrip()) > 2 and nxt.strip() != "")
        if not described:
            out.append(entry)
    return out


@pytest.mark.parametrize(("prog", "module", "argv", "shows"), HELP_PAGES, ids=[h[0] for h in HELP_PAGES])
def test_help_describes_every_option(prog: str, module: str, argv: list[str], shows: list[str], capsys) -> None:
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: {prog}")
    assert _undescribed(text) == []
    for fragment in shows:
        assert fragment in text


def test_undescribed_options_are_caught() -> None:
    page = "usage: x\n\noptions:\n  -h, --help  show this help\n  --runs RUNS\n  --out OUT   output directory\n"
    assert _undescribed(page) == ["--runs RUNS"]


@pytest.fixture(scope="module")
def tables_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tables")
    make_runs().drop(columns=["paper_metric"]).to_csv(d / "no_paper_metric.csv", index=False)
    (d / "no_tasks.yaml").write_text((REPO / "config" / "mini.yaml").read_text().replace("tasks:", "tasks_:", 1))
    return d


#: (prog, command after `python`, what the one error line says). The commands run in the tables_dir fixture.
USER_ERRORS = [
    ("vlpeft", ["-m", "vlpeft.cli", "grid", "--config", "missing.yaml"], "config file not found: missing.yaml"),
    ("vlpeft params", ["-m", "vlpeft.cli", "params", "--preset", "huge"], "invalid choice: 'huge'"),
    ("vlpeft", ["-m", "vlpeft.cli", "cost", "--config", "missing.yaml"], "config file not found: missing.yaml"),
    (
        "vlpeft",
        ["-m", "vlpeft.cli", "cost", "--config", "no_tasks.yaml"],
        "no_tasks.yaml: (top level): Additional properties are not allowed ('tasks_'",
    ),
    (
        "vlpeft",
        ["-m", "vlpeft.cli", "plan", "--config", str(REPO / "config" / "mini.yaml"), "--profile", "missing"],
        "profile not found: missing/config.yaml",
    ),
    ("vlpeft model", ["-m", "vlpeft.cli", "model", "--preset", "huge"], "invalid choice: 'huge'"),
    (
        "python -m vlpeft.aggregate",
        ["-m", "vlpeft.aggregate", "--config", "missing.yaml"],
        "config file not found: missing.yaml",
    ),
    (
        "python -m vlpeft.plots.figures",
        ["-m", "vlpeft.plots.figures", "--runs", "missing.csv", "--out", "f"],
        "runs table not found: missing.csv",
    ),
    (
        "python -m vlpeft.report",
        ["-m", "vlpeft.report", "--runs", "no_paper_metric.csv"],
        "no_paper_metric.csv is missing required column(s): paper_metric",
    ),
    (
        "python -m vlpeft.report",
        ["-m", "vlpeft.report", "--runs", "missing.csv", "--n-boot", "0"],
        "argument --n-boot: must be at least 1",
    ),
    ("python -m vlpeft.methods.table", ["-m", "vlpeft.methods.table", "--preset", "huge"], "invalid choice: 'huge'"),
    (
        "python -m vlpeft.model.checkpoint",
        ["-m", "vlpeft.model.checkpoint", "check", "missing.pth"],
        "file not found: missing.pth",
    ),
    ("python -m vlpeft.train", ["-m", "vlpeft.train", "--config", "missing.yaml"], "run config not found"),
]
USER_ERROR_IDS = [
    "grid-config",
    "params-preset",
    "cost-config",
    "cost-schema",
    "plan-profile",
    "model-preset",
    "aggregate-config",
    "figures-runs",
    "report-column",
    "report-n-boot",
    "table-preset",
    "checkpoint-path",
    "train-config",
]


@pytest.mark.parametrize(("prog", "command", "says"), USER_ERRORS, ids=USER_ERROR_IDS)
def test_user_error_is_one_line_and_exit_status_2(prog: str, command: list[str], says: str, tables_dir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, *command], cwd=tables_dir, capture_output=True, text=True, timeout=300, check=False
    )
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(f"{prog}: error: ")
    assert says in errors[0]
    assert proc.stdout == ""


def test_traceback_on_request(tables_dir: Path) -> None:
    """VLPEFT_TRACEBACK=1: the same error with its traceback, for debugging."""
    proc = subprocess.run(
        [sys.executable, "-m", "vlpeft.report", "--runs", "missing.csv"],
        cwd=tables_dir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "VLPEFT_TRACEBACK": "1"},
    )
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "FileNotFoundError" in proc.stderr


def test_error_line_of_os_errors_and_multi_line_messages() -> None:
    assert console.error_line(FileNotFoundError(2, "No such file or directory", "x.csv")) == (
        "x.csv: no such file or directory"
    )
    assert console.error_line(ValueError("first\n  second")) == "first second"


# Runs a command with the slow packages unimportable: whatever it printed before failing on one of them was printed
# before the slow import, whatever the machine's speed.
_BLOCKED = """
import importlib.abc, json, runpy, sys
SLOW = set(json.loads(sys.argv[1]))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in SLOW:
            raise ImportError(f"slow import of {name}")
        return None
sys.meta_path.insert(0, Block())
sys.argv = [sys.argv[2]] + sys.argv[3:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""
SLOW = ["torch", "pandas", "matplotlib", "numpy", "timm"]
STARTS = [
    ("vlpeft", ["vlpeft.cli", "params"]),
    ("vlpeft", ["vlpeft.cli", "model"]),
    ("vlpeft", ["vlpeft.cli", "grid", "--config", str(REPO / "config" / "mini.yaml")]),
    (
        "vlpeft plan",
        [
            "vlpeft.cli",
            "plan",
            "--config",
            str(REPO / "config" / "mini.yaml"),
            "--profile",
            str(REPO / "profiles" / "slurm"),
        ],
    ),
    ("python -m vlpeft.aggregate", ["vlpeft.aggregate", "--config", str(REPO / "config" / "mini.yaml")]),
    ("python -m vlpeft.plots.figures", ["vlpeft.plots.figures", "--runs", "runs.csv", "--out", "f"]),
    ("python -m vlpeft.report", ["vlpeft.report", "--runs", "runs.csv"]),
    ("python -m vlpeft.methods.table", ["vlpeft.methods.table"]),
    ("python -m vlpeft.model.checkpoint", ["vlpeft.model.checkpoint", "count"]),
]


@pytest.mark.parametrize(("prog", "command"), STARTS, ids=[" ".join(s[1][:2]) for s in STARTS])
def test_a_line_is_printed_before_the_slow_imports(prog: str, command: list[str], tables_dir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _BLOCKED, json.dumps(SLOW), *command],
        cwd=tables_dir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0 and "slow import of" in proc.stderr  # it did reach a slow import...
    assert proc.stderr.splitlines()[0].startswith(f"{prog}: ")  # ...after saying that it started


def test_help_prints_no_startup_line(tables_dir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "vlpeft.plots.figures", "--help"],
        cwd=tables_dir,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert proc.stderr == "" and proc.stdout.startswith("usage:")


def test_readme_mini_study_counts_are_the_grids() -> None:
    """The README's run counts for the mini study multiply out and equal what the grid expands to."""
    import re

    import yaml

    from vlpeft import grid

    runs = grid.expand(yaml.safe_load((REPO / "config" / "mini.yaml").read_text()))
    peft = [r for r in runs if r.method != "full"]
    full = [r for r in runs if r.method == "full"]
    readme = (REPO / "README.md").read_text()
    m = re.search(
        r"(\d+) PEFT methods × with/without classifier × (\d+) data ratios × (\d+) sizes × (\d+) tasks "
        r"\((\d+) runs\) and full fine-tuning × (\d+) data ratios × (\d+) tasks \((\d+) runs\): (\d+) training "
        r"runs",
        " ".join(readme.split()),
    )
    assert m, "README: the mini study's run count sentence changed; update this test with it"
    n = [int(g) for g in m.groups()]
    assert n[0] * 2 * n[1] * n[2] * n[3] == n[4] == len(peft)
    assert n[5] * n[6] == n[7] == len(full)
    assert n[4] + n[7] == n[8] == len(runs)
    assert n[0] == len({r.method for r in peft})
    vqa = sum(r.task == "vqa" for r in runs)
    assert f"{vqa} VQA runs" in " ".join(readme.split())
