"""The learning-rate multiplier at the boundaries of the step, cosine and warm-up schedules, and the scaled rate.

Every expected value is written out by hand from the recipe (x0.1 at each listed epoch, counted from the first
step of that epoch; linear warm-up reaching 1 at its last step; half a cosine from 1 to 0 after it), so a changed
comparison, offset or constant in engine/schedule.py moves at least one of them.
"""

from __future__ import annotations

import math

import pytest
import torch

from engine.schedule import REFERENCE_TOTAL_BATCH, LearningRateShape, cosine_decay, scaled_learning_rate

STEPS_PER_EPOCH = 10


def multipliers(shape: LearningRateShape, steps: list[int]) -> list[float]:
    """The multiplier at each of `steps`."""
    return [shape(step) for step in steps]


def test_step_schedule_drops_on_the_first_step_of_each_listed_epoch() -> None:
    shape = LearningRateShape("step", STEPS_PER_EPOCH, epochs=50, warmup_epochs=0.0, lr_steps=[20, 40])
    # epoch 19 ends at step 199; epoch 20 starts at step 200 (x0.1); epoch 40 starts at step 400 (x0.01)
    steps = [0, 199, 200, 201, 399, 400, 401, 499]
    expected = [1.0, 1.0, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01]
    assert multipliers(shape, steps) == pytest.approx(expected, rel=1e-12)


def test_step_schedule_without_steps_and_with_unsorted_steps() -> None:
    flat = LearningRateShape("step", STEPS_PER_EPOCH, epochs=5, warmup_epochs=0.0, lr_steps=[])
    assert multipliers(flat, [0, 25, 49]) == [1.0, 1.0, 1.0]
    unsorted = LearningRateShape("step", STEPS_PER_EPOCH, epochs=5, warmup_epochs=0.0, lr_steps=[3, 1])
    assert multipliers(unsorted, [9, 10, 29, 30]) == pytest.approx([1.0, 0.1, 0.1, 0.01], rel=1e-12)


def test_step_schedule_one_step_per_epoch() -> None:
    shape = LearningRateShape("step", steps_per_epoch=1, epochs=4, warmup_epochs=0.0, lr_steps=[2])
    assert multipliers(shape, [0, 1, 2, 3]) == pytest.approx([1.0, 1.0, 0.1, 0.1], rel=1e-12)


def test_warmup_rises_linearly_and_reaches_one_on_its_last_step() -> None:
    shape = LearningRateShape("step", STEPS_PER_EPOCH, epochs=5, warmup_epochs=1.0, lr_steps=[3])
    steps = [0, 1, 4, 9, 10, 29, 30]
    expected = [0.1, 0.2, 0.5, 1.0, 1.0, 1.0, 0.1]
    assert multipliers(shape, steps) == pytest.approx(expected, rel=1e-12)


def test_fractional_warmup_rounds_to_whole_steps() -> None:
    half = LearningRateShape("cosine", STEPS_PER_EPOCH, epochs=2, warmup_epochs=0.5, lr_steps=[])
    assert half.warmup_steps == 5
    assert multipliers(half, [0, 4]) == pytest.approx([0.2, 1.0], rel=1e-12)
    # 0.25 epoch of 10 steps is 2.5 steps: Python's round gives 2
    quarter = LearningRateShape("cosine", STEPS_PER_EPOCH, epochs=2, warmup_epochs=0.25, lr_steps=[])
    assert quarter.warmup_steps == 2
    assert multipliers(quarter, [0, 1]) == pytest.approx([0.5, 1.0], rel=1e-12)


def test_cosine_starts_at_one_halves_midway_and_ends_at_zero() -> None:
    shape = LearningRateShape("cosine", STEPS_PER_EPOCH, epochs=4, warmup_epochs=0.0, lr_steps=[20])
    total = 4 * STEPS_PER_EPOCH
    assert shape(0) == 1.0
    assert shape(total // 2) == pytest.approx(0.5, abs=1e-12)
    assert shape(total // 4) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)), rel=1e-12)
    assert shape(total - 1) == pytest.approx(0.5 * (1 + math.cos(math.pi * 39 / 40)), rel=1e-12)
    assert shape(total) == pytest.approx(0.0, abs=1e-12)
    assert shape(total + 7) == pytest.approx(0.0, abs=1e-12)  # held at zero past the end, never rising again
    assert all(shape(step) > shape(step + 1) for step in range(total))  # lr_steps play no part in cosine


def test_cosine_after_warmup_starts_from_the_end_of_the_warmup() -> None:
    shape = LearningRateShape("cosine", STEPS_PER_EPOCH, epochs=3, warmup_epochs=1.0, lr_steps=[])
    # warm-up: steps 0..9; cosine over the remaining 20 steps: step 10 is progress 0, step 20 progress 0.5
    assert multipliers(shape, [0, 9]) == pytest.approx([0.1, 1.0], rel=1e-12)
    assert shape(10) == pytest.approx(1.0, rel=1e-12)
    assert shape(11) == pytest.approx(0.5 * (1 + math.cos(math.pi / 20)), rel=1e-12)
    assert shape(20) == pytest.approx(0.5, abs=1e-12)
    assert shape(30) == pytest.approx(0.0, abs=1e-12)


def test_cosine_whose_warmup_fills_the_run_holds_one_step_of_span() -> None:
    shape = LearningRateShape("cosine", STEPS_PER_EPOCH, epochs=1, warmup_epochs=1.0, lr_steps=[])
    assert shape(9) == 1.0
    assert shape(10) == 1.0  # the cosine span is max(1, 10 - 10) = 1 step: progress 0, then 1
    assert shape(11) == pytest.approx(0.0, abs=1e-12)


def test_cosine_decay_values() -> None:
    assert cosine_decay(0.0) == 1.0
    assert cosine_decay(0.5) == pytest.approx(0.5, abs=1e-15)
    assert cosine_decay(1.0) == pytest.approx(0.0, abs=1e-15)
    assert cosine_decay(0.25) == pytest.approx((2 + math.sqrt(2)) / 4, rel=1e-12)


def test_lambda_lr_follows_the_shape_and_restores_it_on_resume() -> None:
    parameter = torch.nn.Parameter(torch.zeros(1))
    shape = LearningRateShape("step", steps_per_epoch=2, epochs=3, warmup_epochs=0.0, lr_steps=[1, 2])
    optimizer = torch.optim.SGD([parameter], lr=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, shape)
    seen = []
    for _ in range(6):
        seen.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([0.5, 0.5, 0.05, 0.05, 0.005, 0.005], rel=1e-12)
    state = scheduler.state_dict()
    restored = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD([parameter], lr=0.5), lambda step: 1.0)
    restored.load_state_dict(state)
    assert restored.lr_lambdas[0].__dict__ == shape.__dict__


@pytest.mark.parametrize("total_batch, expected", [(32, 0.01), (16, 0.005), (64, 0.02), (8, 0.0025), (1, 0.0003125)])
def test_learning_rate_scales_linearly_from_a_batch_of_32(total_batch: int, expected: float) -> None:
    assert REFERENCE_TOTAL_BATCH == 32
    assert scaled_learning_rate(0.01, total_batch) == pytest.approx(expected, rel=1e-12)
