"""Key/value-cached beam search against full recomputation, timed in one run, outputs compared.

Default: the base-size model with random weights on CPU, batch 8, 5 beams, exactly 20 new tokens
(``min_new_tokens = max_new_tokens`` so every run does the same work), 2 threads. The target is a speed-up of at
least 3x. ``--preset tiny`` is a quick check of the script itself.

    python benchmarks/bench_generation.py                 # base, a few minutes on 2 cores
    python benchmarks/bench_generation.py --preset tiny   # seconds
    python benchmarks/bench_generation.py --device cuda --bf16   # fp32 and bf16 autocast on a GPU

Exit status 1 when the two searches return different tokens.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import torch

from vlpeft.model.config import PRESETS, preset
from vlpeft.model.generation import GenerationConfig, generate
from vlpeft.model.mplug import MPlug


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="base", choices=sorted(PRESETS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--beams", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=20)
    parser.add_argument("--prompt-len", type=int, default=10, help="text-encoder prompt length (a VQA question)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="also time both searches under bf16 autocast (what training's evaluation runs on CUDA)",
    )
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = preset(args.preset)
    device = torch.device(args.device)
    build_s, model = timed(lambda: MPlug(cfg).eval().to(device))
    images = torch.randn(args.batch, 3, cfg.image_size, cfg.image_size).to(device)
    prompt = torch.randint(1000 % cfg.vocab_size, cfg.vocab_size, (args.batch, args.prompt_len)).to(device)
    prompt_mask = torch.ones_like(prompt)
    n = args.new_tokens

    def search(use_cache: bool, bf16: bool = False) -> list[list[int]]:
        gen = GenerationConfig(num_beams=args.beams, min_new_tokens=n, max_new_tokens=n, use_cache=use_cache)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return generate(model, images, prompt, prompt_mask, gen)

    print(
        f"preset={args.preset} batch={args.batch} beams={args.beams} new_tokens={n} prompt_len={args.prompt_len} "
        f"threads={args.threads} torch={torch.__version__} cpu={platform.processor() or platform.machine()}"
        + (f" gpu={torch.cuda.get_device_name(device)}" if device.type == "cuda" else "")
    )
    print(f"model built in {build_s:.1f} s; image tokens {cfg.num_image_tokens}")
    search(True)  # warm-up: first-call allocations and kernel selection
    cached_s, cached = timed(lambda: search(True))
    print(f"cached     {cached_s:8.2f} s  ({cached_s / n * 1000:7.1f} ms per step)", flush=True)
    recompute_s, recomputed = timed(lambda: search(False))
    print(f"recompute  {recompute_s:8.2f} s  ({recompute_s / n * 1000:7.1f} ms per step)")
    equal = cached == recomputed
    lengths_ok = all(len(s) == n for s in cached)
    print(f"speed-up   {recompute_s / cached_s:8.2f} x (target >= 3)")
    print(f"outputs equal: {equal}; all outputs {n} tokens: {lengths_ok}")
    if args.bf16:
        # bf16 rounds differently with and without the cache (other matrix shapes): the tokens may part after a
        # near-tie, so their agreement is reported, not required.
        search(True, bf16=True)
        b_cached_s, b_cached = timed(lambda: search(True, bf16=True))
        b_recompute_s, b_recomputed = timed(lambda: search(False, bf16=True))
        agree = sum(x == y for a, b in zip(b_cached, b_recomputed) for x, y in zip(a, b)) / max(
            1, sum(len(a) for a in b_cached)
        )
        lengths_ok = lengths_ok and all(len(s) == n for s in b_cached)
        print(
            f"bf16 cached     {b_cached_s:8.2f} s  ({b_cached_s / n * 1000:7.1f} ms per step); "
            f"{cached_s / b_cached_s:.2f}x fp32's speed"
        )
        print(f"bf16 recompute  {b_recompute_s:8.2f} s  ({b_recompute_s / n * 1000:7.1f} ms per step)")
        print(
            f"bf16 tokens agreeing cached/recomputed: {agree:.3f}; agreeing with fp32 cached: "
            f"{sum(x == y for a, b in zip(b_cached, cached) for x, y in zip(a, b)) / max(1, n * len(cached)):.3f}"
        )
    if not equal:
        diff = [i for i, (a, b) in enumerate(zip(cached, recomputed)) if a != b]
        print(f"items that differ: {diff}", file=sys.stderr)
    return 0 if equal and lengths_ok else 1


if __name__ == "__main__":
    sys.exit(main())
