"""Train the mini study's WordPiece vocabulary (bert-base-uncased format) on its texts."""

import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from vlpeft.data import synthetic  # noqa: E402
from vlpeft.tokenizer import train_vocab  # noqa: E402

texts = synthetic.corpus(Path(snakemake.input.karpathy).parent)
train_vocab(texts, snakemake.output[0], vocab_size=snakemake.params.vocab_size)
print(f"vocabulary trained on {len(texts)} texts", file=sys.stderr)
