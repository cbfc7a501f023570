"""The study's grid: which runs exist, where their files go, and each run's fully resolved configuration.

``expand(config)`` lists every run (task x method x size x data ratio x classifier flag x seed) and
``resolve(config, run)`` derives the run's ``RunConfig`` from the study config alone. The Snakemake rules pass
that resolved dict through ``params:``, so editing one method's settings changes exactly its runs' params and
reruns only those.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass

from .data.subsets import check_ratio
from .runconfig import TASKS, RunConfig

METHODS = ("prompt", "prefix", "lora", "serial_adapter", "parallel_adapter", "full")
RESULTS = "results"


def fmt_ratio(ratio: float) -> str:
    """Ratio as it appears in paths: 0.1 -> '0.1', 1.0 -> '1'."""
    return format(float(ratio), "g")


@dataclass(frozen=True)
class Run:
    task: str
    method: str
    size: int | None  # None for full fine-tuning
    ratio: float
    classifier: bool
    seed: int

    @property
    def setting(self) -> str:
        size = "all" if self.size is None else str(self.size)
        return f"size{size}_ratio{fmt_ratio(self.ratio)}" + ("_cls" if self.classifier else "")

    @property
    def run_id(self) -> str:
        return f"{self.task}/{self.method}/{self.setting}/seed{self.seed}"

    @property
    def dir(self) -> str:
        return f"{RESULTS}/runs/{self.run_id}"


def _check_unique(key: str, values: list) -> None:
    if len(set(values)) != len(values):
        raise ValueError(f"{key}: duplicate values {values}")


def check_config(config: dict) -> None:
    """Checks beyond the JSON schema: names, ranges and the schema's unique lists, with the offending key path in
    the message."""
    for task, tcfg in config["tasks"].items():
        if task not in TASKS:
            raise ValueError(f"tasks.{task}: unknown task; expected one of {list(TASKS)}")
        for i, r in enumerate(tcfg["ratios"]):
            try:
                check_ratio(r)
            except ValueError as e:
                raise ValueError(f"tasks.{task}.ratios[{i}]: {e}") from None
        _check_unique(f"tasks.{task}.ratios", tcfg["ratios"])
        _check_unique(f"tasks.{task}.eval.splits", tcfg.get("eval", {}).get("splits", []))
    for method, mcfg in config["methods"].items():
        if method not in METHODS:
            raise ValueError(f"methods.{method}: unknown method; expected one of {list(METHODS)}")
        for task, per_task in mcfg.items():
            if task == "options":
                continue
            if task not in TASKS:
                raise ValueError(f"methods.{method}.{task}: unknown task; expected one of {list(TASKS)} or 'options'")
            sizes = per_task.get("sizes") or []
            if method == "full" and sizes:
                raise ValueError(f"methods.full.{task}.sizes: full fine-tuning has no size knob")
            if method != "full" and not sizes:
                raise ValueError(f"methods.{method}.{task}.sizes: give at least one size")
            for i, s in enumerate(sizes):
                if isinstance(s, bool) or not isinstance(s, int) or s <= 0:
                    raise ValueError(f"methods.{method}.{task}.sizes[{i}]: size must be a positive integer, got {s!r}")
            if len(set(sizes)) != len(sizes):
                raise ValueError(f"methods.{method}.{task}.sizes: duplicate sizes {sizes}")
            if not per_task.get("lr") or per_task["lr"] <= 0:
                raise ValueError(f"methods.{method}.{task}.lr: a positive learning rate is required")
    for key in ("targets", "classifier", "seeds"):
        _check_unique(key, config.get(key, []))


def expand(config: dict) -> list[Run]:
    """Every run of the grid, in a stable order."""
    check_config(config)
    runs = []
    for task in config["tasks"]:
        for method, mcfg in config["methods"].items():
            if task not in mcfg:
                continue
            sizes = mcfg[task].get("sizes") or [None]
            flags = [False] if method == "full" else [bool(c) for c in config["classifier"]]
            for size in sizes:
                for ratio in config["tasks"][task]["ratios"]:
                    for cls in flags:
                        for seed in config["seeds"]:
                            runs.append(Run(task, method, size, float(ratio), cls, int(seed)))
    return runs


def run_table(config: dict) -> dict[str, Run]:
    return {r.run_id: r for r in expand(config)}


def counts(config: dict) -> Counter:
    """Runs per (task, method)."""
    return Counter((r.task, r.method) for r in expand(config))


def subset_path(task: str, ratio: float) -> str:
    return f"{RESULTS}/data/subsets/{task}/ratio{fmt_ratio(ratio)}.json"


def records_path(task: str, split: str) -> str:
    return f"{RESULTS}/data/prepared/{task}/{split}.jsonl"


def image_cache_path(config: dict) -> str | None:
    return f"{RESULTS}/data/images_{image_size(config)}.npy" if config["data"].get("image_cache", True) else None


def image_size(config: dict) -> int:
    from .model.config import preset

    return preset(config["model"]["preset"], **config["model"].get("overrides", {})).image_size


def init_weights_path(config: dict) -> str:
    if config["model"]["init"] == "official":
        return f"{RESULTS}/data/raw/mplug_base.pth"
    return f"{RESULTS}/model/pretrained.safetensors"


VOCAB = f"{RESULTS}/model/vocab.txt"
IMAGE_ROOT = f"{RESULTS}/data/raw/images"


def resolve(config: dict, run: Run) -> dict:
    """The run's resolved configuration as a plain dict (validated by building a ``RunConfig``)."""
    tcfg = config["tasks"][run.task]
    mcfg = config["methods"].get(run.method, {})
    train = config["train"]
    schedule = copy.deepcopy(tcfg["schedule"])
    if schedule.pop("warmup_per_ratio", False):
        schedule["warmup_steps"] = max(1, round(schedule["warmup_steps"] * run.ratio))
    options = dict(mcfg.get("options") or {})
    if run.method != "full":
        options["size"] = run.size
        options["classifier"] = run.classifier
    if "targets" in config and run.method != "full":
        options.setdefault("targets", list(config["targets"]))
    d = {
        "run_id": run.run_id,
        "task": run.task,
        "method": run.method,
        "method_options": options,
        "data_ratio": run.ratio,
        "seed": run.seed,
        "records": {s: records_path(run.task, s) for s in ("train", "val", "test")},
        "subset": subset_path(run.task, run.ratio),
        "image_root": IMAGE_ROOT,
        "image_cache": image_cache_path(config),
        "vocab": VOCAB,
        "model_preset": config["model"]["preset"],
        "model_overrides": dict(config["model"].get("overrides") or {}),
        "init_weights": init_weights_path(config),
        "init_format": "official" if config["model"]["init"] == "official" else "vlpeft",
        "lr": float(mcfg[run.task]["lr"]) if run.task in mcfg else 1.0,  # (baseline: no training)
        "part_lr": {k: float(v) for k, v in (mcfg.get(run.task, {}).get("part_lr") or {}).items()},
        "out_dir": run.dir,
        "weight_decay": float(train["weight_decay"]),
        "total_batch_size": int(train["total_batch_size"]),
        "per_device_batch_size": int(train["per_device_batch_size"]),
        "schedule": schedule,
        "eval": dict(tcfg["eval"]),
        "prompts": dict(config["prompts"]),
        "max_prompt_tokens": int(train["max_prompt_tokens"]),
        "max_target_tokens": int(train["max_target_tokens"]),
        "log_every": int(train["log_every"]),
        "threads": int(train.get("threads", 0)),
        "num_workers": int(train.get("num_workers", 0)),
        "device": str(train.get("device", "auto")),
    }
    RunConfig.from_dict(copy.deepcopy(d))  # fail early, at DAG-building time, on a bad value
    return d


