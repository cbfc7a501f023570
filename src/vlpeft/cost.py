"""Cost model of a study: samples, FLOPs and predicted GPU-hours of every run, and each training job's time limit.

    vlpeft cost --config config/config.yaml [--profile profiles/slurm] [--summary] [--json costs.json]

Per run of the grid (``vlpeft.grid``):

- samples: training samples = optimizer steps x global batch (the run's schedule over its subset's size);
  evaluation samples = evaluations (``vlpeft.schedule.eval_steps``: every ``eval.interval`` steps or at every
  epoch end, and after the last step) x items of the evaluated splits;
- FLOPs per sample, counted by ``torch.utils.flop_counter`` on the run's real architecture (its size, method,
  size knob and classifier flag; on the meta device for the base model, so nothing is allocated): one training step
  (forward and
  backward: a frozen ViT costs its forward only, frozen weights on the gradient path their input gradients only)
  and one evaluation sample (encoder, then the decoder over ``num_beams`` beams of ``max_new_tokens`` tokens: an
  upper bound, as generation stops at EOS). Token lengths are the stated assumptions of ``vlpeft.tasks``;
- with the visual-feature store a run whose ViT is frozen skips the ViT's forward in training and evaluation: its
  FLOPs are counted with stored features as the model's input; without the store, the frozen ViT's forward
  (counted once) comes on top (``tests/unit/test_cost.py`` checks that this equals a count with images);
- predicted GPU-hours = FLOPs / FLOP rate. The training rate per GPU is the one measured for the run's method
  (with or without the store) by ``benchmarks/bench_train.py --json`` when the profile names such a recording,
  else ``mfu`` x the GPU's peak (the settings below); evaluation (beam search: small, latency-bound steps) runs at
  ``eval_mfu`` x peak.

A training job's SLURM time limit is its predicted wall time on ``gpus_per_job`` GPUs (linear scaling assumed)
times ``margin`` plus ``overhead_minutes``, rounded up to ``round_minutes`` within ``[min_minutes, max_minutes]``,
and ``retry_growth`` longer at each retry (a retry resumes from its checkpoint). The settings live with the SLURM
profile (``profiles/slurm/cost.yaml``; the GPUs per job are read from the profile's ``set-resources``), the
predictions in ``results/cost/runs.json`` (rule ``predict_costs``), which the training rule's ``runtime`` reads.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path

from .methods.registry import is_peft
from .tasks import COCO, TASKS

# Token counts per sample (``prompt_tokens``, ``target_tokens``) and the paper's split sizes (``published_sizes``,
# used when neither prepared records nor the config's expected_counts give them) are each task's, in vlpeft.tasks.
CAPTIONS_PER_IMAGE = 5  # Karpathy COCO (5.003 on average) and the synthetic generator
FALLBACK_MINUTES = 1440  # a training job's limit while the predictions are not written yet (dry runs)


@dataclass(frozen=True)
class CostSettings:
    """How predictions are made and turned into SLURM time limits (``profiles/slurm/cost.yaml``).

    Attributes:
        gpus_per_job: GPUs of one training job (the profile's ``set-resources.train_run.gpu``).
        gpu_peak_tflops: Dense bf16 peak of one GPU, for the MFU assumption.
        mfu: Model FLOP utilisation of training assumed without a recorded benchmark.
        eval_mfu: Model FLOP utilisation of evaluation (beam search) assumed.
        benchmark: A ``benchmarks/bench_train.py --json`` recording on the cluster's GPU (path relative to the
            settings file), or None.
        margin: Factor on the predicted wall time.
        overhead_minutes: Added for start-up, checkpoints and scoring.
        round_minutes: Limits are rounded up to a multiple of this.
        min_minutes: Smallest limit asked for.
        max_minutes: Largest limit asked for (the partition's maximum).
        retry_growth: Each retry asks for this fraction of the first limit more.
    """

    gpus_per_job: int = 4
    gpu_peak_tflops: float = 312.0
    mfu: float = 0.3
    eval_mfu: float = 0.03
    benchmark: str | None = None
    margin: float = 1.5
    overhead_minutes: float = 15.0
    round_minutes: int = 10
    min_minutes: int = 30
    max_minutes: int = 2880
    retry_growth: float = 0.5


def load_settings(profile: str | os.PathLike | None) -> CostSettings:
    """Settings from ``<profile>/cost.yaml`` and the GPUs per job from ``<profile>/config.yaml``; defaults without a
    profile. A relative ``benchmark`` path is resolved against the profile folder."""
    from .files import read_yaml_mapping

    if profile is None:
        return CostSettings()
    profile = Path(profile)
    values: dict = {}
    if (profile / "cost.yaml").is_file():
        values = read_yaml_mapping(profile / "cost.yaml", "cost settings")
    known = {f.name for f in fields(CostSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{profile / 'cost.yaml'}: unknown key(s) {unknown}; known: {sorted(known)}")
    if (profile / "config.yaml").is_file():
        prof = read_yaml_mapping(profile / "config.yaml", "Snakemake profile")
        gpu = (prof.get("set-resources") or {}).get("train_run", {}).get("gpu")
        if gpu:
            values.setdefault("gpus_per_job", int(gpu))
    if values.get("benchmark") and not Path(values["benchmark"]).is_absolute():
        values["benchmark"] = str(profile / values["benchmark"])
    return CostSettings(**values)


# -- sizes -------------------------------------------------------------------------------------------------------


def _count_records(path: Path, pairs: bool) -> int:
    n = 0
    with path.open() as f:
        for line in f:
            if line.strip():
                n += len(json.loads(line)["references"]) if pairs else 1
    return n


def split_sizes(config: dict, task: str, root: str | os.PathLike = ".") -> tuple[dict[str, int], str]:
    """Training pairs and evaluation items per split of ``task``, and where they came from: the prepared records
    under ``root`` when they exist, else the config's ``data.expected_counts``, else the published sizes."""
    from .grid import records_path, study_root

    paths = {s: Path(root) / records_path(study_root(config), task, s) for s in ("train", "val", "test")}
    if all(p.is_file() for p in paths.values()):
        return {s: _count_records(p, pairs=task == COCO.name and s == "train") for s, p in paths.items()}, "records"
    expected = (config["data"].get("expected_counts") or {}).get(task)
    if expected and all(expected.get(s) for s in ("train", "val", "test")):
        sizes = dict(expected)
        if task == COCO.name:  # expected_counts counts images
            sizes["train"] = expected["train"] * CAPTIONS_PER_IMAGE
        return sizes, "expected_counts"
    return dict(TASKS[task].published_sizes), "published"


def model_config(config: dict, root: str | os.PathLike = "."):
    """The model size the study's runs build (vocabulary from the vocab file when it exists)."""
    from .grid import study_root, vocab_path
    from .model.config import preset

    overrides = dict(config["model"].get("overrides") or {})
    vocab = Path(root) / vocab_path(study_root(config))
    if "vocab_size" not in overrides:
        if vocab.is_file():
            overrides["vocab_size"] = sum(1 for line in vocab.open() if line.strip())
        elif config["tokenizer"]["source"] == "train":
            overrides["vocab_size"] = int(config["tokenizer"].get("vocab_size", 400))
    return preset(config["model"]["preset"], **overrides)


# -- FLOP counts ---------------------------------------------------------------------------------------------------


def _device(mc) -> str:
    """Where counts run: the meta device for a large model (nothing allocated or computed; each op is slower to
    dispatch there), the CPU for a small one (the same counts, computed faster than dispatched on meta)."""
    from .methods.full import model_count

    return "meta" if model_count(mc) > 50_000_000 else "cpu"


@lru_cache(maxsize=2)
def _model(mc, method: str, options_json: str):
    import torch

    from .methods.base import build_method
    from .model.mplug import MPlug

    with torch.device(_device(mc)):
        model = MPlug(mc)
        build_method(method, **json.loads(options_json)).attach(model)
    return model


@lru_cache(maxsize=None)
def vit_forward_flops(mc) -> int:
    """FLOPs of the ViT's forward for one image."""
    import torch

    from .model.mplug import build_visual_encoder

    with torch.device(_device(mc)):
        vit = build_visual_encoder(mc).eval()
        images = torch.zeros(1, 3, mc.image_size, mc.image_size)
    with torch.no_grad(), _counter() as counter:
        vit.forward_features(images)
    return counter.get_total_flops()


def _counter():
    """A FlopCounterMode that also counts the CPU's fused attention kernels (torch registers formulas for the CUDA
    ones only; on the meta device attention decomposes into counted matmuls)."""
    import torch
    from torch.utils import flop_counter

    def forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query, key, value)

    def backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)

    aten = torch.ops.aten
    extra = {}
    for op, formula in (
        ("_scaled_dot_product_flash_attention_for_cpu", forward),
        ("_scaled_dot_product_flash_attention_for_cpu_backward", backward),
    ):
        if hasattr(aten, op):
            extra[getattr(aten, op)] = formula
    return flop_counter.FlopCounterMode(display=False, custom_mapping=extra)


