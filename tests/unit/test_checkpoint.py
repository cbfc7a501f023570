"""The official-checkpoint loader: conversion, report, refusal of bad files, export round trip, parameter counts."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from vlpeft.model.checkpoint import (
    CheckpointError,
    build_meta_model,
    convert_official,
    export_official,
    load_official,
    load_official_state_dict,
    main,
    normalise_official_key,
    parameter_table,
    resize_pos_embed,
)
from vlpeft.model.config import preset
from vlpeft.model.mplug import MPlug
from vlpeft.testing import make_synthetic_official_checkpoint, official_checkpoint_shapes

os.environ.setdefault("HF_HUB_OFFLINE", "1")


# Tiny models: one intra-op thread (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


# Tiny, with two dead fusion layers in front as in the official checkpoint (base: 6 dead, 6 running).
TINY = preset("tiny", vocab_size=128, fusion_layer_offset=2)
QUEUE = 16  # keeps the synthetic queues small; their shape is not checked by the loader


def synthetic(cfg=TINY, **kw) -> dict[str, torch.Tensor]:
    return make_synthetic_official_checkpoint(cfg, queue_size=QUEUE, **kw)


def batch(cfg, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 3, cfg.image_size, cfg.image_size, generator=g)
    prompt = torch.randint(1, cfg.vocab_size, (2, 5), generator=g)
    prompt_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    target = torch.randint(1, cfg.vocab_size, (2, 6), generator=g)
    target_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    return images, prompt, prompt_mask, target, target_mask


def state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# -- parameter counts ----------------------------------------------------------------------------------------------


def test_parameter_table_base_is_347m():
    table = dict(parameter_table(preset("base")))
    assert table["total"] == 346_801_722
    assert abs(table["total"] - 347e6) / 347e6 < 0.005
    assert sum(v for k, v in table.items() if k != "total") == table["total"]
    # Per-module figures of mplug-base.md (ViT there includes CLIP's unused 768x512 projection).
    for module, reference in (("text_encoder", 66.4e6), ("fusion_encoder", 56.7e6), ("text_decoder", 137.9e6)):
        assert abs(table[module] - reference) / reference < 0.001, module
    assert abs(table["visual_encoder"] + 768 * 512 - 86.2e6) / 86.2e6 < 0.001


def test_count_cli(capsys):
    assert main(["count", "--preset", "base"]) == 0
    out = capsys.readouterr().out
    assert "346,801,722" in out and "visual_encoder" in out and "total" in out


@pytest.mark.slow
def test_parameter_table_matches_the_built_base_model():
    model = MPlug(preset("base"))
    assert model.parameter_counts() == dict(parameter_table(preset("base")))


# -- loading the official layout -----------------------------------------------------------------------------------


@pytest.mark.parametrize("raw_names", [True, False])
def test_synthetic_checkpoint_loads_with_every_extra_reported(raw_names):
    sd = synthetic(raw_names=raw_names, image_size=96)  # trained at another resolution: 6x6 grid -> 4x4
    model = MPlug(TINY)
    report = load_official(model, sd)

    assert report.missing == [] and report.mismatched == []
    assert sorted(report.loaded) == sorted(model.state_dict())
    # Every checkpoint key is either used or ignored for a known reason; nothing falls through.
    assert len(sd) - len(report.ignored) == len(model.state_dict())
    assert set(report.reasons) == set(report.ignored)
    assert "not a parameter of this model" not in report.reasons.values()
    by_reason = {r: [k for k in report.ignored if report.reasons[k] == r] for r in set(report.reasons.values())}
    reasons = " | ".join(by_reason)
    for expected in (
        "momentum",
        "CLIP text tower",
        "fusion layers 0-1",
        "fusion embeddings",
        "position_ids",
        "pre-training head",
        "pre-training queue",
        "CLIP image projection",
    ):
        assert expected in reasons, expected
    assert all(k.split(".")[0].endswith("_m") for k in by_reason["momentum copy (pre-training distillation)"])
    assert any("resized from a 6x6 to a 4x4" in n for n in report.notes)
    assert "summary" not in report.summary() and "momentum" in report.summary()

    fusion = "fusion_encoder.fusion." if raw_names else "fusion_encoder."
    text = "text_encoder.bert." if raw_names else "text_encoder."
    ve = model.visual_encoder
    with torch.no_grad():
        assert torch.equal(
            model.fusion_encoder.encoder.layer["2"].attention.self.query.weight,
            sd[f"{fusion}encoder.layer.2.attention.self.query.weight"],
        )
        assert torch.equal(
            model.text_encoder.encoder.layer["0"].output.LayerNorm.bias,
            sd[f"{text}encoder.layer.0.output.LayerNorm.bias"],
        )
        clip = "visual_encoder.visual."
        assert torch.equal(ve.blocks[1].attn.qkv.weight, sd[f"{clip}transformer.resblocks.1.attn.in_proj_weight"])
        assert torch.equal(ve.blocks[0].mlp.fc2.bias, sd[f"{clip}transformer.resblocks.0.mlp.c_proj.bias"])
        assert torch.equal(ve.cls_token.flatten(), sd[f"{clip}class_embedding"])
        assert torch.equal(ve.pos_embed[0, 0], sd[f"{clip}positional_embedding"][0])  # CLS row kept
        assert torch.equal(ve.norm_pre.weight, sd[f"{clip}ln_pre.weight"])
        assert torch.equal(ve.norm.weight, sd[f"{clip}ln_post.weight"])
        dec = model.text_decoder
        assert dec.cls.predictions.decoder.weight is dec.bert.embeddings.word_embeddings.weight  # still tied
        assert torch.equal(dec.cls.predictions.decoder.weight, sd["text_decoder.cls.predictions.decoder.weight"])


def test_normalisation_is_the_official_rule():
    assert normalise_official_key("text_encoder.bert.encoder.layer.0.x") == "text_encoder.encoder.layer.0.x"
    assert normalise_official_key("fusion_encoder.fusion.encoder.layer.6.x") == "fusion_encoder.encoder.layer.6.x"
    assert normalise_official_key("text_decoder.bert.encoder.layer.0.x") == "text_decoder.bert.encoder.layer.0.x"
    assert normalise_official_key("visual_encoder.visual.conv1.weight") == "visual_encoder.visual.conv1.weight"
    # Normalised names are fixed points, so our export loads into the official fine-tuning code unchanged.
    for key in official_checkpoint_shapes(TINY, raw_names=False):
        assert normalise_official_key(key) == key


def test_positional_embedding_resize_matches_timm_bilinear():
    from timm.layers import resample_abs_pos_embed

    pos = torch.randn(1, 1 + 6 * 6, 8)
    ours = resize_pos_embed(pos, 9)
    theirs = resample_abs_pos_embed(pos, [9, 9], interpolation="bilinear", antialias=False)
    assert ours.shape == (1, 82, 8)
    torch.testing.assert_close(ours, theirs)
    assert torch.equal(resize_pos_embed(pos, 6), pos)


def test_round_trip_export_convert_load(tmp_path: Path):
    model = MPlug(TINY).eval()
    load_official(model, synthetic(seed=1))
    exported = export_official(model)
    assert "visual_encoder.visual.conv1.weight" in exported
    assert exported["visual_encoder.visual.transformer.resblocks.1.attn.in_proj_weight"].shape == (192, 64)
    assert exported["visual_encoder.visual.positional_embedding"].shape == (17, 64)
    assert not any(".base_layer." in k or k.startswith("visual_encoder.blocks") for k in exported)

    path = tmp_path / "exported.pth"
    torch.save({"model": exported}, path)
    again = MPlug(TINY).eval()
    report = load_official(again, path)
    assert report.missing == [] and report.ignored == ["text_decoder.cls.predictions.decoder.bias"]
    assert state_equal(model, again)
    with torch.no_grad():
        assert torch.equal(model(*batch(TINY)), again(*batch(TINY)))


def test_checkpoint_of_another_size_is_refused_with_shapes():
    other = preset("tiny", vocab_size=128, fusion_layer_offset=2, hidden_size=32, vision_width=32)
    model = MPlug(TINY)
    before = model.text_encoder.embeddings.word_embeddings.weight.clone()
    with pytest.raises(ValueError, match=r"other shapes") as err:
        load_official(model, synthetic(other))
    msg = str(err.value)
    assert "161 tensors" in msg
    assert "visual_encoder.cls_token: checkpoint [1, 1, 32] vs model [1, 1, 64]" in msg
    assert "visual_encoder.blocks.0.attn.qkv.weight: checkpoint [96, 32] vs model [192, 64]" in msg
    assert torch.equal(model.text_encoder.embeddings.word_embeddings.weight, before)  # nothing half-loaded


def test_missing_needed_key_is_named():
    sd = synthetic()
    del sd["text_decoder.bert.encoder.layer.1.output.dense.weight"]
    del sd["visual_encoder.visual.ln_post.bias"]
    with pytest.raises(CheckpointError, match=r"text_decoder\.bert\.encoder\.layer\.1\.output\.dense\.weight"):
        load_official(MPlug(TINY), sd)
    report = load_official(MPlug(TINY), sd, strict=False)
    assert sorted(report.missing) == [
        "text_decoder.bert.encoder.layer.1.output.dense.weight",
        "visual_encoder.norm.bias",
    ]
    assert "missing (first 2)" in report.summary()


@pytest.mark.parametrize(
    "drop", ["text_decoder.cls.predictions.decoder.weight", "text_decoder.bert.embeddings.word_embeddings.weight"]
)
def test_tied_decoder_projection_accepts_either_name(drop):
    sd = synthetic()
    words = sd["text_decoder.bert.embeddings.word_embeddings.weight"]
    del sd[drop]
    model = MPlug(TINY)
    report = load_official(model, sd)
    assert report.missing == []
    assert torch.equal(model.text_decoder.bert.embeddings.word_embeddings.weight, words)
    assert any("tied" in n for n in report.notes)


def test_head_bias_from_its_tied_alias():
    sd = synthetic()
    bias = sd.pop("text_decoder.cls.predictions.bias")
    model = MPlug(TINY)
    report = load_official(model, {"model": sd, "epoch": 1})  # a loaded checkpoint dict is accepted too
    assert report.missing == []
    assert torch.equal(model.text_decoder.cls.predictions.bias, bias)


@pytest.mark.parametrize(
    "key", ["text_decoder.cls.predictions.decoder.weight", "text_decoder.cls.predictions.decoder.bias"]
)
def test_tied_tensors_that_differ_are_refused(key):
    sd = synthetic()
    sd[key] = sd[key] + 1.0
    with pytest.raises(CheckpointError, match="tied"):
        load_official(MPlug(TINY), sd)


def test_loads_into_a_peft_model_without_touching_its_modules():
    from vlpeft.methods.base import build_method

    sd = synthetic()
    model = MPlug(TINY)
    build_method("lora", size=2).attach(model)
    lora_b = {n: p.clone() for n, p in model.named_parameters() if "lora_" in n}
    report = load_official(model, sd)
    assert report.missing == []
    q = model.text_encoder.encoder.layer["0"].attention.self.query
    assert torch.equal(q.base_layer.weight, sd["text_encoder.bert.encoder.layer.0.attention.self.query.weight"])
    assert all(torch.equal(p, lora_b[n]) for n, p in model.named_parameters() if "lora_" in n)


# -- reading files -------------------------------------------------------------------------------------------------


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickle_that_would_run_code_is_refused_without_running(tmp_path: Path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "payload": _Evil(marker)}, path)
    assert not marker.exists()
    with pytest.raises(ValueError, match="not a plain checkpoint") as err:
        load_official_state_dict(path)
    assert "weights_only" in str(err.value)
    with pytest.raises(ValueError, match="not a plain checkpoint"):
        load_official(MPlug(TINY), path)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["mplug_base.pth", "w.safetensors"])
def test_damaged_checkpoint_names_the_file_and_what_to_do(tmp_path: Path, name: str):
    path = tmp_path / name
    for content in (b"", b"PK\x03\x04\x14\x00 cut short", b"\x10\x00\x00\x00\x00\x00\x00\x00{"):
        path.write_bytes(content)
        with pytest.raises(ValueError, match=re.escape(str(path)) + ".*Delete it and download it again"):
            load_official_state_dict(path)


def test_state_dict_locations(tmp_path: Path):
    tensors = {"a": torch.ones(2)}
    for name, ckpt in (("model", {"model": tensors, "epoch": 3}), ("module", {"module": tensors}), ("flat", tensors)):
        torch.save(ckpt, tmp_path / f"{name}.pth")
        assert load_official_state_dict(tmp_path / f"{name}.pth").keys() == {"a"}
    torch.save({"epoch": 3, "config": {"x": 1}}, tmp_path / "none.pth")
    with pytest.raises(ValueError, match="no 'model' or 'module'"):
        load_official_state_dict(tmp_path / "none.pth")

    from safetensors.torch import save_file

    save_file(tensors, str(tmp_path / "w.safetensors"))
    assert torch.equal(load_official_state_dict(tmp_path / "w.safetensors")["a"], tensors["a"])


def test_check_cli_reports_a_checkpoint(tmp_path: Path, capsys):
    cfg = preset("tiny", vocab_size=128)
    torch.save({"model": make_synthetic_official_checkpoint(cfg, queue_size=QUEUE)}, tmp_path / "ck.pth")
    assert main(["check", str(tmp_path / "ck.pth"), "--preset", "tiny", "--vocab-size", "128"]) == 0
    out = capsys.readouterr().out
    assert "missing 0" in out and "momentum copy" in out


def test_convert_reports_unknown_keys():
    sd = synthetic()
    sd["text_encoder.cls.predictions.bias"] = torch.zeros(3)  # an MLM head our model does not have
    sd["fusion_encoder.fusion.encoder.layer.9.output.dense.bias"] = torch.zeros(64)  # beyond our fusion layers
    converted, report = convert_official(sd, TINY)
    assert report.reasons["text_encoder.cls.predictions.bias"] == "not a parameter of this model"
    assert report.reasons["fusion_encoder.fusion.encoder.layer.9.output.dense.bias"] == "not a parameter of this model"
    assert set(converted) == set(build_meta_model(TINY).state_dict())


@pytest.mark.slow
def test_base_synthetic_checkpoint_round_trip(tmp_path: Path):
    cfg = preset("base")
    sd = make_synthetic_official_checkpoint(cfg, queue_size=QUEUE)
    model = MPlug(cfg).eval()
    report = load_official(model, sd)
    assert report.missing == [] and report.mismatched == []
    assert "not a parameter of this model" not in report.reasons.values()
    assert any(r.startswith("fusion layers 0-5") for r in report.reasons.values())
    del sd
    exported = export_official(model)
    again = MPlug(cfg).eval()
    load_official(again, exported)
    assert state_equal(model, again)
