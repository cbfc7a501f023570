"""``vlpeft plan``: the list schedule, peak GPUs, disk per stage and memory, against hand computations; writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from vlpeft import cost, plan
from vlpeft.cli import main as cli
from vlpeft.grid import expand, resolve

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "tests/workflow/configs/tiny.yaml"
pytestmark = pytest.mark.usefixtures("one_thread")


def _profile(folder: Path, gpu: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "default-resources": {"mem_mb": 100},
                "set-resources": {
                    "train_run": {"gpu": gpu, "mem_mb": 1000},
                    "extract_features": {"gpu": 1, "mem_mb": 5000},
                },
            }
        )
    )
    (folder / "cost.yaml").write_text("mfu: 0.25\n")
    return folder


FLOPS = {
    "full": 3e9,
    "lora": 2e9,
    "prompt": 1e9,
    "prefix": 1.5e9,
    "serial_adapter": 2e9,
    "parallel_adapter": 2e9,
}  # per sample: stand-ins for the counts (tests/unit/test_cost.py)


@pytest.fixture(scope="module")
def fake_flops():
    """Fixed FLOPs per sample by method instead of counting them (seconds each): the plan's own arithmetic is tested
    here, the counts in tests/unit/test_cost.py."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cost, "train_flops", lambda mc, method, *args, **kwargs: 3 * FLOPS[method])
        mp.setattr(cost, "eval_flops", lambda mc, method, *args, **kwargs: FLOPS[method])
        mp.setattr(cost, "vit_forward_flops", lambda mc: 5e8)
        yield


@pytest.fixture(scope="module")
def tiny() -> dict:
    """The workflow tests' tiny study with prefix-tuning added (its saved weights are smaller than what it trains)."""
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["methods"]["prefix"] = {
        "options": {"reparam_hidden": 8},
        "coco": {"sizes": [2], "lr": 1e-3},
        "vqa": {"sizes": [2], "lr": 1e-3},
    }
    return config


@pytest.fixture(scope="module")
def counted(tiny, tmp_path_factory) -> dict[str, tuple[int, int]]:
    """Per run: parameters that train and that its saved weights hold (after merge), counted on the built tiny model
    (not by the closed forms the plan uses)."""
    from vlpeft.methods.base import build_method, trainable_parameters
    from vlpeft.model.mplug import MPlug

    mc = cost.model_config(tiny, tmp_path_factory.mktemp("empty"))
    counts: dict[str, tuple[int, int]] = {}
    out = {}
    for run in expand(tiny):
        opts = resolve(tiny, run)["method_options"]
        key = json.dumps([run.method, opts], sort_keys=True)
        if key not in counts:
            method = build_method(run.method, **opts)
            model = method.attach(MPlug(mc))
            trained = sum(p.numel() for p in trainable_parameters(model).values())
            method.merge(model)
            counts[key] = (trained, sum(p.numel() for p in trainable_parameters(model).values()))
        out[run.run_id] = counts[key]
    return out


@pytest.fixture(scope="module")
def trainable(counted) -> dict[str, int]:
    return {r: trained for r, (trained, _) in counted.items()}


@pytest.fixture(scope="module")
def plans(tiny, tmp_path_factory, fake_flops) -> dict:
    """The tiny study's plans at -j 1, 3 and 40 (2 GPUs per job) and with a profile giving no GPU."""
    root = tmp_path_factory.mktemp("root")
    profile = _profile(tmp_path_factory.mktemp("profile"))
    cpu = _profile(tmp_path_factory.mktemp("cpu"), gpu=0)
    out = {j: plan.make_plan(tiny, profile, j, root) for j in (1, 3, 40)}
    out["cpu"] = plan.make_plan(tiny, cpu, 40, root)
    out["preds"] = cost.predict(cost.run_costs(tiny, root), cost.load_settings(profile))[0]
    return out


