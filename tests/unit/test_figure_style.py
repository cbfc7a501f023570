"""Figures stay readable: every line colour has contrast against the white page, and the series of one panel differ
in more than colour (marker, line style or fill), so lines that coincide stay distinguishable."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest
from matplotlib.colors import to_hex

from tests.run_rows import make_curves, make_runs
from vlpeft.methods import registry
from vlpeft.plots import figures, style


@pytest.fixture(scope="module")
def runs() -> pd.DataFrame:
    return make_runs()


@pytest.fixture(scope="module")
def drawn(runs: pd.DataFrame) -> dict:
    curves = make_curves(runs)
    return {
        "fig3": figures.fig_task_grid(runs, "coco"),
        "fig4": figures.fig_task_grid(runs, "vqa"),
        "fig5": figures.fig_cost(runs),
        "fig8_lora": figures.fig_val_curves(curves, "lora", "coco", runs),
    }


def test_contrast_of_known_colours() -> None:
    assert style.contrast_on_white("#ffffff") == pytest.approx(1.0)
    assert style.contrast_on_white("#000000") == pytest.approx(21.0)
    assert style.contrast_on_white("#777777") == pytest.approx(4.48, abs=0.01)  # WCAG's worked example


@pytest.mark.parametrize("method", registry.METHODS)
@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 9])
def test_every_shade_reads_on_white(method: str, n: int) -> None:
    colors = style.shades(method, n)
    assert len(set(colors)) == n
    assert min(style.contrast_on_white(c) for c in colors) >= style.MIN_CONTRAST
    # light to dark
    contrasts = [style.contrast_on_white(c) for c in colors]
    assert contrasts == sorted(contrasts)


def test_the_lightest_shade_is_as_light_as_readable() -> None:
    """The ramp is not darkened more than needed: a light method colour ends just at the bound."""
    assert style.contrast_on_white(style.shades("prompt", 5)[0]) == pytest.approx(style.MIN_CONTRAST, abs=0.05)


def test_reference_colours_read_on_white() -> None:
    for color in (*registry.METHOD_COLORS.values(), style.BASELINE_COLOR, style.FULL_COLOR):
        assert style.contrast_on_white(to_hex(color)) >= style.MIN_CONTRAST, color


@pytest.mark.parametrize("stem", ["fig3", "fig4", "fig5", "fig8_lora"])
def test_every_drawn_line_reads_on_white(drawn: dict, stem: str) -> None:
    lines = [line for ax in drawn[stem].axes for line in ax.get_lines()]
    assert lines
    for line in lines:
        assert style.contrast_on_white(to_hex(line.get_color())) >= style.MIN_CONTRAST, (stem, line.get_label())


def _look(line, with_fill: bool) -> tuple:
    look = (line.get_marker(), line.get_linestyle())
    return look + ((to_hex(line.get_markerfacecolor()) == "#ffffff",) if with_fill else ())


@pytest.mark.parametrize(
    ("stem", "with_fill"), [("fig3", False), ("fig4", False), ("fig8_lora", False), ("fig5", True)]
)
def test_series_of_one_panel_differ_in_more_than_colour(drawn: dict, stem: str, with_fill: bool) -> None:
    """Figs. 3, 4, 6-10: marker or line style; Fig. 5 (points only): marker, or hollow vs filled."""
    checked = 0
    for ax in drawn[stem].axes:
        lines = figures.series_lines(ax)
        for a, b in itertools.combinations(lines, 2):
            assert _look(a, with_fill) != _look(b, with_fill), (stem, ax.get_title(), a.get_label(), b.get_label())
            checked += 1
    assert checked > 20


def test_level_legend_shows_the_level_markers(drawn: dict) -> None:
    ax = drawn["fig3"].axes[0]  # prompt-tuning vs data ratio: one line per size
    legend = [h.get_marker() for h in ax.get_legend().legend_handles]
    drawn_markers = list(dict.fromkeys(line.get_marker() for line in figures.series_lines(ax)))
    assert legend == drawn_markers == [style.level_marker(i) for i in range(len(legend))]
