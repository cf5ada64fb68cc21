"""The official recipe of every family as ``train.py --preset official``: registry, resolution, precision, batch
arithmetic, and a one-epoch run of each family's recipe scaled down to the tiny networks on the CPU."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

import train
from engine.config import BASE_DEFAULTS, PRESETS, preset_names, preset_values
from engine.schedule import accumulation_steps
from model import model_family, model_names, model_recipe, recipe_names
from model.registry import register_recipe

REQUIRED = ["--mode", "ffn", "--frames", "4", "8", "16", "--shards", "unused", "--output", "unused"]

# What docs/training.md's table promises for each family's official recipe (its arch of the official run first).
DOCUMENTED = {
    "resnet50": {
        "batch_size": 16, "total_batch": 32, "lr": 0.01, "lr_batch": 32, "optimizer": "sgd", "momentum": 0.9,
        "nesterov": False, "weight_decay": 5e-4, "param_groups": "official-tsm", "schedule": "step",
        "lr_steps": [20, 40], "lr_step_factors": None, "warmup_epochs": 0.0, "warmup_start": None, "epochs": 50,
        "dropout": 0.5, "clip_grad": None, "shift_mode": "official", "precision": "fp16", "val_precision": "fp32",
        "crop_size": 224, "test_resize": None, "multi_scale": True, "train_crop": None, "sampling": "independent",
        "test_crops": 1, "test_crop_layout": "tsm", "val_every": 1, "mixup": 0.0, "rand_augment": None,
    },
    "slowfast_r50": {
        "batch_size": 4, "total_batch": 16, "lr": 0.03, "lr_batch": 16, "optimizer": "sgd", "momentum": 0.9,
        "nesterov": True, "weight_decay": 1e-6, "param_groups": "no-decay-norms", "schedule": "step",
        "lr_steps": [14, 18], "lr_step_factors": [0.1, 0.01], "epochs": 22, "warmup_epochs": 0.19,
        "warmup_start": pytest.approx(1e-4 / 0.03), "dropout": 0.5, "clip_grad": None, "precision": "fp32",
        "val_precision": "fp32", "slow_mode": "official", "sampling": "rounded", "train_crop": "jitter",
        "jitter_range": [256, 320], "crop_size": 224, "test_resize": 256, "test_crop_size": 256,
        "test_crop_layout": "uniform", "test_crops": 1, "train_views": 1, "mixup": 0.0, "rand_augment": None,
    },
    "uniformer_s": {
        "batch_size": 8, "total_batch": 32, "train_views": 2, "lr": 2e-4, "lr_batch": 32, "optimizer": "adamw",
        "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.05, "param_groups": "no-decay-1d",
        "schedule": "cosine", "epochs": 60, "warmup_epochs": 5.0, "warmup_start": pytest.approx(1e-6 / 2e-4),
        "lr_floor": pytest.approx(1e-6 / 2e-4), "drop_path_rate": 0.2, "clip_grad": 20.0, "precision": "fp16",
        "val_precision": "fp32", "mixup": 0.8, "cutmix": 1.0, "mixup_switch_prob": 0.5, "label_smoothing": 0.1,
        "rand_augment": "rand-m7-n4-mstd0.5-inc1", "random_erasing": 0.25, "train_crop": "random-resized",
        "crop_size": 224, "sampling": "rounded", "test_resize": 224, "test_crop_size": 224,
        "test_crop_layout": "uniform", "test_crops": 3, "val_every": 5,
    },
    "tea_res2net50": {
        "batch_size": 16, "total_batch": 32, "lr": 0.02, "lr_batch": 32, "optimizer": "sgd", "momentum": 0.9,
        "nesterov": False, "weight_decay": 5e-4, "param_groups": "official-tsm", "schedule": "step",
        "lr_steps": [30, 40, 45], "lr_step_factors": None, "epochs": 50, "warmup_epochs": 0.0, "dropout": 0.5,
        "clip_grad": None, "precision": "fp16", "val_precision": "fp32", "crop_size": 224, "multi_scale": True,
        "sampling": "independent", "test_crop_layout": "tsm", "test_crops": 1,
    },
}
# The preset official of the TSM family before the recipes moved into the registry, and what was added to it.
PREVIOUS_TSM_OFFICIAL = {"batch_size": 16, "schedule": "step", "lr_steps": [20, 40], "param_groups": "official-tsm",
                         "clip_grad": None}


def resolved(*extra: str) -> argparse.Namespace:
    """train.py's resolved arguments for the required flags plus `extra`."""
    return train.resolve_args([*REQUIRED, *extra])


