"""Our blocks against independent implementations with the same weights: transformers' BERT and CLIP vision.

transformers 5.x traps: the decoder runs with ``use_cache=False`` and no cache
object; eager attention is requested so the reference is the plain softmax formula.
"""

from __future__ import annotations

import os

import pytest
import torch

from vlpeft.model.bert import BertDecoder, BertTextEncoder
from vlpeft.model.checkpoint import convert_official
from vlpeft.model.config import MPlugConfig
from vlpeft.model.mplug import FusionEncoder, build_visual_encoder

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")


# Tiny models: one intra-op thread (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


CFG = MPlugConfig(
    vocab_size=100,
    hidden_size=64,
    num_attention_heads=4,
    intermediate_size=128,
    max_position_embeddings=32,
    text_layers=2,
    fusion_layers=2,
    fusion_layer_offset=1,
    fusion_connected_layers=(1,),
    decoder_layers=2,
    image_size=64,
    patch_size=16,
    vision_width=64,
    vision_layers=2,
    vision_heads=4,
)


def bert_config(**kw):
    kw.setdefault("num_hidden_layers", 2)
    return transformers.BertConfig(
        vocab_size=CFG.vocab_size,
        hidden_size=CFG.hidden_size,
        num_attention_heads=CFG.num_attention_heads,
        intermediate_size=CFG.intermediate_size,
        max_position_embeddings=CFG.max_position_embeddings,
        layer_norm_eps=CFG.layer_norm_eps,
        hidden_act="gelu",
        attn_implementation="eager",
        **kw,
    )


def randomize_(module: torch.nn.Module, seed: int) -> None:
    """Every parameter random (LayerNorm scales near 1), so no zero bias or unit scale hides a wrong mapping."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            is_scale = p.dim() == 1 and any(s in name for s in ("LayerNorm.weight", "layer_norm", "layrnorm", "norm"))
            p.copy_(1.0 + 0.1 * noise if is_scale and name.endswith("weight") else 0.1 * noise)


def test_text_encoder_equals_transformers_bert_model():
    ours = BertTextEncoder(CFG, CFG.text_layers).eval()
    ref = transformers.BertModel(bert_config(), add_pooling_layer=False).eval()
    randomize_(ours, 0)
    ours_sd = ours.state_dict()
    assert set(ours_sd) == set(ref.state_dict())  # names map 1:1
    ref.load_state_dict(ours_sd, strict=True)

    ids = torch.randint(1, CFG.vocab_size, (2, 7))
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask).last_hidden_state
        got = ours(ids, mask)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_decoder_equals_transformers_bert_lm_head_model():
    ours = BertDecoder(CFG).eval()
    ref = transformers.BertLMHeadModel(bert_config(is_decoder=True, add_cross_attention=True)).eval()
    randomize_(ours, 1)
    ours.tie_weights()
    ours_sd = ours.state_dict()
    ref_keys = set(ref.state_dict())
    # HF 4.x/5.x heads also expose the bias as ``cls.predictions.decoder.bias`` (the same tensor).
    assert set(ours_sd) == ref_keys - {"cls.predictions.decoder.bias"}
    ref.load_state_dict({**ours_sd, "cls.predictions.decoder.bias": ours_sd["cls.predictions.bias"]}, strict=True)
    assert ref.cls.predictions.decoder.weight.data_ptr() == ref.bert.embeddings.word_embeddings.weight.data_ptr()

    g = torch.Generator().manual_seed(2)
    ids = torch.randint(1, CFG.vocab_size, (2, 6), generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    enc = torch.randn(2, 9, CFG.hidden_size, generator=g)
    enc_mask = torch.tensor([[1] * 9, [1] * 6 + [0] * 3])
    with torch.no_grad():
        expected = ref(
            input_ids=ids,
            attention_mask=mask,
            encoder_hidden_states=enc,
            encoder_attention_mask=enc_mask,
            use_cache=False,
        ).logits
        got = ours(ids, mask, enc, enc_mask)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_fusion_layer_names_equal_transformers_bert_layers():
    ours = FusionEncoder(CFG)
    n = CFG.fusion_layer_offset + CFG.fusion_layers
    ref = transformers.BertModel(bert_config(is_decoder=True, add_cross_attention=True, num_hidden_layers=n))
    running = {str(CFG.fusion_layer_offset + i) for i in range(CFG.fusion_layers)}
    ref_keys = {k for k in ref.state_dict() if k.startswith("encoder.layer.") and k.split(".")[2] in running}
    ref_shapes = ref.state_dict()
    assert set(ours.state_dict()) == ref_keys
    assert all(v.shape == ref_shapes[k].shape for k, v in ours.state_dict().items())


def clip_vision_model():
    config = transformers.CLIPVisionConfig(
        hidden_size=CFG.vision_width,
        intermediate_size=4 * CFG.vision_width,
        num_hidden_layers=CFG.vision_layers,
        num_attention_heads=CFG.vision_heads,
        image_size=CFG.image_size,
        patch_size=CFG.patch_size,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        attn_implementation="eager",
    )
    model = transformers.CLIPVisionModel(config).eval()
    randomize_(model, 3)
    return model


def vision_tower(model):
    """The CLIP vision transformer inside ``CLIPVisionModel`` (transformers 5 dropped the ``vision_model`` level)."""
    return getattr(model, "vision_model", model)


def clip_reference(model, images: torch.Tensor) -> torch.Tensor:
    """CLIP's ln_post over all tokens: HF applies post_layernorm only to the pooled CLS, so apply it here."""
    with torch.no_grad():
        hidden = model(pixel_values=images).last_hidden_state
        return vision_tower(model).post_layernorm(hidden)


