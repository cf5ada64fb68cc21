"""Evaluation: top-k counts and one pass over a loader for several networks at several frame counts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from common.distributed import reduce_counts
from engine.precision import autocast_context

TOP_K = 5


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, top_k: int = TOP_K) -> torch.Tensor:
    """Return the (top-1 correct, top-k correct) counts as an int64 tensor on the logits' device (no sync).

    k is capped at the number of classes.
    """
    k = min(top_k, logits.shape[1])
    predictions = logits.topk(k, dim=1).indices
    hits = predictions.eq(labels.unsqueeze(1))
    return torch.stack([hits[:, 0].sum(), hits.any(dim=1).sum()])


def evaluate_networks(networks: dict[str, nn.Module], loader: Any, eval_frames: Sequence[int],
                      device: torch.device, precision: str) -> dict[str, dict[int, dict[str, float]]]:
    """Evaluate networks at every frame count in one pass over the loader.

    Multi-view batches ("views" V > 1: crops x clips) are averaged in logit space per video. The networks are
    left in eval mode.

    Parameters
    ----------
    networks : dict
        {name: network}; each takes (B, T, 3, H, W) frames and returns logits.
    loader : iterable
        Evaluation batches {"videos": {T: tensor}, "label": tensor, optional "views": int}, on `device`.
    eval_frames : sequence of int
        The frame counts to evaluate (each must be in the batches).
    device : torch.device
        Where the networks run.
    precision : str
        "fp32", "bf16" or "fp16" (see engine.precision).

    Returns
    -------
    dict
        {name: {T: {"top1": percent, "top5": percent, "n": videos}}}, summed over all ranks.
    """
    for network in networks.values():
        network.eval()
    with torch.no_grad():  # a context, not a decorator: mutation testing (docs/testing.md) skips decorated functions
        correct, num_videos = count_correct(networks, loader, eval_frames, device, precision)
    totals = torch.full((len(networks), len(eval_frames), 1), float(num_videos), dtype=torch.float64)
    counts = torch.cat([correct.cpu().double(), totals], dim=2)
    counts = torch.tensor(reduce_counts(counts, device), dtype=torch.float64).view_as(counts)
    results: dict[str, dict[int, dict[str, float]]] = {}
    for model_index, name in enumerate(networks):
        results[name] = {}
        for frames_index, frames in enumerate(eval_frames):
            top1, top5, total = counts[model_index, frames_index].tolist()
            results[name][frames] = {
                "top1": 100.0 * top1 / max(total, 1.0), "top5": 100.0 * top5 / max(total, 1.0), "n": int(total)
            }
    return results


def count_correct(networks: dict[str, nn.Module], loader: Any, eval_frames: Sequence[int], device: torch.device,
                  precision: str) -> tuple[torch.Tensor, int]:
    """Return this rank's correct counts, int64 (networks, frame counts, [top-1, top-k]) on the device, and videos.

    The views of a video are consecutive rows of a batch (video-major); their logits are averaged per video.
    """
    correct = torch.zeros(len(networks), len(eval_frames), 2, dtype=torch.int64, device=device)  # read at the end
    num_videos = 0
    for batch in loader:
        labels = batch["label"]
        views = int(batch.get("views", 1))
        for model_index, network in enumerate(networks.values()):
            for frames_index, frames in enumerate(eval_frames):
                with autocast_context(precision, device):
                    logits = network(batch["videos"][frames]).float()
                logits = logits.view(labels.shape[0], views, -1).mean(dim=1)
                correct[model_index, frames_index] += topk_correct(logits, labels)
        num_videos += labels.shape[0]
    return correct, num_videos
