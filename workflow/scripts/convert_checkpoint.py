"""Convert the official checkpoint once into the slim file every run memory-maps, with the load report beside it."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from vlpeft.model.slim import convert_for_study  # noqa: E402

summary = convert_for_study(
    snakemake.input.checkpoint,
    snakemake.input.vocab,
    snakemake.params.model,
    snakemake.output.weights,
    snakemake.output.report,
)
print(summary, file=sys.stderr)
