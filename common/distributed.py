"""Process-group set-up under torchrun (NCCL on CUDA, gloo otherwise), the device of each process, and the
collectives the stages share (counts summed over ranks)."""

from __future__ import annotations

import datetime
import os
import sys
from collections.abc import Sequence

import torch
import torch.distributed as dist

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
