"""One verified, resumable download (URL, size and checksums from the config)."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")
logging.basicConfig(level=logging.INFO, stream=sys.stderr)

from vlpeft.data.download import download  # noqa: E402

spec = snakemake.params.spec
download(
    spec["url"],
    snakemake.output[0],
    md5=spec.get("md5"),
    sha256=spec.get("sha256"),
    size=spec.get("size"),
    checksum_record=snakemake.params.checksums,
)
