"""The OpenAI-CLIP ViT that mPLUG uses, owned here so that building the model needs no timm (whose import, with the
torchvision it pulls in, costs a run about 2 s: most of a mini-study run's start).

Parameter names and shapes are those of timm's ``VisionTransformer`` as ``vit_base_patch16_clip_quickgelu_224``
configures it (``pre_norm=True``, QuickGELU, LayerNorm eps 1e-5, no head), so the official checkpoint converts with
timm's OpenAI-CLIP key map (``vlpeft.model.checkpoint``) and weights move between the two unchanged; the forward
computes the same operations in the same order, and ``tests/unit/test_vit.py`` checks it equals timm's exactly.

``forward_features``: conv patch embedding (no bias) -> [CLS; patches] + positions -> ``norm_pre`` (CLIP's
``ln_pre``) -> pre-norm blocks (multi-head attention with attention dropout, QuickGELU MLP) -> ``norm``
(``ln_post``) over all tokens, no projection: ``[B, 1 + (S/p)^2, width]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class QuickGELU(nn.Module):
    """CLIP's GELU approximation ``x * sigmoid(1.702 x)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, width: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)  # CLIP's conv1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, C, H, W] -> [B, HW, C]


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, attn_drop: float) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.attn_drop = attn_drop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = QuickGELU()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: int, attn_drop: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-5)
        self.attn = Attention(width, heads, attn_drop)
        self.norm2 = nn.LayerNorm(width, eps=1e-5)
        self.mlp = Mlp(width, mlp_ratio * width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """CLIP ViT: ``cls_token``, ``pos_embed``, ``patch_embed``, ``norm_pre``, ``blocks``, ``norm`` (timm's names)."""

    def __init__(
        self,
        image_size: int,
        patch: int,
        width: int,
        layers: int,
        heads: int,
        attn_drop: float = 0.0,
        mlp_ratio: int = 4,
    ) -> None:
        super().__init__()
        n_patches = (image_size // patch) ** 2
        self.patch_embed = PatchEmbed(patch, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_patches + 1, width))
        self.norm_pre = nn.LayerNorm(width, eps=1e-5)
        self.blocks = nn.Sequential(*[Block(width, heads, mlp_ratio, attn_drop) for _ in range(layers)])
        self.norm = nn.LayerNorm(width, eps=1e-5)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random initialisation as timm's default: truncated normal (std 0.02) positions and linear weights, zero
        biases, a near-zero class token; the convolution keeps PyTorch's default."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.norm(self.blocks(self.norm_pre(x)))

    forward = forward_features
