"""Preparation of COCO Caption (Karpathy split) and VQAv2 into one simple record format per task and split.

Records are JSON lines:
- captions: ``{"image": <path relative to the image root>, "image_id": cocoid, "references": [str, ...]}``,
  one per image; Karpathy train = train + restval.
- VQA: ``{"question_id", "image", "image_id", "question", "answers": [10 str], "answer": <most common
  answer>, "answer_type"}``, assigned to a split by the Karpathy split of its image. Training targets every
  distinct one of the 10 ``answers``, weighted by its share (``datasets.answer_targets``); scoring uses all 10.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from ..files import record_digest

SPLITS = ("train", "val", "test")
KARPATHY_TO_SPLIT = {"train": "train", "restval": "train", "val": "val", "test": "test"}


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    return split


def _load_json(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    with path.open() as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None


def read_karpathy(path: str | Path) -> list[dict]:
    """Validated image entries of a Karpathy ``dataset_coco.json``."""
    data = _load_json(path)
    if not isinstance(data, dict) or "images" not in data:
        raise ValueError(f"{path}: expected a Karpathy split file with a top-level 'images' list")
    first: dict[int, int] = {}
    for i, img in enumerate(data["images"]):
        for key in ("filepath", "filename", "cocoid", "split", "sentences"):
            if key not in img:
                raise ValueError(f"{path}: images[{i}] (cocoid {img.get('cocoid')}) lacks the field {key!r}")
        if img["split"] not in KARPATHY_TO_SPLIT:
            raise ValueError(f"{path}: images[{i}] has unknown split {img['split']!r}")
        if not img["sentences"] or any("raw" not in s for s in img["sentences"]):
            raise ValueError(f"{path}: images[{i}] (cocoid {img['cocoid']}) has no sentences with 'raw' text")
        for j, s in enumerate(img["sentences"]):
            if not isinstance(s["raw"], str):
                raise ValueError(
                    f"{path}: images[{i}].sentences[{j}] (cocoid {img['cocoid']}): the caption is not a "
                    f"string: {s['raw']!r}"
                )
        j = first.setdefault(int(img["cocoid"]), i)
        if j != i:
            raise ValueError(
                f"{path}: images[{i}] repeats the cocoid {img['cocoid']} of images[{j}]; image ids must be unique"
            )
    return data["images"]


def caption_records(karpathy: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for img in karpathy:
        out[KARPATHY_TO_SPLIT[img["split"]]].append(
            {
                "image": f"{img['filepath']}/{img['filename']}",
                "image_id": int(img["cocoid"]),
                "references": [s["raw"].strip() for s in img["sentences"]],
            }
        )
    return out


def _require(path: str | Path, where: str, qid: object, record: dict, keys: tuple[str, ...]) -> None:
    """Fail naming the file, the record's position (``where``) and question, and the first of ``keys`` it lacks."""
    for key in keys:
        if key not in record:
            raise ValueError(f"{path}: {where} (question_id {qid}) lacks the field {key!r}")


def vqa_records(
    karpathy: list[dict], question_files: Iterable[str | Path], annotation_files: Iterable[str | Path]
) -> dict[str, list[dict]]:
    """Join VQAv2 questions and annotations and assign them to Karpathy splits by image."""
    image_split = {int(img["cocoid"]): KARPATHY_TO_SPLIT[img["split"]] for img in karpathy}
    image_path = {int(img["cocoid"]): f"{img['filepath']}/{img['filename']}" for img in karpathy}
    questions: dict[int, dict] = {}
    where: dict[int, str] = {}  # question id -> where it was first seen
    for qf in question_files:
        data = _load_json(qf)
        if "questions" not in data:
            raise ValueError(f"{qf}: expected a VQAv2 questions file with a 'questions' list")
        for i, q in enumerate(data["questions"]):
            _require(qf, f"questions[{i}]", q.get("question_id"), q, ("question_id", "question"))
            qid = int(q["question_id"])
            if qid in questions:
                raise ValueError(
                    f"{qf}: questions[{i}] repeats question_id {qid} (first in {where[qid]}); question "
                    "ids must be unique"
                )
            if not isinstance(q["question"], str):
                raise ValueError(
                    f"{qf}: questions[{i}] (question_id {qid}): the question is not a string: {q['question']!r}"
                )
            questions[qid], where[qid] = q, f"{qf} questions[{i}]"
    annotated: dict[int, str] = {}
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for af in annotation_files:
        data = _load_json(af)
        if "annotations" not in data:
            raise ValueError(f"{af}: expected a VQAv2 annotations file with an 'annotations' list")
        for i, a in enumerate(data["annotations"]):
            _require(af, f"annotations[{i}]", a.get("question_id"), a, ("question_id", "image_id", "answers"))
            for j, x in enumerate(a["answers"]):
                _require(af, f"annotations[{i}].answers[{j}]", a["question_id"], x, ("answer",))
            qid = int(a["question_id"])
            if qid in annotated:
                raise ValueError(
                    f"{af}: annotations[{i}] repeats question_id {qid} (first in {annotated[qid]}); "
                    "question ids must be unique"
                )
            annotated[qid] = f"{af} annotations[{i}]"
            answers = [x["answer"] for x in a["answers"]]
            bad = [x for x in answers if not isinstance(x, str)]
            if bad:
                raise ValueError(f"{af}: annotations[{i}] (question_id {qid}): an answer is not a string: {bad[0]!r}")
            if len(answers) != 10:
                raise ValueError(f"{af}: question {qid} has {len(answers)} answers, expected 10")
            if qid not in questions:
                raise ValueError(f"{af}: question {qid} has an annotation but no question")
            image_id = int(a["image_id"])
            if image_id not in image_split:
                continue  # images outside the Karpathy split file (none in the real data)
            out[image_split[image_id]].append(
                {
                    "question_id": qid,
                    "image": image_path[image_id],
                    "image_id": image_id,
                    "question": questions[qid]["question"],
                    "answers": answers,
                    "answer": a.get("multiple_choice_answer") or max(set(answers), key=answers.count),
                    "answer_type": a.get("answer_type", "other"),
                }
            )
    for split in out:
        out[split].sort(key=lambda r: r["question_id"])
    return out


def check_counts(records: dict[str, list[dict]], expected: dict[str, int] | None, what: str) -> None:
    """Fail with a clear message when split sizes differ from the expected ones (``None`` skips the check)."""
    if not expected:
        return
    wrong = {s: (len(records[s]), n) for s, n in expected.items() if len(records[s]) != n}
    if wrong:
        detail = ", ".join(f"{s}: found {got}, expected {n}" for s, (got, n) in wrong.items())
        raise ValueError(f"{what} split sizes differ from the expected ones ({detail}); incomplete download?")


def check_nonempty(records: dict[str, list[dict]], source: str | Path, what: str) -> None:
    """Every split has records: an empty one would fail every run (or train on nothing) much later."""
    empty = [s for s in SPLITS if s in records and not records[s]]
    if empty:
        raise ValueError(
            f"{what}: split(s) {empty} have no records; {source} assigns nothing to them (a wrong or "
            "incomplete input file?)"
        )


def write_jsonl(records: list[dict], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    tmp.replace(path)
    record_digest(path)  # the runs reading it take its content digest from the sidecar


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"records file not found: {path}")
    out = []
    with path.open("rb") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
                raise ValueError(
                    f"{path}, line {n}: not a JSON record ({e}); the file is truncated or corrupt: "
                    "delete it and rerun the stage that wrote it"
                ) from None
    return out
