"""Test the paper's four findings against the runs table and write a markdown claims report.

The findings (study protocol, "The question") are hypotheses; every one is tested on successful runs only, with
the metric column ``paper_metric`` by default (what the paper reports: the best Karpathy-test CIDEr over the
evaluations for COCO, the best validation accuracy for VQAv2); ``test_at_best_val`` (the test score at the
evaluation chosen on validation) tests them selection-honestly. The report names the column it used.
Intervals are 95 % percentile bootstrap intervals (``n_boot`` resamples, seeded, so a report is reproducible).

Trend claims (1a, 1b, 2a, 2b) resample runs in blocks: a block is every run of one configuration of the factors
the claim does not test (e.g. one (size, "+ classifier") pair for a data-ratio claim), and whole blocks are drawn
with replacement. Resampling single runs inside such blocks would break the balanced sweep (a block would lose
some ratios and repeat others) and bias the within-block residuals towards zero; on synthetic sweeps with a known
trend that put the observed statistic outside its own interval. Paired claims resample pairs, group comparisons
resample runs within each method (4a) or within each (cost bin, group) (4b). Percentile intervals of a rank
correlation can sit a hair off the estimate when blocks are nearly identical (duplicated blocks add ties); the
verdicts only use the interval.

Claims and decision rules
-------------------------
Verdicts are "supported", "not supported" or "inconclusive". A claim about a method is inconclusive whenever it
has fewer than ``MIN_DISTINCT_X`` (3) distinct x values or fewer than ``MIN_BLOCKS`` (3) configurations to
resample (trend claims), or fewer than ``MIN_PAIRS`` (2) pairs (paired claims); an interval that cannot be
computed (fewer than half the resamples give a value) is inconclusive too.

1a. COCO, CIDEr does not depend on data ratio (per PEFT method). Statistic: Spearman rho between data ratio and
    CIDEr after subtracting each (size, "+ classifier") configuration's mean, so that size and classifier effects
    do not masquerade as (or hide) a ratio effect; the bootstrap resamples those configurations.
    An equivalence rule, because "no dependence" cannot be shown by a failure to reject: supported if the whole
    interval lies within +/- ``NEGLIGIBLE_RHO`` (0.3, a "small" correlation at most); not supported if the
    interval excludes 0 and |rho| >= ``NEGLIGIBLE_RHO`` (a clear, not small, dependence); inconclusive otherwise
    (an interval too wide to tell, or a detectable but small dependence). Rho is a rank statistic: the report
    also prints the mean metric per ratio, so the size of any dependence can be read in metric units.
1b. COCO, parameter size has a non-monotonic effect with an interior optimum (per PEFT method). Statistic:
    delta = (best mean over interior sizes) - (better mean of the smallest and largest size), means over runs
    after subtracting each (data ratio, "+ classifier") block's mean, in metric units. Supported if the
    interval is above 0, not supported if below 0 (an end of the size range is reliably best), inconclusive
    otherwise. Also reported: the share of resamples whose best size is interior. Taking the best interior size
    favours "supported" a little when there are many interior sizes (winner's curse); the interval must
    clear 0 to count.
2a. VQAv2, accuracy rises with data ratio; 2b. ... and with parameter size (per PEFT method). Statistic: Spearman
    rho as in 1a (for size, residuals within (data ratio, "+ classifier")). Supported if the interval is above
    0; not supported if it is below 0 or lies within +/- ``NEGLIGIBLE_RHO`` (at most a negligible trend);
    inconclusive otherwise.
3.  "+ classifier" effect. Statistic: mean paired difference (classifier minus plain) over cells matched on
    (size, data ratio, seed); bootstrap resamples pairs. Expected signs: 3a COCO prompt-tuning > 0; 3b COCO
    LoRA / serial / parallel adapter < 0; 3c VQAv2 every PEFT method > 0. Supported if the interval lies
    entirely on the expected side of 0, not supported if entirely on the other side, inconclusive otherwise.
3d. VQAv2, "+ classifier" even beats full fine-tuning (per PEFT method). Statistic: mean of the method's best
    "+ classifier" size minus full fine-tuning's mean, both at the largest data ratio they share; bootstrap
    resamples seeds within each of the two cells. Inconclusive if either cell has fewer than 2 seeds (one run
    cannot separate the method from seed noise); otherwise supported / not supported by the interval's side
    of 0.
4.  Layer composition (LoRA, serial, parallel adapter) beats embedding composition (prompt, prefix), per task.
    4a: difference of group means, each group the average of its methods' mean metric over all their runs
    (each method weighs the same whatever its number of runs); bootstrap resamples runs within methods.
    4b, at equal computation cost (data size x trainable parameters, the paper's Fig. 5 cost): runs are put in
    bins of ``COST_BIN_DECADES`` (half a decade) of cost; the statistic is the average over bins holding both
    groups of (layer mean - embedding mean); bootstrap resamples runs within (bin, group). Inconclusive with
    fewer than ``MIN_SHARED_BINS`` (2) shared bins. Both: supported if the interval is above 0, not supported if
    below 0, inconclusive otherwise. The best configuration of each method is listed as well (descriptive:
    a bootstrap of a maximum is unreliable, so it carries no verdict).

Per claim, a row with method "all" combines the per-method (or per-task) verdicts: supported if all are
supported, not supported if any is not supported, inconclusive otherwise.
"""

from __future__ import annotations

