"""``vlpeft status``: each run's state from its directory, progress and ETA from train.log, GPU-hours; writes nothing."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
import yaml

from vlpeft import grid, status
from vlpeft.cli import main as cli
from vlpeft.files import RunLock

REPO = Path(__file__).resolve().parents[2]
CONFIG = yaml.safe_load((REPO / "tests/workflow/configs/tiny.yaml").read_text())
NOW = time.time()  # reset before each test (_fresh_now): the CLI's clock is the real one


@pytest.fixture(autouse=True)
def _fresh_now(monkeypatch) -> None:
    """Ages are relative to the moment a test starts, not to collection: in a long session the module is imported
    many minutes before its tests run, which would age every file past --active."""
    monkeypatch.setattr(sys.modules[__name__], "NOW", time.time())


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def _write(path: Path, text: str, age_s: float = 0.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (NOW - age_s, NOW - age_s))


@pytest.fixture
def study(tmp_path: Path):
    """One run in each state, in the tiny study's run directories."""
    runs, digests = grid.expand(CONFIG), grid.run_digests(CONFIG)
    d = {
        name: tmp_path / run.dir
        for name, run in zip(("success", "stale", "running", "preempted", "failed", "killed", "locked"), runs)
    }
    rec = {"status": "success", "gpu_hours": 0.5, "steps_done": 4, "total_steps": 4}
    _write(d["success"] / "record.json", json.dumps({**rec, "config_digest": digests[runs[0].run_id]}), 3600)
    _write(d["stale"] / "record.json", json.dumps({**rec, "config_digest": "0" * 16}), 3600)
    _write(d["running"] / "status.json", json.dumps({"status": "preempted", "steps_done": 2, "total_steps": 4}), 600)
    _write(
        d["running"] / "train.log",
        "2026 [rank 0] vlpeft.train: step 2/4 loss 3.1 lr 0.1 5.0 samples/s eta 100s\n"
        "2026 [rank 0] vlpeft.train: resumed from step 2\n"
        "2026 [rank 0] vlpeft.train: step 3/4 loss 3.0 lr 0.1 5.0 samples/s eta 50s\n",
        20,
    )
    _write(d["preempted"] / "train.log", "step 1/4 loss 3 lr 1 1 samples/s eta 9s\n", 120)
    _write(
        d["preempted"] / "status.json",
        json.dumps({"status": "preempted", "steps_done": 1, "total_steps": 4, "gpu_hours": 0.25}),
        60,
    )
    _write(
        d["failed"] / "status.json",
        json.dumps(
            {
                "status": "failed",
                "steps_done": 0,
                "total_steps": 4,
                "error": "OutOfMemoryError: CUDA out of memory.\nTried 2 GiB",
            }
        ),
    )
    _write(d["killed"] / "train.log", "step 1/4 loss 3 lr 1 1 samples/s eta 9s\n", 7200)
    d["locked"].mkdir(parents=True)
    return tmp_path, runs, digests, d


def test_each_state_is_classified_and_nothing_is_written(study, monkeypatch, capsys) -> None:
    root, runs, digests, d = study
    lock = RunLock(d["locked"]).acquire()  # a run in progress on this machine (no log yet)
    try:
        before = _tree(root)
        got = {r.run_id: status.run_status(r, digests[r.run_id], NOW, root=root) for r in runs}
        monkeypatch.chdir(root)
        assert cli(["status", "--config", str(REPO / "tests/workflow/configs/tiny.yaml"), "--all"]) == 0
        assert _tree(root) == before  # read-only: no file created, changed or touched
    finally:
        lock.release()
    states = [got[r.run_id].state for r in runs]
    assert states[:7] == ["success", "stale", "running", "preempted", "failed", "failed", "running"]
    assert set(states[7:]) == {"missing"}
    running = got[runs[2].run_id]
    assert (running.step, running.total_steps) == (3, 4) and 25 <= running.eta_s <= 31  # 50 s less the log's age
    assert got[runs[3].run_id].detail == "checkpointed at step 1/4"
    assert got[runs[4].run_id].detail == "OutOfMemoryError: CUDA out of memory."
    assert "without a status" in got[runs[5].run_id].detail
    assert "will be rerun" in got[runs[1].run_id].detail

    out = capsys.readouterr().out
    assert out.startswith(
        f"study tiny (synthetic data, config digest {grid.study_info(CONFIG)['study_digest']}): "
        f"{len(runs)} runs under results/tiny/"
    )
    assert f"success 1 | running 2 | preempted 1 | failed 2 | stale 1 | missing {len(runs) - 7}" in out
    assert "3/4 (75%)" in out and "OutOfMemoryError: CUDA out of memory." in out
    # Spent: every record's hours (success, stale, preempted). Planned: 4 steps x the measured 0.125 GPU-h per step
    # for the coco/lora runs without a success record, the success run's own 0.5.
    assert "GPU-hours: 1.25 spent" in out and "planned" in out


def test_a_log_older_than_the_last_status_is_not_running(study) -> None:
    root, runs, digests, d = study
    _write(d["running"] / "status.json", json.dumps({"status": "preempted", "steps_done": 3, "total_steps": 4}))
    assert status.run_status(runs[2], digests[runs[2].run_id], NOW, root=root).state == "preempted"
    # a log still growing but quiet for longer than --active: not running
    _write(d["running"] / "status.json", "{}", 3600)
    assert status.run_status(runs[2], digests[runs[2].run_id], NOW, active_s=10, root=root).state == "failed"


def test_planned_gpu_hours_from_the_schedule_and_measured_rates(study) -> None:
    root, runs, digests, _ = study
    states = {r.run_id: status.run_status(r, digests[r.run_id], NOW, root=root) for r in runs}
    spent, planned, unknown = status.gpu_hours_plan(CONFIG, runs, states, root)
    assert spent == pytest.approx(1.25)
    coco_steps = CONFIG["tasks"]["coco"]["schedule"]["steps"]
    coco = [r for r in runs if r.task == "coco"]
    # coco runs: the success run's own 0.5 h; every other coco run its schedule's steps x the mean measured rate
    rate = (0.5 / 4 + 0.5 / 4 + 0.25 / 1) / 3
    assert planned == pytest.approx(0.5 + (len(coco) - 1) * coco_steps * rate)
    assert unknown == len(runs) - len(coco)  # VQA: no measured rate yet (and epoch-based runs need their data size)


def test_a_bad_config_is_one_line(tmp_path, capsys) -> None:
    assert cli(["status", "--config", str(tmp_path / "none.yaml")]) == 1
    assert capsys.readouterr().err.strip() == f"error: config file not found: {tmp_path / 'none.yaml'}"
