"""Learning-rate schedules of the paper's Table II: linear warm-up, then cosine decay; and when a run evaluates.

COCO: 4000 steps, warm-up from 0 to the peak over 400 steps, cosine to 0.
VQAv2: 10 epochs, warm-up from 1e-6 to the peak over ``800 x data ratio`` steps, cosine to 1e-6.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    """Attributes:
    total_steps: Optimizer steps of the run.
    warmup_steps: Steps of the linear warm-up (the peak is reached at ``warmup_steps``).
    peak_lr: Highest learning rate.
    start_lr: Learning rate at step 0.
    end_lr: Learning rate at the last step.
    """

    total_steps: int
    warmup_steps: int
    peak_lr: float
    start_lr: float = 0.0
    end_lr: float = 0.0

    def __post_init__(self) -> None:
        if self.total_steps <= 0:
            raise ValueError(f"total_steps must be positive, got {self.total_steps}")
        if not 0 <= self.warmup_steps <= self.total_steps:
            raise ValueError(f"warmup_steps must be in [0, total_steps], got {self.warmup_steps}")
        if self.peak_lr <= 0:
            raise ValueError(f"peak_lr must be positive, got {self.peak_lr}")

    def lr(self, step: int) -> float:
        """Learning rate used for optimizer step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return self.start_lr + (self.peak_lr - self.start_lr) * step / self.warmup_steps
        decay = self.total_steps - self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, decay))
        return self.end_lr + 0.5 * (self.peak_lr - self.end_lr) * (1.0 + math.cos(math.pi * progress))


def steps_for(
    kind: str, data_size: int, total_batch_size: int, steps: int | None = None, epochs: float | None = None
) -> int:
    """Optimizer steps of a run: fixed (``kind="steps"``) or ``ceil(epochs * data_size / batch)``."""
    if kind == "steps":
        if not steps or steps <= 0:
            raise ValueError("a step-based schedule needs steps > 0")
        return int(steps)
    if kind == "epochs":
        if not epochs or epochs <= 0:
            raise ValueError("an epoch-based schedule needs epochs > 0")
        if total_batch_size <= 0:
            raise ValueError(f"total batch size must be positive, got {total_batch_size}")
        # Rounded first: 1.1 * 100 / 2 is 55.000000000000007 in floating point, which must give 55 steps, not 56.
        return max(1, math.ceil(round(epochs * data_size / total_batch_size, 9)))
    raise ValueError(f"unknown schedule kind {kind!r}; expected 'steps' or 'epochs'")


def eval_steps(
    kind: str, total_steps: int, interval: int = 0, data_size: int | None = None, total_batch_size: int | None = None
) -> list[int]:
    """Optimizer steps after which a run evaluates (1-based: after step ``s`` the model has taken ``s`` steps).

    Epoch-based schedules evaluate at every epoch end, the step whose global batch holds the epoch's last sample
    (``ceil(e * data_size / batch)``), so every data ratio gets the same number of evaluations (10 for the paper's
    VQAv2) and "best over training" is a maximum over as many draws whatever the ratio. Step-based schedules
    evaluate every ``interval`` steps (0: only at the end). Both always evaluate after the last step.
    """
    if kind == "epochs":
        if not data_size or not total_batch_size:
            raise ValueError("an epoch-based schedule needs the data size and the total batch size")
        if interval:
            raise ValueError(
                f"an epoch-based schedule evaluates at every epoch end: eval interval must be 0, got {interval}"
            )
        ends, e = [], 1
        while (end := -(-e * data_size // total_batch_size)) < total_steps:
            ends.append(end)
            e += 1
        return [*dict.fromkeys(ends), total_steps]
    if kind != "steps":
        raise ValueError(f"unknown schedule kind {kind!r}; expected 'steps' or 'epochs'")
    return [*range(interval, total_steps, interval), total_steps] if interval else [total_steps]
