"""Run records: one JSON per run with its configuration, environment, counts, metrics, timings and status.

Written atomically (temporary file + rename), so a crash never leaves half a record.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

PACKAGES = ("vlpeft", "torch", "torchvision", "timm", "tokenizers", "numpy", "pycocoevalcap", "safetensors")


def write_json(obj, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as f:
        json.dump(obj, f, indent=1, sort_keys=False, default=str)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def git_state(start: str | Path | None = None) -> dict:
    """Commit and dirty flag of the repository holding this package (or ``start``), if any."""
    where = Path(start or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=where,
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
        )
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def environment() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    gpu = None
    if torch.cuda.is_available():
        gpu = {"name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count(), "cuda": torch.version.cuda}
    return {
        "packages": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "cpu_count": os.cpu_count(),
        "gpu": gpu,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }
