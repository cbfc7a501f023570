"""One place for the look of every figure: sizes, fonts, line styles, shades and labels.

Every figure function in :mod:`vlpeft.plots.figures` draws through these helpers, so a method has the same
colour and marker in Figs. 3-10 and a reader can follow it across figures. Each method's colour, marker and labels
are part of its description (:mod:`vlpeft.methods.registry`: Okabe-Ito colours, warm for embedding composition, cool
for layer composition, black for full fine-tuning), each task's labels and metric of its entry in
:mod:`vlpeft.tasks`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import matplotlib
import numpy as np
from matplotlib.colors import to_hex, to_rgb

from vlpeft.methods.registry import METHOD_COLORS, METHOD_LABELS, METHOD_MARKERS, REFERENCE
from vlpeft.tasks import METRIC_LABELS, PAPER_SPLIT, TASK_METRIC

#: Width of one column of a two-column paper, in inches.
COLUMN_WIDTH = 3.3
#: Width of a full page (both columns), in inches.
FULL_WIDTH = 7.0
#: Resolution of the PNG copies (the PDFs are vector).
DPI = 200

#: The runs table's metric columns, what each one is, and the default (the paper's reported number).
VALUE_LABELS: dict[str, str] = {
    "paper_metric": "the paper's metric: best Karpathy-test CIDEr (COCO), best validation accuracy (VQAv2) "
    "over the evaluations",
    "test_at_best_val": "test score at the best-validation evaluation (selection-honest)",
    "best_val": "best validation score over the evaluations",
    "final_val": "validation score at the last evaluation",
}
DEFAULT_VALUE = "paper_metric"

#: "+ classifier" variants: dashed line, hollow marker, same colour family as the plain method.
CLASSIFIER_LINESTYLE = "--"
PLAIN_LINESTYLE = "-"
#: Full fine-tuning at the largest data ratio, drawn across a vs-size panel; dash-dot so it cannot be mistaken
#: for a dashed "+ classifier" line.
FULL_REFERENCE_LINESTYLE = "-."
FULL_COLOR = METHOD_COLORS[REFERENCE]
BASELINE_COLOR = "0.55"
BASELINE_LINESTYLE = ":"
BASELINE_LABEL = "pre-trained (no tuning)"

#: rcParams for every figure: sized for print at 100 %, fonts embedded as TrueType so the PDFs stay editable.
RC_PARAMS: dict[str, object] = {
    "font.size": 7,
    "axes.titlesize": 7.5,
    "axes.labelsize": 7,
    "xtick.labelsize": 6,
    "ytick.labelsize": 6,
    "legend.fontsize": 6,
    "legend.title_fontsize": 6,
    "legend.frameon": False,
    "legend.handlelength": 1.8,
    "legend.labelspacing": 0.25,
    "figure.titlesize": 8,
    "lines.linewidth": 1.0,
    "lines.markersize": 3.2,
    "errorbar.capsize": 1.5,
    "axes.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.linewidth": 0.4,
    "grid.alpha": 0.35,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.minor.visible": False,
    "savefig.dpi": DPI,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
}


@contextlib.contextmanager
def style_context() -> Iterator[None]:
    """Apply the house rcParams for the duration of a ``with`` block.

    Figures are built *and* saved inside it, because some settings (font embedding) are read at save time.
    """
    with matplotlib.rc_context(RC_PARAMS):
        yield


def method_color(method: str) -> str:
    """The fixed colour of ``method`` (hex string)."""
    return METHOD_COLORS[method]


def method_label(method: str, classifier: bool = False) -> str:
    """Display name of a method, with " + classifier" appended for that variant."""
    return METHOD_LABELS[method] + (" + classifier" if classifier else "")


#: The lowest contrast ratio against the white page (WCAG's definition) of any line colour: the lightest shade of a
#: size or data-ratio ramp must still read as a line, not as a faded one.
MIN_CONTRAST = 1.8
#: Markers of the levels (sizes or data ratios) within one panel, in ramp order: lines that coincide stay apart by
#: their markers, not by shade alone. Full fine-tuning's star is not among them.
LEVEL_MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")


def relative_luminance(color: str) -> float:
    """WCAG 2 relative luminance of a colour (0 black, 1 white)."""
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in to_rgb(color)]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast_on_white(color: str) -> float:
    """WCAG 2 contrast ratio of a colour against white: 1 (white) to 21 (black)."""
    return 1.05 / (relative_luminance(color) + 0.05)


def _max_white_mix(base: np.ndarray, limit: float = 0.55) -> float:
    """The largest share of white (at most ``limit``) that keeps ``base`` at :data:`MIN_CONTRAST` on white."""

    def mixed(w: float) -> str:
        return to_hex(np.clip(base + w * (1.0 - base), 0.0, 1.0))

    if contrast_on_white(mixed(limit)) >= MIN_CONTRAST:
        return limit
    if contrast_on_white(mixed(0.0)) < MIN_CONTRAST:
        return 0.0
    lo, hi = 0.0, limit
    for _ in range(30):  # contrast falls as white is added: bisect
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if contrast_on_white(mixed(mid)) >= MIN_CONTRAST else (lo, mid)
    return lo


def shades(method: str, n: int) -> list[str]:
    """``n`` shades of the method's colour, light to dark, for one line per size or per data ratio.

    The method's own colour sits in the middle of the ramp so that the family stays recognisable; the light end is
    mixed with white only so far that it keeps a contrast of :data:`MIN_CONTRAST` against the white page (at most
    55 % white), the dark end with at most 40 % black.

    Args:
        method: Method name (a key of :data:`METHOD_COLORS`).
        n: Number of shades.

    Returns:
        ``n`` hex colours; ``[method_color(method)]`` when ``n == 1``.
    """
    base = np.array(to_rgb(METHOD_COLORS[method]))
    if n <= 1:
        return [to_hex(base)]
    if method == REFERENCE:
        # Black cannot be darkened: spread full fine-tuning over greys instead (grey 0.6 is 2.8:1 on white).
        return [to_hex(np.full(3, g)) for g in np.linspace(0.6, 0.0, n)]
    white = _max_white_mix(base)
    out = []
    for t in np.linspace(-1.0, 1.0, n):
        # t < 0 mixes towards white, t > 0 towards black.
        rgb = base + (-t * white) * (1.0 - base) if t < 0 else base * (1.0 - t * 0.4)
        out.append(to_hex(np.clip(rgb, 0.0, 1.0)))
    return out


def level_marker(i: int) -> str:
    """The marker of the ``i``-th level (size or data ratio, in ramp order) of a panel."""
    return LEVEL_MARKERS[i % len(LEVEL_MARKERS)]


def variant_style(
    method: str, classifier: bool, color: str | None = None, marker: str | None = None
) -> dict[str, object]:
    """Line2D keyword arguments for one (method, "+ classifier") variant.

    Plain variants are solid with filled markers; "+ classifier" variants are dashed with hollow markers. The
    marker is the method's unless one is given (a level's, within a one-method panel).
    """
    c = color or METHOD_COLORS[method]
    return {
        "color": c,
        "marker": marker or METHOD_MARKERS[method],
        "linestyle": CLASSIFIER_LINESTYLE if classifier else PLAIN_LINESTYLE,
        "markerfacecolor": "white" if classifier else c,
        "markeredgecolor": c,
    }


def format_ratio(ratio: float) -> str:
    """Data ratio as a percentage without the % sign (the axis label carries it): 0.01 -> "1", 0.005 -> "0.5"."""
    pct = ratio * 100.0
    return f"{pct:.0f}" if math.isclose(pct, round(pct), abs_tol=1e-9) else f"{pct:.3g}"


def format_size(size: float) -> str:
    """Size knob as an integer label."""
    return str(round(size))


def metric_label(metric: str) -> str:
    """Axis label of a metric ("CIDEr", "accuracy")."""
    return METRIC_LABELS.get(metric, metric)


def value_label(value: str, task: str | None = None) -> str:
    """What a metric column shows, for titles: with a task, ``paper_metric`` is spelled out for that task."""
    if value == "paper_metric" and task is not None:
        split = "Karpathy-test" if PAPER_SPLIT[task] == "test" else "validation"
        return f"paper_metric, the paper's: best {split} {metric_label(TASK_METRIC[task])} over the evaluations"
    return f"{value}: {VALUE_LABELS[value]}"
