"""The training step and the training epoch, with explicit inputs (train.py and ``make gpu-check`` run these).

In the manner of torchvision's references: ``train_one_epoch(model, criterion, optimizer, scheduler, scaler,
loader, device, epoch, ...)`` takes everything it uses as an argument and returns the epoch's figures; nothing
reaches into a run object. `make_criterion` gives the loss of a training mode: cross-entropy for a vanilla model
at one frame count, FFN's distillation loss (model.losses) for several; both take class indices or soft targets.
An epoch can start in its middle (a run resumed from a mid-epoch checkpoint: `EpochPosition`) and stop after any
step when the ranks agree to (a stop signal: engine.stop_request); both keep the arithmetic of an uninterrupted
epoch.

An optimiser step may accumulate the gradients of several consecutive loader batches (``accumulation``: the
micro-batches, each one forward pass, so BatchNorm sees one micro-batch at a time); a ``batch_transform`` (e.g.
data_pipeline.clip_augment.BatchAugment: random erasing, mixup / cutmix) may turn each micro-batch's clips and
labels into augmented clips and soft targets first. With neither, a step is one batch as it always was.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from common.distributed import is_distributed, reduce_counts
from engine.data import timed_batches
from engine.precision import autocast_context
from engine.rng import restore_rng_state
from model import cross_entropy, distillation_loss

Criterion = Callable[[dict[int, torch.Tensor], torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]
# (videos_by_frames, labels per clip, (epoch, step, micro-batch)) -> (videos_by_frames, targets)
BatchTransform = Callable[[dict[int, torch.Tensor], torch.Tensor, tuple[int, int, int]],
                          tuple[dict[int, torch.Tensor], torch.Tensor]]
MicroBatch = tuple[dict[int, torch.Tensor], torch.Tensor]
TRAINING_MODES = ("vanilla", "ffn")
STEP_LOG_EVERY = 10


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


def make_criterion(mode: str, lam: float = 1.0, ce_all_frames: bool = False) -> Criterion:
    """The loss of a training mode, as a function of ({T: logits}, labels) returning (loss, detached parts).

    Parameters
    ----------
    mode : str
        "vanilla": cross-entropy at the one frame count; "ffn": CE at the highest frame count plus lam x KL to each
        lower one (model.losses.distillation_loss), computed in float32.
    lam : float
        FFN: weight of the KL terms.
    ce_all_frames : bool
        FFN: also CE at every lower frame count (not the official loss; an ablation).

    The labels are class indices (N,) or soft targets (N, classes) (model.losses.cross_entropy).
    """
    if mode not in TRAINING_MODES:
        raise ValueError(f"mode={mode!r}; use one of {TRAINING_MODES}")

    def criterion(logits_by_frames: dict[int, torch.Tensor],
                  labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits_by_frames = {frames: logits.float() for frames, logits in logits_by_frames.items()}
        if mode == "vanilla":
            (logits,) = logits_by_frames.values()
            loss = cross_entropy(logits, labels)
            return loss, {"ce": loss.detach()}
        return distillation_loss(logits_by_frames, labels, lam=lam, ce_all_frames=ce_all_frames)

    return criterion


@dataclass(frozen=True)
class StepResult:
    """What one optimiser step returns: the loss (detached, averaged over ranks), its parts, the logits."""

    loss: torch.Tensor
    parts: dict[str, torch.Tensor]
    logits_by_frames: dict[int, torch.Tensor]


def train_step(
    model: nn.Module,
    criterion: Criterion,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    videos_by_frames: dict[int, torch.Tensor],
    labels: torch.Tensor,
    device: torch.device,
    precision: str,
    clip_grad: float | None = None,
) -> StepResult:
    """One optimiser step on a batch {T: videos} already on the device: forward, loss, backward, step, schedule.

    The loss is averaged over the ranks when a process group runs (its value is only read where it is logged).
    `labels` are class indices or soft targets. `accumulated_step` with one micro-batch.
    """
    return accumulated_step(model, criterion, optimizer, scheduler, scaler, [(videos_by_frames, labels)], device,
                            precision, clip_grad)


def accumulated_step(
    model: nn.Module,
    criterion: Criterion,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    micro_batches: Sequence[MicroBatch],
    device: torch.device,
    precision: str,
    clip_grad: float | None = None,
) -> StepResult:
    """One optimiser step over micro-batches [(videos_by_frames, targets), ...]: each is a forward and a backward of
    its loss / n (DistributedDataParallel synchronises the gradients on the last one only), then one clip, step
    and schedule step.

    With one micro-batch the arithmetic is that of a plain step (no division). The step's loss and parts are the
    means over the micro-batches; its logits are those of every micro-batch, concatenated.
    """
    count = len(micro_batches)
    if count < 1:
        raise ValueError("a step needs at least one micro-batch")
    optimizer.zero_grad(set_to_none=True)
    losses, parts_list, logits_list = [], [], []
    for index, (videos_by_frames, targets) in enumerate(micro_batches):
        synchronise = index == count - 1 or not hasattr(model, "no_sync")
        with contextlib.nullcontext() if synchronise else model.no_sync():
            with autocast_context(precision, device):
                logits_by_frames = model(videos_by_frames)
            loss, parts = criterion(logits_by_frames, targets)
            scaler.scale(loss if count == 1 else loss / count).backward()
        losses.append(loss.detach())
        parts_list.append(parts)
        logits_list.append({frames: logits.detach() for frames, logits in logits_by_frames.items()})
    if clip_grad:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    loss_mean = (losses[0] if count == 1 else torch.stack(losses).mean()).float().reshape(1)
    if is_distributed():
        dist.all_reduce(loss_mean)
        loss_mean /= dist.get_world_size()
    return StepResult(loss_mean, _mean_parts(parts_list), _concatenated(logits_list))


def _mean_parts(parts_list: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The loss parts averaged over micro-batches (the parts themselves for one)."""
    if len(parts_list) == 1:
        return parts_list[0]
    return {name: torch.stack([parts[name] for parts in parts_list]).mean() for name in parts_list[0]}


