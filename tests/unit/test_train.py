"""Training loop: protocol pieces, failure handling, resume after preemption, world-size equivalence."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from vlpeft.data import stages
from vlpeft.data.datasets import move
from vlpeft.data.prepare import read_jsonl
from vlpeft.data.subsets import read_subset
from vlpeft.files import CorruptFileError, UnsafeFileError
from vlpeft.launch import torchrun_command
from vlpeft.runconfig import RunConfig
from vlpeft.train import EXIT_PREEMPTED, Trainer, param_groups, world_info_from_env

from ..conftest import make_run_config, signal_after

NO_DROPOUT = {"hidden_dropout": 0.0, "attention_dropout": 0.0, "vision_attention_dropout": 0.0}


def _trainer(study, tmp_path, **kw) -> Trainer:
    t = Trainer(RunConfig.from_dict(make_run_config(study, tmp_path / "run", **kw)))
    t.setup()
    return t


def _params(t: Trainer) -> dict:
    return {k: v.detach().clone() for k, v in t.model.named_parameters() if v.requires_grad}


def test_world_info_from_env(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"):
        monkeypatch.delenv(k, raising=False)
    assert world_info_from_env() == (0, 0, 1)
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    assert world_info_from_env() == (3, 1, 4)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert world_info_from_env() == (1, 1, 2)  # torchrun's variables win


def test_gradient_accumulation_and_weight_decay_groups(tiny_study, tmp_path):
    t = _trainer(tiny_study, tmp_path, task="vqa", total_batch_size=8, per_device_batch_size=2)
    assert t.accum == 4
    decay, no_decay = param_groups(t.model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    with pytest.raises(ValueError, match="not a multiple"):
        _trainer(tiny_study, tmp_path, task="vqa", total_batch_size=8, per_device_batch_size=3)


def test_full_fine_tuning_gives_the_vit_its_own_learning_rate(tiny_study, tmp_path):
    """mPLUG's recipe: the ViT at lr2, the rest at the task's rate, both on the task's schedule. Adam's first step
    moves each weight by about its group's rate (m / sqrt(v) = +-1), so the median change shows the rate used."""
    t = _trainer(
        tiny_study,
        tmp_path,
        method="full",
        lr=1e-3,
        part_lr={"visual_encoder": 2e-4},
        schedule={"kind": "steps", "steps": 6, "warmup_steps": 0},
        model_overrides=NO_DROPOUT,
    )
    assert sorted({str(g["part"]) for g in t.opt.param_groups}) == ["None", "visual_encoder"]
    vit = {id(p) for p in t.model.visual_encoder.parameters()}
    for g in t.opt.param_groups:
        assert all((id(p) in vit) == (g["part"] == "visual_encoder") for p in g["params"])
    before = _params(t)
    t.train_step()
    assert [g["lr"] for g in t.opt.param_groups] == [1e-3, 1e-3, 2e-4, 2e-4]
    after = _params(t)
    for name, lr in (
        ("visual_encoder.blocks.0.mlp.fc1.weight", 2e-4),
        ("text_decoder.bert.encoder.layer.0.output.dense.weight", 1e-3),
    ):
        moved = (after[name] - before[name]).abs()
        assert moved[moved > 0].median().item() == pytest.approx(lr, rel=0.05), name
    with pytest.raises(ValueError, match="part_lr: unknown model part 'vit'"):
        RunConfig.from_dict(make_run_config(tiny_study, tmp_path, part_lr={"vit": 1e-5}))


def test_accumulation_gives_the_same_step_as_one_big_batch(tiny_study, tmp_path):
    over = {"model_overrides": NO_DROPOUT, "task": "vqa"}
    a = _trainer(tiny_study, tmp_path / "a", per_device_batch_size=8, **over)
    b = _trainer(tiny_study, tmp_path / "b", per_device_batch_size=2, **over)
    for _ in range(3):
        la, lb = a.train_step(), b.train_step()
        assert la == pytest.approx(lb, rel=1e-5)
    pa, pb = _params(a), _params(b)
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], atol=1e-6, rtol=1e-5)


def test_vqa_loss_weights_every_human_answer_by_its_share(tiny_study, tmp_path):
    """The first step's loss by hand: per question of the global batch, each distinct human answer's summed token
    cross-entropy (the model run on that answer alone) times #annotators giving it / 10; summed, divided by the
    number of questions (ALBEF, BLIP, official mPLUG)."""
    t = _trainer(tiny_study, tmp_path, task="vqa", model_overrides=NO_DROPOUT)
    idx = t.global_batch(0)
    expected, several = 0.0, 0
    with torch.no_grad():
        for i in idx:
            item, answers = t.data[i], t.data.records[t.data.items[i]]["answers"]
            several += len(set(answers)) > 1
            for answer in dict.fromkeys(answers):
                b = move(
                    t.collate(
                        [{"image": item["image"], "prompt": item["prompt"], "targets": [answer], "weights": [1.0]}]
                    ),
                    t.device,
                )
                ce = t.model(
                    b["images"], b["prompt_ids"], b["prompt_mask"], b["target_ids"], b["target_mask"], reduction="none"
                )[0]
                expected += answers.count(answer) / 10 * ce.item()
    assert several > 0  # annotators disagree on some questions of the batch
    assert t.train_step() == pytest.approx(expected / len(idx), rel=1e-5)


def test_only_trainable_parameters_change(tiny_study, tmp_path):
    t = _trainer(tiny_study, tmp_path, task="vqa")
    frozen = {k: v.detach().clone() for k, v in t.model.named_parameters() if not v.requires_grad}
    before = _params(t)
    for _ in range(2):
        t.train_step()
    after = _params(t)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    for k, v in t.model.named_parameters():
        if k in frozen:
            assert torch.equal(frozen[k], v), k


