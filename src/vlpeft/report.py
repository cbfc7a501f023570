"""Test the paper's findings against the runs table and write a markdown claims report.

Every finding is one :class:`Claim` in ``CLAIMS``: its id, the paper's sentence, the runs it selects (one
component per PEFT method, or per task), its :class:`Statistic` and its :class:`Rule`. The decision rules are
never written out by hand: the report prints each rule from the same :class:`Test` objects and constants that
decide it, so the text below only explains the choices behind them.

The findings are hypotheses (study protocol, "The question"); every one is tested on successful runs only, with
the metric column ``paper_metric`` by default (the paper's number: the best Karpathy-test CIDEr over the
evaluations for COCO, the best validation accuracy for VQAv2); ``test_at_best_val`` (the test score at the
evaluation chosen on validation) tests them selection-honestly. Claim 1d reads the validation columns
(``best_val``, ``final_val``) whatever the metric column, because over-fitting is a property of the validation
curve. The resampling kernels live in :mod:`vlpeft.stats`.

Decisions
---------
- Each component gets two one-sided p-values: for the claim (``support``; several tests must all hold, so their
  largest p counts) and for its contrary (``refute``; any of several tests refutes, Bonferroni within). Across a
  claim's components (its family: the PEFT methods, or the two tasks) both are Holm-adjusted. A component is
  supported if its adjusted support p < ``ALPHA``, else not supported if its adjusted refute p < ``ALPHA``, else
  inconclusive; a component with too few runs (fewer than ``MIN_DISTINCT_X`` distinct x values, ``MIN_BLOCKS``
  blocks, ``MIN_PAIRS`` pairs, ``MIN_SEEDS`` seeds per cell or ``MIN_SHARED_BINS`` cost bins) is inconclusive and
  leaves the family. The "all" row is supported if every component is (an intersection-union test, which needs
  no further correction), not supported if any is, inconclusive otherwise.
- p-values come from a permutation null where one exists (1b: size labels shuffled within each sweep; claims 1d and
  3a-c: sign flips of paired differences), else from the bootstrap (the share of replicates on the wrong side of
  the bound, which is below alpha exactly when the one-sided percentile bound clears it).
- Intervals are 95 % percentile bootstrap intervals, unadjusted and descriptive; each claim says what they
  resample. With one seed they resample configurations (sizes, ratios, variants), never training noise.
- Trend claims (1a, 1b, 2a, 2b) resample whole sweeps (blocks: one run per x value of one configuration of the
  other factors and one seed) after subtracting each block's mean, so that size and classifier effects neither
  masquerade as nor hide the effect under test. Resampling single runs would break the sweeps.
- 1a, "does not depend", is an equivalence test in metric units: the difference between the largest and the
  smallest data ratio must lie within +/- ``MARGIN`` (TOST); Spearman rho is printed beside it.
- 1b, "an interior optimum", compares delta = (best interior size) - (better end size) with its permutation null:
  a maximum over more interior sizes is larger by chance alone (winner's curse), and the null carries the same
  maximum.
- An inconclusive component says what would decide it: the number of units (blocks, pairs, ratios, seeds) at which
  the observed effect would clear the Holm-adjusted test if effect and spread held (normal approximation).
"""

from __future__ import annotations

from vlpeft.console import announce_main
from vlpeft.console import run as run_cli

announce_main(__name__, "python -m vlpeft.report", "starting (loading pandas)")

import argparse
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from vlpeft import stats
from vlpeft.provenance import SYNTHETIC_NOTE, table_provenance
from vlpeft.methods.registry import (
    EMBEDDING_COMPOSITION,
    LAYER_COMPOSITION,
    METHODS,
    METHOD_LABELS,
    PEFT_METHODS,
    PROMPT,
    REFERENCE,
    info as method_info,
)
from vlpeft.plots.style import DEFAULT_VALUE, VALUE_LABELS, format_ratio, format_size
from vlpeft.tasks import COCO, TASK_LABELS, TASK_METRIC, TASKS, VQA
from vlpeft.plots.tables import VALUE_COLUMNS, load_baseline, load_runs, non_success, successful, validate_runs

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
INCONCLUSIVE = "inconclusive"
VERDICTS: tuple[str, ...] = (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE)

#: Family-wise error rate of each claim's components (Holm).
ALPHA = 0.05
#: Largest Spearman rho still called a negligible (at most small) monotone association.
NEGLIGIBLE_RHO = 0.3
#: "Comparable", "does not depend": within this many metric points (x 100, as reported).
MARGIN: dict[str, float] = {"CIDEr": 2.0, "accuracy": 1.0}
#: "Lags far": behind by more than this many metric points.
LARGE_GAP: dict[str, float] = {"CIDEr": 10.0, "accuracy": 5.0}
#: Fewest distinct x values (ratios, sizes) a trend claim needs.
MIN_DISTINCT_X = 3
#: Fewest blocks (sweeps) a trend claim resamples.
MIN_BLOCKS = 3
#: Fewest matched pairs a paired claim needs.
MIN_PAIRS = 2
#: Fewest seeds per cell when two single cells are compared (3d).
MIN_SEEDS = 2
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
    "p_support",
    "p_refute",
    "verdict",
    "n",
    "units",
    "rule",
    "decide",
)


# --------------------------------------------------------------------------------------------------------------
# The objects a claim is made of.
# --------------------------------------------------------------------------------------------------------------
@dataclass
class Estimate:
    """A statistic on one component: observed value, bootstrap replicates, permutation null, descriptive details.

    ``units`` counts what is resampled (blocks, pairs, ratios, seeds), ``too_few`` says why it cannot be judged.
    """

    value: float = math.nan
    boot: np.ndarray | None = None
    null: np.ndarray | None = None
    n: int = 0
    units: int = 0
    seeds: int = 0
    details: dict[str, object] = field(default_factory=dict)
    too_few: str | None = None


