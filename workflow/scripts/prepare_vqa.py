"""VQAv2 questions + annotations -> QA records per Karpathy split."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from vlpeft.data.stages import prepare_vqa  # noqa: E402

out = {s: snakemake.output[s] for s in ("train", "val", "test")}
counts = prepare_vqa(
    snakemake.input.karpathy, snakemake.input.questions, snakemake.input.annotations, out, snakemake.params.expected
)
print(f"QA records: {counts}", file=sys.stderr)
