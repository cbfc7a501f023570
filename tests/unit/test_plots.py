"""Figures and table loading: every figure renders from synthetic tables, with fixed colours and clear errors."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from vlpeft.plots import figures, style, tables
from vlpeft.plots.figures import (
    fig_cost,
    fig_cost_gpu_hours,
    fig_task_grid,
    fig_val_curves,
    save_figure,
    series_lines,
)
from vlpeft.methods import registry
from vlpeft.methods.registry import METHOD_COLORS
from vlpeft import tasks
from vlpeft.plots.tables import load_baseline, load_curves, load_runs, validate_runs
from tests.run_rows import METRIC, PAPER_METHODS, RATIOS, make_curves, make_runs, with_provenance


@pytest.fixture(scope="module")
def runs() -> pd.DataFrame:
    return make_runs()


@pytest.fixture(scope="module")
def curves(runs: pd.DataFrame) -> pd.DataFrame:
    return make_curves(runs)


@pytest.fixture(scope="module")
def baseline() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"task": "coco", "metric": "CIDEr", "split": "val", "value": 100.0},
            {"task": "vqa", "metric": "accuracy", "split": "val", "value": 40.0},
        ]
    )


def _colors(lines: list) -> set[str]:
    return {to_hex(line.get_color()) for line in lines}


def _references(ax) -> list:
    return [line for line in ax.get_lines() if line.get_gid() == figures.REFERENCE_GID]


# ----------------------------------------------------------------------------------------------------------------
# Figures 3 and 4
# ----------------------------------------------------------------------------------------------------------------
def test_fig3_layout_labels_and_series(runs: pd.DataFrame, baseline: pd.DataFrame) -> None:
    fig = fig_task_grid(runs, "coco", baseline)
    assert isinstance(fig, Figure)
    axes = fig.axes
    assert len(axes) == 10  # 5 methods x (vs ratio, vs size)
    assert fig.get_figwidth() == pytest.approx(style.FULL_WIDTH)
    for row, method in enumerate(PAPER_METHODS):
        ax_r, ax_s = axes[2 * row], axes[2 * row + 1]
        assert ax_r.get_ylabel() == "CIDEr"
        assert ax_r.get_xlabel() == "data ratio (%)"
        assert ax_s.get_xlabel() == registry.SIZE_LABELS[method]
        assert registry.METHOD_LABELS[method] in ax_r.get_title(loc="left")
        assert ax_r.get_xscale() == "log" and ax_s.get_xscale() == "log"
        # One line per (size, variant) and per (ratio, variant): 3 x 2 each; the absent cell only makes a gap.
        assert len(series_lines(ax_r)) == 6
        assert len(series_lines(ax_s)) == 6
        # Full fine-tuning vs ratio (black line) + baseline on the left; full FT level + baseline on the right.
        assert len(_references(ax_r)) == 2
        assert len(_references(ax_s)) == 2
        dashed = [line for line in series_lines(ax_r) if line.get_linestyle() == "--"]
        assert len(dashed) == 3
        assert all(line.get_markerfacecolor() == "white" for line in dashed)


def test_fig3_gaps_and_error_bars(runs: pd.DataFrame) -> None:
    fig = fig_task_grid(runs, "coco")
    prompt_ratio = fig.axes[0]
    failed = [line for line in series_lines(prompt_ratio) if line.get_label() == "8"]
    assert len(failed) == 1
    y = np.asarray(failed[0].get_ydata(), dtype=float)
    assert np.isnan(y[1]) and np.isfinite(y[[0, 2]]).all()  # the failed 10 % run leaves a gap
    prefix_size = fig.axes[3]
    one_pct_cls = [line for line in series_lines(prefix_size) if line.get_label() == "1% + cls"]
    assert np.isnan(np.asarray(one_pct_cls[0].get_ydata(), dtype=float)[-1])  # the absent cell too
    # Error bars only where a cell has several seeds: LoRA's panels have them, single-seed prompt panels do not.
    lora_ratio = fig.axes[4]
    assert any(c.__class__.__name__ == "LineCollection" for c in lora_ratio.collections)
    assert not any(c.__class__.__name__ == "LineCollection" for c in prompt_ratio.collections)
    # Without a baseline only the full fine-tuning references remain.
    assert len(_references(prompt_ratio)) == 1


def test_fig4_vqa(runs: pd.DataFrame) -> None:
    fig = fig_task_grid(runs, "vqa")
    assert len(fig.axes) == 10
    assert fig.axes[0].get_ylabel() == "VQA accuracy"
    assert all(len(series_lines(ax)) == 6 for ax in fig.axes)


@pytest.mark.parametrize("value", ["paper_metric", "test_at_best_val"])
def test_figures_draw_the_metric_column_they_name(runs: pd.DataFrame, value: str) -> None:
    ok = runs.loc[(runs["status"] == "success") & (runs["task"] == "coco")]
    fig = fig_task_grid(runs, "coco", value=value)
    (line,) = [x for x in series_lines(fig.axes[0]) if x.get_label() == "2"]  # prompt-tuning, p = 2, vs ratio
    cells = ok.loc[(ok["method"] == "prompt") & ~ok["classifier"] & (ok["size"] == 2)].sort_values("data_ratio")
    np.testing.assert_allclose(np.asarray(line.get_ydata(), dtype=float), cells[value].to_numpy())
    assert value in fig.get_suptitle()
    assert value in fig_cost(runs, value=value).get_suptitle()


def test_default_metric_is_the_papers(runs: pd.DataFrame) -> None:
    """COCO: the best Karpathy-test CIDEr; VQAv2: the best validation accuracy (paper, Section IV-C)."""
    assert "paper_metric" in tables.VALUE_COLUMNS and style.DEFAULT_VALUE == "paper_metric"
    assert "paper_metric, the paper's: best Karpathy-test CIDEr" in fig_task_grid(runs, "coco").get_suptitle()
    assert "paper_metric, the paper's: best validation VQA accuracy" in fig_task_grid(runs, "vqa").get_suptitle()
    assert fig_cost(runs).get_suptitle().startswith("paper_metric: the paper's metric")


def test_fig_task_grid_without_task_data(runs: pd.DataFrame) -> None:
    only_coco = runs.loc[runs["task"] == "coco"]
    with pytest.raises(ValueError, match="no successful vqa runs: nothing to plot"):
        fig_task_grid(only_coco, "vqa")
    with pytest.raises(ValueError, match="unknown task"):
        fig_task_grid(runs, "gqa")


# ----------------------------------------------------------------------------------------------------------------
# Figure 5
# ----------------------------------------------------------------------------------------------------------------
def test_fig5_cost(runs: pd.DataFrame, baseline: pd.DataFrame) -> None:
    fig = fig_cost(runs, baseline)
    assert len(fig.axes) == 2
    for ax, task in zip(fig.axes, ("coco", "vqa")):
        assert ax.get_xscale() == "log"
        assert "data size × trainable parameters" in ax.get_xlabel()
        assert ax.get_title(loc="left") == tasks.TASK_LABELS[task]
        lines = series_lines(ax)
        assert len(lines) == 11  # 5 PEFT methods x 2 variants + full fine-tuning
        for line in lines:
            label = line.get_label()
            clf = label.endswith("+ classifier")
            method = next(m for m, name in registry.METHOD_LABELS.items() if label.startswith(name))
            assert to_hex(line.get_color()) == METHOD_COLORS[method]
            assert line.get_linestyle() == "None"
            assert (line.get_markerfacecolor() == "white") == clf


def test_fig5_gpu_hours_falls_back_to_cpu_hours(runs: pd.DataFrame) -> None:
    fig = fig_cost_gpu_hours(runs)
    assert "hours (CPU)" in fig.axes[0].get_xlabel()
    with_gpu = runs.assign(gpu_hours=runs["wall_time_s"] / 1800)
    fig = fig_cost_gpu_hours(with_gpu)
    assert fig.axes[0].get_xlabel() == "GPU hours"
    assert len(series_lines(fig.axes[1])) == 11


# ----------------------------------------------------------------------------------------------------------------
# Figures 6-10
# ----------------------------------------------------------------------------------------------------------------
def test_fig_val_curves(curves: pd.DataFrame, runs: pd.DataFrame) -> None:
    fig = fig_val_curves(curves, "lora", "coco", runs=runs)
    assert len(fig.axes) == 3  # one panel per data ratio
    for ax, ratio in zip(fig.axes, RATIOS["coco"]):
        assert f"{style.format_ratio(ratio)}%" in ax.get_title(loc="left")
        lines = series_lines(ax)
        assert len(lines) == 6  # 3 ranks x 2 variants
        assert _colors(lines) == set(style.shades("lora", 3))
        assert sum(line.get_linestyle() == "--" for line in lines) == 3
    assert fig.axes[0].get_ylabel() == "CIDEr"
    assert fig.axes[-1].get_xlabel() == "training step"
    # Seeds give a band only in the 100 % panel, where the three-seed cell is.
    assert len(fig.axes[2].collections) >= 1
    assert not any(c.__class__.__name__ == "FillBetweenPolyCollection" for c in fig.axes[0].collections)


def test_epoch_based_curves_are_drawn_against_epochs(curves: pd.DataFrame, runs: pd.DataFrame) -> None:
    vqa = curves.loc[curves["method"] == "lora"].assign(task="vqa", schedule="epochs", epoch=curves["step"] / 250 + 1)
    fig = fig_val_curves(vqa, "lora", "vqa", value="best_val")
    assert fig.axes[-1].get_xlabel() == "epoch"
    assert {float(x) for line in series_lines(fig.axes[0]) for x in line.get_xdata()} == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert fig_val_curves(curves, "lora", "coco").axes[-1].get_xlabel() == "training step"


def test_fig_val_curves_follow_the_metric_column(curves: pd.DataFrame, runs: pd.DataFrame) -> None:
    """By default the COCO curves are the Karpathy-test ones, whose best point is the paper_metric of Figs. 3-5;
    ``best_val`` draws the validation curves. The title names the split and the column."""
    for value, split in (("paper_metric", "test"), ("best_val", "val")):
        fig = fig_val_curves(curves, "lora", "coco", runs=runs, value=value)
        sel = curves.loc[(curves["method"] == "lora") & (curves["split"] == split) & (curves["data_ratio"] == 0.01)]
        drawn = sorted(float(y) for line in series_lines(fig.axes[0]) for y in line.get_ydata())
        assert drawn == pytest.approx(sorted(sel.groupby(["size", "classifier", "step"])["value"].mean()))
        assert f"{split} CIDEr at every evaluation" in fig.get_suptitle() and value in fig.get_suptitle()


def test_fig_val_curves_leaves_out_failed_runs_and_rejects_unknown(curves: pd.DataFrame, runs: pd.DataFrame) -> None:
    # Mark every prefix run failed: its curves must not be drawn.
    failed = runs.assign(status=np.where(runs["method"] == "prefix", "failed", runs["status"]))
    with pytest.raises(ValueError, match="no test curves for prefix on coco"):
        fig_val_curves(curves, "prefix", "coco", runs=failed)
    with pytest.raises(ValueError, match="unknown method"):
        fig_val_curves(curves, "bitfit")


# ----------------------------------------------------------------------------------------------------------------
# Colours and saving
# ----------------------------------------------------------------------------------------------------------------
def test_method_colours_are_fixed_and_distinct(runs: pd.DataFrame, curves: pd.DataFrame) -> None:
    assert len(set(METHOD_COLORS.values())) == len(METHOD_COLORS)
    grid = fig_task_grid(runs, "coco")
    cost = fig_cost(runs)
    for row, method in enumerate(PAPER_METHODS):
        # The middle shade of an odd ramp is the method's own colour; every line is one of the method's shades.
        ramp = set(style.shades(method, 3))
        assert METHOD_COLORS[method] in ramp
        assert _colors(series_lines(grid.axes[2 * row])) == ramp
        in_cost = {
            to_hex(x.get_color())
            for x in series_lines(cost.axes[0])
            if x.get_label().startswith(registry.METHOD_LABELS[method])
        }
        assert in_cost == {METHOD_COLORS[method]}
        curve_fig = fig_val_curves(curves, method)
        assert _colors(series_lines(curve_fig.axes[0])) <= ramp


def test_save_figure_writes_pdf_and_png(runs: pd.DataFrame, tmp_path: Path) -> None:
    paths = save_figure(fig_cost(runs), tmp_path / "sub" / "fig5")
    assert [p.name for p in paths] == ["fig5.pdf", "fig5.png"]
    for p in paths:
        assert p.exists() and p.stat().st_size > 1000
    assert paths[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[0].read_bytes()[:5] == b"%PDF-"


def test_cli_regenerates_every_figure(
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    baseline: pd.DataFrame,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs.to_csv(tmp_path / "runs.csv", index=False)
    curves.to_csv(tmp_path / "curves.csv", index=False)
    baseline.to_csv(tmp_path / "baseline.csv", index=False)
    # Every figure is built for real; writing is recorded instead of rendered, because rendering nine full-page
    # figures twice would dominate the test time (test_save_figure_writes_pdf_and_png renders one for real).
    saved: dict[str, Figure] = {}

    def record(fig: Figure, stem: Path) -> list[Path]:
        saved[Path(stem).name] = fig
        return [Path(f"{stem}.pdf"), Path(f"{stem}.png")]

    monkeypatch.setattr(figures, "save_figure", record)
    out = tmp_path / "figs"
    args = ["--runs", str(tmp_path / "runs.csv"), "--curves", str(tmp_path / "curves.csv")]
    args += ["--baseline", str(tmp_path / "baseline.csv"), "--out", str(out)]
    assert figures.main(args) == 0
    stems = ["fig3", "fig4", "fig5", "fig5_gpu_hours", "fig6_prompt", "fig7_prefix", "fig8_lora"]
    stems += ["fig9_serial_adapter", "fig10_parallel_adapter"]
    assert list(saved) == stems
    assert len(saved["fig3"].axes) == 10 and len(saved["fig5"].axes) == 2
    assert registry.METHOD_LABELS["serial_adapter"] in saved["fig9_serial_adapter"].get_suptitle()
    # Every figure names the study, its data, the commit and the config digest; a synthetic one says what it is.
    digest = runs["study_digest"].iloc[0]
    for stem, fig in saved.items():
        title = fig.get_suptitle()
        assert "SYNTHETIC DEMONSTRATION, not the paper's results" in title, stem
        assert f"study test | synthetic data | commit {'0' * 10} | config {digest}" in title, stem


def test_figures_of_real_data_carry_no_demonstration_note_and_mixed_tables_are_refused(runs: pd.DataFrame) -> None:
    real = with_provenance(
        runs.drop(columns=["study_digest"]), study="paper", data_source="real", commit="1234567890abcdef"
    )
    title = figures.build_figure("fig5", real).get_suptitle()
    assert "SYNTHETIC" not in title and "study paper | real data | commit 1234567890 |" in title
    mixed = pd.concat([real.iloc[:5], runs.iloc[5:]])
    with pytest.raises(ValueError, match=r"mixes study values \['paper', 'test'\]"):
        figures.build_figure("fig5", mixed)
    with pytest.raises(ValueError, match="lacks the provenance column"):
        figures.build_figure("fig5", runs.drop(columns=["study"]))


def test_cli_metric_option(runs: pd.DataFrame, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    saved: dict[str, Figure] = {}
    monkeypatch.setattr(figures, "save_figure", lambda fig, stem: saved.update({Path(stem).name: fig}) or [])
    runs.loc[runs["task"] == "coco"].to_csv(tmp_path / "runs.csv", index=False)
    assert (
        figures.main(["--runs", str(tmp_path / "runs.csv"), "--out", str(tmp_path), "--metric", "test_at_best_val"])
        == 0
    )
    assert list(saved) == ["fig3", "fig5", "fig5_gpu_hours"]
    assert all("test_at_best_val" in fig.get_suptitle() for fig in saved.values())


def test_cli_without_curves_skips_figs_6_to_10(
    runs: pd.DataFrame, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(figures, "save_figure", lambda fig, stem: [Path(f"{stem}.pdf"), Path(f"{stem}.png")])
    written = figures.make_all_figures(runs.loc[runs["task"] == "coco"], tmp_path)
    assert list(written) == ["fig3", "fig5", "fig5_gpu_hours"]


# ----------------------------------------------------------------------------------------------------------------
# Tables: loading and validation
# ----------------------------------------------------------------------------------------------------------------
def test_load_round_trip_and_non_success_logged(
    runs: pd.DataFrame, curves: pd.DataFrame, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runs.to_csv(tmp_path / "runs.csv", index=False)
    curves.to_csv(tmp_path / "curves.csv", index=False)
    with caplog.at_level(logging.WARNING, logger="vlpeft.plots.tables"):
        loaded = load_runs(tmp_path / "runs.csv")
    assert len(loaded) == len(runs)
    assert loaded["classifier"].dtype == bool
    assert loaded.loc[loaded["method"] == "full", "size"].isna().all()
    assert "1 of" in caplog.text and "failed" in caplog.text and "coco-prompt-0-8-0.1-0" in caplog.text
    assert len(tables.successful(loaded)) == len(runs) - 1
    assert list(tables.non_success(loaded)["run_id"]) == ["coco-prompt-0-8-0.1-0"]
    assert len(load_curves(tmp_path / "curves.csv")) == len(curves)
    assert load_baseline(None) is None


def test_missing_columns_are_listed_with_the_file(runs: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "runs.csv"
    runs.drop(columns=["best_val", "status"]).to_csv(path, index=False)
    with pytest.raises(ValueError, match="missing required column") as err:
        load_runs(path)
    assert "best_val" in str(err.value) and "status" in str(err.value) and str(path) in str(err.value)


def test_unknown_method_and_task_name_value_and_run(runs: pd.DataFrame) -> None:
    bad = runs.copy()
    bad.loc[3, "method"] = "bitfit"
    with pytest.raises(ValueError, match="unknown method 'bitfit'") as err:
        validate_runs(bad)
    assert repr(runs.loc[3, "run_id"]) in str(err.value)
    bad = runs.copy()
    bad.loc[5, "task"] = "gqa"
    with pytest.raises(ValueError, match=r"unknown task 'gqa'.*run_id"):
        validate_runs(bad)
    with pytest.raises(ValueError, match="unknown method"):
        fig_cost(runs.assign(method="adapter"))


def test_empty_table_is_a_clear_error(runs: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "runs.csv"
    runs.iloc[:0].to_csv(path, index=False)
    with pytest.raises(ValueError, match=f"no runs in {path}: nothing to plot"):
        load_runs(path)
    with pytest.raises(ValueError, match="nothing to plot"):
        fig_task_grid(runs.iloc[:0], "coco")


def test_other_schema_errors(runs: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="metric 'accuracy' does not belong to task 'coco'"):
        validate_runs(runs.assign(metric="accuracy"))
    with pytest.raises(ValueError, match="data_ratio"):
        validate_runs(runs.assign(data_ratio=1.5))
    bad = runs.copy()
    bad.loc[0, "size"] = math.nan
    with pytest.raises(ValueError, match="PEFT run without a size"):
        validate_runs(bad)
    bad = runs.copy()
    bad.loc[0, "best_val"] = math.nan
    with pytest.raises(ValueError, match="successful run without a best_val"):
        validate_runs(bad)
    with pytest.raises(ValueError, match="duplicated run_id"):
        validate_runs(pd.concat([runs, runs.iloc[:1]]))
    with pytest.raises(ValueError, match="classifier"):
        validate_runs(runs.assign(classifier="maybe"))
    # "True"/"False" text (as a CSV without dtype inference gives) is accepted.
    ok = validate_runs(runs.assign(classifier=runs["classifier"].map(str)))
    assert ok["classifier"].sum() == runs["classifier"].sum()


@pytest.mark.parametrize("content", [b"", b"\x00\xff\xfe\x9c binary \x00", b"\n\n"], ids=["empty", "binary", "blank"])
@pytest.mark.parametrize("loader", [load_runs, load_curves, load_baseline])
def test_unreadable_table_names_the_file_and_what_to_do(tmp_path: Path, content: bytes, loader) -> None:
    path = tmp_path / "table.csv"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*rerun the aggregation"):
        loader(path)


@pytest.mark.parametrize(
    ("task", "column", "value"),
    [
        ("coco", "best_val", -3.5),
        ("coco", "test_at_best_val", 1000.5),
        ("vqa", "best_val", 100.01),
        ("vqa", "final_val", -0.1),
        ("vqa", "test_at_best_val", math.inf),
    ],
)
def test_impossible_metric_values_are_refused(
    runs: pd.DataFrame, curves: pd.DataFrame, baseline: pd.DataFrame, task: str, column: str, value: float
) -> None:
    metric = METRIC[task]
    bad = runs.copy()
    i = bad.index[(bad["task"] == task) & (bad["status"] == "success")][0]
    bad.loc[i, column] = value
    with pytest.raises(
        ValueError,
        match=re.escape(f"impossible {metric} {value!r} in column {column!r}")
        + f".*{re.escape(repr(bad.loc[i, 'run_id']))}",
    ):
        validate_runs(bad)
    bad = curves.copy()  # (COCO curves only; a point of another task's curve is refused just the same)
    bad.loc[0, ["task", "metric", "value"]] = [task, metric, value]
    with pytest.raises(ValueError, match=re.escape(f"impossible {metric} {value!r} in column 'value'")):
        tables.validate_curves(bad)
    bad = baseline.copy()
    bad.loc[bad.index[bad["task"] == task][0], "value"] = value
    with pytest.raises(ValueError, match=re.escape(f"impossible {metric} {value!r} in column 'value'")):
        tables.validate_baseline(bad)
    for df, check in ((runs, validate_runs), (curves, tables.validate_curves), (baseline, tables.validate_baseline)):
        check(df)  # the real-looking tables pass
