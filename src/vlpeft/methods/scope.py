"""Which part of the model a method trains, answered without torch: the workflow asks while it builds its DAG.

Only the ViT matters so far: a run that trains it must read images; every other run may read the ViT's output
from the visual-feature store (``vlpeft.data.features``).
"""

from __future__ import annotations

# Methods that train every parameter, whatever their options.
TRAIN_EVERYTHING = frozenset({"full"})
VISUAL_ENCODER = "visual_encoder"


def trains_visual_encoder(name: str, options: dict) -> bool:
    """Whether method ``name`` with ``options`` changes the ViT's output in training (it trains every parameter, or
    ``visual_encoder`` is among its ``targets``)."""
    return name in TRAIN_EVERYTHING or VISUAL_ENCODER in (options.get("targets") or ())
