"""Tests for the official-VQAv2-accuracy reimplementation; expected values are worked out by hand in comments."""

from __future__ import annotations

import pytest

from vlpeft.metrics.vqa import normalize_answer, process_punctuation, question_accuracy, vqa_accuracy


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # Number words become digits; capitals go before the lookup.
        ("two", "2"),
        ("Two", "2"),
        ("none", "0"),
        # Articles are dropped wherever they are.
        ("a dog", "dog"),
        ("The Two Dogs", "2 dogs"),
        # '!' touches no space, so it becomes a space, which split() then discards.
        ("yes!", "yes"),
        # Period not followed by a digit: removed.
        ("yes.", "yes"),
        # Period followed by a digit survives.
        ("1.5", "1.5"),
        # digit-comma-digit anywhere in the text: every punctuation symbol is deleted, not spaced.
        ("3,000", "3000"),
        # '-' touches no space and no digit-comma-digit: replaced by a space.
        ("t-shirt", "t shirt"),
        # '-' touches a space: deleted, and split() collapses the double space.
        ("x - y", "x y"),
        # ',' touches a space: deleted, keeping the words glued as they were.
        ("red, white", "red white"),
        ("dont", "don't"),
        ("isnt", "isn't"),
        # Newlines/tabs become spaces and the ends are stripped.
        ("\tyes\n", "yes"),
    ],
)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


def test_official_quirks_are_reproduced() -> None:
    # "(?!<=\d)" is a lookahead, not the intended "(?<!\d)" lookbehind, so the period after a digit goes too.
    assert normalize_answer("2.") == "2"
    # re.UNICODE (== 32) passed as `count`: only the first 32 of 40 periods are removed, 8 remain.
    assert process_punctuation("." * 40 + "a") == "." * 8 + "a"
    # Capitalised contraction keys can never match after lower-casing: "Im" stays "im".
    assert normalize_answer("Im") == "im"
    # The official map sends "somebody'd" the wrong way round, to "somebodyd".
    assert normalize_answer("somebody'd") == "somebodyd"
    # digit-comma-digit elsewhere in the text makes '-' vanish instead of becoming a space.
    assert normalize_answer("t-shirt 1,2") == "tshirt 12"


def test_partial_agreement_leave_one_out() -> None:
    # 3 of 10 say "red". Leaving out one of the 7 others keeps 3 matches -> min(1, 3/3) = 1;
    # leaving out one of the 3 "red" keeps 2 -> 2/3. Mean = (7 * 1 + 3 * 2/3) / 10 = 9 / 10 = 0.9.
    answers = ["red"] * 3 + ["blue"] * 7
    assert question_accuracy("red", answers) == pytest.approx(0.9)
    # 1 of 10: 9 subsets keep 1 match -> 1/3, 1 subset keeps 0. Mean = 9 * (1/3) / 10 = 0.3.
    assert question_accuracy("blue", ["blue"] + ["red"] * 9) == pytest.approx(0.3)
    # 2 of 10: 8 subsets keep 2 -> 2/3, 2 subsets keep 1 -> 1/3. Mean = (16/3 + 2/3) / 10 = 0.6.
    assert question_accuracy("blue", ["blue"] * 2 + ["red"] * 8) == pytest.approx(0.6)
    # 4 of 10: every subset keeps >= 3 -> 1.
    assert question_accuracy("blue", ["blue"] * 4 + ["red"] * 6) == pytest.approx(1.0)
    # No human said it.
    assert question_accuracy("green", answers) == 0.0


def test_normalisation_applies_when_answers_disagree() -> None:
    # Answers differ, so "two" and every gt normalise to "2": 10 matches, each subset keeps 9 -> 1.
    assert question_accuracy("two", ["2"] * 5 + ["two"] * 5) == pytest.approx(1.0)
    # "the dog", "a dog" and "dog" all become "dog": 5 matches -> every subset keeps >= 4 -> 1.
    assert question_accuracy("the dog", ["a dog"] * 3 + ["dog"] * 2 + ["cat"] * 5) == pytest.approx(1.0)
    # "yes!" -> "yes", 9 "yes" matches -> 1.
    assert question_accuracy("yes!", ["yes"] * 9 + ["no"]) == pytest.approx(1.0)
    # "3,000" -> "3000"; 2 "3000" + 1 "3,000" are 3 matches -> 0.9 as in the "red" case.
    assert question_accuracy("3,000", ["3000"] * 2 + ["3,000"] + ["3"] * 7) == pytest.approx(0.9)
    # "t-shirt" -> "t shirt": 3 matches -> 0.9.
    assert question_accuracy("t-shirt", ["t shirt"] * 3 + ["shirt"] * 7) == pytest.approx(0.9)
    # "dont" -> "don't": 3 matches -> 0.9.
    assert question_accuracy("dont", ["don't"] * 3 + ["no"] * 7) == pytest.approx(0.9)
    # Case folds when answers disagree: "Yes" -> "yes", 9 matches -> 1.
    assert question_accuracy("Yes", ["yes"] * 9 + ["no"]) == pytest.approx(1.0)
    # One "yes." among nine "yes" makes the set size 2, so everything is normalised and "yes." counts too.
    assert question_accuracy("yes", ["yes"] * 9 + ["yes."]) == pytest.approx(1.0)