@dataclass(frozen=True)
class Test:
    """One one-sided hypothesis: the statistic is greater (+1) or smaller (-1) than ``bound``, or than its
    permutation null when ``bound`` is None."""

    direction: int
    bound: float | None = None

    def p(self, est: Estimate) -> float:
        if self.bound is None:
            return stats.p_permutation(est.value, est.null, self.direction)
        return stats.p_bootstrap(est.boot, self.bound, self.direction)

    def text(self, symbol: str) -> str:
        if self.bound is None:
            return f"{symbol} {'above' if self.direction > 0 else 'below'} its permutation null"
        return f"{symbol} {'>' if self.direction > 0 else '<'} {self.bound:g}"

    def distance(self, est: Estimate) -> tuple[float, float]:
        """(how far the estimate is on this test's side, the spread it is judged against), for planning."""
        ref = est.null if self.bound is None else est.boot
        ref = stats.usable(ref)
        if not len(ref):
            return math.nan, math.nan
        centre = float(np.mean(ref)) if self.bound is None else self.bound
        return self.direction * (est.value - centre), float(np.std(ref))


@dataclass(frozen=True)
class Rule:
    """Supported if every ``support`` test holds, not supported if any ``refute`` test does (Holm across the
    claim's components, at ``ALPHA``)."""

    support: tuple[Test, ...]
    refute: tuple[Test, ...]

    def p_support(self, est: Estimate) -> float:
        return max(t.p(est) for t in self.support)

    def p_refute(self, est: Estimate) -> float:
        return min(1.0, len(self.refute) * min(t.p(est) for t in self.refute))

    def text(self, symbol: str) -> str:
        sup = " and ".join(t.text(symbol) for t in self.support)
        ref = " or ".join(t.text(symbol) for t in self.refute)
        return (
            f"supported if {sup} (Holm-adjusted one-sided p < {ALPHA:g}); else not supported if {ref} (same test); "
            "inconclusive otherwise"
        )


@dataclass(frozen=True)
class Statistic:
    """What is computed on a component's runs, and what its interval resamples."""

    name: str
    symbol: str
    resamples: str
    unit: str
    compute: Callable[[pd.DataFrame, str, int, np.random.Generator], Estimate]
    #: Whether more seeds add units (then the plan also says how many seeds).
    seeds_add_units: bool = True


@dataclass(frozen=True)
class Claim:
    """One finding of the paper, as data: it is evaluated and rendered by the generic code below."""

    id: str
    finding: str
    quote: str
    group: str
    selection: str
    components: tuple[tuple[str, str], ...]
    select: Callable[[pd.DataFrame, str, str], pd.DataFrame]
    statistic: Statistic
    rule: Rule
    #: Descriptive markdown shown under the claim (tables behind the statistic): f(successful runs, value column).
    describe: Callable[[pd.DataFrame, str], list[str]] | None = None


# --------------------------------------------------------------------------------------------------------------
# Statistics (the kernels are in vlpeft.stats).
# --------------------------------------------------------------------------------------------------------------
def _codes(df: pd.DataFrame, cols: Sequence[str]) -> np.ndarray:
    return df.groupby(list(cols), dropna=False, sort=True).ngroup().to_numpy()


def _base(df: pd.DataFrame) -> Estimate:
    return Estimate(n=len(df), seeds=int(df["seed"].nunique()) if len(df) else 0)


def _sweeps(df: pd.DataFrame, x: str, xname: str, by: Sequence[str]) -> tuple[Estimate, np.ndarray | None]:
    """A trend statistic's blocks (one sweep over x per configuration of ``by`` and seed), or why there are too few."""
    est = _base(df)
    n_x = int(df[x].nunique()) if len(df) else 0
    est.details[xname] = n_x
    if n_x < MIN_DISTINCT_X:
        est.too_few = f"{n_x} distinct {xname} (needs {MIN_DISTINCT_X})"
        return est, None
    blocks = _codes(df, [*by, "seed"])
    est.units = int(blocks.max()) + 1
    if est.units < MIN_BLOCKS:
        est.too_few = f"{est.units} sweeps (needs {MIN_BLOCKS})"
        return est, None
    return est, blocks


def _rho(df: pd.DataFrame, value: str, n_boot: int, gen: np.random.Generator, x: str, xname: str, by: Sequence[str]):
    est, blocks = _sweeps(df, x, xname, by)
    if blocks is not None:
        w = stats.block_weights(blocks, n_boot, gen)
        rho = stats.weighted_spearman(df[x].to_numpy(float), stats.residuals(df[value].to_numpy(float), blocks), w)
        est.value, est.boot = float(rho[0]), rho[1:]
    return est


def _end_difference(
    df: pd.DataFrame, value: str, n_boot: int, gen: np.random.Generator, x: str, xname: str, by: Sequence[str]
) -> Estimate:
    """Mean at the largest x minus mean at the smallest, within sweeps (metric units); rho as a detail."""
    est, blocks = _sweeps(df, x, xname, by)
    if blocks is None:
        return est
    levels = np.sort(df[x].unique())
    w = stats.block_weights(blocks, n_boot, gen)
    resid = stats.residuals(df[value].to_numpy(float), blocks)
    means = stats.weighted_group_means(resid, np.searchsorted(levels, df[x].to_numpy(float)), len(levels), w)
    diff = means[:, -1] - means[:, 0]
    est.value, est.boot = float(diff[0]), diff[1:]
    rho = stats.weighted_spearman(df[x].to_numpy(float), resid, w)
    est.details["Spearman rho"] = float(rho[0])
    est.details["rho 95% CI"] = _ci_text(*stats.percentile_interval(rho[1:]))
    return est


def _interior_optimum(df: pd.DataFrame, value: str, n_boot: int, gen: np.random.Generator) -> Estimate:
    """delta = best interior size mean - better end-size mean, within sweeps; null: sizes shuffled within sweeps."""
    est, blocks = _sweeps(df, "size", "sizes", ["data_ratio", "classifier"])
    est.details.update({"best size": "–", "P(interior best)": math.nan, "null mean": math.nan})
    if blocks is None:
        return est
    sizes = np.sort(df["size"].unique())
    k = len(sizes)
    codes = np.searchsorted(sizes, df["size"].to_numpy(float))
    resid = stats.residuals(df[value].to_numpy(float), blocks)

    def delta(means: np.ndarray) -> np.ndarray:
        means = np.where(np.isfinite(means), means, -np.inf)
        d = means[:, 1:-1].max(axis=1) - means[:, [0, -1]].max(axis=1)
        return np.where(np.isfinite(d), d, np.nan)

    means = stats.weighted_group_means(resid, codes, k, stats.block_weights(blocks, n_boot, gen))
    d = delta(means)
    est.value, est.boot = float(d[0]), d[1:]
    perm = stats.within_block_permutations(blocks, n_boot, gen)
    est.null = delta(
        np.stack([np.bincount(codes[p], weights=resid, minlength=k) for p in perm]) / np.bincount(codes, minlength=k)
    )
    best = np.nan_to_num(means, nan=-np.inf).argmax(axis=1)
    interior = (best > 0) & (best < k - 1)
    est.details.update(
        {
            "best size": format_size(sizes[best[0]]),
            "P(interior best)": float(interior[1:].mean()),
            "null mean": float(np.mean(est.null)),
        }
    )
    return est


