"""``vlpeft status --config X``: where every run of a study stands, read-only (it writes nothing).

Per run: ``success`` (a record of the configuration the config resolves the run to), ``stale`` (a record of another
configuration: Snakemake will rerun it), ``running`` (its directory's lock is held on this machine, or its
``train.log`` grew after its last status within the last ``--active`` seconds), ``preempted`` (checkpointed, waiting
for its retry), ``failed`` (with the first line of the error; also a run whose log stopped without a status) or
``missing`` (never started). Progress and ETA come from the last progress line of ``train.log`` (``step i/n ... eta
Ns``), less the time since it was written. GPU-hours spent are those the records count (every attempt); planned
GPU-hours are each run's schedule (its optimizer steps) times the GPU-hours per step measured on the runs of the same
task and method that have a record (else of the same task), so the plan firms up as runs finish.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .files import LOCK_NAME, read_json_mapping
from .grid import Run, expand, resolve, run_digests, study_info
from .schedule import steps_for

STATES = ("success", "running", "preempted", "failed", "stale", "missing")
ACTIVE_S = 900.0
_PROGRESS = re.compile(r"step (\d+)/(\d+) loss .* eta (\d+)s")


@dataclass
class RunStatus:
    run_id: str
    state: str
    detail: str = ""
    step: int | None = None
    total_steps: int | None = None
    eta_s: float | None = None
    gpu_hours: float | None = None
    steps_done: int | None = None


def _locked(path: Path) -> bool:
    """Whether a process on this machine holds a lock on ``path`` (read from /proc/locks: taking the lock to test it
    could make a starting run fail)."""
    try:
        inode = path.stat().st_ino
        locks = Path("/proc/locks").read_text()
    except OSError:
        return False
    return any(
        line.split()[5].rsplit(":", 1)[-1] == str(inode) for line in locks.splitlines() if len(line.split()) > 5
    )


def _first_line(text: object) -> str:
    lines = str(text or "").strip().splitlines()
    return lines[0] if lines else ""


def _progress(log: Path, now: float) -> tuple[int | None, int | None, float | None]:
    try:
        with log.open("rb") as f:
            f.seek(max(0, log.stat().st_size - 65536))
            tail = f.read().decode(errors="replace")
    except OSError:
        return None, None, None
    matches = _PROGRESS.findall(tail)
    if not matches:
        return None, None, None
    step, total, eta = matches[-1]
    return int(step), int(total), max(0.0, float(eta) - (now - log.stat().st_mtime))


def run_status(
    run: Run, digest: str, now: float | None = None, active_s: float = ACTIVE_S, root: Path = Path(".")
) -> RunStatus:
    """Classify one run from the files in its directory (reads only)."""
    now = time.time() if now is None else now
    d = root / run.dir
    record, status = read_json_mapping(d / "record.json"), read_json_mapping(d / "status.json")
    log = d / "train.log"
    hours = (record or status or {}).get("gpu_hours")
    done = (record or status or {}).get("steps_done")
    if record is not None and record.get("status") == "success":
        if record.get("config_digest") != digest:
            return RunStatus(
                run.run_id,
                "stale",
                f"record of config digest {record.get('config_digest')}, the config "
                f"resolves this run to {digest}: it will be rerun",
                gpu_hours=hours,
                steps_done=done,
            )
        return RunStatus(run.run_id, "success", gpu_hours=hours, steps_done=done)
    last_status = (d / "status.json").stat().st_mtime if status is not None else -math.inf
    log_time = log.stat().st_mtime if log.is_file() else None
    growing = log_time is not None and log_time > last_status and now - log_time < active_s
    if _locked(d / LOCK_NAME) or growing:
        step, total, eta = _progress(log, now)
        return RunStatus(
            run.run_id, "running", step=step, total_steps=total, eta_s=eta, gpu_hours=hours, steps_done=done
        )
    if status is not None:
        state = status.get("status") if status.get("status") in ("preempted", "failed") else "failed"
        detail = _first_line(status.get("error")) if state == "failed" else ""
        if state == "preempted":
            detail = f"checkpointed at step {status.get('steps_done')}/{status.get('total_steps')}"
        return RunStatus(
            run.run_id,
            state,
            detail,
            step=status.get("steps_done"),
            total_steps=status.get("total_steps"),
            gpu_hours=hours,
            steps_done=done,
        )
    if log_time is not None:
        return RunStatus(run.run_id, "failed", "its log stopped without a status (killed?)")
    return RunStatus(run.run_id, "missing")


def planned_steps(config: dict, run: Run, statuses: RunStatus, root: Path = Path(".")) -> int | None:
    """Optimizer steps of the run's schedule (epoch-based: from its training-set size, once known)."""
    d = resolve(config, run)
    schedule = d["schedule"]
    if schedule["kind"] == "steps":
        return int(schedule["steps"])
    if statuses.total_steps:
        return int(statuses.total_steps)
    subset = read_json_mapping(root / d["subset"]) if d["subset"] else None
    size = int(subset.get("size") or 0) if subset else 0
    if not size:
        return None
    return steps_for("epochs", size, d["total_batch_size"], epochs=schedule["epochs"])


