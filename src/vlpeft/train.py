"""Train one configuration (task, method, size, data ratio, classifier flag, seed) and write its run record.

Single process (CPU or one GPU)::

    python -m vlpeft.train --config results/paper/runs/coco/lora/size8_ratio0.1/seed0/run_config.yaml

Four GPUs on one node (what the SLURM rule runs: torchrun, with the exit status of a preemption, see vlpeft.launch)::

    python -m vlpeft.launch --nproc-per-node 4 --stop-grace 270 --config .../run_config.yaml
    # = torchrun --standalone --nproc_per_node 4 --shutdown-timeout 270 -m vlpeft.train --config .../run_config.yaml

The global batch (``total_batch_size``) is world size x per-device batch x gradient accumulation, and the
loss is normalised by a count over the global batch (captions: target tokens; VQA: questions, each weighing its
human answers by their share, see ``Trainer.loss_normaliser``), so 1, 2 or 4 processes take the same optimizer steps.
Only rank 0 writes. On SIGTERM/SIGUSR1 (SLURM's warning before a time limit or preemption) or SIGINT (Ctrl-C; a
second one interrupts at once) the run saves a checkpoint of the trainable parameters, optimizer, step and every
rank's RNG, writes a ``preempted`` status and exits 75; started again it resumes from there, unless the checkpoint's
configuration or the content of an input file differs, in which case it starts over and says why. While it runs, the
run holds an exclusive lock on its directory (a second start fails, naming the holder).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import logging
import math
import os
import random
import signal
import sys
import time
from contextlib import nullcontext
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from . import devices
from .data.datasets import Collator, TrainSet, drop_bad_records, drop_bad_train_items, move
from .data.images import ImageStore
from .data.prepare import read_jsonl
from .data.subsets import read_subset
from .evaluate import PRIMARY_METRIC, EvaluationStopped, Evaluator, score_splits, tokenize_references
from .files import (
    CorruptFileError,
    RunLock,
    RunLockedError,
    UnsafeFileError,
    content_digest,
    read_json,
    record_digest,
    torch_load,
)
from .methods.base import PeftMethod, build_method, count_trainable, trainable_parameters
from .methods.registry import REFERENCE
from .metrics.caption import CIDER_MIN_IMAGES
from .model.config import for_tokenizer, preset
from .model.generation import GenerationConfig
from .model.mplug import MPlug
from .records import environment, git_state, write_json
from .runconfig import RunConfig
from .schedule import Schedule, eval_steps, steps_for
from .tasks import COCO, VQA
from .tokenizer import Tokenizer

log = logging.getLogger("vlpeft.train")
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: the job should be resubmitted and will resume
CHECKPOINT_REMEDY = "Delete it to start this run over (it is an interrupted run's resume checkpoint)."


class NonFiniteLoss(RuntimeError):
    pass


@functools.lru_cache(maxsize=4)
def epoch_order(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return tuple(order)


def global_batch(step: int, n: int, batch: int, seed: int) -> list[int]:
    """Indices of optimizer step ``step``'s global batch: consecutive slices of per-epoch permutations."""
    out = []
    for pos in range(step * batch, (step + 1) * batch):
        epoch, i = divmod(pos, n)
        out.append(epoch_order(n, seed, epoch)[i])
    return out


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def plain(obj):
    """``obj`` with numpy scalars turned into Python numbers (exactly), so that a checkpoint holds only the plain types
    ``torch.load(weights_only=True)`` reads."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def rng_state(device: torch.device) -> dict:
    """This process's RNG states (torch CPU, its own CUDA device, numpy, Python) as tensors and plain types."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def reseed(seed: int, rank: int, step: int) -> int:
    """Seed every RNG of this process from the run's seed, its rank and the step (a resume that cannot restore the
    saved states); at step 0 this is the seeding of a fresh start (``seed + rank``)."""
    s = seed + rank + 1_000_003 * step
    torch.manual_seed(s)  # CPU and every CUDA device
    np.random.seed(s % 2**32)
    random.seed(s)
    return s


