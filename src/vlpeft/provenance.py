"""Which study a table, figure or report belongs to: its name, data source, commits and config digest.

Each study (``study:`` in its config) writes under its own root, ``results/<study>/``, and every run record carries
the digest of the run's resolved configuration (``RunConfig.digest``). The *study digest* is the digest of the study
name, its data source and every run's (run id, config digest): it changes when any run's settings change, and only
then (not for presentation keys such as ``reported_metric`` or ``title``). ``runs.csv`` carries it on every row, so a
figure or report drawn from the table alone can check that the rows belong together and say what they show; in the
workflow they also check it against the digest the config resolves to.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import pandas as pd

#: runs.csv columns that say where its rows come from (one value per table, except ``commit`` and ``config_digest``).
PROVENANCE_COLUMNS: tuple[str, ...] = ("study", "data_source", "study_digest", "config_digest", "commit")
#: The config's data.source -> what tables, figures and reports call it.
DATA_SOURCES = {"synthetic": "synthetic", "download": "real"}
SYNTHETIC_NOTE = (
    "synthetic demonstration: generated data and a tiny model, not the paper's data or model; its "
    "numbers say nothing about mPLUG-base"
)


def study_digest(study: str, data_source: str, run_digests: Mapping[str, str]) -> str:
    """Digest of a study: its name, data source and every run's config digest (16 hex digits)."""
    blob = json.dumps(
        {"study": study, "data_source": data_source, "runs": sorted(run_digests.items())}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def short_commit(commit: object) -> str:
    text = str(commit)
    dirty = text.endswith("-dirty")
    return text[:10] + ("-dirty" if dirty else "")


def table_provenance(runs: pd.DataFrame, source: str = "the runs table") -> dict:
    """Study, data source, study digest and commits of a runs table; refuses a table that mixes studies, data sources
    or study digests (rows of another study, or of another configuration of the same study)."""
    missing = [c for c in PROVENANCE_COLUMNS if c not in runs.columns]
    if missing:
        raise ValueError(
            f"{source} lacks the provenance column(s) {', '.join(missing)}: it predates study roots; "
            "rerun the aggregation (aggregate_runs)"
        )
    info = {}
    for col in ("study", "data_source", "study_digest"):
        values = sorted(set(runs[col].astype(str)))
        if len(values) != 1:
            raise ValueError(
                f"{source} mixes {col} values {values}: a table holds the runs of one study only; "
                "rerun the aggregation of that study"
            )
        info[col] = values[0]
    commits = runs["commit"].dropna().astype(str)
    info["commits"] = sorted(set(commits[commits.str.len() > 0]))
    return info


def check_expected(info: Mapping, expected: Mapping | None, source: str = "the runs table") -> None:
    """Refuse a table of another study, data source or configuration than the workflow's config resolves to."""
    if not expected:
        return
    for key in ("study", "data_source", "study_digest"):
        if key in expected and str(expected[key]) != str(info[key]):
            raise ValueError(
                f"{source} is of {key} {info[key]!r}, but the config resolves to {expected[key]!r}: "
                "its runs were made with another configuration; rerun the aggregation"
            )


def describe(info: Mapping) -> str:
    """One line naming the study, data source, commits and digest (the stamp of every figure)."""
    commits = [short_commit(c) for c in info.get("commits", [])]
    shown = ", ".join(commits[:3]) + (f" +{len(commits) - 3} more" if len(commits) > 3 else "")
    line = (
        f"study {info['study']} | {info['data_source']} data | commit {shown or 'unknown'} | "
        f"config {info['study_digest']}"
    )
    if info["data_source"] == "synthetic":
        line = "SYNTHETIC DEMONSTRATION, not the paper's results | " + line
    return line