def _disk(doc: dict, stage: str) -> list[dict]:
    return [d for d in doc["disk"] if d["stage"] == stage]


def test_list_schedule_is_greedy_longest_first() -> None:
    # Longest first on 2 slots: 5 -> A, 4 -> B, 3 -> B (free at 4, ends 7), 3 -> A (ends 8), 2 -> B (9), 2 -> A (10)
    makespan, spans = plan.list_schedule([2, 3, 5, 2, 4, 3], 2)
    assert makespan == 10
    assert sorted(spans) == [(0, 4), (0, 5), (4, 7), (5, 8), (7, 9), (8, 10)]
    assert plan.list_schedule([2, 3, 5], 10) == (5, [(0, 2), (0, 3), (0, 5)])  # more slots than jobs
    assert plan.list_schedule([2, 3, 5], 1)[0] == 10
    assert plan.list_schedule([], 4) == (0.0, [])
    with pytest.raises(ValueError, match="at least 1"):
        plan.list_schedule([1.0], 0)


def test_peak_concurrent_frees_an_ending_job_before_the_next_starts() -> None:
    spans = [(0, 2), (1, 3), (2, 4)]
    assert plan.peak_concurrent(spans, [1, 10, 100]) == 110  # at t=2 the first has ended as the third starts
    assert plan.peak_concurrent([(0, 4), (1, 2), (3, 5)], [1, 10, 100]) == 101


def test_runs_hours_wall_time_and_peak_gpus(plans) -> None:
    hours = [p.gpu_hours for p in plans["preds"]]
    assert plans[40]["runs"] == len(hours) == 28
    assert plans[40]["gpu_hours"] == pytest.approx(sum(hours))
    assert plans[1]["wall_hours"] == pytest.approx(sum(hours) / 2)  # one job at a time, 2 GPUs each
    assert plans[40]["wall_hours"] == pytest.approx(max(hours) / 2)  # every run at once
    expect = plan.list_schedule([h / 2 for h in hours], 3)[0]
    assert plans[3]["wall_hours"] == pytest.approx(expect)
    assert plans[3]["wall_hours_lower_bound"] <= plans[3]["wall_hours"]
    limits = [p.slurm_minutes / 60 for p in plans["preds"]]
    assert plans[1]["wall_hours_at_limits"] == pytest.approx(sum(limits))
    assert [plans[j]["peak_gpus"] for j in (1, 3, 40)] == [2, 6, 56]  # min(N, 28 runs) x 2
    assert plans["cpu"]["peak_gpus"] == 0 and plans["cpu"]["wall_hours"] is None


def test_disk_per_stage(plans, trainable, counted, tiny) -> None:
    doc = plans[3]
    mc = cost.model_config(tiny, REPO / "nonexistent")
    images = 40 + 6 + 6  # tiny.yaml's expected_counts for coco
    caches = {d["name"]: d["bytes"] for d in _disk(doc, "caches")}
    assert caches[f"image cache ({mc.image_size} px, uint8)"] == images * mc.image_size**2 * 3
    assert caches["feature store (float32)"] == images * mc.num_image_tokens * mc.vision_width * 4
    assert _disk(doc, "downloads") == []  # synthetic data
    [weights] = _disk(doc, "saved weights")
    saved = sum(n for _, n in counted.values())
    assert weights["bytes"] == 4 * saved < 4 * sum(trainable.values())  # prefix-tuning's MLP is folded away
    [model] = _disk(doc, "model")
    from vlpeft.methods.full import model_count

    assert model["bytes"] == 4 * model_count(mc)
    ckpt = {j: _disk(plans[j], "checkpoints")[0]["bytes"] for j in (1, 40)}
    assert ckpt[1] == 12 * max(trainable.values())  # one job at a time
    assert ckpt[40] == 12 * sum(trainable.values())  # all at once
    assert "unknown" in _disk(doc, "unpacked")[0]["source"]  # synthetic images before they are generated


