"""Training throughput. Prints numbers measured in one run.

CPU (always): the tiny model, 1 process vs `torchrun --nproc_per_node 2` (gloo) with the same global batch:
steps/s of each, their ratio, and whether both end with the same trainable weights (the equivalence).
GPU (when CUDA is present): the base model at 256 px, bf16 autocast, for full fine-tuning and each PEFT method,
each PEFT method also with the visual-feature store (its frozen ViT's output as input, no ViT in the step):
samples/s, speed relative to full fine-tuning (with the store: to the same method without it), peak memory, model
FLOPs per step (counted by torch.utils.flop_counter over one real step) and model FLOP utilisation against the
GPU's dense bf16 peak. ``--json`` writes these rows: the throughput recording the cost model reads
(``vlpeft.cost``, ``profiles/slurm/cost.yaml``).
End to end (``--end-to-end``, alone): a synthetic VQAv2 study made by the pipeline's own stages (records, JPEGs, the
uint8 image cache, the vocabulary), trained by ``vlpeft.train.Trainer`` itself (its loader, collation, device-side
normalisation, ``train_step``) once per loader-worker setting: samples/s, the fraction of step time spent blocked
waiting for the next batch, and the ratio between the settings, with the machine's load at start and end. On the
CPU by default the tiny model; on a GPU mPLUG-base at 256 px, micro-batch 64 (the paper's per-device batch).

    python benchmarks/bench_train.py [--steps 30] [--gpu-steps 10] [--batch 64]
    python benchmarks/bench_train.py --steps 0 --model-device cpu --preset tiny --batch 4 --gpu-steps 2  # self-check
    python benchmarks/bench_train.py --end-to-end [--workers 0,2] [--steps 30] [--image-size 256]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_study(root: Path, n_train: int = 64, image_size: int = 64) -> None:
    """A synthetic VQAv2 study under ``root`` through the pipeline's own stages: the generator's raw files in the
    real datasets' formats (Karpathy JSON, JPEGs, VQAv2 questions and annotations), prepared records, a ratio-0.5
    subset, the uint8 image cache at ``image_size`` (``images_<size>.npy``) and the WordPiece vocabulary."""
    from vlpeft.data import stages, synthetic
    from vlpeft.tokenizer import train_vocab

    synthetic.generate(root / "raw", n_train, 4, 4, seed=0)
    stages.prepare_vqa(
        root / "raw/dataset_coco.json",
        [root / f"raw/v2_OpenEnded_mscoco_{f}_questions.json" for f in ("train2014", "val2014")],
        [root / f"raw/v2_mscoco_{f}_annotations.json" for f in ("train2014", "val2014")],
        {s: root / f"prep/vqa/{s}.jsonl" for s in ("train", "val", "test")},
    )
    stages.make_subset("vqa", root / "prep/vqa/train.jsonl", 0.5, 0, root / "subsets/vqa/ratio0.5.json")
    stages.cache_images(
        root / "raw/images",
        [root / f"prep/vqa/{s}.jsonl" for s in ("train", "val", "test")],
        image_size,
        root / f"images_{image_size}.npy",
    )
    train_vocab(synthetic.corpus(root / "raw"), root / "vocab.txt")


def cpu_part(steps: int) -> None:
    from tests.conftest import make_run_config
    from vlpeft.launch import torchrun_command

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        make_study(root)
        times, weights = {}, {}
        for nproc in (1, 2):
            cfg = make_run_config(
                root,
                root / f"run{nproc}",
                task="vqa",
                per_device_batch_size=16 // nproc,
                total_batch_size=16,
                model_overrides={"hidden_dropout": 0.0, "attention_dropout": 0.0, "vision_attention_dropout": 0.0},
                schedule={"kind": "steps", "steps": steps, "warmup_steps": 2},
                eval={"interval": 0, "splits": ["val"], "num_beams": 1, "max_new_tokens": 2},
            )
            path = root / f"cfg{nproc}.yaml"
            path.write_text(yaml.safe_dump(cfg))
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            proc = subprocess.run(
                torchrun_command(nproc, 30, str(path)),  # the training job's own launch
                capture_output=True,
                text=True,
                env=env,
                check=False,
            )
            if proc.returncode:
                sys.exit(proc.stderr[-3000:])
            rec = json.loads((root / f"run{nproc}/record.json").read_text())
            times[nproc] = rec["train_time_s"]
            from safetensors.torch import load_file

            weights[nproc] = load_file(root / f"run{nproc}/trained.safetensors")
        same = all(torch.allclose(v, weights[2][k], atol=1e-5, rtol=1e-4) for k, v in weights[1].items())
        print(f"CPU tiny model, global batch 16, {steps} steps")
        print(f"  1 process:            {steps / times[1]:7.2f} steps/s")
        print(f"  torchrun 2 processes: {steps / times[2]:7.2f} steps/s   ratio 2p/1p = {times[1] / times[2]:.2f}x")
        print(f"  same final weights (atol 1e-5): {same}")
        if not same:
            sys.exit("1 and 2 processes ended with different weights")


# Dense bf16 peak TFLOP/s of common training GPUs (vendor data sheets, SXM parts); GPU_PEAK_TFLOPS overrides.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A6000": 155.0, "V100": 125.0}
SETTINGS = [
    ("full", {}),
    ("prompt", {"size": 16}),
    ("prefix", {"size": 16}),
    ("lora", {"size": 8}),
    ("serial_adapter", {"size": 64}),
    ("parallel_adapter", {"size": 64}),
]


def peak_tflops(device: torch.device) -> float | None:
    if "GPU_PEAK_TFLOPS" in os.environ:
        return float(os.environ["GPU_PEAK_TFLOPS"])
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def model_part(
    device: torch.device,
    preset_name: str = "base",
    batch: int = 64,
    steps: int = 10,
    warmup: int = 3,
    n_prompt: int = 8,
    n_target: int = 20,
) -> list[dict]:
    """Train steps (forward, backward, AdamW) of every method on random inputs; bf16 autocast on CUDA.

    Model FLOPs per step are counted by ``torch.utils.flop_counter`` over one real step (matmuls and attention
    as executed: a frozen ViT contributes its forward only, frozen weights on the gradient path their
    input-gradient only), so MFU = counted FLOPs / step time / the device's peak.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from vlpeft.methods.base import build_method, count_trainable
    from vlpeft.model.config import preset
    from vlpeft.model.mplug import MPlug

    cfg = preset(preset_name)
    cuda = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    peak = peak_tflops(device)
    rows = []
    for name, opts in SETTINGS:
        torch.manual_seed(0)
        model = MPlug(cfg).to(device).train()
        build_method(name, **opts).attach(model)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        g = torch.Generator(device=device).manual_seed(0)
        images = torch.randn(batch, 3, cfg.image_size, cfg.image_size, device=device, generator=g)
        pid = torch.randint(1000 % cfg.vocab_size, cfg.vocab_size, (batch, n_prompt), device=device, generator=g)
        tid = torch.randint(1000 % cfg.vocab_size, cfg.vocab_size, (batch, n_target), device=device, generator=g)
        batch_tensors = (images, pid, torch.ones_like(pid), tid, torch.ones_like(tid))

        variants = [(False, batch_tensors)]
        if not any(p.requires_grad for p in model.visual_encoder.parameters()):
            # With the visual-feature store: the frozen ViT's output is the input (stored features, as a run
            # reading the store gets them), so the step runs no ViT.
            with torch.no_grad(), autocast:
                features = model.encode_image(images).float()
            variants.append((True, (features, *batch_tensors[1:])))
        for store, inputs in variants:

            def step(model=model, opt=opt, inputs=inputs) -> float:
                with autocast:
                    loss = model(*inputs)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                return loss.item()

            with FlopCounterMode(display=False) as counter:
                step()
            flops = counter.get_total_flops()
            for _ in range(warmup):
                step()
            if cuda:
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                loss = step()
            if cuda:
                torch.cuda.synchronize(device)
            dt = (time.perf_counter() - t0) / steps
            if not math.isfinite(loss):
                raise SystemExit(f"{name}: non-finite loss {loss}")
            rows.append(
                {
                    "method": name,
                    "store": store,
                    "samples_per_s": batch / dt,
                    "step_s": dt,
                    "tflop_per_step": flops / 1e12,
                    "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
                    "trainable": count_trainable(model),
                    "mfu": flops / dt / (peak * 1e12) if peak else None,
                }
            )
        del model, opt, step
        if cuda:
            torch.cuda.empty_cache()
    return rows


