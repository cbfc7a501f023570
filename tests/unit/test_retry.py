"""Retries resume preempted runs only (vlpeft.retry): every other failure fails once, with its log shown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vlpeft import retry


def _status(run_dir: Path, status: str, error: str | None = None) -> None:
    (run_dir / "status.json").write_text(json.dumps({"status": status, "error": error}))


def _attempt(run_dir: Path, log: Path, n: int, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    rc = retry.main(["--run-dir", str(run_dir), "--attempt", str(n), "--log", str(log)])
    return rc, capsys.readouterr().err


@pytest.fixture
def run(tmp_path: Path) -> tuple[Path, Path]:
    run_dir, log = tmp_path / "runs/coco/lora/size2_ratio1/seed0", tmp_path / "logs/train.log"
    run_dir.mkdir(parents=True)
    log.parent.mkdir()
    return run_dir, log


def test_a_preempted_attempt_is_retried(run, capsys) -> None:
    run_dir, log = run
    assert _attempt(run_dir, log, 1, capsys)[0] == 0
    _status(run_dir, "preempted")  # the ranks checkpointed on SIGTERM and exited 75
    assert _attempt(run_dir, log, 2, capsys)[0] == 0
    _status(run_dir, "preempted")
    assert _attempt(run_dir, log, 3, capsys)[0] == 0
    assert json.loads((run_dir / retry.MARKER).read_text())["attempt"] == 3


def test_an_attempt_that_finished_but_was_counted_failed_is_retried(run, capsys) -> None:
    """SLURM records TIMEOUT for a run that finished seconds before its limit and Snakemake removes record.json: the
    run's status says success, and the retry must start (it restores the record from that status, no training)."""
    run_dir, log = run
    assert _attempt(run_dir, log, 1, capsys)[0] == 0
    _status(run_dir, "success")
    assert _attempt(run_dir, log, 2, capsys)[0] == 0


@pytest.mark.parametrize("status", ["failed", None])
def test_any_other_failure_fails_once_showing_its_error_and_log(run, capsys, status) -> None:
    """A CUDA out-of-memory error (status failed), or a crash that wrote no status: the retries fail at once, each
    naming the first failure and showing the end of its log, which stays in the rule's log file."""
    run_dir, log = run
    assert _attempt(run_dir, log, 1, capsys)[0] == 0
    log.write_text(
        "step 1/10 loss 3.2\nTraceback (most recent call last):\ntorch.OutOfMemoryError: CUDA out of memory\n"
    )
    if status:
        _status(run_dir, status, "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n(details)")
    for n in (2, 3, 4):
        rc, err = _attempt(run_dir, log, n, capsys)
        assert rc == 1, n
        first = err.splitlines()[0]
        assert first.startswith(f"error: {run_dir}: attempt 1 failed and was not a preemption: ")
        assert (
            ("OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB;" in first)
            if status
            else "ended without writing a status" in first
        )
        assert f"attempt {n} is not started" in first
        assert "torch.OutOfMemoryError: CUDA out of memory" in err  # the failed attempt's log
    assert json.loads((run_dir / retry.MARKER).read_text())["attempt"] == 1


def test_a_status_older_than_the_attempt_is_not_its_outcome(run, capsys) -> None:
    """Attempt 1 was preempted; attempt 2 crashed without a status: attempt 3 must not take attempt 1's
    'preempted' for attempt 2's."""
    run_dir, log = run
    _attempt(run_dir, log, 1, capsys)
    _status(run_dir, "preempted")
    assert _attempt(run_dir, log, 2, capsys)[0] == 0
    old = time.time() - 60  # (attempts are a resubmission apart; here they are not, so date attempt 1's status back)
    os.utime(run_dir / "status.json", (old, old))
    rc, err = _attempt(run_dir, log, 3, capsys)
    assert rc == 1 and "attempt 2 failed and was not a preemption: it ended without writing a status" in err


def test_a_new_invocation_starts_whatever_failed_before(run, capsys) -> None:
    run_dir, log = run
    _attempt(run_dir, log, 1, capsys)
    _status(run_dir, "failed", "ValueError: bad")
    assert _attempt(run_dir, log, 2, capsys)[0] == 1
    assert _attempt(run_dir, log, 1, capsys)[0] == 0  # the user fixed the cause and runs Snakemake again


def test_the_rule_shell_does_not_start_torchrun_after_a_failure(run, tmp_path) -> None:
    """The rule's `check && exec torchrun > {log}`: a refused retry neither runs the command nor truncates the log
    that Snakemake shows."""
    run_dir, log = run
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    started = tmp_path / "started"

    def rule(n: int) -> subprocess.CompletedProcess:
        cmd = (
            f"{sys.executable} -m vlpeft.retry --run-dir {run_dir} --attempt {n} --log {log}"
            f" && exec sh -c 'echo run >> {started}; echo attempt {n} output; exit 1' > {log} 2>&1"
        )
        return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=env, timeout=60, check=False)

    assert rule(1).returncode == 1
    _status(run_dir, "failed", "RuntimeError: NCCL error")
    second = rule(2)
    assert second.returncode == 1 and "NCCL error" in second.stderr and "attempt 1 output" in second.stderr
    assert started.read_text() == "run\n"
    assert log.read_text() == "attempt 1 output\n"
