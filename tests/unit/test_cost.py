"""The cost model: samples per run, counted FLOPs with and without the feature store, GPU-hours, time limits."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from vlpeft import cost, tasks
from vlpeft.grid import expand
from vlpeft.model.config import preset
from vlpeft.schedule import eval_steps

REPO = Path(__file__).resolve().parents[2]
TINY = preset("tiny", vocab_size=96)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def paper() -> dict:
    return yaml.safe_load((REPO / "config/config.yaml").read_text())


def _small_paper(paper: dict) -> dict:
    """The paper's study with one LoRA size, full fine-tuning and two ratios per task (base model)."""
    c = copy.deepcopy(paper)
    c["methods"] = {
        "lora": {**c["methods"]["lora"], "coco": {"sizes": [8], "lr": 1e-4}, "vqa": {"sizes": [8], "lr": 1e-4}},
        "full": c["methods"]["full"],
    }
    c["tasks"]["coco"]["ratios"] = [0.01, 1.0]
    c["tasks"]["vqa"]["ratios"] = [0.1, 1.0]
    return c


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("prompt", {"size": 3}),
        ("prefix", {"size": 3, "reparam_hidden": 16}),
        ("lora", {"size": 2, "classifier": True}),
        ("serial_adapter", {"size": 4}),
        ("parallel_adapter", {"size": 4}),
    ],
)
def test_count_with_features_plus_the_vit_equals_the_count_with_images(method, options):
    opts = json.dumps(options, sort_keys=True)
    vit = cost.vit_forward_flops(TINY)
    assert vit > 0
    images = cost.train_flops(TINY, method, opts, 5, 7)
    features = cost.train_flops(TINY, method, opts, 5, 7, features=True)
    assert images == features + vit  # a frozen ViT: its forward only, no backward
    assert (
        cost.eval_flops(TINY, method, opts, 5, 3, 4)
        == cost.eval_flops(TINY, method, opts, 5, 3, 4, features=True) + vit
    )


def test_training_the_vit_costs_its_backward_too():
    frozen = cost.train_flops(TINY, "lora", json.dumps({"size": 2}), 5, 7)
    tuned = cost.train_flops(
        TINY, "lora", json.dumps({"size": 2, "targets": ["visual_encoder", "text_decoder"]}), 5, 7
    )
    assert tuned > frozen


def test_samples_and_store_use_of_the_paper_runs(paper):
    config = _small_paper(paper)
    rows = {c.run_id: c for c in cost.run_costs(config)}
    assert len(rows) == len(expand(config))
    coco = rows["coco/lora/size8_ratio0.01/seed0"]
    assert coco.train_samples == 4000 * 256  # step-based: the same for every ratio
    assert coco.eval_samples == 8 * (5000 + 5000)  # every 500 of 4000 steps, val + test images
    vqa = rows["vqa/lora/size8_ratio1/seed0"]
    steps = -(-10 * 605_100 // 256)
    assert vqa.train_samples == steps * 256
    assert vqa.eval_samples == 10 * (26_700 + 26_300)  # every epoch end (10 epochs)
    assert coco.store and vqa.store
    full = rows["coco/full/sizeall_ratio1/seed0"]
    assert not full.store and full.train_flops_per_sample == full.train_flops_per_sample_store
    # base model, frozen ViT: the store removes the ViT's ~46 GFLOP forward from each sample
    assert 40e9 < coco.train_flops_per_sample - coco.train_flops_per_sample_store < 50e9
    assert full.train_flops_per_sample > 2 * coco.train_flops_per_sample_store
    off = copy.deepcopy(config)
    off["data"]["feature_store"] = {"activate": False}
    assert not any(c.store for c in cost.run_costs(off))


def test_prepared_records_give_the_sizes(tmp_path, paper):
    for task, split, lines in (
        ("coco", "train", ['{"references": ["a", "b"]}'] * 3),
        ("coco", "val", ["{}"] * 2),
        ("coco", "test", ["{}"] * 4),
    ):
        path = tmp_path / f"results/paper/data/prepared/{task}/{split}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
    assert cost.split_sizes(paper, "coco", tmp_path) == ({"train": 6, "val": 2, "test": 4}, "records")
    assert cost.split_sizes(paper, "vqa", tmp_path) == (tasks.VQA.published_sizes, "published")
    assert cost.split_sizes(paper, "coco")[0]["train"] == 113287 * cost.CAPTIONS_PER_IMAGE  # expected_counts


def test_predictions_use_a_recorded_benchmark_and_limits_follow_them(tmp_path, paper):
    config = _small_paper(paper)
    costs = cost.run_costs(config)
    settings = cost.load_settings(REPO / "profiles/slurm")
    assert settings.gpus_per_job == 4  # from the profile's set-resources
    assumed, source = cost.predict(costs, settings)
    assert "assumed MFU" in source
    c, p = costs[0], assumed[0]
    rate = settings.mfu * settings.gpu_peak_tflops * 1e12
    ev = settings.eval_mfu * settings.gpu_peak_tflops * 1e12
    expected = (
        c.train_samples * c.train_flops_per_sample_store / rate + c.eval_samples * c.eval_flops_per_sample_store / ev
    ) / 3600
    assert p.gpu_hours == pytest.approx(expected) and p.gpu_hours_store == pytest.approx(expected)
    assert p.gpu_hours_no_store > p.gpu_hours_store

    bench = [
        {"method": "lora", "store": False, "tflop_per_step": 6.0, "step_s": 0.1, "mfu": 0.1},
        {"method": "lora", "store": True, "tflop_per_step": 3.0, "step_s": 0.1, "mfu": 0.05},
        {"method": "full", "tflop_per_step": 12.0, "step_s": 0.2, "mfu": 0.1},
    ]
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    (tmp_path / "cost.yaml").write_text(yaml.safe_dump({"benchmark": "bench.json", "margin": 2.0}))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"set-resources": {"train_run": {"gpu": 2}}}))
    measured = cost.load_settings(tmp_path)
    assert (measured.gpus_per_job, measured.margin) == (2, 2.0)
    preds, source = cost.predict(costs, measured)
    assert "measured per method" in source
    eval_rate = measured.eval_mfu * 600e12  # the peak the recording implies: 60 TFLOP/s at 10% MFU
    assert preds[0].gpu_hours == pytest.approx(
        (
            c.train_samples * c.train_flops_per_sample_store / 30e12
            + c.eval_samples * c.eval_flops_per_sample_store / eval_rate
        )
        / 3600
    )
    for p in preds:
        wall = p.gpu_hours / 2 * 60 * 2.0 + measured.overhead_minutes
        assert p.slurm_minutes >= min(wall, measured.max_minutes) and p.slurm_minutes % measured.round_minutes == 0
    (tmp_path / "cost.yaml").write_text(yaml.safe_dump({"bogus": 1}))
    with pytest.raises(ValueError, match="bogus"):
        cost.load_settings(tmp_path)