def world_info_from_env() -> tuple[int, int, int]:
    """(rank, local rank, world size) from torchrun's variables, falling back to SLURM's, then to 1 process."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env.get("LOCAL_RANK", 0)), int(env["WORLD_SIZE"])
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env and int(env["SLURM_NTASKS"]) > 1:
        return int(env["SLURM_PROCID"]), int(env.get("SLURM_LOCALID", 0)), int(env["SLURM_NTASKS"])
    return 0, 0, 1


def build_model(cfg: RunConfig, tokenizer: Tokenizer) -> MPlug:
    mcfg = for_tokenizer(cfg.model_preset, cfg.model_overrides, tokenizer)
    if cfg.init_format == "vlpeft":
        # Our weights file (the slim checkpoint, or the mini study's pre-training): built on the meta device and
        # memory-mapped, so no rank initialises random weights or holds a private copy of frozen ones.
        from .model.slim import load_mapped, read_metadata

        if not cfg.init_weights:
            raise FileNotFoundError("initial weights not found: init_weights is not set")
        model = load_mapped(
            mcfg,
            cfg.init_weights,
            remedy="Delete it and rerun the stage that wrote it (pretrain_model or convert_checkpoint).",
        )
        meta = read_metadata(cfg.init_weights)
        log.info(
            "initial weights: %s memory-mapped (converted from %s)", cfg.init_weights, meta.get("source", "training")
        )
        return model
    model = MPlug(mcfg)
    if cfg.init_format == "official":
        from .model.checkpoint import load_official

        report = load_official(model, cfg.init_weights)
        log.info("%s", report.summary())
    return model


def param_groups(model: torch.nn.Module, weight_decay: float, part_lr: dict | None = None) -> list[dict]:
    """AdamW groups: decay on weight matrices; none on biases and norms (1-D parameters). The trainable parameters
    of each model part named in ``part_lr`` (a top-level module) get groups of their own, tagged with that
    ``part`` (``None``: the rest), so that they can follow their own peak learning rate."""
    part_lr = part_lr or {}
    split: dict[tuple, list] = {}
    for name, p in trainable_parameters(model).items():
        part = name.split(".")[0] if name.split(".")[0] in part_lr else None
        decays = not (p.dim() < 2 or "LayerNorm" in name or name.endswith(".bias"))
        split.setdefault((part, decays), []).append(p)
    groups = [
        {"params": split.get((None, True), []), "weight_decay": weight_decay, "part": None},
        {"params": split.get((None, False), []), "weight_decay": 0.0, "part": None},
    ]
    for part in part_lr:
        groups += [
            {"params": split[(part, d)], "weight_decay": weight_decay if d else 0.0, "part": part}
            for d in (True, False)
            if (part, d) in split
        ]
    return groups


class Trainer:
    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.rank, self.local_rank, self.world = world_info_from_env()
        self.out = Path(cfg.out_dir)
        self.stop_signal: str | None = None
        self.t_start = time.time()
        # One entry per start of this run (first start, every resume): where it started and how it ended.
        self.attempts: list[dict] = []
        # Content digests of the input files (rank 0): part of the checkpoint's identity and of the record.
        self.inputs: dict[str, dict] = {}
        self.outputs: dict[str, dict] = {}
        # What setup_device and setup build: None (or empty) until then, so that the record of a run that failed on
        # the way (bad data, out of memory while building the model, a signal) says what was not reached.
        self.device: torch.device | None = None
        self.rank0_group = None
        self.accum: int | None = None
        self.tok: Tokenizer | None = None
        self.data: TrainSet | None = None
        self.collate: Collator | None = None
        self.total_steps: int | None = None
        self.schedule: Schedule | None = None
        self.group_schedules: list[Schedule] = []
        self.model: MPlug | None = None
        self.method: PeftMethod | None = None
        self.n_trainable: int | None = None
        self.n_total: int | None = None
        self.ddp: torch.nn.Module | None = None
        self.opt: torch.optim.Optimizer | None = None
        self.evaluators: dict[str, Evaluator] = {}
        self.autocast = nullcontext()
        # Training progress: what a checkpoint saves and the record reports (a resume restores it).
        self.step = 0
        self.curve: list[dict] = []
        self.samples_seen = 0
        self.train_time = 0.0
        self.best: dict | None = None  # the curve point with the best validation score: step, val, test, metric
        self.eval_pending = False  # the evaluation of this step is still to do (one a signal interrupted)
        self._stop_agreed: bool | None = None  # the stop flag reduced with the last step's loss (several processes)
        self._batches, self._batches_step = None, 0

    # -- setup ------------------------------------------------------------------------------------------------
    def setup_device(self) -> None:
        """Threads, device and (several processes) the process group."""
        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        # Every process of this node needs its own GPU (torchrun's LOCAL_WORLD_SIZE); a paper run never falls back
        # to the CPU (device: cuda), where one step of the base model would take minutes.
        local = int(os.environ.get("LOCAL_WORLD_SIZE", self.world))
        if devices.pick(cfg.device, local) == "cuda":
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        if self.world > 1:
            if not dist.is_initialized():
                # An explicit timeout (NCCL's watchdog would stop the run after 10 minutes in one collective), and on
                # CUDA the group bound to this rank's device (NCCL sets up its communicator at once, on that GPU).
                cuda = self.device.type == "cuda"
                dist.init_process_group(
                    "nccl" if cuda else "gloo",
                    timeout=timedelta(minutes=cfg.dist_timeout_min),
                    **({"device_id": self.device} if cuda else {}),
                )
            # Work rank 0 does alone is waited for on this CPU group, with its own patience (wait_for_rank0).
            self.rank0_group = dist.new_group(backend="gloo", timeout=timedelta(minutes=cfg.rank0_timeout_min))

    def wait_for_rank0(self) -> None:
        """Every rank returns once rank 0 has got here. Called after work rank 0 does alone (scoring with the Java PTB
        tokenizer, writing a checkpoint, reading one): the others wait in a barrier of the gloo group with the
        ``rank0_timeout_min`` patience, not in the next NCCL collective, whose watchdog (``dist_timeout_min``) would
        take a long wait for a hang and stop the run."""
        if self.world > 1:
            dist.barrier(group=self.rank0_group)

    def setup(self) -> None:
        cfg = self.cfg
        if self.device is None:
            self.setup_device()
        micro = self.world * cfg.per_device_batch_size
        if cfg.total_batch_size % micro:
            raise ValueError(
                f"total_batch_size {cfg.total_batch_size} is not a multiple of world size {self.world}"
                f" x per-device batch {cfg.per_device_batch_size}"
            )
        self.accum = cfg.total_batch_size // micro
        for split in ["train", *cfg.eval.splits]:
            if split not in cfg.records or not Path(cfg.records[split]).is_file():
                raise FileNotFoundError(f"records for split {split!r} not found: {cfg.records.get(split)}")
        self.tok = Tokenizer(cfg.vocab)
        images = ImageStore(
            cfg.image_root, preset(cfg.model_preset, **cfg.model_overrides).image_size, cfg.image_cache
        )
        if cfg.feature_store:  # the frozen ViT's output read from the store; checked against the model below
            from .data.features import FeatureStore

            images = FeatureStore(cfg.feature_store)
        train_records = read_jsonl(cfg.records["train"])
        if cfg.subset:
            sub = read_subset(cfg.subset)
            if abs(sub["ratio"] - cfg.data_ratio) > 1e-12:
                raise ValueError(f"subset {cfg.subset} is for ratio {sub['ratio']}, the run wants {cfg.data_ratio}")
            items = sub["items"]
            if not items:
                raise ValueError(
                    f"subset {cfg.subset} (data ratio {cfg.data_ratio}) has no training pairs: delete it "
                    f"and rerun make_subset (are the training records {cfg.records['train']} empty?)"
                )
        else:
            items = (
                list(range(len(train_records)))
                if cfg.task == VQA.name
                else [[i, j] for i, r in enumerate(train_records) for j in range(len(r["references"]))]
            )
            if not items:
                raise ValueError(
                    f"split train: {cfg.records['train']} has no training pairs; delete it and rerun "
                    "its preparation stage"
                )
        items = drop_bad_train_items(cfg.task, train_records, items, images)
        self.data = TrainSet(cfg.task, train_records, items, images, cfg.prompts)
        self.check_cpus()
        self.collate = Collator(self.tok, cfg.max_prompt_tokens, cfg.max_target_tokens)
        sc = cfg.schedule
        self.total_steps = steps_for(sc.kind, len(self.data), cfg.total_batch_size, sc.steps, sc.epochs)
        self.schedule = Schedule(
            self.total_steps, min(sc.warmup_steps, self.total_steps), cfg.lr, sc.start_lr, sc.end_lr
        )

        torch.manual_seed(cfg.seed)  # identical model and method initialisation on every rank
        self.model = build_model(cfg, self.tok).to(self.device)
        self.method = build_method(cfg.method, **cfg.method_options)
        self.method.attach(self.model)
        if cfg.feature_store:
            self.check_feature_store(images)
        self.model.train()
        torch.manual_seed(cfg.seed + self.rank)  # dropout differs across ranks, as separate samples would
        self.n_trainable = count_trainable(self.model)
        self.n_total = sum(p.numel() for p in self.model.parameters())
        self.ddp = self.model
        if self.world > 1:
            # Full fine-tuning trains weights the forward never uses (the connected fusion layer's cross-attention,
            # as in the official checkpoint): DDP must then look for unused parameters every step.
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.local_rank] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.method == REFERENCE,
            )
        self.opt = torch.optim.AdamW(
            param_groups(self.model, cfg.weight_decay, cfg.part_lr), lr=cfg.lr, betas=(0.9, 0.999)
        )
        # One schedule per group: the same shape (warm-up, cosine, start and end rates), each group's own peak.
        self.group_schedules = [
            self.schedule
            if g["part"] is None
            else Schedule(self.total_steps, self.schedule.warmup_steps, cfg.part_lr[g["part"]], sc.start_lr, sc.end_lr)
            for g in self.opt.param_groups
        ]
        gen = GenerationConfig(cfg.eval.num_beams, cfg.eval.min_new_tokens, cfg.eval.max_new_tokens)
        split_records: dict[str, list[dict]] = {}
        for split in cfg.eval.splits:
            recs = read_jsonl(cfg.records[split])
            if not recs:
                raise ValueError(
                    f"split {split}: {cfg.records[split]} has no records to evaluate on; delete it and "
                    "rerun its preparation stage"
                )
            recs = drop_bad_records(split, recs, images)
            if cfg.eval.max_items:
                recs = recs[: cfg.eval.max_items]
            if cfg.task == COCO.name and len(recs) < CIDER_MIN_IMAGES:
                raise ValueError(
                    f"split {split}: {len(recs)} image(s) to evaluate on; CIDEr needs at least "
                    f"{CIDER_MIN_IMAGES} (raise eval.max_items)"
                )
            split_records[split] = recs
        # Rank 0 scores: the COCO references of every split tokenised in one Java run (a JVM start per run).
        refs = (
            tokenize_references(split_records)
            if cfg.task == COCO.name and self.rank == 0
            else dict.fromkeys(split_records)
        )
        for split, recs in split_records.items():
            self.evaluators[split] = Evaluator(
                cfg.task,
                split,
                recs,
                images,
                self.tok,
                gen,
                cfg.prompts,
                cfg.eval.batch_size,
                list(cfg.eval.metrics),
                cfg.max_prompt_tokens,
                self.rank,
                self.world,
                num_workers=cfg.num_workers,
                pin_memory=self.device.type == "cuda",
                refs_tokenized=refs[split],
            )
        self.autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if self.device.type == "cuda" and cfg.precision == "auto"
            else nullcontext()
        )
        self.wait_for_rank0()  # rank 0 alone tokenised the references of the evaluation splits (Java PTB tokenizer)

    def check_cpus(self) -> None:
        """Say so when this node's processes, each with its torch threads and loader workers, want more CPUs than
        the job has (a rank's loader then competes with the others' and the GPUs wait)."""
        cfg = self.cfg
        local = int(os.environ.get("LOCAL_WORLD_SIZE", self.world))
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        want = local * (max(cfg.threads, 1) + cfg.num_workers)
        if want > cpus:
            log.warning(
                "%d process(es) x (%d torch threads + %d loader workers) = %d CPUs wanted, %d available: "
                "lower train.threads or train.num_workers (or ask for more cpus_per_task)",
                local,
                max(cfg.threads, 1),
                cfg.num_workers,
                want,
                cpus,
            )

    def check_feature_store(self, store) -> None:
        """A store serves only a run whose ViT is frozen and is exactly the ViT it was computed with."""
        from .data.features import store_tag, visual_digest

        cfg = self.cfg
        if self.method.trains_visual_encoder():
            raise ValueError(
                f"run {cfg.run_id} trains the ViT ({cfg.method}, targets "
                f"{cfg.method_options.get('targets')}): it must read images, not the feature store"
            )
        store.check(store_tag(self.model.config, visual_digest(cfg.init_weights, cfg.init_format, self.model)))
        log.info("visual features from %s (%s)", store.cache, store.dtype)

    # -- data order: one seeded permutation per epoch; position = step, so resuming needs no loader state ----
    def global_batch(self, step: int) -> list[int]:
        return global_batch(step, len(self.data), self.cfg.total_batch_size, self.cfg.seed)

    def micro_batches(self, start_step: int):
        """This rank's micro-batches (index lists) from ``start_step`` on: step by step, accumulation by
        accumulation. Ranks take interleaved slices of the same global batch."""
        pdb = self.cfg.per_device_batch_size
        for step in range(start_step, self.total_steps):
            idx = self.global_batch(step)
            for a in range(self.accum):
                start = (a * self.world + self.rank) * pdb
                yield idx[start : start + pdb]

    def loader(self, start_step: int):
        from torch.utils.data import DataLoader

        workers = self.cfg.num_workers
        return iter(
            DataLoader(
                self.data,
                batch_sampler=list(self.micro_batches(start_step)),
                collate_fn=self.collate,
                num_workers=workers,
                pin_memory=self.device.type == "cuda",
                prefetch_factor=4 if workers else None,
                persistent_workers=False,
                # its own generator: creating a loader must not draw from the global RNG (dropout),
                # or a resumed run would diverge from an uninterrupted one
                generator=torch.Generator().manual_seed(self.cfg.seed),
            )
        )

    # -- checkpointing ----------------------------------------------------------------------------------------
    @property
    def ckpt_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def input_digests(self) -> dict[str, dict]:
        """sha256 of every input file whose content the run depends on (via their digest sidecars, see files.py)."""
        cfg = self.cfg
        paths = {"vocab": cfg.vocab, "subset": cfg.subset, "init_weights": cfg.init_weights}
        paths.update({f"records_{s}": cfg.records[s] for s in ("train", *cfg.eval.splits)})
        return {name: {"path": str(p), "sha256": content_digest(p)} for name, p in paths.items() if p}

    def _broadcast(self, obj):
        """Rank 0's ``obj`` on every rank (rank 0 may have worked alone to get it: the others wait for it first)."""
        if self.world == 1:
            return obj
        self.wait_for_rank0()
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def save_checkpoint(self) -> None:
        """Every rank contributes its own RNG state; rank 0 writes (tensors and plain types only); every rank returns
        once the checkpoint is on disk (so that a preempted run's ranks exit together, after it)."""
        mine = rng_state(self.device)
        rngs = [mine]
        if self.world > 1:
            rngs = [None] * self.world if self.rank == 0 else None
            dist.gather_object(mine, rngs, dst=0)
        if self.rank == 0:
            self._write_checkpoint(rngs)
        self.wait_for_rank0()

    def _write_checkpoint(self, rngs: list[dict]) -> None:
        state = {
            "digest": self.cfg.digest(),
            "config": self.cfg.identity(),
            "inputs": self.inputs,
            "step": self.step,
            "trainable": {k: v.detach().cpu() for k, v in trainable_parameters(self.model).items()},
            "optimizer": self.opt.state_dict(),
            "world_size": self.world,
            "device_type": self.device.type,
            "rng": rngs,
            "curve": plain(self.curve),
            "samples_seen": self.samples_seen,
            "eval_pending": self.eval_pending,
            "train_time": self.train_time,
            "best": plain(self.best),
            "attempts": plain(self.clock_attempt()),
        }
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.ckpt_path.with_name(".checkpoint.pt.tmp")  # one writer: the run lock
        torch.save(state, tmp)
        tmp.replace(self.ckpt_path)

    def stale_reason(self, state: dict) -> str | None:
        """Why a checkpoint does not belong to this run (configuration or input contents changed), or None."""
        reasons = []
        if state.get("digest") != self.cfg.digest():
            old, new = state.get("config") or {}, self.cfg.identity()
            keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            reasons.append(f"its configuration differs ({', '.join(keys) or 'digest ' + str(state.get('digest'))})")
        old_inputs = state.get("inputs") or {}
        changed = [
            f"{name} ({entry['path']})"
            for name, entry in self.inputs.items()
            if (old_inputs.get(name) or {}).get("sha256") != entry["sha256"]
        ]
        if changed:
            reasons.append("the content of its input file(s) changed: " + ", ".join(changed))
        return "; ".join(reasons) or None

    def maybe_resume(self) -> dict:
        """Resume from the run's checkpoint when it belongs to this run; start over (and say why) when its
        configuration or the content of an input differs. Rank 0 decides for all ranks. Returns notes for the
        attempt's record."""
        decision, state, error = ("none", None), None, None
        if self.rank == 0 and self.ckpt_path.is_file():
            try:
                state = torch_load(self.ckpt_path, CHECKPOINT_REMEDY)
                if not isinstance(state, dict):
                    raise CorruptFileError(f"{self.ckpt_path} holds no checkpoint (a dict): {CHECKPOINT_REMEDY}")
                reason = self.stale_reason(state)
                decision = ("restart", {"step": state.get("step"), "reason": reason}) if reason else ("resume", None)
            except (CorruptFileError, UnsafeFileError) as e:
                decision, error = ("error", str(e)), e
        kind, detail = self._broadcast(decision)
        if kind == "error":
            raise error if error is not None else RuntimeError(f"rank 0 could not read the checkpoint: {detail}")
        if kind == "none":
            return {}
        if kind == "restart":
            log.warning(
                "starting over: the checkpoint %s (step %s) does not belong to this run: %s",
                self.ckpt_path,
                detail["step"],
                detail["reason"],
            )
            if self.rank == 0:
                self.ckpt_path.unlink()
            return {"discarded_checkpoint": detail}
        if state is None:
            state = torch_load(self.ckpt_path, CHECKPOINT_REMEDY)
        params = trainable_parameters(self.model)
        with torch.no_grad():
            for k, v in state["trainable"].items():
                params[k].copy_(v)
        self.opt.load_state_dict(state["optimizer"])
        self.step, self.curve = state["step"], state["curve"]
        self.samples_seen, self.train_time = state["samples_seen"], state["train_time"]
        self.eval_pending = bool(state.get("eval_pending", False))
        self.best = state["best"]
        self.attempts = state.get("attempts", [])
        for a in self.attempts:
            if a["status"] == "running":  # killed without a clean stop: what it did after this checkpoint is lost
                a.update(status="killed", end_step=self.step)
        notes = {}
        saved = (state.get("world_size"), state.get("device_type"))
        if saved == (self.world, self.device.type) and len(state.get("rng") or []) == self.world:
            set_rng_state(state["rng"][self.rank], self.device)
        else:  # each rank's own stream cannot be restored: a deterministic new start, recorded
            s = reseed(self.cfg.seed, self.rank, self.step)
            notes["rng_reseeded"] = (
                f"checkpoint written by {saved[0]} {saved[1]} process(es), resumed with "
                f"{self.world} {self.device.type} process(es): RNG seeded from seed + rank + "
                f"1000003 x step ({s} on rank {self.rank})"
            )
            log.warning("%s", notes["rng_reseeded"])
        log.info("resumed from %s at step %d", self.ckpt_path, self.step)
        return notes

    def finished_record(self) -> tuple[dict | None, str | None]:
        """(rank 0) The record in ``status.json`` of an earlier attempt that finished this very run, or None and why
        not. It counts only when its configuration, the content of its inputs, the code version (git commit and
        dirty flag) and the content of the trained weights it wrote are the ones here and now."""
        path = self.out / "status.json"
        if not path.is_file():
            return None, None
        try:
            old = read_json(path, "")
        except CorruptFileError as e:
            return None, str(e)
        if not isinstance(old, dict) or old.get("status") != "success":
            return None, None
        if old.get("config_digest") != self.cfg.digest():
            return None, "its configuration differs"
        if old.get("inputs") != self.inputs:
            return None, "the content of an input file differs"
        if old.get("git") != git_state():
            return None, f"the code version differs (git {old.get('git')} then, {git_state()} now)"
        outputs = old.get("outputs") or {}
        if not outputs:
            return None, "it names no trained weights"
        for name, entry in outputs.items():
            p = Path(entry["path"])
            if not p.is_file() or content_digest(p) != entry["sha256"]:
                return None, f"its {name} weights {p} are missing or changed"
        return old, None

    def restore_finished(self) -> bool:
        """A run that already finished is not trained again: its record is written again from ``status.json``.

        SLURM can record a job that finished its work as TIMEOUT (its time limit fell while the processes were
        exiting); Snakemake then deletes the rule's output (record.json) and resubmits the job. Without this the
        retry would find no checkpoint (a finished run deletes it) and train the whole run again. Rank 0 decides for
        every rank; the new attempt is recorded as ``restored``."""
        old = None
        if self.rank == 0:
            self.inputs = self.input_digests()
            old, why_not = self.finished_record()
            if why_not:
                log.info("not reusing the finished attempt in %s: %s", self.out / "status.json", why_not)
        if not self._broadcast(old is not None):
            return False
        if self.rank == 0:
            steps = old.get("steps_done")
            old["attempts"] = [
                *old.get("attempts", []),
                {
                    "start_step": steps,
                    "end_step": steps,
                    "started_at": _now(),
                    "ended_at": _now(),
                    "status": "restored",
                    "hostname": os.uname().nodename,
                    "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
                    "wall_s": 0.0,
                    "gpus": 0,
                    "signal": None,
                },
            ]
            write_json(old, self.out / "status.json")
            write_json(old, self.out / "record.json")
            self.ckpt_path.unlink(missing_ok=True)
            log.warning(
                "run %s had already finished (status.json: success after %s steps, same configuration, inputs, "
                "code and trained weights): record.json written again from it, nothing retrained. Delete "
                "%s to train it again.",
                self.cfg.run_id,
                steps,
                self.out / "status.json",
            )
        return True

    # -- one optimizer step -----------------------------------------------------------------------------------
    def loss_normaliser(self, idx: list[int]) -> float:
        """The divisor of the summed (weighted) token losses of global batch ``idx``: a count over the whole global
        batch, from the text alone, so that 1, 2 or 4 processes and any accumulation take the same step.

        Captions: the target tokens (the mean over tokens, as mPLUG's captioning loss). VQA: the questions, as
        ALBEF, BLIP and official mPLUG (``(weights * per-answer token sums).sum() / batch size``): each question's
        answers weigh 1 in all, so the loss is the mean over questions of the answer-weighted sequence loss.
        """
        if self.cfg.task == VQA.name:
            return float(len(idx))
        return float(sum(self.target_tokens[i] for i in idx))

    @functools.cached_property
    def target_tokens(self) -> list[int]:
        """Per training item, the target tokens its loss counts (truncated length - 1), all tokenised once."""
        limit = self.cfg.max_target_tokens
        texts = [[text for text, _ in self.data.targets(i)] for i in range(len(self.data))]
        lengths = iter(self.tok.lengths([t for ts in texts for t in ts]))
        return [sum(min(next(lengths), limit) - 1 for _ in ts) for ts in texts]

    def train_step(self) -> float:
        for g, schedule in zip(self.opt.param_groups, self.group_schedules):
            g["lr"] = schedule.lr(self.step)
        if self._batches is None or self._batches_step != self.step:
            self._batches = self.loader(self.step)
        idx = self.global_batch(self.step)
        norm = self.loss_normaliser(idx)
        # The loss sums stay on the device (float64: the same sums as Python floats) until the step's one host sync.
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for a in range(self.accum):
            batch = move(next(self._batches), self.device)
            sync = a == self.accum - 1 or self.world == 1
            ctx = self.ddp.no_sync() if not sync and self.world > 1 else nullcontext()
            with ctx, self.autocast:
                per_target = self.ddp(
                    batch["images"],
                    batch["prompt_ids"],
                    batch["prompt_mask"],
                    batch["target_ids"],
                    batch["target_mask"],
                    reduction="none",
                    target_counts=batch["target_counts"],
                )
                loss_sum = (per_target * batch["target_weights"]).sum()
                loss = loss_sum * self.world / norm  # DDP averages over ranks
            loss.backward()
            total += loss_sum.detach().double()
        if self.world > 1:
            # One all-reduce per step for the loss and the stop flag (any rank's signal stops every rank at the
            # same step, see stop_requested).
            t = torch.stack(
                [total, torch.tensor(1.0 if self.stop_signal else 0.0, dtype=torch.float64, device=self.device)]
            )
            dist.all_reduce(t)
            total, flag = t.tolist()
            self._stop_agreed = flag > 0
        else:
            total = total.item()
        mean_loss = total / norm
        if not math.isfinite(mean_loss):
            raise NonFiniteLoss(f"loss is {mean_loss} at step {self.step}: stopping (lower the learning rate?)")
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        self._batches_step = self.step
        self.samples_seen += len(idx)
        return mean_loss

    def evaluate(self, stop=None) -> bool:
        """Evaluate on every split (curve point, best); False when ``stop`` (see ``Evaluator.predict``) gave it up."""
        point = {"step": self.step, "samples_seen": self.samples_seen, "epoch": self.samples_seen / len(self.data)}
        preds: dict[str, dict[str, str]] = {}
        seconds: dict[str, float] = {}
        for split, ev in self.evaluators.items():
            t0 = time.time()
            try:
                with self.autocast:
                    preds[split] = ev.predict(self.model, self.device, stop)
            except EvaluationStopped as e:
                log.warning("evaluation at step %d given up (%s): the resumed run evaluates again", self.step, e)
                return False
            seconds[split] = time.time() - t0
        if self.rank == 0:  # every split scored together: COCO's PTB tokenizer (Java) runs once
            point.update(score_splits(self.evaluators, preds, seconds))
        if self.evaluators:
            self.wait_for_rank0()  # rank 0 alone scored the predictions
        if self.rank == 0 and self.evaluators:
            self.curve.append(point)
            metric = PRIMARY_METRIC[self.cfg.task]
            val = point.get("val", {}).get(metric)
            if val is not None and (self.best is None or val > self.best["val"]):
                self.best = {
                    "step": self.step,
                    "val": val,
                    "test": point.get("test", {}).get(metric),
                    "metric": metric,
                }
        return True

    # -- the loop ---------------------------------------------------------------------------------------------
    def run(self) -> str:
        cfg = self.cfg
        if self.rank == 0:
            self.inputs = self.input_digests()
        notes = self.maybe_resume()
        self.attempts.append(
            {
                "start_step": self.step,
                "started_at": _now(),
                "status": "running",
                "hostname": os.uname().nodename,
                "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
                **notes,
            }
        )
        eval_at = set(
            eval_steps(cfg.schedule.kind, self.total_steps, cfg.eval.interval, len(self.data), cfg.total_batch_size)
        )
        log.info(
            "run %s: %d steps, global batch %d = %d procs x %d x %d accumulation, %d training pairs, "
            "%d / %d trainable parameters",
            cfg.run_id,
            self.total_steps,
            cfg.total_batch_size,
            self.world,
            cfg.per_device_batch_size,
            self.accum,
            len(self.data),
            self.n_trainable,
            self.n_total,
        )
        t_last, s_last = time.time(), self.step
        while self.step < self.total_steps or self.eval_pending:
            if self.stop_requested():
                self.end_attempt("preempted")
                self.save_checkpoint()
                return "preempted"
            if not self.eval_pending:
                t0 = time.time()
                loss = self.train_step()
                self.train_time += time.time() - t0
                if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                    now = time.time()
                    rate = (self.step - s_last) * cfg.total_batch_size / max(now - t_last, 1e-9)
                    eta = (self.total_steps - self.step) * cfg.total_batch_size / max(rate, 1e-9)
                    log.info(
                        "step %d/%d loss %.4f lr %.3g %.1f samples/s eta %.0fs",
                        self.step,
                        self.total_steps,
                        loss,
                        self.schedule.lr(self.step - 1),
                        rate,
                        eta,
                    )
                    t_last, s_last = now, self.step
                self.eval_pending = self.step in eval_at
            if self.eval_pending:
                # A signal stops an evaluation at its next batch (beam search over 5,000 images outlasts SLURM's
                # warning); the checkpoint then says the evaluation is still due, and the resumed run does it first.
                if not self.evaluate(stop=functools.partial(self.stop_requested, fresh=True)):
                    continue
                self.eval_pending = False
            due = self.step % cfg.checkpoint_every == 0 if cfg.checkpoint_every else self.step in eval_at
            if due and self.step < self.total_steps:
                self.save_checkpoint()
        return "success"

    @property
    def n_gpus(self) -> int:
        return self.world if self.device is not None and self.device.type == "cuda" else 0

    def clock_attempt(self) -> list[dict]:
        """The attempts, the running one's wall time and GPUs brought up to now (a killed attempt keeps the time of
        its last checkpoint: a lower bound)."""
        if self.attempts and self.attempts[-1]["status"] == "running":
            self.attempts[-1].update(wall_s=time.time() - self.t_start, gpus=self.n_gpus)
        return self.attempts

    def end_attempt(self, status: str) -> None:
        if self.attempts and self.attempts[-1]["status"] == "running":
            self.clock_attempt()
            self.attempts[-1].update(status=status, end_step=self.step, ended_at=_now(), signal=self.stop_signal)

    def stop_requested(self, fresh: bool = False) -> bool:
        """Whether the run stops here: any rank's signal stops every rank at the same point. One process reads its
        own flag. Several take the flag reduced with the last step's loss (train_step), or, first thing and when
        ``fresh`` (evaluation batches), reduce it now, on the communication device (NCCL reduces CUDA tensors only)."""
        if self.world == 1:
            return self.stop_signal is not None
        agreed, self._stop_agreed = self._stop_agreed, None
        if agreed is not None and not fresh:
            return agreed
        flag = torch.tensor([1 if self.stop_signal else 0], device=self.device)
        dist.all_reduce(flag)
        return bool(flag.item())

    def merged_params(self) -> int | None:
        """What remains trainable once training-only structure is merged away (prefix-tuning: the prefix tensors
        without the reparametrising MLP); the same as the trainable count for every other method. None before the
        method is built."""
        if self.method is None:
            return None
        merged = self.method.merged_count(self.model.config)
        return self.n_trainable if merged is None else merged

    def finalize(self, status: str, error: str | None = None) -> dict:
        cfg = self.cfg
        self.end_attempt(status)
        # Wall time and GPU-hours over every attempt of the run (preempted ones included: they were paid for).
        if self.attempts:
            wall = sum(a.get("wall_s", 0.0) for a in self.attempts)
            gpu_hours = sum(a.get("wall_s", 0.0) * a.get("gpus", 0) for a in self.attempts) / 3600.0
        else:  # failed before training started
            wall = time.time() - self.t_start
            gpu_hours = wall * self.n_gpus / 3600.0
        peak = torch.cuda.max_memory_allocated() if self.n_gpus else None
        try:
            import resource

            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        except ImportError:  # pragma: no cover - Windows
            rss = None
        record = {
            "run_id": cfg.run_id,
            "status": status,
            "error": error,
            "config": cfg.to_dict(),
            "config_digest": cfg.digest(),
            "inputs": self.inputs,
            "git": git_state(),
            "environment": environment(),
            "world_size": self.world,
            "gradient_accumulation": self.accum,
            "trainable_params": self.n_trainable,
            "total_params": self.n_total,
            "closed_form_params": self.method.closed_form_count(self.model.config)
            if self.method is not None
            else None,
            "method_info": self.method.record_info() if self.method is not None else None,
            "merged_params": self.merged_params(),
            "data_size": len(self.data) if self.data is not None else None,
            "total_steps": self.total_steps,
            "steps_done": self.step,
            "samples_seen": self.samples_seen,
            "curve": self.curve,
            "best": self.best,
            "attempts": self.attempts,
            # The trained weights this run wrote (name -> path, sha256): what a restored record vouches for.
            "outputs": self.outputs,
            "wall_time_s": wall,
            "train_time_s": self.train_time,
            "samples_per_s": self.samples_seen / max(self.train_time, 1e-9),
            "gpu_hours": gpu_hours,
            "peak_gpu_memory_bytes": peak,
            "peak_rss_bytes": rss,
        }
        if status == "failed":
            record["failed_rank"] = self.rank
            if self.first_failure():
                write_json(record, self.out / "status.json")
            else:
                log.error("rank %d failed too; status.json keeps the first failing rank's error", self.rank)
        elif self.rank == 0:
            write_json(record, self.out / "status.json")
            if status == "success":
                write_json(record, self.out / "record.json")
        return record

    @property
    def launch_id(self) -> str:
        """The same on every rank of one launch, different at the next (torchrun picks a new run id and port)."""
        env = os.environ
        return (
            "-".join(env.get(k, "") for k in ("TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT"))
            if (self.world > 1)
            else str(os.getpid())
        )

    def first_failure(self) -> bool:
        """Whether this rank is the first of this launch to fail: it alone writes status.json (an error on rank 1-3,
        an out-of-memory say, would otherwise leave no record: rank 0 then dies in a collective, or is killed).
        Claimed by creating ``.failed.<launch>`` exclusively; a claim of an earlier launch is removed."""
        if self.world == 1:
            return True
        self.out.mkdir(parents=True, exist_ok=True)
        name = ".failed." + hashlib.sha256(self.launch_id.encode()).hexdigest()[:16]
        for old in self.out.glob(".failed.*"):
            if old.name != name:
                old.unlink(missing_ok=True)
        try:
            os.close(os.open(self.out / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            return False
        return True


def evaluate_untuned(cfg: RunConfig) -> dict:
    """Scores of the model as initialised (no fine-tuning) on the configured evaluation splits."""
    trainer = Trainer(cfg)
    trainer.setup()
    trainer.evaluate()
    point = trainer.curve[-1] if trainer.curve else {}
    return {
        "task": cfg.task,
        "init_weights": cfg.init_weights,
        "scores": {s: point[s] for s in cfg.eval.splits if s in point},
    }


def main(argv: list[str] | None = None) -> int:
    from .console import EXIT_USAGE, error_line

    prog = "python -m vlpeft.train"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="resolved run config (YAML)")
    args = parser.parse_args(argv)
    try:  # a user error in the run config: one line, exit 2 (errors while training are recorded in status.json)
        cfg = RunConfig.load(args.config)
    except (OSError, ValueError) as e:
        if os.environ.get("VLPEFT_TRACEBACK"):
            raise
        print(f"{prog}: error: {error_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    trainer = Trainer(cfg)
    level = logging.INFO if trainer.rank == 0 else logging.WARNING
    fmt = f"%(asctime)s [rank {trainer.rank}] %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr)

    install_signal_handlers(trainer)
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    # One training per run directory: rank 0 holds the lock until it exits (the kernel releases it after a crash).
    # A second start touches nothing of the first's (no log, no status).
    lock = RunLock(cfg.out_dir)
    if trainer.rank == 0:
        try:
            lock.acquire()
        except RunLockedError as e:
            log.error("%s", e)
            return 1
    # The run's own log, appended across attempts: Snakemake replaces the rule's log file at each attempt, and the
    # story of a preempted or killed attempt must survive its retry.
    file_log = logging.FileHandler(Path(cfg.out_dir) / "train.log", mode="a")
    file_log.setFormatter(logging.Formatter(fmt))
    file_log.setLevel(level)
    logging.getLogger().addHandler(file_log)
    try:
        return _run(trainer)
    finally:
        logging.getLogger().removeHandler(file_log)
        file_log.close()
        lock.release()


def install_signal_handlers(trainer: Trainer) -> None:
    """SIGTERM/SIGUSR1 (SLURM) and SIGINT (Ctrl-C) ask the run to checkpoint and exit at the next step boundary (or
    the next batch of an evaluation); a second SIGINT, 2 s or more after the first, interrupts at once (the run then
    records a failure)."""

    first_sigint: list[float] = []

    def on_signal(signum, _frame):
        if signum == signal.SIGINT:
            # torchrun passes on the Ctrl-C the rank received from the terminal too: a copy within 2 s is the same one
            if first_sigint and time.monotonic() - first_sigint[0] > 2.0:
                raise KeyboardInterrupt
            first_sigint.append(time.monotonic())
        trainer.stop_signal = signal.Signals(signum).name
        log.warning("received %s: will checkpoint and exit at the next step boundary", trainer.stop_signal)

    for signum in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(signum, on_signal)


def _run(trainer: Trainer) -> int:
    cfg = trainer.cfg
    try:
        trainer.setup_device()
        if trainer.restore_finished():
            return 0
        trainer.setup()
        status = trainer.run()
        if status == "success" and trainer.rank == 0:
            trainer.method.merge(trainer.model)
            if cfg.save_model:
                from .model.slim import save_weights

                weights = Path(cfg.save_model)
                save_weights(trainer.model, weights)
            else:
                weights = Path(cfg.out_dir) / "trained.safetensors"
                trainer.method.save(trainer.model, weights)
            # (the runs starting from saved weights read their digest from this sidecar)
            trainer.outputs = {"trained": {"path": str(weights), "sha256": record_digest(weights)}}
        trainer.finalize(status)
        if status == "preempted":
            trainer.wait_for_rank0()  # every rank exits once status.json is written (torchrun stops the rest then)
    except (Exception, KeyboardInterrupt) as e:  # a failed run leaves a record saying why, then fails the job
        log.error("run failed: %s", e)
        trainer.finalize("failed", f"{type(e).__name__}: {e}")
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if status == "preempted":
        if trainer.rank == 0:
            log.warning(
                "checkpointed at step %d; exiting %d so that the job is resubmitted", trainer.step, EXIT_PREEMPTED
            )
        return EXIT_PREEMPTED
    if trainer.rank == 0 and trainer.ckpt_path.is_file():
        trainer.ckpt_path.unlink()  # finished: the record and trained weights are what remains
    return 0


if __name__ == "__main__":
    sys.exit(main())
