"""Draw one figure from the results tables (PDF + PNG), refusing tables of another study or configuration."""

import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from vlpeft.plots.figures import build_figure, save_figure  # noqa: E402
from vlpeft.plots.tables import load_baseline, load_curves, load_runs  # noqa: E402
from vlpeft.provenance import check_expected, table_provenance  # noqa: E402

runs = load_runs(snakemake.input.runs)
check_expected(table_provenance(runs), snakemake.params.fig["study"], snakemake.input.runs)
curves = load_curves(snakemake.input.curves) if "curves" in snakemake.input.keys() else None
fig = build_figure(
    snakemake.wildcards.stem, runs, curves, load_baseline(snakemake.input.baseline), snakemake.params.fig["metric"]
)
save_figure(fig, Path(snakemake.output.pdf).with_suffix(""))
