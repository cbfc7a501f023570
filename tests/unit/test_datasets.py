"""Training targets: VQA's weighted multi-answer objective (ALBEF, BLIP, official mPLUG), and its collation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlpeft.data.datasets import Collator, TrainSet, answer_targets
from vlpeft.model.config import preset
from vlpeft.model.mplug import MPlug
from vlpeft.tokenizer import Tokenizer, train_vocab

ANSWERS = ["red"] * 6 + ["blue"] * 3 + ["dark red"]


class NoImages:
    """An image store that hands out blank images (the targets are what is tested here)."""

    bad: frozenset = frozenset()

    def get(self, _path: str):
        import numpy as np

        return np.zeros((32, 32, 3), dtype=np.uint8)


def test_answer_targets_are_the_distinct_answers_weighted_by_their_share() -> None:
    # By hand: 6, 3 and 1 of the 10 annotators.
    assert answer_targets(ANSWERS) == [("red", 0.6), ("blue", 0.3), ("dark red", 0.1)]
    assert answer_targets(["two"] * 10) == [("two", 1.0)]
    # First appearance decides the order; the weights of a question sum to 1.
    targets = answer_targets(["no", "yes", "no", "No", "yes", "no", "no", "yes", "no", "no"])
    assert targets == [("no", 0.6), ("yes", 0.3), ("No", 0.1)]
    assert sum(w for _, w in targets) == pytest.approx(1.0)


def test_train_set_targets_per_task() -> None:
    vqa = [
        {"image": "a.jpg", "question": "what colour?", "answers": ANSWERS, "answer": "red"},
        {"image": "b.jpg", "question": "how many?", "answer": "two"},
    ]  # hand-made: no human answers
    data = TrainSet("vqa", vqa, [1, 0], NoImages(), {})
    assert data.targets(0) == [("two", 1.0)]
    assert data.targets(1) == [("red", 0.6), ("blue", 0.3), ("dark red", 0.1)]
    assert data[1]["targets"] == ["red", "blue", "dark red"] and data[1]["weights"] == [0.6, 0.3, 0.1]
    assert data[1]["prompt"] == "Question: what colour? Answer: "
    coco = [{"image": "a.jpg", "references": ["a red square", "a square"]}]
    caps = TrainSet("coco", coco, [[0, 1]], NoImages(), {})
    assert caps.targets(0) == [("a square", 1.0)] and caps[0]["targets"] == ["a square"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Tokenizer:
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    return Tokenizer(train_vocab(["what colour? red blue dark red how many? two a picture of"], path))


def test_collator_flattens_targets_with_counts_and_weights(tok: Tokenizer) -> None:
    batch = [
        {
            "image": NoImages().get(""),
            "prompt": "what colour?",
            "targets": ["red", "blue", "dark red"],
            "weights": [0.6, 0.3, 0.1],
        },
        {"image": NoImages().get(""), "prompt": "how many?", "targets": ["two"], "weights": [1.0]},
    ]
    out = Collator(tok, 16, 8)(batch)
    assert out["images"].shape[0] == out["prompt_ids"].shape[0] == 2
    assert out["target_counts"].tolist() == [3, 1]
    assert out["target_weights"].tolist() == pytest.approx([0.6, 0.3, 0.1, 1.0])
    assert out["target_ids"].shape[0] == 4
    assert out["target_ids"][2, : out["target_mask"][2].sum()].tolist() == tok.encode("dark red")


def test_encoders_run_once_per_question_and_states_repeat_per_answer(tok: Tokenizer) -> None:
    """Per-answer losses with the question's states repeated = the model run on each (question, answer) alone; the
    fusion module sees the 2 questions once, the decoder the 4 answers."""
    torch.manual_seed(0)
    model = MPlug(
        preset(
            "tiny", vocab_size=tok.vocab_size, hidden_dropout=0.0, attention_dropout=0.0, vision_attention_dropout=0.0
        )
    ).eval()
    s = model.config.image_size
    images = torch.randn(2, 3, s, s)
    prompt_ids, prompt_mask = tok.batch(["what colour?", "how many?"], 16)
    answers = [["red", "blue", "dark red"], ["two"]]
    target_ids, target_mask = tok.batch([a for q in answers for a in q], 8)
    seen: dict[str, list[int]] = {"fusion_encoder": [], "text_decoder": []}  # first argument: text / target ids
    hooks = [
        getattr(model, name).register_forward_hook(
            lambda _m, args, _out, name=name: seen[name].append(args[0].shape[0])
        )
        for name in seen
    ]
    with torch.no_grad():
        per_answer = model(
            images,
            prompt_ids,
            prompt_mask,
            target_ids,
            target_mask,
            reduction="none",
            target_counts=torch.tensor([3, 1]),
        )
    for h in hooks:
        h.remove()
    assert seen["fusion_encoder"] == [2] and seen["text_decoder"] == [4]
    assert per_answer.shape == (4,)
    rows = [(0, 0), (0, 1), (0, 2), (1, 3)]
    with torch.no_grad():
        alone = [
            model(
                images[q : q + 1],
                prompt_ids[q : q + 1],
                prompt_mask[q : q + 1],
                target_ids[r : r + 1, : target_mask[r].sum()],
                target_mask[r : r + 1, : target_mask[r].sum()],
                reduction="none",
            )[0]
            for q, r in rows
        ]
    torch.testing.assert_close(per_answer, torch.stack(alone), rtol=1e-5, atol=1e-5)


def test_pixels_travel_as_uint8_and_are_normalised_on_the_device_as_before(tok: Tokenizer) -> None:
    """The collator keeps uint8 pixels (a quarter of float32's bytes to copy); ``move`` normalises them with the
    operations ``to_tensor`` always used, so the CPU result is unchanged bit for bit."""
    from vlpeft.data.datasets import move
    from vlpeft.data.images import to_tensor

    pixels = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    batch = [{"image": p, "prompt": "what colour?", "targets": ["red"], "weights": [1.0]} for p in pixels]
    out = Collator(tok, 16, 8)(batch)
    assert out["images"].dtype == torch.uint8
    moved = move(out, torch.device("cpu"))
    assert moved["images"].dtype == torch.float32 and torch.equal(moved["images"], to_tensor(pixels))
    features = {"image": np.ones((5, 4), dtype=np.float32), "prompt": "x", "targets": ["red"], "weights": [1.0]}
    assert torch.equal(move(Collator(tok, 16, 8)([features]), torch.device("cpu"))["images"], torch.ones(1, 5, 4))
