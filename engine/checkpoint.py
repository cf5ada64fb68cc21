"""Training checkpoints: written atomically, loaded on the CPU and checked for the keys train.py writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from common.atomic import atomic_file
from model import load_checkpoint_file

CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "scaler", "epoch", "rng", "config", "metrics")
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
# Model-config entries that do not change the network's parameters (memory format, initialisation source).
CONFIG_KEYS_IGNORED_ON_RESUME = ("channels_last", "pretrained")


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    """torch.save to a temporary name, fsync, then rename: a reader never sees half a checkpoint."""
    with atomic_file(path) as handle:
        torch.save(payload, handle)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a training checkpoint (train.py's last.pt / best.pt) on the CPU.

    Raises
    ------
    SystemExit
        If the file is missing or lacks one of CHECKPOINT_KEYS.
    """
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"{path}: no checkpoint there; check --resume / --output")
    payload = load_checkpoint_file(path)
    missing = [key for key in CHECKPOINT_KEYS if key not in payload]
    if missing:
        raise SystemExit(f"{path}: not a train.py checkpoint (missing {', '.join(missing)}); give a last.pt")
    return payload


def same_model(first: dict[str, Any], second: dict[str, Any]) -> bool:
    """True when two model configs describe the same network (memory format and initialisation aside)."""
    ignored = CONFIG_KEYS_IGNORED_ON_RESUME
    return {k: v for k, v in first.items() if k not in ignored} == {k: v for k, v in second.items() if k not in ignored}
