"""The claims report (markdown) from the runs table."""
import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from vlpeft.plots.tables import load_baseline, load_runs  # noqa: E402
from vlpeft.report import claims_report  # noqa: E402

text = claims_report(load_runs(snakemake.input.runs), load_baseline(snakemake.input.baseline),
                     value=snakemake.params.metric)
Path(snakemake.output[0]).write_text(text)