def test_memory_from_the_profile_and_the_static_estimate(plans, trainable, tiny) -> None:
    from vlpeft.methods.full import model_count

    m = plans[3]["memory"]
    assert m["host_mb_training_job"] == 1000 and m["host_source"] == "set-resources.train_run.mem_mb"
    assert (m["host_mb_largest_job"], m["host_largest_rule"]) == (5000, "extract_features")
    params = model_count(cost.model_config(tiny, REPO / "nonexistent"))
    assert m["gpu_static_trainable"] == max(trainable.values()) == params  # full fine-tuning
    assert m["gpu_static_bytes"] == 4 * params + 16 * params
    assert m["gpu_measured"] == []


def test_downloads_and_unpacked_sizes_say_where_they_come_from(tmp_path) -> None:
    dl = tmp_path / "results/downloads"
    dl.mkdir(parents=True)
    (dl / "checksums.txt").write_text(f"{'a' * 64}  1234  recorded.zip  https://example.org/recorded.zip\n")
    (dl / "present.txt").write_bytes(b"x" * 77)
    config = {
        "study": "s",
        "model": {"init": "official"},
        "data": {
            "source": "download",
            "downloads": {
                "train2014.zip": {"url": "u", "size": 1000},
                "val2014.zip": {"url": "u", "size": 500},
                "recorded.zip": {"url": "u"},
                "present.txt": {"url": "u"},
                "mplug_base.pth": {"url": "u"},
            },
        },
    }
    items = {d.name: d for d in plan._download_items(config, tmp_path)}
    assert (items["train2014.zip"].bytes, items["train2014.zip"].source) == (1000, "config (data.downloads)")
    assert items["recorded.zip"].bytes == 1234 and "checksums.txt" in items["recorded.zip"].source
    assert (items["present.txt"].bytes, items["present.txt"].source) == (77, "measured on disk")
    assert items["mplug_base.pth"].bytes is None and items["mplug_base.pth"].source.startswith("unknown")
    unpacked = {d.name: d for d in plan._unpacked_items(config, tmp_path, list(items.values()))}
    assert unpacked["COCO images"].bytes == 1500 and unpacked["COCO images"].source.startswith("estimate")
    assert unpacked["mplug_base.pth (study copy)"].bytes is None
    images = tmp_path / "results/s/data/raw/images"
    images.mkdir(parents=True)
    (images / ".complete").write_text("")
    (images / "a.jpg").write_bytes(b"x" * 10)
    unpacked = {d.name: d for d in plan._unpacked_items(config, tmp_path, list(items.values()))}
    assert (unpacked["COCO images"].bytes, unpacked["COCO images"].source) == (10, "measured on disk")


def test_measured_gpu_peaks_of_the_study_and_the_pilot(tmp_path) -> None:
    for study, peak in (("tiny", 3), ("tiny", 2), ("pilot", 7)):
        rec = tmp_path / f"results/{study}/runs/coco/lora/size{peak}_ratio1/seed0/record.json"
        rec.parent.mkdir(parents=True)
        rec.write_text(json.dumps({"status": "success", "peak_gpu_memory_bytes": peak * 2**30}))
    found = plan._measured_gpu_memory({"study": "tiny"}, tmp_path, cost.CostSettings())
    assert [r["bytes"] for r in found] == [3 * 2**30, 7 * 2**30]
    assert "results/pilot/runs/coco/lora/size7_ratio1/seed0/record.json" in found[1]["source"]


def _pilot_record(root: Path, method: str, preset: str, seen: int, seconds: float, world: int) -> None:
    rec = root / f"results/pilot/runs/coco/{method}/size2_ratio0.01/seed0/record.json"
    rec.parent.mkdir(parents=True, exist_ok=True)
    rec.write_text(
        json.dumps(
            {
                "status": "success",
                "samples_seen": seen,
                "train_time_s": seconds,
                "world_size": world,
                "config": {
                    "task": "coco",
                    "method": method,
                    "method_options": {"size": 2},
                    "model_preset": preset,
                    "model_overrides": {},
                    "feature_store": "results/pilot/data/features_256_float16.npy",
                },
            }
        )
    )


