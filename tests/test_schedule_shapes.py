"""Learning-rate shapes: the default shapes unchanged to the bit, and the official SlowFast and UniFormer shapes
against direct transcriptions of PySlowFast's per-iteration rule (slowfast/utils/lr_policy.py, as FFN-pytorch's 3D
and Transformer networks run it)."""

from __future__ import annotations

import math

import pytest
import torch

from engine.schedule import LearningRateShape, cosine_decay, scaled_learning_rate


def previous_shape(schedule: str, steps_per_epoch: int, epochs: int, warmup_epochs: float, lr_steps: list[int],
                   step: int) -> float:
    """The multiplier of the shape as it was before warm-up starts, floors and step factors existed."""
    total_steps = steps_per_epoch * epochs
    warmup_steps = int(round(warmup_epochs * steps_per_epoch))
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "step":
        epoch = step // steps_per_epoch
        return 0.1 ** sum(epoch >= boundary for boundary in lr_steps)
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


# (schedule, steps per epoch, epochs, warm-up epochs, steps): the demo's, the default, the old official, and odd ones.
DEFAULT_SHAPES = [
    ("cosine", 75, 40, 1.0, [20, 40]),
    ("cosine", 3, 50, 0.0, [20, 40]),
    ("step", 5278, 50, 0.0, [20, 40]),
    ("step", 7, 9, 0.5, [2, 5, 5]),
    ("cosine", 1, 1, 0.0, []),
    ("cosine", 13, 4, 2.5, []),
]


