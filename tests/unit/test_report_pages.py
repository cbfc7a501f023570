"""Snakemake's --report: every figure carries a caption saying what it shows, and the claims report is a rendered
page (HTML), not a markdown file to download."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import docutils.core
import jinja2
import pytest

from tests.run_rows import make_runs
from vlpeft import report
from vlpeft.plots import registry as figreg

# Snakemake renders captions with docutils' writer_name, which docutils 0.22 deprecates; so does this test.
pytestmark = pytest.mark.filterwarnings('ignore:Argument "writer_name":PendingDeprecationWarning')

REPO = Path(__file__).resolve().parents[2]
#: Every figure the pipeline can draw, and the figure number its caption must name.
STEMS = {
    "fig3": "Fig. 3",
    "fig4": "Fig. 4",
    "fig5": "Fig. 5",
    "fig5_gpu_hours": "Fig. 5",
    **{stem: f"Fig. {6 + i}" for i, stem in enumerate(figreg.curve_figures())},
}


def _rules(path: Path) -> dict[str, str]:
    text = path.read_text()
    return {m.group(1): m.group(2) for m in re.finditer(r"^rule (\w+):\n(.*?)(?=^rule |\Z)", text, re.S | re.M)}


def _stem_pattern(body: str) -> str:
    """A rule's stem constraint: a regex, or the figure registry's stems of one caption (``figreg.stems(...)``)."""
    m = re.search(r'stem="\|"\.join\(figreg\.stems\(caption="(\w+)"\)\)', body)
    return "|".join(figreg.stems(caption=m.group(1))) if m else re.search(r'stem="([^"]+)"', body).group(1)


def _rule_of(stem: str) -> tuple[str, str]:
    found = [
        (name, body)
        for name, body in _rules(REPO / "rules" / "figures.smk").items()
        if re.fullmatch(_stem_pattern(body), stem)
    ]
    assert len(found) == 1, (stem, [f[0] for f in found])
    return found[0]


def _render(caption: Path, stem: str, metric: str) -> str:
    """The caption as Snakemake renders it: Jinja with the job's wildcards and params, then reStructuredText."""
    method = figreg.curve_figures().get(stem)
    snakemake = SimpleNamespace(
        wildcards=SimpleNamespace(stem=stem),
        params=SimpleNamespace(fig={"metric": metric, "method": method}, metric=metric),
    )
    rst = (
        jinja2.Environment(undefined=jinja2.StrictUndefined)
        .from_string(caption.read_text())
        .render(snakemake=snakemake)
    )
    html = docutils.core.publish_parts(
        rst, writer_name="html", settings_overrides={"halt_level": 2, "report_level": 2}
    )["body"]
    return re.sub(r"<[^>]+>", "", html)


@pytest.mark.parametrize("stem", STEMS)
def test_every_figure_has_a_caption_saying_what_it_shows(stem: str) -> None:
    name, body = _rule_of(stem)
    m = re.search(r'report\(\s*res\("figures/\{stem\}\.png"\),.*?caption="([^"]+)"', body, re.S)
    assert m, f"rule {name}: the figure is not in the report with a caption"
    caption = (REPO / "rules" / m.group(1)).resolve()
    assert caption.is_file()
    text = " ".join(_render(caption, stem, "test_at_best_val").split())
    assert text.startswith(STEMS[stem])
    assert "test_at_best_val" in text  # the column it draws
    assert len(text) > 300
    if stem in figreg.curve_figures():
        assert figreg.curve_figures()[stem] in text


def test_the_figure_captions_differ_between_the_figures_of_one_rule() -> None:
    assert _render(REPO / "workflow/report/fig_task_grid.rst", "fig3", "paper_metric") != _render(
        REPO / "workflow/report/fig_task_grid.rst", "fig4", "paper_metric"
    )
    assert "COCO" in _render(REPO / "workflow/report/fig_task_grid.rst", "fig3", "paper_metric").split(".")[1]


def test_the_claims_report_is_in_the_report_as_a_rendered_page() -> None:
    body = _rules(REPO / "rules" / "aggregate.smk")["write_report"]
    m = re.search(r'html=report\(\s*res\("report\.html"\),\s*category="Claims",\s*caption="([^"]+)"', body)
    assert m, "write_report: results/report.html is not in the report"
    text = _render((REPO / "rules" / m.group(1)).resolve(), "", "paper_metric")
    assert "paper_metric" in text and "verdict" in text
    assert 'res("report.html")' in (REPO / "Snakefile").read_text()


def test_report_command_writes_the_html_page(tmp_path: Path) -> None:
    make_runs().to_csv(tmp_path / "runs.csv", index=False)
    out, page = tmp_path / "report.md", tmp_path / "sub" / "report.html"
    assert (
        report.main(["--runs", str(tmp_path / "runs.csv"), "--n-boot", "30", "--out", str(out), "--html", str(page)])
        == 0
    )
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<title>Claims report</title>" in html
    separators = re.findall(r"^\|(?: ?:?-+:? ?\|)+$", out.read_text(), re.M)  # one per markdown table
    assert len(separators) >= 3 and html.count("<table>") == len(separators)
    assert "<h1>" in html and "<td>" in html and "|---" not in html  # tables rendered, not left as text
    assert "http" not in html.split("<body>")[0]  # nothing fetched from elsewhere