import argparse
import itertools
import math
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from vlpeft.provenance import SYNTHETIC_NOTE, table_provenance
from vlpeft.plots.style import (
    DEFAULT_VALUE,
    EMBEDDING_COMPOSITION,
    LAYER_COMPOSITION,
    METHOD_LABELS,
    PEFT_METHODS,
    TASK_LABELS,
    TASK_METRIC,
    TASKS,
    VALUE_LABELS,
    format_ratio,
    format_size,
)
from vlpeft.plots.tables import VALUE_COLUMNS, load_baseline, load_runs, non_success, successful, validate_runs

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
INCONCLUSIVE = "inconclusive"
VERDICTS: tuple[str, ...] = (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE)

#: Largest |Spearman rho| still called a negligible (at most small) monotone association.
NEGLIGIBLE_RHO = 0.3
#: Fewest distinct x values (ratios, sizes) a trend claim needs.
MIN_DISTINCT_X = 3
#: Fewest configurations (bootstrap blocks) a trend claim needs: with fewer the interval is close to degenerate.
MIN_BLOCKS = 3
#: Fewest matched pairs a paired claim needs.
MIN_PAIRS = 2
#: Width of a computation-cost bin, in decades.
COST_BIN_DECADES = 0.5
#: Fewest cost bins holding both method groups for the matched-cost comparison.
MIN_SHARED_BINS = 2

#: ``method`` of claim 4's per-task rows (they compare method groups, not one method).
LAYER_VS_EMBEDDING = "layer vs embedding"

TABLE_COLUMNS: tuple[str, ...] = (
    "claim",
    "task",
    "method",
    "statistic",
    "value",
    "ci_low",
    "ci_high",
    "verdict",
    "n",
    "rule",
)

CLAIM_TEXT: dict[str, str] = {
    "1a": "COCO: CIDEr does not depend on the data ratio",
    "1b": "COCO: parameter size has a non-monotonic effect (an interior optimum)",
    "2a": "VQAv2: accuracy rises with the data ratio",
    "2b": "VQAv2: accuracy rises with the parameter size",
    "3a": "COCO: + classifier helps prompt-tuning",
    "3b": "COCO: + classifier hurts layer composition (LoRA, serial and parallel adapter)",
    "3c": "VQAv2: + classifier helps every PEFT method",
    "3d": "VQAv2: with + classifier, PEFT beats full fine-tuning",
    "4a": "Layer composition beats embedding composition (mean over configurations)",
    "4b": "Layer composition beats embedding composition at equal computation cost",
}
_TOO_FEW = f"< {MIN_DISTINCT_X} distinct {{x}} or < {MIN_BLOCKS} configurations"
RULES: dict[str, str] = {
    "1a": f"supported if the 95% CI of rho lies within +/-{NEGLIGIBLE_RHO}; not supported if it excludes 0 and "
    f"|rho| >= {NEGLIGIBLE_RHO}; inconclusive otherwise or {_TOO_FEW.format(x='ratios')}",
    "1b": "supported if the CI of delta is > 0; not supported if < 0; inconclusive otherwise or "
    + _TOO_FEW.format(x="sizes"),
    "2a": f"supported if the CI of rho is > 0; not supported if < 0 or within +/-{NEGLIGIBLE_RHO}; inconclusive "
    f"otherwise or {_TOO_FEW.format(x='ratios')}",
    "2b": f"supported if the CI of rho is > 0; not supported if < 0 or within +/-{NEGLIGIBLE_RHO}; inconclusive "
    f"otherwise or {_TOO_FEW.format(x='sizes')}",
    "3a": f"supported if the CI of the mean difference is > 0; not supported if < 0; inconclusive otherwise or "
    f"< {MIN_PAIRS} pairs",
    "3b": f"supported if the CI of the mean difference is < 0; not supported if > 0; inconclusive otherwise or "
    f"< {MIN_PAIRS} pairs",
    "3c": f"supported if the CI of the mean difference is > 0; not supported if < 0; inconclusive otherwise or "
    f"< {MIN_PAIRS} pairs",
    "3d": "supported if the CI of the difference is > 0; not supported if < 0; inconclusive otherwise or < 2 seeds "
    "in either cell",
    "4a": "supported if the CI of the difference is > 0; not supported if < 0; inconclusive otherwise or a group "
    "without runs",
    "4b": f"supported if the CI of the difference is > 0; not supported if < 0; inconclusive otherwise or < "
    f"{MIN_SHARED_BINS} shared cost bins",
    "all": "supported if every component is supported; not supported if any is not supported; else inconclusive",
}


# --------------------------------------------------------------------------------------------------------------
# Bootstrap machinery: runs are laid out stratum by stratum so that every resample keeps each stratum's size and
# a statistic can be computed for all resamples at once from contiguous column slices.
# --------------------------------------------------------------------------------------------------------------
def _rng(seed: int, *keys: str) -> np.random.Generator:
    """A generator per (seed, claim, task, method): results do not depend on the order claims are evaluated in."""
    return np.random.default_rng([seed, *(zlib.crc32(k.encode()) for k in keys)])


def _layout(df: pd.DataFrame, strata: Sequence[str]) -> tuple[np.ndarray, list[slice]]:
    """Row order grouping the strata together, and each stratum's slice in that order."""
    codes = df.groupby(list(strata), dropna=False, sort=True).ngroup().to_numpy()
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes)
    edges = np.concatenate([[0], np.cumsum(counts)])
    return order, [slice(int(a), int(b)) for a, b in itertools.pairwise(edges) if b > a]