def _paired(
    df: pd.DataFrame,
    value: str,
    n_boot: int,
    gen: np.random.Generator,
    pairs: Callable[[pd.DataFrame, str], tuple[pd.DataFrame, dict]],
) -> Estimate:
    """Mean paired difference; bootstrap over pairs, sign-flip null."""
    est = _base(df)
    p, details = pairs(df, value)
    est.details.update({"pairs": len(p), **details})
    est.units = len(p)
    if len(p) < MIN_PAIRS:
        est.too_few = f"{len(p)} pairs (needs {MIN_PAIRS})"
        return est
    diff = p["diff"].to_numpy(float)
    est.value = float(diff.mean())
    est.boot = stats.bootstrap_means(diff, n_boot, gen)
    est.null = stats.sign_flip_null(diff, n_boot, gen)
    return est


def _classifier_pairs(df: pd.DataFrame, value: str) -> tuple[pd.DataFrame, dict]:
    """+ classifier minus plain, matched on (size, data ratio, seed)."""
    keys = ["size", "data_ratio", "seed"]
    plain = df.loc[~df["classifier"]].groupby(keys, dropna=False)[value].mean().rename("plain")
    cls = df.loc[df["classifier"]].groupby(keys, dropna=False)[value].mean().rename("cls")
    p = pd.concat([plain, cls], axis=1, join="inner")
    p["diff"] = p["cls"] - p["plain"]
    return p, {
        "mean plain": p["plain"].mean() if len(p) else math.nan,
        "mean + classifier": p["cls"].mean() if len(p) else math.nan,
    }


def _overfit_pairs(df: pd.DataFrame, value: str) -> tuple[pd.DataFrame, dict]:
    """Late drop of the validation curve (best_val - final_val) at the largest minus at the smallest size."""
    d = df.assign(drop=df["best_val"] - df["final_val"]).dropna(subset=["drop"])
    if d["size"].nunique() < 2:
        return d.iloc[:0].assign(diff=[]), {}
    lo, hi = d["size"].min(), d["size"].max()
    keys = ["data_ratio", "classifier", "seed"]
    small = d.loc[d["size"] == lo].groupby(keys)["drop"].mean().rename("small")
    large = d.loc[d["size"] == hi].groupby(keys)["drop"].mean().rename("large")
    p = pd.concat([small, large], axis=1, join="inner")
    p["diff"] = p["large"] - p["small"]
    at = d.loc[d["size"] == hi, "drop"]
    return p, {
        "sizes": f"{format_size(lo)} vs {format_size(hi)}",
        "drop, smallest size": p["small"].mean() if len(p) else math.nan,
        "drop, largest size": p["large"].mean() if len(p) else math.nan,
        "largest size: best before end": f"{int((at > 0).sum())}/{len(at)}",
    }


def _versus_full(df: pd.DataFrame, value: str, n_boot: int, gen: np.random.Generator) -> Estimate:
    """Mean over data ratios of (method's plain mean - full fine-tuning's mean at that ratio); bootstrap over ratios."""
    est = _base(df)
    full = df.loc[df["method"] == REFERENCE].groupby("data_ratio")[value].mean()
    peft = df.loc[(df["method"] != REFERENCE) & ~df["classifier"]].groupby("data_ratio")[value].mean()
    d = (peft - full).dropna()
    est.units = len(d)
    est.details.update(
        {
            "ratios": len(d),
            "method mean": peft.loc[d.index].mean() if len(d) else math.nan,
            "full FT mean": full.loc[d.index].mean() if len(d) else math.nan,
        }
    )
    if len(d) < MIN_DISTINCT_X:
        est.too_few = f"{len(d)} data ratios shared with full fine-tuning (needs {MIN_DISTINCT_X})"
        return est
    est.value = float(d.mean())
    est.boot = stats.bootstrap_means(d.to_numpy(float), n_boot, gen)
    return est


def _best_classifier_vs_full(df: pd.DataFrame, value: str, n_boot: int, gen: np.random.Generator) -> Estimate:
    """Best "+ classifier" size mean - full fine-tuning mean, at the largest shared ratio; seeds resampled per cell."""
    est = _base(df)
    full = df.loc[df["method"] == REFERENCE]
    if (~full["classifier"]).any():
        full = full.loc[~full["classifier"]]
    d = df.loc[(df["method"] != REFERENCE) & df["classifier"]]
    shared = sorted(set(d["data_ratio"]) & set(full["data_ratio"]))
    est.details.update({"ratio": "–", "best size": "–", "+ classifier mean": "–", "full FT mean": "–"})
    if not shared:
        est.too_few = "no data ratio shared with full fine-tuning"
        return est
    ratio = shared[-1]
    at = d.loc[d["data_ratio"] == ratio]
    best = float(at.groupby("size")[value].mean().idxmax())
    a = at.loc[at["size"] == best, value].to_numpy(float)
    f = full.loc[full["data_ratio"] == ratio, value].to_numpy(float)
    est.n, est.units = len(a) + len(f), min(len(a), len(f))
    est.details.update(
        {
            "ratio": format_ratio(ratio) + "%",
            "best size": format_size(best),
            "+ classifier mean": f"{_fmt(a.mean())} (n={len(a)})",
            "full FT mean": f"{_fmt(f.mean())} (n={len(f)})",
        }
    )
    est.value = float(a.mean() - f.mean())
    if min(len(a), len(f)) < MIN_SEEDS:
        est.too_few = f"{min(len(a), len(f))} seed(s) in a cell (needs {MIN_SEEDS})"
        return est
    est.boot = stats.bootstrap_means(a, n_boot, gen) - stats.bootstrap_means(f, n_boot, gen)
    return est


