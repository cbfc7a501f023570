"""Score the untuned initial model on the task's evaluation splits."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")
logging.basicConfig(level=logging.INFO, stream=sys.stderr)

import torch  # noqa: E402

from vlpeft.records import write_json  # noqa: E402
from vlpeft.runconfig import RunConfig  # noqa: E402
from vlpeft.train import evaluate_untuned  # noqa: E402

torch.set_num_threads(snakemake.threads)
write_json(evaluate_untuned(RunConfig.from_dict(dict(snakemake.params.run))), snakemake.output[0])
