"""Evaluation by generation: captions scored with CIDEr-D & co., answers with the official VQA accuracy.

Works on one process or sharded over a torchrun group (each rank generates for its share; rank 0 scores).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset

from .data.datasets import Collator, EvalSet, move
from .data.images import ImageStore
from .metrics.caption import ptb_tokenize, score_captions
from .metrics.vqa import vqa_accuracy
from .model.generation import GenerationConfig, generate
from .tasks import COCO
from .tasks import TASK_METRIC as PRIMARY_METRIC  # noqa: F401  (train.py reads it from here)
from .tokenizer import Tokenizer

log = logging.getLogger("vlpeft.evaluate")


class EvaluationStopped(Exception):
    """The evaluation was given up at a batch boundary because the run was asked to stop (every rank raises it)."""


class Evaluator:
    """Holds one split's records, tokenised references and generation settings; ``__call__`` scores a model."""

    def __init__(
        self,
        task: str,
        split: str,
        records: list[dict],
        images: ImageStore,
        tokenizer: Tokenizer,
        gen: GenerationConfig,
        prompts: dict,
        batch_size: int = 32,
        metrics: list[str] | None = None,
        max_prompt: int = 40,
        rank: int = 0,
        world: int = 1,
        num_workers: int = 0,
        pin_memory: bool = False,
        refs_tokenized: dict[str, list[str]] | None = None,
    ) -> None:
        self.task, self.split, self.records, self.tok, self.gen = task, split, records, tokenizer, gen
        self.metrics = list(metrics or ([COCO.metric] if task == COCO.name else []))
        self.rank, self.world = rank, world
        data = EvalSet(task, records, images, prompts)
        shard = Subset(data, list(range(rank, len(data), world)))
        # Loader workers as in training (``num_workers``, the config's ``train.num_workers``): they read and collate
        # the next batches while the device generates. Batches come back in the shard's order whatever the workers.
        # No generator of its own: each pass draws its workers' base seed from the global RNG, one draw with or
        # without workers, as it always did (a run's dropout stream after an evaluation stays what it was).
        self.loader = DataLoader(
            shard,
            batch_size=batch_size,
            shuffle=False,
            collate_fn=Collator(tokenizer, max_prompt, 8),
            num_workers=num_workers,
            pin_memory=pin_memory,
            prefetch_factor=4 if num_workers else None,
            persistent_workers=False,
        )
        # Batches of the largest shard (rank 0's): every rank asks ``stop`` this many times, so that the ranks' checks
        # pair up even where shards differ by one record.
        self.stop_checks = math.ceil(math.ceil(len(data) / world) / batch_size)
        # Rank 0 scores: the COCO references tokenised once (Java), here or by the caller for several splits at once
        # (:func:`tokenize_references`).
        self.refs_tokenized = refs_tokenized
        if task == COCO.name and rank == 0 and refs_tokenized is None:
            self.refs_tokenized = ptb_tokenize(references(records))

    @torch.no_grad()
    def predict(
        self, model: torch.nn.Module, device: torch.device, stop: Callable[[], bool] | None = None
    ) -> dict[str, str]:
        """Every rank's predictions (gathered). ``stop`` (collective: every rank calls it, ``stop_checks`` times) is
        asked before each batch; when it says so, every rank raises :class:`EvaluationStopped`."""
        was_training = model.training
        model.eval()
        preds: dict[str, str] = {}
        checks = 0
        try:
            for batch in self.loader:
                if stop is not None:
                    checks += 1
                    if stop():
                        raise EvaluationStopped(f"{self.task}/{self.split}: stopped after {checks - 1} batch(es)")
                batch = move(batch, device)
                out = generate(model, batch["images"], batch["prompt_ids"], batch["prompt_mask"], self.gen)
                for key, ids in zip(batch["ids"], out):
                    preds[key] = self.tok.decode(ids)
            while stop is not None and checks < self.stop_checks:  # a shorter shard answers the others' checks
                checks += 1
                if stop():
                    raise EvaluationStopped(f"{self.task}/{self.split}: stopped at the end")
        finally:
            model.train(was_training)
        if self.world > 1:
            gathered: list[dict] = [None] * self.world  # type: ignore[list-item]
            dist.all_gather_object(gathered, preds)
            preds = {k: v for part in gathered for k, v in part.items()}
        return preds

    def score(self, preds: dict[str, str], hyps_tokenized: dict[str, list[str]] | None = None) -> dict[str, float]:
        """Rank 0: the split's scores. ``hyps_tokenized``: the COCO predictions already PTB-tokenised (by
        :func:`score_splits`, one Java run for every split); None tokenises them here."""
        if self.task == COCO.name:
            if hyps_tokenized is None:
                result = score_captions(
                    self.refs_tokenized, preds, metrics=self.metrics, tokenize=True, references_tokenized=True
                )
            else:
                result = score_captions(self.refs_tokenized, hyps_tokenized, metrics=self.metrics, tokenize=False)
            return dict(result["scores"])
        refs = {str(r["question_id"]): r["answers"] for r in self.records}
        types = {str(r["question_id"]): r["answer_type"] for r in self.records}
        result = vqa_accuracy(preds, refs, types)
        scores = {"accuracy": result["overall"]}
        scores.update({f"accuracy/{t}": v for t, v in result["per_answer_type"].items()})
        return scores

    def __call__(
        self, model: torch.nn.Module, device: torch.device, stop: Callable[[], bool] | None = None
    ) -> tuple[dict[str, float] | None, dict]:
        t0 = time.time()
        preds = self.predict(model, device, stop)
        if self.rank != 0:
            return None, preds
        scores = self.score(preds)
        log.info(
            "eval %s/%s: %s (%d items, %.1fs)",
            self.task,
            self.split,
            ", ".join(f"{k}={v:.2f}" for k, v in scores.items()),
            len(preds),
            time.time() - t0,
        )
        return scores, preds


