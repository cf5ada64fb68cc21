"""Evaluation counts reduced across ranks, so every rank reports the accuracy over all videos."""

from __future__ import annotations

from collections.abc import Sequence

import torch


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