def test_gpu_hours_from_the_pilot_records(tiny, tmp_path, fake_flops) -> None:
    profile = _profile(tmp_path / "profile")
    _pilot_record(tmp_path, "lora", "tiny", seen=1000, seconds=10.0, world=2)
    _pilot_record(tmp_path, "prompt", "base", seen=1000, seconds=1.0, world=1)  # another model: not used
    mc = cost.model_config(tiny, tmp_path)
    rates, source = plan.pilot_rates(tiny, tmp_path, mc)
    assert rates == {("lora", True): pytest.approx(3 * FLOPS["lora"] * 1000 / (10.0 * 2))}
    assert source == "1 pilot run record(s) under results/pilot/runs"
    doc = plan.make_plan(tiny, profile, 3, tmp_path)
    assert "pilot run record" in doc["source"]
    settings = cost.load_settings(profile)
    costs = cost.run_costs(tiny, tmp_path)
    measured = sum(p.gpu_hours for p in cost.predict(costs, settings, (rates, source))[0])
    assumed = sum(p.gpu_hours for p in cost.predict(costs, settings)[0])
    assert doc["gpu_hours"] == pytest.approx(measured) and measured != pytest.approx(assumed)


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_cli_table_and_json_write_nothing(tmp_path, capsys, fake_flops) -> None:
    profile = _profile(tmp_path / "profile")
    before = _tree(tmp_path)
    assert (
        cli(
            [
                "plan",
                "--config",
                str(TINY_CONFIG),
                "--profile",
                str(profile),
                "-j",
                "3",
                "--root",
                str(tmp_path),
                "--json",
            ]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert (doc["runs"], doc["peak_gpus"], doc["jobs"]) == (20, 6, 3)
    assert cli(["plan", "--config", str(TINY_CONFIG), "--profile", str(profile), "--root", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert "peak GPUs requested  40 = min(40, 20 runs) x 2" in out.out
    assert "list schedule" in out.out and "total (peak)" in out.out
    assert out.err.startswith("vlpeft plan: ")
    assert _tree(tmp_path) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", "no/such.yaml"], "config file not found: no/such.yaml"),
        (["--config", str(TINY_CONFIG), "--profile", "no/profile"], "profile not found: no/profile/config.yaml"),
        (["--config", str(TINY_CONFIG), "-j", "0"], "-j/--jobs must be at least 1"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(args, message, capsys) -> None:
    assert cli(["plan", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and err.startswith("vlpeft: error: ")


def test_the_paper_plan_without_data_or_gpu(tmp_path, fake_flops) -> None:
    """The paper's config on a machine without its data: published and expected sizes, every number sourced (FLOPs
    stand in for the counts, which take minutes at base size: tests/unit/test_cost.py counts them)."""
    from vlpeft.grid import load_config

    doc = plan.make_plan(load_config(REPO / "config/config.yaml"), REPO / "profiles/slurm", 40, tmp_path)
    assert (doc["runs"], doc["gpus_per_job"], doc["peak_gpus"]) == (810, 4, 160)
    caches = {d["name"]: d["bytes"] for d in _disk(doc, "caches")}
    assert caches["feature store (float16)"] == 123_287 * 257 * 768 * 2
    assert caches["image cache (256 px, uint8)"] == 123_287 * 256 * 256 * 3
    downloads = {d["name"]: d["bytes"] for d in _disk(doc, "downloads")}
    assert downloads["train2014.zip"] == 13_510_573_713 and downloads["mplug_base.pth"] is None
    assert doc["wall_hours_lower_bound"] <= doc["wall_hours"] <= doc["wall_hours_at_limits"]
    assert doc["memory"]["host_mb_training_job"] == 200_000
