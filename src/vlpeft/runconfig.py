"""The resolved configuration of one training run: everything the run depends on, on disk, typed and checked."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

TASKS = ("coco", "vqa")
MODEL_PARTS = ("visual_encoder", "text_encoder", "fusion_encoder", "text_decoder")


@dataclass(frozen=True)
class ScheduleConfig:
    kind: str = "steps"  # "steps" (COCO) or "epochs" (VQAv2)
    steps: int | None = None
    epochs: float | None = None
    warmup_steps: int = 0
    start_lr: float = 0.0
    end_lr: float = 0.0


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
    prompts: dict = field(default_factory=lambda: {"caption_prompt": "a picture of",
                                                   "vqa_prompt": "Question: {question} Answer: "})
    max_prompt_tokens: int = 40
    max_target_tokens: int = 30
    log_every: int = 50
    checkpoint_every: int = 0  # 0 = at every evaluation
    threads: int = 0  # torch intra-op threads per process; 0 = leave torch's default
    precision: str = "auto"  # "auto" = bf16 autocast on GPU, fp32 on CPU; or "fp32"
    device: str = "auto"  # "auto" = CUDA when present, else CPU; or "cpu" / "cuda"
    save_model: str | None = None  # also write the full model (pre-training) as safetensors here
    num_workers: int = 0
    # Peak learning rate per model part (a top-level module: visual_encoder, text_encoder, fusion_encoder,
    # text_decoder), e.g. mPLUG's full fine-tuning gives the ViT lr2 = 5e-6; same schedule shape as ``lr``.
    part_lr: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
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
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        for part, lr in self.part_lr.items():
            if part not in MODEL_PARTS:
                raise ValueError(f"part_lr: unknown model part {part!r}; expected one of {list(MODEL_PARTS)}")
            if isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0:
                raise ValueError(f"part_lr.{part} must be a positive learning rate, got {lr!r}")
        if self.schedule.kind == "epochs" and self.eval.interval:
            raise ValueError(f"eval.interval must be 0 for an epoch-based schedule (it evaluates at every epoch end), "
                             f"got {self.eval.interval}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["eval"]["splits"] = list(self.eval.splits)
        d["eval"]["metrics"] = list(self.eval.metrics)
        return d

    def digest(self) -> str:
        """Identity of the run's settings (checkpoints of another configuration are refused)."""
        d = self.to_dict()
        for volatile in ("log_every", "threads", "num_workers", "out_dir", "save_model", "device"):
            d.pop(volatile, None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown run config key(s): {unknown}")
        d = dict(d)
        d["schedule"] = ScheduleConfig(**d.get("schedule", {}))
        ev = dict(d.get("eval", {}))
        ev["splits"] = tuple(ev.get("splits", ("val", "test")))
        ev["metrics"] = tuple(ev.get("metrics", ()))
        d["eval"] = EvalConfig(**ev)
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"run config not found: {path}")
        return cls.from_dict(yaml.safe_load(path.read_text()))

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        tmp.replace(path)
