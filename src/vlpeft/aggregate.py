"""Run records -> the tidy tables every figure and the claims report are drawn from.

``runs.csv``: one row per run of the grid, including failed, preempted and missing runs (metrics empty). Its metric
columns: ``paper_metric`` (what the paper reports: the best Karpathy-test CIDEr over the evaluations for COCO, the
best validation accuracy for VQAv2), ``best_val`` and ``best_step`` (the evaluation chosen on validation),
``test_at_best_val`` (the test score there: the selection-honest number) and ``final_val``. Its parameter counts:
``trainable_params`` (what trains; prefix-tuning: prefix + reparametrising MLP) and ``trainable_params_merged``
(what is left after merging; prefix-tuning: the prefix tensors alone);
Every row also says where it comes from (``vlpeft.provenance``): ``study``, ``data_source`` (synthetic or real),
``study_digest``, the run's ``config_digest`` and the ``commit`` it ran at. A record whose config digest is not the
one the config resolves its run to (a run of another study or of an edited config) is refused, not tabulated.
``curves.csv``: the val and test scores at every evaluation, long format, with ``step``, ``epoch`` and the run's
``schedule`` kind; ``baseline.csv``: the untuned pre-trained model's scores.

Command line (aggregate whatever exists, e.g. while a study is still running)::

    python -m vlpeft.aggregate --config config/config.yaml     # -> results/<study>/tables/

(``vlpeft status --config ...`` shows progress without writing anything.)
"""

from __future__ import annotations

from .console import announce_main
from .console import run as run_cli

announce_main(__name__, "python -m vlpeft.aggregate", "starting (loading pandas)")

import argparse
import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from .files import CorruptFileError, read_json
from .grid import Run, expand
from .provenance import study_digest
from .tasks import PAPER_SPLIT
from .tasks import TASK_METRIC as PRIMARY_METRIC
from .plots.tables import CURVE_COLUMNS as TABLE_CURVE_COLUMNS
from .plots.tables import RUN_COLUMNS as TABLE_RUN_COLUMNS

# One schema, owned by the tables' loader that the figures and the report read.
RUN_COLUMNS = list(TABLE_RUN_COLUMNS)
CURVE_COLUMNS = list(TABLE_CURVE_COLUMNS)


def _identity(run: Run) -> dict:
    return {
        "run_id": run.run_id,
        "task": run.task,
        "method": run.method,
        "classifier": run.classifier,
        "size": run.size if run.size is not None else math.nan,
        "data_ratio": run.ratio,
        "seed": run.seed,
    }


class StaleRecordError(ValueError):
    """A run record made with another configuration than the one the study config resolves its run to."""


def record_commit(record: dict) -> str | None:
    git = record.get("git") or {}
    if not git.get("commit"):
        return None
    return git["commit"] + ("-dirty" if git.get("dirty") else "")


def run_row(
    run: Run, record: dict | None, status: str, study: Mapping | None = None, digest: str | None = None
) -> dict:
    row = {c: math.nan for c in RUN_COLUMNS}
    row.update(_identity(run))
    row["metric"] = PRIMARY_METRIC[run.task]
    row["status"] = status
    if study is not None:
        row.update(study=study["study"], data_source=study["data_source"], study_digest=study["study_digest"])
    row["config_digest"] = digest
    if record is None:
        return row
    row["commit"] = record_commit(record)
    for key in ("trainable_params", "total_params", "data_size", "samples_seen", "gpu_hours", "wall_time_s"):
        row[key] = record.get(key)
    row["trainable_params_merged"] = record.get("merged_params")
    if status == "success":
        best = record.get("best") or {}
        row["best_val"], row["best_step"], row["test_at_best_val"] = (
            best.get("val"),
            best.get("step"),
            best.get("test"),
        )
        curve = record.get("curve", [])
        vals = [p["val"][row["metric"]] for p in curve if "val" in p]
        row["final_val"] = vals[-1] if vals else math.nan
        # The paper's number: the best score over the evaluations on the split it reports (COCO: Karpathy test,
        # VQAv2: validation), each split maximised on its own.
        split = PAPER_SPLIT[run.task]
        reported = [p[split][row["metric"]] for p in curve if row["metric"] in p.get(split, {})]
        row["paper_metric"] = max(reported) if reported else math.nan
    return row


def curve_rows(run: Run, record: dict) -> list[dict]:
    """One row per evaluation and split; ``schedule`` (steps / epochs) says which of ``step`` and ``epoch`` is the
    natural x axis (epoch-based runs evaluate at every epoch end)."""
    metric = PRIMARY_METRIC[run.task]
    kind = record["config"]["schedule"]["kind"]
    rows = []
    for point in record.get("curve", []):
        for split in ("val", "test"):
            if split in point and metric in point[split]:
                rows.append(
                    {
                        **_identity(run),
                        "schedule": kind,
                        "step": point["step"],
                        "epoch": point.get("epoch", math.nan),
                        "split": split,
                        "metric": metric,
                        "value": point[split][metric],
                    }
                )
    return rows