def print_model_part(rows: list[dict], device: torch.device, preset_name: str, batch: int) -> None:
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{where}: {preset_name} model, batch {batch}, {'bf16 autocast' if device.type == 'cuda' else 'fp32'}")
    full = next(r for r in rows if r["method"] == "full")
    images = {r["method"]: r for r in rows if not r["store"]}
    for r in rows:
        mem = f"{r['peak_gib']:6.1f} GiB" if r["peak_gib"] is not None else "   n/a    "
        mfu = f"{r['mfu']:6.1%}" if r["mfu"] is not None else "  n/a"
        label = r["method"] + (" + store" if r["store"] else "")
        vs = (
            f"{images[r['method']]['step_s'] / r['step_s']:4.2f}x without store"
            if r["store"]
            else f"{full['step_s'] / r['step_s']:4.2f}x full"
        )
        print(
            f"  {label:<25} {r['samples_per_s']:9.1f} samples/s ({vs:>21})"
            f"  peak {mem}  {r['tflop_per_step'] * 1e3:10.2f} GFLOP/step  MFU {mfu}  trainable {r['trainable']:>11,}"
        )


class TimedBatches:
    """An iterator over the Trainer's batches that records how long each ``next`` blocked (the data wait)."""

    def __init__(self, batches) -> None:
        self.batches, self.waits = batches, []

    def __iter__(self):
        return self

    def __next__(self):
        t0 = time.perf_counter()
        batch = next(self.batches)
        self.waits.append(time.perf_counter() - t0)
        return batch


