"""VQAv2 accuracy, reproducing the official GT-Vision-Lab/VQA evaluation exactly.

The reference is ``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` at the commit "Fixed processing answers bug"
(a013f00, 2021), the latest version of that file. Its quirks are kept on purpose, because published VQAv2 numbers
were produced with them:

* Answers are normalised (punctuation, number words, articles, contractions) only when the ten human answers are
  not all identical; when they are, the raw stripped strings are compared, so case and punctuation matter.
* The period-stripping regex is written ``(?!<=\\d)(\\.)(?!\\d)`` (a negative *lookahead* for the two characters
  ``<=`` rather than the intended lookbehind ``(?<!\\d)``), so it removes every period not followed by a digit.
* ``re.UNICODE`` is passed positionally to ``Pattern.sub`` and so acts as ``count=32``: at most 32 periods go.
* Contraction keys with capitals (``"Im"``, ``"Ive"``, ...) can never match, as text is lower-cased first, and
  ``"somebody'd"`` maps to ``"somebodyd"`` (the reverse of every other entry).
* The official tool ran on Python 2, where ``\\d`` in a pattern compiled without ``re.UNICODE`` only matches
  ASCII digits; the patterns here are compiled with ``re.ASCII`` to keep that.

A question's accuracy is the mean over the ten leave-one-out subsets of ``min(1, #matches / 3)``, where matches are
the human answers in the subset that equal the prediction.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping, Sequence

__all__ = [
    "normalize_answer",
    "process_digit_article",
    "process_punctuation",
    "question_accuracy",
    "vqa_accuracy",
]

# Official contractions map, verbatim (including its unreachable capitalised keys and the reversed "somebody'd").
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't",
    "arent": "aren't",
    "cant": "can't",
    "couldve": "could've",
    "couldnt": "couldn't",
    "couldn'tve": "couldn't've",
    "couldnt've": "couldn't've",
    "didnt": "didn't",
    "doesnt": "doesn't",
    "dont": "don't",
    "hadnt": "hadn't",
    "hadnt've": "hadn't've",
    "hadn'tve": "hadn't've",
    "hasnt": "hasn't",
    "havent": "haven't",
    "hed": "he'd",
    "hed've": "he'd've",
    "he'dve": "he'd've",
    "hes": "he's",
    "howd": "how'd",
    "howll": "how'll",
    "hows": "how's",
    "Id've": "I'd've",
    "I'dve": "I'd've",
    "Im": "I'm",
    "Ive": "I've",
    "isnt": "isn't",
    "itd": "it'd",
    "itd've": "it'd've",
    "it'dve": "it'd've",
    "itll": "it'll",
    "let's": "let's",
    "maam": "ma'am",
    "mightnt": "mightn't",
    "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've",
    "mightve": "might've",
    "mustnt": "mustn't",
    "mustve": "must've",
    "neednt": "needn't",
    "notve": "not've",
    "oclock": "o'clock",
    "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at",
    "shant": "shan't",
    "shed've": "she'd've",
    "she'dve": "she'd've",
    "she's": "she's",
    "shouldve": "should've",
    "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll",
    "somebodys": "somebody's",
    "someoned": "someone'd",
    "someoned've": "someone'd've",
    "someone'dve": "someone'd've",
    "someonell": "someone'll",
    "someones": "someone's",
    "somethingd": "something'd",
    "somethingd've": "something'd've",
    "something'dve": "something'd've",
    "somethingll": "something'll",
    "thats": "that's",
    "thered": "there'd",
    "thered've": "there'd've",
    "there'dve": "there'd've",
    "therere": "there're",
    "theres": "there's",
    "theyd": "they'd",
    "theyd've": "they'd've",
    "they'dve": "they'd've",
    "theyll": "they'll",
    "theyre": "they're",
    "theyve": "they've",
    "twas": "'twas",
    "wasnt": "wasn't",
    "wed've": "we'd've",
    "we'dve": "we'd've",
    "weve": "we've",
    "werent": "weren't",
    "whatll": "what'll",
    "whatre": "what're",
    "whats": "what's",
    "whatve": "what've",
    "whens": "when's",
    "whered": "where'd",
    "wheres": "where's",
    "whereve": "where've",
    "whod": "who'd",
    "whod've": "who'd've",
    "who'dve": "who'd've",
    "wholl": "who'll",
    "whos": "who's",
    "whove": "who've",
    "whyll": "why'll",
    "whyre": "why're",
    "whys": "why's",
    "wont": "won't",
    "wouldve": "would've",
    "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've",
    "yall": "y'all",
    "yall'll": "y'all'll",
    "y'allll": "y'all'll",
    "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've",
    "youd": "you'd",
    "youd've": "you'd've",
    "you'dve": "you'd've",
    "youll": "you'll",
    "youre": "you're",
    "youve": "you've",
}

MANUAL_MAP: dict[str, str] = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}

ARTICLES: tuple[str, ...] = ("a", "an", "the")

# Order matters: replacements are applied one symbol at a time, as in the official loop.
PUNCT: tuple[str, ...] = tuple(';/[]"{}()=+\\_-><@`,?!')

# re.ASCII: the official tool ran on Python 2, where a pattern without re.UNICODE has ASCII-only \d.
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)", re.ASCII)
# The official "(?!<=" typo is kept: it is a lookahead, not a lookbehind (see the module docstring).
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)", re.ASCII)
# The official passes re.UNICODE as the positional `count` of Pattern.sub; its integer value is the count.
_PERIOD_STRIP_COUNT = int(re.UNICODE)

# Official leave-one-out rule: an answer is fully correct once this many other humans gave it.
_HUMANS_FOR_FULL_CREDIT = 3


def process_punctuation(text: str) -> str:
    """Apply the official ``processPunctuation`` step.

    Each punctuation symbol is deleted when it touches a space anywhere in the input (or when the input contains a
    digit-comma-digit group such as ``3,000``), and replaced by a space otherwise; then periods not followed by a
    digit are removed (at most 32 of them, reproducing the official ``count`` quirk).

    Args:
        text: An answer string, already stripped.

    Returns:
        The processed string (may contain extra spaces; ``process_digit_article`` splits on whitespace).
    """
    out = text
    # The conditions look at the *original* text while replacements accumulate on `out`, as in the official code.
    has_digit_comma = _COMMA_STRIP.search(text) is not None
    for p in PUNCT:
        if (p + " " in text or " " + p in text) or has_digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, count=_PERIOD_STRIP_COUNT)


def process_digit_article(text: str) -> str:
    """Apply the official ``processDigitArticle`` step.

    Lower-cases, splits on whitespace, maps number words ``none``/``zero``..``ten`` to digits, drops the articles
    ``a``/``an``/``the`` and expands apostrophe-less contractions (``dont`` -> ``don't``).

    Args:
        text: An answer string, usually the output of ``process_punctuation``.

    Returns:
        The words joined by single spaces.
    """
    words = [MANUAL_MAP.get(word, word) for word in text.lower().split()]
    words = [word for word in words if word not in ARTICLES]
    return " ".join(CONTRACTIONS.get(word, word) for word in words)


def _strip(text: str) -> str:
    """Official pre-cleaning applied to every answer: newlines and tabs become spaces, then strip."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_answer(text: str) -> str:
    """Normalise an answer the way the official tool does when the human answers disagree.

    Args:
        text: A predicted or human answer.

    Returns:
        The answer after newline/tab cleaning, ``process_punctuation`` and ``process_digit_article``.
    """
    return process_digit_article(process_punctuation(_strip(text)))


def question_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Official VQA accuracy of one prediction against the human answers of one question.

    Args:
        prediction: The model's answer.
        answers: The human answers (VQAv2 has exactly 10; any non-zero count is accepted).

    Returns:
        The accuracy in ``[0, 1]``: the mean over leave-one-out subsets of ``min(1, #matches / 3)``.

    Raises:
        ValueError: If ``answers`` is empty.
        TypeError: If the prediction or an answer is not a string.
    """
    if isinstance(answers, str):
        raise TypeError("answers must be a sequence of strings, not a single string")
    if len(answers) == 0:
        raise ValueError("question_accuracy needs at least one human answer, got an empty list")
    if not isinstance(prediction, str):
        raise TypeError(f"prediction must be a string, got {type(prediction).__name__}")
    for answer in answers:
        if not isinstance(answer, str):
            raise TypeError(f"human answers must be strings, got {type(answer).__name__}")

    pred = _strip(prediction)
    gts = [_strip(answer) for answer in answers]
    # Normalisation only when the humans disagree; the set is taken after stripping, as in the official code.
    if len(set(gts)) > 1:
        gts = [process_digit_article(process_punctuation(answer)) for answer in gts]
        pred = process_digit_article(process_punctuation(pred))

    accs = []
    for i in range(len(gts)):
        # Leave out answer i by position: the official compares answer dicts that differ in their answer_id.
        matches = sum(1 for j, answer in enumerate(gts) if j != i and answer == pred)
        accs.append(min(1, float(matches) / _HUMANS_FOR_FULL_CREDIT))
    return float(sum(accs)) / len(accs)


def _id_list(ids: set, limit: int = 5) -> str:
    """Format a few ids for an error message."""
    shown = sorted(ids, key=repr)[:limit]
    more = f" (and {len(ids) - limit} more)" if len(ids) > limit else ""
    return ", ".join(repr(i) for i in shown) + more


def vqa_accuracy(
    predictions: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    answer_types: Mapping[Hashable, str] | None = None,
) -> dict:
    """Official VQAv2 accuracy over a set of questions.

    Args:
        predictions: Question id -> predicted answer.
        references: Question id -> human answers (10 per question in VQAv2). Must have the same ids as
            ``predictions`` (ids are compared as given: ``1`` and ``"1"`` differ).
        answer_types: Optional question id -> answer type (``"yes/no"``, ``"number"``, ``"other"``); when given it
            must cover every question.

    Returns:
        A dict with ``"overall"`` (0-100), ``"per_answer_type"`` (type -> 0-100; empty without ``answer_types``),
        ``"per_question"`` (id -> 0-100) and ``"n"`` (number of questions). Values are unrounded; the official
        tool reports them rounded to 2 decimals.

    Raises:
        ValueError: If there are no questions, if a prediction or reference is missing for some question id, or if
            ``answer_types`` lacks a question id.
    """
    pred_ids = set(predictions)
    ref_ids = set(references)
    if pred_ids != ref_ids:
        parts = []
        if ref_ids - pred_ids:
            parts.append(f"no prediction for question id(s) {_id_list(ref_ids - pred_ids)}")
        if pred_ids - ref_ids:
            parts.append(f"no reference answers for question id(s) {_id_list(pred_ids - ref_ids)}")
        raise ValueError("predictions and references cover different questions: " + "; ".join(parts))
    if not ref_ids:
        raise ValueError("vqa_accuracy needs at least one question, got none")
    if answer_types is not None and ref_ids - set(answer_types):
        raise ValueError(f"answer_types has no entry for question id(s) {_id_list(ref_ids - set(answer_types))}")

    accs: list[float] = []
    per_question: dict[Hashable, float] = {}
    by_type: dict[str, list[float]] = {}
    for qid, answers in references.items():
        try:
            acc = question_accuracy(predictions[qid], answers)
        except (ValueError, TypeError) as err:
            raise type(err)(f"question id {qid!r}: {err}") from err
        accs.append(acc)
        per_question[qid] = 100 * acc
        if answer_types is not None:
            by_type.setdefault(answer_types[qid], []).append(acc)

    # Same operation order as the official setAccuracy (100 * sum / len) so unrounded values match bit for bit.
    return {
        "overall": 100 * float(sum(accs)) / len(accs),
        "per_answer_type": {t: 100 * float(sum(v)) / len(v) for t, v in by_type.items()},
        "per_question": per_question,
        "n": len(accs),
    }