@pytest.mark.parametrize(("schedule", "per_epoch", "epochs", "warmup", "lr_steps"), DEFAULT_SHAPES)
def test_default_shapes_give_the_previous_values_to_the_bit(schedule, per_epoch, epochs, warmup, lr_steps) -> None:
    shape = LearningRateShape(schedule, per_epoch, epochs, warmup, lr_steps)
    total = per_epoch * epochs
    steps = sorted(set(range(0, min(total, 400))) | set(range(max(0, total - 50), total + 3))
                   | set(range(0, total, max(1, total // 997))))
    for step in steps:
        assert shape(step) == previous_shape(schedule, per_epoch, epochs, warmup, lr_steps, step), step


def pyslowfast_lr(cur_epoch: float, policy: str, base_lr: float, max_epoch: float, warmup_epochs: float,
                  warmup_start_lr: float, steps: list[float] | None = None, lrs: list[float] | None = None,
                  cosine_end_lr: float = 0.0, cosine_after_warmup: bool = False) -> float:
    """PySlowFast's get_lr_at_epoch, transcribed (absolute rates)."""

    def decay(epoch: float) -> float:
        if policy == "cosine":
            offset = warmup_epochs if cosine_after_warmup else 0.0
            return cosine_end_lr + (base_lr - cosine_end_lr) * (
                math.cos(math.pi * (epoch - offset) / (max_epoch - offset)) + 1.0) * 0.5
        boundaries = [*steps, max_epoch]
        for index, boundary in enumerate(boundaries):
            if epoch < boundary:
                break
        return lrs[index - 1] * base_lr

    rate = decay(cur_epoch)
    if cur_epoch < warmup_epochs:
        alpha = (decay(warmup_epochs) - warmup_start_lr) / warmup_epochs
        rate = cur_epoch * alpha + warmup_start_lr
    return rate


def test_slowfast_official_shape_follows_pyslowfast_steps_with_relative_rates_and_warm_up() -> None:
    per_epoch, base_lr = 200, 0.03
    shape = LearningRateShape("step", per_epoch, 22, 0.19, [14, 18], lr_step_factors=[0.1, 0.01],
                              warmup_start=1e-4 / base_lr)
    for step in [*range(0, 60), 13 * per_epoch + 199, 14 * per_epoch - 1, 14 * per_epoch, 18 * per_epoch - 1,
                 18 * per_epoch, 22 * per_epoch - 1]:
        expected = pyslowfast_lr(step / per_epoch, "steps_with_relative_lrs", base_lr, 22, 0.19, 1e-4,
                                 steps=[0, 14, 18], lrs=[1, 0.1, 0.01])
        assert base_lr * shape(step) == pytest.approx(expected, rel=1e-12, abs=1e-15), step
    assert base_lr * shape(0) == pytest.approx(1e-4, rel=1e-12)
    assert [shape(14 * per_epoch - 1), shape(14 * per_epoch), shape(18 * per_epoch)] == [1.0, 0.1, 0.01]
    assert shape(38) == 1.0 and shape(37) < 1.0  # 0.19 epoch = 38 steps: the warm-up ends in fractional epochs


def test_uniformer_official_shape_follows_pyslowfast_cosine_after_warm_up_to_the_floor() -> None:
    per_epoch, base_lr, end_lr = 50, 2e-4, 1e-6
    shape = LearningRateShape("cosine", per_epoch, 60, 5.0, [], warmup_start=end_lr / base_lr,
                              lr_floor=end_lr / base_lr)
    for step in [0, 1, 124, 249, 250, 251, 1000, 2999, 3000]:
        expected = pyslowfast_lr(step / per_epoch, "cosine", base_lr, 60, 5.0, end_lr, cosine_end_lr=end_lr,
                                 cosine_after_warmup=True)
        assert base_lr * shape(step) == pytest.approx(expected, rel=1e-9), step
    assert base_lr * shape(0) == pytest.approx(end_lr, rel=1e-12)
    assert shape(5 * per_epoch) == pytest.approx(1.0, rel=1e-15)
    assert base_lr * shape(60 * per_epoch) == pytest.approx(end_lr, rel=1e-12)


def test_cosine_floor_and_relative_step_factors_without_start_warm_up() -> None:
    floored = LearningRateShape("cosine", 10, 2, 0.0, [], lr_floor=0.25)
    assert [floored(0), floored(10), floored(20)] == pytest.approx([1.0, 0.625, 0.25], rel=1e-12)
    steps = LearningRateShape("step", 10, 6, 0.0, [4, 2], lr_step_factors=[0.05, 0.5])
    assert [steps(19), steps(20), steps(39), steps(40)] == [1.0, 0.5, 0.5, 0.05]


def test_invalid_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="one factor per step"):
        LearningRateShape("step", 10, 5, 0.0, [2, 3], lr_step_factors=[0.1])
    with pytest.raises(ValueError, match="fractions of the peak"):
        LearningRateShape("cosine", 10, 5, 1.0, [], warmup_start=1.5)
    with pytest.raises(ValueError, match="schedule"):
        LearningRateShape("linear", 10, 5, 0.0, [])


def test_a_checkpointed_shape_from_before_the_new_options_still_computes() -> None:
    """LambdaLR restores a shape's attributes from the checkpoint over a freshly built shape; a checkpoint saved
    before the new options existed lacks them, and the fresh shape's defaults keep the previous arithmetic."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    saved = torch.optim.lr_scheduler.LambdaLR(optimizer, LearningRateShape("step", 10, 5, 0.0, [2])).state_dict()
    for name in ("lr_step_factors", "warmup_start", "lr_floor", "epochs", "warmup_epochs"):
        del saved["lr_lambdas"][0][name]
    restored = torch.optim.lr_scheduler.LambdaLR(optimizer, LearningRateShape("step", 10, 5, 0.0, [2]))
    restored.load_state_dict(saved)
    shape = restored.lr_lambdas[0]
    assert [shape(19), shape(20)] == [1.0, 0.1]


def test_scaled_rate_at_another_reference_batch() -> None:
    assert scaled_learning_rate(0.03, 16, 16) == 0.03
    assert scaled_learning_rate(0.01, 16) == 0.005
    assert scaled_learning_rate(0.03, 4, 16) == pytest.approx(0.0075)


def test_fractions_of_the_peak_rate_are_checked_at_their_bounds() -> None:
    LearningRateShape("cosine", 10, 5, 1.0, [], warmup_start=0.0, lr_floor=0.0)  # 0 is allowed for both
    for options in ({"lr_floor": 1.0}, {"lr_floor": 1.5}, {"lr_floor": -0.1}, {"warmup_start": 1.0}):
        with pytest.raises(ValueError, match=r"are fractions of the peak rate in \[0, 1\)$"):
            LearningRateShape("cosine", 10, 5, 1.0, [], **options)


def test_a_decay_shorter_than_one_epoch_after_a_warmup_from_a_start_and_the_steps_past_the_end() -> None:
    shape = LearningRateShape("cosine", 4, 2, 1.5, [], warmup_start=0.1)  # 1.5 epochs warm-up, 0.5 of decay
    assert shape(7) == pytest.approx(cosine_decay(0.5))  # epoch 1.75: half-way through the decay
    assert shape(8) == pytest.approx(0.0, abs=1e-12)  # the end
    assert shape(12) == shape(8)  # past the end the multiplier stays at the end's value
