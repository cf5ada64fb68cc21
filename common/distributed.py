"""Process-group set-up under torchrun (NCCL on CUDA, gloo otherwise), the device of each process, and the
collectives the stages share (objects gathered from every rank, counts summed over ranks, rank 0's buffers copied to
every rank)."""

from __future__ import annotations

import datetime
import os
import sys
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from common.device import get_device

PROCESS_GROUP_TIMEOUT = datetime.timedelta(minutes=30)


def init_distributed(device_preference: str | None) -> tuple[torch.device, int, int]:
    """Start the process group when launched by torchrun; return (device, rank, world size).

    Parameters
    ----------
    device_preference : str or None
        A device name ("cuda", "cpu", ...) or None for model.get_device's choice (CUDA, then MPS, then CPU).

    Returns
    -------
    (device, rank, world_size)
        Each CUDA process uses the GPU of its LOCAL_RANK. Without torchrun: (device, 0, 1), no process group.
    """
    try:
        device = get_device(device_preference)
    except ValueError as error:
        raise SystemExit(f"{os.path.basename(sys.argv[0]) or 'python'}: {error}") from error
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return device, 0, 1
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, timeout=PROCESS_GROUP_TIMEOUT)
    return device, dist.get_rank(), dist.get_world_size()


def is_distributed() -> bool:
    """True inside an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def close_distributed() -> None:
    """Destroy the process group if one was started (a no-op otherwise)."""
    if is_distributed():
        dist.destroy_process_group()


def gather_from_ranks(value: Any) -> list[Any]:
    """Return every rank's `value` (any picklable object), indexed by rank; every rank must call it.

    Outside a process group: ``[value]``.
    """
    if not is_distributed():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def reduce_counts(counts: Sequence[float] | torch.Tensor, device: torch.device | str | None = None) -> list[float]:
    """Sum per-rank counts (e.g. [correct_top1, correct_top5, total]) over all ranks.

    Parameters
    ----------
    counts : sequence of numbers or tensor
        This rank's counts.
    device : torch.device or str, optional
        Where the all_reduce runs (the CUDA device under NCCL; CPU under gloo). Default: CUDA when the backend
        is NCCL, else CPU.

    Returns
    -------
    list of float
        The totals over all ranks (this rank's counts when torch.distributed is not initialised).
    """
    values = torch.as_tensor(counts, dtype=torch.float64).flatten()
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return values.tolist()
    if device is None:
        device = "cuda" if torch.distributed.get_backend() == "nccl" else "cpu"
    reduced = values.to(device)
    torch.distributed.all_reduce(reduced, op=torch.distributed.ReduceOp.SUM)
    return reduced.cpu().tolist()


def broadcast_buffers(module: nn.Module, source_rank: int = 0) -> int:
    """Copy every buffer of `module` (BatchNorm running statistics and counters) from `source_rank` to all ranks.

    Under DistributedDataParallel each rank's training forward updates its own BatchNorm running statistics from
    its own batch; DDP copies rank 0's buffers to the others only at the start of the next training forward, so
    after an epoch's last step the ranks hold different statistics. Calling this before validation and before a
    checkpoint is written makes every rank evaluate with the statistics rank 0 saves. It changes nothing in
    training: the next training forward would have copied the same values. Buffers are sent one flat tensor per
    device and dtype. Every rank must call it; outside a process group it does nothing.

    Parameters
    ----------
    module : nn.Module
        The network (not its DDP wrapper; the buffers are the same tensors).
    source_rank : int
        The rank whose buffers every rank gets.

    Returns
    -------
    int
        The number of buffers copied (0 outside a process group).
    """
    if not is_distributed():
        return 0
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for buffer in module.buffers():
        groups.setdefault((buffer.device, buffer.dtype), []).append(buffer)
    for buffers in groups.values():
        flat = torch.cat([buffer.detach().reshape(-1) for buffer in buffers])
        dist.broadcast(flat, src=source_rank)
        for buffer, values in zip(buffers, flat.split([buffer.numel() for buffer in buffers])):
            buffer.data.copy_(values.view_as(buffer))
    return sum(len(buffers) for buffers in groups.values())
