"""The study grid (Table II) and the resolved run configurations: counts, resolution, isolation, clear errors."""

from __future__ import annotations

import copy
import dataclasses
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from vlpeft import grid
from vlpeft.grid import Run
from vlpeft.runconfig import RunConfig

REPO = Path(__file__).resolve().parents[2]
CONFIGS = {
    "paper": REPO / "config" / "config.yaml",
    "mini": REPO / "config" / "mini.yaml",
    "tiny": REPO / "tests" / "workflow" / "configs" / "tiny.yaml",
    "beyond": REPO / "config" / "beyond.yaml",
}

# Table II by hand: (sizes) x (ratios: 9 for COCO, 5 for VQAv2) x (2 classifier flags) x (1 seed); full: ratios only.
COCO_RATIOS, VQA_RATIOS = 9, 5
PAPER_COUNTS = {
    ("coco", "prompt"): 7 * COCO_RATIOS * 2,  # 126
    ("coco", "prefix"): 7 * COCO_RATIOS * 2,  # 126
    ("coco", "lora"): 5 * COCO_RATIOS * 2,  # 90
    ("coco", "serial_adapter"): 4 * COCO_RATIOS * 2,  # 72
    ("coco", "parallel_adapter"): 4 * COCO_RATIOS * 2,  # 72
    ("coco", "full"): COCO_RATIOS,  # 9
    ("vqa", "prompt"): 7 * VQA_RATIOS * 2,  # 70
    ("vqa", "prefix"): 7 * VQA_RATIOS * 2,  # 70
    ("vqa", "lora"): 5 * VQA_RATIOS * 2,  # 50
    ("vqa", "serial_adapter"): 6 * VQA_RATIOS * 2,  # 60
    ("vqa", "parallel_adapter"): 6 * VQA_RATIOS * 2,  # 60
    ("vqa", "full"): VQA_RATIOS,  # 5
}


def _load(name: str) -> dict:
    return yaml.safe_load(CONFIGS[name].read_text())


@pytest.fixture(scope="module")
def paper() -> dict:
    return _load("paper")


@pytest.fixture
def config(paper: dict) -> dict:
    """A private copy of the paper's config that a test may change."""
    return copy.deepcopy(paper)


def _find(runs: list[Run], **kw) -> Run:
    found = [r for r in runs if all(getattr(r, k) == v for k, v in kw.items())]
    assert len(found) == 1, kw
    return found[0]


# -- expansion -----------------------------------------------------------------------------------------------------
def test_paper_grid_counts_per_task_and_method(paper: dict) -> None:
    assert PAPER_COUNTS[("coco", "prompt")] == 126 and PAPER_COUNTS[("coco", "full")] == 9
    assert dict(grid.counts(paper)) == PAPER_COUNTS
    runs = grid.expand(paper)
    assert len(runs) == sum(PAPER_COUNTS.values()) == 810
    assert sum(r.task == "coco" for r in runs) == 495
    assert sum(r.task == "vqa" for r in runs) == 315


def test_paper_grid_run_ids_and_dirs_are_unique(paper: dict) -> None:
    runs = grid.expand(paper)
    assert len({r.run_id for r in runs}) == len(runs)
    assert len({r.dir for r in runs}) == len(runs)
    assert len(grid.run_table(paper)) == len(runs)
    assert runs == grid.expand(paper)  # stable order


def test_paper_grid_cells(paper: dict) -> None:
    runs = grid.expand(paper)
    coco_prompt = [r for r in runs if (r.task, r.method) == ("coco", "prompt")]
    assert {r.size for r in coco_prompt} == {2, 4, 8, 16, 32, 64, 128}
    assert {r.ratio for r in coco_prompt} == {0.01, 0.02, 0.04, 0.08, 0.1, 0.2, 0.4, 0.8, 1.0}
    assert Counter(r.classifier for r in coco_prompt) == {False: 63, True: 63}
    vqa_serial = [r for r in runs if (r.task, r.method) == ("vqa", "serial_adapter")]
    assert {r.size for r in vqa_serial} == {16, 32, 64, 128, 256, 512}
    full = [r for r in runs if r.method == "full"]
    assert all(r.size is None and r.classifier is False for r in full)
    assert all(isinstance(r.ratio, float) and isinstance(r.seed, int) for r in runs)


