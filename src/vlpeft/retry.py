"""Retries resume preempted runs only: every other failure fails once, with its log shown.

Snakemake's ``retries`` (the SLURM profile's 3) resubmits a failed job whatever the reason, and cannot be conditioned
on an exit code; ``torchrun`` does not pass the ranks' exit code 75 (preempted) on anyway. So the training rules start
with this check, then ``exec`` the run (the job's signals still reach the launcher and the ranks as before)::

    python -m vlpeft.retry --run-dir <run dir> --attempt <Snakemake's attempt> --log <rule log> && exec python -m ...

- Attempt 1 (a new Snakemake invocation: whatever failed before may have been fixed) always starts.
- A later attempt starts only if the previous attempt of this run ended *preempted*: its ``status.json``, written
  after that attempt began, says ``preempted`` (SIGTERM/SIGUSR1 before a time limit or a preemption: the ranks
  checkpointed and exited 75); or *finished*: it says ``success`` although the job was counted failed (SLURM
  records TIMEOUT for a run that finished seconds before its time limit, and Snakemake removes its outputs): the
  retry restores the record from that status without training (``vlpeft.train``). Any other end (an error, CUDA out of memory, a crash or kill that wrote no status)
  makes the check exit 1 at once without starting torchrun: it prints the first line of the error and the failed
  attempt's log, which stays in the rule's log file (the check runs before the log is truncated), so Snakemake's
  failed-log output shows the failure, not an empty retry.

Each attempt that starts is recorded in ``<run dir>/.attempt.json`` (attempt number, start time, host).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

from .files import read_json_mapping

MARKER = ".attempt.json"
LOG_LINES = 60  # lines of the failed attempt's log shown (its end, where the error is)


RETRYABLE = ("preempted", "success")  # checkpointed on a signal; or finished, its outputs removed by Snakemake


def previous_outcome(run_dir: Path) -> tuple[bool, str, dict | None]:
    """(retryable, first error line, marker) of the last attempt recorded in ``run_dir``: retryable when it was
    preempted or finished (see the module docstring)."""
    marker = read_json_mapping(run_dir / MARKER)
    status_path = run_dir / "status.json"
    status = None
    # A status written before that attempt began is an older attempt's: the last one then wrote none.
    if marker is not None and status_path.is_file() and status_path.stat().st_mtime >= marker.get("started", 0) - 1:
        status = read_json_mapping(status_path)
    if status is not None and status.get("status") in RETRYABLE:
        return True, "", marker
    if status is not None:
        first = str(status.get("error") or f"status {status.get('status')!r}").strip().splitlines()[0]
    else:
        first = "it ended without writing a status (killed, or failed before training started)"
    return False, first, marker


def start_attempt(run_dir: Path, attempt: int) -> None:
    tmp = run_dir / f".{MARKER}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"attempt": attempt, "started": time.time(), "host": socket.gethostname()}))
    tmp.replace(run_dir / MARKER)


def check(run_dir: Path, attempt: int, log: Path | None) -> int:
    """0: start the attempt (recorded); 1: do not (the previous attempt failed and was not preempted)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if attempt > 1 and (run_dir / MARKER).is_file():
        preempted, first, marker = previous_outcome(run_dir)
        if not preempted:
            shown = ""
            if log is not None and log.is_file():
                lines = log.read_text(errors="replace").splitlines()
                shown = "\n".join(lines[-LOG_LINES:])
            print(
                f"error: {run_dir}: attempt {marker.get('attempt', '?')} failed and was not a preemption: {first}; "
                f"attempt {attempt} is not started (retries resume preempted runs only; rerun Snakemake once the "
                "cause is fixed)",
                file=sys.stderr,
            )
            if shown:
                print(f"--- end of the failed attempt's log ({log}):\n{shown}", file=sys.stderr)
            return 1
    start_attempt(run_dir, attempt)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlpeft.retry", description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, type=Path, help="the run's directory (holds status.json)")
    parser.add_argument("--attempt", required=True, type=int, help="Snakemake's attempt number (1 = first)")
    parser.add_argument("--log", type=Path, help="the rule's log file (the previous attempt's output)")
    args = parser.parse_args(argv)
    return check(args.run_dir, args.attempt, args.log)


if __name__ == "__main__":
    sys.exit(main())
