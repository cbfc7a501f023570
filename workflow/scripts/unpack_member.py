"""Extract named files from downloaded archives (or copy a plain download) to their output paths."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")
logging.basicConfig(level=logging.INFO, stream=sys.stderr)

from vlpeft.data.stages import extract_files  # noqa: E402

extract_files(list(snakemake.input), list(snakemake.output))
