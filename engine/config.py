"""Training recipes: the defaults of every run and the documented presets (flags on the command line win).

``frames`` names the trained frame counts everywhere on the user's side (``--frames``, ``--val-frames``); an FFN
trains one branch per count.
"""

from __future__ import annotations

from typing import Any

# Values every run gets unless a preset or a flag says otherwise (an ImageNet-pretrained ResNet-50).
BASE_DEFAULTS: dict[str, Any] = {
    "arch": "resnet50",
    "pretrained": "auto",
    "dropout": 0.5,
    "epochs": 50,
    "batch_size": 8,
    "lr": 0.01,
    "optimizer": "sgd",
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "schedule": "cosine",
    "lr_steps": [20, 40],
    "warmup_epochs": 0.0,
    "official_groups": False,
    "clip_grad": None,
    "crop_size": 224,
    "test_resize": None,
    "multi_scale": True,
}

# Documented recipes. "official": the official FFN SSv2 run (2 GPUs x 16 videos, lr 0.01 at total batch 32,
# step x0.1 at epochs 20 and 40, classifier lr x5 / x10, no weight decay on BN and biases, no gradient clipping
# under AMP). "demo": the synthetic-data recipe of `make demo` (tiny backbone, 32 px native frames, AdamW).
PRESETS: dict[str, dict[str, Any]] = {
    "official": {
        "batch_size": 16,
        "schedule": "step",
        "lr_steps": [20, 40],
        "official_groups": True,
        "clip_grad": None,
    },
    "demo": {
        "arch": "tiny",
        "pretrained": "none",
        "dropout": 0.0,
        "epochs": 40,
        "batch_size": 32,
        "lr": 3e-3,
        "optimizer": "adamw",
        "weight_decay": 0.05,
        "schedule": "cosine",
        "warmup_epochs": 1.0,
        "crop_size": 32,
        "test_resize": 32,
        "multi_scale": False,
    },
}

# Where a preset differs per dataset (the manifest's "dataset", written by `make shards`): the official FFN run
# scripts (FFN-pytorch, 2D_Network/exp/tsm_<dataset>[_FFN]/run.sh) are the same for SSv1, SSv2 and Kinetics-400
# but for Kinetics' weight decay, 1e-4 instead of 5e-4. Flags still win.
DATASET_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    "official": {"k400": {"weight_decay": 1e-4}},
}


def preset_values(preset: str | None, dataset: str | None) -> dict[str, Any]:
    """The values of a preset for a dataset: the preset, then its per-dataset overrides ({} without a preset)."""
    if not preset:
        return {}
    return {**PRESETS[preset], **DATASET_OVERRIDES.get(preset, {}).get(dataset or "", {})}