def _resample(order: np.ndarray, slices: list[slice], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(1 + n_boot, n) row indices: row 0 is the observed sample, the others stratified bootstrap resamples."""
    idx = np.empty((n_boot + 1, len(order)), dtype=int)
    idx[0] = order
    for sl in slices:
        members = order[sl]
        idx[1:, sl] = members[rng.integers(0, len(members), size=(n_boot, len(members)))]
    return idx


def _blocks(df: pd.DataFrame, strata: Sequence[str]) -> np.ndarray:
    """Block code (0..k-1) of every run: one block per combination of the nuisance factors."""
    return df.groupby(list(strata), dropna=False, sort=True).ngroup().to_numpy()


def _block_weights(blocks: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(1 + n_boot, n) run weights: row 0 all ones (the observed sample), then block-bootstrap multiplicities."""
    k = int(blocks.max()) + 1
    wb = rng.multinomial(k, np.full(k, 1.0 / k), size=n_boot)
    return np.vstack([np.ones(k), wb])[:, blocks].astype(float)


def _residuals(y: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    means = np.bincount(blocks, weights=y) / np.bincount(blocks)
    # Residuals that are equal in exact arithmetic must tie in the ranks, not be ordered by rounding error.
    return np.round(y - means[blocks], 9)


def _onehot(codes: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(codes), k))
    out[np.arange(len(codes)), codes] = 1.0
    return out


def _weighted_ranks(v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Mid-ranks of ``v`` when run i appears w[b, i] times, for every row b of ``w`` at once."""
    u, inv = np.unique(v, return_inverse=True)
    wu = w @ _onehot(inv, len(u))
    return (np.cumsum(wu, axis=1) - (wu - 1.0) / 2.0)[:, inv]


def _weighted_spearman(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Spearman rho of (x, y) with runs replicated by the weights in each row of ``w``."""
    rx = _weighted_ranks(x, w)
    ry = _weighted_ranks(y, w)
    sw = w.sum(axis=1, keepdims=True)
    dx = rx - (w * rx).sum(axis=1, keepdims=True) / sw
    dy = ry - (w * ry).sum(axis=1, keepdims=True) / sw
    den = np.sqrt((w * dx * dx).sum(axis=1) * (w * dy * dy).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-12, (w * dx * dy).sum(axis=1) / den, np.nan)


def _ci(stats: np.ndarray) -> tuple[float, float, float]:
    """Observed value (row 0) and interval of the resamples (the rest); the interval is NaN if < half usable."""
    boot = stats[1:]
    usable = np.isfinite(boot)
    if usable.sum() < 0.5 * len(boot) or not usable.any():
        return float(stats[0]), math.nan, math.nan
    lo, hi = np.percentile(boot[usable], [2.5, 97.5])
    return float(stats[0]), float(lo), float(hi)


# --------------------------------------------------------------------------------------------------------------
# Verdict rules (see the module docstring).
# --------------------------------------------------------------------------------------------------------------
def _finite(*values: float) -> bool:
    return all(v is not None and np.isfinite(v) for v in values)


def _verdict_null(rho: float, lo: float, hi: float) -> str:
    if not _finite(rho, lo, hi):
        return INCONCLUSIVE
    if -NEGLIGIBLE_RHO <= lo and hi <= NEGLIGIBLE_RHO:
        return SUPPORTED
    if (lo > 0 or hi < 0) and abs(rho) >= NEGLIGIBLE_RHO:
        return NOT_SUPPORTED
    return INCONCLUSIVE


def _verdict_rise(lo: float, hi: float) -> str:
    if not _finite(lo, hi):
        return INCONCLUSIVE
    if lo > 0:
        return SUPPORTED
    if hi < 0 or (-NEGLIGIBLE_RHO <= lo and hi <= NEGLIGIBLE_RHO):
        return NOT_SUPPORTED
    return INCONCLUSIVE


def _verdict_sign(lo: float, hi: float, expected: int = 1) -> str:
    if not _finite(lo, hi):
        return INCONCLUSIVE
    if (expected > 0 and lo > 0) or (expected < 0 and hi < 0):
        return SUPPORTED
    if (expected > 0 and hi < 0) or (expected < 0 and lo > 0):
        return NOT_SUPPORTED
    return INCONCLUSIVE


def _too_few(r: dict) -> bool:
    return r["n_x"] < MIN_DISTINCT_X or r["n_blocks"] < MIN_BLOCKS


def _combine(verdicts: Sequence[str]) -> str:
    if verdicts and all(v == SUPPORTED for v in verdicts):
        return SUPPORTED
    if any(v == NOT_SUPPORTED for v in verdicts):
        return NOT_SUPPORTED
    return INCONCLUSIVE


# --------------------------------------------------------------------------------------------------------------
# Statistics.
# --------------------------------------------------------------------------------------------------------------
def _trend(df: pd.DataFrame, x: str, strata: Sequence[str], value: str, n_boot: int, rng: np.random.Generator) -> dict:
    """Spearman rho of ``value`` (residualised within ``strata`` blocks) against ``x``; block-bootstrap interval."""
    n_x = int(df[x].nunique()) if len(df) else 0
    out = {"n": len(df), "n_x": n_x, "n_blocks": 0, "value": math.nan, "lo": math.nan, "hi": math.nan}
    if n_x < MIN_DISTINCT_X:
        return out
    blocks = _blocks(df, strata)
    out["n_blocks"] = int(blocks.max()) + 1
    w = _block_weights(blocks, n_boot, rng)
    resid = _residuals(df[value].to_numpy(float), blocks)
    out["value"], out["lo"], out["hi"] = _ci(_weighted_spearman(df[x].to_numpy(float), resid, w))
    return out


def _interior_optimum(df: pd.DataFrame, value: str, n_boot: int, rng: np.random.Generator) -> dict:
    """delta = best interior size mean - better end-size mean (residuals within (ratio, classifier) blocks)."""
    sizes = np.sort(df["size"].unique()) if len(df) else np.array([])
    out = {
        "n": len(df),
        "n_x": len(sizes),
        "n_blocks": 0,
        "value": math.nan,
        "lo": math.nan,
        "hi": math.nan,
        "best": math.nan,
        "p_interior": math.nan,
    }
    if len(sizes) < MIN_DISTINCT_X:
        return out
    blocks = _blocks(df, ["data_ratio", "classifier"])
    out["n_blocks"] = int(blocks.max()) + 1
    w = _block_weights(blocks, n_boot, rng)
    resid = _residuals(df[value].to_numpy(float), blocks)
    onehot = _onehot(np.searchsorted(sizes, df["size"].to_numpy(float)), len(sizes))
    sums = (w * resid) @ onehot
    counts = w @ onehot
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1e-12), -np.inf)
    inner = means[:, 1:-1].max(axis=1)
    ends = means[:, [0, -1]].max(axis=1)
    ok = np.isfinite(inner) & np.isfinite(ends)
    out["value"], out["lo"], out["hi"] = _ci(np.where(ok, inner - ends, np.nan))
    best = means.argmax(axis=1)
    out["best"] = float(sizes[best[0]])
    interior = (best > 0) & (best < len(sizes) - 1)
    out["p_interior"] = float(interior[1:][ok[1:]].mean()) if ok[1:].any() else math.nan
    return out


