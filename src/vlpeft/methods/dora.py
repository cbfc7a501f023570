"""DoRA, weight-decomposed low-rank adaptation (Liu et al., ICML 2024, arXiv:2402.09353), beyond the paper.

DoRA splits each adapted weight into a magnitude and a direction: ``W' = m * (W + s B A) / ||W + s B A||``, the
norm taken per output row (over the input dimension: the norm of each row of ``nn.Linear.weight``, as
huggingface/peft's ``DoraLinearLayer`` and the reference code NVlabs/DoRA compute it). ``m`` starts at ``||W||``
and ``B`` at zero, so the model is unchanged at step 0. Following the paper's section 4.3 (and peft), the norm is
treated as a constant in the backward pass, which saves memory and changes the gradient only in second order.

Placement, rank and scaling are LoRA's (:mod:`vlpeft.methods.lora`): W_q and W_k of every targeted attention, the
connected fusion layers' idle cross-attention skipped, optionally the query and key rows of the ViT's fused qkv
projection; scaling 1 by default (the study's eq. 13), ``alpha / r`` with ``alpha``. DoRA at rank r therefore
trains LoRA's parameters at rank r plus one magnitude per adapted output row, so the two share the size axis.
``merge`` folds magnitude and direction into the frozen weight.
"""

from __future__ import annotations

import torch
from torch import nn

from ..model.config import MPlugConfig
from .base import register_method
from .lora import LoRA, LoRALinear


class DoRALinear(LoRALinear):
    """Wraps a Linear: rows ``[row_start, row_end)`` become ``m / ||W + s B A|| * ((W + s B A) x) + bias``."""

    def __init__(
        self, base_layer: nn.Linear, rank: int, alpha: float | None = None, rows: tuple[int, int] | None = None
    ) -> None:
        super().__init__(base_layer, rank, alpha, rows)
        a, b = self.rows
        with torch.no_grad():
            norm = torch.linalg.norm(base_layer.weight[a:b].float(), dim=1).to(base_layer.weight.dtype)
        self.magnitude = nn.Parameter(norm.clone())
        self._merge_factor: torch.Tensor | None = None

    def weight_norm(self) -> torch.Tensor:
        """``||W + s B A||`` per adapted row, without a gradient (DoRA section 4.3)."""
        a, b = self.rows
        with torch.no_grad():
            return torch.linalg.norm(self.base_layer.weight[a:b] + self.delta_weight(), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        if self.merged:
            return y
        a, b = self.rows
        bias = self.base_layer.bias[a:b] if self.base_layer.bias is not None else 0.0
        direction = (y[..., a:b] - bias) + self.lora_B(self.lora_A(x)) * self.scaling  # (W + s B A) x
        adapted = (self.magnitude / self.weight_norm()) * direction + bias
        if (a, b) == (0, y.shape[-1]):
            return adapted
        return torch.cat([y[..., :a], adapted, y[..., b:]], dim=-1)

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            a, b = self.rows
            w = self.base_layer.weight
            factor = (self.magnitude / self.weight_norm()).to(w.dtype)
            w[a:b] = factor[:, None] * (w[a:b] + self.delta_weight().to(w.dtype))
            self._merge_factor = factor
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            a, b = self.rows
            w = self.base_layer.weight
            w[a:b] = w[a:b] / self._merge_factor[:, None] - self.delta_weight().to(w.dtype)
            self._merge_factor = None
            self.merged = False


@register_method("dora")
class DoRA(LoRA):
    """LoRA's placement and options with the DoRA update; ``size`` is the rank r."""

    layer_class = DoRALinear

    def method_count(self, mc: MPlugConfig) -> int:
        n, vit_blocks = self.adapted_projections(mc)
        magnitudes = n * mc.hidden_size + vit_blocks * 2 * mc.vision_width  # one per adapted output row
        return super().method_count(mc) + magnitudes