def _group_of(method: str) -> str:
    return "layer" if method in LAYER_COMPOSITION else "embedding"


def _stratified(
    df: pd.DataFrame,
    strata: Sequence[str],
    value: str,
    n_boot: int,
    gen: np.random.Generator,
    stat: Callable[[np.ndarray, list], np.ndarray],
) -> Estimate:
    """A statistic of per-stratum means; runs resampled within strata."""
    est = _base(df)
    codes = _codes(df, strata)
    if np.bincount(codes).min() < MIN_PAIRS:
        est.too_few = f"a ({', '.join(strata)}) stratum with fewer than {MIN_PAIRS} runs (one run cannot be resampled)"
        return est
    keys = list(df.groupby(list(strata), dropna=False, sort=True).size().index)
    keys = [k if isinstance(k, tuple) else (k,) for k in keys]
    ys = df[value].to_numpy(float)[stats.stratified_indices(codes, n_boot, gen)]
    s = stat(ys @ stats.onehot(codes, len(keys)) / np.bincount(codes, minlength=len(keys)), keys)
    est.value, est.boot = float(s[0]), s[1:]
    est.units = len(df)
    return est


def _layer_vs_embedding(df: pd.DataFrame, value: str, n_boot: int, gen: np.random.Generator) -> Estimate:
    """Mean of layer-method means - mean of embedding-method means (each method weighs the same)."""
    groups = {_group_of(m) for m in df["method"]}
    if groups != {"layer", "embedding"}:
        est = _base(df)
        est.too_few = "a method group without runs"
        return est

    def diff(means: np.ndarray, keys: list) -> np.ndarray:
        is_layer = np.array([k[0] in LAYER_COMPOSITION for k in keys])
        return means[:, is_layer].mean(axis=1) - means[:, ~is_layer].mean(axis=1)

    return _stratified(df, ["method"], value, n_boot, gen, diff)


def _cost_bins(df: pd.DataFrame) -> pd.DataFrame:
    """Runs with a cost, their cost bin and group, in bins holding at least ``MIN_PAIRS`` runs of each group."""
    cost = df["data_size"] * df["trainable_params"]
    d = df.loc[np.isfinite(cost) & (cost > 0)].copy()
    d["group"] = d["method"].map(_group_of)
    d["cost_bin"] = np.floor(np.log10(d["data_size"] * d["trainable_params"]) / COST_BIN_DECADES).astype(int)
    counts = d.groupby(["cost_bin", "group"]).size().unstack("group", fill_value=0)
    shared = counts.index[(counts.reindex(columns=["embedding", "layer"], fill_value=0) >= MIN_PAIRS).all(axis=1)]
    return d.loc[d["cost_bin"].isin(shared)]


def _matched_cost(df: pd.DataFrame, value: str, n_boot: int, gen: np.random.Generator) -> Estimate:
    """Mean over shared cost bins of (layer mean - embedding mean); runs resampled within (bin, group)."""
    m = _cost_bins(df)
    n_bins = int(m["cost_bin"].nunique())
    if n_bins < MIN_SHARED_BINS:
        est = _base(m)
        est.too_few = f"{n_bins} cost bins holding both groups (needs {MIN_SHARED_BINS})"
        return est
    # keys are (cost_bin, group) sorted, so each shared bin has "embedding" then "layer".
    est = _stratified(
        m,
        ["cost_bin", "group"],
        value,
        n_boot,
        gen,
        lambda means, keys: (means[:, 1::2] - means[:, 0::2]).mean(axis=1),
    )
    est.details["shared cost bins"] = n_bins
    return est


# --------------------------------------------------------------------------------------------------------------
# Selections and descriptive tables.
# --------------------------------------------------------------------------------------------------------------
def _method_runs(ok: pd.DataFrame, task: str, method: str) -> pd.DataFrame:
    return ok.loc[(ok["task"] == task) & (ok["method"] == method)]


def _with_full(ok: pd.DataFrame, task: str, method: str) -> pd.DataFrame:
    return ok.loc[(ok["task"] == task) & ok["method"].isin([method, REFERENCE])]


def _peft_runs(ok: pd.DataFrame, task: str, _: str) -> pd.DataFrame:
    return ok.loc[(ok["task"] == task) & ok["method"].isin(PEFT_METHODS)]


def _per_method(task: str, methods: Sequence[str] = PEFT_METHODS) -> tuple[tuple[str, str], ...]:
    return tuple((task, m) for m in methods)


def _pivot(task: str, x: str, fmt: Callable[[float], str], ok: pd.DataFrame, value: str) -> list[str]:
    """Mean metric per method (rows) and x value (columns), over everything else."""
    d = ok.loc[(ok["task"] == task) & ok["method"].isin(PEFT_METHODS)]
    other = "sizes" if x == "data_ratio" else "data ratios"
    head = (
        f"Mean {TASK_METRIC[task]} by {'data ratio' if x == 'data_ratio' else 'size'} (over {other}, both "
        "variants and seeds):\n"
    )
    if d.empty:
        return [head, "_no successful runs_\n"]
    p = d.pivot_table(index="method", columns=x, values=value, aggfunc="mean")
    p = p.reindex([m for m in PEFT_METHODS if m in p.index])
    return [
        head,
        _md_table(["method", *[fmt(c) for c in p.columns]], [[METHOD_LABELS[m], *p.loc[m].tolist()] for m in p.index])
        + "\n",
    ]


def _best_configurations(ok: pd.DataFrame, value: str) -> list[str]:
    out = []
    for task in TASKS:
        d = _peft_runs(ok, task, "")
        body = []
        for method in [m for m in PEFT_METHODS if m in set(ok["method"])]:  # (the study's methods)
            dm = d.loc[d["method"] == method]
            if dm.empty:
                body.append([METHOD_LABELS[method], _group_of(method), 0, math.nan, math.nan, "–"])
                continue
            cells = dm.groupby(["classifier", "size", "data_ratio"])[value].mean()
            clf, size, ratio = cells.idxmax()
            config = f"{format_size(size)}, {format_ratio(ratio)}%" + (", + classifier" if clf else "")
            body.append([METHOD_LABELS[method], _group_of(method), len(dm), dm[value].mean(), cells.max(), config])
        out.append(
            f"{TASK_LABELS[task]}: per method (mean over all runs; best configuration = best cell mean, "
            "descriptive: a maximum carries no verdict)\n"
        )
        out.append(_md_table(["method", "group", "runs", "mean", "best cell", "best configuration"], body) + "\n")
    return out


