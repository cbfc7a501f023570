"""The visual-feature store: the frozen ViT run once over every image of the study, read by every run instead.

The paper's images are only resized (no augmentation) and a frozen ViT runs in eval mode (no attention dropout;
``MPlug.encode_image``), so its output per image is fixed: the ``[num_image_tokens, vision_width]`` states that
the fusion module and the decoder consume. :func:`build_store` computes them once and writes

- ``<store>.npy``: ``[N, T, D]`` in float16, bfloat16 (kept as its uint16 bit patterns: numpy has no bfloat16) or
  float32, memory-mapped by every run (the node's page cache serves it after a first read);
- ``<store>.npy.index.json``: the image paths (the records' ``image`` key: the COCO file name holds the image id)
  in row order, the images the image cache lists as bad, and the tag: the digest of the ViT weights
  (``vlpeft.model.slim.tensor_digest``), the image size and the feature shape.

:class:`FeatureStore` reads it with the interface of :class:`~vlpeft.data.images.ImageStore` (``get``, ``bad``,
``cache``), returning float32 features instead of pixels; the collator passes them on as the model's visual input
and the model skips its ViT. A run refuses a store whose tag does not match its own model (another checkpoint,
another image size: a stale store) and a run whose ViT trains never reads one.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from .images import ImageStore, to_tensor

log = logging.getLogger("vlpeft.features")
DTYPES = ("float16", "bfloat16", "float32")


def store_tag(mc, visual_digest: str) -> dict:
    """What a store must agree on with the model that reads it."""
    return {
        "visual_digest": visual_digest,
        "image_size": mc.image_size,
        "shape": [mc.num_image_tokens, mc.vision_width],
    }


def _encode(array: np.ndarray, dtype: str) -> np.ndarray:
    """float32 features -> the stored representation (bfloat16 as uint16 bit patterns, rounded to nearest even)."""
    if dtype == "float32":
        return array.astype(np.float32)
    if dtype == "float16":
        return array.astype(np.float16)
    return (
        torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        .to(torch.bfloat16)
        .view(torch.int16)
        .numpy()
        .view(np.uint16)
    )


def _decode(array: np.ndarray, dtype: str) -> np.ndarray:
    """The stored representation -> float32 (exact: every float16/bfloat16 value is a float32)."""
    if dtype == "bfloat16":
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array.astype(np.float32)


@torch.no_grad()
def build_store(
    visual_encoder: torch.nn.Module,
    images: ImageStore,
    paths: list[str],
    out: str | Path,
    tag: dict,
    dtype: str = "float16",
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> dict:
    """Run ``visual_encoder`` (eval mode, no gradients) over ``paths`` and write the store ``out`` (+ index).

    Images ``images.bad`` lists get a zero row and are listed as bad in the index too. On CUDA the ViT runs under
    the training's bf16 autocast, so the store holds what a run's ViT would compute there. Atomic.

    Returns:
        Counts: images, bad ones, bytes written.
    """
    if dtype not in DTYPES:
        raise ValueError(f"feature dtype must be one of {DTYPES}, got {dtype!r}")
    device = torch.device(device)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = sorted(set(paths))
    n_tokens, width = tag["shape"]
    stored = np.uint16 if dtype == "bfloat16" else np.dtype(dtype)
    tmp = out.with_name(out.stem + ".tmp.npy")
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=stored, shape=(len(paths), n_tokens, width))
    was_training = visual_encoder.training
    visual_encoder.eval()
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    )
    good = [i for i, p in enumerate(paths) if p not in images.bad]
    t0 = last = time.time()
    for start in range(0, len(good), batch_size):
        rows = good[start : start + batch_size]
        pixels = to_tensor(np.stack([images.get(paths[i]) for i in rows])).to(device)
        with autocast:
            feats = visual_encoder.forward_features(pixels)
        arr[rows] = _encode(feats.float().cpu().numpy(), dtype)
        if time.time() - last > 10:
            last = time.time()
            log.info(
                "features of %d/%d images (%.0f img/s)",
                start + len(rows),
                len(good),
                (start + len(rows)) / (last - t0),
            )
    visual_encoder.train(was_training)
    arr.flush()
    del arr
    tmp.replace(out)
    bad = [p for p in paths if p in images.bad]
    index = {"tag": tag, "dtype": dtype, "paths": paths, "bad": bad}
    Path(f"{out}.index.json").write_text(json.dumps(index))
    return {"images": len(paths), "bad": len(bad), "bytes": out.stat().st_size}


class FeatureStore:
    """Stored ViT features by image path; the interface of ``ImageStore`` (``get``, ``bad``, ``cache``).

    Args:
        path: The store (``.npy``; its index beside it).
        tag: The reading model's :func:`store_tag`; a store with another tag is refused. None skips the check
            (call :meth:`check` once the model is known).
    """

    def __init__(self, path: str | Path, tag: dict | None = None) -> None:
        self.cache = str(path)
        index_path = Path(f"{path}.index.json")
        if not Path(path).is_file() or not index_path.is_file():
            raise FileNotFoundError(f"feature store not found: {path} (and its index)")
        index = json.loads(index_path.read_text())
        self.tag, self.dtype = index["tag"], index["dtype"]
        self.row = {p: i for i, p in enumerate(index["paths"])}
        self.bad = frozenset(index["bad"])
        self.array = np.load(path, mmap_mode="r")
        if tag is not None:
            self.check(tag)

    def check(self, tag: dict) -> None:
        """Refuse to serve a model the store was not computed for (a stale store)."""
        diff = {k: (self.tag.get(k), v) for k, v in tag.items() if self.tag.get(k) != v}
        if diff:
            raise ValueError(
                f"feature store {self.cache} is stale for this model: "
                + "; ".join(f"{k}: store {a!r}, model {b!r}" for k, (a, b) in diff.items())
                + ". Rebuild it (rule extract_features) or turn data.feature_store off."
            )

    def get(self, rel: str) -> np.ndarray:
        """``[T, D]`` float32 features; an image listed as bad is an ``OSError``, never its zero row."""
        if rel not in self.row:
            raise KeyError(f"image {rel} is not in the feature store {self.cache}")
        if rel in self.bad:
            raise OSError(f"image {rel} is listed as undecodable in the feature store {self.cache}")
        return _decode(self.array[self.row[rel]], self.dtype)


def visual_digest(init_weights: str | None, init_format: str, model: torch.nn.Module) -> str:
    """The digest of the ViT weights ``model`` starts from: the initial weights file's recorded digest when it has
    one (the slim checkpoint, the pre-trained model), else computed from the model's own tensors."""
    from ..model.slim import read_metadata, tensor_digest

    if init_format == "vlpeft" and init_weights:
        digest = read_metadata(init_weights).get("visual_digest")
        if digest:
            return digest
    return tensor_digest(model.state_dict())


