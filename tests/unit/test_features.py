"""The visual-feature store: the same loss, gradients and generations as the image path; stale stores refused.

Equivalence: with float32 storage exactly equal (the ViT's output on this CPU does not depend on the batch it is
computed in). With float16/bfloat16 storage, within the tolerances stated here (and in the README): the stored
features carry the storage's rounding (relative 2^-11 / 2^-8), which reaches the loss and the gradients of the
trainable parameters scaled down, not amplified.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vlpeft.data import stages
from vlpeft.data.features import FeatureStore, _decode, _encode, build_store, extract_for_study, store_tag
from vlpeft.data.images import ImageStore, to_tensor
from vlpeft.data.prepare import read_jsonl
from vlpeft.methods.base import build_method, trainable_parameters
from vlpeft.model.config import preset
from vlpeft.model.generation import GenerationConfig, generate
from vlpeft.model.mplug import MPlug
from vlpeft.model.slim import tensor_digest
from vlpeft.runconfig import RunConfig
from vlpeft.train import Trainer

from ..conftest import make_run_config

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = preset("tiny", vocab_size=128)
# float16/bfloat16 storage vs the image path: relative error of the loss, and of the gradient of all trainable
# parameters together (norm of the difference / norm of the gradient).
# Measured (random weights): tiny, float16: loss < 1e-7, gradient < 3e-6; bfloat16: loss < 1e-6, gradient < 3e-5;
# base architecture, float16: loss 5e-7, gradient 2.4e-4.
TOLERANCE = {"float16": {"loss": 1e-5, "grad": 1e-3}, "bfloat16": {"loss": 1e-4, "grad": 1e-2}}
METHODS = [
    ("prompt", {"size": 3}),
    ("prefix", {"size": 3, "reparam_hidden": 16}),
    ("lora", {"size": 2, "classifier": True}),
    ("serial_adapter", {"size": 4}),
    ("parallel_adapter", {"size": 4}),
]


def _paths(study: Path) -> list[str]:
    return sorted({r["image"] for s in ("train", "val", "test") for r in read_jsonl(study / f"prep/coco/{s}.jsonl")})


def _store(model: MPlug, study: Path, out: Path, dtype: str) -> FeatureStore:
    images = ImageStore(study / "raw/images", model.config.image_size, study / "images_64.npy")
    tag = store_tag(model.config, tensor_digest(model.state_dict()))
    build_store(model.visual_encoder, images, _paths(study), out, tag, dtype=dtype, batch_size=5)
    return FeatureStore(out, tag)


def _batch(study: Path, n: int = 4, seed: int = 0):
    paths = _paths(study)[:n]
    images = ImageStore(study / "raw/images", TINY.image_size, study / "images_64.npy")
    g = torch.Generator().manual_seed(seed)
    pid = torch.randint(5, TINY.vocab_size, (n, 5), generator=g)
    tid = torch.randint(5, TINY.vocab_size, (n, 7), generator=g)
    mask = torch.ones(n, 7, dtype=torch.long)
    mask[1, 5:] = 0
    return paths, to_tensor(np.stack([images.get(p) for p in paths])), pid, torch.ones_like(pid), tid, mask


def _step(model: MPlug, visual, pid, pmask, tid, tmask):
    """Loss of one training step (dropout on, fixed seed) and the trainable parameters' gradients."""
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(123)
    loss = model(visual, pid, pmask, tid, tmask)
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in trainable_parameters(model).items()}


def _grad_error(a: dict, b: dict) -> float:
    diff = sum(float((a[k] - b[k]).double().pow(2).sum()) for k in a) ** 0.5
    return diff / sum(float(a[k].double().pow(2).sum()) for k in a) ** 0.5


def _generate(model, visual, pid, pmask):
    model.eval()
    return generate(model, visual, pid, pmask, GenerationConfig(num_beams=3, min_new_tokens=1, max_new_tokens=5))


