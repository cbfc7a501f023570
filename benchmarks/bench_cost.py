"""Whole-grid FLOPs with the visual-feature store vs without, from the cost model (target: >= 1.6x fewer).

    python benchmarks/bench_cost.py [--config config/config.yaml]

Counts every run of the study (``vlpeft.cost``: FLOPs per training and evaluation sample counted by
torch.utils.flop_counter on the real architecture, times the run's samples) and prints the totals, their ratio
and the predicted GPU-hours with and without the store. About a minute for the paper's grid (base model, meta
device).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import yaml

from vlpeft.cost import report

REPO = Path(__file__).resolve().parents[1]
TARGET = 1.6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(REPO / "config/config.yaml"))
    p.add_argument("--profile", default=str(REPO / "profiles/slurm"))
    a = p.parse_args(argv)
    t0 = time.time()
    text, s = report(yaml.safe_load(Path(a.config).read_text()), a.profile, per_run=False)
    print(text)
    print(
        f"whole-grid FLOPs without / with the store: {s['ratio']:.2f}x (target >= {TARGET}x: "
        f"{'PASS' if s['ratio'] >= TARGET else 'FAIL'}); counted in {time.time() - t0:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
