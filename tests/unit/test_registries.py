"""One home per concept: the method descriptions, the task table and the figure table are the only lists of the
study's vocabulary; everything else derives from them (see ../shared/style.md, "One home per concept")."""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.unit.test_grid import _load
from tests.run_rows import make_curves, make_runs
from vlpeft import grid, report, tasks
from vlpeft.methods import registry
from vlpeft.methods.registry import MethodInfo
from vlpeft.plots import figures
from vlpeft.plots import registry as figreg

REPO = Path(__file__).resolve().parents[2]
TOY = MethodInfo(
    name="toy",
    label="Toy method",
    size_label="toy width $w$",
    marker="P",
    color="#aa4499",
    composition=registry.LAYER,
    curve_figure=13,
    table_sizes=(1, 2),
)


# ---------------------------------------------------------------------------------------------------------------
# The registries agree with each other.
# ---------------------------------------------------------------------------------------------------------------
def test_implementations_and_descriptions_list_the_same_methods() -> None:
    from vlpeft.methods.base import method_names

    assert sorted(method_names()) == sorted(registry.METHODS)


def test_an_undescribed_implementation_is_refused() -> None:
    from vlpeft.methods.base import PeftMethod, register_method

    with pytest.raises(ValueError, match="unknown method 'undescribed'"):
        register_method("undescribed")(type("Undescribed", (PeftMethod,), {}))


def test_descriptions_are_complete_and_distinct() -> None:
    infos = registry.descriptions()
    assert [m.name for m in infos if not m.peft] == [registry.REFERENCE]
    for field in ("label", "color", "marker"):
        values = [getattr(m, field) for m in infos]
        assert len(set(values)) == len(values), field
    peft = [m for m in infos if m.peft]
    assert all(m.composition and m.table_sizes and m.curve_figure for m in peft)
    numbers = [m.curve_figure for m in peft]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    # The paper's grouping (Section III): prompt and prefix embed, LoRA and the adapters change the layers.
    assert list(registry.EMBEDDING_COMPOSITION) + list(registry.LAYER_COMPOSITION) == list(registry.PEFT_METHODS)


def test_task_table_is_what_the_evaluator_and_the_run_config_use() -> None:
    from vlpeft.evaluate import PRIMARY_METRIC
    from vlpeft.runconfig import PROMPT_FIELDS

    assert PRIMARY_METRIC == {t.name: t.metric for t in tasks.TASKS.values()}
    assert set(PROMPT_FIELDS) == {t.prompt_key for t in tasks.TASKS.values()}
    assert [t.figure for t in tasks.TASKS.values()] == [3, 4]
    assert [t.name for t in tasks.TASKS.values() if t.curves] == [figreg.curve_task()]


def test_schema_names_no_method_or_task() -> None:
    """The JSON schema checks the structure; the names are checked against the registries (vlpeft.grid)."""
    text = (REPO / "workflow" / "schemas" / "config.schema.yaml").read_text()
    names = [*registry.METHODS, *tasks.TASKS]
    assert not [n for n in names if re.search(rf"^\s*{n}\s*:", text, re.M)]
    schema = yaml.safe_load(text)
    for key in ("tasks", "methods"):
        assert "properties" not in schema["properties"][key], key


# ---------------------------------------------------------------------------------------------------------------
# The figure table.
# ---------------------------------------------------------------------------------------------------------------
PAPER_STEMS = [
    "fig3",
    "fig4",
    "fig5",
    "fig5_gpu_hours",
    "fig6_prompt",
    "fig7_prefix",
    "fig8_lora",
    "fig9_serial_adapter",
    "fig10_parallel_adapter",
]


def test_figure_table_is_the_papers() -> None:
    # The paper's figures, then the validation curves of the methods beyond the paper (README, "Beyond the paper").
    assert figreg.stems() == [*PAPER_STEMS, "fig11_dora", "fig12_ia3"]
    assert figreg.curve_figures() == {m.curve_stem: m.name for m in registry.descriptions() if m.curve_stem}


def test_every_figure_has_a_builder_a_caption_and_a_rule() -> None:
    rules = (REPO / "rules" / "figures.smk").read_text()
    for spec in figreg.figure_table():
        assert spec.builder in figures.BUILDERS, spec
        assert (REPO / "workflow" / "report" / f"{spec.caption}.rst").is_file(), spec
    for caption in {f.caption for f in figreg.figure_table()}:
        block = rules[rules.index(f'caption="../workflow/report/{caption}.rst"') :]
        block = block[: block.find("\nrule ")] if "\nrule " in block else block
        assert f'stem="|".join(figreg.stems(caption="{caption}"))' in block, caption
        assert ("curves=" in rules[: rules.index(f"{caption}.rst")].rsplit("\nrule ", 1)[1]) == any(
            f.curves for f in figreg.figure_table() if f.caption == caption
        ), caption


def test_study_stems_follow_the_configured_grid() -> None:
    config = _load("mini")
    assert figreg.study_stems(config) == PAPER_STEMS
    assert figreg.study_stems(_load("beyond")) == ["fig3", "fig4", "fig5", "fig5_gpu_hours", "fig11_dora", "fig12_ia3"]
    config["tasks"].pop(tasks.VQA.name)
    config["methods"][registry.LORA.name].pop(tasks.COCO.name)
    stems = figreg.study_stems(config)
    assert f"fig{tasks.VQA.figure}" not in stems and registry.LORA.curve_stem not in stems
    assert f"fig{tasks.COCO.figure}" in stems and registry.PREFIX.curve_stem in stems


