"""Training-step time and peak memory of each PEFT method relative to full fine-tuning (base model, CPU).

    python benchmarks/bench_methods.py [--steps 5] [--warmup 2] [--json out.json]

Setting: mPLUG-base with random weights, batch 2 (256 px images, 6 prompt tokens, 20 target tokens), 2 CPU
threads, train mode. Full fine-tuning trains everything; each PEFT method runs at a mid size (prompt/prefix 16,
LoRA rank 8, adapters 64) with the ViT frozen (the default targets) and no classifier.

- step time: forward + backward + AdamW step + zero_grad, the median over ``--steps`` steps after ``--warmup``
  warm-up steps, as wall-clock time (the target's measure) and as the process's CPU time. On a shared machine the
  wall time of a multi-threaded step swings with other load (threads wait for descheduled peers); the CPU time
  of a single-threaded run (``--threads 1``) is the steadier measure of the work a method costs.
- peak memory: every method runs in its own subprocess. After the model is built, the method attached and the
  optimizer made, the process's peak-RSS counter is reset (``/proc/self/clear_refs`` = 5, which resets VmHWM and
  thus ``getrusage(RUSAGE_SELF).ru_maxrss``) and the current RSS taken as the baseline; the figure compared is
  the peak RSS during the training steps minus that baseline: gradients, optimizer states, activations and
  allocator growth, not the (shared) model weights. The total peak RSS is printed too.

- with store: each PEFT method's step again with the ViT's output given as input (what a run reading the
  visual-feature store computes: no ViT forward), as a ratio to the same method's step with images. Full
  fine-tuning trains the ViT and never reads the store.

Targets (from the issues): step time <= 0.45x and peak memory <= 0.5x full fine-tuning's; with the store, step
time <= 0.6x the same method's without it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time

TIME_TARGET = 0.45
MEMORY_TARGET = 0.5
STORE_TARGET = 0.6

# (label, method, options)
CASES: list[tuple[str, str, dict]] = [
    ("full", "full", {}),
    ("prompt-16", "prompt", {"size": 16}),
    ("prefix-16", "prefix", {"size": 16}),
    ("lora-8", "lora", {"size": 8}),
    ("serial_adapter-64", "serial_adapter", {"size": 64}),
    ("parallel_adapter-64", "parallel_adapter", {"size": 64}),
]


def current_rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset the peak-RSS counter (Linux >= 4.0); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def worker(method_name: str, options: dict, steps: int, warmup: int, threads: int, preset_name: str = "base") -> dict:
    """Build, attach, train ``warmup + steps`` steps; return times and memory (runs in a subprocess)."""
    import torch

    from vlpeft.methods.base import build_method, count_trainable, trainable_parameters
    from vlpeft.model.config import preset
    from vlpeft.model.mplug import MPlug

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    mc = preset(preset_name)
    model = MPlug(mc)
    build_method(method_name, **options).attach(model)
    model.train()
    opt = torch.optim.AdamW(trainable_parameters(model).values(), lr=1e-5, weight_decay=0.05)

    g = torch.Generator().manual_seed(0)
    batch = {
        "images": torch.randn(2, 3, mc.image_size, mc.image_size, generator=g),
        "prompt_ids": torch.randint(1000 % mc.vocab_size, mc.vocab_size, (2, 6), generator=g),
        "prompt_mask": torch.ones(2, 6, dtype=torch.long),
        "target_ids": torch.randint(1000 % mc.vocab_size, mc.vocab_size, (2, 20), generator=g),
        "target_mask": torch.ones(2, 20, dtype=torch.long),
    }
    gc.collect()
    baseline = current_rss_kib()
    reset = reset_peak_rss()
    times, cpu_times = [], []
    for _ in range(warmup + steps):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = model(**batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    store_times, store_cpu = [], []
    if not any(p.requires_grad for p in model.visual_encoder.parameters()):
        with torch.no_grad():
            features = model.encode_image(batch["images"])  # what the store would hold for these images
        with_store = {**batch, "images": features}
        for _ in range(warmup + steps):
            t0, c0 = time.perf_counter(), time.process_time()
            model(**with_store).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            store_times.append(time.perf_counter() - t0)
            store_cpu.append(time.process_time() - c0)
    return {
        "store_step_s": statistics.median(store_times[warmup:]) if store_times else None,
        "store_cpu_s": statistics.median(store_cpu[warmup:]) if store_cpu else None,
        "trainable": count_trainable(model),
        "step_s": statistics.median(times[warmup:]),
        "step_times_s": times,
        "cpu_s": statistics.median(cpu_times[warmup:]),
        "cpu_times_s": cpu_times,
        "threads": threads,
        "baseline_rss_mib": baseline / 1024,
        "peak_rss_mib": peak / 1024,
        "peak_delta_mib": (peak - baseline) / 1024,
        "peak_reset": reset,
        "loss": float(loss),
    }


def run_case(name: str, options: dict, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        json.dumps([name, options]),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--threads",
        str(args.threads),
        "--preset",
        args.preset,
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _verdict(label: str, ratio: float, target: float) -> str:
    return "" if label == "full" else ("PASS" if ratio <= target else "FAIL")


def report(results: dict[str, dict]) -> str:
    """One line per method: step time (wall, CPU), peak memory above the baseline and in total, each x full."""
    full = results["full"]
    head = (
        f"{'method':<20} {'trainable':>12} {'wall s':>7} {'x full':>6} {'':>4} {'cpu s':>7} {'x full':>6} {'':>4} "
        f"{'peak+MiB':>8} {'x full':>6} {'':>4} {'peakMiB':>7} {'x full':>6}"
    )
    lines = [f"targets: step time <= {TIME_TARGET}x, peak memory (above baseline) <= {MEMORY_TARGET}x full", head]
    for label, r in results.items():
        t = r["step_s"] / full["step_s"]
        c = r["cpu_s"] / full["cpu_s"]
        m = r["peak_delta_mib"] / full["peak_delta_mib"]
        total = r["peak_rss_mib"] / full["peak_rss_mib"]
        lines.append(
            f"{label:<20} {r['trainable']:>12,} {r['step_s']:>7.2f} {t:>6.3f} {_verdict(label, t, TIME_TARGET):>4} "
            f"{r['cpu_s']:>7.2f} {c:>6.3f} {_verdict(label, c, TIME_TARGET):>4} "
            f"{r['peak_delta_mib']:>8.0f} {m:>6.3f} {_verdict(label, m, MEMORY_TARGET):>4} "
            f"{r['peak_rss_mib']:>7.0f} {total:>6.3f}"
        )
    lines.append(f"with the feature store (target: step time <= {STORE_TARGET}x the same method's without it)")
    lines.append(
        f"{'method':<20} {'wall s':>7} {'store s':>7} {'x':>6} {'':>4} {'cpu s':>7} {'store s':>7} {'x':>6} {'':>4}"
    )
    for label, r in results.items():
        if r.get("store_step_s") is None:
            continue
        t, c = r["store_step_s"] / r["step_s"], r["store_cpu_s"] / r["cpu_s"]
        lines.append(
            f"{label:<20} {r['step_s']:>7.2f} {r['store_step_s']:>7.2f} {t:>6.3f} "
            f"{'PASS' if t <= STORE_TARGET else 'FAIL':>4} {r['cpu_s']:>7.2f} {r['store_cpu_s']:>7.2f} "
            f"{c:>6.3f} {'PASS' if c <= STORE_TARGET else 'FAIL':>4}"
        )
    lines.append(f"threads: {full['threads']}; load average at the end: {os.getloadavg()[0]:.1f}")
    if not all(r["peak_reset"] for r in results.values()):
        lines.append("warning: the peak-RSS counter could not be reset; peaks include model building")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--preset", default="base", help="model size (`tiny` checks the script itself)")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        name, options = json.loads(args.worker)
        print(json.dumps(worker(name, options, args.steps, args.warmup, args.threads, args.preset)))
        return 0

    results: dict[str, dict] = {}
    for label, name, options in CASES:
        t0 = time.perf_counter()
        results[label] = run_case(name, options, args)
        print(
            f"{label}: step {results[label]['step_s']:.2f} s, peak +{results[label]['peak_delta_mib']:.0f} MiB "
            f"({time.perf_counter() - t0:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
    print(report(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
