"""Shared fixtures: a tiny synthetic study on disk, and run configs over it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def one_thread(request):
    """Tiny tensors gain nothing from intra-op threads, and on a busy 2-core machine OpenMP's spinning threads make
    them 5-10x slower; tests of the base-size model (marked slow) keep the default."""
    if request.node.get_closest_marker("slow") is not None:
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> Path:
    """Synthetic raw data, prepared records, subsets, vocabulary and a 64 px image cache."""
    from vlpeft.data import stages, synthetic
    from vlpeft.tokenizer import train_vocab

    root = tmp_path_factory.mktemp("study")
    raw = root / "raw"
    synthetic.generate(raw, 24, 4, 4, seed=0)
    stages.prepare_captions(raw / "dataset_coco.json", {s: root / f"prep/coco/{s}.jsonl" for s in ("train", "val", "test")})
    folders = ("train2014", "val2014")
    stages.prepare_vqa(raw / "dataset_coco.json", [raw / f"v2_OpenEnded_mscoco_{f}_questions.json" for f in folders],
                       [raw / f"v2_mscoco_{f}_annotations.json" for f in folders],
                       {s: root / f"prep/vqa/{s}.jsonl" for s in ("train", "val", "test")})
    for task in ("coco", "vqa"):
        stages.make_subset(task, root / f"prep/{task}/train.jsonl", 0.5, 0, root / f"subsets/{task}/ratio0.5.json")
    stages.cache_images(raw / "images", [root / f"prep/coco/{s}.jsonl" for s in ("train", "val", "test")], 64,
                        root / "images_64.npy")
    train_vocab(synthetic.corpus(raw), root / "vocab.txt")
    return root


def make_run_config(study: Path, out_dir: Path, task: str = "coco", method: str = "lora", **overrides) -> dict:
    """A tiny run's resolved config as a dict (see vlpeft.runconfig.RunConfig)."""
    d = {
        "run_id": f"test/{task}/{method}",
        "task": task,
        "method": method,
        "method_options": {} if method == "full" else {"size": 2},
        "data_ratio": 0.5,
        "seed": 0,
        "records": {s: str(study / f"prep/{task}/{s}.jsonl") for s in ("train", "val", "test")},
        "subset": str(study / f"subsets/{task}/ratio0.5.json"),
        "image_root": str(study / "raw/images"),
        "image_cache": str(study / "images_64.npy"),
        "vocab": str(study / "vocab.txt"),
        "model_preset": "tiny",
        "model_overrides": {},
        "init_weights": None,
        "init_format": "none",
        "lr": 1e-3,
        "out_dir": str(out_dir),
        "total_batch_size": 8,
        "per_device_batch_size": 4,
        "schedule": {"kind": "steps", "steps": 6, "warmup_steps": 2},
        "eval": {"interval": 3, "splits": ["val", "test"], "num_beams": 2, "min_new_tokens": 1, "max_new_tokens": 4,
                 "batch_size": 8, "metrics": ["CIDEr"] if task == "coco" else []},
        "log_every": 1,
        "threads": 1,
        "device": "cpu",  # CPU tests stay on the CPU (and bit-exact) on a machine with a GPU too
    }
    d.update(overrides)
    return d


def signal_after(trainer, step: int, signal_name: str = "SIGTERM") -> None:
    """Make ``trainer`` behave as if ``signal_name`` arrived right after optimizer step ``step``."""
    train_step = trainer.train_step

    def wrapped():
        loss = train_step()
        if trainer.step == step:
            trainer.stop_signal = signal_name
        return loss

    trainer.train_step = wrapped


def with_provenance(runs, study: str = "test", data_source: str = "synthetic", commit: str = "0" * 40):
    """A hand-made runs table with the provenance columns aggregation writes (vlpeft.provenance), consistent."""
    import hashlib

    from vlpeft.provenance import study_digest

    runs = runs.copy()
    runs["config_digest"] = [hashlib.sha256(str(i).encode()).hexdigest()[:16] for i in runs["run_id"]]
    runs["study"], runs["data_source"], runs["commit"] = study, data_source, commit
    runs["study_digest"] = study_digest(study, data_source, dict(zip(runs["run_id"], runs["config_digest"])))
    return runs