def resolve_pretrain(config: dict) -> dict:
    """The tiny model's "pre-training" as a run: every parameter trained on the synthetic captioning corpus."""
    pre = config["model"]["pretrain"]
    coco_eval = config["tasks"].get("coco", {}).get("eval", {})
    d = {
        "run_id": "pretrain",
        "task": "coco",
        "method": "full",
        "method_options": {},
        "data_ratio": 1.0,
        "seed": 0,
        "records": {"train": f"{RESULTS}/data/prepared/pretrain/train.jsonl",
                    "val": records_path("coco", "val")},
        "subset": None,
        "image_root": IMAGE_ROOT,
        "image_cache": image_cache_path(config),
        "vocab": VOCAB,
        "model_preset": config["model"]["preset"],
        "model_overrides": dict(config["model"].get("overrides") or {}),
        "init_weights": None,
        "init_format": "none",
        "lr": float(pre["lr"]),
        "out_dir": f"{RESULTS}/model/pretrain",
        "weight_decay": float(config["train"]["weight_decay"]),
        "total_batch_size": int(pre["total_batch_size"]),
        "per_device_batch_size": int(pre["per_device_batch_size"]),
        "schedule": {"kind": "steps", "steps": int(pre["steps"]), "warmup_steps": int(pre.get("warmup_steps", 0))},
        "eval": {**coco_eval, "interval": 0, "splits": ["val"], "metrics": ["CIDEr"]},
        "prompts": dict(config["prompts"]),
        "max_prompt_tokens": int(config["train"]["max_prompt_tokens"]),
        "max_target_tokens": int(config["train"]["max_target_tokens"]),
        "log_every": int(config["train"]["log_every"]),
        "threads": int(config["train"].get("threads", 0)),
        "device": str(config["train"].get("device", "auto")),
        "save_model": init_weights_path(config),
    }
    RunConfig.from_dict(copy.deepcopy(d))
    return d


def resolve_baseline(config: dict, task: str) -> dict:
    """Evaluation of the untuned initial model on ``task`` (the reference the fine-tuned runs must beat)."""
    methods = [m for m in config["methods"] if task in config["methods"][m]]
    if not methods:
        raise ValueError(f"no method is configured for task {task!r}")
    run = Run(task, "full", None, 1.0, False, 0)
    d = resolve(config, run)
    d.update(run_id=f"{task}/baseline", method="full", method_options={}, subset=None,
             out_dir=f"{RESULTS}/baseline/{task}", lr=1.0)
    d["eval"] = {**d["eval"], "interval": 0}
    RunConfig.from_dict(copy.deepcopy(d))
    return d