def timed_trainer_steps(cfg: dict, steps: int, warmup: int) -> dict:
    """Seconds of ``steps`` timed optimizer steps (after ``warmup`` untimed ones) and of their data wait, from the
    Trainer itself (``Trainer.train_step``: its loader over the records and the image cache, its collation,
    ``move`` and the device-side normalisation, forward, backward, AdamW); the data wait is the time a step blocks
    on the loader. The warm-up steps (loader workers starting, first batches) are timed apart."""
    from vlpeft.runconfig import RunConfig
    from vlpeft.train import Trainer

    trainer = Trainer(RunConfig.from_dict(cfg))
    trainer.setup()
    timed: list[TimedBatches] = []

    def loader(start_step: int, trainer=trainer) -> TimedBatches:
        # The Trainer's own loader (the one ``train_step`` asks for), wrapped to time each batch it hands over.
        timed.append(TimedBatches(Trainer.loader(trainer, start_step)))
        return timed[-1]

    trainer.loader = loader
    wall, wait = [], []
    for _ in range(warmup + steps):
        before = sum(sum(t.waits) for t in timed)
        t0 = time.perf_counter()
        loss = trainer.train_step()  # ends with the loss on the host: the device has finished the step
        wall.append(time.perf_counter() - t0)
        wait.append(sum(sum(t.waits) for t in timed) - before)
    if not math.isfinite(loss):
        raise SystemExit(f"non-finite loss {loss}")
    if len(timed) != 1:
        raise SystemExit(f"the Trainer made {len(timed)} loaders for one run of steps (expected 1)")
    del trainer.loader  # (the wrapper refers to the trainer: free its model before the next setting's)
    return {
        "step_s": sum(wall[warmup:]),
        "wait_s": sum(wait[warmup:]),
        "warmup_s": sum(wall[:warmup]),
        "device": str(trainer.device),
    }


