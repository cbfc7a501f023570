"""Karpathy split file -> caption records per split."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from vlpeft.data.stages import prepare_captions  # noqa: E402

out = {s: snakemake.output[s] for s in ("train", "val", "test")}
counts = prepare_captions(snakemake.input.karpathy, out, snakemake.params.expected)
print(f"caption records: {counts}", file=sys.stderr)
