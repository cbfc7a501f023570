"""Run records -> runs.csv, curves.csv, baseline.csv."""
import sys

sys.stderr = open(snakemake.log[0], "w")

from vlpeft.aggregate import write_tables  # noqa: E402
from vlpeft.grid import run_table  # noqa: E402

runs = run_table(snakemake.config)
table = write_tables([runs[i] for i in snakemake.params.run_ids], snakemake.input.baselines, snakemake.output.runs,
                     snakemake.output.curves, snakemake.output.baseline)
print(table["status"].value_counts().to_string(), file=sys.stderr)