@pytest.mark.parametrize(
    ("run", "run_id"),
    [
        (Run("coco", "prompt", 2, 0.01, False, 0, "results/x"), "coco/prompt/size2_ratio0.01/seed0"),
        (Run("vqa", "lora", 16, 1.0, True, 3, "results/x"), "vqa/lora/size16_ratio1_cls/seed3"),
        (Run("coco", "full", None, 0.1, False, 0, "results/x"), "coco/full/sizeall_ratio0.1/seed0"),
        (
            Run("coco", "serial_adapter", 64, 0.08, True, 0, "results/x"),
            "coco/serial_adapter/size64_ratio0.08_cls/seed0",
        ),
    ],
)
def test_run_id_and_dir(run: Run, run_id: str) -> None:
    assert run.run_id == run_id
    assert run.dir == f"results/x/runs/{run_id}"


@pytest.mark.parametrize(("name", "total"), [("mini", 126), ("tiny", 20), ("beyond", 182)])
def test_other_configs_expand_and_resolve(name: str, total: int) -> None:
    config = _load(name)
    runs = grid.expand(config)
    assert len(runs) == total
    assert len({r.run_id for r in runs}) == total
    for run in runs:
        d = grid.resolve(config, run)
        assert d["run_id"] == run.run_id
    assert grid.resolve_pretrain(config)["run_id"] == "pretrain"
    for task in config["tasks"]:
        assert grid.resolve_baseline(config, task)["out_dir"] == f"results/{name}/baseline/{task}"
    assert {r.dir.split("/runs/")[0] for r in runs} == {f"results/{name}"}


def test_mini_grid_counts() -> None:
    # 5 PEFT methods x 2 sizes x 3 ratios x 2 classifier flags + full x 3 ratios, for each of the two tasks.
    assert dict(grid.counts(_load("mini"))) == {(t, m): 12 for t in ("coco", "vqa") for m in grid.METHODS[:5]} | {
        ("coco", "full"): 3,
        ("vqa", "full"): 3,
    }


def test_beyond_grid_counts() -> None:
    """config/beyond.yaml: the paper's ratios and flags; DoRA at LoRA's five ranks, (IA)^3 at its one size."""
    assert dict(grid.counts(_load("beyond"))) == {
        ("coco", "dora"): 5 * COCO_RATIOS * 2,
        ("vqa", "dora"): 5 * VQA_RATIOS * 2,
        ("coco", "ia3"): COCO_RATIOS * 2,
        ("vqa", "ia3"): VQA_RATIOS * 2,
        ("coco", "full"): COCO_RATIOS,
        ("vqa", "full"): VQA_RATIOS,
    }


def test_a_size_the_method_refuses_is_caught_for_every_listed_size() -> None:
    config = _load("beyond")
    config["methods"]["ia3"]["vqa"]["sizes"] = [1, 4]
    with pytest.raises(ValueError, match=r"methods\.ia3: size must be 1 for \(IA\)\^3"):
        grid.check_config(config)


# -- resolution ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("task", "method", "lr"),
    [
        ("coco", "prompt", 3e-4),
        ("coco", "lora", 5e-6),
        ("coco", "serial_adapter", 1e-6),
        ("coco", "full", 1e-5),
        ("vqa", "lora", 3e-4),
        ("vqa", "parallel_adapter", 3e-4),
        ("vqa", "full", 3e-5),
    ],
)
def test_resolve_uses_the_methods_learning_rate(paper: dict, task: str, method: str, lr: float) -> None:
    runs = [r for r in grid.expand(paper) if (r.task, r.method) == (task, method)]
    assert {grid.resolve(paper, r)["lr"] for r in runs} == {lr}