def extract_for_study(spec: dict, record_files: list[str | Path], out: str | Path) -> dict:
    """Rule ``extract_features``: the store of every image the record files name, by the model ``spec`` describes.

    ``spec`` (``vlpeft.grid.resolve_features``): model preset and overrides, initial weights and their format,
    vocabulary, image root and cache, seed, threads, device, and the store's dtype and batch size.
    """
    from ..grid import FEATURE_KEYS
    from ..methods.registry import REFERENCE
    from ..model.config import for_tokenizer
    from ..runconfig import RunConfig
    from ..tasks import COCO
    from ..tokenizer import Tokenizer
    from ..train import build_model
    from .prepare import read_jsonl

    # The model as a run builds it (build_model): the run-only fields are placeholders.
    cfg = RunConfig.from_dict(
        {
            "run_id": "features",
            "task": COCO.name,
            "method": REFERENCE,
            "method_options": {},
            "data_ratio": 1.0,
            "records": {},
            "subset": None,
            "lr": 1.0,
            "schedule": {"kind": "steps", "steps": 1},
            "out_dir": str(Path(out).parent),
            **{k: spec[k] for k in FEATURE_KEYS},
        }
    )
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    from ..devices import pick

    device = pick(cfg.device)
    tok = Tokenizer(cfg.vocab)
    torch.manual_seed(cfg.seed)  # as Trainer.setup: the same (random) initialisation where there are no weights
    model = build_model(cfg, tok)
    mc = for_tokenizer(cfg.model_preset, cfg.model_overrides, tok)
    tag = store_tag(mc, visual_digest(cfg.init_weights, cfg.init_format, model))
    images = ImageStore(cfg.image_root, mc.image_size, cfg.image_cache)
    paths = sorted({r["image"] for f in record_files for r in read_jsonl(f)})
    vit = model.visual_encoder.to(device)
    return build_store(vit, images, paths, out, tag, spec["dtype"], int(spec["batch_size"]), device)
