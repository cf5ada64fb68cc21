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


# Older checkpoints: model-config keys renamed since, and the plain norms of a vanilla TSM (once "<bn>.norms.shared.").
LEGACY_CONFIG_KEYS = {"ffn_frames": "trained_frames", "private_bn": "private_norms"}
LEGACY_SHARED_NORM = ".norms.shared."


def upgrade_checkpoint(payload: dict[str, Any]) -> dict[str, Any]:
    """Bring a checkpoint written by an older version to today's names (config keys, vanilla norm keys), in place.

    A checkpoint already in today's names is returned unchanged.
    """
    config = payload.get("config")
    if isinstance(config, dict):
        for old, new in LEGACY_CONFIG_KEYS.items():
            if old in config:
                config[new] = config.pop(old)
    state = payload.get("model")
    if isinstance(state, dict) and any(LEGACY_SHARED_NORM in key for key in state):
        payload["model"] = {key.replace(LEGACY_SHARED_NORM, "."): value for key, value in state.items()}
    return payload


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
    return upgrade_checkpoint(payload)


def same_model(first: dict[str, Any], second: dict[str, Any]) -> bool:
    """True when two model configs describe the same network (memory format and initialisation aside)."""
    ignored = CONFIG_KEYS_IGNORED_ON_RESUME
    return {k: v for k, v in first.items() if k not in ignored} == {k: v for k, v in second.items() if k not in ignored}
