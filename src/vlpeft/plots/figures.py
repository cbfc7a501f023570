"""The paper's figures, regenerated from the result tables alone (no data, checkpoints or GPU needed).

- :func:`fig_task_grid` -- Fig. 3 (COCO Caption, CIDEr) and Fig. 4 (VQAv2, accuracy): per PEFT method, the metric
  against data ratio (one line per size) and against parameter size (one line per data ratio).
- :func:`fig_cost` -- Fig. 5: metric against computation cost = data size x trainable parameters;
  :func:`fig_cost_gpu_hours` -- the same against measured training hours.
- :func:`fig_val_curves` -- Figs. 6-10: the curves of one method over training (COCO).

Every function takes DataFrames (see :mod:`vlpeft.plots.tables`) and returns a matplotlib Figure; none computes
anything beyond grouping, means and error bars. A cell is one (method, "+ classifier", size, data ratio)
configuration; with more than one seed it is drawn as mean +/- standard deviation, with one seed as a plain point,
and a cell with no successful run leaves a gap. Lines that carry data have ``gid == "series"`` and reference lines
``gid == "reference"`` so tests (and readers of the code) can tell them apart from error-bar caps.

Figs. 3-5 draw one metric column of the runs table, ``paper_metric`` (the paper's reported number) unless another
is asked for (``test_at_best_val`` redraws them selection-honestly); each figure's title names the column.

Command line (the reviewers' path)::

    python -m vlpeft.plots.figures --runs runs.csv [--curves curves.csv] [--baseline baseline.csv] --out DIR \
        [--metric paper_metric|test_at_best_val|best_val|final_val]
"""

from __future__ import annotations

from vlpeft.console import announce_main
from vlpeft.console import run as run_cli

announce_main(__name__, "python -m vlpeft.plots.figures", "starting (loading pandas and matplotlib)")

import argparse
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator

from vlpeft.methods.registry import METHOD_LABELS, METHOD_MARKERS, METHODS, PEFT_METHODS, REFERENCE, SIZE_LABELS
from vlpeft.plots import style
from vlpeft.plots.registry import FigureSpec, curve_task, figure, figure_table
from vlpeft.provenance import describe, table_provenance
from vlpeft.plots.style import (
    BASELINE_COLOR,
    BASELINE_LABEL,
    BASELINE_LINESTYLE,
    DEFAULT_VALUE,
    FULL_COLOR,
    FULL_REFERENCE_LINESTYLE,
    FULL_WIDTH,
    format_ratio,
    format_size,
    level_marker,
    metric_label,
    shades,
    style_context,
    value_label,
    variant_style,
)
from vlpeft.tasks import PAPER_SPLIT, TASK_LABELS, TASK_METRIC, TASKS
from vlpeft.plots.tables import (
    VALUE_COLUMNS,
    baseline_value,
    load_baseline,
    load_curves,
    load_runs,
    successful,
    validate_curves,
    validate_runs,
)

# Named explicitly: under `python -m` __name__ is "__main__", outside the package logger configured by main().
log = logging.getLogger("vlpeft.plots.figures")

PROG = "python -m vlpeft.plots.figures"
SERIES_GID = "series"
REFERENCE_GID = "reference"
_CELL_KEYS = ["task", "method", "classifier", "size", "data_ratio"]


def _subplots(nrows: int, ncols: int, figsize: tuple[float, float], **kwargs: object) -> tuple[Figure, np.ndarray]:
    """A constrained-layout grid built without pyplot: no GUI backend and no global figure registry to leak into."""
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def series_lines(ax: Axes) -> list[Line2D]:
    """The data-carrying lines of an axes (not error-bar caps, reference lines or legend proxies)."""
    return [line for line in ax.get_lines() if line.get_gid() == SERIES_GID]


def _split_for(value: str, task: str) -> str:
    """The split a metric column was measured on (the untuned model's reference line is drawn for that split)."""
    if value == "paper_metric":
        return PAPER_SPLIT[task]
    return "test" if value.startswith("test") else "val"