def documented_archs() -> list[str]:
    """The archs of DOCUMENTED that are registered here."""
    return [arch for arch in DOCUMENTED if arch in model_names()]


@pytest.mark.parametrize("arch", documented_archs())
def test_official_preset_resolves_to_the_documented_values(arch: str) -> None:
    args = resolved("--preset", "official", "--arch", arch)
    values = {key: getattr(args, key) for key in DOCUMENTED[arch]}
    assert values == DOCUMENTED[arch]


def test_every_family_with_a_documented_recipe_registers_it_and_every_recipe_key_is_a_train_option() -> None:
    options = set(vars(resolved()))
    for arch in documented_archs():
        recipe = model_recipe(arch, "official")
        assert recipe is not None, f"{model_family(arch)} registers no official recipe"
        assert set(recipe) <= options, sorted(set(recipe) - options)
    assert "official" in recipe_names() and "official" not in PRESETS
    assert set(preset_names()) == {"demo", "official"}


def test_tsm_official_keeps_the_previous_preset_and_adds_the_official_run() -> None:
    args = resolved("--preset", "official")
    assert args.arch == "resnet50" and args.pretrained == "imagenet"
    assert {key: getattr(args, key) for key in PREVIOUS_TSM_OFFICIAL} == PREVIOUS_TSM_OFFICIAL
    assert (args.lr, args.weight_decay, args.momentum, args.epochs, args.dropout) == (0.01, 5e-4, 0.9, 50, 0.5)
    assert (args.total_batch, args.shift_mode, args.precision, args.val_precision) == (32, "official", "fp16", "fp32")


def test_recipes_are_frozen_and_resolution_copies_them() -> None:
    recipe = model_recipe("resnet50", "official")
    with pytest.raises(TypeError):
        recipe["lr"] = 1.0  # type: ignore[index]
    assert isinstance(recipe["lr_steps"], tuple)
    first = preset_values("official", "resnet50")
    first["lr_steps"].append(60)
    assert preset_values("official", "resnet50")["lr_steps"] == [20, 40]
    demo = preset_values("demo", "tiny")
    demo["epochs"] = 1
    assert PRESETS["demo"]["epochs"] == 40


def test_registering_another_recipe_under_a_taken_name_is_refused() -> None:
    from model import tsm_resnet

    # the same settings again (a module imported twice): accepted
    register_recipe("tsm", "official", tsm_resnet.OFFICIAL_RECIPE, tsm_resnet.OFFICIAL_DATASET_OVERRIDES)
    with pytest.raises(ValueError, match="registered twice"):
        register_recipe("tsm", "official", {"lr": 1.0})
    with pytest.raises(ValueError, match="registered twice"):
        register_recipe("tsm", "official", tsm_resnet.OFFICIAL_RECIPE)  # without its dataset overrides


def test_dataset_overrides_of_a_recipe_apply_to_their_dataset_only() -> None:
    assert preset_values("official", "resnet50", "k400")["weight_decay"] == 1e-4
    assert preset_values("official", "resnet50", "ssv2")["weight_decay"] == 5e-4
    assert preset_values("official", "resnet50")["weight_decay"] == 5e-4
    assert preset_values("official", "slowfast_r50", "k400")["weight_decay"] == 1e-6  # only TSM's scripts differ


def test_flags_win_over_the_preset_and_the_defaults_stay_without_one() -> None:
    args = resolved("--preset", "official", "--arch", "tiny", "--lr", "0.5", "--batch-size", "4",
                    "--precision", "fp32", "--param-groups", "all", "--lr-steps", "3")
    assert (args.lr, args.batch_size, args.precision, args.param_groups, args.lr_steps) == (0.5, 4, "fp32", "all", [3])
    assert "lr" not in args.preset_keys and "total_batch" in args.preset_keys
    plain = resolved()
    assert plain.preset_keys == []
    resolved_names = {"param_groups": "all", "pretrained": "imagenet"}  # the policy and "auto" are resolved
    for key, value in BASE_DEFAULTS.items():
        assert getattr(plain, key) == resolved_names.get(key, value), key


