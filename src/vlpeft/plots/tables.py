"""Load and validate the result tables the figures and the claims report are drawn from.

The tables (``runs.csv``, ``curves.csv``, optional ``baseline.csv``) are written by the aggregation step; this
module is the reviewers' entry point, so every problem with them is reported as a ``ValueError`` that names the
file, the column, the offending value and the run it came from, instead of surfacing later as an empty or wrong
figure. Only ``status == "success"`` runs are plotted; the others are counted and listed in a log warning here
and in the claims report.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from vlpeft.methods.registry import METHODS, PEFT_METHODS
from vlpeft.plots.style import VALUE_LABELS
from vlpeft.tasks import TASK_METRIC, TASKS
from vlpeft.provenance import PROVENANCE_COLUMNS, table_provenance

log = logging.getLogger(__name__)

RUN_COLUMNS: tuple[str, ...] = (
    "run_id",
    "task",
    "method",
    "classifier",
    "size",
    "data_ratio",
    "seed",
    "trainable_params",
    "trainable_params_merged",
    "total_params",
    "data_size",
    "samples_seen",
    "metric",
    "paper_metric",
    "best_val",
    "best_step",
    "test_at_best_val",
    "final_val",
    "gpu_hours",
    "wall_time_s",
    "status",
    # Where the row comes from (vlpeft.provenance): one study, data source and study digest per table.
    "study",
    "data_source",
    "study_digest",
    "config_digest",
    "commit",
)
CURVE_COLUMNS: tuple[str, ...] = (
    "run_id",
    "task",
    "method",
    "classifier",
    "size",
    "data_ratio",
    "seed",
    "schedule",
    "step",
    "epoch",
    "split",
    "metric",
    "value",
)
BASELINE_COLUMNS: tuple[str, ...] = ("task", "metric", "split", "value")
STATUSES: tuple[str, ...] = ("success", "failed", "preempted", "missing")
#: Columns a metric may be read from (see ``style.VALUE_LABELS``); ``paper_metric``, the paper's reported number, is
#: the default of every figure and of the claims report.
VALUE_COLUMNS: tuple[str, ...] = tuple(VALUE_LABELS)
_FLOAT_COLUMNS = (
    "size",
    "data_ratio",
    "trainable_params",
    "trainable_params_merged",
    "total_params",
    "data_size",
    "samples_seen",
    "paper_metric",
    "best_val",
    "best_step",
    "test_at_best_val",
    "final_val",
    "gpu_hours",
    "wall_time_s",
)
_MAX_LISTED = 25
#: What each metric can be (x 100, as reported): VQA accuracy is a percentage; CIDEr-D is at most 10 per n-gram
#: order (its x 10 scaling) before the x 100. A value outside is a bug upstream, never a result to plot.
METRIC_RANGE: dict[str, tuple[float, float]] = {"accuracy": (0.0, 100.0), "CIDEr": (0.0, 1000.0)}
_TRUE = {"true", "1", "yes", "t", "y", "1.0"}
_FALSE = {"false", "0", "no", "f", "n", "0.0"}


def _source_name(source: str | Path | None, default: str) -> str:
    return str(source) if source is not None else default


def _check_columns(df: pd.DataFrame, required: tuple[str, ...], source: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(
            f"{source} is missing required column(s): {', '.join(missing)} (expected columns: {', '.join(required)})"
        )


def _read_csv(path: str | Path, table: str) -> pd.DataFrame:
    """``pd.read_csv`` whose failures (empty, binary or garbled file) name the file and what to do."""
    try:
        # Digests and commits stay text ("0123e456..." would otherwise be read as a number).
        return pd.read_csv(path, dtype={c: str for c in PROVENANCE_COLUMNS})
    except FileNotFoundError:
        raise FileNotFoundError(f"{table} not found: {path}") from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"{path} cannot be read as the {table} ({first}); it is empty or not a CSV file: delete it "
            "and rerun the aggregation (aggregate_runs)"
        ) from None


def _check_metric_values(df: pd.DataFrame, columns: tuple[str, ...], source: str) -> None:
    """Refuse values a metric cannot take (a negative CIDEr, an accuracy above 100), naming the value and the run."""
    for metric, (low, high) in METRIC_RANGE.items():
        rows = df["metric"] == metric
        for col in columns:
            bad = rows & df[col].notna() & ~df[col].between(low, high)
            if bad.any():
                raise ValueError(
                    f"impossible {metric} {float(df.loc[bad, col].iloc[0])!r} in column {col!r} of {source} "
                    f"({_first_bad(df, bad)}); {metric} lies in [{low:g}, {high:g}]: the table is corrupt, rerun the "
                    "aggregation (and check that run's record)"
                )


def _first_bad(df: pd.DataFrame, mask: pd.Series) -> str:
    """run_id of the first row selected by ``mask`` (or its row number when the table has no run_id)."""
    row = df.loc[mask].iloc[0]
    if "run_id" in df.columns:
        return f"run_id {row['run_id']!r}"
    return f"row {df.index.get_loc(df.loc[mask].index[0]) + 1}"


def _check_allowed(df: pd.DataFrame, column: str, allowed: Iterable[str], source: str) -> None:
    allowed = tuple(allowed)
    values = df[column].astype(str)
    bad = ~values.isin(allowed)
    if bad.any():
        value = values[bad].iloc[0]
        raise ValueError(
            f"unknown {column} {value!r} in {source} ({_first_bad(df, bad)}); expected one of {', '.join(allowed)}"
        )


def _to_bool(df: pd.DataFrame, column: str, source: str) -> pd.Series:
    def convert(v: object) -> bool | None:
        if isinstance(v, (bool, np.bool_)):
            return bool(v)
        if isinstance(v, (int, float, np.integer, np.floating)) and not (isinstance(v, float) and math.isnan(v)):
            if v in (0, 1):
                return bool(v)
            return None
        s = str(v).strip().lower()
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
        return None

    converted = df[column].map(convert)
    bad = converted.isna()
    if bad.any():
        raise ValueError(
            f"column {column!r} in {source} must be true/false, got {df.loc[bad, column].iloc[0]!r} "
            f"({_first_bad(df, bad)})"
        )
    return converted.astype(bool)


def _to_float(df: pd.DataFrame, column: str, source: str) -> pd.Series:
    converted = pd.to_numeric(df[column], errors="coerce").astype(float)
    # Empty cells are allowed (NaN metrics of failed runs, no size for full fine-tuning); text is not.
    bad = converted.isna() & df[column].notna() & (df[column].astype(str).str.strip() != "")
    if bad.any():
        raise ValueError(
            f"column {column!r} in {source} must be numeric, got {df.loc[bad, column].iloc[0]!r} "
            f"({_first_bad(df, bad)})"
        )
    return converted


def validate_runs(df: pd.DataFrame, source: str | Path | None = None) -> pd.DataFrame:
    """Check a runs table against the schema and return a normalised copy.

    Args:
        df: The runs table (one row per run).
        source: File name used in error messages.

    Returns:
        A copy with normalised dtypes: ``classifier`` bool, numeric columns float, ``seed`` int, text columns str.

    Raises:
        ValueError: Missing columns (all listed), an empty table, an unknown task, method or status, a metric
            that does not belong to the task, a data ratio outside (0, 1], a PEFT run without a size, a
            successful run without a best validation metric, a duplicated run_id, or rows of several studies, data
            sources or configurations (``vlpeft.provenance.table_provenance``).
    """
    src = _source_name(source, "the runs table")
    if len(df) and set(RUN_COLUMNS) - set(PROVENANCE_COLUMNS) <= set(df.columns):
        table_provenance(df, src)  # a table from before study roots: says so
    _check_columns(df, RUN_COLUMNS, src)
    if len(df) == 0:
        raise ValueError(f"no runs in {src}: nothing to plot")
    out = df.copy()
    for col in ("run_id", "task", "method", "metric", "status"):
        out[col] = out[col].astype(str).str.strip()
    dup = out["run_id"].duplicated()
    if dup.any():
        raise ValueError(f"duplicated run_id {out.loc[dup, 'run_id'].iloc[0]!r} in {src}")
    _check_allowed(out, "task", TASKS, src)
    _check_allowed(out, "method", METHODS, src)
    _check_allowed(out, "status", STATUSES, src)
    out["classifier"] = _to_bool(out, "classifier", src)
    for col in _FLOAT_COLUMNS:
        out[col] = _to_float(out, col, src)
    seed = pd.to_numeric(out["seed"], errors="coerce")
    if seed.isna().any():
        raise ValueError(f"column 'seed' in {src} must be an integer ({_first_bad(out, seed.isna())})")
    out["seed"] = seed.astype(int)

    expected_metric = out["task"].map(TASK_METRIC)
    bad = out["metric"] != expected_metric
    if bad.any():
        row = out.loc[bad].iloc[0]
        raise ValueError(
            f"metric {row['metric']!r} does not belong to task {row['task']!r} in {src} "
            f"(run_id {row['run_id']!r}); expected {TASK_METRIC[row['task']]!r}"
        )
    bad = ~((out["data_ratio"] > 0) & (out["data_ratio"] <= 1))
    if bad.any():
        raise ValueError(
            f"data_ratio {out.loc[bad, 'data_ratio'].iloc[0]!r} outside (0, 1] in {src} ({_first_bad(out, bad)})"
        )
    bad = out["method"].isin(PEFT_METHODS) & out["size"].isna()
    if bad.any():
        raise ValueError(f"PEFT run without a size in {src} ({_first_bad(out, bad)})")
    success = out["status"] == "success"
    for col in ("best_val", "trainable_params", "data_size"):
        bad = success & ~np.isfinite(out[col])
        if bad.any():
            raise ValueError(f"successful run without a {col} in {src} ({_first_bad(out, bad)})")
    _check_metric_values(out, VALUE_COLUMNS, src)
    for col in PROVENANCE_COLUMNS:
        out[col] = out[col].where(out[col].isna(), out[col].astype(str).str.strip())
    table_provenance(out, src)
    return out


def successful(runs: pd.DataFrame) -> pd.DataFrame:
    """The rows with ``status == "success"`` (the only ones any figure or statistic uses)."""
    return runs.loc[runs["status"] == "success"].copy()


def non_success(runs: pd.DataFrame) -> pd.DataFrame:
    """The rows that did not succeed, sorted for listing: the run identity and its status."""
    cols = ["run_id", "task", "method", "classifier", "size", "data_ratio", "seed", "status"]
    bad = runs.loc[runs["status"] != "success", cols]
    return bad.sort_values(["task", "method", "classifier", "size", "data_ratio", "seed"]).reset_index(drop=True)


def log_non_success(runs: pd.DataFrame, source: str | Path | None = None) -> pd.DataFrame:
    """Log one warning that counts and lists the runs left out of the figures; returns them."""
    bad = non_success(runs)
    if len(bad):
        counts = bad["status"].value_counts().to_dict()
        shown = [f"{r.run_id} ({r.status})" for r in bad.head(_MAX_LISTED).itertuples()]
        more = len(bad) - len(shown)
        # A full sweep can have hundreds of missing runs: list a screenful, the report lists them all.
        listing = ", ".join(shown) + (f", ... and {more} more" if more > 0 else "")
        log.warning(
            "%d of %d runs in %s are not plotted (%s): %s",
            len(bad),
            len(runs),
            _source_name(source, "the runs table"),
            ", ".join(f"{k}: {v}" for k, v in counts.items()),
            listing,
        )
    return bad


def load_runs(path: str | Path) -> pd.DataFrame:
    """Read and validate ``runs.csv``; log the runs that will not be plotted.

    Args:
        path: The CSV file.

    Returns:
        The validated, normalised table (all statuses; see :func:`successful`).

    Raises:
        ValueError: See :func:`validate_runs`.
    """
    df = _read_csv(path, "runs table")
    runs = validate_runs(df, source=path)
    log_non_success(runs, path)
    return runs


def validate_curves(df: pd.DataFrame, source: str | Path | None = None) -> pd.DataFrame:
    """Check a long-format validation-curves table and return a normalised copy.

    Raises:
        ValueError: Missing columns, an empty table, an unknown task, method, split or schedule kind, a
            non-numeric step, epoch or value, or a PEFT curve without a size.
    """
    src = _source_name(source, "the curves table")
    _check_columns(df, CURVE_COLUMNS, src)
    if len(df) == 0:
        raise ValueError(f"no curves in {src}: nothing to plot")
    out = df.copy()
    for col in ("run_id", "task", "method", "split", "metric", "schedule"):
        out[col] = out[col].astype(str).str.strip()
    _check_allowed(out, "task", TASKS, src)
    _check_allowed(out, "method", METHODS, src)
    _check_allowed(out, "split", ("val", "test"), src)
    _check_allowed(out, "schedule", ("steps", "epochs"), src)
    out["classifier"] = _to_bool(out, "classifier", src)
    for col in ("size", "data_ratio", "step", "epoch", "value"):
        out[col] = _to_float(out, col, src)
    bad = out["step"].isna()
    if bad.any():
        raise ValueError(f"curve point without a step in {src} ({_first_bad(out, bad)})")
    bad = out["method"].isin(PEFT_METHODS) & out["size"].isna()
    if bad.any():
        raise ValueError(f"PEFT curve without a size in {src} ({_first_bad(out, bad)})")
    out["seed"] = pd.to_numeric(out["seed"], errors="coerce").fillna(0).astype(int)
    _check_metric_values(out, ("value",), src)
    return out


def load_curves(path: str | Path) -> pd.DataFrame:
    """Read and validate ``curves.csv`` (long format: one row per run, step, split)."""
    return validate_curves(_read_csv(path, "curves table"), source=path)


def validate_baseline(df: pd.DataFrame, source: str | Path | None = None) -> pd.DataFrame:
    """Check the pre-trained (untuned) model's scores: columns task, metric, split, value."""
    src = _source_name(source, "the baseline table")
    _check_columns(df, BASELINE_COLUMNS, src)
    out = df.copy()
    for col in ("task", "metric", "split"):
        out[col] = out[col].astype(str).str.strip()
    if len(out):
        _check_allowed(out, "task", TASKS, src)
        _check_allowed(out, "split", ("val", "test"), src)
    out["value"] = _to_float(out, "value", src)
    _check_metric_values(out, ("value",), src)
    return out


def load_baseline(path: str | Path | None) -> pd.DataFrame | None:
    """Read ``baseline.csv`` if a path is given (it is optional); ``None`` otherwise."""
    if path is None:
        return None
    return validate_baseline(_read_csv(path, "baseline table"), source=path)


def baseline_value(baseline: pd.DataFrame | None, task: str, split: str = "val") -> tuple[float, str] | None:
    """The untuned model's score on ``task``, preferring ``split``; ``None`` when there is none.

    Returns:
        ``(value, split_used)`` so a caller can say when it fell back to the other split.
    """
    if baseline is None or len(baseline) == 0:
        return None
    rows = baseline.loc[(baseline["task"] == task) & np.isfinite(baseline["value"])]
    if rows.empty:
        return None
    preferred = rows.loc[rows["split"] == split]
    row = (preferred if len(preferred) else rows).iloc[0]
    return float(row["value"]), str(row["split"])
