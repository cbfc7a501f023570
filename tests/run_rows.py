"""Hand-made rows of the study's tables and the run records they are aggregated from, for the tests of
aggregation, figures, report and command lines.

- :func:`make_runs` / :func:`make_curves`: a runs table (``results/tables/runs.csv``) over both tasks and every method,
  with one failed, one absent and one three-seed cell, and the curves of its COCO runs;
- :func:`make_record`: the record ``train.py`` writes, for each run of the tiny workflow config (:data:`TINY`);
- :func:`with_provenance`: the provenance columns aggregation adds to a runs table.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from vlpeft import grid
from vlpeft.grid import Run
from vlpeft.provenance import study_digest

#: Each task's metric (as vlpeft.tasks.TASK_METRIC, written out: the rows are hand-made).
METRIC = {"coco": "CIDEr", "vqa": "accuracy"}

# -- records of the tiny workflow config ------------------------------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "workflow" / "configs" / "tiny.yaml"
CONFIG = yaml.safe_load(TINY.read_text())
STUDY = grid.study_info(CONFIG)
DIGESTS = grid.run_digests(CONFIG)
#: The index of the tiny study's run whose record has no test score at its first evaluation.
NO_TEST_AT_START = 12


def scores(task: str, value: float) -> dict:
    """An evaluation's scores on one split: the task's metric equal to ``value``, and one other."""
    if task == "coco":
        return {"BLEU-4": value / 100, "CIDEr": value}
    return {"accuracy": value, "yes/no": value + 10}


def make_record(run: Run, i: int, status: str = "success") -> dict:
    """The record of the tiny study's ``i``-th run as ``train.py``'s ``finalize`` writes it: the best validation score
    is at step 2, not the last one."""
    base = 10.0 + i
    n = 40 if run.ratio == 1.0 else 20
    curve = [
        {
            "step": s,
            "samples_seen": 8 * s,
            "epoch": 8 * s / n,
            "val": scores(run.task, base + dv),
            "test": scores(run.task, base + dt),
        }
        for s, dv, dt in ((0, 0, -1), (2, 5, 4), (4, 1, 3))
    ]
    if i == NO_TEST_AT_START:
        del curve[0]["test"]
    return {
        "run_id": run.run_id,
        "config_digest": DIGESTS.get(run.run_id),
        "git": {"commit": "c0ffee" * 6 + "abcd", "dirty": i == 1},
        "status": status,
        "error": None if status == "success" else "RuntimeError: boom",
        "trainable_params": 1000 * (i + 1),
        "merged_params": 500 * (i + 1),
        "total_params": 5_000_000,
        "config": {"schedule": {"kind": "steps" if run.task == "coco" else "epochs"}},
        "data_size": n,
        "samples_seen": 32,
        "curve": curve,
        "best": {"step": 2, "val": base + 5, "test": base + 4, "metric": METRIC[run.task]},
        "wall_time_s": 60.0 + i,
        "gpu_hours": 0.0,
    }


# -- a runs table and its curves --------------------------------------------------------------------------------------
SIZES = {
    "prompt": [2, 8, 32],
    "prefix": [2, 8, 32],
    "lora": [2, 4, 8],
    "serial_adapter": [16, 32, 64],
    "parallel_adapter": [16, 32, 64],
}
#: The paper's five PEFT methods, which these runs hold (a described method without runs is left out of the
#: figures and the report: see vlpeft.plots.figures.attempted and vlpeft.report.in_study).
PAPER_METHODS = tuple(SIZES)
RATIOS = {"coco": [0.01, 0.1, 1.0], "vqa": [0.1, 0.4, 1.0]}
N_TRAIN = {"coco": 566_800, "vqa": 605_100}
#: The one cell with three seeds (error bars, curve bands).
MULTI_SEED_CELL = ("lora", False, 4, 1.0)
#: A cell whose run failed (drawn as a gap).
FAILED_CELL = ("prompt", False, 8, 0.1)
#: A cell never run at all (no row).
ABSENT_CELL = ("prefix", True, 32, 0.01)


def run_row(
    task: str, method: str, clf: bool, size: float, ratio: float, seed: int, value: float, status: str
) -> dict:
    """One row of the runs table (``results/tables/runs.csv``) with every column the figures and the report read."""
    params = 350_000_000 if method == "full" else int(size) * 10_000 + (23_000_000 if clf else 0)
    ok = status == "success"
    return {
        "run_id": f"{task}-{method}-{int(clf)}-{size}-{ratio}-{seed}",
        "task": task,
        "method": method,
        "classifier": clf,
        "size": size,
        "data_ratio": ratio,
        "seed": seed,
        "trainable_params": params,
        "trainable_params_merged": params,
        "total_params": 350_000_000,
        "data_size": int(N_TRAIN[task] * ratio),
        "samples_seen": 1_024_000,
        "metric": METRIC[task],
        "paper_metric": value + 2 if ok else math.nan,
        "best_val": value if ok else math.nan,
        "best_step": 3000 if ok else math.nan,
        "test_at_best_val": value - 1 if ok else math.nan,
        "final_val": value - 0.5 if ok else math.nan,
        "gpu_hours": 0.0,
        "wall_time_s": 600.0 + params / 1e5,
        "status": status,
    }


def make_runs() -> pd.DataFrame:
    """Both tasks, every PEFT method x size x ratio x variant, plus full fine-tuning; one failed, one absent cell."""
    rng = np.random.default_rng(0)
    rows = []
    for task in ("coco", "vqa"):
        for mi, method in enumerate(PAPER_METHODS):
            for clf in (False, True):
                for size in SIZES[method]:
                    for ratio in RATIOS[task]:
                        key = (method, clf, size, ratio)
                        if task == "coco" and key == ABSENT_CELL:
                            continue
                        seeds = [0, 1, 2] if key == MULTI_SEED_CELL else [0]
                        for seed in seeds:
                            if task == "coco":
                                value = 115 + 3 * mi - (math.log2(size) - 3) ** 2 + rng.normal(0, 0.3)
                            else:
                                value = 55 + 2 * mi + 4 * math.log10(ratio) + math.log2(size) + rng.normal(0, 0.3)
                            status = "failed" if (task == "coco" and key == FAILED_CELL) else "success"
                            rows.append(run_row(task, method, clf, size, ratio, seed, value, status))
        for ratio in RATIOS[task]:
            rows.append(run_row(task, "full", False, math.nan, ratio, 0, 125.0 if task == "coco" else 66.0, "success"))
    return with_provenance(pd.DataFrame(rows))


def make_curves(runs: pd.DataFrame) -> pd.DataFrame:
    """Validation and test curves (5 points each) of every successful COCO run."""
    rows = []
    ok = runs.loc[(runs["task"] == "coco") & (runs["status"] == "success")]
    for r in ok.itertuples():
        for step in range(0, 1001, 250):
            for split, best in (("val", r.best_val), ("test", r.paper_metric)):
                value = best * (1 - math.exp(-(step + 50) / 300)) + 0.1 * r.seed
                rows.append(
                    {
                        "run_id": r.run_id,
                        "task": r.task,
                        "method": r.method,
                        "classifier": r.classifier,
                        "size": r.size,
                        "data_ratio": r.data_ratio,
                        "seed": r.seed,
                        "schedule": "steps",
                        "step": step,
                        "epoch": step / 1000,
                        "split": split,
                        "metric": r.metric,
                        "value": value,
                    }
                )
    return pd.DataFrame(rows)


# -- provenance -------------------------------------------------------------------------------------------------------
def with_provenance(runs, study: str = "test", data_source: str = "synthetic", commit: str = "0" * 40):
    """A hand-made runs table with the provenance columns aggregation writes (vlpeft.provenance), consistent."""
    runs = runs.copy()
    runs["config_digest"] = [hashlib.sha256(str(i).encode()).hexdigest()[:16] for i in runs["run_id"]]
    runs["study"], runs["data_source"], runs["commit"] = study, data_source, commit
    runs["study_digest"] = study_digest(study, data_source, dict(zip(runs["run_id"], runs["config_digest"])))
    return runs
