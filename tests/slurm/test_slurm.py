"""The mini study through a real (one-node, localhost) SLURM cluster with the production profile's shape.

start_cluster.sh brings up munge, mariadb + slurmdbd, slurmctld and slurmd with 4 fake GPUs; Snakemake then runs
the whole mini study (tests/workflow/configs/tiny.yaml) with ``--profile tests/slurm/profile`` (the executor
plugin, real ``sbatch``, ``sacct`` status checks). Each training run is one SLURM job with 2 GPUs running
``torchrun --nproc_per_node 2`` (two CPU processes over gloo). Checked afterwards: the run's tables, figures and
report; in the accounting database every job COMPLETED and each training job had gres/gpu=2 on one node (sbatch
received --nodes=1); each training log reports 2 processes. A second test runs one long training run under a 1-minute SLURM time limit: SLURM's SIGTERM
makes the ranks checkpoint, Snakemake's retry resumes from that checkpoint, and the run record lists the attempts.
The cluster is stopped in the fixture's teardown.

Needs root (packages, daemons). Skipped when not root, or when the SLURM packages are missing and cannot be
installed; VLPEFT_REQUIRE_SLURM=1 (or CI=true) turns those skips into failures.
Environment: VLPEFT_SLURM_TEST_TIMEOUT (seconds for the Snakemake run, default 900),
VLPEFT_SLURM_TEST_CONFIG (default tests/workflow/configs/tiny.yaml), SLURM_TEST_DIR (cluster state dir; default a
fresh pytest temp dir), VLPEFT_SLURM_TEST_KEEP=1 (leave the cluster running after the test).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
START = HERE / "start_cluster.sh"
STOP = HERE / "stop_cluster.sh"
PROFILE = "tests/slurm/profile"
CONFIG = os.environ.get("VLPEFT_SLURM_TEST_CONFIG", "tests/workflow/configs/tiny.yaml")
TIMEOUT_S = int(os.environ.get("VLPEFT_SLURM_TEST_TIMEOUT", "900"))
GPUS_PER_TRAINING_JOB = 2
# What the workflow needs, copied into a temp dir so that the run cannot touch the repository's results/.
WORKFLOW_FILES = ["Snakefile", "rules", "workflow", "config", "profiles", "envs", "tests/workflow/configs", PROFILE]
# Rules that must not go through SLURM (rules/common.smk: localrules).
LOCAL_RULES = {"write_run_config", "aggregate_runs", "write_report", "plot_task_grid", "plot_cost", "plot_val_curves"}


def _required() -> bool:
    return os.environ.get("VLPEFT_REQUIRE_SLURM") == "1" or os.environ.get("CI", "").lower() in ("1", "true")


def _skip_or_fail(reason: str):
    if _required():
        pytest.fail(f"{reason} (VLPEFT_REQUIRE_SLURM/CI set: not skipping)")
    pytest.skip(reason)


def _tail(text: str, n: int = 60) -> str:
    return "\n".join(text.splitlines()[-n:])


def _first_error(text: str, n: int = 70) -> str:
    """The first failed job's report (with its log, show-failed-logs) from a Snakemake log."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Error in rule"):
            return "\n".join(lines[max(0, i - 1) : i + n])
    return ""


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A running one-node cluster: yields the environment for its client commands; stops it afterwards."""
    if os.name != "posix" or os.geteuid() != 0:
        _skip_or_fail("the SLURM test needs root (it installs packages and starts slurmctld/slurmd/slurmdbd)")
    if shutil.which("timeout") is None:
        _skip_or_fail("coreutils `timeout` is missing")
    state = Path(os.environ.get("SLURM_TEST_DIR") or tmp_path_factory.mktemp("slurm-cluster"))
    # No job context of an enclosing allocation (SLURM_JOB_ID, SBATCH_*, ...); this script's SLURM_TEST_* stay.
    env = {
        k: v
        for k, v in os.environ.items()
        if k.startswith("SLURM_TEST_") or not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))
    }
    t0 = time.monotonic()
    proc = subprocess.run(
        ["bash", str(START), str(state)], check=False, env=env, capture_output=True, text=True, timeout=900
    )
    if proc.returncode != 0:
        subprocess.run(
            ["bash", str(STOP), str(state)], check=False, env=env, capture_output=True, text=True, timeout=180
        )
        out = _tail(proc.stdout + proc.stderr)
        if proc.returncode in (2, 3):  # not root / packages missing and not installable
            _skip_or_fail(f"SLURM cannot be set up here (start_cluster.sh exit {proc.returncode}):\n{out}")
        pytest.fail(f"start_cluster.sh failed (exit {proc.returncode}); logs in {state}/log:\n{out}")
    print(f"cluster up in {time.monotonic() - t0:.1f} s\n{proc.stdout}")
    env["SLURM_CONF"] = str(state / "etc" / "slurm.conf")
    try:
        yield {"env": env, "state": state}
    finally:
        if os.environ.get("VLPEFT_SLURM_TEST_KEEP") == "1":
            print(f"leaving the cluster running: tests/slurm/stop_cluster.sh {state}")
        else:
            stop = subprocess.run(
                ["bash", str(STOP), str(state)], check=False, env=env, capture_output=True, text=True, timeout=300
            )
            assert stop.returncode == 0, f"stop_cluster.sh failed:\n{stop.stdout}{stop.stderr}"


def _copy_workflow(dest: Path) -> None:
    for rel in WORKFLOW_FILES:
        src = REPO / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, ignore=shutil.ignore_patterns("__pycache__", ".snakemake"))
        else:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def _snakemake_bin() -> Path:
    exe = Path(sys.executable).parent / "snakemake"
    if exe.exists():
        return exe
    found = shutil.which("snakemake")
    if found is None:
        pytest.skip("snakemake is not installed (pip install -e '.[workflow]')")
    return Path(found)


def _train_comment(run) -> str:
    """The plugin's sbatch --comment for a train_run job: rule_<rule>_wildcards_<wildcard values joined by _>."""
    task, method, setting, seed = run.run_id.split("/")
    return f"rule_train_run_wildcards_{task}_{method}_{setting}_{seed.removeprefix('seed')}"