def _cost_bin_tables(ok: pd.DataFrame, value: str) -> list[str]:
    out = [
        f"Cost = data size × trainable parameters (`trainable_params`, the count during training: prefix-tuning's "
        f"includes its reparametrising MLP), in {COST_BIN_DECADES}-decade bins.\n"
    ]
    for task in TASKS:
        m = _cost_bins(_peft_runs(ok, task, ""))
        if not len(m):
            continue
        g = m.groupby(["cost_bin", "group"])[value].agg(["mean", "count"]).unstack("group")
        body = []
        for b in g.index:
            lo, hi = 10 ** (b * COST_BIN_DECADES), 10 ** ((b + 1) * COST_BIN_DECADES)
            lay, emb = g.loc[b, ("mean", "layer")], g.loc[b, ("mean", "embedding")]
            body.append(
                [
                    f"{lo:.2g}–{hi:.2g}",
                    lay,
                    int(g.loc[b, ("count", "layer")]),
                    emb,
                    int(g.loc[b, ("count", "embedding")]),
                    lay - emb,
                ]
            )
        out.append(f"{TASK_LABELS[task]}: cost bins holding both groups\n")
        out.append(
            _md_table(["cost", "layer mean", "layer runs", "embedding mean", "embedding runs", "diff"], body) + "\n"
        )
    return out


# --------------------------------------------------------------------------------------------------------------
# The claims.
# --------------------------------------------------------------------------------------------------------------
def _trend_statistic(x: str, xname: str, by: Sequence[str]) -> Statistic:
    label = "data ratio" if x == "data_ratio" else "size"
    return Statistic(
        name=f"Spearman rho({label}, metric | {', '.join(by)}, seed)",
        symbol="rho",
        resamples=f"sweeps over {xname} (one per {', '.join(by)} and seed)",
        unit="sweeps",
        compute=partial(_rho, x=x, xname=xname, by=by),
    )


_PAIRED_CLASSIFIER = Statistic(
    name="mean paired difference (+ classifier - plain), matched on (size, data ratio, seed)",
    symbol="mean diff",
    resamples="matched pairs",
    unit="pairs",
    compute=partial(_paired, pairs=_classifier_pairs),
)
_VERSUS_FULL = Statistic(
    name="mean over data ratios of (method's plain mean - full fine-tuning mean)",
    symbol="diff",
    resamples="data ratios (per ratio: method mean over sizes and seeds minus full fine-tuning's mean)",
    unit="data ratios",
    compute=_versus_full,
    seeds_add_units=False,
)
_BETTER = Rule(support=(Test(+1, 0.0),), refute=(Test(-1, 0.0),))
_ABOVE_NULL = Rule(support=(Test(+1),), refute=(Test(-1),))
_BELOW_NULL = Rule(support=(Test(-1),), refute=(Test(+1),))
_RISES = Rule(support=(Test(+1, 0.0),), refute=(Test(-1, NEGLIGIBLE_RHO),))


def _within(margin: float) -> Rule:
    return Rule(support=(Test(+1, -margin), Test(-1, margin)), refute=(Test(-1, -margin), Test(+1, margin)))


_COCO, _VQA = (
    "COCO Caption: data ratio, parameter size and full fine-tuning",
    "VQAv2: data ratio, parameter size and full fine-tuning",
)
_CLASSIFIER = "Tuning the final classifier as well"
_GROUPS = "Layer composition vs embedding composition"
_CIDER, _ACC = MARGIN[COCO.metric], MARGIN[VQA.metric]