def gpu_hours_plan(
    config: dict, runs: list[Run], states: dict[str, RunStatus], root: Path = Path(".")
) -> tuple[float, float | None, int]:
    """(spent, planned, runs without an estimate): see the module docstring."""
    spent = sum(s.gpu_hours or 0.0 for s in states.values())
    rates: dict[tuple, list[float]] = {}
    for run in runs:
        s = states[run.run_id]
        if s.gpu_hours and s.steps_done:
            rate = s.gpu_hours / s.steps_done
            rates.setdefault((run.task, run.method), []).append(rate)
            rates.setdefault((run.task,), []).append(rate)
    planned, unknown = 0.0, 0
    for run in runs:
        s = states[run.run_id]
        if s.state == "success" and s.gpu_hours is not None:
            planned += s.gpu_hours
            continue
        rate = rates.get((run.task, run.method)) or rates.get((run.task,))
        steps = planned_steps(config, run, s, root) if rate else None
        if rate and steps:
            planned += steps * sum(rate) / len(rate)
        else:
            unknown += 1
    return spent, (planned if unknown < len(runs) else None), unknown


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def report(
    config: dict, root: Path = Path("."), show_all: bool = False, active_s: float = ACTIVE_S, now: float | None = None
) -> str:
    runs = expand(config)
    digests = run_digests(config)
    info = study_info(config)
    states = {r.run_id: run_status(r, digests[r.run_id], now, active_s, root) for r in runs}
    counts = Counter(s.state for s in states.values())
    spent, planned, unknown = gpu_hours_plan(config, runs, states, root)
    out = [
        f"study {info['study']} ({info['data_source']} data, config digest {info['study_digest']}): "
        f"{len(runs)} runs under results/{info['study']}/",
        "  " + " | ".join(f"{state} {counts.get(state, 0)}" for state in STATES),
    ]
    plan = "unknown until a run has a record" if planned is None else f"{planned:.2f} planned"
    if planned is not None and unknown:
        plan += f" ({unknown} runs without an estimate yet)"
    out.append(
        f"GPU-hours: {spent:.2f} spent, {plan} (schedule steps x GPU-hours per step measured on this "
        "study's runs of the same task and method)"
    )
    rows = [s for s in states.values() if show_all or s.state not in ("success", "missing")]
    if rows:
        width = max(len(s.run_id) for s in rows)
        out.append(f"{'run':<{width}}  {'state':<9}  {'progress':<14}  {'ETA':>7}  {'GPU-h':>6}  detail")
        for s in rows:
            progress = ""
            if s.step is not None and s.total_steps:
                progress = f"{s.step}/{s.total_steps} ({100 * s.step / s.total_steps:.0f}%)"
            hours = "" if s.gpu_hours is None else f"{s.gpu_hours:.2f}"
            out.append(
                f"{s.run_id:<{width}}  {s.state:<9}  {progress:<14}  {_fmt_s(s.eta_s):>7}  {hours:>6}  "
                f"{s.detail}".rstrip()
            )
    return "\n".join(out)


def main(config_path: str, show_all: bool = False, active_s: float = ACTIVE_S) -> int:
    import sys

    from .grid import load_config

    try:
        config = load_config(config_path)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report(config, Path(os.getcwd()), show_all, active_s))
    return 0