@pytest.mark.parametrize(("ratio", "warmup"), [(0.1, 80), (0.2, 160), (0.4, 320), (0.8, 640), (1.0, 800)])
def test_resolve_scales_the_vqa_warmup_by_the_ratio(paper: dict, ratio: float, warmup: int) -> None:
    run = _find(grid.expand(paper), task="vqa", method="lora", size=8, ratio=ratio, classifier=False)
    schedule = grid.resolve(paper, run)["schedule"]
    assert schedule == {"kind": "epochs", "epochs": 10, "warmup_steps": warmup, "start_lr": 1e-6, "end_lr": 1e-6}
    assert paper["tasks"]["vqa"]["schedule"]["warmup_steps"] == 800  # the config itself is not changed


def test_resolve_keeps_the_coco_schedule(paper: dict) -> None:
    for ratio in (0.01, 1.0):
        run = _find(grid.expand(paper), task="coco", method="prefix", size=4, ratio=ratio, classifier=True)
        assert grid.resolve(paper, run)["schedule"] == {
            "kind": "steps",
            "steps": 4000,
            "warmup_steps": 400,
            "start_lr": 0.0,
            "end_lr": 0.0,
        }


def test_resolve_method_options(paper: dict) -> None:
    runs = grid.expand(paper)
    targets = ["text_encoder", "fusion_encoder", "text_decoder"]
    lora = grid.resolve(paper, _find(runs, task="coco", method="lora", size=8, ratio=0.1, classifier=True))
    assert lora["method_options"] == {"alpha": None, "size": 8, "classifier": True, "targets": targets}
    prefix = grid.resolve(paper, _find(runs, task="vqa", method="prefix", size=128, ratio=0.4, classifier=False))
    assert prefix["method_options"] == {"reparam_hidden": 512, "size": 128, "classifier": False, "targets": targets}
    full = grid.resolve(paper, _find(runs, task="coco", method="full", ratio=1.0))
    assert full["method_options"] == {}
    # Full fine-tuning as mPLUG fine-tunes: the task's rate on the text side, lr2 = 5e-6 for the ViT.
    assert (full["lr"], full["part_lr"]) == (1e-5, {"visual_encoder": 5e-6})
    full_vqa = grid.resolve(paper, _find(runs, task="vqa", method="full", ratio=1.0))
    assert (full_vqa["lr"], full_vqa["part_lr"]) == (3e-5, {"visual_encoder": 5e-6})
    assert lora["part_lr"] == {} and lora["lr"] == 5e-6
    assert paper["methods"]["lora"]["options"] == {"alpha": None}  # not mutated by resolve


def test_resolve_targets_come_from_the_config(config: dict) -> None:
    config["targets"] = ["visual_encoder", "text_decoder"]
    for method in ("prompt", "prefix", "parallel_adapter"):  # text-side methods: they refuse the ViT (tested below)
        del config["methods"][method]
    run = _find(grid.expand(config), task="vqa", method="lora", size=2, ratio=0.1, classifier=False)
    assert grid.resolve(config, run)["method_options"]["targets"] == ["visual_encoder", "text_decoder"]


def test_resolve_paths_and_shared_settings(paper: dict) -> None:
    run = _find(grid.expand(paper), task="vqa", method="prompt", size=2, ratio=0.1, classifier=False)
    d = grid.resolve(paper, run)
    assert d["out_dir"] == "results/paper/runs/vqa/prompt/size2_ratio0.1/seed0"
    assert d["subset"] == "results/paper/data/subsets/vqa/ratio0.1.json"
    assert d["records"] == {s: f"results/paper/data/prepared/vqa/{s}.jsonl" for s in ("train", "val", "test")}
    assert d["image_cache"] == "results/paper/data/images_256.npy"
    assert (d["vocab"], d["image_root"]) == ("results/paper/model/vocab.txt", "results/paper/data/raw/images")
    assert (d["init_weights"], d["init_format"]) == ("results/paper/model/mplug_base.slim.safetensors", "vlpeft")
    assert (d["total_batch_size"], d["per_device_batch_size"], d["weight_decay"]) == (256, 64, 0.05)
    assert d["data_ratio"] == 0.1 and d["seed"] == 0
    assert d["eval"]["batch_size"] == 128
    cfg = RunConfig.from_dict(copy.deepcopy(d))
    assert cfg.to_dict() == {
        **d,
        "checkpoint_every": 0,
        "precision": "auto",
        "save_model": None,
        "schedule": {**d["schedule"], "steps": None},
    }