def test_visual_encoder_equals_transformers_clip_vision():
    ref = clip_vision_model()
    vm = vision_tower(ref)
    ours = build_visual_encoder(CFG).eval()
    state = {
        "cls_token": vm.embeddings.class_embedding.view(1, 1, -1),
        "pos_embed": vm.embeddings.position_embedding.weight[None],
        "patch_embed.proj.weight": vm.embeddings.patch_embedding.weight,
        "norm_pre.weight": vm.pre_layrnorm.weight,
        "norm_pre.bias": vm.pre_layrnorm.bias,
        "norm.weight": vm.post_layernorm.weight,
        "norm.bias": vm.post_layernorm.bias,
    }
    for i, layer in enumerate(vm.encoder.layers):
        a = layer.self_attn
        for kind in ("weight", "bias"):
            qkv = [getattr(a, f"{p}_proj") for p in "qkv"]
            state[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([getattr(m, kind) for m in qkv])
            state[f"blocks.{i}.attn.proj.{kind}"] = getattr(a.out_proj, kind)
            state[f"blocks.{i}.norm1.{kind}"] = getattr(layer.layer_norm1, kind)
            state[f"blocks.{i}.norm2.{kind}"] = getattr(layer.layer_norm2, kind)
            state[f"blocks.{i}.mlp.fc1.{kind}"] = getattr(layer.mlp.fc1, kind)
            state[f"blocks.{i}.mlp.fc2.{kind}"] = getattr(layer.mlp.fc2, kind)
    ours.load_state_dict(state, strict=True)  # every timm tensor assigned exactly once

    images = torch.randn(2, 3, CFG.image_size, CFG.image_size, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        got = ours.forward_features(images)
    assert got.shape == (2, CFG.num_image_tokens, CFG.vision_width)
    torch.testing.assert_close(got, clip_reference(ref, images), atol=1e-5, rtol=1e-5)


def test_official_clip_names_convert_to_the_same_vision_encoder():
    """Through the checkpoint path: HF CLIP -> OpenAI-CLIP names (mplug_base.pth layout) -> convert_official."""
    ref = clip_vision_model()
    vm = vision_tower(ref)
    p = "visual_encoder.visual."
    official = {
        f"{p}conv1.weight": vm.embeddings.patch_embedding.weight,
        f"{p}class_embedding": vm.embeddings.class_embedding,
        f"{p}positional_embedding": vm.embeddings.position_embedding.weight,
        f"{p}ln_pre.weight": vm.pre_layrnorm.weight,
        f"{p}ln_pre.bias": vm.pre_layrnorm.bias,
        f"{p}ln_post.weight": vm.post_layernorm.weight,
        f"{p}ln_post.bias": vm.post_layernorm.bias,
        f"{p}proj": torch.randn(CFG.vision_width, 32),
    }
    for i, layer in enumerate(vm.encoder.layers):
        b, a = f"{p}transformer.resblocks.{i}.", layer.self_attn
        official[f"{b}attn.in_proj_weight"] = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight])
        official[f"{b}attn.in_proj_bias"] = torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias])
        for kind in ("weight", "bias"):
            official[f"{b}attn.out_proj.{kind}"] = getattr(a.out_proj, kind)
            official[f"{b}ln_1.{kind}"] = getattr(layer.layer_norm1, kind)
            official[f"{b}ln_2.{kind}"] = getattr(layer.layer_norm2, kind)
            official[f"{b}mlp.c_fc.{kind}"] = getattr(layer.mlp.fc1, kind)
            official[f"{b}mlp.c_proj.{kind}"] = getattr(layer.mlp.fc2, kind)
    converted, report = convert_official({k: v.detach() for k, v in official.items()}, CFG)
    assert report.ignored == [f"{p}proj"]
    ours = build_visual_encoder(CFG).eval()
    ours.load_state_dict({k.removeprefix("visual_encoder."): v for k, v in converted.items()}, strict=True)

    images = torch.randn(2, 3, CFG.image_size, CFG.image_size, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        got = ours.forward_features(images)
    torch.testing.assert_close(got, clip_reference(ref, images), atol=1e-5, rtol=1e-5)
