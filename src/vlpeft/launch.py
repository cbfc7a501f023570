"""Start one training run with torchrun on this node, and give the job the run's exit status.

What the training rule runs on a GPU node (``rules/train.smk``)::

    python -m vlpeft.launch --nproc-per-node 4 --stop-grace 270 --config .../run_config.yaml

It runs ``torchrun --standalone --log-dir /dev/null --nproc-per-node 4 --shutdown-timeout 270 -m vlpeft.train
--config ...`` and waits for it. Two things torchrun does not do by itself:

- **Time to checkpoint.** On SIGTERM torchrun sends SIGTERM to the ranks and kills them ``--shutdown-timeout`` seconds
  later (30 by default), while SLURM's ``--signal=TERM@300`` leaves 300 s before the time limit. ``--stop-grace`` sets
  torchrun's grace; keep it below the signal's lead time (the profile's ``stop_grace_s`` resource, checked against
  its ``--signal`` by tests/workflow).
- **Exit 75 for a preemption.** A preempted run checkpoints and every rank exits 75 (EX_TEMPFAIL: resubmit me), but
  torchrun reports any non-zero worker, or its own SIGTERM, as exit 1. When torchrun fails and the run's
  ``status.json``, written during this launch, says ``preempted``, this launcher exits 75; otherwise it exits with
  torchrun's status.

Signals are not passed on: SLURM signals every process of the job step and a terminal's Ctrl-C reaches the whole
process group, so torchrun and the ranks get them directly (a second copy would end torchrun's grace early).
The launcher itself survives them, to report the status.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

EXIT_PREEMPTED = 75  # the same as vlpeft.train's (not imported: the launcher does not import torch)
# Signals torchrun handles (and forwards to the ranks as their death signal); SIGUSR1 included, or a SLURM
# --signal=USR1 would end torchrun at once (its default action).
HANDLED = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"


def torchrun_command(nproc: int, grace_s: int, config: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--log-dir",
        os.devnull,
        "--nproc-per-node",
        str(nproc),
        "--shutdown-timeout",
        str(grace_s),
        "--signals-to-handle",
        HANDLED,
        "-m",
        "vlpeft.train",
        "--config",
        config,
    ]


def out_dir(config: str) -> Path:
    """The run directory named in the run config (read without validating it: the ranks do that)."""
    import yaml

    with open(config) as f:
        return Path(yaml.safe_load(f)["out_dir"])


def exit_status(rc: int, status_path: Path, since: float) -> int:
    """The job's exit status: 75 when torchrun failed and the run's status, written since ``since`` (epoch seconds),
    says preempted; torchrun's status otherwise (128 + N when a signal N ended it)."""
    if rc == 0:
        return 0
    try:
        fresh = status_path.stat().st_mtime >= since
        status = json.loads(status_path.read_text()).get("status") if fresh else None
    except (OSError, ValueError, AttributeError):
        status = None
    if status == "preempted":
        return EXIT_PREEMPTED
    return 128 - rc if rc < 0 else rc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nproc-per-node", type=int, required=True, help="processes (GPUs) on this node")
    parser.add_argument(
        "--stop-grace",
        type=int,
        required=True,
        help="seconds torchrun leaves the ranks after a signal before it kills them",
    )
    parser.add_argument("--config", required=True, help="resolved run config (YAML)")
    args = parser.parse_args(argv)
    if args.nproc_per_node < 1 or args.stop_grace < 0:
        parser.error("--nproc-per-node must be at least 1 and --stop-grace not negative")
    status_path = out_dir(args.config) / "status.json"
    received: list[str] = []

    def on_signal(signum, _frame):
        received.append(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP):
        signal.signal(sig, on_signal)
    since = time.time() - 1.0  # (file-system clocks may round down)
    proc = subprocess.Popen(torchrun_command(args.nproc_per_node, args.stop_grace, args.config))
    while True:
        try:
            rc = proc.wait()
            break
        except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for clarity
            continue
    status = exit_status(rc, status_path, since)
    if status == EXIT_PREEMPTED:
        print(
            f"vlpeft.launch: torchrun exited {rc} ({', '.join(received) or 'no signal here'}); the run's "
            f"{status_path} says preempted: exiting {EXIT_PREEMPTED} so that the job is resubmitted",
            file=sys.stderr,
        )
    elif status:
        print(f"vlpeft.launch: torchrun exited {rc}; see the ranks' errors above and {status_path}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