def test_changing_one_methods_lr_changes_only_its_runs(config: dict) -> None:
    runs = grid.expand(config)
    before = {r.run_id: grid.resolve(config, r) for r in runs}
    config["methods"]["lora"]["coco"]["lr"] = 1e-4
    assert grid.expand(config) == runs
    after = {r.run_id: grid.resolve(config, r) for r in runs}
    changed = {rid for rid in before if before[rid] != after[rid]}
    assert changed == {r.run_id for r in runs if (r.task, r.method) == ("coco", "lora")}
    assert len(changed) == 90
    for rid in changed:
        assert {k for k in before[rid] if before[rid][k] != after[rid][k]} == {"lr"}
        assert after[rid]["lr"] == 1e-4


def test_changing_a_methods_options_changes_only_its_runs(config: dict) -> None:
    runs = grid.expand(config)
    before = {r.run_id: grid.resolve(config, r) for r in runs}
    config["methods"]["prefix"]["options"]["reparam_hidden"] = 256
    changed = {r.run_id for r in runs if grid.resolve(config, r) != before[r.run_id]}
    assert changed == {r.run_id for r in runs if r.method == "prefix"}


# -- config errors name the key path ---------------------------------------------------------------------------------
def _set(path: str, value):
    def mutate(config: dict) -> None:
        *keys, last = path.split(".")
        node = config
        for k in keys:
            node = node[int(k)] if isinstance(node, list) else node[k]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


def _drop(path: str):
    def mutate(config: dict) -> None:
        *keys, last = path.split(".")
        node = config
        for k in keys:
            node = node[k]
        del node[last]

    return mutate


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c["tasks"].__setitem__("gqa", copy.deepcopy(c["tasks"]["vqa"])), "tasks.gqa: unknown task"),
        (
            lambda c: c["methods"].__setitem__("adalora", copy.deepcopy(c["methods"]["lora"])),
            "methods.adalora: unknown method",
        ),
        (
            lambda c: c["methods"]["lora"].__setitem__("gqa", {"sizes": [2], "lr": 1e-4}),
            "methods.lora.gqa: unknown task",
        ),
        (_set("tasks.coco.ratios.0", 0), "tasks.coco.ratios[0]: data ratio must be in (0, 1], got 0"),
        (_set("tasks.vqa.ratios.3", 1.5), "tasks.vqa.ratios[3]: data ratio must be in (0, 1], got 1.5"),
        (_set("tasks.vqa.ratios.1", -0.2), "tasks.vqa.ratios[1]: data ratio must be in (0, 1], got -0.2"),
        (_set("tasks.coco.ratios", [0.1, 0.5, 0.1]), "tasks.coco.ratios: duplicate values [0.1, 0.5, 0.1]"),
        (_set("tasks.vqa.eval.splits", ["val", "val"]), "tasks.vqa.eval.splits: duplicate values ['val', 'val']"),
        (_set("seeds", [0, 1, 0]), "seeds: duplicate values [0, 1, 0]"),
        (_set("classifier", [False, True, False]), "classifier: duplicate values [False, True, False]"),
        (
            _set("targets", ["text_encoder", "text_encoder"]),
            "targets: duplicate values ['text_encoder', 'text_encoder']",
        ),
        (_set("methods.lora.coco.sizes", [2, 4, 2]), "methods.lora.coco.sizes: duplicate sizes [2, 4, 2]"),
        (_set("methods.full.vqa.sizes", [8]), "methods.full.vqa.sizes: full fine-tuning has no size knob"),
        (_set("methods.prompt.coco.sizes", []), "methods.prompt.coco.sizes: give at least one size"),
        (_drop("methods.prompt.vqa.sizes"), "methods.prompt.vqa.sizes: give at least one size"),
        (_set("methods.lora.vqa.sizes.1", 0), "methods.lora.vqa.sizes[1]: size must be a positive integer, got 0"),
        (_set("methods.lora.vqa.sizes.0", -4), "methods.lora.vqa.sizes[0]: size must be a positive integer, got -4"),
        (_set("methods.prefix.coco.sizes.2", 2.5), "methods.prefix.coco.sizes[2]: size must be a positive integer"),
        (_set("methods.prefix.coco.sizes.2", True), "methods.prefix.coco.sizes[2]: size must be a positive integer"),
        (_drop("methods.serial_adapter.coco.lr"), "methods.serial_adapter.coco.lr: a positive learning rate"),
        (_set("methods.full.vqa.lr", 0), "methods.full.vqa.lr: a positive learning rate"),
        (_set("methods.lora.coco.lr", -1e-4), "methods.lora.coco.lr: a positive learning rate"),
    ],
)
def test_check_config_errors_name_the_key_path(config: dict, mutate, message: str) -> None:
    mutate(config)
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        grid.check_config(config)
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        grid.expand(config)


