"""Data stages the workflow calls (one function per rule): prepare records, make subsets, cache images."""

from __future__ import annotations

import logging
import random
from pathlib import Path

from ..files import read_json, record_digest
from ..tasks import COCO, VQA
from . import prepare, subsets
from .images import build_cache

log = logging.getLogger("vlpeft.data")


def prepare_captions(karpathy_json: str | Path, out: dict[str, str | Path], expected: dict | None = None) -> dict:
    """Karpathy split file -> caption records for train (train + restval), val and test."""
    recs = prepare.caption_records(prepare.read_karpathy(karpathy_json))
    prepare.check_nonempty(recs, karpathy_json, "COCO Caption (Karpathy) images")
    prepare.check_counts(recs, expected, "COCO Caption (Karpathy) images")
    for split, path in out.items():
        prepare.write_jsonl(recs[prepare.check_split(split)], path)
    return {s: len(r) for s, r in recs.items()}


def prepare_vqa(
    karpathy_json: str | Path,
    question_files: list,
    annotation_files: list,
    out: dict[str, str | Path],
    expected: dict | None = None,
) -> dict:
    recs = prepare.vqa_records(prepare.read_karpathy(karpathy_json), question_files, annotation_files)
    prepare.check_nonempty(recs, f"{karpathy_json} with {[str(f) for f in annotation_files]}", "VQAv2 QA pairs")
    prepare.check_counts(recs, expected, "VQAv2 QA pairs")
    for split, path in out.items():
        prepare.write_jsonl(recs[prepare.check_split(split)], path)
    return {s: len(r) for s, r in recs.items()}


def prepare_pretrain(pretrain_json: str | Path, out: str | Path, seed: int = 0) -> int:
    """The synthetic pre-training corpus as records for mPLUG's two generative objectives.

    Per image: a captioning record (the task prompt, then the whole caption) and a prefix-LM record (the text
    encoder reads the caption's first words as its prompt, the decoder continues), as mPLUG's PrefixLM
    pre-training does. The latter teaches the model to read its text input, which the VQA prompt relies on.
    """
    rng = random.Random(seed)
    data = read_json(pretrain_json, "delete it and rerun generate_synthetic_data")
    recs = []
    for r in data:
        image = f"{r['filepath']}/{r['filename']}"
        words = r["caption"].split()
        recs.append({"image": image, "image_id": int(r["cocoid"]), "references": [r["caption"]]})
        if len(words) >= 3:
            k = rng.randint(1, len(words) - 2)
            recs.append(
                {
                    "image": image,
                    "image_id": int(r["cocoid"]),
                    "prompt": " ".join(words[:k]),
                    "references": [" ".join(words[k:])],
                }
            )
    prepare.write_jsonl(recs, out)
    return len(recs)


def make_subset(task: str, train_records: str | Path, ratio: float, seed: int, out: str | Path) -> int:
    """Nested subset over image-caption pairs (coco) or QA pairs (vqa)."""
    recs = prepare.read_jsonl(train_records)
    if task == COCO.name:
        pairs = subsets.caption_pairs(recs)
    elif task == VQA.name:
        pairs = recs
    else:
        raise ValueError(f"unknown task {task!r}")
    if not pairs:
        raise ValueError(
            f"{train_records} has no training pairs to draw the ratio {ratio} subset from; delete it and "
            "rerun the preparation that wrote it"
        )
    chosen = subsets.subset(len(pairs), ratio, seed)
    items = [list(pairs[i]) for i in chosen] if task == COCO.name else chosen
    subsets.write_subset(out, task, ratio, seed, items)
    return len(items)


def cache_images(
    image_root: str | Path, record_files: list, size: int, out: str | Path, skip_bad: bool = False
) -> dict:
    paths = sorted({r["image"] for f in record_files for r in prepare.read_jsonl(f)})
    return build_cache(image_root, paths, size, out, skip_bad=skip_bad)


def extract_files(sources: list[str | Path], outputs: list[str | Path]) -> None:
    """Write each output (found by file name) from the first source archive holding it; a single non-archive
    source is copied as it is (a plain download such as vocab.txt or mplug_base.pth), as is a single source with the
    output's own name even if it is a zip file (torch.save writes zip archives). Atomic per file."""
    import shutil
    import zipfile

    for out in map(Path, outputs):
        tmp = out.with_name(out.name + ".tmp")
        out.parent.mkdir(parents=True, exist_ok=True)
        for src in map(Path, sources):
            if src.name == out.name or not zipfile.is_zipfile(src):
                if len(sources) == 1:
                    shutil.copyfile(src, tmp)
                    break
                continue
            with zipfile.ZipFile(src) as z:
                members = [m for m in z.namelist() if Path(m).name == out.name]
                if members:
                    with z.open(members[0]) as fin, tmp.open("wb") as fout:
                        shutil.copyfileobj(fin, fout)
                    break
        else:
            raise FileNotFoundError(f"{out.name} is in none of {[str(s) for s in sources]}")
        tmp.replace(out)
        record_digest(out)  # runs reading it (vocabulary, initial weights) take its digest from the sidecar
        log.info("wrote %s", out)
