"""Training throughput. Prints numbers measured in one run.

CPU (always): the tiny model, 1 process vs `torchrun --nproc_per_node 2` (gloo) with the same global batch:
steps/s of each, their ratio, and whether both end with the same trainable weights (the equivalence).
GPU (when CUDA is present): the base model at 256 px, bf16 autocast, for full fine-tuning and each PEFT method,
each PEFT method also with the visual-feature store (its frozen ViT's output as input, no ViT in the step):
samples/s, speed relative to full fine-tuning (with the store: to the same method without it), peak memory, model
FLOPs per step (counted by torch.utils.flop_counter over one real step) and model FLOP utilisation against the
GPU's dense bf16 peak. ``--json`` writes these rows: the throughput recording the cost model reads
(``vlpeft.cost``, ``profiles/slurm/cost.yaml``).

    python benchmarks/bench_train.py [--steps 30] [--gpu-steps 10] [--batch 64]
    python benchmarks/bench_train.py --steps 0 --model-device cpu --preset tiny --batch 4 --gpu-steps 2  # self-check
"""

from __future__ import annotations

import argparse
import contextlib
import json
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


def cpu_part(steps: int) -> None:
    from tests.conftest import make_run_config

    from vlpeft.data import stages, synthetic
    from vlpeft.tokenizer import train_vocab

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        synthetic.generate(root / "raw", 64, 4, 4, seed=0)
        stages.prepare_vqa(root / "raw/dataset_coco.json",
                           [root / f"raw/v2_OpenEnded_mscoco_{f}_questions.json" for f in ("train2014", "val2014")],
                           [root / f"raw/v2_mscoco_{f}_annotations.json" for f in ("train2014", "val2014")],
                           {s: root / f"prep/vqa/{s}.jsonl" for s in ("train", "val", "test")})
        stages.make_subset("vqa", root / "prep/vqa/train.jsonl", 0.5, 0, root / "subsets/vqa/ratio0.5.json")
        stages.cache_images(root / "raw/images", [root / "prep/vqa/train.jsonl", root / "prep/vqa/val.jsonl",
                                                   root / "prep/vqa/test.jsonl"], 64, root / "images_64.npy")
        train_vocab(synthetic.corpus(root / "raw"), root / "vocab.txt")
        times, weights = {}, {}
        for nproc in (1, 2):
            cfg = make_run_config(root, root / f"run{nproc}", task="vqa", per_device_batch_size=16 // nproc,
                                  total_batch_size=16,
                                  model_overrides={"hidden_dropout": 0.0, "attention_dropout": 0.0,
                                                   "vision_attention_dropout": 0.0},
                                  schedule={"kind": "steps", "steps": steps, "warmup_steps": 2},
                                  eval={"interval": 0, "splits": ["val"], "num_beams": 1, "max_new_tokens": 2})
            path = root / f"cfg{nproc}.yaml"
            path.write_text(yaml.safe_dump(cfg))
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            proc = subprocess.run([str(Path(sys.executable).parent / "torchrun"), "--standalone", "--log-dir", os.devnull,
                               "--nproc_per_node", str(nproc), "-m", "vlpeft.train",
                                   "--config", str(path)], capture_output=True, text=True, env=env, check=False)
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
SETTINGS = [("full", {}), ("prompt", {"size": 16}), ("prefix", {"size": 16}), ("lora", {"size": 8}),
            ("serial_adapter", {"size": 64}), ("parallel_adapter", {"size": 64})]


def peak_tflops(device: torch.device) -> float | None:
    if "GPU_PEAK_TFLOPS" in os.environ:
        return float(os.environ["GPU_PEAK_TFLOPS"])
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def model_part(device: torch.device, preset_name: str = "base", batch: int = 64, steps: int = 10,
               warmup: int = 3, n_prompt: int = 8, n_target: int = 20) -> list[dict]:
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
            rows.append({"method": name, "store": store, "samples_per_s": batch / dt, "step_s": dt,
                         "tflop_per_step": flops / 1e12,
                         "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
                         "trainable": count_trainable(model),
                         "mfu": flops / dt / (peak * 1e12) if peak else None})
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
        vs = (f"{images[r['method']]['step_s'] / r['step_s']:4.2f}x without store" if r["store"]
              else f"{full['step_s'] / r['step_s']:4.2f}x full")
        print(f"  {label:<25} {r['samples_per_s']:9.1f} samples/s ({vs:>21})"
              f"  peak {mem}  {r['tflop_per_step'] * 1e3:10.2f} GFLOP/step  MFU {mfu}  trainable {r['trainable']:>11,}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30, help="steps of the CPU 1 vs 2 process comparison (0: skip)")
    p.add_argument("--gpu-steps", type=int, default=10, help="timed steps per method in the model part")
    p.add_argument("--batch", type=int, default=64, help="batch of the model part")
    p.add_argument("--preset", default="base", help="model size of the model part")
    p.add_argument("--model-device", default="cuda" if torch.cuda.is_available() else None,
                   help="device of the model part (default: cuda when present, else skipped); "
                        "`cpu` with `--preset tiny` checks the script itself")
    p.add_argument("--json", type=Path, help="also write the model part's rows here")
    a = p.parse_args(argv)
    if a.steps:
        cpu_part(a.steps)
    if a.model_device is None:
        print("GPU part skipped: no CUDA device")
        return
    device = torch.device(a.model_device)
    rows = model_part(device, a.preset, a.batch, a.gpu_steps)
    print_model_part(rows, device, a.preset, a.batch)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