# Configs that passed validation and then failed every run (or silently lost runs) before issue 15.
@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            _set("tasks.coco.eval.metrics", ["BLEU-4", "ROUGE-L"]),
            "tasks.coco.eval.metrics: must include CIDEr, the task's primary metric",
        ),
        (_set("tasks.vqa.eval.metrics", ["CIDEr"]), "tasks.vqa.eval.metrics: VQA is scored by its accuracy alone"),
        (_set("tasks.coco.eval.splits", ["test"]), "tasks.coco.eval.splits: must include 'val'"),
        (
            _set("tasks.coco.ratios", [0.1234561, 0.1234562]),
            "tasks.coco.ratios[0]: 0.1234561 is not what its run path ratio0.123456 reads back",
        ),
        (
            _set("prompts.vqa_prompt", "Question: {question} ({answer_type}) Answer: "),
            "prompts.vqa_prompt: unknown field(s) ['answer_type']",
        ),
        (_set("prompts.vqa_prompt", "Question: {question} {} Answer: "), "prompts.vqa_prompt: unknown field(s) ['']"),
        (
            _set("prompts.vqa_prompt", "Question: {question"),
            "prompts.vqa_prompt: 'Question: {question' is not a valid",
        ),
        (_set("seeds", [0, 2**32]), "seeds[1]: a seed must be an integer in 0..4294967295, got 4294967296"),
        (_set("seeds", [-1]), "seeds[0]: a seed must be an integer in 0..4294967295, got -1"),
        (
            _set("train.per_device_batch_size", 48),
            "train.total_batch_size: 256 is not a multiple of per_device_batch_size 48",
        ),
        (_set("methods.lora.options", {"alpah": 16.0}), "methods.lora: unknown option(s) ['alpah'] for method 'lora'"),
        (_set("methods.prefix.options", {"reparam_hidden": 0}), "methods.prefix: reparam_hidden must be positive"),
        (
            _set("targets", ["visual_encoder", "text_decoder"]),
            "methods.prompt: method 'prompt' does not support target(s) ['visual_encoder']",
        ),
        (
            _drop("tasks.coco.schedule.steps"),
            "tasks.coco.schedule.steps: a schedule of kind 'steps' needs steps > 0, got None",
        ),
        (
            _drop("tasks.vqa.schedule.epochs"),
            "tasks.vqa.schedule.epochs: a schedule of kind 'epochs' needs epochs > 0, got None",
        ),
        (_set("tasks.coco.eval.min_new_tokens", 30), "tasks.coco.eval.min_new_tokens: 30 is more than max_new_tokens"),
        (_set("tasks.coco.eval.max_items", 1), "tasks.coco.eval.max_items: CIDEr needs at least 2 images, got 1"),
        (_drop("model.pretrain"), None),  # only needed with init: pretrain (next case)
    ],
)
def test_configs_that_would_fail_every_run_are_refused_naming_the_key(config: dict, mutate, message) -> None:
    mutate(config)
    if message is None:
        grid.check_config(config)
        config["model"]["init"] = "pretrain"
        message = "model.pretrain: init 'pretrain' needs ['steps', 'lr', 'total_batch_size', 'per_device_batch_size']"
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        grid.check_config(config)


