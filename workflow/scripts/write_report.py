"""The claims report from the runs table (markdown, and the same as an HTML page for Snakemake's --report),
refusing a table of another study or configuration."""

import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from vlpeft.htmlpage import markdown_page  # noqa: E402
from vlpeft.plots.tables import load_baseline, load_runs  # noqa: E402
from vlpeft.provenance import check_expected, table_provenance  # noqa: E402
from vlpeft.report import claims_report  # noqa: E402

runs = load_runs(snakemake.input.runs)
check_expected(table_provenance(runs), snakemake.params.study, snakemake.input.runs)
text = claims_report(runs, load_baseline(snakemake.input.baseline), value=snakemake.params.metric)
Path(snakemake.output.md).write_text(text)
Path(snakemake.output.html).write_text(markdown_page(text, "Claims report"))
