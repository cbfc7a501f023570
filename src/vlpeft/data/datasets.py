"""Training and evaluation datasets over prepared records, and their collation into model inputs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..tasks import COCO
from ..tokenizer import Tokenizer
from .images import ImageStore, normalise

CAPTION_PROMPT = "a picture of"
VQA_PROMPT = "Question: {question} Answer: "
log = logging.getLogger("vlpeft.datasets")


def prompt_for(task: str, record: dict, caption_prompt: str = CAPTION_PROMPT, vqa_prompt: str = VQA_PROMPT) -> str:
    if "prompt" in record:  # prefix-LM pre-training records carry their own text input
        return record["prompt"]
    if task == COCO.name:
        return caption_prompt
    return vqa_prompt.format(question=record["question"])


def _drop_bad(split: str, what: str, entries: list, image_of: Callable[[Any], str], images: ImageStore) -> list:
    """``entries`` less those whose image ``images.bad`` lists; logs the count and refuses to leave none."""
    if not images.bad:
        return entries
    kept = [e for e in entries if image_of(e) not in images.bad]
    dropped = len(entries) - len(kept)
    if dropped:
        log.warning(
            "split %s: dropped %d of %d %s whose image is listed as bad in the image cache %s",
            split,
            dropped,
            len(entries),
            what,
            images.cache,
        )
    if dropped and not kept:
        raise ValueError(
            f"split {split}: all {dropped} {what} have images listed as bad in the image cache "
            f"{images.cache}; nothing is left to use"
        )
    return kept


def drop_bad_train_items(task: str, records: list[dict], items: list, images: ImageStore) -> list:
    """Training ``items`` (see ``TrainSet``) whose record's image is not listed as bad in the image cache."""
    return _drop_bad(
        "train", "training pairs", items, lambda it: records[it[0] if task == COCO.name else it]["image"], images
    )


def drop_bad_records(split: str, records: list[dict], images: ImageStore) -> list[dict]:
    """Evaluation ``records`` whose image is not listed as bad in the image cache."""
    return _drop_bad(split, "records", records, lambda r: r["image"], images)


def answer_targets(answers: list[str]) -> list[tuple[str, float]]:
    """Every distinct human answer of a question with its share of the answers, in order of first appearance.

    The generative VQA objective of ALBEF, BLIP and official mPLUG, which the study follows ("following [3], [4]"):
    an answer given by 6 of 10 annotators is a target of weight 0.6. The weights of a question sum to 1.
    """
    counts: dict[str, int] = {}
    for a in answers:
        counts[a] = counts.get(a, 0) + 1
    return [(a, n / len(answers)) for a, n in counts.items()]


class TrainSet(Dataset):
    """(image, prompt, weighted targets) for the subset's pairs. ``items`` are record indices (VQA: a question with
    all its human answers as targets, see ``answer_targets``) or [record index, reference index] pairs (captions: one
    reference, weight 1)."""

    def __init__(self, task: str, records: list[dict], items: list, images: ImageStore, prompts: dict) -> None:
        self.task, self.records, self.items, self.images, self.prompts = task, records, items, images, prompts

    def __len__(self) -> int:
        return len(self.items)

    def targets(self, i: int) -> list[tuple[str, float]]:
        """The (target text, weight) pairs of item ``i`` (no image decoding)."""
        item = self.items[i]
        if self.task == COCO.name:
            return [(self.records[item[0]]["references"][item[1]], 1.0)]
        r = self.records[item]
        # A record without the human answers (hand-made) trains on its one answer.
        return answer_targets(r["answers"]) if r.get("answers") else [(r["answer"], 1.0)]

    def __getitem__(self, i: int) -> dict:
        item = self.items[i]
        r = self.records[item[0] if self.task == COCO.name else item]
        texts, weights = zip(*self.targets(i))
        return {
            "image": self.images.get(r["image"]),
            "prompt": prompt_for(self.task, r, **self.prompts),
            "targets": list(texts),
            "weights": list(weights),
        }


class EvalSet(Dataset):
    """(image, prompt, id) for every record of an evaluation split."""

    def __init__(self, task: str, records: list[dict], images: ImageStore, prompts: dict) -> None:
        self.task, self.records, self.images, self.prompts = task, records, images, prompts

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        r = self.records[i]
        key = str(r["image_id"]) if self.task == COCO.name else str(r["question_id"])
        return {"image": self.images.get(r["image"]), "prompt": prompt_for(self.task, r, **self.prompts), "id": key}


class Collator:
    """Images, prompts and (training) the targets of every sample, flattened: ``target_ids`` has one row per target,
    ``target_counts[i]`` says how many rows belong to sample ``i`` and ``target_weights`` gives each row's weight."""

    def __init__(self, tokenizer: Tokenizer, max_prompt: int, max_target: int) -> None:
        self.tok, self.max_prompt, self.max_target = tokenizer, max_prompt, max_target

    def __call__(self, batch: list[dict]) -> dict:
        visual = np.stack([b["image"] for b in batch])
        # uint8 pixels [B, S, S, 3] from an ImageStore, kept uint8 (``move`` normalises them on the device), or
        # float32 ViT features [B, T, D] from a FeatureStore
        out = {"images": torch.from_numpy(visual)}
        out["prompt_ids"], out["prompt_mask"] = self.tok.batch([b["prompt"] for b in batch], self.max_prompt)
        if "targets" in batch[0]:
            texts = [t for b in batch for t in b["targets"]]
            out["target_ids"], out["target_mask"] = self.tok.batch(texts, self.max_target)
            out["target_weights"] = torch.tensor([w for b in batch for w in b["weights"]], dtype=torch.float32)
            out["target_counts"] = torch.tensor([len(b["targets"]) for b in batch], dtype=torch.long)
        if "id" in batch[0]:
            out["ids"] = [b["id"] for b in batch]
        return out


def move(batch: dict, device: torch.device) -> dict:
    """The batch on ``device``; uint8 pixels are normalised there (``normalise``), features pass as they are."""
    out = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
    if out.get("images") is not None and out["images"].dtype == torch.uint8:
        out["images"] = normalise(out["images"])
    return out