def test_unknown_figure() -> None:
    with pytest.raises(ValueError, match="unknown figure 'fig99'; known: fig3, fig4"):
        figures.build_figure("fig99", make_runs())


# ---------------------------------------------------------------------------------------------------------------
# A method described in this test module alone flows through the grid, a figure and the report.
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> MethodInfo:
    from vlpeft.methods import base
    from vlpeft.methods.lora import LoRA

    monkeypatch.setitem(registry._DESCRIPTIONS, TOY.name, TOY)
    base.method_names()  # the built-in implementations first, then the toy (a LoRA under another name)
    monkeypatch.setitem(base.METHODS, TOY.name, type("Toy", (LoRA,), {"name": TOY.name}))
    return TOY


@pytest.fixture(scope="module")
def study_runs() -> pd.DataFrame:
    """The plotting tests' runs table (made before the toy is described: module scope comes first)."""
    return make_runs()


def _toy_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` plus the toy, run like LoRA."""
    lora = runs.loc[runs["method"] == registry.LORA.name]
    toy = lora.assign(
        method=TOY.name,
        run_id=lora["run_id"].str.replace(registry.LORA.name, TOY.name),
        paper_metric=lora["paper_metric"] + 1.0,
        best_val=lora["best_val"] + 1.0,
    )
    return pd.concat([runs, toy], ignore_index=True)


def test_toy_method_in_the_views(toy: MethodInfo) -> None:
    assert registry.METHODS[-1] == toy.name and registry.PEFT_METHODS[-1] == toy.name
    assert toy.name in registry.LAYER_COMPOSITION and registry.METHOD_COLORS[toy.name] == toy.color
    assert figreg.curve_figures()["fig13_toy"] == toy.name and "fig13_toy" in figreg.stems("fig_val_curves")


def test_toy_method_flows_through_the_grid(toy: MethodInfo) -> None:
    config = _load("mini")
    config["methods"][toy.name] = copy.deepcopy(config["methods"][registry.LORA.name])
    runs = grid.expand(config)
    mine = [r for r in runs if r.method == toy.name]
    lora = [r for r in runs if r.method == registry.LORA.name]
    assert len(mine) == len(lora) > 0
    assert [dataclasses.replace(r, method=registry.LORA.name) for r in mine] == lora
    resolved = grid.resolve(config, mine[0])
    assert resolved["method"] == toy.name and resolved["method_options"]["size"] == mine[0].size
    assert "fig13_toy" in figreg.study_stems(config)


def test_toy_method_flows_through_the_figures(study_runs: pd.DataFrame, toy: MethodInfo) -> None:
    runs = _toy_runs(study_runs)
    fig = figures.build_figure(f"fig{tasks.COCO.figure}", runs)
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert f"{toy.label}: vs data ratio" in titles
    row = titles.index(f"{toy.label}: vs parameter size")
    assert fig.axes[row].get_xlabel() == toy.size_label
    cost = figures.build_figure("fig5", runs)
    drawn = {line.get_label(): line for ax in cost.axes for line in figures.series_lines(ax)}
    assert drawn[toy.label].get_color() == toy.color and drawn[toy.label].get_marker() == toy.marker
    curves = figures.build_figure("fig13_toy", runs, make_curves(runs))
    assert toy.label in curves.get_suptitle()


def test_toy_method_flows_through_the_report(study_runs: pd.DataFrame, toy: MethodInfo) -> None:
    text = report.claims_report(_toy_runs(study_runs), n_boot=20, claims=[c for c in report.CLAIMS if c.id == "4a"])
    rows = [line for line in text.splitlines() if line.startswith(f"| {toy.label} |")]
    assert len(rows) == len(tasks.TASKS) and all("| layer |" in r for r in rows)


# ---------------------------------------------------------------------------------------------------------------
# No method or task name outside the registries, the configs and the tests.
# ---------------------------------------------------------------------------------------------------------------
#: (file, name, reason): quoted names that must stay where they are.
ALLOWED: tuple[tuple[str, str, str], ...] = (
    ("src/vlpeft/data/datasets.py", "prompt", "the records' text-input field and the batch key, not the method"),
    ("src/vlpeft/data/stages.py", "prompt", "the pre-training records' text-input field, not the method"),
    ("src/vlpeft/data/synthetic.py", "coco", "the Karpathy file format's own 'dataset' value, not the task name"),
)
SCANNED = ("src", "rules", "workflow", "Snakefile")
#: The registries themselves, where the names live.
HOMES = ("src/vlpeft/methods/", "src/vlpeft/tasks.py")


def _files() -> list[Path]:
    out = []
    for top in SCANNED:
        path = REPO / top
        out += [path] if path.is_file() else [p for p in sorted(path.rglob("*")) if p.is_file()]
    return [
        p for p in out if p.suffix in (".py", ".smk", ".yaml", ".yml", ".rst", "") and "__pycache__" not in p.parts
    ]


def test_no_method_or_task_name_outside_its_home() -> None:
    names = [*registry.METHODS, *tasks.TASKS]
    pattern = re.compile(r"""(["'])(%s)\1""" % "|".join(map(re.escape, names)))
    allowed = {(f, n) for f, n, _ in ALLOWED}
    found, used = [], set()
    for path in _files():
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith(HOMES):
            continue
        for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for m in pattern.finditer(line):
                if (rel, m.group(2)) in allowed:
                    used.add((rel, m.group(2)))
                else:
                    found.append(f"{rel}:{i}: {line.strip()}")
    assert not found, "method or task names outside methods/ and tasks.py:\n" + "\n".join(found)
    assert used == allowed, f"exceptions no longer needed: {sorted(allowed - used)}"
