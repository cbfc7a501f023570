"""mPLUG (Li et al., EMNLP 2022) as used by the study: one code path for every size.

image -> CLIP ViT (timm's layout, ``vlpeft.model.vit``) -> [B, Ni, d]
prompt -> BERT text encoder -> [B, Lt, d]
fusion: asymmetric co-attention layers (text self-attention, text->image cross-attention, FFN; image passes),
        and connected-attention layers (self-attention + FFN over [image; text], image part added to the image
        states that entered the layer, text part continues)
decoder: causal BERT cross-attending to [fused image; fused text], LM head tied to its word embeddings.

Both tasks take this path (docs/protocol.md): the text encoder reads the task prompt and the decoder generates
the caption or the answer.
"""

from __future__ import annotations

import torch
from torch import nn

from .bert import BertDecoder, BertEncoder, BertTextEncoder, extended_mask, init_bert_weights
from .config import MPlugConfig
from .vit import VisionTransformer


def build_visual_encoder(cfg: MPlugConfig) -> nn.Module:
    """OpenAI-CLIP ViT as timm's ``vit_base_patch16_clip_quickgelu_224`` builds it, at ``cfg.image_size``
    (``vlpeft.model.vit``: timm's names and operations, without importing timm).

    ``forward_features`` returns ln_post over all tokens (CLS + patches) with no projection, as mPLUG uses it.
    """
    return VisionTransformer(
        cfg.image_size,
        cfg.patch_size,
        cfg.vision_width,
        cfg.vision_layers,
        cfg.vision_heads,
        attn_drop=cfg.vision_attention_dropout,
    )


