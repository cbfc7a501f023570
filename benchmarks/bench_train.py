"""Training throughput. Prints numbers measured in one run.

CPU (always): the tiny model, 1 process vs `torchrun --nproc_per_node 2` (gloo) with the same global batch:
steps/s of each, their ratio, and whether both end with the same trainable weights (the equivalence).
GPU (when CUDA is present): the base model at 256 px, bf16 autocast, for full fine-tuning and each PEFT method:
samples/s, peak memory and model FLOP utilisation (6 x trainable-path FLOPs approximated by 2 x params x tokens
forward + 4 x params x tokens backward through the unfrozen path; stated as an estimate).

    python benchmarks/bench_train.py [--steps 30] [--gpu-steps 10]
"""

from __future__ import annotations

import argparse
import json
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
            proc = subprocess.run([str(Path(sys.executable).parent / "torchrun"), "--standalone",
                               "--nproc_per_node", str(nproc), "-m", "vlpeft.train",
                                   "--config", str(path)], capture_output=True, text=True, env=env)
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


def gpu_part(steps: int) -> None:
    from vlpeft.methods.base import build_method, count_trainable
    from vlpeft.model.config import preset
    from vlpeft.model.mplug import MPlug

    dev = torch.device("cuda")
    cfg = preset("base")
    batch, n_prompt, n_target = 64, 8, 20
    settings = [("full", {}), ("prompt", {"size": 16}), ("prefix", {"size": 16}), ("lora", {"size": 8}),
                ("serial_adapter", {"size": 64}), ("parallel_adapter", {"size": 64})]
    peak_tflops = float(os.environ.get("GPU_PEAK_TFLOPS", "989"))  # H100/H200 dense bf16
    print(f"GPU {torch.cuda.get_device_name(0)}: base model, 256 px, batch {batch}, bf16 autocast")
    for name, opts in settings:
        torch.manual_seed(0)
        model = MPlug(cfg).to(dev)
        build_method(name, **opts).attach(model)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        images = torch.randn(batch, 3, 256, 256, device=dev)
        pid = torch.randint(1000, 30000, (batch, n_prompt), device=dev)
        tid = torch.randint(1000, 30000, (batch, n_target), device=dev)
        ones_p, ones_t = torch.ones_like(pid), torch.ones_like(tid)
        torch.cuda.reset_peak_memory_stats()
        for i in range(steps + 3):
            if i == 3:
                torch.cuda.synchronize()
                t0 = time.time()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(images, pid, ones_p, tid, ones_t)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        dt = (time.time() - t0) / steps
        total = sum(p.numel() for p in model.parameters())
        tokens = batch * (cfg.num_image_tokens + n_prompt + n_target)
        flops = 6 * total * tokens if name == "full" else 2 * total * tokens + 4 * (total - 86e6) * tokens
        print(f"  {name:<17} {batch / dt:8.1f} samples/s  peak {torch.cuda.max_memory_allocated() / 2**30:6.1f} GiB"
              f"  trainable {count_trainable(model):>11,}  MFU~{flops / dt / (peak_tflops * 1e12):.1%}")
        del model, opt
        torch.cuda.empty_cache()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--gpu-steps", type=int, default=10)
    a = p.parse_args()
    cpu_part(a.steps)
    if torch.cuda.is_available():
        gpu_part(a.gpu_steps)
    else:
        print("GPU part skipped: no CUDA device")


if __name__ == "__main__":
    main()
