"""Unpack the COCO image archives next to each other, checking their file counts."""

import logging
import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")
logging.basicConfig(level=logging.INFO, stream=sys.stderr)

from vlpeft.data.download import unpack  # noqa: E402

dest = Path(snakemake.output[0]).parent
for split in ("train", "val"):
    unpack(snakemake.input[split], dest, expected_files=snakemake.params.expected[split], member_glob="*.jpg")
