"""Image pipeline: decode, RGB, bicubic resize to the model's size, CLIP normalisation; optional uint8 cache.

The cache is one ``.npy`` array ``[N, S, S, 3]`` (uint8, already resized) plus an index of image paths, built in
one pass and shared by every run, so training reads memory instead of decoding JPEGs.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..files import CorruptFileError, read_json

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
log = logging.getLogger("vlpeft.images")


def load_image(path: str | Path, size: int) -> np.ndarray:
    """``[S, S, 3]`` uint8; errors name the file."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.uint8)
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except OSError as e:
        raise OSError(f"cannot decode image {path}: {e}") from None


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 ``[..., S, S, 3]`` -> normalised float ``[..., 3, S, S]``, on the tensor's device.

    Training sends the uint8 pixels to the GPU (a quarter of the bytes of float32) and normalises them there; on the
    CPU these are the operations, in the order, the loaders always used, so CPU results are unchanged bit for bit.
    """
    x = pixels.float().div_(255.0)
    x = x.movedim(-1, -3)
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(3, 1, 1)
    return (x - mean) / std


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[..., S, S, 3]`` -> normalised float ``[..., 3, S, S]``."""
    return normalise(torch.from_numpy(np.ascontiguousarray(images)))


def build_cache(
    image_root: str | Path, rel_paths: list[str], size: int, out_npy: str | Path, skip_bad: bool = False
) -> dict:
    """Resize every image once into ``out_npy`` (+ ``<out>.index.json``). Returns counts."""
    image_root, out_npy = Path(image_root), Path(out_npy)
    paths = sorted(set(rel_paths))
    out_npy.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_npy.with_name(out_npy.stem + ".tmp.npy")
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3))
    bad: list[str] = []
    t0 = last = time.time()
    for i, rel in enumerate(paths):
        try:
            arr[i] = load_image(image_root / rel, size)
        except OSError:
            if not skip_bad:
                raise
            bad.append(rel)
        if time.time() - last > 10:
            last = time.time()
            log.info("cached %d/%d images (%.0f img/s)", i + 1, len(paths), (i + 1) / (last - t0))
    arr.flush()
    del arr
    tmp.replace(out_npy)
    index = {"size": size, "paths": paths, "bad": bad}
    Path(str(out_npy) + ".index.json").write_text(json.dumps(index))
    return {"images": len(paths), "bad": len(bad)}


class ImageStore:
    """Images by relative path, from the cache when given, else decoded from ``image_root``.

    ``bad`` holds the paths the cache lists as undecodable (built with ``skip_bad``); it is empty without a cache.
    """

    def __init__(self, image_root: str | Path, size: int, cache: str | Path | None = None) -> None:
        self.root, self.size, self.cache = Path(image_root), size, cache
        self.array = None
        self.row: dict[str, int] = {}
        self.bad: frozenset[str] = frozenset()
        if cache:
            index = read_json(
                str(cache) + ".index.json", "delete the image cache and its index and rerun cache_images"
            )
            if index["size"] != size:
                raise ValueError(f"image cache {cache} holds {index['size']} px images, the model wants {size} px")
            try:
                self.array = np.load(cache, mmap_mode="r")
            except (ValueError, OSError) as e:  # truncated or not a .npy file
                raise CorruptFileError(
                    f"image cache {cache} cannot be read ({e}): delete it and its index and rerun cache_images"
                ) from None
            self.row = {p: i for i, p in enumerate(index["paths"])}
            self.bad = frozenset(index["bad"])

    def get(self, rel: str) -> np.ndarray:
        """``[S, S, 3]`` uint8; an image the cache lists as bad is an ``OSError``, never its blank row."""
        if self.array is not None:
            if rel not in self.row:
                raise KeyError(f"image {rel} is not in the image cache")
            if rel in self.bad:
                raise OSError(f"image {rel} is listed as undecodable in the image cache {self.cache}")
            return self.array[self.row[rel]]
        return load_image(self.root / rel, self.size)
