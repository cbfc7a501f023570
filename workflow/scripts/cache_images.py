"""Resize every image once into a shared uint8 cache."""

import logging
import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")
logging.basicConfig(level=logging.INFO, stream=sys.stderr)

from vlpeft.data.stages import cache_images  # noqa: E402

root = Path(snakemake.input.images).parent
counts = cache_images(
    root,
    snakemake.input.records,
    int(snakemake.wildcards.size),
    snakemake.output.cache,
    skip_bad=snakemake.params.skip_bad,
)
print(f"image cache: {counts}", file=sys.stderr)