def _pairs(df: pd.DataFrame, value: str) -> pd.DataFrame:
    """Runs matched on (size, data ratio, seed): one row per pair with plain, classifier and their difference."""
    keys = ["size", "data_ratio", "seed"]
    plain = df.loc[~df["classifier"], [*keys, value]].rename(columns={value: "plain"})
    cls = df.loc[df["classifier"], [*keys, value]].rename(columns={value: "cls"})
    # Duplicate keys (should not happen) would multiply pairs; average them first.
    plain = plain.groupby(keys, dropna=False, as_index=False).mean()
    cls = cls.groupby(keys, dropna=False, as_index=False).mean()
    pairs = plain.merge(cls, on=keys, how="inner")
    pairs["diff"] = pairs["cls"] - pairs["plain"]
    return pairs


def _mean_ci(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> tuple[float, float, float]:
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return math.nan, math.nan, math.nan
    idx = _resample(np.arange(len(values)), [slice(0, len(values))], n_boot, rng)
    return _ci(values[idx].mean(axis=1))


def _group_stat(
    df: pd.DataFrame, strata: Sequence[str], value: str, n_boot: int, rng: np.random.Generator, stat: Callable
) -> tuple[float, float, float]:
    """Bootstrap a statistic computed from per-stratum means: ``stat(means, keys)`` for (1 + n_boot) rows."""
    order, slices = _layout(df, strata)
    index = df.groupby(list(strata), dropna=False, sort=True).size().index
    keys = list(index) if isinstance(index, pd.MultiIndex) else [(k,) for k in index]
    idx = _resample(order, slices, n_boot, rng)
    ys = df[value].to_numpy(float)[idx]
    means = np.stack([ys[:, sl].mean(axis=1) for sl in slices], axis=1)
    return _ci(stat(means, keys))


def _group_of(method: str) -> str:
    return "layer" if method in LAYER_COMPOSITION else "embedding"


# --------------------------------------------------------------------------------------------------------------
# The claims table.
# --------------------------------------------------------------------------------------------------------------
def _row(claim: str, task: str, method: str, statistic: str, r: dict, verdict: str, rule: str | None = None) -> dict:
    return {
        "claim": claim,
        "task": task,
        "method": method,
        "statistic": statistic,
        "value": r.get("value", math.nan),
        "ci_low": r.get("lo", math.nan),
        "ci_high": r.get("hi", math.nan),
        "verdict": verdict,
        "n": int(r.get("n", 0)),
        "rule": rule or RULES[claim],
    }


def _all_row(claim: str, task: str, rows: list[dict]) -> dict:
    verdicts = [r["verdict"] for r in rows]
    k = sum(v == SUPPORTED for v in verdicts)
    r = {"value": float(k), "n": len(verdicts)}
    return _row(claim, task, "all", f"components supported (of {len(verdicts)})", r, _combine(verdicts), RULES["all"])


def _prepare(runs: pd.DataFrame, value: str) -> pd.DataFrame:
    if value not in VALUE_COLUMNS:
        raise ValueError(f"value column must be one of {', '.join(VALUE_COLUMNS)}, got {value!r}")
    ok = successful(validate_runs(runs))
    return ok.loc[np.isfinite(ok[value])]


def _claim_rows(ok: pd.DataFrame, value: str, n_boot: int, seed: int) -> tuple[list[dict], dict]:
    """All claim rows, plus the intermediate numbers the report prints behind them."""
    rows: list[dict] = []
    extra: dict = {"1b": {}, "3": {}, "3d": {}, "4": {}}

    # Claims 1a, 2a (ratio) and 1b, 2b (size), per PEFT method.
    for claim, task, kind in (
        ("1a", "coco", "ratio"),
        ("1b", "coco", "size"),
        ("2a", "vqa", "ratio"),
        ("2b", "vqa", "size"),
    ):
        per = []
        for method in PEFT_METHODS:
            d = ok.loc[(ok["task"] == task) & (ok["method"] == method)]
            rng = _rng(seed, claim, task, method)
            if claim == "1b":
                r = _interior_optimum(d, value, n_boot, rng)
                extra["1b"][method] = r
                verdict = INCONCLUSIVE if _too_few(r) else _verdict_sign(r["lo"], r["hi"], 1)
                stat = "delta = best interior size mean - best end-size mean"
            elif kind == "ratio":
                r = _trend(d, "data_ratio", ["size", "classifier"], value, n_boot, rng)
                if _too_few(r):
                    verdict = INCONCLUSIVE
                elif claim == "1a":
                    verdict = _verdict_null(r["value"], r["lo"], r["hi"])
                else:
                    verdict = _verdict_rise(r["lo"], r["hi"])
                stat = "Spearman rho(data ratio, metric | size, classifier)"
            else:
                r = _trend(d, "size", ["data_ratio", "classifier"], value, n_boot, rng)
                verdict = INCONCLUSIVE if _too_few(r) else _verdict_rise(r["lo"], r["hi"])
                stat = "Spearman rho(size, metric | data ratio, classifier)"
            row = _row(claim, task, method, stat, r, verdict)
            row["n_x"] = r["n_x"]
            per.append(row)
        rows += per
        rows.append(_all_row(claim, task, per))

    # Claim 3: paired "+ classifier" minus plain.
    expectations = {
        "3a": ("coco", ("prompt",), 1),
        "3b": ("coco", LAYER_COMPOSITION, -1),
        "3c": ("vqa", PEFT_METHODS, 1),
    }
    for task in TASKS:
        for method in PEFT_METHODS:
            d = ok.loc[(ok["task"] == task) & (ok["method"] == method)]
            pairs = _pairs(d, value)
            est, lo, hi = _mean_ci(pairs["diff"].to_numpy(), n_boot, _rng(seed, "3", task, method))
            extra["3"][(task, method)] = {"pairs": pairs, "value": est, "lo": lo, "hi": hi}
    for claim, (task, methods, sign) in expectations.items():
        per = []
        for method in methods:
            e = extra["3"][(task, method)]
            n = len(e["pairs"])
            verdict = INCONCLUSIVE if n < MIN_PAIRS else _verdict_sign(e["lo"], e["hi"], sign)
            r = {"value": e["value"], "lo": e["lo"], "hi": e["hi"], "n": n}
            per.append(_row(claim, task, method, "mean paired difference (+ classifier - plain)", r, verdict))
        rows += per
        rows.append(_all_row(claim, task, per))

    # Claim 3d: best "+ classifier" size vs full fine-tuning, VQAv2, at the largest shared ratio.
    per = []
    vqa = ok.loc[ok["task"] == "vqa"]
    full = vqa.loc[vqa["method"] == "full"]
    if (~full["classifier"]).any():
        full = full.loc[~full["classifier"]]
    for method in PEFT_METHODS:
        d = vqa.loc[(vqa["method"] == method) & vqa["classifier"]]
        shared = sorted(set(d["data_ratio"]) & set(full["data_ratio"]))
        r: dict = {"value": math.nan, "lo": math.nan, "hi": math.nan, "n": 0}
        info: dict = {}
        if shared:
            ratio = shared[-1]
            cell_means = d.loc[d["data_ratio"] == ratio].groupby("size")[value].mean()
            best = float(cell_means.idxmax())
            a = d.loc[(d["data_ratio"] == ratio) & (d["size"] == best), value].to_numpy(float)
            f = full.loc[full["data_ratio"] == ratio, value].to_numpy(float)
            rng = _rng(seed, "3d", "vqa", method)
            ia = rng.integers(0, len(a), size=(n_boot, len(a)))
            jf = rng.integers(0, len(f), size=(n_boot, len(f)))
            stats = np.concatenate([[a.mean() - f.mean()], a[ia].mean(axis=1) - f[jf].mean(axis=1)])
            r["value"], r["lo"], r["hi"] = _ci(stats)
            r["n"] = len(a) + len(f)
            info = {
                "ratio": ratio,
                "size": best,
                "cls_mean": a.mean(),
                "n_cls": len(a),
                "full_mean": f.mean(),
                "n_full": len(f),
            }
        extra["3d"][method] = info
        enough = bool(info) and info["n_cls"] >= 2 and info["n_full"] >= 2
        verdict = _verdict_sign(r["lo"], r["hi"], 1) if enough else INCONCLUSIVE
        per.append(_row("3d", "vqa", method, "best + classifier size mean - full fine-tuning mean", r, verdict))
    rows += per
    rows.append(_all_row("3d", "vqa", per))

    # Claim 4: layer vs embedding composition, per task.
    per_a, per_b = [], []
    for task in TASKS:
        d = ok.loc[(ok["task"] == task) & ok["method"].isin(PEFT_METHODS)].copy()
        d["group"] = d["method"].map(_group_of)
        info: dict = {"methods": d, "bins": None}
        # 4a: mean of method means, layer minus embedding.
        r: dict = {"value": math.nan, "lo": math.nan, "hi": math.nan, "n": len(d)}
        if d["group"].nunique() == 2:

            def diff_of_groups(means: np.ndarray, keys: list) -> np.ndarray:
                is_layer = np.array([k[0] in LAYER_COMPOSITION for k in keys])
                return means[:, is_layer].mean(axis=1) - means[:, ~is_layer].mean(axis=1)

            r["value"], r["lo"], r["hi"] = _group_stat(
                d, ["method"], value, n_boot, _rng(seed, "4a", task), diff_of_groups
            )
            verdict = _verdict_sign(r["lo"], r["hi"], 1)
        else:
            verdict = INCONCLUSIVE
        per_a.append(
            _row(
                "4a",
                task,
                LAYER_VS_EMBEDDING,
                "mean of layer-method means - mean of embedding-method means",
                r,
                verdict,
            )
        )
        # 4b: matched computation cost.
        cost = d["data_size"] * d["trainable_params"]
        d = d.loc[np.isfinite(cost) & (cost > 0)].copy()
        d["cost_bin"] = np.floor(np.log10(d["data_size"] * d["trainable_params"]) / COST_BIN_DECADES).astype(int)
        both = d.groupby("cost_bin")["group"].nunique()
        shared = both.index[both == 2]
        m = d.loc[d["cost_bin"].isin(shared)]
        r = {"value": math.nan, "lo": math.nan, "hi": math.nan, "n": len(m)}
        if len(shared) >= MIN_SHARED_BINS:

            def matched(means: np.ndarray, keys: list) -> np.ndarray:
                # keys are (cost_bin, group) sorted, so each shared bin has "embedding" then "layer".
                return (means[:, 1::2] - means[:, 0::2]).mean(axis=1)

            r["value"], r["lo"], r["hi"] = _group_stat(
                m, ["cost_bin", "group"], value, n_boot, _rng(seed, "4b", task), matched
            )
            verdict = _verdict_sign(r["lo"], r["hi"], 1)
        else:
            verdict = INCONCLUSIVE
        info["bins"] = m
        extra["4"][task] = info
        row = _row(
            "4b",
            task,
            LAYER_VS_EMBEDDING,
            f"mean over {len(shared)} shared cost bins of (layer - embedding) mean",
            r,
            verdict,
        )
        per_b.append(row)
    for claim, per in (("4a", per_a), ("4b", per_b)):
        rows += per
        rows.append(_all_row(claim, "both", per))
    return rows, extra


def claims_table(runs: pd.DataFrame, n_boot: int = 1000, seed: int = 0, value: str = DEFAULT_VALUE) -> pd.DataFrame:
    """One row per (claim, task, method) with the statistic, its bootstrap interval and the verdict.

    Args:
        runs: Runs table (all statuses; only successful runs are used).
        n_boot: Bootstrap resamples per interval.
        seed: Seed of the bootstrap.
        value: Metric column (``style.VALUE_LABELS``; ``paper_metric``, the paper's number, by default).

    Returns:
        Columns ``claim, task, method, statistic, value, ci_low, ci_high, verdict, n, rule``; ``method == "all"``
        rows combine a claim's components (see the module docstring for every rule).
    """
    rows, _ = _claim_rows(_prepare(runs, value), value, n_boot, seed)
    return pd.DataFrame(rows).reindex(columns=list(TABLE_COLUMNS))


# --------------------------------------------------------------------------------------------------------------
# Markdown.
# --------------------------------------------------------------------------------------------------------------
def _fmt(v: object, digits: int = 4) -> str:
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return "–"
        return f"{v:.{digits}g}"
    return str(v)


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        return _fmt(v).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _ci_text(lo: float, hi: float, digits: int = 3) -> str:
    if not _finite(lo, hi):
        return "–"
    return f"[{lo:.{digits}g}, {hi:.{digits}g}]"


def _pivot(ok: pd.DataFrame, task: str, x: str, value: str, fmt: Callable[[float], str]) -> str:
    """Mean metric per method (rows) and x value (columns), over everything else."""
    d = ok.loc[(ok["task"] == task) & ok["method"].isin(PEFT_METHODS)]
    if d.empty:
        return "_no successful runs_"
    p = d.pivot_table(index="method", columns=x, values=value, aggfunc="mean")
    p = p.reindex([m for m in PEFT_METHODS if m in p.index])
    headers = ["method", *[fmt(c) for c in p.columns]]
    return _md_table(headers, [[METHOD_LABELS[m], *p.loc[m].tolist()] for m in p.index])


def _verdict_of(table: pd.DataFrame, claim: str, task: str | None = None) -> str:
    sel = table.loc[(table["claim"] == claim) & (table["method"] == "all")]
    if task is not None:
        sel = sel.loc[sel["task"] == task]
    return str(sel["verdict"].iloc[0]) if len(sel) else INCONCLUSIVE


def provenance_section(runs: pd.DataFrame) -> str:
    """What the report is of: study, data source, commits and config digest; a synthetic study says it plainly."""
    info = table_provenance(runs)
    commits = ", ".join(f"`{c}`" for c in info["commits"]) or "unknown"
    text = (f"Study `{info['study']}`, {info['data_source']} data, config digest `{info['study_digest']}`, "
            f"commit(s) {commits}.\n")
    if info["data_source"] == "synthetic":
        text = f"**This is a {SYNTHETIC_NOTE}.**\n\n" + text
    return text


def claims_report(
    runs: pd.DataFrame,
    baseline: pd.DataFrame | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    value: str = DEFAULT_VALUE,
) -> str:
    """The markdown claims report: per finding, the statistic, the numbers behind it and a verdict with its rule.

    Args:
        runs: Runs table (all statuses; non-success runs are listed at the end).
        baseline: Optional untuned-model scores (task, metric, split, value), listed for reference.
        n_boot: Bootstrap resamples per interval.
        seed: Seed of the bootstrap.
        value: Metric column (``style.VALUE_LABELS``; ``paper_metric``, the paper's number, by default).

    Returns:
        Markdown text.
    """
    all_runs = validate_runs(runs)
    ok = _prepare(all_runs, value)
    rows, extra = _claim_rows(ok, value, n_boot, seed)
    table = pd.DataFrame(rows)
    bad = non_success(all_runs)
    out: list[str] = []
    add = out.append

    add(f"# Claims report (metric: `{value}`)\n")
    add(provenance_section(all_runs))
    add(
        f"{len(all_runs)} runs in the table, {len(ok)} successful and used, {len(bad)} not successful (listed at the "
        f"end). Metric column: `{value}` ({VALUE_LABELS[value]}). Intervals: 95% percentile bootstrap, "
        f"{n_boot} resamples, seed {seed}. "
        "Decision rules: the docstring of `vlpeft.report`, repeated under each claim.\n"
    )
    add("## Summary\n")
    summary = []
    for claim, text in CLAIM_TEXT.items():
        sel = table.loc[(table["claim"] == claim) & (table["method"] == "all")]
        for r in sel.itertuples():
            summary.append([claim, text, f"{int(r.value)}/{r.n} supported", r.verdict])
    add(_md_table(["claim", "finding", "components", "verdict"], summary) + "\n")

    def per_method_table(claim: str, xname: str) -> str:
        sel = table.loc[(table["claim"] == claim) & (table["method"] != "all")]
        body = [
            [METHOD_LABELS[r.method], r.n, r.n_x, r.value, _ci_text(r.ci_low, r.ci_high), r.verdict]
            for r in sel.itertuples()
        ]
        return _md_table(["method", "runs", xname, "statistic", "95% CI", "verdict"], body)

    # Claim 1 and 2.
    for number, task in (("1", "coco"), ("2", "vqa")):
        metric = TASK_METRIC[task]
        add(f"## Claim {number}: {TASK_LABELS[task]}\n")
        for part, x, xname, fmt in (
            ("a", "data_ratio", "ratios", lambda r: format_ratio(r) + "%"),
            ("b", "size", "sizes", format_size),
        ):
            claim = number + part
            add(f"### {claim}. {CLAIM_TEXT[claim]} — **{_verdict_of(table, claim)}**\n")
            stat = table.loc[table["claim"] == claim, "statistic"].iloc[0]
            add(f"Statistic: {stat}. Rule: {RULES[claim]}.\n")
            if claim == "1b":
                body = []
                for method in PEFT_METHODS:
                    r = extra["1b"][method]
                    t = table.loc[(table["claim"] == "1b") & (table["method"] == method)].iloc[0]
                    best = format_size(r["best"]) if np.isfinite(r["best"]) else "–"
                    body.append(
                        [
                            METHOD_LABELS[method],
                            r["n"],
                            r["n_x"],
                            best,
                            r["value"],
                            _ci_text(r["lo"], r["hi"]),
                            r["p_interior"],
                            t["verdict"],
                        ]
                    )
                add(
                    _md_table(
                        ["method", "runs", "sizes", "best size", "delta", "95% CI", "P(interior best)", "verdict"],
                        body,
                    )
                    + "\n"
                )
            else:
                add(per_method_table(claim, xname) + "\n")
            other = "sizes" if x == "data_ratio" else "data ratios"
            add(f"Mean {metric} by {xname[:-1]} (over {other}, both variants and seeds):\n")
            add(_pivot(ok, task, x, value, fmt) + "\n")

    # Claim 3.
    add("## Claim 3: tuning the final classifier as well\n")
    add(
        "Paired differences (+ classifier minus plain) over runs matched on (size, data ratio, seed). Rules: "
        f"3a/3c {RULES['3a']}; 3b {RULES['3b']}.\n"
    )
    for claim in ("3a", "3b", "3c"):
        add(f"- {claim}. {CLAIM_TEXT[claim]} — **{_verdict_of(table, claim)}**")
    add("")
    body = []
    for task in TASKS:
        for method in PEFT_METHODS:
            e = extra["3"][(task, method)]
            p = e["pairs"]
            sel = table.loc[
                (table["claim"].isin(["3a", "3b", "3c"])) & (table["task"] == task) & (table["method"] == method)
            ]
            claim = sel["claim"].iloc[0] if len(sel) else "–"
            verdict = sel["verdict"].iloc[0] if len(sel) else "no claim"
            body.append(
                [
                    TASK_LABELS[task],
                    METHOD_LABELS[method],
                    len(p),
                    p["plain"].mean() if len(p) else math.nan,
                    p["cls"].mean() if len(p) else math.nan,
                    e["value"],
                    _ci_text(e["lo"], e["hi"]),
                    claim,
                    verdict,
                ]
            )
    add(
        _md_table(
            ["task", "method", "pairs", "mean plain", "mean + classifier", "mean diff", "95% CI", "claim", "verdict"],
            body,
        )
        + "\n"
    )
    add(f"### 3d. {CLAIM_TEXT['3d']} — **{_verdict_of(table, '3d')}**\n")
    add(f"Statistic: {table.loc[table['claim'] == '3d', 'statistic'].iloc[0]}. Rule: {RULES['3d']}.\n")
    body = []
    for method in PEFT_METHODS:
        info = extra["3d"][method]
        t = table.loc[(table["claim"] == "3d") & (table["method"] == method)].iloc[0]
        if info:
            body.append(
                [
                    METHOD_LABELS[method],
                    format_ratio(info["ratio"]) + "%",
                    format_size(info["size"]),
                    f"{_fmt(info['cls_mean'])} (n={info['n_cls']})",
                    f"{_fmt(info['full_mean'])} (n={info['n_full']})",
                    t["value"],
                    _ci_text(t["ci_low"], t["ci_high"]),
                    t["verdict"],
                ]
            )
        else:
            body.append([METHOD_LABELS[method], "–", "–", "–", "–", math.nan, "–", t["verdict"]])
    add(
        _md_table(
            ["method", "ratio", "best size", "+ classifier mean", "full FT mean", "diff", "95% CI", "verdict"], body
        )
        + "\n"
    )

    # Claim 4.
    add("## Claim 4: layer composition vs embedding composition\n")
    add(
        f"Layer composition: {', '.join(METHOD_LABELS[m] for m in LAYER_COMPOSITION)}; embedding composition: "
        f"{', '.join(METHOD_LABELS[m] for m in EMBEDDING_COMPOSITION)}. Cost = data size × trainable parameters "
        "(`trainable_params`, the count during training: prefix-tuning's includes its reparametrising MLP), "
        f"binned in {COST_BIN_DECADES}-decade bins.\n"
    )
    for claim in ("4a", "4b"):
        add(f"- {claim}. {CLAIM_TEXT[claim]} — **{_verdict_of(table, claim)}**. Rule: {RULES[claim]}.")
    add("")
    body = [
        [r.claim, TASK_LABELS[r.task], r.statistic, r.value, _ci_text(r.ci_low, r.ci_high), r.n, r.verdict]
        for r in table.loc[table["claim"].isin(["4a", "4b"]) & (table["method"] == LAYER_VS_EMBEDDING)].itertuples()
    ]
    add(_md_table(["claim", "task", "statistic", "value", "95% CI", "runs", "verdict"], body) + "\n")
    for task in TASKS:
        info = extra["4"][task]
        d = info["methods"]
        add(
            f"{TASK_LABELS[task]}: per method (mean over all runs; best configuration = best cell mean, descriptive)\n"
        )
        body = []
        for method in PEFT_METHODS:
            dm = d.loc[d["method"] == method]
            if dm.empty:
                body.append([METHOD_LABELS[method], _group_of(method), 0, math.nan, math.nan, "–"])
                continue
            cells = dm.groupby(["classifier", "size", "data_ratio"])[value].mean()
            clf, size, ratio = cells.idxmax()
            config = f"{format_size(size)}, {format_ratio(ratio)}%" + (", + classifier" if clf else "")
            body.append([METHOD_LABELS[method], _group_of(method), len(dm), dm[value].mean(), cells.max(), config])
        add(_md_table(["method", "group", "runs", "mean", "best cell", "best configuration"], body) + "\n")
        bins = info["bins"]
        if bins is not None and len(bins):
            g = bins.groupby(["cost_bin", "group"])[value].agg(["mean", "count"]).unstack("group")
            body = []
            for b in g.index:
                lo, hi = 10 ** (b * COST_BIN_DECADES), 10 ** ((b + 1) * COST_BIN_DECADES)
                body.append(
                    [
                        f"{lo:.2g}–{hi:.2g}",
                        g.loc[b, ("mean", "layer")],
                        int(g.loc[b, ("count", "layer")]),
                        g.loc[b, ("mean", "embedding")],
                        int(g.loc[b, ("count", "embedding")]),
                        g.loc[b, ("mean", "layer")] - g.loc[b, ("mean", "embedding")],
                    ]
                )
            add(f"{TASK_LABELS[task]}: cost bins holding both groups\n")
            add(
                _md_table(["cost", "layer mean", "layer runs", "embedding mean", "embedding runs", "diff"], body)
                + "\n"
            )

    # Reference and bookkeeping.
    if baseline is not None and len(baseline):
        add("## Pre-trained model without tuning (reference)\n")
        body = []
        for r in baseline.itertuples():
            best = ok.loc[ok["task"] == r.task, value].max() if r.task in TASKS else math.nan
            body.append([TASK_LABELS.get(r.task, r.task), r.metric, r.split, r.value, best])
        add(_md_table(["task", "metric", "split", "untuned", f"best tuned run ({value})"], body) + "\n")
    add(f"## Runs not used ({len(bad)})\n")
    if len(bad):
        counts = bad["status"].value_counts()
        add("By status: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + ".\n")
        body = [
            [
                r.run_id,
                r.task,
                r.method,
                r.classifier,
                format_size(r.size) if np.isfinite(r.size) else "–",
                format_ratio(r.data_ratio) + "%",
                r.seed,
                r.status,
            ]
            for r in bad.itertuples()
        ]
        add(_md_table(["run_id", "task", "method", "+ classifier", "size", "ratio", "seed", "status"], body) + "\n")
    else:
        add("None: every run succeeded.\n")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m vlpeft.report --runs runs.csv [--baseline baseline.csv] [--out report.md]``."""
    parser = argparse.ArgumentParser(prog="python -m vlpeft.report", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, type=Path)
    parser.add_argument("--baseline", type=Path)
    parser.add_argument("--out", type=Path, help="markdown file (stdout if not given)")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--metric", "--value", dest="metric", default=DEFAULT_VALUE, choices=VALUE_COLUMNS,
                        help="runs.csv column the claims are tested on (default: paper_metric, the paper's reported "
                        "number; test_at_best_val: selection-honest)")
    args = parser.parse_args(argv)
    text = claims_report(load_runs(args.runs), load_baseline(args.baseline), args.n_boot, args.seed, args.metric)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