def test_job_minutes_from_the_written_predictions(tmp_path, paper):
    config = _small_paper(paper)
    config["tasks"] = {"coco": {**config["tasks"]["coco"], "ratios": [1.0]}}
    config["methods"] = {"lora": config["methods"]["lora"]}
    config["classifier"] = [False]
    out = tmp_path / "runs.json"
    assert cost.job_minutes(out, "coco/lora/size8_ratio1/seed0") == cost.FALLBACK_MINUTES  # not written yet
    doc = cost.write_predictions(config, REPO / "profiles/slurm", out)
    first = doc["runs"]["coco/lora/size8_ratio1/seed0"]["slurm_minutes"]
    settings = cost.load_settings(REPO / "profiles/slurm")
    assert settings.min_minutes <= first < cost.FALLBACK_MINUTES
    assert cost.job_minutes(out, "coco/lora/size8_ratio1/seed0") == first
    assert cost.job_minutes(out, "coco/lora/size8_ratio1/seed0", attempt=3) >= 2 * first
    with pytest.raises(KeyError, match="predict_costs"):
        cost.job_minutes(out, "coco/lora/size2_ratio1/seed0")


def test_evaluations_and_cost_inputs(paper):
    assert len(eval_steps("steps", 4000, 500)) == 8
    assert len(eval_steps("epochs", 23637, 0, 605_100, 256)) == 10
    assert len(eval_steps("steps", 60, 0)) == 1
    stripped = cost.cost_inputs(paper)
    assert cost.cost_inputs({**paper, "reported_metric": "test_at_best_val", "title": "renamed"}) == stripped
    assert cost.cost_inputs(paper)["study"] == "paper"  # the study's root: its records and vocabulary are read there
    assert {m["coco"]["lr"] for m in stripped["methods"].values()} == {1.0}
    assert paper["methods"]["lora"]["coco"]["lr"] != 1.0  # the study config itself is untouched


@pytest.mark.parametrize(
    ("hours", "text"),
    [(0.0, "0"), (7.48e-5, "0.0000748"), (0.000101, "0.000101"), (0.5, "0.500"), (5.5, "5.50"), (1122.4, "1,122")],
)
def test_gpu_hours_of_a_cpu_sized_study_are_not_zero(hours: float, text: str) -> None:
    assert cost.hours_text(hours) == text


@pytest.mark.parametrize(
    ("flops", "text"), [(11.4e12, "11.4 TFLOP"), (3e15, "3.0 PFLOP"), (161.7e18, "161.7 EFLOP"), (5.0, "5 FLOP")]
)
def test_flops_take_the_largest_prefix_that_keeps_them_at_least_1(flops: float, text: str) -> None:
    assert cost.flops_text(flops) == text
