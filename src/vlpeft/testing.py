"""Synthetic stand-ins for tests and benchmarks, not used by the pipeline: an official-layout mPLUG checkpoint.

:func:`make_synthetic_official_checkpoint` writes random weights under every key and shape
:func:`official_checkpoint_shapes` lists for the official pre-training file ``mplug_base.pth`` (docs/protocol.md,
"Base model"), so that the loader in :mod:`vlpeft.model.checkpoint`, the slim conversion and the download path can
be exercised without the 1.4 GB file.
"""

from __future__ import annotations

import torch

from .model.config import MPlugConfig

# Shapes of the parts of the pre-training checkpoint our model does not have, at base size (scaled for others).
CLIP_TEXT_WIDTH = 512  # CLIP ViT-B/16 text tower width and joint embedding size
CLIP_CONTEXT = 77
CLIP_VOCAB = 49408
ITC_EMBED_DIM = 256  # mPLUG's contrastive projection size (vision_proj / text_proj)
QUEUE_SIZE = 65536  # (inferred from the pre-training config)


def _bert_embeddings(prefix: str, cfg: MPlugConfig) -> dict[str, tuple[int, ...]]:
    d = cfg.hidden_size
    return {
        f"{prefix}embeddings.word_embeddings.weight": (cfg.vocab_size, d),
        f"{prefix}embeddings.position_embeddings.weight": (cfg.max_position_embeddings, d),
        f"{prefix}embeddings.token_type_embeddings.weight": (cfg.type_vocab_size, d),
        f"{prefix}embeddings.LayerNorm.weight": (d,),
        f"{prefix}embeddings.LayerNorm.bias": (d,),
        f"{prefix}embeddings.position_ids": (1, cfg.max_position_embeddings),
    }


def _bert_layer(prefix: str, cfg: MPlugConfig, cross: bool) -> dict[str, tuple[int, ...]]:
    d, ffn = cfg.hidden_size, cfg.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {}
    for attn in ("attention", "crossattention") if cross else ("attention",):
        for lin in ("self.query", "self.key", "self.value", "output.dense"):
            shapes[f"{prefix}{attn}.{lin}.weight"] = (d, d)
            shapes[f"{prefix}{attn}.{lin}.bias"] = (d,)
        shapes[f"{prefix}{attn}.output.LayerNorm.weight"] = (d,)
        shapes[f"{prefix}{attn}.output.LayerNorm.bias"] = (d,)
    shapes.update(
        {
            f"{prefix}intermediate.dense.weight": (ffn, d),
            f"{prefix}intermediate.dense.bias": (ffn,),
            f"{prefix}output.dense.weight": (d, ffn),
            f"{prefix}output.dense.bias": (d,),
            f"{prefix}output.LayerNorm.weight": (d,),
            f"{prefix}output.LayerNorm.bias": (d,),
        }
    )
    return shapes