def read_status(run_dir: Path) -> tuple[dict | None, str]:
    """(record, status): the success record, else the last status file, else missing."""
    for name in ("record.json", "status.json"):
        path = run_dir / name
        if path.is_file():
            record = read_json(path, "delete it (and the run's record.json) and rerun that run; Snakemake retrains it")
            if not isinstance(record, dict):
                raise CorruptFileError(f"{path} holds no run record (a JSON object): delete it and rerun that run")
            return record, record.get("status", "failed")
    return None, "missing"


def check_digests(runs: list[Run], records: Mapping[str, dict], digests: Mapping[str, str]) -> None:
    """Refuse records whose config digest is not the one the config resolves their run to (one-line error)."""
    stale = [
        (run, records[run.run_id].get("config_digest"))
        for run in runs
        if run.run_id in records and records[run.run_id].get("config_digest") != digests[run.run_id]
    ]
    if stale:
        run, got = stale[0]
        more = f" and {len(stale) - 1} more" if len(stale) > 1 else ""
        raise StaleRecordError(
            f"{run.dir}: its record was made with config digest {got}, but the study config resolves this run to "
            f"{digests[run.run_id]}{more}: these records belong to another configuration; rerun those runs "
            "(Snakemake reruns runs whose settings changed) or aggregate with the config they were made with"
        )


def aggregate(
    runs: list[Run], study: Mapping, digests: Mapping[str, str], root: str | Path = "."
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tables of ``runs`` read under ``root``. ``study``: ``grid.study_info``; ``digests``: ``grid.run_digests``
    (the config digest each run's record must carry)."""
    root = Path(root)
    expected = study_digest(study["study"], study["data_source"], {r.run_id: digests[r.run_id] for r in runs})
    if expected != study["study_digest"]:
        raise ValueError(
            f"study digest {study['study_digest']} is not that of the runs given ({expected}): "
            "aggregate every run of the study with the config that defines it"
        )
    found = {run.run_id: read_status(root / run.dir) for run in runs}
    check_digests(runs, {i: rec for i, (rec, _) in found.items() if rec is not None}, digests)
    rows, curves = [], []
    for run in runs:
        record, status = found[run.run_id]
        rows.append(run_row(run, record, status, study, digests[run.run_id]))
        if record is not None and status == "success":
            curves += curve_rows(run, record)
    return pd.DataFrame(rows, columns=RUN_COLUMNS), pd.DataFrame(curves, columns=CURVE_COLUMNS)


def baseline_table(paths: list[str | Path]) -> pd.DataFrame:
    rows = []
    for path in paths:
        data = read_json(path, "delete it and rerun evaluate_baseline")
        metric = PRIMARY_METRIC[data["task"]]
        for split, scores in data["scores"].items():
            rows.append({"task": data["task"], "metric": metric, "split": split, "value": scores[metric]})
    return pd.DataFrame(rows, columns=["task", "metric", "split", "value"])


def add_baseline(table: pd.DataFrame, baseline: pd.DataFrame) -> pd.DataFrame:
    """``baseline_val``: the untuned model's validation score for the run's task; ``gain_vs_baseline``: how much
    the run's best validation score beats it (the check that fine-tuning learned something)."""
    val = baseline[baseline["split"] == "val"].set_index("task")["value"]
    table = table.copy()
    table["baseline_val"] = table["task"].map(val)
    table["gain_vs_baseline"] = table["best_val"] - table["baseline_val"]
    return table


def write_tables(
    runs: list[Run],
    baseline_paths: list,
    out_runs: str | Path,
    out_curves: str | Path,
    out_baseline: str | Path | None = None,
    root: str | Path = ".",
    *,
    study: Mapping,
    digests: Mapping[str, str],
) -> pd.DataFrame:
    table, curves = aggregate(runs, study, digests, root)
    baseline = baseline_table(baseline_paths)
    table = add_baseline(table, baseline)
    for df, path in ((table, out_runs), (curves, out_curves)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(path, index=False)
    if out_baseline is not None:
        baseline.to_csv(out_baseline, index=False)
    return table


def main(argv: list[str] | None = None) -> int:
    from .grid import load_config, run_digests, study_info, study_root

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Aggregate run records into results tables (whatever "
        "has finished so far; failed and missing runs are listed).",
        epilog="The columns of the tables: results/README.md.",
    )
    parser.add_argument(
        "--config",
        default="config/config.yaml",
        help="study config whose grid is tabulated (default: %(default)s, the paper's)",
    )
    parser.add_argument(
        "--out", help="directory for runs.csv, curves.csv and baseline.csv (default: results/<study>/tables)"
    )
    args = parser.parse_args(argv)
    config = load_config(args.config)  # user errors (a missing file, a stale record): one line, exit 2 (run_cli)
    root = study_root(config)
    out = args.out or f"{root}/tables"
    runs = expand(config)
    baselines = [p for p in (Path(f"{root}/baseline/{t}.json") for t in config["tasks"]) if p.is_file()]
    table = write_tables(
        runs,
        baselines,
        f"{out}/runs.csv",
        f"{out}/curves.csv",
        f"{out}/baseline.csv",
        study=study_info(config),
        digests=run_digests(config),
    )
    print(table["status"].value_counts().to_string())
    return 0


PROG = "python -m vlpeft.aggregate"

if __name__ == "__main__":
    raise SystemExit(run_cli(main, PROG))
