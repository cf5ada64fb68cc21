"""Training recipes: the defaults of every run and the documented presets (flags on the command line win).

A preset is either one of `PRESETS` (recipes that hold for any family, such as "demo") or a recipe a model family
registers for its models (model.registry.register_recipe; "official" is the run of each family's official code,
found through the arch, so this module names no family). ``frames`` names the trained frame counts everywhere on
the user's side (``--frames``, ``--val-frames``); an FFN trains one branch per count.
"""

from __future__ import annotations

import copy
from typing import Any

from model import model_family, model_recipe, recipe_names

# Values every run gets unless a preset or a flag says otherwise (an ImageNet-pretrained ResNet-50).
BASE_DEFAULTS: dict[str, Any] = {
    "arch": "resnet50",
    "pretrained": "auto",
    "dropout": 0.5,
    "epochs": 50,
    "batch_size": 8,
    "total_batch": None,
    "lr": 0.01,
    "lr_batch": 32,
    "optimizer": "sgd",
    "momentum": 0.9,
    "nesterov": False,
    "betas": [0.9, 0.999],
    "eps": 1e-8,
    "weight_decay": 5e-4,
    "param_groups": None,
    "schedule": "cosine",
    "lr_steps": [20, 40],
    "lr_step_factors": None,
    "warmup_epochs": 0.0,
    "warmup_start": None,
    "lr_floor": 0.0,
    "official_groups": False,
    "clip_grad": None,
    "precision": "auto",
    "val_precision": "same",
    "val_every": 1,
    "mixup": 0.0,
    "cutmix": 0.0,
    "mixup_switch_prob": 0.5,
    "label_smoothing": 0.0,
    "random_erasing": 0.0,
    "crop_size": 224,
    "test_resize": None,
    "multi_scale": True,
    "sampling": "independent",
    "train_crop": None,
    "jitter_range": [256, 320],
    "train_views": 1,
    "rand_augment": None,
    "test_crops": 1,
    "test_crop_size": None,
    "test_crop_layout": "tsm",
}

# Recipes for any family. "demo": the synthetic-data recipe of `make demo` (tiny backbone, 32 px native frames,
# AdamW). Each family's "official" recipe is registered by its module (model/<family>.py).
PRESETS: dict[str, dict[str, Any]] = {
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


def preset_names() -> list[str]:
    """Every preset name: those of `PRESETS` and every recipe name a family registers, sorted."""
    return sorted(set(PRESETS) | set(recipe_names()))


def preset_arch(preset: str | None, arch: str | None) -> str:
    """The arch of a run: `arch` when given, else the generic preset's, else BASE_DEFAULTS' (resnet50)."""
    if arch:
        return arch
    return str(PRESETS.get(preset or "", {}).get("arch", BASE_DEFAULTS["arch"]))


def preset_values(preset: str | None, arch: str, dataset: str | None = None) -> dict[str, Any]:
    """A copy of the values of a preset for an arch and a dataset ({} without a preset).

    A name of `PRESETS` gives that recipe; any other name gives the recipe the family of `arch` registered under it,
    with the family's overrides for `dataset` (the training manifest's "dataset"; e.g. the official TSM runs use
    weight decay 1e-4 on Kinetics-400, FFN-pytorch's 2D_Network/exp/tsm_k400*/run.sh).

    Raises
    ------
    ValueError
        When the name is neither a generic preset nor a recipe of the arch's family (naming the families that
        have it).
    """
    if not preset:
        return {}
    if preset in PRESETS:
        return copy.deepcopy(PRESETS[preset])
    recipe = model_recipe(arch, preset, dataset)
    if recipe is None:
        raise ValueError(f"--preset {preset}: the {model_family(arch)} family of --arch {arch} registers no "
                         f"such recipe; choose another --arch or one of {preset_names()}")
    return {key: list(value) if isinstance(value, tuple) else value for key, value in recipe.items()}
