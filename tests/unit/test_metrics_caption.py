"""Tests for the caption metrics wrapper; java-free unless marked ``java``."""

from __future__ import annotations

import math

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from vlpeft.metrics import caption
from vlpeft.metrics.caption import SUPPORTED_METRICS, ptb_tokenize, score_captions

NO_JAVA_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr")

# Small pre-tokenised fixture with some n-gram overlap between images, so CIDEr's IDF is not trivial.
REFS = {
    "img1": ["a dog runs on the grass", "a brown dog running in a field", "the dog is running outside"],
    "img2": ["two people ride bikes down a street", "people riding bicycles on a road"],
    "img3": ["a plate of food on a table", "a table with a plate of pasta"],
}
HYPS = {
    "img1": "a dog running on the grass",
    "img2": "two people riding bikes on a street",
    "img3": "a plate of pasta on a wooden table",
}


def test_bleu1_by_hand() -> None:
    # img a: hyp "a b" vs ref "a b c d": unigram precision 2/2, brevity penalty exp(1 - 4/2) = e^-1.
    # img b: identical, precision 1 and no penalty.
    # Corpus: 6/6 matched unigrams, hyp length 6 vs ref length 8 -> BLEU-1 = exp(1 - 8/6) = exp(-1/3).
    out = score_captions({"a": ["a b c d"], "b": ["e f g h"]}, {"a": "a b", "b": "e f g h"}, ["BLEU-1"], False)
    # pycocoevalcap adds 1e-15 / 1e-9 smoothing terms, hence the relative tolerance.
    assert out["scores"]["BLEU-1"] == pytest.approx(100 * math.exp(-1 / 3), rel=1e-7)
    assert out["per_item"]["BLEU-1"]["a"] == pytest.approx(100 * math.exp(-1), rel=1e-7)
    assert out["per_item"]["BLEU-1"]["b"] == pytest.approx(100.0, rel=1e-7)


def test_rouge_l_by_hand() -> None:
    # LCS("a b c", "a x b y c z") = 3; P = 3/3, R = 3/6; F = (1 + 1.2^2) P R / (R + 1.2^2 P) = 1.22 / 1.94.
    out = score_captions({"a": ["a x b y c z"]}, {"a": "a b c"}, ["ROUGE-L"], tokenize=False)
    assert out["scores"]["ROUGE-L"] == pytest.approx(100 * 1.22 / 1.94)


def test_cider_identical_by_hand() -> None:
    # Two images with disjoint vocabularies: every n-gram has df = 1 of 2, the same IDF log 2 on both sides, so
    # each n-gram cosine is 1 and no length penalty applies: CIDEr-D = 10 * mean_n(1) = 10 -> reported 1000.
    out = score_captions({"a": ["a b c d"], "b": ["e f g h"]}, {"a": "a b c d", "b": "e f g h"}, ["CIDEr"], False)
    assert out["scores"]["CIDEr"] == pytest.approx(1000.0)
    assert out["per_item"]["CIDEr"] == pytest.approx({"a": 1000.0, "b": 1000.0})


def test_matches_pycocoevalcap_scorers_times_100() -> None:
    out = score_captions(REFS, HYPS, metrics=NO_JAVA_METRICS, tokenize=False)
    gts = {k: list(v) for k, v in REFS.items()}
    res = {k: [v] for k, v in HYPS.items()}
    bleu, bleu_items = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, rouge_items = Rouge().compute_score(gts, res)
    cider, cider_items = Cider().compute_score(gts, res)
    for n in range(4):
        assert out["scores"][f"BLEU-{n + 1}"] == 100 * bleu[n]
        assert list(out["per_item"][f"BLEU-{n + 1}"].values()) == [100 * s for s in bleu_items[n]]
    assert out["scores"]["ROUGE-L"] == 100 * rouge
    assert list(out["per_item"]["ROUGE-L"].values()) == [100 * s for s in rouge_items]
    assert out["scores"]["CIDEr"] == 100 * cider
    assert list(out["per_item"]["CIDEr"].values()) == [100 * s for s in cider_items]
    # Metrics in the requested order, per-item keyed by image id.
    assert list(out["scores"]) == list(NO_JAVA_METRICS)
    assert set(out["per_item"]["CIDEr"]) == set(REFS)


def test_perfect_beats_wrong_and_identical_scores_top() -> None:
    perfect = {k: v[0] for k, v in REFS.items()}
    wrong = {"img1": "a red car parked", "img2": "a cat sleeping", "img3": "an airplane in the sky"}
    good = score_captions(REFS, perfect, metrics=NO_JAVA_METRICS, tokenize=False)["scores"]
    bad = score_captions(REFS, wrong, metrics=NO_JAVA_METRICS, tokenize=False)["scores"]
    for name in NO_JAVA_METRICS:
        assert good[name] > bad[name], name
    # A hypothesis equal to one of its references is perfect for BLEU and ROUGE-L.
    for name in ("BLEU-1", "BLEU-4", "ROUGE-L"):
        assert good[name] == pytest.approx(100.0, rel=1e-6), name


