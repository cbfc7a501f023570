"""Full fine-tuning: every parameter trains (the study's reference point)."""

from __future__ import annotations

from torch import nn

from ..model.config import MPlugConfig
from .base import PeftMethod, register_method

# timm's VisionTransformer default, which ``build_visual_encoder`` keeps (CLIP ViT-B/16: 768 -> 3072).
VIT_MLP_RATIO = 4


def vit_count(mc: MPlugConfig) -> int:
    """Parameters of the visual encoder as ``build_visual_encoder`` makes it (timm CLIP ViT, no head)."""
    w, n_tokens = mc.vision_width, mc.num_image_tokens
    hidden = VIT_MLP_RATIO * w
    block = (
        2 * w  # norm1
        + (w * 3 * w + 3 * w)  # attn.qkv
        + (w * w + w)  # attn.proj
        + 2 * w  # norm2
        + (w * hidden + hidden)  # mlp.fc1
        + (hidden * w + w)  # mlp.fc2
    )
    # The patch projection has no bias with pre_norm (CLIP's conv1); then class token, positions, ln_pre, ln_post.
    stem = 3 * mc.patch_size**2 * w + w + n_tokens * w + 2 * w
    return stem + mc.vision_layers * block + 2 * w


def bert_layer_count(mc: MPlugConfig, cross: bool) -> int:
    """One BERT block: self-attention (+ cross-attention) with output projection and LayerNorm, then the FFN."""
    d, i = mc.hidden_size, mc.intermediate_size
    attention = 4 * (d * d + d) + 2 * d
    ffn = (d * i + i) + (i * d + d) + 2 * d
    return attention * (2 if cross else 1) + ffn


def model_count(mc: MPlugConfig) -> int:
    """Every parameter of ``MPlug(mc)``, the tied decoder projection once (the connected fusion layer's unused
    cross-attention included: it exists in the model and the checkpoint)."""
    d, v = mc.hidden_size, mc.vocab_size
    embeddings = v * d + mc.max_position_embeddings * d + mc.type_vocab_size * d + 2 * d
    text = embeddings + mc.text_layers * bert_layer_count(mc, cross=False)
    fusion = mc.fusion_layers * bert_layer_count(mc, cross=True)
    head = (d * d + d) + 2 * d + v  # transform.dense, transform.LayerNorm, bias; the projection is tied
    decoder = embeddings + mc.decoder_layers * bert_layer_count(mc, cross=True) + head
    return vit_count(mc) + text + fusion + decoder


@register_method("full")
class FullFineTuning(PeftMethod):
    def inject(self, model: nn.Module) -> None:
        for p in model.parameters():
            p.requires_grad_(True)

    def method_count(self, mc: MPlugConfig) -> int:
        # The head is already part of "every parameter"; nothing is added for the classifier flag.
        return model_count(mc)

    def closed_form_count(self, mc: MPlugConfig) -> int:
        return self.method_count(mc)