CLAIMS: tuple[Claim, ...] = (
    Claim(
        "1a",
        "COCO: CIDEr does not depend on the data ratio",
        "The performance of the tested PEFTs is regardless of the accessible data size.",
        _COCO,
        "COCO runs of each PEFT method, both variants",
        _per_method(COCO.name),
        _method_runs,
        Statistic(
            name="mean CIDEr at the largest minus at the smallest data ratio, within sweeps",
            symbol="diff",
            resamples="sweeps over data ratios (one per size, + classifier and seed)",
            unit="sweeps",
            compute=partial(_end_difference, x="data_ratio", xname="ratios", by=["size", "classifier"]),
        ),
        _within(_CIDER),
        partial(_pivot, COCO.name, "data_ratio", lambda r: format_ratio(r) + "%"),
    ),
    Claim(
        "1b",
        "COCO: parameter size has a non-monotonic effect (an interior optimum)",
        "there exists an optimal fine-tunable parameter choice",
        _COCO,
        "COCO runs of each PEFT method, both variants",
        _per_method(COCO.name),
        _method_runs,
        Statistic(
            name="delta = best interior size mean - better end-size mean, within sweeps",
            symbol="delta",
            resamples="sweeps over sizes (one per data ratio, + classifier and seed); the p-value "
            "shuffles sizes within each sweep",
            unit="sweeps",
            compute=_interior_optimum,
        ),
        _ABOVE_NULL,
        partial(_pivot, COCO.name, "size", format_size),
    ),
    Claim(
        "1c",
        "COCO: every PEFT method but prompt-tuning at least matches full fine-tuning",
        "the tested PEFTs always outperform the full fine-tuning except for the prompt-tuning on MSCOCO Caption",
        _COCO,
        "plain COCO runs of each PEFT method but prompt-tuning, and full fine-tuning",
        _per_method(COCO.name, [m for m in PEFT_METHODS if m != PROMPT.name]),
        _with_full,
        _VERSUS_FULL,
        Rule(support=(Test(+1, -_CIDER),), refute=(Test(-1, -_CIDER),)),
    ),
    Claim(
        "1d",
        "COCO: the largest sizes over-fit (the validation score falls after its best step)",
        "too many fine-tunable parameters would lead to over-fitting",
        _COCO,
        "COCO runs of each PEFT method at its smallest and largest size, validation columns (best_val, final_val)",
        _per_method(COCO.name),
        _method_runs,
        Statistic(
            name="mean paired difference of the late drop (best_val - final_val), largest minus smallest size, "
            "matched on (data ratio, + classifier, seed)",
            symbol="mean diff",
            resamples="matched pairs",
            unit="pairs",
            compute=partial(_paired, pairs=_overfit_pairs),
        ),
        _ABOVE_NULL,
    ),
    Claim(
        "2a",
        "VQAv2: accuracy rises with the data ratio",
        "The performance of the tested PEFTs is positively correlated to the accessible training data",
        _VQA,
        "VQAv2 runs of each PEFT method, both variants",
        _per_method(VQA.name),
        _method_runs,
        _trend_statistic("data_ratio", "ratios", ["size", "classifier"]),
        _RISES,
        partial(_pivot, VQA.name, "data_ratio", lambda r: format_ratio(r) + "%"),
    ),
    Claim(
        "2b",
        "VQAv2: accuracy rises with the parameter size",
        "the fine-tunable parameter size is positively related to the performance",
        _VQA,
        "VQAv2 runs of each PEFT method, both variants",
        _per_method(VQA.name),
        _method_runs,
        _trend_statistic("size", "sizes", ["data_ratio", "classifier"]),
        _RISES,
        partial(_pivot, VQA.name, "size", format_size),
    ),
    Claim(
        "2c",
        "VQAv2: embedding composition (prompt, prefix) lags far behind full fine-tuning",
        "the embedding composition PEFTs lag far from full finetuning",
        _VQA,
        "plain VQAv2 runs of prompt- and prefix-tuning, and full fine-tuning",
        _per_method(VQA.name, EMBEDDING_COMPOSITION),
        _with_full,
        _VERSUS_FULL,
        Rule(support=(Test(-1, -LARGE_GAP["accuracy"]),), refute=(Test(+1, -LARGE_GAP["accuracy"]),)),
    ),
    Claim(
        "2d",
        "VQAv2: layer composition (LoRA, adapters) is comparable to full fine-tuning",
        "the layer embedding composition PEFTs achieve comparable performance to the full fine-tuning",
        _VQA,
        "plain VQAv2 runs of LoRA and both adapters, and full fine-tuning",
        _per_method(VQA.name, LAYER_COMPOSITION),
        _with_full,
        _VERSUS_FULL,
        _within(_ACC),
    ),
    Claim(
        "3a",
        "COCO: + classifier helps prompt-tuning",
        "simultaneously fine-tuning the final classifier only improves the performance of prompt-tuning",
        _CLASSIFIER,
        "COCO prompt-tuning runs, plain and + classifier",
        _per_method(COCO.name, [PROMPT.name]),
        _method_runs,
        _PAIRED_CLASSIFIER,
        _ABOVE_NULL,
    ),
    Claim(
        "3b",
        "COCO: + classifier hurts layer composition (LoRA, serial and parallel adapter)",
        "and hurts that of the layer composition",
        _CLASSIFIER,
        "COCO runs of LoRA and both adapters, plain and + classifier",
        _per_method(COCO.name, LAYER_COMPOSITION),
        _method_runs,
        _PAIRED_CLASSIFIER,
        _BELOW_NULL,
    ),
    Claim(
        "3c",
        "VQAv2: + classifier helps every PEFT method",
        "simultaneously fine-tuning the final classifier of the model could further boost the performance",
        _CLASSIFIER,
        "VQAv2 runs of each PEFT method, plain and + classifier",
        _per_method(VQA.name),
        _method_runs,
        _PAIRED_CLASSIFIER,
        _ABOVE_NULL,
    ),
    Claim(
        "3d",
        "VQAv2: with + classifier, PEFT beats full fine-tuning",
        "and even achieve superior performance than full fine-tuning",
        _CLASSIFIER,
        "VQAv2 + classifier runs of each PEFT method at its best size and full fine-tuning, at the largest shared "
        "data ratio",
        _per_method(VQA.name),
        _with_full,
        Statistic(
            name="best + classifier size mean - full fine-tuning mean (largest shared data ratio)",
            symbol="diff",
            resamples="seeds within each of the two cells",
            unit="seeds per cell",
            compute=_best_classifier_vs_full,
            seeds_add_units=False,
        ),
        _BETTER,
    ),
    Claim(
        "4a",
        "Layer composition beats embedding composition (mean over configurations)",
        "Layer composition PEFTs achieve better performance than embedding composition",
        _GROUPS,
        "every PEFT run of the task",
        tuple((t, LAYER_VS_EMBEDDING) for t in TASKS),
        _peft_runs,
        Statistic(
            name="mean of layer-method means - mean of embedding-method means",
            symbol="diff",
            resamples="runs within each method",
            unit="runs",
            compute=_layer_vs_embedding,
        ),
        _BETTER,
        _best_configurations,
    ),
    Claim(
        "4b",
        "Layer composition beats embedding composition at equal computation cost",
        "the layer composition offers superior training efficiency and performance on the two downstream VL tasks",
        _GROUPS,
        "every PEFT run of the task with a cost (data size × trainable parameters)",
        tuple((t, LAYER_VS_EMBEDDING) for t in TASKS),
        _peft_runs,
        Statistic(
            name="mean over shared cost bins of (layer mean - embedding mean)",
            symbol="diff",
            resamples="runs within each (cost bin, group)",
            unit="runs",
            compute=_matched_cost,
        ),
        _BETTER,
        _cost_bin_tables,
    ),
)


# --------------------------------------------------------------------------------------------------------------
# Evaluation: one generic function for every claim.
# --------------------------------------------------------------------------------------------------------------
def _plan(claim: Claim, est: Estimate, family: int) -> str:
    """What would decide an inconclusive component."""
    if est.too_few:
        return f"more runs: {est.too_few}"
    unit = claim.statistic.unit
    options = []
    for verdict, tests, joint in ((SUPPORTED, claim.rule.support, True), (NOT_SUPPORTED, claim.rule.refute, False)):
        found = [t.distance(est) for t in tests]
        if joint:  # every test must hold: the nearest bound binds
            found = [min(found, key=lambda ds: ds[0])] if all(np.isfinite(d) for d, _ in found) else []
        for dist, spread in found:
            need = stats.units_to_decide(dist, spread, est.units, ALPHA / max(family, 1))
            if need is not None:
                options.append((need, verdict))
    if not options:
        return "no number of runs: the estimate sits on the decision bound (or nothing varies)"
    need, verdict = min(options)
    text = f"{verdict} at about {need} {unit} (now {est.units}), if effect and spread hold"
    if claim.statistic.seeds_add_units and est.seeds:
        text += f": about {math.ceil(need * est.seeds / max(est.units, 1))} seeds"
    return text


