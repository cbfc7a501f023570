"""Write the synthetic mini study's raw files (Karpathy JSON, VQAv2 JSONs, JPEGs)."""

import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from vlpeft.data import synthetic  # noqa: E402

p = snakemake.params.synthetic
root = Path(snakemake.output.karpathy).parent
counts = synthetic.generate(root, p["train_images"], p["val_images"], p["test_images"], seed=p["seed"])
print(f"synthetic study: {counts}", file=sys.stderr)