def _visual_input(mc, features: bool):
    import torch

    if features:  # what the feature store gives the model instead of pixels
        return torch.zeros(1, mc.num_image_tokens, mc.vision_width)
    return torch.zeros(1, 3, mc.image_size, mc.image_size)


@lru_cache(maxsize=None)
def train_flops(mc, method: str, options_json: str, prompt: int, target: int, features: bool = False) -> int:
    """FLOPs of one training sample (forward + backward), with images or with stored ViT features as input."""
    import torch

    model = _model(mc, method, options_json).train()
    with torch.device(_device(mc)):
        visual = _visual_input(mc, features)
        pid, tid = torch.zeros(1, prompt, dtype=torch.long), torch.zeros(1, target, dtype=torch.long)
    with _counter() as counter:
        model(visual, pid, torch.ones_like(pid), tid, torch.ones_like(tid)).backward()
    return counter.get_total_flops()


@lru_cache(maxsize=None)
def eval_flops(
    mc, method: str, options_json: str, prompt: int, beams: int, new_tokens: int, features: bool = False
) -> int:
    """FLOPs of one evaluation sample: encoder, then the decoder over ``beams`` sequences of ``1 + new_tokens``
    tokens (what KV-cached beam search computes, token for token, when no beam stops early)."""
    import torch

    model = _model(mc, method, options_json).eval()
    with torch.device(_device(mc)):
        visual = _visual_input(mc, features)
        pid = torch.zeros(1, prompt, dtype=torch.long)
        seq = torch.zeros(beams, 1 + new_tokens, dtype=torch.long)
    with torch.no_grad(), _counter() as counter:
        states, mask = model.encode(visual, pid, torch.ones_like(pid))
        model.text_decoder(
            seq, torch.ones_like(seq), states.repeat_interleave(beams, 0), mask.repeat_interleave(beams, 0)
        )
    return counter.get_total_flops()