@pytest.mark.parametrize(("method", "options"), METHODS, ids=[m for m, _ in METHODS])
def test_float32_store_equals_the_image_path_exactly(tiny_study, tmp_path, method, options):
    torch.manual_seed(0)
    model = MPlug(TINY)
    build_method(method, **options).attach(model)
    store = _store(model, tiny_study, tmp_path / "f.npy", "float32")
    paths, pixels, pid, pmask, tid, tmask = _batch(tiny_study)
    features = torch.from_numpy(np.stack([store.get(p) for p in paths]))
    loss_i, grads_i = _step(model, pixels, pid, pmask, tid, tmask)
    loss_f, grads_f = _step(model, features, pid, pmask, tid, tmask)
    assert torch.equal(loss_i, loss_f)
    assert grads_i.keys() == grads_f.keys() and all(torch.equal(grads_i[k], grads_f[k]) for k in grads_i)
    assert _generate(model, pixels, pid, pmask) == _generate(model, features, pid, pmask)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_store_within_the_stated_tolerance(tiny_study, tmp_path, dtype):
    torch.manual_seed(0)
    model = MPlug(TINY)
    build_method("lora", size=2, classifier=True).attach(model)
    store = _store(model, tiny_study, tmp_path / "f.npy", dtype)
    assert np.load(tmp_path / "f.npy", mmap_mode="r").dtype.itemsize == 2  # stored at half the size
    paths, pixels, pid, pmask, tid, tmask = _batch(tiny_study)
    features = torch.from_numpy(np.stack([store.get(p) for p in paths]))
    with torch.no_grad():
        exact = model.encode_image(pixels)
    half = {"float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    assert torch.equal(features, exact.to(half).float())  # the store holds the ViT's output, rounded once
    loss_i, grads_i = _step(model, pixels, pid, pmask, tid, tmask)
    loss_f, grads_f = _step(model, features, pid, pmask, tid, tmask)
    tol = TOLERANCE[dtype]
    assert abs(loss_f - loss_i) <= tol["loss"] * abs(loss_i)
    assert _grad_error(grads_i, grads_f) <= tol["grad"]


def test_bfloat16_storage_round_trip():
    x = torch.randn(3, 5, 7) * 10
    assert torch.equal(torch.from_numpy(_decode(_encode(x.numpy(), "bfloat16"), "bfloat16")), x.bfloat16().float())
    assert torch.equal(torch.from_numpy(_decode(_encode(x.numpy(), "float16"), "float16")), x.half().float())


def _run(study: Path, out: Path, store: Path | None, **kw) -> dict:
    cfg = make_run_config(study, out, task=kw.pop("task", "coco"), feature_store=str(store) if store else None, **kw)
    trainer = Trainer(RunConfig.from_dict(cfg))
    trainer.setup()
    trainer.run()
    return {
        "record": trainer.finalize("success"),
        "trained": {k: v.detach().clone() for k, v in trainable_parameters(trainer.model).items()},
    }


def _spec(study: Path, dtype: str = "float32", seed: int = 0) -> dict:
    cfg = make_run_config(study, study)
    return {
        "model_preset": cfg["model_preset"],
        "model_overrides": cfg["model_overrides"],
        "init_weights": None,
        "init_format": "none",
        "vocab": cfg["vocab"],
        "image_root": cfg["image_root"],
        "image_cache": cfg["image_cache"],
        "seed": seed,
        "threads": 1,
        "device": "cpu",
        "dtype": dtype,
        "batch_size": 7,
    }


@pytest.mark.parametrize("task", ["coco", "vqa"])
def test_a_run_with_the_float32_store_equals_one_without(tiny_study, tmp_path, task, caplog):
    """Training, evaluation and the trained weights of a whole (tiny) run, with the store built by the rule's code."""
    records = [tiny_study / f"prep/coco/{s}.jsonl" for s in ("train", "val", "test")]
    counts = extract_for_study(_spec(tiny_study), records, tmp_path / "features.npy")
    assert counts["images"] == len(_paths(tiny_study)) and counts["bad"] == 0
    a = _run(tiny_study, tmp_path / "images", None, task=task)
    with caplog.at_level("INFO", logger="vlpeft.train"):
        b = _run(tiny_study, tmp_path / "store", tmp_path / "features.npy", task=task)
    assert a["record"]["curve"] == b["record"]["curve"] and a["record"]["curve"]
    assert a["record"]["best"] == b["record"]["best"]
    assert all(torch.equal(a["trained"][k], b["trained"][k]) for k in a["trained"])
    assert "visual features from" in caplog.text


def test_a_stale_store_is_refused(tiny_study, tmp_path):
    records = [tiny_study / f"prep/coco/{s}.jsonl" for s in ("train", "val", "test")]
    extract_for_study(_spec(tiny_study, seed=1), records, tmp_path / "other.npy")  # another (random) ViT
    with pytest.raises(ValueError, match="stale.*visual_digest"):
        _run(tiny_study, tmp_path / "run", tmp_path / "other.npy")
    extract_for_study(_spec(tiny_study), records, tmp_path / "f.npy")
    index = json.loads((tmp_path / "f.npy.index.json").read_text())
    index["tag"]["image_size"] = 32  # as if computed at another resolution
    (tmp_path / "f.npy.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="stale.*image_size"):
        _run(tiny_study, tmp_path / "run2", tmp_path / "f.npy")


def test_runs_that_train_the_vit_never_read_the_store(tiny_study, tmp_path):
    records = [tiny_study / f"prep/coco/{s}.jsonl" for s in ("train", "val", "test")]
    extract_for_study(_spec(tiny_study), records, tmp_path / "f.npy")
    with pytest.raises(ValueError, match="trains the ViT"):
        _run(tiny_study, tmp_path / "full", tmp_path / "f.npy", method="full")
    with pytest.raises(ValueError, match="trains the ViT"):
        _run(
            tiny_study,
            tmp_path / "vit",
            tmp_path / "f.npy",
            method_options={"size": 2, "targets": ["visual_encoder", "text_decoder"]},
        )
    model = MPlug(TINY)
    build_method("full").attach(model)
    with pytest.raises(ValueError, match="ViT trains"):
        model.encode_image(torch.zeros(1, TINY.num_image_tokens, TINY.vision_width))


def test_bad_images_stay_bad_in_the_store(tiny_study, tmp_path):
    paths = _paths(tiny_study)
    root = tmp_path / "images"
    import shutil

    shutil.copytree(tiny_study / "raw/images", root)
    data = (root / paths[2]).read_bytes()
    (root / paths[2]).write_bytes(data[: len(data) // 2])
    stages.cache_images(
        root,
        [tiny_study / f"prep/coco/{s}.jsonl" for s in ("train", "val", "test")],
        64,
        tmp_path / "images_64.npy",
        skip_bad=True,
    )
    model = MPlug(TINY)
    images = ImageStore(root, 64, tmp_path / "images_64.npy")
    build_store(model.visual_encoder, images, paths, tmp_path / "f.npy", store_tag(TINY, "x"), dtype="float32")
    store = FeatureStore(tmp_path / "f.npy")
    assert store.bad == {paths[2]}
    with pytest.raises(OSError, match="undecodable"):
        store.get(paths[2])
    assert store.get(paths[3]).shape == (TINY.num_image_tokens, TINY.vision_width)


@pytest.mark.slow
def test_base_architecture_store_equals_the_image_path(tmp_path):
    """mPLUG-base's architecture (random weights), LoRA: loss, gradients and a short generation, float32 exactly;
    float16 within the stated tolerance."""
    cfg = preset("base")
    torch.manual_seed(0)
    model = MPlug(cfg)
    build_method("lora", size=4).attach(model)
    rng = np.random.default_rng(0)
    pixels_u8 = {
        f"img{i}.jpg": rng.integers(0, 256, (cfg.image_size, cfg.image_size, 3), dtype=np.uint8) for i in range(2)
    }

    class Images:  # an ImageStore over the arrays above
        bad = frozenset()

        def get(self, rel):
            return pixels_u8[rel]

    pixels = to_tensor(np.stack(list(pixels_u8.values())))
    g = torch.Generator().manual_seed(0)
    pid = torch.randint(1000, cfg.vocab_size, (2, 5), generator=g)
    tid = torch.randint(1000, cfg.vocab_size, (2, 8), generator=g)
    args = (pid, torch.ones_like(pid), tid, torch.ones_like(tid))
    loss_i, grads_i = _step(model, pixels, *args)
    model.eval()
    gen = GenerationConfig(num_beams=1, min_new_tokens=1, max_new_tokens=2)
    out_i = generate(model, pixels, pid, torch.ones_like(pid), gen)
    for dtype in ("float32", "float16"):
        tag = store_tag(cfg, "base-random")
        build_store(model.visual_encoder, Images(), list(pixels_u8), tmp_path / f"{dtype}.npy", tag, dtype=dtype)
        store = FeatureStore(tmp_path / f"{dtype}.npy", tag)
        features = torch.from_numpy(np.stack([store.get(p) for p in pixels_u8]))
        loss_f, grads_f = _step(model, features, *args)
        if dtype == "float32":
            assert torch.equal(loss_i, loss_f)
            assert all(torch.equal(grads_i[k], grads_f[k]) for k in grads_i)
            model.eval()
            assert generate(model, features, pid, torch.ones_like(pid), gen) == out_i
        else:
            assert abs(loss_f - loss_i) <= TOLERANCE[dtype]["loss"] * abs(loss_i)
            assert _grad_error(grads_i, grads_f) <= TOLERANCE[dtype]["grad"]


@pytest.mark.slow
@pytest.mark.parametrize("store", [False, True], ids=["images", "feature_store"])
def test_loader_workers_train_exactly_as_the_training_process(tiny_study, tmp_path, store):
    """2 loader workers (collation, uint8 pixels or stored features, target tokenisation in the workers) give the
    same curve and trained weights, bit for bit, as loading in the training process; the store's memory map reaches
    the forked workers."""
    features = None
    if store:
        records = [tiny_study / f"prep/coco/{s}.jsonl" for s in ("train", "val", "test")]
        extract_for_study(_spec(tiny_study), records, tmp_path / "features.npy")
        features = tmp_path / "features.npy"
    a = _run(tiny_study, tmp_path / "w0", features, num_workers=0)
    b = _run(tiny_study, tmp_path / "w2", features, num_workers=2)
    assert a["record"]["curve"] == b["record"]["curve"] and a["record"]["curve"]
    assert all(torch.equal(a["trained"][k], b["trained"][k]) for k in a["trained"])