def references(records: list[dict]) -> dict[str, list[str]]:
    """COCO records -> image id (str) -> reference captions, as the scorers key them."""
    return {str(r["image_id"]): r["references"] for r in records}


def tokenize_references(records: dict[str, list[dict]]) -> dict[str, dict[str, list[str]]]:
    """Split -> its COCO references PTB-tokenised, every split in one Java run (each run costs a JVM start)."""
    joint = {(split, image_id): caps for split, recs in records.items() for image_id, caps in references(recs).items()}
    tokenized = ptb_tokenize(joint)
    return {
        split: {image_id: tokenized[(split, image_id)] for image_id in references(recs)}
        for split, recs in records.items()
    }


def score_splits(
    evaluators: dict[str, Evaluator], preds: dict[str, dict[str, str]], seconds: dict[str, float] | None = None
) -> dict[str, dict[str, float]]:
    """Rank 0: split -> scores of ``preds[split]``, each split's line logged. The COCO predictions of every split are
    PTB-tokenised in one Java run rather than one per split (the tokenizer treats each caption on its own, so the
    scores are those of separate runs). ``seconds``: each split's generation time, for the log."""
    t0 = time.time()
    coco = [s for s in preds if evaluators[s].task == COCO.name]
    tokenized: dict = ptb_tokenize({(s, k): [v] for s in coco for k, v in preds[s].items()}) if coco else {}
    out: dict[str, dict[str, float]] = {}
    for split, split_preds in preds.items():
        ev = evaluators[split]
        if split in coco:
            out[split] = ev.score(split_preds, {k: tokenized[(split, k)] for k in split_preds})
        else:
            out[split] = ev.score(split_preds)
        took = (seconds or {}).get(split, 0.0) + time.time() - t0
        log.info(
            "eval %s/%s: %s (%d items, %.1fs)",
            ev.task,
            split,
            ", ".join(f"{k}={v:.2f}" for k, v in out[split].items()),
            len(split_preds),
            took,
        )
    return out