def test_mini_study_on_slurm(slurm_cluster, tmp_path):
    from vlpeft import grid

    wd = tmp_path / "workflow"
    _copy_workflow(wd)
    config = yaml.safe_load((wd / CONFIG).read_text())
    runs = grid.run_table(config)
    assert runs, "the test config has no training runs"

    snakemake = _snakemake_bin()
    env = dict(slurm_cluster["env"])
    env["PATH"] = f"{snakemake.parent}{os.pathsep}{env.get('PATH', '')}"  # torchrun of the same environment
    env.setdefault("HF_HUB_OFFLINE", "1")
    log_path = wd / "snakemake.log"
    cmd = [
        "timeout",
        "-s",
        "INT",
        "-k",
        "60",
        str(TIMEOUT_S),
        str(snakemake),
        "--profile",
        PROFILE,
        "--configfile",
        CONFIG,
    ]
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        rc = subprocess.run(cmd, check=False, cwd=wd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.monotonic() - t0
    out = log_path.read_text()
    print(f"snakemake on SLURM: exit {rc} after {wall:.0f} s ({len(runs)} training runs); log {log_path}")
    if rc in (124, 137) or (rc != 0 and wall >= TIMEOUT_S):
        pytest.fail(f"snakemake did not finish within {TIMEOUT_S} s (exit {rc}):\n{_tail(out, 80)}")
    assert rc == 0, f"snakemake failed (exit {rc}) after {wall:.0f} s:\n{_first_error(out)}\n...\n{_tail(out, 30)}"

    m = re.search(r"SLURM run ID: (\S+)", out)
    assert m, "the SLURM executor was not used (no 'SLURM run ID' in the log)"
    run_uuid = m.group(1)

    # Results: one successful row per run, figures and report.
    with open(wd / "results/tiny/tables/runs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["run_id"] for r in rows) == sorted(runs), "runs.csv does not have exactly one row per run"
    failed = {r["run_id"]: r["status"] for r in rows if r["status"] != "success"}
    assert not failed, f"runs not successful: {failed}"
    figures = wd / "results/tiny/figures"
    pdfs = sorted(figures.glob("*.pdf"))
    assert pdfs, "no figures"
    for pdf in pdfs:
        assert pdf.stat().st_size > 0, f"empty figure {pdf.name}"
        assert pdf.with_suffix(".png").is_file(), f"{pdf.name} without its PNG"
    assert (wd / "results/tiny/report.md").stat().st_size > 0
    # Everything `all` asks for is there and up to date (figures included).
    dry = subprocess.run(
        [str(snakemake), "--profile", PROFILE, "--configfile", CONFIG, "-n"],
        check=False,
        cwd=wd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr, (
        f"a dry run after the run still has work to do:\n{_tail(dry.stdout + dry.stderr)}"
    )

    # Accounting: every job of this run COMPLETED; one 2-GPU job per training run; local rules stayed local.
    sacct = subprocess.run(
        [
            "sacct",
            "-X",
            "-n",
            "-P",
            "--starttime",
            "2000-01-01",
            "--name",
            run_uuid,
            "-o",
            "JobIDRaw,State,ExitCode,Elapsed,AllocTRES%200,Comment%300,NNodes,SubmitLine%5000",
        ],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sacct.returncode == 0, f"sacct failed: {sacct.stderr}"
    jobs = [
        dict(zip(["id", "state", "exit", "elapsed", "tres", "comment", "nodes", "submit"], line.split("|", 7)))
        for line in sacct.stdout.splitlines()
        if line.strip()
    ]
    print("sacct:\n" + "\n".join(" ".join(list(j.values())[:6]) for j in jobs))
    assert jobs, f"sacct shows no jobs named {run_uuid}"
    not_completed = [j for j in jobs if j["state"] != "COMPLETED"]
    assert not not_completed, f"SLURM jobs not COMPLETED: {not_completed}"
    by_comment: dict[str, list[dict]] = {}
    for j in jobs:
        by_comment.setdefault(j["comment"], []).append(j)
    for run_id, run in runs.items():
        train_jobs = by_comment.get(_train_comment(run))
        assert train_jobs, f"no SLURM job for training run {run_id} (comment {_train_comment(run)})"
        for j in train_jobs:
            assert f"gres/gpu={GPUS_PER_TRAINING_JOB}" in j["tres"].split(","), (
                f"training job {j['id']} ({run_id}) did not get {GPUS_PER_TRAINING_JOB} GPUs: {j['tres']}"
            )
            # The profile's early-warning signal (slurm_extra) reached sbatch.
            assert "--signal=TERM@300" in j["submit"].split(), f"training job {j['id']}: {j['submit'][:500]}"
            # One node per training job (torchrun --standalone): the profile's nodes: 1 reached sbatch.
            assert "--nodes=1" in j["submit"].split() and j["nodes"] == "1", (
                f"training job {j['id']} not pinned to one node ({j['nodes']} nodes): {j['submit'][:500]}"
            )
    slurm_rules = {re.sub(r"^rule_|_wildcards_.*$", "", c) for c in by_comment}
    assert "train_run" in slurm_rules
    assert not slurm_rules & LOCAL_RULES, f"local rules submitted to SLURM: {slurm_rules & LOCAL_RULES}"

    # Each training job ran torchrun with 2 processes (the profile's gpu: 2 reached --nproc_per_node).
    for run_id in runs:
        task, method, setting, seed = run_id.split("/")
        train_log = (wd / f"results/tiny/logs/train/{task}/{method}/{setting}/{seed}.log").read_text()
        assert re.search(rf"global batch \d+ = {GPUS_PER_TRAINING_JOB} procs x", train_log), (
            f"{run_id}: the training log does not report {GPUS_PER_TRAINING_JOB} processes"
        )


def test_time_limit_checkpoints_and_the_retry_resumes(slurm_cluster, tmp_path):
    """The real path of a job that outlives its time limit: SLURM sends SIGTERM to the job's processes, the ranks
    checkpoint at the next step and exit, SLURM records TIMEOUT, Snakemake resubmits (``retries``), and the new
    job resumes from the SIGTERM checkpoint (not from scratch, not from a periodic checkpoint: there is none)."""
    from vlpeft import grid

    wd = tmp_path / "workflow"
    _copy_workflow(wd)
    config = yaml.safe_load((wd / CONFIG).read_text())
    config["tasks"] = {"coco": config["tasks"]["coco"]}
    config["tasks"]["coco"].update(ratios=[1.0])
    # About twice the steps one attempt holds on this machine (about 3500-4300 steps before SIGTERM, 2 ranks on 2
    # cores), so that even an idle machine needs a second attempt: two or three attempts, four on a busy machine
    # (retries below). Evaluation only at the end, so the only checkpoint a retry can resume from is the one written
    # on SIGTERM.
    config["tasks"]["coco"]["schedule"]["steps"] = STEPS = 8000
    config["tasks"]["coco"]["eval"]["interval"] = 0
    config["methods"] = {
        "lora": {"options": config["methods"]["lora"]["options"], "coco": config["methods"]["lora"]["coco"]}
    }
    config["classifier"] = [False]
    config["train"]["log_every"] = 500
    (wd / "timelimit.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (run,) = grid.run_table(config).values()
    profile = yaml.safe_load((wd / PROFILE / "config.yaml").read_text())
    profile["retries"] = 5  # production: 3. Each attempt gets a fresh minute; a busy machine may need a fourth
    profile["set-resources"]["train_run"]["runtime"] = 1  # minutes: SLURM's smallest time limit
    # No early warning signal: this checks the worst case, the time limit's own SIGTERM with KillWait to spare.
    profile["set-resources"]["train_run"].pop("slurm_extra")
    (wd / "timelimit-profile").mkdir()
    (wd / "timelimit-profile/config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))

    snakemake = _snakemake_bin()
    env = dict(slurm_cluster["env"])
    env["PATH"] = f"{snakemake.parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("HF_HUB_OFFLINE", "1")
    log_path = wd / "snakemake.log"
    with open(log_path, "w") as log:
        # (the target first: --configfile takes every argument after it)
        rc = subprocess.run(
            [
                "timeout",
                "-s",
                "INT",
                "-k",
                "60",
                str(max(TIMEOUT_S, 1500)),
                str(snakemake),
                f"{run.dir}/record.json",
                "--profile",
                "timelimit-profile",
                "--configfile",
                "timelimit.yaml",
            ],
            check=False,
            cwd=wd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        ).returncode
    out = log_path.read_text()
    assert rc == 0, f"snakemake failed (exit {rc}):\n{_first_error(out)}\n...\n{_tail(out, 30)}"

    record = json.loads((wd / run.dir / "record.json").read_text())
    attempts = record["attempts"]
    train_log = (wd / run.dir / "train.log").read_text()
    assert record["status"] == "success" and record["steps_done"] == STEPS
    # An attempt that finishes within a few seconds of its time limit is recorded TIMEOUT by SLURM although it
    # finished; Snakemake deletes record.json and resubmits, and that job writes the record again from status.json
    # (one "restored" attempt at the end) instead of training the run again from step 0.
    trained = [a for a in attempts if a["status"] != "restored"]
    restored = attempts[len(trained) :]
    assert len(restored) <= 1 and all(a["status"] == "restored" for a in restored), attempts
    assert len(trained) >= 2, f"the run was never interrupted (make it longer?): {attempts}\n{train_log[-3000:]}"
    for before, after in zip(trained, trained[1:]):
        assert before["status"] == "preempted" and before["signal"] == "SIGTERM", attempts
        assert 0 < before["end_step"] == after["start_step"], attempts
    assert trained[-1]["status"] == "success" and trained[-1]["end_step"] == STEPS
    assert "received SIGTERM" in train_log and "resumed from" in train_log

    sacct = subprocess.run(
        ["sacct", "-X", "-n", "-P", "--starttime", "2000-01-01", "-o", "JobIDRaw,State,Comment%300"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    states = [
        line.split("|")[1]
        for line in sacct.stdout.splitlines()
        if line.endswith(_train_comment(run)) and line.split("|")[0] in {a["slurm_job_id"] for a in attempts}
    ]
    finish = ["TIMEOUT", "COMPLETED"] if restored else ["COMPLETED"]
    assert states == ["TIMEOUT"] * (len(trained) - 1) + finish, sacct.stdout
    # The exit status Snakemake saw for each preempted attempt: 75 from vlpeft.launch (torchrun alone says 1).
    logs = {p.stem: p.read_text() for p in (wd / ".snakemake/slurm_logs").rglob("*.log")}
    for a in trained[:-1]:
        text = logs.get(str(a["slurm_job_id"]), "")
        assert re.search(r"exit status 75\b", text), (
            f"job {a['slurm_job_id']}: no exit status 75 in its log\n{text[-3000:]}"
        )
