"""The study's tasks, each declared once: name, metric, labels, prompt, splits and what the paper reports.

Everything else (the run config's checks, the grid, evaluation, aggregation, the figures and the report) reads this
table; importing it needs neither torch nor pandas. A task's own data preparation and scoring live in the data and
metrics packages, which branch on ``COCO.name`` / ``VQA.name`` where the datasets differ.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    """One downstream task.

    Attributes:
        name: Key in the config (``tasks:``), the run ids and the tables.
        label: Display name in figures and the report.
        metric: The primary metric: the evaluator's score, the runs table's ``metric``, model selection.
        metric_label: Axis label of that metric.
        paper_split: The split whose best score over training the paper reports (Section IV-C: "the CIDEr on
            Karpathy-test split is used for image captioning, whilst the overall accuracy on VQAv2 validation split
            is reported").
        prompt_key: The ``prompts:`` template of the task's text input.
        prompt_fields: The record fields that template is formatted with.
        figure: The paper's figure of its data-ratio and size sweeps (Fig. 3, Fig. 4).
        curves: Whether the paper's appendix draws each method's validation curves on this task (Figs. 6-10).
        splits: The prepared splits.
        prompt_tokens: Tokens of the text input per sample (special tokens included): a cost-model assumption.
        target_tokens: Tokens of the target per sample: a cost-model assumption.
        published_sizes: Split sizes of the paper's data (``docs/protocol.md``), for the cost model when neither
            prepared records nor the config's ``expected_counts`` give them.
    """

    name: str
    label: str
    metric: str
    metric_label: str
    paper_split: str
    prompt_key: str
    prompt_fields: tuple[str, ...]
    figure: int
    curves: bool
    prompt_tokens: int
    target_tokens: int
    published_sizes: dict[str, int]
    splits: tuple[str, ...] = ("train", "val", "test")


#: Image captioning on COCO Caption (Karpathy splits); train counts image-caption pairs, val/test images.
#: Tokens: the prompt "a picture of", captions of ~11 words.
COCO = Task(
    name="coco",
    label="COCO Caption",
    metric="CIDEr",
    metric_label="CIDEr",
    paper_split="test",
    prompt_key="caption_prompt",
    prompt_fields=(),
    figure=3,
    curves=True,
    prompt_tokens=5,
    target_tokens=24,
    published_sizes={"train": 566_800, "val": 5_000, "test": 5_000},
)
#: Visual question answering on VQAv2; sizes count QA pairs. Tokens: the question prompt, one- or two-word answers.
VQA = Task(
    name="vqa",
    label="VQAv2",
    metric="accuracy",
    metric_label="VQA accuracy",
    paper_split="val",
    prompt_key="vqa_prompt",
    prompt_fields=("question",),
    figure=4,
    curves=False,
    prompt_tokens=16,
    target_tokens=6,
    published_sizes={"train": 605_100, "val": 26_700, "test": 26_300},
)

#: Every task by name, in figure order.
TASKS: dict[str, Task] = {t.name: t for t in (COCO, VQA)}
#: The metric each task reports (the evaluator's primary score).
TASK_METRIC: dict[str, str] = {t.name: t.metric for t in TASKS.values()}
#: Display name of each task.
TASK_LABELS: dict[str, str] = {t.name: t.label for t in TASKS.values()}
#: The split whose best score the paper reports, per task.
PAPER_SPLIT: dict[str, str] = {t.name: t.paper_split for t in TASKS.values()}
#: Axis label of each task's metric.
METRIC_LABELS: dict[str, str] = {t.metric: t.metric_label for t in TASKS.values()}


def task(name: str) -> Task:
    """The task called ``name``; ValueError naming the known ones otherwise."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {list(TASKS)}")
    return TASKS[name]
