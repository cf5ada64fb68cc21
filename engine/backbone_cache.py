"""Where pretrain.py keeps a pretrained backbone: one folder per setting, keyed by the hash of every setting.

pretrain.py writes ``<output-root>/<arch>-<key>/backbone.pt`` and ``pretrain.json`` there; the demo finds the
folder from the same settings without running pretrain.py's command line. The settings hold pretrain.py's options
and the model family's own recipe for turning the trained network into a pretrained file (e.g. the inflation rule
of its temporal kernels; `model.registry.ImagePretraining.recipe`), so a changed rule never reuses an old file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model.registry import image_pretraining
from preprocess.synthetic_images import APPEARANCE_CLASSES

BACKBONE_FILE = "backbone.pt"
RECORD_FILE = "pretrain.json"
TASK_VERSION = 1  # bump when the image task changes, so that cached backbones are not reused
HASH_CHARS = 12
PRETRAIN_DEFAULTS: dict[str, Any] = {
    "arch": "tiny",
    "image_size": 32,
    "images_per_class": 2000,
    "val_images_per_class": 100,
    "epochs": 15,
    "batch_size": 128,
    "lr": 3e-3,
    "weight_decay": 0.05,
    "warmup_epochs": 0.5,
    "seed": 0,
}


def backbone_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """Return every setting that changes the pretrained backbone (the cache key is their hash).

    Parameters
    ----------
    values : mapping
        pretrain.py's options by name (``vars(args)``); a missing one takes its PRETRAIN_DEFAULTS value and a
        missing ``max_steps`` is None.

    Raises
    ------
    ValueError
        When the arch has no single-image pretraining (naming those that have one).
    """
    settings = {key: values.get(key, default) for key, default in PRETRAIN_DEFAULTS.items()}
    settings.update(max_steps=values.get("max_steps"), task_version=TASK_VERSION,
                    classes=[spec.name for spec in APPEARANCE_CLASSES])
    settings.update(image_pretraining(settings["arch"]).recipe)
    return settings


def cache_folder(output_root: Path, settings: dict[str, Any]) -> Path:
    """Return the folder of the backbone trained with these settings."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode("utf-8")).hexdigest()
    return Path(output_root) / f"{settings['arch']}-{digest[:HASH_CHARS]}"


def file_sha256(path: Path) -> str:
    """Return the SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
