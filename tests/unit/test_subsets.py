"""Nested fractional subsets: nested, seeded, exact sizes, and over image-caption pairs for COCO."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from vlpeft.data import prepare, stages, subsets

RATIOS = [0.01, 0.02, 0.04, 0.08, 0.1, 0.2, 0.4, 0.8, 1.0]


@pytest.mark.parametrize("n", [1, 7, 100, 1234])
def test_subsets_are_nested(n: int) -> None:
    chosen = {r: set(subsets.subset(n, r, seed=0)) for r in RATIOS}
    for small in RATIOS:
        for large in RATIOS:
            if small <= large:
                assert chosen[small] <= chosen[large], (n, small, large)
    assert chosen[1.0] == set(range(n))


@pytest.mark.parametrize(
    ("n", "ratio", "size"),
    [
        (1000, 0.01, 10),
        (1000, 0.1, 100),
        (1000, 0.25, 250),
        (1000, 1.0, 1000),
        (1000, 1, 1000),
        (50, 0.01, 1),  # round(0.5) = 0, at least one item
        (10, 0.001, 1),
        (10, 0.15, 2),  # round(1.5) = 2 (banker's rounding)
        (10, 0.25, 2),  # round(2.5) = 2
        (10, 0.35, 4),  # round(3.5) = 4
        (3, 0.5, 2),
        (566_747, 0.01, 5667),
    ],
)
def test_subset_size_is_round_ratio_times_n_at_least_one(n: int, ratio: float, size: int) -> None:
    idx = subsets.subset(n, ratio, seed=0)
    assert len(idx) == size == max(1, round(ratio * n))
    assert idx == sorted(set(idx))  # sorted, no repeats
    assert all(0 <= i < n for i in idx)


def test_subset_is_deterministic_for_a_seed_and_differs_for_another() -> None:
    a = subsets.subset(1000, 0.1, seed=0)
    assert a == subsets.subset(1000, 0.1, seed=0)
    b = subsets.subset(1000, 0.1, seed=1)
    assert len(b) == len(a) and a != b
    assert len(set(a) & set(b)) < 50  # independent draws share about 10 items, not most


def test_subset_is_spread_over_the_data() -> None:
    idx = subsets.subset(10_000, 0.1, seed=0)
    assert min(idx) < 500 and max(idx) > 9500  # a permutation, not the first items


@pytest.mark.parametrize("ratio", [0, 0.0, -0.1, 1.0001, 1.5, 2, True, False, "0.5", None, float("nan")])
def test_bad_ratio_is_refused(ratio) -> None:
    with pytest.raises(ValueError, match=re.escape(f"data ratio must be in (0, 1], got {ratio!r}")):
        subsets.check_ratio(ratio)
    with pytest.raises(ValueError, match="data ratio"):
        subsets.subset(10, ratio, seed=0)


@pytest.mark.parametrize("ratio", [1e-9, 0.5, 1, 1.0])
def test_good_ratio_is_returned_as_float(ratio) -> None:
    assert subsets.check_ratio(ratio) == float(ratio)
    assert isinstance(subsets.check_ratio(ratio), float)


def test_caption_pairs() -> None:
    records = [{"references": ["a", "b"]}, {"references": []}, {"references": ["c", "d", "e"]}]
    assert subsets.caption_pairs(records) == [(0, 0), (0, 1), (2, 0), (2, 1), (2, 2)]


def _caption_records(tmp_path: Path) -> tuple[Path, list[dict]]:
    # 20 images with 5, 4 or 6 captions each: pairs, not images, are sampled.
    recs = [
        {"image": f"train2014/{i}.jpg", "image_id": i, "references": [f"cap {i}.{j}" for j in range(4 + i % 3)]}
        for i in range(20)
    ]
    path = tmp_path / "train.jsonl"
    prepare.write_jsonl(recs, path)
    return path, recs


@pytest.mark.parametrize("ratio", [0.01, 0.1, 0.3, 1.0])
def test_make_subset_coco_samples_image_caption_pairs(tmp_path: Path, ratio: float) -> None:
    path, recs = _caption_records(tmp_path)
    n_captions = sum(len(r["references"]) for r in recs)
    assert n_captions == 99
    out = tmp_path / "sub" / f"coco_{ratio}.json"
    n = stages.make_subset("coco", path, ratio, seed=0, out=out)
    assert n == max(1, round(ratio * n_captions))
    data = subsets.read_subset(out)
    assert data == json.loads(out.read_text())
    assert {k: data[k] for k in ("task", "ratio", "seed", "size")} == {
        "task": "coco",
        "ratio": ratio,
        "seed": 0,
        "size": n,
    }
    items = data["items"]
    assert len(items) == n
    assert all(isinstance(it, list) and len(it) == 2 for it in items)
    assert all(0 <= rec < len(recs) and 0 <= ref < len(recs[rec]["references"]) for rec, ref in items)
    assert len({tuple(it) for it in items}) == n
    pairs = subsets.caption_pairs(recs)
    assert [tuple(it) for it in items] == [pairs[i] for i in subsets.subset(len(pairs), ratio, 0)]


def test_make_subset_coco_is_nested_over_pairs(tmp_path: Path) -> None:
    path, _ = _caption_records(tmp_path)
    chosen = {}
    for ratio in (0.1, 0.3, 0.6, 1.0):
        stages.make_subset("coco", path, ratio, seed=4, out=tmp_path / f"{ratio}.json")
        chosen[ratio] = {tuple(it) for it in subsets.read_subset(tmp_path / f"{ratio}.json")["items"]}
    assert chosen[0.1] <= chosen[0.3] <= chosen[0.6] <= chosen[1.0]
    assert len(chosen[1.0]) == 99


def test_make_subset_vqa_samples_qa_records(tmp_path: Path) -> None:
    recs = [{"question_id": i, "answers": ["yes"] * 10} for i in range(40)]
    prepare.write_jsonl(recs, tmp_path / "train.jsonl")
    n = stages.make_subset("vqa", tmp_path / "train.jsonl", 0.25, seed=2, out=tmp_path / "s.json")
    data = subsets.read_subset(tmp_path / "s.json")
    assert n == data["size"] == 10
    assert data["items"] == subsets.subset(40, 0.25, 2)


def test_make_subset_refuses_unknown_task_and_bad_ratio(tmp_path: Path) -> None:
    path, _ = _caption_records(tmp_path)
    with pytest.raises(ValueError, match="unknown task 'gqa'"):
        stages.make_subset("gqa", path, 0.5, seed=0, out=tmp_path / "s.json")
    with pytest.raises(ValueError, match="data ratio"):
        stages.make_subset("coco", path, 0, seed=0, out=tmp_path / "s.json")
    assert not (tmp_path / "s.json").exists()


def test_missing_subset_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "none.json"))):
        subsets.read_subset(tmp_path / "none.json")


@pytest.mark.parametrize("task", ["coco", "vqa"])
def test_no_training_pairs_means_no_subset(tmp_path: Path, task: str) -> None:
    """An empty prepared training split would give an empty subset, then a run of zero steps (or a crash)."""
    (tmp_path / "train.jsonl").write_text("")
    with pytest.raises(
        ValueError,
        match=re.escape(f"{tmp_path / 'train.jsonl'} has no training pairs to draw the ratio 0.1 subset from"),
    ):
        stages.make_subset(task, tmp_path / "train.jsonl", 0.1, seed=0, out=tmp_path / "s.json")
    with pytest.raises(ValueError, match="no items"):
        subsets.subset(0, 0.5, 0)
    assert not (tmp_path / "s.json").exists()


def test_unreadable_subset_file_names_the_file_and_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "ratio0.1.json"
    path.write_text('{"task": "vqa", "items": [1, 2')
    with pytest.raises(ValueError, match=re.escape(f"{path} is not valid JSON") + ".*rerun make_subset"):
        subsets.read_subset(path)
