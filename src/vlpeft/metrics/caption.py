"""COCO caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D) through pycocoevalcap's scorers.

The scorers are called directly rather than through ``COCOEvalCap.evaluate()``, which always builds SPICE (it
downloads Stanford CoreNLP models and so fails offline) and needs COCO annotation files on disk.

All scores are reported multiplied by 100, as in captioning papers: a CIDEr of 1.375 is returned as 137.5 and a
BLEU-4 of 0.4 as 40.0.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Hashable, Mapping, Sequence

__all__ = ["SUPPORTED_METRICS", "ptb_tokenize", "score_captions"]

SUPPORTED_METRICS: tuple[str, ...] = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
_BLEU_ORDER = {"BLEU-1": 0, "BLEU-2": 1, "BLEU-3": 2, "BLEU-4": 3}
_JAVA_METRICS = frozenset({"METEOR"})
# CIDEr's IDF weights come from the evaluated set itself: with one image every n-gram has IDF log(1/1) = 0.
CIDER_MIN_IMAGES = 2

# Stanford's PTBTokenizer ends a line at these characters too, while pycocoevalcap pairs output lines with captions
# by position: one such character in one caption silently shifts every later caption onto the wrong image.
# The set is what str.splitlines() splits on, a superset of what Java treats as a line end.
_LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def _require_java(purpose: str) -> None:
    """Raise a RuntimeError naming ``purpose`` when no ``java`` executable is on PATH."""
    if shutil.which("java") is None:
        raise RuntimeError(
            f"{purpose} needs a Java runtime (pycocoevalcap runs a .jar), but 'java' is not on PATH. Install a JRE "
            "(e.g. openjdk-17-jre-headless) or load a java module; without Java use tokenize=False with "
            "pre-tokenised, lower-cased captions and leave METEOR out of `metrics`."
        )


def _id_list(ids: set, limit: int = 5) -> str:
    """Format a few ids for an error message."""
    shown = sorted(ids, key=repr)[:limit]
    more = f" (and {len(ids) - limit} more)" if len(ids) > limit else ""
    return ", ".join(repr(i) for i in shown) + more


def ptb_tokenize(captions: Mapping[Hashable, Sequence[str]]) -> dict[Hashable, list[str]]:
    """Tokenise captions with pycocoevalcap's Stanford PTBTokenizer, as the COCO caption evaluation does.

    The tokenizer lower-cases, splits off punctuation and then drops punctuation tokens. Tokenise the references
    once with this function and pass them to :func:`score_captions` with ``references_tokenized=True`` to avoid
    re-running Java on them at every evaluation.

    Args:
        captions: Image id -> captions. Every id needs at least one caption.

    Returns:
        Image id -> tokenised captions (space-separated tokens), same ids and counts as the input.

    Raises:
        RuntimeError: If Java is not on PATH, or the tokenizer cannot run.
        ValueError: If an id has no captions.
        TypeError: If a caption is not a string.
    """
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    _require_java("PTB tokenisation")
    prepared: dict[Hashable, list[dict[str, str]]] = {}
    for image_id, caps in captions.items():
        caps = [caps] if isinstance(caps, str) else list(caps)
        if not caps:
            raise ValueError(f"image id {image_id!r} has no captions to tokenise")
        for cap in caps:
            if not isinstance(cap, str):
                raise TypeError(f"image id {image_id!r}: captions must be strings, got {type(cap).__name__}")
        prepared[image_id] = [{"caption": _LINE_BREAKS.sub(" ", cap)} for cap in caps]
    if not prepared:
        return {}
    try:
        # pycocoevalcap writes its temporary input file next to the jar, inside the installed package.
        tokenized = PTBTokenizer().tokenize(prepared)
    except OSError as err:
        raise RuntimeError(
            f"pycocoevalcap's PTBTokenizer failed ({err}); it needs Java and write access to the installed "
            "pycocoevalcap/tokenizer directory for its temporary file"
        ) from err
    # The wrapper pairs output lines with captions by position; check nothing went missing on the way.
    for image_id, caps in prepared.items():
        if len(tokenized.get(image_id, [])) != len(caps):
            raise RuntimeError(
                f"PTBTokenizer returned {len(tokenized.get(image_id, []))} captions for image id {image_id!r}, "
                f"expected {len(caps)}; the Java tokenizer output is misaligned or truncated"
            )
    return {image_id: list(tokenized[image_id]) for image_id in prepared}


def _as_single_caption(image_id: Hashable, hyp: str | Sequence[str]) -> str:
    """Accept a hypothesis as a string or a one-element sequence (COCO result style) and return the string."""
    if isinstance(hyp, str):
        return hyp
    hyps = list(hyp)
    if len(hyps) != 1 or not isinstance(hyps[0], str):
        raise ValueError(
            f"image id {image_id!r}: expected exactly one hypothesis caption (a string), got {hyps!r:.100}"
        )
    return hyps[0]


def _resolve_metrics(metrics: Sequence[str]) -> list[str]:
    """Validate metric names and drop duplicates, keeping the requested order."""
    if isinstance(metrics, str):
        metrics = [metrics]
    names = list(dict.fromkeys(metrics))
    if not names:
        raise ValueError(f"no metrics requested; choose from {', '.join(SUPPORTED_METRICS)}")
    unknown = [m for m in names if m not in SUPPORTED_METRICS]
    if unknown:
        raise ValueError(f"unknown caption metric(s) {unknown}; supported: {', '.join(SUPPORTED_METRICS)}")
    return names


def _run_meteor(gts: dict, res: dict) -> tuple[float, list[float]]:
    """Run pycocoevalcap's METEOR and always shut its Java process down."""
    from pycocoevalcap.meteor.meteor import Meteor

    # METEOR talks to the jar one line per segment; a stray line break would desynchronise the protocol and hang.
    gts = {k: [_LINE_BREAKS.sub(" ", c) for c in v] for k, v in gts.items()}
    res = {k: [_LINE_BREAKS.sub(" ", c) for c in v] for k, v in res.items()}
    meteor = Meteor()
    try:
        score, scores = meteor.compute_score(gts, res)
    except ValueError as err:
        # An empty line from the jar (it died, e.g. out of memory for its -Xmx2G heap) surfaces as float('').
        raise RuntimeError(f"METEOR's Java process returned no score ({err})") from err
    finally:
        # Meteor.__del__ takes the lock that compute_score leaves held when it raises, which would hang forever.
        if meteor.lock.locked():
            meteor.lock.release()
        meteor.meteor_p.stdin.close()
        meteor.meteor_p.kill()
        meteor.meteor_p.wait()
    return float(score), [float(s) for s in scores]


