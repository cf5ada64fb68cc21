"""The learning-rate shape (warm-up, then cosine or steps) and the linearly scaled rate.

Two warm-ups:

- from zero (the default, ``warmup_start=None``): ``(step + 1) / warmup_steps`` over ``round(warmup_epochs x
  steps_per_epoch)`` steps, then the decay counted from the end of the warm-up;
- from a start value (``warmup_start`` set, relative to the peak): PySlowFast's ``get_lr_at_epoch`` in fractional
  epochs ``e = step / steps_per_epoch``: ``start + (decay(W) - start) x e / W`` while ``e < W`` (W =
  ``warmup_epochs``), where ``decay(W)`` is the decay's value at the end of the warm-up. With this warm-up the
  cosine runs from the end of the warm-up to the last epoch (PySlowFast's ``COSINE_AFTER_WARMUP``).

Decays: "cosine" from 1 to ``lr_floor`` (relative to the peak; 0 by default), or "step": the rate is multiplied by
``lr_step_factors[i]`` from epoch ``lr_steps[i]`` on (default: x0.1 at each listed epoch, i.e. factors 0.1,
0.01, ...). PySlowFast's ``steps_with_relative_lrs`` with STEPS [0, 14, 18] and LRS [1, 0.1, 0.01] is
``lr_steps=[14, 18]``, ``lr_step_factors=[0.1, 0.01]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

REFERENCE_TOTAL_BATCH = 32
SCHEDULES = ("cosine", "step")
STEP_FACTOR = 0.1


def cosine_decay(progress: float) -> float:
    """Return the cosine multiplier at `progress` in [0, 1] (1 at the start, 0 at the end)."""
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class LearningRateShape:
    """Multiplier of the peak rate at a step: warm-up, then cosine (to a floor) or steps.

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
        Epochs at which the step schedule changes the rate.
    lr_step_factors : sequence of float, optional
        The multiplier from each of `lr_steps` on (same length); None: 0.1 per step passed.
    warmup_start : float, optional
        The multiplier the warm-up starts from (relative to the peak; see the module docstring); None: the
        warm-up from zero.
    lr_floor : float
        The multiplier the cosine ends at (relative to the peak).

    Raises
    ------
    ValueError
        For an unknown schedule, factors that do not match the steps, or a floor or start outside [0, 1).
    """

    def __init__(self, schedule: str, steps_per_epoch: int, epochs: int, warmup_epochs: float,
                 lr_steps: Sequence[int], *, lr_step_factors: Sequence[float] | None = None,
                 warmup_start: float | None = None, lr_floor: float = 0.0) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule={schedule!r}; use one of {SCHEDULES}")
        if lr_step_factors is not None and len(lr_step_factors) != len(lr_steps):
            raise ValueError(f"lr_step_factors {list(lr_step_factors)} needs one factor per step of {list(lr_steps)}")
        if not 0.0 <= lr_floor < 1.0 or (warmup_start is not None and not 0.0 <= warmup_start < 1.0):
            raise ValueError(f"lr_floor={lr_floor} and warmup_start={warmup_start} are fractions of the peak "
                             "rate in [0, 1)")
        self.schedule = schedule
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = steps_per_epoch * epochs
        self.warmup_steps = int(round(warmup_epochs * steps_per_epoch))
        self.lr_steps = [int(epoch) for epoch in lr_steps]
        self.epochs = epochs
        self.warmup_epochs = float(warmup_epochs)
        self.lr_step_factors = None if lr_step_factors is None else [float(factor) for factor in lr_step_factors]
        self.warmup_start = None if warmup_start is None else float(warmup_start)
        self.lr_floor = float(lr_floor)

    def __call__(self, step: int) -> float:
        """Return the multiplier for optimiser step `step` (0-based)."""
        if self.warmup_start is not None:
            return self._from_start(step)
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "step":
            return self._step_factor(step // self.steps_per_epoch)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self._floored(cosine_decay(progress))

    def _step_factor(self, epoch: int) -> float:
        """The step schedule's multiplier in (whole) epoch `epoch`."""
        factors = self.lr_step_factors
        if factors is None:
            return STEP_FACTOR ** sum(epoch >= boundary for boundary in self.lr_steps)
        passed = [factor for boundary, factor in sorted(zip(self.lr_steps, factors)) if epoch >= boundary]
        return passed[-1] if passed else 1.0

    def _floored(self, cosine: float) -> float:
        """The cosine multiplier lifted to end at the floor (exactly the plain cosine when the floor is 0)."""
        return self.lr_floor + (1.0 - self.lr_floor) * cosine

    def _decay_at(self, epoch: float) -> float:
        """The decay without warm-up at fractional epoch `epoch` (the cosine starting after the warm-up)."""
        if self.schedule == "step":
            return self._step_factor(math.floor(epoch))
        span = max(self.epochs - self.warmup_epochs, 1e-12)
        progress = min(1.0, max(0.0, (epoch - self.warmup_epochs) / span))
        return self._floored(cosine_decay(progress))

    def _from_start(self, step: int) -> float:
        """The multiplier with the warm-up from a start value, in fractional epochs (PySlowFast's rule)."""
        epoch = step / self.steps_per_epoch
        if epoch < self.warmup_epochs:
            end = self._decay_at(self.warmup_epochs)
            return self.warmup_start + (end - self.warmup_start) * epoch / self.warmup_epochs
        return self._decay_at(epoch)


def scaled_learning_rate(base_lr: float, total_batch: int, reference_batch: int = REFERENCE_TOTAL_BATCH) -> float:
    """Return `base_lr` (given for a total batch of `reference_batch` videos, 32 by default) scaled linearly to the
    actual total batch."""
    return base_lr * total_batch / reference_batch


def accumulation_steps(total_batch: int | None, batch_size: int, world_size: int) -> int:
    """Micro-batches accumulated per optimiser step so that a step holds `total_batch` videos.

    Each process runs `batch_size` videos per forward pass (what BatchNorm sees). None, or a total batch that
    one pass over all processes already reaches or exceeds, gives 1 (with more processes than the total needs,
    every process keeps its batch: the total grows and the learning rate is scaled with it).

    Raises
    ------
    ValueError
        When the total batch is larger than one pass and not a multiple of it.
    """
    per_pass = batch_size * world_size
    if total_batch is None or total_batch <= per_pass:
        return 1
    if total_batch % per_pass:
        raise ValueError(f"--total-batch {total_batch} is not a multiple of --batch-size {batch_size} x "
                         f"{world_size} process(es); choose a total batch that is")
    return total_batch // per_pass
