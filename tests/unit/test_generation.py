"""Beam search with the key/value cache against full recomputation, and its length and output rules."""

from __future__ import annotations

import os

import pytest
import torch

from vlpeft.methods.base import build_method
from vlpeft.model.config import preset
from vlpeft.model.generation import GenerationConfig, generate
from vlpeft.model.mplug import MPlug

os.environ.setdefault("HF_HUB_OFFLINE", "1")


# Tiny models: one intra-op thread (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


CFG = preset("tiny", vocab_size=128)
BOS, EOS = CFG.bos_token_id, CFG.eos_token_id


def make_model(seed: int, eos_bias: float = 3.0) -> MPlug:
    """A random tiny model whose weights spread the logits (std 0.02 would make near-ties common) and whose EOS is
    likely enough that hypotheses end at different lengths; BOS is never predicted."""
    torch.manual_seed(seed)
    model = MPlug(CFG).eval()
    with torch.no_grad():
        for p in model.text_decoder.parameters():
            if p.dim() == 2:
                p.normal_(std=0.2)
        bias = model.text_decoder.cls.predictions.bias
        bias.normal_(std=0.5)
        bias[EOS] += eos_bias
        bias[BOS] = -1e4
    return model


def inputs(seed: int, batch: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, CFG.image_size, CFG.image_size, generator=g)
    prompt = torch.randint(1, CFG.vocab_size, (batch, 6), generator=g)
    mask = torch.ones_like(prompt)
    mask[1:, 4:] = 0  # padded prompts
    return images, prompt, mask


def run(model, seed: int, decoder_prompt=None, **gen) -> list[list[int]]:
    return generate(model, *inputs(seed), GenerationConfig(**gen), decoder_prompt=decoder_prompt)


@pytest.mark.parametrize("num_beams", [1, 5])
@pytest.mark.parametrize("decoder_prompt", [None, [7, 8, 9]])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cached_equals_recomputed(num_beams, decoder_prompt, seed):
    model = make_model(seed)
    kw = {"num_beams": num_beams, "min_new_tokens": 2, "max_new_tokens": 8}
    cached = run(model, seed, decoder_prompt, use_cache=True, **kw)
    recomputed = run(model, seed, decoder_prompt, use_cache=False, **kw)
    assert cached == recomputed
    assert all(len(c) >= 2 for c in cached)


@pytest.mark.parametrize("method", ["prefix", "prompt"])
@pytest.mark.parametrize("num_beams", [1, 5])
def test_cached_equals_recomputed_with_prefix_or_prompt_tuning(method, num_beams):
    model = make_model(3)
    options = {"size": 4, "reparam_hidden": 16} if method == "prefix" else {"size": 4}
    build_method(method, **options).attach(model)
    with torch.no_grad():  # a trained-looking prefix/prompt, not the initial one
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(std=0.5)
    plain = run(make_model(3), 3, [5], num_beams=num_beams, max_new_tokens=8)
    kw = {"num_beams": num_beams, "min_new_tokens": 1, "max_new_tokens": 8}
    cached = run(model, 3, [5], use_cache=True, **kw)
    assert cached == run(model, 3, [5], use_cache=False, **kw)
    assert cached != plain  # the method's vectors take part in generation


def test_min_and_max_new_tokens():
    model = make_model(4, eos_bias=6.0)
    free = run(model, 4, num_beams=5, min_new_tokens=0, max_new_tokens=12)
    assert min(len(s) for s in free) < 4  # EOS is likely: without a minimum some outputs end early
    for lo, hi in ((4, 12), (6, 6), (0, 3)):
        for beams in (1, 5):
            for out in run(model, 4, num_beams=beams, min_new_tokens=lo, max_new_tokens=hi):
                assert lo <= len(out) <= hi


def test_max_new_tokens_without_eos():
    model = make_model(5, eos_bias=-1e4)
    for beams in (1, 5):
        outs = run(model, 5, [3], num_beams=beams, max_new_tokens=7)
        assert all(len(o) == 7 for o in outs)


def argmax_loop(model: MPlug, seed: int, decoder_prompt: list[int], min_new: int, max_new: int) -> list[list[int]]:
    """Greedy decoding written out: recompute everything, take the argmax, stop at EOS."""
    images, prompt, mask = inputs(seed)
    out = []
    with torch.no_grad():
        for b in range(images.shape[0]):
            states, states_mask = model.encode(images[b : b + 1], prompt[b : b + 1], mask[b : b + 1])
            seq = [BOS, *decoder_prompt]
            new: list[int] = []
            for t in range(max_new):
                ids = torch.tensor([seq])
                logits = model.text_decoder(ids, torch.ones_like(ids), states, states_mask)[0, -1]
                if t < min_new:
                    logits[EOS] = float("-inf")
                tok = int(logits.argmax())
                if tok == EOS:
                    break
                new.append(tok)
                seq.append(tok)
            out.append(new)
    return out


@pytest.mark.parametrize("length_penalty", [0.0, 0.6])
@pytest.mark.parametrize("seed", [0, 6, 7])
def test_greedy_equals_argmax_loop(seed, length_penalty):
    model = make_model(seed)
    for decoder_prompt, lo in (([], 0), ([11, 12], 2)):
        expected = argmax_loop(model, seed, decoder_prompt, lo, 9)
        for use_cache in (True, False):
            got = run(
                model,
                seed,
                decoder_prompt,
                num_beams=1,
                min_new_tokens=lo,
                max_new_tokens=9,
                length_penalty=length_penalty,
                use_cache=use_cache,
            )
            assert got == expected


def test_greedy_stops_at_the_first_argmax_eos():
    """Peaked logits and a likely EOS: here one-beam search that kept the second-best token running after an argmax
    EOS would return a longer hypothesis with a better GNMT score (found by search); greedy decoding stops."""
    model = make_model(12, eos_bias=15.0)
    with torch.no_grad():
        model.text_decoder.cls.predictions.transform.LayerNorm.weight.mul_(6.0)
    expected = argmax_loop(model, 12, [], 0, 9)
    assert any(len(e) < 3 for e in expected)
    for use_cache in (True, False):
        got = run(model, 12, num_beams=1, min_new_tokens=0, max_new_tokens=9, length_penalty=1.0, use_cache=use_cache)
        assert got == expected


def test_output_excludes_bos_prompt_and_eos():
    model = make_model(8, eos_bias=4.0)
    prompt = [21, 22, 23]
    for beams in (1, 5):
        outs = run(model, 8, prompt, num_beams=beams, min_new_tokens=1, max_new_tokens=10)
        assert all(EOS not in o and BOS not in o for o in outs)
        assert any(len(o) < 10 for o in outs)  # some ended with EOS, which is not returned
    # The prompt is stripped: generation continues it rather than repeating it.
    greedy = run(model, 8, prompt, num_beams=1, max_new_tokens=10)
    assert greedy == argmax_loop(model, 8, prompt, 1, 10)


@pytest.mark.parametrize(
    "shape", [(2, 1, CFG.image_size, CFG.image_size), (2, 3, 32, 32), (3, CFG.image_size, CFG.image_size)]
)
def test_wrong_images_are_refused(shape):
    model = make_model(0)
    _, prompt, mask = inputs(0, batch=2)
    with pytest.raises(ValueError, match="expected images of shape"):
        generate(model, torch.randn(shape), prompt, mask, GenerationConfig(num_beams=2))
