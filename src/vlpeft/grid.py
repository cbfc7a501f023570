"""The study's grid: which runs exist, where their files go, and each run's fully resolved configuration.

``expand(config)`` lists every run (task x method x size x data ratio x classifier flag x seed) and
``resolve(config, run)`` derives the run's ``RunConfig`` from the study config alone. The Snakemake rules pass
that resolved dict through ``params:``, so editing one method's settings changes exactly its runs' params and
reruns only those.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .data.subsets import check_ratio
from .methods.registry import METHODS, REFERENCE, is_peft
from .methods.scope import trains_visual_encoder
from .runconfig import RunConfig, check_batch, check_eval, check_prompts, check_schedule, check_seed
from .tasks import COCO, TASKS

RESULTS = "results"
# Verified downloads (identified by URL and checksum) are the one thing studies share; everything else a study writes
# lies under its own root, results/<study> (see study_root).
DOWNLOADS = f"{RESULTS}/downloads"
# The workflow's JSON schema (rules/common.smk validates against it too), in the repository checkout.
SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
log = logging.getLogger("vlpeft.grid")


def fmt_ratio(ratio: float) -> str:
    """Ratio as it appears in paths: 0.1 -> '0.1', 1.0 -> '1'."""
    return format(float(ratio), "g")


@dataclass(frozen=True)
class Run:
    task: str
    method: str
    size: int | None  # None for full fine-tuning (no size knob)
    ratio: float
    classifier: bool
    seed: int
    root: str  # the study's root (study_root)

    @property
    def setting(self) -> str:
        size = "all" if self.size is None else str(self.size)
        return f"size{size}_ratio{fmt_ratio(self.ratio)}" + ("_cls" if self.classifier else "")

    @property
    def run_id(self) -> str:
        return f"{self.task}/{self.method}/{self.setting}/seed{self.seed}"

    @property
    def dir(self) -> str:
        return f"{self.root}/runs/{self.run_id}"


def _check_unique(key: str, values: list) -> None:
    if len(set(values)) != len(values):
        raise ValueError(f"{key}: duplicate values {values}")


def method_options(config: dict, method: str, size: int | None, classifier: bool) -> dict:
    """A run's method options: the method's ``options`` plus the grid's size, classifier flag and targets."""
    options = dict((config["methods"].get(method) or {}).get("options") or {})
    if is_peft(method):
        options["size"] = size
        options["classifier"] = classifier
    if "targets" in config and is_peft(method):
        options.setdefault("targets", list(config["targets"]))
    return options


def _check_method_options(method: str, options: dict) -> None:
    from .methods.base import build_method  # (imports torch: once per check)

    try:
        build_method(method, **options)
    except (ValueError, TypeError) as e:
        raise ValueError(f"methods.{method}: {e}") from None