def attempted(runs: pd.DataFrame, methods: Sequence[str] = METHODS) -> list[str]:
    """``methods`` that the runs table holds (any status), in the registry's order: a study draws the methods of its
    own grid, not every method described (the paper's grid has no rows for the methods beyond the paper, a study of
    those has none for the paper's)."""
    present = set(runs["method"])
    return [m for m in methods if m in present]


def _prepare_runs(runs: pd.DataFrame, value: str) -> pd.DataFrame:
    if value not in VALUE_COLUMNS:
        raise ValueError(f"value column must be one of {', '.join(VALUE_COLUMNS)}, got {value!r}")
    return validate_runs(runs)


def _cells(runs: pd.DataFrame, value: str, extra: dict[str, pd.Series] | None = None) -> pd.DataFrame:
    """Mean, std and seed count of ``value`` per cell; ``extra`` columns (e.g. cost) are averaged too."""
    df = runs.copy()
    aggs = {"mean": (value, "mean"), "std": (value, "std"), "n": (value, "count")}
    for name, col in (extra or {}).items():
        df[name] = col
        aggs[name] = (name, "mean")
    return df.groupby(_CELL_KEYS, dropna=False).agg(**aggs).reset_index()


def _same(col: pd.Series, v: float) -> pd.Series:
    """Equality that treats NaN as a value (full fine-tuning has no size)."""
    return col.isna() if isinstance(v, float) and math.isnan(v) else col == v


def _draw_series(
    ax: Axes,
    x: Sequence[float],
    mean: pd.Series,
    std: pd.Series,
    n: pd.Series,
    kwargs: dict[str, object],
    label: str,
) -> Line2D:
    """One line of cell means; error bars only where a cell has more than one seed."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(mean, dtype=float)
    (line,) = ax.plot(x, y, gid=SERIES_GID, label=label, **kwargs)
    multi = np.asarray(n.fillna(0), dtype=float) > 1
    if multi.any():
        ax.errorbar(
            x[multi],
            y[multi],
            yerr=np.asarray(std, dtype=float)[multi],
            fmt="none",
            ecolor=kwargs.get("color"),
            elinewidth=0.6,
        )
    return line


def _draw_baseline(ax: Axes, base: tuple[float, str] | None) -> None:
    if base is not None:
        ax.axhline(base[0], color=BASELINE_COLOR, ls=BASELINE_LINESTYLE, lw=1.0, gid=REFERENCE_GID, zorder=1)


def _log_ticks(ax: Axes, values: Sequence[float], fmt: Callable[[float], str], base: float = 10) -> None:
    """Log x axis with a tick at every value; labels that would collide are left off (the tick stays)."""
    ax.set_xscale("log", base=base)
    ax.xaxis.set_major_locator(FixedLocator(list(values)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([fmt(v) if keep else "" for v, keep in zip(values, _spaced(values, base))])


def _spaced(values: Sequence[float], base: float) -> list[bool]:
    """Which tick labels to keep so that neighbours are at least 6 % of the log span apart.

    Round values (powers of the base, e.g. 1 %, 10 %, 100 %) are placed first, so a crowded pair such as
    8 % / 10 % keeps the 10.
    """
    logs = np.log(np.asarray(values, dtype=float)) / np.log(base)
    span = float(logs.max() - logs.min()) if len(logs) else 0.0
    gap = 0.06 * span
    pct = np.log10(np.asarray(values, dtype=float) * (100.0 if base == 10 else 1.0))
    round_first = sorted(range(len(values)), key=lambda i: (not np.isclose(pct[i], round(pct[i])), i))
    kept: list[int] = []
    for i in round_first:
        if all(abs(logs[i] - logs[j]) >= gap for j in kept):
            kept.append(i)
    return [i in kept for i in range(len(values))]


def _no_data(ax: Axes, text: str = "no successful runs") -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")


def _full_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """Full fine-tuning's cells; it trains the classifier anyway, so the plain variant is preferred if both exist."""
    full = cells.loc[cells["method"] == REFERENCE]
    if (~full["classifier"]).any():
        full = full.loc[~full["classifier"]]
    return full.groupby("data_ratio", as_index=True).agg(mean=("mean", "mean"), std=("std", "mean"), n=("n", "sum"))