def end_to_end_part(
    device: str,
    workers: list[int],
    preset_name: str,
    batch: int,
    accum: int,
    steps: int,
    warmup: int,
    threads: int,
    image_size: int | None,
    method: str,
    n_images: int,
    rounds: int = 1,
) -> dict:
    """Training steps from real on-disk records and images through the Trainer's loader, for each loader-worker
    setting in turn, ``rounds`` times (a fresh Trainer each time; a drift of the machine's load then falls on every
    setting alike), in one process: samples/s and the fraction of step time spent waiting for data."""
    from tests.conftest import make_run_config

    from vlpeft.model.config import preset

    overrides = {"image_size": image_size} if image_size else {}
    size = preset(preset_name, **overrides).image_size
    load_start = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        make_study(root, n_images, size)
        for r, n in ((r, n) for r in range(rounds) for n in workers):
            cfg = make_run_config(
                root,
                root / f"run{r}_w{n}",
                task="vqa",
                method=method,
                model_preset=preset_name,
                model_overrides=overrides,
                image_cache=str(root / f"images_{size}.npy"),
                per_device_batch_size=batch,
                total_batch_size=batch * accum,
                schedule={"kind": "steps", "steps": warmup + steps, "warmup_steps": 1},
                eval={"interval": 0, "splits": ["val"], "num_beams": 1, "max_new_tokens": 2},
                threads=threads,
                num_workers=n,
                device=device,
            )
            rows.append({"num_workers": n, **timed_trainer_steps(cfg, steps, warmup)})
    rows = [summarise([r for r in rows if r["num_workers"] == n], steps, batch * accum) for n in workers]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "task": "vqa",
        "method": method,
        "preset": preset_name,
        "image_size": size,
        "batch": batch,
        "accum": accum,
        "threads": threads,
        "warmup": warmup,
        "rounds": rounds,
        "cpus": cpus,
        "load_start": load_start,
        "load_end": os.getloadavg(),
        "rows": rows,
    }


def summarise(runs: list[dict], steps: int, global_batch: int) -> dict:
    """One worker setting's rounds together: rates over all its timed steps."""
    step_s, wait_s = sum(r["step_s"] for r in runs), sum(r["wait_s"] for r in runs)
    n = steps * len(runs)
    return {
        "num_workers": runs[0]["num_workers"],
        "steps": n,
        "samples_per_s": n * global_batch / step_s,
        "step_s": step_s / n,
        "data_wait_s": wait_s / n,
        "data_wait_fraction": wait_s / step_s,
        "warmup_s": sum(r["warmup_s"] for r in runs) / len(runs),
        "device": runs[0]["device"],
    }


def print_end_to_end(res: dict) -> None:
    rows = res["rows"]
    where = rows[0]["device"]
    if where.startswith("cuda"):
        import torch

        where = torch.cuda.get_device_name(torch.device(where))
    print(
        f"End to end ({where}): {res['task']} {res['method']}, {res['preset']} model at {res['image_size']} px, "
        f"micro-batch {res['batch']} x {res['accum']} accumulation, {res['threads'] or 'default'} torch thread(s); "
        f"records and the uint8 image cache on disk, through the Trainer's loader and train_step; "
        f"{rows[0]['steps']} timed steps per setting ({res['rounds']} round(s), each after {res['warmup']} "
        "warm-up steps)"
    )
    print(
        f"  {res['cpus']} CPUs; load average (1/5/15 min) at start {' '.join(f'{x:.2f}' for x in res['load_start'])},"
        f" at end {' '.join(f'{x:.2f}' for x in res['load_end'])}"
    )
    print(
        f"  {'workers':>7}  {'samples/s':>10}  {'step ms':>9}  {'data wait ms':>12}  {'data-wait fraction':>18}"
        f"  {'warm-up s':>9}"
    )
    for r in rows:
        print(
            f"  {r['num_workers']:>7}  {r['samples_per_s']:10.1f}  {r['step_s'] * 1e3:9.1f}  "
            f"{r['data_wait_s'] * 1e3:12.1f}  {r['data_wait_fraction']:18.1%}  {r['warmup_s']:9.2f}"
        )
    base = rows[0]
    for r in rows[1:]:
        print(
            f"  samples/s with {r['num_workers']} workers / with {base['num_workers']}: "
            f"{r['samples_per_s'] / base['samples_per_s']:.2f}x"
        )