def _concatenated(logits_list: list[dict[int, torch.Tensor]]) -> dict[int, torch.Tensor]:
    """The micro-batches' logits per frame count, concatenated along the batch (as they are for one)."""
    if len(logits_list) == 1:
        return logits_list[0]
    return {frames: torch.cat([logits[frames] for logits in logits_list]) for frames in logits_list[0]}


def clip_labels(batch: dict[str, Any]) -> torch.Tensor:
    """The label of every clip of a batch: a video's label repeated for each of its views (repeated augmentation
    gives "views" clips per video), the labels themselves for one view."""
    views = int(batch.get("views", 1))
    labels = batch["label"]
    return labels if views == 1 else labels.repeat_interleave(views)


def grouped(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive groups of `size` items (a last, shorter group is dropped); reads only what each group needs."""
    iterator = iter(items)
    while True:
        group = list(itertools.islice(iterator, size))
        if len(group) < size:
            return
        yield group


def check_finite(loss_value: float, epoch: int, step: int, global_step: int, last_good: Path | None) -> None:
    """Raise NonFiniteLossError naming the step and the last good checkpoint if the loss is not finite."""
    if math.isfinite(loss_value):
        return
    where = str(last_good) if last_good is not None and last_good.exists() else "none yet (no epoch finished)"
    raise NonFiniteLossError(
        f"loss is {loss_value} at epoch {epoch + 1} step {step + 1} (global step {global_step}); "
        f"last good checkpoint: {where}; lower --lr or use --precision fp32/bf16, then --resume"
    )


StepLogger = Callable[[int, float, dict[str, torch.Tensor], float], None]


StopCheck = Callable[[], int]


@dataclass
class EpochPosition:
    """How far a training epoch has got on this rank.

    Attributes
    ----------
    step : int
        Optimiser steps of the epoch done.
    sums : list of float
        This rank's running sums over those steps: loss x videos, top-1 correct, videos (float64 values; carried
        over exactly, so a resumed epoch's figures are those of an uninterrupted one).
    rng_state : dict, optional
        A resumed epoch: this rank's random state at the stop (engine.rng.capture_rng_state), restored once the
        loader's pass has started and before the next step. Starting a DataLoader pass draws from torch's
        generator, which an uninterrupted epoch did before its first step; restoring after it keeps every later
        draw (dropout) where it was.
    """

    step: int = 0
    sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    rng_state: dict[str, Any] | None = None


@dataclass(frozen=True)
class EpochResult:
    """What `train_one_epoch` returns.

    Attributes
    ----------
    figures : dict or None
        {"train_loss", "train_top1", "clips_per_s", "data_wait", "epoch_s"} over all ranks; None when the epoch
        stopped before its end.
    global_step : int
        Optimiser steps done in the run after this call.
    position : EpochPosition
        Where the epoch stands on this rank (its step equals the epoch's steps when it ran to its end).
    stopped_by : int
        The stop signal the ranks agreed on after the last step run (0: none). With `figures` set, the signal came
        at the epoch's last step: the epoch is complete and the caller stops after finishing it.
    """

    figures: dict[str, float] | None
    global_step: int
    position: EpochPosition
    stopped_by: int = 0


def train_one_epoch(
    model: nn.Module,
    criterion: Criterion,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    loader: Any,
    device: torch.device,
    epoch: int,
    *,
    steps: int,
    precision: str,
    top_frames: int,
    clip_grad: float | None = None,
    global_step: int = 0,
    last_good: Path | None = None,
    step_logger: StepLogger | None = None,
    progress: str | None = None,
    accumulation: int = 1,
    batch_transform: BatchTransform | None = None,
    start: EpochPosition | None = None,
    stop_check: StopCheck | None = None,
) -> EpochResult:
    """Train one epoch of `steps` optimiser steps (from `start` on); return its figures, or where it stopped.

    Parameters
    ----------
    model : nn.Module
        The network (wrapped in DistributedDataParallel under torchrun); it takes {T: videos}.
    criterion, optimizer, scheduler, scaler
        The loss (`make_criterion`), the optimiser, the per-step learning-rate schedule and the GradScaler.
    loader : iterable
        Training batches {"videos": {T: videos}, "label": labels, optional "views"} on `device` (``set_epoch``
        called if it has it); a batch of V views per video holds V clips per label.
    device : torch.device
        Where the model runs.
    epoch : int
        0-based epoch (the loader's order and the messages).
    steps : int
        Optimiser steps of this epoch (the loader's length // accumulation, or fewer).
    precision : str
        "fp32", "bf16" or "fp16" (engine.precision).
    top_frames : int
        The frame count whose top-1 is reported (the highest trained one).
    clip_grad : float, optional
        Maximum gradient norm.
    global_step : int
        Optimiser steps done before this epoch.
    last_good : Path, optional
        The last checkpoint, named when the loss stops being finite.
    step_logger : callable, optional
        ``step_logger(global_step, loss, parts, lr)`` every STEP_LOG_EVERY steps (TensorBoard).
    progress : str, optional
        A progress bar's title (None: no bar).
    accumulation : int
        Loader batches (micro-batches) per optimiser step, their gradients accumulated (1: one batch per step).
    batch_transform : callable, optional
        ``batch_transform(videos_by_frames, clip_labels, (epoch, step, micro_batch))`` -> (videos_by_frames,
        targets), applied to every micro-batch before its forward pass (augmentation on the device batch; the
        targets may be soft). Training top-1 counts against the clips' own labels.
    start : EpochPosition, optional
        Resume the epoch here: the loader starts at batch ``start.step x accumulation``
        (``set_epoch(epoch, start_batch)``; the batches before it are not decoded) and the running sums continue
        from ``start.sums``.
    stop_check : callable, optional
        Called after every step on every rank (e.g. engine.stop_request.StopRequest.agreed); a non-zero value
        (the same on every rank) ends the epoch after that step.

    Returns
    -------
    EpochResult
        The epoch's figures (or None when it stopped early), the global step, the position and the stop signal.
        ``clips_per_s``, ``data_wait`` and ``epoch_s`` count only the steps of this call.

    Raises
    ------
    NonFiniteLossError
        When the loss is NaN or infinite.
    """
    from tqdm import tqdm

    model.train()
    start = start if start is not None else EpochPosition()
    if start.step:
        loader.set_epoch(epoch, start_batch=start.step * accumulation)
    elif hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    world_size = dist.get_world_size() if is_distributed() else 1
    bar = tqdm(total=steps, initial=start.step, desc=progress, disable=progress is None, dynamic_ncols=True,
               leave=False, file=sys.stdout)
    sums = torch.tensor(start.sums, dtype=torch.float64)  # loss x videos, top-1 correct, videos
    wait_total, began = 0.0, time.perf_counter()
    step, stopped_by, videos_here = start.step, 0, 0
    for group in itertools.islice(grouped(timed_batches(loader), accumulation), steps - start.step):
        if step == start.step and start.rng_state is not None:
            restore_rng_state(start.rng_state)
        micro_batches, clip_label_list = [], []
        for index, (batch, _) in enumerate(group):
            labels = clip_labels(batch)
            videos_by_frames, targets = batch["videos"], labels
            if batch_transform is not None:
                videos_by_frames, targets = batch_transform(videos_by_frames, labels, (epoch, step, index))
            micro_batches.append((videos_by_frames, targets))
            clip_label_list.append(labels)
        labels = clip_label_list[0] if len(clip_label_list) == 1 else torch.cat(clip_label_list)
        result = accumulated_step(model, criterion, optimizer, scheduler, scaler, micro_batches, device, precision,
                                  clip_grad)
        global_step += 1
        loss_value = float(result.loss)
        check_finite(loss_value, epoch, step, global_step, last_good)
        step += 1
        correct = int(result.logits_by_frames[top_frames].float().argmax(dim=1).eq(labels).sum())
        if step_logger is not None and global_step % STEP_LOG_EVERY == 0:
            step_logger(global_step, loss_value, result.parts, scheduler.get_last_lr()[0])
        videos = int(labels.shape[0])
        videos_here += videos
        wait_total += sum(seconds for _, seconds in group)
        sums += torch.tensor([loss_value * videos, correct, videos], dtype=torch.float64)
        elapsed = time.perf_counter() - began
        bar.set_postfix(loss=f"{sums[0] / sums[2]:.3f}", acc=f"{100 * sums[1] / sums[2]:.1f}",
                        clips_s=f"{videos_here * world_size / elapsed:.1f}", wait=f"{wait_total / elapsed:.2f}")
        bar.update(1)
        stopped_by = stop_check() if stop_check is not None else 0
        if stopped_by:
            break
    bar.close()
    position = EpochPosition(step, sums.tolist())
    if step < steps:
        return EpochResult(None, global_step, position, stopped_by)
    elapsed = time.perf_counter() - began
    totals = torch.tensor(reduce_counts(sums, device), dtype=torch.float64)
    figures = {
        "train_loss": float(totals[0] / max(totals[2], 1)),
        "train_top1": float(100 * totals[1] / max(totals[2], 1)),
        "clips_per_s": videos_here * world_size / elapsed,  # every rank takes the same number of videos per step
        "data_wait": wait_total / elapsed,
        "epoch_s": elapsed,
    }
    return EpochResult(figures, global_step, position, stopped_by)
