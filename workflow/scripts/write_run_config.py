"""Write a run's resolved configuration (from params, so that changed settings rerun exactly that run)."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from vlpeft.runconfig import RunConfig  # noqa: E402

RunConfig.from_dict(dict(snakemake.params.run)).save(snakemake.output[0])
