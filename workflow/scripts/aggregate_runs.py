"""Run records -> runs.csv, curves.csv, baseline.csv (records of another configuration are refused)."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from vlpeft.aggregate import write_tables  # noqa: E402
from vlpeft.grid import run_digests, run_table  # noqa: E402

runs = run_table(snakemake.config)
table = write_tables(
    [runs[i] for i in snakemake.params.run_ids],
    snakemake.input.baselines,
    snakemake.output.runs,
    snakemake.output.curves,
    snakemake.output.baseline,
    study=snakemake.params.study,
    digests=run_digests(snakemake.config),
)
print(table["status"].value_counts().to_string(), file=sys.stderr)