def check_config(config: dict, train_processes: int | None = 1, pretrain_processes: int | None = 1) -> None:
    """Checks beyond the JSON schema, with the offending key path in the message: names, ranges, the schema's unique
    lists, and every value a run would refuse (so that a bad config fails before the DAG is built, not in each job).

    ``train_processes``/``pretrain_processes``: processes per training job (the profile's ``gpu`` resource of
    ``train_run``/``pretrain_model``), which the global batch must split evenly into; ``None`` skips that check.
    """
    study = config.get("study")
    if (
        not isinstance(study, str)
        or not study
        or study == "downloads"
        or Path(study).name != study
        or not all(c.isalnum() or c in "_-" for c in study)
        or study != study.lower()
    ):
        raise ValueError(
            f"study: {study!r} must be a lower-case name (letters, digits, _ and -) other than "
            "'downloads': the study writes under results/<study>/"
        )
    for task, tcfg in config["tasks"].items():
        if task not in TASKS:
            raise ValueError(f"tasks.{task}: unknown task; expected one of {list(TASKS)}")
        for i, r in enumerate(tcfg["ratios"]):
            try:
                check_ratio(r)
            except ValueError as e:
                raise ValueError(f"tasks.{task}.ratios[{i}]: {e}") from None
            if float(fmt_ratio(r)) != float(r):  # two such ratios would share one run directory
                raise ValueError(
                    f"tasks.{task}.ratios[{i}]: {r!r} is not what its run path ratio{fmt_ratio(r)} "
                    "reads back; use at most 6 significant digits"
                )
        _check_unique(f"tasks.{task}.ratios", tcfg["ratios"])
        _check_unique(f"tasks.{task}.eval.splits", tcfg.get("eval", {}).get("splits", []))
        check_schedule(tcfg["schedule"], f"tasks.{task}.schedule")
        check_eval(task, tcfg["eval"], f"tasks.{task}.eval")
    for task in (config.get("data") or {}).get("expected_counts") or {}:
        if task not in TASKS:
            raise ValueError(f"data.expected_counts.{task}: unknown task; expected one of {list(TASKS)}")
    for method, mcfg in config["methods"].items():
        if method not in METHODS:
            raise ValueError(f"methods.{method}: unknown method; expected one of {list(METHODS)}")
        for task, per_task in mcfg.items():
            if task == "options":
                continue
            if task not in TASKS:
                raise ValueError(f"methods.{method}.{task}: unknown task; expected one of {list(TASKS)} or 'options'")
            sizes = per_task.get("sizes") or []
            if not is_peft(method) and sizes:
                raise ValueError(f"methods.{method}.{task}.sizes: full fine-tuning has no size knob")
            if is_peft(method) and not sizes:
                raise ValueError(f"methods.{method}.{task}.sizes: give at least one size")
            for i, s in enumerate(sizes):
                if isinstance(s, bool) or not isinstance(s, int) or s <= 0:
                    raise ValueError(f"methods.{method}.{task}.sizes[{i}]: size must be a positive integer, got {s!r}")
            if len(set(sizes)) != len(sizes):
                raise ValueError(f"methods.{method}.{task}.sizes: duplicate sizes {sizes}")
            if not per_task.get("lr") or per_task["lr"] <= 0:
                raise ValueError(f"methods.{method}.{task}.lr: a positive learning rate is required")
            for size in sizes or [None]:  # every size: a method may accept only some sizes
                _check_method_options(method, method_options(config, method, size, False))
    for key in ("targets", "classifier", "seeds"):
        _check_unique(key, config.get(key, []))
    for i, seed in enumerate(config["seeds"]):
        check_seed(seed, f"seeds[{i}]")
    check_prompts(config["prompts"], "prompts")
    train = config["train"]
    note = " (processes per training job: the gpu resource the profile sets for train_run)"
    if train_processes is not None:
        try:
            check_batch(
                train["total_batch_size"], train["per_device_batch_size"], "train.total_batch_size", train_processes
            )
        except ValueError as e:
            raise ValueError(f"{e}{note if train_processes > 1 else ''}") from None
    if config["model"]["init"] == "pretrain":
        pre = config["model"].get("pretrain")
        missing = [k for k in ("steps", "lr", "total_batch_size", "per_device_batch_size") if k not in (pre or {})]
        if missing:
            raise ValueError(f"model.pretrain: init 'pretrain' needs {missing}")
        if pretrain_processes is not None:
            check_batch(
                pre["total_batch_size"],
                pre["per_device_batch_size"],
                "model.pretrain.total_batch_size",
                pretrain_processes,
            )


def load_config(path: str | Path) -> dict:
    """A study config file, checked as the workflow checks it (JSON schema, then :func:`check_config`), for the
    command-line tools that read one (``vlpeft grid``, ``python -m vlpeft.aggregate``)."""
    import yaml

    from .files import read_yaml_mapping

    path = Path(path)
    config = read_yaml_mapping(path, "study config", missing="config file not found")
    if SCHEMA.is_file():
        import jsonschema

        try:
            jsonschema.validate(config, yaml.safe_load(SCHEMA.read_text()))
        except jsonschema.ValidationError as e:
            key = ".".join(map(str, e.absolute_path)) or "(top level)"
            raise ValueError(f"{path}: {key}: {e.message}") from None
    else:  # an installed package without the repository: the package's own checks only
        log.warning("schema %s not found: %s is checked by vlpeft.grid.check_config only", SCHEMA, path)
    try:
        check_config(config)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return config


def expand(config: dict) -> list[Run]:
    """Every run of the grid, in a stable order."""
    check_config(config)
    root = study_root(config)
    runs = []
    for task in config["tasks"]:
        for method, mcfg in config["methods"].items():
            if task not in mcfg:
                continue
            sizes = mcfg[task].get("sizes") or [None]
            flags = [bool(c) for c in config["classifier"]] if is_peft(method) else [False]
            for size in sizes:
                for ratio in config["tasks"][task]["ratios"]:
                    for cls in flags:
                        for seed in config["seeds"]:
                            runs.append(Run(task, method, size, float(ratio), cls, int(seed), root))
    seen: dict[str, Run] = {}
    for run in runs:  # two cells in one run directory would silently lose one of them
        if run.run_id in seen:
            raise ValueError(f"two runs of the grid share the run directory {run.dir}: {seen[run.run_id]} and {run}")
        seen[run.run_id] = run
    return runs


