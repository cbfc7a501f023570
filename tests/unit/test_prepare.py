"""Preparation of the Karpathy / VQAv2 files into records: splits, counts, and clear errors on bad input."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from vlpeft.data import prepare, stages, synthetic

N_TRAIN, N_VAL, N_TEST = 8, 2, 3
FOLDERS = ("train2014", "val2014")


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    synthetic.generate(root, N_TRAIN, N_VAL, N_TEST, seed=3)
    return root


@pytest.fixture
def copy(raw: Path, tmp_path: Path) -> Path:
    """A private copy of the JSON inputs (no images) that a test may break."""
    out = tmp_path / "raw"
    out.mkdir()
    for p in raw.glob("*.json"):
        shutil.copy(p, out / p.name)
    return out


def _qfiles(root: Path) -> list[Path]:
    return [root / f"v2_OpenEnded_mscoco_{f}_questions.json" for f in FOLDERS]


def _afiles(root: Path) -> list[Path]:
    return [root / f"v2_mscoco_{f}_annotations.json" for f in FOLDERS]


def _outs(tmp_path: Path, what: str) -> dict[str, Path]:
    return {s: tmp_path / what / f"{s}.jsonl" for s in ("train", "val", "test")}


def _karpathy(root: Path) -> list[dict]:
    return json.loads((root / "dataset_coco.json").read_text())["images"]


# -- captions ------------------------------------------------------------------------------------------------------
def test_caption_records_train_is_train_plus_restval(raw: Path, tmp_path: Path) -> None:
    outs = _outs(tmp_path, "coco")
    counts = stages.prepare_captions(
        raw / "dataset_coco.json", outs, expected={"train": N_TRAIN, "val": N_VAL, "test": N_TEST}
    )
    assert counts == {"train": N_TRAIN, "val": N_VAL, "test": N_TEST}
    images = _karpathy(raw)
    want = {"train": ("train", "restval"), "val": ("val",), "test": ("test",)}
    for split, path in outs.items():
        recs = prepare.read_jsonl(path)
        assert len(recs) == counts[split]
        kimgs = [img for img in images if img["split"] in want[split]]
        assert [r["image_id"] for r in recs] == [img["cocoid"] for img in kimgs]
        for r, img in zip(recs, kimgs):
            assert set(r) == {"image", "image_id", "references"}
            assert r["image"] == f"{img['filepath']}/{img['filename']}"
            assert (raw / "images" / r["image"]).is_file()
            assert r["references"] == [s["raw"].strip() for s in img["sentences"]]
    train = prepare.read_jsonl(outs["train"])
    # restval images come from the val2014 folder but train with the rest.
    assert {r["image"].split("/")[0] for r in train} == {"train2014", "val2014"}


def test_caption_count_mismatch_names_split_found_and_expected(raw: Path, tmp_path: Path) -> None:
    expected = {"train": N_TRAIN, "val": N_VAL + 1, "test": N_TEST}
    # Only the wrong split is listed.
    with pytest.raises(ValueError, match=re.escape(f"(val: found {N_VAL}, expected {N_VAL + 1}); incomplete")):
        stages.prepare_captions(raw / "dataset_coco.json", _outs(tmp_path, "coco"), expected=expected)
    assert not (tmp_path / "coco").exists()  # nothing written on a mismatch


@pytest.mark.parametrize(
    ("expected", "message"),
    [
        (None, None),
        ({}, None),
        ({"train": 2, "val": 1}, None),
        ({"train": 3}, "train: found 2, expected 3"),
        ({"train": 2, "test": 0}, "test: found 1, expected 0"),
        ({"train": 1, "val": 2}, "train: found 2, expected 1, val: found 1, expected 2"),
    ],
)
def test_check_counts(expected: dict | None, message: str | None) -> None:
    records = {"train": [{}, {}], "val": [{}], "test": [{}]}
    if message is None:
        prepare.check_counts(records, expected, "things")
    else:
        with pytest.raises(
            ValueError, match=re.escape(f"things split sizes differ from the expected ones ({message})")
        ):
            prepare.check_counts(records, expected, "things")


@pytest.mark.parametrize("field", ["filepath", "filename", "split", "sentences", "cocoid"])
def test_karpathy_entry_without_a_field_names_file_index_and_cocoid(copy: Path, field: str) -> None:
    path = copy / "dataset_coco.json"
    data = json.loads(path.read_text())
    cocoid = data["images"][2]["cocoid"]
    del data["images"][2][field]
    path.write_text(json.dumps(data))
    with pytest.raises(
        ValueError, match=re.escape(f"images[2] (cocoid {cocoid if field != 'cocoid' else None})")
    ) as e:
        prepare.read_karpathy(path)
    assert str(path) in str(e.value) and repr(field) in str(e.value)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["images"][1].update(sentences=[]), "images[1] (cocoid {cocoid}) has no sentences"),
        (lambda d: d["images"][1]["sentences"][3].pop("raw"), "images[1] (cocoid {cocoid}) has no sentences"),
        (lambda d: d["images"][1].update(split="trainval"), "images[1] has unknown split 'trainval'"),
        (lambda d: d.pop("images"), "expected a Karpathy split file"),
    ],
)
def test_bad_karpathy_file_names_the_file(copy: Path, mutate, message: str) -> None:
    path = copy / "dataset_coco.json"
    data = json.loads(path.read_text())
    cocoid = data["images"][1]["cocoid"]
    mutate(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=re.escape(message.format(cocoid=cocoid))) as e:
        prepare.read_karpathy(path)
    assert str(e.value).startswith(str(path))


def test_invalid_json_names_the_file(copy: Path) -> None:
    path = copy / "dataset_coco.json"
    path.write_text('{"images": [')
    with pytest.raises(ValueError, match=re.escape(f"{path} is not valid JSON")):
        prepare.read_karpathy(path)


def test_missing_karpathy_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "dataset_coco.json"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        stages.prepare_captions(path, _outs(tmp_path, "coco"))


@pytest.mark.parametrize("split", ["dev", "restval", "Train", ""])
def test_unknown_split_name_is_refused(raw: Path, tmp_path: Path, split: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"unknown split {split!r}")):
        prepare.check_split(split)
    with pytest.raises(ValueError, match="unknown split"):
        stages.prepare_captions(raw / "dataset_coco.json", {split: tmp_path / "x.jsonl"})
    assert not (tmp_path / "x.jsonl").exists()


# -- VQA -----------------------------------------------------------------------------------------------------------
def test_vqa_records_follow_the_split_of_their_image(raw: Path, tmp_path: Path) -> None:
    outs = _outs(tmp_path, "vqa")
    expected = {"train": 3 * N_TRAIN, "val": 3 * N_VAL, "test": 3 * N_TEST}
    counts = stages.prepare_vqa(raw / "dataset_coco.json", _qfiles(raw), _afiles(raw), outs, expected=expected)
    assert counts == expected
    split_of = {img["cocoid"]: prepare.KARPATHY_TO_SPLIT[img["split"]] for img in _karpathy(raw)}
    path_of = {img["cocoid"]: f"{img['filepath']}/{img['filename']}" for img in _karpathy(raw)}
    questions = {q["question_id"]: q for f in _qfiles(raw) for q in json.loads(f.read_text())["questions"]}
    annotations = {a["question_id"]: a for f in _afiles(raw) for a in json.loads(f.read_text())["annotations"]}
    seen = []
    for split, path in outs.items():
        recs = prepare.read_jsonl(path)
        assert len(recs) == expected[split]
        qids = [r["question_id"] for r in recs]
        assert qids == sorted(qids)
        for r in recs:
            a = annotations[r["question_id"]]
            assert set(r) == {"question_id", "image", "image_id", "question", "answers", "answer", "answer_type"}
            assert split_of[r["image_id"]] == split
            assert r["image"] == path_of[r["image_id"]]
            assert r["question"] == questions[r["question_id"]]["question"]
            assert r["answers"] == [x["answer"] for x in a["answers"]] and len(r["answers"]) == 10
            assert r["answer"] == a["multiple_choice_answer"]
            assert r["answer_type"] == a["answer_type"]
        assert Counter(r["image_id"] for r in recs) == {i: 3 for i, s in split_of.items() if s == split}
        seen += qids
    assert sorted(seen) == sorted(questions)


def test_vqa_answer_falls_back_to_the_most_common_answer(copy: Path) -> None:
    af = _afiles(copy)[0]
    data = json.loads(af.read_text())
    a = data["annotations"][0]
    del a["multiple_choice_answer"]
    a["answers"] = [{"answer": x} for x in ["blue"] * 3 + ["red"] * 6 + ["green"]]
    af.write_text(json.dumps(data))
    recs = prepare.vqa_records(prepare.read_karpathy(copy / "dataset_coco.json"), _qfiles(copy), _afiles(copy))
    rec = next(r for split in recs.values() for r in split if r["question_id"] == a["question_id"])
    assert rec["answer"] == "red"


@pytest.mark.parametrize("n_answers", [0, 9, 11])
def test_question_without_ten_answers_names_file_and_question(copy: Path, n_answers: int) -> None:
    af = _afiles(copy)[1]
    data = json.loads(af.read_text())
    a = data["annotations"][1]
    a["answers"] = (a["answers"] * 2)[:n_answers]
    af.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=re.escape(f"{af}: question {a['question_id']} has {n_answers} answers")):
        prepare.vqa_records(prepare.read_karpathy(copy / "dataset_coco.json"), _qfiles(copy), _afiles(copy))


def test_annotation_without_question_names_file_and_question(copy: Path) -> None:
    qf, af = _qfiles(copy)[0], _afiles(copy)[0]
    data = json.loads(qf.read_text())
    dropped = data["questions"].pop(0)["question_id"]
    qf.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=re.escape(f"{af}: question {dropped} has an annotation but no question")):
        prepare.vqa_records(prepare.read_karpathy(copy / "dataset_coco.json"), _qfiles(copy), _afiles(copy))


@pytest.mark.parametrize(
    ("kind", "field"),
    [
        ("questions", "question_id"),
        ("questions", "question"),
        ("annotations", "question_id"),
        ("annotations", "image_id"),
        ("annotations", "answers"),
    ],
)
def test_vqa_record_without_a_field_names_file_position_and_field(copy: Path, kind: str, field: str) -> None:
    path = (_qfiles(copy) if kind == "questions" else _afiles(copy))[1]
    data = json.loads(path.read_text())
    qid = data[kind][2]["question_id"] if field != "question_id" else None
    del data[kind][2][field]
    path.write_text(json.dumps(data))
    with pytest.raises(
        ValueError, match="^" + re.escape(f"{path}: {kind}[2] (question_id {qid}) lacks the field {field!r}") + "$"
    ):
        prepare.vqa_records(prepare.read_karpathy(copy / "dataset_coco.json"), _qfiles(copy), _afiles(copy))


def test_vqa_answer_without_its_text_names_file_position_and_question(copy: Path) -> None:
    af = _afiles(copy)[0]
    data = json.loads(af.read_text())
    a = data["annotations"][3]
    del a["answers"][4]["answer"]
    af.write_text(json.dumps(data))
    with pytest.raises(
        ValueError,
        match="^"
        + re.escape(f"{af}: annotations[3].answers[4] (question_id {a['question_id']}) lacks the field 'answer'")
        + "$",
    ):
        prepare.vqa_records(prepare.read_karpathy(copy / "dataset_coco.json"), _qfiles(copy), _afiles(copy))


@pytest.mark.parametrize(("which", "key"), [(0, "questions"), (1, "annotations")])
def test_vqa_file_of_the_wrong_kind_names_the_file(copy: Path, which: int, key: str) -> None:
    path = (_qfiles(copy) if which == 0 else _afiles(copy))[0]
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match=re.escape(f"{path}: expected a VQAv2 {key} file")):
        prepare.vqa_records(prepare.read_karpathy(copy / "dataset_coco.json"), _qfiles(copy), _afiles(copy))


def test_missing_vqa_file_names_the_path(copy: Path, tmp_path: Path) -> None:
    missing = _afiles(copy)[1]
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        stages.prepare_vqa(copy / "dataset_coco.json", _qfiles(copy), _afiles(copy), _outs(tmp_path, "vqa"))


def test_jsonl_round_trip_and_missing_file(tmp_path: Path) -> None:
    recs = [{"a": 1, "b": ["x", "y"]}, {"a": 2, "b": []}]
    path = tmp_path / "sub" / "r.jsonl"
    prepare.write_jsonl(recs, path)
    assert prepare.read_jsonl(path) == recs
    assert len(path.read_text().splitlines()) == 2
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "none.jsonl"))):
        prepare.read_jsonl(tmp_path / "none.jsonl")


# -- inputs that would train on wrong or no data ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d["images"][4].update(cocoid=d["images"][1]["cocoid"]),
            "images[4] repeats the cocoid {cocoid} of images[1]; image ids must be unique",
        ),
        (
            lambda d: d["images"][1]["sentences"][2].update(raw=["a", "list"]),
            "images[1].sentences[2] (cocoid {cocoid}): the caption is not a string: ['a', 'list']",
        ),
        (
            lambda d: d["images"][1]["sentences"][0].update(raw=None),
            "images[1].sentences[0] (cocoid {cocoid}): the caption is not a string: None",
        ),
    ],
)
def test_duplicate_image_ids_and_non_string_captions_are_refused(
    copy: Path, tmp_path: Path, mutate, message: str
) -> None:
    path = copy / "dataset_coco.json"
    data = json.loads(path.read_text())
    cocoid = data["images"][1]["cocoid"]
    mutate(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="^" + re.escape(f"{path}: {message.format(cocoid=cocoid)}")):
        stages.prepare_captions(path, _outs(tmp_path, "coco"))
    assert not (tmp_path / "coco").exists()


@pytest.mark.parametrize("kind", ["questions", "annotations"])
def test_duplicate_question_ids_are_refused_naming_both_places(copy: Path, tmp_path: Path, kind: str) -> None:
    files = _qfiles(copy) if kind == "questions" else _afiles(copy)
    data = json.loads(files[1].read_text())
    first = json.loads(files[0].read_text())[kind][2]
    data[kind][1]["question_id"] = first["question_id"]  # the val file repeats a train question's id
    files[1].write_text(json.dumps(data))
    with pytest.raises(
        ValueError,
        match="^"
        + re.escape(
            f"{files[1]}: {kind}[1] repeats question_id {first['question_id']} (first in {files[0]} {kind}[2])"
        ),
    ):
        stages.prepare_vqa(copy / "dataset_coco.json", _qfiles(copy), _afiles(copy), _outs(tmp_path, "vqa"))


def test_non_string_questions_and_answers_are_refused(copy: Path, tmp_path: Path) -> None:
    for kind, files, mutate, message in (
        ("questions", _qfiles(copy), lambda q: q.update(question=7), "the question is not a string: 7"),
        ("annotations", _afiles(copy), lambda a: a["answers"][3].update(answer=2), "an answer is not a string: 2"),
    ):
        original = files[0].read_text()
        data = json.loads(original)
        mutate(data[kind][0])
        files[0].write_text(json.dumps(data))
        with pytest.raises(
            ValueError, match=re.escape(f"{files[0]}: {kind}[0] (question_id ") + ".*" + re.escape(message)
        ):
            stages.prepare_vqa(copy / "dataset_coco.json", _qfiles(copy), _afiles(copy), _outs(tmp_path, "vqa"))
        files[0].write_text(original)


def test_an_empty_split_is_refused_naming_it(copy: Path, tmp_path: Path) -> None:
    path = copy / "dataset_coco.json"
    data = json.loads(path.read_text())
    data["images"] = [img for img in data["images"] if img["split"] != "val"]
    path.write_text(json.dumps(data))
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"COCO Caption (Karpathy) images: split(s) ['val'] have no records; {path} assigns nothing to them"
        ),
    ):
        stages.prepare_captions(path, _outs(tmp_path, "coco"))
    with pytest.raises(ValueError, match=re.escape("VQAv2 QA pairs: split(s) ['val'] have no records")):
        stages.prepare_vqa(path, _qfiles(copy), _afiles(copy), _outs(tmp_path, "vqa"))
    assert not (tmp_path / "coco").exists() and not (tmp_path / "vqa").exists()


@pytest.mark.parametrize("tail", [b'{"a": 2, "b": [', b"\xff\xfe\x00"], ids=["truncated", "binary"])
def test_unreadable_jsonl_names_the_file_the_line_and_what_to_do(tmp_path: Path, tail: bytes) -> None:
    path = tmp_path / "train.jsonl"
    prepare.write_jsonl([{"a": 1}], path)
    path.write_bytes(path.read_bytes() + tail)
    with pytest.raises(
        ValueError,
        match=re.escape(f"{path}, line 2: not a JSON record") + ".*delete it and rerun the stage that wrote it",
    ):
        prepare.read_jsonl(path)


def test_written_records_carry_their_content_digest(tmp_path: Path) -> None:
    from vlpeft.files import content_digest, sidecar_path

    path = tmp_path / "r.jsonl"
    prepare.write_jsonl([{"a": 1}], path)
    entry = json.loads(sidecar_path(path).read_text())
    assert entry["sha256"] == content_digest(path) == hashlib.sha256(path.read_bytes()).hexdigest()


# -- pre-training corpus ---------------------------------------------------------------------------------------------
def test_prepare_pretrain_gives_caption_and_prefix_lm_records(raw: Path, tmp_path: Path) -> None:
    source = json.loads((raw / "pretrain_captions.json").read_text())
    n = stages.prepare_pretrain(raw / "pretrain_captions.json", tmp_path / "pre.jsonl", seed=0)
    recs = prepare.read_jsonl(tmp_path / "pre.jsonl")
    assert n == len(recs) == 2 * len(source) == 2 * N_TRAIN  # every synthetic caption has >= 3 words
    for src, caption, prefix in zip(source, recs[0::2], recs[1::2]):
        image = f"{src['filepath']}/{src['filename']}"
        assert caption == {"image": image, "image_id": src["cocoid"], "references": [src["caption"]]}
        assert set(prefix) == {"image", "image_id", "prompt", "references"}
        assert (prefix["image"], prefix["image_id"]) == (image, src["cocoid"])
        target = prefix["references"][0]
        assert src["caption"].startswith(prefix["prompt"] + " ")
        assert prefix["prompt"] + " " + target == src["caption"]
        assert len(prefix["prompt"].split()) >= 1 and len(target.split()) >= 2


def test_prepare_pretrain_is_deterministic_and_skips_short_captions(tmp_path: Path) -> None:
    caps = ["one two three four five six seven", "a red circle on the left side", "too short"]
    src = tmp_path / "pre.json"
    src.write_text(
        json.dumps([{"filepath": "f", "filename": f"{i}.jpg", "cocoid": i, "caption": c} for i, c in enumerate(caps)])
    )

    def prompts(seed: int) -> list[str]:
        stages.prepare_pretrain(src, tmp_path / f"out{seed}.jsonl", seed=seed)
        return [r.get("prompt") for r in prepare.read_jsonl(tmp_path / f"out{seed}.jsonl")]

    first = prompts(0)
    assert len(first) == 5  # two records for each long caption, one for the two-word caption
    assert first == prompts(0)
    assert any(prompts(0) != prompts(s) for s in range(1, 6))


def test_extract_files_from_archives_and_plain_copies(tmp_path):
    import zipfile

    from vlpeft.data.stages import extract_files

    with zipfile.ZipFile(tmp_path / "a.zip", "w") as z:
        z.writestr("Questions/v2_q.json", '{"q": 1}')
    with zipfile.ZipFile(tmp_path / "b.zip", "w") as z:
        z.writestr("v2_a.json", '{"a": 2}')
    extract_files([tmp_path / "a.zip", tmp_path / "b.zip"], [tmp_path / "out/v2_q.json", tmp_path / "out/v2_a.json"])
    assert (tmp_path / "out/v2_q.json").read_text() == '{"q": 1}'
    assert (tmp_path / "out/v2_a.json").read_text() == '{"a": 2}'
    (tmp_path / "vocab.txt").write_text("[PAD]\n")
    extract_files([tmp_path / "vocab.txt"], [tmp_path / "model/vocab.txt"])
    assert (tmp_path / "model/vocab.txt").read_text() == "[PAD]\n"
    with pytest.raises(FileNotFoundError, match="missing.json"):
        extract_files([tmp_path / "a.zip", tmp_path / "b.zip"], [tmp_path / "out/missing.json"])
    assert not (tmp_path / "out/missing.json.tmp").exists()
