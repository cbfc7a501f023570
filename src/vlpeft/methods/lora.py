"""LoRA (Hu et al., ICLR 2022, arXiv:2106.09685), eqs. 10-15 of the study.

``W x + s * B A x`` on W_q and W_k of every targeted multi-head attention, self- and cross-attention. The study's
eq. 13 is ``Phi = B A``: scaling ``s = 1`` (the default, ``alpha=None``). Hu et al.'s ``s = alpha / r`` is an option
(``alpha``); it makes the update's size depend on the rank (8x at r=2, 0.5x at r=32 with alpha=16), which would mix
the step size into the study's rank sweep. A is Kaiming-uniform (as huggingface/peft and the LoRA reference code),
B is zero, so the model is unchanged at step 0. ``merge`` folds B A into the frozen weight. On the ViT (optional target) LoRA enters the fused ``qkv``
projection's query and key rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..model.config import MPlugConfig
from .base import MethodConfig, PeftMethod, WrappedLinear, n_target_layers, register_method, target_layers


def lora_scaling(rank: int, alpha: float | None) -> float:
    """The factor on ``B A``: 1 (eq. 13) without ``alpha``, Hu et al.'s ``alpha / r`` with it."""
    return 1.0 if alpha is None else alpha / rank


class LoRALinear(WrappedLinear):
    """Wraps a Linear: base output plus the low-rank update on output rows ``[row_start, row_end)``."""

    def __init__(
        self, base_layer: nn.Linear, rank: int, alpha: float | None = None, rows: tuple[int, int] | None = None
    ) -> None:
        super().__init__(base_layer, rows)
        out = self.rows[1] - self.rows[0]
        self.lora_A = nn.Linear(base_layer.in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, out, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.lora_A.to(base_layer.weight.device)
        self.lora_B.to(base_layer.weight.device)
        self.scaling = lora_scaling(rank, alpha)

    def delta_weight(self) -> torch.Tensor:
        return self.lora_B.weight @ self.lora_A.weight * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        if self.merged:
            return y
        delta = self.lora_B(self.lora_A(x)) * self.scaling
        a, b = self.rows
        if (a, b) == (0, y.shape[-1]):
            return y + delta
        return torch.cat([y[..., :a], y[..., a:b] + delta, y[..., b:]], dim=-1)

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            a, b = self.rows
            self.base_layer.weight[a:b] += self.delta_weight().to(self.base_layer.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            a, b = self.rows
            self.base_layer.weight[a:b] -= self.delta_weight().to(self.base_layer.weight.dtype)
            self.merged = False


@dataclass(frozen=True)
class LoRAConfig(MethodConfig):
    """``size`` is the rank r; ``alpha``: None for the study's eq. 13 (scaling 1), a number for Hu et al.'s
    scaling ``alpha / r``."""

    alpha: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.alpha is not None and (isinstance(self.alpha, bool) or not self.alpha > 0):
            raise ValueError(f"alpha must be a positive number or null (scaling 1, eq. 13), got {self.alpha!r}")


@register_method("lora")
class LoRA(PeftMethod):
    Config = LoRAConfig
    #: The wrapper put around each adapted projection (a subclass may swap in a variant of the update).
    layer_class: type[LoRALinear] = LoRALinear

    def inject(self, model: nn.Module) -> None:
        r, alpha = self.cfg.size, self.cfg.alpha
        # A connected-attention fusion layer never runs its cross-attention: LoRA there would be counted as
        # trainable yet never receive a gradient.
        fusion = list(model.fusion_encoder.encoder)
        idle = {id(fusion[i].crossattention) for i in model.fusion_encoder.connected}
        for layer in target_layers(model, self.cfg.targets):
            cross = layer.crossattention
            attns = [layer.attention] + ([cross] if cross is not None and id(cross) not in idle else [])
            for attn in attns:
                attn.self.query = self.layer_class(attn.self.query, r, alpha)
                attn.self.key = self.layer_class(attn.self.key, r, alpha)
        if "visual_encoder" in self.cfg.targets:
            for block in model.visual_encoder.blocks:
                d = block.attn.qkv.in_features
                block.attn.qkv = self.layer_class(block.attn.qkv, r, alpha, rows=(0, 2 * d))

    def adapted_projections(self, mc: MPlugConfig) -> tuple[int, int]:
        """(adapted text-side d x d projections, adapted ViT blocks) for the configured targets."""
        plain, cross = n_target_layers(mc, self.cfg.targets)
        idle = len(mc.fusion_connected_layers) if "fusion_encoder" in self.cfg.targets else 0
        n = 2 * plain + 4 * cross - 2 * idle  # q, k per attention; no cross-attention in connected layers
        return n, (mc.vision_layers if "visual_encoder" in self.cfg.targets else 0)

    def method_count(self, mc: MPlugConfig) -> int:
        r, d = self.cfg.size, mc.hidden_size
        n, vit_blocks = self.adapted_projections(mc)
        vit = vit_blocks * r * (mc.vision_width + 2 * mc.vision_width)  # A: r x w, B: 2w x r (q, k rows)
        return n * r * (d + d) + vit

    def record_info(self) -> dict:
        rule = "eq. 13: Phi = BA (scaling 1)" if self.cfg.alpha is None else "Hu et al.: alpha / r"
        return {"scaling": lora_scaling(self.cfg.size, self.cfg.alpha), "scaling_rule": rule}

    def merge(self, model: nn.Module) -> None:
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.merge()
