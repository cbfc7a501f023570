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


def test_every_split_scored_with_one_java_run_as_split_by_split(tiny_study, monkeypatch):
    """COCO: the references of all splits in one PTB tokenizer run, the predictions of all splits in another; the
    scores equal those of one run per split (the tokenizer treats each caption on its own)."""
    from vlpeft import evaluate

    tok = Tokenizer(tiny_study / "vocab.txt")
    images = ImageStore(tiny_study / "raw/images", 64, tiny_study / "images_64.npy")
    gen = GenerationConfig(num_beams=1, min_new_tokens=1, max_new_tokens=3)
    records = {s: read_jsonl(tiny_study / f"prep/coco/{s}.jsonl") for s in ("val", "test")}
    words = ["a", "dog", "red", "on the", "Grass.", "two CATS,", "sits"]
    preds = {
        s: {
            str(r["image_id"]): " ".join(words[(i + j) % len(words)] for j in range(1 + i % 4))
            for i, r in enumerate(recs)
        }
        for s, recs in records.items()
    }
    alone = {
        s: Evaluator("coco", s, recs, images, tok, gen, {}, metrics=["BLEU-4", "CIDEr"]) for s, recs in records.items()
    }
    expected = {s: ev.score(preds[s]) for s, ev in alone.items()}

    runs = []
    real = evaluate.ptb_tokenize
    monkeypatch.setattr(evaluate, "ptb_tokenize", lambda caps: runs.append(len(caps)) or real(caps))
    refs = evaluate.tokenize_references(records)
    together = {
        s: Evaluator("coco", s, recs, images, tok, gen, {}, metrics=["BLEU-4", "CIDEr"], refs_tokenized=refs[s])
        for s, recs in records.items()
    }
    assert refs == {s: ev.refs_tokenized for s, ev in alone.items()}
    assert evaluate.score_splits(together, preds) == expected
    assert runs == [sum(map(len, records.values())), sum(map(len, preds.values()))]  # two Java runs in all
    assert len({v["CIDEr"] for v in expected.values()}) == 2  # the splits' scores differ: no mix-up goes unseen
