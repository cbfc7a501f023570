"""benchmarks/gpu_checks.sh can be trusted where it runs (a GPU machine, not here): checked statically."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_checks.sh"


def test_the_script_parses():
    proc = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_every_timeout_kills_what_ignores_its_sigterm():
    """The trainer takes SIGTERM as "checkpoint at the next step": a plain `timeout` would never end a hung step."""
    calls = [
        line
        for line in SCRIPT.read_text().splitlines()
        if re.search(r"(^|[\s;|&(])timeout\s", line) and not line.lstrip().startswith("#")
    ]
    assert calls, "gpu_checks.sh runs nothing under timeout"
    for line in calls:
        words = shlex.split(line[line.index("timeout") :])
        assert words[1:3] == ["-k", "30"], f"timeout without -k 30: {line.strip()}"


def test_it_runs_the_nccl_check_on_two_gpus_and_says_when_it_skips_it_and_ends_with_a_summary():
    text = SCRIPT.read_text()
    assert re.search(r'if \[ "\$gpus" -ge 2 \]; then\s+step nccl ', text)
    assert "nccl skipped: the 2-process NCCL check needs two GPUs" in text
    assert "--bf16" in text and "gpu_checks summary" in text
    tests = (SCRIPT.parents[1] / "tests/gpu/test_cuda.py").read_text()
    assert len(re.findall(r"def test_\w*nccl\w*\(", tests)) == 1  # what `-k nccl` selects, and `-k "not nccl"` not


def test_without_a_gpu_it_stops_at_once_saying_so(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the script would run for real")
    proc = subprocess.run(
        ["bash", str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "PYTHON": sys.executable,
            "OUT": str(tmp_path / "out"),
        },
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "the Python environment or the GPU is missing" in proc.stderr
