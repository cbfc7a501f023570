"""The embedded mini study's data: synthetic scenes written in the real datasets' file formats.

Each image shows 1-3 copies of one kind of object (colour x shape) and sometimes one distractor of another kind,
at random positions on a plain background. Captions and answers depend on the picture (colours, shapes, counts,
left/right position), so a model can learn them and a blind one cannot.

Outputs (under ``root``), laid out like the real downloads:
- ``images/train2014/COCO_train2014_<id:012d>.jpg`` and ``images/val2014/...``: JPEGs;
- ``dataset_coco.json``: Karpathy-style split file (images[] with filepath, filename, cocoid, split
  train|restval|val|test, sentences[].raw);
- ``v2_OpenEnded_mscoco_{train2014,val2014}_questions.json`` and ``v2_mscoco_{train2014,val2014}_annotations.json``:
  VQAv2-style questions and annotations, 10 human answers each, some disagreeing;
- ``pretrain_captions.json``: captions used to "pre-train" the tiny model (with mPLUG's prefix-LM objective, see
  ``vlpeft.data.stages.prepare_pretrain``), so that downstream captioning is consistent with pre-training and
  VQA is not.
Everything is a pure function of the seed.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 30)}
SHAPES = ("circle", "square", "triangle")
BACKGROUNDS = {"white": (245, 245, 245), "grey": (150, 150, 150)}
NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}


def _plural(shape: str, n: int) -> str:
    return shape if n == 1 else shape + "s"


def _draw(draw: ImageDraw.ImageDraw, shape: str, colour: tuple, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=colour)


def make_scene(rng: random.Random) -> dict:
    """A random scene description: main object kind with a count, optional distractor, background."""
    colour, shape = rng.choice(sorted(COLOURS)), rng.choice(SHAPES)
    count = rng.randint(1, 3)
    distractor = None
    if rng.random() < 0.5:
        d_colour = rng.choice([c for c in sorted(COLOURS) if c != colour])
        d_shape = rng.choice([s for s in SHAPES if s != shape])
        distractor = (d_colour, d_shape)
    return {
        "colour": colour,
        "shape": shape,
        "count": count,
        "distractor": distractor,
        "background": rng.choice(sorted(BACKGROUNDS)),
        "side": rng.choice(["left", "right"]),
    }


def render(scene: dict, rng: random.Random, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """Draw a scene. The main objects sit on ``scene['side']``, the distractor on the other side."""
    w, h = size
    img = Image.new("RGB", size, BACKGROUNDS[scene["background"]])
    draw = ImageDraw.Draw(img)
    obj = min(w, h) // 4
    half = w // 2
    # Three vertical slots per side keep up to three objects from overlapping.
    slots = [
        (int(h * 0.05), int(h * 0.05) + obj),
        (int(h * 0.37), int(h * 0.37) + obj),
        (int(h * 0.69), int(h * 0.69) + obj),
    ]
    x_main = (2, half - obj - 2) if scene["side"] == "left" else (half + 2, w - obj - 2)
    for slot in rng.sample(slots, scene["count"]):
        x = rng.randint(*x_main)
        y = min(slot[0] + rng.randint(-3, 3), h - obj - 1)
        _draw(draw, scene["shape"], COLOURS[scene["colour"]], (x, max(y, 0), x + obj, max(y, 0) + obj))
    if scene["distractor"]:
        colour, shape = scene["distractor"]
        x_d = (half + 2, w - obj - 2) if scene["side"] == "left" else (2, half - obj - 2)
        x, y = rng.randint(*x_d), rng.randint(2, h - obj - 2)
        _draw(draw, shape, COLOURS[colour], (x, y, x + obj, y + obj))
    return img


def captions(scene: dict, rng: random.Random, n: int = 5) -> list[str]:
    """COCO-style human captions: several templates, always describing count, colour, shape and side."""
    c, s, k, side = scene["colour"], scene["shape"], scene["count"], scene["side"]
    thing = f"{NUMBER_WORDS[k] if k > 1 else 'a'} {c} {_plural(s, k)}"
    extra = ""
    if scene["distractor"]:
        dc, ds = scene["distractor"]
        extra = f" and a {dc} {ds}"
    templates = [
        f"{thing} on the {side}{extra}",
        f"there {'is' if k == 1 else 'are'} {thing} on the {side} side{extra}",
        f"a {scene['background']} picture with {thing}{extra}",
        f"{thing} on the {side} of a {scene['background']} background",
        f"an image showing {thing}{extra}",
        f"{thing} placed on the {side}",
    ]
    return rng.sample(templates, n)


def pretrain_caption(scene: dict, rng: random.Random) -> str:
    """A caption of the pre-training corpus: the same facts in a narrower choice of the COCO templates, so that
    downstream captioning is consistent with pre-training and fine-tuning only adjusts the style mix."""
    return (
        captions(scene, rng, n=6)[0]
        if rng.random() < 0.3
        else rng.choice([captions(scene, random.Random(0), n=6)[i] for i in (0, 1)])
    )


def _noisy(answer: str, alternatives: list[str], rng: random.Random) -> list[str]:
    """Ten human answers: mostly the truth, with variants and a few mistakes, as annotators give them."""
    variants = {"1": "one", "2": "two", "3": "three", "yes": "yes!", "no": "No"}
    answers = []
    n_wrong = rng.choice([0, 0, 0, 1, 1, 2])
    n_variant = rng.choice([0, 1, 2])
    for i in range(10):
        if i < n_wrong:
            answers.append(rng.choice(alternatives))
        elif i < n_wrong + n_variant:
            answers.append(variants.get(answer, answer.capitalize()))
        else:
            answers.append(answer)
    rng.shuffle(answers)
    return answers


def questions(scene: dict, rng: random.Random) -> list[tuple[str, str, str, list[str]]]:
    """(question, answer, answer_type, alternatives) for a scene; three questions per image."""
    c, s, k = scene["colour"], scene["shape"], scene["count"]
    other_shape = rng.choice([x for x in SHAPES if x != s])
    asks_present = rng.random() < 0.5
    probe = s if asks_present else other_shape
    present = probe == s or (scene["distractor"] is not None and scene["distractor"][1] == probe)
    pool = [
        (f"how many {_plural(s, 2)} are there?", str(k), "number", [str(x) for x in (1, 2, 3) if x != k]),
        (f"what color is the {s}?", c, "other", [x for x in COLOURS if x != c]),
        (f"what shape is the {c} object?", s, "other", [x for x in SHAPES if x != s]),
        (f"is there a {probe} in the picture?", "yes" if present else "no", "yes/no", ["no" if present else "yes"]),
        (
            f"which side are the {c} objects on?",
            scene["side"],
            "other",
            ["right" if scene["side"] == "left" else "left"],
        ),
    ]
    return rng.sample(pool, 3)


def generate(
    root: str | Path, n_train: int, n_val: int, n_test: int, seed: int = 0, image_size: tuple[int, int] = (160, 120)
) -> dict[str, int]:
    """Write the synthetic study's raw files under ``root``; returns counts. Deterministic in ``seed``."""
    root = Path(root)
    rng = random.Random(seed)
    total = n_train + n_val + n_test
    if min(n_train, n_val, n_test) < 2:
        raise ValueError("need at least 2 images per split (CIDEr needs two images to have an IDF)")
    # Karpathy: the train2014 images form train, the val2014 images are split into restval/val/test.
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    karpathy, pretrain = [], []
    q_json = {"train2014": [], "val2014": []}
    a_json = {"train2014": [], "val2014": []}
    qid = 1
    for i, split in enumerate(splits):
        cocoid = 100000 + i
        # Put a quarter of the training images into val2014 as "restval", like the real split.
        folder = "train2014" if split == "train" and i % 4 != 3 else "val2014"
        k_split = "restval" if split == "train" and folder == "val2014" else split
        filename = f"COCO_{folder}_{cocoid:012d}.jpg"
        scene = make_scene(rng)
        path = root / "images" / folder / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        render(scene, rng, image_size).save(path, quality=92)
        karpathy.append(
            {
                "filepath": folder,
                "filename": filename,
                "cocoid": cocoid,
                "imgid": i,
                "split": k_split,
                "sentences": [{"raw": t.capitalize() + ".", "tokens": t.split()} for t in captions(scene, rng)],
            }
        )
        if split == "train":
            pretrain.append(
                {"filepath": folder, "filename": filename, "cocoid": cocoid, "caption": pretrain_caption(scene, rng)}
            )
        for question, answer, a_type, alternatives in questions(scene, rng):
            q_json[folder].append({"image_id": cocoid, "question": question.capitalize(), "question_id": qid})
            human = _noisy(answer, alternatives, rng)
            a_json[folder].append(
                {
                    "image_id": cocoid,
                    "question_id": qid,
                    "question_type": " ".join(question.split()[:2]),
                    "answer_type": a_type,
                    "multiple_choice_answer": answer,
                    "answers": [
                        {"answer": a, "answer_confidence": "yes", "answer_id": j + 1} for j, a in enumerate(human)
                    ],
                }
            )
            qid += 1
    _write_json(root / "dataset_coco.json", {"images": karpathy, "dataset": "coco"})
    _write_json(root / "pretrain_captions.json", pretrain)
    for folder in ("train2014", "val2014"):
        _write_json(
            root / f"v2_OpenEnded_mscoco_{folder}_questions.json",
            {
                "info": {"synthetic": True},
                "task_type": "Open-Ended",
                "data_type": "mscoco",
                "data_subtype": folder,
                "questions": q_json[folder],
            },
        )
        _write_json(
            root / f"v2_mscoco_{folder}_annotations.json",
            {
                "info": {"synthetic": True},
                "data_type": "mscoco",
                "data_subtype": folder,
                "annotations": a_json[folder],
            },
        )
    return {"images": total, "questions": qid - 1}


def corpus(root: str | Path) -> list[str]:
    """Every text of the synthetic study (captions, pre-training captions, questions, answers, prompts)."""
    from ..files import read_json

    root = Path(root)
    remedy = "delete it and rerun generate_synthetic_data"
    texts = ["a picture of", "Question: Answer:"]
    for img in read_json(root / "dataset_coco.json", remedy)["images"]:
        texts += [s["raw"] for s in img["sentences"]]
    texts += [r["caption"] for r in read_json(root / "pretrain_captions.json", remedy)]
    for folder in ("train2014", "val2014"):
        texts += [
            q["question"]
            for q in read_json(root / f"v2_OpenEnded_mscoco_{folder}_questions.json", remedy)["questions"]
        ]
        for a in read_json(root / f"v2_mscoco_{folder}_annotations.json", remedy)["annotations"]:
            texts += [x["answer"] for x in a["answers"]]
    return texts


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj))
    tmp.replace(path)
