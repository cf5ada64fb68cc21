"""Shared by the parity tests: rebuild an official state dict from a golden spec, golden inputs, relative L2.

Every golden folder under tests/golden/ describes its weights the same way: for the key at position i of the
official state dict, ``rng = numpy.random.default_rng(seed + i)`` draws ["normal", std, mean] or
["uniform", low, high] values (cast to float32); null marks an integer buffer left at zero; then the calibrated
running statistics of an .npz file replace the BatchNorm buffers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def relative_l2(ours: torch.Tensor, reference: np.ndarray) -> float:
    """||ours - reference|| / ||reference||."""
    reference_tensor = torch.as_tensor(reference, dtype=torch.float64)
    return float(torch.linalg.norm(ours.double() - reference_tensor) / torch.linalg.norm(reference_tensor))


def rebuild_state_dict(spec: list[dict], seed: int, stats_file: Path) -> dict[str, torch.Tensor]:
    """The official state dict of the golden README: per-key rng = default_rng(seed + index), then calibrated stats."""
    state_dict = {}
    for entry in spec:
        shape = tuple(entry["shape"])
        rule = entry["rule"]
        if rule is None:
            state_dict[entry["key"]] = torch.zeros(shape, dtype=torch.long)
            continue
        rng = np.random.default_rng(seed + entry["index"])
        if rule[0] == "normal":
            values = rng.standard_normal(shape) * rule[1] + rule[2]
        elif rule[0] == "uniform":
            values = rng.uniform(rule[1], rule[2], shape)
        else:
            raise ValueError(f"unknown rule {rule} for {entry['key']}")
        state_dict[entry["key"]] = torch.from_numpy(np.asarray(values, dtype=np.float32))
    with np.load(stats_file) as stats:
        for key in stats.files:
            assert key in state_dict, f"{stats_file} names {key}, absent from the spec"
            state_dict[key] = torch.from_numpy(stats[key].astype(np.float32))
    return state_dict


def golden_input(seed: int, num_videos: int, frames: int, size: int) -> torch.Tensor:
    """The golden READMEs' input: default_rng(seed).standard_normal((n, T, 3, hw, hw)) as float32."""
    values = np.random.default_rng(seed).standard_normal((num_videos, frames, 3, size, size))
    return torch.from_numpy(values.astype(np.float32))


def golden_channels_first_input(seed: int, num_videos: int, frames: int, size: int) -> torch.Tensor:
    """The 3D families' golden input default_rng(seed).standard_normal((n, 3, T, hw, hw)) (the official layout),
    returned in ours: (n, T, 3, hw, hw)."""
    values = np.random.default_rng(seed).standard_normal((num_videos, 3, frames, size, size)).astype(np.float32)
    return torch.from_numpy(values).permute(0, 2, 1, 3, 4).contiguous()
