"""Trainable parameter counts of every method and size of the paper's Table II, from the closed forms (and of the
methods beyond the paper at the sizes of config/beyond.yaml).

    python -m vlpeft.methods.table [--preset base] [--format md|csv]

One row per method x size x classifier flag (plus full fine-tuning), with the count as a percentage of the whole
model. Prefix-tuning trains through its reparametrising MLP; the row also gives what is left after ``merge``.
The counts come from each method's ``closed_form_count`` (tested against the instantiated model), so building the
table needs no model.
"""

from __future__ import annotations

from ..console import announce_main
from ..console import run as run_cli

announce_main(__name__, "python -m vlpeft.methods.table", "starting (loading torch)")

import argparse
import csv
import io
import sys
from collections.abc import Mapping, Sequence

from ..model.config import PRESETS, MPlugConfig
from ..model.config import preset as model_preset
from .base import build_method
from .full import model_count
from .registry import REFERENCE, descriptions

# Size knob values of the paper's Table II (beyond the paper: config/beyond.yaml's), from each method's description.
TABLE_II_SIZES: dict[str, tuple[int, ...]] = {m.name: m.table_sizes for m in descriptions() if m.peft}

COLUMNS = ("method", "size", "classifier", "trainable", "percent", "merged", "merged_percent")


def parameter_table(
    preset: str | MPlugConfig = "base", sizes: Mapping[str, Sequence[int]] | None = None
) -> list[dict]:
    """Rows of trainable parameter counts.

    Args:
        preset: A model preset name, or a model config.
        sizes: Size knob values per method; defaults to Table II. Full fine-tuning is always added (size None).

    Returns:
        One dict per method x size x classifier flag with the keys of ``COLUMNS``: ``trainable`` is the count
        during training, ``percent`` its share of the whole model in percent; ``merged`` and ``merged_percent``
        are the counts left after ``merge`` for prefix-tuning and None for the other methods.
    """
    mc = model_preset(preset) if isinstance(preset, str) else preset
    total = model_count(mc)
    rows: list[dict] = []
    for name, values in (TABLE_II_SIZES if sizes is None else sizes).items():
        for size in values:
            for classifier in (False, True):
                method = build_method(name, size=size, classifier=classifier)
                trainable = method.closed_form_count(mc)
                merged = method.merged_count(mc)
                rows.append(
                    {
                        "method": name,
                        "size": size,
                        "classifier": classifier,
                        "trainable": trainable,
                        "percent": 100.0 * trainable / total,
                        "merged": merged,
                        "merged_percent": None if merged is None else 100.0 * merged / total,
                    }
                )
    rows.append(
        {
            "method": REFERENCE,
            "size": None,
            "classifier": True,
            "trainable": total,
            "percent": 100.0,
            "merged": None,
            "merged_percent": None,
        }
    )
    return rows


def _cell(value: object, column: str, markdown: bool) -> str:
    if value is None:
        return ""
    if column in ("percent", "merged_percent"):
        return f"{value:.4f}"
    if column in ("trainable", "merged") and markdown:
        return f"{value:,}"
    return str(value)


def format_table(rows: list[dict], fmt: str = "md") -> str:
    """Render rows as a Markdown table or CSV."""
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow([_cell(row[c], c, markdown=False) for c in COLUMNS])
        return buf.getvalue()
    if fmt != "md":
        raise ValueError(f"unknown format {fmt!r}; use 'md' or 'csv'")
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(row[c], c, markdown=True) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlpeft.methods.table", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--preset",
        default="base",
        choices=sorted(PRESETS),
        help="model size the counts are for (default: %(default)s, mPLUG-base)",
    )
    parser.add_argument(
        "--format", choices=("md", "csv"), default="md", help="markdown table or CSV (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    rows = parameter_table(args.preset)
    if args.format == "md":
        print(f"Model total ({args.preset}): {model_count(model_preset(args.preset)):,} parameters\n")
    sys.stdout.write(format_table(rows, args.format))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main, "python -m vlpeft.methods.table"))
