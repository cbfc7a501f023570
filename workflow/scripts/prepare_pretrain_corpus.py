"""The synthetic pre-training corpus as captioning + prefix-LM records."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from vlpeft.data.stages import prepare_pretrain  # noqa: E402

print(f"{prepare_pretrain(snakemake.input[0], snakemake.output[0])} pre-training records", file=sys.stderr)
