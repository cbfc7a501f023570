"""The paper's learning-rate schedules (Table II): linear warm-up, then cosine decay; step counts."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest

from vlpeft.schedule import Schedule, eval_steps, steps_for

PEAK = 3e-4


def _cosine(step: int, total: int, warmup: int, peak: float, end: float) -> float:
    progress = (step - warmup) / (total - warmup)
    return end + 0.5 * (peak - end) * (1 + math.cos(math.pi * progress))


# -- COCO: 4000 steps, warm-up 0 -> peak over 400 steps, cosine to 0 ------------------------------------------------
COCO = Schedule(total_steps=4000, warmup_steps=400, peak_lr=PEAK, start_lr=0.0, end_lr=0.0)


@pytest.mark.parametrize(
    ("step", "lr"),
    [
        (0, 0.0),
        (1, PEAK / 400),
        (100, PEAK / 4),
        (200, PEAK / 2),
        (399, PEAK * 399 / 400),
        (400, PEAK),  # the peak is reached at the end of the warm-up
        (401, PEAK * 0.5 * (1 + math.cos(math.pi / 3600))),
        (1300, PEAK * 0.5 * (1 + math.cos(math.pi / 4))),  # a quarter of the decay
        (2200, PEAK / 2),  # the cosine's midpoint
        (3100, PEAK * 0.5 * (1 + math.cos(3 * math.pi / 4))),
        (4000, 0.0),
        (5000, 0.0),  # past the end it stays at the floor
    ],
)
def test_coco_schedule(step: int, lr: float) -> None:
    assert COCO.lr(step) == pytest.approx(lr, rel=1e-12, abs=1e-18)


def test_coco_schedule_last_step_is_almost_zero_and_shape_is_monotone() -> None:
    assert 0 < COCO.lr(3999) < PEAK * 1e-6
    assert COCO.lr(3999) == pytest.approx(_cosine(3999, 4000, 400, PEAK, 0.0), rel=1e-9)
    lrs = [COCO.lr(s) for s in range(4001)]
    assert max(lrs) == PEAK and lrs.index(PEAK) == 400
    assert all(a < b for a, b in pairwise(lrs[:401]))  # strictly increasing warm-up
    assert all(a > b for a, b in pairwise(lrs[400:]))  # strictly decreasing decay


# -- VQAv2: warm-up 1e-6 -> peak over 800 x ratio steps, cosine to 1e-6 ---------------------------------------------
@pytest.mark.parametrize(("ratio", "warmup"), [(0.1, 80), (0.2, 160), (0.4, 320), (0.5, 400), (0.8, 640), (1.0, 800)])
def test_vqa_schedule(ratio: float, warmup: int) -> None:
    start = end = 1e-6
    total = 5000
    s = Schedule(total_steps=total, warmup_steps=round(800 * ratio), peak_lr=PEAK, start_lr=start, end_lr=end)
    assert s.warmup_steps == warmup
    assert s.lr(0) == start
    assert s.lr(warmup // 2) == pytest.approx((start + PEAK) / 2, rel=1e-12)
    assert s.lr(warmup // 4) == pytest.approx(start + (PEAK - start) / 4, rel=1e-12)
    assert s.lr(warmup) == pytest.approx(PEAK, rel=1e-12)
    mid = warmup + (total - warmup) // 2
    assert s.lr(mid) == pytest.approx(_cosine(mid, total, warmup, PEAK, end), rel=1e-12)
    assert s.lr(total) == pytest.approx(end, rel=1e-12)
    assert end < s.lr(total - 1) < end + PEAK * 1e-6


def test_no_warmup_starts_at_the_peak() -> None:
    s = Schedule(total_steps=10, warmup_steps=0, peak_lr=1.0)
    assert s.lr(0) == 1.0
    assert s.lr(5) == pytest.approx(0.5)
    assert s.lr(10) == pytest.approx(0.0, abs=1e-15)


def test_warmup_over_the_whole_run() -> None:
    s = Schedule(total_steps=4, warmup_steps=4, peak_lr=1.0)
    assert [s.lr(i) for i in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"total_steps": 0, "warmup_steps": 0, "peak_lr": 1.0}, "total_steps must be positive"),
        ({"total_steps": -5, "warmup_steps": 0, "peak_lr": 1.0}, "total_steps must be positive"),
        ({"total_steps": 10, "warmup_steps": 11, "peak_lr": 1.0}, "warmup_steps must be in"),
        ({"total_steps": 10, "warmup_steps": -1, "peak_lr": 1.0}, "warmup_steps must be in"),
        ({"total_steps": 10, "warmup_steps": 1, "peak_lr": 0.0}, "peak_lr must be positive"),
        ({"total_steps": 10, "warmup_steps": 1, "peak_lr": -1e-4}, "peak_lr must be positive"),
    ],
)
def test_bad_schedule_is_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Schedule(**kwargs)


# -- number of steps -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "batch", "epochs", "steps"),
    [
        (605_102, 256, 10, 23_637),  # ceil(6_051_020 / 256) = ceil(23636.8)
        (1000, 256, 10, 40),  # ceil(39.06)
        (1024, 256, 10, 40),  # exact
        (1800, 32, 4, 225),
        (60, 8, 0.2, 2),  # ceil(1.5)
        (120, 8, 0.2, 3),
        (100, 2, 1.1, 55),  # 1.1 * 100 / 2 is 55.000000000000007 in floating point
        (90, 3, 1.1, 33),
        (5, 256, 1, 1),  # less than one batch: still one step
        (1, 256, 0.01, 1),
    ],
)
def test_steps_for_epochs_is_ceil_epochs_times_data_over_batch(
    data: int, batch: int, epochs: float, steps: int
) -> None:
    assert steps_for("epochs", data, batch, epochs=epochs) == steps


def test_steps_for_steps_ignores_the_data() -> None:
    assert steps_for("steps", 10, 256, steps=4000) == 4000
    assert steps_for("steps", 10**9, 1, steps=60, epochs=3) == 60


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("steps", 100, 8), {}, "needs steps > 0"),
        (("steps", 100, 8), {"steps": 0}, "needs steps > 0"),
        (("steps", 100, 8), {"steps": -3}, "needs steps > 0"),
        (("steps", 100, 8), {"epochs": 3}, "needs steps > 0"),
        (("epochs", 100, 8), {}, "needs epochs > 0"),
        (("epochs", 100, 8), {"epochs": 0}, "needs epochs > 0"),
        (("epochs", 100, 8), {"epochs": -1.0}, "needs epochs > 0"),
        (("epochs", 100, 0), {"epochs": 1}, "batch size must be positive"),
        (("epochs", 100, -8), {"epochs": 1}, "batch size must be positive"),
        (("iterations", 100, 8), {"steps": 5}, "unknown schedule kind 'iterations'"),
    ],
)
def test_steps_for_bad_values(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        steps_for(*args, **kwargs)


# -- when a run evaluates ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.1, 0.2, 0.4, 0.8, 1.0])
def test_epoch_based_runs_evaluate_at_every_epoch_end_whatever_the_ratio(ratio: float) -> None:
    """VQAv2 (605.1K training questions, batch 256, 10 epochs): 10 evaluations at every ratio; the old every-2000
    steps gave 2 at 10 % and 12 at 100 %."""
    n = round(605_102 * ratio)
    total = steps_for("epochs", n, 256, epochs=10)
    steps = eval_steps("epochs", total, 0, n, 256)
    assert len(steps) == 10 and steps[-1] == total
    # Epoch e ends in the step whose global batch holds sample e * n - 1 (0-based).
    assert steps == [(e * n - 1) // 256 + 1 for e in range(1, 11)]


def test_eval_steps_by_hand() -> None:
    assert eval_steps("epochs", 5, 0, 12, 8) == [2, 3, 5]  # epochs end in samples 12, 24, 36: steps 2, 3, 5
    assert eval_steps("epochs", 3, 0, 120, 8) == [3]  # 0.2 epochs: only the end
    assert eval_steps("epochs", 4, 0, 3, 8) == [1, 2, 3, 4]  # 10 epochs of 3 samples in 4 steps: no duplicates
    assert eval_steps("steps", 4000, 500) == [500, 1000, 1500, 2000, 2500, 3000, 3500, 4000]
    assert eval_steps("steps", 60, 25) == [25, 50, 60]
    assert eval_steps("steps", 60, 0) == [60]
    with pytest.raises(ValueError, match="eval interval must be 0"):
        eval_steps("epochs", 10, 5, 100, 8)
    with pytest.raises(ValueError, match="needs the data size"):
        eval_steps("epochs", 10, 0)
