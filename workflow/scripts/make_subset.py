"""Nested fractional subset of the training pairs."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from vlpeft.data.stages import make_subset  # noqa: E402

p = snakemake.params.subset
n = make_subset(snakemake.wildcards.task, snakemake.input.train, p["ratio"], p["seed"], snakemake.output[0])
print(f"{snakemake.wildcards.task} ratio {p['ratio']}: {n} pairs", file=sys.stderr)