class FusionEncoder(nn.Module):
    """mPLUG's fusion module (``fusion_encoder.encoder.layer.{offset..}``)."""

    def __init__(self, cfg: MPlugConfig) -> None:
        super().__init__()
        self.encoder = BertEncoder(cfg, cfg.fusion_layers, cross=True, offset=cfg.fusion_layer_offset)
        self.connected = frozenset(cfg.fusion_connected_layers)

    def forward(
        self,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        image: torch.Tensor,
        image_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n_img = image.shape[1]
        text_ext = extended_mask(text_mask, text.dtype)
        image_ext = extended_mask(image_mask, text.dtype)
        joint_ext = None
        for local, layer in enumerate(self.encoder):
            if local in self.connected:
                if joint_ext is None:
                    joint_ext = extended_mask(torch.cat([image_mask, text_mask], dim=1), text.dtype)
                out = layer.feed_forward(layer.attention(torch.cat([image, text], dim=1), joint_ext))
                image = image + out[:, :n_img]  # the cross-modal skip-connection
                text = out[:, n_img:]
            else:
                text = layer(text, text_ext, kv_states=image, kv_mask=image_ext)
        return image, text


class MPlug(nn.Module):
    """mPLUG for prompt-conditioned generation (captioning and generative VQA)."""

    def __init__(self, cfg: MPlugConfig) -> None:
        super().__init__()
        self.config = cfg
        self.visual_encoder = build_visual_encoder(cfg)
        self.text_encoder = BertTextEncoder(cfg, cfg.text_layers)
        self.fusion_encoder = FusionEncoder(cfg)
        self.text_decoder = BertDecoder(cfg)
        init_bert_weights(self.text_encoder)
        init_bert_weights(self.fusion_encoder)
        init_bert_weights(self.text_decoder)
        self.text_decoder.tie_weights()
        # Prompt-tuning hook: a module returning [p, d] vectors prepended to the text encoder's input embeddings.
        self.prompt = None

    # -- encoding ---------------------------------------------------------------------------------------------
    def check_images(self, images: torch.Tensor) -> None:
        s = self.config.image_size
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != s or images.shape[3] != s:
            raise ValueError(f"expected images of shape [B, 3, {s}, {s}], got {list(images.shape)}")

    def check_features(self, features: torch.Tensor) -> None:
        n, d, s = self.config.num_image_tokens, self.config.vision_width, self.config.image_size
        if features.dim() != 3 or features.shape[1] != n or features.shape[2] != d:
            raise ValueError(
                f"expected images of shape [B, 3, {s}, {s}] or ViT features of shape [B, {n}, {d}], got "
                f"{list(features.shape)}"
            )
        if any(p.requires_grad for p in self.visual_encoder.parameters()):
            raise ValueError(
                "precomputed ViT features were given to a model whose ViT trains: they would not follow "
                "its weights (such runs must read images)"
            )

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """ViT states ``[B, Ni, d]`` of pixel images ``[B, 3, S, S]``. Features ``[B, Ni, d]`` that this (frozen) ViT
        computed beforehand (the visual-feature store, ``vlpeft.data.features``) are returned as they are."""
        if images.dim() == 3:
            self.check_features(images)
            return images
        self.check_images(images)
        trains = any(p.requires_grad for p in self.visual_encoder.parameters())
        if trains and torch.is_grad_enabled():
            return self.visual_encoder.forward_features(images)
        # A frozen ViT builds no graph: most of the memory and time saving of PEFT with a frozen encoder.
        with torch.no_grad():
            if trains:
                return self.visual_encoder.forward_features(images)
            # ... and is a fixed feature extractor: eval mode (no attention dropout) whatever the model's mode, so its
            # output per image is fixed, exactly what the visual-feature store holds (vlpeft.data.features).
            was_training = self.visual_encoder.training
            self.visual_encoder.eval()
            try:
                return self.visual_encoder.forward_features(images)
            finally:
                self.visual_encoder.train(was_training)

    def encode(
        self, images: torch.Tensor, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused states ``[B, Ni + Lt, d]`` and their mask, which the decoder cross-attends to."""
        image = self.encode_image(images)
        image_mask = torch.ones(image.shape[:2], dtype=prompt_mask.dtype, device=image.device)
        embeds = self.text_encoder.embeddings.word_embeddings(prompt_ids)
        if self.prompt is not None:
            soft = self.prompt().to(embeds.dtype)
            embeds = torch.cat([soft[None].expand(embeds.shape[0], -1, -1), embeds], dim=1)
            prompt_mask = torch.cat([prompt_mask.new_ones(embeds.shape[0], soft.shape[0]), prompt_mask], dim=1)
        text = self.text_encoder(None, prompt_mask, inputs_embeds=embeds)
        image, text = self.fusion_encoder(text, prompt_mask, image, image_mask)
        return torch.cat([image, text], dim=1), torch.cat([image_mask, prompt_mask], dim=1)

    # -- training ---------------------------------------------------------------------------------------------
    def forward(
        self,
        images: torch.Tensor,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        target_ids: torch.Tensor,
        target_mask: torch.Tensor,
        reduction: str = "mean",
        target_counts: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Cross-entropy of ``target_ids`` (``[CLS] text [SEP]``, padded) given image (or its ViT features, see
        :meth:`encode_image`) and prompt.

        With ``target_counts`` sample ``i`` has ``target_counts[i]`` consecutive target rows (VQA: every human
        answer): the encoders run once per sample and their states are repeated per target for the decoder, as
        ALBEF, BLIP and official mPLUG do.

        Returns the mean over target tokens, or per-target sums with ``reduction="none"``.
        """
        states, states_mask = self.encode(images, prompt_ids, prompt_mask)
        if target_counts is not None and len(target_counts) != len(target_ids):
            states = states.repeat_interleave(target_counts, dim=0)
            states_mask = states_mask.repeat_interleave(target_counts, dim=0)
        logits = self.text_decoder(target_ids, target_mask, states, states_mask)
        labels = target_ids.masked_fill(target_mask == 0, -100)[:, 1:]
        logits = logits[:, :-1]
        loss = nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100, reduction="none"
        ).view(labels.shape)
        if reduction == "none":
            return loss.sum(dim=1)
        return loss.sum() / (labels != -100).sum().clamp(min=1)

    # -- bookkeeping ------------------------------------------------------------------------------------------
    def parameter_counts(self) -> dict[str, int]:
        """Parameters per top-level module (tied weights counted once)."""
        counts: dict[str, int] = {}
        seen: set[int] = set()
        for name, p in self.named_parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            top = name.split(".")[0]
            counts[top] = counts.get(top, 0) + p.numel()
        counts["total"] = sum(v for k, v in counts.items())
        return counts


# Random initialisers: on a meta tensor each goes through torch's Python reference implementation, whose first use
# imports torch._dynamo (about 1.5 s, once per process: a fifth of a mini study run).
_RANDOM_INIT = frozenset(
    [
        *(
            getattr(torch.Tensor, name)
            for name in ("normal_", "uniform_", "bernoulli_", "exponential_", "geometric_", "log_normal_", "cauchy_")
        ),
        *(
            getattr(nn.init, name)
            for name in ("normal_", "uniform_", "trunc_normal_", "kaiming_normal_", "kaiming_uniform_")
            + ("xavier_normal_", "xavier_uniform_", "orthogonal_", "sparse_")
        ),
    ]
)


class _SkipRandomInitOnMeta(torch.overrides.TorchFunctionMode):
    """Random initialisation of a meta tensor returns the tensor as it is: it has no values to set and no random
    numbers are drawn from any generator, so skipping it changes nothing but the time."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RANDOM_INIT:
            tensor = args[0] if args else kwargs.get("tensor", kwargs.get("self"))
            if isinstance(tensor, torch.Tensor) and tensor.is_meta:
                return tensor
        return func(*args, **kwargs)


def meta_model(cfg: MPlugConfig) -> MPlug:
    """The model on the meta device: names, shapes and dtypes, no storage, no initialisation (the state of the
    random generators is left as it was)."""
    with _SkipRandomInitOnMeta(), torch.device("meta"):  # (the device mode first sees each call, then this)
        return MPlug(cfg)
