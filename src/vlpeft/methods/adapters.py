"""Serial (Houlsby et al., ICML 2019) and parallel (He et al., ICLR 2022) bottleneck adapters, eqs. 4-8.

Both use A(x) = ReLU(x W_down) W_up (+ x for the serial form), with biases, W_up and its bias zero-initialised so
the model is unchanged at step 0.
- serial: after the multi-head attention's output projection and after the FFN's output projection, before the
  residual and LayerNorm (eq. 5). In blocks with cross-attention the adapters sit after the self-attention and
  after the FFN: two adapters per block, as eq. 5 counts them.
- parallel: beside the multi-head attention and beside the FFN, reading the sub-layer's input and adding to its
  output before the residual and LayerNorm (eqs. 6-7, in He et al.'s form ``LN(x + MHA(x) + f(x))``; the paper's
  eq. 8 applied literally would add the residual twice and change the pre-trained model at step 0).
On the ViT (optional target, serial only) the serial adapter wraps ``attn.proj`` and ``mlp.fc2``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..model.config import MPlugConfig
from .base import PeftMethod, n_target_layers, register_method, target_layers


class Bottleneck(nn.Module):
    """f(x) = ReLU(x W_down + b) W_up + c, with W_up, c zero at init."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, hidden)
        self.up = nn.Linear(hidden, dim)
        nn.init.normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(torch.relu(self.down(x)))


class SerialAdapterLinear(nn.Module):
    """Wraps a Linear: y = base(x); y + f(y)."""

    def __init__(self, base_layer: nn.Linear, hidden: int) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.adapter = Bottleneck(base_layer.out_features, hidden).to(base_layer.weight.device)

    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        return y + self.adapter(y)


def _adapter_count(d: int, hidden: int) -> int:
    return 2 * d * hidden + hidden + d


@register_method("serial_adapter")
class SerialAdapter(PeftMethod):
    def inject(self, model: nn.Module) -> None:
        for layer in target_layers(model, self.cfg.targets):
            layer.attention.output.dense = SerialAdapterLinear(layer.attention.output.dense, self.cfg.size)
            layer.output.dense = SerialAdapterLinear(layer.output.dense, self.cfg.size)
        if "visual_encoder" in self.cfg.targets:
            for block in model.visual_encoder.blocks:
                block.attn.proj = SerialAdapterLinear(block.attn.proj, self.cfg.size)
                block.mlp.fc2 = SerialAdapterLinear(block.mlp.fc2, self.cfg.size)

    def method_count(self, mc: MPlugConfig) -> int:
        plain, cross = n_target_layers(mc, self.cfg.targets)
        vit = 2 * mc.vision_layers * _adapter_count(mc.vision_width, self.cfg.size)
        return 2 * (plain + cross) * _adapter_count(mc.hidden_size, self.cfg.size) + (
            vit if "visual_encoder" in self.cfg.targets else 0
        )


@register_method("parallel_adapter")
class ParallelAdapter(PeftMethod):
    supported_targets = ("text_encoder", "fusion_encoder", "text_decoder")

    def inject(self, model: nn.Module) -> None:
        for layer in target_layers(model, self.cfg.targets):
            dev = layer.output.dense.weight.device
            d = layer.output.dense.out_features
            layer.attention.output.adapter_parallel = Bottleneck(d, self.cfg.size).to(dev)
            layer.output.adapter_parallel = Bottleneck(d, self.cfg.size).to(dev)

    def method_count(self, mc: MPlugConfig) -> int:
        plain, cross = n_target_layers(mc, self.cfg.targets)
        return 2 * (plain + cross) * _adapter_count(mc.hidden_size, self.cfg.size)
