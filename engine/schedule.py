"""The learning-rate shape (linear warm-up, then cosine to zero or x0.1 steps) and the linearly scaled rate."""

from __future__ import annotations

import math
from collections.abc import Sequence

REFERENCE_TOTAL_BATCH = 32


def cosine_decay(progress: float) -> float:
    """Return the cosine multiplier at `progress` in [0, 1] (1 at the start, 0 at the end)."""
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class LearningRateShape:
    """Multiplier of the peak rate at a step: linear warm-up, then cosine to zero or x0.1 steps.

    A plain object (not a lambda) so that LambdaLR's state_dict records it and a resumed run restores it.

    Parameters
    ----------
    schedule : str
        "cosine" or "step".
    steps_per_epoch, epochs : int
        Optimiser steps per epoch and the number of epochs.
    warmup_epochs : float
        Length of the linear warm-up in epochs (0: none).
    lr_steps : sequence of int
        Epochs at which the step schedule multiplies the rate by 0.1.
    """

    def __init__(self, schedule: str, steps_per_epoch: int, epochs: int, warmup_epochs: float,
                 lr_steps: Sequence[int]) -> None:
        self.schedule = schedule
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = steps_per_epoch * epochs
        self.warmup_steps = int(round(warmup_epochs * steps_per_epoch))
        self.lr_steps = [int(epoch) for epoch in lr_steps]

    def __call__(self, step: int) -> float:
        """Return the multiplier for optimiser step `step` (0-based)."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "step":
            epoch = step // self.steps_per_epoch
            return 0.1 ** sum(epoch >= boundary for boundary in self.lr_steps)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return cosine_decay(progress)


def scaled_learning_rate(base_lr: float, total_batch: int) -> float:
    """Return `base_lr` (given for a total batch of 32 videos) scaled linearly to the actual total batch."""
    return base_lr * total_batch / REFERENCE_TOTAL_BATCH
