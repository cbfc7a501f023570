"""Which part of the model a method trains, answered without torch: the workflow asks while it builds its DAG.

Only the ViT matters so far: a run that trains it must read images; every other run may read the ViT's output
from the visual-feature store (``vlpeft.data.features``).
"""

from __future__ import annotations

from .registry import is_peft

VISUAL_ENCODER = "visual_encoder"


def trains_visual_encoder(name: str, options: dict) -> bool:
    """Whether method ``name`` with ``options`` changes the ViT's output in training (it trains every parameter: full fine-tuning, or
    ``visual_encoder`` is among its ``targets``)."""
    return not is_peft(name) or VISUAL_ENCODER in (options.get("targets") or ())