def test_total_batch_must_split_over_the_profiles_processes(config: dict) -> None:
    grid.check_config(config, train_processes=4)  # 256 = 4 x 64
    with pytest.raises(
        ValueError,
        match=re.escape(
            "train.total_batch_size: 256 is not a multiple of 3 processes x per_device_batch_size 64 (processes per "
            "training job: the gpu resource the profile sets for train_run)"
        ),
    ):
        grid.check_config(config, train_processes=3)
    tiny = _load("tiny")  # pre-training: 32 = 1 x 32, not 2 x 32
    with pytest.raises(ValueError, match=r"^model\.pretrain\.total_batch_size: 32 is not a multiple of 2 processes"):
        grid.check_config(tiny, pretrain_processes=2)


def test_grid_command_checks_the_config_like_the_workflow(config: dict, tmp_path: Path, capsys) -> None:
    from vlpeft.cli import main

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["grid", "--config", str(path)]) == 0
    assert capsys.readouterr().out.split()[-1] == "810"
    for mutate, message in (
        (_set("methods.lora.options", {"alpah": 16.0}), "methods.lora: unknown option(s)"),
        (_set("train.total_batch_size", "256"), "train.total_batch_size: '256' is not of type"),
        (_set("seeds", [2**32]), "seeds.0: 4294967296 is greater than the maximum"),
    ):
        bad = copy.deepcopy(config)
        mutate(bad)
        path.write_text(yaml.safe_dump(bad))
        # The console script: one line naming the file and the key, exit status 2.
        assert main(["grid", "--config", str(path)]) == 2
        err = capsys.readouterr().err.splitlines()
        assert err[0].startswith("vlpeft: checking") and err[1].startswith(f"vlpeft: error: {path}: {message}")
        assert len(err) == 2


def test_check_config_accepts_the_shipped_configs() -> None:
    for name in CONFIGS:
        grid.check_config(_load(name))


def test_method_without_a_task_has_no_runs_for_it(config: dict) -> None:
    del config["methods"]["prefix"]["vqa"]
    counts = grid.counts(config)
    assert ("vqa", "prefix") not in counts and counts[("coco", "prefix")] == 126


# -- the resolved run configuration ----------------------------------------------------------------------------------
@pytest.fixture
def run_config(paper: dict) -> RunConfig:
    run = _find(grid.expand(paper), task="vqa", method="lora", size=8, ratio=0.4, classifier=True)
    return RunConfig.from_dict(grid.resolve(paper, run))


def test_run_config_save_load_round_trip(run_config: RunConfig, tmp_path: Path) -> None:
    path = tmp_path / "runs" / "run.yaml"
    run_config.save(path)
    loaded = RunConfig.load(path)
    assert loaded == run_config
    assert loaded.to_dict() == run_config.to_dict()
    assert loaded.digest() == run_config.digest()
    assert loaded.eval.splits == ("val", "test") and loaded.schedule.warmup_steps == 320
    assert not path.with_name("run.yaml.tmp").exists()


def test_run_config_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "run.yaml"))):
        RunConfig.load(tmp_path / "run.yaml")


def test_run_config_unknown_key(run_config: RunConfig, tmp_path: Path) -> None:
    d = run_config.to_dict()
    d["learning_rate"] = 1e-3
    with pytest.raises(ValueError, match=re.escape("unknown run config key(s): ['learning_rate']")):
        RunConfig.from_dict(d)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(d))
    with pytest.raises(ValueError, match="learning_rate"):
        RunConfig.load(path)