def test_no_normalisation_when_all_answers_identical() -> None:
    # All ten identical: neither side is normalised, so case, punctuation and number words matter.
    assert question_accuracy("Yes", ["yes"] * 10) == 0.0
    assert question_accuracy("yes.", ["yes"] * 10) == 0.0
    assert question_accuracy("2", ["two"] * 10) == 0.0
    # Only newline/tab replacement and strip happen: " yes\n" -> "yes", 10 matches -> 1.
    assert question_accuracy(" yes\n", ["yes"] * 10) == pytest.approx(1.0)
    # Identity is judged after stripping: "yes " and "yes" are the same answer, still no normalisation.
    assert question_accuracy("YES", ["yes "] * 5 + ["yes"] * 5) == 0.0


def test_question_accuracy_input_errors() -> None:
    with pytest.raises(ValueError, match="at least one human answer"):
        question_accuracy("yes", [])
    with pytest.raises(TypeError):
        question_accuracy("yes", "yes")


def _fixture() -> tuple[dict, dict, dict]:
    references = {
        1: ["red"] * 3 + ["blue"] * 7,  # "red" -> 0.9
        2: ["2"] * 5 + ["two"] * 5,  # "two" -> 1.0
        3: ["no"] * 10,  # "yes" -> 0.0
        4: ["yes"] * 10,  # "yes" -> 1.0
    }
    predictions = {1: "red", 2: "two", 3: "yes", 4: "yes"}
    answer_types = {1: "other", 2: "number", 3: "yes/no", 4: "yes/no"}
    return predictions, references, answer_types


def test_vqa_accuracy_overall_and_per_type() -> None:
    predictions, references, answer_types = _fixture()
    result = vqa_accuracy(predictions, references, answer_types)
    # Overall = 100 * (0.9 + 1 + 0 + 1) / 4 = 72.5.
    assert result["overall"] == pytest.approx(72.5)
    assert result["n"] == 4
    assert result["per_question"] == pytest.approx({1: 90.0, 2: 100.0, 3: 0.0, 4: 100.0})
    # yes/no = 100 * (0 + 1) / 2 = 50; number = 100; other = 90.
    assert result["per_answer_type"] == pytest.approx({"other": 90.0, "number": 100.0, "yes/no": 50.0})


def test_vqa_accuracy_without_answer_types() -> None:
    predictions, references, _ = _fixture()
    result = vqa_accuracy(predictions, references)
    assert result["per_answer_type"] == {}
    assert result["overall"] == pytest.approx(72.5)


def test_vqa_accuracy_id_mismatch_errors() -> None:
    predictions, references, answer_types = _fixture()
    missing = {k: v for k, v in predictions.items() if k != 3}
    with pytest.raises(ValueError, match=r"no prediction for question id\(s\) 3"):
        vqa_accuracy(missing, references)
    extra = {**predictions, 99: "yes"}
    with pytest.raises(ValueError, match=r"no reference answers for question id\(s\) 99"):
        vqa_accuracy(extra, references)
    # String and int ids are not silently conflated.
    with pytest.raises(ValueError, match="'1'"):
        vqa_accuracy({str(k): v for k, v in predictions.items()}, references)
    with pytest.raises(ValueError, match=r"answer_types has no entry for question id\(s\) 4"):
        vqa_accuracy(predictions, references, {k: v for k, v in answer_types.items() if k != 4})
    with pytest.raises(ValueError, match="at least one question"):
        vqa_accuracy({}, {})


def test_vqa_accuracy_names_question_with_bad_answers() -> None:
    with pytest.raises(ValueError, match="question id 7"):
        vqa_accuracy({7: "yes"}, {7: []})
