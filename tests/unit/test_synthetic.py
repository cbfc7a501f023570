"""The synthetic mini study's data: deterministic, in the real datasets' formats, and captions that depend on the image."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlpeft.data import synthetic
from vlpeft.data.synthetic import BACKGROUNDS, COLOURS, SHAPES

N_TRAIN, N_VAL, N_TEST = 8, 3, 3
N_IMAGES = N_TRAIN + N_VAL + N_TEST
FOLDERS = ("train2014", "val2014")
NUMBERS = {"a": 1, "two": 2, "three": 3}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    counts = synthetic.generate(out, N_TRAIN, N_VAL, N_TEST, seed=0)
    assert counts == {"images": N_IMAGES, "questions": 3 * N_IMAGES}
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _read(root: Path, name: str):
    return json.loads((root / name).read_text())


def _facts(sentences: list[str]) -> dict:
    """Main colour, shape, count and side, and the distractor colour (or None), parsed back from the captions."""
    colour_words = "|".join(COLOURS)
    shape_words = "|".join(SHAPES)
    thing = re.compile(rf"\b(a|two|three) ({colour_words}) ({shape_words})s?\b")
    mains = {thing.search(s.lower()).groups() for s in sentences}
    assert len(mains) == 1, sentences  # every caption describes the same main objects
    ((count, colour, shape),) = mains
    sides = {m for s in sentences for m in re.findall(r"on the (left|right)", s.lower())}
    assert len(sides) == 1, sentences
    distractors = {m for s in sentences for m in re.findall(rf" and a ({colour_words}) (?:{shape_words})", s.lower())}
    assert len(distractors) <= 1, sentences
    return {
        "colour": colour,
        "shape": shape,
        "count": NUMBERS[count],
        "side": sides.pop(),
        "distractor": distractors.pop() if distractors else None,
    }


def _colour_map(pixels: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """Per pixel the name of the nearest palette colour ("bg" for the background)."""
    names = ["bg", *COLOURS]
    palette = np.array([background, *COLOURS.values()], dtype=float)
    dist = ((pixels[..., None, :].astype(float) - palette) ** 2).sum(-1)
    return np.array(names)[dist.argmin(-1)]


def _background(pixels: np.ndarray) -> tuple[int, int, int]:
    corners = pixels[[0, 0, -1, -1], [0, -1, 0, -1]].astype(float).mean(0)
    return min(BACKGROUNDS.values(), key=lambda c: ((np.array(c) - corners) ** 2).sum())


# -- determinism ---------------------------------------------------------------------------------------------------
def test_same_seed_gives_byte_identical_files(root: Path, tmp_path: Path) -> None:
    synthetic.generate(tmp_path, N_TRAIN, N_VAL, N_TEST, seed=0)
    first, again = _files(root), _files(tmp_path)
    assert sorted(first) == sorted(again)
    assert sum(name.endswith(".jpg") for name in first) == N_IMAGES
    assert [name for name in first if first[name] != again[name]] == []


def test_other_seed_gives_other_data(root: Path, tmp_path: Path) -> None:
    synthetic.generate(tmp_path, N_TRAIN, N_VAL, N_TEST, seed=1)
    first, other = _files(root), _files(tmp_path)
    assert sorted(first) == sorted(other)  # same layout and file names ...
    assert first["dataset_coco.json"] != other["dataset_coco.json"]  # ... other contents
    jpgs = [name for name in first if name.endswith(".jpg")]
    assert sum(first[n] != other[n] for n in jpgs) >= N_IMAGES // 2


@pytest.mark.parametrize("sizes", [(1, 2, 2), (2, 1, 2), (2, 2, 1), (0, 5, 5)])
def test_fewer_than_two_images_per_split_is_refused(tmp_path: Path, sizes: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match="at least 2 images per split"):
        synthetic.generate(tmp_path, *sizes, seed=0)
    assert not (tmp_path / "dataset_coco.json").exists()


# -- formats -------------------------------------------------------------------------------------------------------
def test_karpathy_split_file_format(root: Path) -> None:
    data = _read(root, "dataset_coco.json")
    images = data["images"]
    assert len(images) == N_IMAGES
    assert len({img["cocoid"] for img in images}) == N_IMAGES
    splits = Counter(img["split"] for img in images)
    assert set(splits) <= {"train", "restval", "val", "test"}
    assert splits["train"] + splits["restval"] == N_TRAIN
    assert splits["restval"] == N_TRAIN // 4  # a quarter of the training images live in val2014, like the real split
    assert (splits["val"], splits["test"]) == (N_VAL, N_TEST)
    for img in images:
        assert img["filepath"] == ("train2014" if img["split"] == "train" else "val2014")
        assert img["filename"] == f"COCO_{img['filepath']}_{img['cocoid']:012d}.jpg"
        assert (root / "images" / img["filepath"] / img["filename"]).is_file()
        assert len(img["sentences"]) == 5
        raws = [s["raw"] for s in img["sentences"]]
        assert all(isinstance(r, str) and r.strip() for r in raws)
        assert len(set(raws)) == 5  # five different captions per image
        assert all(r[0].isupper() and r.endswith(".") for r in raws)


def test_jpegs_have_the_requested_size(root: Path) -> None:
    img = _read(root, "dataset_coco.json")["images"][0]
    with Image.open(root / "images" / img["filepath"] / img["filename"]) as im:
        assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (160, 120))


def test_vqa_questions_and_annotations_format(root: Path) -> None:
    folder_of = {img["cocoid"]: img["filepath"] for img in _read(root, "dataset_coco.json")["images"]}
    all_qids: list[int] = []
    per_image: Counter = Counter()
    disagreeing = 0
    for folder in FOLDERS:
        qdata = _read(root, f"v2_OpenEnded_mscoco_{folder}_questions.json")
        adata = _read(root, f"v2_mscoco_{folder}_annotations.json")
        assert qdata["data_subtype"] == adata["data_subtype"] == folder
        questions = {q["question_id"]: q for q in qdata["questions"]}
        assert len(questions) == len(qdata["questions"])
        assert sorted(a["question_id"] for a in adata["annotations"]) == sorted(questions)
        for a in adata["annotations"]:
            q = questions[a["question_id"]]
            assert q["image_id"] == a["image_id"]
            assert folder_of[a["image_id"]] == folder  # the question file of the image's folder
            assert q["question"].endswith("?")
            answers = [x["answer"] for x in a["answers"]]
            assert len(answers) == 10
            assert [x["answer_id"] for x in a["answers"]] == list(range(1, 11))
            assert a["answer_type"] in ("yes/no", "number", "other")
            # At most two mistakes and two variants: the target is always the majority answer.
            assert Counter(answers).most_common(1)[0][0] == a["multiple_choice_answer"]
            if a["answer_type"] == "number":
                assert a["multiple_choice_answer"] in ("1", "2", "3")
            if a["answer_type"] == "yes/no":
                assert a["multiple_choice_answer"] in ("yes", "no")
            disagreeing += len(set(answers)) > 1
            per_image[a["image_id"]] += 1
        all_qids += list(questions)
    assert sorted(all_qids) == list(range(1, 3 * N_IMAGES + 1))
    assert set(per_image.values()) == {3} and len(per_image) == N_IMAGES
    assert 0 < disagreeing < 3 * N_IMAGES


def test_pretrain_captions_cover_the_training_images(root: Path) -> None:
    train = {
        img["cocoid"] for img in _read(root, "dataset_coco.json")["images"] if img["split"] in ("train", "restval")
    }
    pre = _read(root, "pretrain_captions.json")
    assert sorted(r["cocoid"] for r in pre) == sorted(train)
    assert all(set(r) == {"filepath", "filename", "cocoid", "caption"} and r["caption"] for r in pre)


def test_corpus_returns_every_text(root: Path) -> None:
    texts = synthetic.corpus(root)
    images = _read(root, "dataset_coco.json")["images"]
    captions = [s["raw"] for img in images for s in img["sentences"]]
    questions = [
        q["question"] for f in FOLDERS for q in _read(root, f"v2_OpenEnded_mscoco_{f}_questions.json")["questions"]
    ]
    answers = [
        x["answer"]
        for f in FOLDERS
        for a in _read(root, f"v2_mscoco_{f}_annotations.json")["annotations"]
        for x in a["answers"]
    ]
    pre = [r["caption"] for r in _read(root, "pretrain_captions.json")]
    assert len(texts) == 2 + len(captions) + len(pre) + len(questions) + len(answers)
    assert len(texts) == 2 + 5 * N_IMAGES + N_TRAIN + 3 * N_IMAGES + 30 * N_IMAGES
    assert Counter(texts) == Counter(["a picture of", "Question: Answer:", *captions, *pre, *questions, *answers])


# -- content depends on the picture ----------------------------------------------------------------------------------
def test_rendered_squares_are_exact_and_on_their_side() -> None:
    scene = {
        "colour": "blue",
        "shape": "square",
        "count": 3,
        "distractor": None,
        "background": "white",
        "side": "left",
    }
    pixels = np.asarray(synthetic.render(scene, random.Random(0), (160, 120)))
    blue = (pixels == COLOURS["blue"]).all(-1)
    white = (pixels == BACKGROUNDS["white"]).all(-1)
    assert (blue | white).all()  # nothing else drawn
    obj = 120 // 4
    assert blue.sum() == 3 * (obj + 1) ** 2  # three non-overlapping squares (PIL boxes include both ends)
    assert np.nonzero(blue)[1].max() < 80  # all on the left half
    texts = synthetic.captions(scene, random.Random(0))
    assert len(texts) == 5
    assert all("three blue squares" in t for t in texts)


def test_captions_name_the_pictures_colours_shapes_and_sides(root: Path) -> None:
    """The colour the captions name is the dominant non-background colour of the pixels (on the named side)."""
    images = _read(root, "dataset_coco.json")["images"]
    with_distractor = 0
    for img in images:
        facts = _facts([s["raw"] for s in img["sentences"]])
        with Image.open(root / "images" / img["filepath"] / img["filename"]) as im:
            pixels = np.asarray(im.convert("RGB"))
        names = _colour_map(pixels, _background(pixels))
        half = pixels.shape[1] // 2
        main_half = names[:, :half] if facts["side"] == "left" else names[:, half:]
        other_half = names[:, half:] if facts["side"] == "left" else names[:, :half]
        counts = Counter(main_half[main_half != "bg"].tolist())
        assert counts.most_common(1)[0][0] == facts["colour"], (img["filename"], facts, counts)
        assert counts[facts["colour"]] > 300  # at least one object's worth, not JPEG noise
        # The other half holds the distractor the captions name, or nothing at all.
        other = Counter(other_half[other_half != "bg"].tolist())
        if facts["distractor"] is None:
            assert sum(other.values()) < 50, (img["filename"], other)
            overall = Counter(names[names != "bg"].tolist())
            assert overall.most_common(1)[0][0] == facts["colour"]
        else:
            with_distractor += 1
            assert other.most_common(1)[0][0] == facts["distractor"], (img["filename"], facts, other)
    assert 0 < with_distractor < len(images)  # both kinds of scene occur


def test_vqa_answers_agree_with_the_captions(root: Path) -> None:
    facts = {
        img["cocoid"]: _facts([s["raw"] for s in img["sentences"]])
        for img in _read(root, "dataset_coco.json")["images"]
    }
    checked = Counter()
    for folder in FOLDERS:
        questions = {
            q["question_id"]: q["question"].lower()
            for q in _read(root, f"v2_OpenEnded_mscoco_{folder}_questions.json")["questions"]
        }
        for a in _read(root, f"v2_mscoco_{folder}_annotations.json")["annotations"]:
            f, q, answer = facts[a["image_id"]], questions[a["question_id"]], a["multiple_choice_answer"]
            if q.startswith("how many"):
                assert answer == str(f["count"]), q
            elif q.startswith("what color"):
                assert answer == f["colour"] and f["shape"] in q
            elif q.startswith("what shape"):
                assert answer == f["shape"] and f["colour"] in q
            elif q.startswith("which side"):
                assert answer == f["side"] and f["colour"] in q
            else:
                assert q.startswith("is there a")
            checked[q.split()[0]] += 1
    assert sum(checked.values()) == 3 * N_IMAGES