@pytest.mark.parametrize(
    ("field", "value", "changes"),
    [
        ("lr", 1e-3, True),
        ("seed", 1, True),
        ("data_ratio", 0.8, True),
        ("method_options", {"alpha": 16.0, "size": 4, "classifier": True}, True),
        ("log_every", 7, False),
        ("threads", 4, False),
        ("num_workers", 2, False),
        ("out_dir", "elsewhere/run", False),
        ("save_model", "model.safetensors", False),
        ("device", "cpu", False),  # a checkpoint made on the CPU resumes on a GPU and back
    ],
)
def test_run_config_digest(run_config: RunConfig, field: str, value, changes: bool) -> None:
    other = dataclasses.replace(run_config, **{field: value})
    assert other != run_config
    assert (other.digest() != run_config.digest()) is changes
    assert re.fullmatch(r"[0-9a-f]{16}", other.digest())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(total_batch_size="256"), "total_batch_size: expected an integer, got '256'"),
        (lambda d: d.update(lr="3e-4"), "lr: expected a number, got '3e-4'"),
        (lambda d: d.update(seed=True), "seed: expected an integer, got True"),
        (lambda d: d.update(method_options=["size", 8]), "method_options: expected a mapping, got ['size', 8]"),
        (lambda d: d["schedule"].update(epochs="10"), "schedule.epochs: expected a number or null, got '10'"),
        (lambda d: d["schedule"].update(kind="steps"), "schedule.steps: a schedule of kind 'steps' needs steps > 0"),
        (lambda d: d["schedule"].update(warmup="x"), "unknown run config key(s): ['schedule.warmup']"),
        (lambda d: d["eval"].update(max_new_tokens="10"), "eval.max_new_tokens: expected an integer, got '10'"),
        (lambda d: d["eval"].update(splits="val"), "eval.splits: expected a list of strings, got 'val'"),
        (lambda d: d["eval"].update(splits=["test"]), "eval.splits: must include 'val'"),
        (lambda d: d["eval"].update(min_new_tokens=11), "eval.min_new_tokens: 11 is more than max_new_tokens 10"),
        (lambda d: d.update(per_device_batch_size=48), "total_batch_size: 256 is not a multiple of per_device_batch"),
        (lambda d: d.update(seed=2**32), "seed: a seed must be an integer in 0..4294967295"),
        (lambda d: d["prompts"].update(vqa_prompt="{question} {image}"), "prompts.vqa_prompt: unknown field(s)"),
        (lambda d: d.pop("lr"), "run config lacks the key(s) ['lr']"),
    ],
)
def test_run_config_given_directly_names_the_bad_key(
    run_config: RunConfig, tmp_path: Path, edit, message, capsys: pytest.CaptureFixture
) -> None:
    """``python -m vlpeft.train --config X`` checks what the grid checks, naming the key (and the file): one line,
    exit status 2."""
    from vlpeft.train import main

    d = run_config.to_dict()
    edit(d)
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        RunConfig.from_dict(d)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(d))
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"python -m vlpeft.train: error: {path}: {message}") and err.count("\n") == 1
    path.write_bytes(b"\x00\xff\xfe")
    with pytest.raises(ValueError, match=re.escape(str(path))):
        RunConfig.load(path)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("task", "gqa", "unknown task"),
        ("data_ratio", 0.0, "data_ratio"),
        ("data_ratio", 1.2, "data_ratio"),
        ("lr", 0.0, "lr must be positive"),
        ("init_format", "hf", "init_format"),
        ("total_batch_size", 0, "batch sizes"),
        ("device", "gpu", "device must be auto, cpu or cuda"),
        ("precision", "fp16", "precision must be auto or fp32"),
    ],
)
def test_run_config_bad_values(run_config: RunConfig, field: str, value, message: str) -> None:
    d = run_config.to_dict()
    d[field] = value
    with pytest.raises(ValueError, match=message):
        RunConfig.from_dict(d)


@pytest.mark.parametrize("study", ["downloads", "Paper", "../paper", "a/b", ""])
def test_a_study_name_that_is_no_directory_of_its_own_is_refused(paper: dict, study: str) -> None:
    with pytest.raises(ValueError, match=r"^study: .*results/<study>/"):
        grid.check_config({**paper, "study": study})


def test_study_digest_follows_run_settings_only(paper: dict) -> None:
    """The study digest changes with any run's settings, not with presentation keys (title, reported_metric)."""
    base = grid.study_info(paper)
    assert (base["study"], base["data_source"]) == ("paper", "real")
    assert grid.study_info({**paper, "title": "x", "reported_metric": "test_at_best_val"}) == {**base, "title": "x"}
    edited = copy.deepcopy(paper)
    edited["methods"]["lora"]["coco"]["lr"] = 1e-4
    assert grid.study_info(edited)["study_digest"] != base["study_digest"]
    assert grid.study_info({**paper, "study": "other"})["study_digest"] != base["study_digest"]
