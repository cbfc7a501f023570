"""Images/s of the training DataLoader on synthetic 640x480 JPEGs: decoding originals vs the pre-resized cache.

    python benchmarks/bench_dataloader.py [--images 256] [--size 256] [--workers 2] [--batch 32]

Prints both rates and their ratio, measured in one run on this machine.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import DataLoader

from vlpeft.data.datasets import Collator, TrainSet
from vlpeft.data.images import ImageStore, build_cache
from vlpeft.tokenizer import Tokenizer, train_vocab


def make_jpegs(root: Path, n: int) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        # Smooth noise compresses like a photo rather than like white noise.
        small = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((640, 480), Image.BILINEAR)
        rel = f"train2014/img_{i:06d}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        img.save(root / rel, quality=90)
        paths.append(rel)
    return paths


def rate(store: ImageStore, records: list[dict], tok: Tokenizer, workers: int, batch: int, epochs: int) -> float:
    data = TrainSet("vqa", records, list(range(len(records))), store, {})
    loader = DataLoader(
        data,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        collate_fn=Collator(tok, 40, 10),
        persistent_workers=workers > 0,
    )
    next(iter(loader))  # start-up (workers, first decode) is not throughput
    t0, n = time.time(), 0
    for _ in range(epochs):
        for b in loader:
            n += b["images"].shape[0]
    return n / (time.time() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--epochs", type=int, default=2)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        paths = make_jpegs(root / "images", a.images)
        records = [{"image": rel, "question": "what is it?", "answer": random.choice(["yes", "no"])} for rel in paths]
        tok = Tokenizer(train_vocab(["what is it? yes no"], root / "vocab.txt"))
        t0 = time.time()
        build_cache(root / "images", paths, a.size, root / "cache.npy")
        cache_s = time.time() - t0
        jpeg = rate(ImageStore(root / "images", a.size), records, tok, a.workers, a.batch, a.epochs)
        cached = rate(
            ImageStore(root / "images", a.size, root / "cache.npy"), records, tok, a.workers, a.batch, a.epochs
        )
    print(f"{a.images} synthetic 640x480 JPEGs -> {a.size}px, batch {a.batch}, {a.workers} workers")
    print(f"  from JPEG:  {jpeg:8.1f} images/s")
    print(
        f"  from cache: {cached:8.1f} images/s   (cache built once in {cache_s:.1f}s, {a.images / cache_s:.1f} img/s)"
    )
    print(f"  ratio cache/JPEG: {cached / jpeg:.1f}x")


if __name__ == "__main__":
    main()