def fig_task_grid(
    runs: pd.DataFrame,
    task: str,
    baseline: pd.DataFrame | None = None,
    value: str = DEFAULT_VALUE,
) -> Figure:
    """Fig. 3 (COCO Caption) / Fig. 4 (VQAv2): one row per PEFT method of the runs table (the paper's five) x 2 panels.

    Left: metric vs data ratio (log x), one line per parameter size, full fine-tuning vs ratio as a black line.
    Right: metric vs parameter size (log2 x), one line per data ratio, full fine-tuning at its largest ratio as a
    black dash-dot line. Line shades run light (small) to dark (large) within the method's colour; "+ classifier"
    variants are dashed with hollow markers. The untuned model is a dotted grey line where a baseline is given.

    Args:
        runs: Runs table (all statuses; only successful runs are drawn).
        task: A task of ``vlpeft.tasks``.
        baseline: Optional baseline table.
        value: Metric column to draw (``style.VALUE_LABELS``); ``paper_metric``, the paper's number, by default.

    Returns:
        The figure (full page width).

    Raises:
        ValueError: Unknown task, or no successful run of that task.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    all_runs = _prepare_runs(runs, value)
    task_all = all_runs.loc[all_runs["task"] == task]
    ok = successful(task_all)
    if ok.empty:
        raise ValueError(f"no successful {task} runs: nothing to plot")
    cells = _cells(ok, value)
    full = _full_cells(cells)
    base = baseline_value(baseline, task, _split_for(value, task))
    ylabel = metric_label(TASK_METRIC[task])

    # (a grid of full fine-tuning alone: every described method's row, each saying "no data", as the reference line
    # still has panels to go in)
    methods = attempted(all_runs, PEFT_METHODS) or list(PEFT_METHODS)
    with style_context():
        # 9.3 in for the paper's five rows; the same height per row for another number of methods.
        fig, axes = _subplots(len(methods), 2, (FULL_WIDTH, 9.3 * len(methods) / 5), sharey="row")
        for row, method in enumerate(methods):
            ax_r, ax_s = axes[row]
            m_all = task_all.loc[task_all["method"] == method]
            # The grid is every value that was attempted, so failed cells show as gaps rather than vanish.
            ratios = sorted(m_all["data_ratio"].unique())
            sizes = sorted(m_all["size"].dropna().unique())
            m_cells = cells.loc[cells["method"] == method]
            ax_r.set_title(f"{METHOD_LABELS[method]}: vs data ratio", loc="left")
            ax_s.set_title(f"{METHOD_LABELS[method]}: vs parameter size", loc="left")
            ax_r.set_ylabel(ylabel)
            ax_r.set_xlabel("data ratio (%)")
            ax_s.set_xlabel(SIZE_LABELS[method])
            if m_cells.empty:
                _no_data(ax_r)
                _no_data(ax_s)
            size_colors = shades(method, len(sizes))
            ratio_colors = shades(method, len(ratios))
            # One marker per level as well as one shade: lines of two sizes (or ratios) that coincide stay apart.
            for i, (size, color) in enumerate(zip(sizes, size_colors)):
                for clf in (False, True):
                    sub = m_cells.loc[(m_cells["size"] == size) & (m_cells["classifier"] == clf)]
                    if sub.empty:
                        continue
                    s = sub.set_index("data_ratio").reindex(ratios)
                    label = format_size(size) + (" + cls" if clf else "")
                    kw = variant_style(method, clf, color, level_marker(i))
                    _draw_series(ax_r, ratios, s["mean"], s["std"], s["n"], kw, label)
            for i, (ratio, color) in enumerate(zip(ratios, ratio_colors)):
                for clf in (False, True):
                    sub = m_cells.loc[(m_cells["data_ratio"] == ratio) & (m_cells["classifier"] == clf)]
                    if sub.empty:
                        continue
                    s = sub.set_index("size").reindex(sizes)
                    label = format_ratio(ratio) + "%" + (" + cls" if clf else "")
                    kw = variant_style(method, clf, color, level_marker(i))
                    _draw_series(ax_s, sizes, s["mean"], s["std"], s["n"], kw, label)
            if len(full):
                f = full.reindex(ratios) if ratios else full
                fx = list(f.index)
                _draw_full_line(ax_r, fx, f)
                top = full.index.max()
                ax_s.axhline(
                    full.loc[top, "mean"], color=FULL_COLOR, ls=FULL_REFERENCE_LINESTYLE, lw=1.0, gid=REFERENCE_GID
                )
            _draw_baseline(ax_r, base)
            _draw_baseline(ax_s, base)
            if ratios:
                _log_ticks(ax_r, ratios, format_ratio)
            if sizes:
                _log_ticks(ax_s, sizes, format_size, base=2)
            ax_s.tick_params(labelleft=True)
            _level_legend(ax_r, method, sizes, size_colors, format_size, SIZE_LABELS[method])
            _level_legend(ax_s, method, ratios, ratio_colors, lambda r: format_ratio(r) + "%", "data ratio")
        fig.legend(
            handles=_style_handles(base is not None, full_ref=len(full) > 0, full_label=_full_ref_label(full)),
            loc="outside lower center",
            ncol=5,
        )
        fig.suptitle(f"{TASK_LABELS[task]}: {ylabel} ({value_label(value, task)})")
    return fig


def _draw_full_line(ax: Axes, x: Sequence[float], full: pd.DataFrame) -> None:
    kwargs = {"color": FULL_COLOR, "marker": METHOD_MARKERS[REFERENCE], "linestyle": "-", "markersize": 4.5}
    line = _draw_series(ax, x, full["mean"], full["std"], full["n"], kwargs, METHOD_LABELS[REFERENCE])
    # The full fine-tuning line is a reference, not one of the method's series.
    line.set_gid(REFERENCE_GID)
    line.set_zorder(1.5)


def _full_ref_label(full: pd.DataFrame) -> str:
    if len(full) == 0:
        return ""
    return f"Full fine-tuning at {format_ratio(full.index.max())}% data (vs-size panels)"


def _level_legend(
    ax: Axes, method: str, levels: Sequence[float], colors: Sequence[str], fmt: Callable[[float], str], title: str
) -> None:
    if not levels:
        return
    handles = [
        Line2D([], [], color=c, marker=level_marker(i), linestyle="-", label=fmt(v))
        for i, (v, c) in enumerate(zip(levels, colors))
    ]
    ax.legend(
        handles=handles,
        title=title,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.02),
        fontsize=5.5,
        title_fontsize=5.5,
        handlelength=1.4,
        labelspacing=0.15,
        borderaxespad=0.0,
    )


def _style_handles(has_baseline: bool, full_ref: bool = True, full_label: str = "") -> list[Line2D]:
    grey = "0.35"
    handles = [
        Line2D([], [], color=grey, marker="o", linestyle="-", label="PEFT method"),
        Line2D([], [], color=grey, marker="o", markerfacecolor="white", linestyle="--", label="+ classifier"),
        Line2D(
            [], [], color=FULL_COLOR, marker=METHOD_MARKERS[REFERENCE], markersize=4.5, label=METHOD_LABELS[REFERENCE]
        ),
    ]
    if full_ref:
        handles.append(Line2D([], [], color=FULL_COLOR, linestyle=FULL_REFERENCE_LINESTYLE, label=full_label))
    if has_baseline:
        handles.append(Line2D([], [], color=BASELINE_COLOR, linestyle=BASELINE_LINESTYLE, label=BASELINE_LABEL))
    return handles


def _method_handles(methods: Sequence[str], has_baseline: bool) -> list[Line2D]:
    handles = [Line2D([], [], linestyle="none", label=METHOD_LABELS[m], **_marker_style(m, False)) for m in methods]
    handles.append(
        Line2D([], [], linestyle="none", color="0.35", marker="o", markerfacecolor="white", label="+ classifier")
    )
    if has_baseline:
        handles.append(Line2D([], [], color=BASELINE_COLOR, linestyle=BASELINE_LINESTYLE, label=BASELINE_LABEL))
    return handles


def _marker_style(method: str, classifier: bool) -> dict[str, object]:
    kw = variant_style(method, classifier)
    kw.pop("linestyle")
    kw["markersize"] = 4.5 if method == REFERENCE else 3.5
    return kw


def _cost_figure(
    runs: pd.DataFrame,
    x_of: Callable[[pd.DataFrame], pd.Series],
    xlabel: str,
    baseline: pd.DataFrame | None,
    value: str,
    plain_ticks: bool = False,
) -> Figure:
    """Both tasks side by side: cell means against an x computed per run (averaged over seeds), log x."""
    all_runs = _prepare_runs(runs, value)
    ok = successful(all_runs)
    if ok.empty:
        raise ValueError("no successful runs: nothing to plot")
    x = x_of(ok)
    keep = np.isfinite(x) & (x > 0)
    if (~keep).any():
        # A log axis cannot show zero or missing cost; say which runs are left out rather than drop them silently.
        log.warning(
            "%d run(s) without a positive x value are not drawn: %s", (~keep).sum(), list(ok.loc[~keep, "run_id"])
        )
    ok = ok.loc[keep]
    cells = _cells(ok, value, {"x": x.loc[keep]})
    with style_context():
        fig, axes = _subplots(1, len(TASKS), (FULL_WIDTH, 2.9))
        has_base = False
        for ax, task in zip(axes[0], TASKS):
            ax.set_title(TASK_LABELS[task], loc="left")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(metric_label(TASK_METRIC[task]))
            ax.set_xscale("log")
            if plain_ticks:
                # Training hours often span less than a decade: label 1-2-5 steps as plain numbers, not 10^k.
                ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
                ax.xaxis.set_minor_formatter(NullFormatter())
            t_cells = cells.loc[cells["task"] == task]
            if t_cells.empty:
                _no_data(ax)
            for method in METHODS:
                for clf in (False, True):
                    sub = t_cells.loc[(t_cells["method"] == method) & (t_cells["classifier"] == clf)]
                    if sub.empty:
                        continue
                    sub = sub.sort_values("x")
                    kw = _marker_style(method, clf)
                    kw["linestyle"] = "none"
                    label = style.method_label(method, clf)
                    _draw_series(ax, sub["x"], sub["mean"], sub["std"], sub["n"], kw, label)
            base = baseline_value(baseline, task, _split_for(value, task))
            has_base = has_base or base is not None
            _draw_baseline(ax, base)
        fig.legend(handles=_method_handles(attempted(all_runs), has_base), loc="outside lower center", ncol=4)
        fig.suptitle(value_label(value))
    return fig


def fig_cost(runs: pd.DataFrame, baseline: pd.DataFrame | None = None, value: str = DEFAULT_VALUE) -> Figure:
    """Fig. 5: metric vs computation cost = data size x trainable parameters (log x), both tasks.

    The parameter count is ``trainable_params``, what trains: for prefix-tuning the prefix and its reparametrising
    MLP (which puts every prefix length near the MLP's size); the axis label says so. runs.csv also carries
    ``trainable_params_merged``, the prefix tensors alone. One colour and marker per method; "+ classifier" variants
    have hollow markers. Each point is one cell (mean over seeds, with a standard-deviation bar where there is more
    than one seed).
    """
    return _cost_figure(
        runs,
        lambda df: df["data_size"] * df["trainable_params"],
        "computation cost = data size × trainable parameters\n(trainable_params, during training: prefix-tuning's "
        "count includes its reparametrising MLP)",
        baseline,
        value,
    )


def fig_cost_gpu_hours(runs: pd.DataFrame, baseline: pd.DataFrame | None = None, value: str = DEFAULT_VALUE) -> Figure:
    """Fig. 5 against measured cost: metric vs training hours (log x), both tasks.

    Uses ``gpu_hours``; when every successful run logged 0 (or nothing) GPU hours -- a CPU run -- it falls back
    to ``wall_time_s / 3600`` and says so in the axis label.
    """
    ok = successful(_prepare_runs(runs, value))
    gpu = ok["gpu_hours"].fillna(0.0)
    if len(ok) and (gpu <= 0).all():
        return _cost_figure(
            runs,
            lambda df: df["wall_time_s"] / 3600.0,
            "hours (CPU): wall time / 3600, no GPU hours logged",
            baseline,
            value,
            plain_ticks=True,
        )
    return _cost_figure(runs, lambda df: df["gpu_hours"], "GPU hours", baseline, value, plain_ticks=True)


def fig_val_curves(
    curves: pd.DataFrame,
    method: str,
    task: str | None = None,
    runs: pd.DataFrame | None = None,
    baseline: pd.DataFrame | None = None,
    split: str | None = None,
    value: str = DEFAULT_VALUE,
) -> Figure:
    """Figs. 6-10: the metric at every evaluation for one method, one panel per data ratio.

    The x axis is the training step for step-based runs (COCO) and the epoch for epoch-based ones (VQAv2, which
    evaluate at every epoch end), as the curves table's ``schedule`` column says.

    Within a panel there is one line per (size, "+ classifier"): shade by size (light = small), dashed for the
    "+ classifier" variant. With more than one seed the line is the mean over seeds and a band shows +/- one
    standard deviation. Panels share the y axis so the data-ratio effect can be read across them.

    Args:
        curves: Long-format curves table.
        method: One of the methods (Figs. 6-10 are the five PEFT methods).
        task: A task; by default the one the paper's appendix draws (``vlpeft.plots.registry.curve_task``).
        runs: If given, curves of runs that did not succeed are left out.
        baseline: Optional baseline table (untuned model, drawn dotted grey).
        split: Curve split to draw; by default the split ``value`` is measured on, so that the best point of a
            ``paper_metric`` curve is the value Figs. 3-5 show (COCO: the Karpathy-test curve).
        value: The runs table's metric column the curves go with (named in the title).

    Raises:
        ValueError: Unknown method, or no curve points for that method, task and split.
    """
    task = task or curve_task()
    split = split or _split_for(value, task)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    cur = validate_curves(curves)
    if runs is not None:
        ok_ids = set(successful(validate_runs(runs))["run_id"])
        cur = cur.loc[cur["run_id"].isin(ok_ids)]
    sel = cur.loc[(cur["method"] == method) & (cur["task"] == task) & (cur["split"] == split)]
    if sel.empty:
        raise ValueError(f"no {split} curves for {method} on {task}: nothing to plot")
    x, xlabel = ("epoch", "epoch") if (sel["schedule"] == "epochs").all() else ("step", "training step")
    ratios = sorted(sel["data_ratio"].unique())
    sizes = sorted(sel["size"].dropna().unique()) or [float("nan")]
    colors = shades(method, len(sizes))
    metric = str(sel["metric"].iloc[0])
    base = baseline_value(baseline, task, split)
    ncols = min(3, len(ratios))
    nrows = math.ceil(len(ratios) / ncols)
    with style_context():
        fig, axes = _subplots(nrows, ncols, (FULL_WIDTH, 0.6 + 1.75 * nrows), sharex=True, sharey=True)
        flat = list(axes.flat)
        for i, (ax, ratio) in enumerate(zip(flat, ratios)):
            d = sel.loc[sel["data_ratio"] == ratio]
            for k, (size, color) in enumerate(zip(sizes, colors)):
                for clf in (False, True):
                    g = d.loc[_same(d["size"], size) & (d["classifier"] == clf)]
                    if g.empty:
                        continue
                    st = g.groupby(x)["value"].agg(["mean", "std", "count"])
                    ls = style.CLASSIFIER_LINESTYLE if clf else style.PLAIN_LINESTYLE
                    label = ("" if math.isnan(size) else format_size(size)) + (" + cls" if clf else "")
                    # A marker per size (hollow for "+ classifier"), so curves that coincide stay apart.
                    ax.plot(
                        st.index,
                        st["mean"],
                        color=color,
                        ls=ls,
                        lw=0.9,
                        gid=SERIES_GID,
                        label=label,
                        marker=level_marker(k),
                        markersize=2.4,
                        markerfacecolor="white" if clf else color,
                        markeredgecolor=color,
                        markeredgewidth=0.6,
                    )
                    if g["seed"].nunique() > 1:
                        band = st["count"] > 1
                        ax.fill_between(
                            st.index[band],
                            (st["mean"] - st["std"])[band],
                            (st["mean"] + st["std"])[band],
                            color=color,
                            alpha=0.18,
                            lw=0,
                        )
            _draw_baseline(ax, base)
            ax.set_title(f"data ratio {format_ratio(ratio)}%", loc="left")
            if i % ncols == 0:
                ax.set_ylabel(metric_label(metric))
            if i + ncols >= len(ratios):
                # Bottom panel of its column (the grid may be ragged): it carries the step axis.
                ax.set_xlabel(xlabel)
                ax.xaxis.set_tick_params(labelbottom=True)
        for ax in flat[len(ratios) :]:
            fig.delaxes(ax)
        handles = [
            Line2D(
                [],
                [],
                color=c,
                marker=level_marker(k),
                label=(SIZE_LABELS[method].split(" $")[0] + " " + format_size(s)),
            )
            for k, (s, c) in enumerate(zip(sizes, colors))
            if not math.isnan(s)
        ]
        handles += [
            Line2D([], [], color="0.35", ls=style.PLAIN_LINESTYLE, label=METHOD_LABELS[method]),
            Line2D([], [], color="0.35", ls=style.CLASSIFIER_LINESTYLE, label="+ classifier"),
        ]
        if base is not None:
            handles.append(Line2D([], [], color=BASELINE_COLOR, linestyle=BASELINE_LINESTYLE, label=BASELINE_LABEL))
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles) if len(handles) <= 8 else 6)
        fig.suptitle(
            f"{METHOD_LABELS[method]}, {TASK_LABELS[task]}: {split} {metric_label(metric)} at every evaluation "
            f"(curves of {value_label(value, task)})"
        )
    return fig


def stamp(fig: Figure, runs: pd.DataFrame) -> Figure:
    """Name the study, data source, commits and config digest of the table under the figure's title (a synthetic
    study's figures say that they are a demonstration)."""
    line = describe(table_provenance(runs))
    title = fig.get_suptitle()
    fig.suptitle(f"{title}\n{line}" if title else line)
    return fig


def save_figure(fig: Figure, stem: str | Path) -> list[Path]:
    """Write ``<stem>.pdf`` and ``<stem>.png`` (200 dpi); the parent directory is created if needed.

    Returns:
        The two paths written.
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_name(stem.name + ".pdf"), stem.with_name(stem.name + ".png")]
    engine = fig.get_layout_engine()
    with style_context():
        fig.savefig(paths[0], dpi=style.DPI)
        # The layout solved for the PDF holds for the PNG (same size in inches); solving it again would double
        # the cost of the largest figures.
        fig.set_layout_engine("none")
        try:
            fig.savefig(paths[1], dpi=style.DPI)
        finally:
            fig.set_layout_engine(engine)
    return paths


def _figure_job(
    spec: FigureSpec, runs: pd.DataFrame, curves: pd.DataFrame | None, baseline: pd.DataFrame | None, value: str
) -> Callable[[], Figure]:
    """The call that draws ``spec`` from the tables (its builder with the arguments its kind takes)."""
    builder = BUILDERS[spec.builder]
    if spec.curves:
        if curves is None:
            raise ValueError(f"{spec.stem} needs the curves table")
        return lambda: builder(curves, spec.method, spec.task, runs, baseline, value=value)
    if spec.task is not None:
        return lambda: builder(runs, spec.task, baseline, value)
    return lambda: builder(runs, baseline, value)


def _missing_data(spec: FigureSpec, ok: pd.DataFrame, curves: pd.DataFrame | None, value: str) -> str | None:
    """Why the tables cannot fill ``spec`` (a warning for :func:`make_all_figures`), or None when they can."""
    if spec.curves:
        if curves is None:
            return "no curves table given"
        split = _split_for(value, spec.task)
        has = (curves["method"] == spec.method) & (curves["task"] == spec.task) & (curves["split"] == split)
        if not (has & curves["run_id"].isin(set(ok["run_id"]))).any():
            return f"no {TASK_LABELS[spec.task]} {split} curves of successful {spec.method} runs"
    elif spec.task is not None and not (ok["task"] == spec.task).any():
        return f"no successful {spec.task} runs"
    return None


def make_all_figures(
    runs: pd.DataFrame,
    out_dir: str | Path,
    curves: pd.DataFrame | None = None,
    baseline: pd.DataFrame | None = None,
    value: str = DEFAULT_VALUE,
) -> dict[str, list[Path]]:
    """Write every figure of :func:`vlpeft.plots.registry.figure_table` the tables allow into ``out_dir``.

    Stems: ``fig3`` (COCO), ``fig4`` (VQAv2), ``fig5``, ``fig5_gpu_hours`` and, with curves, ``fig6_prompt``,
    ``fig7_prefix``, ``fig8_lora``, ``fig9_serial_adapter``, ``fig10_parallel_adapter``. A figure whose task or
    method has no data is skipped with a warning instead of being drawn empty.

    Returns:
        Stem -> written paths.
    """
    out = Path(out_dir)
    runs = _prepare_runs(runs, value)
    ok = successful(runs)
    cur = validate_curves(curves) if curves is not None else None
    written: dict[str, list[Path]] = {}
    jobs: list[tuple[str, Callable[[], Figure]]] = []
    for spec in figure_table():
        why = _missing_data(spec, ok, cur, value)
        if why is None:
            jobs.append((spec.stem, _figure_job(spec, runs, cur, baseline, value)))
        else:
            log.warning("%s skipped: %s", spec.stem, why)
    for stem, make in jobs:
        # Figures are built without pyplot, so nothing needs closing: each is freed once written.
        written[stem] = save_figure(stamp(make(), runs), out / stem)
    return written


def build_figure(
    stem: str,
    runs: pd.DataFrame,
    curves: pd.DataFrame | None = None,
    baseline: pd.DataFrame | None = None,
    value: str = DEFAULT_VALUE,
) -> Figure:
    """One figure by its stem (``fig3`` ... ``fig10_parallel_adapter``, :mod:`vlpeft.plots.registry`): what one
    workflow rule draws, stamped with the table's provenance (:func:`stamp`)."""
    spec = figure(stem)
    runs = _prepare_runs(runs, value)
    return stamp(_figure_job(spec, runs, curves, baseline, value)(), runs)


#: The builders the figure table names (``FigureSpec.builder``).
BUILDERS: dict[str, Callable[..., Figure]] = {
    f.__name__: f for f in (fig_task_grid, fig_cost, fig_cost_gpu_hours, fig_val_curves)
}


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: regenerate every figure from the tables alone."""
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.splitlines()[0], epilog="The columns of the tables: results/README.md."
    )
    parser.add_argument("--runs", required=True, type=Path, help="runs.csv (one row per run)")
    parser.add_argument(
        "--curves", type=Path, help="curves.csv (evaluation curves, long format); without it Figs. 6-10 are skipped"
    )
    parser.add_argument("--baseline", type=Path, help="baseline.csv (untuned pre-trained model, drawn dotted grey)")
    parser.add_argument("--out", required=True, type=Path, help="output directory (created if needed)")
    parser.add_argument(
        "--metric",
        "--value",
        dest="metric",
        default=DEFAULT_VALUE,
        choices=VALUE_COLUMNS,
        help="runs.csv column to draw (default: paper_metric, the paper's reported number; "
        "test_at_best_val: selection-honest)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # INFO for this package only: the PDF backend's font subsetter logs every glyph at INFO.
    logging.getLogger("vlpeft").setLevel(logging.INFO)
    runs = load_runs(args.runs)
    curves = load_curves(args.curves) if args.curves else None
    baseline = load_baseline(args.baseline)
    written = make_all_figures(runs, args.out, curves, baseline, args.metric)
    for stem, paths in written.items():
        log.info("%s: %s", stem, ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main, PROG))