# -- per run -----------------------------------------------------------------------------------------------------


@dataclass
class RunCost:
    """One run's samples and FLOPs; ``*_store`` with the feature store (equal to the others when the ViT trains)."""

    run_id: str
    task: str
    method: str
    store: bool  # whether the run reads the feature store (it is on and the run's ViT is frozen)
    train_samples: int
    eval_samples: int
    train_flops_per_sample: int
    train_flops_per_sample_store: int
    eval_flops_per_sample: int
    eval_flops_per_sample_store: int

    def flops(self, store: bool) -> float:
        if store:
            return (
                self.train_samples * self.train_flops_per_sample_store
                + self.eval_samples * self.eval_flops_per_sample_store
            )
        return self.train_samples * self.train_flops_per_sample + self.eval_samples * self.eval_flops_per_sample


def store_active(config: dict) -> bool:
    return bool((config["data"].get("feature_store") or {}).get("activate", False))


def run_costs(config: dict, root: str | os.PathLike = ".") -> list[RunCost]:
    """A :class:`RunCost` for every run of the study's grid."""
    import torch

    mc = model_config(config, root)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small model's counts run on the CPU: one thread is the fastest there
    try:
        return _run_costs(config, root, mc)
    finally:
        torch.set_num_threads(threads)


def _run_costs(config: dict, root: str | os.PathLike, mc) -> list[RunCost]:
    from .grid import expand, resolve
    from .methods.scope import trains_visual_encoder
    from .schedule import eval_steps, steps_for

    vit = vit_forward_flops(mc)
    sizes = {t: split_sizes(config, t, root)[0] for t in config["tasks"]}
    rows = []
    runs = expand(config)
    last = time.monotonic()
    for i, run in enumerate(runs):
        if time.monotonic() - last > 10:  # counting the base model's FLOPs takes minutes for the paper's grid
            last = time.monotonic()
            print(f"cost: counted {i} of {len(runs)} runs ({run.run_id} next)", file=sys.stderr, flush=True)
        d = resolve(config, run)
        n_train = max(1, round(run.ratio * sizes[run.task]["train"]))  # as vlpeft.data.subsets.subset
        sc = d["schedule"]
        steps = steps_for(sc["kind"], n_train, d["total_batch_size"], sc.get("steps"), sc.get("epochs"))
        ev = d["eval"]
        items = sum(min(sizes[run.task][s], ev.get("max_items") or sizes[run.task][s]) for s in ev["splits"])
        opts = json.dumps(d["method_options"], sort_keys=True)
        tok = TASKS[run.task]
        # The classifier flag changes which weights train, not the forward: one evaluation count for both.
        eval_opts = json.dumps(
            {**d["method_options"], "classifier": False} if is_peft(run.method) else {}, sort_keys=True
        )
        gen = (tok.prompt_tokens, ev["num_beams"], ev["max_new_tokens"])
        if trains_visual_encoder(run.method, d["method_options"]):  # images only
            tr = train_flops(mc, run.method, opts, tok.prompt_tokens, tok.target_tokens)
            evf = eval_flops(mc, run.method, eval_opts, *gen)
            flops = (tr, tr, evf, evf)
        else:  # counted with the store's features as input; without the store the frozen ViT's forward comes on top
            tr = train_flops(mc, run.method, opts, tok.prompt_tokens, tok.target_tokens, features=True)
            evf = eval_flops(mc, run.method, eval_opts, *gen, features=True)
            flops = (tr + vit, tr, evf + vit, evf)
        rows.append(
            RunCost(
                run.run_id,
                run.task,
                run.method,
                store_active(config) and not trains_visual_encoder(run.method, d["method_options"]),
                steps * d["total_batch_size"],
                len(eval_steps(sc["kind"], steps, ev["interval"], n_train, d["total_batch_size"])) * items,
                *flops,
            )
        )
    return rows