def evaluate(claim: Claim, ok: pd.DataFrame, value: str, n_boot: int, seed: int) -> list[dict]:
    """The component rows of one claim and its "all" row."""
    ests = [
        claim.statistic.compute(claim.select(ok, task, label), value, n_boot, stats.rng(seed, claim.id, task, label))
        for task, label in claim.components
    ]
    testable = [e.too_few is None and np.isfinite(e.value) for e in ests]
    p_sup = stats.holm([claim.rule.p_support(e) if t else math.nan for e, t in zip(ests, testable, strict=True)])
    p_ref = stats.holm([claim.rule.p_refute(e) if t else math.nan for e, t in zip(ests, testable, strict=True)])
    family = int(sum(testable))
    rows = []
    for (task, label), est, ps, pr in zip(claim.components, ests, p_sup, p_ref, strict=True):
        verdict = SUPPORTED if ps < ALPHA else NOT_SUPPORTED if pr < ALPHA else INCONCLUSIVE
        lo, hi = stats.percentile_interval(est.boot)
        rows.append(
            {
                "claim": claim.id,
                "task": task,
                "method": label,
                "statistic": claim.statistic.name,
                "value": est.value,
                "ci_low": lo,
                "ci_high": hi,
                "p_support": ps,
                "p_refute": pr,
                "verdict": verdict,
                "n": est.n,
                "units": est.units,
                "rule": claim.rule.text(claim.statistic.symbol),
                "decide": _plan(claim, est, family) if verdict == INCONCLUSIVE else "",
                "details": est.details,
                "seeds": est.seeds,
            }
        )
    verdicts = [r["verdict"] for r in rows]
    combined = (
        SUPPORTED
        if verdicts and all(v == SUPPORTED for v in verdicts)
        else NOT_SUPPORTED
        if NOT_SUPPORTED in verdicts
        else INCONCLUSIVE
    )
    tasks = {task for task, _ in claim.components}
    rows.append(
        {
            "claim": claim.id,
            "task": tasks.pop() if len(tasks) == 1 else "both",
            "method": "all",
            "statistic": f"components supported (of {len(rows)})",
            "value": float(verdicts.count(SUPPORTED)),
            "ci_low": math.nan,
            "ci_high": math.nan,
            "p_support": math.nan,
            "p_refute": math.nan,
            "verdict": combined,
            "n": len(rows),
            "units": family,
            "decide": "",
            "details": {},
            "seeds": 0,
            "rule": "supported if every component is supported; not supported if any is not supported; else "
            "inconclusive",
        }
    )
    return rows


def in_study(claims: Sequence[Claim], runs: pd.DataFrame) -> list[Claim]:
    """``claims`` with their per-method components cut to the methods the runs table holds (any status): a study
    reports on the methods of its own grid, not on every method described (the paper's grid gets no rows for the
    methods beyond the paper, a study of those none for the paper's). A claim may be left with no component. The
    claims are the paper's findings, worded for its methods: where the rows include a method beyond the paper, the
    selection says which methods of this study's grid they are."""
    present = set(runs["method"])
    out = []
    for c in claims:
        kept = tuple((t, m) for t, m in c.components if m not in METHODS or m in present)
        methods = list(dict.fromkeys(m for _, m in kept if m in METHODS))
        selection = c.selection
        if kept != c.components and not all(method_info(m).in_paper for m in methods):
            selection += f" (in this study's grid: {', '.join(METHOD_LABELS[m] for m in methods)})"
        out.append(dataclasses.replace(c, components=kept, selection=selection))
    return out


def _prepare(runs: pd.DataFrame, value: str) -> pd.DataFrame:
    if value not in VALUE_COLUMNS:
        raise ValueError(f"value column must be one of {', '.join(VALUE_COLUMNS)}, got {value!r}")
    ok = successful(validate_runs(runs))
    return ok.loc[np.isfinite(ok[value])]


def claims_table(
    runs: pd.DataFrame,
    n_boot: int = 1000,
    seed: int = 0,
    value: str = DEFAULT_VALUE,
    claims: Sequence[Claim] = CLAIMS,
) -> pd.DataFrame:
    """One row per (claim, task, component) with the statistic, its interval, p-values and the verdict.

    Args:
        runs: Runs table (all statuses; only successful runs are used).
        n_boot: Bootstrap resamples (and permutations) per statistic.
        seed: Seed of the resampling.
        value: Metric column (``style.VALUE_LABELS``; ``paper_metric``, the paper's number, by default).
        claims: The claims to test (``CLAIMS`` by default).

    Returns:
        Columns ``TABLE_COLUMNS``; ``method == "all"`` rows combine a claim's components.
    """
    ok = _prepare(runs, value)
    rows = [r for c in in_study(claims, validate_runs(runs)) for r in evaluate(c, ok, value, n_boot, seed)]
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
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "–"
    return f"[{lo:.{digits}g}, {hi:.{digits}g}]"


def _label(task: str, component: str) -> str:
    return METHOD_LABELS.get(component, TASK_LABELS.get(task, task) if component == LAYER_VS_EMBEDDING else component)


def _render_claim(claim: Claim, rows: list[dict], ok: pd.DataFrame, value: str) -> list[str]:
    """A claim's section: sentence, statistic, rule, component table, what would decide it, descriptive tables."""
    comps, combined = rows[:-1], rows[-1]
    stat = claim.statistic
    seeds = max((r["seeds"] for r in comps), default=0)
    resamples = stat.resamples + (" (one seed: training noise between seeds is not resampled)" if seeds == 1 else "")
    out = [
        f"### {claim.id}. {claim.finding} — **{combined['verdict']}**\n",
        f"> {claim.quote}\n",
        f"Runs: {claim.selection}. Statistic: {stat.name}. Interval: 95% percentile bootstrap over {resamples}. "
        f"Rule: {combined['rule'] if not comps else comps[0]['rule']}; Holm family: the {combined['units']} "
        f"component(s) below that could be tested.\n",
    ]
    detail_keys = list(dict.fromkeys(k for r in comps for k in r["details"]))
    headers = [
        "component",
        "runs",
        stat.unit,
        stat.symbol,
        "95% CI",
        "p support (Holm)",
        "p refute (Holm)",
        "verdict",
        *detail_keys,
    ]
    body = [
        [
            _label(r["task"], r["method"]),
            r["n"],
            r["units"],
            r["value"],
            _ci_text(r["ci_low"], r["ci_high"]),
            r["p_support"],
            r["p_refute"],
            r["verdict"],
            *[r["details"].get(k, "–") for k in detail_keys],
        ]
        for r in comps
    ]
    out.append(_md_table(headers, body) + "\n")
    undecided = [r for r in comps if r["decide"]]
    if undecided:
        out.append(
            "What would decide it: "
            + "; ".join(f"{_label(r['task'], r['method'])}: {r['decide']}" for r in undecided)
            + ".\n"
        )
    if claim.describe is not None:
        out += claim.describe(ok, value)
    return out


