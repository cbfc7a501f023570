"""The resolved configuration of one training run: everything the run depends on, on disk, typed and checked."""

from __future__ import annotations

import hashlib
import json
import string
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from .files import read_yaml_mapping
from .metrics.caption import CIDER_MIN_IMAGES, SUPPORTED_METRICS
from .tasks import COCO, TASKS

MODEL_PARTS = ("visual_encoder", "text_encoder", "fusion_encoder", "text_decoder")
EVAL_SPLITS = ("val", "test")
SELECTION_SPLIT = "val"  # the split model selection, the tables and the figures read (best_val)
MAX_SEED = 2**32 - 1  # numpy's limit, and what the schema allows
PROMPT_FIELDS = {t.prompt_key: t.prompt_fields for t in TASKS.values()}  # the fields each template is formatted with


def _describe(hint) -> str:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if typing.get_origin(hint) is tuple:
        return f"a list of {_describe(args[0]).removeprefix('a ')}s"
    return {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true or false",
        dict: "a mapping",
        type(None): "null",
    }.get(hint, getattr(hint, "__name__", str(hint)))


def _type_ok(value, hint) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(hint))
    if origin is tuple:
        return isinstance(value, (tuple, list)) and all(_type_ok(v, typing.get_args(hint)[0]) for v in value)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint in (str, dict):
        return isinstance(value, hint)
    return not is_dataclass(hint) or isinstance(value, hint)


@lru_cache(maxsize=None)
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def check_types(obj) -> None:
    """Every field of the dataclass ``obj`` has its annotated type; the error names the field (not a later
    ``'<=' not supported between 'str' and 'int'``)."""
    for name, hint in _hints(type(obj)).items():
        value = getattr(obj, name)
        if not _type_ok(value, hint):
            raise ValueError(f"{name}: expected {_describe(hint)}, got {value!r}")


def check_schedule(sc: dict, where: str) -> None:
    """A schedule has what its kind needs (``where``: the key path for messages)."""
    kind = sc.get("kind", "steps")
    if kind not in ("steps", "epochs"):
        raise ValueError(f"{where}.kind: must be steps or epochs, got {kind!r}")
    need = "steps" if kind == "steps" else "epochs"
    if sc.get(need) is None or sc[need] <= 0:
        raise ValueError(f"{where}.{need}: a schedule of kind {kind!r} needs {need} > 0, got {sc.get(need)!r}")
    for key in ("warmup_steps", "start_lr", "end_lr"):
        if sc.get(key) is not None and sc[key] < 0:
            raise ValueError(f"{where}.{key}: must not be negative, got {sc[key]!r}")


def check_eval(task: str, ev: dict, where: str) -> None:
    """Evaluation settings every run of ``task`` can honour, and that the tables and figures can read."""
    splits = list(ev.get("splits", EVAL_SPLITS))
    unknown = [s for s in splits if s not in EVAL_SPLITS]
    if unknown:
        raise ValueError(f"{where}.splits: unknown split(s) {unknown}; expected some of {list(EVAL_SPLITS)}")
    if SELECTION_SPLIT not in splits:
        raise ValueError(
            f"{where}.splits: must include {SELECTION_SPLIT!r} (model selection, the tables and the "
            f"figures read it), got {splits}"
        )
    metrics = list(ev.get("metrics", ()))
    if task == COCO.name:
        unknown = [m for m in metrics if m not in SUPPORTED_METRICS]
        if unknown:
            raise ValueError(f"{where}.metrics: unknown metric(s) {unknown}; known: {list(SUPPORTED_METRICS)}")
        if metrics and "CIDEr" not in metrics:
            raise ValueError(
                f"{where}.metrics: must include CIDEr, the task's primary metric (or be empty: CIDEr "
                f"alone), got {metrics}"
            )
        if ev.get("max_items") is not None and ev["max_items"] < CIDER_MIN_IMAGES:
            raise ValueError(
                f"{where}.max_items: CIDEr needs at least {CIDER_MIN_IMAGES} images, got {ev['max_items']}"
            )
    elif metrics:
        raise ValueError(f"{where}.metrics: VQA is scored by its accuracy alone; leave the list empty, got {metrics}")
    for key, low in (
        ("num_beams", 1),
        ("min_new_tokens", 0),
        ("max_new_tokens", 1),
        ("batch_size", 1),
        ("interval", 0),
    ):
        if key in ev and ev[key] < low:
            raise ValueError(f"{where}.{key}: must be at least {low}, got {ev[key]!r}")
    if ev.get("min_new_tokens", 0) > ev.get("max_new_tokens", 1):
        raise ValueError(
            f"{where}.min_new_tokens: {ev['min_new_tokens']} is more than max_new_tokens {ev['max_new_tokens']}"
        )