# -- time --------------------------------------------------------------------------------------------------------


def _benchmark_rates(settings: CostSettings) -> tuple[dict[tuple[str, bool], float], float | None]:
    """Training FLOP/s per GPU by (method, store) from a recorded bench_train.py JSON, and the GPU's peak FLOP/s
    implied by it (None without a recording)."""
    if not settings.benchmark or not Path(settings.benchmark).is_file():
        return {}, None
    rows = json.loads(Path(settings.benchmark).read_text())
    rates, peaks = {}, []
    for r in rows:
        rate = r["tflop_per_step"] * 1e12 / r["step_s"]
        rates[(r["method"], bool(r.get("store", False)))] = rate
        if r.get("mfu"):
            peaks.append(rate / r["mfu"])
    return rates, (max(peaks) if peaks else None)


@dataclass
class Prediction:
    run_id: str
    gpu_hours: float  # as the study runs it (store where used)
    gpu_hours_no_store: float
    gpu_hours_store: float
    eval_hours_no_store: float  # the evaluation part of the two above
    eval_hours_store: float
    slurm_minutes: int  # first attempt's limit


def predict(
    costs: list[RunCost], settings: CostSettings, measured: tuple[dict[tuple[str, bool], float], str] | None = None
) -> tuple[list[Prediction], str]:
    """GPU-hours of every run (with and without the store) and its first attempt's SLURM limit; and a line saying
    where the throughput came from. ``measured``: training FLOP/s per GPU by (method, store) measured elsewhere (the
    pilot's run records, ``vlpeft.plan``) and where they come from, used when the profile names no benchmark."""
    rates, bench_peak = _benchmark_rates(settings)
    peak = bench_peak or settings.gpu_peak_tflops * 1e12
    default = settings.mfu * settings.gpu_peak_tflops * 1e12
    eval_rate = settings.eval_mfu * peak
    if rates:
        source = (
            f"training throughput measured per method in {settings.benchmark}; evaluation at eval_mfu "
            f"{settings.eval_mfu:.0%} of {peak / 1e12:.0f} TFLOP/s"
        )
    elif measured and measured[0]:
        rates = measured[0]
        source = (
            f"training throughput measured per method by {measured[1]} (methods not measured: MFU "
            f"{settings.mfu:.0%}); evaluation at eval_mfu {settings.eval_mfu:.0%} of {peak / 1e12:.0f} TFLOP/s"
        )
    else:
        source = (
            f"no recorded benchmark: assumed MFU {settings.mfu:.0%} (training) and {settings.eval_mfu:.0%} "
            f"(evaluation) of {settings.gpu_peak_tflops:.0f} TFLOP/s per GPU"
        )
    out = []
    for c in costs:

        def hours(store: bool, c=c) -> tuple[float, float]:
            """(training, evaluation) GPU-hours."""
            use = store and c.train_flops_per_sample_store != c.train_flops_per_sample
            rate = rates.get((c.method, use)) or rates.get((c.method, False)) or default
            tr = c.train_samples * (c.train_flops_per_sample_store if store else c.train_flops_per_sample)
            ev = c.eval_samples * (c.eval_flops_per_sample_store if store else c.eval_flops_per_sample)
            return tr / rate / 3600.0, ev / eval_rate / 3600.0

        actual = sum(hours(c.store))
        minutes = actual / settings.gpus_per_job * 60.0 * settings.margin + settings.overhead_minutes
        minutes = math.ceil(minutes / settings.round_minutes) * settings.round_minutes
        minutes = int(min(settings.max_minutes, max(settings.min_minutes, minutes)))
        (t0, e0), (t1, e1) = hours(False), hours(True)
        out.append(Prediction(c.run_id, actual, t0 + e0, t1 + e1, e0, e1, minutes))
    return out, source


