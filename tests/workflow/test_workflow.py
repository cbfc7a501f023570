"""The Snakemake workflow: DAG of the paper's grid, config validation, and a tiny study end to end with reruns."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.run_rows import with_provenance

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests/workflow/configs/tiny.yaml"
BEYOND_TINY = REPO / "tests/workflow/configs/beyond_tiny.yaml"


def snakemake(
    workdir: Path, configfile: Path, *args: str, timeout: int = 900, env: dict | None = None
) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "HF_HUB_OFFLINE": "1",
        **(env or {}),
    }
    cmd = [
        str(Path(sys.executable).parent / "snakemake"),
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        *args,
    ]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env, check=False)


def scheduled(output: str) -> list[tuple[str, dict]]:
    """(rule, wildcards) of every job a dry run lists."""
    jobs, rule = [], None
    for line in output.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line.strip())
        if m:
            rule = m.group(1)
            jobs.append((rule, {}))
        m = re.match(r"^wildcards: (.*)$", line.strip())
        if m and jobs:
            jobs[-1] = (jobs[-1][0], dict(kv.split("=", 1) for kv in m.group(1).split(", ")))
    return jobs


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_dry_run_of_the_paper_grid_lists_every_run(tmp_path):
    from vlpeft.grid import expand

    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    proc = snakemake(tmp_path, REPO / "config/config.yaml", "-n", "--quiet", "rules")
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, re.M))
    assert int(counts["train_run"]) == len(expand(config)) == 810
    assert int(counts["write_run_config"]) == 810
    assert int(counts["download_file"]) == len(config["data"]["downloads"])


def test_dry_run_of_the_pilot(tmp_path):
    """config/pilot.yaml: six training jobs (one per method) on the real data path, under results/pilot."""
    proc = snakemake(tmp_path, REPO / "config/pilot.yaml", "-n", "--quiet", "rules")
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, re.M))
    assert (int(counts["train_run"]), int(counts["evaluate_baseline"]), int(counts["make_subset"])) == (6, 2, 2)
    assert int(counts["download_file"]) == 9 and int(counts["fetch_checkpoint"]) == 1


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(unknown_key=1), "unknown_key"),
        (lambda c: c["train"].update(total_batch_size="big"), "total_batch_size"),
        (lambda c: c["tasks"]["coco"].update(ratios=[0.5, 1.5]), "ratios"),
        (lambda c: c["methods"]["lora"]["coco"].update(sizes=[2, 2]), "sizes"),
        (lambda c: c["methods"].update(vera={"coco": {"sizes": [1], "lr": 1.0}}), "vera"),
        (lambda c: c["tasks"].update(nlvr={}), "nlvr"),
        (lambda c: c["train"].update(device="gpu"), "device"),
        (lambda c: c["methods"]["full"]["coco"].update(part_lr={"vit": 1e-5}), "vit"),
    ],
    ids=[
        "unknown-key",
        "wrong-type",
        "ratio-out-of-range",
        "duplicate-size",
        "unknown-method",
        "unknown-task",
        "unknown-device",
        "unknown-part",
    ],
)
def test_bad_config_is_rejected_before_anything_runs(tmp_path, edit, message):
    config = yaml.safe_load(TINY.read_text())
    edit(config)
    proc = snakemake(tmp_path, write_config(tmp_path / "bad.yaml", config), "-n")
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout
    assert not (tmp_path / "results").exists()


def test_total_batch_the_profiles_processes_cannot_split_is_rejected(tmp_path):
    """train_run's gpu resource (the profile's set-resources) is the number of torchrun processes per job: a global
    batch they cannot split evenly fails before the DAG is built, not in every training job."""
    proc = snakemake(tmp_path, TINY, "-n", "--set-resources", "train_run:gpu=3")
    assert proc.returncode != 0
    assert (
        "train.total_batch_size: 8 is not a multiple of 3 processes x per_device_batch_size 4"
        in proc.stderr + proc.stdout
    )
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("profile", ["profiles/slurm/config.yaml", "tests/slurm/profile/config.yaml"])
def test_slurm_jobs_with_several_gpus_stay_on_one_node(profile):
    """sbatch --gpus=N alone may spread the GPUs over several nodes; the rule runs torchrun --standalone on one.
    (tests/slurm checks that --nodes=1 reaches sbatch on a real cluster.)"""
    resources = yaml.safe_load((REPO / profile).read_text())["set-resources"]
    multi = {rule: r for rule, r in resources.items() if r.get("gpu", 0) > 1}
    assert "train_run" in multi
    assert {rule: r.get("nodes") for rule, r in multi.items()} == {rule: 1 for rule in multi}


@pytest.mark.parametrize("profile", ["profiles/slurm/config.yaml", "tests/slurm/profile/config.yaml"])
def test_torchruns_grace_fits_the_warning_signals_lead_time(profile):
    """SLURM's --signal=TERM@N leaves N s before the time limit; vlpeft.launch gives torchrun's ranks stop_grace_s of
    them to checkpoint (torchrun's own default: 30 s) and must itself be done before the limit."""
    train = yaml.safe_load((REPO / profile).read_text())["set-resources"]["train_run"]
    lead = re.search(r"--signal=(?:B:)?TERM@(\d+)", train["slurm_extra"])
    assert lead, f"{profile}: train_run has no --signal=TERM@N in slurm_extra: {train['slurm_extra']!r}"
    assert 30 < train["stop_grace_s"] <= int(lead.group(1)) - 20, (train["stop_grace_s"], lead.group(1))
    rule = (REPO / "rules/train.smk").read_text()
    assert rule.count("--stop-grace {resources.stop_grace_s}") == 2  # train_run and pretrain_model


def test_dry_run_of_the_study_beyond_the_paper(tmp_path):
    """config/beyond.yaml: DoRA, (IA)^3 and full fine-tuning on the paper's grid, under results/beyond."""
    from vlpeft.grid import expand

    config = yaml.safe_load((REPO / "config/beyond.yaml").read_text())
    proc = snakemake(tmp_path, REPO / "config/beyond.yaml", "-n", "--quiet", "rules")
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, re.M))
    assert int(counts["train_run"]) == len(expand(config)) == 182
    assert (int(counts["plot_val_curves"]), int(counts["plot_task_grid"])) == (2, 2)