def test_official_groups_flag_is_the_official_tsm_policy() -> None:
    assert resolved("--official-groups").param_groups == "official-tsm"
    assert resolved("--no-official-groups").param_groups == "all"
    assert resolved("--param-groups", "no-decay-1d").param_groups == "no-decay-1d"
    assert resolved("--preset", "official", "--arch", "slowfast_tiny", "--official-groups").param_groups == (
        "official-tsm")


def test_unknown_recipe_of_a_family_and_unknown_names_are_refused() -> None:
    with pytest.raises(ValueError, match="registers no such recipe"):
        preset_values("no-such-recipe", "tiny")
    with pytest.raises(SystemExit):
        resolved("--preset", "no-such-recipe")


def test_preset_fp16_trains_in_fp32_off_cuda_with_a_note_but_an_explicit_fp16_is_refused(capsys) -> None:
    args = resolved("--preset", "official", "--arch", "tiny", "--device", "cpu")
    process = train.init_process(args)
    assert (process.precision, process.val_precision) == ("fp32", "fp32")
    assert "fp16 autocast needs CUDA; training in fp32 on cpu" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="needs CUDA"):
        train.init_process(resolved("--precision", "fp16", "--device", "cpu"))
    default = train.init_process(resolved("--device", "cpu"))
    assert (default.precision, default.val_precision) == ("fp32", "fp32")  # "same" follows the training precision


@pytest.mark.parametrize(("world_size", "expected_steps", "expected_total"), [(1, 2, 32), (2, 1, 32), (4, 1, 64)])
def test_tsm_official_batch_keeps_sixteen_videos_per_batchnorm_on_any_process_count(world_size, expected_steps,
                                                                                     expected_total) -> None:
    steps = accumulation_steps(32, 16, world_size)
    assert (steps, 16 * world_size * steps) == (expected_steps, expected_total)


def test_accumulation_steps_for_no_total_and_a_total_that_does_not_divide() -> None:
    assert accumulation_steps(None, 8, 1) == 1
    assert accumulation_steps(8, 8, 1) == 1
    assert accumulation_steps(48, 8, 2) == 3
    with pytest.raises(ValueError, match="not a multiple"):
        accumulation_steps(40, 16, 1)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["tiny", "tea_tiny", "slowfast_tiny", "uniformer_tiny"])
def test_official_preset_scaled_down_trains_one_epoch_of_each_family(arch: str, tmp_path: Path, request) -> None:
    """The official recipe of each family on the tiny network, 32 px frames, batches of 4 videos in 2 micro-batches
    (TSM's official shift needs every branch batch to hold a multiple of 16 frames: 4 videos at 4 frames)."""
    if arch not in model_names():
        pytest.skip(f"{arch} is not registered")
    shards = request.getfixturevalue("recipe_shards")
    output = tmp_path / arch
    status = train.main([
        "--mode", "ffn", "--frames", "4", "8", "16", "--shards", str(shards), "--output", str(output),
        "--preset", "official", "--arch", arch, "--pretrained", "none", "--epochs", "1", "--batch-size", "4",
        "--total-batch", "8", "--crop-size", "32", "--test-resize", "32", "--test-crop-size", "32",
        "--jitter-range", "32", "40", "--val-every", "1", "--workers", "0", "--threads", "1", "--no-progress",
    ])
    assert status == 0
    settings = json.loads((output / train.SETTINGS_JSON).read_text())
    recipe = model_recipe(arch, "official")
    assert settings["micro_batches_per_step"] == 2 and settings["total_batch"] == 8
    assert settings["param_groups"] == recipe["param_groups"] and settings["precision_used"] == "fp32"
    history = torch.load(output / train.LAST_CHECKPOINT, weights_only=True)["metrics"]["history"]
    assert len(history) == 1 and torch.isfinite(torch.tensor(history[0]["train_loss"]))
    assert history[0]["val_n"] == 12 and settings["steps_per_epoch"] == 2  # 16 training videos, 8 per step
    for key in ("sampling", "train_crop", "train_views", "rand_augment", "mixup", "test_crop_layout"):
        assert settings[key] == recipe.get(key, BASE_DEFAULTS[key]), key


@pytest.fixture(scope="module")
def recipe_shards(tmp_path_factory) -> Path:
    """16 training and 12 validation videos of 16 frames at 32 px (4 classes)."""
    from test_train import clip_records, write_shards

    records = clip_records(videos_per_class=6, seed=5)
    records["train"] = records["train"] + records["validation"][:4]
    return write_shards(tmp_path_factory.mktemp("recipe_shards"), records)