def attempt_minutes(first: int, attempt: int, settings: CostSettings) -> int:
    """The limit of the ``attempt``-th try (1-based) of a job whose first limit is ``first``."""
    grown = first * (1.0 + settings.retry_growth * max(0, attempt - 1))
    grown = math.ceil(grown / settings.round_minutes) * settings.round_minutes
    return int(min(settings.max_minutes, grown))


REPORT_ONLY = ("title", "reported_metric")  # config keys no run's cost depends on (`study` names the root: kept)


def cost_inputs(config: dict) -> dict:
    """The study config as the predictions depend on it: learning rates (which change no cost) set to 1.0 and the
    keys that only name or report the study left out, so that tuning a rate or redrawing the figures with another
    metric does not redo the predictions (rule predict_costs gets this as its params)."""
    import copy

    out = copy.deepcopy({k: v for k, v in config.items() if k not in REPORT_ONLY})
    for mcfg in out["methods"].values():
        for task, per_task in mcfg.items():
            if task != "options" and isinstance(per_task, dict) and "lr" in per_task:
                per_task["lr"] = 1.0
    return out


def write_predictions(
    config: dict, profile: str | os.PathLike | None, out: str | os.PathLike, root: str | os.PathLike = "."
) -> dict:
    """Predictions of every run as JSON (``runs``: run id -> costs and limit; ``settings``; ``source``)."""
    settings = load_settings(profile)
    costs = run_costs(config, root)
    preds, source = predict(costs, settings)
    doc = {
        "settings": asdict(settings),
        "source": source,
        "runs": {c.run_id: {**asdict(c), **asdict(p)} for c, p in zip(costs, preds)},
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(out)
    return doc


@lru_cache(maxsize=4)
def _read_predictions(path: str, mtime: float) -> dict:
    return json.loads(Path(path).read_text())


def job_minutes(predictions: str | os.PathLike, run_id: str, attempt: int = 1) -> int:
    """The SLURM time limit (minutes) of a training job's ``attempt``: its prediction with margin, grown at each
    retry; :data:`FALLBACK_MINUTES` while the predictions are not written (a dry run before rule predict_costs)."""
    path = Path(predictions)
    if not path.is_file():
        return FALLBACK_MINUTES
    doc = _read_predictions(str(path), path.stat().st_mtime)
    run = doc["runs"].get(run_id)
    if run is None:
        raise KeyError(f"{run_id} is not in the cost predictions {path}; rerun rule predict_costs")
    return attempt_minutes(run["slurm_minutes"], attempt, CostSettings(**doc["settings"]))


# -- report ------------------------------------------------------------------------------------------------------


def store_bandwidth(
    config: dict, mc, preds: list[Prediction], costs: list[RunCost], settings: CostSettings, n_images: int
) -> list[str]:
    """Lines on the feature store's size and the bytes a training step reads from it."""
    dtype = (config["data"].get("feature_store") or {}).get("dtype", "float16")
    itemsize = {"float16": 2, "bfloat16": 2, "float32": 4}[dtype]
    per_image = mc.num_image_tokens * mc.vision_width * itemsize
    batch = int(config["train"]["total_batch_size"])
    lines = [
        f"feature store ({dtype}): {mc.num_image_tokens} x {mc.vision_width} per image = {per_image:,} bytes; "
        f"{n_images:,} images = {per_image * n_images / 1e9:.1f} GB on disk",
        f"read per training step (global batch {batch}): {batch * per_image / 1e6:.1f} MB "
        f"({batch * per_image / settings.gpus_per_job / 1e6:.1f} MB per rank); uint8 image cache instead: "
        f"{batch * mc.image_size**2 * 3 / 1e6:.1f} MB",
    ]
    by_id = {c.run_id: c for c in costs}
    rates = []
    for p in preds:
        c = by_id[p.run_id]
        if c.store and c.train_samples:
            steps = c.train_samples / batch
            train_h = p.gpu_hours_store - p.eval_hours_store
            rates.append(batch * per_image / (train_h * 3600 / settings.gpus_per_job / steps))
    if rates:
        rates.sort()
        lines.append(
            f"at the predicted step times: {rates[len(rates) // 2] / 1e9:.2f} GB/s per job (median run), "
            f"{rates[-1] / 1e9:.2f} GB/s at most"
        )
    return lines


def flops_text(flops: float) -> str:
    """A FLOP count with the largest SI prefix that keeps it at or above 1 (the paper grid in EFLOP, the mini study in
    TFLOP), one decimal."""
    for prefix, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9)):
        if flops >= scale:
            return f"{flops / scale:,.1f} {prefix}FLOP"
    return f"{flops:,.0f} FLOP"