def _header(
    all_runs: pd.DataFrame, ok: pd.DataFrame, bad: pd.DataFrame, value: str, n_boot: int, seed: int
) -> list[str]:
    """Title and the paragraph on what was used."""
    return [
        f"# Claims report (metric: `{value}`)\n",
        provenance_section(all_runs),
        f"{len(all_runs)} runs in the table, {len(ok)} successful and used, {len(bad)} not successful (listed at the "
        f"end). Metric column: `{value}` ({VALUE_LABELS[value]}). Intervals: 95% percentile bootstrap, "
        f"{n_boot} resamples (and as many permutations), seed {seed}. Verdicts: Holm-adjusted one-sided tests at "
        f"{ALPHA:g} across each claim's components; each claim prints its rule. Method notes: the docstring of "
        "`vlpeft.report`.\n",
    ]


def provenance_section(runs: pd.DataFrame) -> str:
    """What the report is of: study, data source, commits and config digest; a synthetic study says it plainly."""
    info = table_provenance(runs)
    commits = ", ".join(f"`{c}`" for c in info["commits"]) or "unknown"
    text = (
        f"Study `{info['study']}`, {info['data_source']} data, config digest `{info['study_digest']}`, "
        f"commit(s) {commits}.\n"
    )
    if info["data_source"] == "synthetic":
        text = f"**This is a {SYNTHETIC_NOTE}.**\n\n" + text
    return text


def claims_report(
    runs: pd.DataFrame,
    baseline: pd.DataFrame | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    value: str = DEFAULT_VALUE,
    claims: Sequence[Claim] = CLAIMS,
) -> str:
    """The markdown claims report: per finding, the statistic, the numbers behind it and a verdict with its rule.

    Args:
        runs: Runs table (all statuses; non-success runs are listed at the end).
        baseline: Optional untuned-model scores (task, metric, split, value), listed for reference.
        n_boot: Bootstrap resamples (and permutations) per statistic.
        seed: Seed of the resampling.
        value: Metric column (``style.VALUE_LABELS``; ``paper_metric``, the paper's number, by default).
        claims: The claims to test and render, in order (``CLAIMS`` by default).

    Returns:
        Markdown text.
    """
    all_runs = validate_runs(runs)
    ok = _prepare(all_runs, value)
    bad = non_success(all_runs)
    evaluated = [(c, evaluate(c, ok, value, n_boot, seed)) for c in in_study(claims, all_runs)]
    out = _header(all_runs, ok, bad, value, n_boot, seed)
    out.append("## Summary\n")
    summary = [
        [c.id, c.finding, f"{int(rows[-1]['value'])}/{rows[-1]['n']} supported", rows[-1]["verdict"]]
        for c, rows in evaluated
    ]
    out.append(_md_table(["claim", "finding", "components", "verdict"], summary) + "\n")
    group = None
    for c, rows in evaluated:
        if c.group != group:
            group = c.group
            out.append(f"## {group}\n")
        out += _render_claim(c, rows, ok, value)

    if baseline is not None and len(baseline):
        out.append("## Pre-trained model without tuning (reference)\n")
        body = []
        for r in baseline.itertuples():
            best = ok.loc[ok["task"] == r.task, value].max() if r.task in TASKS else math.nan
            body.append([TASK_LABELS.get(r.task, r.task), r.metric, r.split, r.value, best])
        out.append(_md_table(["task", "metric", "split", "untuned", f"best tuned run ({value})"], body) + "\n")
    out.append(f"## Runs not used ({len(bad)})\n")
    if len(bad):
        counts = bad["status"].value_counts()
        out.append("By status: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + ".\n")
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
        out.append(
            _md_table(["run_id", "task", "method", "+ classifier", "size", "ratio", "seed", "status"], body) + "\n"
        )
    else:
        out.append("None: every run succeeded.\n")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m vlpeft.report --runs runs.csv [--baseline baseline.csv] [--out report.md]
    [--html report.html]``."""
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.splitlines()[0], epilog="The columns of the tables: results/README.md."
    )
    parser.add_argument("--runs", required=True, type=Path, help="runs.csv (one row per run)")
    parser.add_argument(
        "--baseline", type=Path, help="baseline.csv (the untuned model's scores, quoted in the report)"
    )
    parser.add_argument("--out", type=Path, help="markdown file (stdout if not given)")
    parser.add_argument(
        "--html", type=Path, help="also write the report as an HTML page (what Snakemake's --report shows)"
    )
    parser.add_argument(
        "--n-boot", type=_positive_int, default=1000, help="bootstrap resamples per interval (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default: %(default)s)")
    parser.add_argument(
        "--metric",
        "--value",
        dest="metric",
        default=DEFAULT_VALUE,
        choices=VALUE_COLUMNS,
        help="runs.csv column the claims are tested on (default: paper_metric, the paper's reported "
        "number; test_at_best_val: selection-honest)",
    )
    args = parser.parse_args(argv)
    text = claims_report(load_runs(args.runs), load_baseline(args.baseline), args.n_boot, args.seed, args.metric)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    else:
        print(text)
    if args.html:
        from vlpeft.htmlpage import markdown_page

        args.html.parent.mkdir(parents=True, exist_ok=True)
        args.html.write_text(markdown_page(text, "Claims report"))
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


PROG = "python -m vlpeft.report"

if __name__ == "__main__":
    raise SystemExit(run_cli(main, PROG))
