"""Our CLIP ViT equals timm's VisionTransformer (as mPLUG configured it) exactly: names, shapes and outputs."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

from vlpeft.methods.full import vit_count
from vlpeft.model.config import preset
from vlpeft.model.mplug import build_visual_encoder

pytestmark = pytest.mark.usefixtures("one_thread")


def _timm(cfg):
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=cfg.image_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.vision_width,
        depth=cfg.vision_layers,
        num_heads=cfg.vision_heads,
        pre_norm=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-5),
        act_layer="quick_gelu",
        num_classes=0,
        global_pool="",
        attn_drop_rate=cfg.vision_attention_dropout,
    )


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train-with-attention-dropout"])
def test_equals_timm_exactly(train):
    cfg = preset("tiny", image_size=48, vision_layers=3)
    torch.manual_seed(0)
    ours = build_visual_encoder(cfg)
    theirs = _timm(cfg)
    ours_state = ours.state_dict()
    assert {k: v.shape for k, v in ours_state.items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    theirs.load_state_dict(ours_state, strict=True)
    ours.train(train)
    theirs.train(train)
    x = torch.randn(3, 3, cfg.image_size, cfg.image_size)
    torch.manual_seed(1)
    a = ours.forward_features(x)
    torch.manual_seed(1)
    b = theirs.forward_features(x)
    assert torch.equal(a, b)
    a.square().mean().backward()
    b.square().mean().backward()
    grads = {k: p.grad for k, p in theirs.named_parameters()}
    assert all(torch.equal(p.grad, grads[k]) for k, p in ours.named_parameters())


def test_base_shapes_match_the_checkpoint_layout():
    with torch.device("meta"):
        ours = build_visual_encoder(preset("base"))
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert shapes["patch_embed.proj.weight"] == (768, 3, 16, 16) and "patch_embed.proj.bias" not in shapes
    assert shapes["pos_embed"] == (1, 257, 768) and shapes["cls_token"] == (1, 1, 768)
    assert shapes["blocks.11.attn.qkv.weight"] == (2304, 768) and shapes["blocks.11.mlp.fc1.weight"] == (3072, 768)
    assert sum(v.numel() for v in ours.parameters()) == vit_count(preset("base"))  # 86.2M: CLIP ViT-B/16, 256 px