def test_nan_loss_fails_with_a_record(tiny_study, tmp_path):
    cfg = make_run_config(tiny_study, tmp_path / "run", task="vqa", lr=1e30)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "vlpeft.train", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode != 0
    status = json.loads((tmp_path / "run/status.json").read_text())
    assert status["status"] == "failed"
    assert "loss is" in status["error"] or "nan" in status["error"].lower()
    assert not (tmp_path / "run/record.json").exists()


def test_missing_data_file_is_refused_before_training(tiny_study, tmp_path):
    cfg = make_run_config(tiny_study, tmp_path / "run", task="vqa")
    cfg["records"]["val"] = str(tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        Trainer(RunConfig.from_dict(cfg)).setup()


def test_evaluate_untuned_scores_the_initial_model_on_every_evaluation_split(tiny_study, tmp_path):
    from vlpeft.train import evaluate_untuned

    out = evaluate_untuned(RunConfig.from_dict(make_run_config(tiny_study, tmp_path / "a", task="vqa")))
    t = _trainer(tiny_study, tmp_path, task="vqa")
    assert t.evaluate() and t.step == 0
    assert out["task"] == "vqa" and out["scores"] == {s: t.curve[-1][s] for s in ("val", "test")}
    assert set(out["scores"]["val"]) >= {"accuracy"}


def _failed_record(cfg: dict, tmp_path: Path, error: type[Exception], match: str) -> dict:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    from vlpeft.train import main

    with pytest.raises(error, match=match):
        main(["--config", str(path)])
    assert not (tmp_path / "run/record.json").exists()
    rec = json.loads((tmp_path / "run/status.json").read_text())
    assert rec["status"] == "failed" and re.search(match, rec["error"]) and rec["failed_rank"] == 0
    # Training never started: no attempt, no step, no curve, no weights.
    assert (rec["steps_done"], rec["samples_seen"], rec["curve"], rec["best"], rec["attempts"], rec["outputs"]) == (
        0,
        0,
        [],
        None,
        [],
        {},
    )
    assert (rec["train_time_s"], rec["samples_per_s"], rec["gpu_hours"], rec["peak_gpu_memory_bytes"]) == (
        0.0,
        0.0,
        0.0,
        None,
    )
    assert rec["wall_time_s"] > 0 and rec["world_size"] == 1
    return rec


MODEL_FIELDS = ("trainable_params", "total_params", "closed_form_params", "merged_params", "method_info")


def test_a_run_failing_before_setup_records_what_it_did_not_reach(tiny_study, tmp_path):
    cfg = make_run_config(tiny_study, tmp_path / "run", task="vqa")
    cfg["records"]["val"] = str(tmp_path / "nope.jsonl")
    rec = _failed_record(cfg, tmp_path, FileNotFoundError, "nope.jsonl")
    not_reached = ("gradient_accumulation", "data_size", "total_steps", *MODEL_FIELDS)
    assert {k: rec[k] for k in not_reached} == dict.fromkeys(not_reached)


def test_a_run_failing_in_setup_after_building_the_model_records_its_counts(tiny_study, tmp_path):
    cfg = make_run_config(tiny_study, tmp_path / "run")
    (tmp_path / "empty.jsonl").write_text("")
    cfg["records"]["test"] = str(tmp_path / "empty.jsonl")
    rec = _failed_record(cfg, tmp_path, ValueError, "no records to evaluate on")
    assert rec["gradient_accumulation"] == 2 and rec["data_size"] > 0 and rec["total_steps"] == 6
    assert rec["trainable_params"] == rec["closed_form_params"] == rec["merged_params"] > 0
    assert rec["total_params"] > rec["trainable_params"] and rec["method_info"]


def _images_with_bad(study: Path, tmp_path: Path, bad: set[str]) -> dict:
    """A copy of the study's images with ``bad`` truncated, cached with ``skip_bad``: the run config overrides."""
    root = tmp_path / "images"
    shutil.copytree(study / "raw/images", root)
    for rel in bad:
        data = (root / rel).read_bytes()
        (root / rel).write_bytes(data[: len(data) // 2])
    cache = tmp_path / "images_64.npy"
    counts = stages.cache_images(
        root, [study / f"prep/coco/{s}.jsonl" for s in ("train", "val", "test")], 64, cache, skip_bad=True
    )
    assert counts["bad"] == len(bad)
    return {"image_root": str(root), "image_cache": str(cache)}


@pytest.mark.parametrize("task", ["coco", "vqa"])
def test_records_of_bad_images_are_left_out_of_training_and_evaluation(tiny_study, tmp_path, caplog, task):
    train = read_jsonl(tiny_study / f"prep/{task}/train.jsonl")
    items = read_subset(tiny_study / f"subsets/{task}/ratio0.5.json")["items"]
    record_of = (lambda it: it[0]) if task == "coco" else (lambda it: it)
    bad_train = train[record_of(items[1])]["image"]
    val, test = (read_jsonl(tiny_study / f"prep/{task}/{s}.jsonl") for s in ("val", "test"))
    bad_val = val[0]["image"]
    with caplog.at_level(logging.WARNING, logger="vlpeft.datasets"):
        t = _trainer(tiny_study, tmp_path, task=task, **_images_with_bad(tiny_study, tmp_path, {bad_train, bad_val}))
    kept = [it for it in items if train[record_of(it)]["image"] != bad_train]
    assert t.data.items == kept and 0 < len(kept) < len(items)
    assert t.evaluators["val"].records == [r for r in val if r["image"] != bad_val]
    assert t.evaluators["test"].records == test
    assert [r.getMessage().split(" whose")[0] for r in caplog.records] == [
        f"split train: dropped {len(items) - len(kept)} of {len(items)} training pairs",
        f"split val: dropped {len(val) - len(t.evaluators['val'].records)} of {len(val)} records",
    ]
    t.train_step()


def test_training_set_of_only_bad_images_is_refused(tiny_study, tmp_path):
    bad = {r["image"] for r in read_jsonl(tiny_study / "prep/vqa/train.jsonl")}
    with pytest.raises(
        ValueError,
        match="^split train: all .* training pairs have images listed as bad in the image "
        "cache .*images_64.npy; nothing is left to use$",
    ):
        _trainer(tiny_study, tmp_path, task="vqa", **_images_with_bad(tiny_study, tmp_path, bad))


def test_empty_subset_or_split_is_refused_naming_it(tiny_study, tmp_path):
    empty = tmp_path / "ratio0.5.json"
    empty.write_text(json.dumps({"task": "vqa", "ratio": 0.5, "seed": 0, "size": 0, "items": []}))
    with pytest.raises(ValueError, match=re.escape(f"subset {empty} (data ratio 0.5) has no training pairs")):
        _trainer(tiny_study, tmp_path, task="vqa", subset=str(empty))
    (tmp_path / "val.jsonl").write_text("")
    records = {s: str(tiny_study / f"prep/vqa/{s}.jsonl") for s in ("train", "test")}
    with pytest.raises(ValueError, match=re.escape(f"split val: {tmp_path / 'val.jsonl'} has no records to evaluate")):
        _trainer(tiny_study, tmp_path, task="vqa", records={**records, "val": str(tmp_path / "val.jsonl")})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_cuda_asked_without_a_gpu_is_refused(tiny_study, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(
        RuntimeError,
        match=r"device: cuda, but torch sees 0 CUDA device\(s\) for 1 process\(es\) on "
        r"this node \(CUDA_VISIBLE_DEVICES=, torch ",
    ):
        _trainer(tiny_study, tmp_path, device="cuda")


def test_fewer_gpus_than_processes_on_the_node_is_refused_saying_what_torch_sees(tiny_study, tmp_path, monkeypatch):
    """device: cuda with 4 processes on a node where torch sees 2 GPUs fails at start, before any process group."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    t = Trainer(RunConfig.from_dict(make_run_config(tiny_study, tmp_path / "run", device="cuda")))
    with pytest.raises(RuntimeError) as err:
        t.setup_device()
    assert "torch sees 2 CUDA device(s) for 4 process(es) on this node (CUDA_VISIBLE_DEVICES=0,1" in str(err.value)
    assert "\n" not in str(err.value)


def test_auto_without_a_gpu_says_it_runs_on_the_cpu(tiny_study, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    t = Trainer(RunConfig.from_dict(make_run_config(tiny_study, tmp_path / "run", device="auto")))
    t.setup_device()
    assert t.device.type == "cpu" and "device: auto and torch sees no CUDA device" in caplog.text


def test_the_paper_config_requires_cuda():
    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "config/config.yaml").read_text())
    assert config["train"]["device"] == "cuda"


def _cut(study, run_dir: Path, step: int = 2, **kw) -> None:
    """A run of ``study`` preempted after ``step`` steps: its checkpoint is in ``run_dir``."""
    t = Trainer(RunConfig.from_dict(make_run_config(study, run_dir, **kw)))
    t.setup()
    signal_after(t, step)
    assert t.run() == "preempted"


def test_checkpoint_of_another_configuration_starts_over_and_says_why(tiny_study, tmp_path, caplog):
    over = {"task": "vqa", "eval": {"interval": 0, "splits": ["val"], "num_beams": 1, "max_new_tokens": 2}}
    _cut(tiny_study, tmp_path / "run", **over)
    other = _trainer(tiny_study, tmp_path, lr=5e-3, **over)
    with caplog.at_level(logging.WARNING, logger="vlpeft.train"):
        assert other.run() == "success"
    assert "starting over" in caplog.text and "its configuration differs (lr)" in caplog.text
    (attempt,) = other.finalize("success")["attempts"]
    assert attempt["start_step"] == 0 and attempt["discarded_checkpoint"]["step"] == 2
    assert attempt["discarded_checkpoint"]["reason"] == "its configuration differs (lr)"


def _study_copy(study: Path, tmp_path: Path) -> Path:
    """The tiny study's files a run reads, copied so that a test may rewrite them (images stay shared)."""
    root = tmp_path / "study"
    for rel in ("prep/vqa", "subsets/vqa"):
        shutil.copytree(study / rel, root / rel)
    shutil.copy(study / "vocab.txt", root / "vocab.txt")
    for rel in ("raw", "images_64.npy", "images_64.npy.index.json"):
        (root / rel).symlink_to(study / rel)
    return root


def _rewrite_subset(root: Path) -> None:
    path = root / "subsets/vqa/ratio0.5.json"
    sub = json.loads(path.read_text())
    sub["items"] = sub["items"][1:]
    path.write_text(json.dumps(sub))


def _rewrite_records(root: Path) -> None:
    path = root / "prep/vqa/train.jsonl"
    records = read_jsonl(path)
    records[0]["answer"] = "zebra"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _rewrite_init_weights(root: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(root / "init.safetensors")
    state["text_encoder.embeddings.word_embeddings.weight"] += 0.01
    save_file(state, root / "init.safetensors")


@pytest.mark.parametrize(
    ("name", "rewrite"),
    [
        ("subset", _rewrite_subset),
        ("records_train", _rewrite_records),
        ("init_weights", _rewrite_init_weights),
        ("unchanged", None),
    ],
)
def test_resume_after_an_input_file_changed_starts_over_and_says_why(tiny_study, tmp_path, caplog, name, rewrite):
    """The checkpoint records the content digests of the run's inputs: rewriting one (same path, same config)
    starts the run over with the reason in the log and the record; rewriting it with the same bytes resumes."""
    from safetensors.torch import save_file

    root = _study_copy(tiny_study, tmp_path)
    init = _trainer(root, tmp_path / "init", task="vqa", method="full", method_options={}).model
    save_file(
        {
            k: v.contiguous()
            for k, v in init.state_dict().items()
            if k != "text_decoder.cls.predictions.decoder.weight"
        },
        root / "init.safetensors",
    )
    over = {
        "task": "vqa",
        "init_weights": str(root / "init.safetensors"),
        "init_format": "vlpeft",
        "eval": {"interval": 0, "splits": ["val"], "num_beams": 1, "max_new_tokens": 2},
    }
    _cut(root, tmp_path / "run", **over)
    if rewrite is not None:
        rewrite(root)
    else:  # the same bytes written again: a new mtime, the same content
        path = root / "subsets/vqa/ratio0.5.json"
        path.write_bytes(path.read_bytes())
    second = _trainer(root, tmp_path, **over)
    with caplog.at_level(logging.WARNING, logger="vlpeft.train"):
        assert second.run() == "success"
    record = second.finalize("success")
    if rewrite is None:
        assert [(a["start_step"], a["status"]) for a in record["attempts"]] == [(0, "preempted"), (2, "success")]
        assert "starting over" not in caplog.text
        return
    (attempt,) = record["attempts"]
    path = {
        "subset": root / "subsets/vqa/ratio0.5.json",
        "records_train": root / "prep/vqa/train.jsonl",
        "init_weights": root / "init.safetensors",
    }[name]
    reason = f"the content of its input file(s) changed: {name} ({path})"
    assert attempt["start_step"] == 0 and attempt["discarded_checkpoint"] == {"step": 2, "reason": reason}
    assert f"does not belong to this run: {reason}" in caplog.text
    assert record["inputs"][name]["path"] == str(path) and len(record["inputs"][name]["sha256"]) == 64


class _Payload:
    """Unpickling this runs ``os.mkdir(marker)``: what a planted checkpoint could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_planted_checkpoint_that_would_run_code_is_refused_and_never_runs(tiny_study, tmp_path):
    t = _trainer(tiny_study, tmp_path, task="vqa")
    marker = tmp_path / "payload-ran"
    t.ckpt_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"digest": "0" * 16, "step": 3, "payload": _Payload(marker)}, t.ckpt_path)
    with pytest.raises(UnsafeFileError, match="refusing to load .*checkpoint.pt: it is not a plain checkpoint"):
        t.run()
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", b"\x00\xff binary"], ids=["empty", "zip", "binary"])
def test_unreadable_checkpoint_names_the_file_and_what_to_do(tiny_study, tmp_path, content):
    t = _trainer(tiny_study, tmp_path, task="vqa")
    t.ckpt_path.parent.mkdir(parents=True, exist_ok=True)
    t.ckpt_path.write_bytes(content)
    with pytest.raises(CorruptFileError, match=re.escape(str(t.ckpt_path)) + ".*Delete it to start this run over"):
        t.run()


def test_unreadable_initial_weights_name_the_file(tiny_study, tmp_path):
    bad = tmp_path / "init.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(CorruptFileError, match=re.escape(str(bad)) + ".*rerun the stage that wrote it"):
        _trainer(tiny_study, tmp_path, init_weights=str(bad), init_format="vlpeft")


def test_checkpoint_holds_plain_types_and_every_ranks_rng(tiny_study, tmp_path):
    t = _trainer(tiny_study, tmp_path, task="vqa")
    t.train_step()
    t.save_checkpoint()
    state = torch.load(t.ckpt_path, weights_only=True)  # nothing but tensors and plain containers
    assert state["world_size"] == 1 and state["device_type"] == "cpu" and len(state["rng"]) == 1
    assert torch.equal(state["rng"][0]["torch"], torch.get_rng_state())


def test_resume_with_another_world_size_reseeds_and_says_so(tiny_study, tmp_path, caplog):
    """A checkpoint of 2 processes resumed by 1: rank 0 cannot take over two streams, so every RNG starts
    deterministically from the seed (seed + rank + 1000003 x step), in the log and the record."""
    over = {"task": "vqa", "eval": {"interval": 0, "splits": ["val"], "num_beams": 1, "max_new_tokens": 2}}
    _cut(tiny_study, tmp_path / "run", **over)
    path = tmp_path / "run/checkpoint.pt"
    state = torch.load(path, weights_only=True)
    state.update(world_size=2, rng=state["rng"] * 2)
    torch.save(state, path)
    runs = []
    for _ in range(2):
        shutil.copy(path, tmp_path / "ckpt.pt")
        t = _trainer(tiny_study, tmp_path, **over)
        with caplog.at_level(logging.WARNING, logger="vlpeft.train"):
            assert t.run() == "success"
        runs.append(t)
        shutil.copy(tmp_path / "ckpt.pt", path)
    attempts = runs[0].finalize("success")["attempts"]
    note = attempts[-1]["rng_reseeded"]
    assert note.startswith("checkpoint written by 2 cpu process(es), resumed with 1 cpu process(es)")
    assert f"({0 + 0 + 1_000_003 * 2} on rank 0)" in note and note in caplog.text
    p0, p1 = _params(runs[0]), _params(runs[1])
    assert all(torch.equal(p0[k], p1[k]) for k in p0)  # deterministic


def test_resume_after_preemption_equals_uninterrupted(tiny_study, tmp_path):
    over = {"task": "vqa", "schedule": {"kind": "steps", "steps": 6, "warmup_steps": 2}}
    full = _trainer(tiny_study, tmp_path / "full", **over)
    assert full.run() == "success"

    first = _trainer(tiny_study, tmp_path / "cut", **over)
    signal_after(first, 4)
    assert first.run() == "preempted"
    assert (tmp_path / "cut/run/checkpoint.pt").is_file()
    second = _trainer(tiny_study, tmp_path / "cut", **over)
    assert second.run() == "success"
    assert second.step == full.step == 6
    pf, ps = _params(full), _params(second)
    for k in pf:
        torch.testing.assert_close(pf[k], ps[k], atol=1e-6, rtol=1e-5)
    assert [p["val"]["accuracy"] for p in full.curve] == pytest.approx([p["val"]["accuracy"] for p in second.curve])
    assert [p["step"] for p in full.curve] == [p["step"] for p in second.curve] == [3, 6]
    assert full.best == second.best
    record = second.finalize("success")
    attempts = record["attempts"]
    assert [(a["start_step"], a["end_step"], a["status"], a["signal"]) for a in attempts] == [
        (0, 4, "preempted", "SIGTERM"),
        (4, 6, "success", None),
    ]
    # Time is counted over both attempts (the preempted one was paid for too); no GPU here.
    assert all(a["wall_s"] > 0 and a["gpus"] == 0 for a in attempts)
    assert record["wall_time_s"] == pytest.approx(sum(a["wall_s"] for a in attempts))
    assert record["gpu_hours"] == 0.0


def test_a_killed_attempt_is_recorded_when_the_run_resumes(tiny_study, tmp_path):
    """An attempt that died without a clean stop (SIGKILL, node failure) resumes from its last periodic checkpoint
    (step 3), and the record says how far it had got for sure."""
    over = {"task": "vqa", "schedule": {"kind": "steps", "steps": 6, "warmup_steps": 2}}
    first = _trainer(tiny_study, tmp_path, **over)
    step = first.train_step

    def die_at_five():
        if first.step == 5:
            raise KeyboardInterrupt  # stands for a kill: no finalize, no checkpoint beyond the periodic one
        return step()

    first.train_step = die_at_five
    with pytest.raises(KeyboardInterrupt):
        first.run()
    second = _trainer(tiny_study, tmp_path, **over)
    assert second.run() == "success"
    attempts = second.finalize("success")["attempts"]
    assert [(a["start_step"], a["end_step"], a["status"]) for a in attempts] == [(0, 3, "killed"), (3, 6, "success")]


@pytest.mark.slow
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_sigterm_checkpoints_and_exits_for_requeue(tiny_study, tmp_path, signame):
    """SLURM's SIGTERM, and Ctrl-C's SIGINT alike: checkpoint at the next step, a preempted status, exit 75."""
    cfg = make_run_config(
        tiny_study,
        tmp_path / "run",
        task="vqa",
        schedule={"kind": "steps", "steps": 100000, "warmup_steps": 2},
        eval={"interval": 0, "splits": ["val"], "num_beams": 1, "max_new_tokens": 2},
    )
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    log = open(tmp_path / "log.txt", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlpeft.train", "--config", str(path)], stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.time() + 120
    while "step 3/" not in (tmp_path / "log.txt").read_text():
        assert proc.poll() is None and time.time() < deadline, (tmp_path / "log.txt").read_text()
        time.sleep(0.2)
    proc.send_signal(getattr(signal, signame))
    assert proc.wait(timeout=120) == EXIT_PREEMPTED
    status = json.loads((tmp_path / "run/status.json").read_text())
    assert status["status"] == "preempted" and status["steps_done"] >= 3
    state = torch.load(tmp_path / "run/checkpoint.pt", weights_only=True)
    assert state["step"] == status["steps_done"]
    assert state["attempts"][-1]["status"] == "preempted" and state["attempts"][-1]["signal"] == signame
    # The run directory keeps its own log, which a retry appends to.
    assert f"received {signame}" in (tmp_path / "run/train.log").read_text()


@pytest.mark.slow
@pytest.mark.parametrize(("method", "nprocs"), [("lora", (1, 2, 4)), ("full", (1, 2))])
def test_several_processes_equal_one(tiny_study, tmp_path, method, nprocs):
    """torchrun with 2 (and 4) gloo processes takes the same optimizer steps as 1 process (same global batch, VQA's
    weighted multi-answer loss normalised over the global batch); full fine-tuning includes weights the forward
    never uses, which DDP must tolerate."""
    results = {}
    for nproc in nprocs:
        cfg = make_run_config(
            tiny_study,
            tmp_path / f"run{nproc}",
            task="vqa",
            model_overrides=NO_DROPOUT,
            method=method,
            method_options={} if method == "full" else {"size": 2},
            eval={"interval": 0, "splits": ["val"], "num_beams": 1, "max_new_tokens": 2},
        )
        cfg["per_device_batch_size"] = 4 // nproc
        path = tmp_path / f"cfg{nproc}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(
            torchrun_command(nproc, 30, str(path)),  # the training job's own launch
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[nproc] = json.loads((tmp_path / f"run{nproc}/record.json").read_text())
        from safetensors.torch import load_file

        results[nproc]["weights"] = load_file(tmp_path / f"run{nproc}/trained.safetensors")
    for nproc in nprocs:
        assert results[nproc]["world_size"] == nproc and results[nproc]["gradient_accumulation"] == 2
        for k, v in results[1]["weights"].items():
            torch.testing.assert_close(v, results[nproc]["weights"][k], atol=1e-5, rtol=1e-4)
        assert results[nproc]["curve"][-1]["val"]["accuracy"] == pytest.approx(
            results[1]["curve"][-1]["val"]["accuracy"]
        )


def test_epoch_based_run_evaluates_at_every_epoch_end(tiny_study, tmp_path):
    """2.5 epochs of the 36 training questions in global batches of 8: the epochs end in steps 5 and 9, the run in
    step 12."""
    t = _trainer(
        tiny_study,
        tmp_path,
        task="vqa",
        schedule={"kind": "epochs", "epochs": 2.5, "warmup_steps": 1},
        eval={"interval": 0, "splits": ["val"], "num_beams": 1, "max_new_tokens": 2},
    )
    assert len(t.data) == 36 and t.total_steps == 12
    assert t.run() == "success"
    assert [p["step"] for p in t.curve] == [5, 9, 12]
    assert [p["epoch"] for p in t.curve] == pytest.approx([40 / 36, 72 / 36, 96 / 36])
    with pytest.raises(ValueError, match="eval.interval must be 0 for an epoch-based schedule"):
        RunConfig.from_dict(
            make_run_config(tiny_study, tmp_path, task="vqa", schedule={"kind": "epochs", "epochs": 3})
        )


def test_prefix_record_carries_both_counts(tiny_study, tmp_path):
    """Prefix-tuning trains through its reparametrising MLP and keeps only the prefix tensors: both counts."""
    t = _trainer(tiny_study, tmp_path, task="vqa", method="prefix", method_options={"size": 4, "reparam_hidden": 8})
    rec = t.finalize("failed", "stopped by the test")
    mc = t.model.config
    assert rec["merged_params"] == (mc.text_layers + mc.fusion_layers + mc.decoder_layers) * 2 * 4 * mc.hidden_size
    assert rec["trainable_params"] == rec["closed_form_params"] > rec["merged_params"]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_ranks(cfg: dict, tmp_path: Path, name: str, nproc: int) -> list[subprocess.Popen]:
    """``nproc`` training processes over gloo, started as torchrun would start them (its environment variables)."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    port = _free_port()
    procs = []
    for rank in range(nproc):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(nproc),
            "LOCAL_WORLD_SIZE": str(nproc),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
        }
        log = open(tmp_path / f"{name}.rank{rank}.log", "w")  # noqa: SIM115 (closed with the process)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "vlpeft.train", "--config", str(path)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    return procs


def _wait(procs: list[subprocess.Popen], tmp_path: Path, name: str) -> list[int]:
    codes = [p.wait(timeout=300) for p in procs]
    logs = "".join((tmp_path / f"{name}.rank{r}.log").read_text()[-2000:] for r in range(len(procs)))
    assert all(c in (0, EXIT_PREEMPTED) for c in codes), logs
    return codes


@pytest.mark.slow
def test_each_rank_resumes_its_own_rng_and_another_world_size_reseeds(tiny_study, tmp_path):
    """Two ranks with dropout, preempted and resumed, train exactly as without the interruption (each rank gets its
    own RNG stream back, not rank 0's); resumed by one process instead, the run reseeds and records why."""
    from safetensors.torch import load_file

    def cfg(run: str) -> dict:
        return make_run_config(
            tiny_study,
            tmp_path / run,
            task="vqa",
            schedule={"kind": "steps", "steps": 60},
            eval={"interval": 0, "splits": ["val"], "num_beams": 1, "max_new_tokens": 2},
            per_device_batch_size=2,
            log_every=1,
        )

    # (independent runs side by side: the test waits for process start-up twice instead of four times)
    ref = _start_ranks(cfg("ref"), tmp_path, "ref", 2)
    cut = _start_ranks(cfg("cut"), tmp_path, "cut", 2)
    deadline = time.time() + 240
    while "step 3/" not in (tmp_path / "cut.rank0.log").read_text():
        assert all(p.poll() is None for p in cut) and time.time() < deadline, (tmp_path / "cut.rank0.log").read_text()
        time.sleep(0.05)
    cut[1].send_signal(signal.SIGTERM)  # one rank's signal stops both at the same step
    assert _wait(cut, tmp_path, "cut") == [EXIT_PREEMPTED] * 2
    state = torch.load(tmp_path / "cut/checkpoint.pt", weights_only=True)
    assert state["world_size"] == 2 and 3 <= state["step"] < 60
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
    shutil.copytree(tmp_path / "cut", tmp_path / "one")

    resume = _start_ranks(cfg("cut"), tmp_path, "resume", 2)
    one = _start_ranks(cfg("one"), tmp_path, "one", 1)  # 1 process x 2 x 4 accumulation
    assert _wait(ref, tmp_path, "ref") == [0, 0] and _wait(resume, tmp_path, "resume") == [0, 0]
    ref, resumed = (load_file(tmp_path / f"{run}/trained.safetensors") for run in ("ref", "cut"))
    for k in ref:
        torch.testing.assert_close(resumed[k], ref[k], rtol=0, atol=1e-7, msg=k)

    assert _wait(one, tmp_path, "one") == [0]
    record = json.loads((tmp_path / "one/record.json").read_text())
    note = record["attempts"][-1]["rng_reseeded"]
    assert note.startswith("checkpoint written by 2 cpu process(es), resumed with 1 cpu process(es)")
    assert note in (tmp_path / "one/train.log").read_text()


def test_record_fields(tiny_study, tmp_path):
    cfg = make_run_config(tiny_study, tmp_path / "run", task="vqa")
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    from vlpeft.train import main

    assert main(["--config", str(path)]) == 0
    rec = json.loads((tmp_path / "run/record.json").read_text())
    for key in (
        "config",
        "git",
        "environment",
        "world_size",
        "trainable_params",
        "total_params",
        "curve",
        "best",
        "wall_time_s",
        "gpu_hours",
        "samples_per_s",
        "samples_seen",
        "status",
        "peak_rss_bytes",
    ):
        assert key in rec, key
    assert rec["status"] == "success"
    assert rec["trainable_params"] == rec["closed_form_params"] == rec["merged_params"]
    assert rec["samples_seen"] == 6 * 8
    assert [p["step"] for p in rec["curve"]] == [3, 6]
    assert rec["best"]["metric"] == "accuracy"
    assert rec["method_info"] == {"scaling": 1.0, "scaling_rule": "eq. 13: Phi = BA (scaling 1)"}  # LoRA, no alpha
    assert not (tmp_path / "run/checkpoint.pt").exists()
    assert (tmp_path / "run/trained.safetensors").is_file()


def test_a_finished_run_whose_record_was_deleted_is_not_trained_again(tiny_study, tmp_path, caplog):
    """SLURM may record a job that finished as TIMEOUT (its time limit fell while it was exiting); Snakemake then
    deletes record.json and resubmits. The retry writes the record again from status.json and trains nothing; with
    the trained weights changed it trains again (from scratch: a finished run keeps no checkpoint)."""
    from vlpeft.train import main

    caplog.set_level(logging.INFO)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(make_run_config(tiny_study, tmp_path / "run", task="vqa")))
    run = tmp_path / "run"
    assert main(["--config", str(path)]) == 0
    first = json.loads((run / "record.json").read_text())
    assert first["outputs"]["trained"]["path"] == str(run / "trained.safetensors")
    (run / "record.json").unlink()  # what Snakemake does to a failed job's outputs

    assert main(["--config", str(path)]) == 0
    again = json.loads((run / "record.json").read_text())
    log = (run / "train.log").read_text()
    assert log.count("step 6/6") == 1 and "record.json written again from it, nothing retrained" in log
    assert [a["status"] for a in again["attempts"]] == ["success", "restored"]
    assert {k: v for k, v in again.items() if k != "attempts"} == {k: v for k, v in first.items() if k != "attempts"}
    assert json.loads((run / "status.json").read_text()) == again

    (run / "record.json").unlink()
    with open(run / "trained.safetensors", "ab") as f:
        f.write(b"\0")
    assert main(["--config", str(path)]) == 0
    log = (run / "train.log").read_text()
    assert log.count("step 6/6") == 2 and "weights" in log and "are missing or changed" in log
    assert [a["status"] for a in json.loads((run / "record.json").read_text())["attempts"]] == ["success"]


# Rank 0 made slow where it works alone: scoring an evaluation split and writing a checkpoint (by the test only).
_SLOW_RANK0 = """
import os, sys, time
from vlpeft import evaluate, train
delay = float(os.environ["SLOW_RANK0_S"])
score, write = evaluate.Evaluator.score, train.Trainer._write_checkpoint
def slow_score(self, preds, *args):
    time.sleep(delay)
    return score(self, preds, *args)
def slow_write(self, rngs):
    time.sleep(delay)
    return write(self, rngs)
evaluate.Evaluator.score, train.Trainer._write_checkpoint = slow_score, slow_write
sys.exit(train.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_rank0_working_alone_longer_than_the_collective_timeout_kills_nothing(tiny_study, tmp_path):
    """NCCL's watchdog stops a run whose collective waits longer than the process group's timeout. Rank 0 scores
    (Java PTB tokenizer) and writes checkpoints alone: the other ranks wait for that on a gloo group with their own
    patience (rank0_timeout_min), not in a collective. Here the collective timeout is 3 s and rank 0 takes 6 s each
    time (2 scorings, 1 checkpoint); both gloo ranks finish."""
    cfg = make_run_config(
        tiny_study,
        tmp_path / "run",
        task="vqa",
        per_device_batch_size=2,
        dist_timeout_min=0.05,
        rank0_timeout_min=5.0,
        eval={"interval": 3, "splits": ["val"], "num_beams": 1, "max_new_tokens": 2},
    )
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "LOCAL_WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
            "SLOW_RANK0_S": "6",
        }
        log = open(tmp_path / f"rank{rank}.log", "w")  # noqa: SIM115 (closed with the process)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _SLOW_RANK0, "--config", str(path)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    codes = [p.wait(timeout=300) for p in procs]
    logs = "".join((tmp_path / f"rank{r}.log").read_text()[-3000:] for r in range(2))
    assert codes == [0, 0], logs
    record = json.loads((tmp_path / "run/record.json").read_text())
    assert record["status"] == "success" and [p["step"] for p in record["curve"]] == [3, 6]


def test_a_signal_during_an_evaluation_stops_it_and_the_resumed_run_evaluates_first(tiny_study, tmp_path, caplog):
    """SIGTERM arriving while an evaluation runs stops it at the next batch; the checkpoint says the evaluation is
    due, and the resumed run does it before training on: the same curve as without the interruption."""
    over = {
        "task": "vqa",
        "schedule": {"kind": "steps", "steps": 6, "warmup_steps": 2},
        "eval": {"interval": 3, "splits": ["val", "test"], "num_beams": 1, "max_new_tokens": 2, "batch_size": 2},
    }
    full = _trainer(tiny_study, tmp_path / "full", **over)
    assert full.run() == "success"

    first = _trainer(tiny_study, tmp_path / "cut", **over)
    val = first.evaluators["val"]
    generate_batches = []
    predict = val.predict

    def signalled_predict(model, device, stop=None):
        def stop_after_two():  # the signal arrives after the second batch of val
            generate_batches.append(1)
            if len(generate_batches) == 3:
                first.stop_signal = "SIGTERM"
            return stop()

        return predict(model, device, stop_after_two)

    val.predict = signalled_predict
    assert first.run() == "preempted"
    assert first.curve == [] and len(generate_batches) == 3  # stopped at the check before the third batch
    assert "evaluation at step 3 given up (vqa/val: stopped after 2 batch(es))" in caplog.text
    state = torch.load(tmp_path / "cut/run/checkpoint.pt", weights_only=True)
    assert state["step"] == 3 and state["eval_pending"] is True
    second = _trainer(tiny_study, tmp_path / "cut", **over)
    assert second.run() == "success"
    assert [p["step"] for p in second.curve] == [p["step"] for p in full.curve] == [3, 6]
    for split in ("val", "test"):
        assert [p[split]["accuracy"] for p in second.curve] == pytest.approx(
            [p[split]["accuracy"] for p in full.curve]
        )
    attempts = second.finalize("success")["attempts"]
    assert [(a["start_step"], a["end_step"], a["status"]) for a in attempts] == [
        (0, 3, "preempted"),
        (3, 6, "success"),
    ]


_SLOW_CHECKPOINT = """
import os
if os.environ.get("RANK") == "0" and os.environ.get("SLOW_SAVE_S"):
    import time, torch
    _save = torch.save
    def _slow_save(*a, **k):
        time.sleep(float(os.environ["SLOW_SAVE_S"]))
        return _save(*a, **k)
    torch.save = _slow_save
"""


@pytest.mark.slow
def test_preempted_torchrun_job_exits_75_after_rank0s_checkpoint(tiny_study, tmp_path):
    """SIGTERM to every process of the job (as SLURM sends it) while 2 gloo ranks train under vlpeft.launch
    (torchrun): rank 0 takes 35 s to write the checkpoint, longer than torchrun's default 30 s grace; rank 1 waits
    for it, torchrun (grace 120 s) kills nobody, and the job exits 75, not torchrun's 1. The checkpoint resumes."""
    cfg = make_run_config(
        tiny_study,
        tmp_path / "run",
        task="vqa",
        per_device_batch_size=2,
        schedule={"kind": "steps", "steps": 100000, "warmup_steps": 2},
        eval={"interval": 0, "splits": ["val"], "num_beams": 1, "max_new_tokens": 2},
    )
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_SLOW_CHECKPOINT)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "SLOW_SAVE_S": "35",
        "PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    log = open(tmp_path / "log.txt", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlpeft.launch", "--nproc-per-node", "2", "--stop-grace", "120", "--config", str(path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    deadline = time.time() + 180
    while "step 3/" not in (tmp_path / "log.txt").read_text():
        assert proc.poll() is None and time.time() < deadline, (tmp_path / "log.txt").read_text()[-3000:]
        time.sleep(0.2)
    t0 = time.time()
    os.killpg(proc.pid, signal.SIGTERM)  # launcher, torchrun and both ranks, as SLURM does
    rc = proc.wait(timeout=240)
    log.close()
    out = (tmp_path / "log.txt").read_text()
    assert rc == EXIT_PREEMPTED, out[-4000:]
    assert time.time() - t0 >= 35 and "exiting 75 so that the job is resubmitted" in out
    status = json.loads((tmp_path / "run/status.json").read_text())
    state = torch.load(tmp_path / "run/checkpoint.pt", weights_only=True)
    assert status["status"] == "preempted" and state["step"] == status["steps_done"] >= 3
    assert len(state["rng"]) == 2 and state["attempts"][-1]["signal"] == "SIGTERM"

    resumed = Trainer(RunConfig.from_dict(cfg))  # (one process: resumes the step, reseeds the RNG)
    resumed.setup()
    resumed.inputs = resumed.input_digests()
    assert resumed.maybe_resume()["rng_reseeded"] and resumed.step == state["step"]


_RANK1_OOM = """
import os, sys, torch
from vlpeft import train
step = train.Trainer.train_step
def oom_on_rank1(self):
    if self.rank == 1 and self.step == 2:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (raised by the test)")
    return step(self)
train.Trainer.train_step = oom_on_rank1
sys.exit(train.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_an_error_on_another_rank_than_0_is_recorded(tiny_study, tmp_path):
    """Rank 1 runs out of memory at step 2 (2 gloo processes): status.json records its error and rank; rank 0, which
    then fails in its collective, leaves that record alone."""
    cfg = make_run_config(
        tiny_study,
        tmp_path / "run",
        task="vqa",
        per_device_batch_size=2,
        dist_timeout_min=1.0,
        eval={"interval": 0, "splits": ["val"], "num_beams": 1, "max_new_tokens": 2},
    )
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    (tmp_path / "run").mkdir()
    (tmp_path / "run/.failed.0123456789abcdef").touch()  # an earlier launch's claim does not block this one
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "LOCAL_WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
        }
        log = open(tmp_path / f"rank{rank}.log", "w")  # noqa: SIM115 (closed with the process)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _RANK1_OOM, "--config", str(path)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    codes = [p.wait(timeout=300) for p in procs]
    logs = "".join((tmp_path / f"rank{r}.log").read_text()[-3000:] for r in range(2))
    assert codes[0] != 0 and codes[1] != 0, logs
    status = json.loads((tmp_path / "run/status.json").read_text())
    assert status["status"] == "failed" and status["failed_rank"] == 1, status
    assert status["error"].startswith("OutOfMemoryError: CUDA out of memory") and status["steps_done"] == 2
    assert [p.name for p in (tmp_path / "run").glob(".failed.*")] != [".failed.0123456789abcdef"]
    assert "status.json keeps the first failing rank's error" in logs
    assert not (tmp_path / "run/record.json").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="warm starts are Linux only")
def test_a_warm_started_run_equals_a_fresh_process(tiny_study, tmp_path):
    """vlpeft.warm forks the run from a server that imported torch once: the same curve, scores, trained weights and
    random draws (dropout on) as ``python -m vlpeft.train`` in a new interpreter."""
    from safetensors.torch import load_file

    env = {
        **os.environ,
        "VLPEFT_WARM_DIR": str(tmp_path / "servers"),
        "VLPEFT_WARM_IDLE_S": "2",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("VLPEFT_WARM", None)
    records = {}
    for name, launch in [("cold", ["vlpeft.train"]), ("warm", ["vlpeft.warm", "vlpeft.train"])]:
        cfg = make_run_config(tiny_study, tmp_path / name, task="coco", threads=1)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        proc = subprocess.run(
            [sys.executable, "-m", *launch, "--config", str(path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        records[name] = json.loads((tmp_path / name / "record.json").read_text())
        records[name]["weights"] = load_file(tmp_path / name / "trained.safetensors")
    logs = [p.read_text() for p in (tmp_path / "servers").glob("*.log")]
    assert any("serving vlpeft.train" in t for t in logs), "the warm run did not go through a server"
    cold, warm = records["cold"], records["warm"]
    assert warm["curve"] == cold["curve"] and warm["best"] == cold["best"]
    assert cold["weights"].keys() == warm["weights"].keys()
    assert all(torch.equal(cold["weights"][k], warm["weights"][k]) for k in cold["weights"])