def test_hypothesis_as_one_element_list_and_duplicate_metrics() -> None:
    as_list = {k: [v] for k, v in HYPS.items()}
    a = score_captions(REFS, as_list, metrics=("CIDEr", "CIDEr"), tokenize=False)
    b = score_captions(REFS, HYPS, metrics=("CIDEr",), tokenize=False)
    assert a == b


def test_input_errors() -> None:
    with pytest.raises(ValueError, match=r"references but no hypothesis: 'img3'"):
        score_captions(REFS, {k: v for k, v in HYPS.items() if k != "img3"}, tokenize=False)
    with pytest.raises(ValueError, match=r"hypothesis but no references: 'extra'"):
        score_captions(REFS, {**HYPS, "extra": "x"}, metrics=["ROUGE-L"], tokenize=False)
    with pytest.raises(ValueError, match="no hypotheses"):
        score_captions(REFS, {}, tokenize=False)
    with pytest.raises(ValueError, match="exactly one hypothesis"):
        score_captions(REFS, {**HYPS, "img1": ["one", "two"]}, metrics=["ROUGE-L"], tokenize=False)
    with pytest.raises(ValueError, match="exactly one hypothesis"):
        score_captions(REFS, {**HYPS, "img1": []}, metrics=["ROUGE-L"], tokenize=False)
    with pytest.raises(ValueError, match="no reference captions"):
        score_captions({**REFS, "img1": []}, HYPS, metrics=["ROUGE-L"], tokenize=False)
    with pytest.raises(ValueError, match="unknown caption metric"):
        score_captions(REFS, HYPS, metrics=["SPICE"], tokenize=False)


def test_cider_needs_two_images() -> None:
    one_ref, one_hyp = {"img1": REFS["img1"]}, {"img1": HYPS["img1"]}
    with pytest.raises(ValueError, match="CIDEr needs at least 2 images"):
        score_captions(one_ref, one_hyp, metrics=["CIDEr"], tokenize=False)
    # Other metrics are fine on a single image.
    assert score_captions(one_ref, one_hyp, metrics=["ROUGE-L"], tokenize=False)["scores"]["ROUGE-L"] > 0


def test_missing_java_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(caption.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="'java' is not on PATH"):
        score_captions(REFS, HYPS, metrics=["CIDEr"], tokenize=True)
    with pytest.raises(RuntimeError, match="METEOR needs a Java runtime"):
        score_captions(REFS, HYPS, metrics=["METEOR"], tokenize=False)
    with pytest.raises(RuntimeError, match="PTB tokenisation needs a Java runtime"):
        ptb_tokenize(REFS)


@pytest.mark.java
def test_ptb_tokenize_lowercases_strips_punctuation_and_keeps_alignment() -> None:
    # "\r" and U+2028 end a line for the Java tokenizer; unsanitised they would shift later captions' images.
    out = ptb_tokenize({"a": ["A Dog, running!", "x\ry"], "b": ["p\u2028q", "The END."]})
    assert out == {"a": ["a dog running", "x y"], "b": ["p q", "the end"]}


@pytest.mark.java
def test_tokenized_pipeline_matches_manual_tokens_and_reused_refs() -> None:
    raw_refs = {k: [v[0].capitalize() + ".", *v[1:]] for k, v in REFS.items()}
    raw_hyps = {k: v.upper() + "!" for k, v in HYPS.items()}
    full = score_captions(raw_refs, raw_hyps, metrics=NO_JAVA_METRICS, tokenize=True)
    manual = score_captions(REFS, HYPS, metrics=NO_JAVA_METRICS, tokenize=False)
    reused = score_captions(ptb_tokenize(raw_refs), raw_hyps, metrics=NO_JAVA_METRICS, references_tokenized=True)
    assert full == manual
    assert reused == manual


@pytest.mark.java
def test_meteor() -> None:
    perfect = {k: v[0] for k, v in REFS.items()}
    wrong = {"img1": "a red car parked", "img2": "a cat sleeping", "img3": "an airplane in the sky"}
    good = score_captions(REFS, perfect, metrics=["METEOR"], tokenize=False)
    bad = score_captions(REFS, wrong, metrics=["METEOR"], tokenize=False)
    assert good["scores"]["METEOR"] > bad["scores"]["METEOR"]
    assert good["per_item"]["METEOR"] == pytest.approx(dict.fromkeys(REFS, 100.0))
    assert 0.0 <= bad["scores"]["METEOR"] < 100.0


def test_supported_metrics_listed() -> None:
    assert set(SUPPORTED_METRICS) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"}