def check_prompts(prompts: dict, where: str) -> None:
    """Prompt templates name only the fields they are formatted with (``{question}`` in the VQA prompt)."""
    unknown = sorted(set(prompts) - set(PROMPT_FIELDS))
    if unknown:
        raise ValueError(f"{where}: unknown prompt(s) {unknown}; expected {sorted(PROMPT_FIELDS)}")
    template = prompts.get("vqa_prompt")
    if template is None:
        return
    if not isinstance(template, str):
        raise ValueError(f"{where}.vqa_prompt: expected a string, got {template!r}")
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as e:
        raise ValueError(
            f"{where}.vqa_prompt: {template!r} is not a valid template ({e}); write a literal brace as {{{{ or }}}}"
        ) from None
    bad = sorted(names - set(PROMPT_FIELDS["vqa_prompt"]))
    if bad:
        raise ValueError(
            f"{where}.vqa_prompt: unknown field(s) {bad} in {template!r}; the only field is {{question}} "
            "(write a literal brace as {{ or }})"
        )
    if "question" not in names:
        raise ValueError(f"{where}.vqa_prompt: {template!r} does not contain {{question}}")


def check_seed(seed, where: str) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{where}: a seed must be an integer in 0..{MAX_SEED}, got {seed!r}")


def check_batch(total: int, per_device: int, where: str, processes: int = 1) -> None:
    """The global batch splits evenly into ``processes`` x per-device micro-batches (x gradient accumulation)."""
    if total % (processes * per_device):
        by = f"{processes} processes x " if processes > 1 else ""
        raise ValueError(f"{where}: {total} is not a multiple of {by}per_device_batch_size {per_device}")


def _nested(cls, key: str, value):
    """``cls(**value)`` for a nested section of the run config, with errors that name ``key``."""
    if not isinstance(value, dict):
        raise ValueError(f"{key}: expected a mapping, got {value!r}")
    unknown = sorted(set(value) - {f.name for f in fields(cls)})
    if unknown:
        raise ValueError(f"unknown run config key(s): {[f'{key}.{k}' for k in unknown]}")
    try:
        return cls(**value)
    except ValueError as e:
        msg = str(e)
        raise ValueError(msg if msg.startswith(f"{key}.") else f"{key}.{msg}") from None


@dataclass(frozen=True)
class ScheduleConfig:
    kind: str = "steps"  # "steps" (COCO) or "epochs" (VQAv2)
    steps: int | None = None
    epochs: float | None = None
    warmup_steps: int = 0
    start_lr: float = 0.0
    end_lr: float = 0.0

    def __post_init__(self) -> None:
        check_types(self)
        check_schedule(asdict(self), "schedule")


@dataclass(frozen=True)
class EvalConfig:
    interval: int = 0  # step-based schedules: steps between evaluations, 0 = only at the end; epoch-based: 0 (they
    # evaluate at every epoch end, see schedule.eval_steps)
    splits: tuple[str, ...] = ("val", "test")
    num_beams: int = 5
    min_new_tokens: int = 1
    max_new_tokens: int = 10
    batch_size: int = 32
    metrics: tuple[str, ...] = ()
    max_items: int | None = None  # evaluate on the first N records of a split (None = all)

    def __post_init__(self) -> None:
        check_types(self)


