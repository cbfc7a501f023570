"""Extract named files from downloaded archives (or copy a plain download) to their output paths."""
import shutil
import sys
import zipfile
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

for out in snakemake.output:
    name = Path(out).name
    for archive in snakemake.input:
        if not zipfile.is_zipfile(archive):
            if len(snakemake.input) == 1:
                shutil.copyfile(archive, out + ".tmp")
                Path(out + ".tmp").replace(out)
                break
            continue
        with zipfile.ZipFile(archive) as z:
            members = [m for m in z.namelist() if Path(m).name == name]
            if members:
                with z.open(members[0]) as src, open(out + ".tmp", "wb") as dst:
                    shutil.copyfileobj(src, dst)
                Path(out + ".tmp").replace(out)
                break
    else:
        raise FileNotFoundError(f"{name} is in none of {list(snakemake.input)}")
    print(f"wrote {out}", file=sys.stderr)
