"""The evaluation loader: loader workers change nothing but who reads and collates the batches."""

from __future__ import annotations

import pytest
import torch

from vlpeft.data.images import ImageStore
from vlpeft.data.prepare import read_jsonl
from vlpeft.evaluate import Evaluator
from vlpeft.model.config import for_tokenizer
from vlpeft.model.generation import GenerationConfig
from vlpeft.model.mplug import MPlug
from vlpeft.tokenizer import Tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_loader_workers_give_the_same_predictions_scores_order_and_rng_stream(tiny_study):
    """0 and 2 workers: the same batches (pixels, prompts, ids) in the eval shard's order, the same predictions and
    scores, and the same draws from the global RNG (a run's dropout after an evaluation must not depend on them)."""
    tok = Tokenizer(tiny_study / "vocab.txt")
    torch.manual_seed(0)
    model = MPlug(for_tokenizer("tiny", {}, tok))
    records = read_jsonl(tiny_study / "prep/vqa/val.jsonl")
    images = ImageStore(tiny_study / "raw/images", model.config.image_size, tiny_study / "images_64.npy")
    gen = GenerationConfig(num_beams=2, min_new_tokens=1, max_new_tokens=3)
    runs, batches = {}, {}
    for workers in (0, 2):
        ev = Evaluator("vqa", "val", records, images, tok, gen, {}, batch_size=3, num_workers=workers)
        batches[workers] = list(ev.loader)
        torch.manual_seed(1)
        preds = ev.predict(model, torch.device("cpu"))
        runs[workers] = (list(preds.items()), ev.score(preds), torch.rand(4))
    (preds0, scores0, rng0), (preds2, scores2, rng2) = runs[0], runs[2]
    assert len(records) > 2 * 3  # more batches than workers: the workers' batches interleave
    assert [k for b in batches[0] for k in b["ids"]] == [str(r["question_id"]) for r in records]
    assert len(batches[2]) == len(batches[0])
    for b0, b2 in zip(batches[0], batches[2]):
        assert b2["ids"] == b0["ids"]
        assert all(torch.equal(b2[k], b0[k]) for k in ("images", "prompt_ids", "prompt_mask"))
    assert [key for key, _ in preds0] == [str(r["question_id"]) for r in records]
    assert preds2 == preds0
    assert scores2 == scores0
    assert torch.equal(rng2, rng0)
