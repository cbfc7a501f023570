"""Samples, FLOPs, predicted GPU-hours and the SLURM time limit of every run (read by the training rule)."""

import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from vlpeft.cost import write_predictions  # noqa: E402

doc = write_predictions(dict(snakemake.params.study), Path(snakemake.input.settings).parent, snakemake.output[0])
print(f"{len(doc['runs'])} runs; {doc['source']}", file=sys.stderr)