def _clip_blocks(prefix: str, width: int, layers: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(layers):
        p = f"{prefix}transformer.resblocks.{i}."
        shapes.update(
            {
                f"{p}attn.in_proj_weight": (3 * width, width),
                f"{p}attn.in_proj_bias": (3 * width,),
                f"{p}attn.out_proj.weight": (width, width),
                f"{p}attn.out_proj.bias": (width,),
                f"{p}ln_1.weight": (width,),
                f"{p}ln_1.bias": (width,),
                f"{p}mlp.c_fc.weight": (4 * width, width),
                f"{p}mlp.c_fc.bias": (4 * width,),
                f"{p}mlp.c_proj.weight": (width, 4 * width),
                f"{p}mlp.c_proj.bias": (width,),
                f"{p}ln_2.weight": (width,),
                f"{p}ln_2.bias": (width,),
            }
        )
    return shapes


def official_checkpoint_shapes(
    cfg: MPlugConfig, image_size: int | None = None, raw_names: bool = True, queue_size: int = QUEUE_SIZE
) -> dict[str, tuple[int, ...]]:
    """Every key of the official pre-training checkpoint for a model of size ``cfg``, with its shape.

    Base-size shapes follow the public mPLUG code and configuration; the parts our model lacks (CLIP text tower,
    contrastive heads) scale with ``vision_width / 768`` for other sizes. Inferred, not read from the file: the
    raw prefixes ``text_encoder.bert.`` / ``fusion_encoder.fusion.`` (``raw_names=False`` gives the normalised
    names), the tied ``cls.predictions.decoder.bias`` of HF 4.x heads, the queue shapes.

    Args:
        cfg: Model size.
        image_size: Resolution the checkpoint's positional embedding was trained at (default ``cfg.image_size``).
        raw_names: Pre-normalisation names, as the pre-training code saved them.
        queue_size: Length of the contrastive queues.
    """
    w, d = cfg.vision_width, cfg.hidden_size
    clip_w = max(1, CLIP_TEXT_WIDTH * w // 768)
    itc = max(1, ITC_EMBED_DIM * d // 768)
    n_pos = ((image_size or cfg.image_size) // cfg.patch_size) ** 2 + 1
    text_pre, fusion_pre = ("bert.", "fusion.") if raw_names else ("", "")

    def clip(top: str) -> dict[str, tuple[int, ...]]:
        v = f"{top}.visual."
        shapes = {
            f"{v}class_embedding": (w,),
            f"{v}positional_embedding": (n_pos, w),
            f"{v}proj": (w, clip_w),
            f"{v}conv1.weight": (w, 3, cfg.patch_size, cfg.patch_size),
            f"{v}ln_pre.weight": (w,),
            f"{v}ln_pre.bias": (w,),
            **_clip_blocks(v, w, cfg.vision_layers),
            f"{v}ln_post.weight": (w,),
            f"{v}ln_post.bias": (w,),
            f"{top}.positional_embedding": (CLIP_CONTEXT, clip_w),
            f"{top}.text_projection": (clip_w, clip_w),
            f"{top}.logit_scale": (),
            **_clip_blocks(f"{top}.", clip_w, cfg.vision_layers),
            f"{top}.token_embedding.weight": (CLIP_VOCAB, clip_w),
            f"{top}.ln_final.weight": (clip_w,),
            f"{top}.ln_final.bias": (clip_w,),
        }
        return shapes

    def text(top: str) -> dict[str, tuple[int, ...]]:
        p = f"{top}.{text_pre}"
        shapes = _bert_embeddings(p, cfg)
        for i in range(cfg.text_layers):
            shapes.update(_bert_layer(f"{p}encoder.layer.{i}.", cfg, cross=False))
        return shapes

    def fusion(top: str) -> dict[str, tuple[int, ...]]:
        p = f"{top}.{fusion_pre}"
        shapes = _bert_embeddings(p, cfg)
        for i in range(cfg.fusion_layer_offset + cfg.fusion_layers):
            shapes.update(_bert_layer(f"{p}encoder.layer.{i}.", cfg, cross=True))
        return shapes

    def decoder(top: str) -> dict[str, tuple[int, ...]]:
        shapes = _bert_embeddings(f"{top}.bert.", cfg)
        for i in range(cfg.decoder_layers):
            shapes.update(_bert_layer(f"{top}.bert.encoder.layer.{i}.", cfg, cross=True))
        c = f"{top}.cls.predictions."
        shapes.update(
            {
                f"{c}bias": (cfg.vocab_size,),
                f"{c}transform.dense.weight": (d, d),
                f"{c}transform.dense.bias": (d,),
                f"{c}transform.LayerNorm.weight": (d,),
                f"{c}transform.LayerNorm.bias": (d,),
                f"{c}decoder.weight": (cfg.vocab_size, d),
                f"{c}decoder.bias": (cfg.vocab_size,),
            }
        )
        return shapes

    shapes: dict[str, tuple[int, ...]] = {}
    for suffix in ("", "_m"):
        shapes.update(clip(f"visual_encoder{suffix}"))
        shapes.update(text(f"text_encoder{suffix}"))
        shapes.update(fusion(f"fusion_encoder{suffix}"))
        shapes.update(decoder(f"text_decoder{suffix}"))
        shapes.update(
            {
                f"vision_proj{suffix}.weight": (itc, d),
                f"vision_proj{suffix}.bias": (itc,),
                f"text_proj{suffix}.weight": (itc, d),
                f"text_proj{suffix}.bias": (itc,),
            }
        )
    shapes.update(
        {
            "itm_head.weight": (2, d),
            "itm_head.bias": (2,),
            "temp": (),
            "image_queue": (itc, queue_size),
            "text_queue": (itc, queue_size),
            "queue_ptr": (1,),
        }
    )
    return shapes


def make_synthetic_official_checkpoint(
    cfg: MPlugConfig,
    image_size: int | None = None,
    raw_names: bool = True,
    queue_size: int = QUEUE_SIZE,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """A random state dict with every key and shape of :func:`official_checkpoint_shapes`, for tests.

    Weights are N(0, 0.02), LayerNorm-style 1-D weights 1 + N(0, 0.1), ``position_ids`` the positions; the decoder's
    head projection and its bias are the same tensors as the word embeddings and ``cls.predictions.bias`` (tied, as
    in the official file). Save it as ``torch.save({"model": state}, path)`` to imitate ``mplug_base.pth``.
    """
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape in official_checkpoint_shapes(cfg, image_size, raw_names, queue_size).items():
        if key.endswith("position_ids"):
            state[key] = torch.arange(shape[1]).unsqueeze(0)
        elif key == "queue_ptr":
            state[key] = torch.zeros(shape, dtype=torch.long)
        elif key == "temp":
            state[key] = torch.tensor(0.07)
        elif key.endswith(("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")):
            continue  # tied: filled below
        elif len(shape) == 1 and key.endswith(".weight"):
            state[key] = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        else:
            state[key] = 0.02 * torch.randn(shape, generator=gen)
    for top in ("text_decoder", "text_decoder_m"):
        state[f"{top}.cls.predictions.decoder.weight"] = state[f"{top}.bert.embeddings.word_embeddings.weight"]
        state[f"{top}.cls.predictions.decoder.bias"] = state[f"{top}.cls.predictions.bias"]
    return state
