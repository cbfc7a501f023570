"""The frozen ViT run once over every image of the study: the visual-feature store every frozen-ViT run reads."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")
logging.basicConfig(level=logging.INFO, stream=sys.stderr)

import torch  # noqa: E402

from vlpeft.data.features import extract_for_study  # noqa: E402

torch.set_num_threads(snakemake.threads)
counts = extract_for_study(snakemake.params.spec, snakemake.input.records, snakemake.output.store)
print(f"feature store: {counts}", file=sys.stderr)
