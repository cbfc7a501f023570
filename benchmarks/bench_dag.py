"""Time to build the DAG of the paper's full grid (`snakemake -n`), target under 5 seconds.

    python benchmarks/bench_dag.py [--repeats 3]

Runs the dry run in a fresh empty directory (nothing exists yet: every job is scheduled) and prints wall and
CPU times of each repeat, the number of jobs, and the ratio of the best wall time to the 5 s target.
"""

from __future__ import annotations

import argparse
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--config", default=str(REPO / "config/config.yaml"))
    a = p.parse_args()
    exe = str(Path(sys.executable).parent / "snakemake")
    walls = []
    for i in range(a.repeats):
        with tempfile.TemporaryDirectory() as d:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.time()
            proc = subprocess.run(
                [
                    exe,
                    "-s",
                    str(REPO / "Snakefile"),
                    "--directory",
                    d,
                    "--configfile",
                    a.config,
                    "-n",
                    "--quiet",
                    "rules",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            wall = time.time() - t0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode:
            sys.exit(proc.stderr[-3000:])
        total = re.search(r"^total\s+(\d+)$", proc.stdout, re.MULTILINE)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        walls.append(wall)
        print(f"repeat {i + 1}: {wall:.2f} s wall, {cpu:.2f} s CPU, {total.group(1) if total else '?'} jobs")
    print(f"best {min(walls):.2f} s = {min(walls) / 5.0:.2f}x the 5 s target")


if __name__ == "__main__":
    main()