def worker_list(text: str) -> list[int]:
    try:
        workers = [int(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated worker counts such as 0,2; got {text!r}") from None
    if not workers or min(workers) < 0:
        raise argparse.ArgumentTypeError(f"worker counts must be 0 or more, got {text!r}")
    return workers


def paper_train_config() -> dict:
    """The ``train`` block of the paper's config: its ``num_workers`` and ``threads`` are what each rank of a paper
    run uses."""
    return yaml.safe_load((REPO / "config/config.yaml").read_text())["train"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--steps",
        type=int,
        default=30,
        help="steps of the CPU 1 vs 2 process comparison (0: skip); with --end-to-end: timed steps",
    )
    p.add_argument("--gpu-steps", type=int, default=10, help="timed steps per method in the model part")
    p.add_argument(
        "--batch",
        type=int,
        default=None,
        help="(micro-)batch per step: 64 by default, 16 with --end-to-end on the CPU",
    )
    p.add_argument("--preset", default=None, help="model size: base by default, tiny with --end-to-end on the CPU")
    p.add_argument(
        "--model-device",
        default="cuda" if torch.cuda.is_available() else None,
        help="device of the model part and of --end-to-end (default: cuda when present, else the model "
        "part is skipped and --end-to-end runs on the CPU); `cpu` with `--preset tiny` checks the "
        "script itself",
    )
    p.add_argument("--json", type=Path, help="also write the model part's rows (with --end-to-end: its result) here")
    e2e = p.add_argument_group("end-to-end mode: the Trainer's loader over records and images on disk")
    e2e.add_argument(
        "--end-to-end",
        action="store_true",
        help="run only this: train steps through the Trainer's loader and report the data-wait fraction",
    )
    e2e.add_argument(
        "--workers",
        type=worker_list,
        default=None,
        help="loader workers to compare, e.g. 0,2 (default: 0,2 on the CPU; 0,2 and the paper "
        "config's train.num_workers on a GPU)",
    )
    e2e.add_argument("--warmup", type=int, default=3, help="untimed steps first (workers start, first batches)")
    e2e.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="times every worker setting runs, in turn (each time a fresh Trainer, --steps timed steps)",
    )
    e2e.add_argument("--accum", type=int, default=1, help="micro-batches per optimizer step")
    e2e.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (train.threads; 0: torch's default): 1 on the CPU by default, the "
        "paper config's train.threads on a GPU",
    )
    e2e.add_argument("--image-size", type=int, default=None, help="model image size (default: the preset's)")
    e2e.add_argument("--method", default="lora", help="method trained (default lora: little compute per sample)")
    e2e.add_argument("--images", type=int, default=64, help="synthetic training images (3 questions each)")
    a = p.parse_args(argv)
    if a.end_to_end:
        for name, low in (("steps", 1), ("rounds", 1), ("warmup", 0), ("accum", 1), ("images", 2)):
            if getattr(a, name) < low:
                p.error(f"--{name} must be at least {low} with --end-to-end, got {getattr(a, name)}")
        logging.basicConfig(level=logging.WARNING, format="  %(name)s: %(message)s")  # the Trainer's CPU warning
        on_gpu = (a.model_device or "cpu").startswith("cuda")
        device = "cuda" if on_gpu else "cpu"  # train.device: the Trainer takes its rank's GPU
        paper = paper_train_config()
        workers = a.workers or sorted({0, 2, int(paper["num_workers"])} if on_gpu else {0, 2})
        threads = a.threads if a.threads is not None else int(paper["threads"]) if on_gpu else 1
        res = end_to_end_part(
            device,
            workers,
            a.preset or ("base" if on_gpu else "tiny"),
            a.batch or (64 if on_gpu else 16),
            a.accum,
            a.steps,
            a.warmup,
            threads,
            a.image_size,
            a.method,
            a.images,
            a.rounds,
        )
        print_end_to_end(res)
        if a.json:
            a.json.write_text(json.dumps(res, indent=1))
        return
    if a.steps:
        cpu_part(a.steps)
    if a.model_device is None:
        print("GPU part skipped: no CUDA device")
        return
    device = torch.device(a.model_device)
    preset_name, batch = a.preset or "base", a.batch or 64
    rows = model_part(device, preset_name, batch, a.gpu_steps)
    print_model_part(rows, device, preset_name, batch)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
