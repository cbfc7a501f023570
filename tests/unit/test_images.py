"""Image pipeline: decode any mode to RGB at S x S, CLIP normalisation, the uint8 cache, bad images and clear
errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlpeft.data import prepare, stages
from vlpeft.data.datasets import TrainSet, drop_bad_records, drop_bad_train_items
from vlpeft.data.images import CLIP_MEAN, CLIP_STD, ImageStore, build_cache, load_image, to_tensor

S = 24


def _save(path: Path, array: np.ndarray, mode: str | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path, **kw)
    return path


def _gradient(h: int = 30, w: int = 40) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 90)], -1).astype(np.uint8)


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    _save(root / "train2014" / "a.jpg", _gradient(), quality=95)
    _save(root / "train2014" / "b.png", _gradient()[::-1].copy())
    _save(root / "val2014" / "grey.jpg", np.full((20, 50), 128, np.uint8))
    _save(root / "val2014" / "c.png", np.full((10, 10, 3), (200, 10, 30), np.uint8))
    return root


PATHS = ["train2014/a.jpg", "train2014/b.png", "val2014/grey.jpg", "val2014/c.png"]


# -- decoding ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "suffix"),
    [
        ("RGB", ".jpg"),
        ("RGB", ".png"),
        ("L", ".jpg"),
        ("L", ".png"),
        ("RGBA", ".png"),
        ("P", ".png"),
        ("CMYK", ".jpg"),
    ],
)
def test_load_image_gives_rgb_uint8_of_the_model_size(tmp_path: Path, mode: str, suffix: str) -> None:
    src = Image.new("RGB", (37, 23), (10, 200, 60))
    path = tmp_path / f"img{suffix}"
    img = src.quantize() if mode == "P" else src.convert(mode)  # (quantize: a palette without dithering)
    img.save(path)
    out = load_image(path, S)
    assert out.shape == (S, S, 3) and out.dtype == np.uint8
    expected = np.asarray(img.convert("RGB"))[0, 0].astype(int)
    assert np.abs(out.astype(int) - expected).max() <= 3  # a flat colour survives resizing (JPEG: nearly)


def test_grayscale_becomes_three_equal_channels(image_root: Path) -> None:
    out = load_image(image_root / "val2014" / "grey.jpg", S)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert abs(int(out.mean()) - 128) <= 2


def test_rgba_drops_alpha_keeps_colour(tmp_path: Path) -> None:
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[...] = (250, 5, 5, 40)  # nearly transparent red: convert("RGB") keeps the colour
    out = load_image(_save(tmp_path / "x.png", rgba, "RGBA"), S)
    assert out.shape == (S, S, 3)
    assert (out == (250, 5, 5)).all()


def test_load_image_matches_a_bicubic_resize(image_root: Path) -> None:
    with Image.open(image_root / "train2014" / "b.png") as im:
        expected = np.asarray(im.convert("RGB").resize((S, S), Image.BICUBIC))
    out = load_image(image_root / "train2014" / "b.png", S)
    assert np.array_equal(out, expected)
    assert out[0, 0, 0] < 30 and out[0, -1, 0] > 225  # left-to-right red gradient kept, not transposed
    assert out[0, 0, 1] > 225 and out[-1, 0, 1] < 30  # top-to-bottom green flipped, as saved


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\xff\xd8\xff\xe0" + b"\x00" * 20])
def test_corrupt_file_is_an_oserror_naming_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "COCO_train2014_000000000042.jpg"
    path.write_bytes(content)
    with pytest.raises(OSError, match="cannot decode image .*COCO_train2014_000000000042.jpg"):
        load_image(path, S)


def test_truncated_jpeg_is_an_oserror_naming_the_file(image_root: Path, tmp_path: Path) -> None:
    data = (image_root / "train2014" / "a.jpg").read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match=f"cannot decode image {path}"):
        load_image(path, S)


def test_missing_file_is_a_file_not_found_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "x.jpg"
    with pytest.raises(FileNotFoundError, match=f"image not found: {path}"):
        load_image(path, S)


# -- normalisation -------------------------------------------------------------------------------------------------
def test_to_tensor_applies_clip_mean_and_std() -> None:
    img = np.zeros((2, 3, 3), np.uint8)
    img[1, 2] = (255, 0, 128)
    x = to_tensor(img)
    assert x.shape == (3, 2, 3) and x.dtype == torch.float32
    # By hand: (v / 255 - mean) / std per channel.
    assert x[0, 1, 2].item() == pytest.approx((1.0 - 0.48145466) / 0.26862954, rel=1e-6)  # 1.930
    assert x[1, 1, 2].item() == pytest.approx((0.0 - 0.4578275) / 0.26130258, rel=1e-6)  # -1.752
    assert x[2, 1, 2].item() == pytest.approx((128 / 255 - 0.40821073) / 0.27577711, rel=1e-6)  # 0.340
    assert x[0, 1, 2].item() == pytest.approx(1.9303, abs=1e-4)
    assert x[0, 0, 0].item() == pytest.approx(-CLIP_MEAN[0] / CLIP_STD[0], rel=1e-6)


def test_to_tensor_batches_and_leaves_the_input_alone() -> None:
    batch = np.random.default_rng(0).integers(0, 256, (4, S, S, 3), dtype=np.uint8)
    keep = batch.copy()
    x = to_tensor(batch)
    assert x.shape == (4, 3, S, S)
    assert np.array_equal(batch, keep)
    assert torch.allclose(x[2], to_tensor(batch[2]))
    back = (x * torch.tensor(CLIP_STD).view(3, 1, 1) + torch.tensor(CLIP_MEAN).view(3, 1, 1)) * 255
    assert torch.allclose(back.permute(0, 2, 3, 1), torch.from_numpy(batch).float(), atol=1e-3)


# -- cache ---------------------------------------------------------------------------------------------------------
def test_cache_round_trip_equals_direct_decoding(image_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "cache" / f"images_{S}.npy"
    counts = build_cache(image_root, PATHS[::-1] + PATHS[:1], S, out)  # unsorted, with a repeat
    assert counts == {"images": 4, "bad": 0}
    index = json.loads(Path(str(out) + ".index.json").read_text())
    assert index == {"size": S, "paths": sorted(PATHS), "bad": []}
    arr = np.load(out)
    assert arr.shape == (4, S, S, 3) and arr.dtype == np.uint8
    assert not list(out.parent.glob("*.tmp.npy"))
    cached, direct = ImageStore(image_root, S, cache=out), ImageStore(image_root, S)
    assert cached.bad == direct.bad == frozenset()
    for rel in PATHS:
        assert np.array_equal(cached.get(rel), load_image(image_root / rel, S))
        assert np.array_equal(direct.get(rel), load_image(image_root / rel, S))
    with pytest.raises(KeyError, match="val2014/zzz.jpg"):
        cached.get("val2014/zzz.jpg")


def test_damaged_cache_or_index_names_the_file_and_what_to_do(image_root: Path, tmp_path: Path) -> None:
    out = tmp_path / f"images_{S}.npy"
    build_cache(image_root, PATHS, S, out)
    index = Path(str(out) + ".index.json")
    data = out.read_bytes()
    out.write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match=f"image cache {out} cannot be read .*rerun cache_images"):
        ImageStore(image_root, S, cache=out)
    index.write_text('{"size": 8, "paths": ["tr')
    with pytest.raises(ValueError, match=f"{index} is not valid JSON .*rerun cache_images"):
        ImageStore(image_root, S, cache=out)


def test_cache_of_another_size_is_refused(image_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "images_16.npy"
    build_cache(image_root, PATHS, 16, out)
    with pytest.raises(ValueError, match=f"image cache {out} holds 16 px images, the model wants {S} px"):
        ImageStore(image_root, S, cache=out)
    assert ImageStore(image_root, 16, cache=out).get(PATHS[0]).shape == (16, 16, 3)


def test_skip_bad_counts_bad_images(image_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    for rel in PATHS:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes((image_root / rel).read_bytes())
    (root / "val2014" / "broken.jpg").write_bytes(b"garbage")
    out = tmp_path / "c.npy"
    with pytest.raises(OSError, match="cannot decode image .*broken.jpg"):
        build_cache(root, PATHS + ["val2014/broken.jpg"], S, out)
    with pytest.raises(FileNotFoundError, match="absent.jpg"):
        build_cache(root, PATHS + ["val2014/absent.jpg"], S, out)
    assert not out.exists()
    paths = PATHS + ["val2014/broken.jpg", "val2014/absent.jpg"]
    counts = build_cache(root, paths, S, out, skip_bad=True)
    assert counts == {"images": 6, "bad": 2}
    index = json.loads(Path(str(out) + ".index.json").read_text())
    assert index["bad"] == ["val2014/absent.jpg", "val2014/broken.jpg"]
    store = ImageStore(root, S, cache=out)
    assert store.bad == frozenset({"val2014/absent.jpg", "val2014/broken.jpg"})
    assert np.array_equal(store.get("train2014/a.jpg"), load_image(root / "train2014" / "a.jpg", S))
    with pytest.raises(OSError, match=f"image val2014/broken.jpg is listed as undecodable in the image cache {out}"):
        store.get("val2014/broken.jpg")  # never the blank row the cache holds for it


@pytest.fixture
def store_with_a_corrupt_jpeg(image_root: Path, tmp_path: Path) -> ImageStore:
    """A cache built with ``skip_bad`` over PATHS, where train2014/a.jpg is a truncated JPEG."""
    root = tmp_path / "root"
    for rel in PATHS:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes((image_root / rel).read_bytes())
    data = (root / PATHS[0]).read_bytes()
    (root / PATHS[0]).write_bytes(data[: len(data) // 2])
    assert build_cache(root, PATHS, S, tmp_path / "c.npy", skip_bad=True) == {"images": 4, "bad": 1}
    return ImageStore(root, S, cache=tmp_path / "c.npy")


def test_records_of_bad_images_are_dropped_from_training_and_evaluation(
    store_with_a_corrupt_jpeg: ImageStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = store_with_a_corrupt_jpeg
    assert store.bad == frozenset({"train2014/a.jpg"})
    vqa = [
        {"image": rel, "question": "how many?", "answer": a}
        for rel, a in zip([PATHS[1], PATHS[0], PATHS[2], PATHS[0]], ["one", "two", "three", "four"])
    ]
    coco = [{"image": PATHS[0], "references": ["x", "y"]}, {"image": PATHS[3], "references": ["z", "w"]}]
    with caplog.at_level(logging.WARNING, logger="vlpeft.datasets"):
        vqa_items = drop_bad_train_items("vqa", vqa, [3, 2, 1, 0], store)
        coco_items = drop_bad_train_items("coco", coco, [[1, 1], [0, 0], [1, 0], [0, 1]], store)
        val = drop_bad_records("val", vqa, store)
    assert vqa_items == [2, 0]  # order kept
    assert coco_items == [[1, 1], [1, 0]]
    assert val == [vqa[0], vqa[2]]
    data = TrainSet("vqa", vqa, vqa_items, store, {})
    assert [data.targets(i) for i in range(len(data))] == [[("three", 1.0)], [("one", 1.0)]]
    assert all(data[i]["image"].any() for i in range(len(data)))
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        f"split train: dropped 2 of 4 training pairs whose image is listed as bad in the image cache {store.cache}",
        f"split train: dropped 2 of 4 training pairs whose image is listed as bad in the image cache {store.cache}",
        f"split val: dropped 2 of 4 records whose image is listed as bad in the image cache {store.cache}",
    ]


def test_nothing_left_after_dropping_bad_images_is_an_error(store_with_a_corrupt_jpeg: ImageStore) -> None:
    records = [{"image": PATHS[0], "answer": "one"}, {"image": PATHS[0], "answer": "two"}]
    with pytest.raises(
        ValueError,
        match="^split train: all 2 training pairs have images listed as bad in the image "
        "cache .*c.npy; nothing is left to use$",
    ):
        drop_bad_train_items("vqa", records, [0, 1], store_with_a_corrupt_jpeg)
    with pytest.raises(ValueError, match="^split test: all 2 records have images listed as bad"):
        drop_bad_records("test", records, store_with_a_corrupt_jpeg)


def test_without_bad_images_nothing_is_dropped(
    image_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    records = [{"image": rel, "answer": "a"} for rel in PATHS]
    items = [3, 1, 0, 2]
    build_cache(image_root, PATHS, S, tmp_path / "c.npy", skip_bad=True)
    for store in (ImageStore(image_root, S, cache=tmp_path / "c.npy"), ImageStore(image_root, S)):
        with caplog.at_level(logging.WARNING):
            assert drop_bad_train_items("vqa", records, items, store) is items  # the very same list, untouched
            assert drop_bad_records("val", records, store) is records
    assert not caplog.records


def test_cache_images_stage_reads_paths_from_records(image_root: Path, tmp_path: Path) -> None:
    prepare.write_jsonl([{"image": PATHS[0]}, {"image": PATHS[1]}], tmp_path / "train.jsonl")
    prepare.write_jsonl([{"image": PATHS[1]}, {"image": PATHS[3]}], tmp_path / "val.jsonl")
    counts = stages.cache_images(image_root, [tmp_path / "train.jsonl", tmp_path / "val.jsonl"], S, tmp_path / "c.npy")
    assert counts == {"images": 3, "bad": 0}
    index = json.loads((tmp_path / "c.npy.index.json").read_text())
    assert index["paths"] == sorted([PATHS[0], PATHS[1], PATHS[3]])