@dataclass(frozen=True)
class RunConfig:
    run_id: str
    task: str
    method: str
    method_options: dict
    data_ratio: float
    seed: int
    records: dict  # split -> prepared records path
    subset: str | None  # subset index file (None = all training pairs)
    image_root: str
    image_cache: str | None
    vocab: str
    model_preset: str
    model_overrides: dict
    init_weights: str | None
    init_format: str  # "vlpeft" (safetensors of our model), "official" (mplug_base.pth), "none"
    lr: float  # peak learning rate (of every trainable parameter outside the parts of part_lr)
    out_dir: str
    weight_decay: float = 0.05
    total_batch_size: int = 256
    per_device_batch_size: int = 64
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    prompts: dict = field(
        default_factory=lambda: {"caption_prompt": "a picture of", "vqa_prompt": "Question: {question} Answer: "}
    )
    max_prompt_tokens: int = 40
    max_target_tokens: int = 30
    log_every: int = 50
    checkpoint_every: int = 0  # 0 = at every evaluation
    threads: int = 0  # torch intra-op threads per process; 0 = leave torch's default
    precision: str = "auto"  # "auto" = bf16 autocast on GPU, fp32 on CPU; or "fp32"
    device: str = "auto"  # "auto" = CUDA when present, else CPU; or "cpu" / "cuda"
    save_model: str | None = None  # also write the full model (pre-training) as safetensors here
    num_workers: int = 0
    # Several processes: how long a collective may wait (the process group's timeout; NCCL's watchdog kills the run
    # when it is exceeded), and how long the other ranks wait for work rank 0 does alone (scoring with the Java PTB
    # tokenizer, writing a checkpoint): they wait on a separate gloo group with this patience, not in a collective.
    dist_timeout_min: float = 30.0
    rank0_timeout_min: float = 120.0
    feature_store: str | None = None  # stored ViT features read instead of images (a run whose ViT is frozen)
    # Peak learning rate per model part (a top-level module: visual_encoder, text_encoder, fusion_encoder,
    # text_decoder), e.g. mPLUG's full fine-tuning gives the ViT lr2 = 5e-6; same schedule shape as ``lr``.
    part_lr: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_types(self)
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {list(TASKS)}")
        if not 0 < self.data_ratio <= 1:
            raise ValueError(f"data_ratio must be in (0, 1], got {self.data_ratio}")
        if self.init_format not in ("vlpeft", "official", "none"):
            raise ValueError(f"init_format must be vlpeft, official or none, got {self.init_format!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.total_batch_size <= 0 or self.per_device_batch_size <= 0:
            raise ValueError("batch sizes must be positive")
        if self.precision not in ("auto", "fp32"):
            raise ValueError(f"precision must be auto or fp32, got {self.precision!r}")
        for key in ("dist_timeout_min", "rank0_timeout_min"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be positive (minutes), got {getattr(self, key)!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        for part, lr in self.part_lr.items():
            if part not in MODEL_PARTS:
                raise ValueError(f"part_lr: unknown model part {part!r}; expected one of {list(MODEL_PARTS)}")
            if isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0:
                raise ValueError(f"part_lr.{part} must be a positive learning rate, got {lr!r}")
        if self.schedule.kind == "epochs" and self.eval.interval:
            raise ValueError(
                f"eval.interval must be 0 for an epoch-based schedule (it evaluates at every epoch end), "
                f"got {self.eval.interval}"
            )
        check_seed(self.seed, "seed")
        check_batch(self.total_batch_size, self.per_device_batch_size, "total_batch_size")
        check_eval(self.task, asdict(self.eval), "eval")
        check_prompts(self.prompts, "prompts")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["eval"]["splits"] = list(self.eval.splits)
        d["eval"]["metrics"] = list(self.eval.metrics)
        return d

    def identity(self) -> dict:
        """The settings that make the run what it is: everything but where it writes and how fast it goes."""
        d = self.to_dict()
        for volatile in (
            "log_every",
            "threads",
            "num_workers",
            "out_dir",
            "save_model",
            "device",
            "dist_timeout_min",
            "rank0_timeout_min",
        ):
            d.pop(volatile, None)
        return d

    def digest(self) -> str:
        """Identity of the run's settings (a checkpoint of another configuration is not resumed)."""
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown run config key(s): {unknown}")
        d = dict(d)
        missing = sorted(
            f.name for f in fields(cls) if f.name not in d and f.default is MISSING and f.default_factory is MISSING
        )
        if missing:
            raise ValueError(f"run config lacks the key(s) {missing}")
        d["schedule"] = _nested(ScheduleConfig, "schedule", d.get("schedule", {}))
        ev = d.get("eval", {})
        if isinstance(ev, dict):
            ev = dict(ev)
            for key in ("splits", "metrics"):
                if isinstance(ev.get(key), list):
                    ev[key] = tuple(ev[key])
        d["eval"] = _nested(EvalConfig, "eval", ev)
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        d = read_yaml_mapping(path, "run config", remedy="delete it and rerun write_run_config")
        try:
            return cls.from_dict(d)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        tmp.replace(path)