def run_table(config: dict) -> dict[str, Run]:
    return {r.run_id: r for r in expand(config)}


def counts(config: dict) -> Counter:
    """Runs per (task, method)."""
    return Counter((r.task, r.method) for r in expand(config))


def study_root(config: dict) -> str:
    """Where a study writes everything but the shared downloads: ``results/<study>``."""
    return f"{RESULTS}/{config['study']}"


def subset_path(root: str, task: str, ratio: float) -> str:
    return f"{root}/data/subsets/{task}/ratio{fmt_ratio(ratio)}.json"


def records_path(root: str, task: str, split: str) -> str:
    return f"{root}/data/prepared/{task}/{split}.jsonl"


def vocab_path(root: str) -> str:
    return f"{root}/model/vocab.txt"


def image_root(root: str) -> str:
    return f"{root}/data/raw/images"


def image_cache_path(config: dict) -> str | None:
    if not config["data"].get("image_cache", True):
        return None
    return f"{study_root(config)}/data/images_{image_size(config)}.npy"


def features_path(config: dict) -> str | None:
    """The visual-feature store (``vlpeft.data.features``), or None when ``data.feature_store`` is off."""
    fs = config["data"].get("feature_store") or {}
    if not fs.get("activate", False):
        return None
    return f"{study_root(config)}/data/features_{image_size(config)}_{fs.get('dtype', 'float16')}.npy"


def image_size(config: dict) -> int:
    from .model.config import preset

    return preset(config["model"]["preset"], **config["model"].get("overrides", {})).image_size


def official_checkpoint_path(config: dict) -> str:
    """Where the study's copy of the official ``mplug_base.pth`` lies (read once, by rule convert_checkpoint)."""
    return f"{study_root(config)}/data/raw/mplug_base.pth"


def slim_checkpoint_path(config: dict) -> str:
    """The slim checkpoint every run memory-maps (``vlpeft.model.slim``)."""
    return f"{study_root(config)}/model/mplug_base.slim.safetensors"


def init_weights_path(config: dict) -> str:
    """The weights every run starts from: the official checkpoint converted once into the slim file every run
    memory-maps (``vlpeft.model.slim``), or the mini study's pre-trained model (the same format)."""
    if config["model"]["init"] == "official":
        return slim_checkpoint_path(config)
    return f"{study_root(config)}/model/pretrained.safetensors"


def model_params(config: dict) -> dict:
    """The model size the study's weights are for (preset and overrides), as params of the rules that make them."""
    return {"preset": config["model"]["preset"], "overrides": dict(config["model"].get("overrides") or {})}


def data_source(config: dict) -> str:
    """``synthetic`` or ``real`` (downloaded): what the tables, figures and report call the study's data."""
    from .provenance import DATA_SOURCES

    return DATA_SOURCES[config["data"]["source"]]


def run_digests(config: dict) -> dict[str, str]:
    """Run id -> digest of the run's resolved configuration (what its record must carry to be counted)."""
    return {run.run_id: RunConfig.from_dict(resolve(config, run)).digest() for run in expand(config)}


def study_info(config: dict) -> dict:
    """Name, data source and digest of the study the config resolves to (see ``vlpeft.provenance``)."""
    from .provenance import study_digest

    source = data_source(config)
    return {
        "study": config["study"],
        "title": config.get("title", config["study"]),
        "data_source": source,
        "study_digest": study_digest(config["study"], source, run_digests(config)),
    }


def resolve(config: dict, run: Run) -> dict:
    """The run's resolved configuration as a plain dict (validated by building a ``RunConfig``)."""
    tcfg = config["tasks"][run.task]
    mcfg = config["methods"].get(run.method, {})
    root = study_root(config)
    train = config["train"]
    schedule = copy.deepcopy(tcfg["schedule"])
    if schedule.pop("warmup_per_ratio", False):
        schedule["warmup_steps"] = max(1, round(schedule["warmup_steps"] * run.ratio))
    options = method_options(config, run.method, run.size, run.classifier)
    d = {
        "run_id": run.run_id,
        "task": run.task,
        "method": run.method,
        "method_options": options,
        "data_ratio": run.ratio,
        "seed": run.seed,
        "records": {s: records_path(root, run.task, s) for s in ("train", "val", "test")},
        "subset": subset_path(root, run.task, run.ratio),
        "image_root": image_root(root),
        "image_cache": image_cache_path(config),
        "vocab": vocab_path(root),
        "model_preset": config["model"]["preset"],
        "model_overrides": dict(config["model"].get("overrides") or {}),
        "init_weights": init_weights_path(config),
        "init_format": "vlpeft",  # the slim checkpoint or the pre-trained model (init_weights_path)
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
        "dist_timeout_min": float(train.get("dist_timeout_min", 30)),
        "rank0_timeout_min": float(train.get("rank0_timeout_min", 120)),
        # A run whose ViT stays frozen reads its output from the store; one that trains it reads images.
        "feature_store": None if trains_visual_encoder(run.method, options) else features_path(config),
    }
    RunConfig.from_dict(copy.deepcopy(d))  # fail early, at DAG-building time, on a bad value
    return d