@pytest.mark.slow
def test_tiny_study_end_to_end_and_reruns_only_what_changed(tmp_path):
    from vlpeft.grid import expand

    config = yaml.safe_load(TINY.read_text())
    cfg_path = write_config(tmp_path / "tiny.yaml", config)
    tmpdir = tmp_path / "tmp"  # the jobs' temporary directory: runs must leave nothing there (torchelastic_*)
    tmpdir.mkdir()
    proc = snakemake(
        tmp_path, cfg_path, "--profile", str(REPO / "profiles/local"), timeout=1500, env={"TMPDIR": str(tmpdir)}
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert not sorted(p.name for p in tmpdir.glob("torchelastic_*"))

    root = tmp_path / "results/tiny"  # everything the study writes (study: tiny)
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["tiny"]
    runs = pd.read_csv(root / "tables/runs.csv")
    assert len(runs) == len(expand(config))
    assert set(runs["status"]) == {"success"}
    assert runs["best_val"].notna().all()
    assert set(runs["study"]) == {"tiny"} and set(runs["data_source"]) == {"synthetic"}
    assert runs["commit"].notna().all() and runs["config_digest"].notna().all()
    for stem in ("fig3", "fig4", "fig5", "fig5_gpu_hours", "fig6_prompt", "fig8_lora"):
        for ext in ("pdf", "png"):
            assert (root / f"figures/{stem}.{ext}").stat().st_size > 1000
    assert not (root / "figures/fig7_prefix.pdf").exists()  # no prefix runs in this grid
    report = (root / "report.md").read_text()
    assert "Claim" in report or "claim" in report
    assert "synthetic demonstration" in report and "Study `tiny`, synthetic data" in report

    proc = snakemake(tmp_path, cfg_path, "-n")
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-3000:]

    # The reported metric is a params value of the figure and report rules: changing it redraws exactly those.
    proc = snakemake(
        tmp_path, write_config(tmp_path / "other_metric.yaml", {**config, "reported_metric": "test_at_best_val"}), "-n"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {r for r, _ in scheduled(proc.stdout)} == {
        "write_report",
        "plot_task_grid",
        "plot_cost",
        "plot_val_curves",
        "all",
    }

    config["methods"]["lora"]["coco"]["lr"] = 2.0e-3
    cfg_path = write_config(tmp_path / "tiny.yaml", config)
    proc = snakemake(tmp_path, cfg_path, "-n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = scheduled(proc.stdout)
    trained = sorted((w["task"], w["method"]) for r, w in jobs if r == "train_run")
    n_lora_coco = sum(1 for r in expand(config) if r.task == "coco" and r.method == "lora")
    assert trained == [("coco", "lora")] * n_lora_coco
    rules = {r for r, _ in jobs}
    assert rules <= {
        "write_run_config",
        "train_run",
        "aggregate_runs",
        "write_report",
        "plot_task_grid",
        "plot_cost",
        "plot_val_curves",
        "all",
    }
    assert "pretrain_model" not in rules and "make_subset" not in rules

    # Studies kept apart: the paper's config, dry-run in the same checkout after the tiny study ran, plans every one
    # of its jobs (none of the tiny study's files is taken for its own) and only under results/paper and the shared
    # downloads; aggregating it reports 810 missing runs and leaves the tiny study's tables as they were.
    before = _tree(tmp_path / "results")
    proc = snakemake(tmp_path, REPO / "config/config.yaml", "-n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _tree(tmp_path / "results") == before
    jobs = scheduled(proc.stdout)
    assert sum(r == "train_run" for r, _ in jobs) == 810
    assert {"download_file", "prepare_captions", "prepare_vqa", "make_subset", "cache_images"} <= {r for r, _ in jobs}
    planned = [p for line in re.findall(r"^\s+output: (.*)$", proc.stdout, re.M) for p in line.split(", ")]
    assert len(planned) > 1620
    assert all(p.startswith(("results/paper/", "results/downloads/")) for p in planned), [
        p for p in planned if not p.startswith(("results/paper/", "results/downloads/"))
    ][:5]
    tiny_tables = (root / "tables/runs.csv").read_bytes()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    agg = subprocess.run(
        [sys.executable, "-m", "vlpeft.aggregate", "--config", str(REPO / "config/config.yaml")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert agg.returncode == 0, agg.stderr[-3000:]
    paper = pd.read_csv(tmp_path / "results/paper/tables/runs.csv")
    assert len(paper) == 810 and set(paper["status"]) == {"missing"} and set(paper["study"]) == {"paper"}
    assert set(paper["data_source"]) == {"real"}
    assert (root / "tables/runs.csv").read_bytes() == tiny_tables


@pytest.mark.slow
def test_methods_beyond_the_paper_run_through_every_figure_and_the_report(tmp_path):
    """DoRA, (IA)^3 and full fine-tuning (tests/workflow/configs/beyond_tiny.yaml, config/beyond.yaml's methods): every
    run succeeds with its closed-form count, every figure of the study is drawn with one row per method of its own
    grid, and the claims report has their rows and none of the paper's methods'."""
    from vlpeft.grid import expand
    from vlpeft.methods.base import build_method
    from vlpeft.methods.registry import METHOD_LABELS, PEFT_METHODS, SIZE_LABELS
    from vlpeft.model.config import preset
    from vlpeft.plots import figures
    from vlpeft.plots import registry as figreg

    config = yaml.safe_load(BEYOND_TINY.read_text())
    proc = snakemake(
        tmp_path,
        write_config(tmp_path / "beyond.yaml", config),
        "--profile",
        str(REPO / "profiles/local"),
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    root = tmp_path / f"results/{config['study']}"
    runs = pd.read_csv(root / "tables/runs.csv")
    assert len(runs) == len(expand(config)) == 6 and set(runs["status"]) == {"success"}
    mine = [m for m in config["methods"] if m in PEFT_METHODS]
    assert sorted(mine) == ["dora", "ia3"]
    for r in runs.loc[runs["method"].isin(mine)].itertuples():
        assert r.trainable_params == build_method(r.method, size=int(r.size)).closed_form_count(preset("tiny")), r
    stems = figreg.study_stems(config)
    assert stems == ["fig3", "fig4", "fig5", "fig5_gpu_hours", "fig11_dora", "fig12_ia3"]
    for stem in stems:
        for ext in ("pdf", "png"):
            assert (root / f"figures/{stem}.{ext}").stat().st_size > 1000, stem
    assert sorted(p.stem for p in (root / "figures").glob("*.pdf")) == sorted(stems)

    # Figs. 3/4: one row per method of this grid; (IA)^3's one size is one point per data ratio on its size axis.
    fig = figures.build_figure("fig3", runs)
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles == [f"{METHOD_LABELS[m]}: vs {x}" for m in mine for x in ("data ratio", "parameter size")]
    size_ax = fig.axes[2 * mine.index("ia3") + 1]
    assert size_ax.get_xlabel() == SIZE_LABELS["ia3"]
    assert [list(line.get_xdata()) for line in figures.series_lines(size_ax)] == [[1.0]]

    report = (root / "report.md").read_text()
    rows = {line.split(" | ")[0].lstrip("| ") for line in report.splitlines() if line.startswith("| ")}
    assert {METHOD_LABELS[m] for m in mine} <= rows
    assert not rows & {METHOD_LABELS[m] for m in PEFT_METHODS if m not in mine}
    assert "(in this study's grid: DoRA, (IA)³)" in report


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root``: (size, mtime_ns)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_figures_regenerate_from_tables_alone(tmp_path):
    """The reviewers' path touches no data, checkpoints or training rules."""
    runs = with_provenance(
        pd.DataFrame(
            [
                {
                    "run_id": f"coco/lora/size{s}_ratio{r}/seed0",
                    "task": "coco",
                    "method": "lora",
                    "classifier": False,
                    "size": s,
                    "data_ratio": r,
                    "seed": 0,
                    "trainable_params": 100 * s,
                    "trainable_params_merged": 100 * s,
                    "total_params": 10**6,
                    "data_size": int(1000 * r),
                    "samples_seen": 100,
                    "metric": "CIDEr",
                    "paper_metric": 51 + s + r,
                    "best_val": 50 + s + r,
                    "best_step": 10,
                    "test_at_best_val": 49 + s,
                    "final_val": 48 + s,
                    "gpu_hours": 0.0,
                    "wall_time_s": 5.0,
                    "status": "success",
                }
                for s in (2, 8)
                for r in (0.1, 1.0)
            ]
        )
    )
    runs.to_csv(tmp_path / "runs.csv", index=False)
    shutil.rmtree(tmp_path / "out", ignore_errors=True)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vlpeft.plots.figures",
            "--runs",
            str(tmp_path / "runs.csv"),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "out/fig3.pdf").is_file() and (tmp_path / "out/fig5.png").is_file()


@pytest.mark.parametrize("configfile", ["config/config.yaml", "config/mini.yaml", "config/beyond.yaml"])
def test_lint_clean(tmp_path, configfile):
    proc = snakemake(tmp_path, REPO / configfile, "--lint")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Lints for" not in proc.stdout + proc.stderr


def test_rules_are_snakefmt_formatted():
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "snakefmt"), "--check", "Snakefile", "rules"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_python_is_ruff_clean():
    """The rule set is pinned in pyproject.toml, so this holds across ruff versions."""
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ruff"), "check", "src", "tests", "workflow", "benchmarks"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_python_is_ruff_formatted():
    """One format for the package, tests, scripts and benchmarks: ``ruff format`` (pinned version, line length in
    pyproject.toml) leaves every file as it is."""
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ruff"), "format", "--check", "src", "tests", "workflow", "benchmarks"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, "run `ruff format src tests workflow benchmarks`:\n" + proc.stdout[-3000:]


def test_training_jobs_get_their_predicted_time_limit(tmp_path):
    """Rule predict_costs writes every run's prediction; a training job's runtime is its limit from there (and a
    fixed fallback in a dry run before the predictions exist)."""
    from vlpeft.cost import FALLBACK_MINUTES, job_minutes

    run = "results/tiny/runs/coco/lora/size2_ratio1/seed0/record.json"
    proc = snakemake(tmp_path, TINY, "-n", run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"runtime={FALLBACK_MINUTES}" in proc.stdout
    proc = snakemake(tmp_path, TINY, "--cores", "1", "results/tiny/cost/runs.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    predictions = tmp_path / "results/tiny/cost/runs.json"
    minutes = job_minutes(predictions, "coco/lora/size2_ratio1/seed0")
    assert minutes < FALLBACK_MINUTES
    proc = snakemake(tmp_path, TINY, "-n", run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"runtime={minutes}" in proc.stdout and "predict_costs" not in proc.stdout


def test_every_rule_runs_in_the_environment_with_java():
    """`--sdm conda` on a cluster: every rule names envs/vlpeft.yaml, which carries Java 17 (pycocoevalcap)."""
    rules = {}
    for smk in sorted((REPO / "rules").glob("*.smk")):
        blocks = re.split(r"^\s*rule (\w+):\n", smk.read_text(), flags=re.M)
        rules.update(dict(zip(blocks[1::2], blocks[2::2])))
    assert len(rules) > 20
    missing = [name for name, body in rules.items() if "conda:\n" not in body or '"../envs/vlpeft.yaml"' not in body]
    assert not missing
    env = yaml.safe_load((REPO / "envs/vlpeft.yaml").read_text())
    assert "openjdk=17" in env["dependencies"]


def test_cluster_profile_downloads_on_the_login_node_threads_and_local_settings(tmp_path):
    """profiles/slurm: downloads are local jobs (compute nodes have no internet); 4 ranks x (2 threads + 6 loader
    workers) fill the 32 CPUs of a training job (a dry run shows the threads with --cores 32); account and partition
    come from the git-ignored site.env overlay."""
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    train = profile["set-resources"]["train_run"]
    workers = yaml.safe_load((REPO / "config/config.yaml").read_text())["train"]["num_workers"]
    assert (profile["set-threads"]["train_run"] + workers) * train["gpu"] == train["cpus_per_task"]
    assert "download_file" not in profile["set-resources"]
    ignored = subprocess.run(["git", "check-ignore", "-q", "profiles/slurm/site.env"], cwd=REPO, check=False)
    assert ignored.returncode == 0
    site = dict(
        line.split("=", 1)
        for line in (REPO / "profiles/slurm/site.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    env = {k: f"test_{k.lower()}" for k in site}
    proc = snakemake(
        tmp_path,
        REPO / "config/pilot.yaml",
        "-n",
        "-p",
        "--profile",
        str(REPO / "profiles/slurm"),
        "--cores",
        "32",
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert len(re.findall(r"^rule download_file:", out, re.M)) == 9
    # (a dry run does not say which jobs are local: the rule's directive is what the executor reads)
    block = (REPO / "rules/download.smk").read_text().split("rule download_file:")[1].split("\nrule ")[0]
    assert "    localrule: True\n" in block
    commands = re.findall(
        r"launch='vlpeft\.launch --nproc-per-node (\d+) --stop-grace \d+'; elif \[ 0 -eq 1 \]; then"
        r" launch='vlpeft\.warm vlpeft\.train'; else launch=vlpeft\.train; fi;"
        r" OMP_NUM_THREADS=(\d+) exec python",
        out,
    )
    threads = profile["set-threads"]["train_run"]
    assert commands and set(commands) == {(str(train["gpu"]), str(threads))}
    assert "slurm_account=test_vlpeft_slurm_account, slurm_partition=test_vlpeft_slurm_partition" in out
