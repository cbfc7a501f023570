"""Every figure of the study, in one table: its file stem, builder, inputs, the task or method it draws and its caption.

:mod:`vlpeft.plots.figures` draws a figure by looking up its stem here, and the Snakemake rules take their figure
list, wildcard constraints and params from here (``rules/common.smk``, ``rules/figures.smk``). The table follows the
task and method tables (:mod:`vlpeft.tasks`, :mod:`vlpeft.methods.registry`), so a new task or method brings its
figures along. Importing this needs neither matplotlib nor pandas (the workflow reads it while building its DAG).
"""

from __future__ import annotations

from dataclasses import dataclass

from vlpeft.methods.registry import descriptions
from vlpeft.tasks import TASKS


@dataclass(frozen=True)
class FigureSpec:
    """One figure.

    Attributes:
        stem: File stem (``results/<study>/figures/<stem>.pdf`` and ``.png``).
        builder: Name of the function in :mod:`vlpeft.plots.figures` that draws it.
        caption: Its report caption, ``workflow/report/<caption>.rst``; also names the workflow rule drawing it.
        curves: Whether it needs the curves table (``curves.csv``) besides the runs and baseline tables.
        task: The task it draws (None: every task).
        method: The method it draws (None: every method).
    """

    stem: str
    builder: str
    caption: str
    curves: bool = False
    task: str | None = None
    method: str | None = None


def curve_task() -> str:
    """The task whose validation curves the paper draws per method (its appendix: COCO)."""
    return next(t.name for t in TASKS.values() if t.curves)


def figure_table() -> tuple[FigureSpec, ...]:
    """Every figure, in paper order: one sweep figure per task (Figs. 3-4), the cost figures (Fig. 5 and its measured
    counterpart), one validation-curve figure per method that has one (Figs. 6-10)."""
    sweeps = [FigureSpec(f"fig{t.figure}", "fig_task_grid", "fig_task_grid", task=t.name) for t in TASKS.values()]
    cost = [FigureSpec("fig5", "fig_cost", "fig_cost"), FigureSpec("fig5_gpu_hours", "fig_cost_gpu_hours", "fig_cost")]
    curves = [
        FigureSpec(m.curve_stem, "fig_val_curves", "fig_val_curves", curves=True, task=curve_task(), method=m.name)
        for m in descriptions()
        if m.curve_stem
    ]
    return (*sweeps, *cost, *curves)


def figure(stem: str) -> FigureSpec:
    """The figure called ``stem``; ValueError naming the known ones otherwise."""
    table = {f.stem: f for f in figure_table()}
    if stem not in table:
        raise ValueError(f"unknown figure {stem!r}; known: {', '.join(table)}")
    return table[stem]


def stems(caption: str | None = None) -> list[str]:
    """Every figure stem, or those with the given caption (one workflow rule's)."""
    return [f.stem for f in figure_table() if caption is None or f.caption == caption]


def applies(spec: FigureSpec, config: dict) -> bool:
    """Whether the study ``config`` can fill the figure: its method is configured on its task, else its task is."""
    if spec.method is not None:
        return spec.task in (config["methods"].get(spec.method) or {})
    return spec.task is None or spec.task in config["tasks"]


def curve_figures() -> dict[str, str]:
    """Stem -> method of the validation-curve figures (Figs. 6-10), in paper order."""
    return {f.stem: f.method for f in figure_table() if f.curves}


def study_stems(config: dict) -> list[str]:
    """The stems of the figures the configured grid can fill (what ``rule all`` asks for)."""
    return [f.stem for f in figure_table() if applies(f, config)]
