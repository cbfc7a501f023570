"""Nested fractional subsets of the training pairs (image-caption pairs or QA pairs).

One seeded permutation of all pairs; the subset for ratio r is its first ``round(r * N)`` entries (at least
one), so every smaller ratio's subset lies inside every larger one's and ratios differ only in data size.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from ..files import read_json, record_digest


def check_ratio(ratio: float) -> float:
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0 < ratio <= 1:
        raise ValueError(f"data ratio must be in (0, 1], got {ratio!r}")
    return float(ratio)


def caption_pairs(records: list[dict]) -> list[tuple[int, int]]:
    """(image record index, reference index) for every caption."""
    return [(i, j) for i, r in enumerate(records) for j in range(len(r["references"]))]


def subset(n_items: int, ratio: float, seed: int) -> list[int]:
    """Indices of the nested subset; sorted so that reading the records stays sequential."""
    check_ratio(ratio)
    if n_items <= 0:
        raise ValueError(f"no items to draw a subset of ratio {ratio} from")
    order = list(range(n_items))
    random.Random(seed).shuffle(order)
    k = max(1, round(ratio * n_items))
    return sorted(order[:k])


def write_subset(path: str | Path, task: str, ratio: float, seed: int, items: list) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"task": task, "ratio": ratio, "seed": seed, "size": len(items), "items": items}))
    tmp.replace(path)
    record_digest(path)  # the runs reading it take its content digest from the sidecar


def read_subset(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"subset file not found: {path}")
    return read_json(path, "delete it and rerun make_subset")
