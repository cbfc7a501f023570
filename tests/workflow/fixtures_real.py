"""Tiny stand-ins for the real downloads (COCO zips, Karpathy splits, VQAv2 zips, vocab.txt, mplug_base.pth),
packed in the upstream layouts (served by tests/conftest.py's Range-capable HTTP server).

Used by test_download_path.py to run the workflow's real data path (``data.source: download``) offline.
"""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

# The VQAv2 archives and the JSON file each one holds (as upstream).
VQA_ARCHIVES = {
    "v2_Questions_Train_mscoco.zip": "v2_OpenEnded_mscoco_train2014_questions.json",
    "v2_Questions_Val_mscoco.zip": "v2_OpenEnded_mscoco_val2014_questions.json",
    "v2_Annotations_Train_mscoco.zip": "v2_mscoco_train2014_annotations.json",
    "v2_Annotations_Val_mscoco.zip": "v2_mscoco_val2014_annotations.json",
}
QUESTIONS_PER_IMAGE = 3  # vlpeft.data.synthetic.questions


@dataclass
class Fixture:
    """What was packed: the served folder, each file's size/md5/sha256, the image counts, the split sizes."""

    serve_dir: Path
    files: dict[str, dict] = field(default_factory=dict)  # name -> {"size", "md5", "sha256"}
    image_counts: dict[str, int] = field(default_factory=dict)  # "train2014"/"val2014" -> number of JPEGs
    expected_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    vocab_size: int = 0


def _digests(path: Path) -> dict:
    data = path.read_bytes()
    return {"size": len(data), "md5": hashlib.md5(data).hexdigest(), "sha256": hashlib.sha256(data).hexdigest()}


def _zip(out: Path, members: dict[str, Path]) -> None:
    """``members``: archive name -> source file. JPEGs are stored, JSON deflated (as upstream)."""
    with zipfile.ZipFile(out, "w") as z:
        for name, src in members.items():
            method = zipfile.ZIP_STORED if name.endswith(".jpg") else zipfile.ZIP_DEFLATED
            z.write(src, name, compress_type=method)


def build(root: Path, n_train: int = 24, n_val: int = 4, n_test: int = 4, seed: int = 0) -> Fixture:
    """Generate a synthetic study under ``root/raw`` and pack it like the real downloads into ``root/serve``."""
    import torch

    from vlpeft.data import synthetic
    from vlpeft.model.config import preset
    from vlpeft.files import sidecar_path
    from vlpeft.testing import make_synthetic_official_checkpoint
    from vlpeft.tokenizer import Tokenizer, train_vocab

    raw, serve = root / "raw", root / "serve"
    serve.mkdir(parents=True)
    synthetic.generate(raw, n_train, n_val, n_test, seed=seed)
    fx = Fixture(serve_dir=serve)

    # COCO 2014 images: train2014.zip holds train2014/COCO_train2014_*.jpg, val2014.zip likewise.
    for folder in ("train2014", "val2014"):
        jpgs = sorted((raw / "images" / folder).glob("*.jpg"))
        assert jpgs, f"synthetic study wrote no {folder} images"
        _zip(serve / f"{folder}.zip", {f"{folder}/{p.name}": p for p in jpgs})
        fx.image_counts[folder] = len(jpgs)

    # Karpathy splits: caption_datasets.zip with dataset_coco.json next to decoys of the other datasets.
    decoy = root / "dataset_flickr8k.json"
    decoy.write_text('{"images": [], "dataset": "flickr8k"}')
    _zip(
        serve / "caption_datasets.zip",
        {
            "dataset_flickr8k.json": decoy,
            "dataset_coco.json": raw / "dataset_coco.json",
            "dataset_flickr30k.json": decoy,
        },
    )

    for archive, member in VQA_ARCHIVES.items():
        _zip(serve / archive, {member: raw / member})

    # bert-base-uncased's vocab.txt, here a WordPiece vocabulary of the synthetic texts (same format).
    train_vocab(synthetic.corpus(raw), serve / "vocab.txt")
    sidecar_path(serve / "vocab.txt").unlink()  # (a download server has no digest sidecar)
    fx.vocab_size = Tokenizer(serve / "vocab.txt").vocab_size

    # mplug_base.pth: the official pre-training key layout (raw names, CLIP text tower, momentum copies, queues) at
    # the tiny preset's sizes with the vocabulary's size. A small queue keeps the file small; load_official ignores it.
    cfg = preset("tiny", vocab_size=fx.vocab_size)
    torch.save({"model": make_synthetic_official_checkpoint(cfg, queue_size=16, seed=seed)}, serve / "mplug_base.pth")

    for path in sorted(serve.iterdir()):
        fx.files[path.name] = _digests(path)
    fx.expected_counts = {
        "coco": {"train": n_train, "val": n_val, "test": n_test},
        "vqa": {
            "train": QUESTIONS_PER_IMAGE * n_train,
            "val": QUESTIONS_PER_IMAGE * n_val,
            "test": QUESTIONS_PER_IMAGE * n_test,
        },
    }
    shutil.rmtree(raw / "images")  # only the archives are needed from here on
    return fx
