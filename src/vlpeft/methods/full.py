"""Full fine-tuning: every parameter trains (the study's reference point)."""

from __future__ import annotations

from torch import nn

from ..model.config import MPlugConfig
from .base import PeftMethod, register_method


@register_method("full")
class FullFineTuning(PeftMethod):
    def inject(self, model: nn.Module) -> None:
        for p in model.parameters():
            p.requires_grad_(True)

    def method_count(self, mc: MPlugConfig) -> int:
        from ..model.mplug import MPlug

        # The head is already part of "every parameter"; nothing is added for the classifier flag.
        return sum(p.numel() for p in MPlug(mc).parameters())

    def closed_form_count(self, mc: MPlugConfig) -> int:
        return self.method_count(mc)