def score_captions(
    references: Mapping[Hashable, Sequence[str]],
    hypotheses: Mapping[Hashable, str],
    metrics: Sequence[str] = ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr"),
    tokenize: bool = True,
    references_tokenized: bool = False,
) -> dict:
    """Score generated captions against reference captions with pycocoevalcap's scorers.

    Scores are reported x100 (CIDEr 1.375 -> 137.5, BLEU-4 0.4 -> 40.0). ``"CIDEr"`` is pycocoevalcap's ``Cider``,
    i.e. CIDEr-D (sigma 6, clipping, x10 scaling), the number reported on COCO. Its IDF statistics come from the
    references of the evaluated images themselves, so a score depends on the whole evaluated set (at least 2 images).

    Args:
        references: Image id -> reference captions (at least one each).
        hypotheses: Image id -> generated caption (a string; a one-element list is accepted too). Must have exactly
            the ids of ``references``.
        metrics: Any of ``"BLEU-1"``..``"BLEU-4"``, ``"METEOR"``, ``"ROUGE-L"``, ``"CIDEr"``. All BLEU orders come
            from a single BLEU run.
        tokenize: Run the PTB tokenizer (needs Java) as the COCO evaluation does. With ``False`` the captions are
            scored as given, split on whitespace: lower-casing and punctuation removal are then the caller's job.
        references_tokenized: The references are already the output of :func:`ptb_tokenize`; only the hypotheses
            are tokenised (when ``tokenize`` is true).

    Returns:
        ``{"scores": {metric: float}, "per_item": {metric: {image_id: float}}}``, both x100, metrics in the order
        requested. Per-item BLEU is pycocoevalcap's sentence-level BLEU; the corpus BLEU is not their mean. The
        corpus METEOR is computed by the jar from pooled statistics, not as the mean of the per-item values.

    Raises:
        ValueError: On unknown metrics, no hypotheses, differing image ids, an image without references, a
            hypothesis that is not exactly one caption, or CIDEr requested for fewer than 2 images.
        TypeError: If a reference caption is not a string.
        RuntimeError: If Java is needed (tokenisation or METEOR) but not on PATH, or a Java tool fails.
    """
    names = _resolve_metrics(metrics)

    if not hypotheses:
        raise ValueError("no hypotheses given: score_captions needs at least one image")
    ref_ids, hyp_ids = set(references), set(hypotheses)
    if ref_ids != hyp_ids:
        only_refs, only_hyps = ref_ids - hyp_ids, hyp_ids - ref_ids
        parts = []
        if only_refs:
            parts.append(f"{len(only_refs)} image id(s) have references but no hypothesis: {_id_list(only_refs)}")
        if only_hyps:
            parts.append(f"{len(only_hyps)} image id(s) have a hypothesis but no references: {_id_list(only_hyps)}")
        raise ValueError("references and hypotheses cover different images; " + "; ".join(parts))
    if "CIDEr" in names and len(ref_ids) < CIDER_MIN_IMAGES:
        raise ValueError(
            "CIDEr needs at least 2 images: its IDF weights come from the references of the evaluated set, and "
            "with a single image every n-gram occurs in all (1 of 1) documents, so IDF = log(1/1) = 0 and CIDEr "
            "is always 0. Score the whole split at once."
        )

    # Fix one id order (the references') so every scorer sees identical, aligned dicts.
    order = list(references)
    refs: dict[Hashable, list[str]] = {}
    for image_id in order:
        caps = references[image_id]
        caps = [caps] if isinstance(caps, str) else list(caps)
        if not caps:
            raise ValueError(f"image id {image_id!r} has no reference captions")
        if not all(isinstance(c, str) for c in caps):
            raise TypeError(f"image id {image_id!r}: reference captions must be strings")
        refs[image_id] = caps
    hyps = {image_id: [_as_single_caption(image_id, hypotheses[image_id])] for image_id in order}

    if _JAVA_METRICS.intersection(names):
        _require_java("METEOR")
    if tokenize:
        if not references_tokenized:
            refs = ptb_tokenize(refs)
        hyps = ptb_tokenize(hyps)

    scores: dict[str, float] = {}
    per_item: dict[str, dict[Hashable, float]] = {}

    def _store(name: str, corpus: float, items: Sequence[float]) -> None:
        scores[name] = 100.0 * float(corpus)
        per_item[name] = {image_id: 100.0 * float(s) for image_id, s in zip(order, items, strict=True)}

    bleu_names = [n for n in names if n in _BLEU_ORDER]
    if bleu_names:
        from pycocoevalcap.bleu.bleu import Bleu

        # verbose=0: pycocoevalcap otherwise prints its internal length ratios for every call.
        corpus, items = Bleu(4).compute_score(refs, hyps, verbose=0)
        for name in bleu_names:
            _store(name, corpus[_BLEU_ORDER[name]], items[_BLEU_ORDER[name]])
    if "METEOR" in names:
        _store("METEOR", *_run_meteor(refs, hyps))
    if "ROUGE-L" in names:
        from pycocoevalcap.rouge.rouge import Rouge

        _store("ROUGE-L", *Rouge().compute_score(refs, hyps))
    if "CIDEr" in names:
        from pycocoevalcap.cider.cider import Cider

        _store("CIDEr", *Cider().compute_score(refs, hyps))

    # Report in the order requested, whatever order the scorers ran in.
    return {"scores": {n: scores[n] for n in names}, "per_item": {n: per_item[n] for n in names}}