def hours_text(hours: float) -> str:
    """GPU-hours: whole hours from 10 on, else three significant digits, never in exponent notation (a CPU-sized study
    is not "0")."""
    if hours >= 10:
        return f"{hours:,.0f}"
    if hours <= 0:
        return "0"
    return f"{hours:.{max(0, 2 - math.floor(math.log10(hours)))}f}"


def report(
    config: dict, profile: str | os.PathLike | None, root: str | os.PathLike = ".", per_run: bool = True
) -> tuple[str, dict]:
    settings = load_settings(profile)
    costs = run_costs(config, root)
    preds, source = predict(costs, settings)
    mc = model_config(config, root)
    lines = []
    if per_run:
        lines.append(
            f"{'run':<46} {'train':>13} {'eval':>11} {'GFLOP per train sample':>23} "
            f"{'GFLOP per eval sample':>23} {'store':>5} {'GPU-hours':>19} {'SLURM':>6}"
        )
        lines.append(
            f"{'':<46} {'samples':>13} {'samples':>11} {'no store / store':>23} {'no store / store':>23} "
            f"{'used':>5} {'no store / store':>19} {'min':>6}"
        )
        for c, p in zip(costs, preds):
            lines.append(
                f"{c.run_id:<46} {c.train_samples:>13,} {c.eval_samples:>11,} "
                f"{c.train_flops_per_sample / 1e9:>11.4g} / {c.train_flops_per_sample_store / 1e9:<9.4g} "
                f"{c.eval_flops_per_sample / 1e9:>11.4g} / {c.eval_flops_per_sample_store / 1e9:<9.4g} "
                f"{'yes' if c.store else 'no':>5} {p.gpu_hours_no_store:>9.3g} / {p.gpu_hours_store:<7.3g} "
                f"{p.slurm_minutes:>6}"
            )
        lines.append("")
    without = sum(c.flops(False) for c in costs)
    with_store = sum(c.flops(c.store) for c in costs)
    h_without = sum(p.gpu_hours_no_store for p in preds)
    h_with = sum(p.gpu_hours for p in preds)
    sizes = {t: split_sizes(config, t, root) for t in config["tasks"]}
    n_images = study_images(config, root)[0]
    lines += [
        f"{len(costs)} runs, model {config['model']['preset']} ({mc.image_size} px); sizes from "
        + ", ".join(f"{t}: {src}" for t, (_, src) in sizes.items()),
        "token assumptions: "
        + ", ".join(
            f"{t.name} prompt {t.prompt_tokens} / target {t.target_tokens}"
            for t in TASKS.values()
            if t.name in config["tasks"]
        ),
        f"training samples: {sum(c.train_samples for c in costs):,}; evaluation samples: "
        f"{sum(c.eval_samples for c in costs):,}",
        f"whole grid: {flops_text(without)} without the store, {flops_text(with_store)} with it "
        f"({without / with_store:.2f}x fewer; {sum(c.store for c in costs)} of {len(costs)} runs read the store)",
        f"predicted GPU-hours: {hours_text(h_without)} without the store (evaluation "
        f"{hours_text(sum(p.eval_hours_no_store for p in preds))}), {hours_text(h_with)} with it (evaluation "
        f"{hours_text(sum(p.eval_hours_store if c.store else p.eval_hours_no_store for c, p in zip(costs, preds)))})",
        f"throughput: {source}",
        f"SLURM limits: {settings.gpus_per_job} GPUs per job, predicted wall x {settings.margin} + "
        f"{settings.overhead_minutes:.0f} min, {min(p.slurm_minutes for p in preds)}-"
        f"{max(p.slurm_minutes for p in preds)} min over the runs (first attempt)",
        *store_bandwidth(config, mc, preds, costs, settings, n_images),
    ]
    summary = {
        "runs": len(costs),
        "flops_no_store": without,
        "flops_store": with_store,
        "ratio": without / with_store,
        "gpu_hours_no_store": h_without,
        "gpu_hours_store": h_with,
    }
    return "\n".join(lines), summary


