"""(IA)^3, infused adapter by inhibiting and amplifying inner activations (Liu et al., NeurIPS 2022,
arXiv:2205.05638, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context Learning"),
beyond the paper.

Three learned vectors per block rescale activations element-wise: the keys ``l_k * (W_k x + b_k)`` and values
``l_v * (W_v x + b_v)`` of every attention, and the FFN's intermediate activations ``W_2 (l_ff * gelu(W_1 x))``
(the paper's eq. in section 3.3; huggingface/peft calls the FFN target a "feedforward" module and scales the input
of its down-projection, here ``output.dense``). The vectors start at one, so the model is unchanged at step 0.
Targets as in the study: every attention of the text encoder, fusion and decoder blocks (self- and
cross-attention; the connected fusion layers' idle cross-attention skipped), optionally the ViT (the key and value
rows of its fused qkv projection, and the input of ``mlp.fc2``). ``merge`` folds the vectors into the weights:
rows of W_k, W_v and their biases, columns of W_2.

(IA)^3 has no size knob: one vector per target, fixed by the model's widths. Its ``size`` is therefore 1 and
nothing else ("one vector per target"); the figures place it at its trainable-parameter count, a single point on
the vs-size panels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..model.config import MPlugConfig
from .base import MethodConfig, PeftMethod, WrappedLinear, n_target_layers, register_method, target_layers
from .full import VIT_MLP_RATIO


class IA3Linear(WrappedLinear):
    """Wraps a Linear: rescales its output rows ``[row_start, row_end)`` (keys, values), or with ``on_input=True``
    its input features (the FFN's intermediate activations) by a learned vector that starts at one."""

    def __init__(self, base_layer: nn.Linear, on_input: bool = False, rows: tuple[int, int] | None = None) -> None:
        if on_input and rows is not None:
            raise ValueError("IA3Linear: rows select output rows; an input-side vector covers every input feature")
        super().__init__(base_layer, rows)
        self.on_input = on_input
        width = base_layer.in_features if on_input else self.rows[1] - self.rows[0]
        w = base_layer.weight
        self.ia3_scale = nn.Parameter(torch.ones(width, device=w.device, dtype=w.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base_layer(x)
        if self.on_input:
            return self.base_layer(x * self.ia3_scale)
        y = self.base_layer(x)
        a, b = self.rows
        if (a, b) == (0, y.shape[-1]):
            return y * self.ia3_scale
        return torch.cat([y[..., :a], y[..., a:b] * self.ia3_scale, y[..., b:]], dim=-1)

    @torch.no_grad()
    def _rescale(self, factor: torch.Tensor) -> None:
        w, bias = self.base_layer.weight, self.base_layer.bias
        factor = factor.to(w.dtype)
        if self.on_input:
            w.mul_(factor[None, :])  # columns: W (l * x) = (W diag(l)) x; the bias is untouched
            return
        a, b = self.rows
        w[a:b] *= factor[:, None]
        if bias is not None:
            bias[a:b] *= factor

    def merge(self) -> None:
        if not self.merged:
            self._rescale(self.ia3_scale)
            self.merged = True

    def unmerge(self) -> None:
        if self.merged:
            self._rescale(1.0 / self.ia3_scale)
            self.merged = False


@dataclass(frozen=True)
class IA3Config(MethodConfig):
    """``size`` must be 1: (IA)^3 has no size knob (one vector per target, see the module docstring)."""

    size: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.size != 1:
            raise ValueError(
                f"size must be 1 for (IA)^3 (one scaling vector per target, no size knob), got {self.size!r}"
            )


@register_method("ia3")
class IA3(PeftMethod):
    Config = IA3Config

    def inject(self, model: nn.Module) -> None:
        # A connected-attention fusion layer never runs its cross-attention (see LoRA): no vectors there.
        fusion = list(model.fusion_encoder.encoder)
        idle = {id(fusion[i].crossattention) for i in model.fusion_encoder.connected}
        for layer in target_layers(model, self.cfg.targets):
            cross = layer.crossattention
            for attn in [layer.attention] + ([cross] if cross is not None and id(cross) not in idle else []):
                attn.self.key = IA3Linear(attn.self.key)
                attn.self.value = IA3Linear(attn.self.value)
            layer.output.dense = IA3Linear(layer.output.dense, on_input=True)
        if "visual_encoder" in self.cfg.targets:
            for block in model.visual_encoder.blocks:
                w = block.attn.qkv.in_features
                block.attn.qkv = IA3Linear(block.attn.qkv, rows=(w, 3 * w))  # key and value rows
                block.mlp.fc2 = IA3Linear(block.mlp.fc2, on_input=True)

    def method_count(self, mc: MPlugConfig) -> int:
        d, i = mc.hidden_size, mc.intermediate_size
        plain, cross = n_target_layers(mc, self.cfg.targets)
        idle = len(mc.fusion_connected_layers) if "fusion_encoder" in self.cfg.targets else 0
        attentions = plain + 2 * cross - idle
        text = attentions * 2 * d + (plain + cross) * i  # l_k, l_v per attention; l_ff per block
        vit = mc.vision_layers * (2 * mc.vision_width + VIT_MLP_RATIO * mc.vision_width)  # l_k, l_v; l_ff at fc2
        return text + (vit if "visual_encoder" in self.cfg.targets else 0)

    def merge(self, model: nn.Module) -> None:
        for m in model.modules():
            if isinstance(m, IA3Linear):
                m.merge()