def resolve_pretrain(config: dict) -> dict:
    """The tiny model's "pre-training" as a run: every parameter trained on the synthetic captioning corpus."""
    pre = config["model"]["pretrain"]
    root = study_root(config)
    coco_eval = config["tasks"].get(COCO.name, {}).get("eval", {})
    d = {
        "run_id": "pretrain",
        "task": COCO.name,
        "method": REFERENCE,
        "method_options": {},
        "data_ratio": 1.0,
        "seed": 0,
        "records": {"train": records_path(root, "pretrain", "train"), "val": records_path(root, COCO.name, "val")},
        "subset": None,
        "image_root": image_root(root),
        "image_cache": image_cache_path(config),
        "vocab": vocab_path(root),
        "model_preset": config["model"]["preset"],
        "model_overrides": dict(config["model"].get("overrides") or {}),
        "init_weights": None,
        "init_format": "none",
        "lr": float(pre["lr"]),
        "out_dir": f"{root}/model/pretrain",
        "weight_decay": float(config["train"]["weight_decay"]),
        "total_batch_size": int(pre["total_batch_size"]),
        "per_device_batch_size": int(pre["per_device_batch_size"]),
        "schedule": {"kind": "steps", "steps": int(pre["steps"]), "warmup_steps": int(pre.get("warmup_steps", 0))},
        "eval": {**coco_eval, "interval": 0, "splits": ["val"], "metrics": [COCO.metric]},
        "prompts": dict(config["prompts"]),
        "max_prompt_tokens": int(config["train"]["max_prompt_tokens"]),
        "max_target_tokens": int(config["train"]["max_target_tokens"]),
        "log_every": int(config["train"]["log_every"]),
        "threads": int(config["train"].get("threads", 0)),
        "device": str(config["train"].get("device", "auto")),
        "dist_timeout_min": float(config["train"].get("dist_timeout_min", 30)),
        "rank0_timeout_min": float(config["train"].get("rank0_timeout_min", 120)),
        "save_model": init_weights_path(config),
    }
    RunConfig.from_dict(copy.deepcopy(d))
    return d


FEATURE_KEYS = (
    "model_preset",
    "model_overrides",
    "init_weights",
    "init_format",
    "vocab",
    "image_root",
    "image_cache",
    "seed",
    "threads",
    "device",
)


def resolve_features(config: dict) -> dict:
    """What rule extract_features depends on (and nothing else, so that other edits do not redo the store): the
    model every run starts from (its ViT), every image of the study (the caption records of all splits name them
    all), and the store's dtype and batch size."""
    fs = config["data"]["feature_store"]
    start = resolve_baseline(config, next(iter(config["tasks"])))
    return {
        **{k: start[k] for k in FEATURE_KEYS},
        "records": [records_path(study_root(config), COCO.name, s) for s in COCO.splits],
        "dtype": str(fs.get("dtype", "float16")),
        "batch_size": int(fs.get("batch_size", 64)),
    }


def resolve_baseline(config: dict, task: str) -> dict:
    """Evaluation of the untuned initial model on ``task`` (the reference the fine-tuned runs must beat)."""
    methods = [m for m in config["methods"] if task in config["methods"][m]]
    if not methods:
        raise ValueError(f"no method is configured for task {task!r}")
    run = Run(task, REFERENCE, None, 1.0, False, 0, study_root(config))
    d = resolve(config, run)
    d.update(
        run_id=f"{task}/baseline",
        method=REFERENCE,
        method_options={},
        subset=None,
        out_dir=f"{run.root}/baseline/{task}",
        lr=1.0,
        feature_store=None,
    )
    d["eval"] = {**d["eval"], "interval": 0}
    RunConfig.from_dict(copy.deepcopy(d))
    return d