def study_images(config: dict, root: str | os.PathLike = ".") -> tuple[int, str]:
    """Images of the study and where the count comes from: every image the prepared COCO caption records name, else
    the config's ``expected_counts``, else Karpathy COCO's published 123,287."""
    from .grid import records_path, study_root

    paths = [Path(root) / records_path(study_root(config), COCO.name, s) for s in COCO.splits]
    if all(p.is_file() for p in paths):
        return (
            len({json.loads(line)["image"] for p in paths for line in p.open() if line.strip()}),
            "the prepared caption records",
        )
    expected = (config["data"].get("expected_counts") or {}).get(COCO.name)
    if expected:
        return sum(expected[s] for s in ("train", "val", "test")), "the config's expected_counts"
    return 123_287, "Karpathy COCO's published count"


def main(argv: list[str] | None = None) -> int:
    from .console import announce
    from .grid import load_config

    p = argparse.ArgumentParser(prog="vlpeft cost", description=__doc__.splitlines()[0])
    p.add_argument("--config", default="config/config.yaml", help="study config (default: %(default)s, the paper's)")
    p.add_argument(
        "--profile",
        default="profiles/slurm",
        help="folder with cost.yaml and the SLURM profile (default: %(default)s)",
    )
    p.add_argument("--root", default=".", help="working directory of the study (for prepared records)")
    p.add_argument("--summary", action="store_true", help="totals only, no line per run")
    p.add_argument("--json", type=Path, help="also write the totals here (JSON)")
    a = p.parse_args(argv)
    config = load_config(a.config)  # checked as the workflow checks it: a bad config is one line, not a KeyError
    announce("vlpeft cost", f"counting the FLOPs of every run of {a.config} (loads torch; minutes for the paper grid)")
    profile = a.profile if Path(a.profile).is_dir() else None
    text, summary = report(config, profile, a.root, per_run=not a.summary)
    print(text)
    if a.json:
        a.json.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
